package grblsim

import (
	"context"
	"io"
	"math"
	"net"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.bug.st/serial"

	"github.com/waferd/waferd/motion"
)

func TestBannerAndSoftReset(t *testing.T) {
	c := dial(t, classic(Config{TimeScale: 10}), true)
	c.expectBanner()
	st, sub := c.emu.State()
	assert.Equal(t, motion.StateIdle, st)
	assert.Equal(t, -1, sub)

	c.send("\x18")
	c.expectBanner() // Idle: no alarm, no lock message
	assert.Equal(t, "Idle", state(c.status()))
	assert.Equal(t, 1, c.emu.Counters().Resets)
}

func TestPowerUpLockedWhenHomingRequired(t *testing.T) {
	c := dial(t, classic(Config{TimeScale: 10, HomingRequired: true}), true)
	c.expectBanner()
	c.expect("[MSG:'$H'|'$X' to unlock]")
	assert.Equal(t, "Alarm", state(c.status()))
	require.Equal(t, []string{"error:9"}, c.cmd("G0 X1"))
	require.Equal(t, []string{"[MSG:Caution: Unlocked]", "ok"}, c.cmd("$X"))
	assert.Equal(t, "Idle", state(c.status()))
	c.ok("$X") // outside alarm: plain ok
	c.ok("G0 X1")
	c.waitState("Idle", time.Second)

	// A reset while idle does not lock again.
	c.send("\x18")
	c.expectBanner()
	c.silent(50 * time.Millisecond)
}

func TestLineResponses(t *testing.T) {
	c := dial(t, classic(Config{TimeScale: 10}), false)
	for _, tc := range []struct{ line, want string }{
		{"", "ok"},
		{"(just a comment)", "ok"},
		{"; semicolon comment", "ok"},
		{"g21 g90 (comment) g94", "ok"},
		{"G1 X1", "error:22"},       // no feed rate yet (reset clears F)
		{"1X", "error:1"},           // a word must start with a letter
		{"G1 XA", "error:2"},        // bad number
		{"Q1", "error:20"},          // unsupported word letter
		{"G2 X1 Y1 I1", "error:20"}, // arcs are not emulated
		{"M6", "error:20"},
		{"G1 X1 F-5", "error:4"},
		{"G17 G18", "error:21"},
		{"G0 G1 X1", "error:24"},
		{"G1.5 X1", "error:23"},
		{"X1 X2", "error:25"},
		{"G4", "error:28"},
		{"G80 X1", "error:31"},
		{"G0 X1 I1", "error:36"},
		{"$Q", "error:2"},     // read_float fails on the setting number
		{"$12", "error:3"},    // no '='
		{"$999=1", "error:3"}, // setting number out of range
		{"$50=1", "error:3"},  // no such setting
		{"$XX", "error:3"},
		{"$$=1", "error:3"},
		{"$110=-1", "error:4"},
		{"$0=2", "error:6"},
		{"$20=1", "error:10"},                          // soft limits need homing
		{"$H", "error:5"},                              // homing disabled
		{"G90X" + strings.Repeat("0", 76), "error:11"}, // 80 characters
		{"G90X" + strings.Repeat("0", 75), "ok"},       // 79 characters fit
		{"G 9 0 X" + strings.Repeat(" 0", 70) + " (ok)", "ok"}, // spaces do not count
		{"G1 X0.001 F100", "ok"},                               // feed set: modal from now on
		{"G1 X0", "ok"},
	} {
		got := c.cmd(tc.line)
		assert.Equal(t, []string{tc.want}, got, "line %q", tc.line)
	}
	c.ok("G4 P0") // $I and $# need Idle
	assert.Equal(t, "[HLP:$$ $# $G $I $N $x=val $Nx=line $J=line $SLP $C $X $H ~ ! ? ctrl-x]", c.cmd("$")[0])
	assert.Equal(t, []string{"[GC:G1 G54 G17 G21 G90 G94 M5 M9 T0 F100 S0]", "ok"}, c.cmd("$G"))
	assert.Equal(t, []string{"[VER:1.1h.20190830:]", "[OPT:VZ,15,128]", "ok"}, c.cmd("$I"))
	ngc := c.cmd("$#")
	require.Len(t, ngc, 12)
	assert.Equal(t, "[G54:0.000,0.000,0.000]", ngc[0])
	assert.Equal(t, "[PRB:0.000,0.000,0.000:0]", ngc[10])

	// "\r\n" is two line ends: two oks, as the firmware does.
	c.send("G90\r\n")
	c.expect("ok", "ok")
	assert.GreaterOrEqual(t, c.emu.Counters().Lines, 36)
}

