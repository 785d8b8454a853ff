package grbl

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/waferd/waferd/motion"
)

// ResponseKind classifies one line received from GRBL 1.1.
type ResponseKind int

// Kinds of lines GRBL 1.1 sends (doc/markdown/interface.md, "Message Summary").
const (
	RespUnknown  ResponseKind = iota // not a GRBL 1.1 message
	RespOK                           // "ok"
	RespError                        // "error:N"; Code is N
	RespAlarm                        // "ALARM:N"; Code is N
	RespBanner                       // "Grbl 1.1h ['$' for help]"; Version is "1.1h"
	RespMessage                      // "[MSG:text]"; Text is text
	RespFeedback                     // other "[KEY:value]" (GC, HLP, VER, OPT, G54, PRB, echo, ...); Key and Text
	RespSetting                      // "$N=value" (Key "N", Code N) or "$Nx=line" (Key "Nx", Code -1); Text is the value
	RespStatus                       // "<...>" status report; Status is filled
	RespStartup                      // ">line:ok" or ">line:error:N"; Text is line, Code the error (0 for ok)
)

var kindNames = [...]string{"unknown", "ok", "error", "alarm", "banner", "message", "feedback", "setting", "status", "startup"}

func (k ResponseKind) String() string {
	if k >= 0 && int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "ResponseKind(" + strconv.Itoa(int(k)) + ")"
}

// Response is one classified line from GRBL.
type Response struct {
	Kind    ResponseKind
	Line    string        // the line, trimmed of surrounding white space
	Code    int           // error, alarm or setting number (see ResponseKind)
	Key     string        // feedback tag ("GC", "VER", ...) or setting key ("110", "N0")
	Text    string        // message text, feedback body, setting value or startup line
	Version string        // firmware version of a banner, e.g. "1.1h"
	Status  motion.Status // the parsed report of a RespStatus

	// workPos records that the report carried WPos: rather than MPos:, so
	// the Stage can apply a WCO remembered from an earlier report.
	workPos bool
}

// maxCoordMM bounds accepted coordinates, feeds and offsets: far beyond any
// real machine, small enough that micrometre conversion cannot overflow.
const maxCoordMM = 1e9

// ParseResponse classifies one line received from GRBL 1.1 (without or with
// its line ending). It returns an error, and Kind RespUnknown, for a line
// that is not a well-formed GRBL 1.1 message; it never panics. It is a pure
// function, safe for concurrent use.
//
// A banner is recognised even after leading line noise ("\x00Grbl 1.1h
// ['$' for help]"), because the first line after opening a port often
// carries some.
func ParseResponse(line string) (Response, error) {
	l := strings.TrimSpace(line)
	r := Response{Line: l}
	fail := func(format string, args ...any) (Response, error) {
		return Response{Kind: RespUnknown, Line: l}, fmt.Errorf("grbl: "+format, args...)
	}
	if l == "" {
		return fail("empty line")
	}
	switch {
	case l == "ok":
		r.Kind = RespOK
		return r, nil
	case strings.HasPrefix(l, "error:"):
		n, ok := smallUint(l[len("error:"):], 255)
		if !ok {
			return fail("malformed error reply %q", l)
		}
		r.Kind, r.Code = RespError, n
		return r, nil
	case strings.HasPrefix(l, "ALARM:"):
		n, ok := smallUint(l[len("ALARM:"):], 255)
		if !ok {
			return fail("malformed alarm %q", l)
		}
		r.Kind, r.Code = RespAlarm, n
		return r, nil
	case l[0] == '<':
		st, work, err := parseStatus(l)
		if err != nil {
			return fail("%v", err)
		}
		r.Kind, r.Status, r.workPos = RespStatus, st, work
		return r, nil
	case l[0] == '[':
		if len(l) < 2 || l[len(l)-1] != ']' {
			return fail("unterminated feedback message %q", l)
		}
		key, val, ok := strings.Cut(l[1:len(l)-1], ":")
		if !ok || !isWord(key) {
			return fail("malformed feedback message %q", l)
		}
		r.Key, r.Text = key, val
		if key == "MSG" {
			r.Kind = RespMessage
		} else {
			r.Kind = RespFeedback
		}
		return r, nil
	case l[0] == '$':
		key, val, ok := strings.Cut(l[1:], "=")
		if !ok {
			return fail("malformed setting %q", l)
		}
		switch {
		case isDigits(key) && len(key) <= 4:
			n, _ := strconv.Atoi(key)
			r.Code = n
			// GRBL before 1.1 appended " (description)"; keep the value only.
			if i := strings.Index(val, " ("); i >= 0 {
				val = val[:i]
			}
		case len(key) >= 2 && key[0] == 'N' && isDigits(key[1:]) && len(key) <= 3:
			r.Code = -1
		default:
			return fail("malformed setting %q", l)
		}
		r.Kind, r.Key, r.Text = RespSetting, key, val
		return r, nil
	case l[0] == '>':
		body := l[1:]
		if i := strings.LastIndex(body, ":error:"); i >= 0 {
			n, ok := smallUint(body[i+len(":error:"):], 255)
			if !ok {
				return fail("malformed startup line result %q", l)
			}
			r.Kind, r.Text, r.Code = RespStartup, body[:i], n
			return r, nil
		}
		if t, ok := strings.CutSuffix(body, ":ok"); ok {
			r.Kind, r.Text = RespStartup, t
			return r, nil
		}
		return fail("malformed startup line result %q", l)
	}
	if i := strings.Index(l, "Grbl "); i >= 0 {
		ver, rest, _ := strings.Cut(l[i+len("Grbl "):], " ")
		if ver != "" && ver[0] >= '0' && ver[0] <= '9' && strings.HasPrefix(rest, "[") {
			r.Kind, r.Version, r.Text = RespBanner, ver, rest
			return r, nil
		}
	}
	return fail("unrecognised line %q", l)
}

