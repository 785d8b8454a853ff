// Package grbl drives an XY stage controlled by GRBL 1.1 firmware over a
// serial link (any io.ReadWriteCloser; in production a go.bug.st/serial port
// at 115200 8N1). It implements motion.Stage.
//
// # Protocol
//
// G-code lines are streamed with GRBL's character-counting protocol: the
// driver keeps the sum of len(line)+1 of lines sent but not yet answered by
// ok/error:N below the controller's 128-byte receive buffer, and pairs each
// reply with the oldest unanswered line. Real-time bytes ('?', '!', '~',
// 0x18) bypass the stream: they are written at once under a single write
// mutex that line writes hold only for one short write.
//
// One reader goroutine, started by Connect and ended by Close, parses every
// line the controller sends. Malformed or unexpected lines are passed to
// Config.Logf and skipped. A read error or end of file ends the reader and
// fails everything pending with an error wrapping motion.ErrLinkLost; a read
// returning (0, nil), which is how go.bug.st/serial reports a read timeout,
// is not an end of file.
//
// A line whose reply does not come while the controller is busy or not
// responding (an error wrapping motion.ErrTimeout) leaves the pairing of
// replies with lines in doubt: the driver then refuses further lines, also
// with motion.ErrTimeout, until a soft reset (Reset) clears the stream.
// Real-time commands keep working. A reply lost on a noisy link while the
// controller is idle is not such a case: see "Noise on the link".
//
// # Noise on the link
//
// Garbled lines are counted (Noise) and logged at most once per
// NoiseLogInterval (Config.Warnf); a garbled or missing status report costs
// one poll, a lost ok or error:N a few (noise.go has the rules). Only a
// controller that answers no status request twice in a row is not
// responding.
//
// # Waiting for motion
//
// MoveTo sends "G21 G90 G53 G1 X.. Y.. F..", then "G4 P0", whose ok GRBL
// sends only once the planner is empty. GRBL moves in whole steps of
// $100/$101, read at Connect (see Machine): MoveTo sends the step nearest
// the target and confirms the move against it. While waiting it polls '?'
// every PollInterval, so an alarm, a lost link or a mute controller (two
// status requests in a row unanswered within ReplyTimeout) ends the wait.
// It returns nil only after a status report requested after that ok says
// Idle at the step nearest the target (±1 µm for the rounding of the
// report). Cancelling its context writes '!' (feed hold) at once from a
// context.AfterFunc; the driver never resets by itself after a hold. GRBL
// executes no line while in Hold:0, so after a hold the caller resumes or
// resets (Hold, then Reset, is the controlled stop that keeps position).
//
// Home sends $H and waits up to HomingTimeout without polling, as GRBL
// ignores '?' (and '!') during homing. Cancelling a Home therefore sends a
// soft reset, the only way to stop a homing cycle (ALARM:6 follows).
//
// # Alarms
//
// ALARM:N lines, "[MSG:Reset to continue]", "[MSG:'$H'|'$X' to unlock]" and
// status reports saying Alarm latch an alarm (see Stage.Alarm). It fails a
// MoveTo or Home in progress with an *Alarm (errors.Is motion.ErrAlarm) and
// makes MoveTo refuse to start. The latch is cleared by an ok to $X or $H
// sent after the alarm, or by a soft reset after which the controller is
// not in alarm. After ALARM:1 and ALARM:2 GRBL 1.1h answers nothing, not
// even '?', until a soft reset; the driver then reports Status as Alarm from
// its last known position instead of waiting.
//
// # The controller's settings
//
// Connect reads the settings ($$) and build options ($I) the driver needs
// (Machine): steps per mm, travel, homing and status report settings. A
// controller reporting in inches ($13=1) is refused. $10=1 (report MPos)
// is GRBL's default; with WPos reports the driver converts using the last
// WCO the controller reported. $10=3 adds Bf:, with which a reply lost on
// a noisy link is recovered in two polls instead of ReplyTimeout.
package grbl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/waferd/waferd/motion"
)

