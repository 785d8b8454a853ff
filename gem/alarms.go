package gem

import (
	"slices"
	"strings"

	"github.com/arloliu/go-secs/v2/secs2"

	"github.com/waferd/waferd/machine"
	"github.com/waferd/waferd/stop"
)

// Alarms (S5F1 report, S5F3 enable, S5F5 list, S5F7 list enabled). An
// alarm is set while the machine is latched for its reason and cleared
// when the latch clears (reset) or changes (a fault latch that an e-stop
// turns into an EStop latch clears the fault's alarm and sets the
// e-stop's). The ids, categories and texts are the README's alarm table.

// Alarm ids.
const (
	ALDeviceFault        = 1
	ALWatchdog           = 2
	ALHostAbort          = 3
	ALEStop              = 4
	ALSafeStopIncomplete = 5
)

// ALCD categories (E5): bits 1–7 of ALCD; bit 8 says set.
const (
	alcdPersonalSafety   = 1
	alcdEquipmentSafety  = 2
	alcdIrrecoverable    = 5
	alcdEquipmentWarning = 6
	alcdSet              = 0x80
)

type alarm struct {
	id       uint32
	category byte
	text     string // ALTX: at most 40 characters (E5)
}

var alarms = []alarm{
	{id: ALDeviceFault, category: alcdIrrecoverable, text: "device fault: machine faulted"},
	{id: ALWatchdog, category: alcdEquipmentSafety, text: "watchdog: machine faulted"},
	{id: ALHostAbort, category: alcdEquipmentWarning, text: "host ABORT: machine faulted"},
	{id: ALEStop, category: alcdPersonalSafety, text: "e-stop: machine in e-stop"},
	{id: ALSafeStopIncomplete, category: alcdEquipmentSafety, text: "safe stop incomplete: machine faulted"},
}

func alarmByID(id uint32) (*alarm, bool) {
	for i := range alarms {
		if alarms[i].id == id {
			return &alarms[i], true
		}
	}
	return nil, false
}

// alarmForLatch is the alarm of a latch: the machine's state and the
// reason of the stop that latched it (machine.Event.Reason). A Faulted
// latch by a reason that does not latch by itself is a safe stop that
// could not complete. 0: not latched.
func alarmForLatch(s machine.State, r stop.Reason) uint32 {
	switch {
	case s == machine.EStop:
		return ALEStop
	case s != machine.Faulted:
		return 0
	case r == stop.Fault:
		return ALDeviceFault
	case r == stop.Watchdog:
		return ALWatchdog
	case r == stop.Abort:
		return ALHostAbort
	case r == stop.EStop:
		return ALEStop
	}
	return ALSafeStopIncomplete
}

// reasonOfLatch reads a latch reason as the machine words it ("fault:
// stage: ...", "safe stop incomplete: operator: ...") back into the stop
// reason, for a machine found latched when the interface starts.
func reasonOfLatch(why string) stop.Reason {
	name, _, _ := strings.Cut(why, ":")
	r, err := stop.ParseReason(name)
	if err != nil {
		return stop.None
	}
	return r
}

// alarmState is which alarms are set and enabled. Not safe for concurrent
// use (the Equipment's lock guards it).
type alarmState struct {
	set     map[uint32]bool
	enabled map[uint32]bool
}

func newAlarmState() *alarmState {
	a := &alarmState{set: map[uint32]bool{}, enabled: map[uint32]bool{}}
	for _, al := range alarms {
		a.enabled[al.id] = true // every alarm is reported until the host disables it
	}
	return a
}

// ids lists the alarm ids in m that are true, in id order.
func ids(m map[uint32]bool) []uint32 {
	var out []uint32
	for _, al := range alarms {
		if m[al.id] {
			out = append(out, al.id)
		}
	}
	return out
}

// s5f1 is the body of an alarm report: L[3] ALCD ALID ALTX.
func (a *alarmState) s5f1(id uint32) secs2.Item {
	al, _ := alarmByID(id)
	alcd := al.category
	if a.set[id] {
		alcd |= alcdSet
	}
	return secs2.NewListItem(secs2.NewBinaryItem(alcd), secs2.NewUintItem(4, id), secs2.NewASCIIItem(al.text))
}

// list is the body of S5F6/S5F8: the alarms of ids (every alarm when
// ids is empty), each as in S5F1. Unknown ids are left out.
func (a *alarmState) list(want []uint32, onlyEnabled bool) secs2.Item {
	var items []secs2.Item
	for _, al := range alarms {
		if len(want) > 0 && !slices.Contains(want, al.id) || onlyEnabled && !a.enabled[al.id] {
			continue
		}
		items = append(items, a.s5f1(al.id))
	}
	return secs2.NewListItem(items...)
}
