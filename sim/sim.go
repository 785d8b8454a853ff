// Package sim is the simulated board: a GRBL 1.1 emulator behind a real
// pseudo-terminal (sim/grblsim), periph test pins for the light, and a
// synthetic camera (sim/simcam) that photographs the wafer under the
// emulator's true stage position while the light pin is high.
//
// The simulated devices are separate implementations of the hardware, not
// flags inside the drivers: the production GRBL driver opens the emulator's
// pty through go.bug.st/serial exactly as it would open /dev/ttyUSB0.
//
// A partial board (NewPartial) simulates only some devices, for a machine
// being brought up with the others real: the synthetic camera then looks
// at the real stage's position and is lit by the real light.
package sim

import (
	"errors"
	"fmt"
	"maps"
	"time"

	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpiotest"

	"github.com/waferd/waferd/camera"
	"github.com/waferd/waferd/inspection/recipe"
	"github.com/waferd/waferd/motion"
	"github.com/waferd/waferd/sim/grblsim"
	"github.com/waferd/waferd/sim/simcam"
)

// Defaults of the simulated machine.
const (
	FrameWidth  = 512 // pixels
	FrameHeight = 512
	PixelSize   = 20 * motion.Micrometre
)

// Travel is the simulated stage's reachable area.
var Travel = motion.Rect{Max: motion.Point{X: 300 * motion.Millimetre, Y: 300 * motion.Millimetre}}

// StageSettings are the simulated stage's GRBL settings, those of a real
// 300 × 300 mm XY table: 4 mm-lead ball screws driven by 1.8° steppers at
// 16 microsteps, 800 steps/mm ($100, $101); 6000 mm/min ($110, $111) and
// 500 mm/s² ($120, $121); homing switches at the - ends ($22=1, $23=3),
// soft and hard limits on ($20=1, $21=1), 1 mm pull-off ($27=1) and the
// status report as shipped ($10=1: MPos, no Bf:). Travel ($130, $131)
// comes from Config.Travel. Its firmware is GRBL 1.1h built with
// HOMING_FORCE_SET_ORIGIN, so that machine space is 0..300 mm, where the
// example recipes are; a stock firmware would put it at -300..0.
var StageSettings = map[int]float64{
	100: 800, 101: 800,
	110: 6000, 111: 6000,
	120: 500, 121: 500,
	20: 1, 21: 1, 22: 1, 23: 3, 27: 1,
	10: 1,
}

// EmulatorConfig is the configuration of the simulated board's GRBL
// emulator: StageSettings on c's travel (see grblsim.Config.Travel: a
// travel on the positive side is a firmware with HOMING_FORCE_SET_ORIGIN,
// one on the negative side stock GRBL), c's time scale and log.
func EmulatorConfig(c Config) grblsim.Config {
	settings := maps.Clone(StageSettings)
	if c.NoHoming {
		// No homing switches: no homing cycle, and no soft limits (GRBL
		// needs homing for them).
		settings[22], settings[20] = 0, 0
	}
	return grblsim.Config{
		Settings:  settings,
		Travel:    c.travel(),
		TimeScale: c.TimeScale,
		Noise:     c.LinkNoise,
		NoiseSeed: c.LinkNoiseSeed,
		Logf:      c.Logf,
	}
}

// Config sets up a simulated board.
type Config struct {
	// TimeScale > 1 runs stage motion faster than real time (tests).
	TimeScale float64
	// NoHoming makes the simulated stage one without homing switches
	// ($22=0): it counts from where it powered up, and its origin is set
	// from the console ([stage] homing = false).
	NoHoming bool
	// FrameWidth and FrameHeight of the synthetic camera in pixels
	// (default 512×512 at 20 µm per pixel: a 10.24 mm field of view).
	// Tests use smaller frames to run faster.
	FrameWidth, FrameHeight int
	// PixelSize is the synthetic camera's pixel on the wafer; zero:
	// PixelSize (20 µm).
	PixelSize motion.Distance
	// Travel is the emulated stage's reachable area (its soft limits);
	// zero: Travel.
	Travel motion.Rect
	// Scene is what lies on the stage (see SceneFor); zero: DefaultScene.
	Scene Scene
	// Logf receives the emulator's debug log (optional).
	Logf func(format string, args ...any)
	// LinkNoise is the fraction (0..1) of the emulator's lines that its
	// serial link corrupts, chosen by LinkNoiseSeed (see grblsim.Config's
	// Noise); 0: a clean link.
	LinkNoise     float64
	LinkNoiseSeed uint64
	// Position and Lit, if set, are what the synthetic camera sees instead
	// of the emulator's true position and the light pin: on a partial board
	// without the simulated stage or light, the real stage's position and
	// the real light's state. They are called at the start of every
	// exposure, from the capturing goroutine.
	Position func() motion.Point
	Lit      func() bool
}

