package results

import (
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"io"
	"math"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"

	"golang.org/x/image/font"
	"golang.org/x/image/math/fixed"
	"golang.org/x/image/vector"
)

// Wafer map layout, in pixels: a title block, the map square, a legend.
const (
	mapWidth  = 800
	headerH   = 146 // title block
	mapSize   = 800 // the square holding the wafer, as wide as the picture
	mapMargin = 40  // between the wafer and the square's sides: the mark's label, axes, scale bar
	footerH   = 96  // legend and scale line
	mapHeight = headerH + mapSize + footerH

	textLeft  = 16 // left edge of text in the title block and legend
	valueLeft = 96 // left edge of values in the title block
	swatch    = 16 // size of a legend swatch
)

// dieClass is how a die is drawn, and its legend entry.
type dieClass int

// Die classes, in legend order.
const (
	classClean   dieClass = iota // done, 0 defects
	classFew                     // done, 1–2 defects
	classSeveral                 // done, 3–5 defects
	classMany                    // done, more than 5
	classFailed                  // the site failed
	classPending                 // not inspected
	numClasses
)

// classOf returns the class of site s (any status other than done or
// failed counts as pending).
func classOf(s Site) dieClass {
	switch s.Status {
	case SiteDone:
		switch {
		case s.Defects <= 0:
			return classClean
		case s.Defects <= 2:
			return classFew
		case s.Defects <= 5:
			return classSeveral
		}
		return classMany
	case SiteFailed:
		return classFailed
	}
	return classPending
}

// classFill is the fill of each class. The done classes get darker as the
// count grows (luma 206, 172, 136, 84 of 255, as a greyscale copy renders
// them: TestWaferMapGreyscale), so a grey copy still ranks them; failed dies
// carry a cross, and pending ones are white with a dashed outline, on a
// wafer of another tone.
var classFill = [numClasses]color.RGBA{
	classClean:   {181, 227, 166, 255}, // light green
	classFew:     {225, 170, 40, 255},  // yellow
	classSeveral: {225, 110, 35, 255},  // orange
	classMany:    {190, 40, 35, 255},   // red
	classFailed:  {140, 100, 190, 255}, // violet, black cross
	classPending: {255, 255, 255, 255}, // white, dashed outline
}

// classLabel is the legend text of each class.
var classLabel = [numClasses]string{
	classClean:   "0 defects",
	classFew:     "1–2 defects",
	classSeveral: "3–5 defects",
	classMany:    "more than 5",
	classFailed:  "failed",
	classPending: "pending (not inspected)",
}

// Colours of everything that is not a die.
var (
	colBackground = color.RGBA{255, 255, 255, 255}
	colWafer      = color.RGBA{190, 202, 216, 255} // blue-grey
	colWaferEdge  = color.RGBA{55, 65, 80, 255}
	colDieEdge    = color.RGBA{60, 60, 60, 255}
	colInk        = color.RGBA{20, 20, 20, 255} // text, crosses, axes
	colMuted      = color.RGBA{90, 90, 90, 255} // secondary text
	colRule       = color.RGBA{200, 200, 200, 255}
	colReference  = color.RGBA{20, 70, 200, 255} // the reference die's frame
)

// stateColor is the outcome badge's colour.
func stateColor(s State) color.RGBA {
	switch s {
	case Completed:
		return color.RGBA{40, 120, 50, 255}
	case Canceled:
		return color.RGBA{175, 95, 0, 255}
	case Failed, Aborted:
		return color.RGBA{190, 35, 35, 255}
	case Running:
		return color.RGBA{20, 90, 180, 255}
	}
	return color.RGBA{85, 95, 105, 255} // interrupted, unknown
}

