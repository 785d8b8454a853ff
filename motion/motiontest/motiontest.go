// Package motiontest is a scriptable motion.Stage for unit tests: moves and
// homing take a set time (use testing/synctest for a fake clock), and the
// stage records the calls that matter to a stop (Halt, Abort, Hold, Reset, ...) in
// order, so a test can assert "held, then reset" or "reset at once". It
// behaves like a GRBL controller where a stop depends on it:
//
//   - Halt (feed hold) stops a move in progress and leaves the stage in
//     Hold:0; it does so even when the stage is idle, and a held stage
//     executes no move until Resume or Reset;
//   - Reset while the stage moves (or decelerates, or homes) stops it dead
//     and raises an alarm (position lost); Reset after Hold:0 keeps the
//     position and raises none; Abort does the same without blocking;
//   - a cancelled MoveTo halts the stage (the driver's abort hook) and a
//     cancelled Home resets it (GRBL ignores a feed hold while homing).
//
// Faults are injected with InjectAlarm, LoseLink, HoldNever and FailNext.
package motiontest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/waferd/waferd/motion"
)

// Stage is a fake XY stage. The zero value is not usable: call New. All
// methods are safe for concurrent use.
type Stage struct {
	mu sync.Mutex
	// Configuration; set before use or under no concurrent call.
	moveTime, homeTime, holdTime time.Duration
	home                         motion.Point

	state    motion.State
	sub      int
	pos      motion.Point
	moves    int // MoveTo calls in progress
	calls    []string
	statuses int
	linkLost bool
	closed   bool
	failNext map[string]error

	holdNeverStops bool
	mute           bool
	noHoming       bool
	onCall         func(call string)
	halted         chan struct{} // closed and replaced at every Halt and Reset
}

var _ motion.Stage = (*Stage)(nil)

// New returns an idle stage at the origin, whose moves take moveTime and
// whose homing takes homeTime (zero: at once).
func New(moveTime, homeTime time.Duration) *Stage {
	return &Stage{moveTime: moveTime, homeTime: homeTime, state: motion.StateIdle, sub: -1, halted: make(chan struct{})}
}

// SetHomeTime makes a homing cycle take d.
func (s *Stage) SetHomeTime(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.homeTime = d
}

// SetHoldTime makes a hold take d to come to rest (Hold:1 meanwhile).
func (s *Stage) SetHoldTime(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.holdTime = d
}

// OnCall sets a function called at the start of every recorded call (with
// its name, as Calls lists it), and with "moving" once a move is under way
// and "homing" once homing is, on the caller's goroutine and without the
// stage's lock: a test can stop the machine at that exact point.
func (s *Stage) OnCall(f func(call string)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.onCall = f
}

// Calls returns the calls recorded so far, in order: "Home", "MoveTo",
// "Halt", "Hold", "Resume", "Reset", "Unlock", "Close". Status is only
// counted (Statuses): polls would drown the rest.
func (s *Stage) Calls() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.calls)
}

// ClearCalls forgets the calls recorded so far.
func (s *Stage) ClearCalls() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = nil
}

// Statuses counts Status calls.
func (s *Stage) Statuses() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.statuses
}

// State returns the stage's state, its sub-state (Hold:0/1) and position.
func (s *Stage) State() (motion.State, int, motion.Point) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state, s.sub, s.pos
}

// Moving reports whether the stage is moving (Run, Home, or decelerating
// in Hold:1).
func (s *Stage) Moving() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.movingLocked()
}

func (s *Stage) movingLocked() bool {
	return s.state == motion.StateRun || s.state == motion.StateHome || s.state == motion.StateHold && s.sub == 1
}

// InjectAlarm puts the stage in alarm (a limit switch hit): a move or
// homing in progress fails with an error wrapping motion.ErrAlarm, and the
// position is lost until Home.
func (s *Stage) InjectAlarm() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.state, s.sub = motion.StateAlarm, -1
	s.wakeLocked()
}

