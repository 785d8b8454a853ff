package grbl

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Noise on the link
//
// A serial line with noise garbles a line now and then. The driver takes it
// as noise, not as a broken machine:
//
//   - A line that is not a GRBL 1.1 message is skipped and counted
//     (NoiseStats.Garbled).
//   - A garbled status report ('<' or '>' in the line) while a status
//     request waits for its report costs one poll: the request is asked
//     again at once (NoiseStats.StatusLost). So does a status request not
//     answered within ReplyTimeout; only a second one in a row means the
//     controller is not responding (motion.ErrTimeout).
//   - A garbled ok or error:N loses the reply of a line, and character
//     counting would stay one line behind. The driver notices when the
//     controller has nothing left to answer while a line still waits: two
//     status reports in a row say Idle (or Alarm, Check) with the planner
//     and the receive buffer empty (Bf:, which needs $10=3 and $I's
//     [OPT:...] sizes), and the second was asked for after the first
//     arrived and after any dwell of the line; without Bf:, the
//     controller has been idle for ReplyTimeout (plus the dwell). Every
//     line written before the first of those reports has then been
//     answered: the lines still waiting are completed with an error
//     wrapping ErrReplyLost (NoiseStats.RepliesLost), and the stream
//     stays in step: no reset is needed. Whether such a line got ok or
//     error:N is unknown, and with several lines in flight the replies
//     that did arrive may have been paired with the wrong lines; MoveTo
//     does not care (it confirms the move by the controller's position),
//     Send and Stream return the error. With Bf: reported a lost reply
//     costs two polls; without it, ReplyTimeout.
//
// The first noise after a quiet NoiseLogInterval is logged at once
// (Config.Warnf); noise within the interval only counts, and the next line
// logged says how much there was.

// ErrReplyLost: the reply (ok or error:N) of a line was lost on the link;
// the controller did answer it, so the stream is still in step, but
// whether the line was accepted is unknown.
var ErrReplyLost = errors.New("grbl: reply lost on the link")

// errGarbledReport: the status report that answered a request arrived
// garbled; ask again.
var errGarbledReport = errors.New("grbl: status report garbled on the link")

// NoiseStats counts the noise on the link since Connect (see "Noise on the
// link" in the package documentation).
type NoiseStats struct {
	// Lines is every line received, garbled or not.
	Lines int
	// Garbled is the lines received that are not GRBL 1.1 messages.
	Garbled int
	// StatusLost is the status reports that arrived garbled or not at
	// all while a request waited for them; each was asked for again.
	StatusLost int
	// RepliesLost is the lines completed with ErrReplyLost.
	RepliesLost int
	// Last is when the last noise was seen, LastLine the last garbled line
	// (quoted, at most 80 characters), "" if none.
	Last     time.Time
	LastLine string
}

// Any reports whether any noise was seen.
func (n NoiseStats) Any() bool { return n.Garbled+n.StatusLost+n.RepliesLost > 0 }

// Add returns the sum of n and o, for a stage that spans several links
// (Lines, Garbled, StatusLost and RepliesLost add up; Last and LastLine are
// the later one's).
func (n NoiseStats) Add(o NoiseStats) NoiseStats {
	sum := NoiseStats{
		Lines: n.Lines + o.Lines, Garbled: n.Garbled + o.Garbled,
		StatusLost: n.StatusLost + o.StatusLost, RepliesLost: n.RepliesLost + o.RepliesLost,
		Last: n.Last, LastLine: n.LastLine,
	}
	if o.Last.After(n.Last) {
		sum.Last, sum.LastLine = o.Last, o.LastLine
	}
	return sum
}

func (n NoiseStats) String() string {
	return fmt.Sprintf("%d garbled of %d lines, %d status reports lost, %d replies lost", n.Garbled, n.Lines, n.StatusLost, n.RepliesLost)
}

// Noise returns the noise seen on the link since Connect. It does not
// block or talk to the controller.
func (s *Stage) Noise() NoiseStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.noise
}

// noiseKind is what noteNoise counts.
type noiseKind int

const (
	noiseGarbled noiseKind = iota
	noiseStatusLost
	noiseReplyLost
)

// noteNoiseLocked counts one noise event and returns the line to log, if
// this one is to be logged (see "Noise on the link"); the caller logs it
// once it has released s.mu.
func (s *Stage) noteNoiseLocked(kind noiseKind, what string) string {
	now := time.Now()
	n := &s.noise
	switch kind {
	case noiseGarbled:
		n.Garbled++
		n.LastLine = quoteShort(what)
	case noiseStatusLost:
		n.StatusLost++
	case noiseReplyLost:
		n.RepliesLost++
	}
	n.Last = now
	if !s.noiseLogged.IsZero() && now.Sub(s.noiseLogged) < s.cfg.NoiseLogInterval {
		return ""
	}
	since := n.Garbled + n.StatusLost + n.RepliesLost - s.noiseAtLog
	s.noiseAtLog += since
	msg := fmt.Sprintf("grbl: noise on the link: %s", describeNoise(kind, what))
	if !s.noiseLogged.IsZero() && since > 1 {
		msg += fmt.Sprintf(" (%d noise events in the last %v)", since, now.Sub(s.noiseLogged).Round(time.Second))
	}
	msg += fmt.Sprintf("; since connect %s; at most one such line per %v", n, s.cfg.NoiseLogInterval)
	s.noiseLogged = now
	return msg
}

func describeNoise(kind noiseKind, what string) string {
	switch kind {
	case noiseGarbled:
		return "garbled line " + quoteShort(what) + " skipped"
	case noiseStatusLost:
		return "status report lost (" + what + "), asked again"
	}
	return "reply lost (" + what + ")"
}

// quoteShort quotes s, cut to 80 characters.
func quoteShort(s string) string {
	if len(s) > 80 {
		s = s[:80] + "…"
	}
	return fmt.Sprintf("%q", s)
}

// noteNoise is noteNoiseLocked for a caller that does not hold s.mu; it
// logs.
func (s *Stage) noteNoise(kind noiseKind, what string) {
	s.mu.Lock()
	msg := s.noteNoiseLocked(kind, what)
	s.mu.Unlock()
	if msg != "" {
		s.warnf("%s", msg)
	}
}

// looksLikeReport reports whether a garbled line was probably a status
// report: GRBL puts '<' and '>' in nothing else, and one garbled byte
// leaves at least one of them.
func looksLikeReport(line string) bool {
	return strings.ContainsAny(line, "<>")
}
