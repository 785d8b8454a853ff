package results

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/waferd/waferd/internal/atomicfile"
)

// Store is the runs directory. Its methods are safe for concurrent use and
// block on disk I/O.
type Store struct {
	dir string // <data>/runs
	now func() time.Time

	// commitEvery is the least time between run.json rewrites caused by
	// saved sites (WithCommitInterval).
	commitEvery time.Duration

	mu     sync.Mutex
	active map[string]struct{} // runs with a live Recorder (not yet finished)

	// wrapWrite, when set (tests only), wraps the writer of every file
	// write; it injects faults such as a full disk.
	wrapWrite func(path string, w io.Writer) io.Writer
}

// Option configures a Store.
type Option func(*Store)

// WithClock sets the clock used for start, end and interruption times
// (default time.Now).
func WithClock(now func() time.Time) Option { return func(s *Store) { s.now = now } }

// WithCommitInterval sets the least time between two rewrites of a run's
// run.json caused by SaveSite (default 1 s; 0 rewrites it on
// every change). The outcome (Finish) is always written at once.
func WithCommitInterval(d time.Duration) Option { return func(s *Store) { s.commitEvery = d } }

// Open opens the runs directory <dataDir>/runs, creating it if missing. It
// fails with a clear error when dataDir or runs is not a directory or runs is
// not writable.
func Open(dataDir string, opts ...Option) (*Store, error) {
	if fi, err := os.Stat(dataDir); err == nil && !fi.IsDir() {
		return nil, fmt.Errorf("results: data directory %s is not a directory", dataDir)
	}
	dir := filepath.Join(dataDir, "runs")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("results: create runs directory: %w", err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("results: runs directory: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("results: runs directory %s is not a directory", dir)
	}
	// One fixed name: a probe left by a SIGKILL is the next start's, and
	// removed by it.
	probe := filepath.Join(dir, ".probe")
	if err := os.WriteFile(probe, nil, 0o644); err != nil {
		return nil, fmt.Errorf("results: runs directory %s is not writable: %w", dir, err)
	}
	_ = os.Remove(probe)

	s := &Store{
		dir:         dir,
		now:         time.Now,
		commitEvery: time.Second,
		active:      make(map[string]struct{}),
	}
	for _, o := range opts {
		o(s)
	}
	if _, err := os.Stat(filepath.Join(dir, runningDir)); errors.Is(err, fs.ErrNotExist) {
		// Runs written by an older waferd have no markers: MarkInterrupted
		// reads every run once, then makes the directory. A new runs
		// directory gets it at once.
		if empty, _ := isEmpty(dir); empty {
			if err := s.makeMarkers(); err != nil {
				return nil, fmt.Errorf("results: runs directory: %w", err)
			}
		}
	}
	return s, nil
}

// isEmpty reports whether dir has no entries.
func isEmpty(dir string) (bool, error) {
	f, err := os.Open(dir)
	if err != nil {
		return false, err
	}
	defer f.Close()
	_, err = f.Readdirnames(1)
	if errors.Is(err, io.EOF) {
		return true, nil
	}
	return false, err
}

// Dir returns the runs directory (<data>/runs).
func (s *Store) Dir() string { return s.dir }

// RunDir returns the directory of run id, after validating id. It does not
// check that the run exists.
func (s *Store) RunDir(id string) (string, error) {
	if err := validateID(id); err != nil {
		return "", err
	}
	return filepath.Join(s.dir, id), nil
}

// NewID returns a run ID made of the UTC time of now and the recipe name:
// "20261126T081500Z-demo". The recipe name is lower-cased; runs of
// characters other than [a-z0-9._-] become one '-'; it is cut to 48 bytes;
// an empty result becomes "run".
func NewID(now time.Time, recipe string) string {
	var b strings.Builder
	dash := false
	for _, r := range strings.ToLower(recipe) {
		ok := r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_' || r == '-' || r == '.'
		if !ok || r == '-' {
			dash = b.Len() > 0
			continue
		}
		if r == '.' && (b.Len() == 0 || strings.HasSuffix(b.String(), ".")) {
			continue // no leading '.', never ".."
		}
		if dash {
			b.WriteByte('-')
			dash = false
		}
		b.WriteRune(r)
	}
	name := b.String()
	if len(name) > 48 {
		name = name[:48]
	}
	name = strings.Trim(name, "-.")
	if name == "" {
		name = "run"
	}
	return now.UTC().Format("20060102T150405Z") + "-" + name
}

// Create starts the record of a new run and returns its Recorder.
//
// run.ID is used as the directory name; when empty it is NewID(StartedAt,
// Recipe). If the directory exists, "-2", "-3", ... is appended and run.ID
// updated (see Recorder.Run). A zero StartedAt becomes now. State is set to
// Running and every site to pending with no results; the counters are
// derived from Sites. Site indexes must be unique and non-negative. Create
// writes run.json before returning; on error it leaves no directory behind.
func (s *Store) Create(run Run) (*Recorder, error) {
	if run.StartedAt.IsZero() {
		run.StartedAt = s.now()
	}
	run.StartedAt = run.StartedAt.UTC()
	if run.ID == "" {
		run.ID = NewID(run.StartedAt, run.Recipe)
	}
	if err := validateID(run.ID); err != nil {
		return nil, err
	}
	if err := run.Geometry.check(); err != nil {
		return nil, fmt.Errorf("results: create run %s: %w", run.ID, err)
	}
	run.Geometry = run.Geometry.clone()
	pos := make(map[int]int, len(run.Sites))
	sites := make([]Site, len(run.Sites))
	for i, st := range run.Sites {
		if st.Index < 0 {
			return nil, fmt.Errorf("results: create run %s: negative site index %d", run.ID, st.Index)
		}
		if _, dup := pos[st.Index]; dup {
			return nil, fmt.Errorf("results: create run %s: duplicate site index %d", run.ID, st.Index)
		}
		pos[st.Index] = i
		sites[i] = Site{Index: st.Index, Die: st.Die, XMM: st.XMM, YMM: st.YMM, Status: SitePending}
	}
	run.Sites = sites
	run.State = Running
	run.Reason, run.Error = "", ""
	run.EndedAt = nil
	run.Complete = false
	run.recount()

	base := run.ID
	var dir string
	for n := 1; ; n++ {
		id := base
		if n > 1 {
			id = base + "-" + strconv.Itoa(n)
		}
		if err := validateID(id); err != nil {
			return nil, err
		}
		dir = filepath.Join(s.dir, id)
		err := os.Mkdir(dir, 0o755)
		if err == nil {
			run.ID = id
			break
		}
		if !errors.Is(err, fs.ErrExist) || n >= 10000 {
			return nil, fmt.Errorf("results: create run %s: %w", base, err)
		}
	}
	r := &Recorder{store: s, id: run.ID, dir: dir, run: run, pos: pos, busy: make(map[int]bool)}
	err := func() error {
		if err := os.Mkdir(filepath.Join(dir, "sites"), 0o755); err != nil {
			return fmt.Errorf("results: create run %s: %w", run.ID, err)
		}
		// The disk space the final record needs is taken now, so that a
		// disk that fills during the run cannot keep its outcome off it.
		if err := reserve(filepath.Join(dir, reserveName), reserveSize(run)); err != nil {
			return fmt.Errorf("results: create run %s: reserving space for its final record: %w", run.ID, err)
		}
		// The marker that finds the run at the next start if it never
		// finishes (MarkInterrupted reads the markers, not every run).
		if err := os.WriteFile(filepath.Join(s.dir, runningDir, run.ID), nil, 0o644); err != nil {
			return fmt.Errorf("results: create run %s: %w", run.ID, err)
		}
		// The new directories survive a power loss before run.json does.
		for _, d := range []string{dir, filepath.Join(s.dir, runningDir), s.dir} {
			if err := atomicfile.SyncDir(d); err != nil {
				return fmt.Errorf("results: create run %s: %w", run.ID, err)
			}
		}
		r.version = 1
		return r.commit(1)
	}()
	if err != nil {
		_ = os.RemoveAll(dir)
		_ = os.Remove(filepath.Join(s.dir, runningDir, run.ID))
		return nil, err
	}
	s.mu.Lock()
	s.active[run.ID] = struct{}{}
	s.mu.Unlock()
	return r, nil
}

// writeFile replaces the file at path with what write writes, atomically
// (atomicfile.WriteFunc), through the fault-injection hook, if any. The
// file gets mode 0644. It blocks on disk I/O.
func (s *Store) writeFile(path string, write func(io.Writer) error) error {
	if s.wrapWrite != nil {
		inner := write
		write = func(w io.Writer) error { return inner(s.wrapWrite(path, w)) }
	}
	if err := atomicfile.WriteFunc(path, 0o644, write); err != nil {
		return fmt.Errorf("results: %w", err)
	}
	return nil
}

// writeBytes replaces the file at path with b, like writeFile.
func (s *Store) writeBytes(path string, b []byte) error {
	return s.writeFile(path, func(w io.Writer) error {
		_, err := w.Write(b)
		return err
	})
}

// List returns the runs newest first (by StartedAt, then ID).
//
// A run directory whose run.json is missing or unreadable is skipped; List
// then returns the runs it could read together with a non-nil error joining
// one error per skipped run (each naming its file). Callers should use the
// runs and report the error. Entries starting with '.' and plain files are
// ignored. Only a failure to read the runs directory itself returns no runs.
func (s *Store) List() ([]Run, error) {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("results: list runs: %w", err)
	}
	var runs []Run
	var errs []error
	for _, e := range entries {
		if !e.IsDir() || validateID(e.Name()) != nil {
			continue
		}
		run, err := s.readRun(e.Name())
		if err != nil {
			errs = append(errs, err)
			continue
		}
		runs = append(runs, run)
	}
	sort.SliceStable(runs, func(i, j int) bool {
		a, b := runs[i], runs[j]
		if !a.StartedAt.Equal(b.StartedAt) {
			return a.StartedAt.After(b.StartedAt)
		}
		return a.ID > b.ID
	})
	return runs, errors.Join(errs...)
}

