package inspection

import (
	"fmt"
	"sync"
)

// State is the runner's state. Transitions go through one function that
// refuses illegal ones; there are no boolean flags for state.
type State int

const (
	Idle      State = iota
	Running         // working through the sites
	Stopping        // running the safe-stop sequence
	Completed       // terminal states: the last run's outcome, until the next run
	Canceled
	Failed
	Aborted
)

var stateNames = [...]string{"idle", "running", "stopping", "completed", "canceled", "failed", "aborted"}

func (s State) String() string {
	if s >= 0 && int(s) < len(stateNames) {
		return stateNames[s]
	}
	return fmt.Sprintf("state(%d)", int(s))
}

// Terminal reports whether s is the outcome of a finished run.
func (s State) Terminal() bool { return s >= Completed }

// legal lists the allowed transitions.
var legal = map[State][]State{
	Idle:      {Running},
	Running:   {Stopping, Completed, Failed},
	Stopping:  {Canceled, Failed, Aborted},
	Completed: {Running, Idle},
	Canceled:  {Running, Idle},
	Failed:    {Running, Idle},
	Aborted:   {Running, Idle},
}

// machine guards the runner state. Safe for concurrent use.
type machine struct {
	mu sync.Mutex
	s  State
}

func (m *machine) get() State {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.s
}

// to moves to next if that is legal from the current state.
func (m *machine) to(next State) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, ok := range legal[m.s] {
		if ok == next {
			m.s = next
			return nil
		}
	}
	return fmt.Errorf("inspection: illegal transition %s → %s", m.s, next)
}
