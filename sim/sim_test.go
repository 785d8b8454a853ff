package sim

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/waferd/waferd/motion"
)

func TestNewPartial(t *testing.T) {
	_, err := NewPartial(Config{}, Parts{Camera: true, Light: true})
	assert.ErrorContains(t, err, "no simulated stage and no Position")
	_, err = NewPartial(Config{}, Parts{Camera: true, Stage: true})
	assert.ErrorContains(t, err, "no simulated light and no Lit")

	b, err := NewPartial(Config{}, Parts{Light: true})
	require.NoError(t, err)
	assert.Nil(t, b.Camera)
	assert.Nil(t, b.Emulator)
	assert.Empty(t, b.PTY)
	assert.Nil(t, b.ButtonPin)
	assert.NotNil(t, b.LightPin)
	assert.NoError(t, b.SetRecipe(nil), "no camera: nothing to set")
	assert.NoError(t, b.Close())
	assert.NoError(t, b.Close())

	lit := false
	b, err = NewPartial(Config{FrameWidth: 16, FrameHeight: 8, PixelSize: 5,
		Position: func() motion.Point { return motion.Point{} }, Lit: func() bool { return lit }},
		Parts{Camera: true})
	require.NoError(t, err)
	defer b.Close()
	assert.Nil(t, b.Emulator)
	assert.Nil(t, b.LightPin)
	assert.Equal(t, 5.0, b.Camera.Info().PixelSize)
	assert.Equal(t, motion.Point{X: 80, Y: 40}, Config{FrameWidth: 16, FrameHeight: 8, PixelSize: 5}.FOV())
}

func TestConfigDefaults(t *testing.T) {
	c := Config{}
	assert.Equal(t, Travel, c.Limits().Travel)
	assert.Equal(t, motion.Point{X: FrameWidth * PixelSize, Y: FrameHeight * PixelSize}, c.FOV())
	r := motion.Rect{Max: motion.Point{X: motion.MM(100), Y: motion.MM(50)}}
	assert.Equal(t, r, Config{Travel: r}.Limits().Travel)
}
