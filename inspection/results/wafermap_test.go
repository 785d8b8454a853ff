package results

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/waferd/waferd/motion"
)

var mapDir = flag.String("wafermap.dir", "", "also copy the wafer maps the tests render into this directory, to look at them")

// waferRun returns a run on a 150 mm wafer centred at (150, 150) mm with
// 10 mm dies, every die fully on the wafer a site (in serpentine rows),
// the reference die +0,+0, and the orientation mark m (nil: not recorded).
func waferRun(m *OrientationMark) Run {
	const pitch, radius, c = 10.0, 75.0, 150.0
	run := Run{
		Recipe: "edge-150", RecipeFile: "recipes/edge-150.toml", PositionTrusted: true,
		Geometry: Geometry{
			WaferCenter:   motion.Point{X: motion.MM(c), Y: motion.MM(c)},
			WaferDiameter: motion.MM(2 * radius),
			DiePitch:      motion.Point{X: motion.MM(pitch), Y: motion.MM(pitch)},
			Mark:          m,
			Reference:     &ReferenceDie{Die: [2]int{0, 0}, At: motion.Point{X: motion.MM(c), Y: motion.MM(c)}},
		},
	}
	for row := -8; row <= 8; row++ {
		for k := -8; k <= 8; k++ {
			col := k
			if row%2 != 0 {
				col = -k
			}
			x, y := float64(col)*pitch, float64(row)*pitch
			if math.Hypot(math.Abs(x)+pitch/2, math.Abs(y)+pitch/2) > radius {
				continue
			}
			run.Sites = append(run.Sites, Site{Index: len(run.Sites), Die: [2]int{col, row}, XMM: c + x, YMM: c + y})
		}
	}
	return run
}

// defectsOf is the number of defects site i is saved with: every class
// occurs (0, 1–2, 3–5, more than 5).
func defectsOf(i int) int { return i * 5 % 9 }

// recordRun records run through the Store as the runner does: sites below
// done are saved (those in failed fail), the rest stay pending; then the
// run finishes as state (Interrupted: the process "crashes" and the next
// start marks it). It returns the record as loaded back and its directory.
func recordRun(t *testing.T, run Run, done int, failed map[int]bool, state State, reason string, runErr error) (Run, string) {
	t.Helper()
	data := t.TempDir()
	s, err := Open(data, WithClock(fakeClock()), WithCommitInterval(0))
	require.NoError(t, err)
	rec, err := s.Create(run)
	require.NoError(t, err)
	for i := range done {
		if failed[i] {
			require.NoError(t, rec.FailSite(i, errors.New("camera: frame timeout\nafter 2 s")))
			continue
		}
		require.NoError(t, rec.SaveSite(i, make([]Defect, defectsOf(i)), nil))
	}
	if state == Interrupted {
		next, err := Open(data, WithClock(fakeClock()))
		require.NoError(t, err)
		marked, err := next.MarkInterrupted()
		require.NoError(t, err)
		require.Len(t, marked, 1)
	} else {
		require.NoError(t, rec.Finish(state, reason, runErr, true))
	}
	loaded, err := s.Load(rec.ID())
	require.NoError(t, err)
	require.Equal(t, state, loaded.State)
	return loaded, rec.Dir()
}

// readMap decodes dir/wafermap.png, keeps a copy in t.TempDir() (and in
// -wafermap.dir when given) under name, and returns it.
func readMap(t *testing.T, dir, name string) *image.RGBA {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "wafermap.png"))
	require.NoError(t, err)
	keep := []string{t.TempDir()}
	if *mapDir != "" {
		keep = append(keep, *mapDir)
	}
	for _, d := range keep {
		require.NoError(t, os.WriteFile(filepath.Join(d, name+".png"), b, 0o644))
	}
	t.Logf("%s: %s (%d KiB)", name, filepath.Join(keep[len(keep)-1], name+".png"), len(b)/1024)
	img, err := png.Decode(bytes.NewReader(b))
	require.NoError(t, err)
	rgba, ok := img.(*image.RGBA) // an opaque RGBA image is written as 8-bit RGB
	require.True(t, ok, "decoded as %T", img)
	return rgba
}

func rgbaAt(img *image.RGBA, x, y int) color.RGBA { return img.RGBAAt(x, y) }

// luma is the grey level a greyscale copy gives c (ITU-R BT.601).
func luma(c color.RGBA) float64 { return 0.299*float64(c.R) + 0.587*float64(c.G) + 0.114*float64(c.B) }

