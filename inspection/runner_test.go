package inspection_test

// The runner's logic on fakes (fakes_test.go) and a fake clock: each test
// takes milliseconds. What depends on the GRBL protocol stays on the
// emulator (e2e_test.go, stopcontract_test.go).

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"periph.io/x/conn/v3/gpio"

	"github.com/waferd/waferd/illumination"
	"github.com/waferd/waferd/inspection"
	"github.com/waferd/waferd/inspection/results"
	"github.com/waferd/waferd/machine"
	"github.com/waferd/waferd/motion"
	"github.com/waferd/waferd/stop"
)

// TestETACountsSitesOnly: the first site's ETA is the remaining sites at
// the pace of the sites done; homing (an hour of it, on the fake clock)
// and the reference die are behind the run and must not inflate it.
func TestETACountsSitesOnly(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newFakeRig(t, testRecipe)
		g.stage.SetHomeTime(time.Hour)
		require.False(t, g.m.Trusted(), "the run homes first")
		var first []inspection.Progress
		g.runner.Progress = func(p inspection.Progress) {
			if len(first) == 0 {
				first = append(first, p)
			}
		}
		out, err := g.run(t, g.rec)
		require.NoError(t, err)
		require.Equal(t, machine.Completed, out.Outcome, out.Reason)
		require.Len(t, first, 1)
		p := first[0]
		require.Equal(t, 1, p.Done)
		require.Greater(t, p.Total, 2)
		assert.Less(t, p.Elapsed, time.Minute, "the first site's time, not homing's")
		assert.Equal(t, p.Elapsed*time.Duration(p.Total-1), p.ETA, "the remaining sites at the first site's pace")
	})
}

func TestCanceledRunLeavesValidPartialRecord(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newFakeRig(t, testRecipe)
		ctx, cancel := context.WithCancelCause(t.Context())
		defer cancel(nil)
		g.runner.Progress = func(p inspection.Progress) {
			if p.Done == 3 {
				// Stop while the stage moves to the fourth site (a move
				// takes 20 ms).
				time.AfterFunc(5*time.Millisecond, func() {
					assert.True(t, g.stage.Moving(), "the stop comes during a move")
					cancel(stop.New(stop.Operator, "test"))
				})
			}
		}
		out, err := runClaimed(ctx, g.m, g.runner, g.rec)
		require.NoError(t, err)
		assert.Equal(t, machine.Canceled, out.Outcome, "err %v", out.Err)
		assert.Equal(t, "operator: test", out.Reason)
		assert.ErrorIs(t, out.Err, context.Cause(ctx))

		run := loadRun(t, out.Dir)
		assert.Equal(t, results.Canceled, run.State)
		assert.False(t, run.Complete)
		assert.Equal(t, "operator: test", run.Reason)
		assert.GreaterOrEqual(t, run.SitesDone, 3)
		assert.Less(t, run.SitesDone, len(g.rec.Sites))
		done := 0
		for _, s := range run.Sites {
			if s.Status == results.SiteDone {
				done++
				assert.FileExists(t, filepath.Join(out.Dir, s.Result))
			}
		}
		assert.Equal(t, run.SitesDone, done)
		assert.NotNil(t, run.EndedAt)
		assert.FileExists(t, filepath.Join(out.Dir, "wafermap.png"))

		assert.Equal(t, gpio.Low, g.pin.Read(), "light off after a stop")
		assert.False(t, g.stage.Moving(), "stage at rest after a stop")
		st, _, _ := g.stage.State()
		assert.Equal(t, motion.StateIdle, st, "hold then reset leaves the stage idle, not in alarm")
		assert.True(t, g.m.Trusted(), "a controlled hold keeps the position")

		// The next run starts and completes.
		g.runner.Progress = nil
		out2, err := g.run(t, g.rec)
		require.NoError(t, err)
		assert.Equal(t, machine.Completed, out2.Outcome, "err %v", out2.Err)
	})
}

// TestHeldStageRefusesToStart: a controller held by a feed hold (a hold
// button wired to GRBL, say) executes no motion. A run refuses to start on
// it at once, naming the state, instead of waiting out its first move's
// budget and blaming the stage's silence; nothing moves and nothing is
// recorded. Once the hold is released, runs start again.
func TestHeldStageRefusesToStart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newFakeRig(t, testRecipe)
		require.NoError(t, g.stage.Halt()) // an idle stage enters Hold:0, as GRBL's does
		st, sub, _ := g.stage.State()
		require.Equal(t, motion.StateHold, st)
		require.Equal(t, 0, sub)

		_, err := g.run(t, g.rec)
		require.ErrorIs(t, err, motion.ErrNotReady)
		assert.ErrorContains(t, err, `cannot start "e2e": motion: stage not ready: the controller reports Hold:0: held (feed hold)`)
		assert.Equal(t, machine.Idle, g.m.State())
		runs, err := g.runner.Store.List()
		require.NoError(t, err)
		assert.Empty(t, runs, "a run that did not start leaves no record")
		assert.NotContains(t, g.stage.Calls(), "Home")
		assert.NotContains(t, g.stage.Calls(), "MoveTo")

		require.NoError(t, g.stage.Resume(t.Context()))
		out, err := g.run(t, g.rec)
		require.NoError(t, err)
		assert.Equal(t, machine.Completed, out.Outcome, "%v", out.Err)
	})
}

