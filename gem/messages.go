package gem

import (
	"context"
	"fmt"
	"time"

	"github.com/arloliu/go-secs/v2/secs2"
)

// The handlers of streams 1, 2 (but S2F41, see commands.go), 5 and 10.
// Each reads the host's body (illegal data is an *illegalData, answered
// with S9F7) and returns the reply's body.

func bin(b byte) secs2.Item { return secs2.NewBinaryItem(b) }

// S1F1 are you there → S1F2 L[2] MDLN SOFTREV.
func (e *Equipment) s1f1(_ context.Context, _ inbound, _ secs2.Item) (secs2.Item, error) {
	return e.mdln(), nil
}

// S1F3 L[n] SVID → S1F4 L[n] SV. No SVID: every status variable. An
// unknown id (or a data variable's) has a zero-length value.
func (e *Equipment) s1f3(ctx context.Context, _ inbound, body secs2.Item) (secs2.Item, error) {
	ids, err := idsOfList(body, "S1F3 SVIDs")
	if err != nil {
		return nil, err
	}
	if len(ids) == 0 {
		ids = svIDs()
	}
	f := e.frame(ctx, needsStatus(ids))
	f.run = runFromStatus(f.status)
	vals := make([]secs2.Item, 0, len(ids))
	for _, id := range ids {
		if v, ok := variableByID(id); ok && v.sv {
			vals = append(vals, v.value(&f))
		} else {
			vals = append(vals, secs2.NewListItem())
		}
	}
	return secs2.NewListItem(vals...), nil
}

// svIDs lists every status variable id.
func svIDs() []uint32 {
	var ids []uint32
	for _, v := range variables {
		if v.sv {
			ids = append(ids, v.id)
		}
	}
	return ids
}

// S1F11 L[n] SVID → S1F12 L[n] L[3] SVID SVNAME UNITS (no SVID: all).
func (e *Equipment) s1f11(_ context.Context, _ inbound, body secs2.Item) (secs2.Item, error) {
	return namelist(body, "S1F11 SVIDs", true)
}

// S1F21 L[n] VID → S1F22 L[n] L[3] VID DVVALNAME UNITS (no VID: every
// data variable).
func (e *Equipment) s1f21(_ context.Context, _ inbound, body secs2.Item) (secs2.Item, error) {
	return namelist(body, "S1F21 VIDs", false)
}

func namelist(body secs2.Item, what string, sv bool) (secs2.Item, error) {
	ids, err := idsOfList(body, what)
	if err != nil {
		return nil, err
	}
	if len(ids) == 0 {
		for _, v := range variables {
			if v.sv == sv {
				ids = append(ids, v.id)
			}
		}
	}
	out := make([]secs2.Item, 0, len(ids))
	for _, id := range ids {
		name, units := "", ""
		if v, ok := variableByID(id); ok && v.sv == sv {
			name, units = v.name, v.units
		}
		out = append(out, secs2.NewListItem(u4(int(id)), ascii(name), ascii(units)))
	}
	return secs2.NewListItem(out...), nil
}

// S1F23 L[n] CEID → S1F24 L[n] L[3] CEID CENAME L[a] VID: the data
// variables each event's reports may carry (no CEID: every event).
func (e *Equipment) s1f23(_ context.Context, _ inbound, body secs2.Item) (secs2.Item, error) {
	ids, err := idsOfList(body, "S1F23 CEIDs")
	if err != nil {
		return nil, err
	}
	if len(ids) == 0 {
		for _, ev := range events {
			ids = append(ids, ev.id)
		}
	}
	out := make([]secs2.Item, 0, len(ids))
	for _, id := range ids {
		name := ""
		var dvs []secs2.Item
		if ev, ok := eventByID(id); ok {
			name = ev.name
			for _, dv := range ev.dvs {
				dvs = append(dvs, u4(int(dv)))
			}
		}
		out = append(out, secs2.NewListItem(u4(int(id)), ascii(name), secs2.NewListItem(dvs...)))
	}
	return secs2.NewListItem(out...), nil
}

// S1F13 L[0] (the host's MDLN SOFTREV, if any) → S1F14 L[2] COMMACK
// L[2] MDLN SOFTREV. Communication is established.
func (e *Equipment) s1f13(_ context.Context, _ inbound, body secs2.Item) (secs2.Item, error) {
	if _, err := list(body, -1, "S1F13"); err != nil {
		return nil, err
	}
	e.setComm(commHostAsked)
	return secs2.NewListItem(bin(0), e.mdln()), nil
}

// S1F15 → S1F16 OFLACK 0: HOST OFFLINE.
func (e *Equipment) s1f15(_ context.Context, _ inbound, _ secs2.Item) (secs2.Item, error) {
	e.control(hostOffline, "host (S1F15)")
	return bin(0), nil
}

// S1F17 → S1F18 ONLACK: 0 online now, 1 not allowed (the operator took
// the equipment offline), 2 already online.
func (e *Equipment) s1f17(_ context.Context, _ inbound, _ secs2.Item) (secs2.Item, error) {
	return bin(e.control(hostOnline, "host (S1F17)")), nil
}

// S2F17 → S2F18 TIME (16 characters, local time).
func (e *Equipment) s2f17(_ context.Context, _ inbound, _ secs2.Item) (secs2.Item, error) {
	return ascii(clock(time.Now())), nil
}

// S2F31 TIME → S2F32 TIACK 1 (not done): waferd never sets the board's
// clock; the system's time service owns it.
func (e *Equipment) s2f31(_ context.Context, _ inbound, body secs2.Item) (secs2.Item, error) {
	if _, err := text(body, "S2F31 TIME"); err != nil {
		return nil, err
	}
	e.log.Infof("host asked to set the clock (S2F31): refused, the system's time service owns it")
	return bin(1), nil
}

