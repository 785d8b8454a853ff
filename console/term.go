package console

import (
	"os"

	"golang.org/x/sys/unix"
)

// makeRaw puts the terminal f in raw mode (cfmakeraw): no echo, no line
// discipline, no CR/NL translation, 8 data bits.
func makeRaw(f *os.File) error {
	return withTermios(f, func(t *unix.Termios) {
		t.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
		t.Oflag &^= unix.OPOST
		t.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
		t.Cflag &^= unix.CSIZE | unix.PARENB
		t.Cflag |= unix.CS8
		t.Cc[unix.VMIN] = 1
		t.Cc[unix.VTIME] = 0
	}, nil)
}

// rawInput switches off the input side of a terminal's line discipline
// (echo, line editing, signal keys, CR translation, flow control keys),
// keeping output processing so that other writers' "\n" still starts a
// line. It returns what restores the settings, or an error if in is not a
// terminal.
func rawInput(in *os.File) (restore func(), err error) {
	var saved unix.Termios
	err = withTermios(in, func(t *unix.Termios) {
		t.Iflag &^= unix.ICRNL | unix.INLCR | unix.IGNCR | unix.IXON | unix.ISTRIP
		t.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
		t.Cc[unix.VMIN] = 1
		t.Cc[unix.VTIME] = 0
	}, &saved)
	if err != nil {
		return nil, err
	}
	return func() { _ = withTermios(in, func(t *unix.Termios) { *t = saved }, nil) }, nil
}

// withTermios reads f's terminal settings (into saved, if set), lets edit
// change them and applies the result.
func withTermios(f *os.File, edit func(*unix.Termios), saved *unix.Termios) error {
	sc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ioErr error
	err = sc.Control(func(fd uintptr) {
		t, err := unix.IoctlGetTermios(int(fd), unix.TCGETS)
		if err != nil {
			ioErr = err
			return
		}
		if saved != nil {
			*saved = *t
		}
		edit(t)
		ioErr = unix.IoctlSetTermios(int(fd), unix.TCSETS, t)
	})
	if err != nil {
		return err
	}
	return ioErr
}

// nonblockingDup returns a non-blocking duplicate of f's descriptor as an
// *os.File, so that Close ends a pending Read or Write (creack/pty and
// os.Stdin leave their descriptors blocking).
func nonblockingDup(f *os.File) (*os.File, error) {
	sc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	var fd int
	var dupErr error
	if err := sc.Control(func(raw uintptr) {
		fd, dupErr = unix.FcntlInt(raw, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return nil, err
	}
	if dupErr != nil {
		return nil, dupErr
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		_ = unix.Close(fd)
		return nil, err
	}
	return os.NewFile(uintptr(fd), f.Name()), nil
}
