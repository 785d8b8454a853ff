package grbl

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/waferd/waferd/motion"
)

// TestMoveAllocs keeps the steady state of MoveTo and Status, called with
// one context as a run does, free of allocations in the driver: the abort
// hook stays registered on the context, and status reports are parsed in
// the read buffer.
func TestMoveAllocs(t *testing.T) {
	s := New(newEchoGrbl(), Config{})
	defer s.Close()
	ctx := t.Context()
	require.NoError(t, s.Connect(ctx))
	i := 0
	step := func() {
		i++
		p := motion.Point{X: motion.Distance(i%7) * 1800, Y: motion.Distance(i%5) * -1800}
		if err := s.MoveTo(ctx, p, 6000.5); err != nil {
			t.Fatal(err)
		}
		st, err := s.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.XY() != p {
			t.Fatalf("status at %v, want %v", st.XY(), p)
		}
	}
	step() // fills the free lists and the move line's buffer
	assert.Zero(t, testing.AllocsPerRun(200, step), "allocations per move and status")
}

// TestAppendFeed keeps the F word as it was formatted before appendFeed:
// FormatFloat with three decimals, trailing zeros and point trimmed.
func TestAppendFeed(t *testing.T) {
	for _, f := range []motion.Speed{6000, 0.5, 1e6, 1500.25, 0.001, 0.0004, 123.4567, 10, 100.1} {
		old := strings.TrimRight(strings.TrimRight(strconv.FormatFloat(float64(f), 'f', 3, 64), "0"), ".")
		assert.Equal(t, "F"+old, string(appendFeed([]byte("F"), f)), "%v", f)
	}
}

// TestStatusPinsOutliveReadBuffer: status reports are parsed in the
// reader's buffer; what the Stage keeps of them must be copies.
func TestStatusPinsOutliveReadBuffer(t *testing.T) {
	s, f := connected(t, testConfig(nil), nil)
	f.send("<Idle|MPos:1.000,2.000,0.000|FS:0,0|Pn:XP>", "[MSG:"+strings.Repeat("Z", 60)+"]")
	require.Eventually(t, func() bool {
		for {
			select {
			case ev := <-s.Events():
				if ev.Kind == EventMessage {
					return true
				}
				continue
			default:
			}
			return false
		}
	}, time.Second, time.Millisecond)
	st, _ := s.LastStatus()
	assert.Equal(t, "XP", st.Pins)
	assert.Equal(t, motion.Point{X: motion.MM(1), Y: motion.MM(2)}, st.XY())
}

// TestCancelledMovesRearmHook: the reused abort hook of MoveTo still sends
// '!' at once after it has fired once.
func TestCancelledMovesRearmHook(t *testing.T) {
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
		// One '!' from the hook of each move, one from each Hold.
		require.Eventually(t, func() bool { return len(f.RT('!')) == 2*round-1 }, time.Second, time.Millisecond)
		require.NoError(t, s.Hold(ctxTimeout(t, time.Second)))
		require.NoError(t, s.Reset(ctxTimeout(t, 2*time.Second)))
		cancel(nil)
	}
}

// TestConcurrentStatusWithMoves shares status requests between MoveTo and
// other callers of Status while records are reused.
func TestConcurrentStatusWithMoves(t *testing.T) {
	s := New(newEchoGrbl(), Config{})
	defer s.Close()
	ctx := t.Context()
	require.NoError(t, s.Connect(ctx))
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := s.Status(ctx); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	for i := range 300 {
		p := motion.Point{X: motion.Distance(i) * 7, Y: -motion.Distance(i) * 3}
		require.NoError(t, s.MoveTo(ctx, p, 6000))
		st, err := s.Status(ctx)
		require.NoError(t, err)
		require.Equal(t, p, st.XY())
	}
	close(stop)
	wg.Wait()
}

// TestMovesOnOneContextHold: moves made with one context, as a run makes
// them, share one registration of the abort hook; cancelling that context
// during a later move still sends '!' at once, not at the next poll.
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
