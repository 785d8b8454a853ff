package grbl

import (
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

// pending is a line sent to the controller and not yet answered. Its
// channels are closed once each; only the reader goroutine and the calls
// that fail lines (under Stage.mu) close them.
type pending struct {
	line        string        // the line, without its newline
	n           int           // bytes it occupies in GRBL's receive buffer: len(line)+1
	head        chan struct{} // closed when it becomes the oldest unanswered line (or completes)
	done        chan struct{} // closed when answered or failed; err then holds the result
	alarmSeq    uint64        // Stage.alarmSeq when it was queued
	seq         uint64        // the write sequence number of the line (set when queued)
	homing      bool          // a $H line: '?' is ignored while it runs
	clearsAlarm bool          // $X or $H...: its ok clears the alarm latch

	// Guarded by Stage.mu; read without it once done is closed.
	headClosed bool
	err        error
	settings   map[int]string    // non-nil: collect "$N=value" lines ($$)
	feedback   map[string]string // non-nil: collect "[KEY:text]" lines ($I)
}

// answered reports whether p has its result (done is closed).
func (p *pending) answered() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// lineSpec describes a line to submit.
type lineSpec struct {
	line    string
	collect bool // collect $N=value and [KEY:text] lines until its ok
	homing  bool
}

// statusReq is the one outstanding '?' that concurrent status callers share
// (joinStatus).
type statusReq struct {
	seq   atomic.Uint64 // write sequence number of its '?' (0 until written)
	start time.Time
	done  chan struct{} // closed when finished; st and err are then set

	// Guarded by Stage.mu; read without it once done is closed.
	st  motion.Status
	err error
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
	// cycleEnd (waitStrict, homing) is a status request GRBL answers when
	// the homing cycle has ended, just before the ok of $H: from its
	// report on, the ok is due within ReplyTimeout.
	cycleEnd *statusReq
}

// checkLine validates a line before it is sent: at most MaxLineLen
// characters after stripping, printable ASCII, no real-time command
// characters (GRBL would act on them immediately instead of queueing them).
func checkLine(line string) (string, error) {
	l := strings.TrimSpace(line)
	if len(l) > MaxLineLen {
		return "", fmt.Errorf("grbl: line %q: %d characters, GRBL accepts at most %d: %w", l, len(l), MaxLineLen, motion.ErrRejected)
	}
	for i := 0; i < len(l); i++ {
		c := l[i]
		if c == rtStatus || c == rtFeedHold || c == rtResume || (c < 0x20 && c != '\t') || c >= 0x7f {
			return "", fmt.Errorf("grbl: line %q: contains control or real-time character %q: %w", l, c, motion.ErrRejected)
		}
	}
	return l, nil
}

// clearsAlarm reports whether l is $X or starts with $H (GRBL upcases
// lines): the lines whose ok ends an alarm lock.
func clearsAlarm(l string) bool {
	u := strings.ToUpper(l)
	return u == "$X" || strings.HasPrefix(u, "$H")
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
// stream, waiting for receive-buffer space as needed. It returns the
// pending entries of the lines written: possibly fewer than asked for, with
// an error.
func (s *Stage) submit(ctx context.Context, specs ...lineSpec) ([]*pending, error) {
	for i := range specs {
		l, err := checkLine(specs[i].line)
		if err != nil {
			return nil, err
		}
		specs[i].line = l
	}
	if err := s.acquire(ctx, s.sendSem); err != nil {
		return nil, err
	}
	defer func() { <-s.sendSem }()

	var out []*pending
	for _, ls := range specs {
		p := newPending(ls)
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
				return out, err
			}
			if !s.resetting && s.queued+p.n <= RxBufferSize {
				p.alarmSeq = s.alarmSeq
				p.seq = s.wseq.Load() + 1 // the write below; writes happen under wmu only
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
				if errors.Is(err, motion.ErrTimeout) {
					s.markDesync(err)
				}
				return out, fmt.Errorf("waiting for receive buffer space: %w", err)
			}
		}
		if _, err := s.writeHeld([]byte(p.line+"\n"), nil); err != nil {
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

// newPending returns the pending entry of a checked line.
func newPending(ls lineSpec) *pending {
	p := &pending{
		line:        ls.line,
		n:           len(ls.line) + 1,
		head:        make(chan struct{}),
		done:        make(chan struct{}),
		homing:      ls.homing,
		clearsAlarm: clearsAlarm(ls.line),
	}
	if ls.collect {
		p.settings, p.feedback = map[int]string{}, map[string]string{}
	}
	return p
}

func (s *Stage) enqueueLocked(p *pending) {
	if len(s.queue) == 0 {
		closeHeadLocked(p)
	}
	s.queue = append(s.queue, p)
	s.queued += p.n
	if p.homing {
		s.homing++
	}
}

// closeHeadLocked tells p's submitter that p is the oldest unanswered line
// (or complete).
func closeHeadLocked(p *pending) {
	if !p.headClosed {
		p.headClosed = true
		close(p.head)
	}
}

// popLocked removes the oldest unanswered line.
func (s *Stage) popLocked() *pending {
	p := s.queue[0]
	s.queue = slices.Delete(s.queue, 0, 1)
	s.queued -= p.n
	if len(s.queue) > 0 {
		closeHeadLocked(s.queue[0])
	}
	s.wakeLocked()
	return p
}

// completeLocked records the result of a line that has left the queue.
func (s *Stage) completeLocked(p *pending, err error) {
	p.err = err
	closeHeadLocked(p)
	close(p.done)
	if p.homing {
		s.homing--
	}
}

// failAllLocked fails every queued line with an error wrapping reason.
func (s *Stage) failAllLocked(reason error) {
	for _, p := range s.queue {
		s.completeLocked(p, fmt.Errorf("grbl: line %q not answered: %w", p.line, reason))
	}
	s.queue, s.queued = nil, 0
	s.wakeLocked()
}

// repliesLost completes with ErrReplyLost every line still waiting for its
// reply that was written before write number before: the controller is
// known to have answered them all (see "Noise on the link").
func (s *Stage) repliesLost(before uint64) {
	var msgs []string
	s.mu.Lock()
	for len(s.queue) > 0 && s.queue[0].seq < before {
		p := s.popLocked()
		s.completeLocked(p, fmt.Errorf("grbl: line %q: %w (the controller answered it: the stream is in step)", p.line, ErrReplyLost))
		if msg := s.noteNoiseLocked(noiseReplyLost, "line "+quoteShort(p.line)); msg != "" {
			msgs = append(msgs, msg)
		}
	}
	s.mu.Unlock()
	for _, m := range msgs {
		s.warnf("%s", m)
	}
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
	if !errors.As(err, &a) && p.answered() { // answered after all
		return p.err
	}
	if errors.Is(err, motion.ErrTimeout) {
		s.markDesync(err)
		return fmt.Errorf("line %q: %w", p.line, err)
	}
	return err
}

// await waits until ready is closed, according to w. It returns nil, or an
// error: the context's cause, the link error, an *Alarm, or one wrapping
// motion.ErrTimeout. While it polls (waitMotion) it also recovers replies
// lost on the link (see "Noise on the link").
func (s *Stage) await(ctx context.Context, ready <-chan struct{}, w waitSpec) error {
	var strictC <-chan time.Time
	var strict *time.Timer
	if w.mode == waitStrict {
		strict = time.NewTimer(w.timeout)
		defer strict.Stop()
		strictC = strict.C
	}
	var cycleEnd <-chan struct{}
	var cycleAsk <-chan time.Time
	cycleEnded := false
	if w.cycleEnd != nil {
		cycleEnd = w.cycleEnd.done
	}
	var tickC <-chan time.Time
	if w.mode == waitMotion {
		tk := time.NewTicker(s.cfg.PollInterval)
		defer tk.Stop()
		tickC = tk.C
	}
	var (
		req       *statusReq
		reqDone   <-chan struct{} // req.done while req is awaited
		reqLate   <-chan time.Time
		misses    int // status requests in a row not answered in time
		q         quiet
		stuckFrom time.Time
	)
	ask := func() {
		req = s.joinStatus()
		reqDone = req.done
		reqLate = time.After(time.Until(req.start.Add(s.cfg.ReplyTimeout)))
	}
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
		case <-cycleEnd:
			cycleEnd = nil
			switch r := w.cycleEnd; {
			case r.err == nil && r.st.State == motion.StateHome:
				// Reported from the end of the cycle, in state Home.
				cycleEnded = true
				strict.Reset(s.cfg.ReplyTimeout)
			case r.err == nil:
				// Answered before the cycle began: ask again in a
				// moment.
				cycleAsk = time.After(s.cfg.PollInterval)
			}
		case <-cycleAsk:
			cycleAsk = nil
			w.cycleEnd = s.joinStatus()
			cycleEnd = w.cycleEnd.done
		case <-strictC:
			if cycleEnded {
				// The cycle ended ReplyTimeout ago: its ok was lost.
				s.repliesLost(w.cycleEnd.seq.Load())
				strictC = nil
				continue // ready is closed now
			}
			if s.lostWhileIdle(ctx) {
				strictC = nil
				continue // ready is closed now
			}
			return fmt.Errorf("no reply within %v: %w", w.timeout, motion.ErrTimeout)
		case <-tickC:
			if req == nil && !homing {
				ask()
			}
		case <-reqLate:
			reqLate = nil
			s.finishStatus(req, motion.Status{}, s.statusTimeout())
		case <-reqDone:
			r := req
			req, reqDone, reqLate = nil, nil, nil
			switch {
			case errors.Is(r.err, errGarbledReport):
				ask() // one poll lost: ask again at once
				continue
			case errors.Is(r.err, motion.ErrTimeout):
				if misses++; misses >= 2 {
					return r.err
				}
				s.noteNoise(noiseStatusLost, "no report within "+s.cfg.ReplyTimeout.String())
				ask()
				continue
			case r.err != nil:
				continue // a reset discarded the query: ask again at the next tick
			}
			misses = 0
			if before, ok := q.observe(s, r, w.timeout); ok {
				s.repliesLost(before)
			}
			// A controller that is neither busy nor answering (asleep, a
			// state this driver does not know) will not answer.
			if st := r.st.State; busy(r.st) || answersPromptly(st) {
				stuckFrom = time.Time{}
			} else if stuckFrom.IsZero() {
				stuckFrom = time.Now()
			} else if d := time.Since(stuckFrom); d > s.cfg.ReplyTimeout+w.timeout {
				return fmt.Errorf("controller %v for %v with the reply still missing: %w", st, d.Round(time.Millisecond), motion.ErrTimeout)
			}
		}
	}
}

// quiet watches status reports for the proof that the controller has
// answered every line written before some point (see "Noise on the
// link").
type quiet struct {
	n    int       // reports in a row showing nothing left to answer
	from time.Time // when the first of them arrived
	seq  uint64    // the write sequence number of its '?'
}

// observe takes the next report; it returns the write sequence number
// before which every line has been answered, once that is proven. dwell is
// how long the awaited line may keep an idle controller from answering.
func (q *quiet) observe(s *Stage, r *statusReq, dwell time.Duration) (before uint64, ok bool) {
	st, now := r.st, time.Now()
	s.mu.Lock()
	m, haveM := s.machine, s.haveMachine
	pending := len(s.queue) > 0
	s.mu.Unlock()
	bf := haveM && m.BufferReports() && st.BufBlocks >= 0
	switch {
	case !pending, !answersPromptly(st.State):
		*q = quiet{}
		return 0, false
	case bf && (st.BufBlocks != m.PlannerBlocks || st.BufBytes != m.RxBuffer):
		*q = quiet{}
		return 0, false
	}
	if q.n == 0 {
		q.from, q.seq = now, r.seq.Load()
	}
	q.n++
	if bf {
		return q.seq, q.n >= 2 && now.Sub(q.from) >= dwell
	}
	return q.seq, now.Sub(q.from) > s.cfg.ReplyTimeout+dwell
}

// answersPromptly reports whether a controller in state st answers every
// line it has within milliseconds (no motion, no hold).
func answersPromptly(st motion.State) bool {
	switch st {
	case motion.StateIdle, motion.StateAlarm, motion.StateCheck:
		return true
	}
	return false
}

// lostWhileIdle is asked when a line's reply is overdue in a strict wait:
// if the controller is idle with nothing buffered (as far as Bf: says),
// every line written before a fresh status request has been answered, and
// the ones still waiting lost their replies on the link. It completes them
// and reports whether it did.
func (s *Stage) lostWhileIdle(ctx context.Context) bool {
	after := s.wseq.Load()
	st, err := s.freshStatus(ctx, after)
	if err != nil || !answersPromptly(st.State) {
		return false
	}
	s.mu.Lock()
	m, haveM := s.machine, s.haveMachine
	s.mu.Unlock()
	if haveM && m.BufferReports() && st.BufBlocks >= 0 && (st.BufBlocks != m.PlannerBlocks || st.BufBytes != m.RxBuffer) {
		return false
	}
	s.repliesLost(after + 1)
	return true
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
// returns a new one. Its done channel is closed when it is finished.
// Concurrent callers share one '?': GRBL ignores a second '?' that arrives
// before the first report is out. A request stays outstanding, to be shared
// by the next caller, until its report arrives or a caller gives up waiting
// for it (finishStatus with a timeout).
func (s *Stage) joinStatus() *statusReq {
	s.mu.Lock()
	if r := s.statusReq; r != nil {
		s.mu.Unlock()
		return r
	}
	r := &statusReq{start: time.Now(), done: make(chan struct{})}
	if s.err != nil {
		s.finishStatusLocked(r, motion.Status{}, s.err)
		s.mu.Unlock()
		return r
	}
	s.statusReq = r
	s.mu.Unlock()
	if _, err := s.write([]byte{rtStatus}, &r.seq); err != nil {
		s.finishStatus(r, motion.Status{}, err)
	}
	return r
}

func (s *Stage) finishStatus(r *statusReq, st motion.Status, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.finishStatusLocked(r, st, err)
}

// finishStatusLocked gives r its result; the first result counts.
func (s *Stage) finishStatusLocked(r *statusReq, st motion.Status, err error) {
	select {
	case <-r.done:
		return
	default:
	}
	r.st, r.err = st, err
	if s.statusReq == r {
		s.statusReq = nil
	}
	close(r.done)
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
// outstanding request when it is recent enough. A report garbled on the
// link is asked for again at once, one not answered in time once more.
func (s *Stage) freshStatus(ctx context.Context, after uint64) (motion.Status, error) {
	resets, garbled, misses := 0, 0, 0
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
		r := s.joinStatus()
		if st, ok, err := s.awaitStatus(ctx, r, alarmCh); ok || err != nil {
			return st, err
		}
		if err := r.err; err != nil {
			switch {
			case errors.Is(err, motion.ErrReset) && resets < 3:
				resets++
				continue
			case errors.Is(err, errGarbledReport) && garbled < 8:
				garbled++
				continue
			case errors.Is(err, motion.ErrTimeout) && misses < 1:
				misses++
				s.noteNoise(noiseStatusLost, "no report within "+s.cfg.ReplyTimeout.String())
				continue
			}
			return motion.Status{}, err
		}
		if r.seq.Load() > after {
			return r.st, nil
		}
	}
}

// awaitStatus waits until r is finished (ok false, no error: its result
// is in r), finishing it with a timeout ReplyTimeout after it started. It
// returns early with ok (a status to report) or an error when ctx ends or
// a critical alarm leaves the alarm as the only answer GRBL will give.
func (s *Stage) awaitStatus(ctx context.Context, r *statusReq, alarmCh <-chan struct{}) (st motion.Status, ok bool, err error) {
	t := time.NewTimer(time.Until(r.start.Add(s.cfg.ReplyTimeout)))
	defer t.Stop()
	for {
		select {
		case <-r.done:
			return motion.Status{}, false, nil
		case <-ctx.Done():
			return motion.Status{}, false, context.Cause(ctx)
		case <-alarmCh:
			// After ALARM:1/2 GRBL answers no report until a reset:
			// the alarm is the answer. Another alarm: wait on.
			s.mu.Lock()
			st, ok := s.synthStatusLocked()
			alarmCh = s.alarmCh
			s.mu.Unlock()
			if ok && st.State == motion.StateAlarm {
				return st, true, nil
			}
		case <-t.C:
			s.finishStatus(r, motion.Status{}, s.statusTimeout())
			return motion.Status{}, false, nil
		}
	}
}

// pollUntil polls fresh status reports every interval until fn reports
// done or an error. Reports are requested after write number after.
func (s *Stage) pollUntil(ctx context.Context, after uint64, interval time.Duration, fn func(motion.Status) (bool, error)) error {
	for {
		st, err := s.freshStatus(ctx, after)
		if err != nil {
			return err
		}
		if done, err := fn(st); done || err != nil {
			return err
		}
		select {
		case <-time.After(interval):
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
