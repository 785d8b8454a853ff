// Package machine owns what keeps the machine safe, in one place:
//
//   - its state (Idle, Running, Stopping, Faulted, EStop) and the one
//     function that changes it;
//   - whether the stage position is trusted;
//   - the latch (Faulted, EStop) and the rule that clears it (Reset);
//   - the claim (Claim) that every operation which moves the stage or
//     switches the light must hold: a run, homing, a console move or jog,
//     self-test, capture, a remote START. One claim at a time;
//   - the one cancel path: Stop(reason, detail), with typed reasons
//     (package stop) that escalate but never de-escalate;
//   - the one safe stop that brings the machine to rest after any stopped
//     or failed operation, whoever started it.
//
// Every stop source (console, stop button, e-stop, signals, watchdog,
// device faults, the factory host) is one caller of Stop. A stop first
// halts the devices (Stage.Halt, the one-byte feed hold, or Stage.Abort,
// the soft reset, for an e-stop or abort; then Light.Halt), then cancels
// the claim's context with a *stop.Cause. The operation returns, and its
// End runs the safe stop: light off, stage held until it is at rest
// (skipped for an e-stop or abort, or when hurried), soft reset, alarm
// check. The README's stop table maps row by row onto this
// package (see its tests).
package machine

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/waferd/waferd/illumination"
	"github.com/waferd/waferd/internal/logging"
	"github.com/waferd/waferd/motion"
	"github.com/waferd/waferd/stop"
)

// Errors a claim is refused with; callers test them with errors.Is.
var (
	// ErrLatched: the machine is Faulted or in EStop; Reset clears it.
	ErrLatched = errors.New("machine latched")
	// ErrBusy: another operation holds the machine.
	ErrBusy = errors.New("machine busy")
	// ErrClosed: the machine is shutting down and grants no claims.
	ErrClosed = errors.New("machine shutting down")
)

// Config wires a Machine. Zero durations take the defaults.
type Config struct {
	// Stage and Light are the devices a stop halts and the safe stop
	// brings to rest. Light must be the light exactly as the operations
	// switch it (with any wrapper), so that its Halt is seen by them.
	Stage motion.Stage
	Light illumination.Lamp
	// HoldTimeout bounds the safe stop's wait for the stage to come to
	// rest after the feed hold (default 5 s). Missing it escalates: soft
	// reset, position untrusted, machine Faulted.
	HoldTimeout time.Duration
	// ResetTimeout bounds the soft reset (default 3 s).
	ResetTimeout time.Duration
	// EStopActive, if set, reports whether the e-stop input is still
	// engaged: Reset refuses to clear an EStop latch while it is.
	EStopActive func() bool
	// OnEvent, if set, receives every change (see Event), in order. It is
	// called with the machine's lock held: it must return at once and must
	// not call the Machine.
	OnEvent func(Event)
	// Log receives the machine's messages; nil discards them.
	Log *logging.Log
}

// Machine is the one owner of the machine's state. All methods are safe for
// concurrent use. Stop, Hurry and the accessors never block (beyond the
// devices' Halt, a GPIO write and a one-byte serial write).
type Machine struct {
	cfg Config
	log *logging.Log

	mu       sync.Mutex
	state    State
	claim    *Claim // the operation holding the machine, nil when none
	latchWhy string // why the machine is latched
	trusted  bool   // the stage position is known (homed, never lost since)
	linkDown bool   // the stage's link is lost (a reconnecting stage)
	closed   bool   // Close was called: no new claims
	last     Last   // the last operation released
	stats    stats
	logs     []func() // messages made under mu, written by unlock
}

// later keeps a log call made under m.mu for unlock to make: a slow log
// (a full journal pipe) never holds up a stop, which takes the lock.
func (m *Machine) later(log func()) { m.logs = append(m.logs, log) }

// unlock releases m.mu, then writes the log messages made under it.
func (m *Machine) unlock() {
	logs := m.logs
	m.logs = nil
	m.mu.Unlock()
	for _, log := range logs {
		log()
	}
}

