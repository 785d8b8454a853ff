package inspection_test

import (
	"context"
	"runtime"
	"testing"

	"github.com/waferd/waferd/inspection"
	"github.com/waferd/waferd/inspection/recipe"
	"github.com/waferd/waferd/inspection/results"
	"github.com/waferd/waferd/internal/emuchild"
	"github.com/waferd/waferd/machine"
)

// longRecipe covers a 210 mm wafer with 1.8 mm dies: about 10,300 sites
// whose 1.28 mm field of view lies on the wafer.
const longRecipe = `
name = "long"
[wafer]
diameter_mm = 210.0
center_mm = [150.0, 150.0]
[dies]
pitch_mm = [1.8, 1.8]
reference = [0, 0]
layout = "grid"
[capture]
exposure_ms = 0.1
light_level = 0.5
settle_ms = 0
feed_mm_min = 6000
[analysis]
threshold = 40
min_area_px = 4
[sim]
seed = 5
defect_fraction = 0.2
max_defects_per_site = 2
`

// BenchmarkLongRun runs a wafer of more than 10,000 sites on the simulated
// board (stage motion 1000× real time; the emulator in a process of its own,
// so that only waferd's own heap is measured; 64×64 frames; records on tmpfs
// when there is one) and measures heap-growth-KiB: the live heap after the
// last site minus the live heap after the 1,000th, each after two garbage
// collections (goal: ≤ 1024 KiB: a long run does not grow the heap).
//
// One iteration is one whole run (about a minute): use -benchtime=1x.
func BenchmarkLongRun(b *testing.B) {
	emu := emuchild.Start(b, 1000, true)
	brd := emuchild.OpenBoard(b, emu, 64, 64)
	rec, err := recipe.Parse("long.toml", []byte(longRecipe), brd.Limits)
	if err != nil {
		b.Fatal(err)
	}
	if len(rec.Sites) < 10_000 {
		b.Fatalf("%d sites: the recipe must have at least 10,000", len(rec.Sites))
	}
	if err := brd.Sim.SetRecipe(rec); err != nil {
		b.Fatal(err)
	}
	store, err := results.Open(fastTempDir(b))
	if err != nil {
		b.Fatal(err)
	}
	r := &inspection.Runner{Stage: brd.Stage, Light: brd.Light, Camera: brd.Camera, Store: store}
	m := machine.New(machine.Config{Stage: brd.Stage, Light: brd.Light})
	const warm = 1000
	// Two collections, so that the live heap is measured at both ends: what
	// grows is what the run keeps (its record's per-site entries), not
	// garbage. Allocations per site are not a goal: a site takes 100 ms.
	settle := func() { runtime.GC(); runtime.GC() }
	var h0, m1 runtime.MemStats
	r.Progress = func(p inspection.Progress) {
		switch p.Done {
		case warm:
			settle()
			runtime.ReadMemStats(&h0)
		case p.Total:
			settle()
			runtime.ReadMemStats(&m1)
		}
	}
	for b.Loop() {
		out, err := runClaimed(context.Background(), m, r, rec)
		if err != nil || out.Outcome != machine.Completed {
			b.Fatalf("run: %v %s %v", err, out.Reason, out.Err)
		}
	}
	b.ReportMetric(float64(int64(m1.HeapAlloc)-int64(h0.HeapAlloc))/1024, "heap-growth-KiB")
	b.ReportMetric(float64(len(rec.Sites)), "sites")
}
