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
	"math"
	"math/bits"
	"slices"

	"github.com/waferd/waferd/camera"
)

// Defaults applied to zero Detector fields.
//
// DefaultBandRows bounds the time to notice a stop: a band of 8 rows of a
// 2048-wide frame takes about 1.5 µs on a typical frame and under 0.5 ms on
// one riddled with suspect pixels (2-core AMD EPYC; a few times more on an
// ARM board), while a check costs a few nanoseconds: the checks of a frame
// cost under 1% of it.
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
	// BandRows: Detect checks ctx for cancellation once for each band of
	// this many rows (see Detect). 0 means DefaultBandRows; a value at least
	// the frame height checks once per frame.
	BandRows int

	// The golden frame prepared by Prepare, if any: ref[i] is the golden
	// word of the 7 pixels from 7i prepared for the block test with
	// prepThreshold, holding those pixels whole (see refWord).
	prepared      *camera.Frame
	prepThreshold uint8
	ref           []uint64

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

var (
	le = binary.LittleEndian
	be = binary.BigEndian
)

// ErrSizeMismatch is returned (wrapped) when the frame and the golden frame
// differ in size.
var ErrSizeMismatch = errors.New("analysis: frame and golden differ in size")

// Prepare readies d to compare frames against golden faster: Detect, given
// this golden (the same *camera.Frame) and a frame whose rows are back to
// back like golden's, then reads a form of golden computed here instead
// of golden: for its block test (the pass over the clean pixels, nearly all
// of the time), it spares two of its five operations per 7 pixels, and
// where pixels are suspect, the form holds the golden pixels too, so that
// Detect does not wait for golden to come into the cache. It costs about
// one pass over golden and keeps 8 bytes per 7 pixels, reused by the next
// Prepare (it allocates only for a golden larger than any before).
//
// golden must not change while d is prepared for it: Prepare again after
// changing it. Prepare(nil) forgets the preparation. A Threshold changed
// after Prepare, or a golden whose rows are not back to back, leaves Detect
// on its ordinary path (same results).
func (d *Detector) Prepare(golden *camera.Frame) {
	d.prepared = nil
	if golden == nil || golden.Width <= 0 || golden.Stride != golden.Width ||
		checkGeometry("golden", golden) != nil || golden.Width*golden.Height < wordLen {
		return
	}
	n := golden.Width * golden.Height
	g := golden.Pix[:n]
	threshold := d.threshold()
	bc, _ := blockConsts(threshold)
	words := (n-wordLen)/(wordLen-1) + 1 // one per 7 pixels while 8 fit
	d.ref = slices.Grow(d.ref[:0], words)[:words]
	for i := range d.ref {
		j := i * (wordLen - 1)
		d.ref[i] = refWord(le.Uint64(g[j:j+wordLen:j+wordLen]), bc)
	}
	d.prepared, d.prepThreshold = golden, threshold
}

// refWord returns golden word b (8 pixels, little-endian) prepared for the
// block test with constant c (see blockConsts): r = c - b&^lo8, so that
// blockWord(a, b, c) = a&^lo8 + r modulo 2^64. Of the last byte the block
// test keeps only bit 0 (its mask has no other bit there), so bits 1..7 of
// r keep instead the lowest bits of pixels 0..6: r holds those 7 golden
// pixels whole (see goldenWord).
func refWord(b, c uint64) uint64 {
	const lo8x7 = lo8 >> 8                        // 0x01 in bytes 0..6
	lsb := (b & lo8x7) * 0x0102040810204080 >> 56 // bit 0 of byte i at bit i
	return (c-b&notLo8)&^(0xfe<<56) | lsb<<57
}

// goldenWord returns the golden pixels 0..6 that r holds (see refWord) in
// bytes 0..6; byte 7 is garbage. c is refWord's constant.
func goldenWord(r, c uint64) uint64 {
	// c - r is b&^lo8 in bytes 0..6. The multiplication puts bit i of
	// r>>57 at bit 8i; its partial products fall on distinct bits, so no
	// carry mixes them.
	return (c-r)&notLo8 | (r>>57)*0x0002040810204081&lo8
}

