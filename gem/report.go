package gem

import (
	"context"
	"time"

	"github.com/arloliu/go-secs/v2/hsms"
	"github.com/arloliu/go-secs/v2/secs2"

	"github.com/waferd/waferd/control"
	"github.com/waferd/waferd/machine"
)

// From the machine's events to the host's event reports and alarms, and
// the control state's changes. The machine's event stream never waits for
// us (a subscriber that falls behind loses events): watch only turns each
// event into messages for the sender's queue.

// watch follows the machine's events until ctx ends, then reports those
// already delivered.
func (e *Equipment) watch(ctx context.Context, events <-chan control.Event) {
	var recipe string // of the run in progress, for SiteCompleted
	handle := func(ctx context.Context, ev control.Event) {
		switch ev.Kind {
		case control.RunStarted:
			recipe = ev.Recipe
			e.report(ctx, CERunStarted, frame{run: runData{Recipe: ev.Recipe, Total: ev.Sites}})
		case control.RunProgress:
			p := ev.Progress
			e.report(ctx, CESiteCompleted, frame{run: runData{ID: p.RunID, Recipe: recipe, Done: p.Done, Total: p.Total,
				Defects: p.Defects, Site: p.Site.Index, SiteDefects: p.SiteDefects}})
		case control.RunEnded:
			e.runEnded(ctx, ev)
		case control.MachineState:
			e.machineState(ctx, ev)
		}
	}
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				return
			}
			handle(ctx, ev)
		case n := <-e.notes:
			e.report(ctx, n.ceid, n.f)
		case <-ctx.Done():
			dctx, cancel := context.WithTimeout(context.Background(), drainTimeout)
			defer cancel()
			for {
				select {
				case ev, ok := <-events:
					if !ok {
						return
					}
					handle(dctx, ev)
				case n := <-e.notes:
					e.report(dctx, n.ceid, n.f)
				default:
					return
				}
			}
		}
	}
}

// runEnded reports how a run ended: RunCompleted, RunStopped (canceled),
// RunAborted, or RunFailed (failed, or it could not start).
func (e *Equipment) runEnded(ctx context.Context, ev control.Event) {
	r := ev.Result
	run := runData{ID: r.RunID, Recipe: ev.Recipe, Done: r.Done, Total: r.Total, Defects: r.Defects,
		Outcome: r.Outcome.String(), Reason: r.Reason}
	ceid := uint32(CERunFailed)
	switch {
	case ev.Err != nil:
		run.Outcome, run.Reason, run.Total = "failed", "could not start: "+ev.Err.Error(), ev.Sites
	case r.Outcome == machine.Completed:
		ceid = CERunCompleted
	case r.Outcome == machine.Canceled:
		ceid = CERunStopped
	case r.Outcome == machine.Aborted:
		ceid = CERunAborted
	}
	e.report(ctx, ceid, frame{run: run, stopReason: r.Reason})
}

// machineState sets and clears the alarms of a latch, and reports
// MachineFaulted, EStopActivated and LatchCleared.
func (e *Equipment) machineState(ctx context.Context, ev control.Event) {
	e.mu.Lock()
	prev := e.machine
	e.machine = ev.State
	e.mu.Unlock()
	switch {
	case ev.State.Latched():
		e.setAlarm(alarmForLatch(ev.State, ev.Reason))
		ceid := uint32(CEMachineFaulted)
		if ev.State == machine.EStop {
			ceid = CEEStopActivated
		}
		e.report(ctx, ceid, frame{stopReason: ev.Text})
	case prev.Latched() && ev.State == machine.Idle:
		e.setAlarm(0)
		e.report(ctx, CELatchCleared, frame{})
	}
}

// setAlarm makes id the one alarm set (0: none), sending S5F1 for each
// change of an enabled alarm.
func (e *Equipment) setAlarm(id uint32) {
	e.mu.Lock()
	var msgs []outbound
	for _, al := range alarms {
		on := al.id == id
		if e.al.set[al.id] == on {
			continue
		}
		e.al.set[al.id] = on
		verb := "cleared"
		if on {
			verb = "set"
		}
		e.log.Noticef("alarm %d %s %s", al.id, verb, al.text)
		if e.al.enabled[al.id] {
			msgs = append(msgs, outbound{stream: 5, function: 1, body: e.al.s5f1(al.id), what: "S5F1 alarm " + verb + ": " + al.text})
		}
	}
	e.mu.Unlock()
	for _, o := range msgs {
		e.enqueue(o)
	}
}

