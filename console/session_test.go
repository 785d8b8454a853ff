package console

import (
	"bytes"
	"context"
	"image/png"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpiotest"

	"github.com/waferd/waferd/config"
	"github.com/waferd/waferd/control"
	"github.com/waferd/waferd/daemon"
	"github.com/waferd/waferd/daemon/daemontest"
	"github.com/waferd/waferd/inspection/results"
	"github.com/waferd/waferd/internal/logging"
	"github.com/waferd/waferd/machine"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// small is a recipe of 21 sites that takes about a second at time scale 20.
const small = `
name = "small"
[wafer]
diameter_mm = 50.0
center_mm = [150.0, 150.0]
[dies]
pitch_mm = [10.0, 10.0]
reference = [0, 0]
layout = "grid"
[capture]
exposure_ms = 5
light_level = 0.7
settle_ms = 30
feed_mm_min = 3000
[sim]
seed = 7
defect_fraction = 0.5
max_defects_per_site = 2
`

// testMachine is a daemon on fake devices, with the recipe "small" in its
// recipe directory.
type testMachine struct {
	*daemontest.Rig
	d     *daemon.Daemon
	cfg   *config.Config
	store *results.Store
}

func startMachine(t *testing.T) *testMachine {
	t.Helper()
	ring := logging.NewRing(200)
	r := daemontest.New(t, daemontest.Options{LogRing: ring, Config: func(c *config.Config) {
		c.Button.DebounceMS, c.EStop.DebounceMS = 5, 5
	}})
	require.NoError(t, os.MkdirAll(r.Config.Data.Recipes, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(r.Config.Data.Recipes, "small.toml"), []byte(small), 0o644))
	return &testMachine{Rig: r, d: r.D, cfg: r.Config, store: r.Store}
}

// serve runs a console session until the test ends.
func serve(t *testing.T, f func(ctx context.Context) error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil && err != io.EOF {
				t.Errorf("console: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("console did not end")
		}
	})
}

// terminal is the engineer's side of a pseudo-terminal.
type terminal struct {
	t    *testing.T
	f    *os.File
	mu   sync.Mutex
	out  []byte
	seen int
	more chan struct{}
	done chan struct{}
}

func newTerminal(t *testing.T, f *os.File) *terminal {
	t.Helper()
	nb, err := nonblockingDup(f)
	require.NoError(t, err)
	tm := &terminal{t: t, f: nb, more: make(chan struct{}, 1), done: make(chan struct{})}
	go func() {
		defer close(tm.done)
		buf := make([]byte, 4096)
		for {
			n, err := tm.f.Read(buf)
			tm.mu.Lock()
			tm.out = append(tm.out, buf[:n]...)
			tm.mu.Unlock()
			select {
			case tm.more <- struct{}{}:
			default:
			}
			if err != nil {
				return
			}
		}
	}()
	t.Cleanup(tm.close)
	return tm
}

func (tm *terminal) close() {
	_ = tm.f.Close()
	<-tm.done
}

func (tm *terminal) send(s string) {
	tm.t.Helper()
	_, err := tm.f.Write([]byte(s))
	require.NoError(tm.t, err)
}

// expect waits until the output after what earlier expectations matched
// matches pattern, moves past the match and returns its submatches.
func (tm *terminal) expect(pattern string) []string {
	tm.t.Helper()
	re := regexp.MustCompile(pattern)
	deadline := time.NewTimer(15 * time.Second)
	defer deadline.Stop()
	for {
		tm.mu.Lock()
		rest := tm.out[tm.seen:]
		loc := re.FindSubmatchIndex(rest)
		var m []string
		if loc != nil {
			for i := 0; i < len(loc); i += 2 {
				if loc[i] >= 0 {
					m = append(m, string(rest[loc[i]:loc[i+1]]))
				} else {
					m = append(m, "")
				}
			}
			tm.seen += loc[1]
		}
		tm.mu.Unlock()
		if m != nil {
			return m
		}
		select {
		case <-tm.more:
		case <-tm.done:
			tm.t.Fatalf("terminal closed waiting for %q; output:\n%s", pattern, tm.text())
		case <-deadline.C:
			tm.t.Fatalf("no %q within 15 s; output since the last match:\n%s", pattern, tm.text())
		}
	}
}

// text is the output after the last match.
func (tm *terminal) text() string {
	tm.mu.Lock()
	defer tm.mu.Unlock()
	return string(tm.out[tm.seen:])
}