// LoseLink makes every call fail at once with an error wrapping
// motion.ErrLinkLost, as a stage whose serial adapter was unplugged; a
// move in progress fails too (the controller finishes it on its own).
func (s *Stage) LoseLink() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.linkLost = true
	s.wakeLocked()
}

// HoldNever makes holds never come to rest: Hold blocks until its context
// ends (a stage that ignores its feed hold).
func (s *Stage) HoldNever(never bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.holdNeverStops = never
}

// NoHoming makes the stage one without homing switches: Home fails and
// SetOrigin works.
func (s *Stage) NoHoming() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.noHoming = true
}

// Mute makes Status wait for its context instead of answering (a
// controller that stopped talking), or answer again.
func (s *Stage) Mute(mute bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mute = mute
	s.wakeLocked()
}

// FailNext makes the next call named call ("MoveTo", "Home", "Reset",
// "Hold", "Status") fail with err, once, without effect.
func (s *Stage) FailNext(call string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failNext == nil {
		s.failNext = map[string]error{}
	}
	s.failNext[call] = err
}

// ErrClosed is returned by calls after Close.
var ErrClosed = errors.New("motiontest: closed")

// begin records call and returns an error if the call must fail at once.
func (s *Stage) begin(call string) error {
	s.mu.Lock()
	if call == "Status" {
		s.statuses++
	} else {
		s.calls = append(s.calls, call)
	}
	f := s.onCall
	s.mu.Unlock()
	if f != nil && call != "Status" {
		f(call)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return ErrClosed
	case s.linkLost:
		return fmt.Errorf("motiontest: %s: %w", call, motion.ErrLinkLost)
	}
	if err := s.failNext[call]; err != nil {
		delete(s.failNext, call)
		return err
	}
	return nil
}

// wakeLocked wakes everything waiting on the stage's motion.
func (s *Stage) wakeLocked() {
	close(s.halted)
	s.halted = make(chan struct{})
}

// Halt is the feed hold: a move in progress stops (Hold:1 for the hold
// time, then Hold:0); an idle stage enters Hold:0 too, as GRBL's does. It
// does not block.
func (s *Stage) Halt() error {
	if err := s.begin("Halt"); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.haltLocked()
	return nil
}

func (s *Stage) haltLocked() {
	switch s.state {
	case motion.StateRun:
		s.state, s.sub = motion.StateHold, 1
		switch {
		case s.holdNeverStops:
		case s.holdTime <= 0:
			s.sub = 0
		default:
			time.AfterFunc(s.holdTime, func() {
				s.mu.Lock()
				defer s.mu.Unlock()
				if s.state == motion.StateHold && s.sub == 1 {
					s.sub = 0
					s.wakeLocked()
				}
			})
		}
	case motion.StateIdle:
		s.state, s.sub = motion.StateHold, 0
	}
	s.wakeLocked()
}

