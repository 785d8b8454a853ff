// Package board opens the devices a machine is built from and hands out the
// interfaces the workflow consumes. It is, with cmd, the only place that
// knows which implementation is behind each device: real hardware named in
// the configuration, or the simulated board, as a whole (OpenSim) or per
// device (a device named "sim" in the configuration, see Open).
package board

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"time"

	"go.bug.st/serial"
	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpiotest"
	"periph.io/x/conn/v3/physic"

	"github.com/waferd/waferd/camera"
	"github.com/waferd/waferd/camera/v4l2"
	"github.com/waferd/waferd/config"
	"github.com/waferd/waferd/illumination"
	"github.com/waferd/waferd/inspection/recipe"
	"github.com/waferd/waferd/internal/logging"
	"github.com/waferd/waferd/motion"
	"github.com/waferd/waferd/motion/grbl"
	"github.com/waferd/waferd/sim"
)

// Board is an opened machine. Close releases everything it opened, leaving
// the light off.
type Board struct {
	// Stage is the XY stage: a *ReopeningStage on a real serial port (it
	// reopens the port by itself when the link is lost), a *grbl.Stage on
	// the simulated board's pty.
	Stage  Stage
	Light  *illumination.Light
	Camera camera.Camera
	// Button and EStop are the stop button and e-stop sense inputs, nil
	// when not fitted.
	Button, EStop gpio.PinIn
	// Limits are what recipes are validated against.
	Limits recipe.Limits
	// Sim is the simulated board behind the simulated devices, nil when
	// every device is real. On a mixed board (per-device sim) only the
	// fields of its simulated devices are set.
	Sim *sim.Board
	// Simulated names the simulated devices in the order of opening
	// ("light", "light dimmer", "stop button", "e-stop", "stage",
	// "camera"); empty when every device is real.
	Simulated []string

	devices   []string // descriptions, for String
	closeOnce sync.Once
	closeErr  error
	closers   []func() error // in the order of opening; Close runs them in reverse
}

// StageConfig names the stage's serial line.
type StageConfig struct {
	Port string // e.g. /dev/serial/by-id/usb-Arduino…-if00 or /dev/ttyUSB0
	Baud int    // default 115200
	GRBL grbl.Config
	// Travel, if not zero, is the box of machine coordinates the stage is
	// to reach ([stage] travel_min_mm, travel_max_mm): OpenStage refuses a
	// controller whose machine space does not hold it (see
	// grbl.Machine.CheckTravel).
	Travel motion.Rect
	// Homing, if set, is whether the stage homes ([stage] homing):
	// OpenStage refuses a controller whose $22 says otherwise.
	Homing *bool
}

// OpenStage opens the serial port, connects the GRBL driver and waits for the
// controller's banner. It blocks until connected or ctx ends. With
// cfg.Travel set it checks the travel against the controller's settings
// ($130, $131, $22, $23, $27): a travel that does not fit is an error
// naming both. A controller that cannot show its settings now (held:
// error:8) is not refused; the check is then skipped, with a warning to
// cfg.GRBL.Warnf.
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
	if cfg.Travel != (motion.Rect{}) || cfg.Homing != nil {
		m, err := st.Machine(ctx)
		switch {
		case err != nil && ctx.Err() != nil:
			return nil, errors.Join(fmt.Errorf("board: stage on %s: %w", cfg.Port, err), st.Close())
		case err != nil:
			if cfg.GRBL.Warnf != nil {
				cfg.GRBL.Warnf("board: stage on %s: travel and homing not checked against the controller's settings: %v", cfg.Port, err)
			}
		default:
			if err := checkHoming(cfg.Homing, m); err != nil {
				return nil, errors.Join(fmt.Errorf("board: stage on %s: stage.homing: %w (%w)", cfg.Port, err, ErrMismatch), st.Close())
			}
			if err := m.CheckTravel(cfg.Travel); err != nil && cfg.Travel != (motion.Rect{}) {
				return nil, errors.Join(fmt.Errorf("board: stage on %s: stage.travel_min_mm, stage.travel_max_mm: %w (%w)", cfg.Port, err, ErrMismatch), st.Close())
			}
		}
	}
	return st, nil
}

