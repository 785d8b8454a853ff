// Package grblsim emulates a GRBL 1.1h motion controller for an XY stage.
//
// The emulator speaks the firmware's serial protocol over any byte stream
// (Serve) or over the slave side of a real pseudo-terminal (OpenPTY), so the
// production driver opens it through go.bug.st/serial exactly as it would a
// USB serial adapter. Its control flow is a port of the firmware's own
// (protocol.c, system.c, gcode.c, motion_control.c, limits.c, report.c of
// gnea/grbl 1.1h): real-time bytes are picked off the wire at once as the
// serial interrupt does, and take effect at the same check points of the
// main loop; lines go through a 128-byte receive buffer and a 15-block
// planner; the stage follows a trapezoidal velocity profile in simulated
// time.
//
// Firmware behaviours a host must cope with, and which this emulator
// therefore reproduces:
//   - A line ends at '\n' or '\r'; "\r\n" is two lines and gets two "ok".
//   - A feed hold ('!') while Idle enters Hold:0, and while in Hold:0 the
//     main loop is suspended: lines are neither executed nor answered until
//     '~' (cycle start) or 0x18 (soft reset).
//   - "ALARM:n" is followed by a 500 ms pause (scaled by TimeScale) during
//     which nothing, not even '?', is answered.
//   - After ALARM:1/ALARM:2 and "[MSG:Reset to continue]" nothing but 0x18
//     is acted on; '?' is not answered. A 0x18 sent before that message is
//     discarded (the firmware clears it).
//   - A line interrupted by a soft reset (waiting for planner space, a G4
//     dwell, a $H homing cycle, the soft-limit alarm it raised) is still
//     answered "ok" (after any ALARM line) before the banner. Bytes
//     received between the 0x18 and the controller's re-initialisation are
//     discarded: wait for the banner.
//   - '?' during a homing cycle is answered once, when homing ends.
//   - $$ works in Alarm (error:8 only while running or holding); "$Q" and
//     other non-numeric '$' words are error:2, unknown setting numbers
//     error:3; a non-letter word start is error:1, an unknown letter
//     error:20.
//
// Deviations from the firmware (kept small on purpose): G2/G3 arcs, G10,
// G28, G30, G92, G38.x, G43.1 and G93 are refused with error:20; work
// coordinate offsets are always zero; $13 (report inches) is stored but
// positions are always reported in mm; the safety-door byte 0x84 is
// counted and ignored; overrides take effect at the start of the next
// planner block; each planner block starts and ends at rest (no junction
// speeds); the homing cycle is one straight move to where the firmware's
// cycle leaves the stage, taking Config.HomingTime, and does not search
// for the switches at $24/$25; startup lines ($N0=...) are stored but
// never run; "$HX" style single-axis homing is refused with error:3
// without the firmware's state side effect; a jog without axis words does
// not move; the Z axis is neither homed nor limited.
//
// # The machine
//
// The settings are GRBL 1.1h's own defaults (defaults.h, DEFAULTS_GENERIC:
// 250 steps/mm, 500 mm/min, 10 mm/s², 200 mm of travel, $10=1 so reports
// carry MPos and no Bf:, homing disabled) unless Config says otherwise.
// Every position is on the step grid of $100..$102 exactly as the firmware
// computes it: a target is parsed and multiplied by the steps per mm in
// 32-bit floating point and rounded to whole steps (lround), and a
// reported position is those steps divided by the steps per mm, printed
// with three decimals. At 250 steps/mm "G1 X-20.002" ends at -20.004.
//
// Machine space is the firmware's: homing ($H, $22=1) sets machine zero at
// the limit switch an axis homes to ($23: the + end unless its bit is
// set), so the soft-limit box ($20) is -$130..0 (X) and -$131..0 (Y), and
// the stage rests pull-off ($27) away from the switch: at -$27 after homing
// to the + end, at -$13x+$27 after homing to the - end. A firmware built
// with HOMING_FORCE_SET_ORIGIN (Config.ForceSetOrigin; $I reports option
// Z) sets zero where the stage rests after the pull-off instead, so an
// axis homed to its - end has the box 0..$13x ("positive space"). The
// limit switches sit where homing finds them; a status report names the
// ones the stage is on (Pn:X, Pn:Y) and any pins InjectPins holds, and with
// hard limits ($21=1) reaching a switch outside homing raises ALARM:1. At
// power-up the stage rests where homing would leave it, and GRBL counts
// from zero there.
//
// # The link
//
// The 128-byte receive buffer drops bytes that arrive while it is full and
// the main loop is busy (waiting for planner space, a dwell, a hold, a
// homing cycle, an alarm, or a write of its output that has blocked for
// 110 ms because the host stopped reading). While the main loop is free it empties the
// buffer at once, as the firmware does well within 115200 baud; bursts
// written to the pty all at once are therefore not dropped then.
//
// A noisy link (Config.Noise, InjectNoise) corrupts a given fraction of
// the lines the controller sends, chosen by a seeded generator: one byte
// of the line is dropped or replaced by a random byte, its line end is
// kept. What the host sends is not corrupted: GRBL has no checksum, and a
// corrupted command is answered with an error or runs as received.
package grblsim

