package daemon_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpiotest"

	"github.com/waferd/waferd/board"
	"github.com/waferd/waferd/config"
	"github.com/waferd/waferd/daemon"
	"github.com/waferd/waferd/inspection"
	"github.com/waferd/waferd/inspection/recipe"
	"github.com/waferd/waferd/inspection/results"
	"github.com/waferd/waferd/internal/logging"
	"github.com/waferd/waferd/sim"
	"github.com/waferd/waferd/stop"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const slowRecipe = `
name = "slow"
[wafer]
diameter_mm = 50.0
center_mm = [150.0, 150.0]
[dies]
pitch_mm = [10.0, 10.0]
reference = [0, 0]
layout = "grid"
[capture]
exposure_ms = 5
light_level = 0.7
settle_ms = 20
feed_mm_min = 3000
`

// notes records sd_notify states.
type notes struct {
	mu sync.Mutex
	s  []string
}

func (n *notes) Notify(state string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.s = append(n.s, state)
	return nil
}

func (n *notes) count(prefix string) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	c := 0
	for _, s := range n.s {
		if strings.HasPrefix(s, prefix) {
			c++
		}
	}
	return c
}

type fixture struct {
	d      *daemon.Daemon
	b      *board.Board
	rec    *recipe.Recipe
	notes  *notes
	cancel context.CancelCauseFunc
	done   chan error
}

func start(t *testing.T, edit func(*config.Config)) *fixture {
	t.Helper()
	cfg := config.Default()
	cfg.Sim.Enabled = true
	cfg.Data.Dir = t.TempDir()
	cfg.Button = config.Input{Chip: "sim", Line: "button", Pull: "down", DebounceMS: 20}
	cfg.EStop = config.Input{Chip: "sim", Line: "estop", Pull: "down", DebounceMS: 20}
	cfg.Watchdog.IntervalMS = 20
	cfg.Stage.PollMS = 20
	cfg.Stage.ReplyTimeoutMS = 1000
	cfg.Watchdog.StageHeartbeatMS = 1500
	if edit != nil {
		edit(cfg)
	}
	require.NoError(t, cfg.Validate())
	simCfg := sim.Config{TimeScale: 10, FrameWidth: 160, FrameHeight: 160}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := board.OpenSim(ctx, board.SimConfig{Sim: simCfg, GRBL: board.GRBLConfig(cfg.Stage)})
	require.NoError(t, err)
	return runDaemon(t, cfg, b)
}

// runDaemon runs a daemon on b with cfg until the test ends (then it shuts
// it down and closes b), and returns once it is READY.
func runDaemon(t *testing.T, cfg *config.Config, b *board.Board) *fixture {
	t.Helper()
	store, err := results.Open(cfg.Data.Dir)
	require.NoError(t, err)
	n := &notes{}
	d, err := daemon.New(daemon.Options{
		Config: cfg, Store: store, Logs: logging.New(os.Stderr, logging.Options{Level: logging.Warn}),
		Devices: daemon.Devices{Stage: b.Stage, Light: b.Light, Camera: b.Camera, Limits: b.Limits,
			Button: b.Button, EStop: b.EStop, SetRecipe: b.Sim.SetRecipe},
		Notifier: n, NotifyInterval: 200 * time.Millisecond,
	})
	require.NoError(t, err)
	rec, err := recipe.Parse("slow.toml", []byte(slowRecipe), b.Limits)
	require.NoError(t, err)
	f := &fixture{d: d, b: b, rec: rec, notes: n, done: make(chan error, 1)}
	var rctx context.Context
	rctx, f.cancel = context.WithCancelCause(context.Background())
	go func() { f.done <- d.Run(rctx) }()
	t.Cleanup(func() {
		f.shutdown(t)
		assert.NoError(t, b.Close())
	})
	require.Eventually(t, func() bool { return n.count("READY=1") == 1 }, 5*time.Second, time.Millisecond)
	return f
}

func (f *fixture) shutdown(t *testing.T) {
	if f.cancel == nil {
		return
	}
	f.cancel(stop.New(stop.Shutdown, "test"))
	f.cancel = nil
	select {
	case err := <-f.done:
		assert.NoError(t, err)
	case <-time.After(15 * time.Second):
		t.Fatal("daemon did not shut down")
	}
}

// runUntil starts the slow recipe and waits until cond holds during it.
func (f *fixture) startRun(t *testing.T) {
	t.Helper()
	require.NoError(t, f.d.StartRun(context.Background(), f.rec))
	require.Eventually(t, func() bool { return f.d.Runner.State() == inspection.Running }, 5*time.Second, time.Millisecond)
}

func (f *fixture) outcome(t *testing.T) inspection.Outcome {
	t.Helper()
	f.d.Wait()
	return f.d.Runner.Last()
}

func TestButtonBounceIsOneStop(t *testing.T) {
	f := start(t, nil)
	f.startRun(t)
	// Let the run reach its second site, then press with contact bounce.
	require.Eventually(t, func() bool { return f.b.Sim.Camera.Captures() >= 2 }, 10*time.Second, time.Millisecond)
	for _, l := range []gpio.Level{gpio.High, gpio.Low, gpio.High, gpio.Low, gpio.High} {
		require.True(t, sim.Press(f.b.Sim.ButtonPin, l))
	}
	out := f.outcome(t)
	assert.Equal(t, inspection.Canceled, out.State, "%s %v", out.Reason, out.Err)
	assert.True(t, strings.HasPrefix(out.Reason, "button"), out.Reason)
	assert.Equal(t, inspection.Idle, f.d.Runner.State())
	// Release; a second press while idle stops nothing and latches nothing.
	require.True(t, sim.Press(f.b.Sim.ButtonPin, gpio.Low))
	assert.Equal(t, inspection.Idle, f.d.Runner.State())
}