// darkPixels counts the pixels of r darker than grey 128.
func darkPixels(img *image.RGBA, r image.Rectangle) int {
	n := 0
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			if luma(rgbaAt(img, x, y)) < 128 {
				n++
			}
		}
	}
	return n
}

// TestWaferMapRuns renders, through the Store, the maps of a completed, a
// canceled, a failed and an interrupted run, and checks by their pixels
// that the picture says what the legend says.
func TestWaferMapRuns(t *testing.T) {
	n := len(waferRun(nil).Sites)
	require.Greater(t, n, 100)
	cases := []struct {
		name   string
		mark   *OrientationMark
		done   int
		failed map[int]bool
		state  State
		reason string
		err    error
	}{
		{"completed", nil, n, nil, Completed, "all sites visited", nil},
		{"canceled", &OrientationMark{Kind: MarkNotch, Direction: 0}, n * 3 / 5, nil, Canceled, "operator: console ttyGS0", nil},
		{"failed", &OrientationMark{Kind: MarkFlat, Direction: 270}, n / 2, map[int]bool{3: true, 17: true, 40: true, n/2 - 1: true},
			Failed, "error: analysis: reference die image lost", errors.New("analysis: reference die image lost")},
		{"interrupted", &OrientationMark{Kind: MarkNotch, Direction: 135}, n / 3, map[int]bool{5: true}, Interrupted, "", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			run, dir := recordRun(t, waferRun(tc.mark), tc.done, tc.failed, tc.state, tc.reason, tc.err)
			img := readMap(t, dir, "wafermap-"+tc.name)
			want, l, err := renderWaferMap(run)
			require.NoError(t, err)
			assert.Equal(t, image.Rect(0, 0, mapWidth, mapHeight), img.Bounds())
			require.True(t, bytes.Equal(want.Pix, img.Pix), "the file is this rendering of the record")
			checkTitle(t, img, l, run)
			checkDies(t, img, l, run)
			checkReference(t, img, l, run)
			checkMark(t, img, l, run)
			checkScale(t, img, l)
		})
	}
}

// checkTitle: every row of the title block has text, and the badge has the
// outcome's colour.
func checkTitle(t *testing.T, img *image.RGBA, l mapLayout, run Run) {
	t.Helper()
	require.Len(t, l.rows, 6, "title, recipe, outcome, sites, defects, start and duration")
	for i, r := range l.rows {
		assert.True(t, r.In(l.header), "row %d %v inside the title block", i, r)
		assert.Greater(t, darkPixels(img, r), 40, "row %d %v has text", i, r)
	}
	assert.Equal(t, stateColor(run.State), rgbaAt(img, l.badge.Min.X+2, l.badge.Min.Y+2), "badge")
	assert.True(t, l.rows[0].Intersect(l.badge).Empty(), "the title stays clear of the badge")
}

