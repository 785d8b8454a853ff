// Package console is the field engineer's serial console: a line-oriented
// command interpreter (help, status, home, move, light, capture, run, stop,
// reset, runs, show, log, watch, selftest, stats, ...) served on a serial
// port, on the daemon's stdin/stdout, or on a pseudo-terminal of the
// simulated board.
//
// A session never blocks on the machine: commands run one at a time on a
// goroutine of their own while the input keeps being read, so that "stop"
// acts the moment it is typed; runs execute in the background and their
// progress is printed above the line being typed, which is then redrawn.
// Output goes through a bounded queue, so a stalled terminal can neither
// block the reader nor grow memory. Line editing works on a dumb terminal
// (see Editor). Several sessions can serve the same Machine at once.
package console

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/waferd/waferd/control"
	"github.com/waferd/waferd/internal/logging"
	"github.com/waferd/waferd/stop"
)

// Machine is what a console drives (*daemon.Daemon implements it; see
// package control).
type Machine = control.Machine

// Options configure a session.
type Options struct {
	// Name says where the console is ("stdio", "/dev/ttyGS0", "pty
	// /dev/pts/3"): in the greeting, the logs and the detail of its stops.
	Name    string
	Version string
	// Interactive is a terminal: echo, prompt, line editing, CRLF line
	// ends, and "stop" acting the moment it is typed (commands typed ahead
	// are discarded). Without it (a script on a pipe) lines run strictly
	// in order, nothing is echoed and output lines end in LF.
	Interactive bool
	// CtrlDEOF: Ctrl-D on an empty line ends the session (stdio on a
	// terminal).
	CtrlDEOF bool
	// Prompt (default "waferd> ").
	Prompt string
	// MaxLine is the longest accepted line (default DefaultMaxLine).
	MaxLine int
	// Log receives connection and error messages (nil: none).
	Log *logging.Log
	// OnEOF, if set, is called when the input has ended and the commands
	// read before have run; the session then keeps printing events (the
	// outcome of a run being stopped) until ctx ends. Without it the
	// session ends at once.
	OnEOF func()
	// LogSink, if set, prints log lines above the line being typed while
	// this session runs.
	LogSink *LogSink
	// Host, if set, is the factory host's interface (the gem command).
	Host control.HostLink
}

// Limits of a session.
const (
	// MaxQueued is how many lines may wait while a command runs.
	MaxQueued = 32
	// OutputBuffer bounds the output waiting for a slow terminal, in bytes;
	// beyond it output is dropped (and the drop reported).
	OutputBuffer = 64 << 10
	// ConfirmTimeout bounds the wait for a confirmation.
	ConfirmTimeout = 60 * time.Second
	// flushTimeout bounds the final flush of the output at the end of a
	// session.
	flushTimeout = time.Second
)

// ErrDisconnected wraps the read error that ended a session.
var ErrDisconnected = errors.New("console: disconnected")

// errKey ends a watch when a key is pressed.
var errKey = errors.New("key pressed")

type session struct {
	m    Machine
	o    Options
	port io.ReadWriteCloser
	out  *outQueue

	mu         sync.Mutex // guards ed, watching and confirming
	ed         Editor
	watching   bool
	confirming bool // the prompt is a question (confirm): the next line answers it

	lines chan string        // to the executor; closed by the reader when it ends
	flush chan chan struct{} // asks the event printer to print what it has

	fgMu     sync.Mutex
	fgCancel context.CancelCauseFunc // the command in progress
	fgName   string
}

