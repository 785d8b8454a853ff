package publish

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/waferd/waferd/control"
	"github.com/waferd/waferd/inspection"
	"github.com/waferd/waferd/inspection/recipe"
	"github.com/waferd/waferd/inspection/results"
	"github.com/waferd/waferd/internal/logging"
	"github.com/waferd/waferd/internal/mqtttest"
	"github.com/waferd/waferd/machine"
	"github.com/waferd/waferd/stop"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// logBuf collects log lines.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// rig is a publisher on a temporary outbox and results store.
type rig struct {
	t      *testing.T
	store  *results.Store
	outbox *Outbox
	pub    *Publisher
	logs   *logBuf
	cancel context.CancelFunc
	done   chan error
}

func newRig(t *testing.T, broker string, edit func(*Config)) *rig {
	t.Helper()
	dir := t.TempDir()
	store, err := results.Open(dir)
	require.NoError(t, err)
	return newRigOn(t, store, filepath.Join(dir, "outbox.db"), broker, edit)
}

func newRigOn(t *testing.T, store *results.Store, outbox, broker string, edit func(*Config)) *rig {
	t.Helper()
	ob, err := OpenOutbox(outbox, 1<<20)
	require.NoError(t, err)
	t.Cleanup(func() { ob.Close() })
	logs := &logBuf{}
	cfg := Config{
		Tool: "tool1", Prefix: "fab", Brokers: []string{broker}, QoS: 1,
		Outbox: ob, Store: store, Log: logging.New(logs, logging.Options{Level: logging.Debug}).For("publish"),
		ConnectTimeout: 2 * time.Second, AckTimeout: 5 * time.Second, RetryMax: 200 * time.Millisecond,
	}
	if edit != nil {
		edit(&cfg)
	}
	pub, err := New(cfg)
	require.NoError(t, err)
	return &rig{t: t, store: store, outbox: ob, pub: pub, logs: logs}
}

func (r *rig) start() {
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel, r.done = cancel, make(chan error, 1)
	go func() { r.done <- r.pub.Run(ctx) }()
	r.t.Cleanup(r.stop)
}

func (r *rig) stop() {
	if r.cancel == nil {
		return
	}
	r.cancel()
	r.cancel = nil
	require.NoError(r.t, <-r.done)
}

// run records a finished run of n sites in the store, as the runner does,
// and feeds the publisher the events the daemon emits for it.
func (r *rig) run(id string, n int, state results.State) results.Run {
	t := r.t
	run := results.Run{ID: id, Recipe: "demo"}
	for i := range n {
		run.Sites = append(run.Sites, results.Site{Index: i, Die: [2]int{i, -i}, XMM: float64(i), YMM: 1})
	}
	rcd, err := r.store.Create(run)
	require.NoError(t, err)
	r.pub.Accept(control.Event{Kind: control.RunStarted, RunID: id, Recipe: "demo", Sites: n})
	defects := 0
	for i := range n {
		d := []results.Defect{{XMM: float64(i), YMM: 2, AreaPx: i + 1}}
		require.NoError(t, rcd.SaveSite(i, d, image.NewGray(image.Rect(0, 0, 4, 4))))
		defects++
		r.pub.Accept(control.Event{Kind: control.RunProgress, Progress: inspection.Progress{RunID: id, Done: i + 1, Total: n, Defects: defects,
			Site: recipe.Site{Index: i, Die: [2]int{i, -i}}}})
	}
	require.NoError(t, rcd.Finish(state, "test", nil, true))
	r.pub.Accept(control.Event{Kind: control.RunEnded, Result: inspection.Result{RunID: id}})
	out, err := r.store.Load(id)
	require.NoError(t, err)
	return out
}

// sub records what a broker delivers under a prefix.
type sub struct {
	mu   sync.Mutex
	msgs []got
	c    mqtt.Client
}

type got struct {
	Topic    string
	Retained bool
	Payload  []byte
}

func subscribe(t *testing.T, url, filter string) *sub {
	t.Helper()
	s := &sub{}
	opts := mqtt.NewClientOptions().AddBroker(url).SetClientID(fmt.Sprintf("sub-%d", time.Now().UnixNano())).
		SetCleanSession(true).SetAutoReconnect(false)
	s.c = mqtt.NewClient(opts)
	tok := s.c.Connect()
	require.True(t, tok.WaitTimeout(5*time.Second))
	require.NoError(t, tok.Error())
	tok = s.c.Subscribe(filter, 1, func(_ mqtt.Client, m mqtt.Message) {
		s.mu.Lock()
		s.msgs = append(s.msgs, got{m.Topic(), m.Retained(), append([]byte(nil), m.Payload()...)})
		s.mu.Unlock()
	})
	require.True(t, tok.WaitTimeout(5*time.Second))
	require.NoError(t, tok.Error())
	t.Cleanup(func() { s.c.Disconnect(0) })
	return s
}

