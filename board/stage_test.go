package board

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/waferd/waferd/config"
	"github.com/waferd/waferd/inspection"
	"github.com/waferd/waferd/inspection/recipe"
	"github.com/waferd/waferd/inspection/results"
	"github.com/waferd/waferd/internal/logging"
	"github.com/waferd/waferd/machine"
	"github.com/waferd/waferd/motion"
	"github.com/waferd/waferd/sim"
	"github.com/waferd/waferd/sim/grblsim"
	"github.com/waferd/waferd/systemd"
)

// stockEmu is a GRBL 1.1h controller as shipped but for homing enabled
// and test speeds: machine space -200..0 mm, 250 steps/mm.
func stockEmu() grblsim.Config {
	return grblsim.Config{TimeScale: 50, HomingRequired: true, Settings: map[int]float64{110: 6000, 111: 6000, 120: 500, 121: 500}}
}

// TestOpenRefusesTravelOutsideController: start-up refuses a configured
// travel that the controller's machine space does not hold, naming both;
// the example configuration's travel fits a stock controller, and the
// stage reaches its corners.
func TestOpenRefusesTravelOutsideController(t *testing.T) {
	emu := grblsim.New(stockEmu())
	t.Cleanup(func() { emu.Close() })
	port, err := emu.OpenPTY()
	require.NoError(t, err)
	cfg := simConfig(t)
	cfg.Stage.Port = port
	cfg.Light.PWMChip = ""
	cfg.Button.Line, cfg.EStop.Line = "", ""
	// The example configuration of the simulated board: 0..300 mm.
	_, err = Open(openCtx(t), cfg)
	require.ErrorIs(t, err, ErrMismatch, "a configuration error")
	for _, want := range []string{
		"board: stage on " + port + ": stage.travel_min_mm, stage.travel_max_mm: grbl: travel X [0.000, 300.000] Y [0.000, 300.000] mm",
		"does not fit the controller's machine space clear of its switches X [-200.000, -1.000] Y [-200.000, -1.000] mm",
		"$130=200, $131=200", "pull-off $27=1",
	} {
		assert.Contains(t, err.Error(), want)
	}

	// The shipped example configuration's travel, for a stock controller
	// (on a fresh controller: the refused one would want a soft reset to
	// show its banner again).
	example, err := config.Parse("waferd.toml", []byte(systemd.ExampleConfig))
	require.NoError(t, err)
	emu = grblsim.New(stockEmu())
	t.Cleanup(func() { emu.Close() })
	port, err = emu.OpenPTY()
	require.NoError(t, err)
	cfg.Stage.Port = port
	cfg.Stage.TravelMinMM, cfg.Stage.TravelMaxMM = example.Stage.TravelMinMM, example.Stage.TravelMaxMM
	require.NoError(t, cfg.Validate())
	ctx := openCtx(t)
	b, err := Open(ctx, cfg)
	require.NoError(t, err)
	t.Cleanup(func() { b.Close() })
	require.NoError(t, b.Stage.Home(ctx))
	st, err := b.Stage.Status(ctx)
	require.NoError(t, err)
	assert.Equal(t, motion.Point{X: -motion.Millimetre, Y: -motion.Millimetre}, st.XY(), "rests pull-off below the switches")
	for _, p := range []motion.Point{b.Limits.Travel.Min, b.Limits.Travel.Max, {X: motion.MM(-123.457), Y: motion.MM(-45.678)}} {
		require.NoError(t, b.Stage.MoveTo(ctx, p, 6000), "to %v", p)
	}
}

