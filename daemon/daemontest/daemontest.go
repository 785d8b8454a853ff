// Package daemontest builds a daemon.Daemon on fake devices for tests of
// the daemon and of what drives it (the machine's stop table, the console):
// a scriptable stage (motion/motiontest), a fake camera
// (camera/cameratest), and the real light driver and stop inputs on periph
// test pins. Runs take tens of milliseconds, and no pseudo-terminal or
// emulator is involved; the end-to-end tests on the simulated board stay
// elsewhere.
package daemontest

import (
	"cmp"
	"context"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpiotest"

	"github.com/waferd/waferd/camera/cameratest"
	"github.com/waferd/waferd/config"
	"github.com/waferd/waferd/control"
	"github.com/waferd/waferd/daemon"
	"github.com/waferd/waferd/illumination"
	"github.com/waferd/waferd/inspection"
	"github.com/waferd/waferd/inspection/recipe"
	"github.com/waferd/waferd/inspection/results"
	"github.com/waferd/waferd/internal/logging"
	"github.com/waferd/waferd/motion"
	"github.com/waferd/waferd/motion/motiontest"
)

// Recipe is the recipe of Rig.Recipe: a grid of 9 sites on a 50 mm wafer.
const Recipe = `
name = "slow"
[wafer]
diameter_mm = 50.0
center_mm = [150.0, 150.0]
[dies]
pitch_mm = [10.0, 10.0]
reference = [0, 0]
layout = "grid"
[capture]
exposure_ms = 5
light_level = 0.7
settle_ms = 5
feed_mm_min = 3000
`

// Limits are the fake machine's: a 300 mm square travel, a 1.6 mm field of
// view (160 pixels of 10 µm).
var Limits = recipe.Limits{
	Travel:  motion.Rect{Max: motion.Point{X: motion.MM(300), Y: motion.MM(300)}},
	FOV:     motion.Point{X: motion.MM(1.6), Y: motion.MM(1.6)},
	MaxFeed: 6000,
}

// Rig is a daemon on fake devices.
type Rig struct {
	D      *daemon.Daemon
	Config *config.Config
	Stage  *motiontest.Stage
	Camera *cameratest.Camera
	// LightPin is the light's enable line; ButtonPin and EStopPin the stop
	// inputs (active high, released low): Press drives them.
	LightPin, ButtonPin, EStopPin *gpiotest.Pin
	Notes                         *Notes
	Recipe                        *recipe.Recipe
	Store                         *results.Store
	shutByTest                    bool
}

// Shutdown shuts the daemon down (daemon.Daemon.Shutdown) from the test;
// the rig's own shutdown at the end of the test then checks nothing.
func (r *Rig) Shutdown(ctx context.Context, detail string) error {
	r.shutByTest = true
	return r.D.Shutdown(ctx, detail)
}

// Options adjust a Rig.
type Options struct {
	// Config edits the configuration before the daemon is made.
	Config func(*config.Config)
	// OnStep and Progress are passed to daemon.Options.
	OnStep   func(inspection.Step, int)
	Progress func(inspection.Progress)
	// Events is passed to daemon.Options.
	Events func(control.Event)
	// LogLevel of the daemon's log on stderr (default: errors only).
	LogLevel logging.Level
	// LogRing, if set, also keeps the log's lines from info up (the
	// console's log command).
	LogRing *logging.Ring
	// Reach and LinkNoise are passed to daemon.Devices.
	Reach     func(motion.Point) motion.Point
	LinkNoise func() string
	// HomeTime is how long the stage's homing cycle takes (default 50 ms).
	HomeTime time.Duration
}