func TestSettings(t *testing.T) {
	c := dial(t, classic(Config{TimeScale: 10, MaxRate: 5000, Accel: 400,
		Travel: motion.Rect{Min: motion.Point{X: 10 * motion.Millimetre}, Max: motion.Point{X: 210 * motion.Millimetre, Y: 150 * motion.Millimetre}}}), false)
	out := c.cmd("$$")
	require.Equal(t, "ok", out[len(out)-1])
	settings := map[string]string{}
	var order []string
	for _, l := range out[:len(out)-1] {
		k, v, ok := strings.Cut(l, "=")
		require.True(t, ok, l)
		require.True(t, strings.HasPrefix(k, "$"), l)
		settings[k] = v
		order = append(order, k)
	}
	assert.Equal(t, []string{"$0", "$1", "$2", "$3", "$4", "$5", "$6", "$10", "$11", "$12", "$13",
		"$20", "$21", "$22", "$23", "$24", "$25", "$26", "$27", "$30", "$31", "$32",
		"$100", "$101", "$102", "$110", "$111", "$112", "$120", "$121", "$122", "$130", "$131", "$132"}, order)
	assert.Equal(t, "5000.000", settings["$110"])
	assert.Equal(t, "5000.000", settings["$111"])
	assert.Equal(t, "400.000", settings["$120"])
	// A travel on the positive side: machine space from 0, homing to the
	// - ends.
	assert.Equal(t, "210.000", settings["$130"])
	assert.Equal(t, "150.000", settings["$131"])
	assert.Equal(t, "3", settings["$23"])
	assert.Equal(t, "0", settings["$20"])
	assert.Equal(t, "0", settings["$22"])
	assert.Equal(t, "3", settings["$10"])
	assert.Equal(t, "0.010", settings["$11"])
	assert.Equal(t, "1000", settings["$30"])

	c.ok("$110=3000")
	c.ok("$22=1")
	c.ok("$20=1")
	c.ok("$10=1")
	out = c.cmd("$$")
	assert.Contains(t, out, "$110=3000.000")
	assert.Contains(t, out, "$20=1")
	assert.Contains(t, out, "$22=1")
	// $10=1: MPos without the buffer field.
	r := c.status()
	assert.Empty(t, field(r, "Bf"))
	assert.Equal(t, "0.000,0.000,0.000", field(r, "MPos"))
	// $22=0 forces soft limits off.
	c.ok("$22=0")
	assert.Contains(t, c.cmd("$$"), "$20=0")

	c.ok("$N0=G21")
	assert.Equal(t, []string{"$N0=G21", "$N1=", "ok"}, c.cmd("$N"))
	c.ok("$I=bench")
	assert.Equal(t, []string{"[VER:1.1h.20190830:BENCH]", "[OPT:VZ,15,128]", "ok"}, c.cmd("$I"))
	assert.Equal(t, []string{"[MSG:Restoring defaults]", "ok"}, c.cmd("$RST=$"))
	c.expectBanner()
	assert.Contains(t, c.cmd("$$"), "$110=5000.000")
	assert.Equal(t, "0.000,0.000,0.000", field(c.status(), "MPos"))
}

// TestStockDefaults: with nothing configured the controller is GRBL 1.1h
// as shipped (defaults.h, DEFAULTS_GENERIC).
func TestStockDefaults(t *testing.T) {
	c := dial(t, Config{TimeScale: 10}, false)
	out := c.cmd("$$")
	require.Equal(t, "ok", out[len(out)-1])
	assert.Equal(t, []string{
		"$0=10", "$1=25", "$2=0", "$3=0", "$4=0", "$5=0", "$6=0", "$10=1", "$11=0.010", "$12=0.002", "$13=0",
		"$20=0", "$21=0", "$22=0", "$23=0", "$24=25.000", "$25=500.000", "$26=250", "$27=1.000",
		"$30=1000", "$31=0", "$32=0",
		"$100=250.000", "$101=250.000", "$102=250.000", "$110=500.000", "$111=500.000", "$112=500.000",
		"$120=10.000", "$121=10.000", "$122=10.000", "$130=200.000", "$131=200.000", "$132=200.000",
	}, out[:len(out)-1])
	// $10=1: MPos, no Bf:.
	assert.Equal(t, "<Idle|MPos:0.000,0.000,0.000|FS:0,0|WCO:0.000,0.000,0.000>", c.status())
	assert.Equal(t, []string{"[VER:1.1h.20190830:]", "[OPT:V,15,128]", "ok"}, c.cmd("$I"))
	// Homing is disabled: $H is error:5.
	assert.Equal(t, []string{"error:5"}, c.cmd("$H"))
}

// TestStepGrid: positions are whole steps of $100/$101, as the firmware
// rounds a target (in 32-bit floating point), and reports are those steps
// in mm with three decimals.
func TestStepGrid(t *testing.T) {
	check := func(spm float64, x, y string) {
		t.Helper()
		c := dial(t, Config{TimeScale: 20, Settings: map[int]float64{100: spm, 101: spm, 110: 6000, 111: 6000, 120: 500, 121: 500}}, false)
		c.ok("G1 X" + x + " Y" + y + " F3000")
		r := c.waitState("Idle", 5*time.Second)
		wantX, wantY := stepGrid(spm, x), stepGrid(spm, y)
		assert.Equal(t, printFloat(wantX, 3)+","+printFloat(wantY, 3)+",0.000", field(r, "MPos"), "%v steps/mm, G1 X%s Y%s", spm, x, y)
		// The true position (what a camera sees) is the grid point itself.
		p := c.emu.Position()
		assert.InDelta(t, wantX, p.X.Millimetres()-(-1), 0.0006, "X") // the stage powered up at -1 (resting off its switch)
		assert.InDelta(t, wantY, p.Y.Millimetres()-(-1), 0.0006, "Y")
	}
	check(250, "-20.003", "1.5")
	check(250, "0.0021", "-30.0019")
	check(320, "12.345", "-0.001")
	check(320, "7.0015", "0.0016")
	check(800, "-99.9994", "0.0006")
	check(800, "3.21", "-0.0007")
}

// stepGrid is the grid point a firmware reaches for a G-code number s at
// spm steps/mm, computed in float64 (the cases avoid ties, where the 32-bit
// arithmetic could differ).
func stepGrid(spm float64, s string) float64 {
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		panic(err)
	}
	return math.Round(v*spm) / spm
}