// startLatch sets the alarm of a machine found latched at start-up.
func (e *Equipment) startLatch(ctx context.Context) {
	st := e.m.Status(ctx)
	e.mu.Lock()
	e.machine = st.Machine
	e.mu.Unlock()
	if st.Machine.Latched() {
		e.setAlarm(alarmForLatch(st.Machine, reasonOfLatch(st.LatchReason)))
	}
}

// note is an event of the interface's own (a control state change, a
// recipe selected or stored), reported by watch in turn with the
// machine's: building a report may ask the stage, which the caller (the
// receive goroutine, a console) must not wait for.
type note struct {
	ceid uint32
	f    frame
}

// note queues the event ceid for watch. It never blocks.
func (e *Equipment) note(ceid uint32, f frame) {
	select {
	case e.notes <- note{ceid, f}:
	default:
		ev, _ := eventByID(ceid)
		e.log.Warnf("event %s dropped: %d events already wait", ev.name, cap(e.notes))
	}
}

// report queues the event report of ceid, if the event is enabled, with
// f's event data and the variables its linked reports carry.
func (e *Equipment) report(ctx context.Context, ceid uint32, f frame) {
	e.mu.Lock()
	enabled, vids := e.rep.enabled[ceid], e.rep.vidsOf(ceid)
	e.mu.Unlock()
	if !enabled {
		return
	}
	snap := e.frame(ctx, needsStatus(vids))
	snap.run, snap.stopReason, snap.ppChange, snap.ppStatus = f.run, f.stopReason, f.ppChange, f.ppStatus
	ev, _ := eventByID(ceid)
	e.mu.Lock()
	e.dataID++
	body, ok := e.rep.s6f11(e.dataID, ceid, &snap)
	e.mu.Unlock()
	if ok {
		e.enqueue(outbound{stream: 6, function: 11, body: body, what: "S6F11 " + ev.name})
	}
}

// frame is a snapshot of what variables read; status asks the machine
// (and so the stage) for its status, which only some variables need.
func (e *Equipment) frame(ctx context.Context, status bool) frame {
	var f frame
	if status {
		f.status = e.m.Status(ctx)
	}
	f.now = time.Now()
	e.mu.Lock()
	defer e.mu.Unlock()
	f.control, f.ppExec = e.ctl, e.ppExec
	f.alarmsSet, f.alarmsEnabled, f.eventsEnabled = ids(e.al.set), ids(e.al.enabled), e.rep.enabledIDs()
	return f
}

// control applies a change of the control state (by the operator or the
// host; who says which, for the log) and reports it; ack is an S1F17's
// ONLACK. Going online by the operator starts an attempt: S1F1 to the
// host, whose answer completes it.
func (e *Equipment) control(in controlInput, who string) (ack byte) {
	e.mu.Lock()
	prev := e.ctl
	switch in {
	case opLocal:
		e.remote = false
	case opRemote:
		e.remote = true
	}
	next, ack := nextControl(prev, e.remote, in)
	e.ctl = next
	e.mu.Unlock()
	if next == prev {
		return ack
	}
	e.log.Noticef("control state %s → %s (%s)", prev, next, who)
	if next.Online() {
		e.note(CEControlStateChanged, frame{})
	}
	if next == AttemptOnline {
		e.enqueue(outbound{stream: 1, function: 1, body: secs2.NewEmptyItem(), what: "S1F1 (attempt online)", offline: true,
			done: func(reply *hsms.DataMessage, err error) {
				if err == nil && reply.Function() == 2 {
					e.control(attemptOK, "host answered S1F1")
				} else {
					e.control(attemptFailed, "host did not answer S1F1")
				}
			}})
	}
	return ack
}
