package atomicfile

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// assertNoTemps fails if a temporary file is left in dir.
func assertNoTemps(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	for _, e := range entries {
		assert.False(t, IsTemp(e.Name()), "temporary file %s left in %s", e.Name(), dir)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return string(b)
}

// Write creates and replaces files with exactly the mode asked for,
// whatever the umask, through a temporary file in the same directory.
func TestWriteCreatesAndReplaces(t *testing.T) {
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)
	dir := t.TempDir()
	path := filepath.Join(dir, "run.json")
	for _, s := range []string{"first", "second, longer", "3", ""} {
		require.NoError(t, Write(path, []byte(s), 0o644))
		assert.Equal(t, s, readFile(t, path))
	}
	fi, err := os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, fs.FileMode(0o644), fi.Mode().Perm())
	require.NoError(t, Write(path, []byte("private"), 0o600))
	fi, err = os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, fs.FileMode(0o600), fi.Mode().Perm())

	var temps []string
	require.NoError(t, WriteFunc(path, 0o644, func(w io.Writer) error {
		entries, err := os.ReadDir(dir)
		require.NoError(t, err)
		for _, e := range entries {
			if IsTemp(e.Name()) {
				temps = append(temps, e.Name())
			}
		}
		_, err = io.WriteString(w, "streamed")
		return err
	}))
	require.Len(t, temps, 1, "one temporary file, in the target's directory")
	assert.True(t, strings.HasPrefix(temps[0], ".run.json.tmp-"), temps[0])
	assert.Equal(t, "streamed", readFile(t, path))
	assertNoTemps(t, dir)

	// A relative path writes in the working directory.
	t.Chdir(dir)
	require.NoError(t, Write("relative", []byte("here"), 0o644))
	assert.Equal(t, "here", readFile(t, filepath.Join(dir, "relative")))
	assertNoTemps(t, dir)
}

// A write that fails or panics leaves the old file and no temporary file.
func TestWriteFuncFailureKeepsOldFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "run.json")
	require.NoError(t, Write(path, []byte(`{"old":true}`), 0o644))

	boom := errors.New("encoder exploded")
	err := WriteFunc(path, 0o644, func(w io.Writer) error {
		_, _ = io.WriteString(w, `{"new":`)
		return boom
	})
	require.ErrorIs(t, err, boom)
	assert.Equal(t, "atomicfile: write "+path+": encoder exploded", err.Error())
	assert.Equal(t, `{"old":true}`, readFile(t, path))
	assertNoTemps(t, dir)

	assert.PanicsWithValue(t, "callback panic", func() {
		_ = WriteFunc(path, 0o644, func(w io.Writer) error {
			_, _ = io.WriteString(w, "half")
			panic("callback panic")
		})
	})
	assert.Equal(t, `{"old":true}`, readFile(t, path))
	assertNoTemps(t, dir)
}

// A rename that fails (the target is a directory, which root cannot
// replace either) removes the temporary file and leaves the target alone.
func TestWriteRenameFails(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "run.json")
	require.NoError(t, os.Mkdir(path, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(path, "keep"), []byte("x"), 0o644))
	err := Write(path, []byte("{}"), 0o644)
	require.Error(t, err)
	assert.True(t, strings.HasPrefix(err.Error(), "atomicfile: write "+path+": rename "), err.Error())
	fi, err := os.Stat(path)
	require.NoError(t, err)
	assert.True(t, fi.IsDir())
	assert.Equal(t, "x", readFile(t, filepath.Join(path, "keep")))
	assertNoTemps(t, dir)
}

