package results

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func writeString(s string) func(io.Writer) error {
	return func(w io.Writer) error {
		_, err := io.WriteString(w, s)
		return err
	}
}

// A rename that fails (the target is a directory, which root cannot
// replace either) removes the temporary file and leaves the target alone.
func TestWriteFileAtomicRenameFails(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "run.json")
	require.NoError(t, os.Mkdir(path, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(path, "keep"), []byte("x"), 0o644))

	err := writeFileAtomic(path, writeString("{}"))
	require.Error(t, err)
	assert.True(t, strings.HasPrefix(err.Error(), "results: write "+path+": "), err.Error())
	fi, serr := os.Stat(path)
	require.NoError(t, serr)
	assert.True(t, fi.IsDir())
	assertNoTemps(t, dir)

	d, err := openDir(dir)
	require.NoError(t, err)
	defer d.close()
	err = d.writeFile(new(tempNames), "run.json", writeString("{}"))
	require.Error(t, err)
	assert.True(t, strings.HasPrefix(err.Error(), "results: write "+path+": "), err.Error())
	assertNoTemps(t, dir)
}

// A name too long for a temporary file fails before anything is written.
func TestWriteFileAtomicNameTooLong(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, strings.Repeat("n", 250))
	err := writeFileAtomic(path, writeString("{}"))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "results: write "+path)
	_, serr := os.Stat(path)
	assert.ErrorIs(t, serr, fs.ErrNotExist)
	assertNoTemps(t, dir)
}

// Writes through a dirHandle behave as writeFileAtomic: the content is
// replaced, a failing or panicking callback leaves the old file and no
// temporary file, and the handle keeps working after either.
func TestDirHandleWriteFile(t *testing.T) {
	dir := t.TempDir()
	d, err := openDir(dir)
	require.NoError(t, err)
	defer d.close()
	var n tempNames
	path := filepath.Join(dir, "0007.json")
	for _, s := range []string{"first", "second, longer", "3"} {
		require.NoError(t, d.writeFile(&n, "0007.json", writeString(s)))
		b, err := os.ReadFile(path)
		require.NoError(t, err)
		assert.Equal(t, s, string(b))
	}
	fi, err := os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, fs.FileMode(0o644), fi.Mode().Perm())

	// The temporary file is in the same directory, named so that
	// removeTemps finds it if a crash leaves it behind.
	var temps []string
	boom := errors.New("encoder exploded")
	err = d.writeFile(&n, "0007.json", func(w io.Writer) error {
		_, _ = io.WriteString(w, "half")
		entries, err := os.ReadDir(dir)
		require.NoError(t, err)
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), ".0007.json"+tmpMarker) {
				temps = append(temps, e.Name())
			}
		}
		removeTemps(dir)
		return boom
	})
	assert.Len(t, temps, 1)
	for _, tmp := range temps {
		assert.NoFileExists(t, filepath.Join(dir, tmp), "removeTemps removes it")
	}
	require.ErrorIs(t, err, boom)
	assert.Equal(t, "results: write "+path+": encoder exploded", err.Error())
	assert.Panics(t, func() {
		_ = d.writeFile(&n, "0007.json", func(w io.Writer) error {
			_, _ = io.WriteString(w, "half")
			panic("callback panic")
		})
	})
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, "3", string(b))
	assertNoTemps(t, dir)

	require.NoError(t, d.writeFile(&n, "0008.json", writeString("8")), "the handle works after failures")
	err = d.writeFile(&n, "bad\x00name", writeString("x"))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "results: write "+dir)
	assert.NoError(t, d.sync())

	// Closed, it still writes (by path).
	require.NoError(t, d.close())
	require.NoError(t, d.close(), "close twice")
	require.NoError(t, d.writeFile(&n, "0009.json", writeString("9")))
	b, err = os.ReadFile(filepath.Join(dir, "0009.json"))
	require.NoError(t, err)
	assert.Equal(t, "9", string(b))
	assert.NoError(t, d.sync())
	assertNoTemps(t, dir)
}

func TestOpenDirNotADirectory(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	require.NoError(t, os.WriteFile(file, nil, 0o644))
	_, err := openDir(file)
	assert.Error(t, err)
	_, err = openDir(filepath.Join(file, "missing"))
	assert.Error(t, err)
}
