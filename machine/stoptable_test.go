package machine_test

// The README's stop table, row by row: every stop reason × every activity
// that can hold the machine (idle, homing, a console move and jog, each
// step of a run, self-test, capture, a safe stop already in progress),
// through the daemon's own operations on fake devices. For each it checks
// what the stage was told after the stop (a controlled hold, then a soft
// reset; or, for an e-stop, a reset at once), that the light is off, the
// latch, the outcome and whether the position is still trusted.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"periph.io/x/conn/v3/gpio"

	"github.com/waferd/waferd/daemon"
	"github.com/waferd/waferd/daemon/daemontest"
	"github.com/waferd/waferd/inspection"
	"github.com/waferd/waferd/machine"
	"github.com/waferd/waferd/motion"
	"github.com/waferd/waferd/stop"
)

var reasons = []stop.Reason{stop.Operator, stop.Host, stop.Button, stop.Shutdown, stop.Fault, stop.Watchdog, stop.Abort, stop.EStop}

// activity starts something on a rig whose stage is homed, and calls
// stopNow (exactly once) at the point where the stop must land. It
// returns once the activity has ended.
type activity struct {
	name string
	do   func(t *testing.T, r *daemontest.Rig, steps *stepHook, stopNow func())
	// homing: the activity is a homing cycle, which GRBL stops only with a
	// reset (the driver's abort): the position is lost whatever the reason.
	homing bool
	// stopped: a stop at this point cannot catch the activity any more
	// (it finished first); the outcome is then completed.
	idle bool
}

// stepHook lets a run activity see the run's steps (daemontest's OnStep).
type stepHook struct {
	mu sync.Mutex
	f  func(inspection.Step, int)
}

func (h *stepHook) on(s inspection.Step, site int) {
	h.mu.Lock()
	f := h.f
	h.mu.Unlock()
	if f != nil {
		f(s, site)
	}
}

func (h *stepHook) set(f func(inspection.Step, int)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.f = f
}

// atStage stops when the stage reports call ("moving", "homing", ...).
func atStage(r *daemontest.Rig, call string, stopNow func()) {
	var once sync.Once
	r.Stage.OnCall(func(c string) {
		if c == call {
			once.Do(stopNow)
		}
	})
}

// whileCapturing makes the next capture hang and stops once it waits.
func whileCapturing(r *daemontest.Rig, stopNow func()) {
	r.Camera.InjectHang(true)
	go func() {
		for !r.Camera.Streaming() {
			time.Sleep(100 * time.Microsecond)
		}
		stopNow()
	}()
}

// runStoppedAt runs the rig's recipe and stops it at step of site 1.
func runStoppedAt(step inspection.Step, during func(r *daemontest.Rig, stopNow func())) func(*testing.T, *daemontest.Rig, *stepHook, func()) {
	return func(t *testing.T, r *daemontest.Rig, steps *stepHook, stopNow func()) {
		var once sync.Once
		steps.set(func(s inspection.Step, site int) {
			if s == step && site == 1 {
				once.Do(func() {
					if during != nil {
						during(r, stopNow)
					} else {
						stopNow()
					}
				})
			}
		})
		_, err := r.D.Run(context.Background(), r.Recipe)
		require.NoError(t, err)
	}
}

