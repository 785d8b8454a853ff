// Package inspection runs inspection recipes: for each site move, settle,
// light, capture, analyse and save, then finish with an outcome that says
// why the run ended. It consumes the motion.Stage, camera.Camera and light
// interfaces and never knows which implementation is behind them.
//
// The Runner is also the machine's one cancel path: every stop source calls
// Runner.Stop with a typed reason (package stop), which cancels the run's
// context with that cause; the safe-stop sequence then brings the machine to
// rest and the outcome is recorded.
package inspection

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/waferd/waferd/camera"
	"github.com/waferd/waferd/inspection/analysis"
	"github.com/waferd/waferd/inspection/recipe"
	"github.com/waferd/waferd/inspection/results"
	"github.com/waferd/waferd/internal/logging"
	"github.com/waferd/waferd/motion"
	"github.com/waferd/waferd/stop"
)

// Light is what the runner needs of the illumination.
type Light interface {
	On(level float64) error
	Off() error
}

// Progress is reported after every site.
type Progress struct {
	RunID   string
	Done    int // sites finished
	Total   int
	Defects int // found so far
	Site    recipe.Site
	Elapsed time.Duration
	ETA     time.Duration // estimated time remaining
}

// Outcome is how a run ended.
type Outcome struct {
	RunID   string
	Dir     string // run directory
	State   State  // Completed, Canceled, Failed or Aborted
	Reason  string // e.g. "operator: SIGINT", "fault: stage: ..."
	Err     error  // the error that ended the run (and any safe-stop error); nil when completed
	Done    int
	Total   int
	Defects int
	// Latched is the machine state the run left behind: Idle, Faulted or
	// EStop.
	Latched State
}

// Step names the boundaries of a run, for OnStep.
type Step int

const (
	StepHoming   Step = iota // before homing (only when the position is not trusted)
	StepMove                 // before the move to a site (site -1: the reference die)
	StepSettle               // before the settle wait
	StepLightOn              // before switching the light on
	StepCapture              // before the capture
	StepAnalyse              // before the analysis
	StepSave                 // before saving the site
	StepNextSite             // after a site is saved (and its progress reported)
	StepSafeStop             // at the start of the safe-stop sequence
	StepWaferMap             // the outcome is persisted (run.json); before the wafer map is drawn
)

var stepNames = [...]string{"homing", "move", "settle", "light-on", "capture", "analyse", "save", "next-site", "safe-stop", "wafer-map"}

func (s Step) String() string { return stepNames[s] }

// Config tunes the runner. Zero values take the defaults.
type Config struct {
	// HoldTimeout bounds the wait for the stage to come to rest in the
	// safe-stop sequence (default 5 s). Missing it escalates: soft reset,
	// position untrusted, machine Faulted.
	HoldTimeout time.Duration
	// ResetTimeout bounds the soft reset after the hold (default 3 s).
	ResetTimeout time.Duration
	// CaptureTimeout bounds one capture beyond its exposure (default 2 s).
	CaptureTimeout time.Duration
	// Serial runs the sites strictly one after another instead of moving
	// to the next site while the last is analysed and saved. It exists
	// to measure what the pipeline gains and to rule it out when
	// debugging; production runs leave it false.
	Serial bool
}

// ErrLatched is returned by Run while the machine is Faulted or in EStop.
var ErrLatched = errors.New("inspection: machine latched")

