package console

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/waferd/waferd/control"
	"github.com/waferd/waferd/inspection"
	"github.com/waferd/waferd/inspection/recipe"
	"github.com/waferd/waferd/inspection/results"
	"github.com/waferd/waferd/machine"
	"github.com/waferd/waferd/motion"
	"github.com/waferd/waferd/stop"
	"github.com/waferd/waferd/watchdog"
)

type handler func(s *session, ctx context.Context, c Command)

var handlers map[string]handler

func init() {
	handlers = map[string]handler{
		"help": cmdHelp, "version": cmdVersion, "status": cmdStatus, "config": cmdConfig,
		"home": cmdHome, "origin": cmdOrigin, "move": cmdMove, "jog": cmdJog, "light": cmdLight, "capture": cmdCapture,
		"run": cmdRun, "stop": cmdStop, "reset": cmdReset, "runs": cmdRuns, "show": cmdShow,
		"log": cmdLog, "watch": cmdWatch, "wait": cmdWait, "selftest": cmdSelfTest, "stats": cmdStats,
		"gem": cmdGem,
	}
	for _, c := range commands {
		if handlers[c.name] == nil {
			panic("console: no handler for " + c.name)
		}
	}
}

// failed prints err as one error line, naming a stop plainly.
func (s *session) failed(what string, err error) {
	msg := err.Error()
	for _, p := range []string{"daemon: ", "machine: ", "inspection: ", "grbl: "} {
		msg = strings.ReplaceAll(msg, p, "")
	}
	if !strings.HasPrefix(msg, what) {
		msg = what + ": " + msg
	}
	s.errorf("%s", msg)
}

func cmdHelp(s *session, _ context.Context, c Command) {
	if len(c.Args) == 1 {
		sp := lookup(strings.ToLower(c.Args[0]))
		lines := []string{"usage: " + usage(sp), "  " + sp.summary}
		if sp.help != "" {
			lines = append(lines, "  "+sp.help)
		}
		s.print(lines...)
		return
	}
	lines := []string{"commands (help COMMAND for more):"}
	w := 0
	for _, sp := range commands {
		w = max(w, len(usage(&sp)))
	}
	for _, sp := range commands {
		lines = append(lines, fmt.Sprintf("  %-*s  %s", w, usage(&sp), sp.summary))
	}
	lines = append(lines, "keys: Backspace/DEL, Ctrl-U/Ctrl-C clear, Ctrl-W word, Up/Down history")
	s.print(lines...)
}

func cmdVersion(s *session, _ context.Context, _ Command) {
	s.printf("waferd %s", s.o.Version)
}

func cmdConfig(s *session, _ context.Context, _ Command) {
	text, err := s.m.ConfigText()
	if err != nil {
		s.failed("config", err)
		return
	}
	s.print(strings.TrimRight(text, "\n"))
}

func cmdStatus(s *session, ctx context.Context, _ Command) {
	st := s.m.Status(ctx)
	s.print(statusLines(st)...)
}

