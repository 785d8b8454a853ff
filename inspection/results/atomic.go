package results

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// writeFileAtomic replaces the file at path with what write produces: it
// writes into a temporary file in the same directory, fsyncs and closes it,
// renames it over path and fsyncs the directory. On any error (including a
// panic in write) the temporary file is removed and path is left as it was;
// the error names path. The file gets mode 0644.
//
// write must not retain the writer. writeFileAtomic blocks on disk I/O.
func writeFileAtomic(path string, write func(io.Writer) error) error {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+tmpMarker)
	if err != nil {
		return fmt.Errorf("results: write %s: %w", path, err)
	}
	tmp := f.Name()
	renamed := false
	defer func() {
		if !renamed {
			_ = f.Close() // may already be closed
			_ = os.Remove(tmp)
		}
	}()
	if err := write(f); err != nil {
		return fmt.Errorf("results: write %s: %w", path, err)
	}
	if err := f.Chmod(0o644); err != nil {
		return fmt.Errorf("results: write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("results: write %s: sync: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("results: write %s: close: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("results: write %s: %w", path, err)
	}
	renamed = true
	// The new content is in place; the directory sync makes the rename
	// durable across power loss.
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("results: write %s: %w", path, err)
	}
	return nil
}

// tmpMarker is part of every temporary file name (".<base>.tmp-<random>").
const tmpMarker = ".tmp-"

// syncDir fsyncs a directory so that entries created or renamed in it are
// durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync directory: %w", err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}
