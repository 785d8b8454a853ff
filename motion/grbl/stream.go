package grbl

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/waferd/waferd/motion"
)

// pending is a line sent to the controller and not yet answered. Records
// are reused (Stage.pendings): one goes back to the free list once it has
// left the queue (answered or failed) and the caller that submitted it has
// released it, whichever comes last. Its channels are signalled, never
// closed, so that they can be reused: each receives at most one value per
// use, and only the submitter receives from them.
type pending struct {
	buf         []byte        // the line and its newline, as written
	n           int           // bytes it occupies in GRBL's receive buffer: len(buf)
	head        chan struct{} // capacity 1: a value when it becomes the oldest unanswered line (or completes)
	done        chan struct{} // capacity 1: a value when answered or failed; err then holds the result
	alarmSeq    uint64        // Stage.alarmSeq when it was queued
	homing      bool          // a $H line: '?' is ignored while it runs
	clearsAlarm bool          // $X or $H...: its ok clears the alarm latch

	// Guarded by Stage.mu.
	headSent bool
	answered bool
	err      error
	settings map[int]string // non-nil: collect "$N=value" lines ($$)
	inQueue  bool           // in Stage.queue
	held     bool           // not yet released by its submitter
}

// text returns the line without its newline, for messages.
func (p *pending) text() string { return string(p.buf[:len(p.buf)-1]) }

// lineSpec describes a line to submit: line, or raw if it is not nil.
type lineSpec struct {
	line    string
	raw     []byte // the line in a buffer of the submitter's, read until submit returns
	collect bool   // collect $N=value lines until its ok
	homing  bool
}

// check trims and validates the line (see checkLine).
func (ls *lineSpec) check() error {
	var err error
	if ls.raw != nil {
		ls.raw, err = checkLineBytes(ls.raw)
		return err
	}
	ls.line, err = checkLine(ls.line)
	return err
}

// statusReq is the one outstanding '?' that concurrent status callers share
// (joinStatus). Requests are reused (Stage.spareReq) once finished and left
// by every caller that joined.
type statusReq struct {
	seq   atomic.Uint64 // write sequence number of its '?' (0 until written)
	start time.Time

	// Guarded by Stage.mu.
	finished bool
	st       motion.Status
	err      error
	waiters  []chan struct{} // one per caller that joined and has not left: a value when finished
}

// Wait modes for await.
type waitMode int

const (
	// waitPlain waits for ctx, the link, and the awaited channel only.
	waitPlain waitMode = iota
	// waitStrict adds a fixed timeout (non-motion replies, homing).
	waitStrict
	// waitMotion is bounded by ctx only, but polls '?' every PollInterval:
	// it fails with ErrTimeout if a poll goes unanswered for ReplyTimeout
	// (mute controller), or if the controller stays idle for ReplyTimeout
	// (+ timeout, for dwells) while the awaited reply does not come (lost
	// reply).
	waitMotion
)

type waitSpec struct {
	mode       waitMode
	timeout    time.Duration // waitStrict: the limit; waitMotion: extra idle allowance
	watchAlarm bool          // fail with the *Alarm once an alarm newer than alarmBase latches
	alarmBase  uint64
}

// checkLine validates a line before it is sent: at most MaxLineLen
// characters after stripping, printable ASCII, no real-time command
// characters (GRBL would act on them immediately instead of queueing them).
func checkLine(line string) (string, error) {
	l := strings.TrimSpace(line)
	if err := lineError(l); err != nil {
		return "", err
	}
	return l, nil
}

// checkLineBytes is checkLine for a line in a buffer; the result is a
// sub-slice of line.
func checkLineBytes(line []byte) ([]byte, error) {
	l := bytes.TrimSpace(line)
	if err := lineError(l); err != nil {
		return nil, err
	}
	return l, nil
}

func lineError[T string | []byte](l T) error {
	if len(l) > MaxLineLen {
		return fmt.Errorf("grbl: line %q: %d characters, GRBL accepts at most %d: %w", string(l), len(l), MaxLineLen, motion.ErrRejected)
	}
	for i := 0; i < len(l); i++ {
		c := l[i]
		if c == rtStatus || c == rtFeedHold || c == rtResume || (c < 0x20 && c != '\t') || c >= 0x7f {
			return fmt.Errorf("grbl: line %q: contains control or real-time character %q: %w", string(l), c, motion.ErrRejected)
		}
	}
	return nil
}

