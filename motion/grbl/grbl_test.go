package grbl

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/waferd/waferd/motion"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func testConfig(log *logSink) Config {
	c := Config{
		PollInterval:   10 * time.Millisecond,
		ReplyTimeout:   300 * time.Millisecond,
		ConnectTimeout: 200 * time.Millisecond,
		HoldTimeout:    time.Second,
		HomingTimeout:  5 * time.Second,
	}
	if log != nil {
		c.Logf = log.Logf
	}
	return c
}

// setup returns a Stage talking to a fake over net.Pipe, not yet connected.
func setup(t *testing.T, cfg Config, script func(f *fakeGrbl)) (*Stage, *fakeGrbl) {
	t.Helper()
	a, b := net.Pipe()
	f := newFake(t, b, script)
	s := New(a, cfg)
	t.Cleanup(func() {
		assert.NoError(t, s.Close())
		f.Close()
	})
	return s, f
}

func connected(t *testing.T, cfg Config, script func(f *fakeGrbl)) (*Stage, *fakeGrbl) {
	t.Helper()
	s, f := setup(t, cfg, script)
	require.NoError(t, s.Connect(context.Background()))
	return s, f
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestConnect(t *testing.T) {
	s, _ := connected(t, testConfig(nil), nil)
	assert.Equal(t, "1.1h", s.Version())
	assert.Nil(t, s.Alarm())
	select {
	case ev := <-s.Events():
		assert.Equal(t, EventBanner, ev.Kind)
		assert.Equal(t, "1.1h", ev.Version)
	case <-time.After(time.Second):
		t.Fatal("no banner event")
	}
	st, err := s.Status(ctxTimeout(t, time.Second))
	require.NoError(t, err)
	assert.Equal(t, motion.StateIdle, st.State)
}

func TestConnectProvokesBannerWithSoftReset(t *testing.T) {
	s, f := setup(t, testConfig(nil), func(f *fakeGrbl) { f.noBanner = true })
	start := time.Now()
	require.NoError(t, s.Connect(ctxTimeout(t, 2*time.Second)))
	assert.GreaterOrEqual(t, time.Since(start), 200*time.Millisecond)
	assert.Len(t, f.RT(0x18), 1)
	assert.Equal(t, "1.1h", s.Version())
}

func TestConnectTimeout(t *testing.T) {
	s, _ := setup(t, testConfig(nil), func(f *fakeGrbl) { f.noBanner = true; f.mute = true })
	err := s.Connect(ctxTimeout(t, 2*time.Second))
	require.ErrorIs(t, err, motion.ErrTimeout)
}

func TestConnectInAlarmRefusesMoveUntilUnlock(t *testing.T) {
	s, f := connected(t, testConfig(nil), func(f *fakeGrbl) {
		f.state = "Alarm"
		f.bootMsg = []string{"[MSG:'$H'|'$X' to unlock]"}
	})
	require.NotNil(t, s.Alarm())
	err := s.MoveTo(ctxTimeout(t, time.Second), motion.Point{X: motion.MM(1)}, 100)
	require.ErrorIs(t, err, motion.ErrAlarm)
	var a *Alarm
	require.ErrorAs(t, err, &a)
	assert.Empty(t, f.Lines(), "nothing may be sent while in alarm")

	require.NoError(t, s.Unlock(ctxTimeout(t, time.Second)))
	assert.Nil(t, s.Alarm())
	assert.Equal(t, []string{"$X"}, f.Lines())
	require.NoError(t, s.MoveTo(ctxTimeout(t, time.Second), motion.Point{X: motion.MM(1)}, 100))
}

func TestStreamNeverExceedsReceiveBuffer(t *testing.T) {
	s, f := connected(t, testConfig(nil), func(f *fakeGrbl) { f.procDelay = 200 * time.Microsecond })
	rng := rand.New(rand.NewSource(1))
	var lines []string
	for i := 0; i < 300; i++ {
		l := fmt.Sprintf("N%d G1 X%d", i, rng.Intn(1000))
		l += strings.Repeat(" ", rng.Intn(MaxLineLen-len(l)+1))
		lines = append(lines, strings.TrimSpace(l)+strings.Repeat("0", rng.Intn(30)))
	}
	f.Set(func(f *fakeGrbl) {
		f.onLine = func(*fakeGrbl, string) ([]string, bool) { return []string{"ok"}, true }
	})
	require.NoError(t, s.Stream(ctxTimeout(t, 20*time.Second), lines))
	assert.Equal(t, lines, f.Lines())
	assert.LessOrEqual(t, f.MaxRx(), RxBufferSize, "receive buffer overflowed")
	assert.Greater(t, f.MaxRx(), RxBufferSize/2, "stream did not keep the buffer filled")
}

func TestConcurrentSendsNeverExceedReceiveBuffer(t *testing.T) {
	s, f := connected(t, testConfig(nil), func(f *fakeGrbl) { f.procDelay = 300 * time.Microsecond })
	f.Set(func(f *fakeGrbl) {
		f.onLine = func(*fakeGrbl, string) ([]string, bool) { return []string{"ok"}, true }
	})
	var wg sync.WaitGroup
	ctx := ctxTimeout(t, 20*time.Second)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 25; i++ {
				assert.NoError(t, s.Send(ctx, fmt.Sprintf("G1 X%d.%03d Y%d (goroutine %d line %d)", g, i, i, g, i)))
			}
		}()
	}
	wg.Wait()
	assert.Len(t, f.Lines(), 200)
	assert.LessOrEqual(t, f.MaxRx(), RxBufferSize)
}

