package board

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/waferd/waferd/internal/logging"
	"github.com/waferd/waferd/motion"
	"github.com/waferd/waferd/motion/grbl"
	"github.com/waferd/waferd/sim"
	"github.com/waferd/waferd/sim/grblsim"
)

// logBuf collects log output; safe for concurrent use.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) count(sub string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Count(l.b.String(), sub)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *logBuf) log() *logging.Log {
	return logging.New(l, logging.Options{Level: logging.Debug}).For("stage")
}

// usbLink is a /dev/serial/by-id style symlink in a temporary directory
// that the test points at an emulator's pty, removes when the "adapter" is
// unplugged and re-points when it is plugged back in.
type usbLink struct {
	t    *testing.T
	path string
}

func newUSBLink(t *testing.T) *usbLink {
	dir := filepath.Join(t.TempDir(), "serial", "by-id")
	require.NoError(t, os.MkdirAll(dir, 0o755))
	return &usbLink{t: t, path: filepath.Join(dir, "usb-Arduino__www.arduino.cc__0043_75833353035351F0E1E1-if00")}
}

// plug starts a freshly powered-up controller on a new pty and points the
// link at it, as udev does when the adapter appears.
func (u *usbLink) plug(cfg grblsim.Config) *grblsim.Emulator {
	u.t.Helper()
	if cfg.TimeScale == 0 {
		cfg.TimeScale = 50
	}
	emu := grblsim.New(cfg)
	u.t.Cleanup(func() { emu.Close() })
	pty, err := emu.OpenPTY()
	require.NoError(u.t, err)
	require.NoError(u.t, os.Symlink(pty, u.path))
	return emu
}

// unplug hangs the controller's line up (the tty goes away under the
// driver) and removes the link, as udev does when the adapter is pulled.
func (u *usbLink) unplug(emu *grblsim.Emulator) {
	u.t.Helper()
	emu.InjectHangup()
	require.NoError(u.t, os.Remove(u.path))
}

// noLeaks checks, after the test's cleanups (the emulators' Close), that
// no goroutine it started is left.
func noLeaks(t *testing.T) {
	opt := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, opt) })
}

// stageEmu is the simulated board's GRBL emulator (sim.StageSettings on
// 0..300 mm) at time scale ts, with homing required or, if not homing,
// disabled ($22=0, and so soft limits off).
func stageEmu(ts float64, homing bool) grblsim.Config {
	c := sim.EmulatorConfig(sim.Config{TimeScale: ts})
	if !homing {
		c.Settings[22], c.Settings[20] = 0, 0
	}
	return c
}

func fastGRBL() grbl.Config {
	return grbl.Config{
		PollInterval: 20 * time.Millisecond, ReplyTimeout: 500 * time.Millisecond,
		ConnectTimeout: 300 * time.Millisecond, HomingTimeout: 5 * time.Second,
	}
}

func waitEvent(t *testing.T, ch <-chan motion.LinkEvent) motion.LinkEvent {
	t.Helper()
	select {
	case ev := <-ch:
		return ev
	case <-time.After(10 * time.Second):
		t.Fatal("no link event within 10 s")
		return motion.LinkEvent{}
	}
}

