package daemon

// What the serial console needs of the daemon: manual operations (home,
// move, jog, light, capture, self-test) that share the run's stop path, a
// status snapshot, the event fan-out that carries run progress to every
// console, stop statistics and access to recipes, runs, logs and the
// configuration.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image/png"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	toml "github.com/pelletier/go-toml/v2"

	"github.com/waferd/waferd/camera"
	"github.com/waferd/waferd/config"
	"github.com/waferd/waferd/inspection"
	"github.com/waferd/waferd/inspection/recipe"
	"github.com/waferd/waferd/inspection/results"
	"github.com/waferd/waferd/motion"
	"github.com/waferd/waferd/stop"
	"github.com/waferd/waferd/watchdog"
)

// Errors of manual operations that callers test. They are wrapped in
// messages that carry the package prefix: "daemon: move refused: position
// not trusted (home the stage first)".
var (
	// ErrMachineBusy: another manual operation (or a run) is in progress.
	ErrMachineBusy = errors.New("machine busy")
	// ErrNotHomed: a move needs a trusted position.
	ErrNotHomed = errors.New("position not trusted")
	// ErrOutsideTravel: a target outside the stage travel.
	ErrOutsideTravel = errors.New("outside the stage travel")
	// ErrNotIdle: the machine is latched (Faulted, EStop) or stopping.
	ErrNotIdle = errors.New("machine not idle")
	// ErrShuttingDown: the daemon is shutting down and starts nothing.
	ErrShuttingDown = errors.New("daemon: shutting down")
)

// consoleState is what the daemon keeps for consoles. Fields marked (mu)
// are guarded by Daemon.mu; the others guard themselves.
type consoleState struct {
	manual       string                  // (mu) manual operation in progress: "home", "move", ...
	manualCancel context.CancelCauseFunc // (mu) cancels it
	manualDone   chan struct{}           // (mu) closed when it ends
	current      *RunInfo                // (mu) the run in progress
	lightTimer   *time.Timer             // (mu) switches off a light a console left on
	level        float64                 // (mu) light level for the console's "light on" (0: default)
	closing      bool                    // (mu) Run is shutting down

	light *trackedLight
	bus   bus
	stats stopStats
}

// DefaultLightLevel is the level of a console's "light on" until set.
const DefaultLightLevel = 0.8

// ---- events ----

// EventKind says what an Event reports.
type EventKind int

const (
	RunStarted    EventKind = iota // Recipe and Sites set
	RunProgress                    // Progress set: a site was saved
	RunEnded                       // Outcome set, or Err when the run could not start
	StopRequested                  // Text: the stop cause
	Notice                         // Text: something consoles should show (light switched off, ...)
)

// Event is something that happened in the daemon, for every console.
type Event struct {
	Time     time.Time
	Kind     EventKind
	Recipe   string
	Sites    int
	Progress inspection.Progress
	Outcome  inspection.Outcome
	Err      error
	Text     string
}

// bus fans events out to subscribers without ever blocking the publisher:
// a subscriber that does not keep up loses events (and is told how many).
type bus struct {
	mu   sync.Mutex
	subs map[*subscriber]struct{}
}

type subscriber struct {
	ch      chan Event
	dropped int // (bus.mu)
}

// EventBuffer is how many events a subscriber may fall behind before it
// loses some.
const EventBuffer = 256

// Subscribe returns a channel of events from now on and a function that
// ends the subscription (and closes the channel). The daemon never blocks
// on a subscriber: events a slow one has no room for are dropped and
// counted (Dropped).
func (d *Daemon) Subscribe() (<-chan Event, func()) {
	b := &d.con.bus
	s := &subscriber{ch: make(chan Event, EventBuffer)}
	b.mu.Lock()
	if b.subs == nil {
		b.subs = make(map[*subscriber]struct{})
	}
	b.subs[s] = struct{}{}
	b.mu.Unlock()
	var once sync.Once
	return s.ch, func() {
		once.Do(func() {
			b.mu.Lock()
			delete(b.subs, s)
			close(s.ch)
			b.mu.Unlock()
		})
	}
}

func (b *bus) publish(e Event) {
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for s := range b.subs {
		select {
		case s.ch <- e:
		default:
			s.dropped++
		}
	}
}

func (d *Daemon) notice(format string, args ...any) {
	d.con.bus.publish(Event{Kind: Notice, Text: fmt.Sprintf(format, args...)})
}

// RunInfo describes the run in progress.
type RunInfo struct {
	Recipe   string
	Sites    int
	Started  time.Time
	Progress inspection.Progress // the last site saved (Done 0 before the first)
}

