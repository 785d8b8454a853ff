package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/arloliu/go-secs/v2/hsms"
	"github.com/arloliu/go-secs/v2/secs2"
	"github.com/arloliu/go-secs/v2/sml"

	"github.com/waferd/waferd/gem"
	"github.com/waferd/waferd/gem/gemhost"
	"github.com/waferd/waferd/internal/tomlfile"
)

// cmdGemHost is a factory host for people: it connects to a waferd (or any
// GEM equipment), establishes communication, goes online, enables every
// event report and alarm, and then takes commands from stdin, one a line,
// while it prints what the equipment sends. A field engineer proves the
// link with it without the fab's software; a script drives it through a
// pipe (wait EVENT waits for an event). It exits 0 at the end of its
// input or on quit, 2 on bad usage, 4 if the connection fails or is lost.
func cmdGemHost(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("waferd gem-host", flag.ContinueOnError)
	fs.SetOutput(stderr)
	deviceID := fs.Uint("device-id", 0, "the equipment's device `id` (HSMS session id)")
	t3 := fs.Duration("t3", 45*time.Second, "reply timeout (T3)")
	trace := fs.Bool("trace", false, "print every message both ways, as SML (the trace command switches it)")
	offline := fs.Bool("offline", false, "establish communication only: do not ask to go online (S1F17)")
	fs.Usage = func() { fmt.Fprint(stderr, gemHostUsage); fs.PrintDefaults() }
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return exitUsage
	}
	if fs.NArg() != 1 || *deviceID > 0x7fff {
		fmt.Fprintln(stderr, "waferd gem-host: give the equipment's address, host:port (and a --device-id of 0–32767)")
		return exitUsage
	}
	g := &gemHostCLI{out: stdout, trace: *trace, names: map[uint32]string{}, waits: map[string]int{}}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	h, err := gemhost.Dial(ctx, gemhost.Config{Addr: fs.Arg(0), DeviceID: uint16(*deviceID), T3: *t3, Trace: g.traceFrame})
	cancel()
	if err != nil {
		fmt.Fprintf(stderr, "waferd gem-host: %v\n", err)
		return exitFailed
	}
	defer h.Close()
	g.h = h
	if err := g.start(*offline); err != nil {
		fmt.Fprintf(stderr, "waferd gem-host: %v\n", err)
		return exitFailed
	}
	var wg sync.WaitGroup
	wg.Go(g.print)
	defer wg.Wait()
	defer h.Close() // ends print

	lines := make(chan string)
	go func() { // ends at the end of the input; a blocked read is the process's
		sc := bufio.NewScanner(stdin)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	for {
		select {
		case <-h.Lost():
			g.say("connection lost: the equipment closed it, or the link failed")
			return exitFailed
		case line, ok := <-lines:
			if !ok {
				return 0
			}
			if quit := g.command(strings.TrimSpace(line)); quit {
				return 0
			}
		}
	}
}

const gemHostUsage = `usage: waferd gem-host [--device-id N] [--t3 D] [--trace] [--offline] HOST:PORT

A factory host for people: connects to the equipment (HSMS-SS, active),
establishes communication (S1F13), goes online (S1F17), enables every
event report and alarm, prints what the equipment sends, and takes
commands on stdin (help lists them).

`

// gemHostCLI is one session of waferd gem-host.
type gemHostCLI struct {
	h   *gemhost.Host
	out io.Writer

	mu    sync.Mutex
	trace bool
	names map[uint32]string // variable and event ids → names
	waits map[string]int    // events seen, by name, for wait
	seen  chan struct{}     // closed and replaced at every event
	svs   []gemhost.Variable
}

// say prints lines (whole, never interleaved).
func (g *gemHostCLI) say(format string, args ...any) {
	g.mu.Lock()
	defer g.mu.Unlock()
	fmt.Fprintf(g.out, format+"\n", args...)
}