// RenderWaferMap draws the wafer map of run, a picture for a report
// (mapWidth × mapHeight pixels, 800 × 1042):
//
//   - a title block: run id, an outcome badge, recipe name and file, the
//     outcome with the reason when the run did not complete (and the error
//     of a failed or aborted run, unless the reason holds it),
//     sites done of total with failed and pending, defects found, start
//     date and time in UTC and duration;
//   - the wafer (blue-grey disc, dark edge) with its orientation mark, a
//     notch or a flat where Geometry.Mark says (DefaultMark when unknown),
//     labelled; one die per site, centred on the site, one die pitch in
//     size, machine +X to the right and +Y up: done dies filled by defect
//     count (0 light green, 1–2 yellow, 3–5 orange, more than 5 red, the
//     count written in the die when it fits), failed dies violet with a
//     black cross, pending dies white with a dashed outline; the reference
//     die framed in blue (3 px); +X/+Y arrows at the bottom left, a scale
//     bar at the bottom right;
//   - a legend with the number of dies in each class, and a line with the
//     wafer diameter, die pitch and mark (saying when it is assumed).
//
// Missing geometry is estimated from the sites: the pitch from the smallest
// spacing of site centres, the extent from their bounding box; without a
// diameter no disc or mark is drawn. It is safe for concurrent use; it
// fails only if the embedded fonts cannot be loaded.
func RenderWaferMap(run Run) (image.Image, error) {
	img, _, err := renderWaferMap(run)
	if err != nil {
		return nil, err
	}
	return img, nil
}

// writeWaferMap renders run's wafer map and writes it to wafermap.png in
// dir (the run directory) atomically.
func (s *Store) writeWaferMap(dir string, run Run) error {
	img, err := RenderWaferMap(run)
	if err != nil {
		return fmt.Errorf("results: wafer map of %s: %w", run.ID, err)
	}
	enc := png.Encoder{CompressionLevel: png.BestSpeed}
	return s.writeFile(filepath.Join(dir, "wafermap.png"), func(w io.Writer) error { return enc.Encode(w, img) })
}

// mapLayout says where renderWaferMap put things, for the tests.
type mapLayout struct {
	header    image.Rectangle             // the title block
	rows      []image.Rectangle           // its text rows, top to bottom
	area      image.Rectangle             // the map square
	t         mapTransform                // machine mm → pixels in area
	swatches  [numClasses]image.Rectangle // legend swatches
	refSwatch image.Rectangle             // legend swatch of the reference die (the die, inside its frame)
	mark      *OrientationMark            // the mark drawn (nil: no wafer disc)
	markLabel image.Rectangle             // where its label was written
	badge     image.Rectangle             // the outcome badge
	scaleMM   float64                     // the scale bar's length in mm
	scaleBar  image.Rectangle             // the bar (its 2 px line, without the end ticks)
}

// mapCanvas is one map being drawn.
type mapCanvas struct {
	img   *image.RGBA
	faces mapFaces
}

func renderWaferMap(run Run) (*image.RGBA, mapLayout, error) {
	faces, err := newMapFaces()
	if err != nil {
		return nil, mapLayout{}, err
	}
	c := &mapCanvas{img: image.NewRGBA(image.Rect(0, 0, mapWidth, mapHeight)), faces: faces}
	c.fill(c.img.Rect, colBackground)

	var l mapLayout
	var count [numClasses]int
	for _, s := range run.Sites {
		count[classOf(s)]++
	}
	l.header = image.Rect(0, 0, mapWidth, headerH)
	l.rows, l.badge = c.titleBlock(run, count)
	l.area = image.Rect(0, headerH, mapWidth, headerH+mapSize)
	l.t = newMapTransform(run, l.area)

	if l.t.radius > 0 {
		m := DefaultMark()
		if run.Geometry.Mark != nil {
			m = *run.Geometry.Mark
		}
		l.mark = &m
		c.wafer(l.t, m)
		l.markLabel = c.markLabel(l.t, m)
	}
	for _, s := range run.Sites {
		c.die(l.t.dieRect(s.XMM, s.YMM).Intersect(l.area), classOf(s), s.Defects)
	}
	if l.mark != nil {
		c.markOverDies(l.t, *l.mark)
	}
	if ref := run.Geometry.Reference; ref != nil {
		c.referenceFrame(l.t.dieRect(ref.At.X.Millimetres(), ref.At.Y.Millimetres()).Intersect(l.area))
	}
	c.axes(l.area)
	l.scaleMM, l.scaleBar = c.scaleBar(l.t, l.area)
	l.swatches, l.refSwatch = c.legend(run, count, l.mark, image.Rect(0, l.area.Max.Y, mapWidth, mapHeight))
	return c.img, l, nil
}