// TestSitesArePipelined holds up the processing of the first site until the
// stage has started moving to the second: that happens only if acquisition
// runs ahead of analysis and saving. With Config.Serial it must not.
func TestSitesArePipelined(t *testing.T) {
	for _, serial := range []bool{false, true} {
		t.Run(fmt.Sprintf("serial=%v", serial), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				g := newFakeRig(t, testRecipe)
				g.runner.Config.Serial = serial
				second := g.rec.Sites[1].Index
				moving := make(chan struct{})
				var once sync.Once
				g.runner.OnStep = func(s inspection.Step, site int) {
					if s == inspection.StepMove && site == second {
						once.Do(func() { close(moving) })
					}
				}
				overlapped := false
				g.runner.Progress = func(p inspection.Progress) {
					if p.Done != 1 {
						return
					}
					wait := 5 * time.Second
					if serial {
						wait = 200 * time.Millisecond // nothing can come
					}
					select {
					case <-moving:
						overlapped = true
					case <-time.After(wait):
					}
				}
				out, err := g.run(t, g.rec)
				require.NoError(t, err)
				require.Equal(t, machine.Completed, out.Outcome, "%s %v", out.Reason, out.Err)
				assert.Equal(t, !serial, overlapped, "stage moving to site 2 while site 1 is still being processed")
				assert.Equal(t, len(g.rec.Sites), out.Done)
			})
		})
	}
}

// failingLight fails On after a number of successful calls.
type failingLight struct {
	illumination.Lamp
	mu     sync.Mutex
	okLeft int
}

func (l *failingLight) On(level float64) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.okLeft <= 0 {
		_ = l.Lamp.Off()
		return errors.New("light driver: EIO")
	}
	l.okLeft--
	return l.Lamp.On(level)
}

// stopOnStatus is a stage whose next Status call runs a hook first: the
// run asks for the status after claiming the machine and before creating
// its record.
type stopOnStatus struct {
	motion.Stage
	hook func()
}

func (s *stopOnStatus) Status(ctx context.Context) (motion.Status, error) {
	if h := s.hook; h != nil {
		s.hook = nil
		h()
	}
	return s.Stage.Status(ctx)
}

// TestStopWhileARunFailsToStart: a run whose record cannot be created
// never starts, but a stop that arrived meanwhile must not be lost with it:
// an e-stop or a fault still latches the idle machine.
func TestStopWhileARunFailsToStart(t *testing.T) {
	for _, reason := range []stop.Reason{stop.EStop, stop.Fault, stop.Operator} {
		t.Run(reason.String(), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				g := newFakeRig(t, testRecipe)
				// In alarm, as GRBL starts with homing enabled: the stop's
				// feed hold leaves it there, so the run gets as far as its
				// record (held, it would refuse to start before).
				g.stage.InjectAlarm()
				// The runs directory replaced by a file: creating a record fails.
				runs := filepath.Join(g.data, "runs")
				require.NoError(t, os.RemoveAll(runs))
				require.NoError(t, os.WriteFile(runs, nil, 0o644))
				g.runner.Stage = &stopOnStatus{Stage: g.stage, hook: func() { g.m.Stop(reason, "test") }}

				_, err := g.run(t, g.rec)
				require.Error(t, err)
				assert.ErrorContains(t, err, "inspection: results:")
				want := map[stop.Reason]machine.State{stop.EStop: machine.EStop, stop.Fault: machine.Faulted, stop.Operator: machine.Idle}[reason]
				assert.Equal(t, want, g.m.State())
				if want != machine.Idle {
					assert.Equal(t, reason.String()+": test", g.m.LatchReason())
				}
			})
		})
	}
}

