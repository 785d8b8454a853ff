// Package input reads the operator's safety inputs from GPIO: the stop button
// and the e-stop sense line. Both are periph gpio.PinIn lines watched by one
// goroutine each (Run) with our own debounce; periph's gpioutil.Debounce is
// not used because it ignores its edge argument, forces no pull and never
// applies the debounce time.
//
// The debounce is level based: an edge only wakes the loop, the decision is
// taken on the level read after it, and a new level counts once it has been
// stable for Config.Debounce since the last edge. Stale or missed edges are
// therefore harmless, and every Poll the level is sampled even without an
// edge.
//
// Run never calls Halt to interrupt WaitForEdge (racy on gpioioctl lines):
// it waits at most Poll at a time and checks its context in between, so it
// returns within Poll of cancellation.
package input

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"periph.io/x/conn/v3/gpio"
)

// Defaults for Config.
const (
	DefaultDebounce = 20 * time.Millisecond
	DefaultPoll     = 100 * time.Millisecond
)

// drainWait is how long one drain step waits for a stale edge after In. It
// must be clearly positive: gpioioctl's WaitForEdge(0) waits forever, and a
// deadline that has already passed when the read starts reads nothing.
const drainWait = time.Millisecond

// maxDrain bounds the drain so that a chattering line cannot hold Run.
const maxDrain = 64

// Config wires one input line.
type Config struct {
	// Pin is the input line (required). Run configures it with
	// In(Pull, gpio.BothEdges); nothing touches it before Run.
	Pin gpio.PinIn
	// ActiveLow: the input is active (pressed, tripped) when the line reads
	// Low. Typical for a switch to ground with a pull-up.
	ActiveLow bool
	// Pull is the bias applied by In; gpio.PullNoChange (the zero value)
	// leaves the line's bias alone (e.g. an external resistor).
	Pull gpio.Pull
	// Debounce is how long a new level must stay unchanged, with no further
	// edge, before it counts. Zero means DefaultDebounce (20 ms).
	Debounce time.Duration
	// Poll is the longest single WaitForEdge: Run notices cancellation and
	// re-samples the level at least this often. Zero means DefaultPoll
	// (100 ms).
	Poll time.Duration
}

func (c *Config) check(what string) error {
	if c.Pin == nil {
		return fmt.Errorf("input: %s: no pin configured", what)
	}
	if c.Debounce < 0 {
		return fmt.Errorf("input: %s %s: negative debounce %v", what, c.Pin, c.Debounce)
	}
	if c.Poll < 0 {
		return fmt.Errorf("input: %s %s: negative poll %v", what, c.Pin, c.Poll)
	}
	if c.Debounce == 0 {
		c.Debounce = DefaultDebounce
	}
	if c.Poll == 0 {
		c.Poll = DefaultPoll
	}
	return nil
}

// ErrRunning is returned by Run when the same input is already being run.
var ErrRunning = errors.New("input: Run already in progress")

// line is the debounced level of one input, shared by Button and EStop.
type line struct {
	cfg     Config
	running atomic.Bool
	active  atomic.Bool // debounced level
}

// level reads the raw line and converts it to active/inactive.
func (l *line) level() bool {
	return (l.cfg.Pin.Read() == gpio.High) != l.cfg.ActiveLow
}

// run configures the line and calls first with the initial level, then
// change with every debounced change of level, all from the calling
// goroutine. It returns nil when ctx ends, or an error if the pin cannot be
// configured.
func (l *line) run(ctx context.Context, first, change func(active bool)) error {
	if !l.running.CompareAndSwap(false, true) {
		return fmt.Errorf("%w on %s", ErrRunning, l.cfg.Pin)
	}
	defer l.running.Store(false)
	if ctx.Err() != nil {
		return nil
	}
	pin := l.cfg.Pin
	if err := pin.In(l.cfg.Pull, gpio.BothEdges); err != nil {
		return fmt.Errorf("input: configure %s (pull %s, both edges): %w", pin, l.cfg.Pull, err)
	}
	// Drop edges queued before we were listening; the level read below is
	// the truth.
	for i := 0; i < maxDrain && pin.WaitForEdge(drainWait); i++ {
	}
	stable := l.level()
	l.active.Store(stable)
	first(stable)

	var (
		pending bool      // the raw level differs from stable
		since   time.Time // last edge (or first sighting) of the pending level
	)
	for {
		if ctx.Err() != nil {
			return nil
		}
		wait := l.cfg.Poll
		if pending {
			left := l.cfg.Debounce - time.Since(since)
			if left <= 0 {
				pending = false
				if lvl := l.level(); lvl != stable {
					stable = lvl
					l.active.Store(lvl)
					change(lvl)
				}
				continue
			}
			wait = min(wait, left)
		}
		edge := pin.WaitForEdge(wait)
		switch lvl := l.level(); {
		case lvl == stable:
			pending = false // bounced back, or an edge of the stable level
		case edge || !pending:
			pending, since = true, time.Now() // a new level, or it bounced again
		}
	}
}

