// Package atomicfile replaces files so that a crash, a power loss or a full
// disk leaves either the old complete file or the new complete one, never a
// torn one: the content goes to a temporary file in the same directory,
// which is fsynced, renamed over the target, and the directory fsynced.
//
// The temporary file is named ".<base>.tmp-<random>"; a crash can leave one
// behind, and RemoveTemps clears them.
package atomicfile

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// tmpMarker is part of every temporary file's name, after ".<base>".
const tmpMarker = ".tmp-"

// Write replaces the file at path with data, atomically, with mode perm
// (exactly: the umask does not apply). See WriteFunc.
func Write(path string, data []byte, perm os.FileMode) error {
	return WriteFunc(path, perm, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// WriteFunc replaces the file at path with what write writes to w, with
// mode perm (exactly: the umask does not apply). write must not keep w.
//
// If anything fails before the rename (creating the temporary file, write
// returning an error or panicking, chmod, fsync, close, the rename itself),
// the temporary file is removed and the file at path is left as it was. If
// only the directory's fsync after the rename fails, the new content is in
// place but may not survive a power loss; the error says so. Errors name
// path and wrap the cause (errors.Is(err, fs.ErrPermission), the error
// write returned, ...).
//
// WriteFunc blocks on disk I/O. Concurrent calls for the same path are
// safe: each has its own temporary file and the last rename wins.
func WriteFunc(path string, perm os.FileMode, write func(w io.Writer) error) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+tmpMarker+"*")
	if err != nil {
		return fmt.Errorf("atomicfile: write %s: %w", path, err)
	}
	renamed := false
	defer func() {
		if !renamed {
			_ = f.Close() // a second Close returns an error, nothing else
			_ = os.Remove(f.Name())
		}
	}()
	if err := write(f); err != nil {
		return fmt.Errorf("atomicfile: write %s: %w", path, err)
	}
	if err := f.Chmod(perm); err != nil {
		return fmt.Errorf("atomicfile: write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("atomicfile: write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("atomicfile: write %s: %w", path, err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("atomicfile: write %s: %w", path, err)
	}
	renamed = true
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("atomicfile: write %s: in place, but not durable: %w", path, err)
	}
	return nil
}

// SyncDir fsyncs the directory dir, so that the files created, renamed or
// removed in it survive a power loss. It blocks on disk I/O.
func SyncDir(dir string) error {
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("atomicfile: %w", err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// RemoveTemps removes the temporary files that writes interrupted by a
// crash left in dir (not in its subdirectories). Call it only when no
// write into dir is in progress: it would remove that write's file. It
// returns the errors of the removals, joined.
func RemoveTemps(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("atomicfile: remove temporary files: %w", err)
	}
	var errs []error
	for _, e := range entries {
		if n := e.Name(); e.Type().IsRegular() && IsTemp(n) {
			if err := os.Remove(filepath.Join(dir, n)); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, fmt.Errorf("atomicfile: remove temporary file: %w", err))
			}
		}
	}
	return errors.Join(errs...)
}

// IsTemp reports whether name (a base name) is that of a temporary file
// of this package.
func IsTemp(name string) bool {
	return strings.HasPrefix(name, ".") && strings.Contains(name[1:], tmpMarker)
}
