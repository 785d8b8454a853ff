package gem_test

// BenchmarkHostAbort times the factory host's ABORT beside the console's
// stop, in the same run, on the simulated board through the production
// drivers: the GRBL emulator in a process of its own on a pty
// (internal/emuchild), the daemon, the equipment interface on loopback
// TCP, and a console session on an OS pipe. The host is a raw socket: its
// ABORT frame is encoded beforehand and written with one write(2), so the
// figure starts when the frame goes to the equipment, not inside a host
// library.
//
// Each iteration stops two runs during their long move, in turns: one by
// the host's ABORT (S2F41) and one by the console's stop (a "stop" line).
// Times run from just before the ABORT frame is written to the socket (or
// the line to the console's pipe) to the emulator reading the byte from
// its end of the pty:
//
//   - abort-reset: ABORT → the soft reset (0x18), which stops the stage
//     dead, the first byte an ABORT writes (Stop writes it itself, with no
//     feed hold before it);
//   - stop: the console's stop → '!', the first byte a stop writes.
//
// It reports p50 and p99 of each in µs, and added-p50-µs and added-p99-µs:
// abort-reset's percentile minus stop's (the goal: p99 under 1 ms), what
// the remote path adds to the first byte that reaches the stage. After
// each ABORT the latch is reset and the next run homes first. Use
// -benchtime=Nx (an iteration is two whole runs).

import (
	"context"
	"encoding/binary"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/waferd/waferd/config"
	"github.com/waferd/waferd/console"
	"github.com/waferd/waferd/daemon"
	"github.com/waferd/waferd/gem"
	"github.com/waferd/waferd/inspection"
	"github.com/waferd/waferd/inspection/recipe"
	"github.com/waferd/waferd/inspection/results"
	"github.com/waferd/waferd/internal/emuchild"
	"github.com/waferd/waferd/internal/logging"
	"github.com/waferd/waferd/machine"
)

// farSite is a run whose only site lies 160 mm from the reference die: at
// 6000 mm/min and 50 times real time the move to it lasts about 36 ms.
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

// pipePort is a console session's port: the read end of an OS pipe (a
// file descriptor, as a serial console's is), output dropped.
type pipePort struct {
	*os.File
}

func (pipePort) Write(p []byte) (int, error) { return len(p), nil }

type abortBench struct {
	b       *testing.B
	d       *daemon.Daemon
	host    net.Conn
	console *os.File
	rec     *recipe.Recipe
	emu     *emuchild.Child

	armed     atomic.Bool // the run has started its move to the far site
	moving    chan struct{}
	wantBang  atomic.Bool
	bang      chan time.Time
	wantReset atomic.Bool
	reset     chan time.Time
}

