package results

import (
	"encoding/json"
	"math"
	"strconv"
	"time"
	"unicode/utf8"
)

// The record files are written by a small hand-written encoder instead of
// encoding/json: json.MarshalIndent allocates the whole output (more than
// 1 MB for run.json of a 10,000-site run, once a second) plus reflection
// state on every call, and the goal is no allocation per site. The encoder
// appends into a buffer the caller reuses and produces exactly the bytes of
// json.MarshalIndent(v, "", "  ") followed by a newline; the tests compare
// the two on edge cases, random records and a fuzz target, and check that
// the encoder knows every field of the types it writes.
//
// Values that encoding/json refuses (NaN and infinite floats, times outside
// what RFC 3339 can express) are left to encoding/json, which returns its
// usual error.

// appendRunJSON appends the content of run.json for run to b: what
// json.MarshalIndent(run, "", "  ") returns, and a newline. On error it
// returns b unchanged and encoding/json's error.
func appendRunJSON(b []byte, run *Run) ([]byte, error) {
	e := jsonEncoder{b: b}
	e.run(run)
	if e.bad {
		return marshalIndentTo(b, *run) // a copy: run itself does not escape
	}
	return append(e.b, '\n'), nil
}

// appendSiteResultJSON appends the content of sites/NNNN.json for res to b,
// like appendRunJSON.
func appendSiteResultJSON(b []byte, res *SiteResult) ([]byte, error) {
	e := jsonEncoder{b: b}
	e.siteResult(res)
	if e.bad {
		return marshalIndentTo(b, *res)
	}
	return append(e.b, '\n'), nil
}

// marshalIndentTo appends v as encoding/json writes it: the slow path for
// the values the encoder leaves to encoding/json.
func marshalIndentTo(b []byte, v any) ([]byte, error) {
	j, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return b, err
	}
	return append(append(b, j...), '\n'), nil
}

// jsonEncoder appends indented JSON to b. bad is set when a value must be
// left to encoding/json; the output is then incomplete and discarded.
type jsonEncoder struct {
	b   []byte
	bad bool
}

func (e *jsonEncoder) run(r *Run) {
	e.b = append(e.b, '{')
	e.key(1, "id", true)
	e.str(r.ID)
	e.key(1, "recipe", false)
	e.str(r.Recipe)
	e.key(1, "recipe_file", false)
	e.str(r.RecipeFile)
	e.key(1, "state", false)
	e.str(string(r.State))
	e.key(1, "reason", false)
	e.str(r.Reason)
	e.key(1, "error", false)
	e.str(r.Error)
	e.key(1, "started_at", false)
	e.time(r.StartedAt)
	e.key(1, "ended_at", false)
	if r.EndedAt == nil {
		e.b = append(e.b, "null"...)
	} else {
		e.time(*r.EndedAt)
	}
	e.key(1, "sites_total", false)
	e.int(r.SitesTotal)
	e.key(1, "sites_done", false)
	e.int(r.SitesDone)
	e.key(1, "sites_failed", false)
	e.int(r.SitesFailed)
	e.key(1, "defects_total", false)
	e.int(r.DefectsTotal)
	e.key(1, "complete", false)
	e.bool(r.Complete)
	e.key(1, "position_trusted", false)
	e.bool(r.PositionTrusted)
	e.key(1, "geometry", false)
	e.geometry(2, &r.Geometry)
	e.key(1, "sites", false)
	if e.openArray(r.Sites == nil, len(r.Sites)) {
		for i := range r.Sites {
			e.arrayElem(1, i)
			e.site(3, &r.Sites[i])
		}
		e.closeArray(1)
	}
	e.newline(0)
	e.b = append(e.b, '}')
}

