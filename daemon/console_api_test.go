package daemon_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"testing/fstest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"periph.io/x/conn/v3/gpio"

	"github.com/waferd/waferd/config"
	"github.com/waferd/waferd/daemon"
	"github.com/waferd/waferd/inspection"
	"github.com/waferd/waferd/inspection/recipe"
	"github.com/waferd/waferd/internal/logging"
	"github.com/waferd/waferd/motion"
	"github.com/waferd/waferd/sim"
	"github.com/waferd/waferd/stop"
)

var limits = sim.Config{FrameWidth: 160, FrameHeight: 160}.Limits()

func mm(x, y float64) motion.Point { return motion.Point{X: motion.MM(x), Y: motion.MM(y)} }

func TestManualMotionRules(t *testing.T) {
	f := start(t, nil)
	ctx := context.Background()
	require.ErrorIs(t, f.d.MoveTo(ctx, mm(10, 10)), daemon.ErrNotHomed)
	assert.False(t, f.d.Status(ctx).Trusted)

	// A run cannot start while a console homes.
	homed := make(chan error, 1)
	go func() { homed <- f.d.Home(ctx) }()
	require.Eventually(t, func() bool { return f.d.Busy() == "home" }, 5*time.Second, time.Millisecond)
	require.ErrorIs(t, f.d.StartRun(ctx, f.rec), daemon.ErrMachineBusy)
	require.ErrorIs(t, f.d.MoveTo(ctx, mm(1, 1)), daemon.ErrMachineBusy, "one manual operation at a time")
	require.NoError(t, <-homed)

	st := f.d.Status(ctx)
	assert.True(t, st.Trusted)
	require.NoError(t, f.d.MoveTo(ctx, mm(20.5, 30)))
	require.NoError(t, f.d.Jog(ctx, mm(-0.5, 1)))
	st = f.d.Status(ctx)
	assert.Equal(t, mm(20, 31), st.Stage.XY())
	err := f.d.MoveTo(ctx, mm(300.001, 0))
	require.ErrorIs(t, err, daemon.ErrOutsideTravel)
	assert.Contains(t, err.Error(), "daemon: move to (300.001, 0.000)mm refused: outside the stage travel")
	require.ErrorIs(t, f.d.Jog(ctx, mm(-21, 0)), daemon.ErrOutsideTravel)

	f.startRun(t)
	require.ErrorIs(t, f.d.MoveTo(ctx, mm(1, 1)), daemon.ErrMachineBusy)
	require.ErrorIs(t, f.d.SetLight(true, 0), daemon.ErrMachineBusy)
	_, err = f.d.Capture(ctx, "x")
	require.ErrorIs(t, err, daemon.ErrMachineBusy)
	assert.True(t, strings.HasPrefix(f.d.Busy(), "run slow"), f.d.Busy())
	f.d.Stop(stop.Operator, "test")
	assert.Equal(t, inspection.Canceled, f.outcome(t).State)
}

func TestStopStopsAManualMove(t *testing.T) {
	f := start(t, nil)
	ctx := context.Background()
	events, unsubscribe := f.d.Subscribe()
	defer unsubscribe()
	require.NoError(t, f.d.Home(ctx))
	moved := make(chan error, 1)
	go func() { moved <- f.d.MoveTo(ctx, mm(300, 300)) }()
	require.Eventually(t, f.b.Sim.Emulator.Moving, 5*time.Second, time.Millisecond)
	f.d.Stop(stop.Operator, "test")
	err := <-moved
	require.Error(t, err)
	assert.Contains(t, err.Error(), "move stopped: operator (test)")
	assert.False(t, f.b.Sim.Emulator.Moving())
	st := f.d.Status(ctx)
	assert.NotEqual(t, mm(300, 300), st.Stage.XY(), "held short of the target")
	assert.Equal(t, "", st.Busy)

	stats := f.d.Stats()
	assert.Equal(t, 1, stats.Requests[stop.Operator])
	assert.Equal(t, 1, stats.Stopped["operator"])
	assert.Equal(t, 1, stats.ToEnd.N)
	assert.Equal(t, 1, stats.ToRest.N)
	assert.LessOrEqual(t, stats.ToRest.Max, stats.ToEnd.Max)
	ev := <-events
	assert.Equal(t, daemon.StopRequested, ev.Kind)
	assert.Equal(t, "stopped: operator (test)", ev.Text)
}

func TestConsoleLightGoesOffBeforeTheLeaseExpires(t *testing.T) {
	f := start(t, func(c *config.Config) { c.Watchdog.LightMaxOnMS = 200 })
	events, unsubscribe := f.d.Subscribe()
	defer unsubscribe()
	require.NoError(t, f.d.SetLight(true, 0.5))
	assert.Equal(t, gpio.High, level(f.b.Sim.LightPin))
	st := f.d.Status(context.Background())
	assert.True(t, st.Light.On)
	assert.Equal(t, 0.5, st.Light.Level)
	ev := <-events
	assert.Equal(t, daemon.Notice, ev.Kind)
	assert.Contains(t, ev.Text, "light switched off")
	assert.Equal(t, gpio.Low, level(f.b.Sim.LightPin))
	assert.Equal(t, inspection.Idle, f.d.Runner.State(), "switched off in time: no watchdog fault")

	// Any stop switches off a light a console left on.
	require.NoError(t, f.d.SetLightLevel(0.3))
	require.NoError(t, f.d.SetLight(true, 0))
	assert.Equal(t, 0.3, f.d.Status(context.Background()).Light.Level)
	f.d.Stop(stop.Button, "test")
	assert.Equal(t, gpio.Low, level(f.b.Sim.LightPin))
	assert.Equal(t, inspection.Idle, f.d.Runner.State())
}