// all is the whole output.
func (tm *terminal) all() string {
	tm.mu.Lock()
	defer tm.mu.Unlock()
	return string(tm.out)
}

// serialConsole serves the console through ServePort on the terminal side
// of a new pty (as on a UART) and returns the engineer's end.
func serialConsole(t *testing.T, m *testMachine, name string) *terminal {
	t.Helper()
	master, slave, err := pty.Open()
	require.NoError(t, err)
	t.Cleanup(func() { _ = slave.Close() })
	tm := newTerminal(t, master)
	require.NoError(t, master.Close()) // the terminal has its own descriptor
	serve(t, func(ctx context.Context) error {
		return ServePort(ctx, slave.Name(), 115200, m.d, Options{Name: name, Version: "test"})
	})
	tm.expect(`waferd test console on ` + name + `: type help`)
	return tm
}

func level(p *gpiotest.Pin) gpio.Level {
	p.Lock()
	defer p.Unlock()
	return p.L
}

// TestHeldStageSession: a feed hold wired to the controller leaves the
// stage in Hold:0. A run refuses to start, saying so; the console's reset
// offers to soft-reset the controller, after which the position must be
// homed again and runs start.
func TestHeldStageSession(t *testing.T) {
	m := startMachine(t)
	tm := serialConsole(t, m, "ttyTEST")
	ctx := context.Background()
	tm.send("home\r")
	tm.expect(`homed: stage Idle`)
	require.NoError(t, m.Stage.Halt())
	require.Eventually(t, func() bool {
		st, err := m.Stage.Status(ctx)
		return err == nil && st.StateName() == "Hold:0"
	}, 5*time.Second, time.Millisecond)

	tm.send("run small\r")
	tm.expect(`run small did not start: inspection: cannot start "small": motion: stage not ready: the controller reports Hold:0: held \(feed hold\)`)
	tm.send("reset\r")
	tm.expect(`reset: stage not ready: the controller reports Hold:0: .*\. Soft-reset the stage controller\? The position becomes untrusted\. \[y/N\] `)
	tm.send("y\r")
	tm.expect(`reset: stage controller reset; home before moving\r\n`)
	tm.send("status\r")
	tm.expect(`stage\s+Idle at X [0-9.]+ Y [0-9.]+ mm, position NOT trusted: home first`)
	tm.send("reset\r")
	tm.expect(`reset: nothing to reset: the machine is idle\r\n`)
	tm.send("run small\r")
	tm.expect(`run small started: \d+ sites`)
	tm.expect(`run \S+ completed`)
}

