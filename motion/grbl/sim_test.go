package grbl

// Integration tests against the GRBL 1.1h emulator in sim/grblsim, served on
// a real pseudo-terminal and opened through go.bug.st/serial exactly as
// production opens a USB serial adapter.

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.bug.st/serial"

	"github.com/waferd/waferd/motion"
	"github.com/waferd/waferd/sim/grblsim"
)

func simConfig() Config {
	return Config{
		PollInterval:   50 * time.Millisecond,
		ReplyTimeout:   500 * time.Millisecond,
		ConnectTimeout: 500 * time.Millisecond,
		HoldTimeout:    2 * time.Second,
		HomingTimeout:  5 * time.Second,
	}
}

// stageEmu is the emulated machine of most tests here: the simulated
// board's stage (sim.StageSettings: 800 steps/mm, 6000 mm/min, 500 mm/s²,
// homing required, soft and hard limits) on a 0..300 mm box
// (HOMING_FORCE_SET_ORIGIN, homing to the - ends).
func stageEmu() grblsim.Config {
	return grblsim.Config{
		Travel:         motion.Rect{Max: motion.Point{X: motion.MM(300), Y: motion.MM(300)}},
		HomingRequired: true,
		Settings:       map[int]float64{100: 800, 101: 800, 110: 6000, 111: 6000, 120: 500, 121: 500, 21: 1},
	}
}

// simStage starts an emulator on a pty and returns a connected Stage on it.
func simStage(t *testing.T, ecfg grblsim.Config, cfg Config) (*Stage, *grblsim.Emulator) {
	t.Helper()
	if ecfg.TimeScale == 0 {
		ecfg.TimeScale = 20
	}
	e := grblsim.New(ecfg)
	path, err := e.OpenPTY()
	require.NoError(t, err)
	port, err := serial.Open(path, &serial.Mode{BaudRate: 115200, DataBits: 8, Parity: serial.NoParity, StopBits: serial.OneStopBit})
	if err != nil {
		_ = e.Close()
		require.NoError(t, err)
	}
	// A read timeout, as production uses: reads then return (0, nil).
	require.NoError(t, port.SetReadTimeout(50*time.Millisecond))
	s := New(port, cfg)
	t.Cleanup(func() {
		assert.NoError(t, s.Close())
		assert.NoError(t, e.Close())
	})
	require.NoError(t, s.Connect(ctxTimeout(t, 5*time.Second)))
	return s, e
}

// homed returns a connected, homed Stage on an emulator that requires homing.
func homed(t *testing.T) (*Stage, *grblsim.Emulator) {
	t.Helper()
	s, e := simStage(t, stageEmu(), simConfig())
	require.NoError(t, s.Home(ctxTimeout(t, 5*time.Second)))
	return s, e
}

func TestSimConnectSettingsHomeMove(t *testing.T) {
	s, e := simStage(t, stageEmu(), simConfig())
	assert.Equal(t, "1.1h", s.Version())
	require.NotNil(t, s.Alarm(), "powers up locked when homing is required")
	require.ErrorIs(t, s.MoveTo(ctxTimeout(t, time.Second), motion.Point{X: motion.MM(1)}, 1000), motion.ErrAlarm)

	set, err := s.Settings(ctxTimeout(t, 2*time.Second))
	require.NoError(t, err)
	assert.Equal(t, "1", set[22], "homing enabled")
	assert.Equal(t, "1", set[20], "soft limits enabled")
	assert.Contains(t, set, 110)
	assert.Contains(t, set, 130)

	polls := e.Counters().StatusQueries
	require.NoError(t, s.Home(ctxTimeout(t, 5*time.Second)))
	assert.Nil(t, s.Alarm())
	assert.LessOrEqual(t, e.Counters().StatusQueries-polls, 3, "no polling during homing")

	for _, p := range []motion.Point{
		{X: motion.MM(100), Y: motion.MM(50)},
		{X: motion.MM(12.345), Y: motion.MM(0.001)},
		{X: 0, Y: motion.MM(299.999)},
	} {
		require.NoError(t, s.MoveTo(ctxTimeout(t, 10*time.Second), p, 6000))
		assert.Equal(t, p, e.Position(), "the stage is where MoveTo said")
		st, err := s.Status(ctxTimeout(t, time.Second))
		require.NoError(t, err)
		assert.Equal(t, motion.StateIdle, st.State)
		assert.Equal(t, p, st.XY())
	}
}