// runStarting is called by StartRun with d.mu held.
func (d *Daemon) runStarting(rec *recipe.Recipe) {
	if t := d.con.lightTimer; t != nil {
		// The runner switches the light itself: a console's light goes off.
		t.Stop()
		d.con.lightTimer = nil
		if err := d.Runner.Light.Off(); err != nil {
			d.log.Errorf("run start: switching the console's light off: %v", err)
		}
	}
	d.con.current = &RunInfo{Recipe: rec.Name, Sites: len(rec.Sites), Started: time.Now()}
	d.con.stats.clear()
	d.con.bus.publish(Event{Kind: RunStarted, Recipe: rec.Name, Sites: len(rec.Sites)})
}

// onProgress is the runner's progress callback.
func (d *Daemon) onProgress(p inspection.Progress) {
	d.mu.Lock()
	if d.con.current != nil {
		d.con.current.Progress = p
	}
	d.mu.Unlock()
	if d.opts.Progress != nil {
		d.opts.Progress(p)
	}
	d.con.bus.publish(Event{Kind: RunProgress, Recipe: "", Progress: p})
}

// runEndedLocked is called with d.mu held when a background run has
// ended.
func (d *Daemon) runEndedLocked(out inspection.Outcome, err error) {
	d.con.current = nil
	switch {
	case err != nil:
		d.con.stats.clear()
	case out.State == inspection.Completed:
		d.con.stats.completed()
	default:
		d.con.stats.ended(outcomeReason(out))
	}
}

// publishRunEnded tells the consoles how a run ended.
func (d *Daemon) publishRunEnded(rec *recipe.Recipe, out inspection.Outcome, err error) {
	d.con.bus.publish(Event{Kind: RunEnded, Recipe: rec.Name, Sites: len(rec.Sites), Outcome: out, Err: err})
}

// outcomeReason is the first word of an outcome's reason ("operator",
// "fault", ...), or "error" for a failed run.
func outcomeReason(out inspection.Outcome) string {
	if out.State == inspection.Failed {
		return "error"
	}
	r := out.Reason
	if i := strings.IndexAny(r, ": ("); i >= 0 {
		r = r[:i]
	}
	if _, err := stop.ParseReason(r); err != nil {
		return "other"
	}
	return r
}

// ---- stop statistics ----

// LatencyBounds are the upper bounds of the stop-latency histogram
// buckets; the last bucket holds everything longer.
var LatencyBounds = []time.Duration{
	time.Millisecond, 2 * time.Millisecond, 5 * time.Millisecond, 10 * time.Millisecond,
	20 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond, 200 * time.Millisecond,
	500 * time.Millisecond, time.Second, 2 * time.Second, 5 * time.Second,
}

// Histogram counts durations in the buckets of LatencyBounds.
type Histogram struct {
	Counts        []int // len(LatencyBounds)+1; Counts[i] < LatencyBounds[i] ≤ Counts[i+1]
	N             int
	Min, Max, Sum time.Duration
}

func (h *Histogram) add(d time.Duration) {
	if h.Counts == nil {
		h.Counts = make([]int, len(LatencyBounds)+1)
	}
	i, _ := slices.BinarySearchFunc(LatencyBounds, d, func(b, d time.Duration) int {
		if b <= d {
			return -1
		}
		return 1
	})
	h.Counts[i]++
	if h.N == 0 || d < h.Min {
		h.Min = d
	}
	h.Max = max(h.Max, d)
	h.Sum += d
	h.N++
}

func (h Histogram) clone() Histogram {
	h.Counts = slices.Clone(h.Counts)
	if h.Counts == nil {
		h.Counts = make([]int, len(LatencyBounds)+1)
	}
	return h
}

// Stats are the stop statistics since start-up.
type Stats struct {
	// Requests counts calls of Stop by reason, whether or not anything was
	// running.
	Requests map[stop.Reason]int
	// Stopped counts runs and manual operations ended by a stop, by reason
	// ("operator", "fault", ...; "error" for a failed run).
	Stopped map[string]int
	// Completed counts runs that completed.
	Completed int
	// ToRest is the time from the stop request to the stage at rest (the
	// feed hold confirmed, or the reset done); ToEnd to the outcome
	// recorded (the whole safe stop).
	ToRest, ToEnd Histogram
}

type stopStats struct {
	mu        sync.Mutex
	requests  map[stop.Reason]int
	stopped   map[string]int
	done      int
	pending   bool      // a stop is in progress and being timed
	at        time.Time // when it was requested
	byStep    bool      // the clock was started by the safe stop, not a request
	rest      time.Duration
	restKnown bool
	toRest    Histogram
	toEnd     Histogram
}

// request counts a Stop call made at at; active says a run or manual
// operation is in progress, which starts the clock.
func (s *stopStats) request(r stop.Reason, active bool, at time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.requests == nil {
		s.requests = make(map[stop.Reason]int)
	}
	s.requests[r]++
	if active && (!s.pending || s.byStep && at.Before(s.at)) {
		if !s.pending {
			s.restKnown = false
		}
		s.pending, s.at, s.byStep = true, at, false
	}
}