// TestScriptedSession is an engineer's session on a serial console: home,
// move, jog, light, capture, a run stopped mid-way, an e-stop and its
// reset, then the records, the log and the statistics.
func TestScriptedSession(t *testing.T) {
	m := startMachine(t)
	tm := serialConsole(t, m, "ttyTEST")
	pin := m.LightPin

	tm.send("status\r")
	tm.expect(`machine\s+idle\r\n`)
	tm.expect(`stage\s+Idle at X 0\.000 Y 0\.000 mm, position NOT trusted: home first`)
	tm.expect(`last run\s+none since start-up`)

	tm.send("move 100 100\r")
	tm.expect(`error: move refused: position not trusted \(home the stage first\)\r\n`)
	tm.send("home\r")
	tm.expect(`homed: stage Idle at X 0\.000 Y 0\.000 mm`)
	tm.send("move 120 130.5\r")
	tm.expect(`moved: stage Idle at X 120\.000 Y 130\.500 mm`)
	tm.send("move 301 0\r")
	tm.expect(`error: move to \(301\.000, 0\.000\)mm refused: outside the stage travel \(X 0\.000\.\.300\.000, Y 0\.000\.\.300\.000 mm\)`)
	tm.send("jog -1 0.5\r")
	tm.expect(`jogged: stage Idle at X 119\.000 Y 131\.000 mm`)
	tm.send("move 150 150\r")
	tm.expect(`moved: stage Idle at X 150\.000 Y 150\.000 mm`)

	tm.send("light on 40%\r")
	tm.expect(`light on at 40%`)
	assert.Equal(t, gpio.High, level(pin))
	tm.send("light off\r")
	tm.expect(`\rlight off\r\n`)
	assert.Equal(t, gpio.Low, level(pin))

	tm.send("capture wafer-1\r")
	got := tm.expect(`captured (\S+) \(160x160, mean grey (\d+)\)`)
	assert.Equal(t, filepath.Join(m.cfg.Data.Dir, "captures", "wafer-1.png"), got[1])
	raw, err := os.ReadFile(got[1])
	require.NoError(t, err)
	img, err := png.Decode(bytes.NewReader(raw))
	require.NoError(t, err)
	assert.Equal(t, 160, img.Bounds().Dx())
	assert.Equal(t, gpio.Low, level(pin), "light off after the capture")

	tm.send("run small\r")
	sites := tm.expect(`run small started: (\d+) sites`)[1]
	tm.expect(`site 2/` + sites + ` `)
	tm.send("stop\r")
	end := tm.expect(`run (\S+) canceled, (\d+)/` + sites + ` sites, (\d+) defects \(operator: console ttyTEST\)\r\n`)
	assert.Contains(t, tm.all(), "stop: stopping the run small safely")
	id := end[1]
	rec, err := m.store.Load(id)
	require.NoError(t, err)
	assert.Equal(t, results.Canceled, rec.State)
	assert.Equal(t, "operator: console ttyTEST", rec.Reason)
	assert.Equal(t, end[2], strconv.Itoa(rec.SitesDone))
	assert.Equal(t, end[3], strconv.Itoa(rec.DefectsTotal))
	assert.Less(t, rec.SitesDone, rec.SitesTotal, "stopped mid-run")
	assert.False(t, rec.Complete)
	assert.NotNil(t, rec.EndedAt)
	assert.True(t, rec.PositionTrusted, "an operator stop keeps the position")
	assert.False(t, m.Stage.Moving())

	tm.send("runs\r")
	runs := tm.expect(`(RUN\s+STATE\s+SITES\s+DEFECTS\s+REASON)\r\n(` + regexp.QuoteMeta(id) + `\s+canceled\s+` + end[2] + `/` + sites + `.*)\r\n`)
	assert.Equal(t, strings.Index(runs[1], "STATE"), strings.Index(runs[2], "canceled"), "columns aligned:\n%s\n%s", runs[1], runs[2])
	assert.Equal(t, strings.Index(runs[1], "REASON"), strings.Index(runs[2], "operator"), "columns aligned:\n%s\n%s", runs[1], runs[2])
	tm.send("show last\r")
	tm.expect(`run\s+` + regexp.QuoteMeta(id))
	tm.expect(`outcome\s+canceled: operator: console ttyTEST`)
	tm.expect(`sites\s+` + end[2] + `/` + sites + ` done, 0 failed, complete: false`)

	// The e-stop latches the machine: nothing moves until it is released
	// and an engineer resets, with confirmation.
	daemontest.Press(t, m.EStopPin, gpio.High)
	// The input debounces the edge (5 ms) before it stops the machine:
	// ask for the status once it has.
	require.Eventually(t, func() bool { return m.d.Machine.State() == machine.EStop }, 15*time.Second, time.Millisecond)
	tm.send("status\r")
	tm.expect(`machine\s+estop \(estop: ESTOP\(3\)\): reset clears it`)
	tm.send("home\r")
	out := tm.expect(`(?s)(.*)error: home refused: machine latched: machine is estop`)
	assert.NotContains(t, out[1], "homing...", "refused at once, not announced")
	tm.send("reset\r")
	tm.expect(`reset: clear the estop latch \(.*\)\? The position stays untrusted\. \[y/N\] `)
	tm.send("n\r")
	tm.expect(`reset: not done\r\n`)
	daemontest.Press(t, m.EStopPin, gpio.Low)
	for i := 0; ; i++ {
		tm.send("reset\r")
		tm.expect(`\[y/N\] `)
		tm.send("y\r")
		r := tm.expect(`(reset: machine idle; home before moving|error: reset: e-stop still engaged)`)
		if strings.HasPrefix(r[1], "reset: machine idle") {
			break
		}
		require.Less(t, i, 50, "the e-stop release was never seen")
	}
	tm.send("status\r")
	tm.expect(`machine\s+idle\r\n`)
	tm.expect(`position NOT trusted`)

	tm.send("log 50\r")
	tm.expect(`\[runner\] WARN\s+run ` + regexp.QuoteMeta(id) + ` canceled`)
	tm.send("stats\r")
	tm.expect(`stop requests: operator 1, host 0, button 0, shutdown 0, fault 0, watchdog 0, abort 0, estop 1`)
	tm.expect(`operations completed \(runs, homing, moves, ...\): \d+; ended by a stop: operator 1`)
	tm.expect(`stop latency, request to stage at rest \(1\): min `)
	tm.expect(`stop latency, request to outcome recorded \(1\): min `)
}

