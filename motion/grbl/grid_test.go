package grbl

import (
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/waferd/waferd/motion"
	"github.com/waferd/waferd/sim/grblsim"
)

// fastAxes are maximum rates and accelerations fast enough for tests; the
// firmware's own (500 mm/min, 10 mm/s²) would make every move take seconds.
var fastAxes = map[int]float64{110: 6000, 111: 6000, 120: 500, 121: 500}

func settings(spm float64, more map[int]float64) map[int]float64 {
	m := map[int]float64{100: spm, 101: spm}
	for k, v := range fastAxes {
		m[k] = v
	}
	for k, v := range more {
		m[k] = v
	}
	return m
}

// TestSimStepGrid: at 250, 320 and 800 steps/mm, in the stock firmware's
// negative machine space and in positive space, every move to a target off
// the step grid arrives: the driver moves to the nearest step and judges
// arrival against it, and the stage is there.
func TestSimStepGrid(t *testing.T) {
	negative := []motion.Point{
		{X: motion.MM(-20.002), Y: motion.MM(-30.002)}, // the move: both halfway between two steps at 250
		{X: motion.MM(-18.502), Y: motion.MM(-32.252)}, // then its jog 1.5 -2.25
		{X: motion.MM(-123.457), Y: motion.MM(-0.011)},
		{X: motion.MM(-0.001), Y: motion.MM(-199.999)},
		{X: motion.MM(-77.777), Y: motion.MM(-66.667)},
	}
	for _, spm := range []float64{250, 320, 800} {
		for _, space := range []string{"negative", "positive"} {
			t.Run(fmt.Sprintf("%g steps/mm %s", spm, space), func(t *testing.T) {
				ecfg := grblsim.Config{HomingRequired: true, Settings: settings(spm, nil)}
				targets := negative
				if space == "positive" {
					ecfg.ForceSetOrigin = true
					ecfg.Settings[23] = 3
					targets = nil
					for _, p := range negative {
						targets = append(targets, motion.Point{X: -p.X, Y: -p.Y})
					}
				}
				s, e := simStage(t, ecfg, simConfig())
				require.NoError(t, s.Home(ctxTimeout(t, 5*time.Second)))
				m, err := s.Machine(ctxTimeout(t, time.Second))
				require.NoError(t, err)
				assert.Equal(t, [2]float64{spm, spm}, m.StepsPerMM)
				home := e.Position() // the true position at machine zero's rest
				st, err := s.Status(ctxTimeout(t, time.Second))
				require.NoError(t, err)
				offset := home.Add(motion.Point{X: -st.XY().X, Y: -st.XY().Y}) // true minus machine: 0 once homed
				assert.Equal(t, motion.Point{}, offset)

				for _, p := range targets {
					require.NoError(t, s.MoveTo(ctxTimeout(t, 10*time.Second), p, 6000), "move to %v", p)
					want := s.Reach(p)
					for i, v := range []motion.Distance{want.X - p.X, want.Y - p.Y} {
						assert.LessOrEqual(t, math.Abs(float64(v)), 500/spm+1, "axis %d: the nearest step is within half a step", i)
					}
					st, err := s.Status(ctxTimeout(t, time.Second))
					require.NoError(t, err)
					assert.InDelta(t, float64(want.X), float64(st.XY().X), 1, "reported X")
					assert.InDelta(t, float64(want.Y), float64(st.XY().Y), 1, "reported Y")
					// The stage is on the grid point itself.
					pos := e.Position()
					gx, gy := m.Grid(0, p.X.Millimetres()), m.Grid(1, p.Y.Millimetres())
					assert.InDelta(t, gx, pos.X.Millimetres(), 0.0006, "true X")
					assert.InDelta(t, gy, pos.Y.Millimetres(), 0.0006, "true Y")
				}
			})
		}
	}
}

// TestSimBelowOneStep: a move shorter than half a step leaves the stage
// where it is, and MoveTo says so in its log.
func TestSimBelowOneStep(t *testing.T) {
	log := &logSink{}
	cfg := simConfig()
	cfg.Logf = log.Logf
	s, e := simStage(t, grblsim.Config{Settings: settings(250, nil)}, cfg)
	ctx := ctxTimeout(t, 10*time.Second)
	require.NoError(t, s.MoveTo(ctx, motion.Point{X: motion.MM(10)}, 6000))
	before := e.Position()
	p := motion.Point{X: motion.MM(10.001)}
	assert.Equal(t, motion.Point{X: motion.MM(10)}, s.Reach(p), "0.001 mm is a quarter step at 250 steps/mm")
	require.NoError(t, s.MoveTo(ctx, p, 6000))
	assert.Equal(t, before, e.Position())
	assert.True(t, log.Contains("less than half a step"))
}

func TestFormatTarget(t *testing.T) {
	for mm, want := range map[float64]string{
		10: "10.000", -2.5: "-2.500", 12.34375: "12.34375", 299.99875: "299.99875",
		-20.004: "-20.004", 0: "0.000", 1234.5678: "1234.5678", 0.00125: "0.00125",
	} {
		assert.Equal(t, want, formatTarget(mm), "%v", mm)
	}
}