// Protocol limits of GRBL 1.1.
const (
	// RxBufferSize is GRBL's serial receive buffer in bytes; the character
	// counting stream never has more than this many bytes unanswered.
	RxBufferSize = 128
	// MaxLineLen is the longest line GRBL accepts, without its newline.
	MaxLineLen = 79

	maxReplyLen = 256 // longer reply lines are discarded as noise
	eventBuffer = 64
)

// Real-time command bytes.
const (
	rtStatus    = '?'
	rtFeedHold  = '!'
	rtResume    = '~'
	rtSoftReset = 0x18
)

// Config tunes a Stage. Zero fields take the documented defaults.
type Config struct {
	// PollInterval is the status polling period while waiting for motion.
	// Default 100 ms (GRBL recommends 5–10 Hz).
	PollInterval time.Duration
	// ReplyTimeout bounds the wait for the ok/error of a non-motion line
	// (measured from when it becomes the oldest unanswered line), for a
	// status reply, for the banner after a soft reset, and how long the
	// controller may sit idle while a line stays unanswered. Default 2 s.
	ReplyTimeout time.Duration
	// ConnectTimeout is how long Connect waits for the banner before it
	// sends a soft reset to provoke one, and again after that. Default 2.5 s.
	ConnectTimeout time.Duration
	// HoldTimeout bounds Hold when its context has no deadline. Default 5 s.
	HoldTimeout time.Duration
	// HoldPollInterval is Hold's status polling period while the stage
	// decelerates: Hold returns at most this long (plus one status round
	// trip) after the controller reaches Hold:0. Default 5 ms, about the
	// time one status report takes on the wire at 115200 baud; a hold
	// lasts only as long as the deceleration, so the extra traffic is
	// brief.
	HoldPollInterval time.Duration
	// HomingTimeout bounds the homing cycle ($H). Default 60 s.
	HomingTimeout time.Duration
	// Logf, if set, receives diagnostics (a debug log): malformed or
	// unexpected lines, dropped events. It is called from the reader
	// goroutine and from callers' goroutines and must not block for long.
	Logf func(format string, args ...any)
	// Warnf, if set, receives what an operator should hear of: noise on
	// the link, at most once per NoiseLogInterval. Default: Logf. It is
	// called as Logf is.
	Warnf func(format string, args ...any)
	// NoiseLogInterval is the least time between two noise lines given to
	// Warnf. Default 1 min.
	NoiseLogInterval time.Duration
}

func (c Config) withDefaults() Config {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.PollInterval, 100*time.Millisecond)
	def(&c.ReplyTimeout, 2*time.Second)
	def(&c.ConnectTimeout, 2500*time.Millisecond)
	def(&c.HoldTimeout, 5*time.Second)
	def(&c.HoldPollInterval, 5*time.Millisecond)
	def(&c.HomingTimeout, 60*time.Second)
	def(&c.NoiseLogInterval, time.Minute)
	if c.Logf == nil {
		c.Logf = func(string, ...any) {}
	}
	if c.Warnf == nil {
		c.Warnf = c.Logf
	}
	return c
}

// EventKind says what an Event reports.
type EventKind int

// Event kinds.
const (
	EventBanner   EventKind = iota + 1 // the controller (re)started: Version
	EventAlarm                         // ALARM:N: Alarm
	EventMessage                       // [MSG:...]: Text
	EventFeedback                      // other [KEY:...] lines: Key, Text
	EventStartup                       // startup line executed (">line:ok"): Text, Code
)

var eventNames = [...]string{"", "banner", "alarm", "message", "feedback", "startup"}

func (k EventKind) String() string {
	if k > 0 && int(k) < len(eventNames) {
		return eventNames[k]
	}
	return fmt.Sprintf("EventKind(%d)", int(k))
}

