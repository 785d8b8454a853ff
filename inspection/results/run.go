// Package results writes and reads the records of inspection runs so that
// nothing is lost: every file is replaced atomically (temporary file in the
// same directory, fsync, rename, fsync of the directory), so a crash or a
// full disk leaves either the previous complete file or the new complete
// file, never a torn one.
//
// On-disk layout, under the data directory given to Open:
//
//	runs/<run-id>/run.json          the run record (Run), rewritten after every change
//	runs/<run-id>/sites/NNNN.json   defect list of site N (SiteResult)
//	runs/<run-id>/sites/NNNN.png    image of site N, 8-bit grey
//	runs/<run-id>/wafermap.png      wafer map (RenderWaferMap), written by Finish
//
// NNNN is the site index in decimal, zero-padded to four digits (wider when
// the index needs it). All paths stored inside run.json are relative to the
// run directory and use '/'.
//
// Write order per site is image, defect list, run.json, so an existing
// sites/NNNN.json always has its image beside it, and run.json never points
// at a file that is not complete. A run found "running" at start-up is marked
// "interrupted" by MarkInterrupted, which also picks up sites whose files were
// written but not yet recorded in run.json.
package results

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/waferd/waferd/motion"
)

// State is the outcome of a run as recorded in run.json.
type State string

// Run states. Running is the only non-final state.
const (
	Running     State = "running"     // in progress (or found so after a crash: see MarkInterrupted)
	Completed   State = "completed"   // every site was visited
	Canceled    State = "canceled"    // stopped by the operator, the button or a shutdown
	Failed      State = "failed"      // an error in the work ended the run
	Aborted     State = "aborted"     // fault, watchdog or e-stop
	Interrupted State = "interrupted" // found unfinished at start-up (crash, power loss)
)

// Final reports whether s is one of the final states a run can end in.
func (s State) Final() bool {
	switch s {
	case Completed, Canceled, Failed, Aborted, Interrupted:
		return true
	}
	return false
}

// SiteStatus is the progress of one site.
type SiteStatus string

// Site statuses.
const (
	SitePending SiteStatus = "pending" // not (yet) saved
	SiteDone    SiteStatus = "done"    // defect list (and image) saved
	SiteFailed  SiteStatus = "failed"  // the work on this site failed; see Site.Error
)

// Site is one inspection site of a run.
type Site struct {
	Index int `json:"index"`
	// Die is the die column and row relative to the wafer centre die.
	Die [2]int `json:"die"`
	// XMM and YMM are the machine coordinates of the site centre, in mm.
	XMM    float64    `json:"x_mm"`
	YMM    float64    `json:"y_mm"`
	Status SiteStatus `json:"status"`
	// Defects is the number of defects found (done sites only).
	Defects int `json:"defects"`
	// Result is the path of the defect list relative to the run directory.
	Result string `json:"result,omitempty"`
	// Image is the path of the site image relative to the run directory.
	Image string `json:"image,omitempty"`
	// Error says why the site failed (failed sites only).
	Error string `json:"error,omitempty"`
}

// Defect is one defect found on a site.
type Defect struct {
	// XMM and YMM are the machine coordinates of the centroid, in mm.
	XMM float64 `json:"x_mm"`
	YMM float64 `json:"y_mm"`
	// Box is the bounding box x0,y0,x1,y1 in image pixels (x1,y1 exclusive).
	Box [4]int `json:"box_px"`
	// AreaPx is the area in pixels, AreaUM2 in square micrometres.
	AreaPx  int     `json:"area_px"`
	AreaUM2 float64 `json:"area_um2"`
	// Peak is the strongest pixel deviation from the background (0..255).
	Peak int `json:"peak"`
}

// SiteResult is the content of sites/NNNN.json.
type SiteResult struct {
	RunID   string   `json:"run_id"`
	Index   int      `json:"index"`
	Die     [2]int   `json:"die"`
	XMM     float64  `json:"x_mm"`
	YMM     float64  `json:"y_mm"`
	Defects []Defect `json:"defects"` // never null in the file
}

