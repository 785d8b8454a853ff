// Package daemon is the composition root of the controller: it wires the
// machine (package machine: state, claims, the one stop path and safe
// stop) to the devices, the inspection runner, the watchdog, the stop
// button and e-stop inputs and the stage status poll, and offers the
// operations its front ends drive (control.Machine: runs, manual motion,
// the light, capture, self-test, status, events).
//
// `waferd serve` is a Daemon with consoles; `waferd run` is the same
// Daemon with one run and no console. Start starts its background work;
// Shutdown stops any operation safely and ends it, as net/http.Server's
// Shutdown does; Close is the impatient version.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"sync"
	"time"

	"periph.io/x/conn/v3/gpio"

	"github.com/waferd/waferd/camera"
	"github.com/waferd/waferd/config"
	"github.com/waferd/waferd/control"
	"github.com/waferd/waferd/illumination"
	"github.com/waferd/waferd/input"
	"github.com/waferd/waferd/inspection"
	"github.com/waferd/waferd/inspection/recipe"
	"github.com/waferd/waferd/inspection/results"
	"github.com/waferd/waferd/internal/logging"
	"github.com/waferd/waferd/machine"
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
	Light  illumination.Lamp
	Camera camera.Camera
	Limits recipe.Limits
	// Button and EStop are the stop inputs; nil when not fitted. Their
	// String() names them in stop reasons (board's lines give
	// "gpiochip0/button"), and input watches a lost line through them:
	// pass board's pins unwrapped.
	Button, EStop gpio.PinIn
	// SetRecipe, if set, is called before each run with its recipe (the
	// simulated board puts that recipe's wafer under its camera).
	SetRecipe func(*recipe.Recipe) error
	// Reach, if set, says where a move to p ends: p on the controller's
	// step grid (board.Stage.Reach). Console moves too small to change it
	// are refused, saying so. It must not block.
	Reach func(p motion.Point) motion.Point
	// LinkNoise, if set, describes the noise seen on the stage's link, for
	// the console's stats ("3 garbled of 2000 lines, ..."). It must not
	// block.
	LinkNoise func() string
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
	// OnStep, if set, is called at the start of every step of a run
	// (inspection.Runner.OnStep): instrumentation for tests and tracing;
	// it must return quickly.
	OnStep func(inspection.Step, int)
	// Recipes, if set, holds <name>.toml recipes used when the configured
	// recipe directory does not exist (the simulated board's built-in
	// examples).
	Recipes fs.FS
	// LogRing, if set, holds the recent log lines the console shows.
	LogRing *logging.Ring
	// Events, if set, receives every event, in order, and none is ever
	// dropped for it (unlike Subscribe's). It is called from whatever
	// goroutine causes the event, possibly with the machine's lock held
	// (a stop): it must return at once and do no I/O (publish.Publisher's
	// Accept queues the event in memory).
	Events func(control.Event)
	// Publishing, if set, reports the broker connection and the outbox
	// (control.Machine.Publishing).
	Publishing func() *control.PublishStatus
}

// Daemon is the controller. Its methods are safe for concurrent use.
type Daemon struct {
	opts Options
	log  *logging.Log
	// Machine owns the machine's state and its one stop path.
	Machine *machine.Machine
	runner  *inspection.Runner
	light   *trackedLight // the light as every operation switches it
	wd      *watchdog.Watchdog
	stageHB *watchdog.Heartbeat
	runHB   *watchdog.Heartbeat
	lease   *watchdog.Lease
	button  *input.Button
	estop   *input.EStop
	bus     bus

	bgCancel context.CancelFunc // ends the inputs and the stage poll
	wdCancel context.CancelFunc // ends the watchdog (last)
	bg, wdWG sync.WaitGroup
	errsMu   sync.Mutex
	errs     []error
	shutOnce sync.Once
	shutErr  error

	mu         sync.Mutex
	run        *control.RunInfo  // the run in progress
	runDone    chan struct{}     // closed when the background run has ended and been announced
	last       inspection.Result // the last finished run
	lightTimer *time.Timer       // switches off a light a console left on
	level      float64           // light level of a console's "light on" (0: default)
}

