package gem

import (
	"context"

	"github.com/arloliu/go-secs/v2/hsms"
	"github.com/arloliu/go-secs/v2/secs2"
)

// Receiving: every message the host sends arrives on the HSMS layer's
// receive goroutine (onMessage), which must never block. Checks that need
// nothing but the header happen there (S9F11, S9F3, S9F5); a host's STOP
// or ABORT is carried out there too, the moment it is read, as the
// console's stop is the moment its line is entered. Every other message
// goes, in order, to the worker goroutine, which may take its time (a
// status asks the stage; a recipe is written and synced). A START that a
// STOP or ABORT overtook this way is refused.

// inbound is a message for the worker.
type inbound struct {
	msg     *hsms.DataMessage
	session uint64 // the session it came in on
	stopSeq uint64 // the host's STOPs and ABORTs before it
}

// route is how one primary message is handled.
type route struct {
	name string
	// comm: answered while not communicating (only S1F13); offline:
	// answered while the control state is offline (S1F13, S1F17).
	// Anything else is aborted (SxF0) then, as E30 says.
	comm, offline bool
	do            func(e *Equipment, ctx context.Context, in inbound, body secs2.Item) (secs2.Item, error)
}

// routes are the primaries the equipment answers, by stream and function.
var routes = map[[2]byte]route{
	{1, 1}:  {name: "are you there", do: (*Equipment).s1f1},
	{1, 3}:  {name: "selected status request", do: (*Equipment).s1f3},
	{1, 11}: {name: "status variable namelist request", do: (*Equipment).s1f11},
	{1, 13}: {name: "establish communications request", comm: true, offline: true, do: (*Equipment).s1f13},
	{1, 15}: {name: "request offline", do: (*Equipment).s1f15},
	{1, 17}: {name: "request online", offline: true, do: (*Equipment).s1f17},
	{1, 21}: {name: "data variable namelist request", do: (*Equipment).s1f21},
	{1, 23}: {name: "collection event namelist request", do: (*Equipment).s1f23},
	{2, 17}: {name: "date and time request", do: (*Equipment).s2f17},
	{2, 31}: {name: "date and time set request", do: (*Equipment).s2f31},
	{2, 33}: {name: "define report", do: (*Equipment).s2f33},
	{2, 35}: {name: "link event report", do: (*Equipment).s2f35},
	{2, 37}: {name: "enable/disable event report", do: (*Equipment).s2f37},
	{2, 41}: {name: "host command send", do: (*Equipment).s2f41},
	{5, 3}:  {name: "enable/disable alarm send", do: (*Equipment).s5f3},
	{5, 5}:  {name: "list alarms request", do: (*Equipment).s5f5},
	{5, 7}:  {name: "list enabled alarms request", do: (*Equipment).s5f7},
	{7, 3}:  {name: "process program send", do: (*Equipment).s7f3},
	{7, 5}:  {name: "process program request", do: (*Equipment).s7f5},
	{7, 19}: {name: "current process program dir request", do: (*Equipment).s7f19},
	{10, 3}: {name: "terminal display, single", do: (*Equipment).s10f3},
}

// knownStream reports whether any route is on stream s.
func knownStream(s byte) bool {
	for k := range routes {
		if k[0] == s {
			return true
		}
	}
	return false
}

// onMessage receives every data message (on the receive goroutine).
func (e *Equipment) onMessage(msg *hsms.DataMessage, _ hsms.SECS2Endpoint) {
	s, f := msg.Stream(), msg.Function()
	switch {
	case !msg.IsPrimary():
		e.log.Infof("ignored a reply that answers nothing of ours: S%dF%d", s, f)
		return
	case s == 9:
		e.log.Warnf("host reports an error: %s", sml(msg))
		return
	case msg.BodyLen() > maxBody:
		e.log.Warnf("S%dF%d: %d bytes, more than the %d handled: answered S9F11 (data too long)", s, f, msg.BodyLen(), maxBody)
		e.stream9(msg, 11)
		return
	case !knownStream(s):
		e.log.Warnf("S%dF%d: stream %d not supported: answered S9F3", s, f, s)
		e.stream9(msg, 3)
		return
	}
	if _, ok := routes[[2]byte{s, f}]; !ok {
		e.log.Warnf("S%dF%d: function not supported: answered S9F5", s, f)
		e.stream9(msg, 5)
		return
	}
	e.mu.Lock()
	in := inbound{msg: msg, session: e.session, stopSeq: e.stopSeq}
	e.mu.Unlock()
	if isStopCommand(msg) {
		e.dispatch(context.Background(), in)
		return
	}
	select {
	case e.work <- in:
	default:
		e.log.Warnf("S%dF%d: %d messages already wait: aborted (S%dF0)", s, f, workQueue, s)
		e.abort(msg)
	}
}