func TestErrorReplyMapsToError(t *testing.T) {
	s, _ := connected(t, testConfig(nil), func(f *fakeGrbl) {
		f.onLine = func(_ *fakeGrbl, l string) ([]string, bool) {
			if l == "G99" {
				return []string{"error:20"}, true
			}
			return nil, false
		}
	})
	err := s.Send(ctxTimeout(t, time.Second), "  G99  ")
	require.ErrorIs(t, err, motion.ErrRejected)
	var e *Error
	require.ErrorAs(t, err, &e)
	assert.Equal(t, 20, e.Code)
	assert.Equal(t, "Unsupported command", e.Message)
	assert.Contains(t, e.Description, "Unsupported or invalid g-code")
	assert.Equal(t, "G99", e.Line)
	assert.NoError(t, s.Send(ctxTimeout(t, time.Second), "G21"))
}

func TestLinesValidatedBeforeSending(t *testing.T) {
	s, f := connected(t, testConfig(nil), nil)
	ctx := ctxTimeout(t, time.Second)
	require.ErrorIs(t, s.Send(ctx, "G1 X1 "+strings.Repeat("0", MaxLineLen)), motion.ErrRejected)
	require.ErrorIs(t, s.Send(ctx, "G1 X1 (why?)"), motion.ErrRejected)
	require.ErrorIs(t, s.Send(ctx, "G1 X1\nG1 X2"), motion.ErrRejected)
	require.NoError(t, s.Send(ctx, strings.Repeat("G", MaxLineLen)))
	assert.Equal(t, []string{strings.Repeat("G", MaxLineLen)}, f.Lines())
}

func TestMoveTo(t *testing.T) {
	s, f := connected(t, testConfig(nil), nil)
	target := motion.Point{X: motion.MM(10), Y: motion.MM(-2.5)}
	require.NoError(t, s.MoveTo(ctxTimeout(t, 2*time.Second), target, 600))
	assert.Equal(t, []string{"G21 G90 G53 G1 X10.000 Y-2.500 F600", "G4 P0"}, f.Lines())
	st, _ := s.LastStatus()
	assert.Equal(t, motion.StateIdle, st.State)
	assert.Equal(t, target, st.XY())
	assert.NotEmpty(t, f.RT('?'), "MoveTo polls while waiting")

	require.NoError(t, s.MoveTo(ctxTimeout(t, 2*time.Second), motion.Point{X: motion.MM(0.001)}, 1234.5))
	assert.Equal(t, "G21 G90 G53 G1 X0.001 Y0.000 F1234.5", f.Lines()[2])
}

func TestMoveToNotAtTarget(t *testing.T) {
	s, _ := connected(t, testConfig(nil), func(f *fakeGrbl) {
		f.onLine = func(_ *fakeGrbl, l string) ([]string, bool) {
			if strings.Contains(l, "G1") {
				return []string{"ok"}, true // accepted, but goes nowhere
			}
			return nil, false
		}
	})
	err := s.MoveTo(ctxTimeout(t, 2*time.Second), motion.Point{X: motion.MM(5)}, 600)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "not at the target")
}