func TestHoming(t *testing.T) {
	c := dial(t, classic(Config{TimeScale: 10, HomingRequired: true, HomingTime: time.Second}), false)
	// Power-up: the stage rests where homing leaves it, GRBL counts from
	// zero there.
	assert.Equal(t, "0.000,0.000,0.000", field(c.status(), "MPos"))
	assert.Equal(t, motion.Point{}, c.emu.Position())
	c.cmd("$X")
	c.ok("G0 X5 Y7")
	c.waitState("Idle", 2*time.Second)
	assert.Equal(t, motion.Point{X: 5 * motion.Millimetre, Y: 7 * motion.Millimetre}, c.emu.Position())

	start := time.Now()
	c.send("$H\n")
	require.Eventually(t, func() bool { st, _ := c.emu.State(); return st == motion.StateHome }, time.Second, time.Millisecond)
	assert.True(t, c.emu.Moving())
	c.send("?")
	// '?' is not answered during the cycle, but once when it has ended.
	r := c.next()
	assert.Equal(t, "Home", state(r), r)
	assert.Equal(t, "0.000,0.000,0.000", field(r, "MPos"))
	c.expect("ok")
	assert.GreaterOrEqual(t, time.Since(start), 80*time.Millisecond) // 1 s at TimeScale 10
	assert.Equal(t, "Idle", state(c.status()))
	assert.Equal(t, motion.Point{}, c.emu.Position())
	assert.False(t, c.emu.Moving())

	// Homed: soft limits work in the homed frame; moves now allowed.
	c.ok("G0 X10 Y20")
	c.waitState("Idle", 2*time.Second)
	assert.Equal(t, motion.Point{X: 10 * motion.Millimetre, Y: 20 * motion.Millimetre}, c.emu.Position())

	// $H is refused while moving.
	c.ok("G1 X100 F6000")
	c.waitState("Run", time.Second)
	assert.Equal(t, []string{"error:8"}, c.cmd("$H"))
}

// TestStockHomingIntoNegativeSpace: a stock firmware homes to the + end
// ($23=0), sets machine zero at the switch and rests pull-off ($27) below
// it; the soft-limit box is -$130..0; Pn: names the switch the stage is
// on, and with hard limits ($21=1) reaching it raises ALARM:1.
func TestStockHomingIntoNegativeSpace(t *testing.T) {
	c := dial(t, Config{TimeScale: 20, HomingRequired: true, Settings: map[int]float64{110: 6000, 111: 6000, 120: 500, 121: 500, 27: 2}}, false)
	assert.Equal(t, "0.000,0.000,0.000", field(c.status(), "MPos"))
	c.ok("$H")
	r := c.status()
	assert.Equal(t, "Idle", state(r))
	assert.Equal(t, "-2.000,-2.000,0.000", field(r, "MPos"))
	assert.Empty(t, field(r, "Pn"), "pull-off: off the switches")
	assert.Equal(t, motion.Point{X: -2 * motion.Millimetre, Y: -2 * motion.Millimetre}, c.emu.Position())

	c.ok("G1 X-200 Y-150 F6000") // the far corner is inside
	c.waitState("Idle", 5*time.Second)
	c.ok("G1 X0 Y-150 F6000") // on the X switch, the edge of the box
	r = c.waitState("Idle", 5*time.Second)
	assert.Equal(t, "X", field(r, "Pn"))
	c.emu.InjectPins("PH")
	assert.Equal(t, "PXH", field(c.status(), "Pn"))
	c.emu.InjectPins("")
	c.send("G1 X1 F6000\n") // beyond: soft limit
	c.expect("ALARM:2", "[MSG:Reset to continue]")
	c.send("\x18")
	c.expect("ok")
	c.expectBanner()
	c.expect("[MSG:'$H'|'$X' to unlock]")

	// Homing to the - end ($23 bits set): the switch is at -$130, the
	// stage rests at -$130+$27.
	c.cmd("$X")
	c.ok("$23=3")
	c.ok("$131=100")
	c.ok("$H")
	assert.Equal(t, "-198.000,-98.000,0.000", field(c.status(), "MPos"))

	// Hard limits: the switch trips ALARM:1 (soft limits off to get there).
	c.ok("$20=0")
	c.ok("$21=1")
	c.ok("G1 X-250 F6000")
	c.expect("ALARM:1", "[MSG:Reset to continue]")
	p := c.emu.Position()
	assert.InDelta(t, -200, p.X.Millimetres(), 1, "stopped at the switch")
}

// TestForceSetOriginHomesIntoPositiveSpace: built with
// HOMING_FORCE_SET_ORIGIN and homing to the - ends, machine zero is where
// the stage rests after the pull-off and the box is 0..$130.
func TestForceSetOriginHomesIntoPositiveSpace(t *testing.T) {
	c := dial(t, Config{TimeScale: 20, HomingRequired: true, ForceSetOrigin: true,
		Settings: map[int]float64{23: 3, 110: 6000, 111: 6000, 120: 500, 121: 500}}, false)
	assert.Equal(t, []string{"[VER:1.1h.20190830:]", "[OPT:VZ,15,128]", "ok"}, c.cmd("$I"))
	c.ok("$H")
	assert.Equal(t, "0.000,0.000,0.000", field(c.status(), "MPos"))
	c.ok("G1 X200 Y200 F6000")
	c.waitState("Idle", 5*time.Second)
	c.send("G1 X-0.5 F6000\n")
	c.expect("ALARM:2", "[MSG:Reset to continue]")
}

