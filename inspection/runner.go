// Package inspection runs inspection recipes: for each site move, settle,
// light, capture, analyse and save, then finish with an outcome that says
// why the run ended. It consumes the motion.Stage, camera.Camera and light
// interfaces and never knows which implementation is behind them.
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
	Reason  string // e.g. "operator: SIGINT", "fault: stage alarm"
	Err     error  // the error that ended the run, nil when completed
	Done    int
	Total   int
	Defects int
}

// Config tunes the runner. Zero values take the defaults.
type Config struct {
	// HoldTimeout bounds the wait for the stage to come to rest in the
	// safe-stop sequence (default 5 s).
	HoldTimeout time.Duration
	// ResetTimeout bounds the soft reset after the hold (default 3 s).
	ResetTimeout time.Duration
}

// Runner runs one recipe at a time. Run blocks; State and Trusted are safe
// to call from other goroutines.
type Runner struct {
	Stage    motion.Stage
	Light    Light
	Camera   camera.Camera
	Store    *results.Store
	Log      *logging.Log
	Progress func(Progress) // optional; called from Run's goroutine
	Config   Config

	m        machine
	mu       sync.Mutex
	trusted  bool // stage position known (homed, never lost since)
	detector analysis.Detector
}

// State returns the runner's current state.
func (r *Runner) State() State { return r.m.get() }

// Trusted reports whether the stage position is known (homed and not lost
// since).
func (r *Runner) Trusted() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.trusted
}

func (r *Runner) setTrusted(v bool) {
	r.mu.Lock()
	r.trusted = v
	r.mu.Unlock()
}

// deviceError marks an error that came from the hardware, so that the run is
// aborted with reason fault rather than failed.
type deviceError struct {
	dev string
	err error
}

func (e *deviceError) Error() string { return e.dev + ": " + e.err.Error() }
func (e *deviceError) Unwrap() error { return e.err }

func device(dev string, err error) error {
	if err == nil {
		return nil
	}
	return &deviceError{dev: dev, err: err}
}

// Run runs rec to its end and returns the outcome. Cancelling ctx (ideally
// with a *stop.Cause via context.WithCancelCause) stops the run: motion is
// held at once, the light switched off, and the safe-stop sequence runs to
// completion before Run returns. The returned error is non-nil only if the
// run could not be started (then no record exists).
func (r *Runner) Run(ctx context.Context, rec *recipe.Recipe) (Outcome, error) {
	if r.Log == nil {
		r.Log = logging.Discard()
	}
	if st := r.m.get(); st != Idle && !st.Terminal() {
		return Outcome{}, fmt.Errorf("inspection: cannot start %q: runner is %s", rec.Name, st)
	}
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
	rcd, err := r.Store.Create(run)
	if err != nil {
		return Outcome{}, fmt.Errorf("inspection: %w", err)
	}
	if err := r.m.to(Running); err != nil {
		_ = rcd.Finish(results.Failed, "error", err, r.Trusted())
		return Outcome{}, err
	}
	run = rcd.Run()
	r.Log.Infof("run %s: recipe %q, %d sites", run.ID, rec.Name, len(rec.Sites))

	w := &work{r: r, rec: rec, rcd: rcd, start: now, out: Outcome{RunID: run.ID, Dir: rcd.Dir(), Total: len(rec.Sites)}}
	workErr := w.do(ctx)
	return r.finish(ctx, w, workErr), nil
}

