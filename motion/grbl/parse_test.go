package grbl

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/waferd/waferd/motion"
)

func TestParseStatus(t *testing.T) {
	st, err := ParseStatus("<Hold:1|MPos:1.000,-2.500,0.000|FS:500,0|Bf:15,128|WCO:0.000,1.551,5.664|Ov:100,90,110|Pn:XP>\r\n")
	require.NoError(t, err)
	assert.Equal(t, motion.Status{
		State: motion.StateHold, Sub: 1,
		MPos:   [3]motion.Distance{1000, -2500, 0},
		WCO:    [3]motion.Distance{0, 1551, 5664},
		HasWCO: true,
		Feed:   500,
		Ov:     motion.Overrides{Feed: 100, Rapid: 90, Spindle: 110}, HasOv: true,
		Pins:      "XP",
		BufBlocks: 15, BufBytes: 128,
	}, st)
	assert.False(t, st.Stopped(), "Hold:1 is still decelerating")

	st, err = ParseStatus("<Idle|MPos:0.000,0.000,0.000|F:0>")
	require.NoError(t, err)
	assert.Equal(t, motion.Status{State: motion.StateIdle, Sub: -1, BufBlocks: -1, BufBytes: -1}, st)

	// WPos with WCO in the same report: MPos = WPos + WCO.
	st, err = ParseStatus("<Run|WPos:1.000,2.000,3.000|FS:100.5,1000|WCO:10.000,-20.000,0.5>")
	require.NoError(t, err)
	assert.Equal(t, [3]motion.Distance{11000, -18000, 3500}, st.MPos)
	assert.Equal(t, 100.5, st.Feed)
	assert.Equal(t, 1000.0, st.Spindle)

	// Extra axes, unknown and optional fields.
	st, err = ParseStatus("<Door:2|MPos:1.000,2.000,3.000,4.000|Ln:99|A:SFM|T:S|Zz:1>")
	require.NoError(t, err)
	assert.Equal(t, motion.StateDoor, st.State)
	assert.Equal(t, 2, st.Sub)

	for _, bad := range []string{
		"", "<>", "<Idle>", "Idle|MPos:0,0,0", "<Idle|MPos:0.000,0.000,0.000",
		"<Bogus|MPos:0.000,0.000,0.000>", "<Idle|MPos:1,2>", "<Idle|MPos:a,b,c>",
		"<Idle|MPos:1e3,0,0>", "<Idle|MPos:NaN,0,0>", "<Idle|MPos:Inf,0,0>", "<Idle|MPos:0x10,0,0>",
		"<Hold:x|MPos:0,0,0>", "<Hold:10|MPos:0,0,0>", "<Idle|MPos:0,0,0|FS:1>", "<Idle|MPos:0,0,0|Bf:-1,2>",
		"<Idle|MPos:0,0,0|Ov:1,2>", "<Idle|MPos:0,0,0|Pn:xy>", "<Idle|MPos:0,0,0|nofield>",
		"<Idle,MPos:0.000,0.000,0.000,WPos:0.000,0.000,0.000>", // GRBL 0.9
		"<Idle|MPos:1..2,0,0>", "<Idle|MPos:99999999999,0,0>",
	} {
		_, err := ParseStatus(bad)
		assert.Error(t, err, "%q", bad)
	}
}

func TestParseResponse(t *testing.T) {
	cases := []struct {
		line string
		want Response
	}{
		{"ok\r\n", Response{Kind: RespOK, Line: "ok"}},
		{"error:9", Response{Kind: RespError, Line: "error:9", Code: 9}},
		{"ALARM:3", Response{Kind: RespAlarm, Line: "ALARM:3", Code: 3}},
		{"Grbl 1.1h ['$' for help]", Response{Kind: RespBanner, Line: "Grbl 1.1h ['$' for help]", Version: "1.1h", Text: "['$' for help]"}},
		{"\x00\xffGrbl 1.1f ['$' for help]", Response{Kind: RespBanner, Line: "\x00\xffGrbl 1.1f ['$' for help]", Version: "1.1f", Text: "['$' for help]"}},
		{"[MSG:Reset to continue]", Response{Kind: RespMessage, Line: "[MSG:Reset to continue]", Key: "MSG", Text: "Reset to continue"}},
		{"[MSG:'$H'|'$X' to unlock]", Response{Kind: RespMessage, Line: "[MSG:'$H'|'$X' to unlock]", Key: "MSG", Text: "'$H'|'$X' to unlock"}},
		{"[GC:G0 G54 G17 G21 G90 G94 M5 M9 T0 F0 S0]", Response{Kind: RespFeedback, Line: "[GC:G0 G54 G17 G21 G90 G94 M5 M9 T0 F0 S0]", Key: "GC", Text: "G0 G54 G17 G21 G90 G94 M5 M9 T0 F0 S0"}},
		{"[PRB:0.000,0.000,0.000:0]", Response{Kind: RespFeedback, Line: "[PRB:0.000,0.000,0.000:0]", Key: "PRB", Text: "0.000,0.000,0.000:0"}},
		{"$110=500.000", Response{Kind: RespSetting, Line: "$110=500.000", Key: "110", Code: 110, Text: "500.000"}},
		{"$0=10 (step pulse, usec)", Response{Kind: RespSetting, Line: "$0=10 (step pulse, usec)", Key: "0", Code: 0, Text: "10"}},
		{"$N0=G54", Response{Kind: RespSetting, Line: "$N0=G54", Key: "N0", Code: -1, Text: "G54"}},
		{">G54G20:ok", Response{Kind: RespStartup, Line: ">G54G20:ok", Text: "G54G20"}},
		{">G54G20:error:20", Response{Kind: RespStartup, Line: ">G54G20:error:20", Text: "G54G20", Code: 20}},
	}
	for _, c := range cases {
		got, err := ParseResponse(c.line)
		require.NoError(t, err, "%q", c.line)
		assert.Equal(t, c.want, got, "%q", c.line)
	}
	r, err := ParseResponse("<Idle|MPos:1.000,2.000,3.000|FS:0,0>")
	require.NoError(t, err)
	assert.Equal(t, RespStatus, r.Kind)
	assert.Equal(t, motion.MM(2), r.Status.MPos[1])

	for _, bad := range []string{"", "  ", "okay", "error:", "error:x", "error:1000", "ALARM:", "ALARM:-1",
		"[MSG:unterminated", "[:x]", "[]", "$=1", "$x=1", ">G54", "<Idle>", "Grbl", "Grbl x", "garbage"} {
		r, err := ParseResponse(bad)
		assert.Error(t, err, "%q", bad)
		assert.Equal(t, RespUnknown, r.Kind, "%q", bad)
	}
}