// TestStopActsAtOnce: stop is honoured while another command blocks the
// console (wait) and with commands typed ahead, which it discards.
func TestStopActsAtOnce(t *testing.T) {
	m := startMachine(t)
	tm := serialConsole(t, m, "ttyA")
	tm.send("run small\r")
	tm.expect(`run small started`)
	tm.expect(`site 1/`)
	tm.send("wait\rversion\rstatus\r")
	time0 := time.Now()
	tm.send("stop\r")
	tm.expect(`stop: stopping the run small safely \(hold, reset, record\); 2 command\(s\) typed ahead discarded`)
	assert.Less(t, time.Since(time0), 2*time.Second)
	tm.expect(`run \S+ canceled`)
	assert.NotContains(t, tm.all(), "waferd test\r\n", "version was discarded")

	// Typed while the console prints: the line being typed survives the
	// progress lines printed above it.
	tm.send("run small\r")
	tm.expect(`site 1/`)
	tm.send("sta")
	tm.expect(`site \d+/\d+ [^\r\n]*\r\nwaferd> sta`)
	tm.send("tus\r")
	tm.expect(`machine\s+running`)
	tm.send("stop\r")
	tm.expect(`run \S+ canceled`)
}

// TestWatchUntilAKey: watch redraws one status line until a key; a stop
// typed during it stops the run.
func TestWatchUntilAKey(t *testing.T) {
	m := startMachine(t)
	tm := serialConsole(t, m, "ttyW")
	tm.send("watch\r")
	tm.expect(`\d\d:\d\d:\d\d \| idle \| Idle X0\.000 Y0\.000 untrusted \| light off \| any key ends`)
	tm.expect(`\r +\r\d\d:\d\d:\d\d \| idle`) // redrawn in place
	tm.send("q")
	tm.expect(`any key ends\r\nwaferd> `)
	tm.send("version\r")
	tm.expect(`waferd test`)

	tm.send("run small\r")
	tm.expect(`site 1/`)
	tm.send("watch\r")
	tm.expect(`small \d+/\d+ ETA`)
	tm.send("stop\r") // the first key ends the watch and is typed
	tm.expect(`stop: stopping the run small`)
	tm.expect(`run \S+ canceled`)
}

// TestLineNoise: garbage, NUL bytes, an overlong line and a burst of
// commands leave the console working.
func TestLineNoise(t *testing.T) {
	m := startMachine(t)
	tm := serialConsole(t, m, "ttyN")
	noise := []byte{0, 0, 0xff, 0xfe, 0x1b, '[', '9', '9', 0x80, 0x01, 0x02, 0x1b, 'O', 0x00, 0x9b, 0x1b, 0x1b, 0x7f}
	for range 20 {
		tm.send(string(noise))
	}
	tm.send("\r")
	tm.send(strings.Repeat("z", 1000) + "\r")
	tm.expect(`error: line too long \(1000 characters, the limit is 256\): ignored`)
	tm.send(strings.Repeat("version\r", 60))
	// Every line of the burst runs or is reported dropped (the queue holds
	// MaxQueued).
	ran := 0
	for range 60 {
		if tm.expect(`\r(waferd test|error: \d+ commands are already waiting: "version" dropped)[^\r]*\r\n`)[1] == "waferd test" {
			ran++
		}
	}
	assert.GreaterOrEqual(t, ran, MaxQueued)
	tm.send("status\r")
	tm.expect(`machine\s+idle`)
	assert.NotContains(t, tm.all(), "\x00")
}