// In a directory the process may not write to, Write fails with a
// permission error naming the file, before calling the writer, and the
// old file stays. As root the write runs on a thread without the
// capabilities that bypass permissions (see unprivileged).
func TestWriteReadOnlyDirectory(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "run.json")
	require.NoError(t, Write(path, []byte("old"), 0o644))
	require.NoError(t, os.Chmod(dir, 0o555))
	t.Cleanup(func() { _ = os.Chmod(dir, 0o755) })

	called := false
	var err error
	unprivileged(t, func() {
		err = WriteFunc(path, 0o644, func(w io.Writer) error {
			called = true
			_, err := io.WriteString(w, "new")
			return err
		})
	})
	require.ErrorIs(t, err, fs.ErrPermission)
	assert.True(t, strings.HasPrefix(err.Error(), "atomicfile: write "+path+": "), err.Error())
	assert.False(t, called, "nothing to write into")
	assert.Equal(t, "old", readFile(t, path))
	assertNoTemps(t, dir)

	require.NoError(t, os.Chmod(dir, 0o755))
	require.NoError(t, Write(path, []byte("new"), 0o644), "writable again")
	assert.Equal(t, "new", readFile(t, path))
}

func TestWriteMissingDirectory(t *testing.T) {
	path := filepath.Join(t.TempDir(), "missing", "x.json")
	err := Write(path, nil, 0o644)
	require.ErrorIs(t, err, fs.ErrNotExist)
	assert.True(t, strings.HasPrefix(err.Error(), "atomicfile: write "+path+": "), err.Error())
}

// A name too long for the temporary file fails before anything is written.
func TestWriteNameTooLong(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, strings.Repeat("n", 250))
	err := Write(path, nil, 0o644)
	require.ErrorIs(t, err, syscall.ENAMETOOLONG)
	assert.Contains(t, err.Error(), path)
	assert.NoFileExists(t, path)
	assertNoTemps(t, dir)
}

// Concurrent writers of the same file use different temporary files: the
// file always holds one complete content.
func TestWriteConcurrentSameFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "run.json")
	contents := make(map[string]bool)
	for w := range 4 {
		contents[fmt.Sprintf("writer %d %0*d", w, 1000*(w+1), 0)] = true
	}
	var wg sync.WaitGroup
	for s := range contents {
		wg.Go(func() {
			for range 25 {
				assert.NoError(t, Write(path, []byte(s), 0o644))
				b, err := os.ReadFile(path)
				assert.NoError(t, err)
				assert.True(t, contents[string(b)], "torn content: %.40q", b)
			}
		})
	}
	wg.Wait()
	assert.True(t, contents[readFile(t, path)])
	assertNoTemps(t, dir)
}

// RemoveTemps removes what crashed writes left, and nothing else.
func TestRemoveTemps(t *testing.T) {
	dir := t.TempDir()
	keep := []string{"run.json", ".hidden", "x.tmp-1", "sites"}
	for _, n := range []string{"run.json", ".hidden", "x.tmp-1", ".run.json.tmp-123", ".0007.png.tmp-9"} {
		require.NoError(t, os.WriteFile(filepath.Join(dir, n), []byte(n), 0o644))
	}
	require.NoError(t, os.Mkdir(filepath.Join(dir, "sites"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "sites", ".a.tmp-1"), nil, 0o644))
	require.NoError(t, RemoveTemps(dir))
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	assert.ElementsMatch(t, keep, names)
	assert.FileExists(t, filepath.Join(dir, "sites", ".a.tmp-1"), "subdirectories are not searched")

	err = RemoveTemps(filepath.Join(dir, "missing"))
	require.ErrorIs(t, err, fs.ErrNotExist)
	assert.Contains(t, err.Error(), "atomicfile: ")
}

func TestSyncDir(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, SyncDir(dir))
	err := SyncDir(filepath.Join(dir, "missing"))
	require.ErrorIs(t, err, fs.ErrNotExist)
	assert.Contains(t, err.Error(), filepath.Join(dir, "missing"))
}

func TestIsTemp(t *testing.T) {
	for name, want := range map[string]bool{
		".run.json.tmp-123": true, ".x.tmp-": true, "run.json": false, ".tmp-1": false,
		"a.tmp-1": false, ".hidden": false, "": false,
	} {
		assert.Equal(t, want, IsTemp(name), name)
	}
}
