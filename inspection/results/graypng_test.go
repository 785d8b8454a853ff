package results

import (
	"bytes"
	"errors"
	"image"
	"image/png"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func randomGray(rng *rand.Rand, w, h int) *image.Gray {
	g := image.NewGray(image.Rect(0, 0, w, h))
	for i := range g.Pix {
		// A pattern with noise and some extremes, to exercise wrap-around
		// in the Up filter.
		switch rng.IntN(20) {
		case 0:
			g.Pix[i] = 0
		case 1:
			g.Pix[i] = 255
		default:
			g.Pix[i] = byte(i/7) + byte(rng.IntN(9))
		}
	}
	return g
}

func TestGrayPNGDecodesToTheSamePixels(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, sz := range [][2]int{{1, 1}, {7, 3}, {8, 8}, {9, 2}, {33, 17}, {512, 512}, {1000, 300}} {
		g := randomGray(rng, sz[0], sz[1])
		var buf bytes.Buffer
		require.NoError(t, encodeGrayPNG(&buf, g), "%v", sz)
		img, err := png.Decode(&buf)
		require.NoError(t, err, "%v", sz)
		got, ok := img.(*image.Gray)
		require.True(t, ok, "%v: decoded as %T", sz, img)
		require.Equal(t, g.Rect, got.Rect)
		require.Equal(t, g.Pix, got.Pix, "%v", sz)
	}
}

func TestGrayPNGSubImage(t *testing.T) {
	g := randomGray(rand.New(rand.NewPCG(3, 4)), 100, 80)
	sub := g.SubImage(image.Rect(13, 21, 90, 77)).(*image.Gray)
	var buf bytes.Buffer
	require.NoError(t, encodeGrayPNG(&buf, sub))
	img, err := png.Decode(&buf)
	require.NoError(t, err)
	require.Equal(t, image.Rect(0, 0, 77, 56), img.Bounds())
	for y := 0; y < 56; y++ {
		for x := 0; x < 77; x++ {
			require.Equal(t, sub.GrayAt(13+x, 21+y), img.(*image.Gray).GrayAt(x, y))
		}
	}
}

func TestGrayPNGLargeImageSpansManyChunks(t *testing.T) {
	g := randomGray(rand.New(rand.NewPCG(5, 6)), 2048, 2048)
	var buf bytes.Buffer
	require.NoError(t, encodeGrayPNG(&buf, g))
	assert.Greater(t, buf.Len(), 4*idatSize, "several IDAT chunks")
	assert.Less(t, buf.Len(), len(g.Pix), "compressed")
	img, err := png.Decode(&buf)
	require.NoError(t, err)
	require.Equal(t, g.Pix, img.(*image.Gray).Pix)
}

type failAfter struct{ n int }

func (f *failAfter) Write(p []byte) (int, error) {
	if f.n < len(p) {
		return 0, errors.New("disk full")
	}
	f.n -= len(p)
	return len(p), nil
}

func TestGrayPNGWriteErrorsAreReturned(t *testing.T) {
	g := randomGray(rand.New(rand.NewPCG(7, 8)), 600, 600)
	for _, n := range []int{0, 8, 30, 1000, 100_000} {
		err := encodeGrayPNG(&failAfter{n: n}, g)
		require.Error(t, err, "failing after %d bytes", n)
		assert.ErrorContains(t, err, "disk full")
	}
}

func TestUpFilterMatchesBytewise(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	for n := 0; n < 40; n++ {
		cur, prev, got := make([]byte, n), make([]byte, n), make([]byte, n)
		for i := range cur {
			cur[i], prev[i] = byte(rng.IntN(256)), byte(rng.IntN(256))
		}
		upFilter(got, cur, prev)
		for i := range cur {
			require.Equal(t, cur[i]-prev[i], got[i], "n=%d i=%d", n, i)
		}
	}
}

func BenchmarkSiteImagePNG(b *testing.B) {
	g := randomGray(rand.New(rand.NewPCG(13, 14)), 2048, 2048)
	var buf bytes.Buffer
	b.Run("grayPNG", func(b *testing.B) {
		b.SetBytes(int64(len(g.Pix)))
		for b.Loop() {
			buf.Reset()
			if err := encodeGrayPNG(&buf, g); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(buf.Len())/float64(len(g.Pix)), "size-ratio")
	})
	b.Run("image-png-BestSpeed", func(b *testing.B) {
		enc := &png.Encoder{CompressionLevel: png.BestSpeed}
		b.SetBytes(int64(len(g.Pix)))
		for b.Loop() {
			buf.Reset()
			if err := enc.Encode(&buf, g); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(buf.Len())/float64(len(g.Pix)), "size-ratio")
	})
}
