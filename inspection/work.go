package inspection

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/waferd/waferd/camera"
	"github.com/waferd/waferd/inspection/analysis"
	"github.com/waferd/waferd/inspection/recipe"
	"github.com/waferd/waferd/inspection/results"
	"github.com/waferd/waferd/machine"
	"github.com/waferd/waferd/motion"
)

// work is one run in progress. Run's goroutine owns it; while the sites are
// pipelined, the acquisition stage (expose, at, first) and the processing
// stage (process: dets, defects, res) each own their fields, and Run reads
// res only after both stages have ended.
type work struct {
	r       *Runner
	c       *machine.Claim
	rec     *recipe.Recipe
	rcd     *results.Recorder
	start   time.Time // when the run began
	first   time.Time // when the first site began (for the ETA), zero before
	res     Result
	golden  *camera.Frame
	dets    []analysis.Defect // reused by every site's analysis
	defects []results.Defect  // reused by every site's record
	at      motion.Point      // last move target, if moved
	moved   bool
	stage   *motion.Status // the stage's status as the run started, if Run got it

	// The work's context, cancelled by a stop (through the claim's
	// context), by an error in either pipeline stage, or by an overrun
	// step (deadline).
	cancel   context.CancelCauseFunc
	deadline *stepDeadline // the acquisition stage's move and capture budgets
	settle   *time.Timer   // the acquisition stage's settle wait
}

func (w *work) do(parent context.Context) error {
	ctx, cancel := context.WithCancelCause(parent)
	defer cancel(nil)
	w.cancel = cancel
	w.deadline = newStepDeadline(cancel)
	defer w.deadline.stop()
	w.settle = time.NewTimer(time.Hour)
	w.settle.Stop()
	// The light goes off the moment the work is cancelled, whatever step
	// it is in; expose turns it off after every capture too.
	r := w.r
	defer context.AfterFunc(ctx, func() { _ = r.Light.Off() })()
	defer func() {
		if w.golden != nil {
			r.detector.Prepare(nil) // the frame goes back to its pool
			w.golden.Release()
			w.golden = nil
		}
	}()
	if err := w.ensureHomed(ctx); err != nil {
		return err
	}
	rec := w.rec
	// The detector's scratch buffers are kept from run to run.
	r.detector.Threshold, r.detector.MinArea = rec.Threshold, rec.MinArea

	// Golden die first: every site is compared against it.
	golden, err := w.expose(ctx, rec.Reference)
	if err != nil {
		return fmt.Errorf("reference die %s: %w", recipe.DieName(rec.Reference.Die), err)
	}
	w.golden = golden
	r.detector.Prepare(golden)

	if r.Config.Serial {
		for _, s := range rec.Sites {
			f, err := w.expose(ctx, s)
			if err != nil {
				return fmt.Errorf("site %d die %s: %w", s.Index+1, recipe.DieName(s.Die), err)
			}
			if err := w.process(ctx, s, f); err != nil {
				return fmt.Errorf("site %d die %s: %w", s.Index+1, recipe.DieName(s.Die), err)
			}
			if ctx.Err() != nil {
				return context.Cause(ctx)
			}
		}
		return nil
	}
	return w.pipeline(ctx)
}

// captured is a site's frame on its way from acquisition to processing.
type captured struct {
	site  recipe.Site
	frame *camera.Frame
}

// pipeline runs the sites in two stages: this goroutine moves, settles and
// captures (the stage and light's critical path) while a second one analyses
// and saves the previous site. One frame may wait between them, so the stage
// is never held up by analysis unless analysing a site takes longer than
// reaching and exposing the next.
//
// Both stages run under one context: a stop, or an error in either stage,
// cancels both at once. A site whose analysis finished is always saved; a
// captured frame not yet analysed is dropped (the site stays pending).
func (w *work) pipeline(pctx context.Context) error {
	cancel := w.cancel
	frames := make(chan captured, 1)
	var procErr error
	procDone := make(chan struct{})
	go func() {
		defer close(procDone)
		for c := range frames {
			if procErr != nil {
				c.frame.Release() // draining after a failure or stop
				continue
			}
			if err := w.process(pctx, c.site, c.frame); err != nil {
				procErr = fmt.Errorf("site %d die %s: %w", c.site.Index+1, recipe.DieName(c.site.Die), err)
				cancel(procErr)
			}
		}
	}()

	var acqErr error
	for _, s := range w.rec.Sites {
		f, err := w.expose(pctx, s)
		if err != nil {
			acqErr = fmt.Errorf("site %d die %s: %w", s.Index+1, recipe.DieName(s.Die), err)
			cancel(acqErr)
			break
		}
		select {
		case frames <- captured{s, f}:
			continue
		case <-pctx.Done():
			f.Release()
		}
		break
	}
	close(frames)
	<-procDone

	// The stage that failed first is the cause; the other stage's error,
	// if any, is its consequence.
	switch first := context.Cause(pctx); {
	case pctx.Err() == nil:
		return nil
	case first == acqErr || first == procErr:
		return first
	case acqErr != nil:
		return acqErr // stopped from outside, seen by acquisition
	case procErr != nil:
		return procErr
	default:
		return first
	}
}

