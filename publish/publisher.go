// Package publish sends the tool's events and results to an MQTT broker
// through a durable outbox, for a fleet of tools (README "Publishing to
// MQTT"; the collector is package collect).
//
// The daemon hands every event to Accept, which only appends it to a queue
// in memory: it never blocks and never does I/O, because the machine calls
// it with its lock held, on the stop path. A committer goroutine turns the
// queued events into messages (reading the run's files for sites and
// records) and commits them to the outbox, a bbolt file, with fsync. A
// sender goroutine publishes the outbox in order to the broker and deletes
// a message only once the broker has acknowledged it (QoS 1). A broker
// that is down, a network cut or a restart of the tool loses nothing that
// was committed; a crash before the commit (a few milliseconds) is
// repaired from the results on disk by Recover at the next start.
package publish

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/waferd/waferd/control"
	"github.com/waferd/waferd/inspection/results"
	"github.com/waferd/waferd/internal/logging"
	"github.com/waferd/waferd/machine"
	"github.com/waferd/waferd/stop"
)

// Config configures a Publisher. Zero durations take the defaults.
type Config struct {
	// Tool names this tool: the topic level under Prefix and, by
	// default, the client id.
	Tool     string
	Prefix   string
	ClientID string
	// Brokers are tried in order at each connection: mqtt://host:port
	// (or tcp://) and mqtts://host:port (or ssl://, tls://) for TLS.
	Brokers []string
	QoS     byte
	// TLS configures mqtts:// connections (CA, client certificate).
	TLS *tls.Config
	// Username and Password come from the credentials file; they never
	// appear in a log line.
	Username, Password string
	// KeepAlive is the MQTT keep-alive (default 30 s); ConnectTimeout
	// bounds a connection attempt (default 10 s); AckTimeout bounds the
	// wait for a batch's acknowledgements (default 30 s); RetryMax caps
	// the wait between connection attempts (default 30 s, starting at
	// 500 ms); DrainTimeout is how long Run goes on sending after its
	// context ends, when connected (default 2 s).
	KeepAlive, ConnectTimeout, AckTimeout, RetryMax, DrainTimeout time.Duration
	// Window is how many messages are in flight at once (default 64).
	Window int
	// CommitDelay is how long the committer lets events gather before it
	// commits them (default 10 ms; negative: none): one fsync for the
	// events of a moment, and no work for the committer in the
	// milliseconds that follow a stop, when the machine's own threads
	// need the processor (BenchmarkStopLatencyPublishing).
	CommitDelay time.Duration
	// Outbox is the opened outbox; Store the results the run messages are
	// read from.
	Outbox *Outbox
	Store  *results.Store
	Log    *logging.Log
	// Version is the daemon's version, in the online message.
	Version string
}

// MaxQueue bounds the events waiting in memory for the committer (a disk
// that stopped answering): more are dropped and counted.
const MaxQueue = 100000

// Publisher publishes a tool's events. Accept and Status are safe for
// concurrent use; Run runs once.
type Publisher struct {
	cfg Config
	log *logging.Log
	ob  *Outbox

	qmu     sync.Mutex
	queue   []control.Event
	qfull   bool          // the queue overflowed (logged once per episode)
	wake    chan struct{} // the committer has events
	resend  chan string   // runs a collector asked for again
	outWake chan struct{} // the sender has messages

	// committer-owned
	state     machine.State
	latchWhy  string
	appendErr string // the last commit error logged

	smu       sync.Mutex
	connected bool
	since     time.Time // when the connection came up or went down
	lastErr   string    // why the last connection failed or ended
	sent      uint64
	retried   uint64
	dropped   uint64
	fullSince time.Time // when the outbox began dropping (zero: not full)
}

// New returns a Publisher on an opened outbox. It starts nothing.
func New(cfg Config) (*Publisher, error) {
	if cfg.Outbox == nil || cfg.Store == nil {
		return nil, errors.New("publish: an outbox and a results store are required")
	}
	if !ValidName(cfg.Tool) {
		return nil, fmt.Errorf("invalid tool name %q", cfg.Tool)
	}
	if len(cfg.Brokers) == 0 {
		return nil, errors.New("publish: no broker")
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.KeepAlive, 30*time.Second)
	def(&cfg.ConnectTimeout, 10*time.Second)
	def(&cfg.AckTimeout, 30*time.Second)
	def(&cfg.RetryMax, 30*time.Second)
	def(&cfg.DrainTimeout, 2*time.Second)
	if cfg.CommitDelay == 0 {
		cfg.CommitDelay = 10 * time.Millisecond
	}
	if cfg.Window <= 0 {
		cfg.Window = 64
	}
	if cfg.ClientID == "" {
		cfg.ClientID = cfg.Tool
	}
	log := cfg.Log
	if log == nil {
		log = logging.Discard()
	}
	return &Publisher{
		cfg: cfg, log: log, ob: cfg.Outbox,
		wake: make(chan struct{}, 1), resend: make(chan string, 64), outWake: make(chan struct{}, 1),
		since: time.Now(),
	}, nil
}

