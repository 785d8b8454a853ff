package simcam

import (
	"context"
	"errors"
	"math"
	"slices"
	"strconv"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/waferd/waferd/camera"
	"github.com/waferd/waferd/inspection/analysis"
	"github.com/waferd/waferd/motion"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var (
	waferCenter = motion.Point{X: 150 * motion.Millimetre, Y: 150 * motion.Millimetre}
	pitch       = motion.Point{X: 10 * motion.Millimetre, Y: 10 * motion.Millimetre}
	fov         = motion.Point{X: 512 * 20, Y: 512 * 20}
)

// stage is a fake stage position and light, safe for concurrent use.
type stage struct {
	mu  sync.Mutex
	pos motion.Point
	lit bool
}

func (s *stage) Position() motion.Point { s.mu.Lock(); defer s.mu.Unlock(); return s.pos }
func (s *stage) Lit() bool              { s.mu.Lock(); defer s.mu.Unlock(); return s.lit }
func (s *stage) set(p motion.Point, lit bool) {
	s.mu.Lock()
	s.pos, s.lit = p, lit
	s.mu.Unlock()
}

func newCam(t *testing.T, st *stage, defects []Defect, seed uint64) *Camera {
	t.Helper()
	c, err := New(Config{
		WaferCenter:   waferCenter,
		WaferDiameter: 100 * motion.Millimetre,
		DiePitch:      pitch,
		Defects:       defects,
		Seed:          seed,
		Position:      st.Position,
		Lit:           st.Lit,
	})
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

// die returns the machine position of die (i, j).
func die(i, j int) motion.Point {
	return motion.Point{X: waferCenter.X + motion.Distance(i)*pitch.X, Y: waferCenter.Y + motion.Distance(j)*pitch.Y}
}

// gridSites returns the dies whose field of view lies fully on the wafer.
func gridSites() []motion.Point {
	var sites []motion.Point
	r := 50.0 * float64(motion.Millimetre)
	for j := -5; j <= 5; j++ {
		for i := -5; i <= 5; i++ {
			p := die(i, j)
			dx := math.Abs(float64(p.X-waferCenter.X)) + float64(fov.X)/2
			dy := math.Abs(float64(p.Y-waferCenter.Y)) + float64(fov.Y)/2
			if math.Hypot(dx, dy) <= r {
				sites = append(sites, p)
			}
		}
	}
	return sites
}

func maxAbsDiff(a, b *camera.Frame) int {
	m := 0
	for y := range a.Height {
		ra, rb := a.Row(y), b.Row(y)
		for x := range ra {
			d := int(ra[x]) - int(rb[x])
			m = max(m, d, -d)
		}
	}
	return m
}

func mean(f *camera.Frame) float64 {
	var s int
	for y := range f.Height {
		for _, v := range f.Row(y) {
			s += int(v)
		}
	}
	return float64(s) / float64(f.Width*f.Height)
}

func TestConfigDefaultsAndErrors(t *testing.T) {
	st := &stage{}
	c := newCam(t, st, nil, 1)
	assert.Equal(t, camera.Info{Width: 512, Height: 512, PixelSize: 20}, c.Info())

	_, err := New(Config{})
	require.Error(t, err)
	for _, want := range []string{"simcam: config", "wafer diameter", "Position", "Lit"} {
		assert.ErrorContains(t, err, want)
	}
	_, err = New(Config{WaferDiameter: 1000, DiePitch: motion.Point{X: 150}, Position: st.Position, Lit: st.Lit})
	assert.ErrorContains(t, err, "die pitch")
}

func TestWholePitchesApartIdenticalButNoise(t *testing.T) {
	c := newCam(t, &stage{}, nil, 7)
	// Sites on die centres and off-centre by the same amount.
	off := motion.Point{X: 1234, Y: -3210}
	pairs := [][2]motion.Point{
		{die(0, 0), die(2, -1)},
		{die(-3, 2), die(1, 1)},
		{die(0, 0).Add(off), die(-2, 3).Add(off)},
	}
	for i, p := range pairs {
		a := c.Render(p[0], true, uint64(2*i+1))
		b := c.Render(p[1], true, uint64(2*i+2))
		assert.LessOrEqual(t, maxAbsDiff(a, b), 2*DefaultNoise, "%v vs %v", p[0], p[1])
		assert.Positive(t, maxAbsDiff(a, b), "noise differs between frames")
		a.Release()
		b.Release()
	}

	// The pattern is not trivial: half a pitch away the frame is different,
	// and a frame shows scribe, die background and structures.
	a := c.Render(die(0, 0), true, 1)
	b := c.Render(die(0, 0).Add(motion.Point{X: pitch.X / 2}), true, 1)
	assert.Greater(t, maxAbsDiff(a, b), 100)
	hist := map[int]int{}
	for y := range a.Height {
		for _, v := range a.Row(y) {
			hist[(int(v)+DefaultNoise)/10*10]++
		}
	}
	for _, g := range []int{GreyScribe, 90, GreyDie, 140, 165, 185} {
		assert.Positive(t, hist[(g+DefaultNoise)/10*10], "grey %d present", g)
	}
	a.Release()
	b.Release()
}

func TestOffWaferIsBackground(t *testing.T) {
	c := newCam(t, &stage{}, nil, 1)
	f := c.Render(waferCenter.Add(motion.Point{X: 60 * motion.Millimetre}), true, 1)
	defer f.Release()
	assert.InDelta(t, GreyBackground, mean(f), 1)
}

// TestMappingMatchesToMachine renders one defect, finds it against a clean
// frame of the same place, and checks that camera.Info.ToMachine maps its
// centroid back onto it.
func TestMappingMatchesToMachine(t *testing.T) {
	pos := die(1, 1).Add(motion.Point{X: 37, Y: -11})
	for _, at := range []motion.Point{
		pos.Add(motion.Point{X: 1000, Y: 2000}), // upper right of the frame centre: x right, y up
		pos.Add(motion.Point{X: -3000, Y: -1500}),
		pos.Add(motion.Point{X: 10, Y: 10}),
	} {
		c := newCam(t, &stage{}, []Defect{{At: at, Radius: 100, Delta: -90}}, 3)
		clean := newCam(t, &stage{}, nil, 3)
		f, g := c.Render(pos, true, 1), clean.Render(pos, true, 2)
		got, err := (&analysis.Detector{}).Detect(context.Background(), f, g, nil)
		require.NoError(t, err)
		require.Len(t, got, 1)
		m := c.Info().ToMachine(pos, got[0].X, got[0].Y)
		assert.InDelta(t, float64(at.X), float64(m.X), 10, "x of %v", at)
		assert.InDelta(t, float64(at.Y), float64(m.Y), 10, "y of %v", at)
		if at.Y > pos.Y {
			assert.Less(t, got[0].Y, float64(c.Info().Height)/2, "machine +Y is up in the image")
		}
		f.Release()
		g.Release()
	}
}

func TestSeededDefectsAreDetected(t *testing.T) {
	sites := gridSites()
	require.Greater(t, len(sites), 40)
	ref := die(0, 0)
	defects := SeedDefects(sites, []motion.Point{ref}, fov, 2026, 0.5, 3)
	require.NotEmpty(t, defects)
	t.Logf("%d sites, %d seeded defects", len(sites), len(defects))

	c := newCam(t, &stage{}, defects, 2026)
	info := c.Info()
	golden := c.Render(ref, true, 1)
	defer golden.Release()
	det := &analysis.Detector{}
	var found []analysis.Defect
	total := 0
	for k, site := range sites {
		var want []Defect
		for _, d := range defects {
			if absD(d.At.X-site.X) < fov.X/2 && absD(d.At.Y-site.Y) < fov.Y/2 {
				want = append(want, d)
			}
		}
		f := c.Render(site, true, uint64(k+2))
		var err error
		found, err = det.Detect(context.Background(), f, golden, found[:0])
		f.Release()
		require.NoError(t, err)
		require.Len(t, found, len(want), "site %v", site)
		total += len(found)
		for _, w := range want {
			i := slices.IndexFunc(found, func(d analysis.Defect) bool {
				m := info.ToMachine(site, d.X, d.Y)
				return math.Hypot(float64(m.X-w.At.X), float64(m.Y-w.At.Y)) <= 1.5*info.PixelSize
			})
			if !assert.GreaterOrEqual(t, i, 0, "site %v: defect %+v not found in %+v", site, w, found) {
				continue
			}
			d := found[i]
			area := math.Pi * float64(w.Radius*w.Radius) / (info.PixelSize * info.PixelSize)
			assert.InDelta(t, area, float64(d.Area), 0.15*area+4, "site %v: area of %+v", site, w)
			assert.GreaterOrEqual(t, d.Peak, 60, "site %v: peak of %+v", site, w)
		}
	}
	assert.Equal(t, len(defects), total, "every seeded defect found exactly once")
}

func TestSeedDefects(t *testing.T) {
	sites := gridSites()
	ref := []motion.Point{die(0, 0)}
	eligible := len(sites) - 1
	for seed := range uint64(20) {
		fraction := float64(seed%5) / 4
		maxPer := 1 + int(seed%4)
		defects := SeedDefects(sites, ref, fov, seed, fraction, maxPer)
		assert.Equal(t, defects, SeedDefects(sites, ref, fov, seed, fraction, maxPer), "deterministic")

		perSite := map[motion.Point][]Defect{}
		for _, d := range defects {
			assert.GreaterOrEqual(t, d.Radius, motion.Distance(60))
			assert.LessOrEqual(t, d.Radius, motion.Distance(160))
			assert.GreaterOrEqual(t, max(d.Delta, -d.Delta), 70)
			assert.LessOrEqual(t, max(d.Delta, -d.Delta), 110)
			var in []motion.Point
			for _, s := range append(slices.Clone(sites), ref...) {
				if absD(d.At.X-s.X) < fov.X/2+d.Radius && absD(d.At.Y-s.Y) < fov.Y/2+d.Radius {
					in = append(in, s)
				}
			}
			require.Len(t, in, 1, "defect %+v seen by exactly one site", d)
			s := in[0]
			assert.NotEqual(t, ref[0], s)
			assert.LessOrEqual(t, absD(d.At.X-s.X), fov.X/2-2*d.Radius, "margin")
			assert.LessOrEqual(t, absD(d.At.Y-s.Y), fov.Y/2-2*d.Radius, "margin")
			for _, o := range perSite[s] {
				dist := math.Hypot(float64(d.At.X-o.At.X), float64(d.At.Y-o.At.Y))
				assert.GreaterOrEqual(t, dist, 4*float64(max(d.Radius, o.Radius)))
			}
			perSite[s] = append(perSite[s], d)
		}
		assert.Len(t, perSite, int(math.Round(fraction*float64(eligible))), "seed %d fraction %g", seed, fraction)
		for s, ds := range perSite {
			assert.LessOrEqual(t, len(ds), maxPer, "site %v", s)
		}
	}
	assert.NotEqual(t, SeedDefects(sites, ref, fov, 1, 0.5, 3), SeedDefects(sites, ref, fov, 2, 0.5, 3))
	assert.Empty(t, SeedDefects(sites, ref, fov, 1, 0.5, 0))
	assert.Empty(t, SeedDefects(sites, ref, fov, 1, 0, 3))
}

func TestCapture(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := &stage{}
		st.set(die(1, 0), true)
		c := newCam(t, st, nil, 5)
		start := time.Now()
		f, err := c.Capture(t.Context(), 20*time.Millisecond)
		require.NoError(t, err)
		assert.Equal(t, 25*time.Millisecond, time.Since(start), "exposure + frame time")
		assert.Equal(t, uint64(1), f.Seq)
		assert.Equal(t, uint64(1), c.Captures())
		assert.False(t, c.Streaming())
		want := c.Render(die(1, 0), true, 1)
		assert.Equal(t, want.Pix, f.Pix, "capture renders at the stage position")
		want.Release()
		f.Release()

		st.set(die(1, 0), false) // light off: visibly dark
		f, err = c.Capture(t.Context(), 20*time.Millisecond)
		require.NoError(t, err)
		assert.Less(t, mean(f), 10.0)
		assert.Equal(t, uint64(2), f.Seq)
		f.Release()
	})
}

