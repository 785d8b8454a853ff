package inspection_test

// The stop contract, proven through the GRBL driver against the emulator:
// a stop for every reason at random moments, and faults of the stage's
// link, always leave the machine at rest, the light off, the camera idle
// and a valid partial record, and the next run works. The runner's own
// faults are tested on fakes (runner_test.go).

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"periph.io/x/conn/v3/gpio"

	"github.com/waferd/waferd/board"
	"github.com/waferd/waferd/inspection"
	"github.com/waferd/waferd/inspection/recipe"
	"github.com/waferd/waferd/inspection/results"
	"github.com/waferd/waferd/machine"
	"github.com/waferd/waferd/motion"
	"github.com/waferd/waferd/motion/grbl"
	"github.com/waferd/waferd/sim"
	"github.com/waferd/waferd/stop"
)

var randomCases = flag.Int("stop.cases", 40, "number of random-time stop cases in TestStopAtRandomTimes")

// threeSites is a short run: reference die and three sites.
const threeSites = `
name = "three"
[wafer]
diameter_mm = 50.0
center_mm = [150.0, 150.0]
[dies]
pitch_mm = [10.0, 10.0]
reference = [0, 0]
[[site]]
die = [1, 0]
[[site]]
die = [1, 1]
[[site]]
die = [0, 1]
[capture]
exposure_ms = 2
light_level = 0.7
settle_ms = 15
feed_mm_min = 3000
[sim]
seed = 5
defect_fraction = 0.7
max_defects_per_site = 2
`

// openFDs counts this process's open file descriptors.
func openFDs(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	require.NoError(t, err)
	return len(ents)
}

type stopRig struct {
	*rig
	oneSite *recipe.Recipe // for "the next run starts and completes"
}

// checkNoFDLeak checks, when t ends (after its parallel subtests), that
// the process has as many file descriptors open as now.
func checkNoFDLeak(t *testing.T) {
	fds := openFDs(t)
	t.Cleanup(func() { assert.Equal(t, fds, openFDs(t), "file descriptors leaked") })
}

// newStopRig opens a fast simulated board; it is closed when t ends.
func newStopRig(t *testing.T, doc string, scale float64) *stopRig {
	t.Helper()
	// Small frames: hundreds of sites are captured, analysed and saved
	// as PNG here, under the race detector.
	simCfg := sim.Config{TimeScale: scale, FrameWidth: 160, FrameHeight: 160}
	rec, err := recipe.Parse("stop.toml", []byte(doc), simCfg.Limits())
	require.NoError(t, err)
	simCfg.Scene = sim.SceneFor(rec, simCfg.FOV())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := board.OpenSim(ctx, board.SimConfig{
		Sim: simCfg,
		// Generous timeouts: these tests share two cores with the rest of
		// the suite and must not mistake a busy machine for a mute stage.
		GRBL: grbl.Config{PollInterval: 20 * time.Millisecond, ReplyTimeout: 2 * time.Second},
	})
	require.NoError(t, err)
	data := fastTempDir(t)
	store, err := results.Open(data)
	require.NoError(t, err)
	one := *rec
	one.Sites = rec.Sites[:1]
	g := &stopRig{rig: &rig{rec: rec, board: b, data: data,
		m: machine.New(machine.Config{Stage: b.Stage, Light: b.Light, HoldTimeout: 3 * time.Second, ResetTimeout: 3 * time.Second}),
		runner: &inspection.Runner{
			Stage: b.Stage, Light: b.Light, Camera: b.Camera, Store: store,
			Config: inspection.Config{CaptureTimeout: time.Second},
		}}, oneSite: &one}
	t.Cleanup(func() { assert.NoError(t, b.Close()) })
	return g
}

// fastTempDir is a temporary directory on tmpfs when there is one: these
// tests save hundreds of sites, and fsync on a shared disk is what would
// dominate their run time, not the behaviour under test.
func fastTempDir(t testing.TB) string {
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		if dir, err := os.MkdirTemp("/dev/shm", "waferd-test-"); err == nil {
			t.Cleanup(func() { os.RemoveAll(dir) })
			return dir
		}
	}
	return t.TempDir()
}

// expect describes what a stopped run must look like.
type expect struct {
	state   machine.Outcome
	reason  string // prefix of the outcome's reason
	latched machine.State
	done    int // sites done; -1: not checked beyond consistency
	// doneMax > done allows done..doneMax sites: sites are pipelined, so
	// a stop while the stage moves to site 1 may find site 0 still in
	// analysis (abandoned) or already saved.
	doneMax  int
	complete bool
	// linkLost: the host could not stop the stage. GRBL finishes the
	// motion already in its planner on its own; wait for that.
	linkLost bool
}

