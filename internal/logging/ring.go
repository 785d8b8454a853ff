package logging

import (
	"io"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// MaxRingLine is the longest line a Ring keeps, in bytes; longer lines are
// cut and marked with "…".
const MaxRingLine = 1024

// Ring keeps the most recent log lines in memory (the console's log
// command). It is an io.Writer for Root.Tee. Safe for concurrent use.
type Ring struct {
	stamp bool // prefix each line with the time (set by Tee in journal mode)

	mu    sync.Mutex
	lines []string
	next  int  // where the next line goes
	full  bool // lines has wrapped
	total uint64
}

// NewRing returns a ring of the last n lines (n < 1 means 1).
func NewRing(n int) *Ring {
	return &Ring{lines: make([]string, max(n, 1))}
}

// Write stores each line of p. A line is never split across calls: the
// logger writes whole lines.
func (r *Ring) Write(p []byte) (int, error) {
	s := strings.TrimRight(string(p), "\n")
	r.mu.Lock()
	defer r.mu.Unlock()
	var now string
	if r.stamp {
		now = time.Now().Format("2006-01-02T15:04:05.000 ")
	}
	for line := range strings.SplitSeq(s, "\n") {
		line = strings.TrimRight(line, "\r")
		if len(line) > MaxRingLine {
			line = line[:MaxRingLine]
			for !utf8.ValidString(line) && len(line) > 0 {
				line = line[:len(line)-1]
			}
			line += "…"
		}
		r.lines[r.next] = now + strings.TrimLeft(line, " ")
		r.next++
		r.total++
		if r.next == len(r.lines) {
			r.next, r.full = 0, true
		}
	}
	return len(p), nil
}

// Lines returns the last n lines, oldest first (all of them if n ≤ 0 or n
// exceeds what is kept).
func (r *Ring) Lines(n int) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	have := r.next
	if r.full {
		have = len(r.lines)
	}
	if n <= 0 || n > have {
		n = have
	}
	out := make([]string, 0, n)
	for i := have - n; i < have; i++ {
		j := i
		if r.full {
			j = (r.next + i) % len(r.lines)
		}
		out = append(out, r.lines[j])
	}
	return out
}

// Total is the number of lines written since NewRing (kept or not).
func (r *Ring) Total() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.total
}

// Tee also sends every message at level or more severe to w, uncoloured
// and without journald priorities. A *Ring given to Tee stamps lines with
// the time when the Root's output has none (journal mode). Safe to call at
// any time.
func (r *Root) Tee(w io.Writer, level Level) {
	if ring, ok := w.(*Ring); ok && r.journal {
		ring.mu.Lock()
		ring.stamp = true
		ring.mu.Unlock()
	}
	r.l.AddCustomLog(w, false, level)
}