func TestCaptureHangAbandonedOnCancel(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := &stage{}
		st.set(die(0, 0), true)
		c := newCam(t, st, nil, 5)
		c.InjectHang(true)

		ctx, cancel := context.WithCancelCause(t.Context())
		cause := errors.New("stop button")
		var err error
		done := make(chan struct{})
		go func() {
			defer close(done)
			_, err = c.Capture(ctx, 10*time.Millisecond)
		}()
		time.Sleep(time.Hour) // fake time: far beyond any frame time
		synctest.Wait()
		assert.True(t, c.Streaming(), "hung capture is streaming")
		select {
		case <-done:
			t.Fatal("hung capture returned")
		default:
		}

		cancelled := time.Now()
		cancel(cause)
		<-done
		assert.Zero(t, time.Since(cancelled), "abandoned at once")
		require.ErrorIs(t, err, cause)
		assert.False(t, c.Streaming())
		assert.Zero(t, c.Captures())

		// Still hanging for the next capture, until released.
		done = make(chan struct{})
		go func() {
			defer close(done)
			_, err = c.Capture(t.Context(), 10*time.Millisecond)
		}()
		synctest.Wait()
		assert.True(t, c.Streaming())
		c.InjectHang(false)
		<-done
		require.NoError(t, err)
		assert.Equal(t, uint64(1), c.Captures())
	})
}

