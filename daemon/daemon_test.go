package daemon_test

import (
	"context"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/fstest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"periph.io/x/conn/v3/gpio"

	"github.com/waferd/waferd/config"
	"github.com/waferd/waferd/control"
	"github.com/waferd/waferd/daemon"
	"github.com/waferd/waferd/daemon/daemontest"
	"github.com/waferd/waferd/inspection"
	"github.com/waferd/waferd/inspection/recipe"
	"github.com/waferd/waferd/internal/logging"
	"github.com/waferd/waferd/machine"
	"github.com/waferd/waferd/motion"
	"github.com/waferd/waferd/stop"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func mm(x, y float64) motion.Point { return motion.Point{X: motion.MM(x), Y: motion.MM(y)} }

// startRun starts the rig's recipe and waits until its first site is
// captured.
func startRun(t *testing.T, r *daemontest.Rig) {
	t.Helper()
	require.NoError(t, r.D.StartRun(context.Background(), r.Recipe))
	require.Eventually(t, func() bool { return r.Camera.Captures() >= 2 }, 10*time.Second, time.Millisecond)
}

// result waits for the background run to end and returns its result.
func result(t *testing.T, r *daemontest.Rig) inspection.Result {
	t.Helper()
	require.NoError(t, r.D.WaitRun(context.Background()))
	return r.D.Last()
}

func TestButtonBounceIsOneStop(t *testing.T) {
	r := daemontest.New(t, daemontest.Options{})
	startRun(t, r)
	for _, l := range []gpio.Level{gpio.High, gpio.Low, gpio.High, gpio.Low, gpio.High} {
		daemontest.Press(t, r.ButtonPin, l)
	}
	out := result(t, r)
	assert.Equal(t, machine.Canceled, out.Outcome, "%s %v", out.Reason, out.Err)
	assert.Equal(t, "button: BUTTON(2)", out.Reason)
	assert.Equal(t, machine.Idle, r.D.Machine.State())
	assert.Equal(t, 1, r.D.Stats().Requests[stop.Button], "bounces within the debounce time are one press")
	// Release; a second press while idle stops nothing and latches nothing.
	daemontest.Press(t, r.ButtonPin, gpio.Low)
	assert.Equal(t, machine.Idle, r.D.Machine.State())
}

func TestEStopLatchesUntilReleasedAndReset(t *testing.T) {
	r := daemontest.New(t, daemontest.Options{})
	startRun(t, r)
	daemontest.Press(t, r.EStopPin, gpio.High)
	out := result(t, r)
	assert.Equal(t, machine.Aborted, out.Outcome)
	assert.Equal(t, "estop: ESTOP(3)", out.Reason)
	assert.Equal(t, machine.EStop, r.D.Machine.State())
	assert.Equal(t, gpio.Low, r.Light())
	assert.NotContains(t, r.Stage.Calls(), "Hold", "an e-stop resets at once")

	// No motion accepted, no reset while the e-stop is still engaged.
	require.ErrorIs(t, r.D.StartRun(context.Background(), r.Recipe), machine.ErrLatched)
	require.ErrorIs(t, r.D.MoveTo(context.Background(), mm(1, 1)), machine.ErrLatched)
	require.ErrorContains(t, r.D.Reset(context.Background()), "release it")
	daemontest.Press(t, r.EStopPin, gpio.Low)
	require.Eventually(t, func() bool { return r.D.Reset(context.Background()) == nil }, 5*time.Second, 5*time.Millisecond)
	assert.Equal(t, machine.Idle, r.D.Machine.State())
	startRun(t, r)
	assert.Equal(t, machine.Completed, result(t, r).Outcome, "after release and reset the machine runs again")
}

func TestLightLeaseExpiryFaultsTheRun(t *testing.T) {
	r := daemontest.New(t, daemontest.Options{Config: func(c *config.Config) { c.Watchdog.LightMaxOnMS = 20 }})
	slow := *r.Recipe
	slow.Exposure = 2 * time.Second // far beyond the 20 ms lease
	require.NoError(t, r.D.StartRun(context.Background(), &slow))
	out := result(t, r)
	assert.Equal(t, machine.Aborted, out.Outcome)
	assert.Contains(t, out.Reason, "watchdog: light")
	assert.Equal(t, machine.Faulted, r.D.Machine.State())
	assert.Equal(t, gpio.Low, r.Light(), "light switched off")
}

// TestASlowHomingIsNotAStuckRunner: a run's homing cycle may outlast the
// runner's heartbeat limit (a stock GRBL homes 300 mm in about 36 s; the
// limit is 30 s): the stage poll sees it homing and vouches for the runner.
// Checked where the homing ends, at the run's first move (the rest of the
// run, with a 300 ms limit under the race detector, is not this test's).
func TestASlowHomingIsNotAStuckRunner(t *testing.T) {
	var r *daemontest.Rig
	atMove := make(chan machine.State, 1)
	r = daemontest.New(t, daemontest.Options{HomeTime: 1500 * time.Millisecond,
		Config: func(c *config.Config) { c.Watchdog.RunnerHeartbeatMS = 300 },
		OnStep: func(s inspection.Step, _ int) {
			if s == inspection.StepMove {
				select {
				case atMove <- r.D.Machine.State():
					r.D.Stop(stop.Operator, "test: homed")
				default:
				}
			}
		},
	})
	require.False(t, r.D.Machine.Trusted(), "the run homes first")
	require.NoError(t, r.D.StartRun(context.Background(), r.Recipe))
	out := result(t, r)
	select {
	case st := <-atMove:
		assert.Equal(t, machine.Running, st, "not stopped during the homing")
	default:
		t.Fatalf("the run did not reach its first move: %s (%s)", out.Outcome, out.Reason)
	}
}

// TestAStuckRunnerTripsTheWatchdog: a runner that stops taking steps while
// the stage stands still is stopped by the watchdog.
func TestAStuckRunnerTripsTheWatchdog(t *testing.T) {
	stopped := make(chan struct{})
	var once, stuck sync.Once
	r := daemontest.New(t, daemontest.Options{
		Config: func(c *config.Config) { c.Watchdog.RunnerHeartbeatMS = 300 },
		Events: func(e control.Event) {
			if e.Kind == control.StopRequested {
				once.Do(func() { close(stopped) })
			}
		},
		OnStep: func(s inspection.Step, site int) {
			if s == inspection.StepSave && site == 2 {
				stuck.Do(func() { <-stopped }) // a hung disk, say, until the machine stops the run
			}
		},
	})
	require.NoError(t, r.D.StartRun(context.Background(), r.Recipe))
	out := result(t, r)
	assert.Equal(t, machine.Aborted, out.Outcome)
	assert.Contains(t, out.Reason, "watchdog: runner")
	assert.Equal(t, machine.Faulted, r.D.Machine.State())
}

func TestTemperatureAlarmStopsTheRun(t *testing.T) {
	zone := filepath.Join(t.TempDir(), "temp")
	require.NoError(t, os.WriteFile(zone, []byte("45000\n"), 0o644))
	r := daemontest.New(t, daemontest.Options{Config: func(c *config.Config) {
		c.Watchdog.ThermalZone = zone
		c.Watchdog.TempPollMS = 10
		c.Watchdog.TempLimitC = 70
	}})
	slow := *r.Recipe
	slow.Settle = time.Second
	require.NoError(t, r.D.StartRun(context.Background(), &slow))
	require.NoError(t, os.WriteFile(zone, []byte("85000\n"), 0o644))
	out := result(t, r)
	assert.Equal(t, machine.Aborted, out.Outcome)
	assert.Contains(t, out.Reason, "watchdog: temperature")
	assert.Equal(t, machine.Faulted, r.D.Machine.State())
}

func TestWatchdogPingsOnlyWhileHealthy(t *testing.T) {
	r := daemontest.New(t, daemontest.Options{})
	require.Eventually(t, func() bool { return r.Notes.Count("WATCHDOG=1") >= 3 }, 5*time.Second, time.Millisecond, "pings while healthy")
	// The stage stops answering: its heartbeat goes stale, pings stop and
	// the machine latches Faulted.
	r.Stage.Mute(true)
	require.Eventually(t, func() bool { return r.D.Machine.State() == machine.Faulted }, 5*time.Second, time.Millisecond)
	assert.Contains(t, r.D.Machine.LatchReason(), "watchdog: stage-poll")
	n := r.Notes.Count("WATCHDOG=1")
	time.Sleep(500 * time.Millisecond) // > two ping periods of 100 ms
	assert.Equal(t, n, r.Notes.Count("WATCHDOG=1"), "no WATCHDOG=1 while a heartbeat is stale")
	require.Eventually(t, func() bool { return r.Notes.Count("STATUS=machine faulted") > 0 }, 5*time.Second, time.Millisecond)
	r.Stage.Mute(false)
	require.NoError(t, r.Shutdown(context.Background(), "test"))
	assert.Equal(t, 1, r.Notes.Count("STOPPING=1"))
}

func TestShutdownStopsARunSafely(t *testing.T) {
	r := daemontest.New(t, daemontest.Options{})
	startRun(t, r)
	require.NoError(t, r.Shutdown(context.Background(), "SIGTERM"))
	out := r.D.Last()
	assert.Equal(t, machine.Canceled, out.Outcome)
	assert.Equal(t, "shutdown: SIGTERM", out.Reason)
	assert.False(t, r.Stage.Moving())
	assert.Equal(t, 1, r.Notes.Count("STOPPING=1"))
	require.ErrorIs(t, r.D.StartRun(context.Background(), r.Recipe), machine.ErrClosed)
}

func TestShutdownHurriesWhenItsContextEnds(t *testing.T) {
	r := daemontest.New(t, daemontest.Options{Config: func(c *config.Config) { c.Runner.HoldTimeoutMS = 5000 }})
	r.Stage.SetHoldTime(time.Hour) // a hold that would take the whole deadline
	startRun(t, r)
	require.Eventually(t, r.Stage.Moving, 5*time.Second, time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := r.Shutdown(ctx, "SIGTERM")
	require.ErrorIs(t, err, context.DeadlineExceeded)
	out := r.D.Last()
	assert.Equal(t, machine.Canceled, out.Outcome, "hurried, not faulted: %s %v", out.Reason, out.Err)
	assert.False(t, r.D.Machine.Trusted(), "reset while decelerating")
}

// A stop that arrives right after StartRun is not lost: the run holds the
// machine's claim from StartRun on, and is recorded canceled.
func TestStopRightAfterStartRunIsNotLost(t *testing.T) {
	r := daemontest.New(t, daemontest.Options{})
	for i := range 5 {
		require.NoError(t, r.D.StartRun(context.Background(), r.Recipe))
		r.D.Stop(stop.Operator, "at once")
		out := result(t, r)
		require.Equal(t, machine.Canceled, out.Outcome, "try %d: %s", i, out.Reason)
		assert.Equal(t, "operator: at once", out.Reason)
	}
}

func TestManualMotionRules(t *testing.T) {
	r := daemontest.New(t, daemontest.Options{})
	ctx := context.Background()
	require.ErrorIs(t, r.D.MoveTo(ctx, mm(10, 10)), daemon.ErrNotHomed)
	assert.False(t, r.D.Status(ctx).Trusted)

	// A run cannot start while a console homes.
	r.Stage.OnCall(func(call string) {
		if call == "Home" {
			require.ErrorIs(t, r.D.StartRun(ctx, r.Recipe), machine.ErrBusy)
			require.ErrorIs(t, r.D.MoveTo(ctx, mm(1, 1)), machine.ErrBusy, "one operation at a time")
			assert.Equal(t, "home", r.D.Busy())
		}
	})
	require.NoError(t, r.D.Home(ctx))
	r.Stage.OnCall(nil)

	st := r.D.Status(ctx)
	assert.True(t, st.Trusted)
	require.NoError(t, r.D.MoveTo(ctx, mm(20.5, 30)))
	require.NoError(t, r.D.Jog(ctx, mm(-0.5, 1)))
	st = r.D.Status(ctx)
	assert.Equal(t, mm(20, 31), st.Stage.XY())
	err := r.D.MoveTo(ctx, mm(300.001, 0))
	require.ErrorIs(t, err, daemon.ErrOutsideTravel)
	assert.Contains(t, err.Error(), "daemon: move to (300.001, 0.000)mm refused: outside the stage travel")
	require.ErrorIs(t, r.D.Jog(ctx, mm(-21, 0)), daemon.ErrOutsideTravel)
	assert.Equal(t, machine.Idle, r.D.Machine.State(), "a refused move touches nothing")

	startRun(t, r)
	require.ErrorIs(t, r.D.MoveTo(ctx, mm(1, 1)), machine.ErrBusy)
	require.ErrorIs(t, r.D.SetLight(true, 0), machine.ErrBusy)
	require.NoError(t, r.LightPin.Out(gpio.High), "the light on, as a run has it while it captures")
	require.NoError(t, r.D.SetLight(false, 0), "off, the safe state, always works")
	assert.Equal(t, gpio.Low, r.Light())
	assert.True(t, strings.HasPrefix(r.D.Busy(), "run slow"), "the run goes on: %s", r.D.Busy())
	_, err = r.D.Capture(ctx, "x")
	require.ErrorIs(t, err, machine.ErrBusy)
	assert.True(t, strings.HasPrefix(r.D.Busy(), "run slow"), r.D.Busy())
	r.D.Stop(stop.Operator, "test")
	assert.Equal(t, machine.Canceled, result(t, r).Outcome)
}

func TestStopStopsAManualMoveThroughTheSafeStop(t *testing.T) {
	r := daemontest.New(t, daemontest.Options{})
	ctx := context.Background()
	events, unsubscribe := r.D.Subscribe()
	defer unsubscribe()
	require.NoError(t, r.D.Home(ctx))
	r.Stage.ClearCalls()
	r.Stage.OnCall(func(call string) {
		if call == "MoveTo" {
			go func() {
				for !r.Stage.Moving() {
					time.Sleep(time.Millisecond)
				}
				r.D.Stop(stop.Operator, "test")
			}()
		}
	})
	err := r.D.MoveTo(ctx, mm(300, 300))
	var oe *daemon.OperationError
	require.ErrorAs(t, err, &oe)
	assert.Equal(t, "daemon: move stopped: operator: test", err.Error())
	assert.Equal(t, machine.Canceled, oe.Ending.Outcome)
	assert.Equal(t, []string{"MoveTo", "Halt", "Halt", "Hold", "Reset"}, r.Stage.Calls(), "the machine's one safe stop")
	assert.False(t, r.Stage.Moving())
	st := r.D.Status(ctx)
	assert.NotEqual(t, mm(300, 300), st.Stage.XY(), "held short of the target")
	assert.Equal(t, "", st.Busy)
	assert.True(t, st.Trusted, "a completed hold keeps the position")

	stats := r.D.Stats()
	assert.Equal(t, 1, stats.Requests[stop.Operator])
	assert.Equal(t, 1, stats.Stopped["operator"])
	assert.Equal(t, 1, stats.ToEnd.N)
	assert.Equal(t, 1, stats.ToRest.N)
	assert.LessOrEqual(t, stats.ToRest.Max, stats.ToEnd.Max)
	for ev := range events {
		if ev.Kind == control.StopRequested {
			assert.Equal(t, "stopped: operator (test)", ev.Text)
			break
		}
	}
}

func TestConsoleLightGoesOffBeforeTheLeaseExpires(t *testing.T) {
	r := daemontest.New(t, daemontest.Options{Config: func(c *config.Config) { c.Watchdog.LightMaxOnMS = 200 }})
	events, unsubscribe := r.D.Subscribe()
	defer unsubscribe()
	require.NoError(t, r.D.SetLight(true, 0.5))
	assert.Equal(t, gpio.High, r.Light())
	st := r.D.Status(context.Background())
	assert.True(t, st.Light.On)
	assert.Equal(t, 0.5, st.Light.Level)
	for ev := range events {
		if ev.Kind == control.Notice {
			assert.Contains(t, ev.Text, "light switched off")
			break
		}
	}
	assert.Equal(t, gpio.Low, r.Light())
	assert.Equal(t, machine.Idle, r.D.Machine.State(), "switched off in time: no watchdog fault")

	// Any stop switches off a light a console left on.
	require.NoError(t, r.D.SetLightLevel(0.3))
	require.NoError(t, r.D.SetLight(true, 0))
	assert.Equal(t, 0.3, r.D.Status(context.Background()).Light.Level)
	daemontest.Press(t, r.ButtonPin, gpio.High)
	require.Eventually(t, func() bool { return r.Light() == gpio.Low }, 5*time.Second, time.Millisecond)
	assert.False(t, r.D.Status(context.Background()).Light.On)
	assert.Equal(t, machine.Idle, r.D.Machine.State())

	// Off works whenever no operation holds the machine, latched too.
	r.D.Stop(stop.Fault, "test")
	require.NoError(t, r.D.SetLight(false, 0))
	require.ErrorIs(t, r.D.SetLight(true, 0), machine.ErrLatched)
}

// TestLightLevelRule: the daemon applies the rule the console and recipes
// follow (recipe.ValidLightLevel); NaN passed its range check.
func TestLightLevelRule(t *testing.T) {
	r := daemontest.New(t, daemontest.Options{})
	for _, v := range []float64{math.NaN(), math.Inf(1), -0.5, 0.0001, 0.555, 2} {
		require.ErrorContains(t, r.D.SetLight(true, v), "not a fraction from 0.01 to 1 in steps of 0.01 (1%)", "%g", v)
		require.ErrorContains(t, r.D.SetLightLevel(v), "not a fraction from 0.01 to 1 in steps of 0.01 (1%)", "%g", v)
		assert.Equal(t, gpio.Low, r.Light(), "%g", v)
	}
	require.ErrorContains(t, r.D.SetLightLevel(0), "light level 0: not a fraction")
	assert.Equal(t, 0.8, r.D.Status(context.Background()).LightLevel, "unchanged")
	require.NoError(t, r.D.SetLightLevel(0.01))
	require.NoError(t, r.D.SetLight(false, 0))
}

func TestEventsAndStopStatistics(t *testing.T) {
	r := daemontest.New(t, daemontest.Options{})
	events, unsubscribe := r.D.Subscribe()
	defer unsubscribe()
	require.NoError(t, r.D.StartRun(context.Background(), r.Recipe))
	next := func(kind control.EventKind) control.Event {
		for ev := range events {
			if ev.Kind == kind {
				return ev
			}
		}
		t.Fatal("events closed")
		return control.Event{}
	}
	ev := next(control.RunStarted)
	assert.Equal(t, "slow", ev.Recipe)
	assert.Equal(t, len(r.Recipe.Sites), ev.Sites)
	ev = next(control.RunProgress)
	assert.Equal(t, 1, ev.Progress.Done)
	st := r.D.Status(context.Background())
	require.NotNil(t, st.Run)
	assert.Equal(t, "slow", st.Run.Recipe)

	r.D.Stop(stop.Operator, "console test")
	end := next(control.RunEnded)
	assert.Equal(t, machine.Canceled, end.Result.Outcome)
	assert.Equal(t, "operator: console test", end.Result.Reason)
	assert.Nil(t, r.D.Status(context.Background()).Run)

	s := r.D.Stats()
	assert.Equal(t, map[string]int{"operator": 1}, s.Stopped)
	assert.Equal(t, 1, s.ToRest.N)
	assert.Equal(t, 1, s.ToEnd.N)
	assert.Len(t, s.ToEnd.Counts, len(machine.LatencyBounds)+1)
	assert.Positive(t, s.ToEnd.Min)

	one, err := recipe.Parse("one.toml", []byte(strings.Replace(daemontest.Recipe, `layout = "grid"`, "layout = \"sites\"\n[[site]]\ndie = [1, 0]", 1)), daemontest.Limits)
	require.NoError(t, err)
	require.NoError(t, r.D.StartRun(context.Background(), one))
	assert.Equal(t, machine.Completed, result(t, r).Outcome)
	assert.Equal(t, 1, r.D.Stats().Completed)
}

func TestCaptureSelfTestAndLogs(t *testing.T) {
	r := daemontest.New(t, daemontest.Options{})
	ctx := context.Background()
	res, err := r.D.Capture(ctx, "edge")
	require.NoError(t, err)
	assert.Equal(t, filepath.Join(r.D.DataDir(), "captures", "edge.png"), res.Path)
	assert.Equal(t, 160, res.Width)
	assert.Equal(t, 128.0, res.Mean)
	_, err = os.Stat(res.Path)
	require.NoError(t, err)
	assert.Equal(t, gpio.Low, r.Light())
	for _, bad := range []string{"../x", ".hidden", "a/b", strings.Repeat("n", 65)} {
		_, err := r.D.Capture(ctx, bad)
		assert.ErrorContains(t, err, "bad name", bad)
	}

	tests, err := r.D.SelfTest(ctx)
	require.NoError(t, err)
	var devs []string
	for _, tr := range tests {
		devs = append(devs, tr.Device)
		assert.True(t, tr.Pass, "%s: %s", tr.Device, tr.Detail)
	}
	assert.Equal(t, []string{"stage", "light", "camera", "watchdog", "temperature"}, devs)

	// A camera that fails during a capture is a fault, as in a run.
	r.Camera.FailNext(errors.New("VIDIOC_DQBUF: EIO"))
	_, err = r.D.Capture(ctx, "broken")
	require.ErrorContains(t, err, "daemon: capture stopped: fault: camera: cameratest: capture: VIDIOC_DQBUF: EIO; machine faulted: reset clears it")
	assert.Equal(t, machine.Faulted, r.D.Machine.State())

	text, err := r.D.ConfigText()
	require.NoError(t, err)
	assert.Contains(t, text, "[console]")
	assert.Nil(t, r.D.Logs(5), "no ring configured")
}

func TestRecipesFromTheDirectoryOrBuiltIn(t *testing.T) {
	cfg := config.Default()
	cfg.Sim.Enabled = true
	cfg.Data.Dir = t.TempDir()
	cfg.Data.Recipes = filepath.Join(t.TempDir(), "missing")
	builtin := fstest.MapFS{"demo.toml": {Data: []byte(daemontest.Recipe)}}
	d, err := daemon.New(daemon.Options{Config: cfg, Logs: logging.New(os.Stderr, logging.Options{Level: logging.Error}), Recipes: builtin,
		Devices: daemon.Devices{Limits: daemontest.Limits}})
	require.NoError(t, err)
	names, from, err := d.Recipes()
	require.NoError(t, err)
	assert.Equal(t, []string{"demo"}, names)
	assert.Contains(t, from, "built-in")
	rec, err := d.LoadRecipe("demo")
	require.NoError(t, err)
	assert.Equal(t, "slow", rec.Name)
	_, err = d.LoadRecipe("other")
	assert.ErrorContains(t, err, `recipe "other": not among the built-in examples (demo)`)
	text, err := d.RecipeText("demo")
	require.NoError(t, err)
	assert.Equal(t, daemontest.Recipe, string(text))
	_, err = d.RecipeText("other")
	assert.ErrorContains(t, err, `recipe "other": not among the built-in examples (demo)`)
	for _, bad := range []string{"../demo", "/etc/passwd", ".demo", "a\\b"} {
		_, err := d.LoadRecipe(bad)
		assert.ErrorContains(t, err, "bad recipe name", bad)
	}

	// A recipe directory that exists is the only source.
	cfg.Data.Recipes = t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(cfg.Data.Recipes, "mine.toml"), []byte(daemontest.Recipe), 0o644))
	names, from, err = d.Recipes()
	require.NoError(t, err)
	assert.Equal(t, []string{"mine"}, names)
	assert.Equal(t, cfg.Data.Recipes, from)
	_, err = d.LoadRecipe("demo")
	assert.ErrorContains(t, err, "no such file")
}