// Serve runs one console session on port until ctx ends (nil), the input
// ends (io.EOF, after the commands already read have run) or the port fails
// (an error wrapping ErrDisconnected). It closes port before returning.
func Serve(ctx context.Context, port io.ReadWriteCloser, m Machine, o Options) error {
	if o.Prompt == "" {
		o.Prompt = "waferd> "
	}
	if o.Log == nil {
		o.Log = logging.Discard()
	}
	s := &session{m: m, o: o, port: port, out: newOutQueue(OutputBuffer), lines: make(chan string, MaxQueued), flush: make(chan chan struct{})}
	s.ed = Editor{Prompt: o.Prompt, Max: o.MaxLine, Echo: o.Interactive, CtrlDEOF: o.CtrlDEOF}

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		s.out.run(port)
	}()
	// Subscribe before the first command can start a run.
	events, unsubscribe := m.Subscribe()
	eventsDone := make(chan struct{})
	go func() {
		defer close(eventsDone)
		s.events(ctx, events)
	}()
	execDone := make(chan struct{})
	go func() {
		defer close(execDone)
		s.execute(ctx)
	}()
	if o.Interactive {
		s.print(fmt.Sprintf("waferd %s console on %s: type help for the commands, stop to stop", o.Version, o.Name))
	}
	if o.LogSink != nil {
		o.LogSink.attach(s)
	}
	readerDone := make(chan error, 1)
	go func() { readerDone <- s.read(ctx) }()

	var result error
	readerEnded := false
	select {
	case <-ctx.Done():
	case err := <-readerDone:
		readerEnded = true
		switch {
		case errors.Is(err, io.EOF):
			result = io.EOF
			// The commands already read run to their end (a script).
			select {
			case <-execDone:
			case <-ctx.Done():
			}
			if o.OnEOF != nil && ctx.Err() == nil {
				if o.Interactive {
					s.print("end of input")
				}
				o.OnEOF()
				<-ctx.Done()
			}
		case ctx.Err() == nil:
			result = fmt.Errorf("%w: %s: %w", ErrDisconnected, o.Name, err)
			cancel(result)
		}
	}
	cancel(nil)
	<-execDone
	<-eventsDone
	unsubscribe()
	if o.LogSink != nil {
		o.LogSink.detach(s)
	}
	s.out.close()
	flushed := waitFor(writerDone, flushTimeout)
	closeErr := port.Close()
	if !flushed && !waitFor(writerDone, flushTimeout) {
		// A write the port cannot finish (go.bug.st/serial does not
		// unblock a Write on Close): leave the goroutine, say so.
		o.Log.Errorf("console %s: output stuck, abandoning the writer", o.Name)
	}
	if !readerEnded {
		<-readerDone
	}
	if closeErr != nil && result == nil && ctx.Err() == nil {
		result = closeErr
	}
	return result
}

func waitFor(ch <-chan struct{}, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ch:
		return true
	case <-t.C:
		return false
	}
}

// read reads the port until it fails or ends, feeding the editor. It
// closes s.lines when it returns.
func (s *session) read(ctx context.Context) error {
	defer close(s.lines)
	buf := make([]byte, 512)
	zero := 0
	for {
		n, err := s.port.Read(buf)
		if n > 0 {
			zero = 0
			if !s.input(ctx, buf[:n]) {
				return io.EOF
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				// A last line without its line end still counts.
				s.dispatch(ctx, s.flushPending())
			}
			return err
		}
		if n == 0 {
			// A read timeout, which this package never sets: a port that
			// keeps returning nothing is gone.
			if zero++; zero > 1000 {
				return errors.New("the port returns no data")
			}
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
}

func (s *session) flushPending() Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ed.Pending() == "" && s.ed.over == 0 {
		return Event{}
	}
	ev := s.ed.Feed(cr)
	s.out.write(s.ed.Output())
	return ev
}

// input feeds bytes to the editor and dispatches what they complete. It
// returns false at an end of input typed on the terminal (Ctrl-D).
func (s *session) input(ctx context.Context, p []byte) bool {
	var evs []Event
	var echo []byte
	s.mu.Lock()
	for _, b := range p {
		if s.watching {
			// The first key ends a watch; a plain key is only that.
			echo = append(echo, s.endWatchLocked()...)
			if b == cr || b == lf || b == ctrlC || b == 'q' || b == ' ' {
				continue
			}
		}
		ev := s.ed.Feed(b)
		echo = append(echo, s.ed.Output()...)
		if ev.Kind == None {
			continue
		}
		if s.confirming {
			// The answer ends the question: the next line gets the
			// ordinary prompt, not the question again.
			s.ed.Prompt, s.confirming = s.o.Prompt, false
		}
		if ev.Kind != EndOfFile {
			echo = append(echo, s.ed.Draw()...)
		}
		evs = append(evs, ev)
	}
	s.mu.Unlock()
	s.out.write(echo)
	for _, ev := range evs {
		if ev.Kind == EndOfFile {
			return false
		}
		s.dispatch(ctx, ev)
	}
	return true
}

// dispatch acts on a completed line: stop at once on a terminal, anything
// else to the executor's queue.
func (s *session) dispatch(ctx context.Context, ev Event) {
	switch ev.Kind {
	case Interrupt:
		s.interrupt()
		return
	case TooLong:
		s.errorf("line too long (%d characters, the limit is %d): ignored; type it again, shorter", ev.Len, s.ed.max())
		return
	case Line:
	default:
		return
	}
	line := strings.TrimSpace(ev.Line)
	if line == "" {
		return
	}
	if s.o.Interactive && isStop(line) {
		s.stopNow()
		return
	}
	if s.o.Interactive {
		select {
		case s.lines <- line:
		default:
			s.errorf("%d commands are already waiting: %s dropped; wait for them, or type stop", MaxQueued, quote(line))
		}
		return
	}
	select {
	case s.lines <- line:
	case <-ctx.Done():
	}
}

// isStop reports whether line asks to stop: its first word is stop, in any
// case, whatever follows.
func isStop(line string) bool {
	f := strings.Fields(line)
	return len(f) > 0 && strings.EqualFold(f[0], "stop")
}

// interrupt (Ctrl-C) ends a command that only waits (watch, wait, a
// confirmation); it never stops motion: that is stop.
func (s *session) interrupt() {
	s.fgMu.Lock()
	defer s.fgMu.Unlock()
	switch s.fgName {
	case "watch", "wait", "reset":
		s.fgCancel(errors.New("interrupted (Ctrl-C)"))
	}
}

// stopNow is stop typed on a terminal: the machine stops (run and manual
// operations, through the daemon's one cancel path), the command in
// progress ends and the commands typed ahead are discarded.
func (s *session) stopNow() {
	busy := s.m.Busy()
	detail := "console " + s.o.Name
	s.m.Stop(stop.Operator, detail)
	s.fgMu.Lock()
	fg := s.fgName
	if s.fgCancel != nil {
		s.fgCancel(stop.New(stop.Operator, detail))
	}
	s.fgMu.Unlock()
	dropped := 0
	for {
		select {
		case _, ok := <-s.lines:
			if ok {
				dropped++
				continue
			}
		default:
		}
		break
	}
	s.print(stopMessage(busy, fg, dropped))
}

func stopMessage(busy, fg string, dropped int) string {
	var msg string
	switch {
	case strings.HasPrefix(busy, "run"):
		msg = "stop: stopping the " + busy + " safely (hold, reset, record)"
	case busy != "":
		msg = "stop: stopping " + busy
	case fg != "":
		msg = "stop: " + fg + " ended"
	default:
		msg = "stop: nothing to stop, the machine is idle"
	}
	if dropped > 0 {
		msg += fmt.Sprintf("; %d command(s) typed ahead discarded", dropped)
	}
	return msg
}

// execute runs queued lines one at a time until the queue is closed or ctx
// ends.
func (s *session) execute(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case line, ok := <-s.lines:
			if !ok {
				return
			}
			s.run(ctx, line)
		}
	}
}

