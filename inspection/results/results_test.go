package results

import (
	"bytes"
	"encoding/json"
	"errors"
	"image"
	"image/png"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/waferd/waferd/internal/atomicfile"
	"github.com/waferd/waferd/motion"
)

// fakeClock returns a clock that advances one second per reading.
func fakeClock() func() time.Time {
	var mu sync.Mutex
	t := time.Date(2026, 11, 26, 8, 15, 0, 0, time.UTC)
	return func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		t = t.Add(time.Second)
		return t
	}
}

func openStore(t *testing.T) *Store {
	t.Helper()
	s, err := Open(t.TempDir(), WithClock(fakeClock()), WithCommitInterval(0))
	require.NoError(t, err)
	return s
}

// gridRun returns a run of n sites on a row, 10 mm pitch, on a 100 mm wafer
// centred at (50, 50) mm.
func gridRun(n int) Run {
	run := Run{
		Recipe:          "Demo Recipe",
		RecipeFile:      "recipes/demo.toml",
		PositionTrusted: true,
		Geometry: Geometry{
			WaferCenter:   motion.Point{X: motion.MM(50), Y: motion.MM(50)},
			WaferDiameter: motion.MM(100),
			DiePitch:      motion.Point{X: motion.MM(10), Y: motion.MM(10)},
		},
	}
	for i := 0; i < n; i++ {
		col, row := i%8-4, i/8-4
		run.Sites = append(run.Sites, Site{Index: i, Die: [2]int{col, row}, XMM: 50 + float64(col)*10, YMM: 50 + float64(row)*10})
	}
	return run
}

func testImage(seed int) *image.Gray {
	g := image.NewGray(image.Rect(0, 0, 64, 48))
	for i := range g.Pix {
		g.Pix[i] = uint8(i*7 + seed)
	}
	return g
}

// readRunFile reads run.json of rec strictly and checks that its counters
// agree with its sites.
func readRunFile(t *testing.T, dir string) Run {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "run.json"))
	require.NoError(t, err)
	require.True(t, json.Valid(b), "run.json is not valid JSON: %s", b)
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var run Run
	require.NoError(t, dec.Decode(&run))
	done, failed, defects := 0, 0, 0
	for _, s := range run.Sites {
		switch s.Status {
		case SiteDone:
			done++
			defects += s.Defects
		case SiteFailed:
			failed++
		}
	}
	assert.Equal(t, done, run.SitesDone, "sites_done")
	assert.Equal(t, failed, run.SitesFailed, "sites_failed")
	assert.Equal(t, defects, run.DefectsTotal, "defects_total")
	assert.Equal(t, len(run.Sites), run.SitesTotal, "sites_total")
	return run
}

// assertNoTemps fails if a temporary file is left in dir or its sites.
func assertNoTemps(t *testing.T, dirs ...string) {
	t.Helper()
	for _, d := range dirs {
		entries, err := os.ReadDir(d)
		require.NoError(t, err)
		for _, e := range entries {
			assert.False(t, atomicfile.IsTemp(e.Name()), "temporary file %s left in %s", e.Name(), d)
		}
	}
}

func TestNewID(t *testing.T) {
	now := time.Date(2026, 11, 26, 9, 15, 0, 0, time.FixedZone("CET", 3600))
	cases := map[string]string{
		"demo":                   "20261126T081500Z-demo",
		"Demo Recipe #2":         "20261126T081500Z-demo-recipe-2",
		"../../etc/passwd":       "20261126T081500Z-etc-passwd",
		"a..b":                   "20261126T081500Z-a.b",
		"":                       "20261126T081500Z-run",
		"///":                    "20261126T081500Z-run",
		"wafer_v1.2":             "20261126T081500Z-wafer_v1.2",
		"Überprüfung":            "20261126T081500Z-berpr-fung",
		strings.Repeat("x", 100): "20261126T081500Z-" + strings.Repeat("x", 48),
	}
	for in, want := range cases {
		got := NewID(now, in)
		assert.Equal(t, want, got, "NewID(%q)", in)
		assert.NoError(t, validateID(got))
	}
}

func TestOpen(t *testing.T) {
	data := t.TempDir()
	s, err := Open(data)
	require.NoError(t, err)
	fi, err := os.Stat(filepath.Join(data, "runs"))
	require.NoError(t, err)
	assert.True(t, fi.IsDir())
	assert.Equal(t, filepath.Join(data, "runs"), s.Dir())

	file := filepath.Join(t.TempDir(), "notadir")
	require.NoError(t, os.WriteFile(file, nil, 0o644))
	_, err = Open(file)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "results: data directory")
	assert.Contains(t, err.Error(), "not a directory")

	data2 := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(data2, "runs"), nil, 0o644))
	_, err = Open(data2)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "results:")
}