// ErrMismatch marks a start-up error where the configuration and the
// controller disagree (travel, homing): a configuration error, which a
// restart does not fix.
var ErrMismatch = errors.New("board: the configuration does not match the controller")

// checkHoming refuses a controller whose homing ($22) is not what the
// configuration says (want; nil: not checked).
func checkHoming(want *bool, m grbl.Machine) error {
	switch {
	case want == nil || *want == m.Homing:
		return nil
	case *want:
		return errors.New("the configuration says the stage homes (homing = true), but the controller's homing cycle is disabled ($22=0): enable it on the controller ($22=1) if the stage has homing switches, or set homing = false and set the origin from the console")
	}
	return errors.New("the configuration says the stage has no homing (homing = false), but the controller homes ($22=1): set homing = true, or disable homing on the controller ($22=0)")
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
	st, err := OpenStage(ctx, StageConfig{Port: sb.PTY, GRBL: cfg.GRBL, Travel: cfg.Sim.Limits().Travel})
	if err != nil {
		return nil, errors.Join(err, b.Close())
	}
	b.Stage = st
	b.closers = append(b.closers, st.Close)
	if b.Light, err = illumination.New(illumination.Config{Enable: sb.LightPin}); err != nil {
		return nil, errors.Join(err, b.Close())
	}
	b.Button, b.EStop = sb.ButtonPin, sb.EStopPin
	b.simulated("light", "")
	b.simulated("stop button", "")
	b.simulated("e-stop", "")
	b.simulated("stage", "GRBL emulator on "+sb.PTY)
	info := sb.Camera.Info()
	b.simulated("camera", fmt.Sprintf("synthetic, %dx%d at %g µm", info.Width, info.Height, info.PixelSize))
	return b, nil
}

// Option adjusts where Open looks for devices; tests use them.
type Option func(*options)

type options struct {
	pwmRoot    string
	simLogf    func(format string, args ...any)
	stageRetry time.Duration
	stageLog   *logging.Log
	grblLog    *logging.Log
}

// WithSysfsPWMRoot makes Open look for light.pwm_chip under root instead of
// /sys/class/pwm.
func WithSysfsPWMRoot(root string) Option { return func(o *options) { o.pwmRoot = root } }

// WithSimLog sends the debug log of a simulated stage's GRBL emulator to
// logf.
func WithSimLog(logf func(format string, args ...any)) Option {
	return func(o *options) { o.simLogf = logf }
}

// WithStageRetryInterval sets how often a real stage whose link was lost
// tries to reopen its serial port (ReopenConfig.RetryInterval; default
// 1 s).
func WithStageRetryInterval(d time.Duration) Option {
	return func(o *options) { o.stageRetry = d }
}

// WithStageLog sends a real stage's link messages (lost, back; see
// ReopeningStage) to l.
func WithStageLog(l *logging.Log) Option { return func(o *options) { o.stageLog = l } }

// WithGRBLLog sends the GRBL driver's diagnostics to l: noise on the link
// as warnings (at most one a minute), the rest (malformed or unexpected
// lines, ...) at debug level.
func WithGRBLLog(l *logging.Log) Option { return func(o *options) { o.grblLog = l } }

// GRBLLog returns c with its diagnostics going to l (see WithGRBLLog).
func GRBLLog(c grbl.Config, l *logging.Log) grbl.Config {
	c.Logf, c.Warnf = l.Debugf, l.Warnf
	return c
}