func TestMoveToInvalidFeed(t *testing.T) {
	s, f := connected(t, testConfig(nil), nil)
	for _, feed := range []motion.Speed{0, -1, 1e9} {
		require.Error(t, s.MoveTo(ctxTimeout(t, time.Second), motion.Point{}, feed))
	}
	assert.Empty(t, f.Lines())
}

func TestAlarmMidMove(t *testing.T) {
	s, f := connected(t, testConfig(nil), func(f *fakeGrbl) { f.moveDur = 10 * time.Second })
	go func() {
		time.Sleep(100 * time.Millisecond)
		f.Set(func(f *fakeGrbl) { f.critical = true; f.state = "Alarm" })
		f.send("ALARM:1", "[MSG:Reset to continue]")
	}()
	start := time.Now()
	err := s.MoveTo(ctxTimeout(t, 5*time.Second), motion.Point{X: motion.MM(100)}, 600)
	require.ErrorIs(t, err, motion.ErrAlarm)
	var a *Alarm
	require.ErrorAs(t, err, &a)
	assert.Equal(t, 1, a.Code)
	assert.Equal(t, "Hard limit", a.Message)
	assert.Less(t, time.Since(start), time.Second)

	// GRBL answers nothing now; Status reports the alarm without asking.
	st, err := s.Status(ctxTimeout(t, time.Second))
	require.NoError(t, err)
	assert.Equal(t, motion.StateAlarm, st.State)
	require.NoError(t, s.Hold(ctxTimeout(t, time.Second)), "an alarm has stopped the stage")
	require.ErrorIs(t, s.MoveTo(ctxTimeout(t, time.Second), motion.Point{}, 100), motion.ErrAlarm)

	// The reset keeps the alarm (the controller stays locked) without a new one.
	require.NoError(t, s.Reset(ctxTimeout(t, 2*time.Second)))
	require.NotNil(t, s.Alarm())
	assert.Equal(t, 1, s.Alarm().Code)
	require.NoError(t, s.Unlock(ctxTimeout(t, time.Second)))
	assert.Nil(t, s.Alarm())
}

func TestResetWaitsForCriticalMessage(t *testing.T) {
	// GRBL prints ALARM:2, pauses 500 ms, prints [MSG:Reset to continue] and
	// only then waits for a reset, discarding any received before.
	s, f := connected(t, testConfig(nil), nil)
	f.Set(func(f *fakeGrbl) { f.critPause, f.state = true, "Alarm" })
	f.send("ALARM:2")
	require.Eventually(t, func() bool { return s.Alarm() != nil }, time.Second, time.Millisecond)
	go func() {
		time.Sleep(150 * time.Millisecond)
		f.Set(func(f *fakeGrbl) { f.critPause, f.critical = false, true })
		f.send("[MSG:Reset to continue]")
	}()
	require.NoError(t, s.Reset(ctxTimeout(t, 2*time.Second)))
	assert.Equal(t, 2, s.Alarm().Code)
	require.NoError(t, s.Unlock(ctxTimeout(t, time.Second)))
	assert.Nil(t, s.Alarm())
}

func TestResetWhileMovingReportsAlarm3(t *testing.T) {
	s, f := connected(t, testConfig(nil), func(f *fakeGrbl) { f.moveDur = 10 * time.Second })
	moveErr := make(chan error, 1)
	go func() { moveErr <- s.MoveTo(context.Background(), motion.Point{X: motion.MM(50)}, 600) }()
	require.Eventually(t, func() bool { return f.State() == "Run" }, 2*time.Second, time.Millisecond)

	err := s.Reset(ctxTimeout(t, 2*time.Second))
	require.ErrorIs(t, err, motion.ErrAlarm)
	var a *Alarm
	require.ErrorAs(t, err, &a)
	assert.Equal(t, 3, a.Code)
	assert.Equal(t, 3, s.Alarm().Code)

	select {
	case err := <-moveErr:
		assert.True(t, errors.Is(err, motion.ErrAlarm) || errors.Is(err, motion.ErrReset), "got %v", err)
	case <-time.After(2 * time.Second):
		t.Fatal("MoveTo did not end after reset")
	}
}

// waitQueued waits until s has n lines queued (sent and unanswered).
func waitQueued(t *testing.T, s *Stage, n int) {
	t.Helper()
	require.Eventually(t, func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return len(s.queue) == n
	}, 2*time.Second, time.Millisecond)
}