// TestNoisyLink: a seeded fraction of the lines the controller sends are
// corrupted, by one byte dropped or replaced, their line ends kept; the
// same seed corrupts the same lines.
func TestNoisyLink(t *testing.T) {
	run := func(seed uint64) []string {
		c := dial(t, Config{TimeScale: 10, Noise: 0.2, NoiseSeed: seed}, true)
		var got []string
		for range 4 {
			c.send("$$\n")
		}
		for len(got) < 2+4*35 {
			got = append(got, c.next())
		}
		cnt := c.emu.Counters()
		assert.Positive(t, cnt.Corrupted)
		return got
	}
	a, b := run(7), run(7)
	assert.Equal(t, a, b, "the same seed corrupts the same lines")
	clean := 0
	for _, l := range a {
		if l == "" || l == "ok" || strings.HasPrefix(l, "Grbl 1.1h") || regexp.MustCompile(`^\$[0-9]+=[0-9.]+$`).MatchString(l) {
			clean++
		}
	}
	bad := len(a) - clean
	// A byte dropped or replaced may leave a valid line ("$110=500.000"
	// losing a 0), so fewer lines look garbled than were corrupted.
	assert.InDelta(t, 0.2*float64(len(a)), float64(bad), 0.12*float64(len(a)), "%d of %d lines garbled", bad, len(a))

	c := dial(t, Config{TimeScale: 10}, false)
	c.emu.InjectNoise(1)
	c.send("G90\n")
	assert.NotEqual(t, "ok", c.next())
	c.emu.InjectNoise(0)
	for range 20 {
		c.ok("G90")
	}
}

func TestResetDuringHomingRaisesAlarm6(t *testing.T) {
	c := dial(t, classic(Config{TimeScale: 10, HomingRequired: true, HomingTime: 10 * time.Second}), false)
	c.send("$H\n")
	require.Eventually(t, func() bool { st, _ := c.emu.State(); return st == motion.StateHome }, time.Second, time.Millisecond)
	c.send("\x18")
	// The aborted $H is still answered, then the controller restarts locked.
	c.expect("ALARM:6", "ok")
	c.expectBanner()
	c.expect("[MSG:'$H'|'$X' to unlock]")
	assert.Equal(t, "Alarm", state(c.status()))
}

func TestMoveTiming(t *testing.T) {
	const scale = 10
	c := dial(t, classic(Config{TimeScale: scale}), false)
	// 10 mm at 600 mm/min, 500 mm/s²: 0.02 s ramps, 1.02 s in all.
	start := time.Now()
	c.ok("G1 X10 F600") // ok when queued, long before the move ends
	assert.Less(t, time.Since(start), 60*time.Millisecond)
	assert.True(t, c.emu.Moving())

	var last float64
	var sawMid bool
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		r := c.status()
		x := field(r, "MPos")
		v := parseX(t, x)
		require.GreaterOrEqual(t, v, last, "position went back: %s", r)
		last = v
		if v > 0 && v < 10 {
			sawMid = true
			assert.Equal(t, "Run", state(r))
			p := c.emu.Position()
			assert.Greater(t, p.X, motion.Distance(0))
		}
		if state(r) == "Idle" {
			assert.Equal(t, "10.000,0.000,0.000", x)
			assert.Equal(t, "0,0", field(r, "FS"))
			break
		}
		require.Less(t, time.Since(start), 2*time.Second, "move did not end")
		<-tick.C
	}
	took := time.Since(start)
	assert.True(t, sawMid, "no report while moving")
	assert.GreaterOrEqual(t, took, 1020*time.Millisecond/scale-5*time.Millisecond)
	assert.False(t, c.emu.Moving())
	assert.Equal(t, motion.Point{X: 10 * motion.Millimetre}, c.emu.Position())

	// G91 relative moves and G20 inches; G4 waits for the planner to empty.
	c.ok("G91 G0 X-2.5 Y1")
	c.ok("G20 G0 X0.1")
	c.ok("G4 P0.01")
	assert.Equal(t, "10.040,1.000,0.000", field(c.status(), "MPos"))
	assert.Equal(t, "Idle", state(c.status()))
}

func parseX(t *testing.T, mpos string) float64 {
	t.Helper()
	x, _, _ := strings.Cut(mpos, ",")
	var v float64
	for i, part := range strings.SplitN(x, ".", 2) {
		var n float64
		for _, ch := range strings.TrimPrefix(part, "-") {
			n = n*10 + float64(ch-'0')
		}
		if i == 1 {
			n /= 1000
		}
		v += n
	}
	if strings.HasPrefix(x, "-") {
		v = -v
	}
	return v
}

// moveAndHold starts a 30 mm move at 20 mm/s with 100 mm/s² ramps and
// feed-holds it while cruising.
func moveAndHold(t *testing.T, c *client) {
	t.Helper()
	c.ok("G1 X30 F1200")
	c.waitState("Run", time.Second)
	require.Eventually(t, func() bool { return c.emu.Position().X > 5*motion.Millimetre }, 2*time.Second, time.Millisecond)
	c.send("!")
}

