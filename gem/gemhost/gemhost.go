// Package gemhost is a small factory host: the host side of SECS/GEM over
// HSMS-SS (active: it connects to the equipment). `waferd gem-host` is a
// person's front end to it, so that a field engineer can prove the link
// without the fab's software; the end-to-end tests drive waferd through it.
//
// It answers what the equipment sends (S6F11 event reports, S5F1 alarms,
// S10F1 texts, S1F13, S1F1) at once and hands each to Messages; its
// requests wait for their reply (T3).
package gemhost

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
	"github.com/arloliu/go-secs/v2/logger"
	"github.com/arloliu/go-secs/v2/secs2"
)

// Config configures a Host.
type Config struct {
	// Addr is the equipment's address, host:port.
	Addr string
	// DeviceID is the equipment's device id (HSMS session id).
	DeviceID uint16
	// T3 (reply timeout, default 45 s) and T6 (control transactions,
	// default 5 s).
	T3, T6 time.Duration
	// Trace, if set, is called with every frame in both directions (the
	// exact wire bytes), in order per direction, from a goroutine of the
	// Host's; it must not block for long.
	Trace func(out bool, frame []byte)
}

// Host is a connected host. Its methods are safe for concurrent use.
type Host struct {
	cfg  Config
	conn hsmsss.Connection
	msgs chan *hsms.DataMessage

	trace   chan traced
	traceWG sync.WaitGroup

	lost     chan struct{} // closed when the session ends
	lostOnce sync.Once
	stopLife func()

	mu      sync.Mutex
	reports map[uint32][]uint32 // RPTID → VIDs, as Setup defined them
	closed  bool
}

type traced struct {
	out   bool
	frame []byte
}

// Buffer is how many of the equipment's messages Messages holds; beyond it
// they are dropped (the host still answers them).
const Buffer = 1024

// Dial connects to the equipment and waits until the HSMS session is
// selected (bounded by ctx). It does not establish communication: call
// Establish.
func Dial(ctx context.Context, cfg Config) (*Host, error) {
	if cfg.T3 <= 0 {
		cfg.T3 = 45 * time.Second
	}
	if cfg.T6 <= 0 {
		cfg.T6 = 5 * time.Second
	}
	host, portText, err := net.SplitHostPort(cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("gemhost: address %q: %w", cfg.Addr, err)
	}
	port, err := strconv.Atoi(portText)
	if err != nil {
		return nil, fmt.Errorf("gemhost: address %q: bad port", cfg.Addr)
	}
	h := &Host{cfg: cfg, msgs: make(chan *hsms.DataMessage, Buffer), reports: map[uint32][]uint32{}, lost: make(chan struct{})}
	opts := []hsmsss.Option{
		hsmsss.WithActive(), hsmsss.WithHostRole(), hsmsss.WithConnectTimeout(cfg.T6),
		hsmsss.WithConnectionOption(hsms.WithSessionID(cfg.DeviceID)),
		hsmsss.WithConnectionOption(hsms.WithT3(cfg.T3)),
		hsmsss.WithConnectionOption(hsms.WithT6(cfg.T6)),
		hsmsss.WithConnectionOption(hsms.WithS9Correlation(true)),
		hsmsss.WithConnectionOption(hsms.WithCloseTimeout(2 * time.Second)),
		hsmsss.WithConnectionOption(hsms.WithLogger(quiet{})),
	}
	if cfg.Trace != nil {
		h.trace = make(chan traced, 256)
		opts = append(opts, hsmsss.WithConnectionOption(hsms.WithWireObserver(func(ev hsms.WireEvent) {
			select {
			case h.trace <- traced{out: ev.Direction == hsms.WireOutbound, frame: append([]byte(nil), ev.Frame...)}:
			default: // a slow trace loses lines, never the link
			}
		})))
		h.traceWG.Go(func() {
			for t := range h.trace {
				cfg.Trace(t.out, t.frame)
			}
		})
	}
	hcfg, err := hsmsss.NewConfig(host, port, opts...)
	if err == nil {
		h.conn, err = hsmsss.New(hcfg)
	}
	if err != nil {
		h.stopTrace()
		return nil, fmt.Errorf("gemhost: %w", err)
	}
	h.conn.AddDataMessageHandler(h.onMessage)
	if err := h.conn.Open(ctx, hsms.OpenWaitSelected); err != nil {
		_ = h.conn.Close()
		h.stopTrace()
		return nil, fmt.Errorf("gemhost: connect to %s: %w", cfg.Addr, err)
	}
	h.stopLife = h.conn.SubscribeLifecycle(func(ev hsms.LifecycleEvent) {
		if ev.Previous == hsms.SelectedState {
			h.lostOnce.Do(func() { close(h.lost) })
		}
	})
	return h, nil
}