func (s *session) run(ctx context.Context, line string) {
	cmd, err := Parse(line)
	if err != nil {
		s.errorf("%v", err)
		return
	}
	if cmd.Name == "" {
		return
	}
	fctx, cancel := context.WithCancelCause(ctx)
	s.fgMu.Lock()
	s.fgName, s.fgCancel = cmd.Name, cancel
	s.fgMu.Unlock()
	defer func() {
		s.fgMu.Lock()
		s.fgName, s.fgCancel = "", nil
		s.fgMu.Unlock()
		cancel(nil)
	}()
	handlers[cmd.Name](s, fctx, cmd)
}

// events prints what the machine reports, for every console. When ctx
// ends it still prints the events already delivered.
func (s *session) events(ctx context.Context, ch <-chan control.Event) {
	// This console's own stop is already acknowledged by the stop command.
	own := stop.New(stop.Operator, "console "+s.o.Name).Error()
	show := func(ev control.Event) {
		if ev.Kind == control.StopRequested && ev.Text == own {
			return
		}
		if line := formatEvent(ev); line != "" {
			s.print(line)
		}
	}
	drain := func() bool {
		for {
			select {
			case ev, ok := <-ch:
				if !ok {
					return false
				}
				show(ev)
			default:
				return true
			}
		}
	}
	for {
		select {
		case <-ctx.Done():
			drain()
			return
		case done := <-s.flush:
			ok := drain()
			close(done)
			if !ok {
				return
			}
		case ev, ok := <-ch:
			if !ok {
				return
			}
			show(ev)
		}
	}
}

// syncEvents returns once the events published so far are printed.
func (s *session) syncEvents(ctx context.Context) {
	done := make(chan struct{})
	select {
	case s.flush <- done:
	case <-ctx.Done():
		return
	}
	select {
	case <-done:
	case <-ctx.Done():
	}
}

// print writes lines above the line being typed, then redraws it.
func (s *session) print(lines ...string) {
	var b []byte
	s.mu.Lock()
	defer s.mu.Unlock()
	b = append(b, s.ed.Erase()...)
	for _, text := range lines {
		for l := range strings.SplitSeq(text, "\n") {
			b = append(b, sanitize(l)...)
			if s.o.Interactive {
				b = append(b, '\r')
			}
			b = append(b, '\n')
		}
	}
	b = append(b, s.ed.Draw()...)
	s.out.write(b)
}

func (s *session) printf(format string, args ...any) { s.print(fmt.Sprintf(format, args...)) }

// errorf prints one error line.
func (s *session) errorf(format string, args ...any) {
	s.print("error: " + oneLine(fmt.Sprintf(format, args...)))
}

// oneLine folds a (joined, multi-line) error onto one line.
func oneLine(s string) string {
	s = strings.ReplaceAll(s, "\n", "; ")
	return strings.Join(strings.Fields(s), " ")
}