// TestSaveRecipe: a recipe is validated completely before it is stored,
// nothing is written for a bad one, and a good one replaces the old file
// atomically and is what the next run loads.
func TestSaveRecipe(t *testing.T) {
	r := daemontest.New(t, daemontest.Options{})
	dir := r.Config.Data.Recipes
	_, err := r.D.SaveRecipe("mine", []byte(daemontest.Recipe))
	require.ErrorContains(t, err, "recipe directory "+dir+" (data.recipes) does not exist")
	require.NoError(t, os.Mkdir(dir, 0o755))

	created, err := r.D.SaveRecipe("mine", []byte(daemontest.Recipe))
	require.NoError(t, err)
	assert.True(t, created)
	text, err := r.D.RecipeText("mine")
	require.NoError(t, err)
	assert.Equal(t, daemontest.Recipe, string(text))

	bad := strings.Replace(daemontest.Recipe, "diameter_mm = 50.0", "diameter_mm = -5.0", 1)
	bad = strings.Replace(bad, "exposure_ms = 5", "exposure_ms = \"soon\"", 1)
	_, err = r.D.SaveRecipe("mine", []byte(bad))
	require.Error(t, err)
	assert.Contains(t, err.Error(), `daemon: recipe "mine" refused: recipe: mine.toml:`)
	text, err = r.D.RecipeText("mine")
	require.NoError(t, err)
	assert.Equal(t, daemontest.Recipe, string(text), "a refused recipe leaves the stored one as it was")
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Len(t, entries, 1, "no temporary file left")

	one := strings.Replace(daemontest.Recipe, `layout = "grid"`, "layout = \"sites\"\n[[site]]\ndie = [1, 0]", 1)
	created, err = r.D.SaveRecipe("mine.toml", []byte(one))
	require.NoError(t, err)
	assert.False(t, created, "replaced")
	rec, err := r.D.LoadRecipe("mine")
	require.NoError(t, err)
	assert.Len(t, rec.Sites, 1)

	// A FIFO (or a device) where a recipe file belongs: refused at once,
	// not read without end or blocked on.
	require.NoError(t, syscall.Mkfifo(filepath.Join(dir, "fifo.toml"), 0o644))
	_, err = r.D.RecipeText("fifo")
	assert.ErrorContains(t, err, "not a regular file")

	for _, name := range []string{"../x", ".hidden", "a/b", ""} {
		_, err := r.D.SaveRecipe(name, []byte(daemontest.Recipe))
		assert.ErrorContains(t, err, "bad recipe name", name)
	}
	_, err = r.D.SaveRecipe("huge", make([]byte, control.MaxRecipeBytes+1))
	assert.ErrorContains(t, err, "more than the 1048576 a recipe may have")
	_, err = r.D.RecipeText("absent")
	assert.ErrorContains(t, err, "no such file")
}