// clearsAlarm reports whether l is $X or starts with $H (GRBL upcases
// lines): the lines whose ok ends an alarm lock.
func clearsAlarm(l []byte) bool {
	if len(l) < 2 || l[0] != '$' {
		return false
	}
	switch l[1] {
	case 'X', 'x':
		return len(l) == 2
	case 'H', 'h':
		return true
	}
	return false
}

// acquire takes a capacity-1 semaphore, bounded by ctx and the link.
func (s *Stage) acquire(ctx context.Context, sem chan struct{}) error {
	select {
	case sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-s.done:
		return s.linkErr()
	}
}

// submit queues and writes lines in order through the character-counting
// stream, waiting for receive-buffer space as needed. It appends the
// pending entries of the lines written (possibly fewer than asked for, with
// an error) to out and returns it; the caller must pass them to release
// once it no longer needs them.
func (s *Stage) submit(ctx context.Context, out []*pending, specs ...lineSpec) ([]*pending, error) {
	for i := range specs {
		if err := specs[i].check(); err != nil {
			return out, err
		}
	}
	if err := s.acquire(ctx, s.sendSem); err != nil {
		return out, err
	}
	defer func() { <-s.sendSem }()

	for i := range specs {
		p := s.newPending(&specs[i])
		for {
			// The write mutex is held from the decision to queue the line
			// until it is written. A soft reset stops new lines
			// (resetting) before it writes 0x18 under that mutex, so it
			// either finds the line on the wire before it or keeps it
			// out of the queue: a line that a reset fails is never
			// written after the reset, where it would run on the
			// restarted controller and its ok answer another line.
			s.wmu.Lock()
			s.mu.Lock()
			if err := cmp.Or(s.err, s.desync); err != nil { // the link failed, or lost count
				s.mu.Unlock()
				s.wmu.Unlock()
				s.release(p)
				return out, err
			}
			if !s.resetting && s.queued+p.n <= RxBufferSize {
				p.alarmSeq = s.alarmSeq
				s.enqueueLocked(p)
				s.mu.Unlock()
				if testHookQueued != nil {
					testHookQueued()
				}
				break
			}
			space, resetting := s.spaceLocked(), s.resetting
			s.mu.Unlock()
			s.wmu.Unlock()
			w := waitSpec{mode: waitMotion}
			if resetting {
				// Reset (or Connect) ends this state with a banner or a
				// timeout of its own, both of which close space.
				w = waitSpec{mode: waitPlain}
			}
			if err := s.await(ctx, space, w); err != nil {
				s.release(p)
				if errors.Is(err, motion.ErrTimeout) {
					s.markDesync(err)
				}
				return out, fmt.Errorf("waiting for receive buffer space: %w", err)
			}
		}
		if _, err := s.writeHeld(p.buf, nil); err != nil {
			s.release(p)
			return out, err
		}
		out = append(out, p)
	}
	return out, nil
}

// testHookQueued, if not nil, runs in submit between queueing a line and
// writing it (the write mutex held). Tests only: it lets them start a reset
// in that gap.
var testHookQueued func()

// newPending returns a pending entry for ls, held by the caller, from the
// free list when it has one.
func (s *Stage) newPending(ls *lineSpec) *pending {
	p, ok := s.pendings.get()
	if !ok {
		p = &pending{head: make(chan struct{}, 1), done: make(chan struct{}, 1)}
	}
	p.buf = append(append(append(p.buf[:0], ls.line...), ls.raw...), '\n')
	p.n = len(p.buf)
	p.homing = ls.homing
	p.clearsAlarm = clearsAlarm(p.buf[:p.n-1])
	if ls.collect {
		p.settings = map[int]string{}
	}
	p.held = true
	return p
}

// release gives up the submitter's claim on p: once it has also left the
// queue, p is reused. Neither p nor anything read from it without a copy
// may be used afterwards.
func (s *Stage) release(p *pending) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p.held = false
	if !p.inQueue {
		s.recycleLocked(p)
	}
}

// releaseAll releases every entry of ps.
func (s *Stage) releaseAll(ps []*pending) {
	for _, p := range ps {
		s.release(p)
	}
}

func (s *Stage) recycleLocked(p *pending) {
	select {
	case <-p.head:
	default:
	}
	select {
	case <-p.done:
	default:
	}
	p.headSent, p.answered, p.err, p.settings = false, false, nil, nil
	s.pendings.put(p)
}

// result returns p's result and whether it has one yet.
func (s *Stage) result(p *pending) (error, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return p.err, p.answered
}

func (s *Stage) enqueueLocked(p *pending) {
	p.inQueue = true
	if len(s.queue) == 0 {
		signalHeadLocked(p)
	}
	s.queue = append(s.queue, p)
	s.queued += p.n
	if p.homing {
		s.homing++
	}
}