// TestInjectedFaults: a device that fails, or a step that overruns its
// budget, while the run works on site 1 aborts the run (fault: <device>),
// or fails it (error: the results cannot be written); the machine is left
// at rest with a valid partial record, and the next run completes. The
// faults of the stage's link are TestInjectedLinkFaults, on the emulator.
func TestInjectedFaults(t *testing.T) {
	type fault struct {
		name   string
		inject func(g *fakeRig) // called before the run; most set a hook for site 1
		reason string
		state  machine.Outcome
		check  func(t *testing.T, g *fakeRig, out inspection.Result)
	}
	// duringMove calls f once the stage moves to site 1.
	duringMove := func(f func(g *fakeRig)) func(g *fakeRig) {
		return func(g *fakeRig) {
			g.runner.OnStep = func(s inspection.Step, i int) {
				if s == inspection.StepMove && i == 1 {
					g.stage.OnCall(func(call string) {
						if call == "moving" {
							g.stage.OnCall(nil)
							f(g)
						}
					})
				}
			}
		}
	}
	atCapture := func(f func(g *fakeRig)) func(g *fakeRig) {
		return func(g *fakeRig) {
			g.runner.OnStep = func(s inspection.Step, i int) {
				if s == inspection.StepCapture && i == 1 {
					f(g)
				}
			}
		}
	}
	faults := []fault{
		// A feed hold from elsewhere (a hold button on the controller):
		// the stage executes nothing until resumed, and the move overruns
		// its budget.
		{name: "stage left in a feed hold", state: machine.Aborted, reason: "fault: stage",
			inject: duringMove(func(g *fakeRig) { _ = g.stage.Halt() }), // the check fails if it does
			check: func(t *testing.T, g *fakeRig, out inspection.Result) {
				assert.ErrorIs(t, out.Err, motion.ErrTimeout)
				// On the fake clock any budget passes: check it is this
				// move's, 2 × 10 mm at 3000 mm/min + 5 s.
				assert.ErrorContains(t, out.Err, "not finished within 5.4s")
			}},
		{name: "alarm mid-move", state: machine.Aborted, reason: "fault: stage",
			inject: duringMove(func(g *fakeRig) { g.stage.InjectAlarm() }),
			check: func(t *testing.T, g *fakeRig, out inspection.Result) {
				assert.ErrorIs(t, out.Err, motion.ErrAlarm)
				assert.False(t, g.m.Trusted())
			}},
		{name: "camera frame wait never returns", state: machine.Aborted, reason: "fault: camera",
			inject: atCapture(func(g *fakeRig) { g.camera.InjectHang(true) }),
			check: func(t *testing.T, g *fakeRig, out inspection.Result) {
				assert.ErrorContains(t, out.Err, "no frame within 1s") // Config.CaptureTimeout
				g.camera.InjectHang(false)
			}},
		{name: "camera errors", state: machine.Aborted, reason: "fault: camera",
			inject: atCapture(func(g *fakeRig) { g.camera.FailNext(errors.New("VIDIOC_DQBUF: EIO")) }),
			check: func(t *testing.T, g *fakeRig, out inspection.Result) {
				assert.ErrorContains(t, out.Err, "VIDIOC_DQBUF: EIO")
			}},
		{name: "light driver errors", state: machine.Aborted, reason: "fault: light",
			inject: func(g *fakeRig) {
				g.runner.Light = &failingLight{Lamp: g.light, okLeft: 2} // reference, site 0
			},
			check: func(t *testing.T, g *fakeRig, out inspection.Result) {
				assert.ErrorContains(t, out.Err, "light driver: EIO")
				g.runner.Light = g.light
			}},
		{name: "results not writable", state: machine.Failed, reason: "error: ",
			inject: func(g *fakeRig) {
				g.runner.OnStep = func(s inspection.Step, i int) {
					if s == inspection.StepSave && i == 1 {
						// A directory where the site image must go: the
						// atomic rename onto it fails.
						ents, _ := filepath.Glob(filepath.Join(g.data, "runs", "*-three*", "sites"))
						for _, e := range ents {
							_ = os.MkdirAll(filepath.Join(e, "0001.png", "x"), 0o755)
						}
					}
				}
			},
			check: func(t *testing.T, g *fakeRig, out inspection.Result) {
				assert.ErrorContains(t, out.Err, "0001.png")
				// What was saved before is intact.
				run := loadRun(t, out.Dir)
				assert.Equal(t, results.SiteDone, run.Sites[0].Status)
				assert.FileExists(t, filepath.Join(out.Dir, run.Sites[0].Image))
			}},
	}
	for _, f := range faults {
		t.Run(f.name, func(t *testing.T) {
			t.Parallel()
			synctest.Test(t, func(t *testing.T) {
				g := newFakeRig(t, threeSites)
				g.home(t)
				f.inject(g)
				out, err := g.run(t, g.rec)
				require.NoError(t, err)
				latched := machine.Faulted
				if f.state == machine.Failed {
					latched = machine.Idle
				}
				want := expect{state: f.state, reason: f.reason, latched: latched, done: 0, doneMax: 1}
				if f.name == "results not writable" {
					want.done = -1
				}
				g.checkStopped(t, out, want)
				f.check(t, g, out)

				if g.m.State().Latched() {
					require.NoError(t, g.m.Reset(t.Context()))
				}
				g.runner.OnStep = nil
				one := *g.rec
				one.Sites = g.rec.Sites[:1]
				next, err := g.run(t, &one)
				require.NoError(t, err)
				assert.Equal(t, machine.Completed, next.Outcome, "next run: %s %v", next.Reason, next.Err)
			})
		})
	}
}