// ParseStatus parses a GRBL 1.1 status report such as
//
//	<Hold:1|MPos:1.000,2.000,0.000|FS:500,0|Bf:15,128|WCO:0.000,0.000,0.000|Ov:100,100,100|Pn:XP>
//
// Positions, offsets and feeds are taken in millimetres ($13=0); positions
// are rounded to whole micrometres. Fields after the state may come in any
// order; unknown fields (Ln:, A:, T:, later additions) are ignored. F: is
// accepted in place of FS: (Spindle is then 0).
//
// A report with WPos: instead of MPos: ($10 bit 0 clear) is converted with
// MPos = WPos + WCO when the same report carries WCO:. Without WCO:,
// ParseStatus returns the work position as MPos (HasWCO false); the Stage,
// which remembers the last WCO it saw, corrects such reports itself.
// Configure $10=1 (machine position) to avoid the question altogether.
//
// Absent fields are reported as Sub -1, BufBlocks/BufBytes -1, HasWCO and
// HasOv false. ParseStatus never panics; it is safe for concurrent use.
func ParseStatus(line string) (motion.Status, error) {
	st, _, err := parseStatus(line)
	return st, err
}

func parseStatus(line string) (st motion.Status, work bool, err error) {
	l := strings.TrimSpace(line)
	if len(l) < 2 || l[0] != '<' || l[len(l)-1] != '>' {
		return motion.Status{}, false, fmt.Errorf("grbl: status report %q: not enclosed in <>", l)
	}
	bad := func(format string, args ...any) (motion.Status, bool, error) {
		return motion.Status{}, false, fmt.Errorf("grbl: status report %q: "+format, append([]any{l}, args...)...)
	}
	// Fields are cut one at a time: the first is the state.
	first, rest, more := strings.Cut(l[1:len(l)-1], "|")
	st = motion.Status{Sub: -1, BufBlocks: -1, BufBytes: -1}

	name, sub, hasSub := strings.Cut(first, ":")
	state, ok := motion.ParseState(name)
	if !ok {
		return bad("unknown state %q", name)
	}
	st.State = state
	if hasSub {
		n, ok := smallUint(sub, 9)
		if !ok {
			return bad("bad sub-state %q", sub)
		}
		st.Sub = n
	}

	var pos [3]motion.Distance
	havePos := false
	for more {
		var f string
		f, rest, more = strings.Cut(rest, "|")
		key, val, ok := strings.Cut(f, ":")
		if !ok || !isWord(key) {
			return bad("malformed field %q", f)
		}
		switch key {
		case "MPos", "WPos":
			if pos, err = parseAxes(val); err != nil {
				return bad("%s: %v", key, err)
			}
			havePos, work = true, key == "WPos"
		case "WCO":
			if st.WCO, err = parseAxes(val); err != nil {
				return bad("WCO: %v", err)
			}
			st.HasWCO = true
		case "FS", "F":
			want := 2
			if key == "F" {
				want = 1
			}
			v, err := parseNumbers(val, want)
			if err != nil {
				return bad("%s: %v", key, err)
			}
			st.Feed, st.Spindle = v[0], 0
			if want == 2 {
				st.Spindle = v[1]
			}
		case "Bf":
			v, err := parseInts(val, 2)
			if err != nil {
				return bad("Bf: %v", err)
			}
			st.BufBlocks, st.BufBytes = v[0], v[1]
		case "Ov":
			v, err := parseInts(val, 3)
			if err != nil {
				return bad("Ov: %v", err)
			}
			st.Ov = motion.Overrides{Feed: v[0], Rapid: v[1], Spindle: v[2]}
			st.HasOv = true
		case "Pn":
			if val == "" || !isUpper(val) {
				return bad("bad pin list %q", val)
			}
			st.Pins = val
		default:
			// Ln:, A:, T: and fields of later firmware: not needed here.
		}
	}
	if !havePos {
		return bad("no MPos or WPos")
	}
	if work && st.HasWCO {
		for i := range pos {
			pos[i] += st.WCO[i]
		}
		work = false
	}
	st.MPos = pos
	return st, work, nil
}