// titleBlock writes the run's identity and outcome and returns the text
// rows' rectangles and the badge's.
func (c *mapCanvas) titleBlock(run Run, count [numClasses]int) (rows []image.Rectangle, br image.Rectangle) {
	f := c.faces

	// Outcome badge at the right, then the title in the room left.
	state := string(run.State)
	if state == "" {
		state = "unknown"
	}
	badge := strings.ToUpper(state)
	bw := c.measure(f.bold, badge) + 20
	br = image.Rect(mapWidth-textLeft-bw, 12, mapWidth-textLeft, 40)
	c.fill(br, stateColor(run.State))
	c.text(f.bold, br.Min.X+10, 32, badge, colBackground)
	title := "Run " + clean(run.ID)
	rows = append(rows, c.text(f.title, textLeft, 33, c.fit(f.title, title, br.Min.X-12-textLeft), colInk))

	done, failed, pending := count[classClean]+count[classFew]+count[classSeveral]+count[classMany], count[classFailed], count[classPending]
	defects := 0
	for _, s := range run.Sites {
		if s.Status == SiteDone && s.Defects > 0 {
			defects += s.Defects
		}
	}
	recipe := clean(run.Recipe)
	if run.RecipeFile != "" {
		recipe += "   (" + clean(run.RecipeFile) + ")"
	}
	outcome := state
	if run.State != Completed {
		if r := clean(run.Reason); r != "" {
			outcome += " — " + r
		}
		// A canceled run's error only repeats the stop; a failed or aborted
		// run's says what went wrong, unless the reason already does.
		if e := clean(run.Error); (run.State == Failed || run.State == Aborted) && e != "" && !strings.Contains(clean(run.Reason), e) {
			outcome += " — error: " + e
		}
	}
	sites := fmt.Sprintf("%s of %s done, %s failed, %s pending", thousands(done), thousands(len(run.Sites)), thousands(failed), thousands(pending))
	started, duration := "unknown", "unknown"
	if !run.StartedAt.IsZero() {
		started = run.StartedAt.UTC().Format("2006-01-02 15:04:05") + " UTC"
		switch {
		case run.State == Interrupted:
			// ended_at is when the next start found it, not when it stopped.
			duration = "unknown (interrupted)"
		case run.EndedAt != nil:
			duration = formatDuration(run.EndedAt.Sub(run.StartedAt))
		default:
			duration = "not ended"
		}
	}
	lines := [][2]string{
		{"Recipe", recipe},
		{"Outcome", outcome},
		{"Sites", sites},
		{"Defects", fmt.Sprintf("%s on %s of the %s done dies", thousands(defects), thousands(done-count[classClean]), thousands(done))},
		{"Started", started},
	}
	y := 56
	for _, kv := range lines {
		c.text(f.bold, textLeft, y, kv[0], colInk)
		rows = append(rows, c.text(f.regular, valueLeft, y, c.fit(f.regular, kv[1], mapWidth-textLeft-valueLeft), colInk))
		y += 19
	}
	// Duration beside the start.
	y -= 19
	x := rows[len(rows)-1].Max.X + 32
	x = c.text(f.bold, x, y, "Duration", colInk).Max.X + 10
	rows[len(rows)-1] = rows[len(rows)-1].Union(c.text(f.regular, x, y, duration, colInk))
	c.fill(image.Rect(textLeft, headerH-5, mapWidth-textLeft, headerH-4), colRule)
	return rows, br
}

// formatDuration writes d to the tenth of a second below a minute, to the
// second above.
func formatDuration(d time.Duration) string {
	if d < 0 {
		return "unknown"
	}
	if d < time.Minute {
		return strconv.FormatFloat(d.Seconds(), 'f', 1, 64) + " s"
	}
	return d.Round(time.Second).String()
}

// thousands writes n with comma separators: 3,009.
func thousands(n int) string {
	s := strconv.Itoa(n)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	if neg {
		s = "-" + s
	}
	return s
}

// clean replaces control characters (newlines in an error) with spaces.
func clean(s string) string {
	return strings.TrimSpace(strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s))
}

// wafer draws the disc with its orientation mark: a dark edge 1.5 px wide
// around the blue-grey wafer, anti-aliased.
func (c *mapCanvas) wafer(t mapTransform, m OrientationMark) {
	cx, cy := t.pixel(t.cx, t.cy)
	r := t.radius * t.scale
	c.polygon(waferOutline(cx, cy, r, t, m, 0), colWaferEdge)
	c.polygon(waferOutline(cx, cy, r, t, m, 1.5), colWafer)
}