// safeStopBegan starts the clock for a stop that did not come through Stop
// (a device fault seen by the runner).
func (s *stopStats) safeStopBegan() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.pending {
		s.pending, s.at, s.restKnown, s.byStep = true, time.Now(), false, true
	}
}

func (s *stopStats) atRest() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pending && !s.restKnown {
		s.rest, s.restKnown = time.Since(s.at), true
	}
}

func (s *stopStats) ended(reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped == nil {
		s.stopped = make(map[string]int)
	}
	s.stopped[reason]++
	if s.pending {
		s.toEnd.add(time.Since(s.at))
		if s.restKnown {
			s.toRest.add(s.rest)
		}
	}
	s.pending = false
}

func (s *stopStats) completed() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.done++
	s.pending = false
}

func (s *stopStats) clear() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pending = false
}

// Stats returns the stop statistics.
func (d *Daemon) Stats() Stats {
	s := &d.con.stats
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Stats{Requests: map[stop.Reason]int{}, Stopped: map[string]int{}, Completed: s.done,
		ToRest: s.toRest.clone(), ToEnd: s.toEnd.clone()}
	for k, v := range s.requests {
		st.Requests[k] = v
	}
	for k, v := range s.stopped {
		st.Stopped[k] = v
	}
	return st
}

// timedStage tells the stop statistics when the runner's safe stop has
// brought the stage to rest.
type timedStage struct {
	motion.Stage
	stats *stopStats
}

func (s *timedStage) Hold(ctx context.Context) error {
	err := s.Stage.Hold(ctx)
	if err == nil {
		s.stats.atRest()
	}
	return err
}

func (s *timedStage) Reset(ctx context.Context) error {
	err := s.Stage.Reset(ctx)
	s.stats.atRest()
	return err
}

// ---- the light as commanded ----

// LightState is the light as the daemon last commanded it.
type LightState struct {
	On    bool
	Level float64
	Since time.Time // when it was switched on
	Err   error     // the last switching error, nil when healthy
}

// trackedLight records what the light was last told.
type trackedLight struct {
	Light
	mu sync.Mutex
	st LightState
}

func (l *trackedLight) On(level float64) error {
	err := l.Light.On(level)
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil {
		l.st = LightState{Err: err}
		return err
	}
	if !l.st.On {
		l.st.Since = time.Now()
	}
	l.st.On, l.st.Level, l.st.Err = true, level, nil
	return nil
}

func (l *trackedLight) Off() error {
	err := l.Light.Off()
	l.mu.Lock()
	defer l.mu.Unlock()
	if err == nil {
		l.st = LightState{}
	} else {
		l.st.Err = err
	}
	return err
}

func (l *trackedLight) state() LightState {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.st
}

// ---- status ----

// Status is a snapshot of the machine for a console.
type Status struct {
	Machine     inspection.State
	LatchReason string
	// Busy names what is in progress: "run demo", "home", "move", ... ("" idle).
	Busy string
	// Stage is the stage's status report (StageErr if it did not answer).
	Stage    motion.Status
	StageErr error
	// Trusted: the stage position is known (homed and not lost since).
	Trusted bool
	Travel  motion.Rect
	Light   LightState
	// LightLevel is the level a console's "light on" uses.
	LightLevel float64
	Camera     camera.Info
	Watchdog   []watchdog.HeartbeatInfo
	// Run is the run in progress, nil when none.
	Run *RunInfo
	// Last is the last finished run since start-up (RunID "" if none).
	Last inspection.Outcome
}

// Status returns a snapshot of the machine. It asks the stage for a status
// report (bounded by ctx and the reply timeout).
func (d *Daemon) Status(ctx context.Context) Status {
	sctx, cancel := context.WithTimeout(ctx, config.MS(d.opts.Config.Stage.ReplyTimeoutMS))
	st, serr := d.opts.Devices.Stage.Status(sctx)
	cancel()
	s := Status{
		Machine: d.Runner.State(), LatchReason: d.Runner.LatchReason(),
		Stage: st, StageErr: serr,
		Travel: d.opts.Devices.Limits.Travel, Light: d.con.light.state(),
		Camera: d.opts.Devices.Camera.Info(), Watchdog: d.Heartbeats(), Last: d.Runner.Last(),
	}
	d.mu.Lock()
	s.Busy = d.busyLocked()
	s.LightLevel = d.lightLevelLocked()
	if d.con.current != nil {
		r := *d.con.current
		s.Run = &r
	}
	s.Trusted = d.Runner.Trusted()
	d.mu.Unlock()
	if serr == nil && st.State == motion.StateAlarm {
		s.Trusted = false
	}
	return s
}