// signalHeadLocked tells p's submitter that p is the oldest unanswered
// line (or complete), once.
func signalHeadLocked(p *pending) {
	if !p.headSent {
		p.headSent = true
		signal(p.head)
	}
}

// signal puts a value in c, a channel of capacity 1 that receives at most
// one value per use and is drained before reuse: the send never has to
// wait, and must not, as it happens under Stage.mu.
func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// popLocked removes the oldest unanswered line. The queue keeps its
// backing array: it never holds more than RxBufferSize/2 lines.
func (s *Stage) popLocked() *pending {
	p := s.queue[0]
	n := copy(s.queue, s.queue[1:])
	s.queue[n] = nil
	s.queue = s.queue[:n]
	s.queued -= p.n
	if len(s.queue) > 0 {
		signalHeadLocked(s.queue[0])
	}
	s.wakeLocked()
	return p
}

// completeLocked records the result of a line that has left the queue. p
// may be reused as soon as it returns.
func (s *Stage) completeLocked(p *pending, err error) {
	p.err = err
	signalHeadLocked(p)
	p.answered = true
	signal(p.done)
	if p.homing {
		s.homing--
	}
	p.inQueue = false
	if !p.held {
		s.recycleLocked(p)
	}
}

// failAllLocked fails every queued line with an error wrapping reason.
func (s *Stage) failAllLocked(reason error) {
	for i, p := range s.queue {
		s.queue[i] = nil
		s.completeLocked(p, fmt.Errorf("grbl: line %q not answered: %w", p.text(), reason))
	}
	s.queue, s.queued = s.queue[:0], 0
	s.wakeLocked()
}

// markDesync records that a reply was lost or is overdue: pairing replies
// with lines is no longer trustworthy, so lines are refused until a soft
// reset (banner) clears the stream.
func (s *Stage) markDesync(cause error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.desync == nil && s.err == nil {
		s.desync = fmt.Errorf("grbl: stream out of step after an unanswered line (%v); soft reset required: %w", cause, motion.ErrTimeout)
		s.wakeLocked()
	}
}

// awaitReply waits for the reply to p. For strict waits the timeout runs
// from when p becomes the oldest unanswered line: GRBL answers a line only
// after every line before it, which for motion lines can take long.
func (s *Stage) awaitReply(ctx context.Context, p *pending, w waitSpec) error {
	if w.mode == waitStrict {
		ahead := w
		ahead.mode, ahead.timeout = waitMotion, 0
		if err := s.await(ctx, p.head, ahead); err != nil {
			return s.replyWaitFailed(p, err)
		}
	}
	if err := s.await(ctx, p.done, w); err != nil {
		return s.replyWaitFailed(p, err)
	}
	// Received from done: the reader's writes to p happened before.
	if w.watchAlarm {
		// An alarm that arrived with or before the reply wins: GRBL prints
		// ALARM:N and still "ok" when homing fails.
		s.mu.Lock()
		a, seq := s.alarm, s.alarmSeq
		s.mu.Unlock()
		if a != nil && seq > w.alarmBase {
			return a
		}
	}
	return p.err
}

func (s *Stage) replyWaitFailed(p *pending, err error) error {
	var a *Alarm
	if !errors.As(err, &a) {
		if perr, ok := s.result(p); ok { // answered after all
			return perr
		}
	}
	if errors.Is(err, motion.ErrTimeout) {
		s.markDesync(err)
		return fmt.Errorf("line %q: %w", p.text(), err)
	}
	return err
}