// Runner runs one recipe at a time and owns the machine state. Run blocks;
// every other method is safe to call from any goroutine at any time.
type Runner struct {
	Stage  motion.Stage
	Light  Light
	Camera camera.Camera
	Store  *results.Store
	Log    *logging.Log
	// Progress, if set, is called after every saved site, in site order,
	// from the run's processing goroutine (never concurrently with
	// itself); it must return quickly: it holds up the next analysis.
	Progress func(Progress)
	// OnStep, if set, is called at the start of every step of a run with
	// the site index (-1 for the reference die). It is instrumentation for
	// tests and tracing and must return quickly. Sites are pipelined: the
	// steps of acquisition (move, settle, light-on, capture) and those of
	// processing (analyse, save, next-site) come from two goroutines and
	// may interleave and run concurrently; within each, order is kept.
	OnStep func(step Step, site int)
	// EStopActive, if set, reports whether the e-stop input is still
	// pressed; Reset refuses to clear an EStop latch while it is.
	EStopActive func() bool
	Config      Config

	mu       sync.Mutex
	state    State
	cancel   context.CancelCauseFunc // of the run in progress
	reason   stop.Reason             // strongest stop reason of the run in progress
	hurry    chan struct{}           // closed to abandon the hold wait (escalation)
	latchWhy string                  // why the machine is latched
	trusted  bool                    // stage position known (homed, never lost since)
	last     Outcome
	detector analysis.Detector
	// quickHold is held by Stop while it writes its feed hold (taken
	// under mu, before the run is cancelled); safeStop takes it once, as
	// a barrier, before it holds or resets the stage. Never taken before
	// mu.
	quickHold sync.Mutex
	// quickGuard cancels the run in progress if Stop's feed-hold write
	// stalls (made by Run for each run, stopped); quickDetail is the
	// stop's detail for it. Guarded by mu.
	quickGuard  *time.Timer
	quickDetail string
}

// State returns the machine state: Idle, Running, Stopping, Faulted or
// EStop.
func (r *Runner) State() State {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.state
}

// LatchReason says why the machine is Faulted or in EStop ("" otherwise).
func (r *Runner) LatchReason() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.latchWhy
}

// Last returns the outcome of the last finished run.
func (r *Runner) Last() Outcome {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.last
}

// Trusted reports whether the stage position is known (homed and not lost
// since).
func (r *Runner) Trusted() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.trusted
}

// NoteHomed records that the stage was homed outside a run (the console's
// home): the position is trusted, and the next run does not home again.
// It refuses while a run is active or the machine is latched.
func (r *Runner) NoteHomed() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.state != Idle {
		return fmt.Errorf("inspection: homed while %s: not recorded", r.state)
	}
	r.trusted = true
	return nil
}

// NotePositionLost records that the stage position is no longer known (a
// manual move stopped hard, a homing cycle started): the next run homes.
func (r *Runner) NotePositionLost() { r.untrust() }

func (r *Runner) untrust() {
	r.mu.Lock()
	r.trusted = false
	r.mu.Unlock()
}

func (r *Runner) log() *logging.Log {
	if r.Log == nil {
		return logging.Discard()
	}
	return r.Log
}

// Stop is the one cancel path: the console, the stop button, signals, the
// watchdog, device faults and the e-stop all call it. It waits for nothing
// but, on the first stop of a run, its own one-byte feed-hold write to the
// stage (microseconds; the run is cancelled after at most quickCancelAfter
// even if that write stalls).
//
// While a run is active the first call cancels the run's context with a
// *stop.Cause; a stronger reason arriving later escalates the stop in
// progress (the e-stop abandons the controlled hold and resets the stage at
// once); a repeated or weaker one is logged and ignored. While idle, an
// e-stop latches EStop, a fault or watchdog stop latches Faulted, and any
// other stop is harmless.
func (r *Runner) Stop(reason stop.Reason, detail string) {
	r.mu.Lock()
	if r.state == Running && r.reason == stop.None && reason > stop.None {
		// The feed hold goes on the wire first (Halt does not block), then
		// the run is cancelled.
		r.reason = reason
		_ = r.Stage.Halt()
		cause := stop.New(reason, detail)
		r.cancel(cause)
		r.mu.Unlock()
		r.log().Warnf("stop requested: %v", cause)
		return
	}
	log := r.log()
	cause := stop.New(reason, detail)
	defer r.mu.Unlock()
	switch r.state {
	case Running, Stopping:
		switch {
		case reason <= r.reason:
			log.Noticef("stop %v ignored: already stopping (%v)", cause, r.reason)
		case r.reason == stop.None:
			// Stopping without a reason: the work failed and the safe
			// stop is under way; the run's context is already cancelled.
			r.reason = reason
			r.cancel(cause)
			log.Warnf("stop requested: %v", cause)
		default:
			log.Warnf("stop escalated from %v to %v", r.reason, cause)
			r.reason = reason
			if reason.Immediate() {
				r.hurryLocked()
			}
		}
	case Idle, Faulted:
		switch {
		case reason == stop.EStop:
			r.latchLocked(EStop, cause.Error())
		case reason.Latches() && r.state == Idle:
			r.latchLocked(Faulted, cause.Error())
		default:
			log.Noticef("stop %v while %s: nothing to stop", cause, r.state)
		}
	case EStop:
		log.Noticef("stop %v while in e-stop: nothing to stop", cause)
	}
}