// Busy names what is in progress ("run demo", "home", ...; "" when idle)
// without asking any device: it never blocks.
func (d *Daemon) Busy() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.busyLocked()
}

func (d *Daemon) busyLocked() string {
	switch {
	case d.running && d.con.current != nil:
		return "run " + d.con.current.Recipe
	case d.running:
		return "run"
	}
	return d.con.manual
}

func (d *Daemon) lightLevelLocked() float64 {
	if d.con.level > 0 {
		return d.con.level
	}
	return DefaultLightLevel
}

// trusted reports whether the position is known: homed (by a run or a
// console) and the stage not in alarm.
func (d *Daemon) trusted(ctx context.Context) (bool, error) {
	t := d.Runner.Trusted()
	st, err := d.stageStatus(ctx)
	if err != nil {
		return false, err
	}
	return t && st.State != motion.StateAlarm, nil
}

func (d *Daemon) stageStatus(ctx context.Context) (motion.Status, error) {
	sctx, cancel := context.WithTimeout(ctx, config.MS(d.opts.Config.Stage.ReplyTimeoutMS))
	defer cancel()
	st, err := d.opts.Devices.Stage.Status(sctx)
	if err != nil {
		return st, fmt.Errorf("daemon: stage: %w", err)
	}
	return st, nil
}

// ---- manual operations ----

// beginManual claims the machine for a manual operation. The returned
// context is cancelled by Stop (with its cause); end releases the claim.
func (d *Daemon) beginManual(ctx context.Context, what string) (context.Context, func(), error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.con.closing {
		return nil, nil, fmt.Errorf("%s refused: %w", what, ErrShuttingDown)
	}
	if d.running {
		return nil, nil, fmt.Errorf("daemon: %s refused: %w: a run is in progress (stop it, or wait for it to end)", what, ErrMachineBusy)
	}
	if d.con.manual != "" {
		return nil, nil, fmt.Errorf("daemon: %s refused: %w: %s in progress (stop it, or wait)", what, ErrMachineBusy, d.con.manual)
	}
	if st := d.Runner.State(); st != inspection.Idle {
		if st.Latched() {
			return nil, nil, fmt.Errorf("daemon: %s refused: %w: machine is %s (%s): clear it with reset", what, ErrNotIdle, st, d.Runner.LatchReason())
		}
		return nil, nil, fmt.Errorf("daemon: %s refused: %w: machine is %s", what, ErrNotIdle, st)
	}
	mctx, cancel := context.WithCancelCause(ctx)
	done := make(chan struct{})
	d.con.manual, d.con.manualCancel, d.con.manualDone = what, cancel, done
	return mctx, func() {
		d.mu.Lock()
		d.con.manual, d.con.manualCancel, d.con.manualDone = "", nil, nil
		d.mu.Unlock()
		if c, ok := stop.FromContext(mctx); ok {
			d.con.stats.ended(c.Reason.String())
		}
		cancel(nil)
		close(done)
	}, nil
}

// stopManual cancels a manual operation and switches off a light a
// console left on. at is when Stop was called.
func (d *Daemon) stopManual(reason stop.Reason, detail string, at time.Time) {
	cause := stop.New(reason, detail)
	d.mu.Lock()
	cancel := d.con.manualCancel
	active := d.running || cancel != nil
	lightTimer := d.con.lightTimer
	d.con.lightTimer = nil
	d.mu.Unlock()
	d.con.stats.request(reason, active, at)
	if active {
		d.con.bus.publish(Event{Kind: StopRequested, Text: cause.Error()})
	}
	if cancel != nil {
		cancel(cause)
	}
	if lightTimer != nil {
		lightTimer.Stop()
		if err := d.Runner.Light.Off(); err != nil {
			d.log.Errorf("stop: switching the light off: %v", err)
		}
	}
}

// waitManual waits until no manual operation is in progress.
func (d *Daemon) waitManual() {
	d.mu.Lock()
	ch := d.con.manualDone
	d.mu.Unlock()
	if ch != nil {
		<-ch
	}
}

// manualFeed is the feed of console moves, mm/min.
func (d *Daemon) manualFeed() motion.Speed {
	if f := d.opts.Devices.Limits.MaxFeed; f > 0 {
		return f
	}
	return 3000
}

// stopped describes how a manual operation was stopped, or returns err.
func stopped(ctx context.Context, what string, err error) error {
	if c, ok := stop.FromContext(ctx); ok {
		return fmt.Errorf("daemon: %s %w", what, c)
	}
	return fmt.Errorf("daemon: %s: %w", what, err)
}

