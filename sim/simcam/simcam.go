// Package simcam is a synthetic camera for the simulated board. It renders
// an 8-bit grey image of a patterned wafer, with planted defects, under the
// current stage position, and implements camera.Camera.
//
// # Geometry
//
// The camera is fixed and looks straight down; the frame centre is the stage
// position. Pixel (px, py) (x to the right, y downward) shows the machine
// point at its centre, as camera.Info.ToMachine defines it:
//
//	X = pos.X + (px + 0.5 - Width/2)  * PixelSize
//	Y = pos.Y - (py + 0.5 - Height/2) * PixelSize
//
// computed in whole micrometres (offsets rounded down when PixelSize is odd),
// so image y grows as machine Y decreases.
//
// # The wafer
//
// Outside the wafer disc the frame is near-black (grey 15). On the wafer,
// dies are centred at WaferCenter + (i*DiePitch.X, j*DiePitch.Y); 100 µm dark
// scribe lines (grey 60) separate them, and each die carries the same
// pattern of pads and blocks (grey 90 to 185 on a 115 background) that
// depends only on the position within the die. Two frames whose positions
// differ by whole die pitches are therefore identical pixel for pixel, apart
// from noise and defects: this is what golden-die comparison relies on.
// Choose DiePitch as a whole number of pixels (a multiple of PixelSize), so
// that every die on the grid also has its edges on the same pixel
// boundaries.
//
// All grey levels lie in [60, 185] on the wafer, so a defect with
// |Delta| ≥ 70 changes every pixel it covers by at least 60 grey levels even
// after clamping; on the background (off the wafer) a dark defect is
// invisible.
package simcam

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/waferd/waferd/camera"
	"github.com/waferd/waferd/motion"
)

// Grey levels of the synthetic wafer.
const (
	GreyBackground = 15  // off the wafer
	GreyScribe     = 60  // scribe lines between dies
	GreyDie        = 115 // die background
	GreyDark       = 3   // mean of a frame taken with the light off

	// ScribeWidth is the width of the scribe lines between dies.
	ScribeWidth motion.Distance = 100
)

// Defaults applied to zero Config fields.
const (
	DefaultWidth                     = 512
	DefaultHeight                    = 512
	DefaultPixelSize motion.Distance = 20
	DefaultNoise                     = 4
	DefaultFrameTime                 = 5 * time.Millisecond
	DefaultDiePitch  motion.Distance = 10 * motion.Millimetre
)

// Defect is a planted defect: a disc whose pixels are changed by Delta grey
// levels (clamped to 0..255).
type Defect struct {
	At     motion.Point    // centre, machine coordinates (µm)
	Radius motion.Distance // µm
	Delta  int             // grey-level change: negative dark, positive bright
}

// Config describes the synthetic camera and the wafer it sees.
type Config struct {
	// Width, Height of a frame in pixels. 0 means 512.
	Width, Height int
	// PixelSize is the size of a pixel on the wafer (µm). 0 means 20 µm.
	PixelSize motion.Distance
	// WaferCenter is the machine position of the wafer centre.
	WaferCenter motion.Point
	// WaferDiameter is required (> 0).
	WaferDiameter motion.Distance
	// DiePitch is the die pitch in X and Y (µm); a zero component means
	// 10 mm. Each must exceed twice the scribe width and should be a
	// multiple of PixelSize.
	DiePitch motion.Point
	// Defects are rendered wherever they fall in the field of view.
	Defects []Defect
	// Noise is the peak amplitude of the uniform per-pixel noise in grey
	// levels: each pixel gets an integer in [-Noise, +Noise]. 0 means 4;
	// negative means no noise. The noise is a deterministic function of Seed
	// and the frame sequence number.
	Noise int
	Seed  uint64
	// Position returns where the stage physically is; it is sampled when an
	// exposure starts. Required.
	Position func() motion.Point
	// Lit reports whether the light is on; it is sampled when an exposure
	// starts. With the light off a frame is dark (mean about 3). Required.
	Lit func() bool
	// FrameTime is how long a capture takes besides the exposure. 0 means
	// 5 ms; negative means none.
	FrameTime time.Duration
}

