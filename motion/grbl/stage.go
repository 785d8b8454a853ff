package grbl

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/waferd/waferd/motion"
)

// positionTolerance is how far (per axis) a reported position may be from
// the one predicted for a move's target: GRBL reports whole micrometres,
// rounded in 32-bit floating point.
const positionTolerance = 1 * motion.Micrometre

// Status sends '?' and returns the next status report. Concurrent callers
// share one outstanding '?'. It blocks for at most ReplyTimeout (then an
// error wrapping motion.ErrTimeout) or until ctx ends.
//
// Where GRBL 1.1h ignores '?' — during homing, and after ALARM:1/ALARM:2
// until a soft reset — Status does not ask: it returns the last reported
// position with State Home or Alarm.
func (s *Stage) Status(ctx context.Context) (motion.Status, error) {
	st, err := s.freshStatus(ctx, 0)
	if err != nil {
		return motion.Status{}, fmt.Errorf("grbl: status: %w", err)
	}
	return st, nil
}

// MoveTo moves to the absolute machine position p (G53, millimetres) at feed
// rate f (mm/min) and blocks until a status report says Idle at the
// position GRBL reaches for p: the nearest whole step of $100/$101 (Reach),
// ±1 µm. See the package documentation for how it waits. A move shorter
// than half a step leaves the stage where it is; MoveTo then returns nil
// (the stage is as close to p as it gets) and logs it: a caller that
// should tell an operator compares Reach(p) with the position. It
// refuses to start while an alarm is latched (error wrapping the *Alarm,
// motion.ErrAlarm), and fails with the *Alarm if one arrives during the
// move, with an *Error (motion.ErrRejected) if the controller rejects the
// line, with motion.ErrReset if the controller is reset meanwhile.
//
// Cancelling ctx writes feed hold ('!') immediately and returns an error
// wrapping context.Cause(ctx); the stage then decelerates and stays in
// Hold. MoveTo never resets the controller: the caller decides (Hold, then
// Reset, for a controlled stop that keeps position).
func (s *Stage) MoveTo(ctx context.Context, p motion.Point, f motion.Speed) error {
	if err := s.moveTo(ctx, p, f); err != nil {
		return fmt.Errorf("grbl: move to %v: %w", p, err)
	}
	return nil
}

func (s *Stage) moveTo(ctx context.Context, p motion.Point, f motion.Speed) error {
	if err := checkFeed(f); err != nil {
		return err
	}
	if err := s.acquire(ctx, s.moveSem); err != nil {
		return err
	}
	defer func() { <-s.moveSem }()
	if ctx.Err() != nil {
		return context.Cause(ctx) // nothing sent: nothing to hold
	}
	s.mu.Lock()
	alarm, base, banners := s.alarm, s.alarmSeq, s.banners
	s.mu.Unlock()
	if alarm != nil {
		return alarm
	}
	m, err := s.Machine(ctx)
	if err != nil {
		s.logf("grbl: move to %v: %v; judging arrival to the micrometre", p, err)
		m = Machine{}
	}
	// The abort: feed hold the moment ctx is cancelled, not at the next
	// poll.
	defer abortOnCancel(ctx, func() { _ = s.Halt() })()
	// The step nearest p, written out in full: GRBL then rounds it to
	// the same step, whatever its arithmetic does with a target halfway
	// between two.
	s.mu.Lock()
	origin := s.origin
	s.mu.Unlock()
	c := p.Add(origin) // in the controller's coordinates
	want := m.Reach(c).Add(motion.Point{X: -origin.X, Y: -origin.Y})
	if last, at := s.LastStatus(); !at.IsZero() && last.XY() == want && want != p {
		s.logf("grbl: move to %v is less than half a step (%s mm) from the stage at %v: it stays there", p, fmtSetting(m.Step(0)), want)
	}
	line := fmt.Sprintf("G21 G90 G53 G1 X%s Y%s F%s", formatTarget(m.Grid(0, c.X.Millimetres())), formatTarget(m.Grid(1, c.Y.Millimetres())), formatFeed(f))
	ps, err := s.submit(ctx, lineSpec{line: line}, lineSpec{line: "G4 P0"})
	if err != nil {
		return s.withAlarm(err)
	}
	w := waitSpec{mode: waitMotion, watchAlarm: true, alarmBase: base}
	for _, pl := range ps {
		// A reply lost on the link is no failure here: the position
		// below confirms the move.
		if err := s.awaitReply(ctx, pl, w); err != nil && !errors.Is(err, ErrReplyLost) {
			return s.withAlarm(err)
		}
	}
	// The planner is empty. Confirm with a report requested from now on.
	// GRBL also answers a G4 cut short by a soft reset (before its banner):
	// a reset seen by the time the report arrives fails the move. A
	// position off the target is asked for once more before it fails the
	// move: noise can garble a digit into another valid report.
	elsewhere := 0
	return s.pollUntil(ctx, s.wseq.Load(), s.cfg.PollInterval, func(st motion.Status) (bool, error) {
		s.mu.Lock()
		reset := s.banners != banners
		s.mu.Unlock()
		if reset {
			return true, fmt.Errorf("controller reset during the move: %w", motion.ErrReset)
		}
		switch st.State {
		case motion.StateIdle:
			if near(st.XY(), want) {
				return true, nil
			}
			if elsewhere++; elsewhere < 2 {
				return false, nil
			}
			if m.StepsPerMM[0] > 0 {
				return true, fmt.Errorf("controller idle at %v, not at the target %v (on the step grid of %s/%s steps/mm)",
					st.XY(), want, fmtSetting(m.StepsPerMM[0]), fmtSetting(m.StepsPerMM[1]))
			}
			return true, fmt.Errorf("controller idle at %v, not at the target", st.XY())
		case motion.StateAlarm:
			if a := s.Alarm(); a != nil {
				return true, a
			}
			return true, newAlarm(0)
		}
		return false, nil // Run (finishing), Hold (someone held it): keep waiting
	})
}

