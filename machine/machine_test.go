package machine

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpiotest"

	"github.com/waferd/waferd/illumination"
	"github.com/waferd/waferd/internal/logging"
	"github.com/waferd/waferd/motion"
	"github.com/waferd/waferd/motion/motiontest"
	"github.com/waferd/waferd/stop"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestTransitions(t *testing.T) {
	ok := [][2]State{
		{Idle, Running}, {Running, Stopping}, {Running, Idle}, {Stopping, Idle},
		{Stopping, Faulted}, {Stopping, EStop}, {Idle, Faulted}, {Idle, EStop},
		{Faulted, Idle}, {Faulted, EStop}, {EStop, Idle}, {Running, Faulted}, {Running, EStop},
	}
	for _, tr := range ok {
		assert.NoError(t, transition(tr[0], tr[1]), "%s → %s", tr[0], tr[1])
	}
	bad := [][2]State{
		{Idle, Stopping}, {Faulted, Running}, {EStop, Running}, {EStop, Faulted},
		{Stopping, Running}, {Faulted, Stopping}, {Idle, Idle},
	}
	for _, tr := range bad {
		assert.ErrorContains(t, transition(tr[0], tr[1]), "illegal transition", "%s → %s", tr[0], tr[1])
	}
	assert.True(t, Faulted.Latched())
	assert.False(t, Stopping.Latched())
	assert.Equal(t, "estop", EStop.String())
	assert.Equal(t, "aborted", Aborted.String())
}

// rig is a machine on a fake stage and a real light driver on a periph
// test pin.
type rig struct {
	m      *Machine
	stage  *motiontest.Stage
	pin    *gpiotest.Pin
	events chan Event
	estop  bool
	mu     sync.Mutex
}

func newRig(t *testing.T) *rig {
	t.Helper()
	r := &rig{stage: motiontest.New(100*time.Millisecond, 200*time.Millisecond), pin: &gpiotest.Pin{N: "light"}, events: make(chan Event, 100)}
	light, err := illumination.New(illumination.Config{Enable: r.pin})
	require.NoError(t, err)
	r.m = New(Config{
		Stage: r.stage, Light: light, HoldTimeout: time.Second, ResetTimeout: time.Second,
		EStopActive: func() bool { r.mu.Lock(); defer r.mu.Unlock(); return r.estop },
		OnEvent: func(e Event) {
			select {
			case r.events <- e:
			default:
			}
		},
	})
	return r
}

func (r *rig) lightOn(t *testing.T) {
	require.NoError(t, r.m.cfg.Light.On(1))
	require.Equal(t, gpio.High, r.pin.Read())
}

// move starts a move under a claim in the background and returns its
// claim and a channel that delivers how it ended, once released.
func (r *rig) move(t *testing.T) (*Claim, <-chan Ending) {
	t.Helper()
	c, err := r.m.Claim(context.Background(), "move")
	require.NoError(t, err)
	done := make(chan Ending, 1)
	go func() {
		err := r.stage.MoveTo(c.Context(), motion.Point{X: motion.MM(10)}, 1000)
		e := c.End(Fault("stage", err))
		c.Release()
		done <- e
	}()
	return c, done
}

func TestClaimIsExclusiveAndRefusedWhileLatched(t *testing.T) {
	r := newRig(t)
	c, err := r.m.Claim(context.Background(), "home")
	require.NoError(t, err)
	assert.Equal(t, Running, r.m.State())
	assert.Equal(t, "home", r.m.Busy())
	_, err = r.m.Claim(context.Background(), "move")
	require.ErrorIs(t, err, ErrBusy)
	assert.ErrorContains(t, err, "machine: move refused: machine busy: home in progress")
	c.Release()
	assert.Equal(t, Idle, r.m.State())
	assert.Equal(t, "", r.m.Busy())

	r.m.Stop(stop.Fault, "test")
	_, err = r.m.Claim(context.Background(), "move")
	require.ErrorIs(t, err, ErrLatched)
	assert.ErrorContains(t, err, "machine is faulted (fault: test): clear it with reset")
	require.NoError(t, r.m.Reset(context.Background()))

	r.m.Close()
	_, err = r.m.Claim(context.Background(), "move")
	require.ErrorIs(t, err, ErrClosed)
}

