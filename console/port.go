package console

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
	"time"

	"github.com/creack/pty"
	"go.bug.st/serial"
)

// Reconnection backoff of ServePort.
const (
	MinBackoff = 100 * time.Millisecond
	MaxBackoff = 5 * time.Second
)

// ServePort serves the console on the serial device path at baud (8N1, no
// flow control) until ctx ends. When the port cannot be opened, or a
// session ends because the port disconnected (a USB adapter unplugged, a
// USB gadget's host gone), it opens it again with exponential backoff
// (MinBackoff to MaxBackoff; back to the minimum after a session that
// lasted). It returns nil when ctx ends.
func ServePort(ctx context.Context, path string, baud int, m Machine, o Options) error {
	if o.Name == "" {
		o.Name = path
	}
	o.Interactive = true
	log := o.Log
	backoff := MinBackoff
	var lastErr string
	for {
		start := time.Now()
		p, err := serial.Open(path, &serial.Mode{BaudRate: baud, DataBits: 8, Parity: serial.NoParity, StopBits: serial.OneStopBit})
		if err == nil {
			lastErr = ""
			if log != nil {
				log.Noticef("console on %s (%d baud)", path, baud)
			}
			err = Serve(ctx, p, m, o)
			if ctx.Err() != nil {
				return nil
			}
			if time.Since(start) > 2*MaxBackoff {
				backoff = MinBackoff
			}
		}
		if ctx.Err() != nil {
			return nil
		}
		if msg := err.Error(); msg != lastErr && log != nil {
			log.Warnf("console on %s: %v; retrying every %v or less", path, err, MaxBackoff)
			lastErr = msg
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		backoff = min(backoff*2, MaxBackoff)
	}
}

// PTY is a fresh pseudo-terminal for the console: an engineer connects a
// terminal program to Path (`screen /dev/pts/N 115200`); the console serves
// the master side. The console keeps the terminal side open itself, so
// that terminal programs can come and go.
type PTY struct {
	Path   string // the terminal side, e.g. /dev/pts/7
	master *os.File
	slave  *os.File
}

// OpenPTY creates the pseudo-terminal and puts its terminal side in raw
// mode (the console echoes and edits lines itself).
func OpenPTY() (*PTY, error) {
	ptmx, tty, err := pty.Open()
	if err != nil {
		return nil, fmt.Errorf("console: open pty: %w", err)
	}
	if err := makeRaw(tty); err != nil {
		return nil, errors.Join(fmt.Errorf("console: raw mode on %s: %w", tty.Name(), err), ptmx.Close(), tty.Close())
	}
	master, err := nonblockingDup(ptmx)
	if cerr := ptmx.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return nil, errors.Join(fmt.Errorf("console: pty master: %w", err), tty.Close())
	}
	return &PTY{Path: tty.Name(), master: master, slave: tty}, nil
}

// Serve serves the console on the pseudo-terminal until ctx ends, then
// closes it.
func (p *PTY) Serve(ctx context.Context, m Machine, o Options) error {
	if o.Name == "" {
		o.Name = "pty " + p.Path
	}
	o.Interactive = true
	err := Serve(ctx, p.master, m, o)
	if cerr := p.slave.Close(); cerr != nil && err == nil {
		err = cerr
	}
	if errors.Is(err, io.EOF) || ctx.Err() != nil {
		return nil
	}
	return err
}

// Close releases the pseudo-terminal without serving it.
func (p *PTY) Close() error {
	return errors.Join(p.master.Close(), p.slave.Close())
}

// Stdio is a console port on the process's standard input and output.
type Stdio struct {
	// Interactive: standard input is a terminal (raw mode is on until
	// Close); otherwise a script on a pipe or file.
	Interactive bool

	in      *os.File // a non-blocking duplicate of standard input
	out     *os.File
	fd      int    // the original standard input
	restore func() // terminal settings
	nonblk  bool   // O_NONBLOCK was set on the shared file description
}

// OpenStdio makes a console port of in and out (os.Stdin, os.Stdout). On a
// terminal it switches the line discipline off (no echo, no line editing,
// no signals from Ctrl-C: the console does those) until Close. Input is
// read through a non-blocking duplicate so that Close ends a pending read.
func OpenStdio(in, out *os.File) (*Stdio, error) {
	s := &Stdio{out: out, fd: int(in.Fd())}
	if restore, err := rawInput(in); err == nil {
		s.Interactive, s.restore = true, restore
	}
	nb, err := nonblockingDup(in)
	if err != nil {
		if s.restore != nil {
			s.restore()
		}
		return nil, fmt.Errorf("console: standard input: %w", err)
	}
	s.in, s.nonblk = nb, true
	return s, nil
}

func (s *Stdio) Read(p []byte) (int, error) { return s.in.Read(p) }

func (s *Stdio) Write(p []byte) (int, error) { return s.out.Write(p) }

// Close ends a pending Read and restores standard input (blocking mode,
// terminal settings). Standard output stays open.
func (s *Stdio) Close() error {
	err := s.in.Close()
	if s.nonblk {
		// The duplicate shares the file description's flags with the
		// original: the shell that started us expects blocking reads.
		_ = syscall.SetNonblock(s.fd, false)
		s.nonblk = false
	}
	if s.restore != nil {
		s.restore()
		s.restore = nil
	}
	if errors.Is(err, os.ErrClosed) {
		return nil
	}
	return err
}
