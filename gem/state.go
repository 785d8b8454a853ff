package gem

import "fmt"

// The two GEM state machines of SEMI E30, as small as they can be: the
// communication state (is a host talking to us?) and the control state
// (may it command the machine?). Both are changed only by the Equipment,
// under its lock, through the functions below; the tests walk their
// tables.

// CommState is E30's communication state. DISABLED is not modelled: an
// equipment interface that is switched off ([gem] enabled = false) does
// not exist.
type CommState int

const (
	// CommNoSession: NOT COMMUNICATING, no HSMS session is selected (no
	// host connected).
	CommNoSession CommState = iota
	// CommWaitCRA: NOT COMMUNICATING, WAIT CRA: our S1F13 is out and we
	// wait for the host's S1F14 (T3).
	CommWaitCRA
	// CommWaitDelay: NOT COMMUNICATING, WAIT DELAY: the last S1F13 was
	// denied or not answered; the next goes out after the establish-
	// communications timeout.
	CommWaitDelay
	// CommCommunicating: COMMUNICATING: messages flow both ways.
	CommCommunicating
)

var commNames = [...]string{"not communicating (no host)", "not communicating (waiting for the host's S1F14)",
	"not communicating (retrying S1F13)", "communicating"}

func (s CommState) String() string {
	if s >= 0 && int(s) < len(commNames) {
		return commNames[s]
	}
	return fmt.Sprintf("comm(%d)", int(s))
}

// commInput is what changes the communication state.
type commInput int

const (
	commSelected  commInput = iota // an HSMS session was selected: send S1F13
	commLost                       // the session ended (TCP down, separate, T7, linktest)
	commAccepted                   // the host answered our S1F13 with COMMACK 0
	commDenied                     // the host denied our S1F13, or did not answer within T3
	commHostAsked                  // the host's S1F13 (we answer COMMACK 0)
	commRetry                      // the establish-communications timeout ran out: send S1F13 again
	commFailed                     // a transaction failed (no reply within T3)
)

// nextComm is E30's communication state diagram (figure 4.1 of E30):
// which state follows s on in. Inputs that do not apply leave s as it is.
func nextComm(s CommState, in commInput) CommState {
	switch {
	case in == commLost:
		return CommNoSession
	case s == CommNoSession && in != commSelected:
		return s // nothing happens without a session
	case in == commSelected:
		return CommWaitCRA
	case in == commHostAsked, in == commAccepted && s == CommWaitCRA:
		return CommCommunicating
	case in == commDenied && s == CommWaitCRA:
		return CommWaitDelay
	case in == commRetry && s == CommWaitDelay:
		return CommWaitCRA
	case in == commFailed && s == CommCommunicating:
		return CommWaitDelay
	}
	return s
}

// ControlState is E30's control state. Its values are those of the
// ControlState status variable (SVID 1002), E30's customary encoding.
type ControlState int

const (
	// EquipmentOffline: the operator took the equipment offline; the host
	// cannot bring it online (S1F17 is refused).
	EquipmentOffline ControlState = 1
	// AttemptOnline: the operator asked for online; an S1F1 is out to the
	// host.
	AttemptOnline ControlState = 2
	// HostOffline: offline until the host asks for online (S1F17), which
	// it may.
	HostOffline ControlState = 3
	// OnlineLocal: online, but the machine is operated at the machine:
	// the host's remote commands are refused.
	OnlineLocal ControlState = 4
	// OnlineRemote: online, and the host may command the machine.
	OnlineRemote ControlState = 5
)

var controlNames = map[ControlState]string{
	EquipmentOffline: "equipment offline", AttemptOnline: "attempt online", HostOffline: "host offline",
	OnlineLocal: "online local", OnlineRemote: "online remote",
}

func (s ControlState) String() string {
	if n, ok := controlNames[s]; ok {
		return n
	}
	return fmt.Sprintf("control(%d)", int(s))
}

// Online reports whether s is ONLINE (local or remote).
func (s ControlState) Online() bool { return s == OnlineLocal || s == OnlineRemote }

// ParseControlState reads "equipment-offline", "host-offline", "online-local"
// or "online-remote" (a configuration's initial control state).
func ParseControlState(s string) (ControlState, error) {
	switch s {
	case "equipment-offline":
		return EquipmentOffline, nil
	case "host-offline":
		return HostOffline, nil
	case "online-local":
		return OnlineLocal, nil
	case "online-remote":
		return OnlineRemote, nil
	}
	return 0, fmt.Errorf("gem: unknown control state %q (want equipment-offline, host-offline, online-local or online-remote)", s)
}

// controlInput is what changes the control state.
type controlInput int

const (
	opOnline      controlInput = iota // the operator: go online
	opOffline                         // the operator: go offline
	opLocal                           // the operator's online switch to local
	opRemote                          // the operator's online switch to remote
	hostOnline                        // the host's S1F17
	hostOffline                       // the host's S1F15
	attemptOK                         // the host answered our S1F1 (S1F2)
	attemptFailed                     // our S1F1 was not answered, or aborted
)

// Acknowledgements of S1F18 (ONLACK). S1F16's OFLACK is always 0.
const (
	onlackAccepted = 0
	onlackRefused  = 1
	onlackAlready  = 2
)

// nextControl is E30's control state diagram: the state after in, for
// an equipment whose online switch says remote (true) or local. ack is
// the ONLACK of an S1F17 (hostOnline). An S1F15 is only answered while
// online (offline, every primary but S1F13 and S1F17 is aborted), so it
// always succeeds here. The operator's offline wins over everything; a
// failed attempt to go online falls back to EQUIPMENT OFFLINE.
func nextControl(s ControlState, remote bool, in controlInput) (next ControlState, ack byte) {
	online := OnlineLocal
	if remote {
		online = OnlineRemote
	}
	switch in {
	case opOnline:
		if s == EquipmentOffline {
			return AttemptOnline, 0
		}
	case opOffline:
		return EquipmentOffline, 0
	case opLocal:
		if s.Online() {
			return OnlineLocal, 0
		}
	case opRemote:
		if s.Online() {
			return OnlineRemote, 0
		}
	case hostOnline:
		switch {
		case s == HostOffline:
			return online, onlackAccepted
		case s.Online():
			return s, onlackAlready
		}
		return s, onlackRefused
	case hostOffline:
		if s.Online() {
			return HostOffline, 0
		}
	case attemptOK:
		if s == AttemptOnline {
			return online, 0
		}
	case attemptFailed:
		if s == AttemptOnline {
			return EquipmentOffline, 0
		}
	}
	return s, 0
}