func TestOpenNotWritable(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("running as root: permission bits do not block writes (covered by the parent-is-a-file tests)")
	}
	data := t.TempDir()
	runs := filepath.Join(data, "runs")
	require.NoError(t, os.Mkdir(runs, 0o500))
	t.Cleanup(func() { _ = os.Chmod(runs, 0o755) })
	_, err := Open(data)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "not writable")
	assert.True(t, errors.Is(err, fs.ErrPermission))
}

func TestRoundTrip(t *testing.T) {
	s := openStore(t)
	rec, err := s.Create(gridRun(3))
	require.NoError(t, err)
	id := rec.ID()
	assert.Equal(t, "20261126T081501Z-demo-recipe", id)
	dir := rec.Dir()
	assert.Equal(t, filepath.Join(s.Dir(), id), dir)

	run := readRunFile(t, dir)
	assert.Equal(t, Running, run.State)
	assert.Equal(t, 3, run.SitesTotal)
	assert.Equal(t, 0, run.SitesDone)
	assert.Nil(t, run.EndedAt)
	assert.Equal(t, gridRun(3).Geometry, run.Geometry)
	for _, st := range run.Sites {
		assert.Equal(t, SitePending, st.Status)
	}

	defects := []Defect{
		{XMM: 10.5, YMM: 20.25, Box: [4]int{1, 2, 5, 6}, AreaPx: 12, AreaUM2: 48.5, Peak: 200},
		{XMM: 11, YMM: 21, Box: [4]int{10, 10, 12, 12}, AreaPx: 4, AreaUM2: 16, Peak: 90},
	}
	img := testImage(1)
	require.NoError(t, rec.SaveSite(0, defects, img))
	run = readRunFile(t, dir)
	assert.Equal(t, 1, run.SitesDone)
	assert.Equal(t, 2, run.DefectsTotal)
	assert.Equal(t, Site{Index: 0, Die: [2]int{-4, -4}, XMM: 10, YMM: 10, Status: SiteDone, Defects: 2,
		Result: "sites/0000.json", Image: "sites/0000.png"}, run.Sites[0])

	res, err := s.LoadSite(id, 0)
	require.NoError(t, err)
	assert.Equal(t, SiteResult{RunID: id, Index: 0, Die: [2]int{-4, -4}, XMM: 10, YMM: 10, Defects: defects}, res)

	f, err := os.Open(filepath.Join(dir, "sites", "0000.png"))
	require.NoError(t, err)
	decoded, err := png.Decode(f)
	require.NoError(t, f.Close())
	require.NoError(t, err)
	gray, ok := decoded.(*image.Gray)
	require.True(t, ok, "site image decodes as %T, want *image.Gray", decoded)
	assert.Equal(t, img.Pix, gray.Pix)

	require.NoError(t, rec.FailSite(1, errors.New("camera: timeout")))
	run = readRunFile(t, dir)
	assert.Equal(t, SiteFailed, run.Sites[1].Status)
	assert.Equal(t, "camera: timeout", run.Sites[1].Error)
	assert.Equal(t, 1, run.SitesDone)

	require.NoError(t, rec.SaveSite(2, nil, nil)) // no defects, no image
	run = readRunFile(t, dir)
	assert.Equal(t, 2, run.SitesDone)
	assert.Empty(t, run.Sites[2].Image)
	b, err := os.ReadFile(filepath.Join(dir, "sites", "0002.json"))
	require.NoError(t, err)
	assert.Contains(t, string(b), `"defects": []`)

	// Errors for misuse.
	assert.ErrorContains(t, rec.SaveSite(0, nil, nil), "already saved")
	assert.ErrorContains(t, rec.SaveSite(7, nil, nil), "no such site")
	assert.ErrorContains(t, rec.FailSite(0, nil), "already saved")
	assert.ErrorContains(t, rec.Finish(Running, "", nil, true), "not a final state")

	require.NoError(t, rec.Finish(Completed, "all sites visited", nil, true))
	run = readRunFile(t, dir)
	assert.Equal(t, Completed, run.State)
	assert.False(t, run.Complete, "a failed site makes the run incomplete")
	assert.Equal(t, "all sites visited", run.Reason)
	require.NotNil(t, run.EndedAt)
	assert.True(t, run.EndedAt.After(run.StartedAt))
	assert.True(t, run.PositionTrusted)

	f, err = os.Open(filepath.Join(dir, "wafermap.png"))
	require.NoError(t, err)
	_, err = png.Decode(f)
	require.NoError(t, f.Close())
	require.NoError(t, err)

	loaded, err := s.Load(id)
	require.NoError(t, err)
	assert.Equal(t, rec.Run(), loaded)
	assertNoTemps(t, dir, filepath.Join(dir, "sites"))

	assert.ErrorIs(t, rec.SaveSite(1, nil, nil), ErrFinished)
	assert.ErrorIs(t, rec.FailSite(1, nil), ErrFinished)
}

