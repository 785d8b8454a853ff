package gem

import (
	"maps"
	"slices"

	"github.com/arloliu/go-secs/v2/secs2"
)

// Collection events and their reports (S2F33 define, S2F35 link, S2F37
// enable, S6F11 send). The ids and names are the README's event table.

// Collection event ids.
const (
	CEControlStateChanged = 100
	CERunStarted          = 101
	CESiteCompleted       = 102
	CERunCompleted        = 103
	CERunStopped          = 104
	CERunAborted          = 105
	CERunFailed           = 106
	CEMachineFaulted      = 107
	CEEStopActivated      = 108
	CELatchCleared        = 109
	CEPPChanged           = 110
	CEPPSelected          = 111
)

// event is one collection event and the data variables its reports may
// carry (status variables are valid in every report).
type event struct {
	id   uint32
	name string
	dvs  []uint32
}

var events = []event{
	{id: CEControlStateChanged, name: "ControlStateChanged"},
	{id: CERunStarted, name: "RunStarted"},
	{id: CESiteCompleted, name: "SiteCompleted", dvs: []uint32{DVSiteIndex, DVSiteDefects}},
	{id: CERunCompleted, name: "RunCompleted", dvs: []uint32{DVRunOutcome}},
	{id: CERunStopped, name: "RunStopped", dvs: []uint32{DVRunOutcome, DVRunReason, DVStopReason}},
	{id: CERunAborted, name: "RunAborted", dvs: []uint32{DVRunOutcome, DVRunReason, DVStopReason}},
	{id: CERunFailed, name: "RunFailed", dvs: []uint32{DVRunOutcome, DVRunReason}},
	{id: CEMachineFaulted, name: "MachineFaulted", dvs: []uint32{DVStopReason}},
	{id: CEEStopActivated, name: "EStopActivated", dvs: []uint32{DVStopReason}},
	{id: CELatchCleared, name: "LatchCleared"},
	{id: CEPPChanged, name: "ProcessProgramChanged", dvs: []uint32{DVPPChangeName, DVPPChangeStatus}},
	{id: CEPPSelected, name: "ProcessProgramSelected"},
}

func eventByID(id uint32) (*event, bool) {
	for i := range events {
		if events[i].id == id {
			return &events[i], true
		}
	}
	return nil, false
}

// validIn reports whether variable vid may be in a report of ev.
func (ev *event) validIn(vid uint32) bool {
	v, ok := variableByID(vid)
	return ok && (v.sv || slices.Contains(ev.dvs, vid))
}

// Acknowledgement codes of S2F34 (DRACK), S2F36 (LRACK) and S2F38 (ERACK).
const (
	drackAccepted  = 0
	drackDefined   = 3 // at least one RPTID already defined
	drackNoVID     = 4 // at least one VID does not exist
	lrackAccepted  = 0
	lrackLinked    = 3 // at least one CEID link already defined
	lrackNoCEID    = 4 // at least one CEID does not exist
	lrackNoRPTID   = 5 // at least one RPTID does not exist
	erackAccepted  = 0
	erackNoCEID    = 1 // at least one CEID does not exist
	reportsMaximum = 1000
)

// reports is the host's report configuration: defined reports, their
// links to events, and which events are enabled. It is kept in memory for
// the life of waferd: a host defines its reports again after a restart,
// as hosts do at every connection. Not safe for concurrent use (the
// Equipment's lock guards it).
type reports struct {
	defs    map[uint32][]uint32 // RPTID → VIDs
	links   map[uint32][]uint32 // CEID → RPTIDs, in link order
	enabled map[uint32]bool     // CEID → enabled
}

func newReports() *reports {
	r := &reports{defs: map[uint32][]uint32{}, links: map[uint32][]uint32{}, enabled: map[uint32]bool{}}
	for _, ev := range events {
		r.enabled[ev.id] = true // every event is reported until the host disables it
	}
	return r
}