// Event is an asynchronous message from the controller.
type Event struct {
	Kind    EventKind
	At      time.Time // when the line was received
	Line    string    // the line as received (trimmed)
	Version string    // EventBanner: firmware version, e.g. "1.1h"
	Alarm   *Alarm    // EventAlarm
	Key     string    // EventFeedback: tag such as "GC", "VER"
	Text    string    // EventMessage, EventFeedback: body; EventStartup: the startup line
	Code    int       // EventStartup: error code, 0 for ok
}

// Stage is a GRBL 1.1 controlled XY stage. Create it with New, start it with
// Connect, release it with Close. All methods are safe for concurrent use.
// MoveTo and Home are serialised with each other (a second call waits for
// the first, bounded by its own context); Status, Halt, Hold, Resume and
// Reset may be called while a MoveTo is in progress.
type Stage struct {
	port  io.ReadWriteCloser
	cfg   Config
	logf  func(string, ...any)
	warnf func(string, ...any)

	wmu  sync.Mutex    // serialises writes to port
	wseq atomic.Uint64 // number of writes so far; orders status requests after commands

	sendSem chan struct{} // capacity 1: one submitter at a time keeps wire order = queue order
	moveSem chan struct{} // capacity 1: serialises MoveTo and Home

	events     chan Event    // written only by the reader goroutine, closed when it ends
	readerDone chan struct{} // closed when the reader goroutine has returned
	done       chan struct{} // closed when the Stage is unusable (link lost or closed)
	portOnce   sync.Once
	portErr    error // result of port.Close, written once under portOnce
	closeOnce  sync.Once
	closeErr   error // result of Close, written once under closeOnce

	mu        sync.Mutex
	started   bool
	err       error // why done is closed
	queue     []*pending
	queued    int           // bytes of queue (len(line)+1 each)
	space     chan struct{} // nil until a waiter needs it (spaceLocked); closed when the queue shrinks or stream state changes
	resetting bool          // a soft reset was sent and its banner is awaited: no new lines
	desync    error         // non-nil: a reply was lost, lines are refused until a reset
	banner    chan struct{} // closed and replaced at each banner
	banners   uint64        // number of banners seen
	version   string
	alarm     *Alarm
	alarmSeq  uint64        // incremented whenever an alarm is latched
	alarmCh   chan struct{} // closed and replaced whenever an alarm is latched
	critical  bool          // ALARM:1/2: GRBL answers nothing until a soft reset
	// critMsg is non-nil between ALARM:1/2 and "[MSG:Reset to continue]"
	// (closed then): GRBL discards a soft reset received in that interval.
	critMsg   chan struct{}
	homing    int        // $H lines queued or running: '?' is ignored meanwhile
	statusReq *statusReq // the outstanding '?', if any
	last      motion.Status
	lastAt    time.Time
	wco       [3]motion.Distance
	haveWCO   bool
	dropped   int

	machine     Machine // what the settings say, once read (haveMachine)
	haveMachine bool
	// origin is where machine zero is in the controller's own coordinates
	// (SetOrigin); zero unless set. Positions the Stage reports and takes
	// are the controller's minus origin.
	origin motion.Point

	noise       NoiseStats
	noiseLogged time.Time // when noise was last given to Warnf
	noiseAtLog  int       // noise events counted by then
}

var _ motion.Stage = (*Stage)(nil)

// New returns a Stage that talks over port. It does not touch the port;
// Connect does. The Stage owns the port from now on and closes it in Close.
func New(port io.ReadWriteCloser, cfg Config) *Stage {
	cfg = cfg.withDefaults()
	s := &Stage{
		port:       port,
		cfg:        cfg,
		logf:       cfg.Logf,
		warnf:      cfg.Warnf,
		sendSem:    make(chan struct{}, 1),
		moveSem:    make(chan struct{}, 1),
		events:     make(chan Event, eventBuffer),
		readerDone: make(chan struct{}),
		done:       make(chan struct{}),
		banner:     make(chan struct{}),
		alarmCh:    make(chan struct{}),
	}
	return s
}