func (s *sub) all() []got {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]got(nil), s.msgs...)
}

// topics returns the topics received under suffix filter, in order.
func (s *sub) ids(topicSuffix string) []string {
	var out []string
	for _, m := range s.all() {
		if strings.HasSuffix(m.Topic, topicSuffix) {
			var h struct{ ID string }
			_ = json.Unmarshal(m.Payload, &h)
			out = append(out, h.ID)
		}
	}
	return out
}

func (s *sub) wait(t *testing.T, cond func([]got) bool, what string) {
	t.Helper()
	require.Eventually(t, func() bool { return cond(s.all()) }, 20*time.Second, 5*time.Millisecond, what)
}

func countSuffix(ms []got, suffix string) int {
	n := 0
	for _, m := range ms {
		if strings.HasSuffix(m.Topic, suffix) {
			n++
		}
	}
	return n
}

func TestPublishesARunInOrder(t *testing.T) {
	b := mqtttest.Start(t, mqtttest.Options{})
	s := subscribe(t, b.URL, "fab/#")
	r := newRig(t, b.URL, nil)
	r.start()
	r.pub.Accept(control.Event{Kind: control.MachineState, State: machine.Running, Text: "run demo"})
	run := r.run("20261201T000000Z-demo", 3, results.Completed)
	r.pub.Accept(control.Event{Kind: control.StopRequested, Reason: stop.Fault, Text: "fault: stage: alarm 1", State: machine.Running})
	r.pub.Accept(control.Event{Kind: control.MachineState, State: machine.Faulted, Text: "fault: stage: alarm 1"})
	r.pub.Accept(control.Event{Kind: control.MachineState, State: machine.Idle, Text: "reset"})
	s.wait(t, func(ms []got) bool { return countSuffix(ms, "/event/latch") == 2 }, "both latch events")

	var topics []string
	for _, m := range s.all() {
		topics = append(topics, strings.TrimPrefix(m.Topic, "fab/tool1/"))
	}
	assert.Equal(t, []string{"online", "state", "run/started", "run/site", "run/site", "run/site", "run/ended", "run/record", "ledger",
		"event/stop", "state", "event/latch", "state", "event/latch"}, topics)
	assert.Equal(t, []string{"tool1/20261201T000000Z-demo/1", "tool1/20261201T000000Z-demo/2", "tool1/20261201T000000Z-demo/3"}, s.ids("run/site"))

	msgs := s.all()
	var site Site
	require.NoError(t, json.Unmarshal(msgs[4].Payload, &site))
	assert.Equal(t, SchemaVersion, site.V)
	assert.Equal(t, 1, site.Index)
	assert.Equal(t, [2]int{1, -1}, site.Die)
	assert.Equal(t, "sites/0001.json", site.Result)
	assert.Equal(t, "sites/0001.png", site.Image)
	require.Len(t, site.Defects, 1)
	assert.Equal(t, 2, site.Defects[0].AreaPx)

	var end Ended
	require.NoError(t, json.Unmarshal(msgs[6].Payload, &end))
	assert.Equal(t, "completed", end.State)
	assert.Equal(t, 3, end.SitesDone)
	assert.Equal(t, 4, end.Seq)
	var rec Record
	require.NoError(t, json.Unmarshal(msgs[7].Payload, &rec))
	assert.Equal(t, run.ID, rec.Record.ID)
	assert.Len(t, rec.Record.Sites, 3)
	var led Ledger
	require.NoError(t, json.Unmarshal(msgs[8].Payload, &led))
	assert.Equal(t, []LedgerRun{{RunID: run.ID, State: "completed", SitesDone: 3}}, led.Runs)
	var st Stop
	require.NoError(t, json.Unmarshal(msgs[9].Payload, &st))
	assert.True(t, st.Alarm)
	assert.Equal(t, "fault", st.Reason)
	var latch Latch
	require.NoError(t, json.Unmarshal(msgs[11].Payload, &latch))
	assert.True(t, latch.Latched)
	assert.Equal(t, "faulted", latch.State)
	require.NoError(t, json.Unmarshal(msgs[13].Payload, &latch))
	assert.False(t, latch.Latched)

	// Retained: a newcomer sees the tool online and its current state.
	s2 := subscribe(t, b.URL, "fab/tool1/+")
	s2.wait(t, func(ms []got) bool { return len(ms) >= 3 }, "retained online, state, ledger")
	for _, m := range s2.all() {
		assert.True(t, m.Retained, m.Topic)
		if strings.HasSuffix(m.Topic, "/state") {
			var st State
			require.NoError(t, json.Unmarshal(m.Payload, &st))
			assert.Equal(t, "idle", st.State)
		}
	}
	// The broker may forward a message before its acknowledgement
	// reaches the publisher.
	require.Eventually(t, func() bool { return r.pub.Status().Depth == 0 }, 5*time.Second, time.Millisecond)
	st2 := r.pub.Status()
	assert.True(t, st2.Connected)
	assert.Equal(t, uint64(13), st2.Sent, "the outbox's messages (online is sent directly)")

	// A clean end marks the tool offline.
	r.stop()
	s2.wait(t, func(ms []got) bool {
		for _, m := range ms {
			var o Online
			if strings.HasSuffix(m.Topic, "/online") && json.Unmarshal(m.Payload, &o) == nil && !o.Online {
				return true
			}
		}
		return false
	}, "offline after a clean end")
}