func TestFeedHoldAndResume(t *testing.T) {
	c := dial(t, classic(Config{TimeScale: 2, Accel: 100}), false)
	moveAndHold(t, c)
	// Decelerating from 20 mm/s at 100 mm/s² takes 0.2 s: Hold:1, then Hold:0.
	var seen []string
	var r string
	deadline := time.Now().Add(2 * time.Second)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for {
		r = c.status()
		s := state(r)
		if len(seen) == 0 || seen[len(seen)-1] != s {
			seen = append(seen, s)
		}
		if s == "Hold:0" {
			break
		}
		require.True(t, time.Now().Before(deadline), "no Hold:0: %v", seen)
		<-tick.C
	}
	assert.Contains(t, seen, "Hold:1")
	assert.NotContains(t, seen, "Idle")
	assert.Equal(t, "0", strings.Split(field(r, "FS"), ",")[0])
	st, sub := c.emu.State()
	assert.Equal(t, motion.StateHold, st)
	assert.Equal(t, 0, sub)
	assert.False(t, c.emu.Moving())
	held := c.emu.Position()
	assert.Less(t, held.X, 30*motion.Millimetre)
	c.silent(20 * time.Millisecond)
	assert.Equal(t, held, c.emu.Position(), "stage moved in Hold:0")

	// In Hold:0 the main loop is suspended: lines wait for the resume.
	c.send("G4 P0\n")
	c.silent(50 * time.Millisecond)
	c.send("~")
	c.expect("ok")
	c.waitState("Idle", 3*time.Second)
	assert.Equal(t, motion.Point{X: 30 * motion.Millimetre}, c.emu.Position())
	assert.Equal(t, 1, c.emu.Counters().FeedHolds)
	assert.Equal(t, 1, c.emu.Counters().CycleStarts)
}

func TestFeedHoldWhileIdleEntersHold0(t *testing.T) {
	c := dial(t, classic(Config{TimeScale: 10}), false)
	c.send("!")
	c.waitState("Hold:0", time.Second)
	c.send("\n")
	c.silent(30 * time.Millisecond) // suspended
	c.send("~")
	c.expect("ok")
	assert.Equal(t, "Idle", state(c.status()))
}

func TestResetDuringMotionAlarms(t *testing.T) {
	c := dial(t, classic(Config{TimeScale: 10}), false)
	c.ok("G1 X100 F3000")
	c.waitState("Run", time.Second)
	c.send("\x18")
	c.expect("ALARM:3")
	stopped := c.emu.Position()
	assert.False(t, c.emu.Moving())
	c.expectBanner()
	c.expect("[MSG:'$H'|'$X' to unlock]")
	assert.Equal(t, stopped, c.emu.Position(), "steppers must stop at once")
	assert.Less(t, stopped.X, 100*motion.Millimetre)
	r := c.status()
	assert.Equal(t, "Alarm", state(r))
	st, _ := c.emu.State()
	assert.Equal(t, motion.StateAlarm, st)
	assert.Equal(t, []string{"error:9"}, c.cmd("G0 X0"))
	assert.Equal(t, "Bf:15,128", "Bf:"+field(r, "Bf"), "planner flushed")
	c.cmd("$X")
	c.ok("G0 X0")
}

func TestResetInHold0KeepsPosition(t *testing.T) {
	c := dial(t, classic(Config{TimeScale: 4, Accel: 100}), false)
	moveAndHold(t, c)
	c.waitState("Hold:0", 2*time.Second)
	held := c.emu.Position()
	c.send("\x18")
	c.expectBanner() // no ALARM
	r := c.status()
	assert.Equal(t, "Idle", state(r))
	assert.Equal(t, "15", strings.Split(field(r, "Bf"), ",")[0])
	assert.Equal(t, held, c.emu.Position())
	assert.Equal(t, held.X, motion.MM(parseX(t, field(r, "MPos"))))
	// The rest of the move was flushed: the stage stays.
	c.silent(30 * time.Millisecond)
	assert.False(t, c.emu.Moving())
}

func TestResetDuringHold1Alarms(t *testing.T) {
	c := dial(t, classic(Config{TimeScale: 2, Accel: 10}), false)
	c.ok("G1 X40 F1200")
	require.Eventually(t, func() bool { return c.emu.Position().X > 500*motion.Micrometre }, 10*time.Second, time.Millisecond)
	c.send("!")
	c.waitState("Hold:1", time.Second)
	c.send("\x18")
	c.expect("ALARM:3")
}

func TestSoftLimit(t *testing.T) {
	c := dial(t, classic(Config{TimeScale: 10, HomingRequired: true}), false)
	c.cmd("$H")
	c.send("G0 X400\n")
	c.expect("ALARM:2", "[MSG:Reset to continue]")
	// Everything but a reset is ignored, '?' included.
	c.send("G0 X1\n?$X\n")
	c.silent(60 * time.Millisecond)
	assert.Equal(t, motion.StateAlarm, func() motion.State { s, _ := c.emu.State(); return s }())
	c.send("\x18")
	// The interrupted line is answered, the lines sent since are dropped.
	c.expect("ok")
	c.expectBanner()
	c.expect("[MSG:'$H'|'$X' to unlock]")
	c.silent(30 * time.Millisecond)
	assert.Equal(t, "Alarm", state(c.status()))
	assert.Equal(t, motion.Point{}, c.emu.Position(), "the stage did not move")
	c.cmd("$X")
	c.ok("G0 X300 Y300") // edges are inside
	c.waitState("Idle", 3*time.Second)

	// During a cycle the stage first stops under control.
	c.ok("G1 X0 F6000")
	require.Eventually(t, func() bool { return c.emu.Position().X < 299*motion.Millimetre }, 2*time.Second, time.Millisecond)
	c.send("G0 Y-1\n")
	c.expect("ALARM:2", "[MSG:Reset to continue]")
	assert.False(t, c.emu.Moving())
	p := c.emu.Position()
	assert.Greater(t, p.X, motion.Distance(0))
	assert.Less(t, p.X, 300*motion.Millimetre)
	c.send("\x18")
	c.expect("ok")
	c.expectBanner()
	c.expect("[MSG:'$H'|'$X' to unlock]")
	assert.Equal(t, p, c.emu.Position())
}

