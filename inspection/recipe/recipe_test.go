package recipe

import (
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/waferd/waferd/motion"
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

func TestValidationErrorsNameFileLineAndSite(t *testing.T) {
	cases := []struct {
		name, edit, want string
	}{
		{"site off wafer", `die = [-2, 0]`, `t.toml:12: site[1].die: site 2 (die [-6 0] at (90.000, 150.000)mm) is not inside the wafer`},
		{"site outside travel", `center_mm = [150.0, 150.0]`, `t.toml:8: dies.reference: reference die (die [0 0] at (-100.000, 150.000)mm) is outside the stage travel (0.000, 0.000)mm–(300.000, 300.000)mm`},
		{"unknown key", `settle_ms = 0`, `t.toml:16: capture.settle: unknown key`},
		{"bad type", `exposure_ms = 10`, `t.toml:14: capture.exposure_ms: expected a number, found the string "ten"`},
		{"exposure range", `exposure_ms = 10`, `t.toml:14: capture.exposure_ms: must be in (0, 10000] ms (got -1)`},
		{"light level", `light_level = 1.0`, `t.toml:15: capture.light_level: must be in (0, 1] (got 2)`},
		{"feed too fast", `feed_mm_min = 2000`, `t.toml:17: capture.feed_mm_min: 9000 mm/min exceeds the stage's maximum 6000 mm/min`},
		{"duplicate site", `die = [-2, 0]`, `t.toml:12: site[1].die: site 2 repeats die [1 1] of site 1`},
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