// finish classifies the end of the run, runs the safe stop when needed and
// persists the outcome.
func (r *Runner) finish(ctx context.Context, w *work, workErr error) Outcome {
	out := w.out
	if workErr == nil {
		lightErr := r.Light.Off()
		if err := w.rcd.Finish(results.Completed, "", nil, r.Trusted()); err != nil || lightErr != nil {
			workErr = errors.Join(lightErr, err)
		} else {
			_ = r.m.to(Completed)
			out.State = Completed
			r.Log.Infof("run %s completed: %d sites, %d defects", out.RunID, out.Done, out.Defects)
			return out
		}
	}

	_ = r.m.to(Stopping)
	state, reason := classify(ctx, workErr)
	out.Err = workErr
	out.Reason = reason
	r.Log.Warnf("run %s stopping: %s: %v", out.RunID, reason, workErr)

	// The safe stop runs to completion even though ctx is cancelled.
	sctx := context.WithoutCancel(ctx)
	stopErr := r.safeStop(sctx)
	if stopErr != nil {
		r.Log.Errorf("run %s: safe stop: %v", out.RunID, stopErr)
	}
	var rstate results.State
	switch state {
	case Canceled:
		rstate = results.Canceled
	case Aborted:
		rstate = results.Aborted
	default:
		rstate = results.Failed
	}
	if err := w.rcd.Finish(rstate, reason, errors.Join(workErr, stopErr), r.Trusted()); err != nil {
		r.Log.Errorf("run %s: record: %v", out.RunID, err)
		stopErr = errors.Join(stopErr, err)
	}
	if state == Canceled && stopErr != nil {
		// A stop that did not complete cleanly is not a plain cancel.
		state = Aborted
	}
	_ = r.m.to(state)
	out.State = state
	r.Log.Warnf("run %s %s after %d/%d sites: %s", out.RunID, state, out.Done, out.Total, reason)
	return out
}

// classify maps why the work ended to an outcome and a reason string.
func classify(ctx context.Context, err error) (State, string) {
	if c, ok := stop.As(err); ok || ctx.Err() != nil {
		if !ok {
			c, ok = stop.FromContext(ctx)
		}
		if ok {
			reason := c.Reason.String()
			if c.Detail != "" {
				reason += ": " + c.Detail
			}
			if c.Reason.Immediate() {
				return Aborted, reason
			}
			return Canceled, reason
		}
		return Canceled, "operator: " + context.Cause(ctx).Error()
	}
	var de *deviceError
	if errors.As(err, &de) {
		return Aborted, "fault: " + de.Error()
	}
	return Failed, "error: " + err.Error()
}

// safeStop brings the machine to rest: stage held and reset, light off.
// Every step runs even if an earlier one failed.
func (r *Runner) safeStop(ctx context.Context) error {
	holdTO := r.Config.HoldTimeout
	if holdTO <= 0 {
		holdTO = 5 * time.Second
	}
	resetTO := r.Config.ResetTimeout
	if resetTO <= 0 {
		resetTO = 3 * time.Second
	}
	// Light first: it is instant and the most likely to harm a wafer.
	lightErr := r.Light.Off()

	hctx, cancel := context.WithTimeout(ctx, holdTO)
	holdErr := r.Stage.Hold(hctx)
	cancel()
	if holdErr != nil {
		// Could not confirm the stage is at rest: the reset may lose steps.
		r.setTrusted(false)
	}
	rctx, cancel := context.WithTimeout(ctx, resetTO)
	resetErr := r.Stage.Reset(rctx)
	if resetErr == nil {
		// An alarm that survives the reset (limit hit, reset while
		// moving) means the position is lost.
		if st, err := r.Stage.Status(rctx); err != nil || st.State == motion.StateAlarm {
			r.setTrusted(false)
		}
	}
	cancel()
	if resetErr != nil {
		r.setTrusted(false)
	}
	if holdErr != nil {
		holdErr = fmt.Errorf("stage hold: %w", holdErr)
	}
	if resetErr != nil {
		resetErr = fmt.Errorf("stage reset: %w", resetErr)
	}
	if lightErr != nil {
		lightErr = fmt.Errorf("light off: %w", lightErr)
	}
	return errors.Join(lightErr, holdErr, resetErr)
}

// work is one run in progress.
type work struct {
	r      *Runner
	rec    *recipe.Recipe
	rcd    *results.Recorder
	start  time.Time
	out    Outcome
	golden *camera.Frame
	dets   []analysis.Defect
}