// withAlarm adds the latched alarm to an error:9 (G-code lock) rejection so
// that errors.Is finds both motion.ErrRejected and motion.ErrAlarm.
func (s *Stage) withAlarm(err error) error {
	var e *Error
	if errors.As(err, &e) && e.Code == 9 {
		if a := s.Alarm(); a != nil {
			return fmt.Errorf("%w: %w", err, a)
		}
	}
	return err
}

func near(a, b motion.Point) bool {
	d := func(x, y motion.Distance) motion.Distance {
		if x > y {
			return x - y
		}
		return y - x
	}
	return d(a.X, b.X) <= positionTolerance && d(a.Y, b.Y) <= positionTolerance
}

// Reach returns the position a move to p ends at as the controller
// reports it: p on the controller's step grid ($100, $101; see Machine),
// to the micrometre. While the settings are unknown it returns p. It does
// not block or talk to the controller.
func (s *Stage) Reach(p motion.Point) motion.Point {
	s.mu.Lock()
	m, o := s.machine, s.origin
	s.mu.Unlock()
	return m.Reach(p.Add(o)).Add(motion.Point{X: -o.X, Y: -o.Y})
}

// ErrHomingEnabled: SetOrigin on a controller that homes; it wraps
// motion.ErrHomes.
var ErrHomingEnabled = fmt.Errorf("grbl: the controller homes ($22=1): machine coordinates come from homing: %w", motion.ErrHomes)

