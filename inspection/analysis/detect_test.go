package analysis

import (
	"cmp"
	"context"
	"errors"
	"image"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/waferd/waferd/camera"
)

// newFrame returns a w×h frame (stride w+pad) filled with grey.
func newFrame(w, h, pad int, grey byte) *camera.Frame {
	f := &camera.Frame{Width: w, Height: h, Stride: w + pad, Pix: make([]byte, (w+pad)*h)}
	for i := range f.Pix {
		f.Pix[i] = grey
	}
	return f
}

// pair returns a golden frame with a noisy texture and a copy of it.
func pair(t testing.TB, w, h, pad int, seed uint64) (frame, golden *camera.Frame) {
	if t != nil {
		t.Helper()
	}
	r := rand.New(rand.NewPCG(seed, 1))
	golden = newFrame(w, h, pad, 0)
	for y := range h {
		row := golden.Row(y)
		for x := range row {
			row[x] = byte(100 + r.IntN(60))
		}
	}
	frame = newFrame(w, h, pad, 0)
	copy(frame.Pix, golden.Pix)
	return frame, golden
}

// paint sets the listed pixels of f to golden + delta (clamped).
func paint(f, golden *camera.Frame, delta int, pts ...image.Point) {
	for _, p := range pts {
		v := int(golden.Row(p.Y)[p.X]) + delta
		f.Row(p.Y)[p.X] = byte(min(max(v, 0), 255))
	}
}

func rect(x0, y0, x1, y1 int) []image.Point {
	var pts []image.Point
	for y := y0; y < y1; y++ {
		for x := x0; x < x1; x++ {
			pts = append(pts, image.Pt(x, y))
		}
	}
	return pts
}

func detect(t *testing.T, d *Detector, f, g *camera.Frame) []Defect {
	t.Helper()
	got, err := d.Detect(context.Background(), f, g, nil)
	require.NoError(t, err)
	return got
}

func TestDetectSquare(t *testing.T) {
	f, g := pair(t, 64, 48, 0, 1)
	paint(f, g, 90, rect(10, 20, 14, 23)...)
	f.Row(21)[12] = byte(int(g.Row(21)[12]) - 70) // a dark pixel inside: peak is |diff|
	got := detect(t, &Detector{}, f, g)
	require.Len(t, got, 1)
	assert.Equal(t, Defect{X: 11.5, Y: 21, Box: image.Rect(10, 20, 14, 23), Area: 12, Peak: 90}, got[0])
}

func TestDetectDiagonalTouchIsOneComponent(t *testing.T) {
	f, g := pair(t, 40, 40, 0, 2)
	paint(f, g, 80, rect(5, 5, 8, 8)...)
	paint(f, g, -80, rect(8, 8, 11, 11)...) // touches only at the corner (7,7)-(8,8)
	paint(f, g, 80, rect(20, 10, 23, 13)...)
	paint(f, g, 80, rect(17, 13, 20, 16)...) // anti-diagonal corner (20,12)-(19,13)
	got := detect(t, &Detector{}, f, g)
	require.Len(t, got, 2)
	assert.Equal(t, image.Rect(5, 5, 11, 11), got[0].Box)
	assert.Equal(t, 18, got[0].Area)
	assert.InDelta(t, 7.5, got[0].X, 1e-9)
	assert.InDelta(t, 7.5, got[0].Y, 1e-9)
	assert.Equal(t, image.Rect(17, 10, 23, 16), got[1].Box)
	assert.Equal(t, 18, got[1].Area)
}

func TestDetectGapIsTwoComponents(t *testing.T) {
	f, g := pair(t, 40, 40, 0, 3)
	paint(f, g, 80, rect(5, 5, 8, 8)...)
	paint(f, g, 80, rect(9, 5, 12, 8)...)  // one column gap
	paint(f, g, 80, rect(5, 9, 12, 12)...) // one row gap
	got := detect(t, &Detector{}, f, g)
	assert.Len(t, got, 3)
}

func TestDetectShapesMergingAcrossRows(t *testing.T) {
	f, g := pair(t, 60, 60, 0, 4)
	// U: two arms that are separate runs for many rows, joined by the base
	// only at the bottom.
	paint(f, g, 80, rect(5, 5, 7, 20)...)
	paint(f, g, 80, rect(12, 5, 14, 20)...)
	paint(f, g, 80, rect(5, 20, 14, 22)...)
	// W: three arms joined by a base, the middle arm joining last.
	var w []image.Point
	w = append(w, rect(30, 30, 31, 40)...)
	w = append(w, rect(35, 30, 36, 41)...)
	w = append(w, rect(40, 30, 41, 41)...)
	w = append(w, rect(31, 40, 35, 41)...) // row 40: one run joining arms 1 and 2
	w = append(w, rect(36, 41, 40, 42)...) // row 41: one run joining both corners
	paint(f, g, -80, w...)
	got := detect(t, &Detector{}, f, g)
	require.Len(t, got, 2)
	assert.Equal(t, image.Rect(5, 5, 14, 22), got[0].Box)
	assert.Equal(t, 15*2*2+9*2, got[0].Area)
	assert.Equal(t, image.Rect(30, 30, 41, 42), got[1].Box)
	assert.Equal(t, len(w), got[1].Area)
}

func TestDetectBorders(t *testing.T) {
	const w, h = 50, 40
	f, g := pair(t, w, h, 7, 5)                 // stride > width: padding must be ignored
	paint(f, g, 100, rect(0, 0, 3, 3)...)       // top-left corner
	paint(f, g, 100, rect(w-3, 0, w, 3)...)     // top-right, runs to the row end
	paint(f, g, 100, rect(0, h-2, 4, h)...)     // bottom-left
	paint(f, g, 100, rect(w-4, h-2, w, h)...)   // bottom-right
	paint(f, g, 100, rect(20, 0, 30, 1)...)     // along the top edge
	paint(f, g, 100, rect(0, 15, 1, 25)...)     // along the left edge
	paint(f, g, 100, rect(w-1, 15, w, 25)...)   // along the right edge
	paint(f, g, 100, rect(0, h-1, w-5, h)...)   // full bottom row but the last 5 px, merges bottom-left
	paint(f, g, 100, rect(w-5, h-1, w-4, h)...) // closes the gap: one bottom component
	for y := range h {                          // padding differs wildly
		f.Pix[y*f.Stride+w] = 0
		g.Pix[y*g.Stride+w] = 255
	}
	got := detect(t, &Detector{}, f, g)
	boxes := make([]image.Rectangle, len(got))
	for i, d := range got {
		boxes[i] = d.Box
	}
	assert.ElementsMatch(t, []image.Rectangle{
		image.Rect(0, 0, 3, 3),
		image.Rect(w-3, 0, w, 3),
		image.Rect(20, 0, 30, 1),
		image.Rect(0, 15, 1, 25),
		image.Rect(w-1, 15, w, 25),
		image.Rect(0, h-2, w, h),
	}, boxes)
}