// Home runs the homing cycle: homeTime in state Home, then Idle at the
// home position with the alarm cleared. A cancelled Home resets the stage
// (alarm, as GRBL's ALARM:6).
func (s *Stage) Home(ctx context.Context) error {
	if err := s.begin("Home"); err != nil {
		return fmt.Errorf("motiontest: home: %w", err)
	}
	s.mu.Lock()
	if s.noHoming {
		s.mu.Unlock()
		return fmt.Errorf("motiontest: home: no homing switches: %w", motion.ErrRejected)
	}
	if s.state == motion.StateHold {
		s.mu.Unlock()
		return fmt.Errorf("motiontest: home: stage held: %w", motion.ErrNotReady)
	}
	s.state, s.sub = motion.StateHome, -1
	f, homeTime := s.onCall, s.homeTime
	s.mu.Unlock()
	if f != nil {
		f("homing")
	}
	t := time.NewTimer(homeTime)
	defer t.Stop()
	for {
		s.mu.Lock()
		wake, st, lost := s.halted, s.state, s.linkLost
		s.mu.Unlock()
		switch {
		case lost:
			return fmt.Errorf("motiontest: home: %w", motion.ErrLinkLost)
		case st == motion.StateAlarm:
			return fmt.Errorf("motiontest: home: %w", motion.ErrAlarm)
		case st != motion.StateHome:
			return fmt.Errorf("motiontest: home: %w", motion.ErrReset)
		}
		select {
		case <-t.C:
			s.mu.Lock()
			s.state, s.pos = motion.StateIdle, s.home
			s.mu.Unlock()
			return nil
		case <-ctx.Done():
			s.mu.Lock()
			s.calls = append(s.calls, "Reset") // the driver's abort: GRBL ignores '!' while homing
			s.state, s.sub = motion.StateAlarm, -1
			s.wakeLocked()
			s.mu.Unlock()
			return fmt.Errorf("motiontest: home: %w", context.Cause(ctx))
		case <-wake:
		}
	}
}

// MoveTo moves to p in moveTime. It fails at once in alarm (ErrAlarm) or
// held (ErrNotReady). A cancelled move halts the stage (as the driver's
// abort hook does) and returns the context's cause; a halted move waits
// for Resume or its context.
func (s *Stage) MoveTo(ctx context.Context, p motion.Point, f motion.Speed) error {
	if err := s.begin("MoveTo"); err != nil {
		return fmt.Errorf("motiontest: move to %v: %w", p, err)
	}
	if f <= 0 {
		return fmt.Errorf("motiontest: move to %v: invalid feed %v", p, f)
	}
	s.mu.Lock()
	switch s.state {
	case motion.StateAlarm:
		s.mu.Unlock()
		return fmt.Errorf("motiontest: move to %v: %w", p, motion.ErrAlarm)
	case motion.StateHold:
		s.mu.Unlock()
		return fmt.Errorf("motiontest: move to %v: stage held: %w", p, motion.ErrNotReady)
	}
	s.state, s.sub = motion.StateRun, -1
	s.moves++
	hook := s.onCall
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.moves--
		s.mu.Unlock()
	}()
	if hook != nil {
		hook("moving")
	}
	t := time.NewTimer(s.moveTime)
	defer t.Stop()
	done := false
	for {
		s.mu.Lock()
		wake, st, lost := s.halted, s.state, s.linkLost
		if done && st == motion.StateRun {
			s.state, s.pos = motion.StateIdle, p
			s.wakeLocked()
			s.mu.Unlock()
			return nil
		}
		s.mu.Unlock()
		switch {
		case lost:
			return fmt.Errorf("motiontest: move to %v: %w", p, motion.ErrLinkLost)
		case st == motion.StateAlarm:
			return fmt.Errorf("motiontest: move to %v: %w", p, motion.ErrAlarm)
		case st == motion.StateIdle:
			return fmt.Errorf("motiontest: move to %v: controller reset: %w", p, motion.ErrReset)
		}
		select {
		case <-t.C:
			done = true
		case <-ctx.Done():
			_ = s.Halt()
			return fmt.Errorf("motiontest: move to %v: %w", p, context.Cause(ctx))
		case <-wake:
		}
	}
}

