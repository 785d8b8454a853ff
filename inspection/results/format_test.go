package results

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/waferd/waferd/motion"
)

// goldenRun records, through the Store as the runner does, the run whose
// files are kept in testdata/golden: every kind of site (done with defects
// and image, done without either, failed, pending), strings that JSON
// escapes, an outcome, and a geometry with an orientation mark and a
// reference die. It returns the run directory.
func goldenRun(t *testing.T, data string) string {
	t.Helper()
	clock := time.Date(2026, 11, 26, 8, 15, 0, 123456789, time.UTC)
	s, err := Open(data, WithCommitInterval(0), WithClock(func() time.Time {
		clock = clock.Add(1500 * time.Millisecond)
		return clock
	}))
	require.NoError(t, err)
	run := gridRun(4)
	run.ID = "20261126T081500Z-golden"
	run.Recipe = `Golden <"die"> & co`
	run.Geometry.Mark = &OrientationMark{Kind: MarkFlat, Direction: 90}
	run.Geometry.Reference = &ReferenceDie{Die: [2]int{0, 0}, At: motion.Point{X: motion.MM(50), Y: motion.MM(50)}}
	rec, err := s.Create(run)
	require.NoError(t, err)
	require.NoError(t, rec.SaveSite(0, []Defect{
		{XMM: 10.5, YMM: 20.25, Box: [4]int{1, 2, 5, 6}, AreaPx: 12, AreaUM2: 48.5, Peak: 200},
		{XMM: 1e-7, YMM: -1e21, Box: [4]int{10, 10, 12, 12}, AreaPx: 4, AreaUM2: 1.0 / 3, Peak: 90},
	}, testImage(0)))
	require.NoError(t, rec.SaveSite(1, nil, nil))
	require.NoError(t, rec.FailSite(2, errors.New("camera: timeout\n\"frame\" lost")))
	require.NoError(t, rec.Finish(Canceled, "operator: console ttyGS0", errors.New("stopped <here>"), false))
	return rec.Dir()
}

// goldenFiles are the JSON files of goldenRun, relative to its directory.
var goldenFiles = []string{"run.json", "sites/0000.json", "sites/0001.json"}

// TestRecordFormat pins the on-disk format (README "Results", the package
// doc): the files of testdata/golden were written by an earlier release's
// encoder. Records written today must be the same bytes, and the old files
// must load, strictly (no unknown field), to the same records.
//
// testdata/golden/run.json gained geometry.orientation_mark and
// geometry.reference_die; testdata/golden-before-marks/run.json is the same
// run as written before them, and must still load, to the same record
// without them.
func TestRecordFormat(t *testing.T) {
	dir := goldenRun(t, t.TempDir())
	for _, rel := range goldenFiles {
		want, err := os.ReadFile(filepath.Join("testdata", "golden", filepath.FromSlash(rel)))
		require.NoError(t, err)
		got, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(rel)))
		require.NoError(t, err)
		assert.Equal(t, string(want), string(got), "%s differs from the recorded format", rel)
	}

	// The old files load through the Store into what today's run holds.
	data := t.TempDir()
	old := filepath.Join(data, "runs", "20261126T081500Z-golden")
	require.NoError(t, os.MkdirAll(filepath.Join(old, "sites"), 0o755))
	for _, rel := range goldenFiles {
		b, err := os.ReadFile(filepath.Join("testdata", "golden", filepath.FromSlash(rel)))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(old, filepath.FromSlash(rel)), b, 0o644))
	}
	s, err := Open(data)
	require.NoError(t, err)
	loaded, err := s.Load("20261126T081500Z-golden")
	require.NoError(t, err)
	assert.Equal(t, readRunFile(t, dir), loaded)
	assert.Equal(t, Canceled, loaded.State)
	assert.Equal(t, []SiteStatus{SiteDone, SiteDone, SiteFailed, SitePending},
		[]SiteStatus{loaded.Sites[0].Status, loaded.Sites[1].Status, loaded.Sites[2].Status, loaded.Sites[3].Status})
	site, err := s.LoadSite("20261126T081500Z-golden", 0)
	require.NoError(t, err)
	assert.Len(t, site.Defects, 2)
	assert.Equal(t, 1.0/3, site.Defects[1].AreaUM2)
	for _, rel := range goldenFiles[1:] {
		b, err := os.ReadFile(filepath.Join(old, filepath.FromSlash(rel)))
		require.NoError(t, err)
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		var res SiteResult
		require.NoError(t, dec.Decode(&res), rel)
	}

	// A run.json from before the orientation mark and the reference die.
	b, err := os.ReadFile(filepath.Join("testdata", "golden-before-marks", "run.json"))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(old, "run.json"), b, 0o644))
	before, err := s.Load("20261126T081500Z-golden")
	require.NoError(t, err)
	assert.Nil(t, before.Geometry.Mark)
	assert.Nil(t, before.Geometry.Reference)
	want := readRunFile(t, dir)
	want.Geometry.Mark, want.Geometry.Reference = nil, nil
	assert.Equal(t, want, before)
}