// A console's home counts for the next run: it does not home again.
func TestConsoleHomeIsTrustedByTheNextRun(t *testing.T) {
	var homed atomic.Bool
	r := daemontest.New(t, daemontest.Options{OnStep: func(s inspection.Step, _ int) {
		if s == inspection.StepHoming {
			homed.Store(true)
		}
	}})
	require.False(t, r.D.Machine.Trusted())
	require.NoError(t, r.D.Home(context.Background()))
	assert.True(t, r.D.Machine.Trusted())
	startRun(t, r)
	assert.Equal(t, machine.Completed, result(t, r).Outcome)
	assert.False(t, homed.Load(), "no second homing cycle")
}

// TestResetStageOnAnIdleMachine: a controller left held (a hold button
// wired to it) makes runs refuse to start; reset clears it, and the
// position becomes untrusted.
func TestResetStageOnAnIdleMachine(t *testing.T) {
	r := daemontest.New(t, daemontest.Options{})
	ctx := context.Background()
	require.NoError(t, r.D.Home(ctx))
	require.NoError(t, r.Stage.Halt())
	require.NoError(t, r.D.StartRun(ctx, r.Recipe))
	require.NoError(t, r.D.WaitRun(ctx))
	require.Equal(t, machine.Idle, r.D.Machine.State())
	require.NoError(t, r.D.Reset(ctx))
	st, _, _ := r.Stage.State()
	assert.Equal(t, motion.StateIdle, st)
	assert.False(t, r.D.Machine.Trusted())
	require.NoError(t, r.D.Reset(ctx), "nothing to reset: no error")
}