func TestDetectMinArea(t *testing.T) {
	f, g := pair(t, 40, 40, 0, 6)
	paint(f, g, 80, rect(2, 2, 7, 3)...)     // 5 px: dropped
	paint(f, g, 80, rect(2, 10, 8, 11)...)   // 6 px: kept
	paint(f, g, 80, image.Pt(20, 20))        // single pixel: dropped
	paint(f, g, 80, rect(30, 30, 32, 33)...) // 6 px: kept
	got := detect(t, &Detector{}, f, g)
	require.Len(t, got, 2)
	assert.Equal(t, 6, got[0].Area)
	assert.Equal(t, 6, got[1].Area)

	got = detect(t, &Detector{MinArea: 1}, f, g)
	assert.Len(t, got, 4)
	got = detect(t, &Detector{MinArea: 7}, f, g)
	assert.Empty(t, got)
}

func TestDetectThreshold(t *testing.T) {
	f, g := pair(t, 64, 64, 0, 7)
	r := rand.New(rand.NewPCG(7, 7))
	for y := range f.Height {
		row, grow := f.Row(y), g.Row(y)
		for x := range row {
			row[x] = byte(int(grow[x]) + r.IntN(81) - 40) // |noise| <= 40 = threshold
		}
	}
	assert.Empty(t, detect(t, &Detector{}, f, g), "noise up to the threshold is ignored")
	paint(f, g, 41, rect(10, 10, 13, 12)...)
	paint(f, g, -41, rect(40, 40, 43, 42)...)
	got := detect(t, &Detector{}, f, g)
	require.Len(t, got, 2)
	assert.Equal(t, 41, got[0].Peak)
	assert.Equal(t, 41, got[1].Peak)
	assert.Empty(t, detect(t, &Detector{Threshold: 41}, f, g))
}

func TestDetectSortedAndAppends(t *testing.T) {
	f, g := pair(t, 100, 100, 0, 8)
	paint(f, g, 80, rect(70, 10, 73, 13)...)
	paint(f, g, 80, rect(10, 50, 13, 53)...)
	paint(f, g, 80, rect(10, 10, 13, 13)...)
	paint(f, g, 80, rect(40, 80, 43, 83)...)
	prefix := []Defect{{Area: -1}}
	got, err := (&Detector{}).Detect(context.Background(), f, g, prefix)
	require.NoError(t, err)
	require.Len(t, got, 5)
	assert.Equal(t, -1, got[0].Area)
	var centres [][2]float64
	for _, d := range got[1:] {
		centres = append(centres, [2]float64{d.X, d.Y})
	}
	assert.Equal(t, [][2]float64{{11, 11}, {71, 11}, {11, 51}, {41, 81}}, centres)
}

// reference labels the mask with a flood fill, the obvious way.
func reference(f, g *camera.Frame, threshold, minArea int) []Defect {
	w, h := f.Width, f.Height
	mask := make([]bool, w*h)
	diff := make([]int, w*h)
	for y := range h {
		for x := range w {
			d := int(f.Row(y)[x]) - int(g.Row(y)[x])
			d = max(d, -d)
			diff[y*w+x] = d
			mask[y*w+x] = d > threshold
		}
	}
	seen := make([]bool, w*h)
	var out []Defect
	for i := range mask {
		if !mask[i] || seen[i] {
			continue
		}
		seen[i] = true
		stack := []int{i}
		var area, sx, sy, peak int
		box := image.Rectangle{Min: image.Pt(w, h), Max: image.Pt(-1, -1)} // not image.Rect: it would swap the corners
		for len(stack) > 0 {
			p := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			x, y := p%w, p/w
			area++
			sx += x
			sy += y
			peak = max(peak, diff[p])
			box.Min = image.Pt(min(box.Min.X, x), min(box.Min.Y, y))
			box.Max = image.Pt(max(box.Max.X, x+1), max(box.Max.Y, y+1))
			for dy := -1; dy <= 1; dy++ {
				for dx := -1; dx <= 1; dx++ {
					nx, ny := x+dx, y+dy
					if nx < 0 || ny < 0 || nx >= w || ny >= h {
						continue
					}
					q := ny*w + nx
					if mask[q] && !seen[q] {
						seen[q] = true
						stack = append(stack, q)
					}
				}
			}
		}
		if area >= minArea {
			out = append(out, Defect{X: float64(sx) / float64(area), Y: float64(sy) / float64(area), Box: box, Area: area, Peak: peak})
		}
	}
	return out
}

func totalOrder(a, b Defect) int {
	return cmp.Or(cmp.Compare(a.Y, b.Y), cmp.Compare(a.X, b.X),
		cmp.Compare(a.Box.Min.Y, b.Box.Min.Y), cmp.Compare(a.Box.Min.X, b.Box.Min.X), cmp.Compare(a.Area, b.Area))
}