// Connect starts the reader goroutine and waits for the controller's banner
// ("Grbl 1.1x ['$' for help]"). If none arrives within ConnectTimeout it
// sends a soft reset (0x18) to provoke one and waits ConnectTimeout again.
// It then records the firmware version, asks for a status report to learn
// whether the controller is in alarm (see Alarm), and reads its settings
// (see Machine). Firmware other than 1.1, and a controller reporting in
// inches ($13=1), are refused. A controller that does not answer $$ now
// (held, door open: error:8) is not: Machine and MoveTo read the settings
// once it does. It blocks; cancelling ctx abandons the wait. Call it
// once; after a failed Connect, Close the Stage.
func (s *Stage) Connect(ctx context.Context) error {
	s.mu.Lock()
	if s.err != nil {
		err := s.err
		s.mu.Unlock()
		return fmt.Errorf("grbl: connect: %w", err)
	}
	if s.started {
		s.mu.Unlock()
		return errors.New("grbl: connect: already connected")
	}
	s.started = true
	var bch <-chan struct{} = s.banner
	s.mu.Unlock()
	go s.readLoop()

	if err := s.waitBanner(ctx, bch, s.cfg.ConnectTimeout); err != nil {
		if !errors.Is(err, motion.ErrTimeout) {
			return fmt.Errorf("grbl: connect: %w", err)
		}
		s.logf("grbl: no banner within %v; sending soft reset", s.cfg.ConnectTimeout)
		bch, err = s.beginReset(ctx)
		if err != nil {
			return fmt.Errorf("grbl: connect: %w", err)
		}
		if err := s.waitBanner(ctx, bch, s.cfg.ConnectTimeout); err != nil {
			s.resetFailed(bch, err)
			return fmt.Errorf("grbl: connect: no banner after soft reset: %w", err)
		}
	}
	if v := s.Version(); !strings.HasPrefix(v, "1.1") {
		return fmt.Errorf("grbl: connect: unsupported firmware version %q (want 1.1)", v)
	}
	if err := s.settle(ctx); err != nil {
		return fmt.Errorf("grbl: connect: %w", err)
	}
	if err := s.readMachine(ctx); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("grbl: connect: %w", err)
		}
		s.logf("grbl: connect: %v; read again when needed", err)
		return nil
	}
	if m, _ := s.Machine(ctx); m.ReportInches {
		return errors.New("grbl: connect: the controller reports positions in inches ($13=1); set $13=0")
	}
	return nil
}

// Close stops the reader goroutine, closes the port and fails every pending
// call with ErrClosed. It does not move the stage (no hold, no reset). It
// waits until the reader goroutine has returned, which requires the port's
// Close to unblock a pending Read (go.bug.st/serial, os.File and net.Conn
// do). It is idempotent and safe for concurrent use; later calls return the
// first call's result.
func (s *Stage) Close() error {
	s.closeOnce.Do(func() {
		s.shutdown(ErrClosed)
		err := s.closePort()
		s.mu.Lock()
		started := s.started
		s.started = true // a later Connect must not start a reader
		s.mu.Unlock()
		if started {
			<-s.readerDone
		} else {
			close(s.events)
			close(s.readerDone)
		}
		if err != nil {
			s.closeErr = fmt.Errorf("grbl: close: %w", err)
		}
	})
	return s.closeErr
}

// Done returns a channel closed when the Stage becomes unusable: the link
// was lost or Close was called. Err then says which.
func (s *Stage) Done() <-chan struct{} { return s.done }

