//go:build !linux

package results

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
)

// dirHandle is a directory that files are written into atomically. Here it
// is only the directory's path: each write opens what it needs through
// package os (see atomic_linux.go for the descriptor-based version). Its
// methods are safe for concurrent use and block on disk I/O.
type dirHandle struct {
	path string
}

// tempNames is the reusable memory of one write at a time; here there is
// none.
type tempNames struct{}

// openDir returns the directory at path. It fails if path is not a
// directory.
func openDir(path string) (*dirHandle, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !fi.IsDir() {
		return nil, &os.PathError{Op: "open", Path: path, Err: syscall.ENOTDIR}
	}
	return &dirHandle{path: path}, nil
}

// writeFile replaces file name in d with what write produces, atomically
// (see atomic.go). write must not retain the writer.
func (d *dirHandle) writeFile(_ *tempNames, name string, write func(io.Writer) error) error {
	return writeFileAtomic(filepath.Join(d.path, name), write)
}

// sync fsyncs the directory.
func (d *dirHandle) sync() error { return syncDir(d.path) }

// close releases the directory; it is safe to call more than once.
func (d *dirHandle) close() error { return nil }

// writeFileAtomic replaces the file at path with what write produces,
// atomically (see atomic.go). write must not retain the writer.
// writeFileAtomic blocks on disk I/O.
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