// checkStopped asserts the invariants of a stopped run: the machine at
// rest and a valid record that says what happened.
func (g *stopRig) checkStopped(t *testing.T, out inspection.Result, want expect) {
	t.Helper()
	assert.Equal(t, want.state, out.Outcome, "outcome (reason %q, err %v)", out.Reason, out.Err)
	assert.True(t, strings.HasPrefix(out.Reason, want.reason), "reason %q, want prefix %q", out.Reason, want.reason)
	assert.Equal(t, want.latched, out.After, "latched state")
	assert.Equal(t, want.latched, g.m.State(), "machine state")

	// The machine is at rest.
	assert.Equal(t, gpio.Low, lightLevel(g.rig), "light off")
	emu := g.board.Sim.Emulator
	if want.linkLost {
		assert.True(t, waitFor(func() bool { return !emu.Moving() }))
	}
	assert.False(t, emu.Moving(), "stage not moving")
	st, _ := emu.State()
	if !want.linkLost { // the emulator's state is frozen with its link
		assert.Contains(t, []motion.State{motion.StateIdle, motion.StateAlarm}, st, "stage idle (or alarm after a lost position), not %v", st)
	}
	if st == motion.StateAlarm {
		assert.False(t, g.m.Trusted(), "an alarm means the position is not trusted")
	}
	assert.False(t, g.board.Sim.Camera.Streaming(), "camera not streaming")
	checkRecord(t, out, want)
}

// checkRecord asserts that the record of a stopped run is valid and says
// what happened.
func checkRecord(t *testing.T, out inspection.Result, want expect) {
	t.Helper()
	run := loadRun(t, out.Dir)
	assert.Equal(t, want.complete, run.Complete)
	assert.NotEqual(t, results.Running, run.State)
	assert.NotNil(t, run.EndedAt)
	assert.Equal(t, out.Reason, run.Reason)
	done := 0
	for _, s := range run.Sites {
		if s.Status == results.SiteDone {
			done++
			assert.FileExists(t, filepath.Join(out.Dir, s.Result))
		}
	}
	assert.Equal(t, done, run.SitesDone, "sites_done matches the sites marked done")
	assert.Equal(t, out.Done, run.SitesDone)
	switch {
	case want.done >= 0 && want.doneMax > want.done:
		assert.GreaterOrEqual(t, run.SitesDone, want.done, "sites done")
		assert.LessOrEqual(t, run.SitesDone, want.doneMax, "sites done")
	case want.done >= 0:
		assert.Equal(t, want.done, run.SitesDone, "sites done")
	}
}

// waitFor polls cond (for a state only visible by polling the simulator)
// and returns false after 5 s.
func waitFor(cond func() bool) bool {
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(200 * time.Microsecond)
	}
	return true
}

var reasons = []stop.Reason{stop.Operator, stop.Host, stop.Button, stop.Shutdown, stop.Fault, stop.Watchdog, stop.Abort, stop.EStop}

func outcomeFor(r stop.Reason) (machine.Outcome, machine.State) {
	switch r {
	case stop.EStop:
		return machine.Aborted, machine.EStop
	case stop.Fault, stop.Watchdog, stop.Abort:
		return machine.Aborted, machine.Faulted
	}
	return machine.Canceled, machine.Idle
}

// TestStopAtRandomTimes stops runs at seeded random moments with random
// reasons, on four simulated boards at once: the production GRBL driver
// against the emulator on a pty, the stop landing wherever the driver is.
// The machine's own storm on fake devices (machine.TestStopStorm, 50
// cases on a fake clock) covers the stop path's logic; this one covers the
// link. With -short (the ARM suites under qemu-user) 12 cases. More: make
// soak, or go test -run TestStopAtRandomTimes ./inspection/ -args
// -stop.cases=2000
func TestStopAtRandomTimes(t *testing.T) {
	checkNoFDLeak(t)
	const boards = 4
	cases := *randomCases
	if testing.Short() {
		cases = min(cases, 12)
	}
	for b := range boards {
		t.Run(fmt.Sprintf("board%d", b), func(t *testing.T) {
			t.Parallel()
			g := newStopRig(t, threeSites, 50)
			rng := rand.New(rand.NewPCG(2026, uint64(b)))
			counts := map[machine.Outcome]int{}
			n := (cases + boards - 1 - b) / boards
			for i := range n {
				reason := reasons[rng.IntN(len(reasons))]
				delay := time.Duration(rng.IntN(300_000)) * time.Microsecond
				ok := t.Run(fmt.Sprintf("%03d-%s-%v", i, reason, delay), func(t *testing.T) {
					g.randomStop(t, reason, delay, counts)
				})
				if !ok {
					break
				}
			}
			t.Logf("outcomes over %d random stops: %v", n, counts)
			// After all that, a run still completes.
			out, err := g.run(t, g.rec)
			require.NoError(t, err)
			assert.Equal(t, machine.Completed, out.Outcome)
		})
	}
}

