package gem_test

// The HSMS timers that end a session the host let lapse: T7 (a
// connection that never selects) and the equipment's own linktests (a
// selected host that stops answering). Both are in the README's "HSMS
// (E37, E37.1)" table and configured by [gem] t7_ms and linktest_ms.

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/waferd/waferd/gem"
	"github.com/waferd/waferd/gem/gemhost"
)

// establishes checks that a new host can connect, select and establish
// communication; it is left to the rig to close.
func establishes(t *testing.T, r *rig) {
	t.Helper()
	require.Eventually(t, func() bool { // the equipment listens again shortly after a session
		h, err := gemhost.Dial(context.Background(), gemhost.Config{Addr: r.eq.Addr(), DeviceID: 7, T3: 2 * time.Second, T6: time.Second})
		if err != nil {
			return false
		}
		code, err := h.Establish(context.Background())
		if err != nil || code != 0 {
			_ = h.Close()
			return false
		}
		r.host = h
		return true
	}, 10*time.Second, 50*time.Millisecond, "a new host selects and establishes communication")
}

// TestT7NotSelected: a connection that sends nothing (no Select.req) is
// closed by the equipment once T7 has run out, and the next host is
// served; a selected session outlives T7.
func TestT7NotSelected(t *testing.T) {
	const t7 = 300 * time.Millisecond
	r := newRig(t, func(c *gem.Config) { c.T7 = t7 }, false)

	start := time.Now() // before the dial: the equipment's T7 starts after it accepts
	c, err := net.Dial("tcp", r.eq.Addr())
	require.NoError(t, err)
	defer c.Close()
	// Well below the default T7 (10 s), so a T7 not passed to the HSMS
	// layer fails here, yet 16×T7: room for a loaded, race-detected host.
	require.NoError(t, c.SetReadDeadline(start.Add(5*time.Second)))
	n, err := io.Copy(io.Discard, c)
	elapsed := time.Since(start)
	var ne net.Error
	require.False(t, errors.As(err, &ne) && ne.Timeout(), "the equipment did not close a connection that never selected within 5 s (T7 %v)", t7)
	assert.Zero(t, n, "nothing is sent to a connection that has not selected")
	// Only an order, which load cannot break: the equipment's timer starts
	// after the accept, which follows start, and a timer never fires early;
	// a slow host only makes elapsed longer. (A check that the socket is
	// still open at some point below T7 could flake when the test is
	// descheduled past T7.)
	assert.GreaterOrEqual(t, elapsed, t7, "closed before T7 ran out")

	establishes(t, r)
	time.Sleep(3 * t7) // T7 is for a connection not selected: a selected one stays
	code, err := r.host.Establish(context.Background())
	require.NoError(t, err, "the selected session outlives T7")
	assert.Equal(t, byte(0), code, "COMMACK")
	assert.NotEmpty(t, r.eq.HostStatus().Host)
}

// TestLinktests: on an idle selected session the equipment sends
// Linktest.req every linktest interval; a host answering them keeps its
// session, one that stops answering is disconnected (each unanswered
// linktest runs out after T6), and the next host is served.
func TestLinktests(t *testing.T) {
	r := newRig(t, func(c *gem.Config) {
		c.Linktest = 200 * time.Millisecond
		c.T6 = 500 * time.Millisecond
	}, false)
	c := rawSession(t, r.eq.Addr()) // selected, communication established, offline: an idle link

	// Answered: more linktests than any failure threshold would allow
	// unanswered (the HSMS layer's is 3), and the session goes on.
	const answered = 5
	for i := 0; i < answered; {
		f, err := readFrame(c, 10*time.Second)
		require.NoError(t, err, "linktest %d: the equipment sends linktests on an idle link, and keeps a host that answers", i)
		if f[9] != 5 { // not a Linktest.req
			continue
		}
		require.Equal(t, []byte{0xff, 0xff}, f[4:6], "Linktest.req: a control message: % x", f)
		_, err = c.Write(controlFrame(6, binary.BigEndian.Uint32(f[10:]))) // Linktest.rsp
		require.NoError(t, err)
		i++
	}
	assert.NotEmpty(t, r.eq.HostStatus().Host, "a host that answers its linktests stays")

	// Unanswered: the equipment drops the link (T6 runs out on each; a
	// generous bound, well above threshold × (interval + T6)).
	unanswered := 0
	deadline := time.Now().Add(20 * time.Second)
	for {
		f, err := readFrame(c, time.Until(deadline))
		if err != nil {
			var ne net.Error
			require.False(t, errors.As(err, &ne) && ne.Timeout(), "the equipment did not drop a host that stopped answering its linktests (%d unanswered)", unanswered)
			break
		}
		if f[9] == 5 {
			unanswered++
		}
	}
	assert.Positive(t, unanswered, "the link was dropped after unanswered linktests")
	require.Eventually(t, func() bool { return r.eq.HostStatus().Host == "" }, 5*time.Second, 10*time.Millisecond, "the session ended")

	establishes(t, r)
}
