package motion

import (
	"math"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestDistanceFormatting(t *testing.T) {
	assert.Equal(t, "12.345", FormatMM(MM(12.345)))
	assert.Equal(t, "-0.001", FormatMM(-1))
	assert.Equal(t, "-12.050", FormatMM(MM(-12.05)))
	assert.Equal(t, "0.000mm", Distance(0).String())
	assert.Equal(t, Distance(1000), MM(1))
	assert.InDelta(t, 1.5, MM(1.5).Millimetres(), 1e-12)
	assert.Equal(t, "(1.000, -2.500)mm", Point{MM(1), MM(-2.5)}.String())
}

func TestRectAndStatus(t *testing.T) {
	r := Rect{Max: Point{MM(10), MM(10)}}
	assert.True(t, r.Contains(Point{0, MM(10)}))
	assert.False(t, r.Contains(Point{-1, 0}))

	for _, c := range []struct {
		s    Status
		stop bool
	}{
		{Status{State: StateIdle}, true},
		{Status{State: StateRun}, false},
		{Status{State: StateHold, Sub: 1}, false},
		{Status{State: StateHold, Sub: 0}, true},
		{Status{State: StateAlarm}, true},
		{Status{State: StateJog}, false},
		{Status{State: StateHome}, false},
	} {
		assert.Equal(t, c.stop, c.s.Stopped(), "%v", c.s)
	}
	st, ok := ParseState("Hold")
	assert.True(t, ok)
	assert.Equal(t, StateHold, st)
	_, ok = ParseState("Unknown")
	assert.False(t, ok, "Unknown is not a GRBL state")
	assert.Equal(t, "Hold:1 at (0.000, 0.000)mm", Status{State: StateHold, Sub: 1}.String())
}

func TestAppendMM(t *testing.T) {
	for _, c := range []struct {
		d    Distance
		want string
	}{
		{0, "0.000"}, {1, "0.001"}, {-1, "-0.001"}, {MM(12.345), "12.345"}, {MM(-12.05), "-12.050"},
		{MM(150), "150.000"}, {-999, "-0.999"}, {-1000, "-1.000"},
		{math.MaxInt64, "9223372036854775.807"}, {math.MinInt64, "-9223372036854775.808"},
	} {
		assert.Equal(t, "X"+c.want, string(AppendMM([]byte("X"), c.d)), "%d", int64(c.d))
		assert.Equal(t, c.want, FormatMM(c.d), "%d", int64(c.d))
	}
	buf := make([]byte, 0, 32)
	assert.Zero(t, testing.AllocsPerRun(100, func() { buf = AppendMM(buf[:0], -123456) }))
}

func TestStatusReady(t *testing.T) {
	for _, st := range []Status{{State: StateIdle, Sub: -1}, {State: StateAlarm, Sub: -1}, {State: StateUnknown, Sub: -1}} {
		assert.NoError(t, st.Ready(), "%s", st.StateName())
	}
	for _, tc := range []struct {
		st   Status
		want string
	}{
		{Status{State: StateHold, Sub: 0}, "reports Hold:0: held (feed hold)"},
		{Status{State: StateHold, Sub: 1}, "reports Hold:1: held"},
		{Status{State: StateDoor, Sub: 1}, "reports Door:1: stopped by its safety door"},
		{Status{State: StateCheck, Sub: -1}, "reports Check: in check mode"},
		{Status{State: StateSleep, Sub: -1}, "reports Sleep: asleep"},
		{Status{State: StateRun, Sub: -1}, "reports Run: still moving"},
		{Status{State: StateJog, Sub: -1}, "reports Jog: still moving"},
		{Status{State: StateHome, Sub: -1}, "reports Home: still moving"},
	} {
		err := tc.st.Ready()
		assert.ErrorIs(t, err, ErrNotReady, "%s", tc.st.StateName())
		assert.ErrorContains(t, err, tc.want)
	}
}