// Notch and flat sizes. A notch is a 90° V, 1 mm deep (SEMI M1), drawn at
// least notchMinPx deep so that it shows on a 300 mm wafer.
const (
	notchDepthMM = 1.0
	notchMinPx   = 12.0
)

// flatLength returns the primary flat's length in mm for a wafer of
// diameter d mm: SEMI M1's 32.5, 42.5 and 57.5 mm for 100, 125 and 150 mm
// wafers, a third of the diameter otherwise.
func flatLength(d float64) float64 {
	switch math.Round(d) {
	case 100:
		return 32.5
	case 125:
		return 42.5
	case 150:
		return 57.5
	}
	return d / 3
}

// notchDepthPx returns the drawn depth of a notch, in pixels.
func notchDepthPx(t mapTransform) float64 { return math.Max(notchDepthMM*t.scale, notchMinPx) }

// flatDistancePx returns the distance from the wafer centre to the flat,
// in pixels.
func flatDistancePx(t mapTransform) float64 {
	r := t.radius * t.scale
	half := flatLength(2*t.radius) * t.scale / 2
	return math.Sqrt(math.Max(r*r-half*half, 0))
}

// waferOutline returns the outline of the wafer with its flat, if it has
// one, inset by inset pixels, as a polygon in picture pixels around centre
// (cx, cy) of radius r pixels. A notch is drawn over it by markOverDies.
func waferOutline(cx, cy, r float64, t mapTransform, m OrientationMark, inset float64) [][2]float64 {
	phi := m.Direction * math.Pi / 180
	rr := r - inset
	a := 0.0 // the arc runs counter-clockwise from phi+a to phi+2π-a
	if m.Kind == MarkFlat {
		a = math.Acos(math.Min((flatDistancePx(t)-inset)/rr, 1)) // the chord closes the polygon
	}
	n := max(int(rr*(2*math.Pi-2*a)/2), 16) // a vertex every 2 px
	pts := make([][2]float64, 0, n+1)
	for i := 0; i <= n; i++ {
		b := phi + a + (2*math.Pi-2*a)*float64(i)/float64(n)
		pts = append(pts, [2]float64{cx + rr*math.Cos(b), cy - rr*math.Sin(b)})
	}
	return pts
}

// markOverDies draws the mark over the dies, which a recipe's grid may
// place across it: a notch (a 90° V) is cut out of whatever lies there, as
// it is small; a flat is drawn as a line, and dies beyond it stay visible.
func (c *mapCanvas) markOverDies(t mapTransform, m OrientationMark) {
	cx, cy := t.pixel(t.cx, t.cy)
	r := t.radius * t.scale
	phi := m.Direction * math.Pi / 180
	ux, uy := math.Cos(phi), -math.Sin(phi) // outward, in picture pixels
	vx, vy := -uy, ux                       // along the edge
	if m.Kind == MarkFlat {
		h := flatDistancePx(t)
		half := math.Sqrt(math.Max(r*r-h*h, 0))
		p := [2]float64{cx + h*ux + half*vx, cy + h*uy + half*vy}
		q := [2]float64{cx + h*ux - half*vx, cy + h*uy - half*vy}
		c.line(p, q, 1.5, colWaferEdge)
		return
	}
	d := notchDepthPx(t)
	tip := [2]float64{cx + (r-d)*ux, cy + (r-d)*uy}
	side := func(k, sign float64) [2]float64 { // k along the side from the tip
		return [2]float64{tip[0] + k*(ux+sign*vx), tip[1] + k*(uy+sign*vy)}
	}
	c.polygon([][2]float64{side(d+3, 1), tip, side(d+3, -1)}, colBackground)
	// Where the sides meet the edge: |tip + k(u±v) - centre| = r.
	k := (-(r - d) + math.Sqrt(2*r*r-(r-d)*(r-d))) / 2
	c.line(tip, side(k, 1), 1.5, colWaferEdge)
	c.line(tip, side(k, -1), 1.5, colWaferEdge)
}