// Accept queues e for the outbox. It never blocks and does no I/O: the
// machine calls it with its lock held (daemon.Options.Events).
func (p *Publisher) Accept(e control.Event) {
	switch e.Kind {
	case control.Notice:
		return // for consoles only
	case control.RunEnded:
		if e.Err != nil || e.Result.RunID == "" {
			return // the run did not start: nothing was recorded
		}
	}
	p.qmu.Lock()
	if len(p.queue) >= MaxQueue {
		p.qfull = true
		p.qmu.Unlock()
		p.countDropped(1)
		return
	}
	p.queue = append(p.queue, e)
	p.qmu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// Run commits accepted events to the outbox and sends the outbox to the
// broker until ctx ends. Then it commits what was accepted, goes on sending
// for up to DrainTimeout if connected, marks the tool offline and
// disconnects. It returns nil after a clean end.
func (p *Publisher) Run(ctx context.Context) error {
	committed := make(chan struct{})
	senderDone := make(chan struct{})
	go func() {
		defer close(senderDone)
		p.send(ctx, committed)
	}()
	p.commitLoop(ctx)
	// Everything accepted is committed: the sender drains what it can
	// for DrainTimeout, then disconnects.
	close(committed)
	<-senderDone
	return nil
}

// Recover re-reads from the results store every run whose start was
// committed but whose record was not (the tool stopped in between), and
// the runs interrupted (those MarkInterrupted returned, whose start may not
// have been committed either), and commits their messages: started, every
// saved site, ended and record, with the same ids as the first time, so a
// consumer drops the duplicates. Call it before Run.
func (p *Publisher) Recover(interrupted []results.Run) error {
	open, err := p.ob.OpenRuns()
	if err != nil {
		return err
	}
	seen := map[string]bool{}
	var ids []string
	for _, id := range open {
		if !seen[id] {
			seen[id], ids = true, append(ids, id)
		}
	}
	for _, r := range interrupted {
		if !seen[r.ID] {
			seen[r.ID], ids = true, append(ids, r.ID)
		}
	}
	var errs []error
	for _, id := range ids {
		if err := p.commitRun(id); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				// Killed before its first record: nothing to publish.
				_, ferr := p.ob.Update(func(tx *Tx) error { return tx.ForgetRun(id) })
				errs = append(errs, ferr)
				continue
			}
			errs = append(errs, err)
			continue
		}
		p.log.Noticef("run %s: published again from its record (the tool stopped before it was all committed)", id)
	}
	return errors.Join(errs...)
}

// commitLoop is the committer: it commits queued events (and runs asked
// for again) until ctx ends, then what is left.
func (p *Publisher) commitLoop(ctx context.Context) {
	delay := time.NewTimer(time.Hour)
	delay.Stop()
	for {
		select {
		case <-ctx.Done():
			p.commitQueued()
			return
		case id := <-p.resend:
			if err := p.commitRun(id); err != nil {
				p.log.Warnf("a collector asked for run %s again: %v", id, err)
			}
		case <-p.wake:
			if p.cfg.CommitDelay > 0 {
				delay.Reset(p.cfg.CommitDelay)
				select {
				case <-delay.C:
				case <-ctx.Done():
					delay.Stop()
				}
			}
			p.commitQueued()
		}
	}
}

