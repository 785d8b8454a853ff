//go:build linux

package results

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
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

// openFDs counts the descriptors open in this process.
func openFDs(t *testing.T) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	require.NoError(t, err)
	return len(entries)
}

// Every path through the atomic write, failures included, closes the
// descriptors it opens, and files get mode 0644 whatever the umask.
func TestWriteAtNoLeaks(t *testing.T) {
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)
	dir := t.TempDir()
	d, err := openDir(dir)
	require.NoError(t, err)
	before := openFDs(t)
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
	assert.Equal(t, before, openFDs(t), "descriptors leaked")
	fi, err := os.Stat(filepath.Join(dir, "0000.json"))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o644), fi.Mode().Perm())
	assertNoTemps(t, dir)
	require.NoError(t, d.close())
	assert.Equal(t, before-1, openFDs(t), "close releases the directory")
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