// markLabel writes "notch" or "flat" outside the wafer beside the mark and
// returns where.
func (c *mapCanvas) markLabel(t mapTransform, m OrientationMark) image.Rectangle {
	cx, cy := t.pixel(t.cx, t.cy)
	phi := m.Direction * math.Pi / 180
	ux, uy := math.Cos(phi), -math.Sin(phi)
	label := string(m.Kind)
	w, h := float64(c.measure(c.faces.small, label)), float64(c.faces.smallHeight)
	// The box's centre sits far enough out that the box clears the edge
	// (the flat, for a flat).
	edge := t.radius * t.scale
	if m.Kind == MarkFlat {
		edge = flatDistancePx(t)
	}
	d := edge + 6 + math.Abs(ux)*w/2 + math.Abs(uy)*h/2
	x, y := cx+d*ux-w/2, cy+d*uy-h/2
	return c.text(c.faces.small, int(math.Round(x)), int(math.Round(y))+c.faces.smallAscent, label, colInk)
}

// die draws one die of class k in r, with its defect count when it fits.
func (c *mapCanvas) die(r image.Rectangle, k dieClass, defects int) {
	if r.Empty() {
		return
	}
	c.fill(r, classFill[k])
	outlined := r.Dx() >= 4 && r.Dy() >= 4
	switch {
	case k == classPending && outlined:
		c.dashedRect(r, colDieEdge)
	case outlined:
		c.outline(r, colDieEdge, 1)
	}
	if k == classFailed && r.Dx() >= 6 && r.Dy() >= 6 {
		c.cross(r.Inset(2), colInk, 1+min(r.Dx(), r.Dy())/24)
	}
	if k != classFailed && k != classPending && defects > 0 {
		label := strconv.Itoa(defects)
		w := c.measure(c.faces.count, label)
		if w+4 <= r.Dx() && c.faces.smallHeight+4 <= r.Dy() {
			ink := colInk
			if k == classMany {
				ink = colBackground
			}
			x := r.Min.X + (r.Dx()-w)/2
			y := r.Min.Y + (r.Dy()-c.faces.smallHeight)/2 + c.faces.smallAscent
			c.text(c.faces.count, x, y, label, ink)
		}
	}
}

// referenceFrame draws the 3 px frame just outside the reference die r.
func (c *mapCanvas) referenceFrame(r image.Rectangle) {
	if r.Empty() {
		return
	}
	c.outline(r.Inset(-3), colReference, 3)
}

// axes draws +X and +Y arrows at the bottom left of area.
func (c *mapCanvas) axes(area image.Rectangle) {
	const n = 52
	ox, oy := area.Min.X+20, area.Max.Y-20
	f := c.faces.small
	c.fill(image.Rect(ox-1, oy-1, ox+n-6, oy+1), colInk)
	c.polygon([][2]float64{{float64(ox + n), float64(oy)}, {float64(ox + n - 10), float64(oy) - 5}, {float64(ox + n - 10), float64(oy) + 5}}, colInk)
	c.text(f, ox+n+4, oy+c.faces.smallAscent/2, "+X", colInk)
	c.fill(image.Rect(ox-1, oy-n+6, ox+1, oy+1), colInk)
	c.polygon([][2]float64{{float64(ox), float64(oy - n)}, {float64(ox) - 5, float64(oy - n + 10)}, {float64(ox) + 5, float64(oy - n + 10)}}, colInk)
	c.text(f, ox-c.measure(f, "+Y")/2, oy-n-4, "+Y", colInk)
}

// scaleBar draws a bar of a round length in mm (1, 2 or 5 times a power of
// ten) at the bottom right of area, and returns the length and the bar.
func (c *mapCanvas) scaleBar(t mapTransform, area image.Rectangle) (float64, image.Rectangle) {
	target := float64(area.Dx()) / 6 / t.scale // mm for about a sixth of the width
	mm := 1.0
	for _, k := range []float64{1, 2, 5} {
		for e := -2; e <= 4; e++ {
			if v := k * math.Pow10(e); v <= target && v > mm {
				mm = v
			}
		}
	}
	px := int(math.Round(mm * t.scale))
	x1, y := area.Max.X-20, area.Max.Y-20
	x0 := x1 - px
	bar := image.Rect(x0, y-1, x1, y+1)
	c.fill(bar, colInk)
	c.fill(image.Rect(x0, y-6, x0+2, y+6), colInk)
	c.fill(image.Rect(x1-2, y-6, x1, y+6), colInk)
	label := strconv.FormatFloat(mm, 'g', -1, 64) + " mm"
	c.text(c.faces.small, x0+(px-c.measure(c.faces.small, label))/2, y-8, label, colInk)
	return mm, bar
}