// TestStageWithoutHoming: with [stage] homing = false nothing moves on an
// untrusted position (home, moves and runs are refused, saying to set the
// origin); the origin, once set, is trusted until a stop loses it.
func TestStageWithoutHoming(t *testing.T) {
	r := daemontest.New(t, daemontest.Options{Config: func(c *config.Config) { c.Stage.Homing = false }})
	r.Stage.NoHoming()
	ctx := context.Background()
	require.ErrorIs(t, r.D.Home(ctx), daemon.ErrNoHoming)
	err := r.D.MoveTo(ctx, mm(10, 10))
	require.ErrorIs(t, err, daemon.ErrNotHomed)
	assert.ErrorContains(t, err, "set the origin first (origin X Y)")
	require.ErrorIs(t, r.D.StartRun(ctx, r.Recipe), daemon.ErrNotHomed)
	require.ErrorIs(t, r.D.SetOrigin(ctx, mm(400, 0)), daemon.ErrOutsideTravel)
	assert.Empty(t, r.Stage.Calls(), "nothing touched the stage")

	require.NoError(t, r.D.SetOrigin(ctx, mm(150, 140)))
	assert.True(t, r.D.Machine.Trusted())
	assert.Equal(t, mm(150, 140), r.D.Status(ctx).Stage.XY())
	require.NoError(t, r.D.Jog(ctx, mm(1, -2)))
	assert.Equal(t, mm(151, 138), r.D.Status(ctx).Stage.XY())
	require.NoError(t, r.D.StartRun(ctx, r.Recipe))
	assert.Equal(t, machine.Completed, result(t, r).Outcome, "no homing step: %s", r.D.Last().Reason)
	assert.NotContains(t, r.Stage.Calls(), "Home")

	// An e-stop loses the position: runs are refused again.
	require.NoError(t, r.D.StartRun(ctx, r.Recipe))
	daemontest.Press(t, r.EStopPin, gpio.High)
	require.NoError(t, r.D.WaitRun(ctx))
	daemontest.Press(t, r.EStopPin, gpio.Low)
	require.Eventually(t, func() bool { return r.D.Reset(ctx) == nil }, 5*time.Second, 5*time.Millisecond)
	require.ErrorIs(t, r.D.StartRun(ctx, r.Recipe), daemon.ErrNotHomed)

	// A stage that homes refuses an origin.
	h := daemontest.New(t, daemontest.Options{})
	require.ErrorIs(t, h.D.SetOrigin(ctx, mm(1, 1)), motion.ErrHomes)
}

