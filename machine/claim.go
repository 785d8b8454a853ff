package machine

import (
	"context"
	"errors"

	"github.com/waferd/waferd/stop"
)

// Claim is one operation's hold on the machine, from Machine.Claim to
// Release. The operation runs under Context, which Stop cancels; when it
// has ended (normally or not) it calls End with its error, which runs the
// safe stop if the operation was stopped or failed and says how it ended;
// Release then hands the machine back (Idle, or latched).
//
// A claim is used by one goroutine (the operation's), but for Context,
// which any goroutine of the operation may watch. Release may be deferred
// right after Claim: it calls End(nil) if the operation did not.
type Claim struct {
	m          *Machine
	what       string
	ctx        context.Context
	cancel     context.CancelCauseFunc
	stopParent func() bool
	hurry      chan struct{} // closed to abandon the controlled hold
	released   chan struct{} // closed by Release

	// Guarded by m.mu.
	reason   stop.Reason // strongest stop reason so far; None while not stopped
	first    *stop.Cause // the first stop's cause
	stopping bool        // End is running the safe stop
	done     bool        // End has decided the ending
	ending   Ending
	late     stop.Reason // strongest stop after done: applied at Release
	lateWhy  string
}

// Context is the operation's context: cancelled by Stop with a *stop.Cause
// (context.Cause), or when the context given to Machine.Claim ends. Every
// blocking device call of the operation takes it.
func (c *Claim) Context() context.Context { return c.ctx }

// What names the operation ("run demo", "home", ...).
func (c *Claim) What() string { return c.what }

// Trusted reports whether the stage position is known.
func (c *Claim) Trusted() bool { return c.m.Trusted() }

// Homed records that the operation homed the stage (or set its origin):
// the position is trusted from now on.
func (c *Claim) Homed() {
	c.m.mu.Lock()
	defer c.m.mu.Unlock()
	c.m.trusted = true
}

// PositionLost records that the operation lost the stage position (a
// homing cycle started, the controller reported an alarm).
func (c *Claim) PositionLost() { c.m.PositionLost() }

// stopLocked applies a stop to the operation in progress or to its safe
// stop. m.mu is held.
func (c *Claim) stopLocked(cause *stop.Cause) {
	m := c.m
	switch {
	case c.reason == stop.None:
		// Machine.stopLocked has halted the stage (unless the safe stop
		// already runs) before the operation is cancelled.
		c.reason, c.first = cause.Reason, cause
		c.cancel(cause)
		if cause.Reason.Immediate() {
			c.hurryLocked()
		}
		m.stats.begin()
		m.emitLocked(Event{Kind: StopRequested, State: m.state, Cause: cause, Text: c.what})
		what := c.what
		m.later(func() { m.log.Warnf("stop requested: %v (%s)", cause, what) })
	case cause.Reason > c.reason:
		from := c.reason
		m.later(func() { m.log.Warnf("stop escalated from %v to %v", from, cause) })
		c.reason = cause.Reason
		if cause.Reason.Immediate() {
			c.hurryLocked()
		}
		m.emitLocked(Event{Kind: StopEscalated, State: m.state, Cause: cause, Text: c.what})
	case cause.Reason == c.reason:
		// The same stop by another path (the console's stop also ends the
		// command it interrupted, whose context is the claim's parent).
		m.later(func() { m.log.Debugf("stop %v: already stopping for it", cause) })
	default:
		stronger := c.reason
		m.later(func() { m.log.Noticef("stop %v ignored: already stopping (%v, stronger)", cause, stronger) })
	}
}

// lateStopLocked keeps a stop that came after the operation ended (its
// outcome is decided) and before Release: an e-stop, fault or watchdog
// stop latches the machine on Release, as it would an idle one.
func (c *Claim) lateStopLocked(cause *stop.Cause) {
	if cause.Reason.Latches() && cause.Reason > c.late {
		c.late, c.lateWhy = cause.Reason, why(cause)
		return
	}
	m, what := c.m, c.what
	m.later(func() { m.log.Noticef("stop %v after %s ended: nothing to stop", cause, what) })
}

func (c *Claim) hurryLocked() {
	select {
	case <-c.hurry:
	default:
		close(c.hurry)
	}
}

// Ending says how an operation ended, and what the safe stop did.
type Ending struct {
	Outcome Outcome
	// Reason is the strongest stop reason (stop.None when the operation
	// completed or failed without a stop).
	Reason stop.Reason
	// Why is the outcome's explanation for records and people:
	// "operator: console ttyS0", "fault: stage: ...", "error: ...",
	// "estop (escalated from stopped: operator (SIGINT))"; "" when
	// completed.
	Why string
	// Err is the operation's error joined with the safe stop's; nil when
	// completed.
	Err error
	// Escalated: the safe stop could not complete cleanly (the hold
	// missed its deadline, the reset failed): the machine is Faulted and
	// the outcome Aborted, whatever the reason.
	Escalated bool
	// After is the state the machine is left in on Release: Idle,
	// Faulted or EStop.
	After State
}

// Stopped reports whether the operation was stopped (by Stop or by a
// fault) rather than completing or failing on its own.
func (e Ending) Stopped() bool { return e.Reason != stop.None }