func statusLines(st control.Status) []string {
	var l []string
	add := func(label, format string, args ...any) {
		l = append(l, fmt.Sprintf("%-9s %s", label, fmt.Sprintf(format, args...)))
	}
	machine := st.Machine.String()
	if st.LatchReason != "" {
		machine += " (" + st.LatchReason + "): reset clears it"
	}
	if st.Busy != "" {
		machine += "; busy: " + st.Busy
	}
	add("machine", "%s", machine)
	trust := "position trusted"
	switch {
	case !st.Trusted && st.Homes:
		trust = "position NOT trusted: home first"
	case !st.Trusted:
		trust = "position NOT trusted: no homing switches: jog to the mark, then origin X Y"
	}
	if st.StageErr != nil {
		add("stage", "not answering (%s); %s", oneLine(st.StageErr.Error()), trust)
	} else {
		add("stage", "%s at X %s Y %s mm, %s", st.Stage.StateName(), motion.FormatMM(st.Stage.MPos[0]), motion.FormatMM(st.Stage.MPos[1]), trust)
	}
	light := "off"
	if st.Light.On {
		light = fmt.Sprintf("on at %s for %v", percent(st.Light.Level), time.Since(st.Light.Since).Round(100*time.Millisecond))
	}
	if st.Light.Err != nil {
		light += "; last error: " + oneLine(st.Light.Err.Error())
	}
	add("light", "%s (light on uses %s)", light, percent(st.LightLevel))
	add("camera", "%dx%d pixels, %.1f µm/pixel", st.Camera.Width, st.Camera.Height, st.Camera.PixelSize)
	var beats []string
	temp := "not watched"
	for _, h := range st.Watchdog {
		switch {
		case h.Kind == watchdog.KindSensor && h.Name == "temperature":
			temp = fmt.Sprintf("%.1f °C (limit %.1f °C)", h.Value, h.Max)
			if h.Age < 0 {
				temp = "no reading yet"
			}
			if !h.Fresh {
				temp += " ALARM"
			}
		case h.Kind == watchdog.KindLease:
			if h.Paused {
				beats = append(beats, h.Name+" lease free")
			} else {
				beats = append(beats, fmt.Sprintf("%s lease %v/%v", h.Name, h.Age.Round(time.Millisecond), h.Limit))
			}
		case h.Kind == watchdog.KindSensor:
			beats = append(beats, fmt.Sprintf("%s %.1f", h.Name, h.Value))
		case h.Paused:
			beats = append(beats, h.Name+" paused")
		default:
			state := "ok"
			if !h.Fresh {
				state = "STALE"
			}
			beats = append(beats, fmt.Sprintf("%s %v/%v %s", h.Name, h.Age.Round(time.Millisecond), h.Limit, state))
		}
	}
	add("watchdog", "%s", strings.Join(beats, ", "))
	add("temp", "%s", temp)
	if r := st.Run; r != nil {
		p := r.Progress
		if p.Done == 0 {
			add("run", "%s: started %v ago, %d sites, none finished yet", r.Recipe, time.Since(r.Started).Round(time.Second), r.Sites)
		} else {
			add("run", "%s (%s): site %d/%d, %d defects, elapsed %v, ETA %v", r.Recipe, p.RunID, p.Done, p.Total, p.Defects,
				p.Elapsed.Round(time.Second), p.ETA.Round(time.Second))
		}
	} else {
		add("run", "none")
	}
	if o := st.Last; o.RunID != "" {
		add("last run", "%s", outcomeLine(o))
	} else {
		add("last run", "none since start-up (runs lists the records)")
	}
	add("publish", "%s", publishLine(st.Publish))
	return l
}

// publishLine says how publishing to the broker goes: the connection and
// the outbox's depth.
func publishLine(p *control.PublishStatus) string {
	if p == nil {
		return "off"
	}
	conn := fmt.Sprintf("connected to %s since %s", strings.Join(p.Brokers, ", "), p.Since.Format("15:04:05"))
	if !p.Connected {
		conn = fmt.Sprintf("NOT connected to %s since %s", strings.Join(p.Brokers, ", "), p.Since.Format("15:04:05"))
		if p.LastError != "" {
			conn += " (" + oneLine(p.LastError) + ")"
		}
	}
	out := fmt.Sprintf("outbox %s (%s of %s)", plural(p.Depth, "message"), bytesText(p.Bytes), bytesText(p.MaxBytes))
	if !p.FullSince.IsZero() {
		out += fmt.Sprintf(", FULL since %s: the oldest are dropped", p.FullSince.Format("15:04:05"))
	}
	return conn + "; " + out
}