// Open opens the devices the configuration names: the light's GPIO lines
// and its sysfs PWM channel (light.pwm_chip), the stop inputs, the stage's
// serial port (GRBL) and the V4L2 camera ([camera] device, streaming from
// here on), in that order. Every failure names the device, what was
// expected and what was found; a [stage] travel that the controller's
// machine space does not hold is refused, naming both (see OpenStage). It
// blocks until the stage has connected or ctx ends. Close releases
// everything it opened.
//
// A real stage is a *ReopeningStage: when its serial port disappears (USB
// adapter unplugged) calls fail with motion.ErrLinkLost until the port is
// back and the controller answers, which it notices by itself, retrying
// every second (WithStageRetryInterval). The simulated stage is a plain
// *grbl.Stage: its pty does not come back.
//
// A device named config.SimDevice ("sim": stage.port, light.chip,
// light.pwm_chip, camera.device, button.chip, estop.chip) is served by the
// simulated board instead, the others staying real (machine bring-up). The
// simulated stage still goes through the GRBL driver, on the emulator's
// pty, with the travel of [stage]; the synthetic camera has the size and
// pixel_um (whole micrometres) of [camera], looks at the real stage's last
// reported position when the stage is real, and sees the light on when the
// real light is commanded on. A simulated light ignores active_low and
// sense_line; simulated inputs read as wired (active_low) and ignore pull.
// Board.Simulated and String say which devices are simulated.
func Open(ctx context.Context, cfg *config.Config, opts ...Option) (*Board, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	b := &Board{}
	fail := func(err error) (*Board, error) { return nil, errors.Join(err, b.Close()) }
	sb, err := openSimParts(cfg, b, o)
	if err != nil {
		return fail(err)
	}
	if sb != nil {
		b.Sim = sb
		b.closers = append(b.closers, sb.Close)
	}

	var lc illumination.Config
	if cfg.Light.Chip == config.SimDevice {
		lc.Enable = sb.LightPin
		var unused []string
		if cfg.Light.ActiveLow {
			unused = append(unused, "active_low")
		}
		if cfg.Light.SenseLine != "" {
			unused = append(unused, "sense_line")
		}
		detail := ""
		if len(unused) > 0 {
			detail = strings.Join(unused, " and ") + " not used"
		}
		b.simulated("light", detail)
	} else {
		// The enable line is requested (as an output, off) by
		// illumination.New below.
		en, err := OpenLine("light enable", cfg.Light.Chip, cfg.Light.Line)
		if err != nil {
			return fail(err)
		}
		b.closers = append(b.closers, en.Close)
		lc = illumination.Config{Enable: en, ActiveLow: cfg.Light.ActiveLow, SenseActiveLow: cfg.Light.SenseActiveLow}
		desc := "light " + cfg.Light.Chip + "/" + cfg.Light.Line
		if cfg.Light.SenseLine != "" {
			sense, err := openInput("light sense", cfg.Light.Chip, cfg.Light.SenseLine)
			if err != nil {
				return fail(err)
			}
			b.closers = append(b.closers, sense.Close)
			lc.Sense = sense
			desc += ", sense " + cfg.Light.SenseLine
		}
		b.devices = append(b.devices, desc)
	}
	switch cfg.Light.PWMChip {
	case "":
	case config.SimDevice:
		lc.Dimmer = sb.DimmerPin
		b.simulated("light dimmer", fmt.Sprintf("%d Hz", cfg.Light.PWMFreqHz))
	default:
		pwm, err := illumination.OpenSysfsPWM(ctx, illumination.SysfsPWMConfig{
			Root: o.pwmRoot, Chip: cfg.Light.PWMChip, Channel: cfg.Light.PWMChannel,
		})
		if err != nil {
			return fail(fmt.Errorf("board: light dimmer (light.pwm_chip, light.pwm_channel): %w", err))
		}
		b.closers = append(b.closers, pwm.Close)
		lc.Dimmer = pwm
		b.devices = append(b.devices, fmt.Sprintf("light dimmer %s at %d Hz", pwm, cfg.Light.PWMFreqHz))
	}
	if lc.Dimmer != nil {
		lc.DimmerFreq = physic.Frequency(cfg.Light.PWMFreqHz) * physic.Hertz
	}
	if b.Light, err = illumination.New(lc); err != nil {
		return fail(err)
	}

	for _, in := range []struct {
		what string
		cfg  config.Input
		pin  *gpio.PinIn
		sim  *gpiotest.Pin
	}{{"stop button", cfg.Button, &b.Button, simPin(sb, true)}, {"e-stop", cfg.EStop, &b.EStop, simPin(sb, false)}} {
		switch {
		case in.cfg.Line == "":
			b.devices = append(b.devices, in.what+" not fitted")
		case in.cfg.Chip == config.SimDevice:
			*in.pin = simInput{Pin: in.sim, activeLow: in.cfg.ActiveLow}
			b.simulated(in.what, "")
		default:
			l, err := openInput(in.what, in.cfg.Chip, in.cfg.Line)
			if err != nil {
				return fail(err)
			}
			b.closers = append(b.closers, l.Close)
			*in.pin = l
			b.devices = append(b.devices, in.what+" "+in.cfg.Chip+"/"+in.cfg.Line)
		}
	}

	homing := cfg.Stage.Homing
	sc := StageConfig{Port: cfg.Stage.Port, Baud: cfg.Stage.Baud, GRBL: GRBLConfig(cfg.Stage), Travel: cfg.Stage.Travel(), Homing: &homing}
	if o.grblLog != nil {
		sc.GRBL = GRBLLog(sc.GRBL, o.grblLog)
	}
	if cfg.Stage.Port == config.SimDevice {
		// The emulator's pty: a path that never comes back once closed
		// (and whose number another pty may take), so no reopening.
		sc.Port = sb.PTY
		st, err := OpenStage(ctx, sc)
		if err != nil {
			return fail(err)
		}
		b.Stage = st
		b.closers = append(b.closers, st.Close)
		b.simulated("stage", "GRBL emulator on "+sb.PTY)
	} else {
		st, err := OpenReopeningStage(ctx, ReopenConfig{Stage: sc, RetryInterval: o.stageRetry, Log: o.stageLog})
		if err != nil {
			return fail(err)
		}
		b.Stage = st
		b.closers = append(b.closers, st.Close)
		b.devices = append(b.devices, "stage "+sc.Port)
	}

	var cam camera.Camera
	if cfg.Camera.Device == config.SimDevice {
		cam = sb.Camera // closed with sb
		info := cam.Info()
		b.simulated("camera", fmt.Sprintf("synthetic, %dx%d at %g µm", info.Width, info.Height, info.PixelSize))
	} else {
		vc, err := OpenCamera(cfg.Camera)
		if err != nil {
			return fail(err)
		}
		b.closers = append(b.closers, vc.Close)
		cam = vc
		b.devices = append(b.devices, "camera "+cfg.Camera.Device)
	}
	b.Camera = cam
	info := cam.Info()
	b.Limits = recipe.Limits{
		Travel: cfg.Stage.Travel(),
		FOV: motion.Point{
			X: motion.Distance(float64(info.Width) * info.PixelSize),
			Y: motion.Distance(float64(info.Height) * info.PixelSize),
		},
		MaxFeed: motion.Speed(cfg.Stage.MaxFeedMMMin),
	}
	if cfg.Camera.Device == config.SimDevice {
		b.Limits.MinPitch = sim.MinDiePitch
	}
	return b, nil
}