func TestCaptureCancelDuringExposure(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := &stage{}
		st.set(die(0, 0), true)
		c := newCam(t, st, nil, 5)
		ctx, cancel := context.WithCancelCause(t.Context())
		cause := errors.New("sigterm")
		time.AfterFunc(3*time.Millisecond, func() { cancel(cause) })
		start := time.Now()
		_, err := c.Capture(ctx, time.Second)
		require.ErrorIs(t, err, cause)
		assert.Equal(t, 3*time.Millisecond, time.Since(start))
		assert.False(t, c.Streaming())

		_, err = c.Capture(ctx, time.Second) // already cancelled
		require.ErrorIs(t, err, cause)
	})
}

func TestCaptureInjectError(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := &stage{}
		st.set(die(0, 0), true)
		c := newCam(t, st, nil, 5)
		boom := errors.New("usb reset")
		c.InjectError(boom)
		_, err := c.Capture(t.Context(), time.Millisecond)
		require.ErrorIs(t, err, boom)
		assert.False(t, c.Streaming())
		f, err := c.Capture(t.Context(), time.Millisecond)
		require.NoError(t, err, "only the next capture fails")
		f.Release()
	})
}

func TestCaptureSerialisedAndClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := &stage{}
		st.set(die(0, 0), true)
		c := newCam(t, st, nil, 5)
		c.InjectHang(true)
		errs := make(chan error, 2)
		for range 2 {
			go func() {
				_, err := c.Capture(t.Context(), time.Millisecond)
				errs <- err
			}()
		}
		synctest.Wait()
		assert.True(t, c.Streaming())
		require.NoError(t, c.Close())
		require.NoError(t, c.Close(), "close twice")
		for range 2 {
			assert.ErrorIs(t, <-errs, camera.ErrClosed)
		}
		_, err := c.Capture(t.Context(), time.Millisecond)
		assert.ErrorIs(t, err, camera.ErrClosed)
		assert.False(t, c.Streaming())
	})
}