// TestDetectMatchesReference compares with a flood fill on random masks of
// several densities, which exercise every way runs can touch.
func TestDetectMatchesReference(t *testing.T) {
	d := &Detector{MinArea: 1, BandRows: 7}
	for seed := range uint64(40) {
		r := rand.New(rand.NewPCG(seed, 99))
		w, h := 1+r.IntN(80), 1+r.IntN(60)
		f, g := pair(t, w, h, r.IntN(3), seed)
		density := r.Float64() * 0.7
		for y := range h {
			for x := range w {
				if r.Float64() < density {
					paint(f, g, 90, image.Pt(x, y))
				}
			}
		}
		want := reference(f, g, DefaultThreshold, 1)
		got, err := d.Detect(context.Background(), f, g, nil)
		require.NoError(t, err)
		// Detect sorts by (Y, X); check it, then compare under a total order.
		assert.True(t, slices.IsSortedFunc(got, compareDefects), "seed %d: not sorted", seed)
		slices.SortFunc(got, totalOrder)
		slices.SortFunc(want, totalOrder)
		if want == nil {
			want = []Defect{}
		}
		if got == nil {
			got = []Defect{}
		}
		require.Equal(t, want, got, "seed %d: %dx%d density %.2f", seed, w, h, density)
	}
}

// absDiff returns |a - b|.
func absDiff(a, b byte) int { return max(int(a)-int(b), int(b)-int(a)) }

// TestWordTests checks the word tests exhaustively: every threshold, every
// pair of pixel values, in every byte position in turn, beside random
// neighbours (a carry or borrow crossing bytes or lanes would show).
func TestWordTests(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for threshold := range 256 {
		s := newScan(uint8(threshold))
		for a := range 256 {
			for b := range 256 {
				i := (a + b) % 8
				pos := 8 * uint(i)
				fw := r.Uint64()&^(0xff<<pos) | uint64(a)<<pos
				gw := r.Uint64()&^(0xff<<pos) | uint64(b)<<pos
				m := exactMask(fw, gw, s.c)
				hi, lo := lanes(fw, gw, s.cK, s.cL)
				flagged := (hi | ^lo) & hi8
				diff := absDiff(byte(a), byte(b))
				if got, want := m>>i&1 == 1, diff > threshold; got != want {
					t.Fatalf("exactMask T=%d pixel %d: %d vs %d: got %v", threshold, i, a, b, got)
				}
				if f := flagged>>(pos+7)&1 == 1; diff > threshold && !f || diff < threshold && f {
					t.Fatalf("lanes T=%d pixel %d: %d vs %d: flagged %v", threshold, i, a, b, f)
				}
				if b == a {
					var fa, ga [wordLen]byte
					le.PutUint64(fa[:], fw)
					le.PutUint64(ga[:], gw)
					if wordClean(&fa, &ga, s.cK, s.cL) != (flagged == 0) {
						t.Fatalf("wordClean T=%d %v %v", threshold, fa, ga)
					}
				}
			}
		}
	}
}

// TestBlockWord checks the block test exhaustively: for every threshold
// and every pair of pixel values, in each of the 7 tested byte positions in
// turn, beside random neighbours (a carry crossing bytes would show) and a
// random untested byte 7, the word fails iff some tested pixel is outside
// the window, and a suspect pixel is always outside it; the same with the
// golden word prepared (refWord), which gives its pixels 0..6 back
// (goldenWord).
func TestBlockWord(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for threshold := 1; threshold < 256; threshold++ {
		c, mask := blockConsts(uint8(threshold))
		cb := int(c & 0xff)
		width := 256 - int(mask&0xfe) // 2^m: bits m..7 of a byte are the mask's
		require.Equal(t, 0, width&(width-1), "T=%d: window %d", threshold, width)
		outside := func(a, b byte) bool {
			v := 2*(int(a>>1)-int(b>>1)) + cb
			return v < 0 || v >= width
		}
		for a := range 256 {
			for b := range 256 {
				if absDiff(byte(a), byte(b)) > threshold && !outside(byte(a), byte(b)) {
					t.Fatalf("T=%d: suspect %d vs %d inside the window", threshold, a, b)
				}
				// Neighbours from two random words: golden bytes, and for
				// the frame a difference within a quarter of the window
				// (inside it but for rounding) or, one time in 8 and always
				// in byte 7, anything.
				i := (a + b) % 7
				rg, rf := r.Uint64(), r.Uint64()
				fw, gw := rf, rg
				anyOut := false
				for j := range 7 {
					sh := 8 * uint(j)
					ga, fa := byte(rg>>sh), byte(rf>>sh)
					switch {
					case j == i:
						fa, ga = byte(a), byte(b)
					case fa&7 != 0:
						fa = byte(min(max(int(ga)+int(int8(fa))*width>>9, 0), 255))
					}
					anyOut = anyOut || outside(fa, ga)
					fw = fw&^(0xff<<sh) | uint64(fa)<<sh
					gw = gw&^(0xff<<sh) | uint64(ga)<<sh
				}
				if got := blockWord(fw, gw, c)&mask != 0; got != anyOut {
					t.Fatalf("T=%d: words %#016x %#016x: failed %v, want %v", threshold, fw, gw, got, anyOut)
				}
				// Golden prepared (refWord): the same test, and golden
				// pixels 0..6 back whole.
				ref := refWord(gw, c)
				if got := (fw&notLo8+ref)&mask != 0; got != anyOut {
					t.Fatalf("T=%d: words %#016x %#016x prepared: failed %v, want %v", threshold, fw, gw, got, anyOut)
				}
				if back := goldenWord(ref, c); back<<8 != gw<<8 {
					t.Fatalf("T=%d: golden %#016x prepared as %#016x gives back %#016x", threshold, gw, ref, back)
				}
			}
		}
	}
}

// randomPair returns a w×h frame and golden frame with independent random
// strides, Pix ending with the last row (no padding after it), padding bytes
// that would be suspect (frame 0, golden 255), and golden pixels random,
// often at the extremes.
func randomPair(r *rand.Rand, w, h int) (frame, golden *camera.Frame) {
	mk := func(grey byte) *camera.Frame {
		stride := w + r.IntN(20)
		f := &camera.Frame{Width: w, Height: h, Stride: stride, Pix: make([]byte, (h-1)*stride+w)}
		for i := range f.Pix {
			f.Pix[i] = grey
		}
		return f
	}
	frame, golden = mk(0), mk(255)
	for y := range h {
		row := golden.Row(y)
		for x := range row {
			switch r.IntN(10) {
			case 0:
				row[x] = 0
			case 1:
				row[x] = 255
			default:
				row[x] = byte(r.IntN(256))
			}
		}
	}
	return frame, golden
}