func newAbortBench(b *testing.B) *abortBench {
	b.Helper()
	g := &abortBench{b: b, moving: make(chan struct{}, 1), bang: make(chan time.Time, 1), reset: make(chan time.Time, 1)}
	g.emu = emuchild.Start(b, 50, false)
	brd := emuchild.OpenBoard(b, g.emu, 160, 160)
	var err error
	if g.rec, err = recipe.Parse("far.toml", []byte(farSite), brd.Limits); err != nil {
		b.Fatal(err)
	}
	cfg := config.Default()
	cfg.Sim.Enabled = true
	cfg.Data.Dir = b.TempDir()
	cfg.Data.Recipes = filepath.Join(cfg.Data.Dir, "recipes")
	cfg.Watchdog.StageHeartbeatMS, cfg.Watchdog.RunnerHeartbeatMS, cfg.Watchdog.CameraHeartbeatMS = 30000, 30000, 30000
	if err := os.Mkdir(cfg.Data.Recipes, 0o755); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cfg.Data.Recipes, "far.toml"), []byte(farSite), 0o644); err != nil {
		b.Fatal(err)
	}
	store, err := results.Open(cfg.Data.Dir)
	if err != nil {
		b.Fatal(err)
	}
	// Real loggers, formatting every line as in production; only the
	// output device differs.
	logs := logging.New(io.Discard, logging.Options{Level: logging.Info})
	g.d, err = daemon.New(daemon.Options{
		Config: cfg, Store: store, Logs: logs,
		Devices: daemon.Devices{Stage: brd.Stage, Light: brd.Light, Camera: brd.Camera, Limits: brd.Limits, SetRecipe: brd.Sim.SetRecipe},
		OnStep: func(s inspection.Step, site int) {
			if s == inspection.StepMove && site == 0 {
				g.armed.Store(true)
			}
		},
	})
	if err != nil {
		b.Fatal(err)
	}
	g.d.Start()
	b.Cleanup(func() {
		if err := g.d.Shutdown(context.Background(), "end of benchmark"); err != nil {
			b.Error(err)
		}
	})
	g.emu.OnState = func(st string, _ int, _ bool, _ time.Time) {
		if st == "Run" && g.armed.CompareAndSwap(true, false) {
			g.moving <- struct{}{}
		}
	}
	g.emu.OnRT = func(c byte, at time.Time) {
		switch {
		case c == '!' && g.wantBang.CompareAndSwap(true, false):
			g.bang <- at
		case c == 0x18 && g.wantReset.CompareAndSwap(true, false):
			g.reset <- at
		}
	}

	eq, err := gem.New(gem.Config{Listen: "127.0.0.1:0", InitialControl: gem.OnlineRemote, Remote: true,
		Log: logs.For("gem")}, g.d)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- eq.Run(ctx) }()
	g.host = rawHost(b, eq.Addr())

	in, out, err := os.Pipe()
	if err != nil {
		b.Fatal(err)
	}
	g.console = out
	consoleDone := make(chan error, 1)
	go func() {
		consoleDone <- console.Serve(ctx, pipePort{in}, g.d, console.Options{Name: "bench", Version: "bench"})
	}()
	b.Cleanup(func() {
		_ = out.Close()
		cancel()
		<-ran
		<-consoleDone
	})
	return g
}

// stopOnce starts a run, waits until the stage moves to the far site, lets
// a random 0–10 ms pass, triggers the stop and returns when the run has
// ended, with when the emulator read the stop's first byte: the soft reset
// if reset (an ABORT), else the feed hold. moving reports whether the
// stage still moved just before the trigger.
func (g *abortBench) stopOnce(rng *rand.Rand, trigger func(), reset bool) (moving bool, t0, first time.Time) {
	b := g.b
	if err := g.d.StartRun(context.Background(), g.rec); err != nil {
		b.Fatal(err)
	}
	timeout := time.NewTimer(10 * time.Second)
	defer timeout.Stop()
	select {
	case <-g.moving:
	case <-timeout.C:
		b.Fatal("the stage did not start its long move")
	}
	delay := time.NewTimer(time.Duration(rng.Int64N(int64(10 * time.Millisecond))))
	<-delay.C
	moving = g.emu.Moving()
	g.wantBang.Store(!reset)
	g.wantReset.Store(reset)
	t0 = time.Now()
	trigger()
	seen, what := g.bang, "no feed hold seen"
	if reset {
		seen, what = g.reset, "no soft reset seen"
	}
	select {
	case first = <-seen:
	case <-timeout.C:
		b.Fatal(what)
	}
	if err := g.d.WaitRun(context.Background()); err != nil {
		b.Fatal(err)
	}
	return moving, t0, first
}

