// Package board opens the devices a machine is built from and hands out the
// interfaces the workflow consumes. It is, with cmd, the only place that
// knows which implementation is behind each device: real hardware named in
// the configuration, or the simulated board.
package board

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"go.bug.st/serial"
	"periph.io/x/conn/v3/gpio"

	"github.com/waferd/waferd/camera"
	"github.com/waferd/waferd/camera/v4l2"
	"github.com/waferd/waferd/config"
	"github.com/waferd/waferd/illumination"
	"github.com/waferd/waferd/inspection/recipe"
	"github.com/waferd/waferd/motion"
	"github.com/waferd/waferd/motion/grbl"
	"github.com/waferd/waferd/sim"
)

// Board is an opened machine. Close releases everything it opened, leaving
// the light off.
type Board struct {
	Stage  *grbl.Stage
	Light  *illumination.Light
	Camera camera.Camera
	// Button and EStop are the stop button and e-stop sense inputs, nil
	// when not fitted.
	Button, EStop gpio.PinIn
	// Limits are what recipes are validated against.
	Limits recipe.Limits
	// Sim is the simulated board behind the devices, nil on real hardware.
	Sim *sim.Board

	closeOnce sync.Once
	closeErr  error
	closers   []func() error // in reverse order of opening
}

// StageConfig names the stage's serial line.
type StageConfig struct {
	Port string // e.g. /dev/serial/by-id/usb-Arduino…-if00 or /dev/ttyUSB0
	Baud int    // default 115200
	GRBL grbl.Config
}

// OpenStage opens the serial port, connects the GRBL driver and waits for the
// controller's banner. It blocks until connected or ctx ends.
func OpenStage(ctx context.Context, cfg StageConfig) (*grbl.Stage, error) {
	if cfg.Baud == 0 {
		cfg.Baud = 115200
	}
	port, err := serial.Open(cfg.Port, &serial.Mode{BaudRate: cfg.Baud, DataBits: 8, Parity: serial.NoParity, StopBits: serial.OneStopBit})
	if err != nil {
		return nil, fmt.Errorf("board: stage serial port %s: %w", cfg.Port, err)
	}
	st := grbl.New(port, cfg.GRBL)
	if err := st.Connect(ctx); err != nil {
		return nil, errors.Join(fmt.Errorf("board: stage on %s: %w", cfg.Port, err), st.Close())
	}
	return st, nil
}

// SimConfig sets up the simulated board.
type SimConfig struct {
	Sim  sim.Config
	GRBL grbl.Config
}

// OpenSim starts the simulated board and opens its devices through the same
// drivers as real hardware: the GRBL driver on the emulator's pty, the light
// on a periph test pin.
func OpenSim(ctx context.Context, cfg SimConfig) (*Board, error) {
	sb, err := sim.New(cfg.Sim)
	if err != nil {
		return nil, fmt.Errorf("board: %w", err)
	}
	b := &Board{Sim: sb, Camera: sb.Camera, Limits: cfg.Sim.Limits()}
	b.closers = append(b.closers, sb.Close)
	if b.Stage, err = OpenStage(ctx, StageConfig{Port: sb.PTY, GRBL: cfg.GRBL}); err != nil {
		return nil, errors.Join(err, b.Close())
	}
	b.closers = append(b.closers, b.Stage.Close)
	if b.Light, err = illumination.New(illumination.Config{Enable: sb.LightPin}); err != nil {
		return nil, errors.Join(err, b.Close())
	}
	b.closers = append(b.closers, b.Light.Off)
	b.Button, b.EStop = sb.ButtonPin, sb.EStopPin
	return b, nil
}

