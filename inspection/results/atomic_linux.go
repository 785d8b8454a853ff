//go:build linux

package results

import (
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// dirHandle is a directory that files are written into atomically (see
// atomic.go), held open: files are created, renamed and removed relative
// to its descriptor with names in buffers the caller reuses
// (syscall_linux.go), and fsyncing the directory needs no open, so that a
// write allocates nothing. package os would allocate the temporary
// file's random name, an *os.File for it and for the directory, and a
// NUL-terminated copy of every path.
//
// Because the descriptor is held, a directory renamed while it is open
// keeps receiving the files. After a failed write the directory is opened
// again by its path before the next write, so that one deleted and created
// anew (a disk remounted) is found again.
//
// Its methods are safe for concurrent use and block on disk I/O.
type dirHandle struct {
	path string // for errors and reopening

	mu    sync.RWMutex // held shared by writes, exclusively to replace or close fd
	fd    int          // -1 once closed
	stale atomic.Bool  // a write failed: open path again before the next one
}

// tempNames is the reusable memory of one write at a time: the names of the
// target and of the temporary file, NUL-terminated, and the writer given
// to the callback. The zero value is ready to use.
type tempNames struct {
	target []byte
	temp   []byte
	w      fdWriter
}

// openDir opens the directory at path.
func openDir(path string) (*dirHandle, error) {
	fd, err := openDirFD(path)
	if err != nil {
		return nil, err
	}
	return &dirHandle{path: path, fd: fd}, nil
}

func openDirFD(path string) (int, error) {
	for {
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return -1, &fs.PathError{Op: "open", Path: path, Err: err}
		}
		return fd, nil
	}
}

// close closes the directory descriptor, after the writes in progress. It
// is safe to call more than once; later writes open the directory by its
// path each time (correct, but they allocate).
func (d *dirHandle) close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.fd < 0 {
		return nil
	}
	err := unix.Close(d.fd)
	d.fd = -1
	if err != nil {
		return &fs.PathError{Op: "close", Path: d.path, Err: err}
	}
	return nil
}

// sync fsyncs the directory.
func (d *dirHandle) sync() error {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.fd < 0 {
		return syncDir(d.path)
	}
	if err := fsync(d.fd); err != nil {
		return fmt.Errorf("sync directory %s: %w", d.path, err)
	}
	return nil
}

// writeFile replaces file name (a plain name, no '/') in d with what write
// produces, atomically (see atomic.go); n holds the names and the writer
// and must not be used by another write at the same time. write must not
// retain the writer. Once n's buffers have grown to the names, writeFile
// itself allocates nothing unless it fails.
func (d *dirHandle) writeFile(n *tempNames, name string, write func(io.Writer) error) error {
	if d.stale.Load() {
		if err := d.reopen(); err != nil {
			return fmt.Errorf("results: write %s: %w", filepath.Join(d.path, name), err)
		}
	}
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.fd < 0 {
		return writeFileAtomic(filepath.Join(d.path, name), write)
	}
	err := writeAt(d.fd, d.path, n, name, write)
	if err != nil {
		d.stale.Store(true)
	}
	return err
}

// reopen replaces the descriptor of a stale directory with a new one of
// the directory now at its path.
func (d *dirHandle) reopen() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.fd < 0 || !d.stale.Load() {
		return nil // closed, or reopened meanwhile
	}
	fd, err := openDirFD(d.path)
	if err != nil {
		return err
	}
	_ = unix.Close(d.fd) // a directory opened read-only: nothing to lose
	d.fd = fd
	d.stale.Store(false)
	return nil
}

// writeFileAtomic replaces the file at path with what write produces,
// atomically (see atomic.go). write must not retain the writer. It opens
// the directory for this one write: callers that write often keep a
// dirHandle. writeFileAtomic blocks on disk I/O.
func writeFileAtomic(path string, write func(io.Writer) error) error {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	fd, err := openDirFD(dir)
	if err != nil {
		return fmt.Errorf("results: write %s: %w", path, err)
	}
	defer unix.Close(fd)
	return writeAt(fd, dir, new(tempNames), base, write)
}

// writeAt implements the atomic write of file name in the directory open
// as dirfd (at dirPath, for errors).
func writeAt(dirfd int, dirPath string, n *tempNames, name string, write func(io.Writer) error) error {
	fail := func(op string, err error) error {
		if op != "" {
			op += ": "
		}
		return fmt.Errorf("results: write %s: %s%w", filepath.Join(dirPath, name), op, err)
	}
	if strings.IndexByte(name, 0) >= 0 {
		return fail("", unix.EINVAL)
	}
	n.target = append(append(n.target[:0], name...), 0)

	// A random part as in os.CreateTemp, and O_EXCL, keep concurrent
	// writers of the same file (two Stores on one directory) apart.
	fd := -1
	var err error
	for try := 0; try < 100; try++ {
		n.temp = append(n.temp[:0], '.')
		n.temp = append(n.temp, name...)
		n.temp = append(n.temp, tmpMarker...)
		n.temp = strconv.AppendUint(n.temp, uint64(rand.Uint32()), 10)
		n.temp = append(n.temp, 0)
		fd, err = openat(dirfd, n.temp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o600)
		if err != unix.EEXIST {
			break
		}
	}
	if err != nil {
		return fail("create temporary file", err)
	}
	open, renamed := true, false
	defer func() {
		n.w.fd = -1 // a writer kept by mistake fails instead of writing elsewhere
		if renamed {
			return
		}
		if open {
			_ = unix.Close(fd)
		}
		_ = unlinkat(dirfd, n.temp)
	}()
	n.w.fd = fd
	if err := write(&n.w); err != nil {
		return fail("", err)
	}
	// The mode of os.WriteFile's files, whatever the umask.
	if err := unix.Fchmod(fd, 0o644); err != nil {
		return fail("chmod", err)
	}
	if err := fsync(fd); err != nil {
		return fail("sync", err)
	}
	open = false
	if err := unix.Close(fd); err != nil {
		return fail("close", err)
	}
	if err := renameat(dirfd, n.temp, dirfd, n.target); err != nil {
		return fail("rename", err)
	}
	renamed = true
	// The new content is in place; the directory sync makes the rename
	// durable across power loss.
	if err := fsync(dirfd); err != nil {
		return fail("sync directory", err)
	}
	return nil
}

// fdWriter writes to a file descriptor, retrying short and interrupted
// writes.
type fdWriter struct{ fd int }

func (w *fdWriter) Write(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		m, err := unix.Write(w.fd, p[n:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return n, err
		}
		if m <= 0 {
			return n, io.ErrShortWrite
		}
		n += m
	}
	return n, nil
}

// fsync flushes fd to the disk, retrying when interrupted.
func fsync(fd int) error {
	for {
		if err := unix.Fsync(fd); err != unix.EINTR {
			return err
		}
	}
}