// Home runs the stage's homing cycle. It blocks until homing ends; Stop
// aborts it (GRBL: soft reset, position untrusted).
func (d *Daemon) Home(ctx context.Context) error {
	mctx, end, err := d.beginManual(ctx, "home")
	if err != nil {
		return err
	}
	defer end()
	d.Runner.NotePositionLost()
	d.mu.Lock()
	d.homing = true
	d.mu.Unlock()
	err = d.opts.Devices.Stage.Home(mctx)
	d.mu.Lock()
	d.homing = false
	d.mu.Unlock()
	if err != nil {
		return stopped(mctx, "home", err)
	}
	if err := d.Runner.NoteHomed(); err != nil {
		return err
	}
	d.log.Noticef("stage homed from a console")
	return nil
}

// MoveTo moves the stage to p (machine coordinates) at the manual feed. It
// refuses a target outside the travel, an untrusted position and a busy or
// latched machine. It blocks until the stage is at p; Stop feed-holds it
// at once, then holds and resets the controller (position kept when the
// hold completes).
func (d *Daemon) MoveTo(ctx context.Context, p motion.Point) error {
	return d.move(ctx, "move", func(motion.Point) motion.Point { return p })
}

// Jog moves the stage by delta from where it is, like MoveTo.
func (d *Daemon) Jog(ctx context.Context, delta motion.Point) error {
	return d.move(ctx, "jog", func(at motion.Point) motion.Point { return at.Add(delta) })
}

func (d *Daemon) move(ctx context.Context, what string, target func(motion.Point) motion.Point) error {
	travel := d.opts.Devices.Limits.Travel
	mctx, end, err := d.beginManual(ctx, what)
	if err != nil {
		return err
	}
	defer end()
	ok, err := d.trusted(mctx)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("daemon: %s refused: %w (home the stage first)", what, ErrNotHomed)
	}
	st, err := d.stageStatus(mctx)
	if err != nil {
		return err
	}
	p := target(st.XY())
	if travel != (motion.Rect{}) && !travel.Contains(p) {
		return fmt.Errorf("daemon: %s to %v refused: %w (X %s..%s, Y %s..%s mm)", what, p, ErrOutsideTravel,
			motion.FormatMM(travel.Min.X), motion.FormatMM(travel.Max.X), motion.FormatMM(travel.Min.Y), motion.FormatMM(travel.Max.Y))
	}
	err = d.opts.Devices.Stage.MoveTo(mctx, p, d.manualFeed())
	if err == nil {
		return nil
	}
	if mctx.Err() != nil {
		return errors.Join(stopped(mctx, what, err), d.manualSafeStop(mctx))
	}
	return stopped(mctx, what, err)
}

// resetStage soft-resets a stage controller that would not move (see
// motion.Status.Ready) on an idle machine, as a manual operation: Stop
// ends it, and runs and other operations are refused meanwhile
// (ErrMachineBusy). A stage that is ready is left alone, and one still
// moving too (a reset would stop it dead and lose the position: an error
// wrapping motion.ErrNotReady). After a reset the position is untrusted:
// the next move homes first. It returns an error wrapping
// motion.ErrNotReady if the controller is still not ready after the reset
// (a safety door still open). It blocks for the reset, at most the
// runner's reset timeout.
func (d *Daemon) resetStage(ctx context.Context) error {
	mctx, end, err := d.beginManual(ctx, "reset")
	if err != nil {
		return err
	}
	defer end()
	st, err := d.stageStatus(mctx)
	if err != nil {
		return err
	}
	switch {
	case st.Ready() == nil:
		return nil
	case !st.Stopped():
		return fmt.Errorf("daemon: reset refused: %w: the controller reports %s: wait for the stage to stop", motion.ErrNotReady, st.StateName())
	}
	was := st.StateName()
	rctx, cancel := context.WithTimeout(mctx, config.MS(d.opts.Config.Runner.ResetTimeoutMS))
	defer cancel()
	d.Runner.NotePositionLost()
	if err := d.opts.Devices.Stage.Reset(rctx); err != nil && !errors.Is(err, motion.ErrAlarm) {
		return stopped(mctx, "stage reset", err)
	}
	d.log.Noticef("stage controller reset from a console (it was %s)", was)
	if st, err = d.stageStatus(mctx); err != nil {
		return err
	}
	if err := st.Ready(); err != nil {
		return fmt.Errorf("daemon: stage reset, but: %w", err)
	}
	return nil
}

