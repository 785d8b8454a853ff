package grbl

import (
	"sync"
	"time"
)

// The driver reuses what every move and status report would otherwise
// allocate: timers, pending-line records, status requests and the channels
// that signal them. A run of thousands of moves then allocates next to
// nothing in the driver (BenchmarkMoveAllocs).

// maxSpare bounds each free list; more is left to the garbage collector.
const maxSpare = 8

// freeList is a bounded stack of reusable values, safe for concurrent use.
// Its mutex is a leaf: it may be taken with Stage.mu held.
type freeList[T any] struct {
	mu    sync.Mutex
	items []T
}

// get returns a value from the list, and false if it is empty.
func (f *freeList[T]) get() (T, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var zero T
	n := len(f.items)
	if n == 0 {
		return zero, false
	}
	v := f.items[n-1]
	f.items[n-1] = zero
	f.items = f.items[:n-1]
	return v, true
}

// put adds v to the list unless it is full.
func (f *freeList[T]) put(v T) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.items) < maxSpare {
		f.items = append(f.items, v)
	}
}

// timer returns a running timer that fires after d. Return it with
// putTimer. Since Go 1.23 a timer that is stopped or reset delivers no
// value from before that, so a reused timer never fires early.
func (s *Stage) timer(d time.Duration) *time.Timer {
	if t, ok := s.timers.get(); ok {
		t.Reset(d)
		return t
	}
	return time.NewTimer(d)
}

// putTimer stops t and keeps it for reuse; t must not be used afterwards.
func (s *Stage) putTimer(t *time.Timer) {
	t.Stop()
	s.timers.put(t)
}

// ticker returns a running ticker of period d. Return it with putTicker.
func (s *Stage) ticker(d time.Duration) *time.Ticker {
	if t, ok := s.tickers.get(); ok {
		t.Reset(d)
		return t
	}
	return time.NewTicker(d)
}

// putTicker stops t and keeps it for reuse; t must not be used afterwards.
func (s *Stage) putTicker(t *time.Ticker) {
	t.Stop()
	s.tickers.put(t)
}
