package gem_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/arloliu/go-secs/v2/hsms"
	"github.com/arloliu/go-secs/v2/secs2"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/waferd/waferd/config"
	"github.com/waferd/waferd/daemon/daemontest"
	"github.com/waferd/waferd/gem"
	"github.com/waferd/waferd/gem/gemhost"
	"github.com/waferd/waferd/inspection"
	"github.com/waferd/waferd/internal/emuchild"
	"github.com/waferd/waferd/internal/logging"
	"github.com/waferd/waferd/machine"
	"github.com/waferd/waferd/stop"
)

func TestMain(m *testing.M) {
	emuchild.Main() // the benchmark's emulator child
	goleak.VerifyTestMain(m)
}

// rig is a daemon on fake devices with the equipment interface on
// loopback, and a host connected to it.
type rig struct {
	*daemontest.Rig
	eq   *gem.Equipment
	host *gemhost.Host
	msgs <-chan *hsms.DataMessage
	step atomic.Pointer[func(inspection.Step, int)]
}

// newRig starts the interface with cfg's settings over the defaults of a
// test (short timers), and connects a host if connect is set.
func newRig(t *testing.T, edit func(*gem.Config), connect bool) *rig {
	t.Helper()
	r := &rig{}
	r.Rig = daemontest.New(t, daemontest.Options{
		OnStep: func(s inspection.Step, site int) {
			if f := r.step.Load(); f != nil {
				(*f)(s, site)
			}
		},
		// These tests are about the host's link, not the watchdog: on a
		// shared machine under load (and the race detector) a stage poll
		// can miss the daemontest's 1 s heartbeat, which would abort the
		// run under test for reasons of its own.
		Config: func(c *config.Config) {
			c.Watchdog.StageHeartbeatMS, c.Watchdog.CameraHeartbeatMS, c.Watchdog.RunnerHeartbeatMS = 30000, 30000, 30000
		},
	})
	require.NoError(t, os.Mkdir(r.Config.Data.Recipes, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(r.Config.Data.Recipes, "slow.toml"), []byte(daemontest.Recipe), 0o644))
	cfg := gem.Config{
		Listen: "127.0.0.1:0", DeviceID: 7, T3: 10 * time.Second, T6: time.Second, T7: 2 * time.Second, T8: time.Second,
		EstablishRetry: 200 * time.Millisecond, InitialControl: gem.HostOffline, Remote: true, Revision: "test",
		Log: logging.New(os.Stderr, logging.Options{Level: testLogLevel}).For("gem"),
	}
	if edit != nil {
		edit(&cfg)
	}
	var err error
	r.eq, err = gem.New(cfg, r.D)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.eq.Run(ctx) }()
	t.Cleanup(func() {
		if r.host != nil {
			_ = r.host.Close()
		}
		cancel()
		select {
		case err := <-done:
			assert.NoError(t, err)
		case <-time.After(10 * time.Second):
			t.Error("Run did not return")
		}
	})
	if connect {
		r.connect(t)
	}
	return r
}

// connect connects a host, establishes communication, goes online and
// sets the reports up.
func (r *rig) connect(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	var err error
	r.host, err = gemhost.Dial(ctx, gemhost.Config{Addr: r.eq.Addr(), DeviceID: 7, T3: 10 * time.Second, T6: time.Second})
	require.NoError(t, err)
	r.msgs = r.host.Messages()
	code, err := r.host.Establish(ctx)
	require.NoError(t, err)
	require.Equal(t, byte(0), code, "COMMACK")
	code, err = r.host.Online(ctx)
	require.NoError(t, err)
	require.Equal(t, byte(0), code, "ONLACK")
	r.event(t, gem.CEControlStateChanged)
	_, err = r.host.Setup(ctx, gem.SVRunID, gem.SVSitesDone, gem.SVSitesTotal, gem.SVDefects, gem.SVMachineState, gem.SVControlState)
	require.NoError(t, err)
}