// Err returns nil while the Stage is usable; after Done is closed, an error
// wrapping motion.ErrLinkLost (read or write failure, end of file) or
// ErrClosed.
func (s *Stage) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Events returns the channel of asynchronous controller messages: banners
// (the controller restarted), alarms, [MSG:...] and other feedback lines,
// startup-line results. The channel is buffered; events that find it full
// are dropped (and logged), so a slow or absent reader never stalls the
// link. It is closed when the reader goroutine ends (link lost or Close).
func (s *Stage) Events() <-chan Event { return s.events }

// Version returns the firmware version from the last banner ("1.1h"), or ""
// before the first banner.
func (s *Stage) Version() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.version
}

// Alarm returns the latched alarm, or nil when the controller is not known
// to be in alarm. See the package documentation for when it is cleared.
func (s *Stage) Alarm() *Alarm {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.alarm
}

// LastStatus returns the most recent status report received and when it
// arrived (zero time if none yet). It does not block or talk to the
// controller.
func (s *Stage) LastStatus() (motion.Status, time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last, s.lastAt
}

// linkErr returns why the Stage is unusable (nil if it is not).
func (s *Stage) linkErr() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err == nil {
		return ErrClosed
	}
	return s.err
}

// shutdown marks the Stage unusable with reason and fails everything pending.
// Only the first reason is kept.
func (s *Stage) shutdown(reason error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return
	}
	s.err = reason
	s.failAllLocked(reason)
	if r := s.statusReq; r != nil {
		s.finishStatusLocked(r, motion.Status{}, reason)
	}
	close(s.done)
}

// linkFailed handles a write error: the link is unusable, so close the port
// (which also ends the reader) and fail everything pending.
func (s *Stage) linkFailed(err error) error {
	lerr := fmt.Errorf("grbl: write: %w: %w", motion.ErrLinkLost, err)
	s.shutdown(lerr)
	_ = s.closePort()
	return s.linkErr()
}

func (s *Stage) closePort() error {
	s.portOnce.Do(func() { s.portErr = s.port.Close() })
	return s.portErr
}

// writeRT writes one real-time byte, bypassing the stream. It waits only for
// the write mutex. It returns the write's sequence number.
func (s *Stage) writeRT(b byte) (uint64, error) {
	return s.write([]byte{b}, nil)
}

// write writes p under the write mutex. seq, if not nil, receives the write's
// sequence number before the bytes go out.
func (s *Stage) write(p []byte, seq *atomic.Uint64) (uint64, error) {
	select {
	case <-s.done:
		return 0, s.linkErr()
	default:
	}
	s.wmu.Lock()
	return s.writeHeld(p, seq)
}

// writeHeld is write for a caller that holds the write mutex; it releases
// it.
func (s *Stage) writeHeld(p []byte, seq *atomic.Uint64) (uint64, error) {
	n := s.wseq.Add(1)
	if seq != nil {
		seq.Store(n)
	}
	_, err := s.port.Write(p)
	s.wmu.Unlock()
	if err != nil {
		return n, s.linkFailed(err)
	}
	return n, nil
}

// Halt writes '!' (feed hold) at once and returns: the controller
// decelerates to a controlled stop and keeps its position. It is also the
// abort hook of a cancelled move (context.AfterFunc(ctx, ...)). It does not
// wait for the stage to stop (Hold does) and waits on nothing but the write
// mutex, which line writes hold only for one short write. Safe from any
// goroutine, any number of times (motion.Stage.Halt).
func (s *Stage) Halt() error {
	if _, err := s.writeRT(rtFeedHold); err != nil {
		return fmt.Errorf("grbl: feed hold: %w", err)
	}
	return nil
}

