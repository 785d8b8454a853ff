package recipe

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/waferd/waferd/motion"
	"github.com/waferd/waferd/sim/simcam"
)

var lim = Limits{
	Travel:  motion.Rect{Max: motion.Point{X: motion.MM(300), Y: motion.MM(300)}},
	FOV:     motion.Point{X: motion.MM(10.24), Y: motion.MM(10.24)},
	MaxFeed: 6000,
}

func demoPath(t *testing.T) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "examples", "recipes", "demo.toml")
}

func TestDemoRecipe(t *testing.T) {
	r, err := Load(demoPath(t), lim)
	require.NoError(t, err)
	assert.Equal(t, "demo", r.Name)
	assert.Equal(t, 20*time.Millisecond, r.Exposure)
	assert.Equal(t, motion.Point{X: motion.MM(150), Y: motion.MM(150)}, r.WaferCenter)
	assert.Greater(t, len(r.Sites), 24, "dozens of sites")
	assert.Equal(t, [2]int{0, 0}, r.Reference.Die)
	// Serpentine order: consecutive sites are neighbours (one pitch apart
	// in X on a row, or a row change).
	for i := 1; i < len(r.Sites); i++ {
		a, b := r.Sites[i-1], r.Sites[i]
		assert.Equal(t, i, b.Index)
		if a.Die[1] == b.Die[1] {
			assert.Equal(t, 1, abs(a.Die[0]-b.Die[0]), "site %d→%d", i-1, i)
		} else {
			assert.Equal(t, -1, b.Die[1]-a.Die[1], "rows go top to bottom")
		}
	}
	// Every site's field of view is on the wafer.
	for _, s := range r.Sites {
		assert.True(t, r.fovInsideWafer(s.At, lim.FOV), "site %v", s.Die)
	}
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}

const good = `
name = "t"
[wafer]
diameter_mm = 100.0
center_mm = [150.0, 150.0]
[dies]
pitch_mm = [10.0, 10.0]
reference = [0, 0]
[[site]]
die = [1, 1]
[[site]]
die = [-2, 0]
[capture]
exposure_ms = 10
light_level = 1.0
settle_ms = 0
feed_mm_min = 2000
`

func TestExplicitSites(t *testing.T) {
	r, err := Parse("t.toml", []byte(good), lim)
	require.NoError(t, err)
	require.Len(t, r.Sites, 2)
	assert.Equal(t, motion.Point{X: motion.MM(160), Y: motion.MM(160)}, r.Sites[0].At)
	assert.Equal(t, motion.Point{X: motion.MM(130), Y: motion.MM(150)}, r.Sites[1].At)
	assert.EqualValues(t, 40, r.Threshold, "default threshold")
	assert.Equal(t, 6, r.MinArea, "default min area")
}

// TestOrientationMark: the wafer's notch or flat, for the run record and
// its wafer map; absent unless the recipe says.
func TestOrientationMark(t *testing.T) {
	base := strings.Replace(mustRead(t, demoPath(t)), "mark = \"flat\"\nmark_direction_deg = 270.0\n", "", 1)
	r, err := Parse("m.toml", []byte(base), lim)
	require.NoError(t, err)
	assert.Equal(t, "", r.Mark, "not said: not assumed here")
	with := func(keys string) string {
		return strings.Replace(base, "center_mm = [150.0, 150.0]\n", "center_mm = [150.0, 150.0]\n"+keys, 1)
	}
	r, err = Parse("m.toml", []byte(with("mark = \"notch\"\n")), lim)
	require.NoError(t, err)
	assert.Equal(t, "notch", r.Mark)
	assert.Equal(t, 270.0, r.MarkDirection, "a notch at -Y unless said")
	r, err = Parse("m.toml", []byte(with("mark = \"flat\"\nmark_direction_deg = 90.0\n")), lim)
	require.NoError(t, err)
	assert.Equal(t, "flat", r.Mark)
	assert.Equal(t, 90.0, r.MarkDirection)
	for keys, want := range map[string]string{
		"mark = \"triangle\"\n":                          `wafer.mark: must be "notch" or "flat" (got "triangle")`,
		"mark_direction_deg = 90.0\n":                    `wafer.mark_direction_deg: without wafer.mark`,
		"mark = \"notch\"\nmark_direction_deg = 400.0\n": `wafer.mark_direction_deg: must be in [-360, 360] degrees (got 400)`,
	} {
		_, err := Parse("m.toml", []byte(with(keys)), lim)
		require.Error(t, err, keys)
		assert.Contains(t, err.Error(), want, keys)
	}
}