// SetOrigin declares that the stage, standing still, is at p in machine
// coordinates: from then on every position the Stage reports and takes
// (Status, LastStatus, MoveTo, Reach) is shifted so. It is for a stage
// without homing switches ($22=0), whose controller counts from wherever
// it powered up: an operator jogs to a mark and says where the mark is.
// The shift is the driver's, not the controller's (GRBL cannot set its
// machine position without homing), and lives as long as this Stage:
// after a reconnection, or an alarm that loses position (ALARM:3 after a
// reset while moving), it must be set again. On a controller that homes it
// fails with ErrHomingEnabled, and while the stage is not Idle with an
// error saying so. It blocks for one status report.
func (s *Stage) SetOrigin(ctx context.Context, p motion.Point) error {
	m, err := s.Machine(ctx)
	if err != nil {
		return fmt.Errorf("grbl: set origin: %w", err)
	}
	if m.Homing {
		return fmt.Errorf("grbl: set origin: %w", ErrHomingEnabled)
	}
	if err := s.acquire(ctx, s.moveSem); err != nil {
		return fmt.Errorf("grbl: set origin: %w", err)
	}
	defer func() { <-s.moveSem }()
	st, err := s.freshStatus(ctx, s.wseq.Load())
	if err != nil {
		return fmt.Errorf("grbl: set origin: %w", err)
	}
	if st.State != motion.StateIdle {
		return fmt.Errorf("grbl: set origin: the controller reports %s: it must be Idle", st.StateName())
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	// st is in the coordinates of the origin in force: the controller's
	// position is st + origin.
	ctrl := st.XY().Add(s.origin)
	next := motion.Point{X: ctrl.X - p.X, Y: ctrl.Y - p.Y}
	d := motion.Point{X: next.X - s.origin.X, Y: next.Y - s.origin.Y}
	s.origin = next
	s.last.MPos[0] -= d.X
	s.last.MPos[1] -= d.Y
	return nil
}

// formatTarget formats a target on the step grid (mm) for an axis word:
// three decimals, more where the step needs them (GRBL reads 8 digits at
// most): "12.34375", "-20.004", "150.000".
func formatTarget(mm float64) string {
	intDigits := len(strconv.FormatFloat(math.Trunc(math.Abs(mm)), 'f', 0, 64))
	dec := min(max(8-intDigits, 3), 6)
	s := strconv.FormatFloat(mm, 'f', dec, 64)
	for dec > 3 && strings.HasSuffix(s, "0") {
		s, dec = s[:len(s)-1], dec-1
	}
	if s == "-0.000" {
		s = "0.000"
	}
	return s
}

// checkFeed accepts a feed rate for an F word: positive and finite.
func checkFeed(f motion.Speed) error {
	if v := float64(f); math.IsNaN(v) || v <= 0 || v > 1e6 {
		return fmt.Errorf("invalid feed rate %v mm/min", v)
	}
	return nil
}

// formatFeed formats a feed rate that checkFeed accepts, for an F word: at
// most three decimals, without trailing zeros ("6000", "0.5").
func formatFeed(f motion.Speed) string {
	return strings.TrimSuffix(strings.TrimRight(strconv.FormatFloat(float64(f), 'f', 3, 64), "0"), ".")
}

// abortOnCancel runs abort, in a goroutine of its own, the moment ctx is
// cancelled (context.AfterFunc), until the returned function is called.
// A blocking call registers its abort so and defers the returned function,
// which guarantees that a call whose context was cancelled does not return
// before its abort has run: it waits for an abort in progress, and runs
// the abort itself if ctx was cancelled but the goroutine had not started
// yet (the call can see ctx.Done before the registration does).
func abortOnCancel(ctx context.Context, abort func()) (end func()) {
	ran := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(ran)
		abort()
	})
	return func() {
		if !stop() {
			<-ran // started: wait until it is done
			return
		}
		if ctx.Err() != nil {
			abort() // cancelled, but the goroutine was never started
		}
	}
}

// Home runs the homing cycle ($H) and blocks until it ends, for at most
// HomingTimeout. The driver does not poll during homing (GRBL ignores '?'
// then) but for one '?' sent with $H, which GRBL answers when the cycle
// ends: an ok lost on the link then costs ReplyTimeout. An alarm during homing (ALARM:8, ALARM:9, ...) fails Home with the
// *Alarm. A successful Home clears the alarm latch.
//
// GRBL 1.1 ignores feed hold during homing, so cancelling ctx sends a soft
// reset instead: the cycle stops at once with ALARM:6 (position was not
// trusted anyway), and Home returns an error wrapping context.Cause(ctx).
func (s *Stage) Home(ctx context.Context) error {
	if err := s.home(ctx, "$H"); err != nil {
		return fmt.Errorf("grbl: home: %w", err)
	}
	return nil
}

func (s *Stage) home(ctx context.Context, line string) error {
	if err := s.acquire(ctx, s.moveSem); err != nil {
		return err
	}
	defer func() { <-s.moveSem }()
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	s.mu.Lock()
	base := s.alarmSeq
	s.mu.Unlock()
	defer abortOnCancel(ctx, s.abortHoming)()
	ps, err := s.submit(ctx, lineSpec{line: line, homing: true})
	if err != nil {
		return err
	}
	// GRBL ignores '?' during homing, but answers one that came during
	// the cycle once it has ended, just before the ok of $H. Asked now,
	// it lets an ok lost on the link cost ReplyTimeout after the cycle
	// rather than HomingTimeout.
	end := s.joinStatus()
	err = s.awaitReply(ctx, ps[0], waitSpec{mode: waitStrict, timeout: s.cfg.HomingTimeout, watchAlarm: true, alarmBase: base, cycleEnd: end})
	if errors.Is(err, ErrReplyLost) {
		// Homed or not, the controller says: a homed one is not in
		// alarm (a failed cycle raised one, which awaitReply returns).
		if serr := s.settle(ctx); serr == nil && s.Alarm() == nil {
			return nil
		}
	}
	if err != nil && ctx.Err() != nil && !errors.Is(err, context.Cause(ctx)) {
		// Cancelled: the abort's reset fails the $H line (ErrReset, or
		// the ALARM:6 it raises); the caller must still see its cause.
		return fmt.Errorf("%w: %w", context.Cause(ctx), err)
	}
	return err
}

