// Package daemon is the long-running controller behind `waferd serve`: it
// owns the runner (the machine and its one cancel path), the watchdog loop,
// the stop button and e-stop inputs and the stage status poll, runs
// inspections in the background on request, and on shutdown stops any run
// safely before it returns.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"periph.io/x/conn/v3/gpio"

	"github.com/waferd/waferd/camera"
	"github.com/waferd/waferd/config"
	"github.com/waferd/waferd/input"
	"github.com/waferd/waferd/inspection"
	"github.com/waferd/waferd/inspection/recipe"
	"github.com/waferd/waferd/inspection/results"
	"github.com/waferd/waferd/internal/logging"
	"github.com/waferd/waferd/motion"
	"github.com/waferd/waferd/stop"
	"github.com/waferd/waferd/watchdog"
)

// Devices are the opened devices the daemon drives (from package board).
type Devices struct {
	// Stage is the XY stage. If it is a motion.LinkWatcher (a real stage
	// that reopens its serial port by itself, board.ReopeningStage), the
	// daemon handles its link going down and coming back: see New.
	Stage  motion.Stage
	Light  Light
	Camera camera.Camera
	Limits recipe.Limits
	// Button and EStop are the stop inputs; nil when not fitted.
	Button, EStop gpio.PinIn
	// SetRecipe, if set, is called before each run with its recipe (the
	// simulated board puts that recipe's wafer under its camera).
	SetRecipe func(*recipe.Recipe) error
}

// Light is the illumination as the daemon needs it.
type Light interface {
	On(level float64) error
	Off() error
}

// Options configure a Daemon.
type Options struct {
	Config  *config.Config
	Devices Devices
	Store   *results.Store
	Logs    *logging.Root
	// Notifier receives sd_notify states; nil sends none.
	Notifier watchdog.Notifier
	// NotifyInterval is systemd's WatchdogSec (0: no WATCHDOG=1 pings).
	NotifyInterval time.Duration
	// Hardware is an opened hardware watchdog, or nil.
	Hardware *watchdog.Hardware
	// Progress, if set, receives every run's per-site progress.
	Progress func(inspection.Progress)
	// Recipes, if set, holds <name>.toml recipes used when the configured
	// recipe directory does not exist (the simulated board's built-in
	// examples).
	Recipes fs.FS
	// LogRing, if set, holds the recent log lines the console shows.
	LogRing *logging.Ring
}

// Daemon is the controller. Its methods are safe for concurrent use.
type Daemon struct {
	runCancel                   context.CancelCauseFunc // (mu) of the run in progress, nil between runs
	opts                        Options
	log                         *logging.Log
	Runner                      *inspection.Runner
	wd                          *watchdog.Watchdog
	stageHB, runnerHB, cameraHB *watchdog.Heartbeat
	lease                       *watchdog.Lease
	button                      *input.Button
	estop                       *input.EStop

	// stageDown is set while a self-reconnecting stage reports its link
	// down (onStageLink): the stage poll then keeps beating.
	stageDown atomic.Bool

	mu      sync.Mutex
	running bool
	runDone chan struct{} // closed when the background run ends
	homing  bool
	con     consoleState // manual operations, events, stop statistics (console_api.go)
}

