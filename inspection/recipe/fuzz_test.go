package recipe

import (
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/waferd/waferd/internal/tomlfile/tomlfiletest"
	"github.com/waferd/waferd/motion"
)

// FuzzRecipe parses arbitrary recipes against the demo machine's limits
// (make fuzz). The invariant: either a clean error (every line names the
// file, no Go internals, no control characters, at most 21 lines) or a
// recipe that is fully checked: every value in its range, every site on
// the wafer and inside the travel, and the same recipe when parsed again.
func FuzzRecipe(f *testing.F) {
	demo, err := os.ReadFile(demoPath(nil))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(demo)
	f.Add([]byte(good))
	for _, edit := range [][2]string{
		{`center_mm = [150.0, 150.0]`, `center_mm = [150.0]`},
		{`diameter_mm = 100.0`, `diameter_mm = nan`},
		{`pitch_mm = [10.0, 10.0]`, `pitch_mm = [10.01, 10]`},
		{`exposure_ms = 10`, `exposure_ms = "ten"`},
		{`light_level = 1.0`, `light_level = 0.0001`},
		{`reference = [0, 0]`, "reference = [0, 0]\nlayout = \"grid\""},
		{`die = [1, 1]`, "die = [1, 1]\ndie = [2, 2]"},
		{`[capture]`, "[sim]\nseed = 1\n[capture]"},
	} {
		f.Add([]byte(strings.Replace(good, edit[0], edit[1], 1)))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := Parse("f.toml", data, lim)
		if err != nil {
			if why := tomlfiletest.CheckMessage(err.Error(), "recipe: ", "f.toml"); why != "" {
				t.Fatalf("unclean error: %s\n%s", why, err)
			}
			return
		}
		checkRecipe(t, r)
		again, err := Parse("f.toml", data, lim)
		if err != nil {
			t.Fatalf("parsed once, not twice: %v", err)
		}
		r.file, again.file = nil, nil
		if !reflect.DeepEqual(r, again) {
			t.Fatalf("parsed twice, two recipes:\n%+v\n%+v", r, again)
		}
	})
}

// checkRecipe checks everything Parse promises of a recipe it returns.
func checkRecipe(t *testing.T, r *Recipe) {
	t.Helper()
	fail := func(format string, args ...any) { t.Helper(); t.Fatalf(format, args...) }
	if r.Name == "" {
		fail("no name")
	}
	if r.WaferDiameter <= 0 || r.WaferDiameter > MaxDiameterMM*motion.Millimetre {
		fail("diameter %v", r.WaferDiameter)
	}
	if r.DiePitch.X < motion.Micrometre || r.DiePitch.Y < motion.Micrometre || r.DiePitch.X > MaxPitchMM*motion.Millimetre || r.DiePitch.Y > MaxPitchMM*motion.Millimetre {
		fail("pitch %v", r.DiePitch)
	}
	if r.Exposure <= 0 || r.Exposure.Seconds() > 10 || r.Settle < 0 || r.Settle.Seconds() > 10 {
		fail("exposure %v, settle %v", r.Exposure, r.Settle)
	}
	if !ValidLightLevel(r.LightLevel) {
		fail("light level %g", r.LightLevel)
	}
	if f := float64(r.Feed); !(f > 0 && f <= float64(lim.MaxFeed)) {
		fail("feed %g", f)
	}
	if r.Threshold < 1 || r.Threshold > 254 || r.MinArea < 1 {
		fail("threshold %d, min area %d", r.Threshold, r.MinArea)
	}
	if fr := r.Sim.DefectFraction; !(fr >= 0 && fr <= 1) || r.Sim.MaxDefectsPerSite < 0 || r.Sim.MaxDefectsPerSite > MaxDefectsPerSite {
		fail("sim %+v", r.Sim)
	}
	if len(r.Sites) == 0 || len(r.Sites) > MaxSites {
		fail("%d sites", len(r.Sites))
	}
	seen := make(map[[2]int]bool)
	for i, s := range append([]Site{r.Reference}, r.Sites...) {
		if i > 0 && (s.Index != i-1 || seen[s.Die]) {
			fail("site %d: index %d, die %v seen before: %v", i-1, s.Index, s.Die, seen[s.Die])
		}
		if i > 0 {
			seen[s.Die] = true
		}
		if s.At != r.DieCenter(s.Die) || !lim.Travel.Contains(s.At) || !r.fovInsideWafer(s.At, lim.FOV) {
			fail("site %d (die %v) at %v: off its die, the travel or the wafer", i-1, s.Die, s.At)
		}
	}
}
