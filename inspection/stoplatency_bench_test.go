package inspection_test

// Benchmarks of the stop contract's timing on the simulated board, through
// the production drivers (grbl over the emulator's pty, default driver and
// runner settings):
//
//   - BenchmarkStopLatency: from a stop request to the feed-hold byte '!'
//     read by the emulator on its side of the pty, while the stage moves.
//   - BenchmarkSafeStop: from the stage reaching Hold:0 to the outcome
//     persisted (Run has written run.json and returned).
//
// Each iteration is one run stopped during its long move; the figures are
// percentiles over the iterations. Use -benchtime=Nx: a time-based benchtime
// gives few samples (an iteration takes tens of milliseconds).

import (
	"context"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpiotest"

	"github.com/waferd/waferd/board"
	"github.com/waferd/waferd/control"
	"github.com/waferd/waferd/input"
	"github.com/waferd/waferd/inspection"
	"github.com/waferd/waferd/inspection/recipe"
	"github.com/waferd/waferd/inspection/results"
	"github.com/waferd/waferd/internal/emuchild"
	"github.com/waferd/waferd/internal/logging"
	"github.com/waferd/waferd/machine"
	"github.com/waferd/waferd/stop"
)

// farSite is a run whose only site lies 160 mm from the reference die: at
// 6000 mm/min the move to it takes 1.8 s of simulated time.
const farSite = `
name = "far"
[wafer]
diameter_mm = 200.0
center_mm = [150.0, 150.0]
[dies]
pitch_mm = [10.0, 10.0]
reference = [-8, 0]
[[site]]
die = [8, 0]
[capture]
exposure_ms = 1
light_level = 0.5
settle_ms = 1
feed_mm_min = 6000
`

// benchScale runs stage motion 50× faster than real time: the long move
// lasts about 36 ms of wall time and a hold from full speed 4 ms. The
// driver's poll interval and timeouts are wall time, as in production.
const benchScale = 50

// stopBench is a simulated board with a runner, instrumented to see the
// emulator's side of the stop.
type stopBench struct {
	b      *testing.B
	board  *board.Board
	emu    *emuchild.Child
	m      *machine.Machine
	runner *inspection.Runner
	rec    *recipe.Recipe
	rng    *rand.Rand

	armed   atomic.Bool // the run has started its move to the far site
	moving  chan struct{}
	wantRT  atomic.Bool // waiting for the first '!' after the trigger
	bang    chan time.Time
	wantH0  atomic.Bool // waiting for the first Hold:0 after the trigger
	hold0   chan time.Time
	wantRst atomic.Bool // waiting for the soft reset after Hold:0
	reset   chan time.Time
	saved   chan time.Time // the outcome persisted (StepWaferMap)

	// events, when set, receives the machine's and the run's events as
	// the daemon's Options.Events does (the machine's under its lock).
	events atomic.Pointer[func(control.Event)]
}

// emit hands e to the events hook, if one is set.
func (g *stopBench) emit(e control.Event) {
	if f := g.events.Load(); f != nil {
		(*f)(e)
	}
}