func TestPlannerFullAndRxOverflow(t *testing.T) {
	c := dial(t, classic(Config{TimeScale: 5}), false)
	// 16 moves of 10 mm at 600 mm/min (1.02 s each, 0.2 s at TimeScale 5).
	// Sent as a character-counting host would: each line once the previous
	// one is answered.
	start := time.Now()
	for i := 1; i <= 15; i++ {
		c.ok("G1 X" + itoa(10*i) + " F600")
	}
	c.send("G1 X160 F600\n")
	c.silent(60 * time.Millisecond) // the 16th waits for planner space
	r := c.status()
	assert.Equal(t, "0,128", field(r, "Bf"))

	// Bytes sent while the parser is blocked fill the 128-byte buffer; the
	// rest are dropped. Real-time bytes are not buffered.
	junk := strings.Repeat("(abcdefghijklmnopqrstuvwxyz)\n", 10) // 290 bytes
	c.send(junk)
	require.Eventually(t, func() bool { return c.emu.Counters().RxDropped == len(junk)-128 }, time.Second, time.Millisecond)
	r = c.status()
	assert.Equal(t, "0,0", field(r, "Bf"))

	c.expect("ok") // the 16th, once the first block is done
	assert.GreaterOrEqual(t, time.Since(start), 150*time.Millisecond)
	// The buffered comment lines (4 whole ones and a partial) follow.
	c.expect("ok", "ok", "ok", "ok")
	c.silent(30 * time.Millisecond)
	assert.Equal(t, "Run", state(c.status()))
}

func TestResetWhileWaitingForPlannerSpace(t *testing.T) {
	c := dial(t, classic(Config{TimeScale: 5}), false)
	for i := 1; i <= 15; i++ {
		c.ok("G1 X" + itoa(10*i) + " F600")
	}
	c.send("G1 X160 F600\n")
	c.silent(30 * time.Millisecond)
	c.send("\x18")
	// The blocked line is answered after the alarm, before the banner.
	c.expect("ALARM:3", "ok")
	c.expectBanner()
	c.expect("[MSG:'$H'|'$X' to unlock]")
	assert.Equal(t, "Bf:15,128", "Bf:"+field(c.status(), "Bf"))
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var d []byte
	for ; n > 0; n /= 10 {
		d = append([]byte{byte('0' + n%10)}, d...)
	}
	return string(d)
}

func TestDwell(t *testing.T) {
	c := dial(t, classic(Config{TimeScale: 10}), false)
	start := time.Now()
	c.ok("G4 P1")
	assert.GreaterOrEqual(t, time.Since(start), 95*time.Millisecond)

	// A reset during a dwell raises no alarm; the dwell line is still
	// answered before the banner.
	c.send("G4 P100\n")
	c.silent(30 * time.Millisecond)
	c.send("\x18")
	c.expect("ok")
	c.expectBanner()
	c.silent(30 * time.Millisecond)
	assert.Equal(t, "Idle", state(c.status()))
}

func TestJogAndJogCancel(t *testing.T) {
	c := dial(t, classic(Config{TimeScale: 2}), false)
	c.ok("$J=G91 X50 F1200")
	c.waitState("Jog", time.Second)
	assert.Equal(t, []string{"error:9"}, c.cmd("G0 X1"))
	require.Eventually(t, func() bool { return c.emu.Position().X > motion.Millimetre }, 2*time.Second, time.Millisecond)
	c.send("\x85")
	c.waitState("Idle", time.Second)
	p := c.emu.Position()
	assert.Less(t, p.X, 50*motion.Millimetre)
	assert.Greater(t, p.X, motion.Distance(0))
	assert.Equal(t, 1, c.emu.Counters().JogCancels)
	// The parser position follows the cancelled jog.
	c.ok("G91 G0 X1")
	c.ok("G4 P0")
	assert.Equal(t, p.X+motion.Millimetre, c.emu.Position().X)
	assert.Equal(t, []string{"error:16"}, c.cmd("$J=G0 X1 F100"))
	assert.Equal(t, []string{"error:28"}, c.cmd("$J=G4 X1 F100"))
	assert.Equal(t, []string{"error:22"}, c.cmd("$J=X1"))
}

func TestStatusFieldsRotate(t *testing.T) {
	c := dial(t, classic(Config{TimeScale: 10}), false)
	var wco, ov int
	for i := range 25 {
		r := c.status()
		if field(r, "WCO") != "" {
			wco++
			assert.Equal(t, "0.000,0.000,0.000", field(r, "WCO"))
		}
		if field(r, "Ov") != "" {
			ov++
			assert.Equal(t, "100,100,100", field(r, "Ov"))
		}
		if i == 0 {
			assert.Equal(t, "<Idle|MPos:0.000,0.000,0.000|Bf:15,128|FS:0,0|WCO:0.000,0.000,0.000>", r)
		}
	}
	assert.Equal(t, 3, wco) // every 10th report while idle
	assert.Equal(t, 3, ov)
	// An override shows at once.
	c.send("\x91")
	c.ok("") // a check point has run
	assert.Equal(t, "110,100,100", field(c.status(), "Ov"))
	assert.Equal(t, 1, c.emu.Counters().Overrides)
	c.send("\xff") // unknown: dropped
	require.Eventually(t, func() bool { return c.emu.Counters().Unknown == 1 }, time.Second, time.Millisecond)
	c.ok("")
}

