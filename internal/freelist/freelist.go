// Package freelist keeps released objects for reuse, as sync.Pool does,
// for buffers that a run takes and gives back at every site (camera frames,
// PNG encoders).
//
// It differs from sync.Pool where a run that must not allocate in its steady
// state needs it to:
//
//   - a garbage collection does not empty it (sync.Pool drops its objects
//     over two collections, and the runtime forces one every two minutes,
//     so a long run would make 4 MiB frames again after each);
//   - an object put back on one thread is the next one handed out on any
//     other (sync.Pool keeps one object per P that other Ps never look at,
//     and its shared lists grow in chunks that are themselves allocated).
//
// What it keeps is bounded: at most the limit given to New, and never more
// than were in use at once.
package freelist

import "sync"

// List holds up to a fixed number of idle objects. Its methods are safe for
// concurrent use and do not block beyond a short critical section.
type List[T any] struct {
	mu   sync.Mutex
	free []*T // len: idle objects; cap: the limit
}

// New returns an empty list that keeps at most max idle objects. It panics
// if max < 1.
func New[T any](max int) *List[T] {
	if max < 1 {
		panic("freelist: limit below 1")
	}
	return &List[T]{free: make([]*T, 0, max)}
}

// Get returns the object put most recently, or nil when none is idle. It
// does not allocate.
func (l *List[T]) Get() *T {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := len(l.free)
	if n == 0 {
		return nil
	}
	x := l.free[n-1]
	l.free[n-1] = nil
	l.free = l.free[:n-1]
	return x
}

// Put keeps x for a later Get, or leaves it to the garbage collector when
// the list already holds its limit. Put(nil) does nothing. It does not
// allocate. The caller must not use x after Put.
func (l *List[T]) Put(x *T) {
	if x == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.free) < cap(l.free) {
		l.free = append(l.free, x)
	}
}

// Len returns the number of idle objects.
func (l *List[T]) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.free)
}