// define applies an S2F33: a list of (RPTID, VIDs). An empty list deletes
// every report (and their links); a report with no VIDs is deleted (and
// unlinked). Nothing changes unless the whole request is acceptable.
func (r *reports) define(defs []reportDef) byte {
	if len(defs) == 0 {
		clear(r.defs)
		clear(r.links)
		return drackAccepted
	}
	seen := map[uint32]bool{}
	for _, d := range defs {
		if seen[d.id] || len(d.vids) > 0 && r.defs[d.id] != nil {
			return drackDefined
		}
		seen[d.id] = true
		for _, vid := range d.vids {
			if _, ok := variableByID(vid); !ok {
				return drackNoVID
			}
		}
	}
	if len(r.defs)+len(defs) > reportsMaximum {
		return 1 // insufficient space
	}
	for _, d := range defs {
		if len(d.vids) == 0 {
			delete(r.defs, d.id)
			for ce, ids := range r.links {
				r.links[ce] = slices.DeleteFunc(ids, func(id uint32) bool { return id == d.id })
			}
			continue
		}
		r.defs[d.id] = slices.Clone(d.vids)
	}
	return drackAccepted
}

// link applies an S2F35: a list of (CEID, RPTIDs). An empty RPTID list
// unlinks every report of that event. Nothing changes unless the whole
// request is acceptable. A report may carry data variables of other
// events: in this event's report their values are zero-length.
func (r *reports) link(links []eventLink) byte {
	seen := map[uint32]bool{}
	for _, l := range links {
		if _, ok := eventByID(l.ceid); !ok {
			return lrackNoCEID
		}
		if seen[l.ceid] || len(l.rptids) > 0 && len(r.links[l.ceid]) > 0 {
			return lrackLinked
		}
		seen[l.ceid] = true
		for _, id := range l.rptids {
			if _, ok := r.defs[id]; !ok {
				return lrackNoRPTID
			}
		}
	}
	for _, l := range links {
		if len(l.rptids) == 0 {
			delete(r.links, l.ceid)
		} else {
			r.links[l.ceid] = slices.Clone(l.rptids)
		}
	}
	return lrackAccepted
}

// enable applies an S2F37: enable or disable the events listed, or every
// event when none is listed.
func (r *reports) enable(on bool, ceids []uint32) byte {
	for _, id := range ceids {
		if _, ok := eventByID(id); !ok {
			return erackNoCEID
		}
	}
	if len(ceids) == 0 {
		for id := range r.enabled {
			r.enabled[id] = on
		}
	}
	for _, id := range ceids {
		r.enabled[id] = on
	}
	return erackAccepted
}

// enabledIDs lists the enabled events, in id order.
func (r *reports) enabledIDs() []uint32 {
	var ids []uint32
	for _, id := range slices.Sorted(maps.Keys(r.enabled)) {
		if r.enabled[id] {
			ids = append(ids, id)
		}
	}
	return ids
}

// vidsOf lists the variables the reports linked to ceid carry.
func (r *reports) vidsOf(ceid uint32) []uint32 {
	var vids []uint32
	for _, id := range r.links[ceid] {
		vids = append(vids, r.defs[id]...)
	}
	return vids
}

// s6f11 is the body of the event report of ceid with the values of f:
// L[3] DATAID CEID L[a] (L[2] RPTID L[b] V...). ok is false when the event
// is disabled.
func (r *reports) s6f11(dataID uint32, ceid uint32, f *frame) (body secs2.Item, ok bool) {
	if !r.enabled[ceid] {
		return nil, false
	}
	ev, _ := eventByID(ceid)
	var reps []secs2.Item
	for _, id := range r.links[ceid] {
		var vals []secs2.Item
		for _, vid := range r.defs[id] {
			if !ev.validIn(vid) {
				// A data variable of another event: zero length, as
				// E5 answers a variable without a value.
				vals = append(vals, secs2.NewListItem())
				continue
			}
			v, _ := variableByID(vid) // validIn found it
			vals = append(vals, v.value(f))
		}
		reps = append(reps, secs2.NewListItem(secs2.NewUintItem(4, id), secs2.NewListItem(vals...)))
	}
	return secs2.NewListItem(secs2.NewUintItem(4, dataID), secs2.NewUintItem(4, ceid), secs2.NewListItem(reps...)), true
}

// reportDef is one report of an S2F33.
type reportDef struct {
	id   uint32
	vids []uint32
}

// eventLink is one event of an S2F35.
type eventLink struct {
	ceid   uint32
	rptids []uint32
}
