package grbl

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/waferd/waferd/motion"
)

// TestMoveAllocs keeps the steady state of MoveTo and Status nearly free of
// allocations in the driver: the two that context.AfterFunc makes to
// register the abort hook of each move, and the copy of each of the two
// status reports received (parsed from a string of their own, not a view
// of the read buffer: not worth unsafe code).
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
	assert.LessOrEqual(t, testing.AllocsPerRun(200, step), 4.0, "allocations per move and status")
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

func TestAbortHookReuse(t *testing.T) {
	var runs atomic.Int32
	h := newAbortHook(func() { runs.Add(1) })
	want := int32(0)
	for i := range 6 {
		ctx, cancel := context.WithCancel(context.Background())
		unregister := h.arm(ctx)
		if i%2 == 0 {
			cancel()
			want++
		}
		h.disarm(unregister) // waits for a run that has started
		assert.Equal(t, want, runs.Load(), "after round %d", i)
		cancel()
	}
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