func TestStopOnAnIdleMachine(t *testing.T) {
	cases := []struct {
		from  State
		r     stop.Reason
		after State
	}{
		{Idle, stop.Operator, Idle}, {Idle, stop.Host, Idle}, {Idle, stop.Button, Idle}, {Idle, stop.Shutdown, Idle},
		{Idle, stop.Fault, Faulted}, {Idle, stop.Watchdog, Faulted}, {Idle, stop.Abort, Faulted}, {Idle, stop.EStop, EStop},
		{Faulted, stop.Operator, Faulted}, {Faulted, stop.Watchdog, Faulted}, {Faulted, stop.EStop, EStop},
		{EStop, stop.Fault, EStop}, {EStop, stop.EStop, EStop},
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("%s+%s", c.from, c.r), func(t *testing.T) {
			r := newRig(t)
			switch c.from {
			case Faulted:
				r.m.Stop(stop.Fault, "before")
			case EStop:
				r.m.Stop(stop.EStop, "before")
			}
			r.lightOn(t)
			r.stage.ClearCalls()
			r.m.Stop(c.r, "test")
			assert.Equal(t, c.after, r.m.State())
			assert.Equal(t, gpio.Low, r.pin.Read(), "every stop switches the light off")
			assert.Empty(t, r.stage.Calls(), "an idle stage is not halted: GRBL would stay in Hold:0")
		})
	}
}

func TestStopHaltsThenCancelsAndTheSafeStopHoldsAndResets(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t)
		r.m.PositionLost()
		c, done := r.move(t)
		c.Homed()
		time.Sleep(50 * time.Millisecond)
		r.lightOn(t)
		r.m.Stop(stop.Button, "GPIO27")
		assert.Equal(t, gpio.Low, r.pin.Read())
		e := <-done
		assert.Equal(t, []string{"MoveTo", "Halt", "Halt", "Hold", "Reset"}, r.stage.Calls())
		assert.Equal(t, Canceled, e.Outcome)
		assert.Equal(t, "button: GPIO27", e.Why)
		assert.Equal(t, Idle, e.After)
		assert.Equal(t, Idle, r.m.State())
		assert.True(t, r.m.Trusted(), "a completed hold keeps the position")
		assert.Equal(t, Last{What: "move", Ending: e}, r.m.Last())
	})
}

func TestEStopResetsAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t)
		c, done := r.move(t)
		c.Homed()
		time.Sleep(50 * time.Millisecond)
		r.m.Stop(stop.EStop, "estop line")
		// Written by Stop itself: there when Stop returns, whether or not
		// the operation has returned to its safe stop yet.
		assert.Contains(t, r.stage.Calls(), "Abort", "the soft reset is the stop's first act")
		assert.False(t, r.stage.Moving(), "the steppers stopped dead")
		e := <-done
		calls := r.stage.Calls()
		assert.Less(t, slices.Index(calls, "Abort"), slices.Index(calls, "Reset"), "Stop's reset, then the safe stop's: %v", calls)
		assert.NotContains(t, r.stage.Calls(), "Hold", "no controlled hold on an e-stop")
		assert.NotContains(t, r.stage.Calls(), "Halt", "no feed hold either")
		assert.Equal(t, "Reset", r.stage.Calls()[len(r.stage.Calls())-1])
		assert.Equal(t, Aborted, e.Outcome)
		assert.Equal(t, EStop, e.After)
		assert.Equal(t, EStop, r.m.State())
		assert.False(t, r.m.Trusted())

		r.mu.Lock()
		r.estop = true
		r.mu.Unlock()
		require.ErrorContains(t, r.m.Reset(context.Background()), "e-stop still engaged")
		assert.Equal(t, EStop, r.m.State())
		r.mu.Lock()
		r.estop = false
		r.mu.Unlock()
		require.NoError(t, r.m.Reset(context.Background()))
		assert.Equal(t, Idle, r.m.State())
		assert.False(t, r.m.Trusted(), "a reset never trusts the position")
	})
}