// start establishes communication, goes online and sets the reports up.
func (g *gemHostCLI) start(offline bool) error {
	ctx := context.Background()
	code, err := g.h.Establish(ctx)
	if err != nil {
		return err
	}
	g.say("connected; establish communication (S1F13): COMMACK %d%s", code, map[bool]string{true: " (accepted)", false: " (denied)"}[code == 0])
	if !offline {
		code, err = g.h.Online(ctx)
		if err != nil {
			return err
		}
		g.say("request online (S1F17): ONLACK %d (%s)", code, [...]string{"online now", "refused: the equipment is offline at its console", "already online"}[min(code, 2)])
	}
	if g.svs, err = g.h.StatusNames(ctx); err != nil {
		return err
	}
	dvs, err := g.h.DataNames(ctx)
	if err != nil {
		return err
	}
	for _, v := range append(slices.Clone(g.svs), dvs...) {
		g.names[v.ID] = v.Name
	}
	if !offline {
		events, err := g.h.Setup(ctx, gem.SVRunID, gem.SVRunRecipe, gem.SVSitesDone, gem.SVSitesTotal, gem.SVDefects, gem.SVMachineState, gem.SVLatchReason)
		if err != nil {
			return err
		}
		for id, n := range events {
			g.names[id] = n
		}
		g.say("event reports and alarms enabled (%d events); type help for the commands", len(events))
	}
	g.seen = make(chan struct{})
	return nil
}

// print prints what the equipment sends until the connection closes.
func (g *gemHostCLI) print() {
	for m := range g.h.Messages() {
		switch {
		case m.Stream() == 6 && m.Function() == 11:
			ev, err := g.h.ParseEvent(m)
			if err != nil {
				g.say("event: %v", err)
				continue
			}
			var vals []string
			for _, vid := range slices.Sorted(func(yield func(uint32) bool) {
				for k := range ev.Values {
					if !yield(k) {
						return
					}
				}
			}) {
				vals = append(vals, g.names[vid]+"="+value(ev.Values[vid]))
			}
			name := g.names[ev.CEID]
			g.say("event %s (%d): %s", name, ev.CEID, strings.Join(vals, " "))
			g.mu.Lock()
			g.waits[name]++
			close(g.seen)
			g.seen = make(chan struct{})
			g.mu.Unlock()
		case m.Stream() == 5 && m.Function() == 1:
			a, err := gemhost.ParseAlarm(m)
			if err != nil {
				g.say("alarm: %v", err)
				continue
			}
			g.say("alarm %s %d: %s", map[bool]string{true: "SET", false: "cleared"}[a.Set], a.ID, a.Text)
		case m.Stream() == 10 && m.Function() == 1:
			txt, _ := secs2.NewCursor(gemhost.Body(m)).At(1).ASCII()
			g.say("equipment says: %s", txt)
		}
	}
}

// value renders a variable's value briefly.
func value(it secs2.Item) string {
	switch {
	case it.IsASCII():
		s, _ := it.ToASCII()
		return fmt.Sprintf("%q", s)
	case it.Size() == 0:
		return "-"
	}
	s := it.ToSML() // <U4[1] 5>
	if i := strings.IndexByte(s, ' '); i > 0 && strings.HasSuffix(s, ">") && !strings.Contains(s, "\n") {
		return s[i+1 : len(s)-1]
	}
	return strings.Join(strings.Fields(s), " ")
}

// traceFrame prints one frame as SML (--trace, trace on).
func (g *gemHostCLI) traceFrame(out bool, frame []byte) {
	g.mu.Lock()
	on := g.trace
	g.mu.Unlock()
	if !on {
		return
	}
	dir := "<"
	if out {
		dir = ">"
	}
	msg, err := hsms.DecodeHSMSMessage(frame)
	if err != nil {
		g.say("%s % x (%v)", dir, frame, err)
		return
	}
	dm, ok := msg.ToDataMessage()
	if !ok {
		g.say("%s %s", dir, controlName(msg.Type()))
		return
	}
	w := ""
	if dm.WaitBit() {
		w = " W"
	}
	g.say("%s S%dF%d%s %s", dir, dm.Stream(), dm.Function(), w, strings.Join(strings.Fields(gemhost.Body(dm).ToSML()), " "))
}