// Last is how the last operation that held the machine ended.
type Last struct {
	What   string // "run demo", "move", ...; "" before the first
	Ending Ending
}

// New returns an idle machine with an untrusted position. It does not
// touch the devices.
func New(cfg Config) *Machine {
	if cfg.HoldTimeout <= 0 {
		cfg.HoldTimeout = 5 * time.Second
	}
	if cfg.ResetTimeout <= 0 {
		cfg.ResetTimeout = 3 * time.Second
	}
	log := cfg.Log
	if log == nil {
		log = logging.Discard()
	}
	return &Machine{cfg: cfg, log: log}
}

// State returns the machine state.
func (m *Machine) State() State {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.state
}

// LatchReason says why the machine is Faulted or in EStop ("" otherwise).
func (m *Machine) LatchReason() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.latchWhy
}

// Busy names the operation holding the machine ("run demo", "home", ...),
// or "" when none does.
func (m *Machine) Busy() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.claim == nil {
		return ""
	}
	return m.claim.what
}

// Last returns how the last operation that held the machine ended.
func (m *Machine) Last() Last {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.last
}

// Trusted reports whether the stage position is known: homed (or its
// origin set), and not lost since.
func (m *Machine) Trusted() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.trusted
}

// PositionLost records that the stage position is no longer known (the
// controller restarted, reported an alarm, ...): the next run homes first.
func (m *Machine) PositionLost() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.trusted = false
}

// LinkLost records that the stage's link is lost (a reconnecting stage's
// port disappeared) and stops with reason fault: an operation in progress
// is aborted, an idle machine latches Faulted. The position is untrusted.
func (m *Machine) LinkLost(err error) {
	m.mu.Lock()
	m.linkDown, m.trusted = true, false
	m.mu.Unlock()
	m.Stop(stop.Fault, "stage: "+err.Error())
}

// LinkBack records that the stage's link is back. The controller behind it
// has restarted: the position stays untrusted.
func (m *Machine) LinkBack() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.linkDown, m.trusted = false, false
}

// LinkDown reports whether the stage's link is lost (between LinkLost and
// LinkBack).
func (m *Machine) LinkDown() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.linkDown
}

// Claim grants the machine to one operation (what names it: "run demo",
// "home", "move", ...) until its Release. It refuses, without blocking,
// while another operation holds the machine (ErrBusy), while the machine
// is latched (ErrLatched) or closed (ErrClosed); the error says what to do.
//
// The claim's Context is ctx's child: Stop cancels it with a *stop.Cause,
// and ctx ending stops the operation through Stop too (with ctx's
// *stop.Cause if it has one, else as an operator stop).
func (m *Machine) Claim(ctx context.Context, what string) (*Claim, error) {
	m.mu.Lock()
	defer m.unlock()
	switch {
	case m.closed:
		return nil, fmt.Errorf("machine: %s refused: %w", what, ErrClosed)
	case m.state.Latched():
		return nil, fmt.Errorf("machine: %s refused: %w: machine is %s (%s): clear it with reset", what, ErrLatched, m.state, m.latchWhy)
	case m.claim != nil:
		return nil, fmt.Errorf("machine: %s refused: %w: %s in progress (stop it, or wait for it to end)", what, ErrBusy, m.claim.what)
	}
	cctx, cancel := context.WithCancelCause(ctx)
	c := &Claim{m: m, what: what, ctx: cctx, cancel: cancel, hurry: make(chan struct{}), released: make(chan struct{})}
	m.claim = c
	m.setLocked(Running, what)
	c.stopParent = context.AfterFunc(ctx, func() { m.stopFromParent(c, ctx) })
	return c, nil
}