var _ control.Machine = (*Daemon)(nil)

// New wires the daemon. It does not start anything: Start does.
//
// A stage that reconnects by itself (motion.LinkWatcher) is watched from
// here on: when its link is lost the machine stops with reason fault (a
// run in progress is aborted, an idle machine latches Faulted until reset,
// as for any device fault) and the position becomes untrusted; when the
// link is back the position stays untrusted (the controller has
// restarted: the next run homes first). While the link is down the stage
// poll keeps beating its heartbeat: the loss is handled, the controller is
// not hung, and a restart of waferd would not bring the port back.
func New(o Options) (*Daemon, error) {
	cfg := o.Config
	d := &Daemon{opts: o, log: o.Logs.For("daemon")}
	d.bus.tap = o.Events
	d.wd = watchdog.New(watchdog.Config{
		Interval:       config.MS(cfg.Watchdog.IntervalMS),
		Notify:         o.Notifier,
		NotifyInterval: o.NotifyInterval,
		Hardware:       o.Hardware,
		Log:            o.Logs.For("watchdog").Warnf,
		OnFault: func(_ string, err error) {
			d.Stop(stop.Watchdog, err.Error()) // the message names the item
		},
	})
	d.stageHB = d.wd.Register("stage-poll", config.MS(cfg.Watchdog.StageHeartbeatMS))
	d.runHB = d.wd.Register("runner", config.MS(cfg.Watchdog.RunnerHeartbeatMS))
	d.runHB.Pause()
	cameraHB := d.wd.Register("camera", config.MS(cfg.Watchdog.CameraHeartbeatMS))
	cameraHB.Pause()
	if cfg.Watchdog.ThermalZone != "" {
		d.wd.AddSensor("temperature", config.MS(cfg.Watchdog.TempPollMS), watchdog.ThermalZone(cfg.Watchdog.ThermalZone), cfg.Watchdog.TempLimitC)
	}

	// The light as every operation (and every stop) switches it: its
	// state is tracked for the console, and the watchdog's on-time lease
	// is held while it is on.
	leased := &leasedLight{Lamp: o.Devices.Light}
	d.light = &trackedLight{Lamp: leased}
	d.lease = d.wd.Lease("light", config.MS(cfg.Watchdog.LightMaxOnMS), func() {
		if err := d.light.Off(); err != nil {
			d.log.Errorf("light lease expired and switching it off failed: %v", err)
		}
	})
	leased.lease = d.lease

	var estopActive func() bool
	var err error
	if o.Devices.EStop != nil {
		d.estop, err = input.NewEStop(inputConfig(o.Devices.EStop, cfg.EStop), func() {
			d.Stop(stop.EStop, o.Devices.EStop.String())
		})
		if err != nil {
			return nil, fmt.Errorf("daemon: e-stop: %w", err)
		}
		estopActive = d.estop.Active
	}
	if o.Devices.Button != nil {
		d.button, err = input.NewButton(inputConfig(o.Devices.Button, cfg.Button), func() {
			d.Stop(stop.Button, o.Devices.Button.String())
		})
		if err != nil {
			return nil, fmt.Errorf("daemon: stop button: %w", err)
		}
	}
	d.Machine = machine.New(machine.Config{
		Stage: o.Devices.Stage, Light: d.light,
		HoldTimeout:  config.MS(cfg.Runner.HoldTimeoutMS),
		ResetTimeout: config.MS(cfg.Runner.ResetTimeoutMS),
		EStopActive:  estopActive,
		OnEvent:      d.onMachineEvent,
		Log:          o.Logs.For("machine"),
	})
	d.runner = &inspection.Runner{
		Stage: o.Devices.Stage, Light: d.light,
		Camera: &beatingCamera{Camera: o.Devices.Camera, hb: cameraHB},
		Store:  o.Store, Log: o.Logs.For("runner"), Progress: d.onProgress, Started: d.onStarted,
		OnStep: func(s inspection.Step, site int) {
			d.runHB.Beat()
			if o.OnStep != nil {
				o.OnStep(s, site)
			}
		},
		Config: inspection.Config{CaptureTimeout: config.MS(cfg.Runner.CaptureTimeoutMS), NoHoming: !cfg.Stage.Homing},
	}
	if w, ok := o.Devices.Stage.(motion.LinkWatcher); ok {
		w.WatchLink(d.onStageLink)
	}
	return d, nil
}