func TestFinishIdempotent(t *testing.T) {
	s := openStore(t)
	rec, err := s.Create(gridRun(2))
	require.NoError(t, err)
	require.NoError(t, rec.SaveSite(0, nil, nil))
	require.NoError(t, rec.SaveSite(1, nil, nil))
	require.NoError(t, rec.Finish(Aborted, "watchdog", errors.New("stage silent"), false))
	before, err := os.ReadFile(filepath.Join(rec.Dir(), "run.json"))
	require.NoError(t, err)
	mapBefore, err := os.ReadFile(filepath.Join(rec.Dir(), "wafermap.png"))
	require.NoError(t, err)

	require.NoError(t, rec.Finish(Completed, "again", nil, true))
	after, err := os.ReadFile(filepath.Join(rec.Dir(), "run.json"))
	require.NoError(t, err)
	mapAfter, err := os.ReadFile(filepath.Join(rec.Dir(), "wafermap.png"))
	require.NoError(t, err)
	assert.Equal(t, string(before), string(after))
	assert.Equal(t, mapBefore, mapAfter)

	run := rec.Run()
	assert.Equal(t, Aborted, run.State)
	assert.Equal(t, "watchdog", run.Reason)
	assert.Equal(t, "stage silent", run.Error)
	assert.False(t, run.Complete)
	assert.False(t, run.PositionTrusted)
}

// FinishRecord persists the outcome without the wafer map; WriteMap adds
// it, and refuses to run before the outcome is recorded.
func TestFinishRecordThenWriteMap(t *testing.T) {
	s := openStore(t)
	rec, err := s.Create(gridRun(2))
	require.NoError(t, err)
	require.NoError(t, rec.SaveSite(0, nil, nil))
	require.ErrorContains(t, rec.WriteMap(), "before the outcome is recorded")
	require.NoError(t, rec.FinishRecord(Canceled, "operator: test", nil, true))
	run := readRunFile(t, rec.Dir())
	assert.Equal(t, Canceled, run.State)
	assert.Equal(t, 1, run.SitesDone)
	assert.NoFileExists(t, filepath.Join(rec.Dir(), "wafermap.png"))
	assert.ErrorIs(t, rec.SaveSite(1, nil, nil), ErrFinished)

	require.NoError(t, rec.WriteMap())
	assert.FileExists(t, filepath.Join(rec.Dir(), "wafermap.png"))
	require.NoError(t, rec.Finish(Completed, "ignored", nil, true), "finished: a no-op")
	assert.Equal(t, Canceled, readRunFile(t, rec.Dir()).State)
}

func TestFinishCompleteWhenAllDone(t *testing.T) {
	s := openStore(t)
	rec, err := s.Create(gridRun(2))
	require.NoError(t, err)
	require.NoError(t, rec.SaveSite(1, nil, nil))
	require.NoError(t, rec.SaveSite(0, []Defect{{}}, testImage(0)))
	require.NoError(t, rec.Finish(Completed, "", nil, true))
	run := readRunFile(t, rec.Dir())
	assert.True(t, run.Complete)
	assert.Equal(t, 1, run.DefectsTotal)

	rec2, err := s.Create(gridRun(2))
	require.NoError(t, err)
	require.NoError(t, rec2.SaveSite(0, nil, nil))
	require.NoError(t, rec2.Finish(Canceled, "operator", nil, true))
	run = readRunFile(t, rec2.Dir())
	assert.Equal(t, Canceled, run.State)
	assert.False(t, run.Complete)
	assert.Equal(t, 1, run.SitesDone)
}