// await waits until ready is closed or receives a value, according to w.
// It returns nil, or an error: the context's cause, the link error, an
// *Alarm, or one wrapping motion.ErrTimeout.
func (s *Stage) await(ctx context.Context, ready <-chan struct{}, w waitSpec) error {
	var strictC <-chan time.Time
	if w.mode == waitStrict {
		t := s.timer(w.timeout)
		defer s.putTimer(t)
		strictC = t.C
	}
	var tickC <-chan time.Time
	if w.mode == waitMotion {
		tk := s.ticker(s.cfg.PollInterval)
		defer s.putTicker(tk)
		tickC = tk.C
	}
	var (
		req      *statusReq
		reqSig   chan struct{} // receives a value when req is finished
		reqTimer *time.Timer
		reqLate  <-chan time.Time
		idleFrom time.Time
	)
	defer func() {
		if req != nil {
			s.leaveStatus(req, reqSig)
		}
		if reqTimer != nil {
			s.putTimer(reqTimer)
		}
	}()
	for {
		s.mu.Lock()
		alarm, seq, critical, alarmCh, homing := s.alarm, s.alarmSeq, s.critical, s.alarmCh, s.homing > 0
		s.mu.Unlock()
		// After ALARM:1/2 GRBL answers nothing until a reset: waiting on is futile.
		if alarm != nil && (critical || (w.watchAlarm && seq > w.alarmBase)) {
			return alarm
		}
		select {
		case <-ready:
			return nil
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-s.done:
			return s.linkErr()
		case <-alarmCh:
		case <-strictC:
			return fmt.Errorf("no reply within %v: %w", w.timeout, motion.ErrTimeout)
		case <-tickC:
			if req == nil && !homing {
				req, reqSig = s.joinStatus()
				d := time.Until(req.start.Add(s.cfg.ReplyTimeout))
				if reqTimer == nil {
					reqTimer = s.timer(d)
				} else {
					reqTimer.Reset(d)
				}
				reqLate = reqTimer.C
			}
		case <-reqLate:
			reqLate = nil
			s.finishStatus(req, motion.Status{}, s.statusTimeout())
		case <-reqSig:
			st, err := req.st, req.err
			s.leaveStatus(req, reqSig)
			req, reqSig, reqLate = nil, nil, nil
			reqTimer.Stop()
			if err != nil {
				if errors.Is(err, motion.ErrTimeout) {
					return err
				}
				continue // a reset discarded the query: ask again at the next tick
			}
			if busy(st) {
				idleFrom = time.Time{}
				continue
			}
			now := time.Now()
			if idleFrom.IsZero() {
				idleFrom = now
			} else if d := now.Sub(idleFrom); d > s.cfg.ReplyTimeout+w.timeout {
				return fmt.Errorf("controller %v for %v with the reply still missing: %w", st.State, d.Round(time.Millisecond), motion.ErrTimeout)
			}
		}
	}
}

// busy reports whether the controller may legitimately hold back replies:
// moving, jogging, homing, or suspended in a hold or door state.
func busy(st motion.Status) bool {
	switch st.State {
	case motion.StateRun, motion.StateJog, motion.StateHold, motion.StateDoor, motion.StateHome:
		return true
	}
	return false
}

func (s *Stage) statusTimeout() error {
	return fmt.Errorf("grbl: no status report within %v: %w", s.cfg.ReplyTimeout, motion.ErrTimeout)
}

// joinStatus returns the outstanding status request, or writes '?' and
// returns a new one, with a channel that receives a value when the request
// is finished; the request's results may be read after that. Concurrent
// callers share one '?': GRBL ignores a second '?' that arrives before the
// first report is out. Every call must be followed by leaveStatus.
func (s *Stage) joinStatus() (*statusReq, chan struct{}) {
	sig, ok := s.signals.get()
	if !ok {
		sig = make(chan struct{}, 1)
	}
	s.mu.Lock()
	if r := s.statusReq; r != nil {
		r.waiters = append(r.waiters, sig)
		s.mu.Unlock()
		return r, sig
	}
	r := s.spareReq
	s.spareReq = nil
	if r == nil {
		r = &statusReq{}
	}
	r.start = time.Now()
	r.waiters = append(r.waiters, sig)
	if s.err != nil {
		s.finishStatusLocked(r, motion.Status{}, s.err)
		s.mu.Unlock()
		return r, sig
	}
	s.statusReq = r
	s.mu.Unlock()
	if _, err := s.write(statusByte, &r.seq); err != nil {
		s.finishStatus(r, motion.Status{}, err)
	}
	return r, sig
}

// leaveStatus ends a joinStatus: neither r nor sig may be used afterwards.
// A request left by all its callers before it is finished stays
// outstanding, to be shared by the next caller, until its report arrives or
// a caller gives up waiting for it.
func (s *Stage) leaveStatus(r *statusReq, sig chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if i := slices.Index(r.waiters, sig); i >= 0 {
		last := len(r.waiters) - 1
		r.waiters[i], r.waiters[last] = r.waiters[last], nil
		r.waiters = r.waiters[:last]
	}
	select {
	case <-sig:
	default:
	}
	s.signals.put(sig)
	if r.finished && len(r.waiters) == 0 {
		s.recycleStatusLocked(r)
	}
}

func (s *Stage) recycleStatusLocked(r *statusReq) {
	r.seq.Store(0)
	r.finished, r.st, r.err = false, motion.Status{}, nil
	s.spareReq = r
}

func (s *Stage) finishStatus(r *statusReq, st motion.Status, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.finishStatusLocked(r, st, err)
}