// parseAxes parses 3 to 6 comma-separated millimetre values (X, Y, Z and
// optional extra axes, which are dropped).
func parseAxes(s string) ([3]motion.Distance, error) {
	var out [3]motion.Distance
	if n := strings.Count(s, ",") + 1; n < 3 || n > 6 {
		return out, fmt.Errorf("want 3 axes, got %d values", n)
	}
	for i := 0; ; i++ {
		p, rest, more := strings.Cut(s, ",")
		v, err := parseNumber(p)
		if err != nil {
			return out, err
		}
		if i < 3 {
			out[i] = motion.MM(v)
		}
		if !more {
			return out, nil
		}
		s = rest
	}
}

// parseNumbers parses n (1 or 2) comma-separated decimal numbers.
func parseNumbers(s string, n int) ([2]float64, error) {
	var out [2]float64
	if got := strings.Count(s, ",") + 1; got != n || n > len(out) {
		return out, fmt.Errorf("want %d values, got %d", n, got)
	}
	for i := range n {
		p, rest, _ := strings.Cut(s, ",")
		v, err := parseNumber(p)
		if err != nil {
			return out, err
		}
		out[i], s = v, rest
	}
	return out, nil
}

// parseInts parses n (2 or 3) comma-separated integers 0..1,000,000.
func parseInts(s string, n int) ([3]int, error) {
	var out [3]int
	if got := strings.Count(s, ",") + 1; got != n || n > len(out) {
		return out, fmt.Errorf("want %d values, got %d", n, got)
	}
	for i := range n {
		p, rest, _ := strings.Cut(s, ",")
		v, ok := smallUint(p, 1_000_000)
		if !ok {
			return out, fmt.Errorf("bad integer %q", p)
		}
		out[i], s = v, rest
	}
	return out, nil
}

var errNumber = errors.New("bad number")

// parseNumber accepts the decimal numbers GRBL prints ("-12.345", "500",
// "0."): an optional sign, digits and at most one point. Exponents, hex,
// Inf and NaN are refused.
func parseNumber(s string) (float64, error) {
	t := strings.TrimPrefix(strings.TrimPrefix(s, "-"), "+")
	digits, points := 0, 0
	for i := 0; i < len(t); i++ {
		switch c := t[i]; {
		case c >= '0' && c <= '9':
			digits++
		case c == '.':
			points++
		default:
			return 0, fmt.Errorf("%w %q", errNumber, s)
		}
	}
	if digits == 0 || points > 1 || len(t) > 24 {
		return 0, fmt.Errorf("%w %q", errNumber, s)
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsInf(v, 0) || math.IsNaN(v) || math.Abs(v) > maxCoordMM {
		return 0, fmt.Errorf("%w %q", errNumber, s)
	}
	return v, nil
}

// smallUint parses a decimal integer 0..max made of digits only.
func smallUint(s string, max int) (int, bool) {
	if s == "" || len(s) > 9 || !isDigits(s) {
		return 0, false
	}
	n, err := strconv.Atoi(s)
	if err != nil || n > max {
		return 0, false
	}
	return n, true
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// isWord reports whether s is a non-empty run of ASCII letters and digits
// (a field or feedback tag such as "MPos", "G54", "echo").
func isWord(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

func isUpper(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 'A' || s[i] > 'Z' {
			return false
		}
	}
	return true
}
