// Package recipe loads and validates inspection recipes: which wafer, which
// dies, how to light and expose them, and how to judge what the camera sees.
// A recipe is validated completely before any motion; every error names the
// file, the line and the site.
package recipe

import (
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"strings"
	"time"

	"github.com/waferd/waferd/internal/tomlfile"
	"github.com/waferd/waferd/motion"
)

// File is the TOML shape of a recipe file. See examples/recipes/demo.toml
// for every key with its meaning.
type File struct {
	Name     string       `toml:"name"`
	Wafer    WaferFile    `toml:"wafer"`
	Dies     DiesFile     `toml:"dies"`
	Sites    []SiteFile   `toml:"site"`
	Capture  CaptureFile  `toml:"capture"`
	Analysis AnalysisFile `toml:"analysis"`
	Sim      SimFile      `toml:"sim"`
}

type WaferFile struct {
	DiameterMM float64    `toml:"diameter_mm"`
	CenterMM   [2]float64 `toml:"center_mm"`
}

type DiesFile struct {
	PitchMM   [2]float64 `toml:"pitch_mm"`
	Reference [2]int     `toml:"reference"`
	Layout    string     `toml:"layout"`
}

type SiteFile struct {
	Die [2]int `toml:"die"`
}

type CaptureFile struct {
	ExposureMS float64 `toml:"exposure_ms"`
	LightLevel float64 `toml:"light_level"`
	SettleMS   float64 `toml:"settle_ms"`
	FeedMMMin  float64 `toml:"feed_mm_min"`
}

type AnalysisFile struct {
	Threshold int `toml:"threshold"`
	MinAreaPx int `toml:"min_area_px"`
}

// SimFile seeds the synthetic camera's defects on the simulated board. It
// is ignored on real hardware.
type SimFile struct {
	Seed              uint64  `toml:"seed"`
	DefectFraction    float64 `toml:"defect_fraction"`
	MaxDefectsPerSite int     `toml:"max_defects_per_site"`
}

// Site is one place to inspect.
type Site struct {
	Index int
	Die   [2]int       // column,row relative to the die at the wafer centre
	At    motion.Point // machine coordinates of the die centre
}

// Recipe is a validated recipe ready to run. It is immutable once returned
// by Load and safe to share between goroutines.
type Recipe struct {
	Name string
	Path string // file it came from

	WaferCenter   motion.Point
	WaferDiameter motion.Distance
	DiePitch      motion.Point
	Reference     Site
	Sites         []Site // in visiting order (serpentine rows)

	Exposure   time.Duration
	LightLevel float64 // 0..1
	Settle     time.Duration
	Feed       motion.Speed

	Threshold uint8
	MinArea   int

	Sim SimFile

	file *tomlfile.File
}

// Limits is what the machine can do, against which a recipe is checked.
type Limits struct {
	Travel motion.Rect  // reachable stage positions
	FOV    motion.Point // camera field of view on the wafer (width, height)
	// MaxFeed is the highest feed the stage accepts, mm/min (0: no check).
	MaxFeed motion.Speed
}

// Load reads the recipe at path and validates it against lim. All problems
// are reported at once, each naming the file, line and key or site.
func Load(path string, lim Limits) (*Recipe, error) {
	var f File
	tf, err := tomlfile.Load(path, &f)
	if err != nil {
		return nil, fmt.Errorf("recipe: %w", err)
	}
	return build(path, tf, &f, lim)
}

// Parse is Load for a recipe held in memory; name stands for the file in
// errors.
func Parse(name string, data []byte, lim Limits) (*Recipe, error) {
	var f File
	tf, err := tomlfile.Decode(name, data, &f)
	if err != nil {
		return nil, fmt.Errorf("recipe: %w", err)
	}
	return build(name, tf, &f, lim)
}

