package console

import (
	"io"
	"os"
	"testing"

	"github.com/creack/pty"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// nonblocking reads O_NONBLOCK without f.Fd(), which would clear it.
func nonblocking(t *testing.T, f *os.File) bool {
	sc, err := f.SyscallConn()
	require.NoError(t, err)
	var flags int
	var ferr error
	require.NoError(t, sc.Control(func(fd uintptr) { flags, ferr = unix.FcntlInt(fd, unix.F_GETFL, 0) }))
	require.NoError(t, ferr)
	return flags&unix.O_NONBLOCK != 0
}

// TestStdioOnAPipe: a script; Close ends a pending read and leaves the
// shared descriptor blocking again for whoever started us.
func TestStdioOnAPipe(t *testing.T) {
	r, w, err := os.Pipe()
	require.NoError(t, err)
	defer r.Close()
	defer w.Close()
	out, err := os.CreateTemp(t.TempDir(), "out")
	require.NoError(t, err)
	defer out.Close()
	s, err := OpenStdio(r, out)
	require.NoError(t, err)
	assert.False(t, s.Interactive)
	_, err = w.WriteString("status\n")
	require.NoError(t, err)
	buf := make([]byte, 64)
	n, err := s.Read(buf)
	require.NoError(t, err)
	assert.Equal(t, "status\n", string(buf[:n]))

	read := make(chan error, 1)
	go func() {
		_, err := s.Read(buf)
		read <- err
	}()
	require.NoError(t, s.Close())
	assert.Error(t, <-read, "Close ends the pending read")
	assert.False(t, nonblocking(t, r))
	assert.NoError(t, s.Close(), "twice is fine")
}

// TestStdioOnATerminal: the line discipline is off while the console
// runs, and restored by Close.
func TestStdioOnATerminal(t *testing.T) {
	master, tty, err := pty.Open()
	require.NoError(t, err)
	defer master.Close()
	defer tty.Close()
	fd := int(tty.Fd())
	before, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	require.NoError(t, err)
	s, err := OpenStdio(tty, tty)
	require.NoError(t, err)
	assert.True(t, s.Interactive)
	raw, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	require.NoError(t, err)
	assert.Zero(t, raw.Lflag&(unix.ECHO|unix.ICANON|unix.ISIG), "no echo, no line editing, Ctrl-C is a key")
	assert.NotZero(t, raw.Oflag&unix.OPOST, "other writers' newlines still start a line")

	_, err = master.WriteString("ab\x03")
	require.NoError(t, err)
	buf := make([]byte, 8)
	n, err := io.ReadAtLeast(s, buf, 3)
	require.NoError(t, err)
	assert.Equal(t, "ab\x03", string(buf[:n]), "bytes arrive as typed")

	require.NoError(t, s.Close())
	after, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	require.NoError(t, err)
	assert.Equal(t, before.Lflag, after.Lflag)
	assert.Equal(t, before.Iflag, after.Iflag)
	assert.False(t, nonblocking(t, tty))
}