func TestInjectMute(t *testing.T) {
	c := dial(t, classic(Config{TimeScale: 10}), false)
	c.emu.InjectMute(true)
	lines := c.emu.Counters().Lines
	c.send("?G0 X1\n?")
	c.silent(60 * time.Millisecond)
	assert.Equal(t, lines+1, c.emu.Counters().Lines, "lines are still executed")
	assert.Positive(t, c.emu.Counters().Muted)
	c.send("\x18")
	c.silent(30 * time.Millisecond) // not even the banner
	c.emu.InjectMute(false)
	c.ok("")
	assert.Equal(t, "Idle", state(c.status()))
}

func TestInjectDropOK(t *testing.T) {
	c := dial(t, classic(Config{TimeScale: 10}), false)
	c.emu.InjectDropOK(2)
	c.send("\n\nG5\n\n")
	c.expect("error:20", "ok") // errors are not dropped
	c.silent(30 * time.Millisecond)
	assert.Equal(t, 2, c.emu.Counters().OKDropped)
}

func TestInjectStuckHold(t *testing.T) {
	c := dial(t, classic(Config{TimeScale: 4, Accel: 100}), false)
	c.emu.InjectStuckHold(true)
	moveAndHold(t, c)
	require.Eventually(t, func() bool { return !c.emu.Moving() }, 2*time.Second, time.Millisecond)
	for range 5 {
		assert.Equal(t, "Hold:1", state(c.status()))
	}
	st, sub := c.emu.State()
	assert.Equal(t, motion.StateHold, st)
	assert.Equal(t, 1, sub)
	c.send("\x18")
	c.expect("ALARM:3")
	c.expectBanner()
	c.expect("[MSG:'$H'|'$X' to unlock]")
}

func TestInjectStuckHoldReleased(t *testing.T) {
	c := dial(t, classic(Config{TimeScale: 4, Accel: 100}), false)
	c.emu.InjectStuckHold(true)
	moveAndHold(t, c)
	require.Eventually(t, func() bool { return !c.emu.Moving() }, 2*time.Second, time.Millisecond)
	assert.Equal(t, "Hold:1", state(c.status()))
	c.emu.InjectStuckHold(false)
	c.waitState("Hold:0", time.Second)
}

func TestInjectAlarm(t *testing.T) {
	c := dial(t, classic(Config{TimeScale: 10}), false)
	c.ok("G1 X100 F3000")
	c.waitState("Run", time.Second)
	c.emu.InjectAlarm(1)
	assert.False(t, c.emu.Moving(), "motion stops at once")
	p := c.emu.Position()
	c.expect("ALARM:1", "[MSG:Reset to continue]")
	c.send("?")
	c.silent(30 * time.Millisecond)
	c.send("\x18")
	c.expectBanner()
	c.expect("[MSG:'$H'|'$X' to unlock]")
	assert.Equal(t, p, c.emu.Position())

	// Other codes reset by themselves.
	c.emu.InjectAlarm(9)
	c.expect("ALARM:9")
	c.expectBanner()
	c.expect("[MSG:'$H'|'$X' to unlock]")
	assert.Equal(t, "Alarm", state(c.status()))
}

func TestInjectHangup(t *testing.T) {
	c := dial(t, classic(Config{TimeScale: 10}), false)
	c.ok("")
	c.emu.InjectHangup()
	select {
	case <-c.done:
	case <-time.After(2 * time.Second):
		t.Fatal("the driver's read did not fail")
	}
	require.Error(t, c.err)
	_, err := c.port.Write([]byte("?"))
	_ = err // writes to a hung-up pty may or may not fail; reads must
}

func TestOnRealtime(t *testing.T) {
	c := dial(t, classic(Config{TimeScale: 10}), false)
	var mu sync.Mutex
	var got []byte
	c.emu.OnRealtime(func(b byte, at time.Time) {
		assert.WithinDuration(t, time.Now(), at, time.Second)
		_ = c.emu.Position() // observers may be called from the hook
		mu.Lock()
		got = append(got, b)
		mu.Unlock()
	})
	c.send("?")
	c.next()
	c.send("\x85\x90~G4 P0\n")
	c.expect("ok")
	mu.Lock()
	assert.Equal(t, []byte("?\x85\x90~"), got)
	mu.Unlock()
	cnt := c.emu.Counters()
	assert.Equal(t, 1, cnt.StatusQueries)
	assert.Equal(t, 1, cnt.Overrides)
}

func TestOnState(t *testing.T) {
	c := dial(t, classic(Config{TimeScale: 4, Accel: 100}), false)
	type change struct {
		st  string
		at  time.Time
		now motion.State // State() from inside the hook
	}
	var mu sync.Mutex
	var got []change
	c.emu.OnState(func(st motion.State, sub int, at time.Time) {
		name := st.String()
		if sub >= 0 {
			name += ":" + strconv.Itoa(sub)
		}
		now, _ := c.emu.State() // observers may be called from the hook
		mu.Lock()
		got = append(got, change{name, at, now})
		mu.Unlock()
	})
	seen := func() []string {
		mu.Lock()
		defer mu.Unlock()
		var names []string
		for _, ch := range got {
			names = append(names, ch.st)
		}
		return names
	}
	moveAndHold(t, c)
	c.waitState("Hold:0", 2*time.Second)
	reported := time.Now()
	require.Eventually(t, func() bool { return len(seen()) >= 3 }, time.Second, time.Millisecond)
	assert.Equal(t, []string{"Run", "Hold:1", "Hold:0"}, seen())
	mu.Lock()
	hold0 := got[2]
	mu.Unlock()
	assert.False(t, hold0.at.After(reported), "Hold:0 noted at %v, after a status report showed it (%v)", hold0.at, reported)
	assert.Equal(t, motion.StateHold, hold0.now)

	c.send("\x18")
	c.expectBanner()
	require.Eventually(t, func() bool { return len(seen()) >= 4 }, time.Second, time.Millisecond)
	assert.Equal(t, []string{"Run", "Hold:1", "Hold:0", "Idle"}, seen())

	c.emu.OnState(nil)
	c.ok("G1 X31 F1200")
	c.waitState("Idle", 2*time.Second)
	assert.Len(t, seen(), 4, "no calls after OnState(nil)")
}