// setDiff sets a frame pixel against golden value g: suspect (|d| > t) if
// possible, exactly at the threshold (|d| = t), or within it.
func setDiff(r *rand.Rand, g byte, t int, kind int) byte {
	gv := int(g)
	switch kind {
	case 0: // suspect
		var c []int
		if gv-t-1 >= 0 {
			c = append(c, r.IntN(gv-t)) // [0, gv-t-1]
		}
		if gv+t+1 <= 255 {
			c = append(c, gv+t+1+r.IntN(255-gv-t)) // [gv+t+1, 255]
		}
		if len(c) == 0 {
			return g
		}
		return byte(c[r.IntN(len(c))])
	case 1: // at the threshold
		if r.IntN(2) == 0 && gv-t >= 0 || gv+t > 255 {
			return byte(max(gv-t, 0))
		}
		return byte(gv + t)
	default: // within the threshold
		return byte(min(max(gv+r.IntN(2*t+1)-t, 0), 255))
	}
}

// TestDetectMatchesReferenceWide compares with the flood fill over random
// geometries (widths that are not multiples of 8 or of the block, frame and
// golden strides that differ), thresholds across the range, differences of
// exactly the threshold (which the word test lets through and the pixel test
// must reject), and runs ending at the right edge, inside the last partial
// word.
func TestDetectMatchesReferenceWide(t *testing.T) {
	thresholds := []uint8{1, 2, 3, 7, 40, 127, 128, 129, 200, 253, 254, 255}
	d := &Detector{}
	for seed := range uint64(400) {
		r := rand.New(rand.NewPCG(seed, 7))
		w, h := 1+r.IntN(300), 1+r.IntN(24)
		if seed%4 == 0 {
			w = 1 + r.IntN(24)
		}
		threshold := thresholds[int(seed)%len(thresholds)]
		tl := int(threshold)
		f, g := randomPair(r, w, h)
		density := r.Float64() * 0.5
		for y := range h {
			row, grow := f.Row(y), g.Row(y)
			for x := range row {
				kind := 2
				switch u := r.Float64(); {
				case u < density:
					kind = 0
				case u < density+0.1:
					kind = 1
				}
				row[x] = setDiff(r, grow[x], tl, kind)
			}
			if r.IntN(3) == 0 { // a run to the right edge
				for x := max(w-1-r.IntN(9), 0); x < w; x++ {
					row[x] = setDiff(r, grow[x], tl, 0)
				}
			}
		}
		d.Threshold, d.MinArea, d.BandRows = threshold, 1+r.IntN(3), 1+r.IntN(8)
		want := reference(f, g, tl, d.MinArea)
		got, err := d.Detect(context.Background(), f, g, nil)
		require.NoError(t, err)
		assert.True(t, slices.IsSortedFunc(got, compareDefects), "seed %d: not sorted", seed)
		slices.SortFunc(got, totalOrder)
		slices.SortFunc(want, totalOrder)
		require.Equal(t, len(want), len(got), "seed %d: %dx%d threshold %d", seed, w, h, threshold)
		if len(want) > 0 {
			require.Equal(t, want, got, "seed %d: %dx%d strides %d/%d threshold %d", seed, w, h, f.Stride, g.Stride, threshold)
		}
	}
}

// packed returns a copy of f with Stride = Width: rows back to back, as the
// camera's frames are.
func packed(f *camera.Frame) *camera.Frame {
	p := &camera.Frame{Width: f.Width, Height: f.Height, Stride: f.Width, Pix: make([]byte, f.Width*f.Height)}
	for y := range f.Height {
		copy(p.Row(y), f.Row(y))
	}
	return p
}

// TestDetectSparseMatchesReference compares with the flood fill on frames
// that are mostly clean, as in production, so that the block test skips
// most of each row: widths around the block and word sizes, noise within
// the window and up to the threshold, and sparse suspect pixels (extremes
// such as 0 against 255 among them) and pixels exactly at the threshold, in
// every position of a block and of a row's tail.
func TestDetectSparseMatchesReference(t *testing.T) {
	widths := []int{7, 8, 9, 15, 55, 56, 57, 63, 64, 65, blockLen - 1, blockLen, blockRead,
		blockRead + 1, blockRead + 6, blockRead + 7, 2*blockLen + 1, 2*blockLen + 8, 3*blockLen + 31, 1000, 2048}
	thresholds := []uint8{1, 2, 3, 5, 40, 41, 100, 128, 200, 254, 255}
	d := &Detector{}
	for seed := range uint64(300) {
		r := rand.New(rand.NewPCG(seed, 11))
		w := widths[int(seed)%len(widths)]
		if seed%5 == 0 {
			w = 1 + r.IntN(3*blockRead)
		}
		h := 1 + r.IntN(12)
		threshold := thresholds[r.IntN(len(thresholds))]
		tl := int(threshold)
		f, g := randomPair(r, w, h)
		noise := r.IntN(tl + 1) // |frame - golden| up to noise on clean pixels
		density := []float64{0, 0.0005, 0.002, 0.01}[r.IntN(4)]
		for y := range h {
			row, grow := f.Row(y), g.Row(y)
			for x := range row {
				switch u := r.Float64(); {
				case u < density:
					if r.IntN(3) == 0 { // an extreme
						if grow[x] < 128 {
							grow[x], row[x] = byte(r.IntN(8)), byte(255-r.IntN(8))
						} else {
							grow[x], row[x] = byte(255-r.IntN(8)), byte(r.IntN(8))
						}
					} else {
						row[x] = setDiff(r, grow[x], tl, 0)
					}
				case u < 2*density:
					row[x] = setDiff(r, grow[x], tl, 1)
				default:
					row[x] = setDiff(r, grow[x], noise, 2)
				}
			}
		}
		if seed%2 == 0 { // rows back to back in both frames, or in one
			f = packed(f)
		}
		if seed%3 != 2 {
			g = packed(g)
		}
		d.Threshold, d.MinArea, d.BandRows = threshold, 1, 1+r.IntN(5)
		want := reference(f, g, tl, 1)
		slices.SortFunc(want, totalOrder)
		// The ordinary path, then with golden prepared (as a run does).
		for _, prepare := range []bool{false, true} {
			d.Prepare(nil)
			if prepare {
				d.Prepare(g)
			}
			got, err := d.Detect(context.Background(), f, g, nil)
			require.NoError(t, err)
			slices.SortFunc(got, totalOrder)
			require.Equal(t, len(want), len(got), "seed %d: %dx%d threshold %d noise %d prepared %v", seed, w, h, threshold, noise, prepare)
			if len(want) > 0 {
				require.Equal(t, want, got, "seed %d: %dx%d threshold %d noise %d prepared %v", seed, w, h, threshold, noise, prepare)
			}
		}
	}
}