// openInput opens an input line and requests it from the kernel at once, so
// that a line held by another process stops start-up with an error naming
// the holder (rather than leaving the input dead when input.Run configures
// it). Bias and edges are set by the line's user (input.Run).
func openInput(what, chip, line string) (*Line, error) {
	l, err := OpenLine(what, chip, line)
	if err != nil {
		return nil, err
	}
	if err := l.In(gpio.PullNoChange, gpio.NoEdge); err != nil {
		return nil, errors.Join(fmt.Errorf("board: %s: %w", what, err), l.Close())
	}
	return l, nil
}

// openSimParts starts the simulated devices cfg names "sim", or returns nil
// if there are none. The synthetic camera looks at b's real stage and light
// when those are real.
func openSimParts(cfg *config.Config, b *Board, o options) (*sim.Board, error) {
	simulated := func(dev string) bool { return dev == config.SimDevice }
	parts := sim.Parts{
		Stage:  simulated(cfg.Stage.Port),
		Light:  simulated(cfg.Light.Chip),
		Dimmer: simulated(cfg.Light.PWMChip),
		Camera: simulated(cfg.Camera.Device),
		Inputs: simulated(cfg.Button.Chip) && cfg.Button.Line != "" || simulated(cfg.EStop.Chip) && cfg.EStop.Line != "",
	}
	if !parts.Any() {
		return nil, nil
	}
	sc := sim.Config{
		TimeScale:  cfg.Sim.TimeScale,
		FrameWidth: cfg.Camera.Width, FrameHeight: cfg.Camera.Height,
		PixelSize: max(motion.Distance(math.Round(cfg.Camera.PixelUM)), motion.Micrometre),
		Travel:    cfg.Stage.Travel(),
		NoHoming:  !cfg.Stage.Homing,
		Logf:      o.simLogf,
	}
	if !parts.Stage {
		// The real stage's last reported machine position.
		sc.Position = func() motion.Point {
			if b.Stage == nil {
				return motion.Point{}
			}
			st, _ := b.Stage.LastStatus()
			return motion.Point{X: st.MPos[0], Y: st.MPos[1]}
		}
	}
	if !parts.Light {
		sc.Lit = func() bool { return b.Light != nil && b.Light.IsOn() }
	}
	sb, err := sim.NewPartial(sc, parts)
	if err != nil {
		return nil, fmt.Errorf("board: simulated devices: %w", err)
	}
	return sb, nil
}