func TestValidationErrorsNameFileLineAndSite(t *testing.T) {
	cases := []struct {
		name, edit, want string
	}{
		{"site off wafer", `die = [-2, 0]`, `t.toml:12: site[1].die: site 2 (die -6,+0 at (90.000, 150.000)mm) is not inside the wafer`},
		{"site outside travel", `center_mm = [150.0, 150.0]`, `t.toml:8: dies.reference: reference die (die +0,+0 at (-100.000, 150.000)mm) is outside the stage travel (0.000, 0.000)mm–(300.000, 300.000)mm`},
		{"unknown key", `settle_ms = 0`, `t.toml:16: capture.settle: unknown key`},
		{"bad type", `exposure_ms = 10`, `t.toml:14: capture.exposure_ms: expected a number, found the string "ten"`},
		{"exposure range", `exposure_ms = 10`, `t.toml:14: capture.exposure_ms: must be in (0, 10000] ms (got -1)`},
		{"light level", `light_level = 1.0`, `t.toml:15: capture.light_level: must be a fraction from 0.01 to 1 in steps of 0.01 (1%) (got 2)`},
		{"feed too fast", `feed_mm_min = 2000`, `t.toml:17: capture.feed_mm_min: 9000 mm/min exceeds the stage's maximum 6000 mm/min`},
		{"duplicate site", `die = [-2, 0]`, `t.toml:12: site[1].die: site 2 repeats die +1,+1 of site 1`},
		{"syntax", `[capture]`, `t.toml:13: syntax:`},
	}
	repl := map[string]string{
		"site off wafer":      `die = [-6, 0]`,
		"site outside travel": `center_mm = [-100.0, 150.0]`,
		"unknown key":         `settle = 0`,
		"bad type":            `exposure_ms = "ten"`,
		"exposure range":      `exposure_ms = -1`,
		"light level":         `light_level = 2.0`,
		"feed too fast":       `feed_mm_min = 9000`,
		"duplicate site":      `die = [1, 1]`,
		"syntax":              `[capture`,
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			doc := strings.Replace(good, c.edit, repl[c.name], 1)
			require.NotEqual(t, good, doc)
			_, err := Parse("t.toml", []byte(doc), lim)
			require.Error(t, err)
			assert.Contains(t, err.Error(), c.want)
		})
	}
}

func TestAllErrorsAtOnce(t *testing.T) {
	doc := strings.NewReplacer(`light_level = 1.0`, `light_level = 0`, `feed_mm_min = 2000`, `feed_mm_min = 0`).Replace(good)
	_, err := Parse("t.toml", []byte(doc), lim)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "capture.light_level")
	assert.Contains(t, err.Error(), "capture.feed_mm_min")
}

func TestLayoutErrors(t *testing.T) {
	grid := strings.Replace(good, `reference = [0, 0]`, "reference = [0, 0]\nlayout = \"grid\"", 1)
	_, err := Parse("t.toml", []byte(grid), lim)
	require.ErrorContains(t, err, `"grid" generates the sites`)

	none := good[:strings.Index(good, "[[site]]")] + good[strings.Index(good, "[capture]"):]
	_, err = Parse("t.toml", []byte(none), lim)
	require.ErrorContains(t, err, "no sites")

	tiny := strings.Replace(grid, "diameter_mm = 100.0", "diameter_mm = 5.0", 1)
	tiny = tiny[:strings.Index(tiny, "[[site]]")] + tiny[strings.Index(tiny, "[capture]"):]
	_, err = Parse("t.toml", []byte(tiny), lim)
	require.ErrorContains(t, err, "no die fits inside the wafer")
}

func TestMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.toml"), lim)
	require.ErrorContains(t, err, "nope.toml")
}