// manualSafeStop brings the stage to rest after a stopped manual move:
// light off, hold until stopped, soft reset. Each step runs even if an
// earlier one failed. A missed hold or failed reset leaves the position
// untrusted.
func (d *Daemon) manualSafeStop(ctx context.Context) error {
	sctx := context.WithoutCancel(ctx)
	cfg := d.opts.Config.Runner
	var lightErr, holdErr, resetErr error
	if err := d.Runner.Light.Off(); err != nil {
		lightErr = fmt.Errorf("light off: %w", err)
	}
	hctx, cancel := context.WithTimeout(sctx, config.MS(cfg.HoldTimeoutMS))
	if err := d.opts.Devices.Stage.Hold(hctx); err != nil {
		holdErr = fmt.Errorf("stage hold: %w", err)
	} else {
		d.con.stats.atRest()
	}
	cancel()
	rctx, cancel := context.WithTimeout(sctx, config.MS(cfg.ResetTimeoutMS))
	defer cancel()
	if err := d.opts.Devices.Stage.Reset(rctx); err != nil && !errors.Is(err, motion.ErrAlarm) {
		resetErr = fmt.Errorf("stage reset: %w", err)
	}
	d.con.stats.atRest()
	lost := holdErr != nil || resetErr != nil
	if st, err := d.opts.Devices.Stage.Status(rctx); err != nil || st.State == motion.StateAlarm {
		lost = true
	}
	if lost {
		d.Runner.NotePositionLost()
		d.log.Warnf("manual move stopped: position lost, home before the next move")
	}
	if err := errors.Join(lightErr, holdErr, resetErr); err != nil {
		return fmt.Errorf("daemon: safe stop: %w", err)
	}
	return nil
}

// SetLight switches the light on at level (0 < level ≤ 1; 0 keeps the
// current console level) or off. A light a console switched on is switched
// off again before the watchdog's maximum on-time, and by any Stop. It
// refuses to switch on during a run or while the machine is latched; off
// always works.
func (d *Daemon) SetLight(on bool, level float64) error {
	if level < 0 || level > 1 {
		return fmt.Errorf("daemon: light level %g out of range (0, 1]", level)
	}
	d.mu.Lock()
	if level > 0 {
		d.con.level = level
	}
	level = d.lightLevelLocked()
	if !on {
		if t := d.con.lightTimer; t != nil {
			t.Stop()
			d.con.lightTimer = nil
		}
		running := d.running
		d.mu.Unlock()
		if running {
			return fmt.Errorf("daemon: light off refused: %w: a run is in progress and switches the light itself (stop the run)", ErrMachineBusy)
		}
		return d.Runner.Light.Off()
	}
	defer d.mu.Unlock()
	if d.con.closing {
		return fmt.Errorf("light on refused: %w", ErrShuttingDown)
	}
	if d.running {
		return fmt.Errorf("daemon: light on refused: %w: a run is in progress", ErrMachineBusy)
	}
	if st := d.Runner.State(); st != inspection.Idle {
		return fmt.Errorf("daemon: light on refused: %w: machine is %s: clear it with reset", ErrNotIdle, st)
	}
	if err := d.Runner.Light.On(level); err != nil {
		return err
	}
	maxOn := config.MS(d.opts.Config.Watchdog.LightMaxOnMS)
	if d.con.lightTimer != nil {
		d.con.lightTimer.Stop()
	}
	var t *time.Timer
	t = time.AfterFunc(maxOn*9/10, func() {
		d.mu.Lock()
		mine := d.con.lightTimer == t
		if mine {
			d.con.lightTimer = nil
		}
		d.mu.Unlock()
		if !mine {
			return
		}
		err := d.Runner.Light.Off()
		d.notice("light switched off: on for %v, near its maximum on-time (watchdog light_max_on_ms = %d)", (maxOn * 9 / 10).Round(time.Millisecond), d.opts.Config.Watchdog.LightMaxOnMS)
		if err != nil {
			d.log.Errorf("light off after its on-time: %v", err)
		}
	})
	d.con.lightTimer = t
	return nil
}

// SetLightLevel sets the level a console's "light on" uses (0 < level ≤
// 1); a light a console switched on changes to it at once.
func (d *Daemon) SetLightLevel(level float64) error {
	if level <= 0 || level > 1 {
		return fmt.Errorf("daemon: light level %g out of range (0, 1]", level)
	}
	d.mu.Lock()
	d.con.level = level
	on := d.con.lightTimer != nil
	d.mu.Unlock()
	if on {
		return d.SetLight(true, level)
	}
	return nil
}

// CaptureResult describes a saved frame.
type CaptureResult struct {
	Path          string
	Width, Height int
	Mean          float64 // mean grey level
}

// CaptureExposure is the exposure of console captures and the self-test.
const CaptureExposure = 20 * time.Millisecond

// ValidName checks a capture or file name: 1–64 of [A-Za-z0-9._-], not
// starting with '.', without "..".
func ValidName(name string) error {
	if name == "" || len(name) > 64 || name[0] == '.' || strings.Contains(name, "..") {
		return fmt.Errorf("daemon: bad name %q: use 1-64 letters, digits, '.', '_' or '-', not starting with '.'", name)
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("daemon: bad name %q: use 1-64 letters, digits, '.', '_' or '-'", name)
		}
	}
	return nil
}

