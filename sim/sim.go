// Package sim is the simulated board: a GRBL 1.1 emulator behind a real
// pseudo-terminal (sim/grblsim), periph test pins for the light, and a
// synthetic camera (sim/simcam) that photographs the wafer under the
// emulator's true stage position while the light pin is high.
//
// The simulated devices are separate implementations of the hardware, not
// flags inside the drivers: the production GRBL driver opens the emulator's
// pty through go.bug.st/serial exactly as it would open /dev/ttyUSB0.
package sim

import (
	"errors"
	"fmt"
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

// Config sets up a simulated board.
type Config struct {
	// TimeScale > 1 runs stage motion faster than real time (tests).
	TimeScale float64
	// FrameWidth and FrameHeight of the synthetic camera in pixels
	// (default 512×512 at 20 µm per pixel: a 10.24 mm field of view).
	// Tests use smaller frames to run faster.
	FrameWidth, FrameHeight int
	// Scene is what lies on the stage (see SceneFor); zero: DefaultScene.
	Scene Scene
	// Logf receives the emulator's debug log (optional).
	Logf func(format string, args ...any)
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

// FOV is the simulated camera's field of view on the wafer.
func (c Config) FOV() motion.Point {
	w, h := c.frame()
	return motion.Point{X: motion.Distance(w) * PixelSize, Y: motion.Distance(h) * PixelSize}
}

// Limits are the simulated machine's limits for recipe validation.
func (c Config) Limits() recipe.Limits {
	return recipe.Limits{Travel: Travel, FOV: c.FOV(), MaxFeed: 6000}
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
// board.
type Board struct {
	Emulator *grblsim.Emulator
	PTY      string        // slave path of the stage's serial line
	LightPin *gpiotest.Pin // the light's enable line
	// ButtonPin and EStopPin are the stop button and e-stop sense inputs
	// (released: low). Tests press them by sending levels on EdgesChan
	// (see Press).
	ButtonPin, EStopPin *gpiotest.Pin
	Camera              *simcam.Camera

	cfg Config
}

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
func New(cfg Config) (*Board, error) {
	if cfg.TimeScale == 0 {
		cfg.TimeScale = 1
	}
	emu := grblsim.New(grblsim.Config{
		Travel:         Travel,
		TimeScale:      cfg.TimeScale,
		HomingRequired: true,
		Logf:           cfg.Logf,
	})
	path, err := emu.OpenPTY()
	if err != nil {
		return nil, fmt.Errorf("sim: stage emulator: %w", err)
	}
	b := &Board{cfg: cfg, Emulator: emu, PTY: path, LightPin: &gpiotest.Pin{N: "SIM_LIGHT", Num: 1},
		ButtonPin: &gpiotest.Pin{N: "SIM_STOP_BUTTON", Num: 2, EdgesChan: make(chan gpio.Level, 16)},
		EStopPin:  &gpiotest.Pin{N: "SIM_ESTOP", Num: 3, EdgesChan: make(chan gpio.Level, 16)},
	}
	sc := cfg.Scene
	if sc.WaferDiameter == 0 {
		sc = DefaultScene()
	}
	w, h := cfg.frame()
	cam, err := simcam.New(simcam.Config{
		Width: w, Height: h, PixelSize: PixelSize,
		WaferCenter: sc.WaferCenter, WaferDiameter: sc.WaferDiameter, DiePitch: sc.DiePitch,
		Defects: sc.Defects, Seed: sc.Seed,
		Position: emu.Position,
		Lit:      b.lit,
	})
	if err != nil {
		return nil, errors.Join(fmt.Errorf("sim: camera: %w", err), emu.Close())
	}
	b.Camera = cam
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
// [sim] section seeds.
func (b *Board) SetRecipe(rec *recipe.Recipe) error {
	return b.Camera.SetScene(SceneFor(rec, b.cfg.FOV()))
}

// Close stops the emulator and the camera. Idempotent.
func (b *Board) Close() error {
	return errors.Join(b.Camera.Close(), b.Emulator.Close())
}