// Scene is the wafer the synthetic camera sees.
type Scene = simcam.Scene

// DefaultScene is the wafer on the simulated stage until a recipe says
// otherwise: 100 mm, centred at (150, 150) mm, 10 mm dies, no defects.
func DefaultScene() Scene {
	return Scene{
		WaferCenter:   motion.Point{X: 150 * motion.Millimetre, Y: 150 * motion.Millimetre},
		WaferDiameter: 100 * motion.Millimetre,
		DiePitch:      motion.Point{X: 10 * motion.Millimetre, Y: 10 * motion.Millimetre},
	}
}

func (c Config) frame() (w, h int) {
	w, h = c.FrameWidth, c.FrameHeight
	if w <= 0 {
		w = FrameWidth
	}
	if h <= 0 {
		h = FrameHeight
	}
	return w, h
}

func (c Config) pixelSize() motion.Distance {
	if c.PixelSize <= 0 {
		return PixelSize
	}
	return c.PixelSize
}

func (c Config) travel() motion.Rect {
	if c.Travel == (motion.Rect{}) {
		return Travel
	}
	return c.Travel
}

// FOV is the simulated camera's field of view on the wafer.
func (c Config) FOV() motion.Point {
	w, h := c.frame()
	return motion.Point{X: motion.Distance(w) * c.pixelSize(), Y: motion.Distance(h) * c.pixelSize()}
}

// MinDiePitch is the smallest die pitch the synthetic camera draws: its
// scribe lines take 100 µm on each side of a die.
const MinDiePitch = 2*simcam.ScribeWidth + motion.Micrometre

// Limits are the simulated machine's limits for recipe validation.
func (c Config) Limits() recipe.Limits {
	return recipe.Limits{Travel: c.travel(), FOV: c.FOV(), MaxFeed: 6000, MinPitch: MinDiePitch}
}

// SceneFor seeds the defects of rec deterministically from its [sim]
// section: the same recipe always shows the same defects in a field of
// view fov.
func SceneFor(rec *recipe.Recipe, fov motion.Point) Scene {
	sites := make([]motion.Point, len(rec.Sites))
	for i, s := range rec.Sites {
		sites[i] = s.At
	}
	return Scene{
		WaferCenter:   rec.WaferCenter,
		WaferDiameter: rec.WaferDiameter,
		DiePitch:      rec.DiePitch,
		Seed:          rec.Sim.Seed,
		Defects: simcam.SeedDefects(sites, []motion.Point{rec.Reference.At}, fov,
			rec.Sim.Seed, rec.Sim.DefectFraction, rec.Sim.MaxDefectsPerSite),
	}
}

// Board is a running simulated board. Its fields are the simulated devices;
// a driver-level view (the real GRBL driver on the pty) is built by package
// board. On a partial board the fields of the devices it does not simulate
// are nil (PTY empty).
type Board struct {
	Emulator *grblsim.Emulator
	PTY      string        // slave path of the stage's serial line
	LightPin *gpiotest.Pin // the light's enable line
	// DimmerPin is the light's intensity (PWM) output; it records the duty
	// cycle and frequency (D, F). The synthetic camera does not dim.
	DimmerPin *gpiotest.Pin
	// ButtonPin and EStopPin are the stop button and e-stop sense inputs
	// (released: low). Tests press them by sending levels on EdgesChan
	// (see Press).
	ButtonPin, EStopPin *gpiotest.Pin
	Camera              *simcam.Camera

	cfg Config
}

// Parts selects the devices of a partial board.
type Parts struct {
	Stage  bool // Emulator serving PTY
	Light  bool // LightPin
	Dimmer bool // DimmerPin
	Camera bool // Camera
	Inputs bool // ButtonPin and EStopPin
}