func simPin(sb *sim.Board, button bool) *gpiotest.Pin {
	switch {
	case sb == nil:
		return nil
	case button:
		return sb.ButtonPin
	}
	return sb.EStopPin
}

// simInput is a simulated stop input seen through the configured wiring:
// the simulator's pin is high while the input is active (pressed, engaged;
// see sim.Press), and the line then reads its active level. The pull is not
// applied: the simulated switch drives the line.
type simInput struct {
	*gpiotest.Pin
	activeLow bool
}

func (p simInput) In(_ gpio.Pull, edge gpio.Edge) error { return p.Pin.In(gpio.PullNoChange, edge) }

func (p simInput) Read() gpio.Level { return p.Pin.Read() != gpio.Level(p.activeLow) }

// simulated records a simulated device.
func (b *Board) simulated(what, detail string) {
	b.Simulated = append(b.Simulated, what)
	if detail != "" {
		detail = " (" + detail + ")"
	}
	b.devices = append(b.devices, what+" simulated"+detail)
}

// String describes the board's devices, naming the simulated ones, e.g.
// "light gpiochip0/GPIO17; stop button not fitted; e-stop not fitted;
// stage simulated (GRBL emulator on /dev/pts/3); camera /dev/video0".
func (b *Board) String() string { return strings.Join(b.devices, "; ") }

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

// Close switches the light off, then closes what it opened in the reverse
// order: the camera, the stage link, the light's PWM channel, the simulated
// devices. It does not move the stage. Safe to call more than once.
func (b *Board) Close() error {
	b.closeOnce.Do(func() {
		var errs []error
		if b.Light != nil {
			errs = append(errs, b.Light.Off())
		}
		for i := len(b.closers) - 1; i >= 0; i-- {
			errs = append(errs, b.closers[i]())
		}
		b.closeErr = errors.Join(errs...)
	})
	return b.closeErr
}

// ExpectedLimits are the limits recipes are validated against before the
// board is opened: the simulated board's when [sim] is enabled, else the
// configured stage travel and feed and the configured camera's field of
// view; with the longest exposure the watchdog allows (ExposureLimit).
// Open's Board.Limits may differ only where a real camera chose another
// frame size than configured.
func ExpectedLimits(cfg *config.Config) recipe.Limits {
	if cfg.Sim.Enabled {
		lim := sim.Config{}.Limits()
		lim.MaxExposure = ExposureLimit(cfg)
		return lim
	}
	lim := recipe.Limits{
		Travel: cfg.Stage.Travel(),
		FOV: motion.Point{
			X: motion.Distance(float64(cfg.Camera.Width) * cfg.Camera.PixelUM),
			Y: motion.Distance(float64(cfg.Camera.Height) * cfg.Camera.PixelUM),
		},
		MaxFeed:     motion.Speed(cfg.Stage.MaxFeedMMMin),
		MaxExposure: ExposureLimit(cfg),
	}
	if cfg.Camera.Device == config.SimDevice {
		lim.MinPitch = sim.MinDiePitch
	}
	return lim
}

// ExposureLimit is the longest exposure a recipe may ask of this machine
// (recipe.Limits.MaxExposure; the program sets it on the Board's Limits):
// half the shorter of the light's maximum on-time and the camera's
// heartbeat limit ([watchdog] light_max_on_ms, camera_heartbeat_ms), so
// that a normal capture, light on around it, can never look like a light
// left on or a hung camera and fault the machine.
func ExposureLimit(cfg *config.Config) time.Duration {
	return min(config.MS(cfg.Watchdog.LightMaxOnMS), config.MS(cfg.Watchdog.CameraHeartbeatMS)) / 2
}