// TestSimMachineAndTravel: the settings read at Connect give machine
// space, and a travel outside it is refused with an error naming both.
func TestSimMachineAndTravel(t *testing.T) {
	s, _ := simStage(t, grblsim.Config{HomingRequired: true, Settings: map[int]float64{130: 300, 131: 250, 27: 2, 10: 3}}, simConfig())
	m, err := s.Machine(ctxTimeout(t, time.Second))
	require.NoError(t, err)
	assert.Equal(t, Machine{
		StepsPerMM: [2]float64{250, 250}, MaxRate: [2]float64{500, 500}, Accel: [2]float64{10, 10},
		MaxTravel: [2]float64{300, 250}, Homing: true, PullOff: 2, SoftLimits: true, StatusMask: 3,
		Options: "V", PlannerBlocks: 15, RxBuffer: 128,
	}, m)
	space, ok := m.Space()
	require.True(t, ok)
	assert.Equal(t, motion.Rect{Min: motion.Point{X: motion.MM(-300), Y: motion.MM(-250)}}, space)
	assert.NoError(t, m.CheckTravel(motion.Rect{Min: motion.Point{X: motion.MM(-300), Y: motion.MM(-250)}, Max: motion.Point{X: motion.MM(-2), Y: motion.MM(-2)}}))
	err = m.CheckTravel(motion.Rect{Max: motion.Point{X: motion.MM(300), Y: motion.MM(300)}})
	require.Error(t, err)
	for _, want := range []string{
		"grbl: travel X [0.000, 300.000] Y [0.000, 300.000] mm does not fit the controller's machine space clear of its switches X [-300.000, -2.000] Y [-250.000, -2.000] mm",
		"$130=300, $131=250", "homing to the + end of X and Y ($23=0)", "pull-off $27=2", "homes into negative space",
	} {
		assert.Contains(t, err.Error(), want)
	}

	// The switch's end keeps the pull-off clear: a travel up to machine
	// zero would trip the switch.
	assert.ErrorContains(t, m.CheckTravel(space), "clear of its switches X [-300.000, -2.000] Y [-250.000, -2.000] mm")
	clear, ok := m.Clear()
	require.True(t, ok)
	assert.Equal(t, motion.Rect{Min: motion.Point{X: motion.MM(-300), Y: motion.MM(-250)}, Max: motion.Point{X: motion.MM(-2), Y: motion.MM(-2)}}, clear)
	// X homes to its - end: its switch is at -$130.
	m.HomingDirMask = 1
	clear, _ = m.Clear()
	assert.Equal(t, motion.Rect{Min: motion.Point{X: motion.MM(-298), Y: motion.MM(-250)}, Max: motion.Point{X: 0, Y: motion.MM(-2)}}, clear)
	m.HomingDirMask = 0

	// Force origin, homing to the - ends: positive space.
	m.ForceOrigin, m.HomingDirMask = true, 3
	space, _ = m.Space()
	assert.Equal(t, motion.Rect{Max: motion.Point{X: motion.MM(300), Y: motion.MM(250)}}, space)
	assert.NoError(t, m.CheckTravel(motion.Rect{Max: motion.Point{X: motion.MM(300), Y: motion.MM(250)}}))
	assert.ErrorContains(t, m.CheckTravel(motion.Rect{Min: motion.Point{X: motion.MM(-1)}, Max: motion.Point{X: motion.MM(10), Y: motion.MM(10)}}), "HOMING_FORCE_SET_ORIGIN")
	// No homing: nothing to check against.
	m.Homing = false
	_, ok = m.Space()
	assert.False(t, ok)
	assert.NoError(t, m.CheckTravel(motion.Rect{Max: motion.Point{X: motion.MM(1000)}}))
}

func TestConnectRefusesInches(t *testing.T) {
	s, _ := setup(t, testConfig(nil), func(f *fakeGrbl) {
		f.onLine = func(_ *fakeGrbl, l string) ([]string, bool) {
			if l == "$$" {
				set := strings.ReplaceAll(strings.Join(fakeSettings, "\n"), "$13=0", "$13=1")
				return append(strings.Split(set, "\n"), "ok"), true
			}
			return nil, false
		}
	})
	err := s.Connect(ctxTimeout(t, 2*time.Second))
	require.ErrorContains(t, err, "$13=1")
}

// TestSimSetOrigin: on a stage without homing ($22=0) an operator jogs to
// a mark and declares where it is: positions are then counted from it, on
// the controller's step grid, and moves go where they should.
func TestSimSetOrigin(t *testing.T) {
	s, e := simStage(t, grblsim.Config{Settings: settings(250, nil)}, simConfig())
	ctx := ctxTimeout(t, 20*time.Second)
	require.NoError(t, s.MoveTo(ctx, motion.Point{X: motion.MM(12.345), Y: motion.MM(-6.789)}, 6000)) // the jog to the mark
	mark := e.Position()
	require.NoError(t, s.SetOrigin(ctx, motion.Point{X: motion.MM(100), Y: motion.MM(50)}))
	st, err := s.Status(ctx)
	require.NoError(t, err)
	assert.Equal(t, motion.Point{X: motion.MM(100), Y: motion.MM(50)}, st.XY())
	last, _ := s.LastStatus()
	assert.Equal(t, st.XY(), last.XY())

	p := motion.Point{X: motion.MM(105.001), Y: motion.MM(47.5)}
	require.NoError(t, s.MoveTo(ctx, p, 6000))
	st, err = s.Status(ctx)
	require.NoError(t, err)
	assert.Equal(t, s.Reach(p), st.XY())
	assert.InDelta(t, 5.001, (e.Position().X - mark.X).Millimetres(), 0.002+0.001, "moved 5 mm from the mark, to the step")
	assert.InDelta(t, -2.5, (e.Position().Y - mark.Y).Millimetres(), 0.001)

	// Again, somewhere else: the new origin replaces the old.
	require.NoError(t, s.SetOrigin(ctx, motion.Point{}))
	st, err = s.Status(ctx)
	require.NoError(t, err)
	assert.Equal(t, motion.Point{}, st.XY())

	h, _ := simStage(t, stageEmu(), simConfig())
	require.ErrorIs(t, h.SetOrigin(ctx, motion.Point{}), ErrHomingEnabled)
}