// Open opens the real devices the configuration names: the stage's serial
// port (GRBL), the light's GPIO lines, the stop inputs and the V4L2 camera
// ([camera] device, streaming from here on). Every failure names the device,
// what was expected and what was found.
func Open(ctx context.Context, cfg *config.Config) (*Board, error) {
	b := &Board{}
	fail := func(err error) (*Board, error) { return nil, errors.Join(err, b.Close()) }
	en, err := OpenLine("light enable", cfg.Light.Chip, cfg.Light.Line)
	if err != nil {
		return fail(err)
	}
	lc := illumination.Config{Enable: en, ActiveLow: cfg.Light.ActiveLow, SenseActiveLow: cfg.Light.SenseActiveLow}
	if cfg.Light.SenseLine != "" {
		if lc.Sense, err = OpenLine("light sense", cfg.Light.Chip, cfg.Light.SenseLine); err != nil {
			return fail(err)
		}
	}
	if cfg.Light.PWMChip != "" {
		return fail(fmt.Errorf("board: light dimming through %s: sysfs PWM is not in this build yet; leave light.pwm_chip empty", cfg.Light.PWMChip))
	}
	if b.Light, err = illumination.New(lc); err != nil {
		return fail(err)
	}
	b.closers = append(b.closers, b.Light.Off)
	if cfg.Button.Line != "" {
		if b.Button, err = OpenLine("stop button", cfg.Button.Chip, cfg.Button.Line); err != nil {
			return fail(err)
		}
	}
	if cfg.EStop.Line != "" {
		if b.EStop, err = OpenLine("e-stop", cfg.EStop.Chip, cfg.EStop.Line); err != nil {
			return fail(err)
		}
	}
	b.Stage, err = OpenStage(ctx, StageConfig{Port: cfg.Stage.Port, Baud: cfg.Stage.Baud, GRBL: GRBLConfig(cfg.Stage)})
	if err != nil {
		return fail(err)
	}
	b.closers = append(b.closers, b.Stage.Close)
	cam, err := OpenCamera(cfg.Camera)
	if err != nil {
		return fail(err)
	}
	b.Camera = cam
	b.closers = append(b.closers, cam.Close)
	info := cam.Info()
	b.Limits = recipe.Limits{
		Travel: cfg.Stage.Travel(),
		FOV: motion.Point{
			X: motion.Distance(float64(info.Width) * info.PixelSize),
			Y: motion.Distance(float64(info.Height) * info.PixelSize),
		},
		MaxFeed: motion.Speed(cfg.Stage.MaxFeedMMMin),
	}
	return b, nil
}

// OpenCamera opens the V4L2 camera of the [camera] section: GREY or YUYV
// frames (reduced to 8-bit grey) at the configured size or the nearest the
// driver has (the frames' Info reports which), manual exposure if
// manual_exposure is set and the camera has the controls (see
// v4l2.Camera.Details for whether it has).
func OpenCamera(c config.Camera) (*v4l2.Camera, error) {
	cam, err := v4l2.Open(c.Device, v4l2.Config{
		Width: c.Width, Height: c.Height, Format: c.Format,
		PixelSize: c.PixelUM, ManualExposure: c.ManualExposure,
	})
	if err != nil {
		return nil, fmt.Errorf("board: camera (camera.device): %w", err)
	}
	return cam, nil
}

// GRBLConfig is the driver configuration from the [stage] section.
func GRBLConfig(s config.Stage) grbl.Config {
	return grbl.Config{
		PollInterval:   config.MS(s.PollMS),
		ReplyTimeout:   config.MS(s.ReplyTimeoutMS),
		ConnectTimeout: config.MS(s.ConnectTimeoutMS),
		HomingTimeout:  config.MS(s.HomingTimeoutMS),
	}
}

// Close switches the light off and closes the stage link, the camera and
// (on the simulated board) the simulator, in that order. It does not move the
// stage. Safe to call more than once.
func (b *Board) Close() error {
	b.closeOnce.Do(func() {
		var errs []error
		for i := len(b.closers) - 1; i >= 0; i-- {
			errs = append(errs, b.closers[i]())
		}
		b.closeErr = errors.Join(errs...)
	})
	return b.closeErr
}
