// Package stop holds the typed reasons a run can be stopped for, ordered by
// strength, and the cancel cause that carries them through every layer via
// context.Cause. Every stop source (console, factory host, button, SIGTERM,
// watchdog, device fault, e-stop) names its reason with this package; the
// one cancel path that acts on them is package machine's Stop.
package stop

import (
	"context"
	"errors"
	"fmt"
)

// Reason says why a run stops. Reasons are ordered: a stronger reason
// arriving during a weaker stop escalates it; a weaker one is ignored.
//
// The order follows what a stop does, then who asks. The graceful stops
// (a controlled hold; outcome canceled; no latch) come first: a person's or
// a program's request (operator, host), then the physical button at the
// machine, then a shutdown of the daemon itself. A host STOP ranks above
// the console's: the fab reconciles the job against its own record, so a
// host STOP following a console stop is what run.json names (the console's
// stays in the "escalated from" detail); the button, someone at the
// machine, and a shutdown, which ends everything, rank above both. The
// latching stops follow (outcome aborted): a device fault, the watchdog,
// then the immediate ones, which skip the hold and reset the stage at
// once: a host ABORT, and the e-stop above everything.
type Reason int

const (
	None     Reason = iota
	Operator        // console "stop" or Ctrl-C at the terminal
	Host            // STOP from the factory host (SECS/GEM remote command)
	Button          // the physical stop button
	Shutdown        // SIGTERM from systemd
	Fault           // a device error or a lost link
	Watchdog        // a missed heartbeat or a watchdog alarm
	Abort           // ABORT from the factory host: immediate, latches Faulted
	EStop           // the emergency-stop input
)

var reasonNames = [...]string{"none", "operator", "host", "button", "shutdown", "fault", "watchdog", "abort", "estop"}

func (r Reason) String() string {
	if r >= 0 && int(r) < len(reasonNames) {
		return reasonNames[r]
	}
	return fmt.Sprintf("reason(%d)", int(r))
}

// ParseReason is the inverse of Reason.String.
func ParseReason(s string) (Reason, error) {
	for i, n := range reasonNames {
		if n == s && i > 0 {
			return Reason(i), nil
		}
	}
	return None, fmt.Errorf("stop: unknown reason %q", s)
}

// Aborts reports whether a run stopped for this reason is aborted (fault,
// watchdog, abort, e-stop) rather than canceled (operator, host, button,
// shutdown).
func (r Reason) Aborts() bool { return r >= Fault }

// Immediate reports whether the reason skips the controlled hold: the stage
// is soft-reset at once, stopping the steppers dead (position lost). The
// host's ABORT and the e-stop do.
func (r Reason) Immediate() bool { return r >= Abort }

// Latches reports whether a stop for this reason leaves the machine latched
// (Faulted, or EStop for the e-stop) until an operator resets it.
func (r Reason) Latches() bool { return r >= Fault }

// Cause is the cancel cause of a stopped run: the reason and who or what
// asked. It is an error so that it travels through context.Cause and
// errors.As.
type Cause struct {
	Reason Reason
	Detail string // e.g. "console ttyS0", "SIGTERM", "stage alarm 2"
}

func (c *Cause) Error() string {
	if c.Detail == "" {
		return "stopped: " + c.Reason.String()
	}
	return "stopped: " + c.Reason.String() + " (" + c.Detail + ")"
}

// New returns a cause for reason with a detail.
func New(r Reason, detail string) *Cause { return &Cause{Reason: r, Detail: detail} }

// FromContext returns the stop cause ctx was cancelled with, if any.
func FromContext(ctx context.Context) (*Cause, bool) {
	return As(context.Cause(ctx))
}

// As finds a *Cause in err's chain.
func As(err error) (*Cause, bool) {
	var c *Cause
	if errors.As(err, &c) {
		return c, true
	}
	return nil, false
}
