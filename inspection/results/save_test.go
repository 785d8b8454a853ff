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

// benchFrame is a camera frame of w×h pixels.
func benchFrame(w, h int) *image.Gray {
	g := image.NewGray(image.Rect(0, 0, w, h))
	for i := range g.Pix {
		g.Pix[i] = uint8(100 + i%13)
	}
	return g
}

// BenchmarkSaveSite saves sites with a few defects and a camera frame, as
// the inspection does (run.json rewritten at most once a second): the time
// a site's save takes, image encoding and fsyncs included.
func BenchmarkSaveSite(b *testing.B) {
	for _, size := range []image.Point{{64, 64}, {1280, 960}} {
		b.Run(fmt.Sprintf("%dx%d", size.X, size.Y), func(b *testing.B) {
			s, err := Open(b.TempDir())
			require.NoError(b, err)
			img := benchFrame(size.X, size.Y)
			rec, err := s.Create(gridRun(b.N))
			require.NoError(b, err)
			b.ResetTimer()
			for i := range b.N {
				if err := rec.SaveSite(i, benchDefects, img); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// The site files are named as the package doc says: the index zero-padded
// to four digits, wider when it needs more.
func TestSiteRel(t *testing.T) {
	for i, want := range map[int]string{0: "sites/0000.json", 7: "sites/0007.json", 999: "sites/0999.json",
		1000: "sites/1000.json", 12345: "sites/12345.json"} {
		assert.Equal(t, want, siteRel(i, ".json"))
	}
	assert.Equal(t, "sites/0042.png", siteRel(42, ".png"))
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
	assert.NoFileExists(t, rec.path("sites/0001.json"))
	require.NoError(t, rec.SaveSite(1, nil, nil))

	run := gridRun(2)
	run.Sites[1].XMM = math.Inf(1)
	_, err = s.Create(run)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "run.json")
	assert.Contains(t, err.Error(), "unsupported value: +Inf")
}