func TestResetFailsPendingLines(t *testing.T) {
	s, f := connected(t, testConfig(nil), func(f *fakeGrbl) {
		f.onLine = func(f *fakeGrbl, l string) ([]string, bool) {
			if l == "G4 P100" { // a long dwell: answered only when it ends
				// Ended by the first reset after the line was taken,
				// even one that comes before this handler runs.
				f.mu.Lock()
				ch := f.lineReset
				f.mu.Unlock()
				<-ch
				return nil, true
			}
			return nil, false
		}
	})
	errs := make(chan error, 2)
	go func() { errs <- s.Send(context.Background(), "G4 P100") }()
	go func() {
		require.Eventually(t, func() bool { return len(f.Lines()) == 1 }, time.Second, time.Millisecond)
		errs <- s.Send(context.Background(), "G4 P100") // queued in GRBL's buffer
	}()
	waitQueued(t, s, 2)

	require.NoError(t, s.Reset(ctxTimeout(t, 2*time.Second)))
	for i := 0; i < 2; i++ {
		err := <-errs
		require.ErrorIs(t, err, motion.ErrReset)
	}
	s.mu.Lock()
	assert.Zero(t, s.queued)
	s.mu.Unlock()
	// The stream is usable again, with the whole buffer.
	f.Set(func(f *fakeGrbl) { f.onLine = nil })
	require.NoError(t, s.Stream(ctxTimeout(t, 2*time.Second), []string{"G21", "G90", "G4 P0"}))
}

func TestMalformedLinesAreSkipped(t *testing.T) {
	log := &logSink{}
	s, f := connected(t, testConfig(log), nil)
	f.send("garbage", "<Idle|MPos:1,2>", "[MSG", "error:abc", "ALARM:", "ok", "$abc=1",
		"<Bogus|MPos:0.000,0.000,0.000>", "[:]", "\x00\xff\xfe", strings.Repeat("x", 1000), "ALARM:1x")
	require.Eventually(t, func() bool { return log.Contains("over-long") }, time.Second, time.Millisecond)
	assert.True(t, log.Contains("no line pending"), "unexpected ok must be logged")
	assert.True(t, log.Contains("malformed"))
	require.NoError(t, s.Send(ctxTimeout(t, time.Second), "G21"))
	assert.Nil(t, s.Alarm())
	require.NoError(t, s.MoveTo(ctxTimeout(t, 2*time.Second), motion.Point{X: motion.MM(1)}, 100))
}

func TestMuteController(t *testing.T) {
	s, f := connected(t, testConfig(nil), nil)
	f.Set(func(f *fakeGrbl) { f.mute = true })

	start := time.Now()
	_, err := s.Status(ctxTimeout(t, 5*time.Second))
	require.ErrorIs(t, err, motion.ErrTimeout)
	assert.Less(t, time.Since(start), 2*time.Second)

	err = s.MoveTo(ctxTimeout(t, 5*time.Second), motion.Point{X: motion.MM(1)}, 100)
	require.ErrorIs(t, err, motion.ErrTimeout)

	// Lines are refused until a reset resynchronises the stream.
	err = s.Send(ctxTimeout(t, time.Second), "G21")
	require.ErrorIs(t, err, motion.ErrTimeout)
	f.Set(func(f *fakeGrbl) { f.mute = false })
	require.NoError(t, s.Reset(ctxTimeout(t, 2*time.Second)))
	require.NoError(t, s.Send(ctxTimeout(t, time.Second), "G21"))
}

// TestLostOKDetected: an ok lost on the link while the controller is idle
// (no Bf: in its reports) costs ReplyTimeout: the line fails with
// ErrReplyLost, and the stream is still in step, so the next line needs no
// reset.
func TestLostOKDetected(t *testing.T) {
	s, _ := connected(t, testConfig(nil), func(f *fakeGrbl) {
		f.onLine = func(_ *fakeGrbl, l string) ([]string, bool) {
			if l == "G20" {
				return nil, true // the ok is lost
			}
			return nil, false
		}
	})
	start := time.Now()
	err := s.Send(ctxTimeout(t, 5*time.Second), "G20")
	require.ErrorIs(t, err, ErrReplyLost)
	assert.Less(t, time.Since(start), 2*time.Second)
	require.NoError(t, s.Send(ctxTimeout(t, time.Second), "G21"), "in step: no reset needed")
	n := s.Noise()
	assert.Equal(t, 1, n.RepliesLost)
	assert.Zero(t, n.Garbled)
}