func TestEscalationDuringTheHold(t *testing.T) {
	for _, second := range []stop.Reason{stop.Operator, stop.Host, stop.Button, stop.Shutdown, stop.Fault, stop.Watchdog, stop.Abort, stop.EStop} {
		t.Run("operator then "+second.String(), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				r := newRig(t)
				r.stage.SetHoldTime(300 * time.Millisecond)
				c, done := r.move(t)
				c.Homed()
				time.Sleep(50 * time.Millisecond)
				r.m.Stop(stop.Operator, "SIGINT")
				time.Sleep(100 * time.Millisecond) // in the hold
				require.Equal(t, Stopping, r.m.State())
				r.m.Stop(second, "second")
				if second.Immediate() {
					assert.Contains(t, r.stage.Calls(), "Abort", "an e-stop during the hold resets at once, within Stop")
				}
				e := <-done
				switch {
				case second <= stop.Operator:
					assert.Equal(t, "operator: SIGINT", e.Why, "a weaker or repeated stop is ignored")
				default:
					assert.Equal(t, second, e.Reason)
					assert.Equal(t, second.String()+" (escalated from stopped: operator (SIGINT))", e.Why)
				}
				if second.Immediate() {
					st, _, _ := r.stage.State()
					assert.Equal(t, motion.StateAlarm, st, "the hold abandoned: reset while decelerating")
					assert.False(t, r.m.Trusted())
					assert.Equal(t, map[bool]State{true: EStop, false: Faulted}[second == stop.EStop], r.m.State())
				} else {
					assert.True(t, r.m.Trusted(), "the hold completed")
				}
			})
		})
	}
}

func TestHurryAbandonsTheHoldButNotTheSafeStop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t)
		r.stage.SetHoldTime(300 * time.Millisecond)
		r.m.Hurry("nothing to hurry")
		c, done := r.move(t)
		c.Homed()
		time.Sleep(50 * time.Millisecond)
		r.m.Stop(stop.Shutdown, "SIGTERM")
		time.Sleep(50 * time.Millisecond)
		r.m.Hurry("second SIGTERM")
		e := <-done
		assert.Equal(t, Canceled, e.Outcome, "hurrying is not a fault")
		assert.Equal(t, Idle, e.After)
		assert.False(t, r.m.Trusted(), "reset while decelerating: alarm, position lost")
		assert.Equal(t, "Reset", r.stage.Calls()[len(r.stage.Calls())-1])
	})
}

func TestAMissedHoldLatchesFaulted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t)
		r.stage.HoldNever(true)
		c, done := r.move(t)
		c.Homed()
		time.Sleep(50 * time.Millisecond)
		r.m.Stop(stop.Operator, "console")
		e := <-done
		assert.Equal(t, Aborted, e.Outcome, "an operator stop that could not complete is not a plain cancel")
		assert.True(t, e.Escalated)
		assert.ErrorIs(t, e.Err, motion.ErrTimeout)
		assert.Equal(t, Faulted, r.m.State())
		assert.Contains(t, r.m.LatchReason(), "safe stop incomplete")
		assert.False(t, r.m.Trusted())
	})
}

func TestAFailedOperationIsBroughtToRest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t)
		c, err := r.m.Claim(context.Background(), "capture")
		require.NoError(t, err)
		r.lightOn(t)
		e := c.End(errors.New("disk full"))
		assert.Equal(t, Failed, e.Outcome)
		assert.Equal(t, "error: disk full", e.Why)
		assert.Equal(t, gpio.Low, r.pin.Read())
		assert.Equal(t, []string{"Hold", "Reset"}, r.stage.Calls())
		assert.ErrorIs(t, e.Err, context.Cause(c.Context()), "the failure cancelled the operation's context")
		c.Release()
		assert.Equal(t, Idle, r.m.State())
	})
}