var activities = []activity{
	{name: "idle", idle: true, do: func(t *testing.T, r *daemontest.Rig, _ *stepHook, stopNow func()) { stopNow() }},
	{name: "homing", homing: true, do: func(t *testing.T, r *daemontest.Rig, _ *stepHook, stopNow func()) {
		atStage(r, "homing", stopNow)
		require.Error(t, r.D.Home(context.Background()))
	}},
	{name: "manual move", do: func(t *testing.T, r *daemontest.Rig, _ *stepHook, stopNow func()) {
		atStage(r, "moving", stopNow)
		require.Error(t, r.D.MoveTo(context.Background(), motion.Point{X: motion.MM(200), Y: motion.MM(200)}))
	}},
	{name: "jog", do: func(t *testing.T, r *daemontest.Rig, _ *stepHook, stopNow func()) {
		atStage(r, "moving", stopNow)
		require.Error(t, r.D.Jog(context.Background(), motion.Point{X: motion.MM(10)}))
	}},
	{name: "run: before move", do: runStoppedAt(inspection.StepMove, nil)},
	{name: "run: during move", do: runStoppedAt(inspection.StepMove, func(r *daemontest.Rig, stopNow func()) {
		atStage(r, "moving", stopNow)
	})},
	{name: "run: settle", do: runStoppedAt(inspection.StepSettle, nil)},
	{name: "run: light on", do: runStoppedAt(inspection.StepLightOn, nil)},
	{name: "run: capture", do: runStoppedAt(inspection.StepCapture, whileCapturing)},
	{name: "run: analysis", do: runStoppedAt(inspection.StepAnalyse, nil)},
	{name: "run: save", do: runStoppedAt(inspection.StepSave, nil)},
	{name: "run: between sites", do: runStoppedAt(inspection.StepNextSite, nil)},
	{name: "self-test", do: func(t *testing.T, r *daemontest.Rig, _ *stepHook, stopNow func()) {
		whileCapturing(r, stopNow)
		_, err := r.D.SelfTest(context.Background())
		require.Error(t, err)
	}},
	{name: "capture", do: func(t *testing.T, r *daemontest.Rig, _ *stepHook, stopNow func()) {
		whileCapturing(r, stopNow)
		_, err := r.D.Capture(context.Background(), "x")
		require.Error(t, err)
	}},
}

// expected is the stop table's row for a reason.
func expected(r stop.Reason) (machine.Outcome, machine.State) {
	switch r {
	case stop.EStop:
		return machine.Aborted, machine.EStop
	case stop.Fault, stop.Watchdog, stop.Abort:
		return machine.Aborted, machine.Faulted
	}
	return machine.Canceled, machine.Idle
}

// stageActions reduces the calls the stage saw after the stop to what the
// stop and the safe stop did: "hold, reset", or "abort, reset" (repeated
// halts, and the moves and polls before, left out).
func stageActions(calls []string) string {
	var acts []string
	for _, c := range calls {
		if c == "Hold" || c == "Reset" || c == "Abort" {
			acts = append(acts, c)
		}
	}
	return fmt.Sprint(acts)
}

// atStop is the stage's first call on a stop: the soft reset at once for
// an e-stop or a host abort, the feed hold for every other reason.
func atStop(r stop.Reason) string {
	if r.Immediate() {
		return "Abort"
	}
	return "Halt"
}

func TestStopTable(t *testing.T) {
	for _, a := range activities {
		for _, reason := range reasons {
			t.Run(a.name+"/"+reason.String(), func(t *testing.T) {
				t.Parallel()
				steps := &stepHook{}
				r := daemontest.New(t, daemontest.Options{OnStep: steps.on})
				require.NoError(t, r.D.Home(context.Background()))
				r.Stage.ClearCalls()
				var stopped atomic.Bool
				stopNow := func() {
					r.Stage.ClearCalls()
					require.NoError(t, r.LightPin.Out(gpio.High), "the light on, as at any point an operation may have it")
					stopped.Store(true)
					r.D.Stop(reason, "table")
				}
				a.do(t, r, steps, stopNow)
				r.Stage.OnCall(nil)
				r.Camera.InjectHang(false)
				require.True(t, stopped.Load(), "the stop was not triggered")

				outcome, latch := expected(reason)
				assert.Equal(t, gpio.Low, r.Light(), "light off")
				assert.Equal(t, latch, r.D.Machine.State(), "latch")
				assert.False(t, r.Stage.Moving(), "stage at rest")
				if a.idle {
					assert.Empty(t, r.Stage.Calls(), "an idle stage is not touched")
					assert.True(t, r.D.Machine.Trusted())
					return
				}
				last := r.D.Machine.Last()
				assert.Equal(t, outcome, last.Ending.Outcome, "outcome (%s)", last.Ending.Why)
				assert.Equal(t, reason.String()+": table", last.Ending.Why)
				calls := r.Stage.Calls()
				switch {
				case reason.Immediate():
					// Stop itself resets the stage (Abort), before the
					// operation returns (and, homing, before the driver's
					// own abort); the safe stop then completes the restart
					// without a hold.
					assert.Equal(t, atStop(reason), calls[0], "an e-stop or a host abort resets at once, within Stop: %v", calls)
					acts := stageActions(calls)
					assert.True(t, acts == "[Abort Reset]" || a.homing && acts == "[Abort Reset Reset]", "reset at once, no hold: %v", calls)
				case a.homing:
					// The driver's abort (a reset: GRBL ignores a feed hold
					// while homing), then the safe stop.
					assert.Equal(t, "[Reset Hold Reset]", stageActions(calls), "%v", calls)
				default:
					assert.Equal(t, "[Hold Reset]", stageActions(calls), "controlled hold, then reset: %v", calls)
				}
				assert.Equal(t, atStop(reason), calls[0], "the stage is halted first: %v", calls)
				trusted := !reason.Immediate() && !a.homing
				assert.Equal(t, trusted, r.D.Machine.Trusted(), "position trust")
			})
		}
	}
}