func TestLinkClosedDuringMove(t *testing.T) {
	s, f := connected(t, testConfig(nil), func(f *fakeGrbl) { f.moveDur = 10 * time.Second })
	go func() {
		require.Eventually(t, func() bool { return f.State() == "Run" }, 2*time.Second, time.Millisecond)
		f.conn.Close()
	}()
	err := s.MoveTo(ctxTimeout(t, 5*time.Second), motion.Point{X: motion.MM(10)}, 100)
	require.ErrorIs(t, err, motion.ErrLinkLost)
	select {
	case <-s.Done():
	case <-time.After(time.Second):
		t.Fatal("Done not closed")
	}
	require.ErrorIs(t, s.Err(), motion.ErrLinkLost)
	_, err = s.Status(ctxTimeout(t, time.Second))
	require.ErrorIs(t, err, motion.ErrLinkLost)
	require.ErrorIs(t, s.Send(ctxTimeout(t, time.Second), "G21"), motion.ErrLinkLost)
	for range s.Events() { // closed when the reader ended
	}
}

func TestZeroByteReadsAreNotEOF(t *testing.T) {
	a, b := net.Pipe()
	f := newFake(t, b, func(f *fakeGrbl) { f.moveDur = 100 * time.Millisecond })
	port := &timeoutPort{Conn: a}
	s := New(port, testConfig(nil))
	defer f.Close()
	defer s.Close()
	time.Sleep(20 * time.Millisecond) // let some reads time out first
	require.NoError(t, s.Connect(ctxTimeout(t, 2*time.Second)))
	require.NoError(t, s.MoveTo(ctxTimeout(t, 2*time.Second), motion.Point{Y: motion.MM(3)}, 100))
	assert.Greater(t, port.zeros.Load(), int64(3))
	assert.NoError(t, s.Err())
}

func TestCancelledMoveSendsFeedHoldAtOnce(t *testing.T) {
	cfg := testConfig(nil)
	cfg.PollInterval = 200 * time.Millisecond
	s, f := connected(t, cfg, func(f *fakeGrbl) { f.moveDur = 10 * time.Second })
	cause := errors.New("operator pressed stop")
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	var cancelled time.Time
	go func() {
		require.Eventually(t, func() bool { return f.State() == "Run" }, 2*time.Second, time.Millisecond)
		time.Sleep(30 * time.Millisecond)
		cancelled = time.Now()
		cancel(cause)
	}()
	err := s.MoveTo(ctx, motion.Point{X: motion.MM(10)}, 100)
	require.ErrorIs(t, err, cause)
	assert.Contains(t, err.Error(), "grbl: move to (10.000, 0.000)mm")
	require.Eventually(t, func() bool { return len(f.RT('!')) == 1 }, time.Second, time.Millisecond)
	latency := f.RT('!')[0].Sub(cancelled)
	t.Logf("cancel to '!' at the controller: %v", latency)
	assert.Less(t, latency, cfg.PollInterval)

	// MoveTo does not reset; the caller stops in a controlled way.
	assert.Empty(t, f.RT(0x18))
	require.NoError(t, s.Hold(ctxTimeout(t, time.Second)))
	assert.Equal(t, "Hold:0", f.State())
	require.NoError(t, s.Reset(ctxTimeout(t, 2*time.Second)))
	assert.Nil(t, s.Alarm(), "reset from Hold:0 raises no alarm")
}

func TestHoldWaitsForHoldComplete(t *testing.T) {
	s, f := connected(t, testConfig(nil), func(f *fakeGrbl) {
		f.moveDur = 10 * time.Second
		f.holdDecel = 150 * time.Millisecond
	})
	go func() { _ = s.MoveTo(context.Background(), motion.Point{X: motion.MM(10)}, 100) }()
	require.Eventually(t, func() bool { return f.State() == "Run" }, 2*time.Second, time.Millisecond)
	start := time.Now()
	require.NoError(t, s.Hold(context.Background()))
	assert.GreaterOrEqual(t, time.Since(start), 150*time.Millisecond, "Hold:1 is not stopped")
	assert.Equal(t, "Hold:0", f.State())
	st, _ := s.LastStatus()
	assert.Equal(t, motion.StateHold, st.State)
	assert.Equal(t, 0, st.Sub)

	require.NoError(t, s.Resume(context.Background()))
	require.Eventually(t, func() bool { return f.State() == "Run" }, time.Second, time.Millisecond)
	require.NoError(t, s.Hold(ctxTimeout(t, 2*time.Second)))
}