// Abort writes soft reset (0x18) at once and returns without waiting for
// the controller to restart: the steppers stop dead, mid-move if need be
// (GRBL then raises ALARM:3, position lost). It is the first thing an
// e-stop does (motion.Stage.Abort). New lines wait from now on, and the
// next Reset waits for this reset's banner before it resets again, so no
// banner is taken for another's. It does nothing while a reset is already
// on its way, or after ALARM:1/2, when GRBL has stopped the steppers
// itself and discards a reset until it says "Reset to continue". Like
// Halt it waits on nothing but the write mutex; safe from any goroutine.
func (s *Stage) Abort() error {
	s.mu.Lock()
	if s.resetting || s.critMsg != nil {
		s.mu.Unlock()
		return nil
	}
	s.resetting = true
	bch := s.banner
	s.mu.Unlock()
	if _, err := s.writeRT(rtSoftReset); err != nil {
		s.resetFailed(bch, err)
		return fmt.Errorf("grbl: soft reset: %w", err)
	}
	return nil
}

// emit sends an event without blocking. Called only by the reader goroutine.
func (s *Stage) emit(ev Event) {
	select {
	case s.events <- ev:
	default:
		s.mu.Lock()
		s.dropped++
		n := s.dropped
		s.mu.Unlock()
		s.logf("grbl: event channel full; dropped %v event %q (%d dropped so far)", ev.Kind, ev.Line, n)
	}
}

// readLoop is the reader goroutine: it splits the input into lines and
// dispatches them until the port fails or is closed.
func (s *Stage) readLoop() {
	defer close(s.readerDone)
	defer close(s.events)
	buf := make([]byte, 256)
	line := make([]byte, 0, maxReplyLen)
	discarding := false
	for {
		n, err := s.port.Read(buf)
		for _, b := range buf[:n] {
			if b == '\n' || b == '\r' {
				if !discarding && len(line) > 0 {
					s.handleLine(string(line))
				}
				line, discarding = line[:0], false
				continue
			}
			if discarding {
				continue
			}
			if len(line) >= maxReplyLen {
				s.logf("grbl: discarding over-long line starting %q", line[:32])
				s.garbled(string(line[:32]) + "…")
				line, discarding = line[:0], true
				continue
			}
			line = append(line, b)
		}
		if err != nil {
			if errors.Is(s.Err(), ErrClosed) {
				return
			}
			s.shutdown(fmt.Errorf("grbl: read: %w: %w", motion.ErrLinkLost, err))
			_ = s.closePort()
			return
		}
		if n == 0 {
			// A serial read timeout: not an end of file. Stop only if the
			// Stage was closed behind a port whose Read never fails.
			select {
			case <-s.done:
				return
			default:
			}
		}
	}
}

// handleLine dispatches one received line. Called only by the reader.
func (s *Stage) handleLine(raw string) {
	s.mu.Lock()
	s.noise.Lines++
	s.mu.Unlock()
	r, err := ParseResponse(raw)
	if err != nil {
		s.logf("grbl: skipping malformed line: %v", err)
		s.garbled(raw)
		return
	}
	now := time.Now()
	switch r.Kind {
	case RespOK, RespError:
		s.onReply(r)
	case RespStatus:
		s.onStatus(r, now)
	case RespSetting:
		s.mu.Lock()
		collected := false
		if len(s.queue) > 0 && s.queue[0].settings != nil && r.Code >= 0 {
			s.queue[0].settings[r.Code] = r.Text
			collected = true
		}
		s.mu.Unlock()
		if !collected {
			s.logf("grbl: unexpected setting line %q", r.Line)
		}
	case RespAlarm:
		a := newAlarm(r.Code)
		s.mu.Lock()
		s.latchAlarmLocked(a)
		if (r.Code == 1 || r.Code == 2) && !s.critical {
			s.critical = true
			s.critMsg = make(chan struct{})
		}
		s.mu.Unlock()
		s.emit(Event{Kind: EventAlarm, At: now, Line: r.Line, Alarm: a})
	case RespBanner:
		s.onBanner(r)
		s.emit(Event{Kind: EventBanner, At: now, Line: r.Line, Version: r.Version})
	case RespMessage:
		s.onMessage(r.Text)
		s.emit(Event{Kind: EventMessage, At: now, Line: r.Line, Text: r.Text})
	case RespFeedback:
		s.mu.Lock()
		if len(s.queue) > 0 && s.queue[0].feedback != nil {
			s.queue[0].feedback[r.Key] = r.Text
		}
		s.mu.Unlock()
		s.emit(Event{Kind: EventFeedback, At: now, Line: r.Line, Key: r.Key, Text: r.Text})
	case RespStartup:
		if r.Code != 0 {
			s.logf("grbl: startup line %q failed: %v", r.Text, newError(r.Code, r.Text))
		}
		s.emit(Event{Kind: EventStartup, At: now, Line: r.Line, Text: r.Text, Code: r.Code})
	}
}

