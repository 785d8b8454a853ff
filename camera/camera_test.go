package camera

import (
	"runtime"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/waferd/waferd/motion"
)

func TestPoolReusesFrames(t *testing.T) {
	p, err := NewPool(64, 32)
	require.NoError(t, err)
	f := p.Get()
	assert.Equal(t, 64*32, len(f.Pix))
	assert.Len(t, f.Row(31), 64)
	f.Release()
	f.Release() // a second release is harmless
	allocs := testing.AllocsPerRun(100, func() { p.Get().Release() })
	assert.Zero(t, allocs, "steady state allocates nothing")
	_, err = NewPool(0, 10)
	assert.ErrorContains(t, err, "bad frame size 0x10")
}

// TestPoolKeepsFramesAcrossCollections: the frames a run released are
// there for it after garbage collections, on whichever thread asks.
func TestPoolKeepsFramesAcrossCollections(t *testing.T) {
	p, err := NewPool(64, 32)
	require.NoError(t, err)
	var held []*Frame
	for range MaxIdleFrames + 2 {
		held = append(held, p.Get())
	}
	for _, f := range held {
		f.Release()
	}
	runtime.GC()
	runtime.GC()
	reused := 0
	for range MaxIdleFrames + 2 {
		f := p.Get()
		if slices.Contains(held, f) {
			reused++
		}
	}
	assert.Equal(t, MaxIdleFrames, reused, "the pool keeps up to MaxIdleFrames released frames")
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
