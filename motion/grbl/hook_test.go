package grbl

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/waferd/waferd/motion"
)

// lateCtx is a context whose cancellation has not reached its AfterFunc
// registrations: Done is closed, Err is set, but a function registered
// with context.AfterFunc has not started. That is the window in which a
// call can see its context cancelled before the abort's goroutine runs.
type lateCtx struct {
	done chan struct{}
}

func (c *lateCtx) Deadline() (time.Time, bool) { return time.Time{}, false }
func (c *lateCtx) Done() <-chan struct{}       { return c.done }
func (c *lateCtx) Value(any) any               { return nil }
func (c *lateCtx) Err() error {
	select {
	case <-c.done:
		return context.Canceled
	default:
		return nil
	}
}

// AfterFunc makes context.AfterFunc register here: f is never started.
func (c *lateCtx) AfterFunc(func()) (stop func() bool) {
	return func() bool { return true }
}

func TestAbortOnCancel(t *testing.T) {
	t.Run("not cancelled: no abort", func(t *testing.T) {
		var runs atomic.Int32
		ctx, cancel := context.WithCancel(context.Background())
		end := abortOnCancel(ctx, func() { runs.Add(1) })
		end()
		cancel()
		time.Sleep(10 * time.Millisecond) // a registration left behind would run now
		assert.Zero(t, runs.Load())
	})
	t.Run("cancelled: end waits for the abort in progress", func(t *testing.T) {
		started, release := make(chan struct{}), make(chan struct{})
		var finished atomic.Bool
		ctx, cancel := context.WithCancel(context.Background())
		end := abortOnCancel(ctx, func() {
			close(started)
			<-release
			finished.Store(true)
		})
		cancel()
		<-started
		ended := make(chan struct{})
		go func() { end(); close(ended) }()
		select {
		case <-ended:
			t.Fatal("end returned while the abort was still running")
		case <-time.After(20 * time.Millisecond):
		}
		close(release)
		<-ended
		assert.True(t, finished.Load())
	})
	t.Run("cancelled before the goroutine started: end runs the abort", func(t *testing.T) {
		ctx := &lateCtx{done: make(chan struct{})}
		var runs atomic.Int32
		end := abortOnCancel(ctx, func() { runs.Add(1) })
		close(ctx.done)
		end()
		assert.Equal(t, int32(1), runs.Load())
	})
}

// TestCancelledMoveHoldsBeforeTheHookRuns: a MoveTo that sees its context
// cancelled before the abort's goroutine has started still writes the feed
// hold before it returns.
func TestCancelledMoveHoldsBeforeTheHookRuns(t *testing.T) {
	s, f := connected(t, testConfig(nil), func(f *fakeGrbl) { f.moveDur = 10 * time.Second })
	ctx := &lateCtx{done: make(chan struct{})}
	go func() {
		assert.Eventually(t, func() bool { return f.State() == "Run" }, 2*time.Second, time.Millisecond)
		close(ctx.done)
	}()
	require.ErrorIs(t, s.MoveTo(ctx, motion.Point{X: motion.MM(10)}, 100), context.Canceled)
	require.Eventually(t, func() bool { return len(f.RT('!')) == 1 }, time.Second, time.Millisecond)
	require.NoError(t, s.Hold(ctxTimeout(t, time.Second)))
	require.NoError(t, s.Reset(ctxTimeout(t, 2*time.Second)))
}

// TestCancelledMovesEachHold: every cancelled move sends its own '!' at
// once, also after an earlier move's abort has run.
func TestCancelledMovesEachHold(t *testing.T) {
	cfg := testConfig(nil)
	cfg.PollInterval = 200 * time.Millisecond
	s, f := connected(t, cfg, func(f *fakeGrbl) { f.moveDur = 10 * time.Second })
	for round := 1; round <= 2; round++ {
		cause := errors.New("stop")
		ctx, cancel := context.WithCancelCause(context.Background())
		go func() {
			assert.Eventually(t, func() bool { return f.State() == "Run" }, 2*time.Second, time.Millisecond)
			cancel(cause)
		}()
		require.ErrorIs(t, s.MoveTo(ctx, motion.Point{X: motion.MM(float64(round))}, 100), cause)
		// One '!' from the abort of each move, one from each Hold.
		require.Eventually(t, func() bool { return len(f.RT('!')) == 2*round-1 }, time.Second, time.Millisecond)
		require.NoError(t, s.Hold(ctxTimeout(t, time.Second)))
		require.NoError(t, s.Reset(ctxTimeout(t, 2*time.Second)))
		cancel(nil)
	}
}

// TestMovesOnOneContextHold: after several moves made with one context, as
// a run makes them, cancelling that context during a later move still
// sends '!' at once, not at the next poll.
func TestMovesOnOneContextHold(t *testing.T) {
	cfg := testConfig(nil)
	cfg.PollInterval = 200 * time.Millisecond
	s, f := connected(t, cfg, nil)
	cause := errors.New("stop")
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	for i := 1; i <= 3; i++ {
		require.NoError(t, s.MoveTo(ctx, motion.Point{X: motion.MM(float64(i))}, 100))
	}
	require.Empty(t, f.RT('!'))
	f.mu.Lock()
	f.moveDur = 10 * time.Second
	f.mu.Unlock()
	go func() {
		assert.Eventually(t, func() bool { return f.State() == "Run" }, 2*time.Second, time.Millisecond)
		cancel(cause)
	}()
	start := time.Now()
	require.ErrorIs(t, s.MoveTo(ctx, motion.Point{X: motion.MM(9)}, 100), cause)
	require.Eventually(t, func() bool { return len(f.RT('!')) == 1 }, time.Second, time.Millisecond)
	assert.Less(t, time.Since(start), 2*time.Second, "the move ended with the hold, not the fake's 10 s")
}