// quickCancelAfter bounds how long Stop's own feed-hold write may delay
// the cancellation of the run (only a stalled serial line could make it).
const quickCancelAfter = time.Millisecond

// Hurry escalates a stop in progress to the immediate path without changing
// its reason: the controlled hold is abandoned and the stage reset at once
// (position lost). A second SIGTERM or Ctrl-C does this. The rest of the
// safe-stop sequence still runs. Without a stop in progress it does nothing.
func (r *Runner) Hurry(detail string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.state != Stopping && !(r.state == Running && r.reason != stop.None) {
		r.log().Noticef("hurry (%s) ignored: no stop in progress", detail)
		return
	}
	r.log().Warnf("stop hurried (%s): abandoning the controlled hold", detail)
	r.hurryLocked()
}

func (r *Runner) hurryLocked() {
	select {
	case <-r.hurry:
	default:
		close(r.hurry)
	}
}

// setLocked moves the machine to next if that is legal, and logs (but
// otherwise ignores) an illegal request: a bug, never a reason to leave
// the machine in an unknown state. r.mu must be held.
func (r *Runner) setLocked(next State) bool {
	if err := transition(r.state, next); err != nil {
		r.log().Errorf("%v", err)
		return false
	}
	r.state = next
	return true
}

func (r *Runner) latchLocked(s State, why string) {
	if !r.setLocked(s) {
		return
	}
	r.latchWhy = why
	r.log().Errorf("machine %s: %s; clear with reset", s, why)
}