// Camera is the synthetic camera. It is safe for concurrent use; captures
// are serialised.
type Camera struct {
	cfg       Config
	info      camera.Info
	pool      *camera.Pool
	frameTime time.Duration
	noise     int

	// Die pattern: the die is cut into cells by the edges of its
	// structures; xEdges/yEdges are the cell boundaries (µm from the die's
	// lower-left corner) and cellGrey[yc*len(xEdges)+xc] the grey of a cell.
	xEdges, yEdges []int64
	cellGrey       []byte

	sem   chan struct{} // capture slot: one capture at a time
	done  chan struct{} // closed by Close
	frame *time.Timer   // the exposure and read-out wait; held with sem

	mu     sync.Mutex // guards the fault and close state
	closed bool
	hang   chan struct{} // non-nil while hanging; closed to release
	injErr error

	renderMu sync.Mutex // guards seq and scratch
	seq      uint64     // frames captured
	scratch  scratch

	streaming atomic.Bool
	captures  atomic.Uint64
}

var _ camera.Camera = (*Camera)(nil)

// New checks cfg, applies defaults and returns the camera.
func New(cfg Config) (*Camera, error) {
	if cfg.Width == 0 {
		cfg.Width = DefaultWidth
	}
	if cfg.Height == 0 {
		cfg.Height = DefaultHeight
	}
	if cfg.PixelSize == 0 {
		cfg.PixelSize = DefaultPixelSize
	}
	if cfg.DiePitch.X == 0 {
		cfg.DiePitch.X = DefaultDiePitch
	}
	if cfg.DiePitch.Y == 0 {
		cfg.DiePitch.Y = DefaultDiePitch
	}
	var errs []error
	if cfg.Width < 2 || cfg.Height < 2 {
		errs = append(errs, fmt.Errorf("frame size %dx%d too small", cfg.Width, cfg.Height))
	}
	if cfg.PixelSize < 0 {
		errs = append(errs, fmt.Errorf("pixel size %d µm must be > 0", cfg.PixelSize))
	}
	if cfg.WaferDiameter <= 0 {
		errs = append(errs, fmt.Errorf("wafer diameter %v must be > 0", cfg.WaferDiameter))
	}
	if cfg.DiePitch.X <= 2*ScribeWidth || cfg.DiePitch.Y <= 2*ScribeWidth {
		errs = append(errs, fmt.Errorf("die pitch %d×%d µm must exceed %d µm", cfg.DiePitch.X, cfg.DiePitch.Y, 2*ScribeWidth))
	}
	for i, d := range cfg.Defects {
		if d.Radius <= 0 {
			errs = append(errs, fmt.Errorf("defect %d at %v: radius %d µm must be > 0", i, d.At, d.Radius))
		}
	}
	if cfg.Position == nil {
		errs = append(errs, errors.New("Position is required"))
	}
	if cfg.Lit == nil {
		errs = append(errs, errors.New("Lit is required"))
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("simcam: config: %w", errors.Join(errs...))
	}
	pool, err := camera.NewPool(cfg.Width, cfg.Height)
	if err != nil {
		return nil, fmt.Errorf("simcam: %w", err)
	}
	c := &Camera{
		cfg:       cfg,
		info:      camera.Info{Width: cfg.Width, Height: cfg.Height, PixelSize: float64(cfg.PixelSize)},
		pool:      pool,
		frameTime: cfg.FrameTime,
		noise:     cfg.Noise,
		sem:       make(chan struct{}, 1),
		done:      make(chan struct{}),
		frame:     time.NewTimer(time.Hour),
	}
	c.frame.Stop()
	c.cfg.Defects = slices.Clone(cfg.Defects)
	switch {
	case c.frameTime == 0:
		c.frameTime = DefaultFrameTime
	case c.frameTime < 0:
		c.frameTime = 0
	}
	switch {
	case c.noise == 0:
		c.noise = DefaultNoise
	case c.noise < 0:
		c.noise = 0
	}
	c.buildPattern()
	return c, nil
}

// Info describes the frames: size and pixel size in µm.
func (c *Camera) Info() camera.Info { return c.info }

