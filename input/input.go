// Package input reads the operator's safety inputs from GPIO: the stop button
// and the e-stop sense line. Both are periph gpio.PinIn lines watched by one
// goroutine each (Run) with our own debounce; periph's gpioutil.Debounce is
// not used because it ignores its edge argument, forces no pull and never
// applies the debounce time.
//
// # Debounce: leading edge in, steady level out
//
// A stop input must act at once, so the debounce is asymmetric:
//
//   - Activation counts on the leading edge. The first edge after which the
//     line reads active fires the callback (Button's onPress, EStop's
//     onTrip) immediately, with no debounce delay: the latency is one
//     WaitForEdge wake-up and one Read.
//   - From then on the input counts as active, and every further edge is
//     ignored, until the line has read inactive, with no further edge, for
//     Config.Debounce. Only then is the input released and the next
//     activation counts again.
//
// Contact bounce on press and on release is therefore exactly one press;
// press, release (held off for Debounce), press is two. An edge after which
// the level already reads inactive again is ignored: a glitch shorter than
// the wake-up is no press. A glitch to the active level that is still there
// when the loop reads the line is a press: for a stop input a spurious stop
// is the safe failure, a stop delayed by Debounce is not. A release shorter
// than Debounce followed by a new press is part of the same press.
//
// The level, not the edge, decides: an edge only wakes the loop, and every
// Poll the level is sampled even without an edge, so stale or missed edges
// are harmless (a missed press edge is acted on at the next Poll).
//
// # A line that can no longer be read
//
// A pin that also implements Checker (board.Line: its GPIO chip can
// disappear, e.g. a USB GPIO expander unplugged) is asked at every wake-up
// whether it can still be read. Once it cannot, its level means nothing:
// the input counts as active, since for a stop input a spurious stop is the
// safe failure (the button presses once, the e-stop trips and stays engaged:
// Released is never closed again), and Run returns the pin's error.
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
	// Debounce is how long the line must read inactive, with no further
	// edge, before a release counts and the next activation is accepted.
	// Activation itself is not delayed (leading edge; see the package
	// documentation). Zero means DefaultDebounce (20 ms).
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

// Checker is a pin that can tell whether its reads still mean something
// (board.Line: its GPIO chip may be gone). See the package documentation.
type Checker interface {
	// Err returns nil while the pin can be read. Safe for concurrent use.
	Err() error
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
// goroutine: change(true) at once on the first reading of the active level
// (leading edge), change(false) once the line has read inactive with no edge
// for Debounce. It returns nil when ctx ends, or an error if the pin cannot
// be configured or (Checker) can no longer be read.
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
	active := false
	// lost ends Run on a pin that can no longer be read: it counts as
	// active, and the change is reported if it is one.
	lost := func() error {
		c, ok := pin.(Checker)
		if !ok {
			return nil
		}
		err := c.Err()
		if err == nil {
			return nil
		}
		if !active {
			l.active.Store(true)
			change(true)
		}
		return fmt.Errorf("input: %s can no longer be read (counted as active): %w", pin, err)
	}
	// Every reading is confirmed by the pin (Checker) before it counts.
	lvl := l.level()
	if err := lost(); err != nil {
		return err
	}
	active = lvl
	l.active.Store(active)
	first(active)

	var (
		releasing bool      // active, and the line reads inactive
		since     time.Time // last edge (or first sighting) of the inactive level
	)
	for {
		if ctx.Err() != nil {
			return nil
		}
		wait := l.cfg.Poll
		if releasing {
			left := l.cfg.Debounce - time.Since(since)
			if left <= 0 {
				releasing = false
				released := !l.level()
				if err := lost(); err != nil {
					return err
				}
				if released {
					active = false
					l.active.Store(false)
					change(false)
				}
				continue
			}
			wait = min(wait, left)
		}
		edge := pin.WaitForEdge(wait)
		lvl := l.level()
		if err := lost(); err != nil {
			return err
		}
		switch {
		case lvl && !active:
			// The leading edge (or a missed one, seen by sampling): act now.
			active = true
			l.active.Store(true)
			change(true)
		case lvl:
			releasing = false // bounce, or still held
		case !active:
			// Inactive and released: an unconfirmed edge or a sample.
		case edge || !releasing:
			releasing, since = true, time.Now() // released, or it bounced again
		}
	}
}

// Button is the physical stop button. A press counts on its leading edge:
// the first edge after which the line reads active calls onPress at once.
// Further edges are ignored until the button has been released, reading
// inactive with no edge, for Debounce: a burst of bounce edges on press or
// release is one press, and releasing (for at least Debounce) and pressing
// again is a second press. A button already held when Run starts is not a
// press; its release and the next press are.
type Button struct {
	l       line
	onPress func()
	presses atomic.Uint64
}

// NewButton returns a button that calls onPress once per press.
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
// pin could not be configured, could no longer be read (after one last
// press: see Checker), or Run was already running.
func (b *Button) Run(ctx context.Context) error {
	return b.l.run(ctx, func(bool) {}, func(active bool) {
		if active {
			b.presses.Add(1)
			b.onPress()
		}
	})
}

// Pressed reports the debounced level: true from the leading edge of a press
// until Debounce after its release. Safe for concurrent use.
func (b *Button) Pressed() bool { return b.l.active.Load() }

// Presses returns how many presses have been reported since NewButton.
func (b *Button) Presses() uint64 { return b.presses.Load() }

// String names the button by its pin.
func (b *Button) String() string { return "button " + b.l.cfg.Pin.String() }

// EStop is the e-stop sense input. Every activation trips it (onTrip) on its
// leading edge, with no debounce delay, including an e-stop already engaged
// when Run starts. Its release counts only once the input has read released,
// with no edge, for Debounce; until then it stays Active and bounce cannot
// trip it twice. Clearing the machine's latched e-stop state is not done
// here: the machine may be reset only once Released is closed and an
// operator resets it explicitly.
type EStop struct {
	l      line
	onTrip func()
	trips  atomic.Uint64

	mu       sync.Mutex
	known    bool          // Run has read the input
	released chan struct{} // closed while the input is released
}

// NewEStop returns an e-stop input that calls onTrip on each activation
// (leading edge). It does not touch the pin; Run does.
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
// engaged at start-up trips at once); later activations trip on their
// leading edge, releases are debounced. onTrip is
// called from Run's goroutine and must not block. A non-nil error means the
// pin could not be configured, could no longer be read (the e-stop then
// stays engaged: see Checker), or Run was already running.
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

// Active reports whether the e-stop input is engaged: true from the leading
// edge of an activation until Debounce after its release. Until Run
// has read the input it reports true: an unknown e-stop is treated as
// engaged. Safe for concurrent use.
func (e *EStop) Active() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return !e.known || e.l.active.Load()
}

// Released returns a channel that is closed once the input has read
// released for Debounce. While the e-stop is engaged, or before Run has read the input,
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