// checkDies: each site's die has its class's fill, which is the legend
// swatch's; pending dies have a dashed outline, done and failed ones a
// solid one; failed dies a cross; defect counts are written in the dies.
func checkDies(t *testing.T, img *image.RGBA, l mapLayout, run Run) {
	t.Helper()
	fills := map[color.RGBA]dieClass{}
	for k := range numClasses {
		sw := l.swatches[k]
		got := rgbaAt(img, sw.Min.X+2, (sw.Min.Y+sw.Max.Y)/2)
		assert.Equal(t, classFill[k], got, "legend swatch of %s", classLabel[k])
		_, dup := fills[got]
		assert.False(t, dup, "%s has a fill of its own", classLabel[k])
		fills[got] = k
		edge := rowPattern(img, sw.Min.X, sw.Max.X, sw.Min.Y)
		if k == classPending {
			assert.Equal(t, dashes(sw.Dx()), edge, "legend: pending is dashed")
		} else {
			assert.Equal(t, solid(sw.Dx()), edge, "legend: %s has a solid outline", classLabel[k])
		}
	}
	assert.Equal(t, colInk, rgbaAt(img, l.swatches[classFailed].Min.X+2, l.swatches[classFailed].Min.Y+2), "legend: failed is crossed")

	ref := l.t.dieRect(run.Geometry.Reference.At.X.Millimetres(), run.Geometry.Reference.At.Y.Millimetres())
	var seen [numClasses]int
	for _, s := range run.Sites {
		k := classOf(s)
		seen[k]++
		r := l.t.dieRect(s.XMM, s.YMM)
		require.GreaterOrEqual(t, r.Dx(), 40, "dies large enough to sample")
		midY := (r.Min.Y + r.Max.Y) / 2
		assert.Equal(t, classFill[k], rgbaAt(img, r.Min.X+3, midY), "site %d (%s, %d defects): fill", s.Index, s.Status, s.Defects)
		if !r.Inset(-4).Overlaps(ref) { // the reference frame covers its neighbours' edges
			want := solid(r.Dx())
			if k == classPending {
				want = dashes(r.Dx())
			}
			assert.Equal(t, want, rowPattern(img, r.Min.X, r.Max.X, r.Min.Y), "site %d (%s): outline", s.Index, s.Status)
		}
		centre := image.Rect(r.Min.X+r.Dx()/2-8, midY-8, r.Min.X+r.Dx()/2+8, midY+8)
		switch {
		case k == classFailed:
			in := r.Inset(2) // the diagonals, away from a reference frame
			for _, k := range []int{6, in.Dx() / 2, in.Dx() - 7} {
				assert.Equal(t, colInk, rgbaAt(img, in.Min.X+k, in.Min.Y+k), "site %d: cross", s.Index)
				assert.Equal(t, colInk, rgbaAt(img, in.Max.X-1-k, in.Min.Y+k), "site %d: cross", s.Index)
			}
		case k == classMany:
			assert.Greater(t, lightPixels(img, centre), 10, "site %d: count written in white", s.Index)
		case k != classPending && s.Defects > 0:
			assert.Greater(t, darkPixels(img, centre), 10, "site %d: count written", s.Index)
		default:
			assert.Zero(t, darkPixels(img, centre), "site %d: nothing written", s.Index)
		}
	}
	for k := range numClasses {
		if k == classFailed && len(run.Sites) > 0 && run.SitesFailed == 0 {
			continue
		}
		if k == classPending && run.SitesDone+run.SitesFailed == run.SitesTotal {
			continue
		}
		assert.NotZero(t, seen[k], "the run has dies of class %s", classLabel[k])
	}
}

func lightPixels(img *image.RGBA, r image.Rectangle) int {
	n := 0
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			if luma(rgbaAt(img, x, y)) > 200 {
				n++
			}
		}
	}
	return n
}

// rowPattern writes the pixels of row y from x0 to x1 as '#' for the die
// edge's colour and '.' for anything else.
func rowPattern(img *image.RGBA, x0, x1, y int) string {
	b := make([]byte, 0, x1-x0)
	for x := x0; x < x1; x++ {
		if rgbaAt(img, x, y) == colDieEdge {
			b = append(b, '#')
		} else {
			b = append(b, '.')
		}
	}
	return string(b)
}

func solid(n int) string { return string(bytes.Repeat([]byte{'#'}, n)) }

func dashes(n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = '.'
		if i%5 < 3 {
			b[i] = '#'
		}
	}
	return string(b)
}

// checkReference: the reference die's frame is the 3 px just outside its
// die, and the only pixels of its colour on the map.
func checkReference(t *testing.T, img *image.RGBA, l mapLayout, run Run) {
	t.Helper()
	g := run.Geometry.Reference
	require.NotNil(t, g)
	r := l.t.dieRect(g.At.X.Millimetres(), g.At.Y.Millimetres())
	frame, n := 0, 0
	for y := l.area.Min.Y; y < l.area.Max.Y; y++ {
		for x := l.area.Min.X; x < l.area.Max.X; x++ {
			p := image.Pt(x, y)
			in := p.In(r.Inset(-3)) && !p.In(r)
			if in {
				frame++
			}
			if rgbaAt(img, x, y) == colReference {
				n++
				assert.True(t, in, "reference colour at %v, outside the frame of %v", p, r)
			}
		}
	}
	assert.Equal(t, frame, n, "the whole frame is drawn")
	assert.Equal(t, colReference, rgbaAt(img, l.refSwatch.Min.X-2, l.refSwatch.Min.Y+5), "legend: reference frame")
}