func TestHoldTimeout(t *testing.T) {
	s, f := connected(t, testConfig(nil), func(f *fakeGrbl) {
		f.moveDur = 10 * time.Second
		f.holdDecel = time.Hour // stuck in Hold:1
	})
	go func() { _ = s.MoveTo(context.Background(), motion.Point{X: motion.MM(10)}, 100) }()
	require.Eventually(t, func() bool { return f.State() == "Run" }, 2*time.Second, time.Millisecond)
	err := s.Hold(ctxTimeout(t, 200*time.Millisecond))
	require.ErrorIs(t, err, motion.ErrTimeout)
	require.ErrorIs(t, err, context.DeadlineExceeded)

	start := time.Now()
	err = s.Hold(context.Background()) // HoldTimeout (1 s) applies
	require.ErrorIs(t, err, motion.ErrTimeout)
	assert.GreaterOrEqual(t, time.Since(start), 900*time.Millisecond)
}

func TestStatusRequestsCoalesce(t *testing.T) {
	s, f := connected(t, testConfig(nil), nil)
	before := len(f.RT('?'))
	f.Set(func(f *fakeGrbl) { f.statusDelay = 150 * time.Millisecond })
	var wg sync.WaitGroup
	for i := 0; i < 10; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := s.Status(ctxTimeout(t, time.Second))
			assert.NoError(t, err)
			assert.Equal(t, motion.StateIdle, st.State)
		}()
	}
	wg.Wait()
	assert.Equal(t, 1, len(f.RT('?'))-before, "one '?' for concurrent callers")
}

func TestSettings(t *testing.T) {
	s, _ := connected(t, testConfig(nil), nil)
	m, err := s.Settings(ctxTimeout(t, time.Second))
	require.NoError(t, err)
	assert.Len(t, m, len(fakeSettings))
	assert.Equal(t, "10", m[0])
	assert.Equal(t, "500.000", m[110])
	assert.Equal(t, "200.000", m[130])
	info, ok := Setting(110)
	require.True(t, ok)
	assert.Equal(t, "X-axis maximum rate", info.Name)
	assert.Equal(t, "mm/min", info.Unit)
}

func TestHomeDoesNotPoll(t *testing.T) {
	s, f := connected(t, testConfig(nil), func(f *fakeGrbl) {
		f.state = "Alarm"
		f.bootMsg = []string{"[MSG:'$H'|'$X' to unlock]"}
		f.homeDur = 600 * time.Millisecond // twice ReplyTimeout
		f.pos = [3]float64{3, 4, 0}
	})
	require.NotNil(t, s.Alarm())
	before := len(f.RT('?'))
	require.NoError(t, s.Home(ctxTimeout(t, 5*time.Second)))
	// One '?' with $H, answered when the cycle ends (maybe one more if
	// the first came before the cycle began); no polling every 10 ms.
	assert.LessOrEqual(t, len(f.RT('?'))-before, 3, "no polling during homing")
	assert.Nil(t, s.Alarm())
	require.NoError(t, s.MoveTo(ctxTimeout(t, 2*time.Second), motion.Point{X: motion.MM(1)}, 100))
}

func TestHomeAlarm(t *testing.T) {
	s, _ := connected(t, testConfig(nil), func(f *fakeGrbl) {
		f.onLine = func(f *fakeGrbl, l string) ([]string, bool) {
			if l == "$H" { // GRBL prints the alarm, then still "ok"
				f.mu.Lock()
				f.state = "Alarm"
				f.mu.Unlock()
				return []string{"ALARM:9", "ok"}, true
			}
			return nil, false
		}
	})
	err := s.Home(ctxTimeout(t, 2*time.Second))
	require.ErrorIs(t, err, motion.ErrAlarm)
	var a *Alarm
	require.ErrorAs(t, err, &a)
	assert.Equal(t, 9, a.Code)
	time.Sleep(50 * time.Millisecond) // let the trailing ok arrive
	require.NotNil(t, s.Alarm(), "the ok after ALARM:9 must not clear it")
	assert.Equal(t, 9, s.Alarm().Code)
}