// legend draws the swatches with their counts and the geometry line in r
// and returns the swatches' rectangles.
func (c *mapCanvas) legend(run Run, count [numClasses]int, mark *OrientationMark, r image.Rectangle) (sw [numClasses]image.Rectangle, ref image.Rectangle) {
	f := c.faces
	c.fill(image.Rect(textLeft, r.Min.Y+4, mapWidth-textLeft, r.Min.Y+5), colRule)
	x, y := textLeft, r.Min.Y+14
	// item draws a swatch, pad pixels of frame around it, and its label.
	item := func(label string, pad int, draw func(image.Rectangle)) image.Rectangle {
		w := 2*pad + swatch + 6 + c.measure(f.regular, label) + 22
		if x+w > mapWidth-textLeft {
			x, y = textLeft, y+24
		}
		s := image.Rect(x+pad, y, x+pad+swatch, y+swatch)
		draw(s)
		c.text(f.regular, s.Max.X+pad+6, y+13, label, colInk)
		x += w
		return s
	}
	for k := range numClasses {
		sw[k] = item(fmt.Sprintf("%s (%s)", classLabel[k], thousands(count[k])), 0, func(s image.Rectangle) { c.die(s, k, 0) })
	}
	refLabel := "reference die (not recorded)"
	if g := run.Geometry.Reference; g != nil {
		refLabel = fmt.Sprintf("reference die %+d,%+d", g.Die[0], g.Die[1])
	}
	ref = item(refLabel, 3, func(s image.Rectangle) {
		c.fill(s, colWafer)
		c.outline(s, colDieEdge, 1)
		c.referenceFrame(s)
	})

	g := run.Geometry
	var parts []string
	if d := g.WaferDiameter.Millimetres(); d > 0 {
		parts = append(parts, "Wafer Ø "+mmString(d)+" mm")
	}
	if px, py := g.DiePitch.X.Millimetres(), g.DiePitch.Y.Millimetres(); px > 0 && py > 0 {
		parts = append(parts, "die pitch "+mmString(px)+" × "+mmString(py)+" mm")
	}
	if mark != nil {
		s := string(mark.Kind) + " at " + directionName(mark.Direction)
		if g.Mark == nil {
			s += " (assumed, not recorded)"
		}
		parts = append(parts, s)
	}
	parts = append(parts, "+X, +Y: machine axes")
	line := strings.Join(parts, "  ·  ")
	c.text(f.regular, textLeft, r.Max.Y-14, c.fit(f.regular, line, mapWidth-2*textLeft), colMuted)
	return sw, ref
}

// mmString writes a length in mm without trailing zeros: 4.75, 10.
func mmString(v float64) string { return strconv.FormatFloat(math.Round(v*1000)/1000, 'f', -1, 64) }

// directionName names a direction in degrees from +X: -Y, +X, or 45°.
func directionName(deg float64) string {
	d := math.Mod(deg, 360)
	if d < 0 {
		d += 360
	}
	switch d {
	case 0:
		return "+X"
	case 90:
		return "+Y"
	case 180:
		return "−X"
	case 270:
		return "−Y"
	}
	return strconv.FormatFloat(d, 'f', -1, 64) + "° from +X"
}

// mapTransform maps machine millimetres to picture pixels.
type mapTransform struct {
	ox, oy         float64 // pixel of the map centre
	cx, cy         float64 // map centre, mm
	scale          float64 // pixels per mm
	pitchX, pitchY float64 // die size, mm
	radius         float64 // wafer radius, mm (0: unknown)
}