func TestSimStreamManyLines(t *testing.T) {
	s, e := homed(t)
	var lines []string
	for i := 0; i < 200; i++ {
		lines = append(lines, fmt.Sprintf("G1 X%s Y%s F6000", motion.FormatMM(motion.MM(float64(i%20)/4)), motion.FormatMM(motion.MM(float64(i%7)/2))))
	}
	lines = append(lines, "G4 P0")
	require.NoError(t, s.Stream(ctxTimeout(t, 60*time.Second), lines))
	c := e.Counters()
	assert.Zero(t, c.RxDropped, "the 128-byte receive buffer never overflowed")
	assert.GreaterOrEqual(t, c.Lines, 201)
	st, err := s.Status(ctxTimeout(t, time.Second))
	require.NoError(t, err)
	assert.Equal(t, motion.Point{X: motion.MM(19.0 / 4), Y: motion.MM(3.0 / 2)}, st.XY())
}

func TestSimConcurrentStatusDuringMove(t *testing.T) {
	s, e := homed(t)
	ctx := ctxTimeout(t, 10*time.Second)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				_, err := s.Status(ctx)
				assert.NoError(t, err)
			}
		}()
	}
	require.NoError(t, s.MoveTo(ctx, motion.Point{X: motion.MM(150), Y: motion.MM(150)}, 6000))
	close(stop)
	wg.Wait()
	assert.Equal(t, motion.Point{X: motion.MM(150), Y: motion.MM(150)}, e.Position())
}