// garbled handles a line that is not a GRBL 1.1 message (see "Noise on the
// link"): it counts it, and if it was probably the report an outstanding
// status request waits for, finishes that request so that it is asked
// again at once.
func (s *Stage) garbled(raw string) {
	s.mu.Lock()
	msg := s.noteNoiseLocked(noiseGarbled, raw)
	if r := s.statusReq; r != nil && r.seq.Load() != 0 && looksLikeReport(raw) {
		s.noteNoiseLocked(noiseStatusLost, "garbled")
		s.finishStatusLocked(r, motion.Status{}, errGarbledReport)
	}
	s.mu.Unlock()
	if msg != "" {
		s.warnf("%s", msg)
	}
}

// onReply pairs ok/error:N with the oldest unanswered line.
func (s *Stage) onReply(r Response) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.queue) == 0 {
		s.mu.Unlock()
		s.logf("grbl: unexpected %q with no line pending; skipped", r.Line)
		s.mu.Lock()
		return
	}
	p := s.popLocked()
	if r.Kind == RespError {
		s.completeLocked(p, newError(r.Code, p.line))
		return
	}
	if p.clearsAlarm && s.alarmSeq == p.alarmSeq && s.alarm != nil {
		// Unlocked or homed, and no alarm arrived since the line was sent
		// (GRBL prints ALARM:N and still "ok" when homing fails).
		s.alarm, s.critical = nil, false
	}
	s.completeLocked(p, nil)
}

// onStatus records a status report and completes the pending status request.
func (s *Stage) onStatus(r Response, now time.Time) {
	st := r.Status
	s.mu.Lock()
	defer s.mu.Unlock()
	if st.HasWCO {
		s.wco, s.haveWCO = st.WCO, true
	}
	if r.workPos {
		if !s.haveWCO {
			s.mu.Unlock()
			s.logf("grbl: status report with WPos and no WCO known yet; taking WCO as 0 (set $10=1)")
			s.mu.Lock()
		}
		for i := range st.MPos {
			st.MPos[i] += s.wco[i]
		}
	}
	st.MPos[0] -= s.origin.X
	st.MPos[1] -= s.origin.Y
	s.last, s.lastAt = st, now
	if st.State == motion.StateAlarm && s.alarm == nil {
		s.latchAlarmLocked(newAlarm(0))
	}
	if req := s.statusReq; req != nil {
		s.finishStatusLocked(req, st, nil)
	}
}

// onBanner handles a (re)start of the controller: no pending line will ever
// be answered, and a pending '?' was discarded.
func (s *Stage) onBanner(r Response) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.version = r.Version
	s.failAllLocked(motion.ErrReset)
	if req := s.statusReq; req != nil {
		s.finishStatusLocked(req, motion.Status{}, fmt.Errorf("grbl: status: %w", motion.ErrReset))
	}
	s.resetting, s.desync, s.critical = false, nil, false
	s.endCritMsgLocked()
	s.haveWCO = false
	s.banners++
	close(s.banner)
	s.banner = make(chan struct{})
	s.wakeLocked()
}

