package grbl

import (
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/waferd/waferd/motion"
)

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
