package results

import (
	"image"
	"image/color"
	"image/png"
	"io"
	"math"
	"path/filepath"
	"sort"
)

// Wafer map layout, in pixels: a square map above a legend strip.
const (
	mapSize   = 600
	mapMargin = 12
	legendH   = 30
)

// Palette indexes of the wafer map.
const (
	cBackground = iota
	cWafer
	cWaferEdge
	cDieEdge
	cPending
	cClean   // 0 defects
	cFew     // 1–2
	cSeveral // 3–5
	cMany    // more than 5
	cFailed  // site failed
	cInk     // marks and legend text
)

var mapPalette = color.Palette{
	cBackground: color.RGBA{255, 255, 255, 255},
	cWafer:      color.RGBA{236, 236, 236, 255},
	cWaferEdge:  color.RGBA{70, 70, 70, 255},
	cDieEdge:    color.RGBA{40, 40, 40, 255},
	cPending:    color.RGBA{150, 150, 150, 255},
	cClean:      color.RGBA{0, 170, 0, 255},
	cFew:        color.RGBA{240, 220, 0, 255},
	cSeveral:    color.RGBA{255, 140, 0, 255},
	cMany:       color.RGBA{220, 0, 0, 255},
	cFailed:     color.RGBA{120, 60, 170, 255},
	cInk:        color.RGBA{0, 0, 0, 255},
}

// defectColor returns the palette index for a done site with n defects.
func defectColor(n int) uint8 {
	switch {
	case n <= 0:
		return cClean
	case n <= 2:
		return cFew
	case n <= 5:
		return cSeveral
	}
	return cMany
}

// RenderWaferMap draws the wafer map of run: a 600×630 paletted image with
// the wafer disc (light grey, dark outline) and one die rectangle per site,
// centred on the site and one die pitch in size, machine +X to the right
// and +Y up. Done sites are filled by defect count: 0 green, 1–2 yellow,
// 3–5 orange, more than 5 red. Failed sites are violet with a black cross;
// pending (unvisited) sites are a grey outline only. A legend strip runs
// along the bottom.
//
// Missing geometry is estimated from the sites: the pitch from the smallest
// spacing of site centres, the extent from their bounding box.
func RenderWaferMap(run Run) image.Image {
	img := image.NewPaletted(image.Rect(0, 0, mapSize, mapSize+legendH), mapPalette)
	area := image.Rect(0, 0, mapSize, mapSize)
	t := newMapTransform(run)

	if r := t.radius * t.scale; r > 0 {
		cx, cy := t.pixel(t.cx, t.cy)
		for y := area.Min.Y; y < area.Max.Y; y++ {
			for x := area.Min.X; x < area.Max.X; x++ {
				dx, dy := float64(x)+0.5-cx, float64(y)+0.5-cy
				d := math.Sqrt(dx*dx + dy*dy)
				switch {
				case d <= r-1.5:
					img.SetColorIndex(x, y, cWafer)
				case d <= r+0.5:
					img.SetColorIndex(x, y, cWaferEdge)
				}
			}
		}
	}

	for _, s := range run.Sites {
		die := t.dieRect(s.XMM, s.YMM).Intersect(area)
		if die.Empty() {
			continue
		}
		small := die.Dx() < 4 || die.Dy() < 4
		inner := die.Inset(1)
		switch s.Status {
		case SiteDone:
			fillRect(img, die, defectColor(s.Defects))
		case SiteFailed:
			fillRect(img, die, cFailed)
			if !small {
				drawCross(img, inner.Inset(1), cInk)
			}
		default: // pending or unknown
			if small {
				fillRect(img, die, cPending)
			} else {
				outlineRect(img, die, cPending)
			}
			continue
		}
		if !small {
			outlineRect(img, die, cDieEdge)
		}
	}

	drawLegend(img, image.Rect(0, mapSize, mapSize, mapSize+legendH))
	return img
}

// writeWaferMap renders run's wafer map and writes it to wafermap.png in
// dir (the run directory) atomically.
func (s *Store) writeWaferMap(dir string, run Run) error {
	img := RenderWaferMap(run)
	enc := png.Encoder{CompressionLevel: png.BestSpeed}
	return s.writeFile(filepath.Join(dir, "wafermap.png"), func(w io.Writer) error { return enc.Encode(w, img) })
}

