package gem

import (
	"fmt"
	"slices"
	"time"

	"github.com/arloliu/go-secs/v2/secs2"

	"github.com/waferd/waferd/control"
)

// Variables: the status variables (SV, readable at any time with S1F3)
// and the data variables (DV, valid only in the reports of the events
// that list them). Their ids, names and units are the README's variable
// table; TestTheReadmeListsEveryID keeps the two the same.

// Status variable ids.
const (
	SVClock          = 1001
	SVControlState   = 1002
	SVMachineState   = 1003
	SVLatchReason    = 1004
	SVBusy           = 1005
	SVStageState     = 1006
	SVStageX         = 1007
	SVStageY         = 1008
	SVPositionTrust  = 1009
	SVLightOn        = 1010
	SVLightLevel     = 1011
	SVPPExecName     = 1012
	SVRunID          = 1013
	SVRunRecipe      = 1014
	SVSitesDone      = 1015
	SVSitesTotal     = 1016
	SVDefects        = 1017
	SVLastRunID      = 1018
	SVLastRunOutcome = 1019
	SVLastRunReason  = 1020
	SVAlarmsSet      = 1021
	SVAlarmsEnabled  = 1022
	SVEventsEnabled  = 1023
)

// Data variable ids.
const (
	DVSiteIndex      = 2001
	DVSiteDefects    = 2002
	DVRunOutcome     = 2003
	DVRunReason      = 2004
	DVPPChangeName   = 2005
	DVPPChangeStatus = 2006
	DVStopReason     = 2007
)

// frame is what variables are read from: the machine's status, the
// interface's own state, and the run as the event (or the status) has it.
type frame struct {
	now           time.Time
	status        control.Status
	control       ControlState
	ppExec        string
	alarmsSet     []uint32
	alarmsEnabled []uint32
	eventsEnabled []uint32
	run           runData
	ppChange      string // DVPPChangeName
	ppStatus      int    // DVPPChangeStatus: 1 created, 2 edited
	stopReason    string // DVStopReason
}

// runData is the run variables' source: the run in progress (S1F3), or
// the run an event is about, as the event has it (its status may already
// have moved on).
type runData struct {
	ID, Recipe           string
	Done, Total, Defects int
	Site, SiteDefects    int
	Outcome, Reason      string
}

// runFromStatus is the run in progress, as the status has it.
func runFromStatus(st control.Status) runData {
	if st.Run == nil {
		return runData{}
	}
	p := st.Run.Progress
	return runData{ID: p.RunID, Recipe: st.Run.Recipe, Done: p.Done, Total: st.Run.Sites, Defects: p.Defects,
		Site: p.Site.Index, SiteDefects: p.SiteDefects}
}

// variable is one SV or DV.
type variable struct {
	id    uint32
	name  string
	units string
	sv    bool // a status variable; false: a data variable
	// status: its value comes from the machine's status (which asks the
	// stage), not from the interface or the event alone.
	status bool
	value  func(f *frame) secs2.Item
}

func ascii(s string) secs2.Item { return secs2.NewASCIIItem(s) }
func u4(n int) secs2.Item       { return secs2.NewUintItem(4, uint64(max(n, 0))) }

// u4s is a list of ids as one U4 array item.
func u4s(ids []uint32) secs2.Item {
	return secs2.NewUintItem(4, slices.Clone(ids))
}