// Capture waits exposure+FrameTime on a timer, then renders the wafer under
// the stage position and light state sampled when the exposure started. If
// ctx is cancelled first the wait is abandoned at once and Capture returns an
// error wrapping context.Cause(ctx); the camera stays usable. After Close it
// returns camera.ErrClosed, also to a capture in progress. The caller must
// Release the frame.
func (c *Camera) Capture(ctx context.Context, exposure time.Duration) (*camera.Frame, error) {
	if exposure < 0 {
		return nil, fmt.Errorf("simcam: capture: negative exposure %v", exposure)
	}
	select {
	case c.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("simcam: capture: %w", context.Cause(ctx))
	case <-c.done:
		return nil, camera.ErrClosed
	}
	defer func() { <-c.sem }()

	c.mu.Lock()
	closed, hang, injErr := c.closed, c.hang, c.injErr
	switch {
	case closed:
		c.mu.Unlock()
		return nil, camera.ErrClosed
	case ctx.Err() != nil:
		c.mu.Unlock()
		return nil, fmt.Errorf("simcam: capture: %w", context.Cause(ctx))
	case injErr != nil:
		c.injErr = nil
		c.mu.Unlock()
		return nil, fmt.Errorf("simcam: capture: %w", injErr)
	}
	c.mu.Unlock()

	c.streaming.Store(true)
	defer c.streaming.Store(false)
	pos, lit := c.cfg.Position(), c.cfg.Lit()

	if hang != nil {
		select {
		case <-hang: // released: carry on with a normal frame wait
		case <-ctx.Done():
			return nil, fmt.Errorf("simcam: capture: %w", context.Cause(ctx))
		case <-c.done:
			return nil, camera.ErrClosed
		}
	}
	// One timer for every capture (under sem): a capture allocates
	// nothing but what the frame pool must.
	c.frame.Reset(exposure + c.frameTime)
	defer c.frame.Stop()
	select {
	case <-c.frame.C:
	case <-ctx.Done():
		return nil, fmt.Errorf("simcam: capture: %w", context.Cause(ctx))
	case <-c.done:
		return nil, camera.ErrClosed
	}

	f := c.pool.Get()
	c.renderMu.Lock()
	c.seq++
	f.Seq = c.seq
	c.render(f, pos, lit, f.Seq)
	c.renderMu.Unlock()
	f.Time = time.Now()
	c.captures.Add(1)
	return f, nil
}

// Close makes pending and later captures return camera.ErrClosed. It is safe
// to call more than once.
func (c *Camera) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.closed {
		c.closed = true
		close(c.done)
	}
	return nil
}

// InjectHang makes frame waits hang (on) until their ctx is cancelled, like a
// camera that stopped delivering frames. InjectHang(false) releases captures
// hanging at that moment; they then complete normally.
func (c *Camera) InjectHang(on bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case on && c.hang == nil:
		c.hang = make(chan struct{})
	case !on && c.hang != nil:
		close(c.hang)
		c.hang = nil
	}
}

// InjectError makes the next Capture return an error wrapping err (nil
// clears a pending injection).
func (c *Camera) InjectError(err error) {
	c.mu.Lock()
	c.injErr = err
	c.mu.Unlock()
}

// Streaming reports whether a capture is in progress (exposing or waiting
// for its frame).
func (c *Camera) Streaming() bool { return c.streaming.Load() }

// Captures returns the number of frames delivered.
func (c *Camera) Captures() uint64 { return c.captures.Load() }

// Render draws the frame a capture at pos with frame sequence number seq
// would produce, without waiting. It is the capture's renderer, exposed for
// tests and tools (e.g. to make a golden frame). Safe for concurrent use.
func (c *Camera) Render(pos motion.Point, lit bool, seq uint64) *camera.Frame {
	f := c.pool.Get()
	f.Seq = seq
	c.renderMu.Lock()
	c.render(f, pos, lit, seq)
	c.renderMu.Unlock()
	return f
}

// rect is a structure in a die, [x0,x1)×[y0,y1) in µm from the die's
// lower-left corner.
type rect struct {
	x0, y0, x1, y1 int64
	grey           byte
}

