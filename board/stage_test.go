package board

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/waferd/waferd/config"
	"github.com/waferd/waferd/internal/logging"
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

// run61 is the stage's part of a 61-site run on the simulated board: home,
// then for every site move (to a target off the 800 steps/mm grid), ask
// the status and capture a lit frame, as the runner does. It returns the
// first error and the sites done; the driver's log goes to logs.
func run61(t *testing.T, noise float64, seed uint64, logs *logBuf, cut func(site int, b *Board)) (int, error) {
	t.Helper()
	log := logging.New(logs, logging.Options{Level: logging.Info}).For("grbl")
	cfg := SimConfig{
		Sim:  sim.Config{TimeScale: 20, FrameWidth: 32, FrameHeight: 32, LinkNoise: noise, LinkNoiseSeed: seed},
		GRBL: GRBLLog(fastGRBL(), log),
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	b, err := OpenSim(ctx, cfg)
	require.NoError(t, err)
	defer b.Close()
	if err := b.Stage.Home(ctx); err != nil {
		return 0, err
	}
	for i := range 61 {
		if cut != nil {
			cut(i, b)
		}
		// A wafer's dies, 10.2431 mm apart: hardly any on the grid.
		p := motion.Point{X: motion.MM(100 + 10.2431*float64(i%9)), Y: motion.MM(100 + 10.2431*float64(i/9))}
		if err := b.Stage.MoveTo(ctx, p, 6000); err != nil {
			return i, fmt.Errorf("site %d: %w", i, err)
		}
		st, err := b.Stage.Status(ctx)
		if err != nil {
			return i, fmt.Errorf("site %d: status: %w", i, err)
		}
		if want := b.Stage.Reach(p); st.XY() != want || st.State != motion.StateIdle {
			return i, fmt.Errorf("site %d: %v, want Idle at %v", i, st, want)
		}
		if err := b.Light.On(1); err != nil {
			return i, err
		}
		f, err := b.Camera.Capture(ctx, time.Millisecond)
		if err != nil {
			return i, fmt.Errorf("site %d: capture: %w", i, err)
		}
		f.Release()
		if err := b.Light.Off(); err != nil {
			return i, err
		}
	}
	if n := b.Stage.Noise(); n.Any() {
		t.Logf("noise %.0f%%: emulator corrupted %d lines; driver: %v", noise*100, b.Sim.Emulator.Counters().Corrupted, n)
	}
	return 61, nil
}

// TestRun61OverNoisyLink: a 61-site run completes over a link that
// corrupts 1 % of the controller's lines, and the log says there was
// noise; over a clean link it completes with no noise line in the log.
func TestRun61OverNoisyLink(t *testing.T) {
	for _, tc := range []struct {
		noise float64
		seed  uint64
	}{{0.01, 1}, {0.01, 2}, {0, 0}} {
		t.Run(fmt.Sprintf("noise %.0f%% seed %d", tc.noise*100, tc.seed), func(t *testing.T) {
			logs := &logBuf{}
			done, err := run61(t, tc.noise, tc.seed, logs, nil)
			require.NoError(t, err, "log:\n%s", logs.String())
			assert.Equal(t, 61, done)
			if tc.noise == 0 {
				assert.Zero(t, logs.count("noise"), "log:\n%s", logs.String())
			} else {
				assert.Positive(t, logs.count("grbl: noise on the link"), "log:\n%s", logs.String())
			}
		})
	}
}

// TestRun61LinkCut: with the link cut mid-run (on a noisy link too) the
// move in progress fails with the lost link, as before: the fault the
// daemon latches.
func TestRun61LinkCut(t *testing.T) {
	logs := &logBuf{}
	done, err := run61(t, 0.01, 3, logs, func(site int, b *Board) {
		if site == 20 {
			go func() {
				assert.Eventually(t, b.Sim.Emulator.Moving, 5*time.Second, time.Millisecond)
				b.Sim.Emulator.InjectHangup()
			}()
		}
	})
	require.ErrorIs(t, err, motion.ErrLinkLost)
	assert.Equal(t, 20, done)
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
