package daemon

import (
	"context"
	"errors"
	"fmt"

	"github.com/waferd/waferd/config"
	"github.com/waferd/waferd/machine"
	"github.com/waferd/waferd/motion"
)

// Errors of manual operations that callers test. They are wrapped in
// messages that carry the package prefix: "daemon: move refused: position
// not trusted (home the stage first)". A refused claim wraps
// machine.ErrBusy, machine.ErrLatched or machine.ErrClosed instead.
var (
	// ErrNotHomed: a move needs a trusted position.
	ErrNotHomed = errors.New("position not trusted")
	// ErrOutsideTravel: a target outside the stage travel.
	ErrOutsideTravel = errors.New("outside the stage travel")
)

// OperationError says how an operation that held the machine ended other
// than completed: stopped (Canceled, Aborted) or failed. It unwraps to the
// operation's error (with the safe stop's, if that failed too).
type OperationError struct {
	What   string // "home", "move", ...
	Ending machine.Ending
}

func (e *OperationError) Error() string {
	var s string
	if e.Ending.Stopped() {
		s = fmt.Sprintf("daemon: %s stopped: %s", e.What, e.Ending.Why)
	} else {
		s = fmt.Sprintf("daemon: %s failed: %s", e.What, e.Ending.Why)
	}
	if e.Ending.After.Latched() {
		s += fmt.Sprintf("; machine %s: reset clears it", e.Ending.After)
	}
	return s
}

func (e *OperationError) Unwrap() error { return e.Ending.Err }

// operate runs op while holding the machine's claim for what. op returns
// nil, a refusal (an error that touched no hardware: returned as is), or
// a device's error marked with machine.Fault. A device error, or a stop
// (op's context cancelled, whatever op returned), ends the claim through
// the machine's one safe stop, and operate returns an *OperationError
// saying how it ended. It blocks until op and any safe stop are done.
func (d *Daemon) operate(ctx context.Context, what string, op func(c *machine.Claim) error) error {
	c, err := d.Machine.Claim(ctx, what)
	if err != nil {
		return err
	}
	defer c.Release()
	err = op(c)
	var fe *machine.FaultError
	if c.Context().Err() == nil && (err == nil || !errors.As(err, &fe)) {
		return err // done, or refused before anything moved
	}
	// Stopped (even if op finished what it could), or a device's fault.
	return &OperationError{What: what, Ending: c.End(err)}
}

// ErrNoHoming: the stage has no homing switches ([stage] homing = false).
var ErrNoHoming = errors.New("the stage has no homing switches (stage.homing = false)")

// Home runs the stage's homing cycle. It blocks until homing ends; Stop
// aborts it (GRBL: soft reset, position untrusted). A stage without
// homing switches refuses (ErrNoHoming): its origin is set (SetOrigin).
func (d *Daemon) Home(ctx context.Context) error {
	if !d.opts.Config.Stage.Homing {
		return fmt.Errorf("daemon: home refused: %w: jog to the mark and set its position with origin X Y", ErrNoHoming)
	}
	return d.operate(ctx, "home", func(c *machine.Claim) error {
		c.PositionLost()
		if err := d.opts.Devices.Stage.Home(c.Context()); err != nil {
			return machine.Fault("stage", err)
		}
		c.Homed()
		d.log.Noticef("stage homed from a console")
		return nil
	})
}

// MoveTo moves the stage to p (machine coordinates) at the manual feed. It
// refuses a target outside the travel, an untrusted position and a busy or
// latched machine. It blocks until the stage is at p. Stop halts it at
// once and the machine's safe stop brings it to rest, as for a run.
func (d *Daemon) MoveTo(ctx context.Context, p motion.Point) error {
	return d.move(ctx, "move", func(motion.Point) motion.Point { return p })
}

// Jog moves the stage by delta from where it is, like MoveTo.
func (d *Daemon) Jog(ctx context.Context, delta motion.Point) error {
	return d.move(ctx, "jog", func(at motion.Point) motion.Point { return at.Add(delta) })
}

func (d *Daemon) move(ctx context.Context, what string, target func(motion.Point) motion.Point) error {
	travel := d.opts.Devices.Limits.Travel
	return d.operate(ctx, what, func(c *machine.Claim) error {
		if !c.Trusted() {
			return fmt.Errorf("daemon: %s refused: %w (%s)", what, ErrNotHomed, d.trustHint())
		}
		st, err := d.stageStatus(c.Context())
		if err != nil {
			return machine.Fault("stage", err)
		}
		if st.State == motion.StateAlarm {
			c.PositionLost()
			return fmt.Errorf("daemon: %s refused: %w: the stage is in alarm (%s)", what, ErrNotHomed, d.trustHint())
		}
		at := st.XY()
		p := target(at)
		if reach := d.opts.Devices.Reach; reach != nil && p != at && reach(p) == reach(at) {
			return fmt.Errorf("daemon: %s to %v refused: it is less than one step of the controller from where the stage is (%v): the stage would not move", what, p, at)
		}
		if travel != (motion.Rect{}) && !travel.Contains(p) {
			return fmt.Errorf("daemon: %s to %v refused: %w (X %s..%s, Y %s..%s mm)", what, p, ErrOutsideTravel,
				motion.FormatMM(travel.Min.X), motion.FormatMM(travel.Max.X), motion.FormatMM(travel.Min.Y), motion.FormatMM(travel.Max.Y))
		}
		return machine.Fault("stage", d.opts.Devices.Stage.MoveTo(c.Context(), p, d.manualFeed()))
	})
}

