//go:build unix

package grblsim

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"

	"github.com/creack/pty"
)

// OpenPTY creates a pseudo-terminal, puts its slave side in raw mode,
// serves the protocol on the master side from a goroutine of its own, and
// returns the slave's path (e.g. /dev/pts/7) for the driver to open as a
// serial port. The emulator keeps a descriptor of the slave open until
// Close (or InjectHangup). It fails if the emulator is already serving.
func (e *Emulator) OpenPTY() (path string, err error) {
	e.mu.Lock()
	closed, busy := e.closed, e.serving || e.pty != nil
	e.mu.Unlock()
	if closed {
		return "", ErrClosed
	}
	if busy {
		return "", errors.New("grblsim: already serving")
	}
	ptmx, tty, err := pty.Open()
	if err != nil {
		return "", fmt.Errorf("grblsim: open pty: %w", err)
	}
	if err := makeRaw(tty); err != nil {
		return "", errors.Join(fmt.Errorf("grblsim: raw mode on %s: %w", tty.Name(), err), ptmx.Close(), tty.Close())
	}
	master, err := nonblockingDup(ptmx)
	if cerr := ptmx.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return "", errors.Join(fmt.Errorf("grblsim: pty master: %w", err), tty.Close())
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	p := &ptyLine{master: master, slave: tty, path: tty.Name(), done: make(chan struct{})}
	if err := e.claim(master, cancel, p); err != nil {
		cancel(nil)
		return "", errors.Join(err, p.closeFiles())
	}
	go func() {
		defer close(p.done)
		defer cancel(nil)
		_ = e.serve(ctx, cancel, master)
	}()
	e.mu.Lock()
	e.logf("serving on %s", p.path)
	e.mu.Unlock()
	return p.path, nil
}

// nonblockingDup returns a non-blocking duplicate of f's descriptor as a
// pollable *os.File, so that Close unblocks a pending Read or Write and
// deadlines work (creack/pty leaves the master in blocking mode).
func nonblockingDup(f *os.File) (*os.File, error) {
	sc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	var fd int
	var dupErr error
	if err := sc.Control(func(raw uintptr) {
		fd, dupErr = syscall.Dup(int(raw))
	}); err != nil {
		return nil, err
	}
	if dupErr != nil {
		return nil, dupErr
	}
	syscall.CloseOnExec(fd)
	if err := syscall.SetNonblock(fd, true); err != nil {
		_ = syscall.Close(fd)
		return nil, err
	}
	return os.NewFile(uintptr(fd), f.Name()), nil
}