// Capture takes one lit frame at the stage's position and saves it as
// <data>/captures/<name>.png (atomically; an existing file is replaced).
// An empty name is "capture-<UTC time>". The light is switched on at the
// console level for the exposure unless it is already on.
func (d *Daemon) Capture(ctx context.Context, name string) (CaptureResult, error) {
	if name == "" {
		name = "capture-" + time.Now().UTC().Format("20060102T150405.000Z")
	}
	name = strings.TrimSuffix(name, ".png")
	if err := ValidName(name); err != nil {
		return CaptureResult{}, err
	}
	mctx, end, err := d.beginManual(ctx, "capture")
	if err != nil {
		return CaptureResult{}, err
	}
	defer end()
	f, err := d.litFrame(mctx)
	if err != nil {
		return CaptureResult{}, stopped(mctx, "capture", err)
	}
	defer f.Release()
	dir := filepath.Join(d.opts.Config.Data.Dir, "captures")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return CaptureResult{}, fmt.Errorf("daemon: capture: %w", err)
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, f.Gray()); err != nil {
		return CaptureResult{}, fmt.Errorf("daemon: capture: encode: %w", err)
	}
	p := filepath.Join(dir, name+".png")
	if err := writeAtomic(p, buf.Bytes()); err != nil {
		return CaptureResult{}, fmt.Errorf("daemon: capture: %w", err)
	}
	return CaptureResult{Path: p, Width: f.Width, Height: f.Height, Mean: meanGrey(f)}, nil
}

// litFrame captures one frame with the light on (switched on for it, and
// off again, unless it was on).
func (d *Daemon) litFrame(ctx context.Context) (*camera.Frame, error) {
	wasOn := d.con.light.state().On
	if !wasOn {
		d.mu.Lock()
		level := d.lightLevelLocked()
		d.mu.Unlock()
		if err := d.Runner.Light.On(level); err != nil {
			return nil, err
		}
		stopLight := context.AfterFunc(ctx, func() { _ = d.Runner.Light.Off() })
		defer stopLight()
	}
	to := config.MS(d.opts.Config.Runner.CaptureTimeoutMS)
	cctx, cancel := context.WithTimeoutCause(ctx, CaptureExposure+to, fmt.Errorf("camera: no frame within %v", CaptureExposure+to))
	f, err := d.Runner.Camera.Capture(cctx, CaptureExposure)
	cancel()
	if !wasOn {
		if offErr := d.Runner.Light.Off(); offErr != nil {
			if f != nil {
				f.Release()
			}
			return nil, errors.Join(err, offErr)
		}
	}
	return f, err
}

func meanGrey(f *camera.Frame) float64 {
	var sum uint64
	for y := range f.Height {
		for _, v := range f.Row(y) {
			sum += uint64(v)
		}
	}
	if f.Width*f.Height == 0 {
		return 0
	}
	return float64(sum) / float64(f.Width*f.Height)
}

// writeAtomic replaces path with data: temporary file, fsync, rename,
// directory fsync.
func writeAtomic(p string, data []byte) error {
	dir := filepath.Dir(p)
	f, err := os.CreateTemp(dir, "."+filepath.Base(p)+".tmp-")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(0o644)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, p)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return err
	}
	if df, err := os.Open(dir); err == nil {
		err = df.Sync()
		_ = df.Close()
		return err
	}
	return nil
}

// TestResult is one device's self-test.
type TestResult struct {
	Device string
	Pass   bool
	Detail string
}