// TestPrepareOnlyForItsGolden: a Detector prepared for one golden frame
// gives the same results as an unprepared one when given another golden
// frame, after its Threshold changed, or after Prepare(nil); and prepared
// for a golden whose rows are not back to back it uses the ordinary path.
func TestPrepareOnlyForItsGolden(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 3))
	f, g := randomPair(r, 2*blockRead+9, 6)
	f, g = packed(f), packed(g)
	for y := range 6 {
		for x, v := range g.Row(y) {
			kind := 2 // within the threshold
			if r.IntN(50) == 0 {
				kind = 0 // suspect
			}
			f.Row(y)[x] = setDiff(r, v, DefaultThreshold, kind)
		}
	}
	other := packed(g)
	other.Pix[5] += 128 // a defect at (5, 0) against other
	detect := func(d *Detector, golden *camera.Frame) []Defect {
		got, err := d.Detect(context.Background(), f, golden, nil)
		require.NoError(t, err)
		return got
	}
	plain := &Detector{MinArea: 1}
	want, wantOther := detect(plain, g), detect(plain, other)
	require.NotEmpty(t, want)
	require.NotEqual(t, want, wantOther)

	d := &Detector{MinArea: 1}
	d.Prepare(g)
	assert.Equal(t, want, detect(d, g), "prepared")
	assert.Equal(t, wantOther, detect(d, other), "another golden")
	d.Threshold = DefaultThreshold + 1
	assert.Equal(t, detect(&Detector{MinArea: 1, Threshold: DefaultThreshold + 1}, g), detect(d, g), "threshold changed")
	d.Threshold = 0
	d.Prepare(nil)
	assert.Equal(t, want, detect(d, g), "forgotten")

	strided := &camera.Frame{Width: g.Width, Height: g.Height, Stride: g.Width + 3, Pix: make([]byte, (g.Width+3)*g.Height)}
	for y := range g.Height {
		copy(strided.Row(y), g.Row(y))
	}
	d.Prepare(strided)
	assert.Nil(t, d.prepared, "a golden with padded rows is not prepared")
	assert.Equal(t, want, detect(d, strided))
}

// FuzzDetect compares Detect with the flood fill on frames built from the
// fuzzer's bytes: a golden frame of noise and a frame that differs from it
// by the given bytes, with a width that need not be a multiple of anything.
func FuzzDetect(f *testing.F) {
	f.Add(uint16(300), uint8(3), uint8(40), uint64(1), []byte{0, 200, 7, 255, 90})
	f.Add(uint16(2*blockRead+5), uint8(2), uint8(1), uint64(2), []byte{255, 0, 0, 255})
	f.Add(uint16(blockRead), uint8(1), uint8(255), uint64(3), []byte{1, 2, 3})
	f.Add(uint16(9), uint8(5), uint8(128), uint64(4), []byte{})
	f.Fuzz(func(t *testing.T, w16 uint16, h8, threshold uint8, seed uint64, diffs []byte) {
		w, h := 1+int(w16)%1200, 1+int(h8)%8
		r := rand.New(rand.NewPCG(seed, 5))
		frame, golden := randomPair(r, w, h)
		for y := range h {
			copy(frame.Row(y), golden.Row(y))
		}
		if seed%2 == 0 {
			frame, golden = packed(frame), packed(golden)
		}
		// Each pair of bytes sets one pixel: a position and a value.
		for i := 0; i+1 < len(diffs); i += 2 {
			p := (int(diffs[i]) * 7919) % (w * h)
			frame.Row(p / w)[p%w] = diffs[i+1]
		}
		d := &Detector{Threshold: threshold, MinArea: 1, BandRows: 1 + int(seed%4)}
		if seed%3 != 0 {
			d.Prepare(golden) // a no-op unless the frames are packed
		}
		tl := int(d.Threshold)
		if tl == 0 {
			tl = DefaultThreshold
		}
		want := reference(frame, golden, tl, 1)
		got, err := d.Detect(context.Background(), frame, golden, nil)
		if err != nil {
			t.Fatal(err)
		}
		slices.SortFunc(got, totalOrder)
		slices.SortFunc(want, totalOrder)
		if len(want) != len(got) || (len(want) > 0 && !slices.Equal(want, got)) {
			t.Fatalf("%dx%d threshold %d: got %v, want %v", w, h, tl, got, want)
		}
	})
}

// manyDefects returns a 301×h frame pair with random suspect pixels, 15%
// of them: many small components, in an order of their top rows that is not
// the order of their centroids. With h = 120 or 200 there are about 2600 or
// 4400, more than sortDefects sorts in one go.
func manyDefects(t testing.TB, h int) (frame, golden *camera.Frame) {
	frame, golden = pair(t, 301, h, 3, 14)
	r := rand.New(rand.NewPCG(14, 14))
	for y := range h {
		for x := range 301 {
			if r.IntN(100) < 15 {
				paint(frame, golden, 90, image.Pt(x, y))
			}
		}
	}
	return frame, golden
}

func TestDetectManyDefects(t *testing.T) {
	for _, h := range []int{120, 200} { // one merge pass or two
		f, g := manyDefects(t, h)
		want := reference(f, g, DefaultThreshold, 1)
		require.Greater(t, len(want), sortLen)
		require.False(t, slices.IsSortedFunc(want, compareDefects))
		slices.SortFunc(want, totalOrder)
		d := &Detector{MinArea: 1}
		for range 2 {
			got, err := d.Detect(context.Background(), f, g, nil)
			require.NoError(t, err)
			assert.True(t, slices.IsSortedFunc(got, compareDefects), "not sorted")
			slices.SortFunc(got, totalOrder)
			require.Equal(t, want, got)
		}
	}
}

