package gem

import (
	"github.com/arloliu/go-secs/v2/hsms"
	"github.com/arloliu/go-secs/v2/secs2"
)

// The session starts when our Select.rsp (status 0) has been written:
// only then may the equipment's own S1F13 follow, and the HSMS layer
// reports the session selected before it writes the Select.rsp. The
// writer reports the Select.rsp after its write returned, and the host
// may have answered by then: its first data message starts the session
// too, before it is judged.
//
// Two of the host's replies change how its next messages are judged: the
// S1F14 answering our S1F13 (communicating, or not) and the S1F2
// answering our S1F1 of an attempt to go online. The HSMS layer hands a
// reply to the goroutine that sent the request, which runs whenever the
// scheduler lets it, while the receive goroutine goes on reading: a host
// that answers S1F14 and sends S1F1 at once could find its S1F1 judged
// before its S1F14. So these two replies are applied as they cross the
// wire, on the receive goroutine, before the next frame is read: the
// HSMS layer reports every inbound frame to its wire observer before it
// interprets it. Applying a reply twice (here and when the request
// returns) changes nothing.

// onWire applies the host's S1F14 and S1F2 (on the receive goroutine: it
// must be cheap and never block).
func (e *Equipment) onWire(ev hsms.WireEvent) {
	f := ev.Frame
	// 4 length bytes, then session id (2), W|stream, function (the
	// status of a Select.rsp), PType, SType, system bytes (4).
	if len(f) < 14 || f[8] != 0 {
		return
	}
	if ev.Direction == hsms.WireOutbound {
		if f[9] == 2 && f[7] == 0 && ev.Generation != 0 {
			e.selected(ev) // our Select.rsp, status 0, on the session's socket
		}
		return
	}
	if f[9] == 0 && ev.Generation != 0 {
		// A data message: the session is selected (the HSMS layer takes
		// data only then), and its Select.rsp written if the host waited
		// for it, as it must. The writer's report of that Select.rsp may
		// come later than this frame.
		e.selected(ev)
	}
	if f[9] != 0 || f[6] != 1 {
		return // not a reply (no W-bit) of stream 1 in a data message
	}
	switch fn := f[7]; {
	case fn == 14 && e.commState() == CommWaitCRA:
		item, err := secs2.Decode(f[14:])
		ack, aerr := secs2.NewCursor(item).At(0).Binary()
		if err == nil && aerr == nil && len(ack) == 1 && ack[0] == 0 {
			e.setComm(commAccepted)
		} else {
			e.setComm(commDenied)
		}
	case fn == 2 && e.controlState() == AttemptOnline:
		e.control(attemptOK, "host answered S1F1")
	}
}