func TestCreateUniqueID(t *testing.T) {
	s := openStore(t)
	run := gridRun(1)
	run.ID = "fixed"
	var ids []string
	for i := 0; i < 3; i++ {
		rec, err := s.Create(run)
		require.NoError(t, err)
		ids = append(ids, rec.ID())
		assert.Equal(t, rec.ID(), rec.Run().ID)
		assert.Equal(t, rec.ID(), readRunFile(t, rec.Dir()).ID)
	}
	assert.Equal(t, []string{"fixed", "fixed-2", "fixed-3"}, ids)

	run.ID = "../escape"
	_, err := s.Create(run)
	assert.ErrorIs(t, err, ErrInvalidID)

	run.ID = ""
	run.Sites = []Site{{Index: 1}, {Index: 1}}
	_, err = s.Create(run)
	assert.ErrorContains(t, err, "duplicate site index 1")
}

func TestSaveSiteUnwritableDirectory(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("running as root: chmod 0500 does not block writes; TestSaveSiteSitesNotADirectory and TestDiskFull cover the failure paths")
	}
	s := openStore(t)
	rec, err := s.Create(gridRun(3))
	require.NoError(t, err)
	require.NoError(t, rec.SaveSite(0, []Defect{{Peak: 1}}, testImage(0)))

	sites := filepath.Join(rec.Dir(), "sites")
	require.NoError(t, os.Chmod(sites, 0o500))
	require.NoError(t, os.Chmod(rec.Dir(), 0o500))
	t.Cleanup(func() {
		_ = os.Chmod(sites, 0o755)
		_ = os.Chmod(rec.Dir(), 0o755)
	})

	err = rec.SaveSite(1, nil, testImage(1))
	require.Error(t, err)
	assert.ErrorIs(t, err, fs.ErrPermission)
	assert.Contains(t, err.Error(), filepath.Join(sites, "0001.png"))

	err = rec.Finish(Canceled, "operator", nil, true)
	require.Error(t, err)
	assert.ErrorIs(t, err, fs.ErrPermission)
	assert.Contains(t, err.Error(), "run.json")
	assert.Contains(t, err.Error(), "wafermap.png")

	run := readRunFile(t, rec.Dir())
	assert.Equal(t, Running, run.State)
	assert.Equal(t, 1, run.SitesDone)
	_, err = s.LoadSite(rec.ID(), 0)
	assert.NoError(t, err)

	// Once writable again, Finish retries and succeeds.
	require.NoError(t, os.Chmod(sites, 0o755))
	require.NoError(t, os.Chmod(rec.Dir(), 0o755))
	require.NoError(t, rec.Finish(Completed, "ignored", nil, true))
	run = readRunFile(t, rec.Dir())
	assert.Equal(t, Canceled, run.State)
	assert.Equal(t, "operator", run.Reason)
}

// TestSaveSiteSitesNotADirectory makes writes fail in a way that works for
// root too: the sites directory is deleted (its files kept aside) and a
// regular file takes its place.
func TestSaveSiteSitesNotADirectory(t *testing.T) {
	s := openStore(t)
	rec, err := s.Create(gridRun(3))
	require.NoError(t, err)
	require.NoError(t, rec.SaveSite(0, []Defect{{Peak: 1}}, testImage(0)))

	sites := filepath.Join(rec.Dir(), "sites")
	away := sites + ".away"
	require.NoError(t, os.Mkdir(away, 0o755))
	entries, err := os.ReadDir(sites)
	require.NoError(t, err)
	for _, e := range entries {
		require.NoError(t, os.Rename(filepath.Join(sites, e.Name()), filepath.Join(away, e.Name())))
	}
	require.NoError(t, os.Remove(sites))
	require.NoError(t, os.WriteFile(sites, []byte("not a directory"), 0o644))

	err = rec.SaveSite(1, nil, testImage(1))
	require.ErrorIs(t, err, syscall.ENOTDIR)
	assert.True(t, strings.HasPrefix(err.Error(), "results: atomicfile: write "+filepath.Join(sites, "0001.png")+": "), err.Error())

	run := readRunFile(t, rec.Dir())
	assert.Equal(t, 1, run.SitesDone)
	assert.Equal(t, SitePending, rec.Run().Sites[1].Status, "a failed save leaves the site as it was")

	require.NoError(t, os.Remove(sites))
	require.NoError(t, os.Rename(away, sites))
	require.NoError(t, rec.SaveSite(1, nil, testImage(1)), "the site can be saved once the disk is back")
	res, err := s.LoadSite(rec.ID(), 0)
	require.NoError(t, err)
	assert.Equal(t, []Defect{{Peak: 1}}, res.Defects)
	assert.Equal(t, 2, readRunFile(t, rec.Dir()).SitesDone)
	assertNoTemps(t, rec.Dir(), sites)
}