// next returns the next message the equipment sent that match wants
// (S6F11 of a CEID, S5F1 of an ALID, S10F1), skipping the others.
func (r *rig) next(t *testing.T, want func(*hsms.DataMessage) bool) *hsms.DataMessage {
	t.Helper()
	timeout := time.After(15 * time.Second)
	for {
		select {
		case m, ok := <-r.msgs:
			require.True(t, ok, "the host's connection closed")
			if want(m) {
				return m
			}
		case <-timeout:
			t.Fatal("no such message from the equipment within 15 s")
			return nil
		}
	}
}

// event waits for the event report of ceid.
func (r *rig) event(t *testing.T, ceid uint32) gemhost.Event {
	t.Helper()
	var ev gemhost.Event
	r.next(t, func(m *hsms.DataMessage) bool {
		if m.Stream() != 6 || m.Function() != 11 {
			return false
		}
		e, err := r.host.ParseEvent(m)
		require.NoError(t, err)
		ev = e
		return e.CEID == ceid
	})
	return ev
}

// seen is what the equipment sent up to a point.
type seen struct {
	events []gemhost.Event
	alarms []gemhost.Alarm
	texts  []string
}

// ceids lists the events seen.
func (s seen) ceids() []uint32 {
	var ids []uint32
	for _, e := range s.events {
		ids = append(ids, e.CEID)
	}
	return ids
}

// event finds the event of ceid.
func (s seen) event(t *testing.T, ceid uint32) gemhost.Event {
	t.Helper()
	for _, e := range s.events {
		if e.CEID == ceid {
			return e
		}
	}
	t.Fatalf("no event %d among %v", ceid, s.ceids())
	return gemhost.Event{}
}

// until collects what the equipment sends until the event report of
// ceid (included).
func (r *rig) until(t *testing.T, ceid uint32) seen {
	t.Helper()
	var s seen
	r.next(t, func(m *hsms.DataMessage) bool {
		switch {
		case m.Stream() == 6 && m.Function() == 11:
			e, err := r.host.ParseEvent(m)
			require.NoError(t, err)
			s.events = append(s.events, e)
			return e.CEID == ceid
		case m.Stream() == 5 && m.Function() == 1:
			a, err := gemhost.ParseAlarm(m)
			require.NoError(t, err)
			s.alarms = append(s.alarms, a)
		case m.Stream() == 10 && m.Function() == 1:
			txt, err := secs2.NewCursor(gemhost.Body(m)).At(1).ASCII()
			require.NoError(t, err)
			s.texts = append(s.texts, txt)
		}
		return false
	})
	return s
}

// alarm waits for an S5F1 of id.
func (r *rig) alarm(t *testing.T, id uint32) gemhost.Alarm {
	t.Helper()
	var al gemhost.Alarm
	r.next(t, func(m *hsms.DataMessage) bool {
		if m.Stream() != 5 || m.Function() != 1 {
			return false
		}
		a, err := gemhost.ParseAlarm(m)
		require.NoError(t, err)
		al = a
		return a.ID == id
	})
	return al
}

// text waits for an S10F1 and returns its text.
func (r *rig) text(t *testing.T) string {
	t.Helper()
	m := r.next(t, func(m *hsms.DataMessage) bool { return m.Stream() == 10 && m.Function() == 1 })
	s, err := secs2.NewCursor(gemhost.Body(m)).At(1).ASCII()
	require.NoError(t, err)
	return s
}

// onStep calls f at the steps of runs.
func (r *rig) onStep(f func(inspection.Step, int)) { r.step.Store(&f) }

func str(t *testing.T, it secs2.Item) string {
	t.Helper()
	s, err := it.ToASCII()
	require.NoError(t, err, it.ToSML())
	return s
}

func num(t *testing.T, it secs2.Item) uint64 {
	t.Helper()
	v, err := it.ToUint()
	require.NoError(t, err, it.ToSML())
	require.Len(t, v, 1)
	return v[0]
}