// bytesText formats a size in B, KiB or MiB.
func bytesText(n int64) string {
	switch {
	case n < 1<<10:
		return fmt.Sprintf("%d B", n)
	case n < 1<<20:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
}

func percent(level float64) string { return fmt.Sprintf("%.0f%%", level*100) }

func outcomeLine(o inspection.Result) string {
	s := fmt.Sprintf("%s %s, %d/%d sites, %s", o.RunID, o.Outcome, o.Done, o.Total, plural(o.Defects, "defect"))
	if o.Reason != "" {
		s += " (" + o.Reason + ")"
	}
	if o.After.Latched() {
		s += "; machine " + o.After.String() + ": reset clears it"
	}
	return s
}

// plural says "1 defect", "2 defects".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// position prints where the stage is after a manual motion.
func (s *session) position(ctx context.Context, verb string) {
	st := s.m.Status(ctx)
	if st.StageErr != nil {
		s.printf("%s; stage not answering: %s", verb, oneLine(st.StageErr.Error()))
		return
	}
	s.printf("%s: stage %s at X %s Y %s mm", verb, st.Stage.StateName(), motion.FormatMM(st.Stage.MPos[0]), motion.FormatMM(st.Stage.MPos[1]))
}

func cmdHome(s *session, ctx context.Context, _ Command) {
	if busy := s.m.Busy(); busy != "" {
		s.errorf("home refused: %s in progress (stop it, or wait for it to end)", busy)
		return
	}
	if st := s.m.Status(ctx); st.Homes && !st.Machine.Latched() {
		s.print("homing...") // a refusal (latched, no switches) comes at once, without it
	}
	if err := s.m.Home(ctx); err != nil {
		s.failed("home", err)
		return
	}
	s.position(ctx, "homed")
}

func cmdOrigin(s *session, ctx context.Context, c Command) {
	p := point(c.Args)
	q := fmt.Sprintf("origin: the stage stands at X %s Y %s mm from now on? Make sure it is exactly on the mark: the machine trusts it, and a wrong origin drives the stage into its ends. [y/N] ",
		motion.FormatMM(p.X), motion.FormatMM(p.Y))
	ok, err := s.confirm(ctx, q)
	switch {
	case err != nil:
		s.printf("origin: not set (%s)", oneLine(err.Error()))
		return
	case !ok:
		s.print("origin: not set")
		return
	}
	if err := s.m.SetOrigin(ctx, p); err != nil {
		s.failed("origin", err)
		return
	}
	s.position(ctx, "origin set")
}

func point(a []string) motion.Point {
	x, _ := ParseMM(a[0]) // checked by Parse
	y, _ := ParseMM(a[1])
	return motion.Point{X: motion.MM(x), Y: motion.MM(y)}
}

func cmdMove(s *session, ctx context.Context, c Command) {
	if err := s.m.MoveTo(ctx, point(c.Args)); err != nil {
		s.failed("move", err)
		return
	}
	s.position(ctx, "moved")
}

func cmdJog(s *session, ctx context.Context, c Command) {
	if err := s.m.Jog(ctx, point(c.Args)); err != nil {
		s.failed("jog", err)
		return
	}
	s.position(ctx, "jogged")
}

func cmdLight(s *session, ctx context.Context, c Command) {
	var err error
	switch strings.ToLower(c.Args[0]) {
	case "on":
		level := 0.0
		if len(c.Args) == 2 {
			level, _ = ParseLevel(c.Args[1])
		}
		err = s.m.SetLight(true, level)
	case "off":
		err = s.m.SetLight(false, 0)
	case "level":
		level, _ := ParseLevel(c.Args[1])
		if err = s.m.SetLightLevel(level); err == nil && !s.m.Status(ctx).Light.On {
			s.printf("light level %s: used by the next light on", percent(level))
			return
		}
	}
	if err != nil {
		s.failed("light", err)
		return
	}
	st := s.m.Status(ctx)
	if st.Light.On {
		s.printf("light on at %s", percent(st.Light.Level))
	} else {
		s.print("light off")
	}
}

func cmdCapture(s *session, ctx context.Context, c Command) {
	name := ""
	if len(c.Args) == 1 {
		name = c.Args[0]
	}
	res, err := s.m.Capture(ctx, name)
	if err != nil {
		s.failed("capture", err)
		return
	}
	s.printf("captured %s (%dx%d, mean grey %.0f)", res.Path, res.Width, res.Height, res.Mean)
}

func cmdRun(s *session, ctx context.Context, c Command) {
	if len(c.Args) == 0 {
		names, from, err := s.m.Recipes()
		switch {
		case err != nil:
			s.failed("run", err)
		case len(names) == 0:
			s.errorf("run: no recipes in %s: add <name>.toml files there", from)
		default:
			s.printf("recipes (%s): %s; start one with run NAME", from, strings.Join(names, ", "))
		}
		return
	}
	if _, err := s.m.RunRecipe(ctx, strings.TrimSuffix(c.Args[0], ".toml")); err != nil {
		s.failed("run", err)
		return
	}
	// A stop typed while the run was starting must not miss it.
	if c, ok := stop.FromContext(ctx); ok {
		s.m.Stop(c.Reason, c.Detail)
	}
}

func cmdStop(s *session, _ context.Context, _ Command) {
	// Only scripts get here (in order); on a terminal stop acts at once.
	busy := s.m.Busy()
	s.m.Stop(stop.Operator, "console "+s.o.Name)
	s.print(stopMessage(busy, "", 0))
}

func cmdReset(s *session, ctx context.Context, _ Command) {
	st := s.m.Status(ctx)
	var q, done string
	switch {
	case st.Machine.Latched():
		q = fmt.Sprintf("reset: clear the %s latch (%s)? The position stays untrusted. [y/N] ", st.Machine, st.LatchReason)
		done = "reset: machine idle; home before moving"
	case st.StageErr == nil && st.Stage.Ready() != nil && st.Stage.Stopped():
		// Held, door, check mode, asleep: a run would refuse to start.
		why := strings.TrimPrefix(st.Stage.Ready().Error(), "motion: ")
		q = fmt.Sprintf("reset: %s. Soft-reset the stage controller? The position becomes untrusted. [y/N] ", why)
		done = "reset: stage controller reset; home before moving"
	default:
		msg := fmt.Sprintf("reset: nothing to reset: the machine is %s", st.Machine)
		if st.StageErr == nil && st.Stage.State == motion.StateAlarm {
			msg += " (the stage is in alarm: home clears it)"
		}
		s.print(msg)
		return
	}
	ok, err := s.confirm(ctx, q)
	if err != nil {
		s.printf("reset: not done (%s)", oneLine(err.Error()))
		return
	}
	if !ok {
		s.print("reset: not done")
		return
	}
	if err := s.m.Reset(ctx); err != nil {
		s.failed("reset", err)
		return
	}
	s.print(done)
}

// confirm asks q and waits for the next line: y or yes confirms.
func (s *session) confirm(ctx context.Context, q string) (bool, error) {
	if s.o.Interactive {
		s.setPrompt(q)
		defer s.setPrompt(s.o.Prompt)
	} else {
		s.print(strings.TrimSpace(q))
	}
	t := time.NewTimer(ConfirmTimeout)
	defer t.Stop()
	select {
	case line, ok := <-s.lines:
		if !ok {
			return false, errors.New("end of input")
		}
		a := strings.ToLower(strings.TrimSpace(line))
		return a == "y" || a == "yes", nil
	case <-ctx.Done():
		return false, context.Cause(ctx)
	case <-t.C:
		return false, fmt.Errorf("no answer within %v", ConfirmTimeout)
	}
}

func cmdRuns(s *session, _ context.Context, c Command) {
	n := 10
	if len(c.Args) == 1 {
		n, _ = strconv.Atoi(c.Args[0])
	}
	runs, err := s.m.Runs(n)
	if len(runs) == 0 && err == nil {
		s.print("no runs recorded")
		return
	}
	// Columns as wide as their widest entry: run ids grow with recipe
	// names.
	idW, sitesW := len("RUN"), len("SITES")
	for _, r := range runs {
		idW = max(idW, len(r.ID))
		sitesW = max(sitesW, len(fmt.Sprintf("%d/%d", r.SitesDone, r.SitesTotal)))
	}
	lines := []string{fmt.Sprintf("%-*s  %-11s  %*s  %7s  %s", idW, "RUN", "STATE", sitesW, "SITES", "DEFECTS", "REASON")}
	for _, r := range runs {
		lines = append(lines, fmt.Sprintf("%-*s  %-11s  %*s  %7d  %s", idW, r.ID, r.State, sitesW, fmt.Sprintf("%d/%d", r.SitesDone, r.SitesTotal), r.DefectsTotal, r.Reason))
	}
	s.print(lines...)
	if err != nil {
		s.errorf("runs: some records could not be read: %v", err)
	}
}

// findRun resolves "last", a run id or a unique part of one.
func (s *session) findRun(key string) (results.Run, error) {
	runs, _ := s.m.Runs(0)
	if strings.EqualFold(key, "last") {
		if len(runs) == 0 {
			return results.Run{}, errors.New("show: no runs recorded")
		}
		return runs[0], nil
	}
	var ids []string
	for _, r := range runs {
		if r.ID == key {
			return r, nil
		}
		if strings.Contains(r.ID, key) {
			ids = append(ids, r.ID)
		}
	}
	switch len(ids) {
	case 0:
		return results.Run{}, fmt.Errorf("show: no run matches %s: runs lists them", quote(key))
	case 1:
		return s.m.LoadRun(ids[0])
	}
	if len(ids) > 3 {
		ids = append(ids[:3], "…")
	}
	return results.Run{}, fmt.Errorf("show: %s matches %d runs (%s): give more of the id", quote(key), len(ids), strings.Join(ids, ", "))
}

func cmdShow(s *session, _ context.Context, c Command) {
	r, err := s.findRun(c.Args[0])
	if err != nil {
		s.failed("show", err)
		return
	}
	s.print(runLines(r)...)
}

func runLines(r results.Run) []string {
	var l []string
	add := func(label, format string, args ...any) {
		l = append(l, fmt.Sprintf("%-10s %s", label, fmt.Sprintf(format, args...)))
	}
	add("run", "%s", r.ID)
	add("recipe", "%s (%s)", r.Recipe, r.RecipeFile)
	state := string(r.State)
	if r.Reason != "" {
		state += ": " + r.Reason
	}
	add("outcome", "%s", state)
	if r.Error != "" {
		add("error", "%s", oneLine(r.Error))
	}
	add("started", "%s", r.StartedAt.Local().Format(time.DateTime))
	if r.EndedAt != nil {
		add("ended", "%s (%v)", r.EndedAt.Local().Format(time.DateTime), r.EndedAt.Sub(r.StartedAt).Round(100*time.Millisecond))
	}
	add("sites", "%d/%d done, %d failed, complete: %v", r.SitesDone, r.SitesTotal, r.SitesFailed, r.Complete)
	add("defects", "%d", r.DefectsTotal)
	add("position", "%s", map[bool]string{true: "trusted at the end", false: "NOT trusted at the end (home before the next move)"}[r.PositionTrusted])
	var worst []results.Site
	for _, st := range r.Sites {
		if st.Defects > 0 || st.Status == results.SiteFailed {
			worst = append(worst, st)
		}
	}
	slices.SortStableFunc(worst, func(a, b results.Site) int { return b.Defects - a.Defects })
	if len(worst) > 5 {
		worst = worst[:5]
	}
	for _, st := range worst {
		d := fmt.Sprintf("site %d die %s at (%.3f, %.3f) mm: %s", st.Index+1, recipe.DieName(st.Die), st.XMM, st.YMM, plural(st.Defects, "defect"))
		if st.Error != "" {
			d += ", failed: " + oneLine(st.Error)
		}
		add("", "%s", d)
	}
	return l
}

func cmdLog(s *session, _ context.Context, c Command) {
	n := 20
	if len(c.Args) == 1 {
		n, _ = strconv.Atoi(c.Args[0])
	}
	lines := s.m.Logs(n)
	if len(lines) == 0 {
		s.print("log: no lines yet")
		return
	}
	s.print(lines...)
}

// argSeconds reads the optional SECONDS argument (0 when absent).
func argSeconds(c Command) time.Duration {
	if len(c.Args) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(strings.TrimSuffix(c.Args[0], "s"), 64)
	return time.Duration(v * float64(time.Second))
}

// watchPeriod is how often watch refreshes.
const watchPeriod = 500 * time.Millisecond

func cmdWatch(s *session, ctx context.Context, c Command) {
	d := argSeconds(c)
	if d == 0 && !s.o.Interactive {
		d = 3 * time.Second // a script has no key to press
	}
	var deadline <-chan time.Time
	if d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		deadline = t.C
	}
	tick := time.NewTicker(watchPeriod)
	defer tick.Stop()
	if s.o.Interactive {
		s.startWatch(watchLine(s.m.Status(ctx)))
		defer s.endWatch()
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-deadline:
			return
		case <-tick.C:
		}
		line := watchLine(s.m.Status(ctx))
		if !s.o.Interactive {
			s.print(line)
			continue
		}
		if !s.updateWatch(line) {
			return
		}
	}
}