func TestADeviceFaultIsAStop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t)
		c, done := r.move(t)
		time.Sleep(50 * time.Millisecond)
		r.stage.InjectAlarm()
		e := <-done
		assert.Equal(t, Aborted, e.Outcome)
		assert.Equal(t, stop.Fault, e.Reason)
		assert.Contains(t, e.Why, "fault: stage: ")
		assert.ErrorIs(t, e.Err, motion.ErrAlarm)
		assert.Equal(t, Faulted, r.m.State())
		cause, ok := stop.FromContext(c.Context())
		require.True(t, ok)
		assert.Equal(t, stop.Fault, cause.Reason)
	})
}

func TestAStopAfterTheEndLatchesOnRelease(t *testing.T) {
	for _, reason := range []stop.Reason{stop.Operator, stop.Fault, stop.EStop} {
		t.Run(reason.String(), func(t *testing.T) {
			r := newRig(t)
			c, err := r.m.Claim(context.Background(), "run")
			require.NoError(t, err)
			e := c.End(nil)
			require.Equal(t, Completed, e.Outcome)
			r.m.Stop(reason, "late")
			assert.Equal(t, Running, r.m.State(), "the record is still being written")
			c.Release()
			want := map[stop.Reason]State{stop.Operator: Idle, stop.Fault: Faulted, stop.EStop: EStop}[reason]
			assert.Equal(t, want, r.m.State())
			assert.Empty(t, r.stage.Calls(), "nothing was moving")
		})
	}
}

func TestTheParentContextStopsThroughStop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t)
		ctx, cancel := context.WithCancelCause(context.Background())
		c, err := r.m.Claim(ctx, "run")
		require.NoError(t, err)
		cancel(stop.New(stop.Shutdown, "SIGTERM"))
		<-c.Context().Done()
		synctest.Wait()
		e := c.End(context.Cause(c.Context()))
		c.Release()
		assert.Equal(t, Canceled, e.Outcome)
		assert.Equal(t, "shutdown: SIGTERM", e.Why)

		// A context without a stop cause is an operator stop.
		ctx, cancelPlain := context.WithCancel(context.Background())
		c, err = r.m.Claim(ctx, "home")
		require.NoError(t, err)
		cancelPlain()
		synctest.Wait()
		e = c.End(context.Cause(c.Context()))
		c.Release()
		assert.Equal(t, "operator: context: context canceled", e.Why)
	})
}

// TestAHaltNeverFollowsTheSafeStopsReset races stops against an operation
// that fails on its own: whichever wins, the stage never sees a feed hold
// after the safe stop's reset (GRBL would be left in Hold:0).
func TestAHaltNeverFollowsTheSafeStopsReset(t *testing.T) {
	r := newRig(t)
	for i := range 200 {
		c, err := r.m.Claim(context.Background(), "op")
		require.NoError(t, err)
		r.stage.ClearCalls()
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.m.Stop(stop.Reason(1+i%3), "race")
		}()
		c.End(errors.New("failed meanwhile"))
		c.Release()
		wg.Wait()
		calls := r.stage.Calls()
		if n := len(calls); n > 0 && calls[n-1] == "Halt" {
			t.Fatalf("case %d: halt after the safe stop: %v", i, calls)
		}
		st, _, _ := r.stage.State()
		require.NotEqual(t, motion.StateHold, st, "case %d: %v", i, calls)
	}
}

func TestStatsAndEvents(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t)
		c, done := r.move(t)
		c.Homed()
		time.Sleep(50 * time.Millisecond)
		r.m.Stop(stop.Operator, "console")
		r.m.Stop(stop.Operator, "console")
		<-done
		c, err := r.m.Claim(context.Background(), "light")
		require.NoError(t, err)
		c.Release()
		s := r.m.Stats()
		assert.Equal(t, 2, s.Requests[stop.Operator])
		assert.Equal(t, 1, s.Stopped["operator"])
		assert.Equal(t, 1, s.Completed)
		assert.Equal(t, 1, s.ToRest.N)
		assert.Equal(t, 1, s.ToEnd.N)

		var kinds []string
		for len(r.events) > 0 {
			e := <-r.events
			kinds = append(kinds, fmt.Sprintf("%d:%s", e.Kind, e.State))
		}
		assert.Equal(t, []string{"1:running", "2:running", "1:stopping", "1:idle", "1:running", "1:idle"}, kinds)
	})
}

