package machine

import (
	"maps"
	"slices"
	"time"

	"github.com/waferd/waferd/stop"
)

// LatencyBounds are the upper bounds of the stop-latency histogram
// buckets; the last bucket holds everything longer.
var LatencyBounds = []time.Duration{
	time.Millisecond, 2 * time.Millisecond, 5 * time.Millisecond, 10 * time.Millisecond,
	20 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond, 200 * time.Millisecond,
	500 * time.Millisecond, time.Second, 2 * time.Second, 5 * time.Second,
}

// Histogram counts durations in the buckets of LatencyBounds.
type Histogram struct {
	// Counts has len(LatencyBounds)+1 buckets: Counts[i] counts durations
	// d with LatencyBounds[i-1] ≤ d < LatencyBounds[i].
	Counts        []int
	N             int
	Min, Max, Sum time.Duration
}

func (h *Histogram) add(d time.Duration) {
	if h.Counts == nil {
		h.Counts = make([]int, len(LatencyBounds)+1)
	}
	i, _ := slices.BinarySearchFunc(LatencyBounds, d, func(b, d time.Duration) int {
		if b <= d {
			return -1
		}
		return 1
	})
	h.Counts[i]++
	if h.N == 0 || d < h.Min {
		h.Min = d
	}
	h.Max = max(h.Max, d)
	h.Sum += d
	h.N++
}

func (h Histogram) clone() Histogram {
	h.Counts = slices.Clone(h.Counts)
	if h.Counts == nil {
		h.Counts = make([]int, len(LatencyBounds)+1)
	}
	return h
}

// Stats are the stop statistics since the machine was made.
type Stats struct {
	// Requests counts Stop calls by reason, whether or not anything was
	// running.
	Requests map[stop.Reason]int
	// Stopped counts operations that ended other than completed, by
	// reason ("operator", "fault", ...; "error" for a failed one).
	Stopped map[string]int
	// Completed counts operations that completed.
	Completed int
	// ToRest is the time from an operation's first stop to the stage at
	// rest (the hold confirmed, or the reset done); ToEnd to its Release
	// (the whole safe stop, and whatever the operation recorded).
	ToRest, ToEnd Histogram
}

// Stats returns the stop statistics.
func (m *Machine) Stats() Stats {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := &m.stats
	return Stats{
		Requests: maps.Clone(s.requests), Stopped: maps.Clone(s.stopped), Completed: s.done,
		ToRest: s.toRest.clone(), ToEnd: s.toEnd.clone(),
	}
}

// stats is guarded by Machine.mu.
type stats struct {
	requests  map[stop.Reason]int
	stopped   map[string]int
	done      int
	pending   bool      // a stop is in progress and being timed
	at        time.Time // when it began
	rest      time.Duration
	restKnown bool
	toRest    Histogram
	toEnd     Histogram
}

// request counts a Stop call.
func (s *stats) request(r stop.Reason) {
	if s.requests == nil {
		s.requests = make(map[stop.Reason]int)
	}
	s.requests[r]++
}

// begin starts the clock for the claim's stop (its first Stop, or its
// failure).
func (s *stats) begin() {
	if !s.pending {
		s.pending, s.at, s.restKnown = true, time.Now(), false
	}
}

func (s *stats) atRest() {
	if s.pending && !s.restKnown {
		s.rest, s.restKnown = time.Since(s.at), true
	}
}

func (s *stats) ended(e Ending) {
	if s.stopped == nil {
		s.stopped = make(map[string]int)
	}
	key := e.Reason.String()
	if e.Reason == stop.None {
		key = "error"
	}
	s.stopped[key]++
	if s.pending {
		s.toEnd.add(time.Since(s.at))
		if s.restKnown {
			s.toRest.add(s.rest)
		}
	}
	s.pending = false
}

func (s *stats) completed() {
	s.done++
	s.pending = false
}