// ensureHomed homes the stage unless its position is already trusted.
func (w *work) ensureHomed(ctx context.Context) error {
	r := w.r
	var st motion.Status
	if w.stage != nil {
		st = *w.stage // asked by Run, to refuse a stage that would not move
	} else {
		var err error
		if st, err = r.Stage.Status(ctx); err != nil {
			return device(ctx, "stage", err)
		}
	}
	if st.State == motion.StateAlarm {
		w.c.PositionLost()
	}
	if w.c.Trusted() {
		return nil
	}
	if r.Config.NoHoming {
		return errors.New("position not trusted, and the stage has no homing switches: set the origin first")
	}
	r.step(StepHoming, -1)
	if err := ctx.Err(); err != nil {
		return context.Cause(ctx)
	}
	r.log().Infof("homing the stage (position not trusted)")
	if err := r.Stage.Home(ctx); err != nil {
		return device(ctx, "stage", fmt.Errorf("homing: %w", err))
	}
	w.c.Homed()
	return nil
}

// expose moves to site s, settles, and captures one lit frame.
func (w *work) expose(ctx context.Context, s recipe.Site) (*camera.Frame, error) {
	r, rec := w.r, w.rec
	if w.first.IsZero() && s.Index >= 0 {
		w.first = time.Now()
	}
	r.step(StepMove, s.Index)
	// A move that takes far longer than its distance needs is a stage
	// that stopped executing (left in a hold, or lost): a fault, not a
	// wait without end.
	w.deadline.move(s.At, w.moveBudget(s.At))
	err := r.Stage.MoveTo(ctx, s.At, rec.Feed)
	w.deadline.stop()
	if err != nil {
		return nil, device(ctx, "stage", err)
	}
	w.at, w.moved = s.At, true
	r.step(StepSettle, s.Index)
	if err := w.sleep(ctx, rec.Settle); err != nil {
		return nil, err
	}
	r.step(StepLightOn, s.Index)
	if err := ctx.Err(); err != nil {
		return nil, context.Cause(ctx)
	}
	if err := r.Light.On(rec.LightLevel); err != nil {
		return nil, device(ctx, "light", err)
	}
	if err := ctx.Err(); err != nil {
		// Cancelled while the light came on: do's light-off hook may
		// have run before On.
		if offErr := r.Light.Off(); offErr != nil {
			return nil, errors.Join(context.Cause(ctx), fmt.Errorf("light: %w", offErr))
		}
		return nil, context.Cause(ctx)
	}
	r.step(StepCapture, s.Index)
	to := r.Config.CaptureTimeout
	if to <= 0 {
		to = 2 * time.Second
	}
	w.deadline.capture(to, rec.Exposure)
	f, capErr := r.Camera.Capture(ctx, rec.Exposure)
	w.deadline.stop()
	offErr := r.Light.Off()
	if capErr != nil {
		return nil, device(ctx, "camera", errors.Join(capErr, offErr))
	}
	if offErr != nil {
		f.Release()
		return nil, device(ctx, "light", offErr)
	}
	return f, nil
}

// moveBudget is the longest a move to p may take: twice its time at the
// recipe's feed (from the last target, or across the whole stage before
// the first move) plus 5 s for acceleration and settling of the driver's
// polls.
func (w *work) moveBudget(p motion.Point) time.Duration {
	dist := 500.0 // mm: more than any stage diagonal we drive
	if w.moved {
		dist = math.Hypot(float64(p.X-w.at.X), float64(p.Y-w.at.Y)) / 1000
	}
	perMM := time.Minute / time.Duration(max(float64(w.rec.Feed), 1))
	return 2*time.Duration(dist)*perMM + 5*time.Second
}