// Button is the physical stop button. A press is a transition to active that
// stays active, with no further edge, for Debounce: a burst of bounce edges
// is one press, and releasing and pressing again is a second press. A button
// already held when Run starts is not a press; its release and the next
// press are.
type Button struct {
	l       line
	onPress func()
	presses atomic.Uint64
}

// NewButton returns a button that calls onPress once per debounced press.
// It does not touch the pin; Run does.
func NewButton(cfg Config, onPress func()) (*Button, error) {
	if err := cfg.check("button"); err != nil {
		return nil, err
	}
	if onPress == nil {
		return nil, fmt.Errorf("input: button %s: nil onPress", cfg.Pin)
	}
	return &Button{l: line{cfg: cfg}, onPress: onPress}, nil
}

// Run configures the pin and watches it until ctx ends; then it returns nil
// within Config.Poll. onPress is called from Run's goroutine, so it must not
// block (Stop(stop.Button) only cancels a context). A non-nil error means the
// pin could not be configured, or Run was already running.
func (b *Button) Run(ctx context.Context) error {
	return b.l.run(ctx, func(bool) {}, func(active bool) {
		if active {
			b.presses.Add(1)
			b.onPress()
		}
	})
}

// Pressed reports the debounced level: true while the button is held. Safe
// for concurrent use.
func (b *Button) Pressed() bool { return b.l.active.Load() }

// Presses returns how many presses have been reported since NewButton.
func (b *Button) Presses() uint64 { return b.presses.Load() }

// String names the button by its pin.
func (b *Button) String() string { return "button " + b.l.cfg.Pin.String() }

// EStop is the e-stop sense input. Every debounced activation trips it
// (onTrip), including an e-stop already engaged when Run starts. Clearing the
// machine's latched e-stop state is not done here: the machine may be reset
// only once Released is closed and an operator resets it explicitly.
type EStop struct {
	l      line
	onTrip func()
	trips  atomic.Uint64

	mu       sync.Mutex
	known    bool          // Run has read the input
	released chan struct{} // closed while the input is released
}

// NewEStop returns an e-stop input that calls onTrip on each debounced
// activation. It does not touch the pin; Run does.
func NewEStop(cfg Config, onTrip func()) (*EStop, error) {
	if err := cfg.check("e-stop"); err != nil {
		return nil, err
	}
	if onTrip == nil {
		return nil, fmt.Errorf("input: e-stop %s: nil onTrip", cfg.Pin)
	}
	return &EStop{l: line{cfg: cfg}, onTrip: onTrip, released: make(chan struct{})}, nil
}

// Run configures the pin and watches it until ctx ends; then it returns nil
// within Config.Poll. The first reading is taken without debounce (an e-stop
// engaged at start-up trips at once); later changes are debounced. onTrip is
// called from Run's goroutine and must not block. A non-nil error means the
// pin could not be configured, or Run was already running.
func (e *EStop) Run(ctx context.Context) error {
	return e.l.run(ctx, e.set, e.set)
}

func (e *EStop) set(active bool) {
	e.mu.Lock()
	e.known = true
	if active {
		select {
		case <-e.released:
			e.released = make(chan struct{})
		default:
		}
	} else {
		select {
		case <-e.released:
		default:
			close(e.released)
		}
	}
	e.mu.Unlock()
	if active {
		e.trips.Add(1)
		e.onTrip()
	}
}

// Active reports whether the e-stop input is engaged (debounced). Until Run
// has read the input it reports true: an unknown e-stop is treated as
// engaged. Safe for concurrent use.
func (e *EStop) Active() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return !e.known || e.l.active.Load()
}

// Released returns a channel that is closed once the input is read released
// (debounced). While the e-stop is engaged, or before Run has read the input,
// the channel is open; each trip hands out a new channel. Safe for concurrent
// use.
func (e *EStop) Released() <-chan struct{} {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.released
}

// Trips returns how many activations have been reported since NewEStop.
func (e *EStop) Trips() uint64 { return e.trips.Load() }

// String names the e-stop input by its pin.
func (e *EStop) String() string { return "e-stop " + e.l.cfg.Pin.String() }