// TestArraysMustHaveTheirLength: center_mm = [150.0] made Y zero and gave
// a line for every site outside the travel, never naming center_mm.
func TestArraysMustHaveTheirLength(t *testing.T) {
	for edit, want := range map[[2]string]string{
		{`center_mm = [150.0, 150.0]`, `center_mm = [150.0]`}:        "recipe: t.toml:5: wafer.center_mm: expected an array of 2 numbers, found an array of 1 element",
		{`pitch_mm = [10.0, 10.0]`, `pitch_mm = [10.0, 10.0, 10.0]`}: "recipe: t.toml:7: dies.pitch_mm: expected an array of 2 numbers, found an array of 3 elements",
		{`reference = [0, 0]`, `reference = [0]`}:                    "recipe: t.toml:8: dies.reference: expected an array of 2 integers, found an array of 1 element",
		{`die = [-2, 0]`, `die = []`}:                                "recipe: t.toml:12: site[1].die: expected an array of 2 integers, found an array of 0 elements",
		{`die = [-2, 0]`, `die = [-2, 0.5]`}:                         "recipe: t.toml:12: site[1].die[1]: expected an integer, found the number 0.5",
	} {
		doc := strings.Replace(good, edit[0], edit[1], 1)
		require.NotEqual(t, good, doc)
		_, err := Parse("t.toml", []byte(doc), lim)
		require.Error(t, err, edit[1])
		assert.Equal(t, want, err.Error(), "one line, naming the key")
	}
}

// TestEveryFloatRefusesNaNAndInfinity: diameter_mm = nan was accepted
// (diameter -9223372036854775.808mm). Every float key of File, found by
// reflection, is tried.
func TestEveryFloatRefusesNaNAndInfinity(t *testing.T) {
	var keys []string
	var lens []int
	var walk func(t reflect.Type, prefix string)
	walk = func(t reflect.Type, prefix string) {
		for i := range t.NumField() {
			f := t.Field(i)
			key := strings.TrimPrefix(prefix+"."+f.Tag.Get("toml"), ".")
			switch {
			case f.Type.Kind() == reflect.Struct:
				walk(f.Type, key)
			case f.Type.Kind() == reflect.Float64:
				keys, lens = append(keys, key), append(lens, 0)
			case f.Type.Kind() == reflect.Array && f.Type.Elem().Kind() == reflect.Float64:
				keys, lens = append(keys, key), append(lens, f.Type.Len())
			}
		}
	}
	walk(reflect.TypeFor[File](), "")
	require.Contains(t, keys, "wafer.diameter_mm")
	require.Contains(t, keys, "dies.pitch_mm")
	for i, key := range keys {
		table, name, _ := strings.Cut(key, ".")
		for _, v := range []string{"nan", "inf", "-inf"} {
			val := v
			if lens[i] > 0 {
				val = "[" + strings.Repeat("1.0, ", lens[i]-1) + v + "]"
			}
			doc := strings.Replace(good, "["+table+"]\n", fmt.Sprintf("[%s]\n%s = %s\n", table, name, val), 1)
			if !strings.Contains(good, "["+table+"]\n") {
				doc = good + fmt.Sprintf("[%s]\n%s = %s\n", table, name, val)
			}
			// The key is now written twice where good has it: drop the
			// second.
			_, err := Parse("t.toml", []byte(dropSecond(doc, name+" = ")), lim)
			require.Error(t, err, doc)
			assert.Contains(t, err.Error(), ": "+key, doc)
			assert.Contains(t, err.Error(), "expected a finite number, found "+v, doc)
		}
	}
}

// dropSecond removes the second line of doc that starts with prefix.
func dropSecond(doc, prefix string) string {
	lines := strings.SplitAfter(doc, "\n")
	seen := 0
	for i, l := range lines {
		if strings.HasPrefix(l, prefix) {
			if seen++; seen == 2 {
				return strings.Join(append(lines[:i:i], lines[i+1:]...), "")
			}
		}
	}
	return doc
}