// New makes a daemon on fake devices (moves take 20 ms, homing 50 ms
// unless o.HomeTime says) and starts it; it is shut down when the test
// ends.
func New(t testing.TB, o Options) *Rig {
	t.Helper()
	cfg := config.Default()
	cfg.Sim.Enabled = true // no device paths to validate: the devices are fakes
	cfg.Data.Dir = tempDir(t)
	cfg.Data.Recipes = cfg.Data.Dir + "/recipes"
	cfg.Button = config.Input{Chip: "sim", Line: "button", Pull: "down", DebounceMS: 20}
	cfg.EStop = config.Input{Chip: "sim", Line: "estop", Pull: "down", DebounceMS: 20}
	cfg.Watchdog.IntervalMS = 20
	cfg.Stage.PollMS = 20
	cfg.Runner.HoldTimeoutMS, cfg.Runner.ResetTimeoutMS = 1000, 1000
	if o.Config != nil {
		o.Config(cfg)
	}
	require.NoError(t, cfg.Validate())
	store, err := results.Open(cfg.Data.Dir)
	require.NoError(t, err)
	r := &Rig{
		Config: cfg, Store: store, Notes: &Notes{},
		Stage:     motiontest.New(20*time.Millisecond, cmp.Or(o.HomeTime, 50*time.Millisecond)),
		Camera:    cameratest.New(160, 160, 10),
		LightPin:  &gpiotest.Pin{N: "LIGHT", Num: 1},
		ButtonPin: &gpiotest.Pin{N: "BUTTON", Num: 2, EdgesChan: make(chan gpio.Level, 16)},
		EStopPin:  &gpiotest.Pin{N: "ESTOP", Num: 3, EdgesChan: make(chan gpio.Level, 16)},
	}
	light, err := illumination.New(illumination.Config{Enable: r.LightPin})
	require.NoError(t, err)
	level := o.LogLevel
	if level == 0 {
		level = logging.Error
	}
	logs := logging.New(os.Stderr, logging.Options{Level: level})
	if o.LogRing != nil {
		logs.Tee(o.LogRing, logging.Info)
	}
	r.D, err = daemon.New(daemon.Options{
		Config: cfg, Store: store, Logs: logs, LogRing: o.LogRing,
		Devices: daemon.Devices{Stage: r.Stage, Light: light, Camera: r.Camera, Limits: Limits,
			Button: r.ButtonPin, EStop: r.EStopPin, Reach: o.Reach, LinkNoise: o.LinkNoise},
		Notifier: r.Notes, NotifyInterval: 200 * time.Millisecond,
		OnStep: o.OnStep, Progress: o.Progress, Events: o.Events,
	})
	require.NoError(t, err)
	r.Recipe, err = recipe.Parse("slow.toml", []byte(Recipe), Limits)
	require.NoError(t, err)
	r.D.Start()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err := r.D.Shutdown(ctx, "end of test")
		if !r.shutByTest {
			require.NoError(t, err)
		}
	})
	return r
}

// tempDir is a temporary directory on tmpfs when there is one: tests that
// record many runs would otherwise spend their time in fsync on a shared
// disk, not in the behaviour under test.
func tempDir(t testing.TB) string {
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		if dir, err := os.MkdirTemp("/dev/shm", "waferd-test-"); err == nil {
			t.Cleanup(func() { os.RemoveAll(dir) })
			return dir
		}
	}
	return t.TempDir()
}

// Light returns the light's enable line level.
func (r *Rig) Light() gpio.Level { return Level(r.LightPin) }

// Level reads a test pin's level.
func Level(p *gpiotest.Pin) gpio.Level {
	p.Lock()
	defer p.Unlock()
	return p.L
}

// Press drives an input pin to l (High: pressed, engaged) as a switch
// would, edge and all. It fails the test if the input does not take the
// edge within a second.
func Press(t testing.TB, p *gpiotest.Pin, l gpio.Level) {
	t.Helper()
	p.Lock()
	p.L = l
	ch := p.EdgesChan
	p.Unlock()
	select {
	case ch <- l:
	case <-time.After(time.Second):
		t.Fatalf("daemontest: %s took no edge", p.N)
	}
}

// Notes records sd_notify states.
type Notes struct {
	mu sync.Mutex
	s  []string
}

// Notify records state.
func (n *Notes) Notify(state string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.s = append(n.s, state)
	return nil
}

// Count counts the states recorded that start with prefix.
func (n *Notes) Count(prefix string) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	c := 0
	for _, s := range n.s {
		if strings.HasPrefix(s, prefix) {
			c++
		}
	}
	return c
}