// checkMark: the notch is cut, or the flat drawn, where the geometry says
// (a notch at -Y when it does not), and labelled beside it.
func checkMark(t *testing.T, img *image.RGBA, l mapLayout, run Run) {
	t.Helper()
	want := DefaultMark()
	if run.Geometry.Mark != nil {
		want = *run.Geometry.Mark
	}
	require.NotNil(t, l.mark)
	assert.Equal(t, want, *l.mark)
	cx, cy := l.t.pixel(l.t.cx, l.t.cy)
	r := l.t.radius * l.t.scale
	at := func(deg, d float64) (int, int) {
		a := deg * math.Pi / 180
		return int(math.Round(cx + d*math.Cos(a))), int(math.Round(cy - d*math.Sin(a)))
	}
	// Inside the mark: outside the wafer. Elsewhere at the same distance
	// from the centre (the other three quarters): wafer or a die.
	var d float64
	switch want.Kind {
	case MarkNotch:
		d = r - notchDepthPx(l.t)/2
		x, y := at(want.Direction, d)
		assert.Equal(t, colBackground, rgbaAt(img, x, y), "notch cut at %g°", want.Direction)
	case MarkFlat:
		// Between the flat and where the circle would be, off to one side
		// of the label.
		h := flatDistancePx(l.t)
		side := 0.4 * math.Sqrt(r*r-h*h)
		d = (h + math.Sqrt(r*r-side*side)) / 2
		a := want.Direction * math.Pi / 180
		x := int(math.Round(cx + d*math.Cos(a) - side*math.Sin(a)))
		y := int(math.Round(cy - d*math.Sin(a) - side*math.Cos(a)))
		assert.NotEqual(t, colWafer, rgbaAt(img, x, y), "no wafer beyond the flat at %g°", want.Direction)
		assert.Equal(t, colBackground, rgbaAt(img, x, y), "no die beyond the flat either, in this layout")
		x, y = at(want.Direction, h)
		assert.Less(t, luma(rgbaAt(img, x, y)), 128.0, "the flat's line")
	}
	for _, off := range []float64{90, 180, 270} {
		x, y := at(want.Direction+off, d)
		assert.NotEqual(t, colBackground, rgbaAt(img, x, y), "wafer at %g°", want.Direction+off)
	}
	// The label lies beyond the edge, in the mark's direction.
	lc := l.markLabel.Min.Add(l.markLabel.Max).Div(2)
	dx, dy := float64(lc.X)-cx, cy-float64(lc.Y)
	edge := r
	if want.Kind == MarkFlat {
		edge = flatDistancePx(l.t)
	}
	assert.Greater(t, math.Hypot(dx, dy), edge, "label outside the wafer")
	assert.Less(t, math.Hypot(dx, dy), edge+30, "label beside the mark")
	dir := math.Atan2(dy, dx) * 180 / math.Pi
	assert.InDelta(t, 0, math.Remainder(dir-want.Direction, 360), 12, "label towards the mark")
	assert.Greater(t, darkPixels(img, l.markLabel), 20, "label written")
}

// checkScale: the +X and +Y arrows are drawn, and the scale bar is as long
// as its round number of millimetres.
func checkScale(t *testing.T, img *image.RGBA, l mapLayout) {
	t.Helper()
	ox, oy := l.area.Min.X+20, l.area.Max.Y-20
	for i := 5; i < 40; i += 5 {
		assert.Equal(t, colInk, rgbaAt(img, ox+i, oy), "+X arrow")
		assert.Equal(t, colInk, rgbaAt(img, ox, oy-i), "+Y arrow")
	}
	e := math.Floor(math.Log10(l.scaleMM))
	assert.Contains(t, []float64{1, 2, 5}, math.Round(l.scaleMM/math.Pow(10, e)), "round length %g mm", l.scaleMM)
	assert.Equal(t, int(math.Round(l.scaleMM*l.t.scale)), l.scaleBar.Dx())
	y := l.scaleBar.Min.Y
	for x := l.scaleBar.Min.X; x < l.scaleBar.Max.X; x++ {
		require.Equal(t, colInk, rgbaAt(img, x, y), "scale bar at x=%d", x)
	}
	assert.NotEqual(t, colInk, rgbaAt(img, l.scaleBar.Max.X+1, y))
	assert.NotEqual(t, colInk, rgbaAt(img, l.scaleBar.Min.X-2, y))
}