// threshold is Threshold or its default.
func (d *Detector) threshold() uint8 {
	if d.Threshold == 0 {
		return DefaultThreshold
	}
	return d.Threshold
}

// Detect compares frame against golden (same size): pixels with
// |frame - golden| > Threshold are suspect, 8-connected suspects form
// components, and components of at least MinArea pixels are appended to dst
// as Defects, sorted by centroid Y then X. It returns the extended dst.
//
// Detect checks ctx once for each band of BandRows rows and, on frames with
// very many suspect pixels or defects, every few hundred microseconds while
// labelling and sorting them; when ctx is cancelled it returns dst unchanged
// and an error wrapping context.Cause(ctx). The check of a band comes before
// the band is scanned, except in frames whose rows are back to back (Stride
// equal to Width in both frames, as the camera's): there the scan skips
// clean pixels across row and band ends, and checks as it reaches a band or
// up to 2^18 clean pixels (about 20 µs) later. Such frames are also the
// fastest to scan.
//
// A size mismatch returns an error wrapping ErrSizeMismatch; a frame whose
// Pix cannot hold its Height rows of Stride bytes (the last one Width bytes)
// returns an error. Frame and golden may have different strides. Detect
// does not keep references to the frames. In steady state it allocates
// nothing beyond the growth of dst.
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
	threshold := d.threshold()
	minArea := d.MinArea
	if minArea <= 0 {
		minArea = DefaultMinArea
	}
	band := d.BandRows
	if band <= 0 {
		band = DefaultBandRows
	}

	s := newScan(threshold)
	w, h, fs, gs := frame.Width, frame.Height, frame.Stride, golden.Stride
	d.runs = d.runs[:0]
	d.parent = d.parent[:0]
	rows := rowLinks{prev: lastRow{y: -2}, cur: lastRow{y: -2}}
	if fs == w && gs == w && w > 0 {
		// The rows are back to back in both frames.
		var ref []uint64
		if golden == d.prepared && threshold == d.prepThreshold {
			ref = d.ref
		}
		if err := d.scanPacked(ctx, frame.Pix[:h*w], golden.Pix[:h*w], ref, w, band, &s, &rows); err != nil {
			return dst, fmt.Errorf("analysis: detect: %w", err)
		}
	} else {
		for y0 := 0; y0 < h; y0 += band {
			if ctx.Err() != nil {
				return dst, fmt.Errorf("analysis: detect: %w", context.Cause(ctx))
			}
			for y := y0; y < y0+min(band, h-y0); y++ {
				d.scanRow(frame.Pix[y*fs:y*fs+w], golden.Pix[y*gs:y*gs+w], y, &s, &rows)
			}
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

// The threshold scan has two tests of 8 little-endian pixels (one uint64
// word) of the frame against the same 8 of the golden frame.
//
// The block test (see blockWord) is the fast path: 5 operations per word,
// each word vouching for its first 7 pixels only, so skipClean reads the
// words of a block of blockLen pixels at a stride of 7 bytes. It is
// conservative: it fails every suspect pixel, and passes only pixels well
// within the threshold (for T = 40, all with |frame - golden| <= 30; see
// blockConsts). Defects are rare, so nearly every block passes. The pixels
// of a row (or band) that do not fill a block take the block test word by
// word, the last word read big-endian so that it ends with the last pixel.
//
// Where the block test fails, the scan goes word by word over 8-pixel words:
// the word test (see lanes), about a dozen operations, skips most words, and
// the runs of the others come from an exact mask of their suspect pixels
// (see exactMask). With golden prepared, it goes over the prepared 7-pixel
// words instead, the block test in place of the word test (see
// scanWordsRef).
const (
	blockWords = 32
	blockLen   = 7 * blockWords // pixels a block vouches for
	blockRead  = blockLen + 1   // bytes a block reads: its last word ends one pixel beyond it
	quarterLen = blockLen / 4   // a multiple of wordLen
	minSkip    = 1 << 18        // pixels skipClean tests between checks of ctx, at least
	wordLen    = 8
	lo8        = 0x0101010101010101 // 0x01 in every byte
	lo7        = 0x7f * lo8         // 0x7f in every byte
	hi8        = 0x80 * lo8         // 0x80 in every byte
	notLo8     = 0xfe * lo8         // 0xfe in every byte
	lo16       = 0x00ff00ff00ff00ff // 0x00ff in every 16-bit lane
	hi16       = 0x8000800080008000 // 0x8000 in every 16-bit lane
	one16      = 0x0001000100010001 // 1 in every 16-bit lane
)

// scan holds the per-Detect constants of the threshold scan.
type scan struct {
	threshold int32  // exact test: |f - g| > threshold
	c         uint64 // exact word test, see exactMask
	cK, cL    uint64 // word test, see lanes
	bc, bm    uint64 // block test, see blockWord
}

func newScan(threshold uint8) scan {
	t := uint64(threshold)
	bc, bm := blockConsts(threshold)
	return scan{
		threshold: int32(threshold),
		c:         (0x8000 - t - 1) * one16,
		cK:        (128 - t/2) * lo8,
		cL:        (t + 1) / 2 * lo8,
		bc:        bc,
		bm:        bm,
	}
}

// blockConsts returns the constants of blockWord for threshold T.
//
// With A = a>>1 and B = b>>1 (the pixels without their lowest bit), a pixel
// with |a-b| >= T+1 has |A-B| >= s = ceil(T/2). Byte i of the word sum is
// v = 2(A-B) + c, plus the carry out of byte i-1; c is even, so bit 0 of
// byte i is that carry's parity. A pixel passes when v is in [0, 2^m), that
// is 2(A-B) in [-c, 2^m - c). Both ends must stay short of ±2s: c <= 2s-2
// and 2^m <= 2s + c. The widest window, centred, is 2^m <= 4s-2 with
// c = 2^(m-1) (m capped at 8, the byte); for s = 1 (T <= 2) it is A = B.
// For T = 40: s = 20, m = 6, c = 32, and pixels with A-B in [-16, 16) pass:
// all those with |a-b| <= 30, none with |a-b| >= 34.
//
// The mask holds, in bytes 0..6, bits m..7 (v out of the window) and bit 0
// (a carry from the byte below); in byte 7, only bit 0.
func blockConsts(threshold uint8) (c, mask uint64) {
	s := (uint64(threshold) + 1) / 2
	m := 1
	if s >= 2 {
		m = min(bits.Len64(4*s-2)-1, 8)
		c = 1 << (m - 1)
	}
	perByte := uint64(0xff<<m&0xff | 1)
	return c * lo8, perByte*lo8&(1<<56-1) | 1<<56
}

// blockWord is the block test on 8 pixels: a = 8 frame pixels, b = the
// golden ones, little-endian; c from blockConsts. The result, masked with
// blockConsts' mask, is 0 if pixels 0..6 all pass (see blockConsts), and
// nonzero if any of them is suspect. Pixel 7 is not tested.
//
// Clearing the lowest bit of each byte makes every byte's difference fit in
// 9 bits, and the 9th bit, the carry, lands in bit 0 of the next byte. Let
// pixel i be the first that does not pass. The bytes below it pass, so they
// carry nothing: byte i holds v exactly if v is in [0, 256), and fails the
// mask, and otherwise carries ±1 into bit 0 of byte i+1 (v is in
// (-256, 512)). If all of pixels 0..6 pass, nothing carries and the mask
// finds nothing. Bits above the first failing pixel may be garbage.
func blockWord(a, b, c uint64) uint64 {
	return a&notLo8 - b&notLo8 + c
}

// wordClean reports whether the 8 pixels f[:8] (frame) and g[:8] (golden)
// pass the word test (see lanes): none of them is suspect.
func wordClean(f, g *[wordLen]byte, cK, cL uint64) bool {
	hi, lo := lanes(le.Uint64(f[:]), le.Uint64(g[:]), cK, cL)
	return (hi|^lo)&hi8 == 0
}

// lanes is the word test on 8 pixels: a = 8 frame pixels, b = the golden
// ones, little-endian. For every pixel with |a-b| > T (and, rarely, for one
// with |a-b| = T), the pixel's byte of hi has bit 7 set or its byte of lo
// has bit 7 clear. For the other pixels it is the reverse.
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

// checker has Detect check ctx as the scan reaches pixel next, and then
// every step pixels, in the pixels of a frame whose rows are back to back.
type checker struct {
	ctx        context.Context
	next, step int
}

// noCheck is a checker that never checks.
var noCheck = checker{next: math.MaxInt}

// check checks ctx and schedules the next check.
func (k *checker) check() error {
	k.next += k.step
	if k.ctx.Err() != nil {
		return context.Cause(k.ctx)
	}
	return nil
}

// skipClean returns the end of the longest stretch of f (frame) and g
// (golden, at least as long) from i on that passes the block test (see
// blockWord): it holds no suspect pixel. It tests whole blocks of blockLen
// pixels (each reads blockRead bytes) while they fit, and returns the start
// of the first quarter block that fails. Then it tests the pixels left,
// fewer than blockRead, as one (see skipTail), and returns len(f) if they
// pass, else where they start.
//
// It has k check ctx once for each check point k.next it reaches, and
// returns the cause if ctx is cancelled. Leaving the block loop to check
// costs about as much as the check itself, so the loop goes on past a check
// point for at least minSkip pixels, and then makes all the checks due.
//
// With ref, golden prepared (see Prepare; nil if not), the blocks lie on
// the grid of ref, 7-pixel words from the frame's first pixel: the skip
// starts at the grid point at or before i, so it may test up to 6 pixels
// before i again (harmless: it never returns a position before i).
func skipClean(f, g []byte, ref []uint64, i int, s *scan, k *checker) (int, error) {
	n := len(f)
	g = g[:n]
	from := i
	if ref != nil {
		i -= i % (wordLen - 1)
	}
	last := n - blockRead // the last pixel a whole block can start at
	for {
		for i >= k.next {
			if err := k.check(); err != nil {
				return from, err
			}
		}
		if i > last {
			i = max(i, from)
			return i + skipTail(f[i:], g[i:], s), nil
		}
		// Blocks from i to the next check point or minSkip pixels on,
		// whichever is further, or to the last whole block.
		end := min(max(k.next, i+minSkip), last+1)
		var j int
		var failed bool
		if ref != nil {
			j, failed = skipBlocksRef(f[i:end-1+blockRead], ref[i/(wordLen-1):], s.bm)
		} else {
			j, failed = skipBlocks(f[i:end-1+blockRead], g[i:], s.bc, s.bm)
		}
		i += j
		if failed {
			return max(i, from), nil
		}
	}
}

// skipBlocks tests the blocks of f (frame) and g (golden, at least as long)
// that start at 0, blockLen, 2*blockLen, ... and fit in f. It returns the
// start of the first quarter block that fails and true, or the start of the
// first block that does not fit and false. This loop is where Detect spends
// its time on a clean frame.
func skipBlocks(f, g []byte, c, mask uint64) (int, bool) {
	n := len(f)
	g = g[:n:n]
	i := 0
	for ; i <= n-blockRead; i += blockLen {
		// Three-index slices have a known non-zero capacity, which spares
		// the pointer masking of f[i:].
		p := (*[blockRead]byte)(f[i : i+blockRead : i+blockRead])
		q := (*[blockRead]byte)(g[i : i+blockRead : i+blockRead])
		// xk tests quarter k of the block: 8 words, 56 pixels.
		x0 := blockWord(le.Uint64(p[0:]), le.Uint64(q[0:]), c) |
			blockWord(le.Uint64(p[7:]), le.Uint64(q[7:]), c) |
			blockWord(le.Uint64(p[14:]), le.Uint64(q[14:]), c) |
			blockWord(le.Uint64(p[21:]), le.Uint64(q[21:]), c)
		x1 := blockWord(le.Uint64(p[56:]), le.Uint64(q[56:]), c) |
			blockWord(le.Uint64(p[63:]), le.Uint64(q[63:]), c) |
			blockWord(le.Uint64(p[70:]), le.Uint64(q[70:]), c) |
			blockWord(le.Uint64(p[77:]), le.Uint64(q[77:]), c)
		x2 := blockWord(le.Uint64(p[112:]), le.Uint64(q[112:]), c) |
			blockWord(le.Uint64(p[119:]), le.Uint64(q[119:]), c) |
			blockWord(le.Uint64(p[126:]), le.Uint64(q[126:]), c) |
			blockWord(le.Uint64(p[133:]), le.Uint64(q[133:]), c)
		x3 := blockWord(le.Uint64(p[168:]), le.Uint64(q[168:]), c) |
			blockWord(le.Uint64(p[175:]), le.Uint64(q[175:]), c) |
			blockWord(le.Uint64(p[182:]), le.Uint64(q[182:]), c) |
			blockWord(le.Uint64(p[189:]), le.Uint64(q[189:]), c)
		x0 |= blockWord(le.Uint64(p[28:]), le.Uint64(q[28:]), c) |
			blockWord(le.Uint64(p[35:]), le.Uint64(q[35:]), c) |
			blockWord(le.Uint64(p[42:]), le.Uint64(q[42:]), c) |
			blockWord(le.Uint64(p[49:]), le.Uint64(q[49:]), c)
		x1 |= blockWord(le.Uint64(p[84:]), le.Uint64(q[84:]), c) |
			blockWord(le.Uint64(p[91:]), le.Uint64(q[91:]), c) |
			blockWord(le.Uint64(p[98:]), le.Uint64(q[98:]), c) |
			blockWord(le.Uint64(p[105:]), le.Uint64(q[105:]), c)
		x2 |= blockWord(le.Uint64(p[140:]), le.Uint64(q[140:]), c) |
			blockWord(le.Uint64(p[147:]), le.Uint64(q[147:]), c) |
			blockWord(le.Uint64(p[154:]), le.Uint64(q[154:]), c) |
			blockWord(le.Uint64(p[161:]), le.Uint64(q[161:]), c)
		x3 |= blockWord(le.Uint64(p[196:]), le.Uint64(q[196:]), c) |
			blockWord(le.Uint64(p[203:]), le.Uint64(q[203:]), c) |
			blockWord(le.Uint64(p[210:]), le.Uint64(q[210:]), c) |
			blockWord(le.Uint64(p[217:]), le.Uint64(q[217:]), c)
		if (x0|x1|x2|x3)&mask != 0 {
			return i + failingQuarter(x0, x1, x2, mask), true
		}
	}
	return i, false
}

// skipBlocksRef is skipBlocks with golden prepared: ref[0] is the word of
// the golden pixels at f[0] (see Prepare). The test of a word is
// blockWord's, a&^lo8 - b&^lo8 + c computed as a&^lo8 + ref (the same sum
// modulo 2^64): three operations with the OR instead of five.
func skipBlocksRef(f []byte, ref []uint64, mask uint64) (int, bool) {
	n := len(f)
	i, w := 0, 0
	for ; i <= n-blockRead; i, w = i+blockLen, w+blockWords {
		p := (*[blockRead]byte)(f[i : i+blockRead : i+blockRead])
		q := (*[blockWords]uint64)(ref[w : w+blockWords : w+blockWords])
		// xk tests quarter k of the block: 8 words, 56 pixels.
		x0 := (le.Uint64(p[0:])&notLo8 + q[0]) |
			(le.Uint64(p[7:])&notLo8 + q[1]) |
			(le.Uint64(p[14:])&notLo8 + q[2]) |
			(le.Uint64(p[21:])&notLo8 + q[3]) |
			(le.Uint64(p[28:])&notLo8 + q[4]) |
			(le.Uint64(p[35:])&notLo8 + q[5]) |
			(le.Uint64(p[42:])&notLo8 + q[6]) |
			(le.Uint64(p[49:])&notLo8 + q[7])
		x1 := (le.Uint64(p[56:])&notLo8 + q[8]) |
			(le.Uint64(p[63:])&notLo8 + q[9]) |
			(le.Uint64(p[70:])&notLo8 + q[10]) |
			(le.Uint64(p[77:])&notLo8 + q[11]) |
			(le.Uint64(p[84:])&notLo8 + q[12]) |
			(le.Uint64(p[91:])&notLo8 + q[13]) |
			(le.Uint64(p[98:])&notLo8 + q[14]) |
			(le.Uint64(p[105:])&notLo8 + q[15])
		x2 := (le.Uint64(p[112:])&notLo8 + q[16]) |
			(le.Uint64(p[119:])&notLo8 + q[17]) |
			(le.Uint64(p[126:])&notLo8 + q[18]) |
			(le.Uint64(p[133:])&notLo8 + q[19]) |
			(le.Uint64(p[140:])&notLo8 + q[20]) |
			(le.Uint64(p[147:])&notLo8 + q[21]) |
			(le.Uint64(p[154:])&notLo8 + q[22]) |
			(le.Uint64(p[161:])&notLo8 + q[23])
		x3 := (le.Uint64(p[168:])&notLo8 + q[24]) |
			(le.Uint64(p[175:])&notLo8 + q[25]) |
			(le.Uint64(p[182:])&notLo8 + q[26]) |
			(le.Uint64(p[189:])&notLo8 + q[27]) |
			(le.Uint64(p[196:])&notLo8 + q[28]) |
			(le.Uint64(p[203:])&notLo8 + q[29]) |
			(le.Uint64(p[210:])&notLo8 + q[30]) |
			(le.Uint64(p[217:])&notLo8 + q[31])
		if (x0|x1|x2|x3)&mask != 0 {
			return i + failingQuarter(x0, x1, x2, mask), true
		}
	}
	return i, false
}

// failingQuarter returns the offset in its block of the first quarter
// that fails, given the block tests x0, x1, x2 of the first three (the
// block has failed).
func failingQuarter(x0, x1, x2, mask uint64) int {
	switch {
	case x0&mask != 0:
		return 0
	case x1&mask != 0:
		return quarterLen
	case x2&mask != 0:
		return 2 * quarterLen
	}
	return 3 * quarterLen
}

// skipTail is the block test on all of f (frame) and g (golden, at least as
// long), fewer than blockRead pixels: words at a stride of 7 while they fit,
// then the last 8 pixels read big-endian, so that the last pixel is in byte
// 0 and the word tests pixels n-7..n-1. It returns len(f) if all pass, else
// 0; also 0 if f holds 1 to 7 pixels, which it does not test.
func skipTail(f, g []byte, s *scan) int {
	n := len(f)
	if n < wordLen {
		return 0
	}
	g = g[:n]
	c := s.bc
	var acc uint64
	j := 0
	for ; j <= n-wordLen; j += wordLen - 1 {
		acc |= blockWord(le.Uint64(f[j:j+wordLen:j+wordLen]), le.Uint64(g[j:j+wordLen:j+wordLen]), c)
	}
	// Pixels [0, j) are tested, and fewer than wordLen are left.
	if j < n {
		acc |= blockWord(be.Uint64(f[n-wordLen:n:n]), be.Uint64(g[n-wordLen:n:n]), c)
	}
	if acc&s.bm != 0 {
		return 0
	}
	return n
}

// lastRow is a row and its runs [start, end).
type lastRow struct{ y, start, end int }

// rowLinks tracks the runs of the row being scanned, cur, and of the last
// row before it that has runs, prev, to link them.
type rowLinks struct{ prev, cur lastRow }

// scanPacked appends the runs of the rows of width w held back to back in f
// (frame) and g (golden, same length), and links them; ref, if not nil, is
// g prepared (see Prepare) for the block test. Clean stretches are
// skipped in blocks, across row ends; where some pixels fail the block
// test, the row is scanned word by word from there (see scanSegment), and
// the skipping goes on. It checks ctx once for each band of band rows: as
// the scan reaches the band, or, in a clean stretch, up to minSkip pixels
// later (see skipClean). It returns context.Cause(ctx) if ctx is cancelled.
func (d *Detector) scanPacked(ctx context.Context, f, g []byte, ref []uint64, w, band int, s *scan, rows *rowLinks) error {
	n := len(f)
	g = g[:n]
	k := checker{ctx: ctx, step: n}
	if band < n/w {
		k.step = band * w
	}
	for i := 0; i < n; {
		var err error
		i, err = skipClean(f, g, ref, i, s, &k)
		if err != nil {
			return err
		}
		if i == n {
			break
		}
		r := i / w
		i = r*w + d.scanSegment(f, g, ref, r*w, w, i-r*w, r, s, rows)
	}
	for k.next < n { // the checks the scan skipped over
		if err := k.check(); err != nil {
			return err
		}
	}
	return nil
}

// scanRow appends the runs of row y, f (frame) and g (golden, same length),
// and links them with those of row y-1.
func (d *Detector) scanRow(f, g []byte, y int, s *scan, rows *rowLinks) {
	for x := 0; ; {
		x, _ = skipClean(f, g, nil, x, s, &noCheck)
		if x == len(f) {
			return
		}
		x = d.scanSegment(f, g, nil, 0, len(f), x, y, s, rows)
	}
}

// scanSegment appends the runs of row y, f[row:row+w] (frame) and
// g[row:row+w] (golden), that start in the quarter block at x (in the row)
// or that a run open at its end leads to, and links them with those of row
// y-1; it returns the end of the pixels it scanned, in the row. The pixels
// of the row before x must have been scanned already, with no run open at
// x, and the rows before y too. ref, if not nil, is g prepared (see
// Prepare): the quarter block is then the 8 prepared words from the one
// that holds x (see scanWordsRef).
func (d *Detector) scanSegment(f, g []byte, ref []uint64, row, w, x, y int, s *scan, rows *rowLinks) int {
	if rows.cur.y != y { // a new row
		if rows.cur.end > rows.cur.start {
			rows.prev = rows.cur
		}
		rows.cur = lastRow{y, len(d.runs), len(d.runs)}
	}
	start := len(d.runs)
	if ref != nil {
		x = d.scanWordsRef(f, g, ref, row, w, x, int32(y), s)
	} else {
		x = d.scanWords(f[row:row+w], g[row:row+w], x, int32(y), s)
	}
	if len(d.runs) > start {
		if rows.prev.y == y-1 {
			d.link(rows.prev.start, rows.prev.end, start, len(d.runs))
		}
		rows.cur.end = len(d.runs)
	}
	return x
}

// scanWords appends the runs of suspect pixels of row y, f (frame) and g
// (golden, same length), that start in the quarter block at x or that a run
// open at its end leads to, and returns the end of the pixels it scanned.
// No run may be open at x.
func (d *Detector) scanWords(f, g []byte, x int, y int32, s *scan) int {
	w := len(f)
	g = g[:w]
	var cur run // the open run, if open
	open := false
	// Word by word over the quarter block at x (or to the row's end), and
	// on while a run is open.
	end := min(x+quarterLen, w)
	for ; x <= w-wordLen && (x < end || open); x += wordLen {
		p, q := (*[wordLen]byte)(f[x:]), (*[wordLen]byte)(g[x:])
		if open || !wordClean(p, q, s.cK, s.cL) {
			m := exactMask(le.Uint64(p[:]), le.Uint64(q[:]), s.c)
			open = d.scanWord(uint64(m), wordLen, p[:], q[:], int32(x), y, &cur, open)
		}
	}
	if x <= w-wordLen {
		return x // no run is open
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
	return w
}

// scanWordsRef is scanWords on frames whose rows are back to back, golden
// prepared as ref (see Prepare): f and g are the whole frames, row y is
// [row, row+w) of them, and x is in the row. It scans the quarter block
// of the 8 prepared words from the one that holds pixel x, and on while a
// run is open, and returns the end of the pixels it scanned, in the row.
// It goes over ref's 7-pixel words, which need not begin or end with the
// row, a quarter block at a time: the block test passes most words, the
// exact test (see exactMask) finds the suspect pixels of the others on the
// golden pixels the word holds, and scanWord follows the runs through the
// quarter's 56 pixels. It reads golden only for the frame's last few pixels, which no
// word of ref holds: the prepared skip does not read golden, which is
// therefore not in the cache.
func (d *Detector) scanWordsRef(f, g []byte, ref []uint64, row, w, x int, y int32, s *scan) int {
	const n = wordLen - 1 // pixels per word
	start, rowEnd := row+x, row+w
	var cur run // the open run, if open
	open := false
	at := start - start%n
	var q [quarterLen + 1]byte // golden pixels of the quarter block where suspect
	for at < rowEnd {
		i := at / n
		if i+quarterLen/n > len(ref) { // the frame's last pixels: one by one
			from := max(at, start)
			open = d.scanPixels(f[from:rowEnd], g[from:rowEnd], int32(from-row), y, s.threshold, &cur, open)
			at = rowEnd
			break
		}
		p := (*[quarterLen + 1]byte)(f[at : at+quarterLen+1])
		r := (*[quarterLen / n]uint64)(ref[i : i+quarterLen/n])
		var m uint64 // bit j: pixel at+j is suspect
		for k, rk := range r {
			a := le.Uint64(p[n*k:])
			if (a&notLo8+rk)&s.bm != 0 {
				b := goldenWord(rk, s.bc)
				le.PutUint64(q[n*k:], b)
				m |= uint64(exactMask(a, b, s.c)&(1<<n-1)) << (n * k)
			}
		}
		if at < start { // pixels before x: scanned already
			m &^= 1<<(start-at) - 1
		}
		if at+quarterLen > rowEnd { // pixels of the next row
			m &= 1<<(rowEnd-at) - 1
		}
		open = d.scanWord(m, quarterLen, p[:], q[:], int32(at-row), y, &cur, open)
		at += quarterLen
		if !open {
			break
		}
	}
	if open {
		cur.x1 = int32(w)
		d.addRun(cur)
	}
	return min(at, rowEnd) - row
}

// scanWord extends the runs of row y with the n pixels at x (n <= 64), p
// (frame) and q (golden), whose suspect pixels are the bits of m (pixel i
// at bit i; no bit at n or above): q need only hold the suspect ones. *cur
// is the open run if open; it returns whether a run is open at the end of
// the n pixels.
func (d *Detector) scanWord(m uint64, n int, p, q []byte, x, y int32, cur *run, open bool) bool {
	if open {
		k := bits.TrailingZeros64(^m) // the open run goes on over [0, k)
		cur.peak = max(cur.peak, peak(p[:k], q[:k]))
		if k == n {
			return true
		}
		cur.x1 = x + int32(k)
		d.addRun(*cur)
		m &^= 1<<k - 1
	}
	for m != 0 {
		i := bits.TrailingZeros64(m)
		j := i + bits.TrailingZeros64(^(m >> i)) // the run is [i, j)
		r := run{x0: x + int32(i), y: y, peak: peak(p[i:j], q[i:j])}
		if j == n {
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