func watchLine(st control.Status) string {
	parts := []string{time.Now().Format("15:04:05"), st.Machine.String()}
	if st.StageErr != nil {
		parts = append(parts, "stage ?")
	} else {
		pos := fmt.Sprintf("%s X%s Y%s", st.Stage.StateName(), motion.FormatMM(st.Stage.MPos[0]), motion.FormatMM(st.Stage.MPos[1]))
		if !st.Trusted {
			pos += " untrusted"
		}
		parts = append(parts, pos)
	}
	if st.Light.On {
		parts = append(parts, "light "+percent(st.Light.Level))
	} else {
		parts = append(parts, "light off")
	}
	if r := st.Run; r != nil {
		parts = append(parts, fmt.Sprintf("%s %d/%d ETA %v", r.Recipe, r.Progress.Done, r.Sites, r.Progress.ETA.Round(time.Second)))
	}
	for _, h := range st.Watchdog {
		if h.Kind == watchdog.KindSensor && h.Name == "temperature" && h.Age >= 0 {
			parts = append(parts, fmt.Sprintf("%.1f°C", h.Value))
		} else if !h.Fresh {
			parts = append(parts, h.Name+" STALE")
		}
	}
	return strings.Join(parts, " | ") + " | any key ends"
}

func cmdWait(s *session, ctx context.Context, c Command) {
	if s.m.Busy() == "" {
		s.print("wait: no run in progress")
		return
	}
	wctx := ctx
	if d := argSeconds(c); d > 0 {
		var cancel context.CancelFunc
		wctx, cancel = context.WithTimeoutCause(ctx, d, fmt.Errorf("still running after %v", d))
		defer cancel()
	}
	if err := s.m.WaitRun(wctx); err != nil {
		s.printf("wait: %s", oneLine(err.Error()))
		return
	}
	s.syncEvents(ctx) // the run's outcome is printed before what follows
}