// structures lays out the die pattern in fractions of the pitch; later
// entries are drawn over earlier ones.
func structures(px, py int64) []rect {
	fr := func(fx0, fy0, fx1, fy1 float64, grey byte) rect {
		return rect{int64(fx0 * float64(px)), int64(fy0 * float64(py)), int64(fx1 * float64(px)), int64(fy1 * float64(py)), grey}
	}
	rs := []rect{
		fr(0.22, 0.28, 0.78, 0.72, 140), // core
		fr(0.28, 0.34, 0.46, 0.64, 90),  // memory array
		fr(0.54, 0.40, 0.72, 0.66, 165), // logic block
		fr(0.58, 0.46, 0.64, 0.52, 90),  // a feature in the logic
		fr(0.15, 0.20, 0.85, 0.22, 90),  // bus
		fr(0.15, 0.78, 0.85, 0.80, 90),  // bus
	}
	for k := range 7 { // bond pads along the bottom and top, and two on the left
		x := 0.14 + float64(k)*0.11
		rs = append(rs, fr(x, 0.07, x+0.06, 0.13, 185), fr(x, 0.87, x+0.06, 0.93, 185))
	}
	rs = append(rs, fr(0.06, 0.40, 0.12, 0.46, 185), fr(0.06, 0.54, 0.12, 0.60, 185))
	return rs
}

// buildPattern cuts the die into cells on which the pattern is constant.
func (c *Camera) buildPattern() {
	px, py := int64(c.cfg.DiePitch.X), int64(c.cfg.DiePitch.Y)
	s := int64(ScribeWidth) / 2
	rs := structures(px, py)
	xs := []int64{0, s, px - s}
	ys := []int64{0, s, py - s}
	for _, r := range rs {
		xs = append(xs, r.x0, r.x1)
		ys = append(ys, r.y0, r.y1)
	}
	slices.Sort(xs)
	slices.Sort(ys)
	c.xEdges, c.yEdges = slices.Compact(xs), slices.Compact(ys)
	greyAt := func(x, y int64) byte {
		if x < s || x >= px-s || y < s || y >= py-s {
			return GreyScribe
		}
		g := byte(GreyDie)
		for _, r := range rs {
			if x >= r.x0 && x < r.x1 && y >= r.y0 && y < r.y1 {
				g = r.grey
			}
		}
		return g
	}
	nx := len(c.xEdges)
	c.cellGrey = make([]byte, nx*len(c.yEdges))
	for yc, y := range c.yEdges {
		for xc, x := range c.xEdges {
			c.cellGrey[yc*nx+xc] = greyAt(x, y)
		}
	}
}

// scratch holds per-frame buffers reused by render.
type scratch struct {
	colX    []int64 // machine X of each column's pixel centre
	colCell []int32 // die cell column of each column
	colDX2  []int64 // (colX - wafer centre X)²
	noise   []byte
}

// cell returns the index of the cell containing offset v (edges[0] = 0 ≤ v).
func cell(edges []int64, v int64) int {
	return sort.Search(len(edges), func(i int) bool { return edges[i] > v }) - 1
}

// floorDiv returns ⌊a/b⌋ for b > 0.
func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && a < 0 {
		q--
	}
	return q
}

// mod returns a mod m in [0, m).
func mod(a, m int64) int64 {
	r := a % m
	if r < 0 {
		r += m
	}
	return r
}

