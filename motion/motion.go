// Package motion holds the stage abstraction: the Stage interface that the
// inspection workflow consumes, the units it speaks in, and the errors that
// callers test for. Drivers live in sub-packages (motion/grbl); the simulated
// board implements the same interface through the real driver over a pty.
package motion

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
)

// Distance is a signed length in micrometres (µm). GRBL reports positions in
// millimetres with three decimals, so one micrometre is its resolution.
type Distance int64

// Common distances.
const (
	Micrometre Distance = 1
	Millimetre Distance = 1000
)

// MM converts a length in millimetres to a Distance, rounding to the nearest
// micrometre.
func MM(mm float64) Distance { return Distance(math.Round(mm * 1000)) }

// Millimetres returns d in millimetres.
func (d Distance) Millimetres() float64 { return float64(d) / 1000 }

// String formats d in millimetres with three decimals, as GRBL does ("12.345mm").
func (d Distance) String() string { return FormatMM(d) + "mm" }

// FormatMM formats d as a bare millimetre number with three decimals
// ("-12.345"), the form GRBL G-code and reports use.
func FormatMM(d Distance) string {
	var buf [24]byte
	return string(AppendMM(buf[:0], d))
}

// AppendMM appends d formatted as FormatMM does to dst and returns the
// extended slice; it allocates only if dst must grow.
func AppendMM(dst []byte, d Distance) []byte {
	u := uint64(d)
	if d < 0 {
		dst = append(dst, '-')
		u = -u // also right for the most negative Distance
	}
	dst = strconv.AppendUint(dst, u/1000, 10)
	f := u % 1000
	return append(dst, '.', byte('0'+f/100), byte('0'+f/10%10), byte('0'+f%10))
}

// Point is a position of the XY stage in machine coordinates.
type Point struct {
	X, Y Distance
}

func (p Point) String() string { return "(" + FormatMM(p.X) + ", " + FormatMM(p.Y) + ")mm" }

// Add returns p+q.
func (p Point) Add(q Point) Point { return Point{p.X + q.X, p.Y + q.Y} }

// Speed is a feed rate in millimetres per minute (GRBL's F word unit).
type Speed float64

// Rect is an axis-aligned region of machine coordinates, Min inclusive and
// Max inclusive.
type Rect struct {
	Min, Max Point
}

// Contains reports whether p lies inside r (edges included).
func (r Rect) Contains(p Point) bool {
	return p.X >= r.Min.X && p.X <= r.Max.X && p.Y >= r.Min.Y && p.Y <= r.Max.Y
}

// State is the stage's machine state as the controller reports it.
type State int

// Stage states, named after GRBL 1.1's status report states.
const (
	StateUnknown State = iota
	StateIdle
	StateRun
	StateHold  // Sub 0: stopped in hold; 1: still decelerating
	StateJog   //
	StateAlarm //
	StateDoor  // Sub 0..3
	StateCheck
	StateHome
	StateSleep
)

var stateNames = [...]string{"Unknown", "Idle", "Run", "Hold", "Jog", "Alarm", "Door", "Check", "Home", "Sleep"}

func (s State) String() string {
	if s >= 0 && int(s) < len(stateNames) {
		return stateNames[s]
	}
	return "State(" + strconv.Itoa(int(s)) + ")"
}

// ParseState maps a state name ("Idle", "Hold", ...) without sub-state to a
// State. It returns StateUnknown and false for anything else.
func ParseState(name string) (State, bool) {
	for i, n := range stateNames {
		if i > 0 && n == name {
			return State(i), true
		}
	}
	return StateUnknown, false
}

// Overrides are the feed, rapid and spindle overrides in percent.
type Overrides struct {
	Feed, Rapid, Spindle int
}

// Status is one status report of the stage.
type Status struct {
	State State
	// Sub is the sub-state for Hold (0 stopped, 1 decelerating) and Door
	// (0..3); -1 when the report had none.
	Sub int
	// MPos is the machine position (X, Y, Z).
	MPos [3]Distance
	// WCO is the work coordinate offset, when the report carried one.
	WCO    [3]Distance
	HasWCO bool
	// Feed in mm/min and spindle speed in rpm, from FS: (or F:).
	Feed    float64
	Spindle float64
	// Ov holds the overrides when the report carried them.
	Ov    Overrides
	HasOv bool
	// Pins lists the input pins reported as triggered (Pn:), e.g. "XYP".
	Pins string
	// BufBlocks and BufBytes are the planner blocks and serial receive bytes
	// available (Bf:), or -1 when absent.
	BufBlocks, BufBytes int
}

// XY returns the machine position of the X and Y axes.
func (s Status) XY() Point { return Point{s.MPos[0], s.MPos[1]} }

// Stopped reports whether the stage is not moving: Idle, Hold:0, Alarm,
// Check, Door:0 or Sleep. Hold:1 is still decelerating and is not stopped.
func (s Status) Stopped() bool {
	switch s.State {
	case StateIdle, StateAlarm, StateCheck, StateSleep:
		return true
	case StateHold, StateDoor:
		return s.Sub == 0
	}
	return false
}