// sanitize replaces control characters so that no output garbles the
// terminal.
func sanitize(s string) string {
	clean := true
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 && s[i] != '\t' || s[i] == 0x7f {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 && r != '\t' || r == 0x7f {
			return '?'
		}
		return r
	}, s)
}

// setPrompt replaces the prompt (a question) and redraws the line.
func (s *session) setPrompt(p string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.confirming = p != s.o.Prompt
	if s.ed.Prompt == p {
		return
	}
	e := s.ed.Erase()
	s.ed.Prompt = p
	s.out.write([]byte(e + s.ed.Draw()))
}

// startWatch shows line instead of the prompt until a key is pressed.
func (s *session) startWatch(line string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.ed.Erase()
	s.watching, s.ed.Hide, s.ed.Prompt = true, true, line
	s.out.write([]byte(e + s.ed.Draw()))
}

// updateWatch replaces the watch line; false when the watch has ended.
func (s *session) updateWatch(line string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.watching {
		return false
	}
	e := s.ed.Erase()
	s.ed.Prompt = line
	s.out.write([]byte(e + s.ed.Draw()))
	return true
}

// endWatch ends a watch from the command's side.
func (s *session) endWatch() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.watching {
		s.out.write(s.endWatchLocked())
	}
}

// endWatchLocked restores the prompt and cancels the watch; the line
// stays on the terminal. s.mu held.
func (s *session) endWatchLocked() []byte {
	s.watching = false
	last := s.ed.Prompt
	s.ed.Erase()
	s.ed.Hide, s.ed.Prompt = false, s.o.Prompt
	out := "\r" + last + "\r\n" + s.ed.Draw()
	s.fgMu.Lock()
	if s.fgName == "watch" && s.fgCancel != nil {
		s.fgCancel(errKey)
	}
	s.fgMu.Unlock()
	return []byte(out)
}

// outQueue holds output for the writer goroutine. Writers never block:
// beyond its limit output is dropped and the drop reported once there is
// room again.
type outQueue struct {
	limit int

	mu      sync.Mutex
	buf     []byte
	dropped int
	closed  bool
	wake    chan struct{}
}

func newOutQueue(limit int) *outQueue {
	return &outQueue{limit: limit, wake: make(chan struct{}, 1)}
}

func (q *outQueue) write(b []byte) {
	if len(b) == 0 {
		return
	}
	q.mu.Lock()
	switch {
	case q.closed:
	case len(q.buf)+len(b) > q.limit:
		q.dropped += len(b)
	default:
		q.buf = append(q.buf, b...)
	}
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

func (q *outQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// run writes the queued output to w until the queue is closed and empty,
// or a write fails.
func (q *outQueue) run(w io.Writer) {
	var chunk []byte
	for {
		q.mu.Lock()
		chunk = append(chunk[:0], q.buf...)
		q.buf = q.buf[:0]
		if q.dropped > 0 {
			chunk = fmt.Appendf(chunk, "\r\n[console: %d bytes of output dropped: the terminal did not keep up]\r\n", q.dropped)
			q.dropped = 0
		}
		closed := q.closed
		q.mu.Unlock()
		if len(chunk) > 0 {
			if err := writeAll(w, chunk); err != nil {
				q.mu.Lock()
				q.closed = true
				q.buf = nil
				q.mu.Unlock()
				return
			}
			continue
		}
		if closed {
			return
		}
		<-q.wake
	}
}

// LogSink is an io.Writer for a logger: while a session is attached (see
// Options.LogSink) it prints log lines above the line being typed, so that
// logs on the same terminal do not garble it; otherwise they go to
// Fallback. Safe for concurrent use.
type LogSink struct {
	Fallback io.Writer

	mu sync.Mutex
	s  *session
}

func (l *LogSink) attach(s *session) {
	l.mu.Lock()
	l.s = s
	l.mu.Unlock()
}

func (l *LogSink) detach(s *session) {
	l.mu.Lock()
	if l.s == s {
		l.s = nil
	}
	l.mu.Unlock()
}

func (l *LogSink) Write(p []byte) (int, error) {
	l.mu.Lock()
	s := l.s
	l.mu.Unlock()
	if s == nil {
		if l.Fallback == nil {
			return len(p), nil
		}
		return l.Fallback.Write(p)
	}
	s.print(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// writeAll writes b whole. go.bug.st/serial writes with a bare write(2):
// a signal (the Go runtime's preemption) interrupts a write blocked on a
// full line with EINTR, and a write may be partial; both are retried.
func writeAll(w io.Writer, b []byte) error {
	for len(b) > 0 {
		n, err := w.Write(b)
		b = b[max(n, 0):]
		if err != nil && !errors.Is(err, syscall.EINTR) {
			return err
		}
	}
	return nil
}
