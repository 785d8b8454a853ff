package results

import (
	"bytes"
	"encoding/json"
	"math"
	"math/rand/v2"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/waferd/waferd/motion"
)

// checkJSON fails unless the encoder writes v (a Run or a SiteResult)
// exactly as json.MarshalIndent(v, "", "  ") plus a newline, or fails with
// the same error. It appends to a non-empty buffer, which must be kept.
func checkJSON(t testing.TB, v any) {
	t.Helper()
	want, wantErr := json.MarshalIndent(v, "", "  ")
	prefix := []byte("prefix")
	var got []byte
	var err error
	switch v := v.(type) {
	case Run:
		got, err = appendRunJSON(prefix, &v)
	case SiteResult:
		got, err = appendSiteResultJSON(prefix, &v)
	default:
		t.Fatalf("checkJSON(%T)", v)
	}
	if wantErr != nil {
		if err == nil || err.Error() != wantErr.Error() {
			t.Fatalf("encoding/json fails with %v, the encoder with %v, for %#v", wantErr, err, v)
		}
		if string(got) != "prefix" {
			t.Fatalf("on error the buffer changed to %q", got)
		}
		return
	}
	if err != nil {
		t.Fatalf("the encoder fails with %v, encoding/json does not, for %#v", err, v)
	}
	if !bytes.HasPrefix(got, prefix) {
		t.Fatalf("the buffer's content was not kept: %q", got)
	}
	got = got[len(prefix):]
	if want = append(want, '\n'); !bytes.Equal(got, want) {
		t.Fatalf("encoder and encoding/json differ for %#v:\n%s", v, lineDiff(string(want), string(got)))
	}
}

// lineDiff shows the first line where want and got differ.
func lineDiff(want, got string) string {
	wl, gl := strings.Split(want, "\n"), strings.Split(got, "\n")
	for i := 0; i < len(wl) || i < len(gl); i++ {
		var w, g string
		if i < len(wl) {
			w = wl[i]
		}
		if i < len(gl) {
			g = gl[i]
		}
		if w != g {
			return "line " + strconv.Itoa(i+1) + ":\n  encoding/json: " + w + "\n  encoder:       " + g
		}
	}
	return "(same lines)"
}

// Strings, floats and times where encoding/json has special cases.
var (
	jsonStrings = []string{
		"", "plain text", `say "hi"`, `back\slash`, "<script>&amp;</script>",
		"tab\there", "new\nline", "cr\r", "\b\f", "\x00\x01\x1f", "\x7f del",
		"café", "日本語", "emoji 🙂", "\u2028 and \u2029", "bad \xff byte", "\xe6\x97",
		"ends in \xc3", "\xed\xa0\x80 surrogate", strings.Repeat("long ", 100),
	}
	jsonFloats = []float64{
		0, math.Copysign(0, -1), 1, -1, 0.1, 1.0 / 3, 10.5, -3.5, 100.001,
		1e-6, 9.999999e-7, 1e-7, -1e-7, 1.5e-10, 5e-324, 1e20, 1e21, 1.5e21, -1e21,
		123456789.123456789, math.MaxFloat64, math.SmallestNonzeroFloat64, 1e100, 2.5e-100,
	}
	jsonTimes = []time.Time{
		{},
		time.Date(2026, 11, 26, 8, 15, 1, 0, time.UTC),
		time.Date(2026, 11, 26, 8, 15, 1, 123456789, time.UTC),
		time.Date(2026, 11, 26, 8, 15, 1, 120000000, time.UTC),
		time.Date(2026, 11, 26, 8, 15, 1, 1, time.FixedZone("IST", 5*3600+1800)),
		time.Date(2026, 1, 1, 0, 0, 0, 0, time.FixedZone("", -30*60)),
		time.Date(2026, 1, 1, 0, 0, 0, 0, time.FixedZone("", 3600+17)), // seconds in the offset
		time.Date(2026, 1, 1, 0, 0, 0, 0, time.FixedZone("", 23*3600+59*60)),
		time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC),
		time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC),
	}
	// Times encoding/json refuses.
	badTimes = []time.Time{
		time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(2026, 1, 1, 0, 0, 0, 0, time.FixedZone("", 24*3600)),
		time.Date(2026, 1, 1, 0, 0, 0, 0, time.FixedZone("", -100*3600)),
	}
)