func (h *Host) stopTrace() {
	if h.trace != nil {
		close(h.trace)
		h.traceWG.Wait()
	}
}

// Close separates and closes the connection. Messages is closed.
func (h *Host) Close() error {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil
	}
	h.closed = true
	h.mu.Unlock()
	h.stopLife()
	err := h.conn.Close()
	h.stopTrace()
	close(h.msgs)
	return err
}

// Lost is closed when the selected session ends (the equipment closed
// it, or the link failed); the connection does not come back by itself
// as far as a Host is concerned: Dial again.
func (h *Host) Lost() <-chan struct{} { return h.lost }

// Selected reports whether the HSMS session is still selected.
func (h *Host) Selected() bool { return h.conn.State() == hsms.SelectedState }

// Messages delivers the equipment's primaries (already answered).
func (h *Host) Messages() <-chan *hsms.DataMessage { return h.msgs }

// onMessage answers the equipment's primaries and passes them on (on the
// receive goroutine: it never blocks).
func (h *Host) onMessage(msg *hsms.DataMessage, ep hsms.SECS2Endpoint) {
	if !msg.IsPrimary() {
		return
	}
	var reply secs2.Item
	switch [2]byte{msg.Stream(), msg.Function()} {
	case [2]byte{1, 1}:
		reply = secs2.NewListItem()
	case [2]byte{1, 13}:
		reply = secs2.NewListItem(secs2.NewBinaryItem(byte(0)), secs2.NewListItem())
	case [2]byte{5, 1}, [2]byte{6, 11}, [2]byte{10, 1}:
		reply = secs2.NewBinaryItem(byte(0))
	}
	if msg.WaitBit() {
		ctx, cancel := context.WithTimeout(context.Background(), h.cfg.T6)
		if reply != nil {
			_ = ep.ReplyDataMessage(ctx, msg, reply)
		} else {
			_ = hsms.ReplyAbort(ctx, ep, msg)
		}
		cancel()
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return
	}
	select {
	case h.msgs <- msg:
	default:
	}
}

// Send sends a primary with the W-bit and returns its reply. An SxF0 or an
// S9 error message in reply is an error naming it.
func (h *Host) Send(ctx context.Context, stream, function byte, body secs2.Item) (*hsms.DataMessage, error) {
	if body == nil {
		body = secs2.NewEmptyItem()
	}
	reply, err := h.conn.SendDataMessage(ctx, stream, function, true, body)
	var s9 *hsms.S9Error
	switch {
	case errors.As(err, &s9):
		return nil, fmt.Errorf("gemhost: S%dF%d: the equipment answered S9F%d (%w)", stream, function, s9.Function, err)
	case err != nil:
		return nil, fmt.Errorf("gemhost: S%dF%d: %w", stream, function, err)
	case reply.Function() == 0:
		return reply, fmt.Errorf("gemhost: S%dF%d: the equipment aborted the transaction (S%dF0)", stream, function, stream)
	}
	return reply, nil
}

// Body is a reply's body (an empty item if it does not decode).
func Body(m *hsms.DataMessage) secs2.Item {
	if m == nil {
		return secs2.NewEmptyItem()
	}
	it, err := m.Item()
	if err != nil {
		return secs2.NewEmptyItem()
	}
	return it
}

// ack reads a one-byte binary reply (COMMACK, ONLACK, DRACK, ...).
func ack(m *hsms.DataMessage, err error) (byte, error) {
	if err != nil {
		return 0, err
	}
	b, berr := secs2.NewCursor(Body(m)).Binary()
	if berr != nil || len(b) != 1 {
		return 0, fmt.Errorf("gemhost: S%dF%d: want a one-byte code, got %s", m.Stream(), m.Function(), Body(m).ToSML())
	}
	return b[0], nil
}

// Establish sends S1F13 and returns COMMACK (0: communicating).
func (h *Host) Establish(ctx context.Context) (byte, error) {
	m, err := h.Send(ctx, 1, 13, secs2.NewListItem())
	if err != nil {
		return 0, err
	}
	b, berr := secs2.NewCursor(Body(m)).At(0).Binary()
	if berr != nil || len(b) != 1 {
		return 0, fmt.Errorf("gemhost: S1F14: %s", Body(m).ToSML())
	}
	return b[0], nil
}

// Online sends S1F17 and returns ONLACK (0 online now, 1 refused, 2
// already online).
func (h *Host) Online(ctx context.Context) (byte, error) { return ack(h.Send(ctx, 1, 17, nil)) }

// Offline sends S1F15 and returns OFLACK.
func (h *Host) Offline(ctx context.Context) (byte, error) { return ack(h.Send(ctx, 1, 15, nil)) }

// Param is a remote command's parameter.
type Param struct {
	Name, Value string
}

// CPACK is a parameter's acknowledgement in S2F42.
type CPACK struct {
	Name string
	Ack  byte
}