// newMapTransform fits the wafer (or, without a diameter, the sites) into
// area, mapMargin from its sides.
func newMapTransform(run Run, area image.Rectangle) mapTransform {
	g := run.Geometry
	t := mapTransform{
		ox:     float64(area.Min.X+area.Max.X) / 2,
		oy:     float64(area.Min.Y+area.Max.Y) / 2,
		radius: g.WaferDiameter.Millimetres() / 2,
		pitchX: g.DiePitch.X.Millimetres(),
		pitchY: g.DiePitch.Y.Millimetres(),
	}
	if t.pitchX <= 0 {
		t.pitchX = minSpacing(run.Sites, func(s Site) float64 { return s.XMM })
	}
	if t.pitchY <= 0 {
		t.pitchY = minSpacing(run.Sites, func(s Site) float64 { return s.YMM })
	}
	switch {
	case t.pitchX <= 0 && t.pitchY <= 0:
		t.pitchX = math.Max(t.radius/5, 1)
		t.pitchY = t.pitchX
	case t.pitchX <= 0:
		t.pitchX = t.pitchY
	case t.pitchY <= 0:
		t.pitchY = t.pitchX
	}

	if t.radius > 0 || len(run.Sites) == 0 {
		t.cx, t.cy = g.WaferCenter.X.Millimetres(), g.WaferCenter.Y.Millimetres()
	} else {
		minX, maxX := math.Inf(1), math.Inf(-1)
		minY, maxY := math.Inf(1), math.Inf(-1)
		for _, s := range run.Sites {
			minX, maxX = math.Min(minX, s.XMM), math.Max(maxX, s.XMM)
			minY, maxY = math.Min(minY, s.YMM), math.Max(maxY, s.YMM)
		}
		t.cx, t.cy = (minX+maxX)/2, (minY+maxY)/2
	}

	half := t.radius
	for _, s := range run.Sites {
		half = math.Max(half, math.Abs(s.XMM-t.cx)+t.pitchX/2)
		half = math.Max(half, math.Abs(s.YMM-t.cy)+t.pitchY/2)
	}
	if half <= 0 || math.IsInf(half, 0) || math.IsNaN(half) {
		half = 1
	}
	t.scale = (float64(min(area.Dx(), area.Dy()))/2 - mapMargin) / half
	return t
}

// pixel returns the picture position of machine point (x, y) mm.
func (t mapTransform) pixel(x, y float64) (float64, float64) {
	return t.ox + (x-t.cx)*t.scale, t.oy - (y-t.cy)*t.scale
}

// dieRect returns the pixel rectangle of the die centred on (x, y) mm.
func (t mapTransform) dieRect(x, y float64) image.Rectangle {
	px, py := t.pixel(x, y)
	w, h := t.pitchX*t.scale/2, t.pitchY*t.scale/2
	return image.Rect(int(math.Round(px-w)), int(math.Round(py-h)), int(math.Round(px+w)), int(math.Round(py+h)))
}

// minSpacing returns the smallest positive distance between distinct
// coordinates of the sites, or 0.
func minSpacing(sites []Site, coord func(Site) float64) float64 {
	v := make([]float64, 0, len(sites))
	for _, s := range sites {
		v = append(v, coord(s))
	}
	sort.Float64s(v)
	best := 0.0
	for i := 1; i < len(v); i++ {
		if d := v[i] - v[i-1]; d > 1e-3 && (best == 0 || d < best) {
			best = d
		}
	}
	return best
}

// fill paints r (clipped to the picture) with col.
func (c *mapCanvas) fill(r image.Rectangle, col color.RGBA) {
	draw.Draw(c.img, r, image.NewUniform(col), image.Point{}, draw.Src)
}

// outline paints a frame w pixels wide just inside r.
func (c *mapCanvas) outline(r image.Rectangle, col color.RGBA, w int) {
	c.fill(image.Rect(r.Min.X, r.Min.Y, r.Max.X, r.Min.Y+w), col)
	c.fill(image.Rect(r.Min.X, r.Max.Y-w, r.Max.X, r.Max.Y), col)
	c.fill(image.Rect(r.Min.X, r.Min.Y, r.Min.X+w, r.Max.Y), col)
	c.fill(image.Rect(r.Max.X-w, r.Min.Y, r.Max.X, r.Max.Y), col)
}

// dashOn reports whether pixel i along an edge of a dashed outline is
// painted: 3 on, 2 off, starting at each corner.
func dashOn(i int) bool { return i%5 < 3 }

// dashedRect paints a dashed 1 px frame just inside r.
func (c *mapCanvas) dashedRect(r image.Rectangle, col color.RGBA) {
	clip := c.img.Rect
	set := func(x, y int) {
		if (image.Point{x, y}).In(clip) {
			c.img.SetRGBA(x, y, col)
		}
	}
	for i := 0; i < r.Dx(); i++ {
		if dashOn(i) {
			set(r.Min.X+i, r.Min.Y)
			set(r.Max.X-1-i, r.Max.Y-1)
		}
	}
	for i := 0; i < r.Dy(); i++ {
		if dashOn(i) {
			set(r.Min.X, r.Max.Y-1-i)
			set(r.Max.X-1, r.Min.Y+i)
		}
	}
}