// TestBrokerDownLosesNothing: events accepted while the broker is down (and
// while it is killed, twice, with SIGKILL) wait in the outbox and are all
// delivered in order once it is back; so is what a restarted publisher
// finds in its outbox.
func TestBrokerDownLosesNothing(t *testing.T) {
	b := mqtttest.Start(t, mqtttest.Options{})
	s := subscribe(t, b.URL, "fab/tool1/run/site")
	b.Kill() // the subscriber's session is gone too: it reconnects below
	dir := t.TempDir()
	store, err := results.Open(dir)
	require.NoError(t, err)
	r := newRigOn(t, store, filepath.Join(dir, "outbox.db"), b.URL, nil)
	r.start()
	r.run("20261201T000001Z-a", 20, results.Completed)
	require.Eventually(t, func() bool { return r.pub.Status().Depth == 20+4 }, 10*time.Second, time.Millisecond)
	st := r.pub.Status()
	assert.False(t, st.Connected)
	assert.NotEmpty(t, st.LastError)
	assert.Equal(t, 1, strings.Count(r.logs.String(), "retrying"), "one log line for the broker down, however many attempts:\n%s", r.logs)

	// The publisher stops with the broker down: at once, and the outbox keeps it all.
	start := time.Now()
	r.stop()
	t.Logf("stopped in %v with the broker down", time.Since(start))

	b.Restart()
	s = subscribe(t, b.URL, "fab/tool1/run/site")
	r.outbox.Close()
	r3 := newRigOn(t, store, filepath.Join(dir, "outbox.db"), b.URL, nil)
	r3.start()
	s.wait(t, func(ms []got) bool { return len(ms) == 20 }, "every site after the restart")
	var want []string
	for i := range 20 {
		want = append(want, fmt.Sprintf("tool1/20261201T000001Z-a/%d", i+1))
	}
	assert.Equal(t, want, s.ids("run/site"), "in order")
	require.Eventually(t, func() bool { return r3.pub.Status().Depth == 0 }, 10*time.Second, time.Millisecond)
}

// TestRecoverRepublishesOpenRuns: a run whose start was committed but not
// its record (the tool died in between), and a run found interrupted, are
// committed again from their files at the next start, with the ids of the
// first time; a run killed before its first record is forgotten.
func TestRecoverRepublishesOpenRuns(t *testing.T) {
	r := newRig(t, "mqtt://127.0.0.1:1", nil)
	run := results.Run{ID: "20261201T000002Z-open", Recipe: "demo", Sites: []results.Site{{Index: 0}, {Index: 1}, {Index: 2}}}
	rcd, err := r.store.Create(run)
	require.NoError(t, err)
	require.NoError(t, rcd.SaveSite(0, nil, nil))
	require.NoError(t, rcd.SaveSite(2, []results.Defect{{AreaPx: 3}}, nil))
	// As after a crash: the run is marked interrupted at the next start.
	marked, err := results.Open(filepath.Dir(r.store.Dir()))
	require.NoError(t, err)
	interrupted, err := marked.MarkInterrupted()
	require.NoError(t, err)
	require.Len(t, interrupted, 1)
	_, err = r.outbox.Update(func(tx *Tx) error {
		return errors.Join(tx.OpenRun("20261201T000002Z-open"), tx.OpenRun("20261201T000003Z-gone"))
	})
	require.NoError(t, err)

	require.NoError(t, r.pub.Recover(interrupted))
	open, err := r.outbox.OpenRuns()
	require.NoError(t, err)
	assert.Empty(t, open, "both closed: one published, one forgotten")
	entries, err := r.outbox.Peek(100)
	require.NoError(t, err)
	var got []string
	for _, e := range entries {
		var h struct{ ID string }
		require.NoError(t, json.Unmarshal(e.Payload, &h))
		got = append(got, strings.TrimPrefix(e.Topic, "fab/tool1/")+" "+h.ID)
	}
	assert.Equal(t, []string{
		"run/started tool1/20261201T000002Z-open/0",
		"run/site tool1/20261201T000002Z-open/1",
		"run/site tool1/20261201T000002Z-open/3",
		"run/ended tool1/20261201T000002Z-open/4",
		"run/record tool1/20261201T000002Z-open/5",
		"ledger ",
	}, got)
	assert.Contains(t, string(entries[3].Payload), `"state":"interrupted"`)
}