func TestSelectStartStop(t *testing.T) {
	r := newRig(t, nil, true)
	ctx := context.Background()

	hc, _, err := r.host.Command(ctx, "START")
	require.NoError(t, err)
	assert.Equal(t, byte(2), hc, "nothing selected")
	assert.Contains(t, r.text(t), "START refused: no recipe selected")

	hc, acks, err := r.host.Command(ctx, "PP-SELECT", gemhost.Param{Name: "PPID", Value: "absent"})
	require.NoError(t, err)
	assert.Equal(t, byte(3), hc)
	assert.Equal(t, []gemhost.CPACK{{Name: "PPID", Ack: 2}}, acks)

	hc, _, err = r.host.Command(ctx, "PP-SELECT", gemhost.Param{Name: "PPID", Value: "slow"})
	require.NoError(t, err)
	require.Equal(t, byte(0), hc)
	r.event(t, gem.CEPPSelected)

	var stopped atomic.Bool
	r.onStep(func(s inspection.Step, site int) {
		if s == inspection.StepNextSite && site == 1 && stopped.CompareAndSwap(false, true) {
			go func() {
				hc, _, err := r.host.Command(ctx, "STOP")
				assert.NoError(t, err)
				assert.Equal(t, byte(0), hc)
			}()
		}
	})
	hc, _, err = r.host.Command(ctx, "START")
	require.NoError(t, err)
	require.Equal(t, byte(4), hc)
	ev := r.event(t, gem.CERunStarted)
	assert.Equal(t, uint64(len(r.Recipe.Sites)), num(t, ev.Values[gem.SVSitesTotal]))
	ev = r.event(t, gem.CESiteCompleted)
	assert.Equal(t, uint64(0), num(t, ev.Values[gem.DVSiteIndex]))
	assert.Equal(t, uint64(1), num(t, ev.Values[gem.SVSitesDone]))
	assert.NotEmpty(t, str(t, ev.Values[gem.SVRunID]))
	ev = r.event(t, gem.CERunStopped)
	reason := str(t, ev.Values[gem.DVStopReason])
	assert.True(t, strings.HasPrefix(reason, "host: host 127.0.0.1:"), reason)
	assert.True(t, strings.HasSuffix(reason, " STOP"), reason)
	assert.Equal(t, "canceled", str(t, ev.Values[gem.DVRunOutcome]))
	runID := str(t, ev.Values[gem.SVRunID])

	run, err := r.D.LoadRun(runID)
	require.NoError(t, err)
	assert.Equal(t, "canceled", string(run.State))
	assert.Equal(t, reason, run.Reason)
	assert.Equal(t, machine.Idle, r.D.Machine.State())
	assert.Equal(t, 1, r.D.Stats().Requests[stop.Host])
}

// stageActions reduces the stage's calls to the holds and resets.
func stageActions(calls []string) []string {
	var out []string
	for _, c := range calls {
		if c == "Hold" || c == "Reset" {
			out = append(out, c)
		}
	}
	return out
}