// Geometry describes the wafer for the wafer map. In JSON the values are
// millimetres and degrees:
//
//	{"wafer_center_mm":[x,y],"wafer_diameter_mm":d,"die_pitch_mm":[x,y],
//	 "orientation_mark":{"kind":"notch","direction_deg":270},
//	 "reference_die":{"die":[c,r],"center_mm":[x,y]}}
//
// orientation_mark and reference_die are absent when unknown: records
// written before they existed load with both nil.
type Geometry struct {
	WaferCenter   motion.Point    // machine coordinates of the wafer centre
	WaferDiameter motion.Distance // zero when unknown
	DiePitch      motion.Point    // die size (step) in X and Y; zero when unknown
	// Mark is the wafer's notch or flat as the wafer lies on the stage; nil
	// when unknown, and the wafer map then draws DefaultMark, marked as
	// assumed.
	Mark *OrientationMark
	// Reference is the golden die the sites are compared against; nil when
	// unknown (not drawn).
	Reference *ReferenceDie
}

// MarkKind is the kind of a wafer's orientation mark.
type MarkKind string

// Orientation mark kinds (SEMI M1): 200 mm and 300 mm wafers have a notch,
// smaller ones a primary flat.
const (
	MarkNotch MarkKind = "notch"
	MarkFlat  MarkKind = "flat"
)

// OrientationMark says where a wafer's notch or flat is on the stage.
type OrientationMark struct {
	Kind MarkKind // MarkNotch or MarkFlat
	// Direction is the direction from the wafer centre to the mark, in
	// degrees counter-clockwise from machine +X: 0 is +X, 90 is +Y, 270
	// (or -90) is -Y.
	Direction float64
}

// DefaultMark is the orientation mark assumed when a run's geometry does
// not give one: a notch at -Y, as 200 mm and 300 mm wafers are loaded.
func DefaultMark() OrientationMark { return OrientationMark{Kind: MarkNotch, Direction: 270} }

// ReferenceDie is the golden die of a run. It need not be one of the sites.
type ReferenceDie struct {
	Die [2]int       // column, row relative to the wafer centre die (as Site.Die)
	At  motion.Point // machine coordinates of its centre
}

// check reports a geometry that could not be written or read back.
func (g Geometry) check() error {
	if m := g.Mark; m != nil {
		if m.Kind != MarkNotch && m.Kind != MarkFlat {
			return fmt.Errorf("geometry: orientation_mark.kind %q: want %q or %q", m.Kind, MarkNotch, MarkFlat)
		}
		if math.IsNaN(m.Direction) || math.IsInf(m.Direction, 0) {
			return fmt.Errorf("geometry: orientation_mark.direction_deg is %g: want a finite angle", m.Direction)
		}
	}
	return nil
}

// clone returns a copy of g that shares no memory with it.
func (g Geometry) clone() Geometry {
	if g.Mark != nil {
		m := *g.Mark
		g.Mark = &m
	}
	if g.Reference != nil {
		r := *g.Reference
		g.Reference = &r
	}
	return g
}

type geometryJSON struct {
	WaferCenterMM   [2]float64 `json:"wafer_center_mm"`
	WaferDiameterMM float64    `json:"wafer_diameter_mm"`
	DiePitchMM      [2]float64 `json:"die_pitch_mm"`
	Mark            *markJSON  `json:"orientation_mark,omitempty"`
	Reference       *refJSON   `json:"reference_die,omitempty"`
}

type markJSON struct {
	Kind         MarkKind `json:"kind"`
	DirectionDeg float64  `json:"direction_deg"`
}

type refJSON struct {
	Die      [2]int     `json:"die"`
	CenterMM [2]float64 `json:"center_mm"`
}

func pointMM(p motion.Point) [2]float64 { return [2]float64{p.X.Millimetres(), p.Y.Millimetres()} }

func mmPoint(v [2]float64) motion.Point { return motion.Point{X: motion.MM(v[0]), Y: motion.MM(v[1])} }

// MarshalJSON encodes g in millimetres and degrees. An orientation mark of
// an unknown kind or a non-finite direction is an error.
func (g Geometry) MarshalJSON() ([]byte, error) {
	if err := g.check(); err != nil {
		return nil, err
	}
	j := geometryJSON{
		WaferCenterMM:   pointMM(g.WaferCenter),
		WaferDiameterMM: g.WaferDiameter.Millimetres(),
		DiePitchMM:      pointMM(g.DiePitch),
	}
	if m := g.Mark; m != nil {
		j.Mark = &markJSON{Kind: m.Kind, DirectionDeg: m.Direction}
	}
	if r := g.Reference; r != nil {
		j.Reference = &refJSON{Die: r.Die, CenterMM: pointMM(r.At)}
	}
	return json.Marshal(j)
}