import (
	"errors"
	"math"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/waferd/waferd/motion"
)

// Config describes the emulated machine. The zero value of every field
// selects its default: a GRBL 1.1h controller with the firmware's default
// settings. The settings are built from Travel, MaxRate, Accel and
// HomingRequired, then Settings; $RST=$ restores that result, as the
// firmware restores the defaults compiled into it.
type Config struct {
	// Settings overrides settings as "$N=value" would, keyed by N:
	// {100: 800, 110: 6000, 10: 3}. Values are not validated beyond what
	// "$N=value" checks; an unknown N panics in New.
	Settings map[int]float64
	// ForceSetOrigin models a firmware built with HOMING_FORCE_SET_ORIGIN
	// (see the package documentation): homing sets zero where the stage
	// rests after the pull-off.
	ForceSetOrigin bool
	// Travel, if set, places machine space on the X and Y axes: $130 and
	// $131 become its extent from 0, and a box on the positive side (Min
	// 0 or more) makes the machine home to its - ends with ForceSetOrigin
	// set, so that its space is 0..Max; a box on the negative side (Max 0
	// or less) is stock GRBL homing to the + ends, space Min..0. A box
	// across 0 is taken as its size on the negative side. The other bound
	// of Travel is only a size: machine space always ends at 0.
	Travel motion.Rect
	// MaxRate, if set, is $110..$112 (mm/min): the fastest G0 and G1 on
	// every axis.
	MaxRate float64
	// Accel, if set, is $120..$122 (mm/s²).
	Accel float64
	// HomingRequired sets $22=1 and $20=1: the controller powers up in Alarm
	// ("[MSG:'$H'|'$X' to unlock]") and soft limits are enforced.
	HomingRequired bool
	// HomingTime is the simulated time a homing cycle takes. Default 1.5 s.
	HomingTime time.Duration
	// TimeScale > 1 runs the machine faster than real time with identical
	// logic: every simulated duration (motion, dwell, homing, the firmware's
	// 500 ms alarm pause) takes 1/TimeScale of it in wall time. Default 1.
	TimeScale float64
	// Noise is the fraction (0..1) of the lines the controller sends that
	// the link corrupts (see the package documentation); NoiseSeed seeds
	// the choice. Default 0: a clean link.
	Noise     float64
	NoiseSeed uint64
	// Logf, if set, receives a debug log of the traffic and state changes.
	// It is called from the emulator's goroutines, mostly with its lock
	// held: it must not call back into the Emulator.
	Logf func(format string, args ...any)
}

const defaultHomingTime = 1500 * time.Millisecond

func (c *Config) setDefaults() {
	if c.HomingTime <= 0 {
		c.HomingTime = defaultHomingTime
	}
	if c.TimeScale <= 0 || math.IsInf(c.TimeScale, 0) || math.IsNaN(c.TimeScale) {
		c.TimeScale = 1
	}
	c.Noise = clampFraction(c.Noise)
}

func clampFraction(f float64) float64 {
	if math.IsNaN(f) || f <= 0 {
		return 0
	}
	return min(f, 1)
}

// ErrClosed is returned by Serve and OpenPTY once Close has been called.
var ErrClosed = errors.New("grblsim: emulator closed")

// Counters are running totals since New, for tests.
type Counters struct {
	Lines         int // lines executed: each '\n' or '\r' the main loop reached, empty lines included
	StatusQueries int // '?' bytes received
	FeedHolds     int // '!' bytes received
	CycleStarts   int // '~' bytes received
	Resets        int // 0x18 bytes received
	JogCancels    int // 0x85 bytes received
	Overrides     int // override bytes received (0x90–0x9D, 0x9E, 0xA0)
	OtherRealtime int // 0x84 (safety door), recognised but ignored
	Unknown       int // other bytes above 0x7F, dropped as the firmware does
	RxDropped     int // bytes dropped because the 128-byte receive buffer was full
	OKDropped     int // "ok" responses suppressed by InjectDropOK
	Muted         int // output bytes discarded while InjectMute was on
	Corrupted     int // output lines the noisy link corrupted (see Config.Noise)
}