func (g *stopRig) randomStop(t *testing.T, reason stop.Reason, delay time.Duration, counts map[machine.Outcome]int) {
	fired := make(chan struct{})
	timer := time.AfterFunc(delay, func() { defer close(fired); g.m.Stop(reason, "random") })
	out, err := g.run(t, g.rec)
	if !timer.Stop() {
		// The stop fired: let it finish here, or a slow machine delivers
		// it into the next case's run.
		<-fired
	}
	require.NoError(t, err)
	counts[out.Outcome]++
	if out.Outcome == machine.Completed {
		// The stop came too late for this run: it found the machine
		// idle (a late e-stop or fault still latches it).
		assert.Equal(t, machine.Idle, out.After)
		run := loadRun(t, out.Dir)
		assert.True(t, run.Complete)
		assert.Equal(t, results.Completed, run.State)
		assert.Equal(t, gpio.Low, lightLevel(g.rig))
		if g.m.State().Latched() {
			require.True(t, reason.Latches())
			require.NoError(t, g.m.Reset(context.Background()))
		}
		return
	}
	state, latched := outcomeFor(reason)
	g.checkStopped(t, out, expect{state: state, reason: reason.String(), latched: latched, done: -1})
	if out.After.Latched() {
		require.NoError(t, g.m.Reset(context.Background()))
	}
}

// TestInjectedLinkFaults injects faults of the stage and its link through
// the GRBL driver against the emulator, while the stage moves to site 1: a
// stage that never comes to rest after the feed hold, one that stops
// answering, a serial line that closes. Each run aborts, the machine at
// rest, its record valid. The runner's own faults (a device error, a step
// that overruns its budget) are TestInjectedFaults, on fakes.
func TestInjectedLinkFaults(t *testing.T) {
	type fault struct {
		name     string
		inject   func(g *stopRig) // called once the stage moves to site 1
		reason   string
		done     int  // sites done (or 1); -1: not checked
		linkLost bool // the emulator's state is frozen with its link
		check    func(t *testing.T, g *stopRig, out inspection.Result)
		next     bool
	}
	faults := []fault{
		{name: "stage never leaves Hold:1", reason: "operator: test", done: -1, next: true,
			inject: func(g *stopRig) {
				g.board.Sim.Emulator.InjectStuckHold(true)
				g.m.Stop(stop.Operator, "test")
			},
			check: func(t *testing.T, g *stopRig, out inspection.Result) {
				assert.ErrorIs(t, out.Err, motion.ErrTimeout, "hold deadline missed")
				assert.False(t, g.m.Trusted(), "reset while decelerating: position untrusted")
				assert.Contains(t, g.m.LatchReason(), "safe stop incomplete")
				g.board.Sim.Emulator.InjectStuckHold(false)
			}},
		{name: "stage stops answering", reason: "fault: stage", next: true,
			inject: func(g *stopRig) { g.board.Sim.Emulator.InjectMute(true) },
			check: func(t *testing.T, g *stopRig, out inspection.Result) {
				assert.ErrorIs(t, out.Err, motion.ErrTimeout)
				g.board.Sim.Emulator.InjectMute(false)
			}},
		{name: "serial line closes mid-move", reason: "fault: stage", linkLost: true,
			inject: func(g *stopRig) { g.board.Sim.Emulator.InjectHangup() },
			check: func(t *testing.T, g *stopRig, out inspection.Result) {
				assert.ErrorIs(t, out.Err, motion.ErrLinkLost)
				assert.Equal(t, machine.Faulted, g.m.State())
			}},
	}
	checkNoFDLeak(t)
	for _, f := range faults {
		t.Run(f.name, func(t *testing.T) {
			t.Parallel()
			g := newStopRig(t, threeSites, 5) // slow enough to catch a move in progress
			_, err := g.run(t, g.rec)         // homed and warm
			require.NoError(t, err)
			g.runner.OnStep = func(s inspection.Step, i int) {
				if s == inspection.StepMove && i == 1 {
					go func() {
						waitFor(g.board.Sim.Emulator.Moving)
						f.inject(g)
					}()
				}
			}
			out, err := g.run(t, g.rec)
			require.NoError(t, err)
			g.checkStopped(t, out, expect{state: machine.Aborted, reason: f.reason, latched: machine.Faulted,
				done: f.done, doneMax: 1, linkLost: f.linkLost})
			f.check(t, g, out)
			if f.next {
				if g.m.State().Latched() {
					require.NoError(t, g.m.Reset(context.Background()))
				}
				g.runner.OnStep = nil
				next, err := g.run(t, g.oneSite)
				require.NoError(t, err)
				assert.Equal(t, machine.Completed, next.Outcome, "next run: %s %v", next.Reason, next.Err)
			}
		})
	}
}
