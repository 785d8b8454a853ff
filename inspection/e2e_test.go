package inspection_test

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"periph.io/x/conn/v3/gpio"

	"github.com/waferd/waferd/board"
	"github.com/waferd/waferd/inspection"
	"github.com/waferd/waferd/inspection/recipe"
	"github.com/waferd/waferd/inspection/results"
	"github.com/waferd/waferd/internal/emuchild"
	"github.com/waferd/waferd/machine"
	"github.com/waferd/waferd/motion"
	"github.com/waferd/waferd/motion/grbl"
	"github.com/waferd/waferd/sim"
)

func TestMain(m *testing.M) {
	emuchild.Main()
	goleak.VerifyTestMain(m)
}

// testRecipe is a small wafer: 9–13 sites, fast settle and exposure.
const testRecipe = `
name = "e2e"
[wafer]
diameter_mm = 50.0
center_mm = [150.0, 150.0]
mark = "notch"
mark_direction_deg = 180.0
[dies]
pitch_mm = [10.0, 10.0]
reference = [0, 0]
layout = "grid"
[capture]
exposure_ms = 2
light_level = 0.7
settle_ms = 1
feed_mm_min = 6000
[analysis]
threshold = 40
min_area_px = 6
[sim]
seed = 7
defect_fraction = 0.5
max_defects_per_site = 3
`

type rig struct {
	rec    *recipe.Recipe
	board  *board.Board
	m      *machine.Machine
	runner *inspection.Runner
	data   string
}

// run runs rec as the daemon does: under the machine's claim, released
// once the outcome is recorded.
func (g *rig) run(t *testing.T, rec *recipe.Recipe) (inspection.Result, error) {
	t.Helper()
	return runClaimed(context.Background(), g.m, g.runner, rec)
}

// runClaimed runs rec with r under m's claim, released once the outcome is
// recorded, as the daemon does. ctx ending stops the run.
func runClaimed(ctx context.Context, m *machine.Machine, r *inspection.Runner, rec *recipe.Recipe) (inspection.Result, error) {
	c, err := m.Claim(ctx, "run "+rec.Name)
	if err != nil {
		return inspection.Result{}, err
	}
	defer c.Release()
	return r.Run(c, rec)
}

func newRig(t *testing.T, doc string) *rig {
	t.Helper()
	simCfg := sim.Config{TimeScale: 20}
	rec, err := recipe.Parse("e2e.toml", []byte(doc), simCfg.Limits())
	require.NoError(t, err)
	simCfg.Scene = sim.SceneFor(rec, simCfg.FOV())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := board.OpenSim(ctx, board.SimConfig{
		Sim:  simCfg,
		GRBL: grbl.Config{PollInterval: 20 * time.Millisecond},
	})
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, b.Close()) })
	data := t.TempDir()
	store, err := results.Open(data)
	require.NoError(t, err)
	return &rig{rec: rec, board: b, data: data,
		m:      machine.New(machine.Config{Stage: b.Stage, Light: b.Light}),
		runner: &inspection.Runner{Stage: b.Stage, Light: b.Light, Camera: b.Camera, Store: store},
	}
}

func loadRun(t *testing.T, dir string) results.Run {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(dir, "run.json"))
	require.NoError(t, err)
	var run results.Run
	require.NoError(t, json.Unmarshal(raw, &run), "run.json must be valid JSON")
	return run
}