func TestBoundsKeepValuesSane(t *testing.T) {
	for edit, want := range map[[2]string]string{
		{`diameter_mm = 100.0`, `diameter_mm = 1e300`}:                                         "t.toml:4: wafer.diameter_mm: must be in (0, 1000] mm (got 1e+300)",
		{`center_mm = [150.0, 150.0]`, `center_mm = [1e20, 0.0]`}:                              "t.toml:5: wafer.center_mm: must be within ±10000 mm (got [1e+20, 0])",
		{`pitch_mm = [10.0, 10.0]`, `pitch_mm = [0.0001, 10.0]`}:                               "t.toml:7: dies.pitch_mm: X: 0.0001 mm is below the stage's resolution, 0.001 mm",
		{`pitch_mm = [10.0, 10.0]`, `pitch_mm = [10.0, 2000.0]`}:                               "t.toml:7: dies.pitch_mm: Y: must be in (0, 1000] mm (got 2000)",
		{`reference = [0, 0]`, `reference = [9223372036854775807, 0]`}:                         "t.toml:8: dies.reference: column and row must be within ±100000 (got [9223372036854775807, 0])",
		{`die = [1, 1]`, `die = [1, -4611686018427387904]`}:                                    "t.toml:10: site[0].die: column and row must be within ±100000",
		{`feed_mm_min = 2000`, `feed_mm_min = 1e300`}:                                          "t.toml:17: capture.feed_mm_min: must be in (0, 1000000] mm/min (got 1e+300)",
		{`feed_mm_min = 2000`, "feed_mm_min = 2000\n[sim]\nmax_defects_per_site = 1000000000"}: "t.toml:19: sim.max_defects_per_site: must be in [0, 100] (got 1000000000)",
	} {
		doc := strings.Replace(good, edit[0], edit[1], 1)
		require.NotEqual(t, good, doc)
		if strconv.IntSize == 32 {
			// On a 32-bit board (armv7) int is 32 bits: the decoder
			// refuses a die index beyond it before the bound does, as
			// clearly.
			switch {
			case strings.HasPrefix(edit[1], "reference"):
				want = "t.toml:8: dies.reference[0]: expected an integer from -2147483648 to 2147483647, found the integer 9223372036854775807"
			case strings.HasPrefix(edit[1], "die ="):
				want = "t.toml:10: site[0].die[1]: expected an integer from -2147483648 to 2147483647, found the integer -4611686018427387904"
			}
		}
		_, err := Parse("t.toml", []byte(doc), Limits{FOV: lim.FOV})
		require.Error(t, err, edit[1])
		assert.Contains(t, err.Error(), want, edit[1])
	}
}

// TestGridTooFine: a grid of a micrometre pitch would look at 10^10 dies.
func TestGridTooFine(t *testing.T) {
	doc := strings.Replace(good, `reference = [0, 0]`, "reference = [0, 0]\nlayout = \"grid\"", 1)
	doc = strings.Replace(doc, `pitch_mm = [10.0, 10.0]`, `pitch_mm = [0.001, 0.001]`, 1)
	doc = doc[:strings.Index(doc, "[[site]]")] + doc[strings.Index(doc, "[capture]"):]
	_, err := Parse("t.toml", []byte(doc), Limits{})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "t.toml:7: dies.pitch_mm: a 100 mm wafer at this pitch is a grid of 10000600009 dies to check, more than 400000")
}

// TestGridTooLarge: a grid of more than MaxSites dies is refused (it
// panicked once, with the sites' keys left out).
func TestGridTooLarge(t *testing.T) {
	doc := strings.Replace(good, `reference = [0, 0]`, "reference = [0, 0]\nlayout = \"grid\"", 1)
	doc = strings.NewReplacer("diameter_mm = 100.0", "diameter_mm = 1000.0", "pitch_mm = [10.0, 10.0]", "pitch_mm = [1.6, 1.6]",
		"center_mm = [150.0, 150.0]", "center_mm = [500.0, 500.0]").Replace(doc)
	doc = doc[:strings.Index(doc, "[[site]]")] + doc[strings.Index(doc, "[capture]"):]
	_, err := Parse("t.toml", []byte(doc), Limits{FOV: motion.Point{X: 1000, Y: 1000}})
	require.Error(t, err)
	assert.Regexp(t, `^recipe: t.toml:9: dies.layout: the grid has \d+ sites, more than 100000$`, err.Error())
}