func TestDetectBadGeometry(t *testing.T) {
	ok := newFrame(64, 48, 0, 0)
	for name, f := range map[string]*camera.Frame{
		"stride < width": {Width: 64, Height: 48, Stride: 63, Pix: make([]byte, 64*48)},
		"short Pix":      {Width: 64, Height: 48, Stride: 70, Pix: make([]byte, 70*47+63)},
	} {
		dst := []Defect{{Area: 3}}
		got, err := (&Detector{}).Detect(context.Background(), f, ok, dst)
		require.Error(t, err, name)
		assert.ErrorContains(t, err, "frame: bad geometry", name)
		assert.Equal(t, dst, got, name)
		_, err = (&Detector{}).Detect(context.Background(), ok, f, nil)
		assert.ErrorContains(t, err, "golden: bad geometry", name)
	}
	exact := &camera.Frame{Width: 64, Height: 48, Stride: 70, Pix: make([]byte, 70*47+64)}
	_, err := (&Detector{}).Detect(context.Background(), exact, ok, nil)
	assert.NoError(t, err, "Pix ending with the last row")
}

func TestDetectSizeMismatch(t *testing.T) {
	f := newFrame(64, 48, 0, 0)
	g := newFrame(64, 40, 0, 0)
	dst := []Defect{{Area: 3}}
	got, err := (&Detector{}).Detect(context.Background(), f, g, dst)
	require.ErrorIs(t, err, ErrSizeMismatch)
	assert.ErrorContains(t, err, "64x48")
	assert.ErrorContains(t, err, "64x40")
	assert.Equal(t, dst, got)
}

// countingCtx cancels its parent with cause on the n-th call of Err, so a
// test can cancel at a chosen band boundary.
type countingCtx struct {
	context.Context
	calls  atomic.Int32
	n      int32
	cancel context.CancelCauseFunc
	cause  error
}

func (c *countingCtx) Err() error {
	if c.calls.Add(1) == c.n {
		c.cancel(c.cause)
	}
	return c.Context.Err()
}

func TestDetectCancelMidFrame(t *testing.T) {
	const w, h, band = 128, 1000, 50
	f, g := pair(t, w, h, 0, 9)
	paint(f, g, 80, rect(10, 10, 20, 20)...)
	paint(f, g, 80, rect(10, 900, 20, 910)...)
	cause := errors.New("operator pressed stop")
	for _, n := range []int32{1, 2, 7, h / band} {
		parent, cancel := context.WithCancelCause(context.Background())
		ctx := &countingCtx{Context: parent, n: n, cancel: cancel, cause: cause}
		dst := []Defect{{Area: 1}}
		got, err := (&Detector{BandRows: band}).Detect(ctx, f, g, dst)
		require.ErrorIs(t, err, cause, "cancelled at band %d", n)
		assert.Equal(t, dst, got, "dst untouched")
		// Err is called once per band, plus at most once by context.Cause.
		assert.LessOrEqual(t, ctx.calls.Load(), n+1, "stops at the first band boundary after cancellation")
		cancel(nil)
	}

	// An uncancelled run checks once per band.
	parent, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	ctx := &countingCtx{Context: parent, n: -1, cancel: cancel, cause: cause}
	got, err := (&Detector{BandRows: band}).Detect(ctx, f, g, nil)
	require.NoError(t, err)
	assert.Len(t, got, 2)
	assert.Equal(t, int32(h/band), ctx.calls.Load())
}

// TestDetectCancelLargeFrames checks on frames of many bands, with rows back
// to back (where clean stretches are skipped across bands) or padded, that
// an uncancelled run checks once per band and that a cancellation at any
// check stops Detect at the next one.
func TestDetectCancelLargeFrames(t *testing.T) {
	const w, h, band = 2048, 300, 8
	bands := int32((h + band - 1) / band)
	cause := errors.New("operator pressed stop")
	for _, pad := range []int{0, 5} {
		f, g := pair(t, w, h, pad, 15)
		paint(f, g, 80, rect(100, 150, 110, 160)...)
		d := &Detector{BandRows: band}
		parent, cancel := context.WithCancelCause(context.Background())
		ctx := &countingCtx{Context: parent, n: -1, cancel: cancel, cause: cause}
		got, err := d.Detect(ctx, f, g, nil)
		require.NoError(t, err)
		assert.Len(t, got, 1)
		assert.Equal(t, bands, ctx.calls.Load(), "pad %d: one check per band", pad)
		cancel(nil)
		for n := int32(1); n <= bands; n += 3 {
			parent, cancel := context.WithCancelCause(context.Background())
			ctx := &countingCtx{Context: parent, n: n, cancel: cancel, cause: cause}
			dst := []Defect{{Area: -1}}
			got, err := d.Detect(ctx, f, g, dst)
			require.ErrorIs(t, err, cause, "pad %d: cancelled at check %d", pad, n)
			assert.Equal(t, dst, got, "dst untouched")
			assert.LessOrEqual(t, ctx.calls.Load(), n+1, "pad %d: stops at the next check", pad)
			cancel(nil)
		}
	}
}