// AllParts is every simulated device: the board New starts.
var AllParts = Parts{Stage: true, Light: true, Dimmer: true, Camera: true, Inputs: true}

// Any reports whether p selects any device.
func (p Parts) Any() bool { return p != Parts{} }

// Press drives an input pin to level l and delivers the edge, as a real
// line would (gpiotest.Pin updates L when WaitForEdge consumes the edge,
// so L is set here too for readers that do not wait). It blocks until the
// edge is taken or 1 s passes.
func Press(p *gpiotest.Pin, l gpio.Level) bool {
	p.Lock()
	p.L = l
	ch := p.EdgesChan
	p.Unlock()
	select {
	case ch <- l:
		return true
	case <-time.After(time.Second):
		return false
	}
}

// New starts a simulated board: the emulator serves its pty at once.
func New(cfg Config) (*Board, error) { return NewPartial(cfg, AllParts) }

// NewPartial starts the simulated devices parts selects. A camera without
// the simulated stage needs cfg.Position, and without the simulated light
// cfg.Lit.
func NewPartial(cfg Config, parts Parts) (*Board, error) {
	if cfg.TimeScale == 0 {
		cfg.TimeScale = 1
	}
	b := &Board{cfg: cfg}
	if parts.Light {
		b.LightPin = &gpiotest.Pin{N: "SIM_LIGHT", Num: 1}
	}
	if parts.Dimmer {
		b.DimmerPin = &gpiotest.Pin{N: "SIM_LIGHT_PWM", Num: 4}
	}
	if parts.Inputs {
		b.ButtonPin = &gpiotest.Pin{N: "SIM_STOP_BUTTON", Num: 2, EdgesChan: make(chan gpio.Level, 16)}
		b.EStopPin = &gpiotest.Pin{N: "SIM_ESTOP", Num: 3, EdgesChan: make(chan gpio.Level, 16)}
	}
	position, lit := cfg.Position, cfg.Lit
	if lit == nil && b.LightPin != nil {
		lit = b.lit
	}
	if parts.Camera && lit == nil {
		return nil, errors.New("sim: camera: no simulated light and no Lit given")
	}
	if parts.Camera && position == nil && !parts.Stage {
		return nil, errors.New("sim: camera: no simulated stage and no Position given")
	}
	if parts.Stage {
		b.Emulator = grblsim.New(EmulatorConfig(cfg))
		path, err := b.Emulator.OpenPTY()
		if err != nil {
			return nil, errors.Join(fmt.Errorf("sim: stage emulator: %w", err), b.Emulator.Close())
		}
		b.PTY = path
		if position == nil {
			position = b.Emulator.Position
		}
	}
	if parts.Camera {
		sc := cfg.Scene
		if sc.WaferDiameter == 0 {
			sc = DefaultScene()
		}
		w, h := cfg.frame()
		cam, err := simcam.New(simcam.Config{
			Width: w, Height: h, PixelSize: cfg.pixelSize(),
			WaferCenter: sc.WaferCenter, WaferDiameter: sc.WaferDiameter, DiePitch: sc.DiePitch,
			Defects: sc.Defects, Seed: sc.Seed,
			Position: position,
			Lit:      lit,
		})
		if err != nil {
			return nil, errors.Join(fmt.Errorf("sim: camera: %w", err), b.Close())
		}
		b.Camera = cam
	}
	return b, nil
}

// lit reports whether the light pin is driven high.
func (b *Board) lit() bool {
	b.LightPin.Lock()
	defer b.LightPin.Unlock()
	return b.LightPin.L == gpio.High
}

var _ camera.Camera = (*simcam.Camera)(nil)

// SetRecipe puts the wafer of rec under the camera, with the defects its
// [sim] section seeds. Without the simulated camera it does nothing.
func (b *Board) SetRecipe(rec *recipe.Recipe) error {
	if b.Camera == nil {
		return nil
	}
	return b.Camera.SetScene(SceneFor(rec, b.cfg.FOV()))
}

// Close stops the emulator and the camera (those the board has).
// Idempotent.
func (b *Board) Close() error {
	var errs []error
	if b.Camera != nil {
		errs = append(errs, b.Camera.Close())
	}
	if b.Emulator != nil {
		errs = append(errs, b.Emulator.Close())
	}
	return errors.Join(errs...)
}