// Stop is the one cancel path: every stop source calls it. It never waits
// for the machine to come to rest (the claim's End does), only for the
// devices' Halt (a GPIO write and a one-byte serial write).
//
// It halts the stage if an operation holds the machine, the first thing
// it does (Stage.Halt: the feed hold; for an e-stop or abort, Stage.Abort:
// the soft reset at once, also when it escalates a stop in progress), and
// always switches the light off (Light.Halt). Then:
//   - an operation holding the machine is stopped: the first stop cancels
//     the claim's context with a *stop.Cause; a stronger reason later
//     escalates the stop in progress
//     (an e-stop abandons the controlled hold and resets the stage at
//     once); a repeated or weaker one is logged and ignored;
//   - on an idle machine an e-stop latches EStop and a fault, watchdog or
//     abort stop latches Faulted; any other stop has nothing to stop.
func (m *Machine) Stop(reason stop.Reason, detail string) {
	if reason <= stop.None {
		return
	}
	m.mu.Lock()
	defer m.unlock()
	m.stopLocked(stop.New(reason, detail))
}

// stopLocked applies cause to the machine. m.mu is held.
func (m *Machine) stopLocked(cause *stop.Cause) {
	c := m.claim
	m.stats.request(cause.Reason)
	switch {
	case c == nil || c.done:
	case cause.Reason.Immediate() && cause.Reason > c.reason:
		// An e-stop or abort, first or escalating a stop in progress: the
		// soft reset at once (the steppers stop dead), not once the
		// operation has returned to its safe stop. A reset after the safe
		// stop's own is harmless.
		if err := m.cfg.Stage.Abort(); err != nil {
			m.later(func() { m.log.Errorf("stop: resetting the stage: %v", err) })
		}
	case !c.stopping && c.reason == stop.None:
		// The first stop of an operation in progress: the feed hold is the
		// most urgent thing, before anything else (even the light, which
		// follows within microseconds). It is written under the lock that
		// End takes before the safe stop touches the stage, so a halt can
		// never follow the safe stop's reset (GRBL would stay in Hold:0).
		if err := m.cfg.Stage.Halt(); err != nil {
			m.later(func() { m.log.Errorf("stop: halting the stage: %v", err) })
		}
	}
	if err := m.cfg.Light.Halt(); err != nil {
		m.later(func() { m.log.Errorf("stop: switching the light off: %v", err) })
	}
	switch {
	case c != nil && !c.done:
		c.stopLocked(cause) // the operation, or its safe stop, in progress
	case c != nil:
		c.lateStopLocked(cause) // finished, about to release the machine
	case m.state == EStop:
		m.later(func() { m.log.Noticef("stop %v while in e-stop: nothing to stop", cause) })
	case cause.Reason == stop.EStop:
		m.latchLocked(EStop, cause.Reason, why(cause))
	case cause.Reason.Latches() && m.state == Idle:
		m.latchLocked(Faulted, cause.Reason, why(cause))
	default:
		st := m.state
		m.later(func() { m.log.Debugf("stop %v while %s: nothing to stop", cause, st) })
	}
}

// why says why a stop happened, as records and latches say it:
// "fault: stage: ...", "estop: estop line", "operator".
func why(c *stop.Cause) string {
	if c.Detail == "" {
		return c.Reason.String()
	}
	return c.Reason.String() + ": " + c.Detail
}

// stopFromParent turns the end of a claim's parent context into a Stop:
// with its *stop.Cause if it has one, else as an operator stop.
func (m *Machine) stopFromParent(c *Claim, parent context.Context) {
	cause, ok := stop.FromContext(parent)
	if !ok {
		cause = stop.New(stop.Operator, "context: "+context.Cause(parent).Error())
	}
	m.mu.Lock()
	defer m.unlock()
	if m.claim == c && !c.done {
		m.stopLocked(cause)
	}
}

// Hurry escalates a stop in progress to the immediate path without
// changing its reason: the controlled hold is abandoned and the stage reset
// at once (position lost). A second SIGTERM or Ctrl-C does this. The rest
// of the safe stop still runs. Without a stop in progress it does nothing.
func (m *Machine) Hurry(detail string) {
	m.mu.Lock()
	defer m.unlock()
	c := m.claim
	if c == nil || c.done || c.reason == stop.None && !c.stopping {
		m.later(func() { m.log.Noticef("hurry (%s) ignored: no stop in progress", detail) })
		return
	}
	m.later(func() { m.log.Warnf("stop hurried (%s): abandoning the controlled hold", detail) })
	c.hurryLocked()
}