func TestRunFindsExactlyTheSeededDefects(t *testing.T) {
	g := newRig(t, testRecipe)
	require.GreaterOrEqual(t, len(g.rec.Sites), 9)
	var progress []inspection.Progress
	g.runner.Progress = func(p inspection.Progress) { progress = append(progress, p) }

	out, err := g.run(t, g.rec)
	require.NoError(t, err)
	require.Equal(t, machine.Completed, out.Outcome, "reason %q err %v", out.Reason, out.Err)
	assert.Len(t, progress, len(g.rec.Sites))
	assert.Equal(t, len(g.rec.Sites), out.Done)

	run := loadRun(t, out.Dir)
	assert.Equal(t, results.Completed, run.State)
	assert.True(t, run.Complete)
	assert.Equal(t, len(g.rec.Sites), run.SitesDone)
	assert.True(t, run.PositionTrusted)
	assert.FileExists(t, filepath.Join(out.Dir, "wafermap.png"))
	assert.Equal(t, &results.ReferenceDie{Die: g.rec.Reference.Die, At: g.rec.Reference.At}, run.Geometry.Reference,
		"the record names the recipe's reference die for the wafer map")
	assert.Equal(t, &results.OrientationMark{Kind: results.MarkNotch, Direction: 180}, run.Geometry.Mark,
		"and its orientation mark")

	// Expected: each seeded defect lies in exactly one site's field of view.
	fov := g.board.Limits.FOV
	seeded := sim.SceneFor(g.rec, fov).Defects
	require.NotEmpty(t, seeded, "the recipe must seed defects for this test to mean anything")
	total := 0
	for _, s := range run.Sites {
		require.Equal(t, results.SiteDone, s.Status)
		raw, err := os.ReadFile(filepath.Join(out.Dir, s.Result))
		require.NoError(t, err)
		var sr results.SiteResult
		require.NoError(t, json.Unmarshal(raw, &sr))
		at := g.rec.Sites[s.Index].At
		var want []motion.Point
		for _, d := range seeded {
			if abs(d.At.X-at.X) < fov.X/2 && abs(d.At.Y-at.Y) < fov.Y/2 {
				want = append(want, d.At)
			}
		}
		require.Len(t, sr.Defects, len(want), "site %d die %v", s.Index, s.Die)
		assert.Equal(t, len(want), s.Defects)
		assert.Equal(t, len(want), progress[s.Index].SiteDefects, "site %d: progress reports its own defects", s.Index)
		assert.Equal(t, s.Index, progress[s.Index].Site.Index)
		for _, w := range want {
			best := math.Inf(1)
			for _, d := range sr.Defects {
				best = math.Min(best, math.Hypot(d.XMM-w.X.Millimetres(), d.YMM-w.Y.Millimetres()))
			}
			assert.Less(t, best, 0.030, "defect at %v on site %d found within 1.5 px", w, s.Index)
		}
		total += len(want)
		assert.FileExists(t, filepath.Join(out.Dir, s.Image))
	}
	assert.Equal(t, len(seeded), total, "every seeded defect lies on an inspected site")
	assert.Equal(t, total, run.DefectsTotal)
	assert.Equal(t, total, out.Defects)

	// The machine is left safe: light off, stage at rest.
	assert.Equal(t, gpio.Low, lightLevel(g))
	assert.False(t, g.board.Sim.Emulator.Moving())
}

func abs(d motion.Distance) motion.Distance {
	if d < 0 {
		return -d
	}
	return d
}

func lightLevel(g *rig) gpio.Level {
	p := g.board.Sim.LightPin
	p.Lock()
	defer p.Unlock()
	return p.L
}

func TestDeviceFaultAbortsRun(t *testing.T) {
	g := newRig(t, testRecipe)
	g.runner.Progress = func(p inspection.Progress) {
		if p.Done == 2 {
			g.board.Sim.Emulator.InjectAlarm(1) // hard limit mid-run
		}
	}
	out, err := g.run(t, g.rec)
	require.NoError(t, err)
	assert.Equal(t, machine.Aborted, out.Outcome)
	assert.Contains(t, out.Reason, "fault: stage")
	assert.ErrorIs(t, out.Err, motion.ErrAlarm)
	run := loadRun(t, out.Dir)
	assert.Equal(t, results.Aborted, run.State)
	assert.False(t, run.Complete)
	// The third site may have been captured before the alarm, and then
	// saved or abandoned in analysis (sites are pipelined).
	assert.GreaterOrEqual(t, run.SitesDone, 2)
	assert.LessOrEqual(t, run.SitesDone, 3)
	assert.Equal(t, gpio.Low, lightLevel(g))
	assert.False(t, run.PositionTrusted, "a hard-limit alarm loses the position")

	// A fault latches the machine until an operator resets it.
	assert.Equal(t, machine.Faulted, out.After)
	assert.Equal(t, machine.Faulted, g.m.State())
	_, err = g.run(t, g.rec)
	require.ErrorIs(t, err, machine.ErrLatched)
	assert.ErrorContains(t, err, "clear it with reset")
	require.NoError(t, g.m.Reset(context.Background()))
	g.runner.Progress = nil
	out, err = g.run(t, g.rec)
	require.NoError(t, err)
	assert.Equal(t, machine.Completed, out.Outcome, "after reset the next run homes and completes: %v", out.Err)
}