// SelfTest exercises each device safely — the stage answers a status
// request (it does not move), the light goes on and off, the camera takes
// one lit frame — and reports the watchdog's heartbeats and the
// temperature. It refuses during a run; Stop ends it (the remaining steps
// are reported as skipped).
func (d *Daemon) SelfTest(ctx context.Context) ([]TestResult, error) {
	mctx, end, err := d.beginManual(ctx, "selftest")
	if err != nil {
		return nil, err
	}
	defer end()
	var res []TestResult
	add := func(dev string, err error, format string, args ...any) {
		r := TestResult{Device: dev, Pass: err == nil, Detail: fmt.Sprintf(format, args...)}
		if err != nil {
			r.Detail = oneLine(err.Error())
			if c, ok := stop.FromContext(mctx); ok {
				r.Detail = "skipped: " + c.Error()
			}
		}
		res = append(res, r)
	}
	st, err := d.stageStatus(mctx)
	note := ""
	if st.State == motion.StateAlarm {
		note = " (alarm: home to clear)"
	}
	add("stage", err, "answers: %s%s", st, note)

	err = mctx.Err()
	if err == nil {
		err = d.Runner.Light.On(0.5)
		if err == nil {
			err = d.Runner.Light.Off()
		}
	}
	add("light", err, "switched on (50%%) and off")

	var f *camera.Frame
	if err = mctx.Err(); err == nil {
		f, err = d.litFrame(mctx)
	}
	if err == nil {
		info := d.opts.Devices.Camera.Info()
		mean := meanGrey(f)
		switch {
		case f.Width != info.Width || f.Height != info.Height:
			err = fmt.Errorf("frame is %dx%d, the camera reports %dx%d", f.Width, f.Height, info.Width, info.Height)
		case mean < 1:
			err = fmt.Errorf("frame is black (mean grey %.1f): light or lens?", mean)
		}
		add("camera", err, "one %dx%d frame, mean grey %.0f", f.Width, f.Height, mean)
		f.Release()
	} else {
		add("camera", err, "")
	}

	var stale []string
	temp := TestResult{Device: "temperature", Pass: true, Detail: "not watched (watchdog.thermal_zone is empty)"}
	for _, h := range d.Heartbeats() {
		if h.Kind == watchdog.KindSensor && h.Name == "temperature" {
			temp.Pass = h.Fresh && h.Age >= 0
			temp.Detail = fmt.Sprintf("%.1f °C (limit %.1f °C)", h.Value, h.Max)
			if h.Age < 0 {
				temp.Detail = "no reading yet"
			}
			continue
		}
		if !h.Fresh {
			stale = append(stale, h.Name)
		}
	}
	if len(stale) == 0 {
		res = append(res, TestResult{Device: "watchdog", Pass: true, Detail: "every heartbeat fresh"})
	} else {
		res = append(res, TestResult{Device: "watchdog", Detail: "stale: " + strings.Join(stale, ", ")})
	}
	res = append(res, temp)
	return res, nil
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", "; ")), " ")
}

// ---- runs, recipes, logs, configuration ----

// RunRecipe loads the recipe called name (see LoadRecipe) and starts it in
// the background.
func (d *Daemon) RunRecipe(ctx context.Context, name string) (*recipe.Recipe, error) {
	rec, err := d.LoadRecipe(name)
	if err != nil {
		return nil, err
	}
	if err := d.StartRun(ctx, rec); err != nil {
		return nil, err
	}
	return rec, nil
}

// WaitRun blocks until no run is in progress or ctx ends.
func (d *Daemon) WaitRun(ctx context.Context) error {
	d.mu.Lock()
	ch := d.runDone
	d.mu.Unlock()
	if ch == nil {
		return nil
	}
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// builtinRecipe loads file from Options.Recipes.
func (d *Daemon) builtinRecipe(file string) (*recipe.Recipe, error) {
	data, err := fs.ReadFile(d.opts.Recipes, file)
	if err != nil {
		return nil, fmt.Errorf("daemon: recipe %q: not among the built-in examples (%s)", strings.TrimSuffix(file, ".toml"), strings.Join(d.builtinNames(), ", "))
	}
	return recipe.Parse("built-in "+file, data, d.opts.Devices.Limits)
}

func (d *Daemon) builtinNames() []string {
	var names []string
	matches, _ := fs.Glob(d.opts.Recipes, "*.toml")
	for _, m := range matches {
		names = append(names, strings.TrimSuffix(path.Base(m), ".toml"))
	}
	return names
}

// Recipes lists the recipe names a console can run, and where they come
// from (the recipe directory, or the built-in examples).
func (d *Daemon) Recipes() (names []string, from string, err error) {
	dir := d.opts.Config.Data.Recipes
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) && d.opts.Recipes != nil {
		return d.builtinNames(), "built-in examples (" + dir + " does not exist)", nil
	}
	matches, err := filepath.Glob(filepath.Join(dir, "*.toml"))
	if err != nil {
		return nil, dir, fmt.Errorf("daemon: recipes: %w", err)
	}
	for _, m := range matches {
		names = append(names, strings.TrimSuffix(filepath.Base(m), ".toml"))
	}
	return names, dir, nil
}

// Runs returns up to n recorded runs, newest first, and an error for run
// records it could not read.
func (d *Daemon) Runs(n int) ([]results.Run, error) {
	runs, err := d.opts.Store.List()
	if n > 0 && len(runs) > n {
		runs = runs[:n]
	}
	return runs, err
}

// LoadRun reads the record of run id.
func (d *Daemon) LoadRun(id string) (results.Run, error) { return d.opts.Store.Load(id) }

// Logs returns up to the last n log lines (nil without a log ring).
func (d *Daemon) Logs(n int) []string {
	if d.opts.LogRing == nil {
		return nil
	}
	return d.opts.LogRing.Lines(n)
}

// ConfigText is the effective configuration as TOML.
func (d *Daemon) ConfigText() (string, error) {
	b, err := toml.Marshal(d.opts.Config)
	if err != nil {
		return "", fmt.Errorf("daemon: config: %w", err)
	}
	return string(b), nil
}

// DataDir is where results and captures go.
func (d *Daemon) DataDir() string { return d.opts.Config.Data.Dir }