// TestAbortMidMove: ABORT while the stage moves resets it at once (no
// controlled hold), the run is aborted, the machine latched with the
// host-abort alarm set; the console's reset clears the latch and the
// alarm.
func TestAbortMidMove(t *testing.T) {
	r := newRig(t, nil, true)
	ctx := context.Background()
	require.NoError(t, r.D.Home(ctx))
	var once atomic.Bool
	r.Stage.OnCall(func(c string) {
		if c == "moving" && once.CompareAndSwap(false, true) {
			r.Stage.ClearCalls()
			go func() {
				hc, _, err := r.host.Command(ctx, "ABORT")
				assert.NoError(t, err)
				assert.Equal(t, byte(0), hc)
			}()
		}
	})
	hc, _, err := r.host.Command(ctx, "START", gemhost.Param{Name: "PPID", Value: "slow"})
	require.NoError(t, err)
	require.Equal(t, byte(4), hc)
	got := r.until(t, gem.CERunAborted)
	assert.Equal(t, []uint32{gem.CERunStarted, gem.CEMachineFaulted, gem.CERunAborted}, got.ceids())
	ev := got.event(t, gem.CERunAborted)
	assert.Equal(t, "aborted", str(t, ev.Values[gem.DVRunOutcome]))
	assert.Contains(t, str(t, ev.Values[gem.DVStopReason]), "abort: host 127.0.0.1:")
	require.Len(t, got.alarms, 1)
	assert.Equal(t, gemhost.Alarm{Set: true, Category: 6, ID: gem.ALHostAbort, Text: "host ABORT: machine faulted"}, got.alarms[0])
	ev = got.event(t, gem.CEMachineFaulted)
	assert.Equal(t, "faulted", str(t, ev.Values[gem.SVMachineState]))
	calls := r.Stage.Calls()
	assert.Equal(t, "Abort", calls[0], "reset at once, the first thing the stop does: %v", calls)
	assert.Equal(t, []string{"Reset"}, stageActions(calls), "then the safe stop's reset, no hold: %v", calls)
	assert.Equal(t, machine.Faulted, r.D.Machine.State())
	assert.False(t, r.D.Machine.Trusted())

	hc, _, err = r.host.Command(ctx, "START", gemhost.Param{Name: "PPID", Value: "slow"})
	require.NoError(t, err)
	assert.Equal(t, byte(2), hc)
	assert.Contains(t, r.text(t), "START refused: run slow refused: machine latched: machine is faulted (abort: host")

	vals, err := r.host.Status(ctx, gem.SVAlarmsSet, gem.SVLatchReason)
	require.NoError(t, err)
	assert.Equal(t, []uint64{gem.ALHostAbort}, must(vals[0].ToUint()))
	assert.Contains(t, str(t, vals[1]), "abort: host")

	require.NoError(t, r.D.Reset(ctx), "the console's reset")
	al := r.alarm(t, gem.ALHostAbort)
	assert.False(t, al.Set)
	r.event(t, gem.CELatchCleared)
	vals, err = r.host.Status(ctx, gem.SVAlarmsSet)
	require.NoError(t, err)
	assert.Empty(t, must(vals[0].ToUint()))
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// TestRefusals: remote commands are refused ONLINE LOCAL, while another
// operation holds the machine, and with bad parameters; the host is told
// why (S10F1).
func TestRefusals(t *testing.T) {
	r := newRig(t, nil, true)
	ctx := context.Background()

	hc, acks, err := r.host.Command(ctx, "PAUSE")
	require.NoError(t, err)
	assert.Equal(t, byte(1), hc)
	assert.Empty(t, acks)
	assert.Contains(t, r.text(t), "PAUSE refused: no such command")

	hc, acks, err = r.host.Command(ctx, "START", gemhost.Param{Name: "SPEED", Value: "fast"})
	require.NoError(t, err)
	assert.Equal(t, byte(3), hc)
	assert.Equal(t, []gemhost.CPACK{{Name: "SPEED", Ack: 1}}, acks)

	hc, _, err = r.host.Command(ctx, "STOP")
	require.NoError(t, err)
	assert.Equal(t, byte(5), hc, "nothing to stop")

	state, err := r.eq.SetHostControl("local")
	require.NoError(t, err)
	assert.Equal(t, "online local", state)
	r.event(t, gem.CEControlStateChanged)
	for _, cmd := range []string{"START", "STOP", "ABORT"} {
		var ps []gemhost.Param
		if cmd == "START" {
			ps = append(ps, gemhost.Param{Name: "PPID", Value: "slow"})
		}
		hc, _, err = r.host.Command(ctx, cmd, ps...)
		require.NoError(t, err)
		assert.Equal(t, byte(2), hc, cmd)
		assert.Contains(t, r.text(t), "control state is online local")
	}
	assert.Equal(t, machine.Idle, r.D.Machine.State(), "an ABORT refused in local did not latch")
	_, err = r.eq.SetHostControl("remote")
	require.NoError(t, err)
	vals, err := r.host.Status(ctx, gem.SVControlState)
	require.NoError(t, err)
	assert.Equal(t, uint64(gem.OnlineRemote), num(t, vals[0]))

	// Busy: a console's homing holds the machine.
	r.Stage.OnCall(func(c string) {
		if c == "homing" {
			hc, _, err := r.host.Command(ctx, "START", gemhost.Param{Name: "PPID", Value: "slow"})
			assert.NoError(t, err)
			assert.Equal(t, byte(2), hc)
			hc, _, err = r.host.Command(ctx, "PP-SELECT", gemhost.Param{Name: "PPID", Value: "slow"})
			assert.NoError(t, err)
			assert.Equal(t, byte(2), hc)
		}
	})
	require.NoError(t, r.D.Home(ctx))
	assert.Contains(t, r.text(t), "START refused: run slow refused: machine busy: home in progress")
	assert.Contains(t, r.text(t), "PP-SELECT refused: machine busy: home in progress")
}

// TestRecipes: upload a bad recipe (refused, nothing stored, the first
// error line told) and a good one (stored, ProcessProgramChanged), list
// them and read one back.
func TestRecipes(t *testing.T) {
	r := newRig(t, nil, true)
	ctx := context.Background()
	send := func(ppid string, body []byte) byte {
		m, err := r.host.Send(ctx, 7, 3, secs2.NewListItem(secs2.NewASCIIItem(ppid), secs2.NewBinaryItem(body)))
		require.NoError(t, err)
		b, err := secs2.NewCursor(gemhost.Body(m)).Binary()
		require.NoError(t, err)
		return b[0]
	}
	bad := strings.Replace(daemontest.Recipe, "diameter_mm = 50.0", "diameter_mm = -50.0", 1)
	assert.Equal(t, byte(1), send("wide", []byte(bad)))
	assert.Contains(t, r.text(t), `recipe wide refused: recipe "wide" refused: wide.toml:`)
	_, err := os.Stat(filepath.Join(r.Config.Data.Recipes, "wide.toml"))
	assert.ErrorIs(t, err, os.ErrNotExist)

	one := strings.Replace(daemontest.Recipe, `layout = "grid"`, "layout = \"sites\"\n[[site]]\ndie = [1, 0]", 1)
	assert.Equal(t, byte(0), send("one", []byte(one)))
	ev := r.event(t, gem.CEPPChanged)
	assert.Equal(t, "one", str(t, ev.Values[gem.DVPPChangeName]))
	assert.Equal(t, uint64(1), num(t, ev.Values[gem.DVPPChangeStatus]), "created")
	assert.Equal(t, byte(0), send("one", []byte(one)))
	ev = r.event(t, gem.CEPPChanged)
	assert.Equal(t, uint64(2), num(t, ev.Values[gem.DVPPChangeStatus]), "edited")
	assert.Equal(t, byte(1), send("../etc/x", []byte(one)))
	assert.Equal(t, byte(2), send("huge", make([]byte, 1<<20+1)))

	m, err := r.host.Send(ctx, 7, 19, nil)
	require.NoError(t, err)
	assert.Equal(t, `<L[2]
  <A[3] "one">
  <A[4] "slow">
>`, gemhost.Body(m).ToSML())
	m, err = r.host.Send(ctx, 7, 5, secs2.NewASCIIItem("one"))
	require.NoError(t, err)
	body, err := secs2.NewCursor(gemhost.Body(m)).At(1).Binary()
	require.NoError(t, err)
	assert.Equal(t, one, string(body))
	m, err = r.host.Send(ctx, 7, 5, secs2.NewASCIIItem("absent"))
	require.NoError(t, err)
	assert.Equal(t, "<L[0]>", gemhost.Body(m).ToSML())

	// The uploaded recipe runs.
	hc, _, err := r.host.Command(ctx, "START", gemhost.Param{Name: "PPID", Value: "one"})
	require.NoError(t, err)
	require.Equal(t, byte(4), hc)
	ev = r.event(t, gem.CERunCompleted)
	assert.Equal(t, uint64(1), num(t, ev.Values[gem.SVSitesDone]))
}

// testLogLevel is the interface's log level in tests (WAFERD_TEST_GEM_LOG=debug for more).
var testLogLevel = func() logging.Level {
	if l, err := logging.ParseLevel(os.Getenv("WAFERD_TEST_GEM_LOG")); err == nil && os.Getenv("WAFERD_TEST_GEM_LOG") != "" {
		return l
	}
	return logging.Warn
}()