// Emulator is an emulated GRBL 1.1h controller with its XY stage. Its
// methods are safe for concurrent use.
type Emulator struct {
	cfg   Config
	scale float64
	epoch time.Time
	wake  chan struct{} // the reader (or an observer) has set a flag: the main loop should look

	// Used by the main loop goroutine only.
	w     writer
	timer *time.Timer

	mu sync.Mutex
	fw // the firmware state, guarded by mu

	onRT    func(b byte, at time.Time)
	onState func(st motion.State, sub int, at time.Time)
	// lastSt and lastSub are the state last seen by noteState; notes are
	// the changes not yet handed to onState (main loop only, under mu).
	lastSt  motion.State
	lastSub int
	notes   []stateNote

	// Fault injection.
	mute      bool
	dropOK    int
	stuckHold bool
	noise     float64
	rng       *rand.Rand // chooses the lines noise corrupts, and how
	pins      string     // input pins held active by InjectPins

	cnt Counters

	serving     bool
	rw          any // the stream being served, for InjectHangup
	cancelServe func(error)
	closed      bool
	pty         *ptyLine
}

type writer interface{ Write([]byte) (int, error) }

// New returns an emulator in its power-up state. It does not serve
// anything until Serve or OpenPTY is called.
func New(cfg Config) *Emulator {
	cfg.setDefaults()
	e := &Emulator{
		cfg:   cfg,
		scale: cfg.TimeScale,
		wake:  make(chan struct{}, 1),
		noise: cfg.Noise,
		rng:   rand.New(rand.NewPCG(cfg.NoiseSeed, 0x6772626c)),
	}
	e.epoch = time.Now()
	e.rxSpace = sync.NewCond(&e.mu)
	e.restoreSettings()
	// The stage rests where homing would leave it; GRBL counts from zero
	// at power-up.
	e.off = e.homedRest()
	e.powerUp()
	return e
}

// Position returns the true position of the stage, which is what a camera
// on it would see: during motion it moves continuously, and it differs
// from the reported machine position until the machine has been homed
// after power-up.
func (e *Emulator) Position() motion.Point {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.advance()
	return motion.Point{X: motion.MM(e.pos[0] + e.off[0]), Y: motion.MM(e.pos[1] + e.off[1])}
}

// State returns the controller state as a status report would give it, and
// its sub-state (Hold 0 or 1), or -1 when it has none.
func (e *Emulator) State() (st motion.State, sub int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.stateLocked()
}

func (e *Emulator) stateLocked() (st motion.State, sub int) {
	switch e.state {
	case stIdle:
		return motion.StateIdle, -1
	case stCycle:
		return motion.StateRun, -1
	case stHold:
		if e.suspend&suspJogCancel != 0 {
			return motion.StateJog, -1
		}
		if e.suspend&suspHoldComplete != 0 {
			return motion.StateHold, 0
		}
		return motion.StateHold, 1
	case stJog:
		return motion.StateJog, -1
	case stHoming:
		return motion.StateHome, -1
	case stAlarm:
		return motion.StateAlarm, -1
	case stCheck:
		return motion.StateCheck, -1
	case stSleep:
		return motion.StateSleep, -1
	}
	return motion.StateUnknown, -1
}

// Moving reports whether the stage is moving (its velocity is not zero, or
// a homing cycle is running).
func (e *Emulator) Moving() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.advance()
	return e.vel != 0 || e.homing != nil
}

// Counters returns the running totals.
func (e *Emulator) Counters() Counters {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.cnt
}

// OnRealtime sets fn to be called, from the goroutine reading the wire, the
// moment a real-time byte (0x18, '?', '!', '~' or a recognised byte above
// 0x7F) is read, before the emulator acts on it. fn must not block; it may
// call the observers. nil removes the hook.
func (e *Emulator) OnRealtime(fn func(b byte, at time.Time)) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.onRT = fn
}

// OnState sets fn to be called whenever the controller state, as State
// reports it, changes: at is the moment the firmware's main loop made the
// change (for example Hold:1 turning Hold:0 when a feed hold has come to
// rest), which is when a status report would first show it. fn is called
// from the emulator's main loop goroutine without its lock held, in order,
// shortly after at (before the main loop next waits or writes); it must not
// block, and it may call the observers (State, Position, ...). A state held
// only between two check points of the main loop, with no wait in between,
// may not be reported. nil removes the hook.
func (e *Emulator) OnState(fn func(st motion.State, sub int, at time.Time)) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.onState = fn
	e.lastSt, e.lastSub = e.stateLocked()
	e.notes = e.notes[:0]
}