func inputConfig(pin gpio.PinIn, c config.Input) input.Config {
	pull := map[string]gpio.Pull{"up": gpio.PullUp, "down": gpio.PullDown, "float": gpio.Float, "keep": gpio.PullNoChange}[c.Pull]
	return input.Config{Pin: pin, ActiveLow: c.ActiveLow, Pull: pull, Debounce: config.MS(c.DebounceMS)}
}

// onStageLink handles a self-reconnecting stage's link going down or
// coming back (see New). It runs on the stage's goroutine and never
// blocks: a loss stops the machine before the stage tries to reconnect.
func (d *Daemon) onStageLink(ev motion.LinkEvent) {
	if ev.Up {
		d.Machine.LinkBack()
		d.log.Warnf("stage link on %s is back: the controller restarted, position untrusted (home it; the next run homes first)", ev.Port)
	} else {
		d.Machine.LinkLost(ev.Err)
	}
}

// Start starts the watchdog loop, the stop inputs and the stage status
// poll, and tells systemd READY=1. Call it once; Shutdown ends them.
func (d *Daemon) Start() {
	bctx, bcancel := context.WithCancel(context.Background())
	wctx, wcancel := context.WithCancel(context.Background())
	d.bgCancel, d.wdCancel = bcancel, wcancel
	goRun := func(wg *sync.WaitGroup, name string, ctx context.Context, f func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(ctx); err != nil {
				d.errsMu.Lock()
				d.errs = append(d.errs, fmt.Errorf("%s: %w", name, err))
				d.errsMu.Unlock()
				d.log.Errorf("%s ended: %v", name, err)
			}
		}()
	}
	goRun(&d.wdWG, "watchdog", wctx, d.wd.Run)
	if d.button != nil {
		goRun(&d.bg, "stop button", bctx, d.button.Run)
	}
	if d.estop != nil {
		goRun(&d.bg, "e-stop", bctx, d.estop.Run)
	}
	goRun(&d.bg, "stage poll", bctx, d.pollStage)
	goRun(&d.bg, "status", bctx, d.statusLoop)
	d.wd.Ready()
	d.log.Noticef("ready")
}

// Shutdown stops the daemon gracefully: it grants no new operations, sends
// STOPPING=1, stops the operation in progress with reason shutdown (detail
// says why: "SIGTERM", "end of console input") and waits for its safe stop
// and its record, then ends the inputs, the stage poll and, last, the
// watchdog (so that they cover the safe stop). If ctx ends first, the safe
// stop is hurried (Hurry: no controlled hold) and still awaited, and
// Shutdown returns ctx's error. It returns the errors of the background
// work otherwise. Later calls return the first call's result.
func (d *Daemon) Shutdown(ctx context.Context, detail string) error {
	d.shutOnce.Do(func() {
		d.log.Noticef("shutting down: %s", detail)
		d.Machine.Close()
		d.wd.Stopping()
		d.Machine.Stop(stop.Shutdown, detail)
		var ctxErr error
		if err := d.Machine.Wait(ctx); err != nil {
			ctxErr = fmt.Errorf("daemon: shutdown: %w", err)
			d.Machine.Hurry("shutdown: " + err.Error())
			_ = d.Machine.Wait(context.Background())
		}
		_ = d.WaitRun(context.Background())
		d.mu.Lock()
		if d.lightTimer != nil {
			d.lightTimer.Stop()
			d.lightTimer = nil
		}
		d.mu.Unlock()
		if d.bgCancel != nil {
			d.bgCancel()
			d.bg.Wait()
			d.wdCancel()
			d.wdWG.Wait()
		}
		d.errsMu.Lock()
		d.shutErr = errors.Join(append([]error{ctxErr}, d.errs...)...)
		d.errsMu.Unlock()
	})
	return d.shutErr
}