func (w *work) do(ctx context.Context) error {
	defer func() {
		if w.golden != nil {
			w.golden.Release()
			w.golden = nil
		}
	}()
	if err := w.ensureHomed(ctx); err != nil {
		return err
	}
	r, rec := w.r, w.rec
	r.detector = analysis.Detector{Threshold: rec.Threshold, MinArea: rec.MinArea}

	// Golden die first: every site is compared against it.
	golden, err := w.expose(ctx, rec.Reference)
	if err != nil {
		return fmt.Errorf("reference die %v: %w", rec.Reference.Die, err)
	}
	w.golden = golden

	for _, s := range rec.Sites {
		if err := ctx.Err(); err != nil {
			return context.Cause(ctx)
		}
		if err := w.site(ctx, s); err != nil {
			return fmt.Errorf("site %d die %v: %w", s.Index+1, s.Die, err)
		}
	}
	return nil
}

// ensureHomed homes the stage unless its position is already trusted.
func (w *work) ensureHomed(ctx context.Context) error {
	r := w.r
	st, err := r.Stage.Status(ctx)
	if err != nil {
		return device("stage", err)
	}
	if st.State == motion.StateAlarm {
		r.setTrusted(false)
	}
	if r.Trusted() {
		return nil
	}
	r.Log.Infof("homing the stage (position not trusted)")
	if err := r.Stage.Home(ctx); err != nil {
		return device("stage", fmt.Errorf("homing: %w", err))
	}
	r.setTrusted(true)
	return nil
}

// expose moves to site s, settles, and captures one lit frame.
func (w *work) expose(ctx context.Context, s recipe.Site) (*camera.Frame, error) {
	r, rec := w.r, w.rec
	if err := r.Stage.MoveTo(ctx, s.At, rec.Feed); err != nil {
		return nil, device("stage", err)
	}
	if err := sleep(ctx, rec.Settle); err != nil {
		return nil, err
	}
	if err := r.Light.On(rec.LightLevel); err != nil {
		return nil, device("light", err)
	}
	// The light goes off the moment the run is cancelled, and always after
	// the capture.
	stopLight := context.AfterFunc(ctx, func() { _ = r.Light.Off() })
	f, capErr := r.Camera.Capture(ctx, rec.Exposure)
	stopLight()
	offErr := r.Light.Off()
	if capErr != nil {
		if ctx.Err() != nil {
			return nil, context.Cause(ctx)
		}
		return nil, device("camera", errors.Join(capErr, offErr))
	}
	if offErr != nil {
		f.Release()
		return nil, device("light", offErr)
	}
	return f, nil
}

// site inspects one site and records it.
func (w *work) site(ctx context.Context, s recipe.Site) error {
	r := w.r
	f, err := w.expose(ctx, s)
	if err != nil {
		return err
	}
	defer f.Release()
	w.dets, err = r.detector.Detect(ctx, f, w.golden, w.dets[:0])
	if err != nil {
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		return err
	}
	info := r.Camera.Info()
	defects := make([]results.Defect, len(w.dets))
	for i, d := range w.dets {
		at := info.ToMachine(s.At, d.X, d.Y)
		defects[i] = results.Defect{
			XMM: at.X.Millimetres(), YMM: at.Y.Millimetres(),
			Box:    [4]int{d.Box.Min.X, d.Box.Min.Y, d.Box.Max.X, d.Box.Max.Y},
			AreaPx: d.Area, AreaUM2: float64(d.Area) * info.PixelSize * info.PixelSize,
			Peak: d.Peak,
		}
	}
	// A site that was analysed is saved even if a stop arrives now: the
	// save is short and losing finished work is worse.
	if err := w.rcd.SaveSite(s.Index, defects, f.Gray()); err != nil {
		return err
	}
	w.out.Done++
	w.out.Defects += len(defects)
	if r.Progress != nil {
		el := time.Since(w.start)
		eta := time.Duration(0)
		if w.out.Done > 0 {
			eta = el / time.Duration(w.out.Done) * time.Duration(w.out.Total-w.out.Done)
		}
		r.Progress(Progress{RunID: w.out.RunID, Done: w.out.Done, Total: w.out.Total, Defects: w.out.Defects, Site: s, Elapsed: el, ETA: eta})
	}
	return nil
}

// sleep waits d or until ctx is cancelled.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}