// fullDisk fails writes to files whose name has the given base with ENOSPC
// after a few bytes, like a disk filling up mid-write.
type fullDisk struct {
	mu   sync.Mutex
	base map[string]bool
}

func (d *fullDisk) set(bases ...string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.base = make(map[string]bool)
	for _, b := range bases {
		d.base[b] = true
	}
}

func (d *fullDisk) wrap(path string, w io.Writer) io.Writer {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.base[filepath.Base(path)] {
		return &limitedWriter{w: w, n: 10}
	}
	return w
}

type limitedWriter struct {
	w io.Writer
	n int
}

func (l *limitedWriter) Write(p []byte) (int, error) {
	if len(p) <= l.n {
		l.n -= len(p)
		return l.w.Write(p)
	}
	n, _ := l.w.Write(p[:l.n])
	l.n = 0
	return n, &fs.PathError{Op: "write", Path: "(test)", Err: syscall.ENOSPC}
}

func TestDiskFull(t *testing.T) {
	s := openStore(t)
	disk := new(fullDisk)
	s.wrapWrite = disk.wrap
	rec, err := s.Create(gridRun(3))
	require.NoError(t, err)
	require.NoError(t, rec.SaveSite(0, nil, testImage(0)))
	good, err := os.ReadFile(filepath.Join(rec.Dir(), "run.json"))
	require.NoError(t, err)

	// The site image does not fit: the site stays pending, nothing changes.
	disk.set("0001.png")
	err = rec.SaveSite(1, nil, testImage(1))
	require.ErrorIs(t, err, syscall.ENOSPC)
	assert.Contains(t, err.Error(), filepath.Join(rec.Dir(), "sites", "0001.png"))
	_, statErr := os.Stat(filepath.Join(rec.Dir(), "sites", "0001.png"))
	assert.ErrorIs(t, statErr, fs.ErrNotExist)

	// The site files fit, run.json does not: the error says so, the old
	// run.json stays intact and valid, and the next write catches up.
	disk.set("run.json")
	err = rec.SaveSite(1, []Defect{{Peak: 3}}, testImage(1))
	require.ErrorIs(t, err, syscall.ENOSPC)
	assert.Contains(t, err.Error(), filepath.Join(rec.Dir(), "run.json"))
	now, rerr := os.ReadFile(filepath.Join(rec.Dir(), "run.json"))
	require.NoError(t, rerr)
	assert.Equal(t, string(good), string(now))
	assert.Equal(t, 1, readRunFile(t, rec.Dir()).SitesDone)
	assert.Equal(t, 2, rec.Run().SitesDone, "memory keeps the saved site")
	assertNoTemps(t, rec.Dir(), filepath.Join(rec.Dir(), "sites"))

	disk.set("wafermap.png", "run.json")
	err = rec.Finish(Failed, "analysis failed", errors.New("boom"), true)
	require.ErrorIs(t, err, syscall.ENOSPC)
	assert.Contains(t, err.Error(), "wafermap.png")
	assert.Contains(t, err.Error(), "run.json")
	assert.Equal(t, Running, readRunFile(t, rec.Dir()).State)

	disk.set()
	require.NoError(t, rec.Flush())
	assert.Equal(t, 2, readRunFile(t, rec.Dir()).SitesDone)
	require.NoError(t, rec.Finish(Completed, "ignored on retry", nil, true))
	run := readRunFile(t, rec.Dir())
	assert.Equal(t, Failed, run.State)
	assert.Equal(t, "analysis failed", run.Reason)
	assert.Equal(t, "boom", run.Error)
	assert.Equal(t, 2, run.SitesDone)
	_, err = os.Stat(filepath.Join(rec.Dir(), "wafermap.png"))
	assert.NoError(t, err)
	require.NoError(t, rec.Finish(Completed, "", nil, true))
}