// StateName returns the state as GRBL reports it: "Idle", "Hold:0",
// "Door:1", ...
func (s Status) StateName() string {
	st := s.State.String()
	if s.Sub >= 0 && (s.State == StateHold || s.State == StateDoor) {
		st += ":" + strconv.Itoa(s.Sub)
	}
	return st
}

func (s Status) String() string { return s.StateName() + " at " + s.XY().String() }

// Ready returns nil if a controller in state s executes the motion lines it
// is sent, once homed: Idle, or Alarm (which homing clears), or a state
// this package does not know. Otherwise it returns an error wrapping
// ErrNotReady that names the state and what clears it: a controller held
// (Hold, by a feed-hold button wired to it, say), with its safety door
// open (Door), in check mode or asleep would take the lines and never move,
// and one still moving (Run, Jog, Home) is busy.
func (s Status) Ready() error {
	var why string
	switch s.State {
	case StateHold:
		why = "held (feed hold): it executes no motion until resumed; a reset clears the hold"
	case StateDoor:
		why = "stopped by its safety door: close the door, then reset"
	case StateCheck:
		why = "in check mode ($C): it checks G-code without moving; a reset leaves check mode"
	case StateSleep:
		why = "asleep ($SLP): a reset wakes it"
	case StateRun, StateJog, StateHome:
		why = "still moving: wait for it to stop"
	default:
		return nil
	}
	return fmt.Errorf("%w: the controller reports %s: %s", ErrNotReady, s.StateName(), why)
}

// Stage is an XY stage. All methods that block take a context; cancelling
// that context stops the hardware (a move is feed-held at once) and the call
// returns an error wrapping context.Cause(ctx).
//
// Implementations are safe for concurrent use: Status, Hold and Reset may be
// called while a MoveTo is in progress from another goroutine.
type Stage interface {
	// Halt stops motion as fast as the stage can without losing its
	// position (GRBL: the one-byte feed hold '!') and returns without
	// waiting for the stage to stop (Hold waits). It blocks for nothing but
	// that write, is idempotent, and is safe to call from any goroutine at
	// any time, also while another call is in progress. After Halt the
	// stage executes nothing until Resume or Reset. Every stop calls it
	// first (package machine).
	Halt() error
	// Abort stops motion at once, losing the position (GRBL: the one-byte
	// soft reset 0x18; the steppers stop dead), and returns without
	// waiting for the controller to restart: Reset, called after it,
	// completes the restart. An e-stop and the host's ABORT call it first,
	// instead of Halt. Like Halt it blocks for nothing but that write, is
	// idempotent, and is safe from any goroutine at any time.
	Abort() error
	// Home runs the homing cycle and blocks until it ends. After homing the
	// position is trusted.
	Home(ctx context.Context) error
	// MoveTo moves to the absolute machine position p at feed rate f and
	// blocks until the stage reports Idle at p.
	MoveTo(ctx context.Context, p Point, f Speed) error
	// Status polls the stage once and returns its report.
	Status(ctx context.Context) (Status, error)
	// Hold requests a controlled stop (feed hold) and blocks until the stage
	// reports it has stopped (Hold:0 or Idle). Position is kept.
	Hold(ctx context.Context) error
	// Resume continues after a hold.
	Resume(ctx context.Context) error
	// Reset soft-resets the controller and blocks until it has restarted.
	// Pending commands are discarded. A reset while moving loses position.
	Reset(ctx context.Context) error
	// Unlock clears an alarm lock without homing (position stays untrusted).
	Unlock(ctx context.Context) error
	// SetOrigin declares that the stage, standing still, is at p: for a
	// stage without homing switches, whose controller counts from wherever
	// it powered up. From then on positions are reported and taken so. A
	// stage that homes refuses (an error wrapping ErrHomes), and so does
	// one that is moving. It blocks for one status report.
	SetOrigin(ctx context.Context, p Point) error
	// Close releases the link. It does not move the stage.
	Close() error
}

// Sentinel errors that callers test with errors.Is.
var (
	// ErrAlarm: the controller is in (or entered) an alarm state.
	ErrAlarm = errors.New("motion: stage alarm")
	// ErrRejected: the controller refused a command (error:N).
	ErrRejected = errors.New("motion: command rejected")
	// ErrTimeout: the controller did not answer in time.
	ErrTimeout = errors.New("motion: stage not responding")
	// ErrLinkLost: the serial link closed or failed.
	ErrLinkLost = errors.New("motion: link lost")
	// ErrReset: the controller was reset while a command was pending.
	ErrReset = errors.New("motion: controller reset")
	// ErrNotReady: the controller is in a state in which it does not
	// execute the motion it is sent (see Status.Ready).
	ErrNotReady = errors.New("motion: stage not ready")
	// ErrHomes: SetOrigin on a stage whose origin comes from homing.
	ErrHomes = errors.New("motion: the stage homes: its origin comes from homing")
)