func newStopBench(b *testing.B) *stopBench {
	b.Helper()
	// The stage controller is the emulator in a process of its own, on a
	// pty; the light and camera are the board's simulated devices
	// (per-device "sim"), as during machine bring-up.
	emu := emuchild.Start(b, benchScale, false)
	brd := emuchild.OpenBoard(b, emu, 160, 160)
	rec, err := recipe.Parse("far.toml", []byte(farSite), brd.Limits)
	if err != nil {
		b.Fatal(err)
	}
	if err := brd.Sim.SetRecipe(rec); err != nil {
		b.Fatal(err)
	}
	// Records go where the test's temporary files go (a disk here, as on
	// the machine), not to tmpfs: persisting the outcome includes fsync.
	store, err := results.Open(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	g := &stopBench{
		b: b, board: brd, emu: emu, rec: rec, rng: rand.New(rand.NewPCG(2026, 8)),
		moving: make(chan struct{}, 1),
		bang:   make(chan time.Time, 1),
		hold0:  make(chan time.Time, 1),
		reset:  make(chan time.Time, 1),
		saved:  make(chan time.Time, 1),
	}
	g.m = machine.New(machine.Config{Stage: brd.Stage, Light: brd.Light, OnEvent: func(e machine.Event) {
		// As daemon.onMachineEvent: called with the machine's lock held.
		switch e.Kind {
		case machine.StopRequested, machine.StopEscalated:
			g.emit(control.Event{Time: e.Time, Kind: control.StopRequested, Reason: e.Cause.Reason, Text: e.Cause.Error(), State: e.State})
		case machine.StateChanged:
			g.emit(control.Event{Time: e.Time, Kind: control.MachineState, State: e.State, Text: e.Text})
		}
	}})
	g.runner = &inspection.Runner{
		Stage: brd.Stage, Light: brd.Light, Camera: brd.Camera, Store: store,
		Started: func(run results.Run) {
			g.emit(control.Event{Kind: control.RunStarted, RunID: run.ID, Recipe: run.Recipe, Sites: run.SitesTotal})
		},
		Progress: func(p inspection.Progress) { g.emit(control.Event{Kind: control.RunProgress, Progress: p}) },
		// A real logger, formatting every line as in production; only the
		// output device differs.
		Log: logging.New(io.Discard, logging.Options{Level: logging.Info}).For("runner"),
		OnStep: func(s inspection.Step, site int) {
			switch {
			case s == inspection.StepMove && site == 0:
				g.armed.Store(true)
			case s == inspection.StepWaferMap:
				select {
				case g.saved <- time.Now():
				default:
				}
			}
		},
	}
	emu.OnState = func(st string, sub int, _ bool, at time.Time) {
		switch {
		case st == "Run" && g.armed.CompareAndSwap(true, false):
			g.moving <- struct{}{}
		case st == "Hold" && sub == 0 && g.wantH0.CompareAndSwap(true, false):
			g.wantRst.Store(true)
			g.hold0 <- at
		}
	}
	emu.OnRT = func(c byte, at time.Time) {
		switch {
		case c == '!' && g.wantRT.CompareAndSwap(true, false):
			g.bang <- at
		case c == 0x18 && g.wantRst.CompareAndSwap(true, false):
			g.reset <- at
		}
	}
	// Home (and warm up) with a first, complete run.
	if out, err := g.run(); err != nil || out.Outcome != machine.Completed {
		b.Fatalf("warm-up run: %v %s %v", err, out.Reason, out.Err)
	}
	<-g.moving // the warm-up run's move to the far site
	<-g.saved
	return g
}

// stopTimes are the moments of one stopped run.
type stopTimes struct {
	moving   bool      // the stage was still moving just before the trigger
	trigger  time.Time // just before the stop request
	bang     time.Time // '!' read by the emulator
	hold0    time.Time // the stage reached Hold:0
	reset    time.Time // the soft reset after Hold:0 read by the emulator
	saved    time.Time // the outcome persisted: run.json written and synced
	returned time.Time // Run returned: the wafer map is drawn too
}

// run runs the recipe under the machine's claim, as the daemon does.
func (g *stopBench) run() (inspection.Result, error) {
	res, err := runClaimed(context.Background(), g.m, g.runner, g.rec)
	g.emit(control.Event{Kind: control.RunEnded, Result: res, Err: err})
	return res, err
}

// stopOnce starts a run, waits until the stage moves to the far site, lets
// a random 0–10 ms pass (so that the stop falls anywhere in the driver's
// status polling), calls trigger and times the stop.
func (g *stopBench) stopOnce(trigger func(), want stop.Reason) stopTimes {
	b := g.b
	type result struct {
		out inspection.Result
		err error
		at  time.Time
	}
	done := make(chan result, 1)
	go func() {
		out, err := g.run()
		done <- result{out, err, time.Now()}
	}()
	timeout := time.NewTimer(5 * time.Second)
	defer timeout.Stop()
	select {
	case <-g.moving:
	case r := <-done:
		b.Fatalf("run ended before its long move: %v %s %v", r.err, r.out.Reason, r.out.Err)
	case <-timeout.C:
		b.Fatal("the stage did not start its long move")
	}
	delay := time.NewTimer(time.Duration(g.rng.Int64N(int64(10 * time.Millisecond))))
	<-delay.C

	var ts stopTimes
	ts.moving = g.emu.Moving()
	g.wantH0.Store(true)
	g.wantRT.Store(true)
	ts.trigger = time.Now()
	trigger()
	for _, w := range []struct {
		c  chan time.Time
		at *time.Time
	}{{g.bang, &ts.bang}, {g.hold0, &ts.hold0}, {g.reset, &ts.reset}} {
		select {
		case *w.at = <-w.c:
		case <-timeout.C:
			b.Fatalf("stopped run: no feed hold, Hold:0 or reset seen (%+v)", ts)
		}
	}
	r := <-done
	ts.returned = r.at
	select {
	case ts.saved = <-g.saved:
	default:
		b.Fatal("stopped run: no StepWaferMap (outcome not persisted?)")
	}
	if r.err != nil || r.out.Outcome != machine.Canceled || r.out.After != machine.Idle {
		b.Fatalf("stopped run: %v, outcome %s (%s), after %s, err %v", r.err, r.out.Outcome, r.out.Reason, r.out.After, r.out.Err)
	}
	if !strings.HasPrefix(r.out.Reason, want.String()+":") {
		b.Fatalf("stopped run: reason %q, want %v", r.out.Reason, want)
	}
	return ts
}

// percentiles reports p50 and p99 of d in unit (µs or ms) as
// <prefix>p50-<suffix> and <prefix>p99-<suffix>, and returns the p50 (0
// without samples).
func percentiles(b *testing.B, d []time.Duration, unit time.Duration, prefix, suffix string) float64 {
	if len(d) == 0 {
		return 0
	}
	slices.Sort(d)
	rank := func(p float64) float64 { // nearest rank
		i := int(float64(len(d))*p+0.999999) - 1
		return float64(d[max(i, 0)]) / float64(unit)
	}
	b.ReportMetric(rank(0.50), prefix+"p50-"+suffix)
	b.ReportMetric(rank(0.99), prefix+"p99-"+suffix)
	return rank(0.50)
}

// BenchmarkStopLatency measures, while the stage moves, the time from a stop
// request to the feed-hold byte '!' arriving at the emulator's end of the
// pty, three ways on the same board and link, taking turns within each
// iteration (so that load and link conditions are shared):
//
//   - stop: machine.Stop(stop.Operator, ...), as the console does;
//   - halt: the stage's bare Halt (the GRBL driver's one-byte write), then
//     the stop that ends the run: the floor under Stop on this link;
//   - button: an edge on the stop button's test pin, with an input.Button
//     wired to machine.Stop(stop.Button, ...) and its Run loop running.
//
// It reports p50 and p99 of each in µs, and stop-ratio-p50 and
// button-ratio-p50: the median over the iterations of each one's latency
// divided by the bare halt's of the same iteration (paired, as the load of
// a shared machine changes from one moment to the next). Goal:
// stop-ratio-p50 ≤ 1.1: a stop costs what the link costs. ns/op is
// meaningless here: an iteration is three whole runs.
func BenchmarkStopLatency(b *testing.B) {
	g := newStopBench(b)
	pin := &gpiotest.Pin{N: "STOP", Num: 27, EdgesChan: make(chan gpio.Level, 4)}
	btn, err := input.NewButton(input.Config{Pin: pin, Pull: gpio.PullDown}, func() {
		g.m.Stop(stop.Button, "bench")
	})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- btn.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-ran; err != nil {
			b.Error(err)
		}
	}()
	kinds := []struct {
		name    string
		reason  stop.Reason
		trigger func()
	}{
		{"stop", stop.Operator, func() { g.m.Stop(stop.Operator, "bench") }},
		{"halt", stop.Operator, func() {
			if err := g.board.Stage.Halt(); err != nil {
				b.Fatal(err)
			}
			g.m.Stop(stop.Operator, "bench")
		}},
		{"button", stop.Button, func() { pin.EdgesChan <- gpio.High }},
	}
	lat := make([][]time.Duration, len(kinds))
	var stopRatio, buttonRatio []float64
	late, turn := 0, 0
	for b.Loop() {
		var this [3]time.Duration
		for k := range kinds {
			i := (turn + k) % len(kinds)
			kind := kinds[i]
			if kind.name == "button" && !released(btn) {
				b.Fatal("the button is still pressed from the last stop")
			}
			ts := g.stopOnce(kind.trigger, kind.reason)
			lat[i], late = sample(lat[i], late, ts, ts.bang.Sub(ts.trigger))
			if ts.moving {
				this[i] = ts.bang.Sub(ts.trigger)
			}
			if kind.name == "button" {
				pin.EdgesChan <- gpio.Low
			}
		}
		if this[1] > 0 && this[0] > 0 {
			stopRatio = append(stopRatio, float64(this[0])/float64(this[1]))
		}
		if this[1] > 0 && this[2] > 0 {
			buttonRatio = append(buttonRatio, float64(this[2])/float64(this[1]))
		}
		turn++
	}
	for i, k := range kinds {
		percentiles(b, lat[i], time.Microsecond, k.name+"-", "µs")
	}
	if len(stopRatio) > 0 {
		b.ReportMetric(median(stopRatio), "stop-ratio-p50")
		b.ReportMetric(median(buttonRatio), "button-ratio-p50")
	}
	b.ReportMetric(float64(late), "late")
}