func TestCheckModeAndSleep(t *testing.T) {
	c := dial(t, classic(Config{TimeScale: 10}), false)
	assert.Equal(t, []string{"[MSG:Enabled]", "ok"}, c.cmd("$C"))
	c.ok("G0 X50")
	assert.Equal(t, "Check", state(c.status()))
	assert.False(t, c.emu.Moving())
	assert.Equal(t, []string{"[MSG:Disabled]", "ok"}, c.cmd("$C"))
	c.expectBanner()
	assert.Equal(t, motion.Point{}, c.emu.Position())

	c.ok("$SLP")
	c.expect("[MSG:Sleeping]")
	assert.Equal(t, "Sleep", state(c.status()))
	c.send("\x18")
	c.expectBanner()
	c.expect("[MSG:'$H'|'$X' to unlock]")
}

func TestServeOverPipeAndClose(t *testing.T) {
	e := New(Config{TimeScale: 10})
	a, b := net.Pipe()
	defer b.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Serve(ctx, a) }()
	buf := make([]byte, 64)
	n, err := b.Read(buf)
	require.NoError(t, err)
	got := string(buf[:n])
	for !strings.Contains(got, "help]\r\n") {
		n, err = b.Read(buf)
		require.NoError(t, err)
		got += string(buf[:n])
	}
	assert.Equal(t, "\r\nGrbl 1.1h ['$' for help]\r\n", got)
	require.EqualError(t, e.Serve(ctx, a), "grblsim: already serving")
	cancel()
	require.ErrorIs(t, <-done, context.Canceled)

	// Serve again (a power cycle), then Close ends it.
	go func() { done <- e.Serve(context.Background(), a) }()
	n, err = b.Read(buf)
	require.NoError(t, err)
	assert.Contains(t, string(buf[:n]), "\r\n")
	require.NoError(t, e.Close())
	require.ErrorIs(t, <-done, ErrClosed)
	require.NoError(t, e.Close())
	require.ErrorIs(t, e.Serve(context.Background(), a), ErrClosed)
	_, err = e.OpenPTY()
	require.ErrorIs(t, err, ErrClosed)
}

func TestCloseWithoutServeAndPTYClose(t *testing.T) {
	e := New(Config{})
	require.NoError(t, e.Close())
	require.NoError(t, e.Close())

	e = New(Config{TimeScale: 10})
	_, err := e.OpenPTY()
	require.NoError(t, err)
	_, err = e.OpenPTY()
	require.Error(t, err)
	require.NoError(t, e.Close())
	require.NoError(t, e.Close())
}

// TestLongLineRightAfterReply: a host that sends a line longer than the
// receive buffer as soon as it has read the previous reply loses nothing,
// because the firmware's main loop is free by then. The emulator used to
// count its main loop busy until its own write of the reply had returned,
// which a host on a slow machine (qemu) could outrun.
func TestLongLineRightAfterReply(t *testing.T) {
	c := dial(t, classic(Config{TimeScale: 10}), false)
	long := "G 9 0" + strings.Repeat(" ", 2*rxBufferSize) // spaces do not count
	for range 500 {
		c.ok("G90")
		c.ok(long)
	}
	assert.Zero(t, c.emu.Counters().RxDropped)
}

// TestRxDropsWhileWriteStalls: a host that stops reading fills the pty
// until the main loop's write blocks; from then on the main loop is busy
// and bytes beyond the 128-byte receive buffer are dropped, as when the
// firmware's transmit buffer is full. Reading again frees it.
func TestRxDropsWhileWriteStalls(t *testing.T) {
	e := New(Config{TimeScale: 10})
	path, err := e.OpenPTY()
	require.NoError(t, err)
	port, err := serial.Open(path, &serial.Mode{BaudRate: 115200})
	require.NoError(t, err)
	defer func() { require.NoError(t, e.Close()) }()
	defer port.Close()

	// Each "$$" answers about 500 bytes; nobody reads them.
	require.Eventually(t, func() bool {
		_, err := io.WriteString(port, "$$\n")
		require.NoError(t, err)
		return e.Counters().RxDropped > 0
	}, 20*time.Second, time.Millisecond, "no byte dropped while nobody read the replies")

	// A reset, then read everything: the emulator answers again.
	_, err = io.WriteString(port, "\x18")
	require.NoError(t, err)
	require.NoError(t, port.SetReadTimeout(100*time.Millisecond))
	var got []byte
	readUntil := func(want string, n int) {
		t.Helper()
		buf := make([]byte, 4096)
		deadline := time.Now().Add(10 * time.Second)
		for strings.Count(string(got), want) < n {
			require.True(t, time.Now().Before(deadline), "no %q in the last output %q", want, got[max(len(got)-200, 0):])
			n, err := port.Read(buf)
			require.NoError(t, err)
			got = append(got, buf[:n]...)
		}
	}
	readUntil("Grbl 1.1h ['$' for help]\r\n", 2) // power-up, then reset
	got = got[:0]
	_, err = io.WriteString(port, "G90\n")
	require.NoError(t, err)
	readUntil("\n", 1)
	assert.Equal(t, "ok\r\n", string(got))
}
