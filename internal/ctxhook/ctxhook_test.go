package ctxhook

import (
	"context"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// counter is an abort that counts its runs and signals each on ran.
type counter struct {
	n   atomic.Int32
	ran chan struct{}
}

func newCounter() *counter { return &counter{ran: make(chan struct{}, 16)} }

func (c *counter) abort() {
	c.n.Add(1)
	c.ran <- struct{}{}
}

func (c *counter) wait(t *testing.T) {
	t.Helper()
	select {
	case <-c.ran:
	case <-time.After(10 * time.Second):
		t.Fatal("the abort did not run")
	}
}

func TestCancelWhileArmedAborts(t *testing.T) {
	c := newCounter()
	h := New(c.abort)
	ctx, cancel := context.WithCancel(context.Background())
	h.Arm(ctx)
	cancel()
	c.wait(t)
	assert.True(t, h.Disarm(), "Disarm reports the abort")
	assert.EqualValues(t, 1, c.n.Load())
}

func TestCancelWhileDisarmedDoesNotAbort(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCounter()
		h := New(c.abort)
		ctx, cancel := context.WithCancel(context.Background())
		h.Arm(ctx)
		assert.False(t, h.Disarm())
		cancel()
		synctest.Wait() // the registration has run, and found no call armed
		assert.Zero(t, c.n.Load())

		// A call armed on the cancelled context is aborted at once.
		h.Arm(ctx)
		c.wait(t)
		assert.True(t, h.Disarm())
		assert.EqualValues(t, 1, c.n.Load())
	})
}

// TestDisarmWaitsForAbortInProgress gives a wrong Disarm 20 ms to return
// (real time: a goroutine waiting for a mutex is not durably blocked, so
// synctest.Wait cannot tell when it has got as far as it can).
func TestDisarmWaitsForAbortInProgress(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	h := New(func() {
		close(entered)
		<-release
	})
	ctx, cancel := context.WithCancel(context.Background())
	h.Arm(ctx)
	cancel()
	<-entered
	disarmed := make(chan bool)
	go func() { disarmed <- h.Disarm() }()
	select {
	case <-disarmed:
		t.Fatal("Disarm returned while the abort was still running")
	case <-time.After(20 * time.Millisecond):
	}
	close(release)
	assert.True(t, <-disarmed)
}

func TestOldContextDoesNotAbortNewCall(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCounter()
		h := New(c.abort)
		old, cancelOld := context.WithCancel(context.Background())
		h.Arm(old)
		h.Disarm()
		cur, cancelCur := context.WithCancel(context.Background())
		h.Arm(cur)
		cancelOld()
		synctest.Wait() // a stale registration would have run now
		assert.False(t, h.Disarm())
		assert.Zero(t, c.n.Load())
		cancelCur()
	})
}

func TestReleaseUnregisters(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCounter()
		h := New(c.abort)
		ctx, cancel := context.WithCancel(context.Background())
		h.Arm(ctx)
		h.Disarm()
		h.Release()
		h.Release() // idempotent
		cancel()
		synctest.Wait()
		assert.Zero(t, c.n.Load())
	})
}

func TestSameContextArmsWithoutAllocating(t *testing.T) {
	h := New(func() {})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h.Arm(ctx)
	h.Disarm()
	allocs := testing.AllocsPerRun(1000, func() {
		h.Arm(ctx)
		h.Disarm()
	})
	assert.Zero(t, allocs)
}

// TestEveryArmedCancelAborts races cancellation against Arm and Disarm:
// an arming whose context was cancelled before it was disarmed has been
// aborted exactly once when Disarm returns, and no other arming is.
func TestEveryArmedCancelAborts(t *testing.T) {
	var n atomic.Int32
	h := New(func() { n.Add(1) })
	for i := range 2000 {
		ctx, cancel := context.WithCancel(context.Background())
		before := n.Load()
		h.Arm(ctx)
		done := make(chan struct{})
		go func() {
			if i%3 != 0 {
				cancel()
			}
			close(done)
		}()
		if i%2 == 0 {
			<-done
		}
		cancelledWhileArmed := ctx.Err() != nil
		aborted := h.Disarm()
		if cancelledWhileArmed {
			// Cancelled before Disarm: the abort ran, once, before
			// Disarm returned.
			assert.True(t, aborted, "case %d", i)
			assert.Equal(t, before+1, n.Load(), "case %d", i)
		}
		<-done
		cancel()
		// Whatever the registration does later, it never aborts a call
		// that is no longer armed.
		assert.Equal(t, map[bool]int32{true: before + 1, false: before}[aborted], n.Load(), "case %d", i)
	}
	h.Release()
}

// TestReleaseWhileArmed: a driver closed during a call releases the hook;
// the call's Disarm still works, without an abort.
func TestReleaseWhileArmed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCounter()
		h := New(c.abort)
		ctx, cancel := context.WithCancel(context.Background())
		h.Arm(ctx)
		h.Release()
		cancel()
		assert.False(t, h.Disarm())
		synctest.Wait()
		assert.Zero(t, c.n.Load())
	})
}