func TestJSONMatchesEncodingJSON(t *testing.T) {
	checkJSON(t, Run{})
	checkJSON(t, Run{Sites: []Site{}})
	checkJSON(t, SiteResult{})
	checkJSON(t, SiteResult{Defects: []Defect{}})
	checkJSON(t, SiteResult{Defects: []Defect{{}}})

	run := gridRun(3)
	run.ID = "20261126T081500Z-demo"
	run.State = Failed
	run.Reason, run.Error = "operator", `analysis: site 2: "focus" lost`
	run.StartedAt = jsonTimes[2]
	end := jsonTimes[3]
	run.EndedAt = &end
	run.Sites[0].Status, run.Sites[0].Defects, run.Sites[0].Result, run.Sites[0].Image = SiteDone, 2, "sites/0000.json", "sites/0000.png"
	run.Sites[1].Status, run.Sites[1].Error = SiteFailed, "camera: timeout"
	run.Sites[2].Status, run.Sites[2].Result = SiteDone, "sites/0002.json" // no image
	run.recount()
	checkJSON(t, run)

	res := SiteResult{RunID: run.ID, Index: 12345, Die: [2]int{-4, 7}, XMM: 10.5, YMM: -20.25, Defects: []Defect{
		{XMM: 10.5, YMM: 20.25, Box: [4]int{1, 2, 5, 6}, AreaPx: 12, AreaUM2: 48.5, Peak: 200},
		{XMM: 11, YMM: 21, Box: [4]int{10, 10, 12, 12}, AreaPx: 4, AreaUM2: 16, Peak: 90},
	}}
	checkJSON(t, res)

	for _, s := range jsonStrings {
		checkJSON(t, Run{ID: s, Recipe: s, RecipeFile: s, State: State(s), Reason: s, Error: s,
			Sites: []Site{{Status: SiteStatus(s), Result: s, Image: s, Error: s}}})
		checkJSON(t, SiteResult{RunID: s})
	}
	for _, f := range jsonFloats {
		for _, x := range []float64{f, -f} {
			checkJSON(t, Run{Sites: []Site{{XMM: x, YMM: x}}})
			checkJSON(t, SiteResult{XMM: x, YMM: x, Defects: []Defect{{XMM: x, YMM: x, AreaUM2: x}}})
		}
	}
	for _, d := range []motion.Distance{0, 1, -1, 999, 1000, 123456789, math.MaxInt64, math.MinInt64} {
		checkJSON(t, Run{Geometry: Geometry{
			WaferCenter: motion.Point{X: d, Y: -d}, WaferDiameter: d, DiePitch: motion.Point{X: d / 3, Y: d / 7}}})
	}
	for _, tm := range append(jsonTimes, badTimes...) {
		checkJSON(t, Run{StartedAt: tm})
		checkJSON(t, Run{EndedAt: &tm})
	}
	for _, i := range []int{0, -1, 1, 9999, 10000, math.MaxInt, math.MinInt} {
		checkJSON(t, Run{SitesTotal: i, Sites: []Site{{Index: i, Die: [2]int{i, -i}, Defects: i}}})
		checkJSON(t, SiteResult{Index: i, Defects: []Defect{{Box: [4]int{i, i, i, i}, AreaPx: i, Peak: i}}})
	}
	checkJSON(t, Run{Complete: true, PositionTrusted: true})
}

// NaN and infinities fail as with encoding/json, and the error is named
// after the file by the writer (see TestSaveSiteNaN).
func TestJSONNonFinite(t *testing.T) {
	for _, f := range []float64{math.NaN(), math.Inf(1), math.Inf(-1)} {
		checkJSON(t, Run{Sites: []Site{{XMM: f}}})
		checkJSON(t, SiteResult{YMM: f})
		checkJSON(t, SiteResult{Defects: []Defect{{}, {AreaUM2: f}}})
		_, err := appendSiteResultJSON(nil, &SiteResult{XMM: f})
		assert.ErrorContains(t, err, "json: unsupported value")
	}
}

// TestJSONRandom compares the encoder with encoding/json on random records
// whose every field (found by reflection, so that a field added later is
// covered too) gets a random value, edge cases included.
func TestJSONRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	n := 3000
	if testing.Short() {
		n = 300
	}
	for range n {
		var run Run
		randomize(rng, reflect.ValueOf(&run).Elem())
		checkJSON(t, run)
		var res SiteResult
		randomize(rng, reflect.ValueOf(&res).Elem())
		checkJSON(t, res)
	}
}

var timeType = reflect.TypeFor[time.Time]()

// randomize sets v, recursively, to a random value.
func randomize(rng *rand.Rand, v reflect.Value) {
	if v.Type() == timeType {
		var tm time.Time
		switch rng.IntN(4) {
		case 0:
			tm = jsonTimes[rng.IntN(len(jsonTimes))]
		case 1:
			if rng.IntN(10) == 0 {
				tm = badTimes[rng.IntN(len(badTimes))]
				break
			}
			fallthrough
		default:
			tm = time.Unix(rng.Int64N(400_000_000_000)-62_000_000_000, rng.Int64N(1e9))
			zones := []*time.Location{time.UTC, time.FixedZone("", rng.IntN(48*3600)-24*3600), time.FixedZone("X", 3600)}
			tm = tm.In(zones[rng.IntN(len(zones))])
		}
		v.Set(reflect.ValueOf(tm))
		return
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(randomString(rng))
	case reflect.Bool:
		v.SetBool(rng.IntN(2) == 0)
	case reflect.Int, reflect.Int64:
		switch rng.IntN(3) {
		case 0:
			v.SetInt(int64(rng.IntN(20000)) - 10000)
		default:
			x := int64(rng.Uint64())
			if v.OverflowInt(x) {
				x = int64(int32(x))
			}
			v.SetInt(x)
		}
	case reflect.Float64:
		v.SetFloat(randomFloat(rng))
	case reflect.Pointer:
		if rng.IntN(3) == 0 {
			v.SetZero()
			return
		}
		v.Set(reflect.New(v.Type().Elem()))
		randomize(rng, v.Elem())
	case reflect.Slice:
		switch k := rng.IntN(8); k {
		case 0:
			v.SetZero() // nil: null
		default:
			s := reflect.MakeSlice(v.Type(), k-1, k-1) // empty: []
			for i := range s.Len() {
				randomize(rng, s.Index(i))
			}
			v.Set(s)
		}
	case reflect.Array:
		for i := range v.Len() {
			randomize(rng, v.Index(i))
		}
	case reflect.Struct:
		for i := range v.NumField() {
			if !v.Type().Field(i).IsExported() {
				panic("randomize: unexported field " + v.Type().String() + "." + v.Type().Field(i).Name)
			}
			randomize(rng, v.Field(i))
		}
	default:
		panic("randomize: unhandled kind " + v.Kind().String() + " of " + v.Type().String())
	}
}