// TestAMoveBelowOneStepIsRefused: a console move or jog that would not
// change the position on the controller's step grid (4 µm here, GRBL's
// 250 steps/mm) is refused, saying why, instead of reporting a move that
// did not happen.
func TestAMoveBelowOneStepIsRefused(t *testing.T) {
	grid := func(p motion.Point) motion.Point {
		step := func(d motion.Distance) motion.Distance { return (d + 2) / 4 * 4 }
		return motion.Point{X: step(p.X), Y: step(p.Y)}
	}
	r := daemontest.New(t, daemontest.Options{Reach: grid})
	ctx := context.Background()
	require.NoError(t, r.D.Home(ctx))
	require.NoError(t, r.D.MoveTo(ctx, mm(20, 30)))
	err := r.D.Jog(ctx, mm(0.001, 0))
	require.Error(t, err)
	assert.Equal(t, "daemon: jog to (20.001, 30.000)mm refused: it is less than one step of the controller from where the stage is ((20.000, 30.000)mm): the stage would not move", err.Error())
	require.NoError(t, r.D.Jog(ctx, mm(0.004, 0)), "one step moves")
}

// TestEventsHookMissesNothing: Options.Events sees every event, in order,
// and a run's RunStarted names a run whose record exists.
func TestEventsHookMissesNothing(t *testing.T) {
	var mu sync.Mutex
	var seen []control.Event
	r := daemontest.New(t, daemontest.Options{Events: func(e control.Event) {
		mu.Lock()
		seen = append(seen, e)
		mu.Unlock()
	}})
	for range 3 {
		require.NoError(t, r.D.StartRun(context.Background(), r.Recipe))
		require.NoError(t, r.D.WaitRun(context.Background()))
	}
	mu.Lock()
	defer mu.Unlock()
	var started, progress, ended int
	for _, e := range seen {
		switch e.Kind {
		case control.RunStarted:
			started++
			run, err := r.Store.Load(e.RunID)
			require.NoError(t, err, "RunStarted names a recorded run")
			assert.Equal(t, "slow", run.Recipe)
		case control.RunProgress:
			progress++
			assert.Equal(t, progress-(started-1)*len(r.Recipe.Sites), e.Progress.Done, "in order")
		case control.RunEnded:
			ended++
			assert.Equal(t, progress, ended*len(r.Recipe.Sites))
		}
	}
	assert.Equal(t, 3, started)
	assert.Equal(t, 3*len(r.Recipe.Sites), progress)
	assert.Equal(t, 3, ended)
}