// onUndecodable answers a message whose body is not SECS-II (on the
// receive goroutine).
func (e *Equipment) onUndecodable(msg *hsms.DataMessage, err error, _ hsms.SECS2Endpoint) {
	e.log.Warnf("S%dF%d: body does not decode (%v): answered S9F7 (illegal data)", msg.Stream(), msg.Function(), err)
	e.stream9(msg, 7)
}

// worker handles the queued messages in order until ctx ends.
func (e *Equipment) worker(ctx context.Context) {
	for {
		select {
		case in := <-e.work:
			e.mu.Lock()
			stale := in.session != e.session
			e.mu.Unlock()
			if stale {
				continue // its session is gone: so is the host waiting for the reply
			}
			e.dispatch(ctx, in)
		case <-ctx.Done():
			return
		}
	}
}

// dispatch handles one primary: the communication and control state
// filters of E30, the handler, and its reply (or S9F7, or SxF0).
func (e *Equipment) dispatch(ctx context.Context, in inbound) {
	msg := in.msg
	r := routes[[2]byte{msg.Stream(), msg.Function()}]
	e.mu.Lock()
	comm, ctl := e.comm, e.ctl
	e.mu.Unlock()
	switch {
	case comm != CommCommunicating && !r.comm:
		e.log.Infof("S%dF%d before communication is established (S1F13): aborted", msg.Stream(), msg.Function())
		e.abort(msg)
		return
	case !ctl.Online() && !r.offline:
		e.log.Infof("S%dF%d while %s: aborted", msg.Stream(), msg.Function(), ctl)
		e.abort(msg)
		return
	}
	body, err := msg.Item()
	if err != nil { // onUndecodable has answered it
		return
	}
	reply, err := r.do(e, ctx, in, body)
	switch {
	case isIllegal(err):
		e.log.Warnf("S%dF%d %s: %v: answered S9F7", msg.Stream(), msg.Function(), r.name, err)
		e.stream9(msg, 7)
		return
	case err != nil:
		e.log.Errorf("S%dF%d %s: %v", msg.Stream(), msg.Function(), r.name, err)
		e.abort(msg)
		return
	}
	if msg.WaitBit() && reply != nil {
		e.reply(msg, reply)
	}
}

// reply sends the reply to msg, bounded by T8 (a host that does not read
// loses its session; it never holds us up).
func (e *Equipment) reply(msg *hsms.DataMessage, body secs2.Item) {
	ctx, cancel := context.WithTimeout(context.Background(), e.cfg.T8)
	defer cancel()
	if err := e.conn.ReplyDataMessage(ctx, msg, body); err != nil {
		e.log.Infof("reply to S%dF%d: %v", msg.Stream(), msg.Function(), err)
	}
}

// abort answers msg with SxF0 (E5: the transaction is aborted), if it
// wants a reply.
func (e *Equipment) abort(msg *hsms.DataMessage) {
	if !msg.WaitBit() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), e.cfg.T8)
	defer cancel()
	if err := hsms.ReplyAbort(ctx, e.conn, msg); err != nil {
		e.log.Infof("S%dF0: %v", msg.Stream(), err)
	}
}

// stream9 sends S9F<f> about msg: its body is msg's 10-byte header (MHEAD).
func (e *Equipment) stream9(msg *hsms.DataMessage, f byte) {
	ctx, cancel := context.WithTimeout(context.Background(), e.cfg.T8)
	defer cancel()
	h := msg.HeaderBytes()
	if err := e.conn.SendDataMessageAsync(ctx, 9, f, false, secs2.NewBinaryItem(h[:])); err != nil {
		e.log.Infof("S9F%d: %v", f, err)
	}
}

// isStopCommand reports whether msg is an S2F41 STOP or ABORT.
func isStopCommand(msg *hsms.DataMessage) bool {
	if msg.Stream() != 2 || msg.Function() != 41 {
		return false
	}
	rcmd, err := secs2.NewCursor(mustItem(msg)).At(0).ASCII()
	return err == nil && (rcmd == "STOP" || rcmd == "ABORT")
}