func (s *Stage) finishStatusLocked(r *statusReq, st motion.Status, err error) {
	if r.finished {
		return
	}
	r.finished, r.st, r.err = true, st, err
	if s.statusReq == r {
		s.statusReq = nil
	}
	for _, c := range r.waiters {
		signal(c)
	}
	if len(r.waiters) == 0 {
		s.recycleStatusLocked(r)
	}
}

// synthStatusLocked returns the status to report without asking when GRBL
// would not answer '?': homing, or locked up after a hard or soft limit.
// The position is the last one reported.
func (s *Stage) synthStatusLocked() (motion.Status, bool) {
	var state motion.State
	switch {
	case s.critical && s.alarm != nil:
		state = motion.StateAlarm
	case s.homing > 0:
		state = motion.StateHome
	default:
		return motion.Status{}, false
	}
	st := s.last
	if s.lastAt.IsZero() {
		st = motion.Status{BufBlocks: -1, BufBytes: -1}
	}
	st.State, st.Sub, st.Feed, st.Spindle = state, -1, 0, 0
	return st, true
}

// freshStatus returns a status report whose '?' was written after write
// number after (so it reflects everything written up to then), sharing an
// outstanding request when it is recent enough.
func (s *Stage) freshStatus(ctx context.Context, after uint64) (motion.Status, error) {
	var t *time.Timer
	defer func() {
		if t != nil {
			s.putTimer(t)
		}
	}()
	resets := 0
	for {
		s.mu.Lock()
		if s.err != nil {
			err := s.err
			s.mu.Unlock()
			return motion.Status{}, err
		}
		if st, ok := s.synthStatusLocked(); ok {
			s.mu.Unlock()
			return st, nil
		}
		alarmCh := s.alarmCh
		s.mu.Unlock()
		r, sig := s.joinStatus()
		d := time.Until(r.start.Add(s.cfg.ReplyTimeout))
		if t == nil {
			t = s.timer(d)
		} else {
			t.Reset(d)
		}
	wait:
		for {
			select {
			case <-sig:
				break wait
			case <-ctx.Done():
				s.leaveStatus(r, sig)
				return motion.Status{}, context.Cause(ctx)
			case <-alarmCh:
				// After ALARM:1/2 GRBL answers no report until a reset:
				// the alarm is the answer. Another alarm: wait on.
				s.mu.Lock()
				st, ok := s.synthStatusLocked()
				alarmCh = s.alarmCh
				s.mu.Unlock()
				if ok && st.State == motion.StateAlarm {
					t.Stop()
					s.leaveStatus(r, sig)
					return st, nil
				}
			case <-t.C:
				s.finishStatus(r, motion.Status{}, s.statusTimeout())
				<-sig
				break wait
			}
		}
		t.Stop()
		st, err, seq := r.st, r.err, r.seq.Load()
		s.leaveStatus(r, sig)
		if err != nil {
			if errors.Is(err, motion.ErrReset) && resets < 3 {
				resets++
				continue
			}
			return motion.Status{}, err
		}
		if seq > after {
			return st, nil
		}
	}
}

// pollUntil polls fresh status reports every interval until fn reports
// done or an error. Reports are requested after write number after.
func (s *Stage) pollUntil(ctx context.Context, after uint64, interval time.Duration, fn func(motion.Status) (bool, error)) error {
	var t *time.Timer
	defer func() {
		if t != nil {
			s.putTimer(t)
		}
	}()
	for {
		st, err := s.freshStatus(ctx, after)
		if err != nil {
			return err
		}
		if done, err := fn(st); done || err != nil {
			return err
		}
		if t == nil {
			t = s.timer(interval)
		} else {
			t.Reset(interval)
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-s.done:
			return s.linkErr()
		}
	}
}

// dwellAllowance returns the dwell time of a "G4 P<seconds>" word in line,
// during which GRBL is legitimately idle before answering.
func dwellAllowance(line string) time.Duration {
	u := strings.ToUpper(strings.ReplaceAll(line, " ", ""))
	i := strings.Index(u, "G4")
	if i < 0 || (i+2 < len(u) && u[i+2] >= '0' && u[i+2] <= '9') {
		return 0
	}
	j := strings.IndexByte(u, 'P')
	if j < 0 {
		return 0
	}
	k := j + 1
	for k < len(u) && (u[k] >= '0' && u[k] <= '9' || u[k] == '.') {
		k++
	}
	v, err := strconv.ParseFloat(u[j+1:k], 64)
	if err != nil || v < 0 || v > 1e6 {
		return 0
	}
	return time.Duration(v * float64(time.Second))
}