// TestReconnect: a disconnected serial port is reopened.
func TestReconnect(t *testing.T) {
	m := startMachine(t)
	dir := t.TempDir()
	link := filepath.Join(dir, "ttyCONSOLE")

	master1, slave1, err := pty.Open()
	require.NoError(t, err)
	require.NoError(t, os.Symlink(slave1.Name(), link))
	tm1 := newTerminal(t, master1)
	require.NoError(t, master1.Close())
	serve(t, func(ctx context.Context) error {
		return ServePort(ctx, link, 115200, m.d, Options{Version: "test"})
	})
	tm1.expect(`console on ` + regexp.QuoteMeta(link))
	tm1.send("version\r")
	tm1.expect(`waferd test`)

	// Unplug: the line hangs up and the device node goes away.
	tm1.close()
	require.NoError(t, slave1.Close())
	require.NoError(t, os.Remove(link))

	master2, slave2, err := pty.Open()
	require.NoError(t, err)
	t.Cleanup(func() { _ = slave2.Close() })
	tm2 := newTerminal(t, master2)
	require.NoError(t, master2.Close())
	require.NoError(t, os.Symlink(slave2.Name(), link))
	tm2.expect(`console on ` + regexp.QuoteMeta(link))
	tm2.send("version\r")
	tm2.expect(`waferd test`)
}

// TestConsolesShareTheMachine: a run started on one console is stopped
// from another; both see it end.
func TestConsolesShareTheMachine(t *testing.T) {
	m := startMachine(t)
	a := serialConsole(t, m, "ttyA")
	p, err := OpenPTY()
	require.NoError(t, err)
	serve(t, func(ctx context.Context) error { return p.Serve(ctx, m.d, Options{Version: "test"}) })
	f, err := os.OpenFile(p.Path, os.O_RDWR|syscall.O_NOCTTY, 0)
	require.NoError(t, err)
	b := newTerminal(t, f)
	require.NoError(t, f.Close())
	b.send("version\r")
	b.expect(`waferd test`)

	a.send("run small\r")
	b.expect(`run small started`)
	b.expect(`site 1/`)
	b.send("stop\r")
	b.expect(`stop: stopping the run small`)
	a.expect(`stopping: operator \(console pty ` + regexp.QuoteMeta(p.Path) + `\)`)
	a.expect(`run \S+ canceled, \d+/\d+ sites, \d+ defects \(operator: console pty`)
	b.expect(`run \S+ canceled`)
}

// rwc is a console port on strings, like a pipe.
type rwc struct {
	r  io.Reader
	mu sync.Mutex
	w  bytes.Buffer
}

func (p *rwc) Read(b []byte) (int, error) { return p.r.Read(b) }
func (p *rwc) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.w.Write(b)
}
func (p *rwc) Close() error { return nil }
func (p *rwc) String() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.w.String()
}

