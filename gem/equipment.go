// Package gem is the factory host's interface to waferd: the equipment
// side of SECS/GEM (SEMI E30 GEM behaviour, E5 messages) over HSMS-SS
// (E37/E37.1, passive: waferd listens, the host connects).
//
// It is a front end like the console: it drives the machine through
// control.Machine only. A host's STOP and ABORT are two more callers of
// the machine's one Stop (reasons host and abort); its START is one more
// claimant (a run through RunRecipe); its events and alarms come from the
// machine's event stream (Subscribe), which never waits for it. A host
// that is slow, stops reading or drops the connection costs the machine
// nothing: every send of the interface is bounded (T3, T8), and nothing of
// the machine waits for the interface.
//
// The HSMS layer is github.com/arloliu/go-secs/v2 (hsmsss); the GEM state
// machines (state.go), the variables, events, alarms, remote commands and
// process programs are ours, one file each. The README's "factory host"
// section is the compliance statement: messages, ids and behaviour.
package gem

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/arloliu/go-secs/v2/hsms"
	"github.com/arloliu/go-secs/v2/hsmsss"
	"github.com/arloliu/go-secs/v2/secs2"

	"github.com/waferd/waferd/control"
	"github.com/waferd/waferd/internal/logging"
	"github.com/waferd/waferd/machine"
)

// Config configures the equipment interface. Zero durations take the
// E37/E30 defaults.
type Config struct {
	// Listen is the TCP address the host connects to ("0.0.0.0:5000";
	// port 0 picks a free port, see Equipment.Addr).
	Listen string
	// DeviceID is the HSMS session id of data messages, 0–32767; a
	// message for another device id is answered with S9F1.
	DeviceID uint16
	// T3 reply timeout (45 s), T5 connect separation (10 s; a passive
	// equipment never dials: it only spaces re-listens), T6 control
	// transaction timeout (5 s), T7 not-selected timeout (10 s), T8
	// inter-character timeout (5 s; also bounds each write of ours, so a
	// host that stops reading is dropped).
	T3, T5, T6, T7, T8 time.Duration
	// Linktest is the interval of our linktests on an idle link (0: none).
	Linktest time.Duration
	// EstablishRetry is E30's establish-communications timeout: the wait
	// after a denied or unanswered S1F13 before the next (10 s).
	EstablishRetry time.Duration
	// InitialControl is the control state at start-up (HostOffline).
	InitialControl ControlState
	// Remote is the operator's online switch: ONLINE goes to REMOTE when
	// true, LOCAL when false.
	Remote bool
	// Model and Revision are MDLN and SOFTREV (at most 20 characters
	// each are sent).
	Model, Revision string
	// Log receives the interface's messages; nil discards them.
	Log *logging.Log
}

func (c *Config) defaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.T3, 45*time.Second)
	def(&c.T5, 10*time.Second)
	def(&c.T6, 5*time.Second)
	def(&c.T7, 10*time.Second)
	def(&c.T8, 5*time.Second)
	def(&c.EstablishRetry, 10*time.Second)
	if c.InitialControl == 0 {
		c.InitialControl = HostOffline
	}
	if c.Model == "" {
		c.Model = "waferd"
	}
	if c.Log == nil {
		c.Log = logging.Discard()
	}
}

// Limits of the interface.
const (
	// maxBody is the largest message body handled; a longer one is
	// answered with S9F11 (data too long). A recipe (S7F3) is the largest
	// thing a host sends.
	maxBody = control.MaxRecipeBytes + 4096
	// workQueue is how many messages may wait for the worker; beyond it a
	// message is aborted (SxF0).
	workQueue = 64
	// outQueue is how many of our messages (events, alarms) may wait to
	// be sent; beyond it they are dropped (no spooling).
	outQueue = 256
	// drainTimeout bounds the sending of what is queued when Run ends.
	drainTimeout = time.Second
)

// Equipment is the equipment side of the link. Make it with New, then Run
// it; its methods are safe for concurrent use.
type Equipment struct {
	cfg  Config
	m    control.Machine
	log  *logging.Log
	addr string
	conn hsmsss.Connection

	lnMu  sync.Mutex
	first net.Listener // bound by New, handed to the first generation; nil once used

	work  chan inbound  // to the worker
	out   chan outbound // to the sender (comms)
	kick  chan struct{} // the session or the communication state changed
	notes chan note     // the interface's own events, to watch

	mu       sync.Mutex
	comm     CommState
	ctl      ControlState
	remote   bool
	session  uint64            // counts selected sessions
	gen      uint64            // the HSMS generation of the session
	rspOut   bool              // the session's Select.rsp is on the wire: we may send
	peer     string            // the host's address
	sockets  map[uint64]string // accepted sockets' remote addresses
	ppExec   string            // the selected recipe (PP-SELECT)
	rep      *reports
	al       *alarmState
	machine  machine.State // as last reported
	stopSeq  uint64        // counts the host's STOPs and ABORTs
	dataID   uint32
	dropping bool // events are being dropped (logged once per burst)
}