func cmdSelfTest(s *session, ctx context.Context, _ Command) {
	s.print("selftest: stage status, light on/off, one frame...")
	res, err := s.m.SelfTest(ctx)
	if len(res) > 0 {
		var lines []string
		failed := 0
		for _, r := range res {
			verdict := "PASS"
			if !r.Pass {
				verdict = "FAIL"
				failed++
			}
			lines = append(lines, fmt.Sprintf("  %-12s %s  %s", r.Device, verdict, r.Detail))
		}
		lines = append(lines, fmt.Sprintf("selftest: %d passed, %d failed", len(res)-failed, failed))
		s.print(lines...)
	}
	if err != nil {
		s.failed("selftest", err)
	}
}

func cmdStats(s *session, _ context.Context, _ Command) {
	st := s.m.Stats()
	var req []string
	for r := stop.Operator; r <= stop.EStop; r++ {
		req = append(req, fmt.Sprintf("%s %d", r, st.Requests[r]))
	}
	lines := []string{"stop requests: " + strings.Join(req, ", ")}
	var ended []string
	for _, k := range append(reasonNames(), "error", "other") {
		if n := st.Stopped[k]; n > 0 {
			ended = append(ended, fmt.Sprintf("%s %d", k, n))
		}
	}
	if len(ended) == 0 {
		ended = []string{"none"}
	}
	lines = append(lines, fmt.Sprintf("operations completed (runs, homing, moves, ...): %d; ended by a stop: %s", st.Completed, strings.Join(ended, ", ")))
	if noise := s.m.LinkNoise(); noise != "" {
		lines = append(lines, "stage link: "+noise)
	}
	lines = append(lines, histogram("stop latency, request to stage at rest", st.ToRest)...)
	lines = append(lines, histogram("stop latency, request to outcome recorded", st.ToEnd)...)
	if p := s.m.Publishing(); p != nil {
		lines = append(lines, fmt.Sprintf("messages published since start-up: sent %d, retried %d, dropped %d; %d waiting in the outbox",
			p.Sent, p.Retried, p.Dropped, p.Depth))
	} else {
		lines = append(lines, "messages published: publishing off")
	}
	s.print(lines...)
}