// By default saved sites rewrite run.json at most once per commit
// interval; Flush and Finish write what is pending, and a crash in between
// loses nothing: MarkInterrupted finds the sites from their files.
func TestSaveSiteCommitsAtMostOncePerInterval(t *testing.T) {
	data := t.TempDir()
	s, err := Open(data, WithCommitInterval(time.Hour))
	require.NoError(t, err)
	rec, err := s.Create(gridRun(3))
	require.NoError(t, err)
	require.NoError(t, rec.SaveSite(0, nil, testImage(0)))
	require.NoError(t, rec.SaveSite(1, []Defect{{}}, testImage(1)))
	assert.Equal(t, 0, readRunFile(t, rec.Dir()).SitesDone, "run.json was written by Create less than the interval ago")
	assert.Equal(t, 2, rec.Run().SitesDone, "in memory at once")
	require.NoError(t, rec.Flush())
	assert.Equal(t, 2, readRunFile(t, rec.Dir()).SitesDone)

	// A crash after site 2 was saved but before run.json was rewritten.
	require.NoError(t, rec.SaveSite(2, nil, testImage(2)))
	assert.Equal(t, 2, readRunFile(t, rec.Dir()).SitesDone)
	after, err := Open(data)
	require.NoError(t, err)
	marked, err := after.MarkInterrupted()
	require.NoError(t, err)
	require.Len(t, marked, 1)
	assert.Equal(t, 3, marked[0].SitesDone)
	assert.Equal(t, 1, marked[0].DefectsTotal)
}

func TestMarkInterrupted(t *testing.T) {
	data := t.TempDir()
	before, err := Open(data, WithClock(fakeClock()), WithCommitInterval(0)) // the process that crashed
	require.NoError(t, err)
	crashed, err := before.Create(gridRun(4))
	require.NoError(t, err)
	require.NoError(t, crashed.SaveSite(0, []Defect{{Peak: 9}}, testImage(0)))
	require.NoError(t, crashed.FailSite(1, errors.New("focus lost")))
	// A crash after site 2's files but before run.json: write them directly.
	require.NoError(t, atomicfile.WriteFunc(filepath.Join(crashed.Dir(), "sites", "0002.png"), 0o644, func(w io.Writer) error {
		return png.Encode(w, testImage(2))
	}))
	b, err := json.Marshal(SiteResult{RunID: crashed.ID(), Index: 2, Defects: []Defect{{}, {}, {}}})
	require.NoError(t, err)
	require.NoError(t, atomicfile.Write(filepath.Join(crashed.Dir(), "sites", "0002.json"), b, 0o644))
	// And a torn temporary file from a write in progress (named as a
	// release before atomicfile named them, too).
	stray := filepath.Join(crashed.Dir(), ".run.json.tmp-123")
	require.NoError(t, os.WriteFile(stray, []byte(`{"id":`), 0o600))

	s, err := Open(data, WithClock(fakeClock())) // this process
	require.NoError(t, err)

	finished, err := s.Create(gridRun(1))
	require.NoError(t, err)
	require.NoError(t, finished.Finish(Canceled, "operator", nil, true))

	// The live run in this process is not touched.
	live, err := s.Create(gridRun(1))
	require.NoError(t, err)
	marked, err := s.MarkInterrupted()
	require.NoError(t, err)
	require.Len(t, marked, 1)
	assert.Equal(t, crashed.ID(), marked[0].ID)
	assert.Equal(t, Running, readRunFile(t, live.Dir()).State)

	// A fresh start sees only the live run of the previous "process" as
	// unfinished: the crashed one is already marked.
	s2, err := Open(data, WithClock(fakeClock()))
	require.NoError(t, err)
	again, err := s2.MarkInterrupted()
	require.NoError(t, err)
	require.Len(t, again, 1)
	assert.Equal(t, live.ID(), again[0].ID)

	run := readRunFile(t, crashed.Dir())
	assert.Equal(t, marked[0], run)
	assert.Equal(t, Interrupted, run.State)
	assert.Equal(t, InterruptedReason, run.Reason)
	assert.False(t, run.Complete)
	require.NotNil(t, run.EndedAt)
	assert.Equal(t, 2, run.SitesDone, "site 2 recovered from its files")
	assert.Equal(t, 1, run.SitesFailed)
	assert.Equal(t, 4, run.DefectsTotal)
	assert.Equal(t, Site{Index: 2, Die: [2]int{-2, -4}, XMM: 30, YMM: 10, Status: SiteDone, Defects: 3,
		Result: "sites/0002.json", Image: "sites/0002.png"}, run.Sites[2])
	assert.Equal(t, SitePending, run.Sites[3].Status)
	_, err = os.Stat(stray)
	assert.ErrorIs(t, err, fs.ErrNotExist, "temporary file removed")
	_, err = os.Stat(filepath.Join(crashed.Dir(), "wafermap.png"))
	assert.NoError(t, err)

	assert.Equal(t, Canceled, readRunFile(t, finished.Dir()).State)
}

