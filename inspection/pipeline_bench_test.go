package inspection_test

// BenchmarkRun compares a pipelined run (the default: the stage moves to
// site N+1 while site N is analysed and saved) with the naive serial loop
// (Config.Serial), on the simulated board in real time through the
// production drivers, with 2048×2048 frames.
//
// Each iteration is one whole run; wall is Run's duration (record created
// to outcome persisted). The critical path is what the machine itself must
// spend: the time the emulator reports the stage in motion (Run state, from
// its OnState hook), the settle waits of the recipe, and the time the
// camera takes to deliver each frame (exposure and readout: the Capture
// calls). wall/critical is reported per run; make bench takes the median.

import (
	"context"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/waferd/waferd/board"
	"github.com/waferd/waferd/camera"
	"github.com/waferd/waferd/inspection"
	"github.com/waferd/waferd/inspection/recipe"
	"github.com/waferd/waferd/inspection/results"
	"github.com/waferd/waferd/machine"
	"github.com/waferd/waferd/motion"
	"github.com/waferd/waferd/sim"
)

// pipelineRecipe is a row of 16 dies at the demo's pitch, settle, exposure
// and feed.
const pipelineRecipe = `
name = "pipeline"
[wafer]
diameter_mm = 300.0
center_mm = [150.0, 150.0]
[dies]
pitch_mm = [10.0, 10.0]
reference = [0, 0]
layout = "sites"
[capture]
exposure_ms = 20
light_level = 0.8
settle_ms = 40
feed_mm_min = 6000
[analysis]
threshold = 40
min_area_px = 6
[sim]
seed = 11
defect_fraction = 0.3
max_defects_per_site = 3
`

// timedCamera adds up the time spent in Capture.
type timedCamera struct {
	camera.Camera
	mu   sync.Mutex
	busy time.Duration
}

func (c *timedCamera) Capture(ctx context.Context, exposure time.Duration) (*camera.Frame, error) {
	t0 := time.Now()
	f, err := c.Camera.Capture(ctx, exposure)
	c.mu.Lock()
	c.busy += time.Since(t0)
	c.mu.Unlock()
	return f, err
}

func (c *timedCamera) take() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	d := c.busy
	c.busy = 0
	return d
}

// motionClock adds up the time the emulator spends in the Run state.
type motionClock struct {
	mu    sync.Mutex
	since time.Time // zero while not moving
	total time.Duration
}

func (m *motionClock) onState(st motion.State, _ int, at time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case st == motion.StateRun && m.since.IsZero():
		m.since = at
	case st != motion.StateRun && !m.since.IsZero():
		m.total += at.Sub(m.since)
		m.since = time.Time{}
	}
}

func (m *motionClock) take() time.Duration {
	m.mu.Lock()
	defer m.mu.Unlock()
	d := m.total
	m.total = 0
	return d
}

func BenchmarkRun(b *testing.B) {
	doc := pipelineRecipe
	for x := -8; x <= 7; x++ {
		doc += "[[site]]\ndie = [" + strconv.Itoa(x) + ", 2]\n"
	}
	for _, mode := range []struct {
		name   string
		serial bool
	}{{"serial", true}, {"pipelined", false}} {
		b.Run(mode.name, func(b *testing.B) {
			simCfg := sim.Config{TimeScale: 1, FrameWidth: 2048, FrameHeight: 2048}
			rec, err := recipe.Parse("pipeline.toml", []byte(doc), simCfg.Limits())
			if err != nil {
				b.Fatal(err)
			}
			simCfg.Scene = sim.SceneFor(rec, simCfg.FOV())
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			brd, err := board.OpenSim(ctx, board.SimConfig{Sim: simCfg})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() {
				if err := brd.Close(); err != nil {
					b.Error(err)
				}
			})
			store, err := results.Open(b.TempDir())
			if err != nil {
				b.Fatal(err)
			}
			cam := &timedCamera{Camera: brd.Camera}
			var mc motionClock
			brd.Sim.Emulator.OnState(mc.onState)
			r := &inspection.Runner{Stage: brd.Stage, Light: brd.Light, Camera: cam, Store: store,
				Config: inspection.Config{Serial: mode.serial}}
			m := machine.New(machine.Config{Stage: brd.Stage, Light: brd.Light})
			// Home and warm up outside the measurement.
			if out, err := runClaimed(context.Background(), m, r, rec); err != nil || out.Outcome != machine.Completed {
				b.Fatalf("warm-up run: %v %v %v", out.Outcome, out.Reason, err)
			}
			// head: Run called → first move; tail: last analysis begins →
			// Run returns. Neither is on the machine's critical path.
			var firstMove, lastAnalyse time.Time
			var stepMu sync.Mutex
			last := rec.Sites[len(rec.Sites)-1].Index
			r.OnStep = func(s inspection.Step, site int) {
				stepMu.Lock()
				defer stepMu.Unlock()
				switch {
				case s == inspection.StepMove && firstMove.IsZero():
					firstMove = time.Now()
				case s == inspection.StepAnalyse && site == last:
					lastAnalyse = time.Now()
				}
			}
			var ratios, walls, heads, tails []float64
			for b.Loop() {
				stepMu.Lock()
				firstMove = time.Time{}
				stepMu.Unlock()
				cam.take()
				mc.take()
				t0 := time.Now()
				out, err := runClaimed(context.Background(), m, r, rec)
				wall := time.Since(t0)
				stepMu.Lock()
				heads = append(heads, float64(firstMove.Sub(t0).Microseconds())/1000)
				tails = append(tails, float64(t0.Add(wall).Sub(lastAnalyse).Microseconds())/1000)
				stepMu.Unlock()
				if err != nil || out.Outcome != machine.Completed {
					b.Fatalf("run: %v %v %v", out.Outcome, out.Reason, err)
				}
				settles := time.Duration(len(rec.Sites)+1) * rec.Settle
				critical := mc.take() + settles + cam.take()
				ratios = append(ratios, float64(wall)/float64(critical))
				walls = append(walls, wall.Seconds())
			}
			b.ReportMetric(median(ratios), "wall/critical")
			b.ReportMetric(median(walls), "wall-s")
			b.ReportMetric(median(heads), "head-ms")
			b.ReportMetric(median(tails), "tail-ms")
		})
	}
}

// median of xs (which it sorts).
func median(xs []float64) float64 {
	slices.Sort(xs)
	return xs[len(xs)/2]
}