func randomString(rng *rand.Rand) string {
	if rng.IntN(3) == 0 {
		return jsonStrings[rng.IntN(len(jsonStrings))]
	}
	pieces := []string{"a", "Z", "0", " ", "-", "/", ".", `"`, `\`, "<", ">", "&", "\n", "\t", "\x00", "\x1f",
		"\x7f", "é", "日", "🙂", "\u2028", "\u2029", "\xff", "\xc3", "\xe2\x80", "\xed\xa0\x80"}
	var b strings.Builder
	for range rng.IntN(12) {
		if rng.IntN(2) == 0 {
			b.WriteByte(byte(rng.IntN(256)))
		} else {
			b.WriteString(pieces[rng.IntN(len(pieces))])
		}
	}
	return b.String()
}

func randomFloat(rng *rand.Rand) float64 {
	switch rng.IntN(5) {
	case 0:
		f := jsonFloats[rng.IntN(len(jsonFloats))]
		if rng.IntN(2) == 0 {
			f = -f
		}
		return f
	case 1:
		if rng.IntN(20) == 0 { // NaN and infinities: both must fail
			return []float64{math.NaN(), math.Inf(1), math.Inf(-1)}[rng.IntN(3)]
		}
		for {
			if f := math.Float64frombits(rng.Uint64()); !math.IsNaN(f) && !math.IsInf(f, 0) {
				return f
			}
		}
	case 2: // around the exponent-form cut-offs
		return math.Pow(10, rng.Float64()*10-11) * (rng.Float64() + 0.5)
	case 3:
		return math.Pow(10, rng.Float64()*4+19) * (rng.Float64() + 0.5)
	}
	return math.Round(rng.NormFloat64()*150_000) / 1000 // machine coordinates, µm resolution
}

// FuzzJSON compares the encoder with encoding/json on records built from
// the fuzzer's strings, floats, integers and times.
func FuzzJSON(f *testing.F) {
	f.Add("20261126T081500Z-demo", "camera: timeout", 10.5, 1e-7, 7, int64(1795680900), int64(0), 0)
	f.Add(`<"\>&`, "\xff\u2028", math.Copysign(0, -1), 1e21, -1, int64(-62135596800), int64(999999999), 19800)
	f.Add("", "", math.NaN(), math.Inf(1), 0, int64(253402300800), int64(1), 86400)
	f.Fuzz(func(t *testing.T, s1, s2 string, f1, f2 float64, i int, sec, nsec int64, offset int) {
		tm := time.Unix(sec, nsec).In(time.FixedZone("", offset))
		run := Run{ID: s1, Recipe: s2, Reason: s1 + s2, Error: s2, StartedAt: tm, EndedAt: &tm,
			SitesTotal: i, Complete: i%2 == 0,
			Geometry: Geometry{WaferCenter: motion.Point{X: motion.Distance(sec), Y: motion.Distance(nsec)}, WaferDiameter: motion.Distance(i)},
			Sites:    []Site{{Index: i, Die: [2]int{i, -i}, XMM: f1, YMM: f2, Status: SiteStatus(s2), Result: s1, Error: s2}, {}}}
		checkJSON(t, run)
		checkJSON(t, SiteResult{RunID: s1, Index: i, XMM: f2, YMM: f1,
			Defects: []Defect{{XMM: f1, YMM: f2, Box: [4]int{i, 1, 2, 3}, AreaPx: i, AreaUM2: f1 * f2, Peak: i}}})
	})
}

// The encoder's output decodes back to the same record.
func TestJSONRoundTrip(t *testing.T) {
	run := gridRun(5)
	run.Sites[1].Status, run.Sites[1].Error = SiteFailed, "x<y & \"z\"\n"
	b, err := appendRunJSON(nil, &run)
	require.NoError(t, err)
	var back Run
	require.NoError(t, json.Unmarshal(b, &back))
	assert.Equal(t, run, back)
}
