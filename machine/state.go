package machine

import "fmt"

// State is the machine's state. It is always exactly one of these; the
// transitions between them go through one function (Machine.setLocked)
// that refuses illegal ones. There are no boolean flags for state.
type State int

const (
	// Idle: nothing holds the machine; a claim is granted.
	Idle State = iota
	// Running: an operation holds the machine's claim (a run, homing, a
	// console move or jog, self-test, capture, ...).
	Running
	// Stopping: the claim's operation has ended with a stop or an error
	// and the safe stop is bringing the machine to rest.
	Stopping
	// Faulted: latched by a fault, a watchdog stop or a safe stop that
	// could not complete; Reset clears it.
	Faulted
	// EStop: latched by the e-stop; Reset clears it once the input is
	// released.
	EStop
)

var stateNames = [...]string{"idle", "running", "stopping", "faulted", "estop"}

func (s State) String() string {
	if s >= 0 && int(s) < len(stateNames) {
		return stateNames[s]
	}
	return fmt.Sprintf("state(%d)", int(s))
}

// Latched reports whether s refuses new claims until an explicit Reset.
func (s State) Latched() bool { return s == Faulted || s == EStop }

// legal lists the allowed transitions.
var legal = map[State][]State{
	Idle:     {Running, Faulted, EStop},
	Running:  {Stopping, Idle, Faulted, EStop}, // the last two: a late stop latches a finished claim
	Stopping: {Idle, Faulted, EStop},
	Faulted:  {Idle, EStop},
	EStop:    {Idle},
}

// transition checks that from → to is legal.
func transition(from, to State) error {
	for _, ok := range legal[from] {
		if ok == to {
			return nil
		}
	}
	return fmt.Errorf("machine: illegal transition %s → %s", from, to)
}

// Outcome is how an operation that held the claim ended.
type Outcome int

const (
	// Completed: it did all it was asked to.
	Completed Outcome = iota
	// Canceled: stopped by an operator, the stop button or a shutdown.
	Canceled
	// Failed: an error in the work (not a device's), e.g. results not
	// writable.
	Failed
	// Aborted: stopped by a fault, the watchdog or the e-stop, or a safe
	// stop that could not complete.
	Aborted
)

var outcomeNames = [...]string{"completed", "canceled", "failed", "aborted"}

func (o Outcome) String() string {
	if o >= 0 && int(o) < len(outcomeNames) {
		return outcomeNames[o]
	}
	return fmt.Sprintf("outcome(%d)", int(o))
}