// render draws the frame at stage position pos. c.renderMu must be held.
func (c *Camera) render(f *camera.Frame, pos motion.Point, lit bool, seq uint64) {
	w, h := f.Width, f.Height
	if !lit {
		for y := range h {
			row := f.Row(y)
			for x := range row {
				row[x] = GreyDark
			}
		}
		c.addNoise(f, seq, min(c.noise, GreyDark))
		return
	}
	ps := int64(c.cfg.PixelSize)
	// Machine coordinates of the centres of pixel column 0 and row 0; the
	// others follow at whole pixel steps.
	x0 := int64(pos.X) + floorDiv(int64(1-w)*ps, 2)
	yTop := int64(pos.Y) - floorDiv(int64(1-h)*ps, 2)
	cx, cy := int64(c.cfg.WaferCenter.X), int64(c.cfg.WaferCenter.Y)
	r := int64(c.cfg.WaferDiameter) / 2
	r2 := r * r
	pitchX, pitchY := int64(c.cfg.DiePitch.X), int64(c.cfg.DiePitch.Y)

	sc := &c.scratch
	sc.colX = slices.Grow(sc.colX[:0], w)[:w]
	sc.colCell = slices.Grow(sc.colCell[:0], w)[:w]
	sc.colDX2 = slices.Grow(sc.colDX2[:0], w)[:w]
	for px := range w {
		x := x0 + int64(px)*ps
		sc.colX[px] = x
		sc.colCell[px] = int32(cell(c.xEdges, mod(x-cx+pitchX/2, pitchX)))
		sc.colDX2[px] = (x - cx) * (x - cx)
	}
	nx := len(c.xEdges)
	for py := range h {
		row := f.Row(py)
		y := yTop - int64(py)*ps
		dy2 := (y - cy) * (y - cy)
		if dy2 > r2 {
			for x := range row {
				row[x] = GreyBackground
			}
			continue
		}
		lim := r2 - dy2
		cells := c.cellGrey[cell(c.yEdges, mod(y-cy+pitchY/2, pitchY))*nx:][:nx]
		for px := range row {
			if sc.colDX2[px] <= lim {
				row[px] = cells[sc.colCell[px]]
			} else {
				row[px] = GreyBackground
			}
		}
	}
	// Defects: only those whose bounding box meets the frame.
	x1 := sc.colX[w-1]
	yBot := yTop - int64(h-1)*ps
	for _, d := range c.cfg.Defects {
		dx, dy, dr := int64(d.At.X), int64(d.At.Y), int64(d.Radius)
		if dx+dr < x0 || dx-dr > x1 || dy+dr < yBot || dy-dr > yTop {
			continue
		}
		// Pixel ranges covering the disc's bounding box.
		pxLo := max(0, int((dx-dr-x0)/ps))
		pxHi := min(w-1, int((dx+dr-x0+ps-1)/ps))
		pyLo := max(0, int((yTop-(dy+dr))/ps))
		pyHi := min(h-1, int((yTop-(dy-dr)+ps-1)/ps))
		for py := pyLo; py <= pyHi; py++ {
			y := yTop - int64(py)*ps
			ry := (y - dy) * (y - dy)
			row := f.Row(py)
			for px := pxLo; px <= pxHi; px++ {
				x := sc.colX[px]
				if (x-dx)*(x-dx)+ry <= dr*dr {
					row[px] = clamp(int(row[px]) + d.Delta)
				}
			}
		}
	}
	c.addNoise(f, seq, c.noise)
}

// addNoise adds uniform integer noise in [-amp, amp], a deterministic
// function of the seed and seq, row by row.
func (c *Camera) addNoise(f *camera.Frame, seq uint64, amp int) {
	if amp <= 0 {
		return
	}
	rng := rand.NewPCG(c.cfg.Seed, seq)
	span := uint32(2*amp + 1)
	sc := &c.scratch
	sc.noise = slices.Grow(sc.noise[:0], f.Width+8)[:f.Width+8]
	for y := range f.Height {
		n := sc.noise
		for i := 0; i < f.Width; i += 8 {
			v := rng.Uint64()
			for k := range 8 {
				// Multiply-shift maps a byte uniformly enough onto [0, span).
				n[i+k] = byte(uint32(byte(v>>(8*k))) * span >> 8)
			}
		}
		row := f.Row(y)
		for x := range row {
			row[x] = clamp(int(row[x]) + int(n[x]) - amp)
		}
	}
}

func clamp(v int) byte {
	return byte(min(max(v, 0), 255))
}