func TestLightLevelRule(t *testing.T) {
	for _, v := range []float64{0.01, 0.07, 0.5, 0.55, 0.87, 0.99, 1} {
		assert.True(t, ValidLightLevel(v), "%g", v)
	}
	for _, v := range []float64{0, 0.0001, 0.005, 0.015, 0.555, 1.01, 2, -0.5, math.NaN(), math.Inf(1)} {
		assert.False(t, ValidLightLevel(v), "%g", v)
	}
	doc := strings.Replace(good, `light_level = 1.0`, `light_level = 0.0001`, 1)
	_, err := Parse("t.toml", []byte(doc), lim)
	assert.ErrorContains(t, err, "t.toml:15: capture.light_level: must be a fraction from 0.01 to 1 in steps of 0.01 (1%) (got 0.0001)")
}

func TestMinPitch(t *testing.T) {
	doc := strings.Replace(good, `pitch_mm = [10.0, 10.0]`, `pitch_mm = [0.15, 10.0]`, 1)
	doc = strings.NewReplacer("die = [1, 1]", "die = [3, 1]", "die = [-2, 0]", "die = [-3, 0]").Replace(doc)
	l := lim
	_, err := Parse("t.toml", []byte(doc), l)
	require.NoError(t, err, "no minimum on a real camera")
	l.MinPitch = 201
	_, err = Parse("t.toml", []byte(doc), l)
	assert.EqualError(t, err, "recipe: t.toml:7: dies.pitch_mm: X: 0.15 mm is less than the 0.201mm this camera can image")
}

// TestPitchNeedNotBeWholePixels: demo.toml said a pitch had to be a whole
// number of the synthetic camera's pixels. It need not: every site is
// imaged centred on its die, so at any pitch in whole micrometres the
// camera renders every site of the grid exactly like the reference die.
func TestPitchNeedNotBeWholePixels(t *testing.T) {
	doc := strings.Replace(good, `reference = [0, 0]`, "reference = [0, 0]\nlayout = \"grid\"", 1)
	doc = strings.Replace(doc, `pitch_mm = [10.0, 10.0]`, `pitch_mm = [10.013, 9.987]`, 1)
	doc = doc[:strings.Index(doc, "[[site]]")] + doc[strings.Index(doc, "[capture]"):]
	l := lim
	l.FOV = motion.Point{X: 256 * 20, Y: 256 * 20}
	r, err := Parse("t.toml", []byte(doc), l)
	require.NoError(t, err)
	require.Greater(t, len(r.Sites), 20)
	cam, err := simcam.New(simcam.Config{Width: 256, Height: 256, PixelSize: 20, WaferCenter: r.WaferCenter,
		WaferDiameter: r.WaferDiameter, DiePitch: r.DiePitch, Noise: -1,
		Position: func() motion.Point { return r.Reference.At }, Lit: func() bool { return true }})
	require.NoError(t, err)
	defer cam.Close()
	ref := cam.Render(r.Reference.At, true, 0)
	for _, s := range r.Sites {
		f := cam.Render(s.At, true, 0)
		require.Equal(t, ref.Pix, f.Pix, "site %v at %v", s.Die, s.At)
	}
}

// TestRequiredKeys: a key with no sensible default must be written; a
// missing center_mm put the wafer at the origin and every site outside the
// travel, without naming center_mm.
func TestRequiredKeys(t *testing.T) {
	doc := strings.Replace(good, "center_mm = [150.0, 150.0]\n", "", 1)
	_, err := Parse("t.toml", []byte(doc), lim)
	require.Error(t, err)
	assert.Equal(t, "recipe: t.toml:3: wafer.center_mm: missing: give the stage position of the wafer's centre, [X, Y] in mm", err.Error())

	_, err = Parse("t.toml", []byte("name = \"empty\"\n"), lim)
	require.Error(t, err)
	lines := strings.Split(err.Error(), "\n")
	require.Len(t, lines, 6, err.Error())
	for i, key := range []string{"wafer.diameter_mm", "wafer.center_mm", "dies.pitch_mm", "capture.exposure_ms", "capture.light_level", "capture.feed_mm_min"} {
		assert.Contains(t, lines[i], "t.toml: "+key+": missing: give ")
	}

	inline := "wafer = {diameter_mm = 100.0, center_mm = [150.0, 150.0]}\n" + good[strings.Index(good, "[dies]"):]
	_, err = Parse("t.toml", []byte(inline), lim)
	assert.NoError(t, err, "written in an inline table")
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return string(b)
}