// New wires the daemon. It does not start anything: Run does.
//
// A stage that reconnects by itself (motion.LinkWatcher) is watched from
// here on: when its link is lost the daemon stops with reason fault (a run
// in progress is aborted, an idle machine latches Faulted until reset, as
// any device fault does) and marks the position untrusted; when the link
// is back it marks the position untrusted again (the controller has
// restarted: the next run homes first). While the link is down the stage
// poll keeps beating its heartbeat: the loss is handled, the controller is
// not hung, and a restart of waferd would not bring the port back.
func New(o Options) (*Daemon, error) {
	cfg := o.Config
	d := &Daemon{opts: o, log: o.Logs.For("daemon")}
	wlog := o.Logs.For("watchdog")
	d.wd = watchdog.New(watchdog.Config{
		Interval:       config.MS(cfg.Watchdog.IntervalMS),
		Notify:         o.Notifier,
		NotifyInterval: o.NotifyInterval,
		Hardware:       o.Hardware,
		Log:            wlog.Warnf,
		OnFault: func(name string, err error) {
			d.Stop(stop.Watchdog, name+": "+err.Error())
		},
	})
	d.stageHB = d.wd.Register("stage-poll", config.MS(cfg.Watchdog.StageHeartbeatMS))
	d.runnerHB = d.wd.Register("runner", config.MS(cfg.Watchdog.RunnerHeartbeatMS))
	d.runnerHB.Pause()
	d.cameraHB = d.wd.Register("camera", config.MS(cfg.Watchdog.CameraHeartbeatMS))
	d.cameraHB.Pause()
	d.con.light = &trackedLight{Light: o.Devices.Light}
	light := &leasedLight{Light: d.con.light}
	d.lease = d.wd.Lease("light", config.MS(cfg.Watchdog.LightMaxOnMS), func() {
		if err := d.con.light.Off(); err != nil {
			d.log.Errorf("light lease expired and switching it off failed: %v", err)
		}
	})
	light.lease = d.lease
	if cfg.Watchdog.ThermalZone != "" {
		d.wd.AddSensor("temperature", config.MS(cfg.Watchdog.TempPollMS), watchdog.ThermalZone(cfg.Watchdog.ThermalZone), cfg.Watchdog.TempLimitC)
	}

	d.Runner = &inspection.Runner{
		Stage: &timedStage{Stage: o.Devices.Stage, stats: &d.con.stats}, Light: light,
		Camera: &beatingCamera{Camera: o.Devices.Camera, hb: d.cameraHB},
		Store:  o.Store, Log: o.Logs.For("runner"), Progress: d.onProgress,
		OnStep: d.onStep,
		Config: inspection.Config{
			HoldTimeout:    config.MS(cfg.Runner.HoldTimeoutMS),
			ResetTimeout:   config.MS(cfg.Runner.ResetTimeoutMS),
			CaptureTimeout: config.MS(cfg.Runner.CaptureTimeoutMS),
		},
	}
	if w, ok := o.Devices.Stage.(motion.LinkWatcher); ok {
		w.WatchLink(d.onStageLink)
	}
	var err error
	if o.Devices.Button != nil {
		d.button, err = input.NewButton(inputConfig(o.Devices.Button, cfg.Button), func() {
			d.Stop(stop.Button, o.Devices.Button.String())
		})
		if err != nil {
			return nil, fmt.Errorf("daemon: stop button: %w", err)
		}
	}
	if o.Devices.EStop != nil {
		d.estop, err = input.NewEStop(inputConfig(o.Devices.EStop, cfg.EStop), func() {
			d.Stop(stop.EStop, o.Devices.EStop.String())
		})
		if err != nil {
			return nil, fmt.Errorf("daemon: e-stop: %w", err)
		}
		d.Runner.EStopActive = d.estop.Active
	}
	return d, nil
}

func inputConfig(pin gpio.PinIn, c config.Input) input.Config {
	pull := map[string]gpio.Pull{"up": gpio.PullUp, "down": gpio.PullDown, "float": gpio.Float, "keep": gpio.PullNoChange}[c.Pull]
	return input.Config{Pin: pin, ActiveLow: c.ActiveLow, Pull: pull, Debounce: config.MS(c.DebounceMS)}
}

// onStep beats the runner heartbeat at every step and tells the stage poll
// when homing is in progress (GRBL does not answer status during homing).
func (d *Daemon) onStep(s inspection.Step, _ int) {
	d.runnerHB.Beat()
	d.mu.Lock()
	d.homing = s == inspection.StepHoming
	d.mu.Unlock()
	if s == inspection.StepSafeStop {
		d.con.stats.safeStopBegan()
	}
}

// onStageLink handles a self-reconnecting stage's link going down or
// coming back (see New). It runs on the stage's goroutine and never
// blocks: a loss stops the run before the stage tries to reconnect.
func (d *Daemon) onStageLink(ev motion.LinkEvent) {
	d.Runner.NotePositionLost()
	if ev.Up {
		d.stageDown.Store(false)
		d.log.Warnf("stage link on %s is back: the controller restarted, position untrusted (home it; the next run homes first)", ev.Port)
	} else {
		d.stageDown.Store(true)
		d.Stop(stop.Fault, "stage: "+ev.Err.Error())
	}
	d.SetStatus()
}

