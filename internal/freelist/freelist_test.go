package freelist

import (
	"runtime"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type buf struct{ b [64]byte }

func TestKeepsAcrossCollections(t *testing.T) {
	l := New[buf](4)
	a, b := new(buf), new(buf)
	l.Put(a)
	l.Put(b)
	runtime.GC()
	runtime.GC() // a sync.Pool is empty by now
	require.Equal(t, 2, l.Len())
	assert.Same(t, b, l.Get(), "the object put last comes first")
	assert.Same(t, a, l.Get())
	assert.Nil(t, l.Get(), "an empty list gives nil")
}

func TestLimit(t *testing.T) {
	l := New[buf](2)
	kept := []*buf{new(buf), new(buf)}
	for _, x := range kept {
		l.Put(x)
	}
	l.Put(new(buf)) // beyond the limit: dropped
	l.Put(nil)      // ignored
	require.Equal(t, 2, l.Len())
	assert.Same(t, kept[1], l.Get())
	assert.Same(t, kept[0], l.Get())
	assert.Nil(t, l.Get())
	assert.Panics(t, func() { New[buf](0) })
}

func TestGetPutDoNotAllocate(t *testing.T) {
	l := New[buf](4)
	l.Put(new(buf))
	allocs := testing.AllocsPerRun(100, func() {
		x := l.Get()
		l.Put(x)
	})
	assert.Zero(t, allocs)
}

// TestConcurrent checks, under the race detector, that no object is handed
// to two holders at once and none is lost.
func TestConcurrent(t *testing.T) {
	const workers, rounds, objects = 8, 2000, 4
	l := New[buf](objects)
	for range objects {
		l.Put(new(buf))
	}
	var (
		mu   sync.Mutex
		held = make(map[*buf]bool)
		wg   sync.WaitGroup
	)
	for w := range workers {
		wg.Go(func() {
			for i := range rounds {
				x := l.Get()
				if x == nil {
					continue // all out with other workers
				}
				mu.Lock()
				dup := held[x]
				held[x] = true
				mu.Unlock()
				if !assert.False(t, dup, "worker %d round %d: object handed out twice", w, i) {
					return
				}
				x.b[0]++ // the race detector sees two writers if it were shared
				mu.Lock()
				delete(held, x)
				mu.Unlock()
				l.Put(x)
			}
		})
	}
	wg.Wait()
	assert.Equal(t, objects, l.Len(), "every object is back")
}
