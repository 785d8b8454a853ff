package results

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// smallDisk mounts a tmpfs of size bytes for the test, or skips when that
// is not possible (not root, no mount permission): CI runs as root.
func smallDisk(t *testing.T, size string) string {
	t.Helper()
	dir := t.TempDir()
	if os.Geteuid() != 0 {
		t.Skip("mounting a small tmpfs needs root (CI runs as root)")
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+size); err != nil {
		t.Skipf("cannot mount a tmpfs here: %v", err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(dir, 0) })
	return dir
}

// fill writes a file into dir until the disk is full.
func fill(t *testing.T, dir string) {
	t.Helper()
	f, err := os.Create(filepath.Join(dir, "filler"))
	require.NoError(t, err)
	defer f.Close()
	buf := make([]byte, 4096)
	for {
		if _, err := f.Write(buf); err != nil {
			require.ErrorIs(t, err, syscall.ENOSPC)
			return
		}
	}
}

// TestOutcomeReachesAFullDisk: a disk that fills during a run makes the
// next site fail, and the run fail, but the outcome still reaches run.json:
// its space was reserved when the run began. Without the reserve (the
// control case), the final write fails as it did before.
func TestOutcomeReachesAFullDisk(t *testing.T) {
	for _, reserved := range []bool{true, false} {
		data := smallDisk(t, "2m")
		s, err := Open(data, WithClock(fakeClock()), WithCommitInterval(0))
		require.NoError(t, err)
		rec, err := s.Create(gridRun(40))
		require.NoError(t, err)
		require.FileExists(t, filepath.Join(rec.Dir(), reserveName))
		require.NoError(t, rec.SaveSite(0, nil, testImage(0)))
		if !reserved {
			require.NoError(t, os.Remove(filepath.Join(rec.Dir(), reserveName)))
		}
		fill(t, data)
		err = rec.SaveSite(1, []Defect{{Peak: 3}}, testImage(1))
		require.ErrorIs(t, err, syscall.ENOSPC)
		assert.NoFileExists(t, filepath.Join(rec.Dir(), "sites", "0001.png"), "no image without its defect list")

		err = rec.FinishRecord(Failed, "error: save site 1: no space left on device", err, true)
		if !reserved {
			require.ErrorIs(t, err, syscall.ENOSPC, "control: without the reserve the outcome cannot be written")
			assert.Equal(t, Running, readRunFile(t, rec.Dir()).State)
			continue
		}
		require.NoError(t, err, "the reserved space takes the final record")
		run := readRunFile(t, rec.Dir())
		assert.Equal(t, Failed, run.State)
		assert.Contains(t, run.Error, "no space left on device")
		assert.Equal(t, 1, run.SitesDone)
		assert.NoFileExists(t, filepath.Join(rec.Dir(), reserveName))
		assert.NoFileExists(t, filepath.Join(s.Dir(), runningDir, rec.ID()), "finished: no longer marked unfinished")
	}
}

// TestReserveCoversTheLargestRecord: the reserve, less its slack, is at
// least the size of the final record of a run with every site done and a
// long error (so the sites are counted in it, not covered by the slack).
func TestReserveCoversTheLargestRecord(t *testing.T) {
	const sites = 100
	// Not a rewrite of run.json per site: it would only take longer.
	s, err := Open(t.TempDir(), WithClock(fakeClock()), WithCommitInterval(time.Hour))
	require.NoError(t, err)
	rec, err := s.Create(gridRun(sites))
	require.NoError(t, err)
	fi, err := os.Stat(filepath.Join(rec.Dir(), reserveName))
	require.NoError(t, err)
	for i := range sites {
		require.NoError(t, rec.SaveSite(i, []Defect{{Peak: 9}, {Peak: 8}}, nil))
	}
	long := strings.Repeat("x", 4000)
	require.NoError(t, rec.Finish(Aborted, long[:500], errors.New(long), false))
	final, err := os.Stat(filepath.Join(rec.Dir(), "run.json"))
	require.NoError(t, err)
	assert.GreaterOrEqual(t, fi.Size()-reserveSlack, final.Size(), "reserve %d bytes (%d of them slack), final record %d", fi.Size(), reserveSlack, final.Size())
}

// TestAnImageWithoutItsResultIsRemovedAtRestart: a SIGKILL between a
// site's image and its defect list leaves the image alone; the next start
// removes it and leaves the site pending, so the pair is consistent.
func TestAnImageWithoutItsResultIsRemovedAtRestart(t *testing.T) {
	data := t.TempDir()
	s, err := Open(data, WithClock(fakeClock()), WithCommitInterval(0))
	require.NoError(t, err)
	rec, err := s.Create(gridRun(3))
	require.NoError(t, err)
	require.NoError(t, rec.SaveSite(0, nil, testImage(0)))
	orphan := filepath.Join(rec.Dir(), "sites", "0001.png")
	require.NoError(t, os.WriteFile(orphan, []byte("png of a site whose list never came"), 0o644))

	restarted, err := Open(data, WithClock(fakeClock()))
	require.NoError(t, err)
	marked, err := restarted.MarkInterrupted()
	require.NoError(t, err)
	require.Len(t, marked, 1)
	assert.NoFileExists(t, orphan)
	run := readRunFile(t, rec.Dir())
	assert.Equal(t, Interrupted, run.State)
	assert.Equal(t, SiteDone, run.Sites[0].Status)
	assert.Equal(t, SitePending, run.Sites[1].Status)
	assert.NoFileExists(t, filepath.Join(rec.Dir(), reserveName))
}

// TestMarkInterruptedReadsOnlyUnfinishedRuns: start-up does not read the
// history. A finished run whose run.json is unreadable is not even looked
// at; a runs directory from an older waferd (no markers) is read once.
func TestMarkInterruptedReadsOnlyUnfinishedRuns(t *testing.T) {
	data := t.TempDir()
	s, err := Open(data, WithClock(fakeClock()), WithCommitInterval(0))
	require.NoError(t, err)
	var finished []*Recorder
	for range 3 {
		rec, err := s.Create(gridRun(2))
		require.NoError(t, err)
		require.NoError(t, rec.Finish(Completed, "", nil, true))
		finished = append(finished, rec)
	}
	open, err := s.Create(gridRun(2))
	require.NoError(t, err)
	// A finished run's record damaged: a full scan would report it.
	require.NoError(t, os.WriteFile(filepath.Join(finished[0].Dir(), "run.json"), []byte("{garbage"), 0o644))

	restarted, err := Open(data, WithClock(fakeClock()))
	require.NoError(t, err)
	marked, err := restarted.MarkInterrupted()
	require.NoError(t, err, "only unfinished runs are read")
	require.Len(t, marked, 1)
	assert.Equal(t, open.ID(), marked[0].ID)
	again, err := restarted.MarkInterrupted()
	require.NoError(t, err)
	assert.Empty(t, again)

	// An older waferd's directory: no markers. Read once, then marked.
	rec, err := restarted.Create(gridRun(2))
	require.NoError(t, err)
	require.NoError(t, os.RemoveAll(filepath.Join(restarted.Dir(), runningDir)))
	old, err := Open(data, WithClock(fakeClock()))
	require.NoError(t, err)
	marked, err = old.MarkInterrupted()
	require.Error(t, err, "the full scan meets the damaged record")
	require.Len(t, marked, 1)
	assert.Equal(t, rec.ID(), marked[0].ID)
	assert.DirExists(t, filepath.Join(old.Dir(), runningDir))
}