// Run runs the daemon until ctx ends: watchdog loop, inputs, stage poll.
// It reports READY=1 once they run. When ctx ends it sends STOPPING=1, stops
// any run with reason shutdown and waits for its safe stop, then ends the
// inputs and the watchdog last (so they cover the safe stop). It returns
// nil on a clean shutdown.
func (d *Daemon) Run(ctx context.Context) error {
	wctx, wcancel := context.WithCancel(context.WithoutCancel(ctx))
	ictx, icancel := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	var errsMu sync.Mutex
	var errs []error
	goRun := func(name string, ctx context.Context, f func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(ctx); err != nil {
				errsMu.Lock()
				errs = append(errs, fmt.Errorf("%s: %w", name, err))
				errsMu.Unlock()
				d.log.Errorf("%s ended: %v", name, err)
			}
		}()
	}
	var wdWG sync.WaitGroup
	wdWG.Add(1)
	go func() {
		defer wdWG.Done()
		if err := d.wd.Run(wctx); err != nil {
			errsMu.Lock()
			errs = append(errs, fmt.Errorf("watchdog: %w", err))
			errsMu.Unlock()
		}
	}()
	if d.button != nil {
		goRun("stop button", ictx, d.button.Run)
	}
	if d.estop != nil {
		goRun("e-stop", ictx, d.estop.Run)
	}
	goRun("stage poll", ictx, d.pollStage)

	d.wd.Ready()
	d.SetStatus()
	d.log.Noticef("ready")
	<-ctx.Done()

	d.log.Noticef("shutting down: %v", context.Cause(ctx))
	d.mu.Lock()
	d.con.closing = true // no new runs or manual operations
	d.mu.Unlock()
	d.wd.Stopping()
	detail := "shutdown"
	if c, ok := stop.FromContext(ctx); ok {
		detail = c.Detail
	}
	d.Stop(stop.Shutdown, detail)
	d.Wait()
	d.waitManual()
	icancel()
	wg.Wait()
	wcancel()
	wdWG.Wait()
	return errors.Join(errs...)
}

// pollStage asks the stage for its status every poll period and beats the
// stage heartbeat on every answer (and during homing, when GRBL does not
// answer, and while a self-reconnecting stage's link is down, see New).
func (d *Daemon) pollStage(ctx context.Context) error {
	poll := config.MS(d.opts.Config.Stage.PollMS)
	t := time.NewTicker(poll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		d.mu.Lock()
		homing := d.homing
		d.mu.Unlock()
		if homing {
			d.stageHB.Beat()
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, 4*poll)
		_, err := d.opts.Devices.Stage.Status(pctx)
		cancel()
		if err == nil || d.stageDown.Load() && errors.Is(err, motion.ErrLinkLost) {
			d.stageHB.Beat()
		}
		if err != nil && ctx.Err() == nil {
			d.log.Debugf("stage status: %v", err)
		}
	}
}

// ErrBusy is returned by StartRun while a run is in progress.
var ErrBusy = errors.New("daemon: a run is in progress")