// TestOpenLogsDriverDiagnostics: a real stage's GRBL driver logs to the
// log WithGRBLLog gives: noise on the link as a warning, malformed lines
// at debug level (waferd serve passes its "grbl" log).
func TestOpenLogsDriverDiagnostics(t *testing.T) {
	emu := grblsim.New(stageEmu(50, true))
	t.Cleanup(func() { emu.Close() })
	port, err := emu.OpenPTY()
	require.NoError(t, err)
	cfg := simConfig(t)
	cfg.Stage.Port = port
	cfg.Light.PWMChip = ""
	cfg.Button.Line, cfg.EStop.Line = "", ""
	logs := &logBuf{}
	ctx := openCtx(t)
	b, err := Open(ctx, cfg, WithGRBLLog(logging.New(logs, logging.Options{Level: logging.Debug}).For("grbl")))
	require.NoError(t, err)
	t.Cleanup(func() { b.Close() })
	emu.InjectNoise(1)
	_, _ = b.Stage.Status(ctx)
	emu.InjectNoise(0)
	_, err = b.Stage.Status(ctx)
	require.NoError(t, err)
	assert.Equal(t, 1, logs.count("grbl: noise on the link"), "logs:\n%s", logs.String())
	assert.Positive(t, logs.count("grbl: skipping malformed line"))
	assert.Positive(t, b.Stage.Noise().Garbled)
}