func TestSimHoldResume(t *testing.T) {
	s, e := homed(t)
	target := motion.Point{X: motion.MM(250), Y: motion.MM(10)}
	moved := make(chan error, 1)
	go func() { moved <- s.MoveTo(context.Background(), target, 3000) }()
	require.Eventually(t, e.Moving, 5*time.Second, time.Millisecond)
	time.Sleep(100 * time.Millisecond)

	require.NoError(t, s.Hold(ctxTimeout(t, 5*time.Second)))
	st, sub := e.State()
	assert.Equal(t, motion.StateHold, st)
	assert.Equal(t, 0, sub)
	assert.False(t, e.Moving(), "Hold returned while the stage still moved")
	held := e.Position()
	assert.NotEqual(t, target, held)
	select {
	case err := <-moved:
		t.Fatalf("MoveTo returned during a hold: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	assert.Equal(t, held, e.Position(), "held position is kept")

	require.NoError(t, s.Resume(context.Background()))
	select {
	case err := <-moved:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("MoveTo did not finish after resume")
	}
	assert.Equal(t, target, e.Position())
}

func TestSimResetWhileMovingRaisesAlarm3(t *testing.T) {
	s, e := homed(t)
	moved := make(chan error, 1)
	go func() { moved <- s.MoveTo(context.Background(), motion.Point{X: motion.MM(280)}, 3000) }()
	require.Eventually(t, e.Moving, 5*time.Second, time.Millisecond)

	err := s.Reset(ctxTimeout(t, 5*time.Second))
	require.ErrorIs(t, err, motion.ErrAlarm)
	var a *Alarm
	require.ErrorAs(t, err, &a)
	assert.Equal(t, 3, a.Code)
	require.NotNil(t, s.Alarm())
	assert.Equal(t, 3, s.Alarm().Code)

	select {
	case err := <-moved:
		assert.True(t, errors.Is(err, motion.ErrAlarm) || errors.Is(err, motion.ErrReset), "got %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("MoveTo did not end after the reset")
	}
	require.ErrorIs(t, s.MoveTo(ctxTimeout(t, time.Second), motion.Point{}, 1000), motion.ErrAlarm)

	require.NoError(t, s.Unlock(ctxTimeout(t, 2*time.Second)))
	assert.Nil(t, s.Alarm())
	require.NoError(t, s.MoveTo(ctxTimeout(t, 10*time.Second), motion.Point{X: motion.MM(5)}, 6000))
}

// TestSimAbortResetsAtOnce: Abort writes the soft reset and returns before
// the controller restarts, stopping a move dead; a second Abort sends
// nothing; the Reset after it waits for that reset's banner, resets again,
// and finds the controller in alarm (position lost).
func TestSimAbortResetsAtOnce(t *testing.T) {
	s, e := homed(t)
	base := e.Counters().Resets
	moved := make(chan error, 1)
	go func() { moved <- s.MoveTo(context.Background(), motion.Point{X: motion.MM(280)}, 3000) }()
	require.Eventually(t, e.Moving, 5*time.Second, time.Millisecond)

	require.NoError(t, s.Abort())
	require.NoError(t, s.Abort(), "idempotent")
	select {
	case err := <-moved:
		assert.True(t, errors.Is(err, motion.ErrAlarm) || errors.Is(err, motion.ErrReset), "got %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("MoveTo did not end after the abort")
	}
	assert.Equal(t, 1, e.Counters().Resets-base, "one reset for two Aborts")
	assert.Less(t, e.Position().X, motion.MM(280), "stopped dead, short of the target")

	err := s.Reset(ctxTimeout(t, 5*time.Second))
	if err != nil {
		require.ErrorIs(t, err, motion.ErrAlarm)
	}
	assert.Equal(t, 2, e.Counters().Resets-base, "the Reset's own, after the Abort's banner")
	st, err := s.Status(ctxTimeout(t, 2*time.Second))
	require.NoError(t, err)
	assert.Equal(t, motion.StateAlarm, st.State, "a reset mid-move loses the position")
	require.NotNil(t, s.Alarm())
	require.NoError(t, s.Unlock(ctxTimeout(t, 2*time.Second)), "no banner left over to fail the next line")
}

func TestSimSoftLimitAlarm(t *testing.T) {
	s, e := homed(t)
	err := s.MoveTo(ctxTimeout(t, 5*time.Second), motion.Point{X: motion.MM(400)}, 3000)
	require.ErrorIs(t, err, motion.ErrAlarm)
	var a *Alarm
	require.ErrorAs(t, err, &a)
	assert.Equal(t, 2, a.Code)
	assert.Equal(t, "Soft limit", a.Message)

	// Locked until reset; Status and Hold do not wait for replies that never come.
	st, err := s.Status(ctxTimeout(t, time.Second))
	require.NoError(t, err)
	assert.Equal(t, motion.StateAlarm, st.State)
	require.NoError(t, s.Hold(ctxTimeout(t, time.Second)))

	require.NoError(t, s.Reset(ctxTimeout(t, 5*time.Second)))
	require.NotNil(t, s.Alarm(), "alarm survives the reset")
	require.NoError(t, s.Unlock(ctxTimeout(t, 2*time.Second)))
	assert.Nil(t, s.Alarm())
	require.NoError(t, s.MoveTo(ctxTimeout(t, 10*time.Second), motion.Point{X: motion.MM(1)}, 6000))
	assert.Equal(t, motion.Point{X: motion.MM(1)}, e.Position())
}

func TestSimInjectedHardLimitMidMove(t *testing.T) {
	s, e := homed(t)
	moved := make(chan error, 1)
	go func() { moved <- s.MoveTo(context.Background(), motion.Point{X: motion.MM(280)}, 3000) }()
	require.Eventually(t, e.Moving, 5*time.Second, time.Millisecond)
	e.InjectAlarm(1)
	select {
	case err := <-moved:
		require.ErrorIs(t, err, motion.ErrAlarm)
		var a *Alarm
		require.ErrorAs(t, err, &a)
		assert.Equal(t, 1, a.Code)
	case <-time.After(5 * time.Second):
		t.Fatal("MoveTo did not fail on ALARM:1")
	}
	require.NoError(t, s.Reset(ctxTimeout(t, 5*time.Second)))
	require.NoError(t, s.Home(ctxTimeout(t, 5*time.Second)))
	assert.Nil(t, s.Alarm())
}

func TestSimCancelledMoveFeedHoldLatency(t *testing.T) {
	// A long poll period, so that "before the next poll" is checked with a
	// margin no load on a shared machine eats up; the latency itself is
	// measured by BenchmarkStopLatency.
	cfg := simConfig()
	cfg.PollInterval = time.Second
	s, e := simStage(t, stageEmu(), cfg)
	require.NoError(t, s.Home(ctxTimeout(t, 5*time.Second)))
	var mu sync.Mutex
	var holds []time.Time
	e.OnRealtime(func(b byte, at time.Time) {
		if b == '!' {
			mu.Lock()
			holds = append(holds, at)
			mu.Unlock()
		}
	})
	cause := errors.New("stop button")
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	moved := make(chan error, 1)
	go func() { moved <- s.MoveTo(ctx, motion.Point{X: motion.MM(250), Y: motion.MM(250)}, 3000) }()
	require.Eventually(t, e.Moving, 5*time.Second, time.Millisecond)
	time.Sleep(300 * time.Millisecond) // between two polls

	cancelled := time.Now()
	cancel(cause)
	require.ErrorIs(t, <-moved, cause)
	require.Eventually(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(holds) > 0 }, time.Second, time.Millisecond)
	mu.Lock()
	latency := holds[0].Sub(cancelled)
	mu.Unlock()
	t.Logf("cancel to '!' at the emulator over the pty: %v (poll interval %v)", latency, cfg.PollInterval)
	assert.Less(t, latency, cfg.PollInterval, "feed hold sent at once, not at the next poll")

	// The controlled stop of the stop contract: hold, Hold:0, reset: no alarm.
	require.NoError(t, s.Hold(ctxTimeout(t, 5*time.Second)))
	assert.False(t, e.Moving())
	kept := e.Position()
	require.NoError(t, s.Reset(ctxTimeout(t, 5*time.Second)))
	assert.Nil(t, s.Alarm(), "a reset in Hold:0 raises no alarm")
	assert.Equal(t, kept, e.Position())
	st, err := s.Status(ctxTimeout(t, time.Second))
	require.NoError(t, err)
	assert.Equal(t, motion.StateIdle, st.State)
	assert.Equal(t, kept, st.XY())
}

func TestSimStuckHoldTimesOut(t *testing.T) {
	s, e := homed(t)
	e.InjectStuckHold(true)
	go func() { _ = s.MoveTo(context.Background(), motion.Point{X: motion.MM(250)}, 3000) }()
	require.Eventually(t, e.Moving, 5*time.Second, time.Millisecond)
	err := s.Hold(ctxTimeout(t, 400*time.Millisecond))
	require.ErrorIs(t, err, motion.ErrTimeout)
	// Escalation: a reset in Hold:1 loses position.
	err = s.Reset(ctxTimeout(t, 5*time.Second))
	require.ErrorIs(t, err, motion.ErrAlarm)
	assert.Equal(t, 3, s.Alarm().Code)
}

func TestSimMuteController(t *testing.T) {
	s, e := homed(t)
	e.InjectMute(true)
	_, err := s.Status(ctxTimeout(t, 5*time.Second))
	require.ErrorIs(t, err, motion.ErrTimeout)
	err = s.MoveTo(ctxTimeout(t, 5*time.Second), motion.Point{X: motion.MM(10)}, 6000)
	require.ErrorIs(t, err, motion.ErrTimeout)
	e.InjectMute(false)
	// The stream may have lost replies: the driver wants a reset first.
	_ = s.Hold(ctxTimeout(t, 2*time.Second))
	require.NoError(t, s.Reset(ctxTimeout(t, 5*time.Second)))
	require.NoError(t, s.Send(ctxTimeout(t, time.Second), "G21"))
}

// TestSimDroppedOK: an ok lost while the controller is idle fails its line
// with ErrReplyLost, and the stream goes on in step without a reset.
func TestSimDroppedOK(t *testing.T) {
	s, e := homed(t)
	e.InjectDropOK(1)
	err := s.Send(ctxTimeout(t, 5*time.Second), "G21")
	require.ErrorIs(t, err, ErrReplyLost)
	require.NoError(t, s.Send(ctxTimeout(t, time.Second), "G90"), "in step: no reset needed")
	require.NoError(t, s.MoveTo(ctxTimeout(t, 10*time.Second), motion.Point{Y: motion.MM(2)}, 6000))
	// Lost during a move: MoveTo confirms the move by the position.
	e.InjectDropOK(1)
	require.NoError(t, s.MoveTo(ctxTimeout(t, 10*time.Second), motion.Point{X: motion.MM(3), Y: motion.MM(2)}, 6000))
	assert.Equal(t, 2, s.Noise().RepliesLost)
}

func TestSimErrorReply(t *testing.T) {
	s, _ := homed(t)
	err := s.Send(ctxTimeout(t, time.Second), "G2 X1 Y1 I1") // arcs: error:20 in the emulator
	require.ErrorIs(t, err, motion.ErrRejected)
	var ge *Error
	require.ErrorAs(t, err, &ge)
	assert.NotZero(t, ge.Code)
	assert.NotEmpty(t, ge.Message)
	require.NoError(t, s.Send(ctxTimeout(t, time.Second), "G21"))
}

func TestSimHangup(t *testing.T) {
	s, e := homed(t)
	moved := make(chan error, 1)
	go func() { moved <- s.MoveTo(context.Background(), motion.Point{X: motion.MM(250)}, 3000) }()
	require.Eventually(t, e.Moving, 5*time.Second, time.Millisecond)
	e.InjectHangup()
	select {
	case err := <-moved:
		require.ErrorIs(t, err, motion.ErrLinkLost)
	case <-time.After(5 * time.Second):
		t.Fatal("MoveTo did not notice the hangup")
	}
	<-s.Done()
	require.ErrorIs(t, s.Err(), motion.ErrLinkLost)
}

// slowHold delays every write that carries a feed hold, as a busy scheduler
// can delay the abort hook's goroutine.
type slowHold struct {
	serial.Port
	delay   time.Duration
	mu      sync.Mutex
	written time.Time // when the last '!' was written
}

func (p *slowHold) Write(b []byte) (int, error) {
	hold := false
	for _, c := range b {
		if c == '!' {
			hold = true
			time.Sleep(p.delay)
		}
	}
	n, err := p.Port.Write(b)
	if hold {
		p.mu.Lock()
		p.written = time.Now()
		p.mu.Unlock()
	}
	return n, err
}

// TestSimCancelledMoveReturnsAfterItsFeedHold: a cancelled MoveTo returns
// only once its feed hold is written, so a reset right after it cannot be
// overtaken by a late '!' (which would leave GRBL in Hold:0).
func TestSimCancelledMoveReturnsAfterItsFeedHold(t *testing.T) {
	e := grblsim.New(grblsim.Config{TimeScale: 20})
	path, err := e.OpenPTY()
	require.NoError(t, err)
	port, err := serial.Open(path, &serial.Mode{BaudRate: 115200})
	require.NoError(t, err)
	require.NoError(t, port.SetReadTimeout(50*time.Millisecond))
	slow := &slowHold{Port: port, delay: 100 * time.Millisecond}
	s := New(slow, simConfig())
	t.Cleanup(func() {
		assert.NoError(t, s.Close())
		assert.NoError(t, e.Close())
	})
	require.NoError(t, s.Connect(ctxTimeout(t, 5*time.Second)))

	ctx, cancel := context.WithCancel(context.Background())
	moved := make(chan error, 1)
	go func() { moved <- s.MoveTo(ctx, motion.Point{X: motion.MM(250), Y: motion.MM(250)}, 3000) }()
	require.Eventually(t, e.Moving, 5*time.Second, time.Millisecond)
	cancel()
	require.ErrorIs(t, <-moved, context.Canceled)
	returned := time.Now()
	slow.mu.Lock()
	written := slow.written
	slow.mu.Unlock()
	require.False(t, written.IsZero(), "the feed hold is on the wire when MoveTo returns")
	assert.False(t, written.After(returned))
	_ = s.Reset(ctxTimeout(t, 5*time.Second)) // ALARM:3 if still decelerating
	require.Eventually(t, func() bool { return e.Counters().Resets >= 1 }, time.Second, time.Millisecond)
	st, sub := e.State()
	assert.NotEqual(t, motion.StateHold, st, "no feed hold after the reset (Hold:%d)", sub)
}
