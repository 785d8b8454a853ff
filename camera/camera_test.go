package camera

import (
	"image"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/waferd/waferd/motion"
)

func TestPool(t *testing.T) {
	p, err := NewPool(64, 32)
	require.NoError(t, err)
	f := p.Get()
	assert.Equal(t, 64*32, len(f.Pix))
	assert.Equal(t, 64, f.Stride)
	assert.Len(t, f.Row(31), 64)
	g := f.Gray()
	assert.Equal(t, image.Rect(0, 0, 64, 32), g.Bounds())
	f.Pix[64*31+5] = 200
	assert.Equal(t, uint8(200), g.GrayAt(5, 31).Y, "the view shares the pixels")
	f.Release()
	f.Release() // a second release is harmless

	_, err = NewPool(0, 10)
	assert.ErrorContains(t, err, "bad frame size 0x10")
}

// A released frame is handed out again, with nothing of its last capture
// but its pixels, and it can be released again.
func TestPoolReuse(t *testing.T) {
	p, err := NewPool(64, 32)
	require.NoError(t, err)
	seen := make(map[*Frame]bool)
	// sync.Pool may drop a frame (the race detector makes it do so at
	// random): try until one comes back.
	for range 1000 {
		f := p.Get()
		if seen[f] {
			assert.Zero(t, f.Seq)
			assert.True(t, f.Time.IsZero())
			assert.Equal(t, 64*32, len(f.Pix))
			f.Release()
			assert.Nil(t, f.pool, "released")
			return
		}
		seen[f] = true
		f.Seq, f.Time = 7, time.Now()
		f.Release()
	}
	t.Fatal("no released frame came back in 1000 tries")
}

func TestToMachine(t *testing.T) {
	i := Info{Width: 100, Height: 100, PixelSize: 20}
	c := motion.Point{X: motion.MM(10), Y: motion.MM(10)}
	// The centre of the frame lies between pixels 49 and 50.
	assert.Equal(t, c, i.ToMachine(c, 49.5, 49.5))
	// Image y grows downward, machine y upward.
	p := i.ToMachine(c, 59.5, 39.5)
	assert.Equal(t, c.X+200, p.X)
	assert.Equal(t, c.Y+200, p.Y)
}