// commitQueued commits every queued event in one transaction.
func (p *Publisher) commitQueued() {
	p.qmu.Lock()
	evs := p.queue
	p.queue = nil
	full := p.qfull
	p.qfull = false
	p.qmu.Unlock()
	if full {
		p.log.Errorf("more than %d events waited for the outbox (is the disk answering?): the newest were dropped", MaxQueue)
	}
	if len(evs) == 0 {
		return
	}
	dropped, err := p.ob.Update(func(tx *Tx) error {
		for _, e := range evs {
			if err := p.commitEvent(tx, e); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		p.countDropped(len(evs))
		if msg := err.Error(); msg != p.appendErr {
			p.appendErr = msg
			p.log.Errorf("%v: %d events not published", err, len(evs))
		}
		return
	}
	p.appendErr = ""
	p.afterPut(dropped)
}

// commitEvent puts the messages of e.
func (p *Publisher) commitEvent(tx *Tx, e control.Event) error {
	cfg := p.cfg
	switch e.Kind {
	case control.MachineState:
		prev := p.state
		p.state = e.State
		if e.State.Latched() {
			p.latchWhy = e.Text
		}
		n, err := tx.NextEvent()
		if err != nil {
			return err
		}
		st := State{Header: p.header("state", n, e.Time), State: e.State.String(), Latched: e.State.Latched(), Detail: e.Text}
		if st.Latched {
			st.LatchReason = p.latchWhy
		}
		if err := p.put(tx, TopicState, true, st); err != nil {
			return err
		}
		if e.State.Latched() || prev.Latched() && e.State == machine.Idle {
			n, err := tx.NextEvent()
			if err != nil {
				return err
			}
			l := Latch{Header: p.header("latch", n, e.Time), Latched: e.State.Latched(), State: e.State.String(), Reason: e.Text}
			if err := p.put(tx, TopicLatch, false, l); err != nil {
				return err
			}
		}
		if !e.State.Latched() {
			p.latchWhy = ""
		}
	case control.StopRequested:
		n, err := tx.NextEvent()
		if err != nil {
			return err
		}
		s := Stop{Header: p.header("stop", n, e.Time), Reason: e.Reason.String(), Cause: e.Text,
			Alarm: e.Reason >= stop.Fault, State: e.State.String()}
		return p.put(tx, TopicStop, false, s)
	case control.RunStarted:
		run, err := cfg.Store.Load(e.RunID)
		if err != nil {
			p.log.Errorf("run %s started: %v", e.RunID, err)
			return nil
		}
		if err := tx.OpenRun(run.ID); err != nil {
			return err
		}
		return p.put(tx, TopicStarted, false, p.started(run))
	case control.RunProgress:
		pr := e.Progress
		site, err := p.site(pr.RunID, pr.Site.Index, e.Time)
		if err != nil {
			p.log.Errorf("run %s site %d: %v", pr.RunID, pr.Site.Index, err)
			return nil
		}
		return p.put(tx, TopicSite, false, site)
	case control.RunEnded:
		run, err := cfg.Store.Load(e.Result.RunID)
		if err != nil {
			p.log.Errorf("run %s ended: %v", e.Result.RunID, err)
			return nil
		}
		if err := p.putEnd(tx, run); err != nil {
			return err
		}
		return p.putLedger(tx)
	}
	return nil
}

// commitRun commits every message of run id again, from its files.
func (p *Publisher) commitRun(id string) error {
	run, err := p.cfg.Store.Load(id)
	if err != nil {
		return err
	}
	if !run.State.Final() {
		return fmt.Errorf("run %s is still %s", id, run.State)
	}
	var msgs []Site
	for _, s := range run.Sites {
		if s.Status != results.SiteDone {
			continue
		}
		m, err := p.site(id, s.Index, run.StartedAt)
		if err != nil {
			return err
		}
		msgs = append(msgs, m)
	}
	dropped, err := p.ob.Update(func(tx *Tx) error {
		if err := p.put(tx, TopicStarted, false, p.started(run)); err != nil {
			return err
		}
		for _, m := range msgs {
			if err := p.put(tx, TopicSite, false, m); err != nil {
				return err
			}
		}
		if err := p.putEnd(tx, run); err != nil {
			return err
		}
		return p.putLedger(tx)
	})
	if err != nil {
		return err
	}
	p.afterPut(dropped)
	return nil
}

func (p *Publisher) started(run results.Run) Started {
	dir, _ := p.cfg.Store.RunDir(run.ID)
	return Started{RunHeader: runHeader(p.cfg.Tool, run.ID, 0, run.StartedAt), Recipe: run.Recipe,
		SitesTotal: run.SitesTotal, StartedAt: run.StartedAt.UTC(), Dir: dir}
}

// site reads the saved site index of run id.
func (p *Publisher) site(id string, index int, t time.Time) (Site, error) {
	res, err := p.cfg.Store.LoadSite(id, index)
	if err != nil {
		return Site{}, err
	}
	dir, _ := p.cfg.Store.RunDir(id)
	result, image := results.SitePaths(index)
	if _, err := os.Stat(filepath.Join(dir, filepath.FromSlash(image))); err != nil {
		image = ""
	}
	return Site{RunHeader: runHeader(p.cfg.Tool, id, 1+index, t), Index: index, Die: res.Die,
		XMM: res.XMM, YMM: res.YMM, Defects: res.Defects, Result: result, Image: image}, nil
}

// putEnd puts a finished run's ended and record messages and closes it.
func (p *Publisher) putEnd(tx *Tx, run results.Run) error {
	t := run.StartedAt
	if run.EndedAt != nil {
		t = *run.EndedAt
	}
	n := run.SitesTotal
	end := Ended{RunHeader: runHeader(p.cfg.Tool, run.ID, n+1, t), State: string(run.State), Reason: run.Reason,
		Error: run.Error, SitesTotal: run.SitesTotal, SitesDone: run.SitesDone, SitesFailed: run.SitesFailed,
		DefectsTotal: run.DefectsTotal, Complete: run.Complete}
	if err := p.put(tx, TopicEnded, false, end); err != nil {
		return err
	}
	dir, _ := p.cfg.Store.RunDir(run.ID)
	rec := Record{RunHeader: runHeader(p.cfg.Tool, run.ID, n+2, t), Dir: dir, Record: run}
	if err := p.put(tx, TopicRecord, false, rec); err != nil {
		return err
	}
	return tx.CloseRun(LedgerRun{RunID: run.ID, State: string(run.State), SitesDone: run.SitesDone})
}

// putLedgerIfAny puts the ledger unless no run has finished yet.
func (p *Publisher) putLedgerIfAny(tx *Tx) error {
	runs, err := tx.Ledger()
	if err != nil || len(runs) == 0 {
		return err
	}
	return p.putLedger(tx)
}

// putLedger puts the ledger, retained, behind the records.
func (p *Publisher) putLedger(tx *Tx) error {
	runs, err := tx.Ledger()
	if err != nil {
		return err
	}
	return p.put(tx, TopicLedger, true, Ledger{V: SchemaVersion, Tool: p.cfg.Tool, Time: time.Now().UTC(), Runs: runs})
}

// header of a tool event: its id is "<tool>/<kind>/<n>", n from the
// outbox's durable sequence (Tx.NextEvent).
func (p *Publisher) header(kind string, n string, t time.Time) Header {
	if t.IsZero() {
		t = time.Now()
	}
	return Header{V: SchemaVersion, ID: p.cfg.Tool + "/" + kind + "/" + n, Tool: p.cfg.Tool, Time: t.UTC()}
}

func (p *Publisher) put(tx *Tx, sub string, retain bool, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s: %w", sub, err)
	}
	return tx.Put(Message{Topic: Topic(p.cfg.Prefix, p.cfg.Tool, sub), Retain: retain, Payload: b})
}

// afterPut counts what a commit dropped, logs when the outbox fills, and
// wakes the sender.
func (p *Publisher) afterPut(dropped int) {
	if dropped > 0 {
		p.smu.Lock()
		first := p.fullSince.IsZero()
		if first {
			p.fullSince = time.Now()
		}
		p.smu.Unlock()
		p.countDropped(dropped)
		if first {
			n, b := p.ob.Depth()
			p.log.Errorf("outbox full (%d messages, %d of %d bytes; %s): dropping the oldest messages until the broker takes them; the results stay on disk",
				n, b, p.ob.MaxBytes(), p.connText())
		}
	}
	p.kickSender()
}

func (p *Publisher) kickSender() {
	select {
	case p.outWake <- struct{}{}:
	default:
	}
}

func (p *Publisher) countDropped(n int) {
	p.smu.Lock()
	p.dropped += uint64(n)
	p.smu.Unlock()
}

// connText says how the broker connection is, for log lines.
func (p *Publisher) connText() string {
	p.smu.Lock()
	defer p.smu.Unlock()
	if p.connected {
		return "connected since " + p.since.Format(time.RFC3339)
	}
	s := "broker unreachable since " + p.since.Format(time.RFC3339)
	if p.lastErr != "" {
		s += ": " + p.lastErr
	}
	return s
}

// Status reports the broker connection and the outbox, for status and
// stats. It never blocks on I/O.
func (p *Publisher) Status() *control.PublishStatus {
	n, b := p.ob.Depth()
	p.smu.Lock()
	defer p.smu.Unlock()
	return &control.PublishStatus{
		Brokers: p.cfg.Brokers, Tool: p.cfg.Tool, Prefix: p.cfg.Prefix,
		Connected: p.connected, Since: p.since, LastError: p.lastErr,
		Depth: n, Bytes: b, MaxBytes: p.ob.MaxBytes(), FullSince: p.fullSince,
		Sent: p.sent, Retried: p.retried, Dropped: p.dropped,
	}
}