func controlName(t hsms.MsgType) string {
	names := map[hsms.MsgType]string{
		hsms.SelectReqType: "Select.req", hsms.SelectRspType: "Select.rsp", hsms.DeselectReqType: "Deselect.req",
		hsms.DeselectRspType: "Deselect.rsp", hsms.LinktestReqType: "Linktest.req", hsms.LinktestRspType: "Linktest.rsp",
		hsms.RejectReqType: "Reject.req", hsms.SeparateReqType: "Separate.req",
	}
	if n, ok := names[t]; ok {
		return n
	}
	return fmt.Sprintf("control message %d", t)
}

const gemHostHelp = `commands:
  status                 every status variable (S1F3)
  recipes                the equipment's recipes (S7F19)
  select RECIPE          PP-SELECT the recipe START runs (S2F41)
  start [RECIPE]         START the selected recipe, or RECIPE (S2F41)
  stop                   STOP: a controlled stop, the run canceled (S2F41)
  abort                  ABORT: an immediate stop, the run aborted, the machine latched (S2F41)
  get RECIPE [FILE]      a recipe's text (S7F5), printed or written to FILE
  put FILE [NAME]        store FILE as recipe NAME (default: FILE's name) (S7F3)
  alarms                 every alarm and whether it is set (S5F5)
  online, offline        request online (S1F17) or offline (S1F15)
  send SML               send any message, e.g. send S1F3 W <L <U4 1003>>; prints the reply
  trace on|off           print every message both ways as SML
  wait EVENT [SECONDS]   wait until the equipment reports EVENT (for scripts; default 60 s)
  quit                   separate and end (so does the end of the input)`