func TestSendHomeReportsAlarm(t *testing.T) {
	s, _ := connected(t, testConfig(nil), func(f *fakeGrbl) {
		f.onLine = func(f *fakeGrbl, l string) ([]string, bool) {
			if l == "$H" {
				return []string{"ALARM:8", "ok"}, true
			}
			return nil, false
		}
	})
	err := s.Send(ctxTimeout(t, 2*time.Second), "$H")
	require.ErrorIs(t, err, motion.ErrAlarm)
	var a *Alarm
	require.ErrorAs(t, err, &a)
	assert.Equal(t, 8, a.Code)
}

func TestCancelledHomeResets(t *testing.T) {
	s, f := connected(t, testConfig(nil), func(f *fakeGrbl) { f.homeDur = 10 * time.Second })
	ctx, cancel := context.WithCancelCause(context.Background())
	go func() {
		require.Eventually(t, func() bool { return f.State() == "Home" }, 2*time.Second, time.Millisecond)
		cancel(context.Canceled)
	}()
	err := s.Home(ctx)
	require.ErrorIs(t, err, context.Canceled)
	require.Eventually(t, func() bool { return len(f.RT(0x18)) == 1 }, time.Second, time.Millisecond)
	require.Eventually(t, func() bool { a := s.Alarm(); return a != nil && a.Code == 6 }, time.Second, time.Millisecond)
}

func TestCloseEndsPendingCalls(t *testing.T) {
	s, f := connected(t, testConfig(nil), func(f *fakeGrbl) { f.moveDur = 10 * time.Second })
	errc := make(chan error, 1)
	go func() { errc <- s.MoveTo(context.Background(), motion.Point{X: motion.MM(10)}, 100) }()
	require.Eventually(t, func() bool { return f.State() == "Run" }, 2*time.Second, time.Millisecond)
	require.NoError(t, s.Close())
	require.NoError(t, s.Close())
	require.ErrorIs(t, <-errc, ErrClosed)
	require.ErrorIs(t, s.Err(), ErrClosed)
	require.ErrorIs(t, s.Connect(context.Background()), ErrClosed)
	require.Error(t, s.Halt())
}

func TestCloseWithoutConnect(t *testing.T) {
	a, b := net.Pipe()
	defer b.Close()
	s := New(a, Config{})
	require.NoError(t, s.Close())
	for range s.Events() {
	}
	require.ErrorIs(t, s.Connect(context.Background()), ErrClosed)
}

func TestEventsForMessages(t *testing.T) {
	s, f := connected(t, testConfig(nil), nil)
	<-s.Events() // banner
	f.send("[MSG:Pgm End]", "[GC:G0 G54 G17 G21 G90 G94 M5 M9 T0 F0 S0]", ">G54:ok")
	want := []Event{
		{Kind: EventMessage, Text: "Pgm End"},
		{Kind: EventFeedback, Key: "GC", Text: "G0 G54 G17 G21 G90 G94 M5 M9 T0 F0 S0"},
		{Kind: EventStartup, Text: "G54"},
	}
	for _, w := range want {
		select {
		case ev := <-s.Events():
			assert.Equal(t, w.Kind, ev.Kind)
			assert.Equal(t, w.Text, ev.Text)
			assert.Equal(t, w.Key, ev.Key)
		case <-time.After(time.Second):
			t.Fatalf("no %v event", w.Kind)
		}
	}
}

func TestWPosReportsUseWCO(t *testing.T) {
	s, f := connected(t, testConfig(nil), nil)
	f.send("<Idle|WPos:1.000,2.000,3.000|FS:0,0|WCO:10.000,20.000,30.000>")
	require.Eventually(t, func() bool { st, _ := s.LastStatus(); return st.MPos[0] == motion.MM(11) }, time.Second, time.Millisecond)
	f.send("<Idle|WPos:5.000,5.000,5.000|FS:0,0>")
	require.Eventually(t, func() bool {
		st, _ := s.LastStatus()
		return st.MPos == [3]motion.Distance{motion.MM(15), motion.MM(25), motion.MM(35)}
	}, time.Second, time.Millisecond)
}