// mapTransform maps machine millimetres to map pixels.
type mapTransform struct {
	cx, cy         float64 // map centre, mm
	scale          float64 // pixels per mm
	pitchX, pitchY float64 // die size, mm
	radius         float64 // wafer radius, mm (0: unknown)
}

func newMapTransform(run Run) mapTransform {
	g := run.Geometry
	t := mapTransform{
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
	t.scale = (mapSize/2 - mapMargin) / half
	return t
}

// pixel returns the map position of machine point (x, y) mm.
func (t mapTransform) pixel(x, y float64) (float64, float64) {
	return mapSize/2 + (x-t.cx)*t.scale, mapSize/2 - (y-t.cy)*t.scale
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

func fillRect(img *image.Paletted, r image.Rectangle, c uint8) {
	r = r.Intersect(img.Rect)
	for y := r.Min.Y; y < r.Max.Y; y++ {
		row := img.Pix[img.PixOffset(r.Min.X, y):img.PixOffset(r.Max.X, y)]
		for i := range row {
			row[i] = c
		}
	}
}

func outlineRect(img *image.Paletted, r image.Rectangle, c uint8) {
	fillRect(img, image.Rect(r.Min.X, r.Min.Y, r.Max.X, r.Min.Y+1), c)
	fillRect(img, image.Rect(r.Min.X, r.Max.Y-1, r.Max.X, r.Max.Y), c)
	fillRect(img, image.Rect(r.Min.X, r.Min.Y, r.Min.X+1, r.Max.Y), c)
	fillRect(img, image.Rect(r.Max.X-1, r.Min.Y, r.Max.X, r.Max.Y), c)
}

// drawCross draws both diagonals of r.
func drawCross(img *image.Paletted, r image.Rectangle, c uint8) {
	if r.Empty() {
		return
	}
	w, h := r.Dx()-1, r.Dy()-1
	n := max(w, h)
	for i := 0; i <= n; i++ {
		x := r.Min.X + i*w/max(n, 1)
		y := r.Min.Y + i*h/max(n, 1)
		img.SetColorIndex(x, y, c)
		img.SetColorIndex(x, r.Max.Y-1-(y-r.Min.Y), c)
	}
}

// glyphs is a 3×5 pixel font for the legend.
var glyphs = map[rune][5]string{
	'0': {"111", "101", "101", "101", "111"},
	'1': {"010", "110", "010", "010", "111"},
	'2': {"111", "001", "111", "100", "111"},
	'3': {"111", "001", "111", "001", "111"},
	'5': {"111", "100", "111", "001", "111"},
	'-': {"000", "000", "111", "000", "000"},
	'>': {"100", "010", "001", "010", "100"},
	'A': {"010", "101", "111", "101", "101"},
	'D': {"110", "101", "101", "101", "110"},
	'E': {"111", "100", "110", "100", "111"},
	'F': {"111", "100", "110", "100", "100"},
	'I': {"111", "010", "010", "010", "111"},
	'L': {"100", "100", "100", "100", "111"},
	'N': {"101", "111", "111", "101", "101"},
	'P': {"110", "101", "110", "100", "100"},
}

// drawText draws s at (x, y) (top left) with glyphs scaled by 2; it returns
// the x after the text.
func drawText(img *image.Paletted, x, y int, s string, c uint8) int {
	const k = 2
	for _, ch := range s {
		g, ok := glyphs[ch]
		if ok {
			for row, bits := range g {
				for col, b := range bits {
					if b == '1' {
						fillRect(img, image.Rect(x+col*k, y+row*k, x+(col+1)*k, y+(row+1)*k), c)
					}
				}
			}
		}
		x += 4 * k
	}
	return x
}

func drawLegend(img *image.Paletted, r image.Rectangle) {
	items := []struct {
		c     uint8
		label string
	}{
		{cClean, "0"}, {cFew, "1-2"}, {cSeveral, "3-5"}, {cMany, ">5"}, {cFailed, "FAIL"}, {cPending, "PEND"},
	}
	x, y := r.Min.X+mapMargin, r.Min.Y+(r.Dy()-12)/2
	for _, it := range items {
		sw := image.Rect(x, y, x+12, y+12)
		if it.c == cPending {
			outlineRect(img, sw, cPending)
		} else {
			fillRect(img, sw, it.c)
			outlineRect(img, sw, cDieEdge)
		}
		x = drawText(img, x+18, y+1, it.label, cInk) + 16
	}
}