// openArray, arrayElem and closeArray write a slice member at depth as
// encoding/json's MarshalIndent does. openArray writes null (isNil) or []
// (n == 0) and returns false, or opens the array; then, for element i,
// arrayElem starts its line and the caller writes it with its members at
// depth+2; closeArray ends the array. (A helper that took the element
// writer as a function would make the encoder escape: an allocation per
// record.)
func (e *jsonEncoder) openArray(isNil bool, n int) bool {
	switch {
	case isNil:
		e.b = append(e.b, "null"...)
	case n == 0:
		e.b = append(e.b, "[]"...)
	default:
		e.b = append(e.b, '[')
		return true
	}
	return false
}

func (e *jsonEncoder) arrayElem(depth, i int) {
	if i > 0 {
		e.b = append(e.b, ',')
	}
	e.newline(depth + 1)
}

func (e *jsonEncoder) closeArray(depth int) {
	e.newline(depth)
	e.b = append(e.b, ']')
}

// geometry writes g as Geometry.MarshalJSON does, indented: its members
// are at depth.
func (e *jsonEncoder) geometry(depth int, g *Geometry) {
	e.b = append(e.b, '{')
	e.key(depth, "wafer_center_mm", true)
	e.floatPair(depth, g.WaferCenter.X.Millimetres(), g.WaferCenter.Y.Millimetres())
	e.key(depth, "wafer_diameter_mm", false)
	e.float(g.WaferDiameter.Millimetres())
	e.key(depth, "die_pitch_mm", false)
	e.floatPair(depth, g.DiePitch.X.Millimetres(), g.DiePitch.Y.Millimetres())
	e.newline(depth - 1)
	e.b = append(e.b, '}')
}

// site writes s with its members at depth.
func (e *jsonEncoder) site(depth int, s *Site) {
	e.b = append(e.b, '{')
	e.key(depth, "index", true)
	e.int(s.Index)
	e.key(depth, "die", false)
	e.ints(depth, s.Die[:])
	e.key(depth, "x_mm", false)
	e.float(s.XMM)
	e.key(depth, "y_mm", false)
	e.float(s.YMM)
	e.key(depth, "status", false)
	e.str(string(s.Status))
	e.key(depth, "defects", false)
	e.int(s.Defects)
	if s.Result != "" {
		e.key(depth, "result", false)
		e.str(s.Result)
	}
	if s.Image != "" {
		e.key(depth, "image", false)
		e.str(s.Image)
	}
	if s.Error != "" {
		e.key(depth, "error", false)
		e.str(s.Error)
	}
	e.newline(depth - 1)
	e.b = append(e.b, '}')
}

func (e *jsonEncoder) siteResult(r *SiteResult) {
	e.b = append(e.b, '{')
	e.key(1, "run_id", true)
	e.str(r.RunID)
	e.key(1, "index", false)
	e.int(r.Index)
	e.key(1, "die", false)
	e.ints(1, r.Die[:])
	e.key(1, "x_mm", false)
	e.float(r.XMM)
	e.key(1, "y_mm", false)
	e.float(r.YMM)
	e.key(1, "defects", false)
	if e.openArray(r.Defects == nil, len(r.Defects)) {
		for i := range r.Defects {
			e.arrayElem(1, i)
			e.defect(3, &r.Defects[i])
		}
		e.closeArray(1)
	}
	e.newline(0)
	e.b = append(e.b, '}')
}

func (e *jsonEncoder) defect(depth int, d *Defect) {
	e.b = append(e.b, '{')
	e.key(depth, "x_mm", true)
	e.float(d.XMM)
	e.key(depth, "y_mm", false)
	e.float(d.YMM)
	e.key(depth, "box_px", false)
	e.ints(depth, d.Box[:])
	e.key(depth, "area_px", false)
	e.int(d.AreaPx)
	e.key(depth, "area_um2", false)
	e.float(d.AreaUM2)
	e.key(depth, "peak", false)
	e.int(d.Peak)
	e.newline(depth - 1)
	e.b = append(e.b, '}')
}

