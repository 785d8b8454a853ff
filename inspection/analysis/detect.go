// Package analysis finds defects in a frame by comparing it with a golden
// frame of an identical die taken at the same relative position.
//
// Coordinates are pixels: x to the right, y downward, pixel (i, j) centred at
// (i, j). camera.Info.ToMachine converts them to machine coordinates.
package analysis

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"image"
	"slices"

	"github.com/waferd/waferd/camera"
)

// Defaults applied to zero Detector fields.
const (
	DefaultThreshold = 40
	DefaultMinArea   = 6
	DefaultBandRows  = 64
)

// Defect is one connected group of pixels that differ from the golden frame.
type Defect struct {
	// X, Y is the centroid, in pixels (mean of the member pixels' indices).
	X, Y float64
	// Box is the bounding box, in pixels (Max exclusive).
	Box image.Rectangle
	// Area is the number of member pixels.
	Area int
	// Peak is the largest |frame - golden| among the member pixels, in grey
	// levels.
	Peak int
}

// Detector finds defects by golden-frame comparison. The zero value is ready
// to use with the defaults.
//
// A Detector owns scratch buffers that it reuses from one Detect to the next,
// so that a long run does not allocate per frame. It is not safe for
// concurrent use: give each goroutine its own Detector.
type Detector struct {
	// Threshold: a pixel is suspect when |frame - golden| > Threshold grey
	// levels. 0 means DefaultThreshold.
	Threshold uint8
	// MinArea: components with fewer pixels are dropped. 0 means
	// DefaultMinArea.
	MinArea int
	// BandRows: Detect checks ctx for cancellation before each band of this
	// many rows. 0 means DefaultBandRows.
	BandRows int

	runs   []run   // mask runs of the whole frame, row by row, x ascending
	parent []int32 // union-find forest over runs; roots are the smallest index
	comp   []int32 // run index (of a root) -> index into stats
	stats  []stats // one per component
}

// run is a maximal horizontal stretch [x0, x1) of suspect pixels in row y.
type run struct {
	x0, x1, y int32
	peak      int32
}

type stats struct {
	area                   int
	sumX, sumY             int64
	minX, minY, maxX, maxY int32
	peak                   int32
}

// ErrSizeMismatch is returned (wrapped) when the frame and the golden frame
// differ in size.
var ErrSizeMismatch = errors.New("analysis: frame and golden differ in size")

// Detect compares frame against golden (same size): pixels with
// |frame - golden| > Threshold are suspect, 8-connected suspects form
// components, and components of at least MinArea pixels are appended to dst
// as Defects, sorted by centroid Y then X. It returns the extended dst.
//
// Detect checks ctx before each band of BandRows rows; when ctx is cancelled
// it returns dst unchanged and an error wrapping context.Cause(ctx). A size
// mismatch returns an error wrapping ErrSizeMismatch. Detect does not keep
// references to the frames. In steady state it allocates nothing beyond the
// growth of dst.
func (d *Detector) Detect(ctx context.Context, frame, golden *camera.Frame, dst []Defect) ([]Defect, error) {
	if frame == nil || golden == nil {
		return dst, errors.New("analysis: detect: nil frame")
	}
	if frame.Width != golden.Width || frame.Height != golden.Height {
		return dst, fmt.Errorf("%w: frame %dx%d, golden %dx%d", ErrSizeMismatch,
			frame.Width, frame.Height, golden.Width, golden.Height)
	}
	threshold := int32(d.Threshold)
	if threshold == 0 {
		threshold = DefaultThreshold
	}
	minArea := d.MinArea
	if minArea <= 0 {
		minArea = DefaultMinArea
	}
	band := d.BandRows
	if band <= 0 {
		band = DefaultBandRows
	}

	d.runs = d.runs[:0]
	d.parent = d.parent[:0]
	prevStart, prevEnd := 0, 0 // runs of the previous row
	for y := 0; y < frame.Height; y++ {
		if y%band == 0 && ctx.Err() != nil {
			return dst, fmt.Errorf("analysis: detect: %w", context.Cause(ctx))
		}
		curStart := len(d.runs)
		d.scanRow(frame.Row(y), golden.Row(y), int32(y), threshold)
		d.link(prevStart, prevEnd, curStart, len(d.runs))
		prevStart, prevEnd = curStart, len(d.runs)
	}

	start := len(dst)
	dst = d.collect(dst, minArea)
	slices.SortFunc(dst[start:], compareDefects)
	return dst, nil
}