func reasonNames() []string {
	var n []string
	for r := stop.Operator; r <= stop.EStop; r++ {
		n = append(n, r.String())
	}
	return n
}

func histogram(title string, h machine.Histogram) []string {
	if h.N == 0 {
		return []string{title + ": no stops measured yet"}
	}
	lines := []string{fmt.Sprintf("%s (%d): min %v, mean %v, max %v", title, h.N,
		round(h.Min), round(h.Sum/time.Duration(h.N)), round(h.Max))}
	first, last := -1, -1
	peak := 0
	for i, c := range h.Counts {
		if c > 0 {
			if first < 0 {
				first = i
			}
			last = i
			peak = max(peak, c)
		}
	}
	for i := first; i <= last; i++ {
		label := ""
		if i < len(machine.LatencyBounds) {
			label = "< " + machine.LatencyBounds[i].String()
		} else {
			label = ">= " + machine.LatencyBounds[len(machine.LatencyBounds)-1].String()
		}
		bar := strings.Repeat("#", (h.Counts[i]*30+peak-1)/peak)
		lines = append(lines, fmt.Sprintf("  %8s %5d %s", label, h.Counts[i], bar))
	}
	return lines
}

func round(d time.Duration) time.Duration {
	switch {
	case d < time.Millisecond:
		return d.Round(time.Microsecond)
	case d < time.Second:
		return d.Round(100 * time.Microsecond)
	}
	return d.Round(time.Millisecond)
}

// formatEvent is the line every console prints for an event.
func formatEvent(ev control.Event) string {
	switch ev.Kind {
	case control.RunStarted:
		return fmt.Sprintf("run %s started: %d sites (stop stops it)", ev.Recipe, ev.Sites)
	case control.RunProgress:
		p := ev.Progress
		return fmt.Sprintf("%s: site %d/%d die %s, %s so far, elapsed %v, ETA %v",
			p.RunID, p.Done, p.Total, recipe.DieName(p.Site.Die), plural(p.Defects, "defect"), p.Elapsed.Round(100*time.Millisecond), p.ETA.Round(time.Second))
	case control.RunEnded:
		if ev.Err != nil {
			return fmt.Sprintf("run %s did not start: %s", ev.Recipe, oneLine(ev.Err.Error()))
		}
		return "run " + outcomeLine(ev.Result)
	case control.StopRequested:
		return "stopping: " + strings.TrimPrefix(ev.Text, "stopped: ")
	case control.Notice:
		return ev.Text
	}
	return ""
}