// key starts an object member at depth: a comma unless it is the first,
// a new line, the indentation, the quoted name (plain ASCII) and ": ".
func (e *jsonEncoder) key(depth int, name string, first bool) {
	if !first {
		e.b = append(e.b, ',')
	}
	e.newline(depth)
	e.b = append(e.b, '"')
	e.b = append(e.b, name...)
	e.b = append(e.b, `": `...)
}

// newline appends a new line indented to depth (two spaces a level).
func (e *jsonEncoder) newline(depth int) {
	e.b = append(e.b, '\n')
	for range depth {
		e.b = append(e.b, "  "...)
	}
}

// ints writes a non-empty fixed-size array of ints, one element a line, in
// a member at depth.
func (e *jsonEncoder) ints(depth int, v []int) {
	e.b = append(e.b, '[')
	for i, x := range v {
		if i > 0 {
			e.b = append(e.b, ',')
		}
		e.newline(depth + 1)
		e.int(x)
	}
	e.newline(depth)
	e.b = append(e.b, ']')
}

// floatPair writes [x, y], one element a line, in a member at depth.
func (e *jsonEncoder) floatPair(depth int, x, y float64) {
	e.b = append(e.b, '[')
	e.newline(depth + 1)
	e.float(x)
	e.b = append(e.b, ',')
	e.newline(depth + 1)
	e.float(y)
	e.newline(depth)
	e.b = append(e.b, ']')
}

func (e *jsonEncoder) int(x int) { e.b = strconv.AppendInt(e.b, int64(x), 10) }

func (e *jsonEncoder) bool(x bool) { e.b = strconv.AppendBool(e.b, x) }

// float writes f as encoding/json does (like ES6): the shortest decimal
// that round-trips, in exponent form only below 1e-6 or from 1e21, with
// exponents not padded ("1e-7"). NaN and infinities are left to
// encoding/json.
func (e *jsonEncoder) float(f float64) {
	if math.IsInf(f, 0) || math.IsNaN(f) {
		e.bad = true
		return
	}
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	e.b = strconv.AppendFloat(e.b, f, format, -1, 64)
	if format == 'e' {
		// "e-07" to "e-7"
		n := len(e.b)
		if n >= 4 && e.b[n-4] == 'e' && e.b[n-3] == '-' && e.b[n-2] == '0' {
			e.b[n-2] = e.b[n-1]
			e.b = e.b[:n-1]
		}
	}
}

// time writes t as time.Time.MarshalJSON does: quoted RFC 3339 with
// nanoseconds. Times that RFC 3339 cannot express (years outside
// 0..9999, zone offsets of 24 h or more) are left to encoding/json.
func (e *jsonEncoder) time(t time.Time) {
	e.b = append(e.b, '"')
	n0 := len(e.b)
	e.b = t.AppendFormat(e.b, time.RFC3339Nano)
	// The checks of time.Time.MarshalJSON (appendStrictRFC3339).
	s := e.b[n0:]
	switch {
	case len(s) < len("2006-01-02T15:04:05Z") || s[len("2006")] != '-': // year not 4 digits
		e.bad = true
	case s[len(s)-1] != 'Z':
		c := s[len(s)-len("Z07:00")]
		h := s[len(s)-len("07:00"):]
		if '0' <= c && c <= '9' || 10*(h[0]-'0')+(h[1]-'0') >= 24 {
			e.bad = true
		}
	}
	e.b = append(e.b, '"')
}

// str writes s as a JSON string the way encoding/json does, HTML-safe:
// '"', '\\', control characters, '<', '>' and '&' are escaped, invalid
// UTF-8 becomes \ufffd, and U+2028 and U+2029 are escaped.
func (e *jsonEncoder) str(s string) {
	const hex = "0123456789abcdef"
	b := append(e.b, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '\\', '"':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default: // other control characters, '<', '>', '&'
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	e.b = append(b, '"')
}