// Reset clears a Faulted or EStop latch so that runs are accepted again:
// it soft-resets the stage controller (clearing whatever state the fault
// left in the link) and then the latch. It refuses while the e-stop input is
// still active, and leaves the latch if the stage does not answer. The
// position stays untrusted: the next run homes first. It blocks for the
// stage reset (bounded by ctx and Config.ResetTimeout).
func (r *Runner) Reset(ctx context.Context) error {
	r.mu.Lock()
	st, why := r.state, r.latchWhy
	r.mu.Unlock()
	switch st {
	case Idle:
		return nil
	case Faulted, EStop:
	default:
		return fmt.Errorf("inspection: cannot reset while %s", st)
	}
	if st == EStop && r.EStopActive != nil && r.EStopActive() {
		return errors.New("inspection: e-stop still pressed: release it before reset")
	}
	rctx, cancel := context.WithTimeout(ctx, r.resetTimeout())
	err := r.Stage.Reset(rctx)
	cancel()
	r.untrust()
	if err != nil && !errors.Is(err, motion.ErrAlarm) {
		return fmt.Errorf("inspection: reset: machine stays %s: %w", st, err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.state != st {
		return fmt.Errorf("inspection: reset: machine changed to %s meanwhile", r.state)
	}
	r.log().Noticef("machine reset from %s (%s)", st, why)
	r.setLocked(Idle)
	r.latchWhy = ""
	return nil
}

func (r *Runner) resetTimeout() time.Duration {
	if r.Config.ResetTimeout > 0 {
		return r.Config.ResetTimeout
	}
	return 3 * time.Second
}

// Run runs rec to its end and returns the outcome. Stop (or cancelling ctx)
// stops the run: motion is held at once, the light switched off, and the
// safe-stop sequence runs to completion before Run returns. The returned
// error is non-nil only if the run could not be started (then no record
// exists): the machine is latched (ErrLatched) or already running, the
// stage controller is in a state in which it would not move (held, door
// open, check mode, ...: an error wrapping motion.ErrNotReady, see
// motion.Status.Ready), or the record could not be created.
func (r *Runner) Run(ctx context.Context, rec *recipe.Recipe) (Outcome, error) {
	log := r.log()
	now := time.Now()
	run := results.Run{
		ID:         results.NewID(now.UTC(), rec.Name),
		Recipe:     rec.Name,
		RecipeFile: rec.Path,
		StartedAt:  now,
		SitesTotal: len(rec.Sites),
		Geometry: results.Geometry{
			WaferCenter: rec.WaferCenter, WaferDiameter: rec.WaferDiameter, DiePitch: rec.DiePitch,
		},
	}
	for _, s := range rec.Sites {
		run.Sites = append(run.Sites, results.Site{
			Index: s.Index, Die: s.Die, XMM: s.At.X.Millimetres(), YMM: s.At.Y.Millimetres(), Status: results.SitePending,
		})
	}

	runCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	r.mu.Lock()
	switch {
	case r.state.Latched():
		err := fmt.Errorf("%w: machine is %s (%s): clear it with reset before a new run", ErrLatched, r.state, r.latchWhy)
		r.mu.Unlock()
		return Outcome{}, err
	case r.state != Idle:
		st := r.state
		r.mu.Unlock()
		return Outcome{}, fmt.Errorf("inspection: cannot start %q: machine is %s", rec.Name, st)
	}
	r.setLocked(Running)
	r.cancel, r.reason, r.hurry = cancel, stop.None, make(chan struct{})
	// Stop's guard for this run: it cancels this run's context only (a
	// late firing finds it cancelled already), with the reason and
	// detail of the stop that armed it.
	r.quickGuard = time.AfterFunc(time.Hour, func() {
		r.mu.Lock()
		reason, detail := r.reason, r.quickDetail
		r.mu.Unlock()
		cancel(stop.New(reason, detail))
	})
	r.quickGuard.Stop()
	r.mu.Unlock()
	// A controller that would not move (held by a feed-hold button wired
	// to it, say) would take the first move and leave the run waiting for
	// it until the move's budget ran out, and then blame the stage's
	// silence: a run refuses to start instead, saying why. A query that
	// fails (a Stop meanwhile cancels it) is left to the run, which stops
	// or faults on the stage; so is a Stop that came while the stage was
	// asked, which the run's safe stop and outcome must answer.
	stage, stageErr := r.Stage.Status(runCtx)
	if stageErr == nil && stage.Ready() != nil {
		r.mu.Lock()
		if r.reason == stop.None {
			r.setLocked(Idle)
			r.cancel = nil
			r.mu.Unlock()
			return Outcome{}, fmt.Errorf("inspection: cannot start %q: %w", rec.Name, stage.Ready())
		}
		r.mu.Unlock()
	}

	rcd, err := r.Store.Create(run)
	if err != nil {
		// No record, so no run to stop: a Stop that came meanwhile is
		// applied to the idle machine, where an e-stop or a fault still
		// latches it.
		r.mu.Lock()
		reason := r.reason
		r.setLocked(Idle)
		r.cancel = nil
		r.mu.Unlock()
		if reason != stop.None {
			r.awaitQuickHold() // the Stop has cancelled runCtx, with its cause
			r.stopFromParent(runCtx)
		}
		return Outcome{}, fmt.Errorf("inspection: %w", err)
	}
	run = rcd.Run()
	log.Infof("run %s: recipe %q, %d sites", run.ID, rec.Name, len(rec.Sites))

	// A caller cancelling ctx stops the run through the same path as Stop.
	stopParent := context.AfterFunc(ctx, func() { r.stopFromParent(ctx) })
	defer stopParent()

	w := &work{r: r, rec: rec, rcd: rcd, start: now, out: Outcome{RunID: run.ID, Dir: rcd.Dir(), Total: len(rec.Sites)}}
	if stageErr == nil {
		w.stage = &stage
	}
	workErr := w.do(runCtx)
	out := r.finish(runCtx, w, workErr)
	r.mu.Lock()
	r.last = out
	r.cancel = nil
	r.mu.Unlock()
	return out, nil
}

// finish classifies the end of the run, runs the safe stop when needed and
// persists the outcome.
func (r *Runner) finish(ctx context.Context, w *work, workErr error) Outcome {
	log := r.log()
	out := w.out
	if workErr == nil {
		// Completed, unless a stop got in first. From here on a stop
		// finds an idle machine (an e-stop still latches).
		r.mu.Lock()
		stopped := r.reason != stop.None
		if !stopped {
			r.setLocked(Idle)
		}
		r.mu.Unlock()
		if !stopped {
			return r.complete(w)
		}
		// A Stop still writing its feed hold cancels ctx right after.
		r.awaitQuickHold()
		workErr = context.Cause(ctx)
	}

	// Every end other than completion goes through the one cancel path, so
	// that anything still running under the run's context stops too.
	var de *deviceError
	switch {
	case r.currentReason() != stop.None:
	case ctx.Err() != nil:
		// The caller's context ended without Stop: same path, same record.
		r.stopFromParent(ctx)
	case errors.As(workErr, &de):
		r.Stop(stop.Fault, de.Error())
	default:
		r.mu.Lock()
		r.cancel(workErr) // failed: stop whatever else runs under ctx
		r.mu.Unlock()
	}
	r.mu.Lock()
	r.setLocked(Stopping)
	r.mu.Unlock()
	r.step(StepSafeStop, -1)

	// The safe stop runs to completion even though ctx is cancelled.
	sctx := context.WithoutCancel(ctx)
	faulted, stopErr := r.safeStop(sctx)
	if stopErr != nil {
		log.Errorf("run %s: safe stop: %v", out.RunID, stopErr)
	}

	r.mu.Lock()
	reason := r.reason
	r.mu.Unlock()
	state, why := classify(ctx, reason, workErr)
	if faulted && state == Canceled {
		// A stop that could not be completed cleanly is not a plain cancel.
		state = Aborted
	}
	out.State, out.Reason, out.Err = state, why, errors.Join(workErr, stopErr)

	rstate := map[State]results.State{Canceled: results.Canceled, Aborted: results.Aborted, Failed: results.Failed}[state]
	if err := r.record(w, rstate, why, out.Err); err != nil {
		log.Errorf("run %s: record: %v", out.RunID, err)
		out.Err = errors.Join(out.Err, err)
	}

	r.mu.Lock()
	switch {
	case reason == stop.EStop:
		r.latchLocked(EStop, why)
	case reason.Latches() || faulted:
		latch := why
		if faulted {
			latch = "safe stop incomplete: " + stopErr.Error()
		}
		r.latchLocked(Faulted, latch)
	default:
		r.setLocked(Idle)
	}
	out.Latched = r.state
	r.mu.Unlock()
	log.Warnf("run %s %s after %d/%d sites: %s", out.RunID, state, out.Done, out.Total, why)
	return out
}

// complete records a completed run. The stage is idle at the last site.
func (r *Runner) complete(w *work) Outcome {
	log := r.log()
	out := w.out
	out.State, out.Latched = Completed, Idle
	if err := r.Light.Off(); err != nil {
		// Every site is done, but the light did not go off: a fault.
		out.State, out.Reason, out.Err = Aborted, "fault: light: "+err.Error(), err
		r.Stop(stop.Fault, "light: "+err.Error())
		out.Latched = r.State()
	}
	state := map[State]results.State{Completed: results.Completed, Aborted: results.Aborted}[out.State]
	if err := r.record(w, state, out.Reason, out.Err); err != nil {
		log.Errorf("run %s: record: %v", out.RunID, err)
		if out.State == Completed {
			out.State, out.Reason = Failed, "error: record: "+err.Error()
		}
		out.Err = errors.Join(out.Err, err)
	}
	if out.State == Completed {
		log.Infof("run %s completed: %d sites, %d defects", out.RunID, out.Done, out.Defects)
	} else {
		log.Errorf("run %s %s: %s", out.RunID, out.State, out.Reason)
	}
	return out
}

// record persists the outcome (run.json), then draws the wafer map.
func (r *Runner) record(w *work, state results.State, why string, runErr error) error {
	err := w.rcd.FinishRecord(state, why, runErr, r.Trusted())
	if err == nil {
		r.step(StepWaferMap, -1)
	}
	return errors.Join(err, w.rcd.WriteMap())
}

// classify maps why the work ended to an outcome and a reason string.
func classify(ctx context.Context, reason stop.Reason, err error) (State, string) {
	if reason == stop.None {
		return Failed, "error: " + err.Error()
	}
	why := reason.String()
	if c, ok := stop.FromContext(ctx); ok {
		switch {
		case c.Reason != reason:
			why += " (escalated from " + c.Error() + ")"
		case c.Detail != "":
			why += ": " + c.Detail
		}
	}
	if reason.Aborts() {
		return Aborted, why
	}
	return Canceled, why
}

func (r *Runner) currentReason() stop.Reason {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.reason
}

// stopFromParent turns the end of the caller's context into a Stop: with
// its *stop.Cause if it has one, else as an operator stop.
func (r *Runner) stopFromParent(ctx context.Context) {
	if c, ok := stop.FromContext(ctx); ok {
		r.Stop(c.Reason, c.Detail)
		return
	}
	r.Stop(stop.Operator, "context: "+context.Cause(ctx).Error())
}

// safeStop brings the machine to rest: light off, stage held (or, on an
// e-stop or when hurried, reset at once), stage reset. Every step runs even
// if an earlier one failed. faulted reports an escalation: the hold missed
// its deadline or the reset failed.
func (r *Runner) safeStop(ctx context.Context) (faulted bool, err error) {
	holdTO := r.Config.HoldTimeout
	if holdTO <= 0 {
		holdTO = 5 * time.Second
	}
	resetTO := r.resetTimeout()
	r.mu.Lock()
	hurry := r.hurry
	immediate := r.reason.Immediate()
	r.mu.Unlock()

	// Light first: it is instant and the most likely to harm a wafer.
	var lightErr, holdErr, resetErr error
	if err := r.Light.Off(); err != nil {
		lightErr = fmt.Errorf("light off: %w", err)
	}
	// Stop's own feed hold is on the wire (or was not sent) before the
	// stage is held or reset.
	r.awaitQuickHold()

	if !immediate {
		hctx, cancel := context.WithTimeoutCause(ctx, holdTO, errors.New("hold deadline missed"))
		go func() {
			select {
			case <-hurry:
				cancel()
			case <-hctx.Done():
			}
		}()
		holdErr = r.Stage.Hold(hctx)
		hurried := isClosed(hurry)
		cancel()
		if holdErr != nil {
			if hurried {
				holdErr = nil // the escalation chose the reset; not a fault
				r.log().Warnf("safe stop hurried: resetting without waiting for the hold")
			} else {
				holdErr = fmt.Errorf("stage hold: %w", holdErr)
				faulted = true
			}
		}
	}

	rctx, cancel := context.WithTimeout(ctx, resetTO)
	if err := r.Stage.Reset(rctx); err != nil {
		resetErr = fmt.Errorf("stage reset: %w", err)
		r.untrust()
		// An alarm raised by the reset (it stopped a moving stage) is the
		// expected result of the immediate path, not a failed reset.
		if !errors.Is(err, motion.ErrAlarm) {
			faulted = true
		} else {
			resetErr = nil
		}
	} else if st, err := r.Stage.Status(rctx); err != nil || st.State == motion.StateAlarm {
		// An alarm that survives the reset (limit hit, reset while
		// moving) means the position is lost.
		r.untrust()
	}
	cancel()
	if holdErr != nil || immediate {
		r.untrust()
	}
	return faulted, errors.Join(lightErr, holdErr, resetErr)
}

// awaitQuickHold returns once no Stop is writing its feed hold (and has
// then cancelled the run): quickHold as a barrier.
func (r *Runner) awaitQuickHold() {
	r.quickHold.Lock()
	r.quickHold.Unlock() //nolint:staticcheck // an empty critical section is the point
}

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

func (r *Runner) step(s Step, site int) {
	if r.OnStep != nil {
		r.OnStep(s, site)
	}
}

// deviceError marks an error that came from the hardware, so that the run is
// aborted with reason fault rather than failed.
type deviceError struct {
	dev string
	err error
}

func (e *deviceError) Error() string { return e.dev + ": " + e.err.Error() }
func (e *deviceError) Unwrap() error { return e.err }

// device tags err as coming from dev, unless the run was stopped (then the
// error is the stop's doing, not the device's).
func device(ctx context.Context, dev string, err error) error {
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return errors.Join(context.Cause(ctx), err)
	}
	return &deviceError{dev: dev, err: err}
}