// sample appends d to samples if the stop was requested while the stage was
// still moving, and otherwise counts it as late (the stop benchmarks report
// how many were left out; a loaded machine can delay the trigger past the
// end of the move).
func sample(samples []time.Duration, late int, ts stopTimes, d time.Duration) ([]time.Duration, int) {
	if !ts.moving {
		return samples, late + 1
	}
	return append(samples, d), late
}

// released waits (at most a second) until btn has seen its release.
func released(btn *input.Button) bool {
	if !btn.Pressed() {
		return true
	}
	t := time.NewTicker(time.Millisecond)
	defer t.Stop()
	deadline := time.Now().Add(time.Second)
	for range t.C {
		if !btn.Pressed() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
	}
	return false
}

// BenchmarkSafeStop measures, for an operator stop during a move, the time
// from the stage reaching Hold:0 (the emulator's state, as a status report
// would first show it) to the outcome persisted: run.json written with the
// final state, synced, and renamed into place (StepWaferMap). p50/p99 in ms;
// ns/op is the mean. It also reports the two parts: hold-p50-ms, Hold:0
// until the driver's soft reset reaches the controller (the hold being seen
// by status polling), and record-p50-ms, from that reset to the outcome
// persisted (reset, banner, status, run.json); and returned-p50-ms, Hold:0
// to Run's return, after the wafer map is drawn too.
//
// Goal (issue 3): ≤ 10 ms.
func BenchmarkSafeStop(b *testing.B) {
	g := newStopBench(b)
	var total, hold, record, returned []time.Duration
	late := 0
	for b.Loop() {
		ts := g.stopOnce(func() { g.m.Stop(stop.Operator, "bench") }, stop.Operator)
		if total, late = sample(total, late, ts, ts.saved.Sub(ts.hold0)); ts.moving {
			hold = append(hold, ts.reset.Sub(ts.hold0))
			record = append(record, ts.saved.Sub(ts.reset))
			returned = append(returned, ts.returned.Sub(ts.hold0))
		}
	}
	if len(total) == 0 {
		b.Fatal("no stop landed during a move")
	}
	percentiles(b, total, time.Millisecond, "", "ms")
	b.ReportMetric(float64(late), "late")
	median := func(d []time.Duration) float64 {
		slices.Sort(d)
		return float64(d[(len(d)-1)/2]) / float64(time.Millisecond)
	}
	b.ReportMetric(median(hold), "hold-p50-ms")
	b.ReportMetric(median(record), "record-p50-ms")
	b.ReportMetric(median(returned), "returned-p50-ms")
}