// New prepares the interface and binds its listening socket (so that an
// address in use is reported now). Run serves it; if Run is never called,
// Close releases the socket.
func New(cfg Config, m control.Machine) (*Equipment, error) {
	cfg.defaults()
	if cfg.DeviceID > 0x7fff {
		return nil, fmt.Errorf("gem: device id %d: must be 0–32767", cfg.DeviceID)
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("gem: %w", err)
	}
	e := &Equipment{
		cfg: cfg, m: m, log: cfg.Log, addr: ln.Addr().String(), first: ln,
		work: make(chan inbound, workQueue), out: make(chan outbound, outQueue), kick: make(chan struct{}, 1),
		notes: make(chan note, workQueue),
		ctl:   cfg.InitialControl, remote: cfg.Remote, rep: newReports(), al: newAlarmState(),
	}
	host, portText, _ := net.SplitHostPort(e.addr)
	port, _ := strconv.Atoi(portText)
	hcfg, err := hsmsss.NewConfig(host, port,
		hsmsss.WithPassive(), hsmsss.WithEquipRole(), hsmsss.WithListener(e.listen),
		hsmsss.WithConnectionOption(hsms.WithSessionID(cfg.DeviceID)),
		hsmsss.WithConnectionOption(hsms.WithSessionIDValidation(true)),
		hsmsss.WithConnectionOption(hsms.WithT3(cfg.T3)),
		hsmsss.WithConnectionOption(hsms.WithT5(cfg.T5)),
		hsmsss.WithConnectionOption(hsms.WithT6(cfg.T6)),
		hsmsss.WithConnectionOption(hsms.WithT7(cfg.T7)),
		hsmsss.WithConnectionOption(hsms.WithT8(cfg.T8)),
		hsmsss.WithConnectionOption(hsms.WithWriteTimeout(cfg.T8)),
		hsmsss.WithConnectionOption(hsms.WithLinktestInterval(cfg.Linktest)),
		hsmsss.WithConnectionOption(hsms.WithCloseTimeout(2*time.Second)),
		hsmsss.WithConnectionOption(hsms.WithLogger(libLogger{l: e.log})),
		hsmsss.WithConnectionOption(hsms.WithSocketObserver(e.onSocket)),
		hsmsss.WithConnectionOption(hsms.WithWireObserver(e.onWire)),
	)
	if err == nil {
		e.conn, err = hsmsss.New(hcfg)
	}
	if err != nil {
		_ = ln.Close()
		return nil, fmt.Errorf("gem: %w", err)
	}
	return e, nil
}

// Addr is the address the interface listens on (host:port).
func (e *Equipment) Addr() string { return e.addr }

// listen is the HSMS layer's listener factory: the socket New bound for
// the first session, a fresh one on the same address after each session
// ends (the passive side re-listens).
func (e *Equipment) listen(ctx context.Context, _, _ string) (net.Listener, error) {
	e.lnMu.Lock()
	ln := e.first
	e.first = nil
	e.lnMu.Unlock()
	if ln != nil {
		return ln, nil
	}
	var lc net.ListenConfig
	return lc.Listen(ctx, "tcp", e.addr)
}

// Close releases the listening socket if Run was never called. Run closes
// everything itself.
func (e *Equipment) Close() error {
	e.lnMu.Lock()
	defer e.lnMu.Unlock()
	if e.first == nil {
		return nil
	}
	err := e.first.Close()
	e.first = nil
	return err
}

