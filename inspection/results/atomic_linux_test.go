//go:build linux

package results

import (
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestCString(t *testing.T) {
	assert.True(t, cString([]byte("a\x00")))
	assert.True(t, cString([]byte("\x00")))
	assert.False(t, cString(nil))
	assert.False(t, cString([]byte("a")))
	assert.False(t, cString([]byte("a\x00b\x00")))
	assert.False(t, cString([]byte("a\x00\x00")))
}

// openFDs counts the descriptors of this process open on dir or on files
// under it. (Counting them all would see those that the cleanups of other
// tests' dropped Recorders close meanwhile.)
func openFDs(t *testing.T, dir string) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	require.NoError(t, err)
	n := 0
	for _, e := range entries {
		target, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		if err == nil && (target == dir || strings.HasPrefix(target, dir+"/")) {
			n++
		}
	}
	return n
}

// Every path through the atomic write, failures included, closes the
// descriptors it opens, and files get mode 0644 whatever the umask.
func TestWriteAtNoLeaks(t *testing.T) {
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)
	dir := t.TempDir()
	d, err := openDir(dir)
	require.NoError(t, err)
	require.Equal(t, 1, openFDs(t, dir))
	var n tempNames
	for i := range 20 {
		name := fmt.Sprintf("%04d.json", i%3)
		require.NoError(t, d.writeFile(&n, name, writeString("ok")))
		assert.Error(t, d.writeFile(&n, name, func(io.Writer) error { return io.ErrUnexpectedEOF }))
		assert.Panics(t, func() { _ = d.writeFile(&n, name, func(io.Writer) error { panic("boom") }) })
		require.NoError(t, os.MkdirAll(filepath.Join(dir, "sub"), 0o755))
		assert.Error(t, d.writeFile(&n, "sub", writeString("over a directory")))
		require.NoError(t, writeFileAtomic(filepath.Join(dir, name), writeString("ok")))
		assert.Error(t, writeFileAtomic(filepath.Join(dir, "missing", name), writeString("ok")))
	}
	assert.Equal(t, 1, openFDs(t, dir), "descriptors leaked")
	fi, err := os.Stat(filepath.Join(dir, "0000.json"))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o644), fi.Mode().Perm())
	assertNoTemps(t, dir)
	require.NoError(t, d.close())
	assert.Equal(t, 0, openFDs(t, dir), "close releases the directory")
}

// The handle holds the directory: renamed, it keeps receiving the files.
// Deleted, writes fail (naming the file); once a directory is back at the
// path, the handle finds it.
func TestDirHandleDirectoryReplaced(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "sites")
	require.NoError(t, os.Mkdir(dir, 0o755))
	d, err := openDir(dir)
	require.NoError(t, err)
	defer d.close()
	var n tempNames

	require.NoError(t, os.Rename(dir, dir+".moved"))
	require.NoError(t, d.writeFile(&n, "a.json", writeString("a")))
	assert.FileExists(t, filepath.Join(dir+".moved", "a.json"))

	require.NoError(t, os.RemoveAll(dir+".moved"))
	require.NoError(t, os.WriteFile(dir, []byte("not a directory"), 0o644))
	err = d.writeFile(&n, "b.json", writeString("b"))
	require.ErrorIs(t, err, syscall.ENOENT, "the held directory is gone")
	assert.Contains(t, err.Error(), "results: write "+filepath.Join(dir, "b.json"))
	err = d.writeFile(&n, "b.json", writeString("b"))
	require.ErrorIs(t, err, syscall.ENOTDIR, "the path is reopened: a file")
	assert.Contains(t, err.Error(), "results: write "+filepath.Join(dir, "b.json"))

	require.NoError(t, os.Remove(dir))
	require.NoError(t, os.Mkdir(dir, 0o755))
	require.NoError(t, d.writeFile(&n, "b.json", writeString("b")))
	assert.FileExists(t, filepath.Join(dir, "b.json"))
	require.NoError(t, d.writeFile(&n, "c.json", writeString("c")))
	assertNoTemps(t, dir)
}

// Concurrent writers of the same file (two Stores on one directory) use
// different temporary files: the file always holds one complete content.
func TestDirHandleConcurrentSameFile(t *testing.T) {
	dir := t.TempDir()
	d, err := openDir(dir)
	require.NoError(t, err)
	defer d.close()
	contents := map[string]bool{}
	for w := range 4 {
		contents[fmt.Sprintf("writer %d %0*d", w, 1000*(w+1), 0)] = true
	}
	var wg sync.WaitGroup
	for w := range 4 {
		s := fmt.Sprintf("writer %d %0*d", w, 1000*(w+1), 0)
		wg.Add(1)
		go func() {
			defer wg.Done()
			var n tempNames
			for range 25 {
				assert.NoError(t, d.writeFile(&n, "run.json", writeString(s)))
				b, err := os.ReadFile(filepath.Join(dir, "run.json"))
				assert.NoError(t, err)
				assert.True(t, contents[string(b)], "torn content: %.40q", b)
			}
		}()
	}
	wg.Wait()
	b, err := os.ReadFile(filepath.Join(dir, "run.json"))
	require.NoError(t, err)
	assert.True(t, contents[string(b)], "torn content: %.40q", b)
	assertNoTemps(t, dir)
}

// A Recorder holds its two directories open from Create until the run is
// released; a failed Create closes them.
func TestRecorderDirectoryLifecycle(t *testing.T) {
	s := openStore(t)
	rec, err := s.Create(gridRun(2))
	require.NoError(t, err)
	assert.Equal(t, 2, openFDs(t, s.Dir()), "run and sites directories open")
	require.NoError(t, rec.SaveSite(0, nil, testImage(0)))
	require.NoError(t, rec.FinishRecord(Canceled, "operator", nil, true))
	assert.Equal(t, 2, openFDs(t, s.Dir()), "open until the wafer map is written")
	require.NoError(t, rec.WriteMap())
	assert.Equal(t, 0, openFDs(t, s.Dir()), "closed once the run is released")
	require.NoError(t, rec.Finish(Completed, "", nil, true), "a no-op")
	require.NoError(t, rec.Flush(), "a no-op")

	bad := gridRun(2)
	bad.Sites[1].YMM = math.NaN()
	_, err = s.Create(bad)
	require.Error(t, err)
	assert.Equal(t, 0, openFDs(t, s.Dir()), "a failed Create closes what it opened")
	runs, err := s.List()
	require.NoError(t, err)
	assert.Len(t, runs, 1, "and leaves no directory")
}

// A Recorder dropped without being finished closes its directories once
// it is garbage collected.
func TestDroppedRecorderClosesDirectories(t *testing.T) {
	s := openStore(t)
	func() {
		rec, err := s.Create(gridRun(2))
		require.NoError(t, err)
		require.NoError(t, rec.SaveSite(0, nil, nil))
	}()
	require.Equal(t, 2, openFDs(t, s.Dir()))
	// Cleanups run on a goroutine of their own after the collection that
	// finds the Recorder unreachable: collect and yield until they have.
	for i := 0; i < 1000 && openFDs(t, s.Dir()) > 0; i++ {
		runtime.GC()
		runtime.Gosched()
	}
	assert.Equal(t, 0, openFDs(t, s.Dir()))
}
