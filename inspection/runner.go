// Package inspection runs inspection recipes: for each site move, settle,
// light, capture, analyse and save, then record an outcome that says why
// the run ended. It consumes the motion.Stage, camera.Camera and
// illumination.Lamp interfaces and never knows which implementation is
// behind them.
//
// A run holds the machine's claim (package machine), which its caller
// takes: it runs under the claim's context, which every stop cancels, and
// ends through the claim, whose End runs the machine's one safe stop.
// The runner runs sites; the machine decides what a stop does.
package inspection

import (
	"errors"
	"fmt"
	"time"

	"github.com/waferd/waferd/camera"
	"github.com/waferd/waferd/illumination"
	"github.com/waferd/waferd/inspection/analysis"
	"github.com/waferd/waferd/inspection/recipe"
	"github.com/waferd/waferd/inspection/results"
	"github.com/waferd/waferd/internal/logging"
	"github.com/waferd/waferd/machine"
	"github.com/waferd/waferd/motion"
)

// Progress is reported after every site.
type Progress struct {
	RunID   string
	Done    int // sites finished
	Total   int
	Defects int // found so far
	Site    recipe.Site
	// SiteDefects is how many defects this site has.
	SiteDefects int
	Elapsed     time.Duration // since the first site began (homing and the reference die excluded)
	ETA         time.Duration // estimated time remaining
}

// Result is how a run ended.
type Result struct {
	RunID   string
	Dir     string // run directory
	Outcome machine.Outcome
	Reason  string // e.g. "operator: SIGINT", "fault: stage: ..."; "" when completed
	Err     error  // the error that ended the run (and any safe-stop error); nil when completed
	Done    int
	Total   int
	Defects int
	// After is the machine state the run left behind: Idle, Faulted or
	// EStop.
	After machine.State
	// Recorded: run.json holds this outcome. When false (the disk failed
	// even the final write, which has space reserved), the record on disk
	// still says running and the next start marks the run interrupted.
	Recorded bool
	// MapWritten: wafermap.png shows this outcome.
	MapWritten bool
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
	StepWaferMap             // the outcome is persisted (run.json); before the wafer map is drawn
)

var stepNames = [...]string{"homing", "move", "settle", "light-on", "capture", "analyse", "save", "next-site", "wafer-map"}

func (s Step) String() string { return stepNames[s] }

// Config tunes the runner. Zero values take the defaults.
type Config struct {
	// CaptureTimeout bounds one capture beyond its exposure (default 2 s).
	CaptureTimeout time.Duration
	// Serial runs the sites strictly one after another instead of moving
	// to the next site while the last is analysed and saved. It exists
	// to measure what the pipeline gains and to rule it out when
	// debugging; production runs leave it false.
	Serial bool
	// NoHoming: the stage has no homing switches. A run on an untrusted
	// position then fails before it moves, instead of homing.
	NoHoming bool
}

// Runner runs recipes, one at a time (the machine's claim guarantees it).
type Runner struct {
	Stage  motion.Stage
	Light  illumination.Lamp
	Camera camera.Camera
	Store  *results.Store
	Log    *logging.Log
	// Progress, if set, is called after every saved site, in site order,
	// from the run's processing goroutine (never concurrently with
	// itself); it must return quickly: it holds up the next analysis.
	Progress func(Progress)
	// Started, if set, is called once the run's record exists (run.json
	// written), before anything moves, from Run's goroutine; it must
	// return quickly.
	Started func(results.Run)
	// OnStep, if set, is called at the start of every step of a run with
	// the site index (-1 for the reference die). It is instrumentation for
	// heartbeats, tests and tracing and must return quickly. Sites are
	// pipelined: the steps of acquisition (move, settle, light-on,
	// capture) and those of processing (analyse, save, next-site) come
	// from two goroutines and may interleave and run concurrently; within
	// each, order is kept.
	OnStep func(step Step, site int)
	Config Config

	detector analysis.Detector // scratch buffers kept from run to run
}

func (r *Runner) log() *logging.Log {
	if r.Log == nil {
		return logging.Discard()
	}
	return r.Log
}

