package board

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpiotest"
	"periph.io/x/conn/v3/physic"

	"github.com/waferd/waferd/camera"
	"github.com/waferd/waferd/config"
	"github.com/waferd/waferd/motion"
	"github.com/waferd/waferd/sim"
	"github.com/waferd/waferd/sim/grblsim"
	"github.com/waferd/waferd/sim/simcam"
)

// simConfig is a machine configuration with every device "sim" and a
// small, fast simulated board.
func simConfig(t *testing.T) *config.Config {
	t.Helper()
	cfg := config.Default()
	cfg.Stage.Port = config.SimDevice
	cfg.Light.Chip = config.SimDevice
	cfg.Light.PWMChip = config.SimDevice
	cfg.Camera.Device = config.SimDevice
	cfg.Camera.Width, cfg.Camera.Height, cfg.Camera.PixelUM = 64, 48, 20
	cfg.Button = config.Input{Chip: config.SimDevice, Line: "button", ActiveLow: true, Pull: "up", DebounceMS: 20}
	cfg.EStop = config.Input{Chip: config.SimDevice, Line: "estop", Pull: "up", DebounceMS: 20}
	cfg.Sim.TimeScale = 50
	require.NoError(t, cfg.Validate())
	return cfg
}

func openCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func level(p *gpiotest.Pin) gpio.Level {
	p.Lock()
	defer p.Unlock()
	return p.L
}

func mean(t *testing.T, cam camera.Camera) float64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	f, err := cam.Capture(ctx, time.Millisecond)
	require.NoError(t, err)
	defer f.Release()
	sum := 0
	for y := range f.Height {
		for _, v := range f.Row(y) {
			sum += int(v)
		}
	}
	return float64(sum) / float64(f.Width*f.Height)
}

func TestOpenEveryDeviceSim(t *testing.T) {
	ctx := openCtx(t)
	b, err := Open(ctx, simConfig(t))
	require.NoError(t, err)
	t.Cleanup(func() { b.Close() })
	require.NotNil(t, b.Sim)
	assert.Equal(t, []string{"light", "light dimmer", "stop button", "e-stop", "stage", "camera"}, b.Simulated)
	assert.Contains(t, b.String(), "stage simulated (GRBL emulator on "+b.Sim.PTY+")")
	assert.Contains(t, b.String(), "camera simulated (synthetic, 64x48 at 20 µm)")
	assert.Equal(t, motion.Point{X: 64 * 20, Y: 48 * 20}, b.Limits.FOV)

	// The stage: the production driver on the emulator's pty.
	require.NoError(t, b.Stage.Home(ctx))
	to := motion.Point{X: 150 * motion.Millimetre, Y: 120 * motion.Millimetre}
	require.NoError(t, b.Stage.MoveTo(ctx, to, 6000))
	assert.Equal(t, to, b.Sim.Emulator.Position())

	// The light, dimmed, and the camera that sees it.
	assert.Less(t, mean(t, b.Camera), 10.0, "dark with the light off")
	require.NoError(t, b.Light.On(0.5))
	assert.Equal(t, gpio.High, level(b.Sim.LightPin))
	b.Sim.DimmerPin.Lock()
	assert.Equal(t, gpio.Duty(gpio.DutyMax/2), b.Sim.DimmerPin.D)
	assert.Equal(t, 20*physic.KiloHertz, b.Sim.DimmerPin.F)
	b.Sim.DimmerPin.Unlock()
	assert.Greater(t, mean(t, b.Camera), 50.0, "the wafer under the lit camera")
	require.NoError(t, b.Light.Off())
	assert.Equal(t, gpio.Low, level(b.Sim.LightPin))

	// The inputs read as wired: the button is active low, the e-stop
	// active high; the configured pull-ups do not apply.
	require.NoError(t, b.Button.In(gpio.PullUp, gpio.BothEdges))
	require.NoError(t, b.EStop.In(gpio.PullUp, gpio.BothEdges))
	assert.Equal(t, gpio.High, b.Button.Read(), "button released")
	assert.Equal(t, gpio.Low, b.EStop.Read(), "e-stop not engaged")
	require.True(t, sim.Press(b.Sim.ButtonPin, gpio.High))
	require.True(t, b.Button.WaitForEdge(time.Second))
	assert.Equal(t, gpio.Low, b.Button.Read(), "button pressed")
	require.True(t, sim.Press(b.Sim.EStopPin, gpio.High))
	require.True(t, b.EStop.WaitForEdge(time.Second))
	assert.Equal(t, gpio.High, b.EStop.Read(), "e-stop engaged")

	require.NoError(t, b.Light.On(1))
	require.NoError(t, b.Close())
	assert.Equal(t, gpio.Low, level(b.Sim.LightPin), "Close leaves the light off")
	_, err = b.Camera.Capture(ctx, time.Millisecond)
	assert.ErrorIs(t, err, camera.ErrClosed)
	_, err = b.Sim.Emulator.OpenPTY()
	assert.ErrorIs(t, err, grblsim.ErrClosed, "the emulator is closed")
	assert.Error(t, b.Stage.Err(), "the stage link is closed")
	require.NoError(t, b.Close(), "Close is idempotent")
}