// Command sends S2F41 and returns HCACK and the parameters' CPACKs.
func (h *Host) Command(ctx context.Context, rcmd string, params ...Param) (byte, []CPACK, error) {
	ps := make([]secs2.Item, 0, len(params))
	for _, p := range params {
		ps = append(ps, secs2.NewListItem(secs2.NewASCIIItem(p.Name), secs2.NewASCIIItem(p.Value)))
	}
	m, err := h.Send(ctx, 2, 41, secs2.NewListItem(secs2.NewASCIIItem(rcmd), secs2.NewListItem(ps...)))
	if err != nil {
		return 0, nil, err
	}
	c := secs2.NewCursor(Body(m))
	hc, err := c.At(0).Binary()
	if err != nil || len(hc) != 1 {
		return 0, nil, fmt.Errorf("gemhost: S2F42: %s", Body(m).ToSML())
	}
	var acks []CPACK
	n, _ := c.At(1).Size()
	for i := range n {
		name, _ := c.At(1, i, 0).ASCII()
		a, _ := c.At(1, i, 1).Binary()
		if len(a) == 1 {
			acks = append(acks, CPACK{Name: name, Ack: a[0]})
		}
	}
	return hc[0], acks, nil
}

// Variable is a status or data variable as the equipment names it.
type Variable struct {
	ID          uint32
	Name, Units string
}

// StatusNames lists the status variables (S1F11 with no SVID).
func (h *Host) StatusNames(ctx context.Context) ([]Variable, error) {
	return h.names(ctx, 11)
}

// DataNames lists the data variables (S1F21 with no VID).
func (h *Host) DataNames(ctx context.Context) ([]Variable, error) {
	return h.names(ctx, 21)
}

func (h *Host) names(ctx context.Context, f byte) ([]Variable, error) {
	m, err := h.Send(ctx, 1, f, secs2.NewListItem())
	if err != nil {
		return nil, err
	}
	c := secs2.NewCursor(Body(m))
	n, err := c.Size()
	if err != nil {
		return nil, err
	}
	out := make([]Variable, 0, n)
	for i := range n {
		id, err := c.At(i, 0).Uint()
		if err != nil {
			return nil, fmt.Errorf("gemhost: S1F%d: %s", f+1, Body(m).ToSML())
		}
		name, _ := c.At(i, 1).ASCII()
		units, _ := c.At(i, 2).ASCII()
		out = append(out, Variable{ID: uint32(id), Name: name, Units: units})
	}
	return out, nil
}

// Status reads status variables (S1F3); no id: every one, in the order
// of StatusNames.
func (h *Host) Status(ctx context.Context, ids ...uint32) ([]secs2.Item, error) {
	req := make([]secs2.Item, 0, len(ids))
	for _, id := range ids {
		req = append(req, secs2.NewUintItem(4, id))
	}
	m, err := h.Send(ctx, 1, 3, secs2.NewListItem(req...))
	if err != nil {
		return nil, err
	}
	items, err := Body(m).ToList()
	if err != nil {
		return nil, fmt.Errorf("gemhost: S1F4: %s", Body(m).ToSML())
	}
	return items, nil
}

// Event is one collection event as the host's reports carry it.
type Event struct {
	CEID   uint32
	Values map[uint32]secs2.Item // VID → value, from every linked report
}