func build(path string, tf *tomlfile.File, f *File, lim Limits) (*Recipe, error) {
	var errs []error
	bad := func(key, format string, args ...any) { errs = append(errs, tf.Errorf(key, format, args...)) }

	r := &Recipe{Name: f.Name, Path: path, file: tf}
	if r.Name == "" {
		r.Name = strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))
	}
	if f.Wafer.DiameterMM <= 0 {
		bad("wafer.diameter_mm", "must be > 0 (got %g)", f.Wafer.DiameterMM)
	}
	if f.Dies.PitchMM[0] <= 0 || f.Dies.PitchMM[1] <= 0 {
		bad("dies.pitch_mm", "both pitches must be > 0 (got %v)", f.Dies.PitchMM)
	}
	r.WaferCenter = motion.Point{X: motion.MM(f.Wafer.CenterMM[0]), Y: motion.MM(f.Wafer.CenterMM[1])}
	r.WaferDiameter = motion.MM(f.Wafer.DiameterMM)
	r.DiePitch = motion.Point{X: motion.MM(f.Dies.PitchMM[0]), Y: motion.MM(f.Dies.PitchMM[1])}

	c := f.Capture
	if c.ExposureMS <= 0 || c.ExposureMS > 10000 {
		bad("capture.exposure_ms", "must be in (0, 10000] ms (got %g)", c.ExposureMS)
	}
	if c.LightLevel <= 0 || c.LightLevel > 1 {
		bad("capture.light_level", "must be in (0, 1] (got %g)", c.LightLevel)
	}
	if c.SettleMS < 0 || c.SettleMS > 10000 {
		bad("capture.settle_ms", "must be in [0, 10000] ms (got %g)", c.SettleMS)
	}
	if c.FeedMMMin <= 0 {
		bad("capture.feed_mm_min", "must be > 0 mm/min (got %g)", c.FeedMMMin)
	} else if lim.MaxFeed > 0 && motion.Speed(c.FeedMMMin) > lim.MaxFeed {
		bad("capture.feed_mm_min", "%g mm/min exceeds the stage's maximum %g mm/min", c.FeedMMMin, float64(lim.MaxFeed))
	}
	r.Exposure = time.Duration(c.ExposureMS * float64(time.Millisecond))
	r.LightLevel = c.LightLevel
	r.Settle = time.Duration(c.SettleMS * float64(time.Millisecond))
	r.Feed = motion.Speed(c.FeedMMMin)

	a := f.Analysis
	if a.Threshold == 0 {
		a.Threshold = 40
	}
	if a.Threshold < 1 || a.Threshold > 254 {
		bad("analysis.threshold", "must be in [1, 254] grey levels (got %d)", a.Threshold)
	}
	if a.MinAreaPx == 0 {
		a.MinAreaPx = 6
	}
	if a.MinAreaPx < 1 {
		bad("analysis.min_area_px", "must be ≥ 1 pixel (got %d)", a.MinAreaPx)
	}
	r.Threshold = uint8(min(max(a.Threshold, 1), 254))
	r.MinArea = a.MinAreaPx

	r.Sim = f.Sim
	if r.Sim.DefectFraction < 0 || r.Sim.DefectFraction > 1 {
		bad("sim.defect_fraction", "must be in [0, 1] (got %g)", r.Sim.DefectFraction)
	}
	if r.Sim.MaxDefectsPerSite < 0 {
		bad("sim.max_defects_per_site", "must be ≥ 0 (got %d)", r.Sim.MaxDefectsPerSite)
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("recipe: %w", errors.Join(errs...))
	}

	// Sites.
	var dies [][2]int
	var keys []string
	switch {
	case f.Dies.Layout == "grid" && len(f.Sites) > 0:
		bad("dies.layout", `"grid" generates the sites; remove the [[site]] entries or the layout`)
	case f.Dies.Layout == "grid":
		dies = r.gridDies(lim.FOV)
		for range dies {
			keys = append(keys, "dies.layout")
		}
		if len(dies) == 0 {
			bad("dies.layout", "no die fits inside the wafer with a %v field of view", lim.FOV)
		}
	case f.Dies.Layout == "" || f.Dies.Layout == "sites":
		if len(f.Sites) == 0 {
			bad("dies.layout", `no sites: add [[site]] entries or set layout = "grid"`)
		}
		seen := make(map[[2]int]int)
		for i, s := range f.Sites {
			key := fmt.Sprintf("site[%d].die", i)
			if j, dup := seen[s.Die]; dup {
				bad(key, "site %d repeats die %v of site %d", i+1, s.Die, j+1)
				continue
			}
			seen[s.Die] = i
			dies = append(dies, s.Die)
			keys = append(keys, key)
		}
	default:
		bad("dies.layout", `unknown layout %q (want "grid" or "sites")`, f.Dies.Layout)
	}

	// Every site and the reference must be reachable and on the wafer.
	check := func(key, what string, die [2]int) motion.Point {
		at := r.DieCenter(die)
		if lim.Travel != (motion.Rect{}) && !lim.Travel.Contains(at) {
			bad(key, "%s (die %v at %v) is outside the stage travel %v–%v", what, die, at, lim.Travel.Min, lim.Travel.Max)
		} else if !r.fovInsideWafer(at, lim.FOV) {
			bad(key, "%s (die %v at %v) is not inside the wafer (diameter %v, field of view %v)", what, die, at, r.WaferDiameter, lim.FOV)
		}
		return at
	}
	r.Reference = Site{Index: -1, Die: f.Dies.Reference}
	r.Reference.At = check("dies.reference", "reference die", f.Dies.Reference)
	for i, d := range dies {
		at := check(keys[i], fmt.Sprintf("site %d", i+1), d)
		r.Sites = append(r.Sites, Site{Die: d, At: at})
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("recipe: %w", errors.Join(errs...))
	}
	if f.Dies.Layout == "grid" {
		serpentine(r.Sites)
	}
	for i := range r.Sites {
		r.Sites[i].Index = i
	}
	return r, nil
}