// TestWaferMapTitleFollowsRun: the title block shows the record: another
// id, recipe, outcome, counts or start change its rows, and nothing else
// in the picture.
func TestWaferMapTitleFollowsRun(t *testing.T) {
	run, _ := recordRun(t, waferRun(nil), 20, map[int]bool{4: true}, Canceled, "button: gpiochip0/stop", nil)
	base, l, err := renderWaferMap(run)
	require.NoError(t, err)
	changed := func(edit func(*Run)) []int {
		r := run.clone()
		edit(&r)
		img, _, err := renderWaferMap(r)
		require.NoError(t, err)
		var rows []int
		for i, rr := range l.rows {
			if !bytes.Equal(pixels(base, rr), pixels(img, rr)) {
				rows = append(rows, i)
			}
		}
		below := image.Rect(0, l.header.Max.Y, mapWidth, mapHeight)
		assert.Equal(t, pixels(base, below), pixels(img, below), "only the title block changes")
		return rows
	}
	assert.Equal(t, []int{0}, changed(func(r *Run) { r.ID = "20261127T000000Z-other" }))
	assert.Equal(t, []int{1}, changed(func(r *Run) { r.Recipe = "other" }))
	assert.Equal(t, []int{2}, changed(func(r *Run) { r.Reason = "shutdown" }))
	assert.Equal(t, []int{5}, changed(func(r *Run) { r.StartedAt = r.StartedAt.Add(-3600e9) }))
	assert.Empty(t, changed(func(r *Run) { r.Error = "stopped: operator (interrupt)" }), "a canceled run's error repeats the stop")
	assert.Equal(t, []int{2}, changed(func(r *Run) { r.State, r.Error = Aborted, "stage: alarm 2" }))
}

func pixels(img *image.RGBA, r image.Rectangle) []byte {
	var b []byte
	for y := r.Min.Y; y < r.Max.Y; y++ {
		b = append(b, img.Pix[img.PixOffset(r.Min.X, y):img.PixOffset(r.Max.X, y)]...)
	}
	return b
}

// TestWaferMapGreyscale: a greyscale copy still tells the classes apart.
// The done classes darken with the defect count, in steps a grey printout
// keeps; pending (white, dashed) is lighter than any done die and than the
// wafer; failed dies are crossed (TestWaferMapRuns).
func TestWaferMapGreyscale(t *testing.T) {
	done := []dieClass{classClean, classFew, classSeveral, classMany}
	for i := 1; i < len(done); i++ {
		a, b := luma(classFill[done[i-1]]), luma(classFill[done[i]])
		assert.Greater(t, a-b, 25.0, "%s (%.0f) against %s (%.0f)", classLabel[done[i-1]], a, classLabel[done[i]], b)
	}
	assert.Greater(t, luma(classFill[classPending])-luma(classFill[classClean]), 25.0)
	assert.Greater(t, luma(classFill[classPending])-luma(colWafer), 25.0)
	assert.Greater(t, luma(colWafer)-luma(colWaferEdge), 100.0)
	assert.Less(t, luma(colReference), 100.0, "the reference frame prints dark")
}

// TestWaferMapOldRecord: a run.json from before the mark and the reference
// die draws the assumed notch at -Y and no reference frame.
func TestWaferMapOldRecord(t *testing.T) {
	data := t.TempDir()
	dir := filepath.Join(data, "runs", "20261126T081500Z-golden")
	require.NoError(t, os.MkdirAll(dir, 0o755))
	b, err := os.ReadFile(filepath.Join("testdata", "golden-before-marks", "run.json"))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "run.json"), b, 0o644))
	s, err := Open(data)
	require.NoError(t, err)
	run, err := s.Load("20261126T081500Z-golden")
	require.NoError(t, err)
	img, l, err := renderWaferMap(run)
	require.NoError(t, err)
	require.NotNil(t, l.mark)
	assert.Equal(t, DefaultMark(), *l.mark)
	cx, cy := l.t.pixel(l.t.cx, l.t.cy)
	y := int(math.Round(cy + l.t.radius*l.t.scale - notchDepthPx(l.t)/2))
	assert.Equal(t, colBackground, img.RGBAAt(int(math.Round(cx)), y), "notch at -Y")
	for y := l.area.Min.Y; y < l.area.Max.Y; y++ {
		for x := l.area.Min.X; x < l.area.Max.X; x++ {
			require.NotEqual(t, colReference, img.RGBAAt(x, y), "no reference frame at (%d, %d)", x, y)
		}
	}
}

// TestWaferMapFlatLengths: the flat's chord is SEMI M1's for 100, 125 and
// 150 mm wafers.
func TestWaferMapFlatLengths(t *testing.T) {
	for d, want := range map[float64]float64{100: 32.5, 125: 42.5, 150: 57.5, 300: 100} {
		assert.Equal(t, want, flatLength(d), "%g mm", d)
	}
}