// TestStopDuringASafeStop: a second stop while the safe stop holds the
// stage escalates it if it is stronger (an e-stop abandons the hold and
// resets at once) and is ignored otherwise.
func TestStopDuringASafeStop(t *testing.T) {
	for _, second := range reasons {
		t.Run("operator then "+second.String(), func(t *testing.T) {
			t.Parallel()
			r := daemontest.New(t, daemontest.Options{})
			require.NoError(t, r.D.Home(context.Background()))
			r.Stage.SetHoldTime(200 * time.Millisecond)
			var once sync.Once
			r.Stage.OnCall(func(c string) {
				switch c {
				case "moving":
					r.D.Stop(stop.Operator, "SIGINT")
				case "Hold":
					once.Do(func() { r.D.Stop(second, "second") })
				}
			})
			err := r.D.MoveTo(context.Background(), motion.Point{X: motion.MM(200)})
			var oe *daemon.OperationError
			require.ErrorAs(t, err, &oe)
			e := oe.Ending
			outcome, latch := expected(second)
			if second <= stop.Operator {
				assert.Equal(t, "operator: SIGINT", e.Why, "a weaker or repeated stop is ignored")
				assert.Equal(t, machine.Canceled, e.Outcome)
				assert.Equal(t, machine.Idle, r.D.Machine.State())
				return
			}
			assert.Equal(t, second.String()+" (escalated from stopped: operator (SIGINT))", e.Why)
			assert.Equal(t, outcome, e.Outcome)
			assert.Equal(t, latch, r.D.Machine.State())
			if second.Immediate() {
				st, _, _ := r.Stage.State()
				assert.Equal(t, motion.StateAlarm, st, "reset while decelerating: the hold was abandoned")
				assert.False(t, r.D.Machine.Trusted())
			} else {
				assert.True(t, r.D.Machine.Trusted(), "the hold completed")
			}
		})
	}
}

// TestSecondSignalHurriesAManualMove: Hurry (a second SIGTERM) reaches any
// operation, not only runs.
func TestSecondSignalHurriesAManualMove(t *testing.T) {
	r := daemontest.New(t, daemontest.Options{})
	require.NoError(t, r.D.Home(context.Background()))
	r.Stage.SetHoldTime(time.Hour)
	r.Stage.OnCall(func(c string) {
		switch c {
		case "moving":
			r.D.Stop(stop.Shutdown, "SIGTERM")
		case "Hold":
			r.D.Hurry("second SIGTERM")
		}
	})
	err := r.D.Jog(context.Background(), motion.Point{X: motion.MM(10)})
	var oe *daemon.OperationError
	require.ErrorAs(t, err, &oe)
	assert.Equal(t, machine.Canceled, oe.Ending.Outcome)
	assert.False(t, oe.Ending.Escalated, "hurried, not a missed deadline")
	assert.Equal(t, "[Hold Reset]", stageActions(r.Stage.Calls()))
	assert.Equal(t, machine.Idle, r.D.Machine.State())
	assert.False(t, errors.Is(oe.Ending.Err, motion.ErrTimeout))
	assert.True(t, slices.Contains(r.Stage.Calls(), "Reset"))
}