// process analyses a captured frame of site s and records the site. It
// takes ownership of f. A stop during the analysis abandons the site; a
// site that was analysed is saved even if a stop arrives meanwhile (the save
// is short and losing finished work is worse).
func (w *work) process(ctx context.Context, s recipe.Site, f *camera.Frame) error {
	defer f.Release()
	r := w.r
	r.step(StepAnalyse, s.Index)
	var err error
	w.dets, err = r.detector.Detect(ctx, f, w.golden, w.dets[:0])
	if err != nil {
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		return err
	}
	info := r.Camera.Info()
	defects := w.defects[:0]
	for _, d := range w.dets {
		at := info.ToMachine(s.At, d.X, d.Y)
		defects = append(defects, results.Defect{
			XMM: at.X.Millimetres(), YMM: at.Y.Millimetres(),
			Box:    [4]int{d.Box.Min.X, d.Box.Min.Y, d.Box.Max.X, d.Box.Max.Y},
			AreaPx: d.Area, AreaUM2: float64(d.Area) * info.PixelSize * info.PixelSize,
			Peak: d.Peak,
		})
	}
	w.defects = defects
	r.step(StepSave, s.Index)
	if err := w.rcd.SaveSite(s.Index, defects, f.Gray()); err != nil {
		return err
	}
	w.res.Done++
	w.res.Defects += len(defects)
	if r.Progress != nil {
		// The ETA counts sites only: homing and the reference die are
		// behind us and would inflate it.
		el := time.Since(w.first)
		eta := el / time.Duration(w.res.Done) * time.Duration(w.res.Total-w.res.Done)
		r.Progress(Progress{RunID: w.res.RunID, Done: w.res.Done, Total: w.res.Total, Defects: w.res.Defects, Site: s, SiteDefects: len(defects), Elapsed: el, ETA: eta})
	}
	r.step(StepNextSite, s.Index)
	return nil
}

// stepDeadline bounds one step of the acquisition stage (a move, a
// capture) without a context of its own: when the step overruns its budget
// it cancels the work with the step's timeout as a machine.FaultError,
// which aborts the run with reason fault. One timer serves every step of a run.
// move, capture and stop are called by the acquisition stage only; the
// timer's function runs on its own goroutine.
type stepDeadline struct {
	t      *time.Timer
	cancel context.CancelCauseFunc

	mu        sync.Mutex
	armed     bool
	due       time.Time
	isCapture bool          // the step is a capture (else a move)
	at        motion.Point  // move target
	budget    time.Duration // move budget, or capture timeout
	exposure  time.Duration // capture exposure
}

func newStepDeadline(cancel context.CancelCauseFunc) *stepDeadline {
	d := &stepDeadline{cancel: cancel}
	d.t = time.AfterFunc(time.Hour, d.expire)
	d.t.Stop()
	return d
}

// move arms the deadline for a move to at taking at most budget.
func (d *stepDeadline) move(at motion.Point, budget time.Duration) {
	d.arm(false, at, budget, 0)
}

// capture arms the deadline for a capture of exposure whose frame must
// come within timeout after it.
func (d *stepDeadline) capture(timeout, exposure time.Duration) {
	d.arm(true, motion.Point{}, timeout, exposure)
}

func (d *stepDeadline) arm(capture bool, at motion.Point, budget, exposure time.Duration) {
	total := budget + exposure
	d.mu.Lock()
	d.armed, d.due = true, time.Now().Add(total)
	d.isCapture, d.at, d.budget, d.exposure = capture, at, budget, exposure
	d.mu.Unlock()
	d.t.Reset(total)
}

// stop disarms the deadline: the step ended in time (or failed otherwise).
func (d *stepDeadline) stop() {
	d.t.Stop()
	d.mu.Lock()
	d.armed = false
	d.mu.Unlock()
}

// expire is the timer's function. A run of it that was overtaken by stop
// and a new arm (it started before stop but took the lock after) finds the
// new step not yet due and does nothing.
func (d *stepDeadline) expire() {
	d.mu.Lock()
	if !d.armed || time.Now().Before(d.due) {
		d.mu.Unlock()
		return
	}
	d.armed = false
	var err error
	if d.isCapture {
		err = machine.Fault("camera", &captureTimeout{d.budget, d.exposure})
	} else {
		err = machine.Fault("stage", &moveTimeout{d.at, d.budget})
	}
	d.mu.Unlock()
	d.cancel(err)
}

// moveTimeout is why a move that overran its budget was abandoned.
type moveTimeout struct {
	at     motion.Point
	budget time.Duration
}

func (e *moveTimeout) Error() string {
	return fmt.Sprintf("move to %v not finished within %v: %v", e.at, e.budget, motion.ErrTimeout)
}
func (e *moveTimeout) Unwrap() error { return motion.ErrTimeout }

// captureTimeout is why a capture whose frame did not come was abandoned.
type captureTimeout struct{ timeout, exposure time.Duration }

func (e *captureTimeout) Error() string {
	return fmt.Sprintf("no frame within %v of a %v exposure", e.timeout, e.exposure)
}

// sleep waits d or until ctx is cancelled, on the work's settle timer
// (acquisition stage only).
func (w *work) sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		return nil
	}
	w.settle.Reset(d)
	select {
	case <-w.settle.C:
		return nil
	case <-ctx.Done():
		w.settle.Stop()
		return context.Cause(ctx)
	}
}

// device marks err as a fault of dev, unless the run was stopped (then the
// error is the stop's doing, not the device's).
func device(ctx context.Context, dev string, err error) error {
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return errors.Join(context.Cause(ctx), err)
	}
	return machine.Fault(dev, err)
}