// TestOpenSimCameraFollowsRealStage: a real stage (here a GRBL emulator of
// the test's own on a pty, opened by its path as /dev/ttyUSB0 would be)
// with the simulated camera and light: the camera looks where the stage
// reports it is.
func TestOpenSimCameraFollowsRealStage(t *testing.T) {
	emu := grblsim.New(stageEmu(50, true))
	t.Cleanup(func() { emu.Close() })
	port, err := emu.OpenPTY()
	require.NoError(t, err)
	cfg := simConfig(t)
	cfg.Stage.Port = port
	cfg.Light.PWMChip = ""
	cfg.Button.Line, cfg.EStop.Line = "", ""
	ctx := openCtx(t)
	b, err := Open(ctx, cfg)
	require.NoError(t, err)
	t.Cleanup(func() { b.Close() })
	assert.Equal(t, []string{"light", "camera"}, b.Simulated)
	assert.Nil(t, b.Sim.Emulator, "no simulated stage")
	assert.Contains(t, b.String(), "stage "+port)
	assert.Contains(t, b.String(), "stop button not fitted")

	require.NoError(t, b.Stage.Home(ctx))
	require.NoError(t, b.Light.On(1))
	off := mean(t, b.Camera)
	assert.InDelta(t, simcam.GreyBackground, off, 8, "at the origin, off the wafer")
	require.NoError(t, b.Stage.MoveTo(ctx, motion.Point{X: 150 * motion.Millimetre, Y: 150 * motion.Millimetre}, 6000))
	assert.Greater(t, mean(t, b.Camera), off+40, "over the wafer")
	require.NoError(t, b.Close())
	assert.Equal(t, gpio.Low, level(b.Sim.LightPin))
}

func TestOpenMixedMissingCameraNamesIt(t *testing.T) {
	cfg := simConfig(t)
	cfg.Camera.Device = filepath.Join(t.TempDir(), "video7")
	_, err := Open(openCtx(t), cfg)
	require.Error(t, err)
	assert.ErrorIs(t, err, fs.ErrNotExist)
	assert.True(t, strings.HasPrefix(err.Error(), "board: camera (camera.device): "), err.Error())
	assert.Contains(t, err.Error(), cfg.Camera.Device)
}

func TestOpenMixedMissingLightLineNamesIt(t *testing.T) {
	cfg := simConfig(t)
	cfg.Light.Chip, cfg.Light.Line = "no-such-chip", "GPIO17"
	_, err := Open(openCtx(t), cfg)
	require.Error(t, err)
	assert.Contains(t, err.Error(), `board: light enable: GPIO chip "no-such-chip" not found`)
}