// Run serves the host until ctx ends: it listens (one host session at a
// time; a second connection is refused while one is selected), answers
// the host's messages, establishes communication, and reports the
// machine's events and alarms. When ctx ends it sends what is already
// queued (at most a second), separates and returns. It returns nil after
// ctx ends, or the error that kept it from starting.
func (e *Equipment) Run(ctx context.Context) error {
	events, unsubscribe := e.m.Subscribe()
	defer unsubscribe()
	e.startLatch(ctx)
	e.conn.AddDataMessageHandler(e.onMessage)
	e.conn.AddDecodeErrorHandler(e.onUndecodable)
	cancelLife := e.conn.SubscribeLifecycle(e.onLifecycle)
	defer cancelLife()
	if err := e.conn.Open(ctx, hsms.OpenBackground); err != nil {
		_ = e.Close()
		return fmt.Errorf("gem: %w", err)
	}
	e.log.Noticef("HSMS-SS (passive) on %s, device id %d, control %s", e.addr, e.cfg.DeviceID, e.controlState())

	wctx, wcancel := context.WithCancel(context.Background())
	var worker, watcher, comms sync.WaitGroup
	worker.Go(func() { e.worker(wctx) })
	watcher.Go(func() { e.watch(ctx, events) })
	drain := make(chan struct{})
	comms.Go(func() { e.comms(ctx, drain) })

	<-ctx.Done()
	watcher.Wait() // the machine's last events are queued
	close(drain)   // send them, within drainTimeout
	comms.Wait()
	err := e.conn.Close()
	wcancel()
	worker.Wait()
	if err != nil && !errors.Is(err, hsms.ErrConnClosed) {
		e.log.Warnf("closing the HSMS connection: %v", err)
	}
	return nil
}

// onLifecycle follows the end of an HSMS session (on the layer's
// notifier goroutine; it never blocks). Its start is seen on the wire
// (onWire): the layer reports a session selected before its Select.rsp is
// written, and nothing of ours may reach the host before that.
func (e *Equipment) onLifecycle(ev hsms.LifecycleEvent) {
	e.mu.Lock()
	// A session ends when its generation leaves Selected or drops its TCP
	// link; the late report of the same generation entering NotSelected
	// (before it was selected) ends nothing.
	ended := ev.Previous == hsms.SelectedState || ev.Current == hsms.NotConnectedState
	lost := ended && ev.Generation == e.gen && e.comm != CommNoSession
	if lost {
		e.session++
		e.comm = nextComm(e.comm, commLost)
		e.log.Noticef("host session ended (%s)", ev.Cause)
	}
	e.mu.Unlock()
	if lost {
		e.poke()
	}
}

// selected starts the session of ev's generation, once: its Select.rsp
// is on the wire, or the host has sent a data message in it.
//
// Our own messages wait for the Select.rsp on the wire (rspOut): a host
// that sent data before it had our Select.rsp must still receive the
// Select.rsp first.
func (e *Equipment) selected(ev hsms.WireEvent) {
	rsp := ev.Direction == hsms.WireOutbound
	e.mu.Lock()
	if ev.Generation == e.gen && e.comm != CommNoSession {
		if rsp && !e.rspOut {
			e.rspOut = true
			e.mu.Unlock()
			e.poke()
			return
		}
		e.mu.Unlock()
		return
	}
	e.session++
	e.gen, e.rspOut = ev.Generation, rsp
	e.peer = e.peerOf(ev.Socket)
	e.comm = nextComm(CommNoSession, commSelected)
	e.log.Noticef("host %s selected the session", e.peer)
	e.mu.Unlock()
	e.poke()
}

// poke wakes the sender: the session or the communication state changed.
func (e *Equipment) poke() {
	select {
	case e.kick <- struct{}{}:
	default:
	}
}

// commState returns the communication state.
func (e *Equipment) commState() CommState {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.comm
}

func (e *Equipment) controlState() ControlState {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.ctl
}

// setComm applies in to the communication state.
func (e *Equipment) setComm(in commInput) {
	e.mu.Lock()
	prev := e.comm
	e.comm = nextComm(e.comm, in)
	next := e.comm
	e.mu.Unlock()
	if next != prev {
		e.log.Infof("communication: %s", next)
		e.poke()
	}
}

// mdln is the equipment's L[2] MDLN SOFTREV (S1F2, S1F13, S1F14).
func (e *Equipment) mdln() secs2.Item {
	return secs2.NewListItem(secs2.NewASCIIItem(cut(e.cfg.Model, 20)), secs2.NewASCIIItem(cut(e.cfg.Revision, 20)))
}

func cut(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// mustItem is a message's body, or an empty item if it has none or it does
// not decode (the caller's cursor then fails).
func mustItem(m *hsms.DataMessage) secs2.Item {
	if m == nil {
		return secs2.NewEmptyItem()
	}
	it, err := m.Item()
	if err != nil {
		return secs2.NewEmptyItem()
	}
	return it
}

// sml renders a message for the log.
func sml(m *hsms.DataMessage) string {
	if m == nil {
		return "nothing"
	}
	w := ""
	if m.WaitBit() {
		w = " W"
	}
	return fmt.Sprintf("S%dF%d%s %s", m.Stream(), m.Function(), w, mustItem(m).ToSML())
}