func TestEStopLatchesUntilReleasedAndReset(t *testing.T) {
	f := start(t, nil)
	f.startRun(t)
	require.Eventually(t, func() bool { return f.b.Sim.Camera.Captures() >= 2 }, 10*time.Second, time.Millisecond)
	require.True(t, sim.Press(f.b.Sim.EStopPin, gpio.High))
	out := f.outcome(t)
	assert.Equal(t, inspection.Aborted, out.State)
	assert.True(t, strings.HasPrefix(out.Reason, "estop"), out.Reason)
	assert.Equal(t, inspection.EStop, f.d.Runner.State())
	assert.Equal(t, gpio.Low, level(f.b.Sim.LightPin))

	// No motion accepted, no reset while the e-stop is still engaged.
	require.ErrorIs(t, f.d.StartRun(context.Background(), f.rec), inspection.ErrLatched)
	require.ErrorContains(t, f.d.Reset(context.Background()), "release it")
	require.True(t, sim.Press(f.b.Sim.EStopPin, gpio.Low))
	require.Eventually(t, func() bool { return f.d.Reset(context.Background()) == nil }, 5*time.Second, 5*time.Millisecond)
	assert.Equal(t, inspection.Idle, f.d.Runner.State())
	f.startRun(t)
	assert.Equal(t, inspection.Completed, f.outcome(t).State, "after release and reset the machine runs again")
}

func level(p *gpiotest.Pin) gpio.Level {
	p.Lock()
	defer p.Unlock()
	return p.L
}

func TestLightLeaseExpiryFaultsTheRun(t *testing.T) {
	f := start(t, func(c *config.Config) { c.Watchdog.LightMaxOnMS = 20 })
	slow := *f.rec
	slow.Exposure = 500 * time.Millisecond // far beyond the 20 ms lease
	require.NoError(t, f.d.StartRun(context.Background(), &slow))
	out := f.outcome(t)
	assert.Equal(t, inspection.Aborted, out.State)
	assert.Contains(t, out.Reason, "watchdog: light")
	assert.Equal(t, inspection.Faulted, f.d.Runner.State())
	assert.Equal(t, gpio.Low, level(f.b.Sim.LightPin), "light switched off")
}

func TestTemperatureAlarmStopsTheRun(t *testing.T) {
	zone := filepath.Join(t.TempDir(), "temp")
	require.NoError(t, os.WriteFile(zone, []byte("45000\n"), 0o644))
	f := start(t, func(c *config.Config) {
		c.Watchdog.ThermalZone = zone
		c.Watchdog.TempPollMS = 10
		c.Watchdog.TempLimitC = 70
	})
	f.startRun(t)
	require.Eventually(t, func() bool { return f.b.Sim.Camera.Captures() >= 2 }, 10*time.Second, time.Millisecond)
	require.NoError(t, os.WriteFile(zone, []byte("85000\n"), 0o644))
	out := f.outcome(t)
	assert.Equal(t, inspection.Aborted, out.State)
	assert.Contains(t, out.Reason, "watchdog: temperature")
	assert.Equal(t, inspection.Faulted, f.d.Runner.State())
}

func TestWatchdogPingsOnlyWhileHealthy(t *testing.T) {
	f := start(t, nil)
	require.Eventually(t, func() bool { return f.notes.count("WATCHDOG=1") >= 3 }, 5*time.Second, time.Millisecond, "pings while healthy")
	// The stage stops answering: its heartbeat goes stale, pings stop and
	// the machine latches Faulted.
	f.b.Sim.Emulator.InjectMute(true)
	require.Eventually(t, func() bool { return f.d.Runner.State() == inspection.Faulted }, 5*time.Second, time.Millisecond)
	n := f.notes.count("WATCHDOG=1")
	time.Sleep(500 * time.Millisecond) // > two ping periods of 100 ms
	assert.Equal(t, n, f.notes.count("WATCHDOG=1"), "no WATCHDOG=1 while a heartbeat is stale")
	assert.Positive(t, f.notes.count("STATUS="))
	f.b.Sim.Emulator.InjectMute(false)
	f.shutdown(t)
	assert.Equal(t, 1, f.notes.count("STOPPING=1"))
}

func TestShutdownStopsARunSafely(t *testing.T) {
	f := start(t, nil)
	f.startRun(t)
	require.Eventually(t, func() bool { return f.b.Sim.Camera.Captures() >= 2 }, 10*time.Second, time.Millisecond)
	f.shutdown(t)
	out := f.d.Runner.Last()
	assert.Equal(t, inspection.Canceled, out.State)
	assert.Equal(t, "shutdown: test", out.Reason)
	assert.False(t, f.b.Sim.Emulator.Moving())
}

// A stop that arrives between StartRun and the run's first step is not
// lost: the run starts stopped and is recorded canceled.
func TestStopRightAfterStartRunIsNotLost(t *testing.T) {
	f := start(t, nil)
	for i := range 5 {
		require.NoError(t, f.d.StartRun(context.Background(), f.rec))
		f.d.Stop(stop.Operator, "at once")
		out := f.outcome(t)
		require.Equal(t, inspection.Canceled, out.State, "try %d: %s", i, out.Reason)
		assert.Equal(t, "operator: at once", out.Reason)
	}
}