// Run runs rec under claim c to its end and returns the result; c stays
// held (the caller releases it). A stop cancels the claim's context:
// motion is halted at once, the light switched off, and the claim's End
// runs the safe stop before Run records the outcome and returns.
//
// The returned error is non-nil only if the run could not be started, and
// then no record exists and nothing moved: the stage controller is in a
// state in which it would not move (held, door open, check mode, ...: an
// error wrapping motion.ErrNotReady, see motion.Status.Ready), or the
// record could not be created. A stop that came meanwhile is the claim's
// to apply on Release.
func (r *Runner) Run(c *machine.Claim, rec *recipe.Recipe) (Result, error) {
	ctx := c.Context()
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
			Reference: &results.ReferenceDie{Die: rec.Reference.Die, At: rec.Reference.At},
		},
	}
	if rec.Mark != "" {
		run.Geometry.Mark = &results.OrientationMark{Kind: results.MarkKind(rec.Mark), Direction: rec.MarkDirection}
	}
	for _, s := range rec.Sites {
		run.Sites = append(run.Sites, results.Site{
			Index: s.Index, Die: s.Die, XMM: s.At.X.Millimetres(), YMM: s.At.Y.Millimetres(), Status: results.SitePending,
		})
	}

	// A controller that would not move (held by a feed-hold button wired
	// to it, say) would take the first move and leave the run waiting for
	// it until the move's budget ran out, and then blame the stage's
	// silence: a run refuses to start instead, saying why. A query that
	// fails (a stop meanwhile cancels it) is left to the run, which stops
	// or faults on the stage.
	stage, stageErr := r.Stage.Status(ctx)
	if stageErr == nil {
		if err := stage.Ready(); err != nil {
			return Result{}, fmt.Errorf("inspection: cannot start %q: %w", rec.Name, err)
		}
	}
	rcd, err := r.Store.Create(run)
	if err != nil {
		return Result{}, fmt.Errorf("inspection: %w", err)
	}
	run = rcd.Run()
	log.Infof("run %s: recipe %q, %d sites", run.ID, rec.Name, len(rec.Sites))
	if r.Started != nil {
		r.Started(run)
	}

	w := &work{r: r, c: c, rec: rec, rcd: rcd, start: now, res: Result{RunID: run.ID, Dir: rcd.Dir(), Total: len(rec.Sites)}}
	if stageErr == nil {
		w.stage = &stage
	}
	workErr := w.do(ctx)
	if workErr == nil {
		// Every site is done; the light must be off (a fault if not).
		workErr = machine.Fault("light", r.Light.Off())
	}
	end := c.End(workErr)
	res := w.res
	res.Outcome, res.Reason, res.Err, res.After = end.Outcome, end.Why, end.Err, end.After

	rstate := map[machine.Outcome]results.State{
		machine.Completed: results.Completed, machine.Canceled: results.Canceled,
		machine.Failed: results.Failed, machine.Aborted: results.Aborted,
	}[res.Outcome]
	recErr, mapErr := r.record(w, rstate, res.Reason, res.Err, c.Trusted())
	res.Recorded, res.MapWritten = recErr == nil, recErr == nil && mapErr == nil
	switch {
	case recErr != nil:
		log.Errorf("run %s: the outcome (%s) could NOT be recorded: %v; run.json still says running, and the next start will mark the run interrupted", res.RunID, res.Outcome, recErr)
	case mapErr != nil:
		log.Errorf("run %s: wafer map: %v", res.RunID, mapErr)
	}
	if err := errors.Join(recErr, mapErr); err != nil {
		if res.Outcome == machine.Completed {
			res.Outcome, res.Reason = machine.Failed, "error: record: "+err.Error()
		}
		res.Err = errors.Join(res.Err, err)
	}
	switch {
	case res.Outcome == machine.Completed:
		log.Infof("run %s completed: %d sites, %d defects", res.RunID, res.Done, res.Defects)
	default:
		log.Warnf("run %s %s after %d/%d sites: %s", res.RunID, res.Outcome, res.Done, res.Total, res.Reason)
	}
	return res, nil
}

// record persists the outcome (run.json), then draws the wafer map (not
// if the outcome could not be persisted: the map shows the record).
func (r *Runner) record(w *work, state results.State, why string, runErr error, trusted bool) (recErr, mapErr error) {
	if recErr = w.rcd.FinishRecord(state, why, runErr, trusted); recErr != nil {
		return recErr, nil
	}
	r.step(StepWaferMap, -1)
	return nil, w.rcd.WriteMap()
}

func (r *Runner) step(s Step, site int) {
	if r.OnStep != nil {
		r.OnStep(s, site)
	}
}