// TestDetectCancelAnywhere cancels at every check of a frame with many runs
// and defects, so that labelling and sorting check ctx too: Detect must stop
// at the first check after the cancellation, in whatever phase.
func TestDetectCancelAnywhere(t *testing.T) {
	f, g := manyDefects(t, 200)
	cause := errors.New("operator pressed stop")
	d := &Detector{MinArea: 1}
	parent, cancel := context.WithCancelCause(context.Background())
	ctx := &countingCtx{Context: parent, n: -1, cancel: cancel, cause: cause}
	want, err := d.Detect(ctx, f, g, nil)
	require.NoError(t, err)
	cancel(nil)
	checks := ctx.calls.Load()
	bands := int32((f.Height + DefaultBandRows - 1) / DefaultBandRows)
	require.Greater(t, checks, bands+2, "labelling and sorting check ctx")
	for n := int32(1); n <= checks; n++ {
		parent, cancel := context.WithCancelCause(context.Background())
		ctx := &countingCtx{Context: parent, n: n, cancel: cancel, cause: cause}
		dst := []Defect{{Area: -1}}
		got, err := d.Detect(ctx, f, g, dst)
		require.ErrorIs(t, err, cause, "cancelled at check %d of %d", n, checks)
		assert.Equal(t, dst, got, "dst untouched")
		assert.LessOrEqual(t, ctx.calls.Load(), n+1, "stops at the first check after cancellation")
		cancel(nil)
	}
	got, err := d.Detect(context.Background(), f, g, nil)
	require.NoError(t, err)
	assert.Equal(t, want, got, "reusable after cancellation")
}

func TestDetectReusableAfterCancel(t *testing.T) {
	f, g := pair(t, 100, 300, 0, 10)
	paint(f, g, 80, rect(10, 10, 20, 20)...)
	d := &Detector{BandRows: 16}
	ctx, cancel := context.WithCancelCause(context.Background())
	cancel(context.Canceled)
	_, err := d.Detect(ctx, f, g, nil)
	require.ErrorIs(t, err, context.Canceled)
	got := detect(t, d, f, g)
	assert.Len(t, got, 1)
}

func TestDetectZeroAllocs(t *testing.T) {
	small := func() (*camera.Frame, *camera.Frame) {
		f, g := pair(t, 256, 256, 0, 11)
		r := rand.New(rand.NewPCG(11, 11))
		for range 40 {
			x, y := r.IntN(240), r.IntN(240)
			paint(f, g, 90, rect(x, y, x+1+r.IntN(12), y+1+r.IntN(12))...)
		}
		return f, g
	}
	for _, c := range []struct {
		name   string
		frames func() (*camera.Frame, *camera.Frame)
		d      *Detector
	}{
		{"256x256", small, &Detector{}},
		{"2048x2048", benchFrames, &Detector{}},
		{"many defects", func() (*camera.Frame, *camera.Frame) { return manyDefects(t, 200) }, &Detector{MinArea: 1}},
	} {
		t.Run(c.name, func(t *testing.T) {
			f, g := c.frames()
			ctx := context.Background()
			dst, err := c.d.Detect(ctx, f, g, nil) // warm-up sizes the scratch and dst
			require.NoError(t, err)
			require.NotEmpty(t, dst)
			allocs := testing.AllocsPerRun(5, func() {
				dst, err = c.d.Detect(ctx, f, g, dst[:0])
			})
			require.NoError(t, err)
			assert.Zero(t, allocs)
		})
	}
}

// benchSize is the side of the benchmark frames: the production camera's.
const benchSize = 2048

// benchFrames returns a realistic benchSize² frame pair, built once: a noisy
// golden texture, the frame equal to it plus ±4 grey levels of sensor noise,
// and 64 dark defects of 3–18 px on a side.
var benchFrames = sync.OnceValues(func() (frame, golden *camera.Frame) {
	frame, golden = pair(nil, benchSize, benchSize, 0, 12)
	r := rand.New(rand.NewPCG(12, 12))
	for y := range benchSize {
		row := frame.Row(y)
		for x := range row {
			row[x] = byte(int(row[x]) + r.IntN(9) - 4)
		}
	}
	for range 64 {
		x, y := r.IntN(benchSize-20), r.IntN(benchSize-20)
		paint(frame, golden, -90, rect(x, y, x+3+r.IntN(16), y+3+r.IntN(16))...)
	}
	return frame, golden
})

// benchDetector is the Detector of the throughput benchmarks, its golden
// frame prepared once: BenchmarkAnalyze and BenchmarkAnalyzeNoCancelChecks
// share it (and its prepared words, wherever they lie in memory), and
// differ only in BandRows.
var benchDetector = sync.OnceValue(func() *Detector {
	_, g := benchFrames()
	d := &Detector{}
	d.Prepare(g) // once per run, as the runner does
	return d
})

// benchDetect runs Detect with bandRows on the benchmark frames under a
// cancellable context, with the golden frame prepared, as in a run. Bytes
// are frame pixels.
func benchDetect(b *testing.B, bandRows int) {
	f, g := benchFrames()
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	d := benchDetector()
	d.BandRows = bandRows
	dst, err := d.Detect(ctx, f, g, nil) // warm-up sizes the scratch and dst
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(benchSize * benchSize)
	b.ReportAllocs()
	for b.Loop() {
		dst, err = d.Detect(ctx, f, g, dst[:0])
		if err != nil {
			b.Fatal(err)
		}
	}
	if len(dst) == 0 {
		b.Fatal("no defects found")
	}
}

// BenchmarkAnalyze measures Detect with the defaults on a 2048×2048 frame
// with noise and 64 defects against its golden frame, prepared once
// (Prepare) as a run does. Compare its MB/s with BenchmarkMemmove's.
func BenchmarkAnalyze(b *testing.B) { benchDetect(b, 0) }

// BenchmarkAnalyzeNoCancelChecks is BenchmarkAnalyze with one band per frame,
// so ctx is checked once instead of once per DefaultBandRows rows: the
// difference is the cost of the cancellation checks. On a shared machine the
// difference drowns in noise; BenchmarkCancelCheckCost measures it paired.
func BenchmarkAnalyzeNoCancelChecks(b *testing.B) {
	benchDetect(b, math.MaxInt)
}

// BenchmarkCancelCheckCost times Detect with the default bands and with one
// band per frame, alternately, and reports the median over the pairs of the
// relative extra time of the former, in percent ("checks-%"): the cost of the
// cancellation checks, measured so that the drifts of a shared machine's load
// cancel out.
func BenchmarkCancelCheckCost(b *testing.B) {
	f, g := benchFrames()
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	// One Detector, one prepared golden, for both: only the bands differ,
	// not where the prepared words lie in memory.
	d := &Detector{}
	d.Prepare(g)
	dst, err := d.Detect(ctx, f, g, nil)
	if err != nil {
		b.Fatal(err)
	}
	timed := func(bandRows int) time.Duration {
		d.BandRows = bandRows
		start := time.Now()
		dst, err = d.Detect(ctx, f, g, dst[:0])
		if err != nil {
			b.Fatal(err)
		}
		return time.Since(start)
	}
	const checked, unchecked = 0, math.MaxInt
	b.ReportMetric((pairedMedian(b, func() time.Duration { return timed(checked) },
		func() time.Duration { return timed(unchecked) })-1)*100, "checks-%")
}