// Reset clears a Faulted or EStop latch so that claims are granted again:
// it soft-resets the stage controller (clearing whatever state the fault
// left in the link) and then the latch. It refuses while the e-stop input
// is still engaged, and leaves the latch if the stage does not answer. The
// position stays untrusted: the next run homes first. On an idle machine it
// does nothing. It blocks for the stage reset (bounded by ctx and
// ResetTimeout).
func (m *Machine) Reset(ctx context.Context) error {
	m.mu.Lock()
	st, why := m.state, m.latchWhy
	m.mu.Unlock()
	switch st {
	case Idle:
		return nil
	case Faulted, EStop:
	default:
		return fmt.Errorf("machine: cannot reset while %s", st)
	}
	if st == EStop && m.cfg.EStopActive != nil && m.cfg.EStopActive() {
		return errors.New("machine: e-stop still engaged: release it before reset")
	}
	rctx, cancel := context.WithTimeout(ctx, m.cfg.ResetTimeout)
	err := m.cfg.Stage.Reset(rctx)
	cancel()
	m.PositionLost()
	if err != nil && !errors.Is(err, motion.ErrAlarm) {
		return fmt.Errorf("machine: reset: machine stays %s: %w", st, err)
	}
	m.mu.Lock()
	defer m.unlock()
	if m.state != st {
		return fmt.Errorf("machine: reset: machine changed to %s meanwhile", m.state)
	}
	m.later(func() { m.log.Noticef("machine reset from %s (%s)", st, why) })
	m.latchWhy = ""
	m.setLocked(Idle, "reset")
	return nil
}

// Close stops granting claims (ErrClosed). It does not stop the operation
// in progress (Stop does) and does not wait (Wait does).
func (m *Machine) Close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
}

// Wait blocks until no operation holds the machine, or ctx ends.
func (m *Machine) Wait(ctx context.Context) error {
	for {
		m.mu.Lock()
		c := m.claim
		m.mu.Unlock()
		if c == nil {
			return nil
		}
		select {
		case <-c.released:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
}

// setLocked moves the machine to next if that is legal, and logs (but
// otherwise ignores) an illegal request: a bug, never a reason to leave
// the machine in an unknown state. m.mu must be held.
func (m *Machine) setLocked(next State, detail string) {
	if err := transition(m.state, next); err != nil {
		m.later(func() { m.log.Errorf("%v", err) })
		return
	}
	m.state = next
	m.emitLocked(Event{Kind: StateChanged, State: next, Text: detail})
}

// latchLocked latches s (Faulted or EStop) for why, a stop for reason r.
func (m *Machine) latchLocked(s State, r stop.Reason, why string) {
	if err := transition(m.state, s); err != nil {
		m.later(func() { m.log.Errorf("%v", err) })
		return
	}
	m.latchWhy = why
	m.state = s
	m.emitLocked(Event{Kind: StateChanged, State: s, Reason: r, Text: why})
	m.later(func() { m.log.Errorf("machine %s: %s; clear with reset", s, why) })
}

func (m *Machine) emitLocked(e Event) {
	if m.cfg.OnEvent == nil {
		return
	}
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	m.cfg.OnEvent(e)
}

// EventKind says what an Event reports.
type EventKind int

const (
	// StateChanged: the machine entered State; Text is the claim's name,
	// the latch reason or "reset"; Reason is the latching stop's when
	// State is Faulted or EStop.
	StateChanged EventKind = iota + 1
	// StopRequested: the first stop of an operation (Cause).
	StopRequested
	// StopEscalated: a stronger reason took over a stop in progress
	// (Cause is the new one).
	StopEscalated
)

// Event is a change of the machine, for status displays and the outside
// world (console, factory host, outbox).
type Event struct {
	Time  time.Time
	Kind  EventKind
	State State
	Cause *stop.Cause
	// Reason is, when the machine latches (StateChanged to Faulted or
	// EStop), the reason of the stop that latched it: fault, watchdog,
	// abort or estop, or, when a safe stop could not complete, the stop's
	// own reason, which does not latch by itself (None for a failed
	// operation).
	Reason stop.Reason
	Text   string
}