// cross paints both diagonals of r, w pixels wide.
func (c *mapCanvas) cross(r image.Rectangle, col color.RGBA, w int) {
	if r.Empty() {
		return
	}
	dx, dy := r.Dx()-1, r.Dy()-1
	n := max(dx, dy, 1)
	for i := 0; i <= n; i++ {
		x := r.Min.X + i*dx/n
		y := r.Min.Y + i*dy/n
		for k := 0; k < w; k++ {
			for _, p := range []image.Point{{x + k - w/2, y}, {x + k - w/2, r.Max.Y - 1 - (y - r.Min.Y)}} {
				if p.In(r) {
					c.img.SetRGBA(p.X, p.Y, col)
				}
			}
		}
	}
}

// line draws a segment from p to q, w pixels wide, anti-aliased.
func (c *mapCanvas) line(p, q [2]float64, w float64, col color.RGBA) {
	dx, dy := q[0]-p[0], q[1]-p[1]
	n := math.Hypot(dx, dy)
	if n == 0 {
		return
	}
	nx, ny := -dy/n*w/2, dx/n*w/2
	c.polygon([][2]float64{{p[0] + nx, p[1] + ny}, {q[0] + nx, q[1] + ny}, {q[0] - nx, q[1] - ny}, {p[0] - nx, p[1] - ny}}, col)
}

// polygon fills the closed polygon pts (picture pixels), anti-aliased.
func (c *mapCanvas) polygon(pts [][2]float64, col color.RGBA) {
	if len(pts) < 3 {
		return
	}
	minX, minY, maxX, maxY := math.Inf(1), math.Inf(1), math.Inf(-1), math.Inf(-1)
	for _, p := range pts {
		minX, maxX = math.Min(minX, p[0]), math.Max(maxX, p[0])
		minY, maxY = math.Min(minY, p[1]), math.Max(maxY, p[1])
	}
	b := image.Rect(int(math.Floor(minX)), int(math.Floor(minY)), int(math.Ceil(maxX))+1, int(math.Ceil(maxY))+1)
	clipped := b.Intersect(c.img.Rect)
	if clipped.Empty() {
		return
	}
	z := vector.NewRasterizer(b.Dx(), b.Dy())
	for i, p := range pts {
		x, y := float32(p[0]-float64(b.Min.X)), float32(p[1]-float64(b.Min.Y))
		if i == 0 {
			z.MoveTo(x, y)
		} else {
			z.LineTo(x, y)
		}
	}
	z.ClosePath()
	if clipped == b {
		z.Draw(c.img, b, image.NewUniform(col), image.Point{})
		return
	}
	// The rasterizer draws whole: draw into a scratch image, then copy the
	// visible part.
	tmp := image.NewRGBA(b)
	draw.Draw(tmp, clipped, c.img, clipped.Min, draw.Src)
	z.Draw(tmp, b, image.NewUniform(col), image.Point{})
	draw.Draw(c.img, clipped, tmp, clipped.Min, draw.Src)
}

// text writes s with its baseline at y, starting at x, and returns the
// rectangle it covers (font ascent to descent).
func (c *mapCanvas) text(f font.Face, x, y int, s string, col color.RGBA) image.Rectangle {
	d := font.Drawer{Dst: c.img, Src: image.NewUniform(col), Face: f, Dot: fixed.P(x, y)}
	d.DrawString(s)
	m := f.Metrics()
	return image.Rect(x, y-m.Ascent.Ceil(), d.Dot.X.Ceil(), y+m.Descent.Ceil())
}

// measure returns the width of s in f, in pixels.
func (c *mapCanvas) measure(f font.Face, s string) int { return font.MeasureString(f, s).Ceil() }

// fit returns s, shortened with an ellipsis if needed to fit w pixels in f.
// It finds the longest prefix that fits by bisection: a run's error can be
// kilobytes long, and measuring every prefix in turn took a second.
func (c *mapCanvas) fit(f font.Face, s string, w int) string {
	if c.measure(f, s) <= w {
		return s
	}
	r := []rune(s)
	n := sort.Search(len(r)+1, func(n int) bool { return c.measure(f, string(r[:n])+"…") > w }) - 1
	return strings.TrimRight(string(r[:max(n, 0)]), " ") + "…"
}