// SeedDefects plants defects for a recipe, deterministically for a seed:
// round(fraction × eligible) of the sites, chosen at random among those not
// in exclude (the golden reference), each get 1..maxPerSite defects of
// radius 60..160 µm and |Delta| 70..110 with random sign. A defect lies
// inside its site's field of view (fov = width, height in µm, centred on the
// site) at least 2×radius from its edge, at least 4× the larger radius from
// the site's other defects (so each is one connected component), and outside
// the field of view of every other site and excluded site (so it shows up in
// exactly one frame and never in the golden one). A defect that cannot be
// placed within a bounded number of tries is left out. Defects are returned
// in site order.
func SeedDefects(sites []motion.Point, exclude []motion.Point, fov motion.Point, seed uint64, fraction float64, maxPerSite int) []Defect {
	if maxPerSite <= 0 || fraction <= 0 || fov.X <= 0 || fov.Y <= 0 {
		return nil
	}
	rng := rand.New(rand.NewPCG(seed, 0x5ee0defec7))
	var eligible []int
	for i, s := range sites {
		if !slices.Contains(exclude, s) {
			eligible = append(eligible, i)
		}
	}
	n := int(math.Round(min(fraction, 1) * float64(len(eligible))))
	perm := rng.Perm(len(eligible))
	chosen := make([]int, 0, n)
	for _, p := range perm[:n] {
		chosen = append(chosen, eligible[p])
	}
	slices.Sort(chosen)

	others := append(slices.Clone(sites), exclude...)
	seen := func(p motion.Point, r motion.Distance, own motion.Point) bool {
		for _, o := range others {
			if o == own {
				continue
			}
			if absD(p.X-o.X) < fov.X/2+r && absD(p.Y-o.Y) < fov.Y/2+r {
				return true
			}
		}
		return false
	}
	var out []Defect
	for _, i := range chosen {
		site := sites[i]
		count := 1 + rng.IntN(maxPerSite)
		var placed []Defect
		for range count {
			r := motion.Distance(60 + rng.IntN(101))
			delta := 70 + rng.IntN(41)
			if rng.IntN(2) == 0 {
				delta = -delta
			}
			mx, my := fov.X/2-2*r, fov.Y/2-2*r // half-extent of the allowed centres
			if mx < 0 || my < 0 {
				continue
			}
			for range 100 {
				p := motion.Point{
					X: site.X - mx + motion.Distance(rng.Int64N(int64(2*mx)+1)),
					Y: site.Y - my + motion.Distance(rng.Int64N(int64(2*my)+1)),
				}
				if seen(p, r, site) || tooClose(p, r, placed) {
					continue
				}
				placed = append(placed, Defect{At: p, Radius: r, Delta: delta})
				break
			}
		}
		out = append(out, placed...)
	}
	return out
}

func tooClose(p motion.Point, r motion.Distance, placed []Defect) bool {
	for _, d := range placed {
		min := 4 * float64(max(r, d.Radius))
		if math.Hypot(float64(p.X-d.At.X), float64(p.Y-d.At.Y)) < min {
			return true
		}
	}
	return false
}

func absD(d motion.Distance) motion.Distance {
	if d < 0 {
		return -d
	}
	return d
}

// Scene is what lies under the camera: the wafer and its defects.
type Scene struct {
	WaferCenter   motion.Point
	WaferDiameter motion.Distance
	DiePitch      motion.Point
	Defects       []Defect
	Seed          uint64
}

// SetScene puts another wafer under the camera (a new recipe on the
// simulated board). It waits for a frame being rendered and is safe for
// concurrent use.
func (c *Camera) SetScene(s Scene) error {
	if s.WaferDiameter <= 0 {
		return fmt.Errorf("simcam: wafer diameter %v must be > 0", s.WaferDiameter)
	}
	if s.DiePitch.X <= 2*ScribeWidth || s.DiePitch.Y <= 2*ScribeWidth {
		return fmt.Errorf("simcam: die pitch %d×%d µm must exceed %d µm", s.DiePitch.X, s.DiePitch.Y, 2*ScribeWidth)
	}
	c.renderMu.Lock()
	defer c.renderMu.Unlock()
	c.cfg.WaferCenter, c.cfg.WaferDiameter, c.cfg.DiePitch = s.WaferCenter, s.WaferDiameter, s.DiePitch
	c.cfg.Defects, c.cfg.Seed = slices.Clone(s.Defects), s.Seed
	c.buildPattern()
	return nil
}
