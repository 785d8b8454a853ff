package grblsim

import (
	"bufio"
	"io"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.bug.st/serial"
	"go.uber.org/goleak"

	"github.com/waferd/waferd/motion"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// classic is the machine most tests here were written for, not GRBL's
// defaults: 1 µm steps ($100..$102=1000), 6000 mm/min, 500 mm/s², a
// 300 × 300 mm box on the positive side (HOMING_FORCE_SET_ORIGIN, homing to
// the - ends) and Bf: in status reports ($10=3). What c sets wins.
func classic(c Config) Config {
	set := map[int]float64{100: 1000, 101: 1000, 102: 1000, 10: 3}
	maps.Copy(set, c.Settings)
	c.Settings = set
	if c.Travel == (motion.Rect{}) {
		c.Travel = motion.Rect{Max: motion.Point{X: 300 * motion.Millimetre, Y: 300 * motion.Millimetre}}
	}
	if c.MaxRate == 0 {
		c.MaxRate = 6000
	}
	if c.Accel == 0 {
		c.Accel = 500
	}
	return c
}

// client is a raw GRBL host on the emulator's pty, opened the way the
// production driver opens it.
type client struct {
	t     *testing.T
	emu   *Emulator
	port  serial.Port
	lines chan string
	done  chan struct{}
	err   error // the reader's final error, valid after done
}

// dial starts an emulator on a pty and opens it with go.bug.st/serial.
// Unless keepBanner, it consumes the power-up banner (and the alarm-lock
// message when homing is required).
func dial(t *testing.T, cfg Config, keepBanner bool) *client {
	t.Helper()
	e := New(cfg)
	path, err := e.OpenPTY()
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(path, "/dev/pts/"), path)
	port, err := serial.Open(path, &serial.Mode{BaudRate: 115200})
	if err != nil {
		_ = e.Close()
		require.NoError(t, err)
	}
	c := &client{t: t, emu: e, port: port, lines: make(chan string, 1024), done: make(chan struct{})}
	go c.read()
	t.Cleanup(func() {
		_ = port.Close()
		<-c.done
		require.NoError(t, e.Close())
	})
	if !keepBanner {
		c.expectBanner()
		if cfg.HomingRequired {
			c.expect("[MSG:'$H'|'$X' to unlock]")
		}
	}
	return c
}

func (c *client) read() {
	defer close(c.done)
	defer close(c.lines)
	r := bufio.NewReader(c.port)
	for {
		s, err := r.ReadString('\n')
		if err != nil {
			c.err = err
			return
		}
		if !strings.HasSuffix(s, "\r\n") {
			c.t.Errorf("reply line %q does not end with \\r\\n", s)
		}
		c.lines <- strings.TrimSuffix(strings.TrimSuffix(s, "\n"), "\r")
	}
}

func (c *client) send(s string) {
	c.t.Helper()
	_, err := io.WriteString(c.port, s)
	require.NoError(c.t, err)
}

const replyTimeout = 3 * time.Second

// next returns the next reply line, failing after timeout.
func (c *client) next() string {
	c.t.Helper()
	select {
	case l, ok := <-c.lines:
		if !ok {
			c.t.Fatalf("link closed: %v", c.err)
		}
		return l
	case <-time.After(replyTimeout):
		c.t.Fatalf("no reply within %v", replyTimeout)
	}
	return ""
}

// expect checks that the next reply lines are want, in order.
func (c *client) expect(want ...string) {
	c.t.Helper()
	for _, w := range want {
		require.Equal(c.t, w, c.next())
	}
}

func (c *client) expectBanner() {
	c.t.Helper()
	c.expect("", "Grbl 1.1h ['$' for help]")
}

// silent checks that nothing arrives for d.
func (c *client) silent(d time.Duration) {
	c.t.Helper()
	select {
	case l, ok := <-c.lines:
		if ok {
			c.t.Fatalf("unexpected reply %q", l)
		}
	case <-time.After(d):
	}
}

// cmd sends a line and returns its replies up to and including the
// ok/error line.
func (c *client) cmd(line string) []string {
	c.t.Helper()
	c.send(line + "\n")
	var out []string
	for {
		l := c.next()
		out = append(out, l)
		if l == "ok" || strings.HasPrefix(l, "error:") {
			return out
		}
	}
}

// ok sends a line and requires a plain "ok".
func (c *client) ok(line string) {
	c.t.Helper()
	require.Equal(c.t, []string{"ok"}, c.cmd(line), "reply to %q", line)
}

// status sends '?' and returns the report (skipping nothing: the next line
// must be the report).
func (c *client) status() string {
	c.t.Helper()
	c.send("?")
	l := c.next()
	require.True(c.t, strings.HasPrefix(l, "<") && strings.HasSuffix(l, ">"), "status report %q", l)
	return l
}

// state returns the state field of a status report ("Idle", "Hold:1"...).
func state(report string) string {
	s := strings.TrimPrefix(report, "<")
	s, _, _ = strings.Cut(s, "|")
	return strings.TrimSuffix(s, ">")
}

// field returns the value of a status report field ("MPos"), or "".
func field(report, name string) string {
	for _, f := range strings.Split(strings.Trim(report, "<>"), "|") {
		if v, ok := strings.CutPrefix(f, name+":"); ok {
			return v
		}
	}
	return ""
}

// waitState polls until the reported state is want and returns the report.
func (c *client) waitState(want string, within time.Duration) string {
	c.t.Helper()
	deadline := time.Now().Add(within)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		r := c.status()
		if state(r) == want {
			return r
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("state %q not reached within %v; last %q", want, within, r)
		}
		<-tick.C
	}
}