// fakePWM makes root/pwmchip0 with two channels, channel 1 exported.
func fakePWM(t *testing.T) (root, channel string) {
	t.Helper()
	root = t.TempDir()
	chip := filepath.Join(root, "pwmchip0")
	channel = filepath.Join(chip, "pwm1")
	require.NoError(t, os.MkdirAll(channel, 0o755))
	files := map[string]string{
		filepath.Join(chip, "npwm"): "2", filepath.Join(chip, "export"): "", filepath.Join(chip, "unexport"): "",
		filepath.Join(channel, "period"): "0", filepath.Join(channel, "duty_cycle"): "0", filepath.Join(channel, "enable"): "0",
	}
	for p, v := range files {
		require.NoError(t, os.WriteFile(p, []byte(v), 0o644))
	}
	return root, channel
}

func readAttr(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	require.NoError(t, err)
	return n
}

func TestOpenSysfsPWMDimmer(t *testing.T) {
	root, ch := fakePWM(t)
	cfg := simConfig(t)
	cfg.Light.PWMChip, cfg.Light.PWMChannel, cfg.Light.PWMFreqHz = "pwmchip0", 1, 1000
	b, err := Open(openCtx(t), cfg, WithSysfsPWMRoot(root))
	require.NoError(t, err)
	t.Cleanup(func() { b.Close() })
	assert.NotContains(t, b.Simulated, "light dimmer")
	assert.Contains(t, b.String(), "light dimmer "+ch+" at 1000 Hz")
	require.NoError(t, b.Light.On(0.25))
	assert.Equal(t, 1000000, readAttr(t, filepath.Join(ch, "period")), "1 kHz: 1 ms")
	assert.Equal(t, 250000, readAttr(t, filepath.Join(ch, "duty_cycle")))
	assert.Equal(t, 1, readAttr(t, filepath.Join(ch, "enable")))
	require.NoError(t, b.Light.Off())
	assert.Equal(t, 0, readAttr(t, filepath.Join(ch, "duty_cycle")))
	require.NoError(t, b.Light.On(1))
	require.NoError(t, b.Close())
	assert.Equal(t, 0, readAttr(t, filepath.Join(ch, "duty_cycle")))
	assert.Equal(t, 0, readAttr(t, filepath.Join(ch, "enable")), "Close disables the channel")
}

func TestOpenSysfsPWMErrors(t *testing.T) {
	root, _ := fakePWM(t)
	for _, c := range []struct {
		chip    string
		channel int
		want    string
	}{
		{"pwmchip9", 0, fmt.Sprintf("board: light dimmer (light.pwm_chip, light.pwm_channel): illumination: PWM chip %s: no such file or directory; PWM controllers under %s: pwmchip0 (2 channels (0 to 1))",
			filepath.Join(root, "pwmchip9"), root)},
		{"pwmchip0", 2, "illumination: PWM channel 2 out of range: " + filepath.Join(root, "pwmchip0") + " has 2 channels (0 to 1) (npwm)"},
	} {
		cfg := simConfig(t)
		cfg.Light.PWMChip, cfg.Light.PWMChannel = c.chip, c.channel
		_, err := Open(openCtx(t), cfg, WithSysfsPWMRoot(root))
		require.Error(t, err)
		assert.Contains(t, err.Error(), c.want)
	}
}

func TestOpenSimBoardDescribed(t *testing.T) {
	b, err := OpenSim(openCtx(t), SimConfig{Sim: sim.Config{TimeScale: 50, FrameWidth: 32, FrameHeight: 32}})
	require.NoError(t, err)
	defer b.Close()
	assert.Equal(t, []string{"light", "stop button", "e-stop", "stage", "camera"}, b.Simulated)
	assert.Contains(t, b.String(), "camera simulated (synthetic, 32x32 at 20 µm)")
}
