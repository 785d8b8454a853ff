// Package ctxhook registers a hardware call's abort on the call's context
// (context.AfterFunc) and keeps the registration across calls made with the
// same context.
//
// A driver called thousands of times per run with the run's context would
// otherwise register, and allocate, an AfterFunc per call: with a Hook it
// registers once per context and only marks each call armed and disarmed.
package ctxhook

import (
	"context"
	"sync"
)

// Hook runs an abort, in a goroutine of its own, the moment the context a
// call is armed on is cancelled while the call is armed.
//
// One call at a time may be armed (the driver serialises its calls, as
// grbl's MoveTo does under its move semaphore); Arm and Disarm are safe to
// call from any goroutine, and the abort may run concurrently with the
// call. Disarm waits for an abort that has already started, so the call
// that armed the hook never returns before its abort is done: whatever the
// caller does next cannot be overtaken by it.
type Hook struct {
	abort func()

	mu    sync.Mutex      // held by Arm, Disarm, Release and while an abort runs
	ctx   context.Context // the live registration's context; nil if none
	stop  func() bool     // unregisters the live registration
	gen   uint64          // the live registration's number
	fired bool            // the live registration has run (its context is done)
	armed bool            // a call is in progress
	ran   bool            // the abort ran for the current arming
}

// New returns a Hook that calls abort. abort must not call the Hook.
func New(abort func()) *Hook { return &Hook{abort: abort} }

// Arm marks a call in progress on ctx: if ctx is cancelled before Disarm
// (or already is), the abort runs once, in a goroutine of its own. The
// first Arm with a context registers on it (context.AfterFunc, which
// allocates); later ones with the same context, until it is cancelled,
// only set a flag. It does not block, but for an abort in progress.
func (h *Hook) Arm(ctx context.Context) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.ctx != ctx || h.fired {
		h.unregisterLocked()
		h.gen++
		gen := h.gen
		h.ctx, h.fired = ctx, false
		h.stop = context.AfterFunc(ctx, func() { h.fire(gen) })
	}
	h.armed, h.ran = true, false
}

// Disarm ends the call armed by Arm and reports whether the abort ran for
// it. If the context has been cancelled, the abort has run exactly once
// for this arming when Disarm returns: Disarm waits for an abort in
// progress, and runs it itself if the registration's goroutine has not got
// to it yet (the call may have seen the cancellation first). The
// registration stays, for the next Arm with the same context.
func (h *Hook) Disarm() (aborted bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.armed && !h.ran && h.ctx != nil && h.ctx.Err() != nil {
		h.ran = true
		h.abort()
	}
	h.armed = false
	return h.ran
}

// Release unregisters the hook from its context (a driver's Close calls
// it, so that a long-lived context keeps no reference to the driver); a
// call armed meanwhile is no longer aborted. A later Arm registers again.
func (h *Hook) Release() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.unregisterLocked()
}

func (h *Hook) unregisterLocked() {
	if h.stop != nil {
		// A registration that already started its function finds its
		// number stale in fire and does nothing.
		h.stop()
	}
	h.gen++
	h.ctx, h.stop, h.fired = nil, nil, false
}

// fire is the registration's function: it aborts the armed call, if any.
func (h *Hook) fire(gen uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if gen != h.gen {
		return // replaced or released meanwhile
	}
	h.fired = true
	if h.armed && !h.ran {
		h.ran = true
		h.abort()
	}
}