// TestScript: on a pipe lines run in order without echo, and the end of
// input ends the session once they have run.
func TestScript(t *testing.T) {
	m := startMachine(t)
	port := &rwc{r: strings.NewReader("version\nhome\nrun small\nwait\nruns\nstatus now\nreset\nstop\r\nshow last")}
	eof := make(chan struct{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var err error
	go func() {
		<-eof
		cancel()
	}()
	err = Serve(ctx, port, m.d, Options{Name: "stdio", Version: "test", OnEOF: func() { close(eof) }})
	assert.ErrorIs(t, err, io.EOF)
	out := port.String()
	assert.NotContains(t, out, "\r", "plain LF line ends")
	assert.NotContains(t, out, "waferd> ", "no prompt")
	for _, want := range []string{
		"waferd test\n", "homed: stage Idle at X 0.000 Y 0.000 mm\n", "run small started: ",
		"completed, 21/21 sites", "error: status: takes no arguments; usage: status\n",
		"reset: nothing to reset: the machine is idle\n", "stop: nothing to stop, the machine is idle\n",
		"outcome    completed",
	} {
		assert.Contains(t, out, want)
	}
	assert.Less(t, strings.Index(out, "completed, 21/21"), strings.Index(out, "RUN "), "wait waited for the run:\n%s", out)
}

// TestOriginSession: on a stage without homing switches, home is refused
// with what to do instead; origin asks for a confirmation, and only a y
// makes the position trusted.
func TestOriginSession(t *testing.T) {
	ring := logging.NewRing(200)
	r := daemontest.New(t, daemontest.Options{LogRing: ring, Config: func(c *config.Config) { c.Stage.Homing = false }})
	r.Stage.NoHoming()
	m := &testMachine{Rig: r, d: r.D, cfg: r.Config, store: r.Store}
	tm := serialConsole(t, m, "ttyTEST")
	tm.send("status\r")
	tm.expect(`position NOT trusted: no homing switches: jog to the mark, then origin X Y`)
	tm.send("home\r")
	out := tm.expect(`(?s)(.*)error: home refused: the stage has no homing switches \(stage.homing = false\): jog to the mark and set its position with origin X Y\r\n`)
	assert.NotContains(t, out[1], "homing...", "refused at once, not announced")
	tm.send("origin 120 80\r")
	tm.expect(`origin: the stage stands at X 120\.000 Y 80\.000 mm from now on\? .*a wrong origin drives the stage into its ends\. \[y/N\] `)
	tm.send("n\r")
	tm.expect(`origin: not set\r\n`)
	assert.False(t, m.d.Machine.Trusted())
	tm.send("origin 120 80\r")
	tm.expect(`\[y/N\] `)
	tm.send("y\r")
	tm.expect(`origin set: stage Idle at X 120\.000 Y 80\.000 mm\r\n`)
	assert.True(t, m.d.Machine.Trusted())
	tm.send("jog 1 1\r")
	tm.expect(`jogged: stage Idle at X 121\.000 Y 81\.000 mm\r\n`)
	assert.Equal(t, 2, strings.Count(tm.all(), "[y/N]"), "each question is shown once, not again after its answer")
}

// TestLightLevelsThroughAConsole: the level rule as a user meets it,
// stated by help and applied to every form of light.
func TestLightLevelsThroughAConsole(t *testing.T) {
	m := startMachine(t)
	port := &rwc{r: strings.NewReader("help light\nlight level 2\nlight level 1.5\nlight level 0.0001\nlight on 0\nlight level 0.555\nlight level 1\nlight level 35%\nstatus\n")}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := Serve(ctx, port, m.d, Options{Name: "stdio", Version: "test", OnEOF: cancel})
	assert.ErrorIs(t, err, io.EOF)
	out := port.String()
	for _, want := range []string{
		"L is a fraction from 0.01 to 1 (0.5) or a percentage from 1% to 100% (50%), in steps of 1%.",
		`error: light: level "2" is more than 1: without % a level is a fraction (0.5 is half)`,
		`error: light: level "1.5" is more than 1`,
		`error: light: level "0.0001" is below the lowest level, 0.01 (light off switches it off)`,
		`error: light: level "0" is below the lowest level, 0.01`,
		`error: light: level "0.555" is finer than 1%: give 0.55 or 0.56`,
		"light level 100%: used by the next light on\n",
		"light level 35%: used by the next light on\n",
		"(light on uses 35%)",
	} {
		assert.Contains(t, out, want)
	}
}

// fakeHost is a control.HostLink.
type fakeHost struct {
	mu      sync.Mutex
	control string
}

func (h *fakeHost) HostStatus() control.HostStatus {
	h.mu.Lock()
	defer h.mu.Unlock()
	return control.HostStatus{Listen: "127.0.0.1:5000", DeviceID: 3, Host: "10.0.0.9:4242", Communication: "communicating",
		Control: h.control, Remote: true, Selected: "demo", AlarmsSet: []uint32{3}}
}

func (h *fakeHost) SetHostControl(to string) (string, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.control = "online " + to
	return h.control, nil
}

// TestGemCommand: the factory host's link, shown and switched.
func TestGemCommand(t *testing.T) {
	m := startMachine(t)
	run := func(o Options, script string) string {
		port := &rwc{r: strings.NewReader(script)}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		eof := make(chan struct{})
		go func() {
			<-eof
			cancel()
		}()
		o.Name, o.Version, o.OnEOF = "stdio", "test", func() { close(eof) }
		assert.ErrorIs(t, Serve(ctx, port, m.d, o), io.EOF)
		return port.String()
	}
	out := run(Options{}, "gem\n")
	assert.Contains(t, out, "error: gem: the factory host's interface is off: set [gem] enabled = true, or serve --gem ADDR\n")
	h := &fakeHost{control: "online remote"}
	out = run(Options{Host: h}, "gem\ngem LOCAL\ngem sideways\n")
	for _, want := range []string{
		"gem       HSMS-SS on 127.0.0.1:5000, device id 3\n",
		"host      10.0.0.9:4242, communicating\n",
		"control   online remote (online goes remote); recipe selected by the host: demo\n",
		"alarms    set: [3] (reset clears the latch, and them)\n",
		"gem: control state online local\n",
		`error: gem: "sideways": want online, offline, local or remote`,
	} {
		assert.Contains(t, out, want)
	}
}
