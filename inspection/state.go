package inspection

import "fmt"

// State is a machine state or a run outcome. The machine is always in one of
// Idle, Running, Stopping, Faulted or EStop; a run ends in one of Completed,
// Canceled, Failed or Aborted (and a run found unfinished at start-up is
// marked interrupted in its record). Transitions go through one function
// that refuses illegal ones; there are no boolean flags for state.
type State int

const (
	Idle     State = iota
	Running        // working through the sites
	Stopping       // running the safe-stop sequence
	Faulted        // latched after a fault, a watchdog stop or a failed safe stop; cleared by Reset
	EStop          // latched by the e-stop; cleared by Reset once the input is released

	Completed // run outcomes
	Canceled
	Failed
	Aborted
)

var stateNames = [...]string{"idle", "running", "stopping", "faulted", "estop", "completed", "canceled", "failed", "aborted"}

func (s State) String() string {
	if s >= 0 && int(s) < len(stateNames) {
		return stateNames[s]
	}
	return fmt.Sprintf("state(%d)", int(s))
}

// Outcome reports whether s is the outcome of a finished run.
func (s State) Outcome() bool { return s >= Completed }

// Latched reports whether s refuses new runs until an explicit reset.
func (s State) Latched() bool { return s == Faulted || s == EStop }

// legal lists the allowed machine transitions.
var legal = map[State][]State{
	Idle:     {Running, Faulted, EStop},
	Running:  {Stopping, Idle},
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
	return fmt.Errorf("inspection: illegal transition %s → %s", from, to)
}