func TestEventsAndStopStatistics(t *testing.T) {
	f := start(t, nil)
	events, unsubscribe := f.d.Subscribe()
	defer unsubscribe()
	f.startRun(t)
	ev := <-events
	require.Equal(t, daemon.RunStarted, ev.Kind)
	assert.Equal(t, "slow", ev.Recipe)
	assert.Equal(t, len(f.rec.Sites), ev.Sites)
	ev = <-events
	require.Equal(t, daemon.RunProgress, ev.Kind)
	assert.Equal(t, 1, ev.Progress.Done)
	st := f.d.Status(context.Background())
	require.NotNil(t, st.Run)
	assert.Equal(t, "slow", st.Run.Recipe)

	f.d.Stop(stop.Operator, "console test")
	var end daemon.Event
	for end = range events {
		if end.Kind == daemon.RunEnded {
			break
		}
	}
	assert.Equal(t, inspection.Canceled, end.Outcome.State)
	assert.Equal(t, "operator: console test", end.Outcome.Reason)
	assert.Nil(t, f.d.Status(context.Background()).Run)

	s := f.d.Stats()
	assert.Equal(t, map[string]int{"operator": 1}, s.Stopped)
	assert.Equal(t, 1, s.ToRest.N)
	assert.Equal(t, 1, s.ToEnd.N)
	assert.Len(t, s.ToEnd.Counts, len(daemon.LatencyBounds)+1)
	assert.Positive(t, s.ToEnd.Min)
	assert.Less(t, s.ToEnd.Max, 5*time.Second)

	one, err := recipe.Parse("one.toml", []byte(strings.Replace(slowRecipe, `layout = "grid"`, "layout = \"sites\"\n[[site]]\ndie = [1, 0]", 1)), f.b.Limits)
	require.NoError(t, err)
	require.NoError(t, f.d.StartRun(context.Background(), one))
	assert.Equal(t, inspection.Completed, f.outcome(t).State)
	assert.Equal(t, 1, f.d.Stats().Completed)
}

func TestCaptureSelfTestAndLogs(t *testing.T) {
	f := start(t, nil)
	ctx := context.Background()
	res, err := f.d.Capture(ctx, "edge")
	require.NoError(t, err)
	assert.Equal(t, filepath.Join(f.d.DataDir(), "captures", "edge.png"), res.Path)
	assert.Equal(t, 160, res.Width)
	_, err = os.Stat(res.Path)
	require.NoError(t, err)
	assert.Equal(t, gpio.Low, level(f.b.Sim.LightPin))
	for _, bad := range []string{"../x", ".hidden", "a/b", strings.Repeat("n", 65)} {
		_, err := f.d.Capture(ctx, bad)
		assert.ErrorContains(t, err, "bad name", bad)
	}

	tests, err := f.d.SelfTest(ctx)
	require.NoError(t, err)
	var devs []string
	for _, r := range tests {
		devs = append(devs, r.Device)
		assert.True(t, r.Pass, "%s: %s", r.Device, r.Detail)
	}
	assert.Equal(t, []string{"stage", "light", "camera", "watchdog", "temperature"}, devs)

	text, err := f.d.ConfigText()
	require.NoError(t, err)
	assert.Contains(t, text, "[console]")
	assert.Nil(t, f.d.Logs(5), "no ring configured")
}

func TestRecipesFromTheDirectoryOrBuiltIn(t *testing.T) {
	cfg := config.Default()
	cfg.Sim.Enabled = true
	cfg.Data.Dir = t.TempDir()
	cfg.Data.Recipes = filepath.Join(t.TempDir(), "missing")
	builtin := fstest.MapFS{"demo.toml": {Data: []byte(slowRecipe)}}
	d, err := daemon.New(daemon.Options{Config: cfg, Logs: logging.New(os.Stderr, logging.Options{Level: logging.Error}), Recipes: builtin,
		Devices: daemon.Devices{Limits: limits}})
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
	for _, bad := range []string{"../demo", "/etc/passwd", ".demo", "a\\b"} {
		_, err := d.LoadRecipe(bad)
		assert.ErrorContains(t, err, "bad recipe name", bad)
	}

	// A recipe directory that exists is the only source.
	cfg.Data.Recipes = t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(cfg.Data.Recipes, "mine.toml"), []byte(slowRecipe), 0o644))
	names, from, err = d.Recipes()
	require.NoError(t, err)
	assert.Equal(t, []string{"mine"}, names)
	assert.Equal(t, cfg.Data.Recipes, from)
	_, err = d.LoadRecipe("demo")
	assert.ErrorContains(t, err, "no such file")
}

// A console's home counts for the next run: it does not home again.
func TestConsoleHomeIsTrustedByTheNextRun(t *testing.T) {
	f := start(t, nil)
	require.False(t, f.d.Runner.Trusted())
	require.NoError(t, f.d.Home(context.Background()))
	assert.True(t, f.d.Runner.Trusted())
	var homed atomic.Bool
	f.d.Runner.OnStep = func(s inspection.Step, _ int) {
		if s == inspection.StepHoming {
			homed.Store(true)
		}
	}
	f.startRun(t)
	assert.Equal(t, inspection.Completed, f.outcome(t).State)
	assert.False(t, homed.Load(), "no second homing cycle")
}