// Load reads the record of run id. id must be a plain directory name (see
// ErrInvalidID). A missing run gives an error wrapping fs.ErrNotExist. The
// returned ID is always id (the directory name).
func (s *Store) Load(id string) (Run, error) {
	if err := validateID(id); err != nil {
		return Run{}, err
	}
	return s.readRun(id)
}

// LoadSite reads the defect list of site index of run id.
func (s *Store) LoadSite(id string, index int) (SiteResult, error) {
	if err := validateID(id); err != nil {
		return SiteResult{}, err
	}
	if index < 0 {
		return SiteResult{}, fmt.Errorf("results: run %s: negative site index %d", id, index)
	}
	path := filepath.Join(s.dir, id, filepath.FromSlash(siteRel(index, ".json")))
	var res SiteResult
	if err := readJSON(path, &res); err != nil {
		return SiteResult{}, err
	}
	return res, nil
}

func (s *Store) readRun(id string) (Run, error) {
	var run Run
	if err := readJSON(filepath.Join(s.dir, id, "run.json"), &run); err != nil {
		return Run{}, err
	}
	run.ID = id
	return run, nil
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("results: read %s: %w", path, err)
	}
	if err := json.NewDecoder(bytes.NewReader(b)).Decode(v); err != nil {
		return fmt.Errorf("results: read %s: %w", path, err)
	}
	return nil
}