// Close shuts the daemon down without waiting for a controlled hold: the
// operation in progress is stopped with reason shutdown and its safe stop
// hurried (the stage is reset at once). It blocks until that safe stop is
// done.
func (d *Daemon) Close() error {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return d.Shutdown(ctx, "close")
}

// Stop is the machine's one cancel path (machine.Machine.Stop): the console
// and every other source call it. It never blocks.
func (d *Daemon) Stop(reason stop.Reason, detail string) {
	d.Machine.Stop(reason, detail)
	d.mu.Lock()
	t := d.lightTimer
	d.lightTimer = nil
	d.mu.Unlock()
	if t != nil {
		t.Stop() // the stop switched the console's light off
	}
}

// Hurry hurries a stop in progress (machine.Machine.Hurry).
func (d *Daemon) Hurry(detail string) { d.Machine.Hurry(detail) }

// pollStage asks the stage for its status every poll period and beats the
// stage heartbeat on every answer (and while a self-reconnecting stage's
// link is down, see New). During homing the GRBL driver answers from what
// it knows without asking the controller, which ignores '?' then.
//
// While the stage reports motion (a move or a homing cycle under way) it
// also beats the runner's heartbeat: a run waiting for its stage is not a
// stuck runner, and a homing cycle (bounded by stage.homing_timeout_ms,
// 60 s) or a long slow move may outlast the runner's limit
// (runner_heartbeat_ms, 30 s; a stock GRBL homes 300 mm at its 500 mm/min
// seek rate in about 36 s). The runner beats at every step otherwise.
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
		pctx, cancel := context.WithTimeout(ctx, 4*poll)
		st, err := d.opts.Devices.Stage.Status(pctx)
		cancel()
		if err == nil || d.Machine.LinkDown() && errors.Is(err, motion.ErrLinkLost) {
			d.stageHB.Beat()
		}
		if err == nil && !st.Stopped() {
			d.runHB.Beat() // paused outside runs
		}
		if err != nil && ctx.Err() == nil {
			d.log.Debugf("stage status: %v", err)
		}
	}
}

// onMachineEvent is the machine's event callback: called with the
// machine's lock held, it only publishes (never blocks).
func (d *Daemon) onMachineEvent(e machine.Event) {
	switch e.Kind {
	case machine.StopRequested, machine.StopEscalated:
		d.bus.publish(control.Event{Time: e.Time, Kind: control.StopRequested, Reason: e.Cause.Reason, Text: e.Cause.Error(), State: e.State})
	case machine.StateChanged:
		d.bus.publish(control.Event{Time: e.Time, Kind: control.MachineState, State: e.State, Reason: e.Reason, Text: e.Text})
	}
}

// statusLoop tells systemd the machine state (STATUS=) whenever it
// changes, off the stop path.
func (d *Daemon) statusLoop(ctx context.Context) error {
	events, unsubscribe := d.Subscribe()
	defer unsubscribe()
	d.setStatus()
	for {
		select {
		case <-ctx.Done():
			return nil
		case e := <-events:
			if e.Kind == control.MachineState {
				d.setStatus()
			}
		}
	}
}

// setStatus publishes the machine state to systemd (STATUS=).
func (d *Daemon) setStatus() {
	s := "machine " + d.Machine.State().String()
	if why := d.Machine.LatchReason(); why != "" {
		s += ": " + why
	}
	d.wd.SetStatus(s)
}

// Heartbeats returns the watchdog's view, for status displays.
func (d *Daemon) Heartbeats() []watchdog.HeartbeatInfo { return d.wd.Snapshot() }

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