func TestRenderWaferMapWithoutGeometry(t *testing.T) {
	run := Run{Sites: []Site{
		{Index: 0, XMM: 5, YMM: 5, Status: SiteDone, Defects: 7},
		{Index: 1, XMM: 8, YMM: 5, Status: SiteDone},
		{Index: 2, XMM: 5, YMM: 8, Status: SitePending},
	}}
	img, l, err := renderWaferMap(run)
	require.NoError(t, err)
	assert.InDelta(t, 3.0, l.t.pitchX, 1e-9)
	assert.InDelta(t, 3.0, l.t.pitchY, 1e-9)
	assert.Nil(t, l.mark, "no diameter: no disc, no mark")
	for _, s := range run.Sites {
		r := l.t.dieRect(s.XMM, s.YMM)
		assert.Equal(t, classFill[classOf(s)], img.RGBAAt(r.Min.X+3, (r.Min.Y+r.Max.Y)/2), "site %d", s.Index)
	}
	// +Y is up.
	_, y5 := l.t.pixel(5, 5)
	_, y8 := l.t.pixel(5, 8)
	assert.Less(t, y8, y5)

	// Degenerate input does not panic and still has a title block.
	for _, r := range []Run{{}, {Sites: []Site{{Status: SiteDone}}}, {State: "bogus", ID: string(make([]byte, 300))}} {
		img, l, err := renderWaferMap(r)
		require.NoError(t, err)
		assert.Greater(t, darkPixels(img, l.rows[0]), 40)
	}
}

// TestWaferMapSize300: the map of a 300 mm wafer of 3,009 sites stays a
// small file.
func TestWaferMapSize300(t *testing.T) {
	run := wafer300()
	img, err := RenderWaferMap(run)
	require.NoError(t, err)
	var buf bytes.Buffer
	require.NoError(t, (&png.Encoder{CompressionLevel: png.BestSpeed}).Encode(&buf, img))
	t.Logf("%d sites: %d KiB", len(run.Sites), buf.Len()/1024)
	assert.Less(t, buf.Len(), 300*1024)
	if *mapDir != "" {
		require.NoError(t, os.WriteFile(filepath.Join(*mapDir, "wafermap-300mm.png"), buf.Bytes(), 0o644))
	}
}

// TestWaferMapText: every character the map writes itself exists in the
// font (a missing one would be drawn as a box).
func TestWaferMapText(t *testing.T) {
	f, err := newMapFaces()
	require.NoError(t, err)
	var all string
	for _, s := range classLabel {
		all += s
	}
	all += "Ø×·—…−°+XY,0123456789 mm" + fmt.Sprint(DefaultMark())
	for _, r := range all {
		_, ok := f.regular.GlyphAdvance(r)
		assert.True(t, ok, "%q in the regular face", r)
		_, ok = f.bold.GlyphAdvance(r)
		assert.True(t, ok, "%q in the bold face", r)
	}
}

// TestWaferMapFitShortensToTheLongestPrefix: a line too wide for its room
// keeps the longest prefix that fits with its ellipsis; one that fits is
// left alone.
func TestWaferMapFitShortensToTheLongestPrefix(t *testing.T) {
	faces, err := newMapFaces()
	require.NoError(t, err)
	c := &mapCanvas{faces: faces}
	f := faces.regular
	long := "stage: alarm 1, hard limit triggered: " + strings.Repeat("motion lost, re-home ", 200)
	for _, w := range []int{0, 5, 40, 300, 760} {
		got := c.fit(f, long, w)
		require.True(t, strings.HasSuffix(got, "…"), "width %d: %q", w, got)
		prefix := strings.TrimSuffix(got, "…")
		assert.True(t, strings.HasPrefix(long, prefix), "width %d: %q", w, got)
		if prefix == "" {
			continue
		}
		assert.LessOrEqual(t, c.measure(f, got), w, "width %d: %q fits", w, got)
		// The prefix's trailing spaces were trimmed: the next longer one
		// ends at the next character that is not a space.
		rest := []rune(long[len(prefix):])
		k := 0
		for rest[k] == ' ' {
			k++
		}
		next := prefix + string(rest[:k+1])
		assert.Greater(t, c.measure(f, next+"…"), w, "width %d: one more character would not fit", w)
	}
	assert.Equal(t, "run 7", c.fit(f, "run 7", 760))
}
