package grbl

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/waferd/waferd/motion"
)

// pending is a line sent to the controller and not yet answered.
type pending struct {
	line     string
	n        int           // bytes it occupies in GRBL's receive buffer: len(line)+1
	head     chan struct{} // closed when it becomes the oldest unanswered line (or completes)
	headShut bool
	done     chan struct{} // closed when answered or failed; err then holds the result
	err      error
	settings map[int]string // non-nil: collect "$N=value" lines ($$)
	alarmSeq uint64         // Stage.alarmSeq when it was queued
	homing   bool           // a $H line: '?' is ignored while it runs
}

// lineSpec describes a line to submit.
type lineSpec struct {
	line    string
	collect bool // collect $N=value lines until its ok
	homing  bool
}

// statusReq is the one outstanding '?' that concurrent status callers share.
type statusReq struct {
	seq      atomic.Uint64 // write sequence number of its '?' (0 until written)
	start    time.Time
	done     chan struct{}
	finished bool // guarded by Stage.mu
	st       motion.Status
	err      error
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
// pending entries of the lines written (possibly fewer than asked for, with
// an error).
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
		p := &pending{line: ls.line, n: len(ls.line) + 1, head: make(chan struct{}), done: make(chan struct{}), homing: ls.homing}
		if ls.collect {
			p.settings = map[int]string{}
		}
		for {
			s.mu.Lock()
			if s.err != nil {
				err := s.err
				s.mu.Unlock()
				return out, err
			}
			if s.desync != nil {
				err := s.desync
				s.mu.Unlock()
				return out, err
			}
			if !s.resetting && s.queued+p.n <= RxBufferSize {
				p.alarmSeq = s.alarmSeq
				s.enqueueLocked(p)
				s.mu.Unlock()
				break
			}
			space, resetting := s.space, s.resetting
			s.mu.Unlock()
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
		if _, err := s.write([]byte(p.line+"\n"), nil); err != nil {
			return out, err
		}
		out = append(out, p)
	}
	return out, nil
}

func (s *Stage) enqueueLocked(p *pending) {
	if len(s.queue) == 0 {
		close(p.head)
		p.headShut = true
	}
	s.queue = append(s.queue, p)
	s.queued += p.n
	if p.homing {
		s.homing++
	}
}

// popLocked removes the oldest unanswered line.
func (s *Stage) popLocked() *pending {
	p := s.queue[0]
	s.queue[0] = nil
	s.queue = s.queue[1:]
	s.queued -= p.n
	if len(s.queue) > 0 && !s.queue[0].headShut {
		close(s.queue[0].head)
		s.queue[0].headShut = true
	}
	s.wakeLocked()
	return p
}

// completeLocked records the result of a line that has left the queue.
func (s *Stage) completeLocked(p *pending, err error) {
	p.err = err
	if !p.headShut {
		close(p.head)
		p.headShut = true
	}
	close(p.done)
	if p.homing {
		s.homing--
	}
}

// failAllLocked fails every queued line with an error wrapping reason.
func (s *Stage) failAllLocked(reason error) {
	for i, p := range s.queue {
		s.completeLocked(p, fmt.Errorf("grbl: line %q not answered: %w", p.line, reason))
		s.queue[i] = nil
	}
	s.queue, s.queued = nil, 0
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
		select {
		case <-p.done: // answered after all
			return p.err
		default:
		}
	}
	if errors.Is(err, motion.ErrTimeout) {
		s.markDesync(err)
		return fmt.Errorf("line %q: %w", p.line, err)
	}
	return err
}

// await waits until ready is closed, according to w. It returns nil, or an
// error: the context's cause, the link error, an *Alarm, or one wrapping
// motion.ErrTimeout.
func (s *Stage) await(ctx context.Context, ready <-chan struct{}, w waitSpec) error {
	var strictC <-chan time.Time
	if w.mode == waitStrict {
		t := time.NewTimer(w.timeout)
		defer t.Stop()
		strictC = t.C
	}
	var tickC <-chan time.Time
	if w.mode == waitMotion {
		tk := time.NewTicker(s.cfg.PollInterval)
		defer tk.Stop()
		tickC = tk.C
	}
	reqTimer := time.NewTimer(time.Hour)
	reqTimer.Stop()
	defer reqTimer.Stop()
	var (
		req      *statusReq
		reqDone  <-chan struct{}
		reqLate  <-chan time.Time
		idleFrom time.Time
	)
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
				req = s.requestStatus()
				reqDone = req.done
				reqTimer.Reset(time.Until(req.start.Add(s.cfg.ReplyTimeout)))
				reqLate = reqTimer.C
			}
		case <-reqLate:
			reqLate = nil
			s.finishStatus(req, motion.Status{}, s.statusTimeout())
		case <-reqDone:
			r := req
			req, reqDone, reqLate = nil, nil, nil
			reqTimer.Stop()
			if r.err != nil {
				if errors.Is(r.err, motion.ErrTimeout) {
					return r.err
				}
				continue // a reset discarded the query: ask again at the next tick
			}
			if busy(r.st) {
				idleFrom = time.Time{}
				continue
			}
			now := time.Now()
			if idleFrom.IsZero() {
				idleFrom = now
			} else if d := now.Sub(idleFrom); d > s.cfg.ReplyTimeout+w.timeout {
				return fmt.Errorf("controller %v for %v with the reply still missing: %w", r.st.State, d.Round(time.Millisecond), motion.ErrTimeout)
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

// requestStatus returns the outstanding status request, or writes '?' and
// returns a new one. Concurrent callers share one '?': GRBL ignores a second
// '?' that arrives before the first report is out.
func (s *Stage) requestStatus() *statusReq {
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

func (s *Stage) finishStatusLocked(r *statusReq, st motion.Status, err error) {
	if r.finished {
		return
	}
	r.finished, r.st, r.err = true, st, err
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
// outstanding request when it is recent enough.
func (s *Stage) freshStatus(ctx context.Context, after uint64) (motion.Status, error) {
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
		s.mu.Unlock()
		r := s.requestStatus()
		t := time.NewTimer(time.Until(r.start.Add(s.cfg.ReplyTimeout)))
		select {
		case <-r.done:
		case <-ctx.Done():
			t.Stop()
			return motion.Status{}, context.Cause(ctx)
		case <-t.C:
			s.finishStatus(r, motion.Status{}, s.statusTimeout())
			<-r.done
		}
		t.Stop()
		if r.err != nil {
			if errors.Is(r.err, motion.ErrReset) && resets < 3 {
				resets++
				continue
			}
			return motion.Status{}, r.err
		}
		if r.seq.Load() > after {
			return r.st, nil
		}
	}
}

// pollUntil polls fresh status reports every interval until fn reports
// done or an error. Reports are requested after write number after.
func (s *Stage) pollUntil(ctx context.Context, after uint64, interval time.Duration, fn func(motion.Status) (bool, error)) error {
	t := time.NewTimer(time.Hour)
	t.Stop()
	defer t.Stop()
	for {
		st, err := s.freshStatus(ctx, after)
		if err != nil {
			return err
		}
		if done, err := fn(st); done || err != nil {
			return err
		}
		t.Reset(interval)
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