// onMessage reacts to the [MSG:...] lines that change the alarm state.
func (s *Stage) onMessage(text string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case text == "Reset to continue":
		s.critical = true
		s.endCritMsgLocked()
		if s.alarm == nil {
			s.latchAlarmLocked(newAlarm(0))
		}
	case strings.Contains(text, "to unlock"): // '$H'|'$X' to unlock
		if s.alarm == nil {
			s.latchAlarmLocked(newAlarm(0))
		}
	}
}

func (s *Stage) endCritMsgLocked() {
	if s.critMsg != nil {
		close(s.critMsg)
		s.critMsg = nil
	}
}

func (s *Stage) latchAlarmLocked(a *Alarm) {
	s.alarm = a
	s.alarmSeq++
	close(s.alarmCh)
	s.alarmCh = make(chan struct{})
}

// wakeLocked wakes everyone waiting for stream space or state changes.
func (s *Stage) wakeLocked() {
	if s.space != nil {
		close(s.space)
		s.space = nil
	}
}

// spaceLocked returns the channel that the next wakeLocked closes.
func (s *Stage) spaceLocked() <-chan struct{} {
	if s.space == nil {
		s.space = make(chan struct{})
	}
	return s.space
}

// waitBanner waits until bch is closed (a banner arrived), for at most
// timeout.
func (s *Stage) waitBanner(ctx context.Context, bch <-chan struct{}, timeout time.Duration) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-bch:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-s.done:
		return s.linkErr()
	case <-t.C:
		return fmt.Errorf("no banner within %v: %w", timeout, motion.ErrTimeout)
	}
}

// beginReset stops new lines, writes 0x18 and returns the channel closed by
// the next banner. A reset already on its way (an Abort's, or another
// call's) is let finish first, at most ReplyTimeout (or until ctx ends):
// its banner must not be taken for this one's.
func (s *Stage) beginReset(ctx context.Context) (<-chan struct{}, error) {
	var bch, crit chan struct{}
	for {
		s.mu.Lock()
		if !s.resetting {
			s.resetting = true
			bch, crit = s.banner, s.critMsg
			s.mu.Unlock()
			break
		}
		prev := s.banner
		s.mu.Unlock()
		if err := s.waitBanner(ctx, prev, s.cfg.ReplyTimeout); err != nil {
			if errors.Is(err, motion.ErrTimeout) {
				s.resetFailed(prev, err) // and send one of our own
				continue
			}
			return nil, err
		}
	}
	if crit != nil {
		// After ALARM:1/2 GRBL pauses 500 ms, prints "[MSG:Reset to
		// continue]" and then discards any reset received so far: wait for
		// that message so that this reset is not lost.
		t := time.NewTimer(s.cfg.ReplyTimeout)
		select {
		case <-crit:
		case <-t.C:
		case <-s.done:
		}
		t.Stop()
	}
	if _, err := s.writeRT(rtSoftReset); err != nil {
		s.resetFailed(bch, err)
		return nil, err
	}
	return bch, nil
}

// resetFailed ends a reset whose banner never came: the controller's state
// is unknown, so lines stay refused (desync) until a banner arrives.
func (s *Stage) resetFailed(bch <-chan struct{}, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.banner != bch {
		return // the banner did arrive
	}
	s.resetting = false
	s.desync = fmt.Errorf("grbl: soft reset not confirmed (%v); reset again: %w", err, motion.ErrTimeout)
	s.wakeLocked()
}

// settle asks for a status report after a banner and reconciles the alarm
// latch with it: a controller in alarm latches one (code 0 if no ALARM:N was
// seen); one that is not clears it.
func (s *Stage) settle(ctx context.Context) error {
	st, err := s.freshStatus(ctx, s.wseq.Load())
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if st.State == motion.StateAlarm {
		if s.alarm == nil {
			s.latchAlarmLocked(newAlarm(0))
		}
	} else {
		s.alarm, s.critical = nil, false
	}
	return nil
}