// stateNote is a state change waiting to be handed to the OnState hook.
type stateNote struct {
	st  motion.State
	sub int
	at  time.Time
}

// noteState records a change of the reported state for the OnState hook.
// Called by the main loop with mu held.
func (e *Emulator) noteState() {
	if e.onState == nil {
		return
	}
	st, sub := e.stateLocked()
	if st == e.lastSt && sub == e.lastSub {
		return
	}
	e.lastSt, e.lastSub = st, sub
	e.notes = append(e.notes, stateNote{st: st, sub: sub, at: time.Now()})
}

// takeNotes returns the pending state changes and the hook to hand them
// to. Called by the main loop with mu held.
func (e *Emulator) takeNotes() ([]stateNote, func(motion.State, int, time.Time)) {
	if len(e.notes) == 0 || e.onState == nil {
		e.notes = e.notes[:0]
		return nil, nil
	}
	n := append([]stateNote(nil), e.notes...)
	e.notes = e.notes[:0]
	return n, e.onState
}

// InjectMute stops (on) or restarts all output: while muted the controller
// keeps reading and executing but its replies, status reports and banners
// are lost, as with a broken transmit line.
func (e *Emulator) InjectMute(on bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.mute = on
}

// InjectNoise sets the fraction (0..1) of the controller's lines that the
// link corrupts from now on (see Config.Noise); 0 makes it clean.
func (e *Emulator) InjectNoise(fraction float64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.noise = clampFraction(fraction)
}

// InjectPins holds input pins active, as GRBL's Pn: field names them
// ("P" probe, "D" door, "H" hold, "R" soft reset, "S" cycle start; "X",
// "Y", "Z" limit switches besides those the stage is on), until the next
// call; "" releases them. They only show in status reports: the pins do
// not act.
func (e *Emulator) InjectPins(pins string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.pins = pins
}

// InjectDropOK silently drops the next n "ok" responses (errors are still
// sent).
func (e *Emulator) InjectDropOK(n int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.dropOK = max(n, 0)
}

// InjectStuckHold makes a feed hold never complete (on): the stage
// decelerates and stops but the controller keeps reporting Hold:1, so a
// soft reset then raises ALARM:3. Turning it off completes a stuck hold.
func (e *Emulator) InjectStuckHold(on bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.stuckHold = on
	if !on && e.holdStopped {
		e.holdStopped = false
		e.execState |= execCycleStop
		e.signal()
	}
}

// InjectAlarm raises ALARM:code now, the way a limit switch does: the
// steppers stop at once (mid-move the position is what it was at that
// instant) and the controller resets itself. Codes 1 and 2 then latch
// until a soft reset ("[MSG:Reset to continue]"); any other code is
// followed by the banner and "[MSG:'$H'|'$X' to unlock]".
func (e *Emulator) InjectAlarm(code int) {
	if code <= 0 || code > 255 {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.logf("inject ALARM:%d", code)
	e.mcReset()
	e.execAlarm = code
	e.signal()
}

// InjectHangup closes the line: with OpenPTY it closes the pty master and
// the slave descriptor the emulator holds, so the driver's reads fail; with
// Serve it closes the stream if it is an io.Closer. Serving ends.
func (e *Emulator) InjectHangup() {
	e.mu.Lock()
	p, rw := e.pty, e.rw
	e.mu.Unlock()
	e.logf("inject hangup")
	if p != nil {
		p.closeFiles()
		return
	}
	if c, ok := rw.(interface{ Close() error }); ok {
		_ = c.Close()
	}
}

// Close stops serving, closes the pty and waits for the goroutines OpenPTY
// started. A Serve call of the caller's own returns ErrClosed. Idempotent.
func (e *Emulator) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	p, cancel := e.pty, e.cancelServe
	e.mu.Unlock()
	if cancel != nil {
		cancel(ErrClosed)
	}
	if p == nil {
		return nil
	}
	err := p.closeFiles()
	<-p.done
	return err
}

// signal wakes the main loop; never blocks. Called with mu held or not.
func (e *Emulator) signal() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

func (e *Emulator) logf(format string, args ...any) {
	if e.cfg.Logf != nil {
		e.cfg.Logf("grblsim: "+format, args...)
	}
}

// simNow is the simulated time since New.
func (e *Emulator) simNow() time.Duration {
	return time.Duration(float64(time.Since(e.epoch)) * e.scale)
}

// wall converts a simulated duration to wall time.
func (e *Emulator) wall(sim time.Duration) time.Duration {
	return time.Duration(float64(sim) / e.scale)
}