// Status returns the stage's state and position.
func (s *Stage) Status(ctx context.Context) (motion.Status, error) {
	if err := s.begin("Status"); err != nil {
		return motion.Status{}, fmt.Errorf("motiontest: status: %w", err)
	}
	for {
		s.mu.Lock()
		mute, wake := s.mute, s.halted
		s.mu.Unlock()
		if !mute {
			break
		}
		select {
		case <-ctx.Done():
			return motion.Status{}, fmt.Errorf("motiontest: status: no answer: %w", motion.ErrTimeout)
		case <-wake:
		}
	}
	if err := ctx.Err(); err != nil {
		return motion.Status{}, context.Cause(ctx)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return motion.Status{State: s.state, Sub: s.sub, MPos: [3]motion.Distance{s.pos.X, s.pos.Y, 0}, BufBlocks: -1, BufBytes: -1}, nil
}

// Hold writes a feed hold and waits until the stage is at rest (Hold:0,
// Idle, Alarm), bounded by ctx: an error wrapping motion.ErrTimeout when
// ctx's deadline passes first.
func (s *Stage) Hold(ctx context.Context) error {
	if err := s.begin("Hold"); err != nil {
		return fmt.Errorf("motiontest: hold: %w", err)
	}
	s.mu.Lock()
	s.haltLocked()
	s.mu.Unlock()
	for {
		s.mu.Lock()
		wake, moving := s.halted, s.movingLocked()
		s.mu.Unlock()
		if !moving {
			return nil
		}
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("motiontest: hold: stage not stopped in time: %w", motion.ErrTimeout)
			}
			return fmt.Errorf("motiontest: hold: %w", context.Cause(ctx))
		case <-wake:
		}
	}
}

// Resume continues a held move; a stage held with no move in progress
// becomes Idle, as GRBL's does.
func (s *Stage) Resume(context.Context) error {
	if err := s.begin("Resume"); err != nil {
		return fmt.Errorf("motiontest: resume: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state == motion.StateHold {
		s.state, s.sub = motion.StateIdle, -1
		if s.moves > 0 {
			s.state = motion.StateRun
		}
		s.wakeLocked()
	}
	return nil
}

// Abort is the soft reset at once (motion.Stage.Abort): a moving stage
// stops dead in alarm (position lost), a held or idle one becomes Idle,
// an alarm stays. It does not block; the Reset after it completes the
// restart, as GRBL's does.
func (s *Stage) Abort() error {
	if err := s.begin("Abort"); err != nil {
		return fmt.Errorf("motiontest: abort: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	defer s.wakeLocked()
	switch {
	case s.movingLocked():
		s.state, s.sub = motion.StateAlarm, -1
	case s.state != motion.StateAlarm:
		s.state, s.sub = motion.StateIdle, -1
	}
	return nil
}

// Reset soft-resets the stage: a moving stage stops dead in alarm (the
// returned error wraps motion.ErrAlarm, position lost); a held or idle one
// becomes Idle; an alarm stays (until Home or Unlock).
func (s *Stage) Reset(context.Context) error {
	if err := s.begin("Reset"); err != nil {
		return fmt.Errorf("motiontest: reset: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	defer s.wakeLocked()
	if s.movingLocked() {
		s.state, s.sub = motion.StateAlarm, -1
		return fmt.Errorf("motiontest: reset while moving: %w", motion.ErrAlarm)
	}
	if s.state != motion.StateAlarm {
		s.state, s.sub = motion.StateIdle, -1
	}
	return nil
}

// Unlock clears an alarm without homing.
func (s *Stage) Unlock(context.Context) error {
	if err := s.begin("Unlock"); err != nil {
		return fmt.Errorf("motiontest: unlock: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state == motion.StateAlarm {
		s.state = motion.StateIdle
	}
	return nil
}

// SetOrigin declares the stage, idle, to be at p; a stage that homes
// refuses (motion.ErrHomes).
func (s *Stage) SetOrigin(_ context.Context, p motion.Point) error {
	if err := s.begin("SetOrigin"); err != nil {
		return fmt.Errorf("motiontest: set origin: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case !s.noHoming:
		return fmt.Errorf("motiontest: set origin: %w", motion.ErrHomes)
	case s.state != motion.StateIdle:
		return fmt.Errorf("motiontest: set origin: the stage is %v: it must be Idle", s.state)
	}
	s.pos = p
	return nil
}

// Close makes every later call fail with ErrClosed.
func (s *Stage) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, "Close")
	s.closed = true
	s.wakeLocked()
	return nil
}