func BenchmarkHostAbort(b *testing.B) {
	g := newAbortBench(b)
	rng := rand.New(rand.NewPCG(2026, 17))
	ctx := context.Background()
	// S2F41 W L[2] <A "ABORT"> <L[0]>, device 0.
	text := append(append([]byte{0x01, 0x02, 0x41, 0x05}, "ABORT"...), 0x01, 0x00)
	sys := uint32(1000)
	abort := func() {
		sys++
		if _, err := g.host.Write(frame(0, 2, 41, true, sys, text)); err != nil {
			b.Fatal(err)
		}
	}
	stopLine := func() {
		if _, err := io.WriteString(g.console, "stop\n"); err != nil {
			b.Fatal(err)
		}
	}
	// A first, complete run homes the stage and warms everything up.
	if res, err := g.d.Run(ctx, g.rec); err != nil || res.Outcome != machine.Completed {
		b.Fatalf("warm-up run: %v %s", err, res.Reason)
	}
	<-g.moving
	var abortReset, stop []time.Duration
	late := 0
	turn := 0
	for b.Loop() {
		for k := range 2 {
			if (turn+k)%2 == 0 {
				moving, t0, reset := g.stopOnce(rng, abort, true)
				if last := g.d.Last(); last.Outcome != machine.Aborted {
					b.Fatalf("ABORT: run %s (%s)", last.Outcome, last.Reason)
				}
				if err := g.d.Reset(ctx); err != nil {
					b.Fatal(err)
				}
				if !moving {
					late++
					continue
				}
				abortReset = append(abortReset, reset.Sub(t0))
			} else {
				moving, t0, bang := g.stopOnce(rng, stopLine, false)
				if last := g.d.Last(); last.Outcome != machine.Canceled {
					b.Fatalf("stop: run %s (%s)", last.Outcome, last.Reason)
				}
				if !moving {
					late++
					continue
				}
				stop = append(stop, bang.Sub(t0))
			}
		}
		turn++
	}
	if len(abortReset) == 0 || len(stop) == 0 {
		b.Fatal("no stop landed during a move")
	}
	p50r, p99r := report(b, abortReset, "abort-reset-")
	p50s, p99s := report(b, stop, "stop-")
	µs := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
	b.ReportMetric(µs(p50r-p50s), "added-p50-µs")
	b.ReportMetric(µs(p99r-p99s), "added-p99-µs")
	b.ReportMetric(float64(late), "late")
}

// rawHost selects a session on a socket, establishes communication,
// disables the event reports and alarms, and answers, from a goroutine,
// whatever the equipment sends that wants a reply. It is closed when the
// benchmark ends.
func rawHost(b *testing.B, addr string) net.Conn {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	must := func(p []byte) {
		if _, err := c.Write(p); err != nil {
			b.Fatal(err)
		}
	}
	must(controlFrame(1, 1))
	must(frame(0, 1, 13, true, 2, []byte{0x01, 0x00}))                               // S1F13 W L[0]
	must(frame(0, 2, 37, true, 3, []byte{0x01, 0x02, 0x25, 0x01, 0x00, 0x01, 0x00})) // S2F37 W disable every event
	must(frame(0, 5, 3, true, 4, []byte{0x01, 0x02, 0x21, 0x01, 0x00, 0xb1, 0x00}))  // S5F3 W disable every alarm
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			f, err := readFrame(c, time.Hour)
			if err != nil {
				return
			}
			if f[9] == 0 && f[6]&0x80 != 0 { // a primary of the equipment's, W: answer it <B 0>
				text := []byte{0x21, 0x01, 0x00}
				if f[6]&0x7f == 1 && f[7] == 13 { // S1F14 L[2] <B 0> <L[0]>
					text = []byte{0x01, 0x02, 0x21, 0x01, 0x00, 0x01, 0x00}
				}
				if _, err := c.Write(frame(0, f[6]&0x7f, f[7]+1, false, binary.BigEndian.Uint32(f[10:]), text)); err != nil {
					return
				}
			}
		}
	}()
	b.Cleanup(func() {
		_ = c.Close()
		<-done
	})
	return c
}

// report reports p50 and p99 (nearest rank) of d in µs and returns them.
func report(b *testing.B, d []time.Duration, prefix string) (p50, p99 time.Duration) {
	slices.Sort(d)
	rank := func(p float64) time.Duration {
		i := int(float64(len(d))*p+0.999999) - 1
		return d[max(i, 0)]
	}
	b.ReportMetric(float64(rank(0.50))/float64(time.Microsecond), prefix+"p50-µs")
	b.ReportMetric(float64(rank(0.99))/float64(time.Microsecond), prefix+"p99-µs")
	return rank(0.50), rank(0.99)
}