// variables is every variable, in id order.
var variables = []variable{
	{id: SVClock, name: "Clock", units: "", sv: true, value: func(f *frame) secs2.Item { return ascii(clock(f.now)) }},
	{id: SVControlState, name: "ControlState", sv: true, value: func(f *frame) secs2.Item { return secs2.NewUintItem(1, uint8(f.control)) }},
	{id: SVMachineState, name: "MachineState", sv: true, status: true, value: func(f *frame) secs2.Item { return ascii(f.status.Machine.String()) }},
	{id: SVLatchReason, name: "LatchReason", sv: true, status: true, value: func(f *frame) secs2.Item { return ascii(f.status.LatchReason) }},
	{id: SVBusy, name: "Busy", sv: true, status: true, value: func(f *frame) secs2.Item { return ascii(f.status.Busy) }},
	{id: SVStageState, name: "StageState", sv: true, status: true, value: func(f *frame) secs2.Item {
		if f.status.StageErr != nil {
			return ascii("NotAnswering")
		}
		return ascii(f.status.Stage.StateName())
	}},
	{id: SVStageX, name: "StageX", units: "mm", sv: true, status: true, value: func(f *frame) secs2.Item {
		return secs2.NewFloatItem(8, f.status.Stage.MPos[0].Millimetres())
	}},
	{id: SVStageY, name: "StageY", units: "mm", sv: true, status: true, value: func(f *frame) secs2.Item {
		return secs2.NewFloatItem(8, f.status.Stage.MPos[1].Millimetres())
	}},
	{id: SVPositionTrust, name: "PositionTrusted", sv: true, status: true, value: func(f *frame) secs2.Item { return secs2.NewBooleanItem(f.status.Trusted) }},
	{id: SVLightOn, name: "LightOn", sv: true, status: true, value: func(f *frame) secs2.Item { return secs2.NewBooleanItem(f.status.Light.On) }},
	{id: SVLightLevel, name: "LightLevel", sv: true, status: true, value: func(f *frame) secs2.Item {
		return secs2.NewFloatItem(4, float32(f.status.Light.Level))
	}},
	{id: SVPPExecName, name: "PPExecName", sv: true, value: func(f *frame) secs2.Item { return ascii(f.ppExec) }},
	{id: SVRunID, name: "RunID", sv: true, value: func(f *frame) secs2.Item { return ascii(f.run.ID) }},
	{id: SVRunRecipe, name: "RunRecipe", sv: true, value: func(f *frame) secs2.Item { return ascii(f.run.Recipe) }},
	{id: SVSitesDone, name: "SitesDone", sv: true, value: func(f *frame) secs2.Item { return u4(f.run.Done) }},
	{id: SVSitesTotal, name: "SitesTotal", sv: true, value: func(f *frame) secs2.Item { return u4(f.run.Total) }},
	{id: SVDefects, name: "DefectsSoFar", sv: true, value: func(f *frame) secs2.Item { return u4(f.run.Defects) }},
	{id: SVLastRunID, name: "LastRunID", sv: true, status: true, value: func(f *frame) secs2.Item { return ascii(f.status.Last.RunID) }},
	{id: SVLastRunOutcome, name: "LastRunOutcome", sv: true, status: true, value: func(f *frame) secs2.Item {
		if f.status.Last.RunID == "" {
			return ascii("")
		}
		return ascii(f.status.Last.Outcome.String())
	}},
	{id: SVLastRunReason, name: "LastRunReason", sv: true, status: true, value: func(f *frame) secs2.Item { return ascii(f.status.Last.Reason) }},
	{id: SVAlarmsSet, name: "AlarmsSet", sv: true, value: func(f *frame) secs2.Item { return u4s(f.alarmsSet) }},
	{id: SVAlarmsEnabled, name: "AlarmsEnabled", sv: true, value: func(f *frame) secs2.Item { return u4s(f.alarmsEnabled) }},
	{id: SVEventsEnabled, name: "EventsEnabled", sv: true, value: func(f *frame) secs2.Item { return u4s(f.eventsEnabled) }},

	{id: DVSiteIndex, name: "SiteIndex", value: func(f *frame) secs2.Item { return u4(f.run.Site) }},
	{id: DVSiteDefects, name: "SiteDefects", value: func(f *frame) secs2.Item { return u4(f.run.SiteDefects) }},
	{id: DVRunOutcome, name: "RunOutcome", value: func(f *frame) secs2.Item { return ascii(f.run.Outcome) }},
	{id: DVRunReason, name: "RunReason", value: func(f *frame) secs2.Item { return ascii(f.run.Reason) }},
	{id: DVPPChangeName, name: "PPChangeName", value: func(f *frame) secs2.Item { return ascii(f.ppChange) }},
	{id: DVPPChangeStatus, name: "PPChangeStatus", value: func(f *frame) secs2.Item { return secs2.NewUintItem(1, uint8(f.ppStatus)) }},
	{id: DVStopReason, name: "StopReason", value: func(f *frame) secs2.Item { return ascii(f.stopReason) }},
}

// variableByID finds a variable.
func variableByID(id uint32) (*variable, bool) {
	for i := range variables {
		if variables[i].id == id {
			return &variables[i], true
		}
	}
	return nil, false
}

// needsStatus reports whether any of ids reads the machine's status.
func needsStatus(ids []uint32) bool {
	for _, id := range ids {
		if v, ok := variableByID(id); ok && v.status {
			return true
		}
	}
	return false
}

// clock is E30's Clock: YYYYMMDDhhmmsscc (local time, centiseconds).
func clock(t time.Time) string {
	return t.Format("20060102150405") + fmt.Sprintf("%02d", t.Nanosecond()/10_000_000)
}