// TestOutboxFullDropsTheOldest: with the broker down for long, a bounded
// outbox drops its oldest messages to take new ones, says so once in the
// log and counts them; runs are never held up (Accept does not wait).
func TestOutboxFullDropsTheOldest(t *testing.T) {
	dir := t.TempDir()
	store, err := results.Open(dir)
	require.NoError(t, err)
	ob, err := OpenOutbox(filepath.Join(dir, "outbox.db"), 4096)
	require.NoError(t, err)
	defer ob.Close()
	logs := &logBuf{}
	pub, err := New(Config{Tool: "tool1", Prefix: "fab", Brokers: []string{"mqtt://127.0.0.1:1"}, QoS: 1, Outbox: ob, Store: store,
		Log: logging.New(logs, logging.Options{Level: logging.Info}).For("publish"), RetryMax: time.Second})
	require.NoError(t, err)
	r := &rig{t: t, store: store, outbox: ob, pub: pub, logs: logs}
	r.start()
	for i := range 5 {
		r.run(fmt.Sprintf("20261201T00000%dZ-full", i), 8, results.Completed)
	}
	require.Eventually(t, func() bool { return pub.Status().Dropped > 0 && len(ledgerOf(t, ob)) == 5 }, 10*time.Second, time.Millisecond)
	r.stop()
	st := pub.Status()
	assert.LessOrEqual(t, st.Bytes, int64(4096))
	assert.False(t, st.FullSince.IsZero())
	assert.Equal(t, 1, strings.Count(logs.String(), "outbox full"), "one line when it fills:\n%s", logs)
	// The newest messages are the ones kept: the last run's record and
	// the ledger after it.
	entries, err := ob.Peek(1000)
	require.NoError(t, err)
	require.NotEmpty(t, entries)
	assert.Equal(t, "fab/tool1/ledger", entries[len(entries)-1].Topic)
	assert.Contains(t, string(entries[len(entries)-2].Payload), `"run_id":"20261201T000004Z-full"`)
	assert.NotContains(t, string(entries[0].Payload), `"run_id":"20261201T000000Z-full"`, "the oldest were dropped")
	assert.Equal(t, 5*(8+4), int(st.Dropped)+len(entries), "every message (started, 8 sites, ended, record, ledger) waits or was counted dropped")
}

// TestAcceptNeverBlocksAStop: the machine hands its events to Accept with
// its lock held, during a stop. With nothing draining the queue (a disk
// that stopped answering, an outbox full behind a broker that is down),
// Accept still returns at once: past MaxQueue the newest events are
// counted dropped. A blocking Accept would hang this test.
func TestAcceptNeverBlocksAStop(t *testing.T) {
	dir := t.TempDir()
	store, err := results.Open(dir)
	require.NoError(t, err)
	ob, err := OpenOutbox(filepath.Join(dir, "outbox.db"), 4096)
	require.NoError(t, err)
	defer ob.Close()
	pub, err := New(Config{Tool: "tool1", Prefix: "fab", Brokers: []string{"mqtt://127.0.0.1:1"}, QoS: 1, Outbox: ob, Store: store})
	require.NoError(t, err)
	// Run is not started: nothing takes the queue.
	for range MaxQueue + 100 {
		pub.Accept(control.Event{Kind: control.StopRequested, Reason: stop.EStop, Text: "estop"})
	}
	assert.EqualValues(t, 100, pub.Status().Dropped)
}

func ledgerOf(t *testing.T, ob *Outbox) []LedgerRun {
	runs, err := ob.Ledger()
	require.NoError(t, err)
	return runs
}