// run61 runs the demo recipe's 61 sites on the simulated board through
// the machine and the runner, as waferd does, over a link corrupting
// noise of the controller's lines (seeded). cut, if set, is called at the
// start of every site's move (from the run's goroutine). The driver's log
// goes to logs.
func run61(t *testing.T, noise float64, seed uint64, logs *logBuf, cut func(site int, b *Board)) inspection.Result {
	t.Helper()
	log := logging.New(logs, logging.Options{Level: logging.Info})
	cfg := SimConfig{
		Sim:  sim.Config{TimeScale: 20, LinkNoise: noise, LinkNoiseSeed: seed},
		GRBL: GRBLLog(fastGRBL(), log.For("grbl")),
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	b, err := OpenSim(ctx, cfg)
	require.NoError(t, err)
	defer b.Close()
	rec, err := recipe.Load(filepath.Join("..", "examples", "recipes", "demo.toml"), b.Limits)
	require.NoError(t, err)
	require.Len(t, rec.Sites, 61)
	store, err := results.Open(t.TempDir())
	require.NoError(t, err)
	m := machine.New(machine.Config{Stage: b.Stage, Light: b.Light, HoldTimeout: 5 * time.Second, ResetTimeout: 3 * time.Second, Log: log.For("machine")})
	defer m.Close()
	r := &inspection.Runner{Stage: b.Stage, Light: b.Light, Camera: b.Camera, Store: store, Log: log.For("runner"),
		OnStep: func(s inspection.Step, site int) {
			if s == inspection.StepMove && cut != nil {
				cut(site, b)
			}
		}}
	c, err := m.Claim(ctx, "run demo")
	require.NoError(t, err)
	defer c.Release()
	res, err := r.Run(c, rec)
	require.NoError(t, err)
	if n := b.Stage.Noise(); n.Any() {
		t.Logf("noise %.0f%%: emulator corrupted %d lines; driver: %v", noise*100, b.Sim.Emulator.Counters().Corrupted, n)
	}
	return res
}

// TestRun61OverNoisyLink: the demo's 61-site run completes over a link
// that corrupts 1 % of the controller's lines, and the log says there was
// noise; over a clean link it completes with no noise line in the log.
// With -short (the ARM suites) only the first noisy run: a clean run's
// log is also checked by cmd/waferd's TestRunCompletes.
func TestRun61OverNoisyLink(t *testing.T) {
	for i, tc := range []struct {
		noise float64
		seed  uint64
	}{{0.01, 1}, {0.01, 2}, {0, 0}} {
		if testing.Short() && i > 0 {
			break
		}
		t.Run(fmt.Sprintf("noise %.0f%% seed %d", tc.noise*100, tc.seed), func(t *testing.T) {
			logs := &logBuf{}
			res := run61(t, tc.noise, tc.seed, logs, nil)
			require.Equal(t, machine.Completed, res.Outcome, "%s\nlog:\n%s", res.Reason, logs.String())
			assert.Equal(t, 61, res.Done)
			if tc.noise == 0 {
				assert.Zero(t, logs.count("noise"), "log:\n%s", logs.String())
			} else {
				assert.Positive(t, logs.count("grbl: noise on the link"), "log:\n%s", logs.String())
			}
		})
	}
}

// TestRun61LinkCut: with the link cut mid-run (on a noisy link too) the
// run is aborted by the lost link, a fault, and the machine latched
// Faulted, as before.
func TestRun61LinkCut(t *testing.T) {
	logs := &logBuf{}
	res := run61(t, 0.01, 3, logs, func(site int, b *Board) {
		if site == 20 {
			go func() {
				assert.Eventually(t, b.Sim.Emulator.Moving, 5*time.Second, time.Millisecond)
				b.Sim.Emulator.InjectHangup()
			}()
		}
	})
	assert.Equal(t, machine.Aborted, res.Outcome)
	assert.Contains(t, res.Reason, "fault: stage")
	assert.ErrorIs(t, res.Err, motion.ErrLinkLost)
	assert.Equal(t, machine.Faulted, res.After)
	assert.LessOrEqual(t, res.Done, 21, "stopped at site 20's move (one site may be in processing)")
}

// TestOpenRefusesHomingThatDisagrees: start-up refuses a controller whose
// homing ($22) is not what [stage] homing says, naming both; a stage
// without homing ($22=0) opens with homing = false and takes an origin.
func TestOpenRefusesHomingThatDisagrees(t *testing.T) {
	noHoming := grblsim.Config{TimeScale: 50, Settings: map[int]float64{110: 6000, 111: 6000, 120: 500, 121: 500}}
	for _, c := range []struct {
		emu    grblsim.Config
		homing bool
		want   string
	}{
		{noHoming, true, "stage.homing: the configuration says the stage homes (homing = true), but the controller's homing cycle is disabled ($22=0)"},
		{stockEmu(), false, "stage.homing: the configuration says the stage has no homing (homing = false), but the controller homes ($22=1)"},
	} {
		emu := grblsim.New(c.emu)
		t.Cleanup(func() { emu.Close() })
		port, err := emu.OpenPTY()
		require.NoError(t, err)
		cfg := simConfig(t)
		cfg.Stage.Port, cfg.Stage.Homing = port, c.homing
		cfg.Stage.TravelMinMM, cfg.Stage.TravelMaxMM = [2]float64{-200, -200}, [2]float64{-1, -1}
		cfg.Light.PWMChip = ""
		cfg.Button.Line, cfg.EStop.Line = "", ""
		_, err = Open(openCtx(t), cfg)
		require.ErrorIs(t, err, ErrMismatch, "a configuration error")
		assert.Contains(t, err.Error(), "board: stage on "+port+": "+c.want)
	}

	emu := grblsim.New(noHoming)
	t.Cleanup(func() { emu.Close() })
	port, err := emu.OpenPTY()
	require.NoError(t, err)
	cfg := simConfig(t)
	cfg.Stage.Port, cfg.Stage.Homing = port, false
	cfg.Light.PWMChip = ""
	cfg.Button.Line, cfg.EStop.Line = "", ""
	ctx := openCtx(t)
	b, err := Open(ctx, cfg)
	require.NoError(t, err)
	t.Cleanup(func() { b.Close() })
	require.NoError(t, b.Stage.SetOrigin(ctx, motion.Point{X: motion.MM(100), Y: motion.MM(50)}))
	require.NoError(t, b.Stage.MoveTo(ctx, motion.Point{X: motion.MM(110), Y: motion.MM(40)}, 6000))
	st, err := b.Stage.Status(ctx)
	require.NoError(t, err)
	assert.Equal(t, motion.Point{X: motion.MM(110), Y: motion.MM(40)}, st.XY())
}