// abortHoming soft-resets the controller (the only way to stop a GRBL
// homing cycle) and waits, at most ReplyTimeout, for the banner so that the
// stream does not stay blocked if none comes.
func (s *Stage) abortHoming() {
	bch, err := s.beginReset(context.Background())
	if err != nil {
		return
	}
	if err := s.waitBanner(context.Background(), bch, s.cfg.ReplyTimeout); err != nil {
		s.resetFailed(bch, err)
	}
}

// Hold writes feed hold ('!') and blocks until a status report requested
// after it says the stage has stopped: Hold:0, Idle, or another stopped
// state (Alarm, Door:0, ...); never on Hold:1, which is still decelerating.
// The wait is bounded by ctx's deadline, or HoldTimeout if ctx has none;
// missing it returns an error wrapping motion.ErrTimeout. Position is kept;
// Resume continues, Reset discards the rest of the motion. During homing GRBL
// ignores both '!' and '?', so Hold then times out.
//
// GRBL enters Hold:0 even when '!' arrives while idle, and then executes no
// further line until Resume or Reset: a Hold is always followed by one of
// them.
func (s *Stage) Hold(ctx context.Context) error {
	seq, err := s.writeRT(rtFeedHold)
	if err != nil {
		return fmt.Errorf("grbl: hold: %w", err)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.cfg.HoldTimeout)
		defer cancel()
	}
	err = s.pollUntil(ctx, seq, s.cfg.HoldPollInterval, func(st motion.Status) (bool, error) {
		return st.Stopped(), nil
	})
	switch {
	case err == nil:
		return nil
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return fmt.Errorf("grbl: hold: stage not stopped in time: %w (%w)", motion.ErrTimeout, context.Cause(ctx))
	}
	return fmt.Errorf("grbl: hold: %w", err)
}

// Resume writes cycle start ('~'): the stage continues after a hold. It
// does not block beyond the write.
func (s *Stage) Resume(ctx context.Context) error {
	if _, err := s.writeRT(rtResume); err != nil {
		return fmt.Errorf("grbl: resume: %w", err)
	}
	return nil
}

// Reset writes soft reset (0x18) and blocks until the controller's banner
// (at most ReplyTimeout, then an error wrapping motion.ErrTimeout). Every
// line still pending fails with an error wrapping motion.ErrReset; new lines
// wait until the banner. It then asks for a status report to learn the
// alarm state: if the controller printed ALARM:N during the reset (ALARM:3
// after a reset while moving: position lost, re-home) Reset returns an error
// wrapping that *Alarm (motion.ErrAlarm), and the alarm stays latched. A
// reset after which the controller is not in alarm clears the latch. After
// an Abort it waits for that reset's banner first, then resets again.
func (s *Stage) Reset(ctx context.Context) error {
	s.mu.Lock()
	base := s.alarmSeq
	s.mu.Unlock()
	bch, err := s.beginReset(ctx)
	if err != nil {
		return fmt.Errorf("grbl: reset: %w", err)
	}
	if err := s.waitBanner(ctx, bch, s.cfg.ReplyTimeout); err != nil {
		s.resetFailed(bch, err)
		return fmt.Errorf("grbl: reset: %w", err)
	}
	if err := s.settle(ctx); err != nil {
		return fmt.Errorf("grbl: reset: %w", err)
	}
	s.mu.Lock()
	a, raised := s.alarm, s.alarmSeq > base
	s.mu.Unlock()
	if a != nil && raised && a.Code != 0 {
		return fmt.Errorf("grbl: reset: controller restarted in alarm: %w", a)
	}
	return nil
}

// Unlock sends $X: it clears an alarm lock without homing (position stays
// untrusted) and the driver's alarm latch. It blocks until the ok (at most
// ReplyTimeout once the line is next in turn). After ALARM:1/ALARM:2 GRBL
// needs a Reset first.
func (s *Stage) Unlock(ctx context.Context) error {
	if _, _, err := s.command(ctx, lineSpec{line: "$X"}); err != nil {
		if errors.Is(err, ErrReplyLost) {
			// Unlocked or not, the controller says.
			if serr := s.settle(ctx); serr == nil && s.Alarm() == nil {
				return nil
			}
		}
		return fmt.Errorf("grbl: unlock: %w", err)
	}
	return nil
}