func TestCodeTables(t *testing.T) {
	e := newError(9, "G1 X1")
	assert.Equal(t, "G-code lock", e.Message)
	assert.True(t, errors.Is(e, motion.ErrRejected))
	assert.False(t, errors.Is(e, motion.ErrAlarm))
	assert.Contains(t, e.Error(), "error:9")
	assert.Equal(t, "Unknown error", newError(200, "").Message)

	a := newAlarm(2)
	assert.Equal(t, "Soft limit", a.Message)
	assert.True(t, errors.Is(a, motion.ErrAlarm))
	assert.Contains(t, a.Error(), "ALARM:2")
	assert.Contains(t, newAlarm(0).Error(), "alarm lock")
	assert.Equal(t, "Unknown alarm", newAlarm(99).Message)

	for code := 1; code <= 10; code++ {
		assert.NotEqual(t, "Unknown alarm", newAlarm(code).Message, "alarm %d", code)
	}
	for _, n := range []int{0, 1, 10, 13, 20, 22, 27, 32, 100, 110, 120, 130, 132} {
		_, ok := Setting(n)
		assert.True(t, ok, "setting %d", n)
	}
}

func TestDwellAllowance(t *testing.T) {
	assert.Equal(t, int64(0), int64(dwellAllowance("G4 P0")))
	assert.Equal(t, "2.5s", dwellAllowance("G4 P2.5").String())
	assert.Equal(t, "1s", dwellAllowance("g4p1").String())
	assert.Equal(t, int64(0), int64(dwellAllowance("G40 P1")))
	assert.Equal(t, int64(0), int64(dwellAllowance("G1 X4")))
}

// checkStatusInvariants are properties every successfully parsed report has.
func checkStatusInvariants(t *testing.T, line string, st motion.Status) {
	if st.State == motion.StateUnknown {
		t.Fatalf("%q: parsed with unknown state", line)
	}
	if st.Sub < -1 || st.Sub > 9 {
		t.Fatalf("%q: sub-state %d", line, st.Sub)
	}
	if (st.BufBlocks < 0) != (st.BufBytes < 0) {
		t.Fatalf("%q: half a buffer field", line)
	}
	lim := motion.Distance(2 * maxCoordMM * 1000)
	for _, d := range append(st.MPos[:], st.WCO[:]...) {
		if d > lim || d < -lim {
			t.Fatalf("%q: coordinate %d out of range", line, d)
		}
	}
	_ = st.String()
}

func FuzzParseStatus(f *testing.F) {
	for _, s := range []string{
		"<Idle|MPos:0.000,0.000,0.000|FS:0,0>",
		"<Hold:1|MPos:1.000,2.000,0.000|FS:500,0|Bf:15,128|WCO:0.000,0.000,0.000|Ov:100,100,100|Pn:XP>",
		"<Run|WPos:-1.5,2,3|F:100|WCO:1,1,1>",
		"<Alarm|MPos:0,0,0>",
		"<Idle|MPos:1,2>",
		"<Hold:|MPos:0,0,0>",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		st, err := ParseStatus(line)
		if err != nil {
			return
		}
		checkStatusInvariants(t, line, st)
		// A report that parses must also classify as a status report.
		r, err := ParseResponse(line)
		if err != nil || r.Kind != RespStatus {
			t.Fatalf("%q: ParseStatus ok but ParseResponse gives %v, %v", line, r.Kind, err)
		}
	})
}

func FuzzParseResponse(f *testing.F) {
	for _, s := range []string{
		"ok", "error:20", "ALARM:2", "Grbl 1.1h ['$' for help]", "[MSG:Reset to continue]",
		"[GC:G0 G54 G17 G21 G90 G94 M5 M9 T0 F0 S0]", "$110=500.000", "$N0=G54", ">G54:ok",
		"<Idle|MPos:0.000,0.000,0.000|FS:0,0>", "error:", "[MSG", "\x00\xff",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		r, err := ParseResponse(line)
		if err != nil {
			if r.Kind != RespUnknown {
				t.Fatalf("%q: error %v with kind %v", line, err, r.Kind)
			}
			return
		}
		switch r.Kind {
		case RespUnknown:
			t.Fatalf("%q: unknown kind without error", line)
		case RespError, RespAlarm:
			if r.Code < 0 || r.Code > 255 {
				t.Fatalf("%q: code %d", line, r.Code)
			}
			_ = newError(r.Code, r.Line).Error()
			_ = newAlarm(r.Code).Error()
		case RespStatus:
			checkStatusInvariants(t, line, r.Status)
		case RespBanner:
			if r.Version == "" {
				t.Fatalf("%q: banner without version", line)
			}
		}
		if utf8.ValidString(line) && !strings.Contains(line, r.Line) {
			t.Fatalf("%q: Line %q is not part of the input", line, r.Line)
		}
	})
}
