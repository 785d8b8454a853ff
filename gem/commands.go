package gem

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/arloliu/go-secs/v2/secs2"

	"github.com/waferd/waferd/machine"
	"github.com/waferd/waferd/stop"
)

// Remote commands (S2F41 host command send → S2F42 HCACK and parameter
// acknowledgements). They are accepted only ONLINE REMOTE. STOP and ABORT
// are the machine's Stop with reasons host and abort; START is a run
// through the machine's claim, like a console's run; PP-SELECT chooses the
// recipe START runs. The README's command table lists codes and cases.

// HCACK codes (E5).
const (
	hcackOK         = 0
	hcackNoCommand  = 1 // no such command
	hcackCannotNow  = 2 // cannot perform now (local, busy, latched, nothing selected)
	hcackBadParam   = 3 // at least one parameter is invalid
	hcackLater      = 4 // accepted; completion is signalled by an event
	hcackAlreadySo  = 5 // rejected: already in the desired condition
	cpackNoName     = 1 // CPNAME does not exist
	cpackBadValue   = 2 // illegal value of CPVAL
	cpackBadFormat  = 3 // illegal format of CPVAL
	paramPPID       = "PPID"
	commandPPSelect = "PP-SELECT"
)

// param is one CPNAME/CPVAL pair of an S2F41.
type param struct {
	name string
	val  secs2.Item
}

// s2f41 reads L[2] RCMD L[n] L[2] CPNAME CPVAL and carries the command
// out.
func (e *Equipment) s2f41(ctx context.Context, in inbound, body secs2.Item) (secs2.Item, error) {
	top, err := list(body, 2, "S2F41")
	if err != nil {
		return nil, err
	}
	rcmd, err := text(top[0], "S2F41 RCMD")
	if err != nil {
		return nil, err
	}
	ps, err := list(top[1], -1, "S2F41 parameters")
	if err != nil {
		return nil, err
	}
	params := make([]param, 0, len(ps))
	for i, p := range ps {
		what := fmt.Sprintf("S2F41 parameter %d", i)
		pair, err := list(p, 2, what)
		if err != nil {
			return nil, err
		}
		name, err := text(pair[0], what+" CPNAME")
		if err != nil {
			return nil, err
		}
		params = append(params, param{name: name, val: pair[1]})
	}
	hcack, cpacks := e.command(ctx, in, rcmd, params)
	acks := make([]secs2.Item, 0, len(cpacks))
	for _, c := range cpacks {
		acks = append(acks, secs2.NewListItem(ascii(c.name), bin(c.ack)))
	}
	return secs2.NewListItem(bin(hcack), secs2.NewListItem(acks...)), nil
}

// cpack is a parameter's acknowledgement.
type cpack struct {
	name string
	ack  byte
}

// command carries out one remote command. A refusal is logged and told to
// the host's operator (S10F1) with its reason.
func (e *Equipment) command(ctx context.Context, in inbound, rcmd string, params []param) (byte, []cpack) {
	e.mu.Lock()
	ctl, peer := e.ctl, e.peerName()
	e.mu.Unlock()
	refuse := func(code byte, acks []cpack, format string, args ...any) (byte, []cpack) {
		why := fmt.Sprintf(format, args...)
		e.log.Warnf("host command %s refused (HCACK %d): %s", rcmd, code, why)
		e.tell("%s refused: %s", rcmd, why)
		return code, acks
	}
	known := map[string][]string{"START": {paramPPID}, "STOP": nil, "ABORT": nil, commandPPSelect: {paramPPID}}
	allowed, ok := known[rcmd]
	if !ok {
		return refuse(hcackNoCommand, nil, "no such command (commands: ABORT, PP-SELECT, START, STOP)")
	}
	var bad []cpack
	ppid := ""
	for _, p := range params {
		switch {
		case !slices.Contains(allowed, p.name):
			bad = append(bad, cpack{p.name, cpackNoName})
		case !p.val.IsASCII():
			bad = append(bad, cpack{p.name, cpackBadFormat})
		default:
			ppid, _ = p.val.ToASCII()
		}
	}
	if rcmd == commandPPSelect && ppid == "" && len(bad) == 0 {
		bad = append(bad, cpack{paramPPID, cpackBadValue})
	}
	if len(bad) > 0 {
		return refuse(hcackBadParam, bad, "bad parameter %s", bad[0].name)
	}
	if ctl != OnlineRemote {
		return refuse(hcackCannotNow, nil, "control state is %s: commands are taken only online remote (gem remote at the console)", ctl)
	}
	detail := "host " + peer + " " + rcmd
	switch rcmd {
	case "STOP":
		e.countStop()
		if busy := e.m.Busy(); busy == "" {
			return refuse(hcackAlreadySo, nil, "nothing to stop")
		}
		e.m.Stop(stop.Host, detail)
		e.log.Noticef("host STOP: %s", detail)
		return hcackOK, nil
	case "ABORT":
		e.countStop()
		e.m.Stop(stop.Abort, detail)
		e.log.Noticef("host ABORT: %s", detail)
		return hcackOK, nil
	case commandPPSelect:
		if busy := e.m.Busy(); busy != "" {
			return refuse(hcackCannotNow, nil, "machine busy: %s in progress", busy)
		}
		if _, err := e.m.LoadRecipe(ppid); err != nil {
			return refuse(hcackBadParam, []cpack{{paramPPID, cpackBadValue}}, "%s", firstLine(err))
		}
		e.mu.Lock()
		e.ppExec = ppid
		e.mu.Unlock()
		e.log.Noticef("host selected recipe %s", ppid)
		e.note(CEPPSelected, frame{})
		return hcackOK, nil
	}
	// START
	e.mu.Lock()
	overtaken := in.stopSeq != e.stopSeq
	if ppid == "" {
		ppid = e.ppExec
	}
	e.mu.Unlock()
	switch {
	case overtaken:
		return refuse(hcackCannotNow, nil, "a STOP or ABORT came after it")
	case ppid == "":
		return refuse(hcackCannotNow, nil, "no recipe selected: PP-SELECT one, or give PPID")
	}
	rec, err := e.m.RunRecipe(ctx, ppid)
	switch {
	case errors.Is(err, machine.ErrBusy), errors.Is(err, machine.ErrLatched), errors.Is(err, machine.ErrClosed):
		return refuse(hcackCannotNow, nil, "%s", firstLine(err))
	case err != nil:
		return refuse(hcackBadParam, []cpack{{paramPPID, cpackBadValue}}, "%s", firstLine(err))
	}
	e.log.Noticef("host START: run %s (%d sites)", rec.Name, len(rec.Sites))
	return hcackLater, nil
}

// countStop records a STOP or ABORT: a START received before it and not
// yet carried out is refused.
func (e *Equipment) countStop() {
	e.mu.Lock()
	e.stopSeq++
	e.mu.Unlock()
}

// peerName is the host's address, for logs and stop details. e.mu is held.
func (e *Equipment) peerName() string {
	if e.peer == "" {
		return "(unknown address)"
	}
	return e.peer
}

// firstLine is the first line of err, without the package prefixes a
// person at the host does not need.
func firstLine(err error) string {
	s, _, _ := strings.Cut(err.Error(), "\n")
	for _, p := range []string{"daemon: ", "machine: ", "recipe: "} {
		s = strings.ReplaceAll(s, p, "")
	}
	return s
}