// Settings sends $$ and returns the settings it prints, keyed by number
// ($110=500.000 → 110: "500.000"). Setting describes them. GRBL answers $$
// only when Idle or in Alarm. It blocks for at most ReplyTimeout once the
// line is next in turn.
func (s *Stage) Settings(ctx context.Context) (map[int]string, error) {
	set, _, err := s.command(ctx, lineSpec{line: "$$", collect: true})
	if err != nil {
		return nil, fmt.Errorf("grbl: settings: %w", err)
	}
	return set, nil
}

// command sends one non-motion line and waits strictly for its reply. For
// a line with collect set it returns what it collected: the settings
// ("$N=value") and the feedback lines ("[KEY:text]", keyed by KEY).
func (s *Stage) command(ctx context.Context, ls lineSpec) (map[int]string, map[string]string, error) {
	ps, err := s.submit(ctx, ls)
	if err != nil {
		return nil, nil, err
	}
	if err := s.awaitReply(ctx, ps[0], waitSpec{mode: waitStrict, timeout: s.cfg.ReplyTimeout}); err != nil {
		return nil, nil, err
	}
	return ps[0].settings, ps[0].feedback, nil
}

// Send sends one line (G-code or $-command) through the character-counting
// stream and blocks until its reply: nil on ok, an *Error (errors.Is
// motion.ErrRejected) on error:N, an error wrapping motion.ErrReset if the
// controller is reset first. Lines are stripped of surrounding white space;
// longer than MaxLineLen characters, or containing control or real-time
// characters, they are refused before sending.
//
// $-commands other than $J= and $H must be answered within ReplyTimeout of
// becoming the oldest unanswered line. $H waits up to HomingTimeout without
// polling and fails with the *Alarm of a failed cycle (as Home, but a
// cancelled ctx does not reset). Other lines may wait for the planner for as long as ctx
// allows, with status polling to detect a mute controller or a lost reply.
// Send does not hold the stage when ctx is cancelled (MoveTo does).
func (s *Stage) Send(ctx context.Context, line string) error {
	l, err := checkLine(line)
	if err != nil {
		return err
	}
	u := strings.ToUpper(l)
	switch {
	case strings.HasPrefix(u, "$H"):
		s.mu.Lock()
		base := s.alarmSeq
		s.mu.Unlock()
		ps, err := s.submit(ctx, lineSpec{line: l, homing: true})
		if err != nil {
			return fmt.Errorf("grbl: send %q: %w", l, err)
		}
		w := waitSpec{mode: waitStrict, timeout: s.cfg.HomingTimeout, watchAlarm: true, alarmBase: base}
		return s.wrapSend(l, s.awaitReply(ctx, ps[0], w))
	case strings.HasPrefix(u, "$") && !strings.HasPrefix(u, "$J="):
		_, _, err := s.command(ctx, lineSpec{line: l})
		return s.wrapSend(l, err)
	}
	ps, err := s.submit(ctx, lineSpec{line: l})
	if err != nil {
		return fmt.Errorf("grbl: send %q: %w", l, err)
	}
	return s.wrapSend(l, s.awaitReply(ctx, ps[0], waitSpec{mode: waitMotion, timeout: dwellAllowance(l)}))
}

// wrapSend returns an *Error unwrapped (it already names the line) and
// anything else with the line for context.
func (s *Stage) wrapSend(line string, err error) error {
	var e *Error
	if err == nil || errors.As(err, &e) && err == error(e) {
		return err
	}
	return fmt.Errorf("grbl: send %q: %w", line, err)
}

// Stream sends lines through the character-counting stream, keeping the
// controller's receive buffer as full as its 128 bytes allow, and blocks
// until every line is answered. It stops at the first rejected line and
// returns its *Error (lines already sent still run; hold or reset to stop
// them). Waits are as for G-code lines in Send. Stream does not hold the
// stage when ctx is cancelled.
func (s *Stage) Stream(ctx context.Context, lines []string) error {
	w := waitSpec{mode: waitMotion}
	var sent []*pending
	check := func(all bool) error {
		for len(sent) > 0 {
			p := sent[0]
			if !all && !p.answered() {
				return nil
			}
			if err := s.awaitReply(ctx, p, w); err != nil {
				return s.wrapSend(p.line, err)
			}
			sent = sent[1:]
		}
		return nil
	}
	for _, l := range lines {
		ps, err := s.submit(ctx, lineSpec{line: l})
		sent = append(sent, ps...)
		if cerr := check(false); cerr != nil {
			return cerr
		}
		if err != nil {
			return fmt.Errorf("grbl: stream %q: %w", l, err)
		}
	}
	return check(true)
}