// blockingWriter blocks every Write until released: a journal pipe that
// nobody drains.
type blockingWriter struct{ release chan struct{} }

func (w *blockingWriter) Write(p []byte) (int, error) {
	<-w.release
	return len(p), nil
}

// TestAStuckLogNeverHoldsUpAStop: the machine writes its log after it has
// let go of its lock, so a stop whose log line cannot be written has halted
// the devices already, and the next stop (an e-stop) is not held up by it.
func TestAStuckLogNeverHoldsUpAStop(t *testing.T) {
	r := newRig(t)
	w := &blockingWriter{release: make(chan struct{})}
	r.m.log = logging.New(w, logging.Options{Level: logging.Debug}).For("machine")
	c, err := r.m.Claim(context.Background(), "move")
	require.NoError(t, err)
	r.lightOn(t)
	first := make(chan struct{})
	go func() {
		defer close(first)
		r.m.Stop(stop.Operator, "console") // blocks writing its log line
	}()
	require.Eventually(t, func() bool { return len(r.stage.Calls()) > 0 }, 5*time.Second, time.Millisecond)
	assert.Equal(t, gpio.Low, r.pin.Read(), "halted before the log line")
	second := make(chan struct{})
	go func() {
		defer close(second)
		r.m.Stop(stop.EStop, "mushroom")
	}()
	require.Eventually(t, func() bool { return len(r.stage.Calls()) > 0 && c.Context().Err() != nil }, 5*time.Second, time.Millisecond)
	require.Eventually(t, func() bool {
		r.m.mu.Lock()
		defer r.m.mu.Unlock()
		return c.reason == stop.EStop
	}, 5*time.Second, time.Millisecond, "the e-stop got the lock while the first stop's log was stuck")
	close(w.release)
	<-first
	<-second
	c.End(context.Cause(c.Context()))
	c.Release()
	assert.Equal(t, EStop, r.m.State())
}

// TestALatchNamesItsReason: the event of a latch carries the reason of the
// stop that latched it (what the factory host's alarms are chosen by),
// including a safe stop that could not complete (its own, non-latching
// reason) and a stop after the end.
func TestALatchNamesItsReason(t *testing.T) {
	latchOf := func(r *rig) Event {
		t.Helper()
		for {
			select {
			case e := <-r.events:
				if e.Kind == StateChanged && e.State.Latched() {
					return e
				}
			default:
				t.Fatal("no latch event")
			}
		}
	}
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t)
		r.m.Stop(stop.Abort, "host ABORT")
		e := latchOf(r)
		assert.Equal(t, Faulted, e.State)
		assert.Equal(t, stop.Abort, e.Reason)
		assert.Equal(t, "abort: host ABORT", e.Text)
		require.NoError(t, r.m.Reset(context.Background()))

		r.stage.HoldNever(true)
		c, done := r.move(t)
		c.Homed()
		time.Sleep(50 * time.Millisecond)
		r.m.Stop(stop.Host, "S2F41 STOP")
		<-done
		e = latchOf(r)
		assert.Equal(t, Faulted, e.State)
		assert.Equal(t, stop.Host, e.Reason, "an escalated safe stop keeps its own reason")
		assert.Contains(t, e.Text, "safe stop incomplete")
		require.NoError(t, r.m.Reset(context.Background()))
		r.stage.HoldNever(false)

		c, err := r.m.Claim(context.Background(), "run")
		require.NoError(t, err)
		c.End(nil)
		r.m.Stop(stop.EStop, "late")
		c.Release()
		e = latchOf(r)
		assert.Equal(t, EStop, e.State)
		assert.Equal(t, stop.EStop, e.Reason)
	})
}
