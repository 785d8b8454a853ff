package daemon

import (
	"context"
	"fmt"
	"time"

	"github.com/waferd/waferd/control"
	"github.com/waferd/waferd/inspection"
	"github.com/waferd/waferd/inspection/recipe"
	"github.com/waferd/waferd/inspection/results"
	"github.com/waferd/waferd/machine"
)

// StartRun starts rec in the background and returns at once. The run
// holds the machine's claim from here on: a Stop right after StartRun
// stops it. It refuses while another operation holds the machine or the
// machine is latched (errors wrapping machine.ErrBusy, machine.ErrLatched,
// machine.ErrClosed). The run's context is not ctx's: a console command
// ending does not stop the run it started.
func (d *Daemon) StartRun(ctx context.Context, rec *recipe.Recipe) error {
	c, err := d.beginRun(context.WithoutCancel(ctx), rec)
	if err != nil {
		return err
	}
	done := make(chan struct{})
	d.mu.Lock()
	d.runDone = done
	d.mu.Unlock()
	go func() {
		defer close(done)
		d.runClaimed(c, rec)
	}()
	return nil
}

// Run runs rec to its end in the caller's goroutine and returns its result
// (`waferd run`). Cancelling ctx stops the run through the machine's stop
// path (with ctx's *stop.Cause, if it has one). Errors are as StartRun's,
// or the run's own if it could not start (then nothing was recorded).
func (d *Daemon) Run(ctx context.Context, rec *recipe.Recipe) (inspection.Result, error) {
	c, err := d.beginRun(ctx, rec)
	if err != nil {
		return inspection.Result{}, err
	}
	return d.runClaimed(c, rec)
}

// beginRun claims the machine for rec (ctx ending stops the run) and
// announces the run.
func (d *Daemon) beginRun(ctx context.Context, rec *recipe.Recipe) (*machine.Claim, error) {
	c, err := d.Machine.Claim(ctx, "run "+rec.Name)
	if err != nil {
		return nil, err
	}
	if !d.opts.Config.Stage.Homing && !c.Trusted() {
		c.Release()
		return nil, fmt.Errorf("daemon: run refused: %w (%s)", ErrNotHomed, d.trustHint())
	}
	if f := d.opts.Devices.SetRecipe; f != nil {
		if err := f(rec); err != nil {
			c.Release()
			return nil, fmt.Errorf("daemon: %w", err)
		}
	}
	d.switchConsoleLightOff("run start")
	d.mu.Lock()
	d.run = &control.RunInfo{Recipe: rec.Name, Sites: len(rec.Sites), Started: time.Now()}
	d.mu.Unlock()
	d.runHB.Resume()
	d.runHB.Beat()
	return c, nil
}

// onStarted is the runner's Started callback: the run's record exists.
func (d *Daemon) onStarted(run results.Run) {
	d.bus.publish(control.Event{Kind: control.RunStarted, RunID: run.ID, Recipe: run.Recipe, Sites: run.SitesTotal})
}

// runClaimed runs rec under c, announces how it ended and releases c.
func (d *Daemon) runClaimed(c *machine.Claim, rec *recipe.Recipe) (inspection.Result, error) {
	res, err := d.runner.Run(c, rec)
	c.Release()
	d.runHB.Pause()
	d.mu.Lock()
	d.run = nil
	if err == nil {
		d.last = res
	}
	d.mu.Unlock()
	if err != nil {
		d.log.Errorf("run %q: %v", rec.Name, err)
	} else {
		d.log.Noticef("run %s %s (%s)", res.RunID, res.Outcome, res.Reason)
	}
	d.bus.publish(control.Event{Kind: control.RunEnded, Recipe: rec.Name, Sites: len(rec.Sites), Result: res, Err: err})
	return res, err
}

// onProgress is the runner's progress callback.
func (d *Daemon) onProgress(p inspection.Progress) {
	d.mu.Lock()
	if d.run != nil {
		d.run.Progress = p
	}
	d.mu.Unlock()
	if d.opts.Progress != nil {
		d.opts.Progress(p)
	}
	d.bus.publish(control.Event{Kind: control.RunProgress, Progress: p})
}

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

// WaitRun blocks until no background run is in progress (and its end has
// been announced), or ctx ends.
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

// Last returns the result of the last run that ended since start-up.
func (d *Daemon) Last() inspection.Result {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.last
}