// Setup enables the event reports and alarms: for every collection event
// (S1F23) it defines one report holding vids and the event's own data
// variables (S2F33), links it (S2F35), enables every event (S2F37) and
// every alarm (S5F3). Reports are numbered by their event's id. It first
// deletes every report the equipment had.
func (h *Host) Setup(ctx context.Context, vids ...uint32) (names map[uint32]string, err error) {
	m, err := h.Send(ctx, 1, 23, secs2.NewListItem())
	if err != nil {
		return nil, err
	}
	c := secs2.NewCursor(Body(m))
	n, err := c.Size()
	if err != nil {
		return nil, fmt.Errorf("gemhost: S1F24: %s", Body(m).ToSML())
	}
	names = map[uint32]string{}
	if code, err := ack(h.Send(ctx, 2, 33, secs2.NewListItem(secs2.NewUintItem(4, 1), secs2.NewListItem()))); err != nil || code != 0 {
		return nil, fmt.Errorf("gemhost: deleting the reports (S2F33): DRACK %d, %v", code, err)
	}
	var defs, links []secs2.Item
	reports := map[uint32][]uint32{}
	for i := range n {
		ceid, err := c.At(i, 0).Uint()
		if err != nil {
			return nil, fmt.Errorf("gemhost: S1F24: %s", Body(m).ToSML())
		}
		names[uint32(ceid)], _ = c.At(i, 1).ASCII()
		ids := append([]uint32(nil), vids...)
		k, _ := c.At(i, 2).Size()
		for j := range k {
			dv, _ := c.At(i, 2, j).Uint()
			ids = append(ids, uint32(dv))
		}
		if len(ids) == 0 {
			continue
		}
		reports[uint32(ceid)] = ids
		vitems := make([]secs2.Item, 0, len(ids))
		for _, v := range ids {
			vitems = append(vitems, secs2.NewUintItem(4, v))
		}
		defs = append(defs, secs2.NewListItem(secs2.NewUintItem(4, ceid), secs2.NewListItem(vitems...)))
		links = append(links, secs2.NewListItem(secs2.NewUintItem(4, ceid), secs2.NewListItem(secs2.NewUintItem(4, ceid))))
	}
	if len(defs) > 0 {
		if code, err := ack(h.Send(ctx, 2, 33, secs2.NewListItem(secs2.NewUintItem(4, 2), secs2.NewListItem(defs...)))); err != nil || code != 0 {
			return nil, fmt.Errorf("gemhost: define reports (S2F33): DRACK %d, %v", code, err)
		}
		if code, err := ack(h.Send(ctx, 2, 35, secs2.NewListItem(secs2.NewUintItem(4, 3), secs2.NewListItem(links...)))); err != nil || code != 0 {
			return nil, fmt.Errorf("gemhost: link reports (S2F35): LRACK %d, %v", code, err)
		}
	}
	if code, err := ack(h.Send(ctx, 2, 37, secs2.NewListItem(secs2.NewBooleanItem(true), secs2.NewListItem()))); err != nil || code != 0 {
		return nil, fmt.Errorf("gemhost: enable events (S2F37): ERACK %d, %v", code, err)
	}
	if code, err := ack(h.Send(ctx, 5, 3, secs2.NewListItem(secs2.NewBinaryItem(byte(0x80)), secs2.NewUintItem(4)))); err != nil || code != 0 {
		return nil, fmt.Errorf("gemhost: enable alarms (S5F3): ACKC5 %d, %v", code, err)
	}
	h.mu.Lock()
	h.reports = reports
	h.mu.Unlock()
	return names, nil
}

// ParseEvent reads an S6F11 with the reports Setup defined.
func (h *Host) ParseEvent(m *hsms.DataMessage) (Event, error) {
	c := secs2.NewCursor(Body(m))
	ceid, err := c.At(1).Uint()
	if err != nil || m.Stream() != 6 || m.Function() != 11 {
		return Event{}, fmt.Errorf("gemhost: not an event report: S%dF%d %s", m.Stream(), m.Function(), Body(m).ToSML())
	}
	ev := Event{CEID: uint32(ceid), Values: map[uint32]secs2.Item{}}
	h.mu.Lock()
	defer h.mu.Unlock()
	n, _ := c.At(2).Size()
	for i := range n {
		rid, err := c.At(2, i, 0).Uint()
		if err != nil {
			return ev, fmt.Errorf("gemhost: S6F11 report %d: %w", i, err)
		}
		vids := h.reports[uint32(rid)]
		k, _ := c.At(2, i, 1).Size()
		for j := range min(k, len(vids)) {
			v, err := c.At(2, i, 1, j).Item()
			if err != nil {
				return ev, err
			}
			ev.Values[vids[j]] = v
		}
	}
	return ev, nil
}

// Alarm is an S5F1.
type Alarm struct {
	Set      bool
	Category byte
	ID       uint32
	Text     string
}

// ParseAlarm reads an S5F1.
func ParseAlarm(m *hsms.DataMessage) (Alarm, error) {
	c := secs2.NewCursor(Body(m))
	alcd, err := c.At(0).Binary()
	if err != nil || len(alcd) != 1 || m.Stream() != 5 || m.Function() != 1 {
		return Alarm{}, fmt.Errorf("gemhost: not an alarm report: S%dF%d %s", m.Stream(), m.Function(), Body(m).ToSML())
	}
	id, err := c.At(1).Uint()
	if err != nil {
		return Alarm{}, fmt.Errorf("gemhost: S5F1 ALID: %w", err)
	}
	text, _ := c.At(2).ASCII()
	return Alarm{Set: alcd[0]&0x80 != 0, Category: alcd[0] & 0x7f, ID: uint32(id), Text: text}, nil
}

// quiet drops the HSMS layer's log: a host for people reports what
// matters itself.
type quiet struct{}

func (quiet) Debug(string, ...any)        {}
func (quiet) Info(string, ...any)         {}
func (quiet) Warn(string, ...any)         {}
func (quiet) Error(string, ...any)        {}
func (quiet) Fatal(string, ...any)        {}
func (q quiet) With(...any) logger.Logger { return q }
func (quiet) Level() logger.LogLevel      { return logger.ErrorLevel }
func (quiet) SetLevel(logger.LogLevel)    {}