// LoadRecipe loads the recipe called name (<recipes>/<name>.toml, or a
// path to a .toml file when name contains a slash and allowPath is set).
func (d *Daemon) LoadRecipe(name string) (*recipe.Recipe, error) {
	if name == "" || strings.ContainsAny(name, `/\`) || strings.Contains(name, "..") || strings.HasPrefix(name, ".") {
		return nil, fmt.Errorf("daemon: bad recipe name %q: give a name from %s, without / or ..", name, d.opts.Config.Data.Recipes)
	}
	dir := d.opts.Config.Data.Recipes
	file := strings.TrimSuffix(name, ".toml") + ".toml"
	path := filepath.Join(dir, file)
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) && d.opts.Recipes != nil {
		return d.builtinRecipe(file)
	}
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("daemon: recipe %q: %w", name, err)
	}
	return recipe.Load(path, d.opts.Devices.Limits)
}

// StartRun starts rec in the background and returns at once. It refuses
// while a run is in progress or the machine is latched.
func (d *Daemon) StartRun(ctx context.Context, rec *recipe.Recipe) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.running {
		return ErrBusy
	}
	if d.con.closing {
		return ErrShuttingDown
	}
	if d.con.manual != "" {
		return fmt.Errorf("daemon: run refused: %w: %s in progress", ErrMachineBusy, d.con.manual)
	}
	if st := d.Runner.State(); st.Latched() {
		return fmt.Errorf("%w: machine is %s (%s): clear it with reset", inspection.ErrLatched, st, d.Runner.LatchReason())
	}
	if f := d.opts.Devices.SetRecipe; f != nil {
		if err := f(rec); err != nil {
			return fmt.Errorf("daemon: %w", err)
		}
	}
	d.running = true
	done := make(chan struct{})
	d.runDone = done
	// The run's own context: a Stop that arrives before the goroutine
	// below has entered Runner.Run finds the runner idle; cancelling this
	// context makes the run stop as soon as it starts, through the same
	// path, instead of the stop being lost.
	rctx, rcancel := context.WithCancelCause(context.WithoutCancel(ctx))
	d.runCancel = rcancel
	d.runStarting(rec)
	d.runnerHB.Resume()
	d.runnerHB.Beat()
	go func() {
		var out inspection.Outcome
		var err error
		defer func() {
			rcancel(nil)
			d.runnerHB.Pause()
			d.mu.Lock()
			d.running = false
			d.runCancel = nil
			d.runEndedLocked(out, err)
			d.mu.Unlock()
			d.publishRunEnded(rec, out, err) // before Wait returns: consoles print it
			close(done)
			d.SetStatus()
		}()
		d.SetStatus()
		out, err = d.Runner.Run(rctx, rec)
		if err != nil {
			d.log.Errorf("run %q: %v", rec.Name, err)
			return
		}
		d.log.Noticef("run %s %s (%s)", out.RunID, out.State, out.Reason)
	}()
	return nil
}

// Wait blocks until no run is in progress.
func (d *Daemon) Wait() {
	d.mu.Lock()
	ch := d.runDone
	d.mu.Unlock()
	if ch != nil {
		<-ch
	}
}

// Stop is the one cancel path, for the console and every other source: it
// stops the run in progress (Runner.Stop) and any manual operation from a
// console (cancelled with the same cause, then stopped safely), and switches
// off a light a console left on. It never blocks.
func (d *Daemon) Stop(reason stop.Reason, detail string) {
	at := time.Now()
	d.Runner.Stop(reason, detail) // first: the run's feed hold is the most urgent
	d.mu.Lock()
	if d.runCancel != nil {
		d.runCancel(stop.New(reason, detail)) // a run still starting
	}
	d.mu.Unlock()
	d.stopManual(reason, detail, at)
}

// Reset clears a latched Faulted or EStop machine (inspection.Runner.Reset).
// On an idle machine it soft-resets the stage controller if the controller
// is in a state in which a run would refuse to start and a reset clears:
// held, stopped by its door, in check mode or asleep (see
// motion.Status.Ready; resetStage). Otherwise it does nothing. It blocks
// for the stage reset.
func (d *Daemon) Reset(ctx context.Context) error {
	if d.Runner.State() == inspection.Idle {
		return d.resetStage(ctx)
	}
	err := d.Runner.Reset(ctx)
	d.SetStatus()
	return err
}

// SetStatus publishes the machine state to systemd (STATUS=).
func (d *Daemon) SetStatus() {
	st := d.Runner.State()
	s := "machine " + st.String()
	if why := d.Runner.LatchReason(); why != "" {
		s += ": " + why
	}
	d.wd.SetStatus(s)
}

// Heartbeats returns the watchdog's view, for status displays.
func (d *Daemon) Heartbeats() []watchdog.HeartbeatInfo { return d.wd.Snapshot() }

// leasedLight holds the watchdog's on-time lease while the light is on.
type leasedLight struct {
	Light
	lease *watchdog.Lease
}

func (l *leasedLight) On(level float64) error {
	l.lease.Start()
	return l.Light.On(level)
}

func (l *leasedLight) Off() error {
	err := l.Light.Off()
	l.lease.End()
	return err
}

// beatingCamera beats the camera heartbeat around every capture.
type beatingCamera struct {
	camera.Camera
	hb *watchdog.Heartbeat
}

func (c *beatingCamera) Capture(ctx context.Context, exposure time.Duration) (*camera.Frame, error) {
	c.hb.Resume()
	c.hb.Beat()
	defer c.hb.Pause()
	f, err := c.Camera.Capture(ctx, exposure)
	c.hb.Beat()
	return f, err
}