// pairedMedian times x and y alternately, each pair in the other order than
// the last, until b.Loop ends, and returns the median over the pairs of x's
// time over y's: a ratio measured so that the drifts of a shared machine's
// load, which reach one of two benchmarks run apart and not the other,
// cancel out.
func pairedMedian(b *testing.B, x, y func() time.Duration) float64 {
	var ratios []float64
	for i := 0; b.Loop(); i++ {
		var tx, ty time.Duration
		if i%2 == 0 {
			tx, ty = x(), y()
		} else {
			ty, tx = y(), x()
		}
		ratios = append(ratios, float64(tx)/float64(ty))
	}
	slices.Sort(ratios)
	return ratios[len(ratios)/2]
}

// memmoveBuffers returns BenchmarkMemmove's source and destination, frame
// sized.
func memmoveBuffers() (src, dst []byte) {
	src = make([]byte, benchSize*benchSize)
	dst = make([]byte, len(src))
	for i := range src {
		src[i] = byte(i * 7)
	}
	return src, dst
}

// BenchmarkMemmove copies a frame-sized buffer, the speed of light for a pass
// over a frame. Bytes are frame pixels, as in BenchmarkAnalyze.
func BenchmarkMemmove(b *testing.B) {
	src, dst := memmoveBuffers()
	b.SetBytes(int64(len(src)))
	for b.Loop() {
		copy(dst, src)
	}
}

// BenchmarkAnalyzeVsMemmove times one Detect as BenchmarkAnalyze does and
// one copy as BenchmarkMemmove does, alternately, and reports the median
// over the pairs of the copy's time over Detect's ("x-memmove"): the speed
// of analysis as a fraction of memmove's, paired (see pairedMedian). The
// two benchmarks' MB/s, run one after the other, give the same ratio on a
// quiet machine.
func BenchmarkAnalyzeVsMemmove(b *testing.B) {
	f, g := benchFrames()
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	d := benchDetector()
	d.BandRows = 0
	dst, err := d.Detect(ctx, f, g, nil)
	if err != nil {
		b.Fatal(err)
	}
	src, cp := memmoveBuffers()
	detect := func() time.Duration {
		start := time.Now()
		dst, err = d.Detect(ctx, f, g, dst[:0])
		if err != nil {
			b.Fatal(err)
		}
		return time.Since(start)
	}
	memmove := func() time.Duration {
		start := time.Now()
		copy(cp, src)
		return time.Since(start)
	}
	b.ReportMetric(pairedMedian(b, memmove, detect), "x-memmove")
}

// BenchmarkCancelLatency cancels ctx from another goroutine at a random
// moment while Detect is scanning a benchmark frame and reports the time from
// cancel to Detect's return, p50 and p99 in µs.
func BenchmarkCancelLatency(b *testing.B) {
	f, g := benchFrames()
	d := &Detector{}
	dst, err := d.Detect(context.Background(), f, g, nil) // size the scratch
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	if _, err := d.Detect(context.Background(), f, g, dst[:0]); err != nil {
		b.Fatal(err)
	}
	frameTime := time.Since(start)

	r := rand.New(rand.NewPCG(13, 13))
	lat := make([]time.Duration, 0, 1024)
	for b.Loop() {
		for { // until a cancel lands mid-frame
			ctx, cancel := context.WithCancelCause(context.Background())
			var cancelled atomic.Int64 // time.Now().UnixNano() just before cancel
			delay := time.Duration(r.Int64N(int64(frameTime) * 8 / 10))
			timer := time.AfterFunc(delay, func() {
				cancelled.Store(time.Now().UnixNano())
				cancel(errStop)
			})
			dst, err = d.Detect(ctx, f, g, dst[:0])
			end := time.Now().UnixNano()
			timer.Stop()
			cancel(nil)
			if err == nil {
				continue // finished before the cancel: retry
			}
			if !errors.Is(err, errStop) {
				b.Fatal(err)
			}
			lat = append(lat, time.Duration(end-cancelled.Load()))
			break
		}
	}
	slices.Sort(lat)
	pct := func(p float64) float64 {
		return float64(lat[int(p*float64(len(lat)-1))].Nanoseconds()) / 1e3
	}
	b.ReportMetric(pct(0.50), "p50-µs")
	b.ReportMetric(pct(0.99), "p99-µs")
}

var errStop = errors.New("stop")

// TestSkipCleanRefIsAligned checks the prepared skip against the exact test
// from every start: it never passes a suspect pixel. The frame is the
// golden frame shifted by d pixels (1 to 6) on a steep ramp, so every pixel
// is suspect, yet the block test would pass every word compared with the
// golden words d pixels off: a skip reading ref off the grid (a start not
// rounded to it) would pass them.
func TestSkipCleanRefIsAligned(t *testing.T) {
	const n = 3*blockRead + 17
	g := make([]byte, n)
	for x := range g {
		g[x] = byte(x * 50)
	}
	golden := &camera.Frame{Width: n, Height: 1, Stride: n, Pix: g}
	d := &Detector{}
	d.Prepare(golden)
	require.NotNil(t, d.prepared)
	s := newScan(d.threshold())
	for shift := 1; shift < wordLen-1; shift++ {
		f := make([]byte, n)
		for x := range f {
			f[x] = g[(x+n-shift)%n]
		}
		for i := range n {
			k := noCheck
			p, err := skipClean(f, g, d.ref, i, &s, &k)
			require.NoError(t, err)
			require.GreaterOrEqual(t, p, i)
			for x := i; x < p; x++ {
				require.LessOrEqual(t, absDiff(f[x], g[x]), int(s.threshold), "shift %d, start %d: passed suspect pixel %d", shift, i, x)
			}
		}
	}
}