func TestListLoad(t *testing.T) {
	s := openStore(t)
	var ids []string
	for i, name := range []string{"alpha", "beta", "gamma"} {
		run := gridRun(2)
		run.Recipe = name
		run.StartedAt = time.Date(2026, 1, 1+i, 0, 0, 0, 0, time.UTC)
		rec, err := s.Create(run)
		require.NoError(t, err)
		ids = append(ids, rec.ID())
	}
	// A broken run directory and some noise.
	broken := filepath.Join(s.Dir(), "20250101T000000Z-broken")
	require.NoError(t, os.Mkdir(broken, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(broken, "run.json"), []byte(`{"id": "trunc`), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(s.Dir(), "README"), []byte("x"), 0o644))
	require.NoError(t, os.Mkdir(filepath.Join(s.Dir(), ".hidden"), 0o755))

	runs, err := s.List()
	require.Error(t, err, "the broken run is reported")
	assert.Contains(t, err.Error(), filepath.Join(broken, "run.json"))
	require.Len(t, runs, 3)
	assert.Equal(t, []string{ids[2], ids[1], ids[0]}, []string{runs[0].ID, runs[1].ID, runs[2].ID})
	assert.Equal(t, "gamma", runs[0].Recipe)

	run, err := s.Load(ids[1])
	require.NoError(t, err)
	assert.Equal(t, "beta", run.Recipe)
	assert.Len(t, run.Sites, 2)

	for _, bad := range []string{"../x", "..", ".", "", "a/b", `a\b`, "/etc", ".hidden", "x/../y"} {
		_, err := s.Load(bad)
		assert.ErrorIs(t, err, ErrInvalidID, "Load(%q)", bad)
		_, err = s.LoadSite(bad, 0)
		assert.ErrorIs(t, err, ErrInvalidID, "LoadSite(%q)", bad)
	}
	_, err = s.Load("20990101T000000Z-missing")
	assert.ErrorIs(t, err, fs.ErrNotExist)
	assert.Contains(t, err.Error(), "results: read ")
	_, err = s.LoadSite(ids[0], 1)
	assert.ErrorIs(t, err, fs.ErrNotExist)
}

func TestListEmpty(t *testing.T) {
	runs, err := openStore(t).List()
	assert.NoError(t, err)
	assert.Empty(t, runs)
}

func TestConcurrentSaveSite(t *testing.T) {
	s := openStore(t)
	const n = 48
	rec, err := s.Create(gridRun(n))
	require.NoError(t, err)

	var wg sync.WaitGroup
	stop := make(chan struct{})
	var readers sync.WaitGroup
	readers.Add(1)
	go func() { // readers of the snapshot and of run.json run throughout
		defer readers.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			r := rec.Run()
			assert.Equal(t, n, r.SitesTotal)
			readRunFile(t, rec.Dir())
		}
	}()
	errs := make([]error, 2*n)
	for i := 0; i < n; i++ {
		for k := 0; k < 2; k++ { // every site saved twice at once: one must lose
			wg.Add(1)
			go func() {
				defer wg.Done()
				defects := make([]Defect, i%7)
				errs[2*i+k] = rec.SaveSite(i, defects, testImage(i))
			}()
		}
	}
	wg.Wait()
	close(stop)
	readers.Wait()

	for i := 0; i < n; i++ {
		a, b := errs[2*i], errs[2*i+1]
		assert.True(t, (a == nil) != (b == nil), "site %d: exactly one save wins: %v / %v", i, a, b)
	}
	run := readRunFile(t, rec.Dir())
	assert.Equal(t, n, run.SitesDone)
	want := 0
	for i := 0; i < n; i++ {
		want += i % 7
	}
	assert.Equal(t, want, run.DefectsTotal)
	require.NoError(t, rec.Finish(Completed, "", nil, true))
	assert.True(t, readRunFile(t, rec.Dir()).Complete)
	assertNoTemps(t, rec.Dir(), filepath.Join(rec.Dir(), "sites"))
}

// TestFinishDuringSaves: saves racing Finish either land before the final
// run.json or fail with ErrFinished; the final record counts exactly the
// saves that succeeded.
func TestFinishDuringSaves(t *testing.T) {
	s := openStore(t)
	const n = 32
	rec, err := s.Create(gridRun(n))
	require.NoError(t, err)
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok := 0
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := rec.SaveSite(i, nil, testImage(i))
			if err == nil {
				mu.Lock()
				ok++
				mu.Unlock()
				return
			}
			assert.ErrorIs(t, err, ErrFinished)
		}()
	}
	require.NoError(t, rec.Finish(Canceled, "shutdown", nil, true))
	wg.Wait()
	run := readRunFile(t, rec.Dir())
	assert.Equal(t, Canceled, run.State)
	assert.Equal(t, ok, run.SitesDone)
	assert.Equal(t, rec.Run(), run)
}

