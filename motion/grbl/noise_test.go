package grbl

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/waferd/waferd/motion"
	"github.com/waferd/waferd/sim/grblsim"
)

// TestGarbledStatusCostsOnePoll: a status report garbled on the link is
// asked for again at once, not after ReplyTimeout; the noise is counted
// and logged.
func TestGarbledStatusCostsOnePoll(t *testing.T) {
	log := &logSink{}
	cfg := testConfig(nil)
	cfg.Warnf = log.Logf
	cfg.ReplyTimeout = 2 * time.Second
	s, f := connected(t, cfg, nil)
	// The fake answers '?' from its reader: swap its answer to the next
	// one for a garbled report by muting it and sending the garbage here.
	f.Set(func(f *fakeGrbl) { f.mute = true })
	go func() {
		assert.Eventually(t, func() bool { return len(f.RT('?')) >= 2 }, time.Second, time.Millisecond) // Connect's, then Status's
		f.Set(func(f *fakeGrbl) { f.mute = false })
		f.send("<Idle|MPos:0.000,0.0\x0100,0.000|FS:0,0>")
	}()
	start := time.Now()
	st, err := s.Status(ctxTimeout(t, 5*time.Second))
	require.NoError(t, err)
	assert.Equal(t, motion.StateIdle, st.State)
	assert.Less(t, time.Since(start), time.Second, "asked again at once, not after ReplyTimeout (2 s)")
	n := s.Noise()
	assert.Equal(t, 1, n.Garbled)
	assert.Equal(t, 1, n.StatusLost)
	assert.Contains(t, n.LastLine, "MPos:0.000,0.0")
	assert.True(t, log.Contains("grbl: noise on the link: garbled line"), "logged")
}

// TestNoiseLogRateLimited: noise is logged at once the first time, then
// at most once per NoiseLogInterval, saying how much there was between.
func TestNoiseLogRateLimited(t *testing.T) {
	log := &logSink{}
	cfg := testConfig(nil)
	cfg.Warnf = log.Logf
	cfg.NoiseLogInterval = 200 * time.Millisecond
	s, f := connected(t, cfg, nil)
	for range 5 {
		f.send("garbage")
	}
	require.Eventually(t, func() bool { return s.Noise().Garbled == 5 }, time.Second, time.Millisecond)
	count := func() int {
		log.mu.Lock()
		defer log.mu.Unlock()
		n := 0
		for _, l := range log.lines {
			if strings.Contains(l, "noise on the link") {
				n++
			}
		}
		return n
	}
	assert.Equal(t, 1, count(), "the first at once, the rest counted")
	time.Sleep(cfg.NoiseLogInterval)
	f.send("more garbage")
	require.Eventually(t, func() bool { return count() == 2 }, time.Second, time.Millisecond)
	assert.True(t, log.Contains("(5 noise events in the last"))
	assert.True(t, log.Contains("6 garbled of"))
}

// TestSimNoisyLinkMoves: over a link that garbles one line in twenty,
// moves and status requests still succeed; the noise is counted, status
// reports lost to it cost a poll each, and replies lost to it are
// recovered without a reset.
func TestSimNoisyLinkMoves(t *testing.T) {
	for _, bf := range []bool{false, true} {
		t.Run(fmt.Sprintf("Bf=%v", bf), func(t *testing.T) {
			log := &logSink{}
			cfg := simConfig()
			cfg.Warnf = log.Logf
			set := settings(800, nil)
			if bf {
				set[10] = 3
			}
			s, e := simStage(t, grblsim.Config{Settings: set, NoiseSeed: 3}, cfg)
			e.InjectNoise(0.05)
			ctx := ctxTimeout(t, 60*time.Second)
			for i := range 40 {
				p := motion.Point{X: motion.MM(float64(i%7) * 3.3331), Y: motion.MM(float64(i%5) * -2.2221)}
				require.NoError(t, s.MoveTo(ctx, p, 6000), "move %d", i)
				_, err := s.Status(ctx)
				require.NoError(t, err)
			}
			require.NoError(t, s.Err())
			n := s.Noise()
			t.Logf("%d corrupted by the link; driver: %v", e.Counters().Corrupted, n)
			assert.Positive(t, e.Counters().Corrupted)
			assert.Positive(t, n.Garbled+n.StatusLost+n.RepliesLost)
			assert.True(t, log.Contains("noise on the link"))
		})
	}
}

// TestSimLostReplyWithBf: with Bf: in the reports ($10=3) a reply lost on
// the link is recovered after two polls, well before ReplyTimeout.
func TestSimLostReplyWithBf(t *testing.T) {
	cfg := simConfig()
	cfg.ReplyTimeout = 3 * time.Second
	s, e := simStage(t, grblsim.Config{Settings: settings(250, map[int]float64{10: 3})}, cfg)
	m, err := s.Machine(ctxTimeout(t, time.Second))
	require.NoError(t, err)
	require.True(t, m.BufferReports())
	e.InjectDropOK(1)
	start := time.Now()
	err = s.Send(ctxTimeout(t, 10*time.Second), "G21")
	require.ErrorIs(t, err, ErrReplyLost)
	took := time.Since(start)
	t.Logf("lost reply recovered after %v (poll %v)", took, cfg.PollInterval)
	assert.Less(t, took, cfg.ReplyTimeout, "two polls, not ReplyTimeout")
	require.NoError(t, s.Send(ctxTimeout(t, time.Second), "G90"))
	assert.Equal(t, 1, s.Noise().RepliesLost)
	assert.Zero(t, s.Noise().Garbled)
}

// TestSimCleanLinkNoNoise: on a clean link nothing counts as noise and
// nothing is logged about it.
func TestSimCleanLinkNoNoise(t *testing.T) {
	log := &logSink{}
	cfg := simConfig()
	cfg.Warnf = log.Logf
	s, _ := simStage(t, stageEmu(), cfg)
	require.NoError(t, s.Home(ctxTimeout(t, 5*time.Second)))
	for i := range 10 {
		require.NoError(t, s.MoveTo(ctxTimeout(t, 10*time.Second), motion.Point{X: motion.MM(float64(i) * 1.0001), Y: motion.MM(5)}, 6000))
	}
	assert.False(t, s.Noise().Any())
	assert.Positive(t, s.Noise().Lines)
	assert.False(t, log.Contains("noise"))
}

// TestSimLostHomingOK: the ok of $H lost on the link costs ReplyTimeout
// after the cycle (GRBL answers the '?' sent with $H when the cycle ends),
// not HomingTimeout, and Home still clears the alarm lock.
func TestSimLostHomingOK(t *testing.T) {
	cfg := simConfig()
	cfg.HomingTimeout = 30 * time.Second
	s, e := simStage(t, stageEmu(), cfg)
	require.NotNil(t, s.Alarm())
	e.InjectDropOK(1)
	start := time.Now()
	require.NoError(t, s.Home(ctxTimeout(t, 20*time.Second)))
	took := time.Since(start)
	t.Logf("homed in %v with its ok lost (reply timeout %v)", took, cfg.ReplyTimeout)
	assert.Less(t, took, 5*time.Second)
	assert.Nil(t, s.Alarm())
	assert.Equal(t, 1, s.Noise().RepliesLost)
	require.NoError(t, s.MoveTo(ctxTimeout(t, 10*time.Second), motion.Point{X: motion.MM(3)}, 6000))
}