// InterruptedReason is the Reason given to runs marked by MarkInterrupted.
const InterruptedReason = "found unfinished at start-up"

// MarkInterrupted finds every run whose run.json says running and that has
// no live Recorder in this Store, and marks it interrupted: ended_at now,
// reason InterruptedReason, complete false. Sites whose defect list was
// written but not yet recorded (a crash between the two writes) are
// recovered as done; a site image without its defect list (a crash
// between the image and the list) is removed, its site staying pending.
// Leftover temporary files and reserved space of the run are removed and
// its wafer map is written. Call it at start-up, before any run begins.
//
// It reads only the runs that were not finished (a marker in runs/.running
// for each, made by Create and removed once the outcome is recorded), so
// its time does not grow with the history. The first time it runs on a
// runs directory without markers (written by an older waferd) it reads
// every run once.
//
// It returns the runs it marked (as written) and a joined error for runs it
// could not read or rewrite; those are left as they were.
func (s *Store) MarkInterrupted() ([]Run, error) {
	ids, err := s.unfinished()
	if err != nil {
		return nil, fmt.Errorf("results: mark interrupted: %w", err)
	}
	var marked []Run
	var errs []error
	for _, id := range ids {
		s.mu.Lock()
		_, live := s.active[id]
		s.mu.Unlock()
		if live {
			continue
		}
		dir := filepath.Join(s.dir, id)
		run, err := s.readRun(id)
		if errors.Is(err, fs.ErrNotExist) {
			// Created, and gone before its first record: nothing to mark.
			_ = os.Remove(filepath.Join(s.dir, runningDir, id))
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if run.State != Running {
			_ = os.Remove(filepath.Join(s.dir, runningDir, id))
			continue
		}
		t := s.now().UTC()
		run.State = Interrupted
		run.EndedAt = &t
		run.Reason = InterruptedReason
		recoverSites(dir, &run)
		run.recount()
		run.Complete = false
		// No write is in progress: the run has no live Recorder.
		_ = atomicfile.RemoveTemps(dir) // leftovers are harmless: best effort
		_ = atomicfile.RemoveTemps(filepath.Join(dir, "sites"))
		_ = os.Remove(filepath.Join(dir, reserveName))
		mapErr, err := s.rewriteInterrupted(dir, run)
		if mapErr != nil {
			errs = append(errs, mapErr)
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		_ = os.Remove(filepath.Join(s.dir, runningDir, id))
		marked = append(marked, run)
	}
	return marked, errors.Join(errs...)
}

// unfinished returns the ids of the runs marked as not finished (see
// MarkInterrupted); without a runs/.running directory, every run's id, and
// it makes the directory.
func (s *Store) unfinished() ([]string, error) {
	marks := filepath.Join(s.dir, runningDir)
	entries, err := os.ReadDir(marks)
	if err == nil {
		var ids []string
		for _, e := range entries {
			if validateID(e.Name()) == nil {
				ids = append(ids, e.Name())
			}
		}
		return ids, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	entries, err = os.ReadDir(s.dir)
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, e := range entries {
		if e.IsDir() && validateID(e.Name()) == nil {
			ids = append(ids, e.Name())
		}
	}
	return ids, s.makeMarkers()
}

// makeMarkers makes the runs/.running directory.
func (s *Store) makeMarkers() error {
	if err := os.Mkdir(filepath.Join(s.dir, runningDir), 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	return atomicfile.SyncDir(s.dir)
}

// runningDir holds an empty file named after each run not yet finished.
const runningDir = ".running"

// reserveName is the file in a run's directory that holds the disk space
// of the run's final record from Create until FinishRecord writes it.
const reserveName = ".reserve"

// reserveSlack is what reserveSize adds to the largest record, bytes: the
// file system's own blocks for the temporary file and the rename.
const reserveSlack = 64 << 10

// reserveSize is the space the final record of run needs, bytes: the
// temporary file of its run.json with every site done and a long reason and
// error (written beside the old run.json), plus reserveSlack.
func reserveSize(run Run) int64 {
	final := run.clone()
	for i := range final.Sites {
		st := &final.Sites[i]
		st.Status, st.Defects = SiteDone, 1<<30
		st.Result, st.Image = siteRel(st.Index, ".json"), siteRel(st.Index, ".png")
	}
	t := time.Now()
	final.State, final.EndedAt = Aborted, &t
	final.Reason, final.Error = strings.Repeat("r", 1024), strings.Repeat("e", 8192)
	final.recount()
	b, err := marshalRecord(&final)
	if err != nil {
		return 1 << 20
	}
	return int64(len(b)) + reserveSlack
}

// reserve makes path a file of size zero bytes, written out (not sparse:
// the blocks must be taken) and synced.
func reserve(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	zeros := make([]byte, 64<<10)
	for left := size; left > 0 && err == nil; left -= int64(len(zeros)) {
		_, err = f.Write(zeros[:min(int64(len(zeros)), left)])
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(path)
	}
	return err
}

// rewriteInterrupted writes the wafer map and then run.json of the
// interrupted run in dir, and returns their errors.
func (s *Store) rewriteInterrupted(dir string, run Run) (mapErr, err error) {
	mapErr = s.writeWaferMap(dir, run)
	path := filepath.Join(dir, "run.json")
	b, err := marshalRecord(&run)
	if err != nil {
		return mapErr, fmt.Errorf("results: encode %s: %w", path, err)
	}
	return mapErr, s.writeBytes(path, b)
}

// recoverSites marks pending sites done whose defect list exists. Files are
// written atomically, so an existing sites/NNNN.json is complete.
func recoverSites(dir string, run *Run) {
	for i := range run.Sites {
		st := &run.Sites[i]
		if st.Status != SitePending {
			continue
		}
		rel := siteRel(st.Index, ".json")
		var res SiteResult
		if readJSON(filepath.Join(dir, filepath.FromSlash(rel)), &res) != nil || res.Index != st.Index {
			// An image without its defect list is not a result: the
			// site stays pending, and nothing says it is done.
			_ = os.Remove(filepath.Join(dir, filepath.FromSlash(siteRel(st.Index, ".png"))))
			continue
		}
		st.Status = SiteDone
		st.Defects = len(res.Defects)
		st.Result = rel
		img := siteRel(st.Index, ".png")
		if _, err := os.Stat(filepath.Join(dir, filepath.FromSlash(img))); err == nil {
			st.Image = img
		}
	}
}

// SitePaths returns the paths of site index's defect list and image,
// relative to the run directory ("sites/0007.json", "sites/0007.png").
func SitePaths(index int) (result, image string) {
	return siteRel(index, ".json"), siteRel(index, ".png")
}

// siteRel returns the path of site index's file with extension ext,
// relative to the run directory: "sites/0007.json" (the index zero-padded to
// four digits, wider when it needs more).
func siteRel(index int, ext string) string {
	return fmt.Sprintf("sites/%04d%s", index, ext)
}
