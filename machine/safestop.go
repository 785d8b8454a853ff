package machine

import (
	"context"
	"errors"
	"fmt"

	"github.com/waferd/waferd/motion"
)

// errHoldDeadline is why a hold wait was abandoned after HoldTimeout.
var errHoldDeadline = errors.New("hold deadline missed")

// safeStop is the one safe stop: it brings the machine to rest after any
// stopped or failed operation. Every step runs even if an earlier one
// failed:
//
//  1. light off (instant, and the most likely to harm a wafer);
//  2. stage held until it reports it is at rest (Hold:0 or Idle), within
//     HoldTimeout — skipped for an immediate stop (e-stop, host abort),
//     and abandoned when the stop is hurried (Hurry, or an immediate stop
//     arriving meanwhile);
//  3. soft reset, within ResetTimeout: it flushes the planner; after a
//     completed hold the position is kept; a reset while the stage moves
//     stops the steppers dead and raises an alarm (position lost);
//  4. a status check: an alarm that survives the reset means the position
//     is lost. After an immediate stop the position is never trusted.
//
// escalated reports that the stop could not complete cleanly: the hold
// missed its deadline (not hurried) or the reset failed. The position is
// then untrusted, and the caller latches the machine Faulted. It blocks
// for at most HoldTimeout + ResetTimeout, plus one status round trip.
func (m *Machine) safeStop(c *Claim) (escalated bool, err error) {
	ctx := context.WithoutCancel(c.ctx)
	stage := m.cfg.Stage
	var lightErr, holdErr, resetErr error
	if err := m.cfg.Light.Off(); err != nil {
		lightErr = fmt.Errorf("light off: %w", err)
	}

	lost := false
	if !c.hurried() {
		hctx, cancel := context.WithTimeoutCause(ctx, m.cfg.HoldTimeout, errHoldDeadline)
		go func() {
			select {
			case <-c.hurry:
				cancel()
			case <-hctx.Done():
			}
		}()
		err := stage.Hold(hctx)
		cancel()
		switch {
		case err == nil:
			m.atRest()
		case c.hurried():
			m.log.Warnf("safe stop hurried: resetting without waiting for the hold")
		default:
			lost, escalated = true, true
			holdErr = fmt.Errorf("stage hold: %w", err)
		}
	}

	rctx, cancel := context.WithTimeout(ctx, m.cfg.ResetTimeout)
	defer cancel()
	switch err := stage.Reset(rctx); {
	case errors.Is(err, motion.ErrAlarm):
		// The alarm a reset raises when it stops a moving stage: the
		// expected result of the immediate path, not a failed reset.
		lost = true
	case err != nil:
		lost, escalated = true, true
		resetErr = fmt.Errorf("stage reset: %w", err)
	default:
		if st, err := stage.Status(rctx); err != nil || st.State == motion.StateAlarm {
			lost = true
		}
	}
	m.mu.Lock()
	m.stats.atRest()
	if lost || c.reason.Immediate() {
		// An immediate stop's position is never trusted: the reset may
		// have come while the stage still moved.
		m.trusted = false
	}
	m.mu.Unlock()
	return escalated, errors.Join(lightErr, holdErr, resetErr)
}

// atRest tells the statistics that a stop has brought the stage to rest.
func (m *Machine) atRest() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.stats.atRest()
}