// TestCriticalAlarmWhileConfirmingMove: a hard limit that strikes after the
// move's lines were answered, while the move waits for the report that
// confirms it, fails the move with the alarm at once (GRBL answers no
// report after ALARM:1 until a reset), not with a status timeout later.
func TestCriticalAlarmWhileConfirmingMove(t *testing.T) {
	cfg := testConfig(nil)
	cfg.PollInterval = 200 * time.Millisecond // no poll while the move runs
	cfg.ReplyTimeout = 2 * time.Second
	s, f := connected(t, cfg, func(f *fakeGrbl) { f.moveDur = 20 * time.Millisecond })
	f.Set(func(f *fakeGrbl) { f.statusDelay = 5 * time.Second })
	asked := len(f.RT('?'))
	go func() {
		// The confirming '?' is out (and its answer delayed): strike.
		assert.Eventually(t, func() bool { return len(f.RT('?')) > asked }, 2*time.Second, time.Millisecond)
		f.Set(func(f *fakeGrbl) { f.critical = true; f.state = "Alarm" })
		f.send("ALARM:1", "[MSG:Reset to continue]")
	}()
	start := time.Now()
	err := s.MoveTo(ctxTimeout(t, 5*time.Second), motion.Point{X: motion.MM(1)}, 600)
	require.ErrorIs(t, err, motion.ErrAlarm)
	assert.Less(t, time.Since(start), time.Second, "failed by the alarm, not by the report's timeout")
}

// TestResetNeverFollowedByItsLine: a soft reset that starts while a line
// is queued but not yet written either follows the line on the wire or
// keeps it from being written at all. A line written after the reset
// would run on the restarted controller (a move after a stop) while its
// Send reports ErrReset, and its ok would answer the next line.
func TestResetNeverFollowedByItsLine(t *testing.T) {
	var afterReset atomic.Int32 // "G4 P0" lines the fake ran after a reset
	s, f := connected(t, testConfig(nil), func(f *fakeGrbl) {
		f.onLine = func(f *fakeGrbl, l string) ([]string, bool) {
			f.mu.Lock()
			epoch := f.lineEpoch // when the line came, not now
			f.mu.Unlock()
			if l == "G4 P0" && epoch > 0 {
				afterReset.Add(1)
			}
			return nil, false
		}
	})
	var once atomic.Bool
	testHookQueued = func() {
		if !once.CompareAndSwap(false, true) {
			return
		}
		// Wait for the Reset below to begin, then give its 0x18 time to
		// reach the controller, if nothing keeps it from being written
		// now. (No require here: this is not the test's goroutine.)
		begun := func() bool {
			s.mu.Lock()
			defer s.mu.Unlock()
			return s.resetting || s.banners > 1
		}
		reached := func() bool {
			f.mu.Lock()
			defer f.mu.Unlock()
			return f.epoch > 0
		}
		for deadline := time.Now().Add(2 * time.Second); !begun() && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
		}
		for deadline := time.Now().Add(200 * time.Millisecond); !reached() && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
		}
	}
	t.Cleanup(func() { testHookQueued = nil })

	sent := make(chan error, 1)
	go func() { sent <- s.Send(context.Background(), "G4 P0") }()
	waitQueued(t, s, 1)
	require.NoError(t, s.Reset(ctxTimeout(t, 2*time.Second)))
	err := <-sent
	assert.True(t, err == nil || errors.Is(err, motion.ErrReset), "Send: %v", err)

	// The stream goes on in step: the next line gets its own ok.
	require.NoError(t, s.Send(ctxTimeout(t, 2*time.Second), "G21"))
	assert.Zero(t, afterReset.Load(), "the line ran after the reset")
}

// TestConcurrentStatusWithMoves shares status requests between MoveTo and
// other callers of Status.
func TestConcurrentStatusWithMoves(t *testing.T) {
	s := New(newEchoGrbl(), Config{})
	defer s.Close()
	ctx := t.Context()
	require.NoError(t, s.Connect(ctx))
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := s.Status(ctx); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	for i := range 300 {
		p := motion.Point{X: motion.Distance(i) * 7, Y: -motion.Distance(i) * 3}
		require.NoError(t, s.MoveTo(ctx, p, 6000))
		st, err := s.Status(ctx)
		require.NoError(t, err)
		require.Equal(t, p, st.XY())
	}
	close(stop)
	wg.Wait()
}

func TestFormatFeed(t *testing.T) {
	for f, want := range map[motion.Speed]string{
		6000: "6000", 0.5: "0.5", 1e6: "1000000", 1500.25: "1500.25", 0.001: "0.001",
		0.0004: "0", 123.4567: "123.457", 10: "10", 100.1: "100.1",
	} {
		assert.Equal(t, want, formatFeed(f), "%v", f)
	}
}