// TestReopeningStageReconnects: the adapter is unplugged (the pty hangs up,
// the by-id link disappears) and plugged back (a new controller on a new
// pty behind the same link): the stage says it is reconnecting meanwhile,
// comes back by itself with the position untrusted (the restarted
// controller is in its alarm lock) and moves again once homed.
func TestReopeningStageReconnects(t *testing.T) {
	noLeaks(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	usb := newUSBLink(t)
	emu := usb.plug(stageEmu(1, true))
	logs := &logBuf{}
	st, err := OpenReopeningStage(ctx, ReopenConfig{
		Stage:         StageConfig{Port: usb.path, GRBL: fastGRBL()},
		RetryInterval: 10 * time.Millisecond, Log: logs.log(),
	})
	require.NoError(t, err)
	defer func() { assert.NoError(t, st.Close()) }()
	events := make(chan motion.LinkEvent, 4)
	st.WatchLink(func(ev motion.LinkEvent) { events <- ev })

	require.NoError(t, st.Home(ctx))
	to := motion.Point{X: 40 * motion.Millimetre, Y: 25 * motion.Millimetre}
	require.NoError(t, st.MoveTo(ctx, to, 6000))
	require.NoError(t, st.Err())

	usb.unplug(emu)
	ev := waitEvent(t, events)
	assert.False(t, ev.Up)
	assert.Equal(t, usb.path, ev.Port)
	assert.ErrorIs(t, ev.Err, motion.ErrLinkLost)
	_, err = st.Status(ctx)
	require.ErrorIs(t, err, motion.ErrLinkLost)
	assert.ErrorContains(t, err, usb.path)
	assert.ErrorContains(t, err, "reconnecting")
	assert.ErrorIs(t, st.MoveTo(ctx, motion.Point{}, 6000), motion.ErrLinkLost)
	assert.ErrorIs(t, st.Halt(), motion.ErrLinkLost)
	assert.ErrorIs(t, st.Err(), motion.ErrLinkLost)
	last, _ := st.LastStatus()
	assert.Equal(t, to, last.XY(), "the last report of the lost link")

	// Absent for a while: many attempts, one message about them.
	require.Eventually(t, func() bool { return strings.Contains(fmt.Sprint(st.Err()), "last attempt") }, 5*time.Second, time.Millisecond)
	time.Sleep(100 * time.Millisecond) // about ten more attempts
	assert.Equal(t, 1, logs.count("not back yet"), "one message per reason, not per attempt")
	assert.Equal(t, 1, logs.count("reopening it every"), "one message for the loss")

	emu = usb.plug(stageEmu(1, true))
	ev = waitEvent(t, events)
	assert.True(t, ev.Up)
	assert.Equal(t, 1, st.Reconnects())
	require.NoError(t, st.Err())
	assert.Equal(t, 1, logs.count("position untrusted"))

	s, err := st.Status(ctx)
	require.NoError(t, err)
	assert.Equal(t, motion.StateAlarm, s.State, "the restarted controller is locked until homed")
	require.ErrorIs(t, st.MoveTo(ctx, to, 6000), motion.ErrAlarm)
	require.NoError(t, st.Home(ctx))
	require.NoError(t, st.MoveTo(ctx, to, 6000))
	assert.Equal(t, to, emu.Position())

	// A second loss and return work the same way.
	usb.unplug(emu)
	assert.False(t, waitEvent(t, events).Up)
	usb.plug(stageEmu(1, false))
	assert.True(t, waitEvent(t, events).Up)
	assert.Equal(t, 2, st.Reconnects())
	require.NoError(t, st.MoveTo(ctx, to, 6000), "no homing required by this controller")
}

// TestReopeningStageMoveInProgress: a move in progress when the port
// vanishes fails with the lost link, naming the port.
func TestReopeningStageMoveInProgress(t *testing.T) {
	noLeaks(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	usb := newUSBLink(t)
	emu := usb.plug(stageEmu(2, false))
	st, err := OpenReopeningStage(ctx, ReopenConfig{Stage: StageConfig{Port: usb.path, GRBL: fastGRBL()}, RetryInterval: 10 * time.Millisecond})
	require.NoError(t, err)
	defer func() { assert.NoError(t, st.Close()) }()

	moved := make(chan error, 1)
	go func() {
		moved <- st.MoveTo(ctx, motion.Point{X: 250 * motion.Millimetre, Y: 250 * motion.Millimetre}, 6000)
	}()
	require.Eventually(t, emu.Moving, 5*time.Second, time.Millisecond)
	usb.unplug(emu)
	select {
	case err := <-moved:
		require.ErrorIs(t, err, motion.ErrLinkLost)
		assert.ErrorContains(t, err, usb.path)
		assert.ErrorContains(t, err, "reconnecting")
	case <-time.After(5 * time.Second):
		t.Fatal("MoveTo did not fail when the port vanished")
	}
	usb.plug(stageEmu(1, false))
	require.Eventually(t, func() bool { return st.Err() == nil }, 10*time.Second, time.Millisecond)
}

// TestReopeningStageCloseWhileReconnecting: Close ends the reconnection
// goroutine at once, and calls then say closed.
func TestReopeningStageCloseWhileReconnecting(t *testing.T) {
	noLeaks(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	usb := newUSBLink(t)
	emu := usb.plug(stageEmu(1, false))
	st, err := OpenReopeningStage(ctx, ReopenConfig{Stage: StageConfig{Port: usb.path, GRBL: fastGRBL()}, RetryInterval: time.Hour})
	require.NoError(t, err)
	events := make(chan motion.LinkEvent, 4)
	st.WatchLink(func(ev motion.LinkEvent) { events <- ev })
	usb.unplug(emu)
	assert.False(t, waitEvent(t, events).Up)
	began := time.Now()
	require.NoError(t, st.Close())
	assert.Less(t, time.Since(began), time.Second, "Close does not wait for the retry interval")
	require.NoError(t, st.Close(), "idempotent")
	_, err = st.Status(ctx)
	assert.ErrorIs(t, err, grbl.ErrClosed)
	assert.ErrorIs(t, st.Err(), grbl.ErrClosed)
}

func TestOpenReopeningStageFailsWithoutPort(t *testing.T) {
	noLeaks(t)
	port := filepath.Join(t.TempDir(), "ttyUSB0")
	_, err := OpenReopeningStage(context.Background(), ReopenConfig{Stage: StageConfig{Port: port}})
	require.Error(t, err, "start-up does not wait for a missing port")
	assert.ErrorContains(t, err, port)
}

// fakeLink is a driver whose link the test kills.
type fakeLink struct {
	Stage // unused methods panic
	done  chan struct{}
	err   error
	calls int
	mu    sync.Mutex
}

func newFakeLink() *fakeLink { return &fakeLink{done: make(chan struct{})} }

func (f *fakeLink) Done() <-chan struct{} { return f.done }

func (f *fakeLink) kill(err error) {
	f.mu.Lock()
	f.err = err
	f.mu.Unlock()
	close(f.done)
}

func (f *fakeLink) Err() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}

func (f *fakeLink) Status(context.Context) (motion.Status, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	return motion.Status{State: motion.StateIdle}, f.err
}

func (f *fakeLink) LastStatus() (motion.Status, time.Time) { return motion.Status{}, time.Time{} }

func (f *fakeLink) Noise() grbl.NoiseStats { return grbl.NoiseStats{} }

func (f *fakeLink) Machine(context.Context) (grbl.Machine, error) { return grbl.Machine{}, nil }

func (f *fakeLink) SetOrigin(context.Context, motion.Point) error { return nil }

func (f *fakeLink) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err == nil {
		f.err = grbl.ErrClosed
		close(f.done)
	}
	return nil
}

// TestReopeningStageRetryPace: on a fake clock, attempts come exactly
// every RetryInterval (default 1 s) after the loss, never in a busy loop,
// and a failure is logged once per distinct reason.
func TestReopeningStageRetryPace(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		first, second := newFakeLink(), newFakeLink()
		var mu sync.Mutex
		attempts := 0
		fail := errors.New("open /dev/serial/by-id/x: no such file or directory")
		open := func(ctx context.Context) (link, error) {
			mu.Lock()
			defer mu.Unlock()
			attempts++
			switch {
			case attempts == 6:
				return nil, errors.New("open /dev/serial/by-id/x: permission denied")
			case attempts < 8:
				return nil, fail
			}
			return second, nil
		}
		count := func() int {
			mu.Lock()
			defer mu.Unlock()
			return attempts
		}
		logs := &logBuf{}
		st := newReopeningStage(ReopenConfig{Stage: StageConfig{Port: "/dev/serial/by-id/x"}, Log: logs.log()}, first, open)
		var events []motion.LinkEvent
		st.WatchLink(func(ev motion.LinkEvent) { events = append(events, ev) })

		synctest.Wait()
		assert.Zero(t, count(), "nothing to do while the link is up")
		first.kill(fmt.Errorf("grbl: read: %w: EIO", motion.ErrLinkLost))
		synctest.Wait()
		require.Len(t, events, 1)
		assert.False(t, events[0].Up)
		assert.Zero(t, count(), "the first attempt waits one interval")
		_, err := st.Status(t.Context())
		require.ErrorIs(t, err, motion.ErrLinkLost)
		assert.Equal(t, "board: stage on /dev/serial/by-id/x (reconnecting): grbl: read: motion: link lost: EIO", err.Error())

		time.Sleep(3500 * time.Millisecond)
		synctest.Wait()
		assert.Equal(t, 3, count(), "one attempt per second")
		_, err = st.Status(t.Context())
		assert.ErrorContains(t, err, "last attempt: open /dev/serial/by-id/x: no such file")

		time.Sleep(5 * time.Second)
		synctest.Wait()
		assert.Equal(t, 8, count())
		require.Len(t, events, 2)
		assert.True(t, events[1].Up)
		_, err = st.Status(t.Context())
		require.NoError(t, err)
		assert.Equal(t, 1, second.calls, "calls go to the new driver")
		assert.Equal(t, 2, logs.count("no such file"), "logged when the reason changed, not per attempt")
		assert.Equal(t, 1, logs.count("permission denied"))

		time.Sleep(time.Minute)
		synctest.Wait()
		assert.Equal(t, 8, count(), "no attempts while the link is up")
		require.NoError(t, st.Close())
		assert.ErrorIs(t, second.Err(), grbl.ErrClosed, "Close closes the current driver")
	})
}
