package illumination

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpiotest"
	"periph.io/x/conn/v3/physic"
)

func level(p *gpiotest.Pin) gpio.Level {
	p.Lock()
	defer p.Unlock()
	return p.L
}

func TestOnOffAndLevel(t *testing.T) {
	en := &gpiotest.Pin{N: "LIGHT_EN", L: gpio.High}
	dim := &gpiotest.Pin{N: "LIGHT_PWM"}
	l, err := New(Config{Enable: en, Dimmer: dim})
	require.NoError(t, err)
	assert.Equal(t, gpio.Low, level(en), "New must drive the light to its safe state")

	require.NoError(t, l.On(0.5))
	assert.Equal(t, gpio.High, level(en))
	dim.Lock()
	assert.Equal(t, gpio.Duty(gpio.DutyMax/2), dim.D)
	assert.Equal(t, 20*physic.KiloHertz, dim.F)
	dim.Unlock()
	st := l.State()
	assert.True(t, st.On)
	assert.InDelta(t, 0.5, st.Level, 1e-9)

	require.NoError(t, l.Off())
	require.NoError(t, l.Off(), "Off is idempotent")
	assert.Equal(t, gpio.Low, level(en))
	assert.False(t, l.IsOn())
}

func TestActiveLow(t *testing.T) {
	en := &gpiotest.Pin{N: "LIGHT_EN"}
	l, err := New(Config{Enable: en, ActiveLow: true})
	require.NoError(t, err)
	assert.Equal(t, gpio.High, level(en))
	require.NoError(t, l.On(1))
	assert.Equal(t, gpio.Low, level(en))
}

func TestLevelOutOfRange(t *testing.T) {
	l, err := New(Config{Enable: &gpiotest.Pin{N: "EN"}})
	require.NoError(t, err)
	for _, v := range []float64{0, -1, 1.5} {
		assert.ErrorContains(t, l.On(v), "out of range")
	}
	assert.False(t, l.IsOn())
}

// failPin fails Out after a number of successful calls.
type failPin struct {
	gpiotest.Pin
	okLeft int
}

func (p *failPin) Out(l gpio.Level) error {
	if p.okLeft <= 0 {
		return errors.New("EIO")
	}
	p.okLeft--
	return p.Pin.Out(l)
}

func TestDimmerErrorLeavesLightOff(t *testing.T) {
	en := &gpiotest.Pin{N: "EN"}
	dim := pwmFail{&failPin{Pin: gpiotest.Pin{N: "PWM"}, okLeft: 100}}
	l, err := New(Config{Enable: en, Dimmer: dim})
	require.NoError(t, err)
	err = l.On(0.3)
	require.ErrorContains(t, err, "set level")
	assert.Equal(t, gpio.Low, level(en))
	assert.False(t, l.IsOn())
	assert.Error(t, l.State().Err)
}

type pwmFail struct{ *failPin }

func (pwmFail) PWM(gpio.Duty, physic.Frequency) error { return errors.New("not supported") }

func TestSenseDisagrees(t *testing.T) {
	en := &gpiotest.Pin{N: "EN"}
	sense := &gpiotest.Pin{N: "SENSE", L: gpio.Low} // lamp never lights
	l, err := New(Config{Enable: en, Sense: sense})
	require.NoError(t, err)
	err = l.On(1)
	require.ErrorIs(t, err, ErrSense)
	assert.ErrorContains(t, err, "commanded on but SENSE")
	assert.Equal(t, gpio.Low, level(en), "a light that does not confirm is switched off again")
}

func TestSenseStuckOn(t *testing.T) {
	sense := &gpiotest.Pin{N: "SENSE", L: gpio.High}
	_, err := New(Config{Enable: &gpiotest.Pin{N: "EN"}, Sense: sense})
	require.ErrorIs(t, err, ErrSense)
}