// trustHint says how the position becomes trusted: homing, or the origin.
func (d *Daemon) trustHint() string {
	if d.opts.Config.Stage.Homing {
		return "home the stage first"
	}
	return "this stage has no homing: jog to the mark and set the origin first (origin X Y)"
}

// SetOrigin declares that the stage, standing still, is at p (machine
// coordinates), for a stage without homing switches ([stage] homing =
// false): from then on the position is trusted, and moves and runs go
// where they are told. A wrong p drives the stage off by as much, into its
// ends: the console asks for a confirmation. It holds the machine's claim
// for the declaration and refuses a stage that homes (ErrNoHoming's
// converse: the error wraps motion.ErrHomes) and a target outside the
// travel.
func (d *Daemon) SetOrigin(ctx context.Context, p motion.Point) error {
	if d.opts.Config.Stage.Homing {
		return fmt.Errorf("daemon: origin refused: %w: the stage homes (stage.homing = true): use home", motion.ErrHomes)
	}
	travel := d.opts.Devices.Limits.Travel
	if travel != (motion.Rect{}) && !travel.Contains(p) {
		return fmt.Errorf("daemon: origin %v refused: %w (X %s..%s, Y %s..%s mm)", p, ErrOutsideTravel,
			motion.FormatMM(travel.Min.X), motion.FormatMM(travel.Max.X), motion.FormatMM(travel.Min.Y), motion.FormatMM(travel.Max.Y))
	}
	return d.operate(ctx, "origin", func(c *machine.Claim) error {
		err := d.opts.Devices.Stage.SetOrigin(c.Context(), p)
		switch {
		case errors.Is(err, motion.ErrLinkLost) || errors.Is(err, motion.ErrTimeout):
			return machine.Fault("stage", err)
		case err != nil:
			return fmt.Errorf("daemon: origin refused: %w", err)
		}
		c.Homed()
		d.log.Warnf("origin set from a console: the stage is at %v from now on; position trusted", p)
		return nil
	})
}

// manualFeed is the feed of console moves, mm/min.
func (d *Daemon) manualFeed() motion.Speed {
	if f := d.opts.Devices.Limits.MaxFeed; f > 0 {
		return f
	}
	return 3000
}

// stageStatus asks the stage for a report, within the reply timeout.
func (d *Daemon) stageStatus(ctx context.Context) (motion.Status, error) {
	sctx, cancel := context.WithTimeout(ctx, config.MS(d.opts.Config.Stage.ReplyTimeoutMS))
	defer cancel()
	st, err := d.opts.Devices.Stage.Status(sctx)
	if err != nil {
		return st, fmt.Errorf("daemon: stage: %w", err)
	}
	return st, nil
}

// Reset clears a latched Faulted or EStop machine (machine.Machine.Reset).
// On an idle machine it soft-resets the stage controller if the controller
// is in a state in which a run would refuse to start and a reset clears:
// held, stopped by its door, in check mode or asleep (see
// motion.Status.Ready; resetStage). Otherwise it does nothing. It blocks
// for the stage reset.
func (d *Daemon) Reset(ctx context.Context) error {
	if d.Machine.State().Latched() {
		return d.Machine.Reset(ctx)
	}
	return d.resetStage(ctx)
}

// resetStage soft-resets a stage controller that would not move (see
// motion.Status.Ready) on an idle machine, holding the machine's claim:
// Stop ends it, and runs and other operations are refused meanwhile. A
// stage that is ready is left alone, and one still moving too (a reset
// would stop it dead and lose the position: an error wrapping
// motion.ErrNotReady). After a reset the position is untrusted: the next
// move homes first. It returns an error wrapping motion.ErrNotReady if the
// controller is still not ready after the reset (a safety door still
// open). It blocks for the reset, at most the reset timeout.
func (d *Daemon) resetStage(ctx context.Context) error {
	return d.operate(ctx, "reset", func(c *machine.Claim) error {
		st, err := d.stageStatus(c.Context())
		if err != nil {
			return machine.Fault("stage", err)
		}
		switch {
		case st.Ready() == nil:
			return nil
		case !st.Stopped():
			return fmt.Errorf("daemon: reset refused: %w: the controller reports %s: wait for the stage to stop", motion.ErrNotReady, st.StateName())
		}
		was := st.StateName()
		rctx, cancel := context.WithTimeout(c.Context(), config.MS(d.opts.Config.Runner.ResetTimeoutMS))
		defer cancel()
		c.PositionLost()
		if err := d.opts.Devices.Stage.Reset(rctx); err != nil && !errors.Is(err, motion.ErrAlarm) {
			return machine.Fault("stage", err)
		}
		d.log.Noticef("stage controller reset from a console (it was %s)", was)
		if st, err = d.stageStatus(c.Context()); err != nil {
			return machine.Fault("stage", err)
		}
		if err := st.Ready(); err != nil {
			return fmt.Errorf("daemon: stage reset, but: %w", err)
		}
		return nil
	})
}
