package watchdog

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fakeClock drives a watchdog's monotonic clock by hand; loop simulates the
// watchdog's loop: wake at the time it meant to (or late), then check.
type fakeClock struct {
	mu  sync.Mutex
	now int64
}

func (c *fakeClock) read() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now += int64(d)
}

type faultLog struct {
	mu sync.Mutex
	e  []error
}

func (f *faultLog) add(_ string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.e = append(f.e, err)
}

func (f *faultLog) all() []error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]error(nil), f.e...)
}

func newFakeWatchdog(t *testing.T) (*Watchdog, *fakeClock, *faultLog) {
	t.Helper()
	c := &fakeClock{}
	f := &faultLog{}
	w := New(Config{Interval: 20 * time.Millisecond, OnFault: f.add, Log: t.Logf})
	w.clock = c.read
	return w, c, f
}

// tick advances the clock by the loop's period plus late, and runs one pass
// of the loop as Run does: account for the lateness, then check.
func tick(w *Watchdog, c *fakeClock, late time.Duration) {
	due := c.read() + int64(w.tick)
	c.advance(w.tick + late)
	w.woke(due, c.read())
	w.check()
}

// A host that stalls the whole process for longer than a heartbeat's limit
// (the watchdog's loop included) is not a stuck subsystem: the heartbeat
// beats again as soon as the process runs, and nothing faults.
func TestWholeProcessStallIsNotAStuckSubsystem(t *testing.T) {
	w, c, f := newFakeWatchdog(t)
	hb := w.Register("stage-poll", time.Second)
	for range 10 {
		hb.Beat()
		tick(w, c, 0)
	}
	tick(w, c, 3*time.Second) // the host stalled everything for 3 s
	assert.Empty(t, f.all(), "a stall of the whole process is not a stale heartbeat")
	hb.Beat()
	tick(w, c, 0)
	assert.Empty(t, f.all())
	infos := w.Snapshot()
	assert.True(t, infos[0].Fresh)
	assert.Less(t, infos[0].Age, 100*time.Millisecond, "ages count process time")
}

// A subsystem stuck while the process runs goes stale within its limit
// (plus one loop period), stalls or not.
func TestStuckSubsystemTripsWithinItsLimit(t *testing.T) {
	for _, stall := range []time.Duration{0, 2 * time.Second} {
		w, c, f := newFakeWatchdog(t)
		hb := w.Register("stage-poll", time.Second)
		hb.Beat()
		start := c.read()
		stalled := false
		for len(f.all()) == 0 {
			late := time.Duration(0)
			if !stalled && time.Duration(c.read()-start) >= 500*time.Millisecond {
				late, stalled = stall, true
			}
			tick(w, c, late)
			require.Less(t, time.Duration(c.read()-start), 10*time.Second, "never tripped")
		}
		running := time.Duration(c.read()-start) - stall
		assert.LessOrEqual(t, running, time.Second+w.tick, "stall %v: tripped after %v of process time", stall, running)
		assert.Greater(t, running, time.Second)
		err := f.all()[0]
		assert.True(t, errors.Is(err, ErrStale))
		if stall > 0 {
			assert.Contains(t, err.Error(), "stage-poll: no beat for 1.02s of process time (limit 1s; 3.02s on the clock, the host stalled the whole process for 2s)")
		} else {
			assert.Equal(t, "stage-poll: no beat for 1.02s (limit 1s)", err.Error())
		}
	}
}

// A lease counts real time: a light left on through a stall has been on.
func TestLeaseCountsRealTimeThroughAStall(t *testing.T) {
	w, c, f := newFakeWatchdog(t)
	expired := false
	l := w.Lease("light", time.Second, func() { expired = true })
	l.Start()
	tick(w, c, 2*time.Second)
	assert.True(t, expired, "on for 2 s: switched off")
	require.Len(t, f.all(), 1)
	assert.ErrorIs(t, f.all()[0], ErrLeaseExpired)
	assert.Equal(t, "light: on for 2.02s (limit 1s)", f.all()[0].Error())
}

// Scheduling delay within StallAllowance is not credited.
func TestOrdinaryLatenessIsNotAStall(t *testing.T) {
	w, c, _ := newFakeWatchdog(t)
	due := c.read() + int64(w.tick)
	c.advance(w.tick + StallAllowance)
	assert.Zero(t, w.woke(due, c.read()))
	due = c.read() + int64(w.tick)
	c.advance(w.tick + 50*time.Millisecond)
	assert.Equal(t, 50*time.Millisecond, w.woke(due, c.read()))
	assert.Equal(t, int64(50*time.Millisecond), w.stalled.Load())
}