// command runs one line; quit reports that the session should end.
func (g *gemHostCLI) command(line string) (quit bool) {
	if line == "" || strings.HasPrefix(line, "#") {
		return false
	}
	word, rest, _ := strings.Cut(line, " ")
	rest = strings.TrimSpace(rest)
	args := strings.Fields(rest)
	ctx := context.Background()
	fail := func(err error) { g.say("error: %s: %v", word, err) }
	switch strings.ToLower(word) {
	case "help", "?":
		g.say("%s", gemHostHelp)
	case "quit", "exit":
		return true
	case "status":
		vals, err := g.h.Status(ctx)
		if err != nil {
			fail(err)
			return false
		}
		var lines []string
		for i, v := range g.svs {
			if i < len(vals) {
				u := ""
				if v.Units != "" {
					u = " " + v.Units
				}
				lines = append(lines, fmt.Sprintf("  %-16s %s%s", v.Name, value(vals[i]), u))
			}
		}
		g.say("%s", strings.Join(lines, "\n"))
	case "recipes":
		m, err := g.h.Send(ctx, 7, 19, nil)
		if err != nil {
			fail(err)
			return false
		}
		g.say("recipes: %s", strings.Join(strings.Fields(gemhost.Body(m).ToSML()), " "))
	case "select", "start", "stop", "abort":
		rcmd := map[string]string{"select": "PP-SELECT", "start": "START", "stop": "STOP", "abort": "ABORT"}[strings.ToLower(word)]
		var ps []gemhost.Param
		if len(args) > 0 {
			ps = append(ps, gemhost.Param{Name: "PPID", Value: args[0]})
		}
		hc, acks, err := g.h.Command(ctx, rcmd, ps...)
		if err != nil {
			fail(err)
			return false
		}
		meaning := [...]string{"done", "no such command", "cannot do it now", "a parameter is bad", "accepted, the events follow", "already so"}
		text := "code unknown"
		if int(hc) < len(meaning) {
			text = meaning[hc]
		}
		line := fmt.Sprintf("%s: HCACK %d (%s)", rcmd, hc, text)
		for _, a := range acks {
			line += fmt.Sprintf("; %s: CPACK %d", a.Name, a.Ack)
		}
		g.say("%s", line)
	case "get":
		if len(args) < 1 {
			g.say("error: get RECIPE [FILE]")
			return false
		}
		m, err := g.h.Send(ctx, 7, 5, secs2.NewASCIIItem(args[0]))
		if err != nil {
			fail(err)
			return false
		}
		body, err := secs2.NewCursor(gemhost.Body(m)).At(1).Binary()
		if err != nil {
			if s, aerr := secs2.NewCursor(gemhost.Body(m)).At(1).ASCII(); aerr == nil {
				body, err = []byte(s), nil
			}
		}
		if err != nil {
			g.say("get: no recipe %s", args[0])
			return false
		}
		if len(args) > 1 {
			if err := os.WriteFile(args[1], body, 0o644); err != nil {
				fail(err)
				return false
			}
			g.say("get: %s written to %s (%d bytes)", args[0], args[1], len(body))
			return false
		}
		g.say("%s", strings.TrimRight(string(body), "\n"))
	case "put":
		if len(args) < 1 {
			g.say("error: put FILE [NAME]")
			return false
		}
		data, err := tomlfile.ReadFile(args[0]) // a recipe: bounded, regular files only
		if err != nil {
			fail(err)
			return false
		}
		name := strings.TrimSuffix(filepath.Base(args[0]), ".toml")
		if len(args) > 1 {
			name = args[1]
		}
		m, err := g.h.Send(ctx, 7, 3, secs2.NewListItem(secs2.NewASCIIItem(name), secs2.NewBinaryItem(data)))
		if err != nil {
			fail(err)
			return false
		}
		ack, _ := secs2.NewCursor(gemhost.Body(m)).Binary()
		meaning := map[byte]string{0: "stored", 1: "refused (the equipment says why)", 2: "too long"}
		if len(ack) == 1 {
			g.say("put %s: ACKC7 %d (%s)", name, ack[0], meaning[ack[0]])
		}
	case "alarms":
		m, err := g.h.Send(ctx, 5, 5, secs2.NewUintItem(4))
		if err != nil {
			fail(err)
			return false
		}
		c := secs2.NewCursor(gemhost.Body(m))
		n, _ := c.Size()
		for i := range n {
			alcd, _ := c.At(i, 0).Binary()
			id, _ := c.At(i, 1).Uint()
			txt, _ := c.At(i, 2).ASCII()
			state := "clear"
			if len(alcd) == 1 && alcd[0]&0x80 != 0 {
				state = "SET"
			}
			g.say("  alarm %d %-5s %s", id, state, txt)
		}
	case "online", "offline":
		var code byte
		var err error
		if strings.ToLower(word) == "online" {
			code, err = g.h.Online(ctx)
		} else {
			code, err = g.h.Offline(ctx)
		}
		if err != nil {
			fail(err)
			return false
		}
		g.say("%s: code %d", word, code)
	case "send":
		msgs, err := sml.Parse(rest + ".")
		if err != nil || len(msgs) != 1 {
			g.say("error: send: %v (want one message, e.g. send S1F1 W)", err)
			return false
		}
		req := msgs[0]
		body, err := req.Item()
		if err != nil {
			fail(err)
			return false
		}
		m, err := g.h.Send(ctx, req.Stream(), req.Function(), body)
		if err != nil {
			fail(err)
			return false
		}
		g.say("S%dF%d %s", m.Stream(), m.Function(), strings.Join(strings.Fields(gemhost.Body(m).ToSML()), " "))
	case "trace":
		g.mu.Lock()
		g.trace = len(args) == 0 || args[0] != "off"
		g.mu.Unlock()
	case "wait":
		if len(args) < 1 {
			g.say("error: wait EVENT [SECONDS]")
			return false
		}
		d := 60 * time.Second
		if len(args) > 1 {
			var s float64
			if _, err := fmt.Sscan(args[1], &s); err != nil || s <= 0 {
				g.say("error: wait: %q is not a number of seconds", args[1])
				return false
			}
			d = time.Duration(s * float64(time.Second))
		}
		if !g.wait(args[0], d) {
			g.say("wait: no %s within %v", args[0], d)
		}
	default:
		g.say("error: unknown command %q: help lists them", word)
	}
	return false
}

// wait waits until an event called name has been reported (once more than
// the waits before it consumed), or d passes.
func (g *gemHostCLI) wait(name string, d time.Duration) bool {
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	for {
		g.mu.Lock()
		if g.waits[name] > 0 {
			g.waits[name]--
			g.mu.Unlock()
			return true
		}
		seen := g.seen
		g.mu.Unlock()
		select {
		case <-seen:
		case <-deadline.C:
			return false
		case <-g.h.Lost():
			return false
		}
	}
}