// scanRow appends the runs of suspect pixels of one row.
func (d *Detector) scanRow(f, g []byte, y, threshold int32) {
	g = g[:len(f)]
	inRun := false
	var r run
	for x := range f {
		diff := int32(f[x]) - int32(g[x])
		if diff < 0 {
			diff = -diff
		}
		if diff > threshold {
			if !inRun {
				inRun = true
				r = run{x0: int32(x), y: y, peak: diff}
			} else if diff > r.peak {
				r.peak = diff
			}
		} else if inRun {
			inRun = false
			r.x1 = int32(x)
			d.addRun(r)
		}
	}
	if inRun {
		r.x1 = int32(len(f))
		d.addRun(r)
	}
}

func (d *Detector) addRun(r run) {
	d.parent = append(d.parent, int32(len(d.runs)))
	d.runs = append(d.runs, r)
}

// link unions each run of the current row [cs, ce) with the runs of the
// previous row [ps, pe) it touches, 8-connected: their x ranges overlap or
// meet at a corner.
func (d *Detector) link(ps, pe, cs, ce int) {
	j := ps
	for i := cs; i < ce; i++ {
		c := d.runs[i]
		// Previous runs ending left of c's left neighbour cannot touch c or
		// any later run of this row.
		for j < pe && d.runs[j].x1 < c.x0 {
			j++
		}
		for k := j; k < pe && d.runs[k].x0 <= c.x1; k++ {
			d.union(int32(i), int32(k))
		}
	}
}

func (d *Detector) find(i int32) int32 {
	p := d.parent
	for p[i] != i {
		p[i] = p[p[i]] // path halving
		i = p[i]
	}
	return i
}

// union joins the sets of a and b, keeping the smaller index as root, so a
// root always precedes the members of its set.
func (d *Detector) union(a, b int32) {
	ra, rb := d.find(a), d.find(b)
	switch {
	case ra < rb:
		d.parent[rb] = ra
	case rb < ra:
		d.parent[ra] = rb
	}
}

// collect accumulates the runs per component and appends those of at least
// minArea pixels to dst.
func (d *Detector) collect(dst []Defect, minArea int) []Defect {
	n := len(d.runs)
	d.comp = slices.Grow(d.comp[:0], n)[:n]
	d.stats = d.stats[:0]
	for i := range n {
		r := d.runs[i]
		root := d.find(int32(i))
		if root == int32(i) {
			d.comp[i] = int32(len(d.stats))
			d.stats = append(d.stats, stats{minX: r.x0, minY: r.y, maxX: r.x1 - 1, maxY: r.y})
		}
		s := &d.stats[d.comp[root]]
		w := int64(r.x1 - r.x0)
		s.area += int(w)
		s.sumX += w * int64(r.x0+r.x1-1) / 2
		s.sumY += w * int64(r.y)
		s.minX = min(s.minX, r.x0)
		s.maxX = max(s.maxX, r.x1-1)
		s.minY = min(s.minY, r.y)
		s.maxY = max(s.maxY, r.y)
		s.peak = max(s.peak, r.peak)
	}
	for _, s := range d.stats {
		if s.area < minArea {
			continue
		}
		dst = append(dst, Defect{
			X:    float64(s.sumX) / float64(s.area),
			Y:    float64(s.sumY) / float64(s.area),
			Box:  image.Rect(int(s.minX), int(s.minY), int(s.maxX)+1, int(s.maxY)+1),
			Area: s.area,
			Peak: int(s.peak),
		})
	}
	return dst
}

func compareDefects(a, b Defect) int {
	if c := cmp.Compare(a.Y, b.Y); c != 0 {
		return c
	}
	return cmp.Compare(a.X, b.X)
}
