package results

import (
	"fmt"
	"image"
	"math"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// benchDefects are a few defects, as a site with defects has.
var benchDefects = []Defect{
	{XMM: 101.234, YMM: 98.765, Box: [4]int{3, 4, 9, 11}, AreaPx: 31, AreaUM2: 1240.5, Peak: 87},
	{XMM: 101.5, YMM: 99.125, Box: [4]int{40, 41, 44, 45}, AreaPx: 12, AreaUM2: 480, Peak: 60},
	{XMM: 100.75, YMM: 98.5, Box: [4]int{60, 0, 64, 3}, AreaPx: 9, AreaUM2: 360.25, Peak: 255},
}

// pooledFrame is a camera frame as the inspection's frame pool hands them
// out: a *image.Gray reused for every site.
func pooledFrame(w, h int) *image.Gray {
	g := image.NewGray(image.Rect(0, 0, w, h))
	for i := range g.Pix {
		g.Pix[i] = uint8(100 + i%13)
	}
	return g
}

// BenchmarkSaveSite saves sites with a few defects and a camera frame, as
// the inspection does (run.json rewritten at most once a second), after a
// few saves that warm the pools: allocs/op is the steady state's.
func BenchmarkSaveSite(b *testing.B) {
	for _, size := range []image.Point{{64, 64}, {1280, 960}} {
		b.Run(fmt.Sprintf("%dx%d", size.X, size.Y), func(b *testing.B) {
			s, err := Open(b.TempDir())
			require.NoError(b, err)
			img := pooledFrame(size.X, size.Y)
			const warm = 3 // the first saves fill the pools and buffers
			rec, err := s.Create(gridRun(warm + b.N))
			require.NoError(b, err)
			for i := range warm {
				require.NoError(b, rec.SaveSite(i, benchDefects, img))
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := warm; i < warm+b.N; i++ {
				if err := rec.SaveSite(i, benchDefects, img); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func TestSitePaths(t *testing.T) {
	for _, i := range []int{0, 7, 10, 999, 1000, 9999, 10000, 123456, -1, -7, -12345} {
		assert.Equal(t, fmt.Sprintf("sites/%04d.json", i), siteRel(i, ".json"))
	}
	sites := []Site{{Index: 7}, {Index: 0}, {Index: 12345}, {Index: 1000}}
	paths, off := buildSitePaths(sites)
	r := &Recorder{paths: paths, pathOff: off}
	for p, st := range sites {
		res, img := r.sitePaths(p)
		assert.Equal(t, siteRel(st.Index, ".json"), res)
		assert.Equal(t, siteRel(st.Index, ".png"), img)
	}
}

// A non-finite number fails the write that would carry it, naming the file;
// the site stays pending.
func TestSaveSiteNaN(t *testing.T) {
	s := openStore(t)
	rec, err := s.Create(gridRun(2))
	require.NoError(t, err)
	err = rec.SaveSite(1, []Defect{{AreaUM2: math.NaN()}}, nil)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "results: encode "+rec.path("sites/0001.json"))
	assert.Contains(t, err.Error(), "unsupported value: NaN")
	assert.Equal(t, SitePending, rec.Run().Sites[1].Status)
	require.NoError(t, rec.SaveSite(1, nil, nil))

	run := gridRun(2)
	run.Sites[1].XMM = math.Inf(1)
	_, err = s.Create(run)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "run.json")
	assert.Contains(t, err.Error(), "unsupported value: +Inf")
}