func TestDeterminism(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sites := gridSites()
		defects := SeedDefects(sites, []motion.Point{die(0, 0)}, fov, 99, 0.5, 3)
		st := &stage{}
		a := newCam(t, st, defects, 99)
		b := newCam(t, st, slices.Clone(defects), 99)
		other := newCam(t, st, defects, 100)
		for _, s := range sites[:5] {
			st.set(s, true)
			fa, err := a.Capture(t.Context(), time.Millisecond)
			require.NoError(t, err)
			fb, err := b.Capture(t.Context(), time.Millisecond)
			require.NoError(t, err)
			fo, err := other.Capture(t.Context(), time.Millisecond)
			require.NoError(t, err)
			assert.Equal(t, fa.Pix, fb.Pix, "same seed, same frame")
			assert.NotEqual(t, fa.Pix, fo.Pix, "other seed, other noise")
			fa.Release()
			fb.Release()
			fo.Release()
		}
	})
}

func TestLargeFrame(t *testing.T) {
	c, err := New(Config{
		Width: 2048, Height: 2048, PixelSize: 5,
		WaferCenter: waferCenter, WaferDiameter: 100 * motion.Millimetre, DiePitch: pitch,
		Defects:  []Defect{{At: die(0, 0).Add(motion.Point{X: 500}), Radius: 100, Delta: 80}},
		Position: func() motion.Point { return die(0, 0) }, Lit: func() bool { return true },
	})
	require.NoError(t, err)
	f := c.Render(die(0, 0), true, 1)
	g := c.Render(die(1, 0), true, 2)
	assert.Equal(t, 2048, f.Width)
	got, err := (&analysis.Detector{}).Detect(context.Background(), f, g, nil)
	require.NoError(t, err)
	require.Len(t, got, 1)
	assert.InDelta(t, math.Pi*20*20, got[0].Area, 0.1*math.Pi*20*20)
	f.Release()
	g.Release()
}

func BenchmarkRender(b *testing.B) {
	for _, size := range []int{512, 2048} {
		b.Run(strconv.Itoa(size), func(b *testing.B) {
			c, err := New(Config{
				Width: size, Height: size,
				WaferCenter: waferCenter, WaferDiameter: 100 * motion.Millimetre, DiePitch: pitch,
				Defects:  SeedDefects(gridSites(), nil, fov, 1, 1, 3),
				Position: func() motion.Point { return die(0, 0) }, Lit: func() bool { return true },
			})
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(size * size))
			b.ReportAllocs()
			for b.Loop() {
				c.Render(die(1, 1), true, 1).Release()
			}
		})
	}
}

// TestCaptureAllocs: in the steady state (frames released to the pool) a
// capture allocates nothing.
func TestCaptureAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector makes sync.Pool drop frames at random")
	}
	st := &stage{}
	st.set(die(1, 0), true)
	c := newCam(t, st, nil, 5)
	ctx := t.Context()
	capture := func() {
		f, err := c.Capture(ctx, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.Release()
	}
	capture()
	assert.Zero(t, testing.AllocsPerRun(20, capture))
}