// UnmarshalJSON decodes g from millimetres, rounding to the micrometre. An
// orientation mark of an unknown kind is an error.
func (g *Geometry) UnmarshalJSON(b []byte) error {
	var j geometryJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	d := Geometry{
		WaferCenter:   mmPoint(j.WaferCenterMM),
		WaferDiameter: motion.MM(j.WaferDiameterMM),
		DiePitch:      mmPoint(j.DiePitchMM),
	}
	if m := j.Mark; m != nil {
		d.Mark = &OrientationMark{Kind: m.Kind, Direction: m.DirectionDeg}
	}
	if r := j.Reference; r != nil {
		d.Reference = &ReferenceDie{Die: r.Die, At: mmPoint(r.CenterMM)}
	}
	if err := d.check(); err != nil {
		return err
	}
	*g = d
	return nil
}

// Run is the record of one inspection run, the content of run.json.
type Run struct {
	ID         string `json:"id"`
	Recipe     string `json:"recipe"`
	RecipeFile string `json:"recipe_file"`
	State      State  `json:"state"`
	// Reason says why the run ended (for example the stop reason).
	Reason string `json:"reason"`
	// Error is the run error's text for failed and aborted runs.
	Error     string     `json:"error"`
	StartedAt time.Time  `json:"started_at"`
	EndedAt   *time.Time `json:"ended_at"` // null while running
	// SitesTotal, SitesDone, SitesFailed and DefectsTotal are derived from
	// Sites on every change.
	SitesTotal   int `json:"sites_total"`
	SitesDone    int `json:"sites_done"`
	SitesFailed  int `json:"sites_failed"`
	DefectsTotal int `json:"defects_total"`
	// Complete is true only for a Completed run whose every site is done.
	Complete bool `json:"complete"`
	// PositionTrusted is false when the stage position was lost (re-homing
	// required) at the end of the run.
	PositionTrusted bool     `json:"position_trusted"`
	Geometry        Geometry `json:"geometry"`
	Sites           []Site   `json:"sites"`
}

// clone returns a deep copy of r.
func (r Run) clone() Run {
	c := r
	c.Geometry = r.Geometry.clone()
	if r.EndedAt != nil {
		t := *r.EndedAt
		c.EndedAt = &t
	}
	if r.Sites != nil {
		c.Sites = append([]Site(nil), r.Sites...)
	}
	return c
}

// recount derives the counters from the sites.
func (r *Run) recount() {
	r.SitesTotal = len(r.Sites)
	r.SitesDone, r.SitesFailed, r.DefectsTotal = 0, 0, 0
	for _, s := range r.Sites {
		switch s.Status {
		case SiteDone:
			r.SitesDone++
			r.DefectsTotal += s.Defects
		case SiteFailed:
			r.SitesFailed++
		}
	}
}

// marshalRecord encodes v as the record files (run.json, sites/NNNN.json)
// have always been written: encoding/json, indented by two spaces, HTML
// characters escaped, ending in a newline (json.MarshalIndent's output and
// "\n"; TestRecordFormat holds files of earlier releases to it). Values
// that encoding/json refuses (NaN, infinities) return its error.
//
// Each call has a buffer of its own. Reusing one for run.json (2 MB for a
// run of 10,000 sites, rewritten at most once a second) would keep up to
// twice the finished record's size allocated until the run ends, as the
// buffer doubles; a fresh one is garbage at once.
func marshalRecord(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Sentinel errors that callers test with errors.Is. Missing runs are
// reported with errors wrapping fs.ErrNotExist.
var (
	// ErrInvalidID: a run ID that is empty, longer than 255 bytes, or
	// contains '/', '\\', NUL or "..", or starts with '.'.
	ErrInvalidID = errors.New("results: invalid run id")
	// ErrFinished: the run was already finished; nothing more can be saved.
	ErrFinished = errors.New("results: run already finished")
)

// validateID checks that id names a directory inside the runs directory.
func validateID(id string) error {
	switch {
	case id == "", id[0] == '.', len(id) > 255, strings.Contains(id, ".."):
	default:
		ok := true
		for i := 0; i < len(id); i++ {
			if c := id[i]; c == '/' || c == '\\' || c == 0 {
				ok = false
				break
			}
		}
		if ok {
			return nil
		}
	}
	return fmt.Errorf("%w %q", ErrInvalidID, id)
}
