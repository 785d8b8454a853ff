package results

import (
	"bytes"
	"fmt"
	"image/png"
	"math"
	"testing"
	"time"

	"github.com/waferd/waferd/motion"
)

// wafer300 returns a finished run on a 300 mm wafer centred at (150, 150) mm
// with 4.75 mm dies: every die that lies fully on the wafer is a site (3,009
// sites), in serpentine rows as a grid recipe visits them. Sites are done
// with a spread of defect counts, one in 97 failed, and the last tenth
// pending, as a run canceled near its end.
func wafer300() Run {
	const pitch, radius, c = 4.75, 150.0, 150.0
	start := time.Date(2026, 11, 26, 8, 15, 0, 0, time.UTC)
	end := start.Add(47*time.Minute + 12*time.Second)
	run := Run{
		ID: "20261126T081500Z-wafer300", Recipe: "wafer300", RecipeFile: "recipes/wafer300.toml",
		State: Canceled, Reason: "operator: console ttyGS0", StartedAt: start, EndedAt: &end,
		Geometry: Geometry{
			WaferCenter:   motion.Point{X: motion.MM(c), Y: motion.MM(c)},
			WaferDiameter: motion.MM(2 * radius),
			DiePitch:      motion.Point{X: motion.MM(pitch), Y: motion.MM(pitch)},
		},
	}
	n := int(math.Ceil(radius / pitch))
	for row := -n; row <= n; row++ {
		for k := -n; k <= n; k++ {
			col := k
			if (row+n)%2 == 1 {
				col = -k
			}
			onWafer := true
			for _, corner := range [][2]float64{{-.5, -.5}, {-.5, .5}, {.5, -.5}, {.5, .5}} {
				x, y := (float64(col)+corner[0])*pitch, (float64(row)+corner[1])*pitch
				onWafer = onWafer && math.Hypot(x, y) <= radius
			}
			if !onWafer {
				continue
			}
			i := len(run.Sites)
			run.Sites = append(run.Sites, Site{Index: i, Die: [2]int{col, row},
				XMM: c + float64(col)*pitch, YMM: c + float64(row)*pitch, Status: SiteDone, Defects: (i * 7 % 23) / 3})
		}
	}
	for i := range run.Sites {
		switch {
		case i >= len(run.Sites)*9/10:
			run.Sites[i].Status, run.Sites[i].Defects = SitePending, 0
		case i%97 == 50:
			run.Sites[i].Status, run.Sites[i].Defects = SiteFailed, 0
		}
	}
	run.recount()
	return run
}

// BenchmarkWaferMap draws the map of a 300 mm wafer of 3,009 sites
// (wafer300) and encodes it as the Store does; it reports the PNG's size.
// Compare with BenchmarkSiteImagePNG/grayPNG, one site's image, in the
// same run: a run of this wafer encodes 3,009 of those.
func BenchmarkWaferMap(b *testing.B) {
	run := wafer300()
	b.Run(fmt.Sprintf("render/%d-sites", len(run.Sites)), func(b *testing.B) {
		for b.Loop() {
			if _, err := RenderWaferMap(run); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run(fmt.Sprintf("render+png/%d-sites", len(run.Sites)), func(b *testing.B) {
		enc := png.Encoder{CompressionLevel: png.BestSpeed}
		var buf bytes.Buffer
		for b.Loop() {
			buf.Reset()
			img, err := RenderWaferMap(run)
			if err != nil {
				b.Fatal(err)
			}
			if err := enc.Encode(&buf, img); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(buf.Len())/1024, "png-KiB")
	})
}