// DieCenter returns the machine position of die (column, row).
func (r *Recipe) DieCenter(die [2]int) motion.Point {
	return r.WaferCenter.Add(motion.Point{X: motion.Distance(die[0]) * r.DiePitch.X, Y: motion.Distance(die[1]) * r.DiePitch.Y})
}

// fovInsideWafer reports whether the whole field of view centred at p lies
// on the wafer.
func (r *Recipe) fovInsideWafer(p motion.Point, fov motion.Point) bool {
	rad := float64(r.WaferDiameter) / 2
	for _, c := range [4][2]float64{{-1, -1}, {-1, 1}, {1, -1}, {1, 1}} {
		dx := float64(p.X-r.WaferCenter.X) + c[0]*float64(fov.X)/2
		dy := float64(p.Y-r.WaferCenter.Y) + c[1]*float64(fov.Y)/2
		if math.Hypot(dx, dy) > rad {
			return false
		}
	}
	return true
}

// gridDies lists every die whose field of view lies inside the wafer.
func (r *Recipe) gridDies(fov motion.Point) [][2]int {
	nx := int(r.WaferDiameter/r.DiePitch.X)/2 + 1
	ny := int(r.WaferDiameter/r.DiePitch.Y)/2 + 1
	var out [][2]int
	for j := -ny; j <= ny; j++ {
		for i := -nx; i <= nx; i++ {
			if r.fovInsideWafer(r.DieCenter([2]int{i, j}), fov) {
				out = append(out, [2]int{i, j})
			}
		}
	}
	return out
}

// serpentine orders sites row by row (top row first), alternating direction,
// so that consecutive sites are neighbours.
func serpentine(s []Site) {
	// Rows are already grouped by j ascending and i ascending; flip every
	// other row and put the top (highest j) first.
	var rows [][]Site
	for i := 0; i < len(s); {
		j := i
		for j < len(s) && s[j].Die[1] == s[i].Die[1] {
			j++
		}
		rows = append(rows, append([]Site(nil), s[i:j]...))
		i = j
	}
	out := s[:0]
	for k := len(rows) - 1; k >= 0; k-- {
		row := rows[k]
		if (len(rows)-1-k)%2 == 1 {
			for a, b := 0, len(row)-1; a < b; a, b = a+1, b-1 {
				row[a], row[b] = row[b], row[a]
			}
		}
		out = append(out, row...)
	}
}

// DieName writes a die's column and row as the console and the logs show
// them: "+1,-4" (the reference die is "+0,+0").
func DieName(die [2]int) string { return fmt.Sprintf("%+d,%+d", die[0], die[1]) }