// FaultError marks an error that came from a device during an operation:
// End turns it into Stop(fault), which aborts the operation and latches
// the machine Faulted. Make one with Fault.
type FaultError struct {
	Device string // "stage", "camera", "light"
	Err    error
}

func (e *FaultError) Error() string { return e.Device + ": " + e.Err.Error() }
func (e *FaultError) Unwrap() error { return e.Err }

// Fault marks err (nil stays nil) as a fault of device.
func Fault(device string, err error) error {
	if err == nil {
		return nil
	}
	return &FaultError{Device: device, Err: err}
}

// End ends the operation: err is its error (nil if it did all it was
// asked). If the operation was stopped, or err is not nil, End runs the
// safe stop (blocking until the machine is at rest, bounded by the hold
// and reset timeouts) and classifies the outcome:
//
//   - no stop, no error: Completed; nothing is done to the devices;
//   - a FaultError with no stop before it: Stop(fault), then as a stop;
//   - any other error with no stop: Failed (the safe stop still runs);
//   - a stop: Canceled for operator, host, button and shutdown, Aborted
//     for fault, watchdog, abort and e-stop; an escalated safe stop makes
//     it Aborted.
//
// The machine stays claimed (Running or Stopping) until Release, so that
// the operation can record its outcome first. End is idempotent: later
// calls return the first Ending.
func (c *Claim) End(err error) Ending {
	m := c.m
	m.mu.Lock()
	if c.done || c.stopping {
		e := c.ending
		m.unlock()
		return e
	}
	var fe *FaultError
	switch {
	case c.reason != stop.None:
	case err == nil:
		c.done = true
		c.ending = Ending{Outcome: Completed, After: Idle}
		m.unlock()
		return c.ending
	case c.ctx.Err() != nil && context.Cause(c.ctx) != nil:
		// The parent context ended and the operation saw it before the
		// parent's stop ran: the same stop, now.
		cause, ok := stop.FromContext(c.ctx)
		if !ok {
			cause = stop.New(stop.Operator, "context: "+context.Cause(c.ctx).Error())
		}
		m.stopLocked(cause)
	case errors.As(err, &fe):
		m.stopLocked(stop.New(stop.Fault, fe.Error()))
	default:
		// Failed: stop whatever else runs under the operation's context.
		c.cancel(err)
		m.stats.begin()
	}
	c.stopping = true
	m.setLocked(Stopping, c.what)
	m.unlock()

	escalated, stopErr := m.safeStop(c)
	if stopErr != nil {
		m.log.Errorf("%s: safe stop: %v", c.what, stopErr)
	}

	m.mu.Lock()
	defer m.unlock()
	e := Ending{Reason: c.reason, Err: errors.Join(err, stopErr), Escalated: escalated}
	switch {
	case c.reason == stop.None:
		e.Outcome, e.Why = Failed, "error: "+err.Error()
	case c.reason.Aborts() || escalated:
		e.Outcome, e.Why = Aborted, c.explain()
	default:
		e.Outcome, e.Why = Canceled, c.explain()
	}
	switch {
	case c.reason == stop.EStop:
		e.After = EStop
	case c.reason.Latches() || escalated:
		e.After = Faulted
	default:
		e.After = Idle
	}
	c.stopping, c.done, c.ending = false, true, e
	return e
}

// explain says why the operation stopped: the reason, and the first
// stop's detail or what it escalated from. m.mu is held.
func (c *Claim) explain() string {
	if c.first.Reason != c.reason {
		return c.reason.String() + " (escalated from " + c.first.Error() + ")"
	}
	return why(c.first)
}

// Release hands the machine back: Idle, or latched (Faulted, EStop) as the
// Ending (or a stop that came after it) says. It calls End(nil) if the
// operation did not call End. It is idempotent; the claim must not be
// used afterwards.
func (c *Claim) Release() {
	e := c.End(nil)
	m := c.m
	m.mu.Lock()
	defer m.unlock()
	if m.claim != c {
		return
	}
	m.claim = nil
	m.last = Last{What: c.what, Ending: e}
	after, why := e.After, e.Why
	if e.Escalated {
		why = "safe stop incomplete: " + why
	}
	reason := e.Reason
	switch {
	case c.late == stop.EStop && after != EStop:
		after, why, reason = EStop, c.lateWhy, c.late
	case c.late.Latches() && after == Idle:
		after, why, reason = Faulted, c.lateWhy, c.late
	}
	m.last.Ending.After = after
	if after == Idle {
		m.setLocked(Idle, c.what+" "+e.Outcome.String())
	} else {
		m.latchLocked(after, reason, why)
	}
	if e.Outcome == Completed && after == Idle {
		m.stats.completed()
	} else if e.Outcome != Completed {
		m.stats.ended(e)
	}
	c.stopParent()
	c.cancel(nil)
	close(c.released)
}

// hurried reports whether the claim's stop was hurried (an e-stop, or
// Hurry): the safe stop then skips the controlled hold.
func (c *Claim) hurried() bool {
	select {
	case <-c.hurry:
		return true
	default:
		return false
	}
}