func TestGeometryJSON(t *testing.T) {
	g := Geometry{
		WaferCenter:   motion.Point{X: motion.MM(100.001), Y: -motion.MM(3.5)},
		WaferDiameter: motion.MM(150),
		DiePitch:      motion.Point{X: motion.MM(5.25), Y: motion.MM(7)},
	}
	b, err := json.Marshal(g)
	require.NoError(t, err)
	assert.JSONEq(t, `{"wafer_center_mm":[100.001,-3.5],"wafer_diameter_mm":150,"die_pitch_mm":[5.25,7]}`, string(b))
	var back Geometry
	require.NoError(t, json.Unmarshal(b, &back))
	assert.Equal(t, g, back)
}

// TestGeometryMarkReference: the orientation mark and the reference die
// round-trip, are absent from the JSON when unknown (and absent ones load as
// nil), and a mark of an unknown kind is refused when written and when read.
func TestGeometryMarkReference(t *testing.T) {
	g := Geometry{
		WaferCenter:   motion.Point{X: motion.MM(150), Y: motion.MM(150)},
		WaferDiameter: motion.MM(300),
		DiePitch:      motion.Point{X: motion.MM(5), Y: motion.MM(5)},
		Mark:          &OrientationMark{Kind: MarkNotch, Direction: -90},
		Reference:     &ReferenceDie{Die: [2]int{-1, 2}, At: motion.Point{X: motion.MM(145), Y: motion.MM(160)}},
	}
	b, err := json.Marshal(g)
	require.NoError(t, err)
	assert.JSONEq(t, `{"wafer_center_mm":[150,150],"wafer_diameter_mm":300,"die_pitch_mm":[5,5],
		"orientation_mark":{"kind":"notch","direction_deg":-90},
		"reference_die":{"die":[-1,2],"center_mm":[145,160]}}`, string(b))
	var back Geometry
	require.NoError(t, json.Unmarshal(b, &back))
	assert.Equal(t, g, back)

	g.Mark, g.Reference = nil, nil
	b, err = json.Marshal(g)
	require.NoError(t, err)
	assert.NotContains(t, string(b), "orientation_mark")
	assert.NotContains(t, string(b), "reference_die")
	back = Geometry{Mark: &OrientationMark{Kind: MarkFlat}}
	require.NoError(t, json.Unmarshal(b, &back))
	assert.Nil(t, back.Mark)
	assert.Nil(t, back.Reference)

	err = json.Unmarshal([]byte(`{"orientation_mark":{"kind":"Notch","direction_deg":0}}`), &back)
	assert.ErrorContains(t, err, `geometry: orientation_mark.kind "Notch": want "notch" or "flat"`)
	_, err = json.Marshal(Geometry{Mark: &OrientationMark{Kind: "v-notch"}})
	assert.ErrorContains(t, err, `orientation_mark.kind "v-notch"`)
	_, err = json.Marshal(Geometry{Mark: &OrientationMark{Kind: MarkFlat, Direction: math.NaN()}})
	assert.ErrorContains(t, err, "orientation_mark.direction_deg is NaN")

	// The Store refuses such a geometry before it writes anything, and keeps
	// its own copy of a good one.
	s := openStore(t)
	run := gridRun(1)
	run.Geometry.Mark = &OrientationMark{Kind: "triangle"}
	_, err = s.Create(run)
	assert.ErrorContains(t, err, `results: create run`)
	assert.ErrorContains(t, err, `orientation_mark.kind "triangle"`)
	runs, err := s.List()
	require.NoError(t, err)
	assert.Empty(t, runs)

	run.Geometry.Mark = &OrientationMark{Kind: MarkFlat, Direction: 0}
	rec, err := s.Create(run)
	require.NoError(t, err)
	run.Geometry.Mark.Direction = 180
	assert.Equal(t, 0.0, rec.Run().Geometry.Mark.Direction)
	rec.Run().Geometry.Mark.Direction = 45
	assert.Equal(t, 0.0, rec.Run().Geometry.Mark.Direction)
	assert.Equal(t, 0.0, readRunFile(t, rec.Dir()).Geometry.Mark.Direction)
}