// S2F33 L[2] DATAID L[a] L[2] RPTID L[b] VID → S2F34 DRACK.
func (e *Equipment) s2f33(_ context.Context, _ inbound, body secs2.Item) (secs2.Item, error) {
	top, err := list(body, 2, "S2F33")
	if err != nil {
		return nil, err
	}
	if _, err := id(top[0], "S2F33 DATAID"); err != nil {
		return nil, err
	}
	reps, err := list(top[1], -1, "S2F33 reports")
	if err != nil {
		return nil, err
	}
	var defs []reportDef
	for i, r := range reps {
		what := fmt.Sprintf("S2F33 report %d", i)
		pair, err := list(r, 2, what)
		if err != nil {
			return nil, err
		}
		rid, err := id(pair[0], what+" RPTID")
		if err != nil {
			return nil, err
		}
		vids, err := idsOfList(pair[1], what+" VIDs")
		if err != nil {
			return nil, err
		}
		defs = append(defs, reportDef{id: rid, vids: vids})
	}
	e.mu.Lock()
	ack := e.rep.define(defs)
	e.mu.Unlock()
	return bin(ack), nil
}

// S2F35 L[2] DATAID L[a] L[2] CEID L[b] RPTID → S2F36 LRACK.
func (e *Equipment) s2f35(_ context.Context, _ inbound, body secs2.Item) (secs2.Item, error) {
	top, err := list(body, 2, "S2F35")
	if err != nil {
		return nil, err
	}
	if _, err := id(top[0], "S2F35 DATAID"); err != nil {
		return nil, err
	}
	ls, err := list(top[1], -1, "S2F35 links")
	if err != nil {
		return nil, err
	}
	var links []eventLink
	for i, l := range ls {
		what := fmt.Sprintf("S2F35 link %d", i)
		pair, err := list(l, 2, what)
		if err != nil {
			return nil, err
		}
		ceid, err := id(pair[0], what+" CEID")
		if err != nil {
			return nil, err
		}
		rids, err := idsOfList(pair[1], what+" RPTIDs")
		if err != nil {
			return nil, err
		}
		links = append(links, eventLink{ceid: ceid, rptids: rids})
	}
	e.mu.Lock()
	ack := e.rep.link(links)
	e.mu.Unlock()
	return bin(ack), nil
}

// S2F37 L[2] CEED L[n] CEID → S2F38 ERACK (no CEID: every event).
func (e *Equipment) s2f37(_ context.Context, _ inbound, body secs2.Item) (secs2.Item, error) {
	top, err := list(body, 2, "S2F37")
	if err != nil {
		return nil, err
	}
	on, err := boolean(top[0], "S2F37 CEED")
	if err != nil {
		return nil, err
	}
	ceids, err := idsOfList(top[1], "S2F37 CEIDs")
	if err != nil {
		return nil, err
	}
	e.mu.Lock()
	ack := e.rep.enable(on, ceids)
	e.mu.Unlock()
	return bin(ack), nil
}

// S5F3 L[2] ALED ALID → S5F4 ACKC5: ALED bit 8 enables; a zero-length
// ALID means every alarm. ACKC5 1 for an unknown alarm.
func (e *Equipment) s5f3(_ context.Context, _ inbound, body secs2.Item) (secs2.Item, error) {
	top, err := list(body, 2, "S5F3")
	if err != nil {
		return nil, err
	}
	aled, err := binaryByte(top[0], "S5F3 ALED")
	if err != nil {
		return nil, err
	}
	ids, err := idList(top[1], "S5F3 ALID")
	if err != nil && top[1].Size() != 0 {
		return nil, err
	}
	if len(ids) > 1 {
		return nil, illegal("S5F3 ALID: want one alarm or none, got %d", len(ids))
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(ids) == 0 {
		for _, al := range alarms {
			e.al.enabled[al.id] = aled&0x80 != 0
		}
		return bin(0), nil
	}
	if _, ok := alarmByID(ids[0]); !ok {
		return bin(1), nil
	}
	e.al.enabled[ids[0]] = aled&0x80 != 0
	return bin(0), nil
}

// S5F5 ALID[n] → S5F6 L[m] L[3] ALCD ALID ALTX (n = 0: every alarm).
func (e *Equipment) s5f5(_ context.Context, _ inbound, body secs2.Item) (secs2.Item, error) {
	ids, err := idList(body, "S5F5 ALIDs")
	if err != nil && body.Size() != 0 {
		return nil, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.al.list(ids, false), nil
}

// S5F7 → S5F8: the enabled alarms, as S5F6.
func (e *Equipment) s5f7(_ context.Context, _ inbound, _ secs2.Item) (secs2.Item, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.al.list(nil, true), nil
}

// S10F3 L[2] TID TEXT → S10F4 ACKC10 0: the text goes to the log, which
// the consoles show (log).
func (e *Equipment) s10f3(_ context.Context, _ inbound, body secs2.Item) (secs2.Item, error) {
	top, err := list(body, 2, "S10F3")
	if err != nil {
		return nil, err
	}
	if _, err := binaryByte(top[0], "S10F3 TID"); err != nil {
		return nil, err
	}
	msg, err := text(top[1], "S10F3 TEXT")
	if err != nil {
		return nil, err
	}
	e.log.Noticef("host says: %s", msg)
	return bin(0), nil
}

// tell sends the host a line of text (S10F1, terminal display): why a
// command was refused.
func (e *Equipment) tell(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	e.enqueue(outbound{stream: 10, function: 1, body: secs2.NewListItem(bin(0), ascii(msg)), what: "S10F1 " + msg})
}
