// Package analysis finds defects in a frame by comparing it with a golden
// frame of an identical die taken at the same relative position.
//
// Coordinates are pixels: x to the right, y downward, pixel (i, j) centred at
// (i, j). camera.Info.ToMachine converts them to machine coordinates.
package analysis

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"image"
	"math/bits"
	"slices"

	"github.com/waferd/waferd/camera"
)

// Defaults applied to zero Detector fields.
//
// DefaultBandRows bounds the time to notice a stop: a band of 8 rows of a
// 2048-wide frame takes about 4 µs on a typical frame and under 0.5 ms on
// one riddled with suspect pixels (2-core AMD EPYC; a few times more on an
// ARM board), while a check costs a few nanoseconds, about 0.1% of a frame.
const (
	DefaultThreshold = 40
	DefaultMinArea   = 6
	DefaultBandRows  = 8
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
	// many rows. 0 means DefaultBandRows; a value at least the frame height
	// checks once per frame.
	BandRows int

	runs   []run    // mask runs of the whole frame, row by row, x ascending
	parent []int32  // union-find forest over runs; roots are the smallest index
	comp   []int32  // run index (of a root) -> index into stats
	stats  []stats  // one per component
	sorted []Defect // merge buffer of sortDefects
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

var le = binary.LittleEndian

// ErrSizeMismatch is returned (wrapped) when the frame and the golden frame
// differ in size.
var ErrSizeMismatch = errors.New("analysis: frame and golden differ in size")

// Detect compares frame against golden (same size): pixels with
// |frame - golden| > Threshold are suspect, 8-connected suspects form
// components, and components of at least MinArea pixels are appended to dst
// as Defects, sorted by centroid Y then X. It returns the extended dst.
//
// Detect checks ctx before each band of BandRows rows and, on frames with
// very many suspect pixels or defects, every few hundred microseconds while
// labelling and sorting them; when ctx is cancelled it returns dst unchanged
// and an error wrapping context.Cause(ctx). A size mismatch returns an error
// wrapping ErrSizeMismatch; a frame whose Pix cannot hold its Height rows of
// Stride bytes (the last one Width bytes) returns an error. Frame and golden
// may have different strides. Detect does not keep references to the frames.
// In steady state it allocates nothing beyond the growth of dst.
func (d *Detector) Detect(ctx context.Context, frame, golden *camera.Frame, dst []Defect) ([]Defect, error) {
	if frame == nil || golden == nil {
		return dst, errors.New("analysis: detect: nil frame")
	}
	if frame.Width != golden.Width || frame.Height != golden.Height {
		return dst, fmt.Errorf("%w: frame %dx%d, golden %dx%d", ErrSizeMismatch,
			frame.Width, frame.Height, golden.Width, golden.Height)
	}
	if err := checkGeometry("frame", frame); err != nil {
		return dst, err
	}
	if err := checkGeometry("golden", golden); err != nil {
		return dst, err
	}
	threshold := d.Threshold
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

	s := newScan(threshold)
	w, fs, gs := frame.Width, frame.Stride, golden.Stride
	d.runs = d.runs[:0]
	d.parent = d.parent[:0]
	prevStart, prevEnd := 0, 0 // runs of the previous row
	for y0 := 0; y0 < frame.Height; y0 += band {
		if ctx.Err() != nil {
			return dst, fmt.Errorf("analysis: detect: %w", context.Cause(ctx))
		}
		for y := y0; y < min(y0+band, frame.Height); y++ {
			curStart := len(d.runs)
			d.scanRow(frame.Pix[y*fs:y*fs+w], golden.Pix[y*gs:y*gs+w], int32(y), &s)
			if curStart != len(d.runs) {
				d.link(prevStart, prevEnd, curStart, len(d.runs))
			}
			prevStart, prevEnd = curStart, len(d.runs)
		}
	}

	start := len(dst)
	dst, err := d.collect(ctx, dst, minArea)
	if err == nil {
		err = d.sortDefects(ctx, dst[start:])
	}
	if err != nil {
		return dst[:start], fmt.Errorf("analysis: detect: %w", err)
	}
	return dst, nil
}

// checkGeometry reports a frame whose Pix cannot hold its rows.
func checkGeometry(name string, f *camera.Frame) error {
	if f.Width < 0 || f.Height < 0 || f.Stride < f.Width ||
		(f.Height > 0 && len(f.Pix) < (f.Height-1)*f.Stride+f.Width) {
		return fmt.Errorf("analysis: detect: %s: bad geometry %dx%d stride %d, %d bytes",
			name, f.Width, f.Height, f.Stride, len(f.Pix))
	}
	return nil
}

// The threshold scan reads the rows as little-endian 64-bit words of 8
// pixels and tests each word with a conservative test (see lanes) of about a
// dozen operations, which passes the vast majority of words: defects are
// rare. It skips blocks of blockLen pixels that pass as a whole; in a block
// that does not, it skips the words that pass and takes the runs of the
// others from an exact mask of their suspect pixels (see exactMask). The
// last pixels of a row that do not fill a word are tested one by one.
const (
	blockLen = 64
	wordLen  = 8
	lo8      = 0x0101010101010101 // 0x01 in every byte
	lo7      = 0x7f * lo8         // 0x7f in every byte
	hi8      = 0x80 * lo8         // 0x80 in every byte
	lo16     = 0x00ff00ff00ff00ff // 0x00ff in every 16-bit lane
	hi16     = 0x8000800080008000 // 0x8000 in every 16-bit lane
	one16    = 0x0001000100010001 // 1 in every 16-bit lane
)

// scan holds the per-Detect constants of the threshold scan.
type scan struct {
	threshold int32  // exact test: |f - g| > threshold
	c         uint64 // exact word test, see exactMask
	cK, cL    uint64 // conservative word test, see lanes
}

func newScan(threshold uint8) scan {
	t := uint64(threshold)
	return scan{
		threshold: int32(threshold),
		c:         (0x8000 - t - 1) * one16,
		cK:        (128 - t/2) * lo8,
		cL:        (t + 1) / 2 * lo8,
	}
}

// lanes is the conservative test on 8 pixels: a = 8 frame pixels, b = the
// golden ones, little-endian. For every pixel with |a-b| > T (and, rarely,
// for one with |a-b| = T), the pixel's byte of hi has bit 7 set or its byte
// of lo has bit 7 clear. For the other pixels it is the reverse.
//
// Per byte, r = floor((a + 255-b) / 2) = 127 + floor((a-b+1) / 2) is the
// carry-free average of a and ^b: (a & ^b) + ((a ^ ^b) >> 1 & 0x7f).
// a-b >= T+1 implies r >= K = 127 + floor((T+2)/2) (>= 128), and
// a-b <= -(T+1) implies r <= L = 127 - ceil(T/2) (<= 127). With
// t = r & 0x7f:
//
//	r >= K  iff  bit 7 of r & (t + 256-K)      256-K = 128 - floor(T/2) = cK
//	r <= L  iff  bit 7 of ^(r | (t + 127-L))   127-L = ceil(T/2)        = cL
//
// Both sums stay below 256, so no carry crosses a byte.
func lanes(a, b, cK, cL uint64) (hi, lo uint64) {
	nb := ^b
	r := a&nb + (a^nb)>>1&lo7
	t := r & lo7
	return r & (t + cK), r | (t + cL)
}

// wordClean reports whether the 8 pixels f[:8] (frame) and g[:8] (golden)
// pass the conservative test: none of them is suspect.
func wordClean(f, g *[wordLen]byte, cK, cL uint64) bool {
	hi, lo := lanes(le.Uint64(f[:]), le.Uint64(g[:]), cK, cL)
	return (hi|^lo)&hi8 == 0
}

// exactMask returns the suspect pixels among 8: a = 8 frame pixels, b = the
// golden ones, little-endian; bit i is set iff |a_i - b_i| > T. It works on
// 16-bit lanes of one pixel each, the even pixels then the odd ones: with
// c = 0x8000 - (T+1) in each lane, a - b + c (between 0x8000-511 and
// 0x8000+254, so no borrow or carry crosses a lane) has bit 15 set iff
// a - b >= T+1, and b - a + c iff b - a >= T+1.
func exactMask(a, b, c uint64) uint8 {
	ae, be := a&lo16, b&lo16
	ao, bo := a>>8&lo16, b>>8&lo16
	even := (ae + c - be) | (be + c - ae) // bit 15 of lane j: pixel 2j
	odd := (ao + c - bo) | (bo + c - ao)  // bit 15 of lane j: pixel 2j+1
	m := (even&hi16)>>8 | odd&hi16        // bit 7 of byte i: pixel i
	// Gather bit 7 of each byte into the top byte, pixel i at bit 56+i.
	return uint8((m >> 7) * 0x0102040810204080 >> 56)
}

// skipClean returns the length of the longest prefix of f (frame) and g
// (golden, at least as long) made of whole blocks that pass the conservative
// test: they hold no suspect pixel. This loop is where Detect spends its
// time on a clean frame.
func skipClean(f, g []byte, cK, cL uint64) int {
	g = g[:len(f)]
	i := 0
	for ; i <= len(f)-blockLen; i += blockLen {
		p, q := (*[blockLen]byte)(f[i:]), (*[blockLen]byte)(g[i:])
		h, l := lanes(le.Uint64(p[0:]), le.Uint64(q[0:]), cK, cL)
		h1, l1 := lanes(le.Uint64(p[8:]), le.Uint64(q[8:]), cK, cL)
		h2, l2 := lanes(le.Uint64(p[16:]), le.Uint64(q[16:]), cK, cL)
		h3, l3 := lanes(le.Uint64(p[24:]), le.Uint64(q[24:]), cK, cL)
		h |= h1 | h2 | h3
		l &= l1 & l2 & l3
		h4, l4 := lanes(le.Uint64(p[32:]), le.Uint64(q[32:]), cK, cL)
		h5, l5 := lanes(le.Uint64(p[40:]), le.Uint64(q[40:]), cK, cL)
		h6, l6 := lanes(le.Uint64(p[48:]), le.Uint64(q[48:]), cK, cL)
		h7, l7 := lanes(le.Uint64(p[56:]), le.Uint64(q[56:]), cK, cL)
		h |= h4 | h5 | h6 | h7
		l &= l4 & l5 & l6 & l7
		if (h|^l)&hi8 != 0 {
			break
		}
	}
	return i
}

// scanRow appends the runs of suspect pixels of row y, f (frame) and g
// (golden, same length).
func (d *Detector) scanRow(f, g []byte, y int32, s *scan) {
	w := len(f)
	g = g[:w]
	x := 0
	var cur run // the open run, if open
	open := false
	for {
		x += skipClean(f[x:], g[x:], s.cK, s.cL)
		// Either a block at x failed the test or fewer than blockLen pixels
		// are left: go word by word to its end, and on while a run is open.
		end := min(x+blockLen, w)
		for ; x <= w-wordLen && (x < end || open); x += wordLen {
			p, q := (*[wordLen]byte)(f[x:]), (*[wordLen]byte)(g[x:])
			if open || !wordClean(p, q, s.cK, s.cL) {
				open = d.scanWord(p, q, int32(x), y, s, &cur, open)
			}
		}
		if x > w-wordLen {
			break
		}
	}
	// Fewer than 8 pixels are left: scan them one by one if a run is open,
	// the row is shorter than a word, or the row's last word (overlapping
	// pixels already scanned) fails the test.
	if x < w && (open || w < wordLen ||
		!wordClean((*[wordLen]byte)(f[w-wordLen:]), (*[wordLen]byte)(g[w-wordLen:]), s.cK, s.cL)) {
		open = d.scanPixels(f[x:], g[x:], int32(x), y, s.threshold, &cur, open)
	}
	if open {
		cur.x1 = int32(w)
		d.addRun(cur)
	}
}

// scanWord extends the runs of row y with the 8 pixels at x, p (frame) and
// q (golden). *cur is the open run if open; it returns whether a run is open
// at the end of the word.
func (d *Detector) scanWord(p, q *[wordLen]byte, x, y int32, s *scan, cur *run, open bool) bool {
	m := exactMask(le.Uint64(p[:]), le.Uint64(q[:]), s.c)
	if open {
		k := bits.TrailingZeros8(^m) // the open run goes on over [0, k)
		cur.peak = max(cur.peak, peak(p[:k], q[:k]))
		if k == wordLen {
			return true
		}
		cur.x1 = x + int32(k)
		d.addRun(*cur)
		m &^= 1<<k - 1
	}
	for m != 0 {
		i := bits.TrailingZeros8(m)
		j := i + bits.TrailingZeros8(^(m >> i)) // the run is [i, j)
		r := run{x0: x + int32(i), y: y, peak: peak(p[i:j], q[i:j])}
		if j == wordLen {
			*cur = r
			return true
		}
		r.x1 = x + int32(j)
		d.addRun(r)
		m &^= 1<<j - 1
	}
	return false
}

// peak returns the largest |f[i] - g[i]|, or 0 if f is empty.
func peak(f, g []byte) int32 {
	g = g[:len(f)]
	var p int32
	for i := range f {
		diff := int32(f[i]) - int32(g[i])
		p = max(p, diff, -diff)
	}
	return p
}

// scanPixels extends the runs of row y with pixels f (frame) and g (golden,
// at least as long) starting at x0. *cur is the open run if open; it returns
// whether a run is open at the end of f.
func (d *Detector) scanPixels(f, g []byte, x0, y, threshold int32, cur *run, open bool) bool {
	g = g[:len(f)]
	for i := range f {
		diff := int32(f[i]) - int32(g[i])
		diff = max(diff, -diff)
		if diff > threshold {
			if !open {
				open = true
				*cur = run{x0: x0 + int32(i), y: y, peak: diff}
			} else if diff > cur.peak {
				cur.peak = diff
			}
		} else if open {
			open = false
			cur.x1 = x0 + int32(i)
			d.addRun(*cur)
		}
	}
	return open
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

// labelRuns is how many runs collect labels, and sortLen how many defects
// sortDefects sorts or merges, between checks of ctx: a few hundred
// microseconds of work each, the time a band takes on a frame riddled with
// suspect pixels.
const (
	labelRuns = 1 << 13
	sortLen   = 1 << 11
)

// collect accumulates the runs per component and appends those of at least
// minArea pixels to dst. On a frame with very many runs it checks ctx every
// labelRuns runs.
func (d *Detector) collect(ctx context.Context, dst []Defect, minArea int) ([]Defect, error) {
	n := len(d.runs)
	d.comp = slices.Grow(d.comp[:0], n)[:n]
	d.stats = d.stats[:0]
	for i := range n {
		if i%labelRuns == labelRuns-1 && ctx.Err() != nil {
			return dst, context.Cause(ctx)
		}
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
	for i, s := range d.stats {
		if i%labelRuns == labelRuns-1 && ctx.Err() != nil {
			return dst, context.Cause(ctx)
		}
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
	return dst, nil
}

// sortDefects sorts ds by compareDefects. Up to sortLen defects (any
// sensible frame), it is one slices.SortFunc. Beyond, it sorts chunks of
// sortLen and merges them bottom-up through d.sorted, checking ctx between
// chunks and every sortLen merged defects, so that a frame with very many
// defects does not hold up a stop. It returns context.Cause(ctx) when ctx is
// cancelled, leaving ds in some order.
func (d *Detector) sortDefects(ctx context.Context, ds []Defect) error {
	n := len(ds)
	if n <= sortLen {
		slices.SortFunc(ds, compareDefects)
		return nil
	}
	for i := 0; i < n; i += sortLen {
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		slices.SortFunc(ds[i:min(i+sortLen, n)], compareDefects)
	}
	d.sorted = slices.Grow(d.sorted[:0], n)[:n]
	src, dst := ds, d.sorted
	for width := sortLen; width < n; width *= 2 {
		for lo := 0; lo < n; lo += 2 * width {
			mid, hi := min(lo+width, n), min(lo+2*width, n)
			if !merge(ctx, dst[lo:hi], src[lo:mid], src[mid:hi]) {
				return context.Cause(ctx)
			}
		}
		src, dst = dst, src
	}
	if &src[0] != &ds[0] {
		copy(ds, src)
	}
	return nil
}

// merge merges the sorted a and b into dst (len(a)+len(b) long), checking
// ctx every sortLen defects. It reports false if ctx was cancelled.
func merge(ctx context.Context, dst, a, b []Defect) bool {
	i, j := 0, 0
	for k := range dst {
		if k%sortLen == sortLen-1 && ctx.Err() != nil {
			return false
		}
		if j == len(b) || (i < len(a) && compareDefects(b[j], a[i]) >= 0) {
			dst[k] = a[i]
			i++
		} else {
			dst[k] = b[j]
			j++
		}
	}
	return true
}

func compareDefects(a, b Defect) int {
	if c := cmp.Compare(a.Y, b.Y); c != 0 {
		return c
	}
	return cmp.Compare(a.X, b.X)
}
