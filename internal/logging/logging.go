// Package logging sets up github.com/d2r2/go-logger the way a service
// needs it: to stderr only, coloured only on a terminal, and with a
// journald priority prefix ("<3>" … "<7>") on every line when stderr is the
// journal, so `journalctl -p warning` filters correctly. It never logs at
// Fatal or Panic level: those exit without running deferred cleanup.
package logging

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"

	logger "github.com/d2r2/go-logger"
	"golang.org/x/sys/unix"
)

// Level is a log level.
type Level = logger.LogLevel

// Levels in use. There is deliberately no Fatal or Panic.
const (
	Error  = logger.ErrorLevel
	Warn   = logger.WarnLevel
	Notice = logger.NotifyLevel
	Info   = logger.InfoLevel
	Debug  = logger.DebugLevel
)

// ParseLevel maps "error", "warning", "notice", "info" or "debug" to a Level.
func ParseLevel(s string) (Level, error) {
	switch strings.ToLower(s) {
	case "error", "err":
		return Error, nil
	case "warning", "warn":
		return Warn, nil
	case "notice":
		return Notice, nil
	case "info", "":
		return Info, nil
	case "debug":
		return Debug, nil
	}
	return Info, fmt.Errorf("logging: unknown level %q (want error, warning, notice, info or debug)", s)
}

// Options control the output.
type Options struct {
	Level   Level
	Color   bool // ANSI colours on the level word
	Journal bool // prefix each line with its sd-daemon priority and drop the timestamp
}

// Root owns the output; package loggers come from it. Safe for concurrent use.
type Root struct {
	l       *logger.Logger
	journal bool // lines carry no timestamp (journald stamps them)
}

// New returns a Root writing to w.
func New(w io.Writer, o Options) *Root {
	l := &logger.Logger{}
	format := logger.FormatOptions{TimeFormat: "2006-01-02T15:04:05.000", LevelLength: logger.LevelShort, PackageLength: -1}
	if o.Journal {
		format.TimeFormat = "" // journald stamps lines itself
		w = &priorityWriter{w: w}
	}
	l.SetFormatOptions(format)
	l.AddCustomLog(w, o.Color, o.Level)
	return &Root{l: l, journal: o.Journal}
}

// Auto returns a Root writing to w. When w is a file (normally os.Stderr) it
// detects whether that is a terminal (colours) or the journal (priorities);
// anything else gets plain lines.
func Auto(w io.Writer, level Level) *Root {
	o := Options{Level: level}
	if f, ok := w.(*os.File); ok {
		fd := int(f.Fd())
		o.Color, o.Journal = isTerminal(fd), isJournal(fd)
	}
	return New(w, o)
}

// Log is a package logger. Messages are formatted with fmt, never spew.
type Log struct {
	p logger.PackageLog
}

// For returns the logger of a package or component ("grbl", "runner").
func (r *Root) For(pkg string) *Log {
	return &Log{p: r.l.NewPackageLogger(pkg, logger.DebugLevel)}
}

func (l *Log) Errorf(format string, args ...any)  { l.p.Print(Error, fmt.Sprintf(format, args...)) }
func (l *Log) Warnf(format string, args ...any)   { l.p.Print(Warn, fmt.Sprintf(format, args...)) }
func (l *Log) Noticef(format string, args ...any) { l.p.Print(Notice, fmt.Sprintf(format, args...)) }
func (l *Log) Infof(format string, args ...any)   { l.p.Print(Info, fmt.Sprintf(format, args...)) }
func (l *Log) Debugf(format string, args ...any)  { l.p.Print(Debug, fmt.Sprintf(format, args...)) }

// Discard is a Log that writes nothing, for tests and optional logging.
func Discard() *Log { return New(io.Discard, Options{Level: Error}).For("") }

// priorityWriter prefixes every line with "<N>" from its level word.
type priorityWriter struct {
	mu sync.Mutex
	w  io.Writer
}

var priorities = map[string]int{"ERROR": 3, "WARN": 4, "NOTICE": 5, "INFO": 6, "DEBUG": 7}

func (p *priorityWriter) Write(b []byte) (int, error) {
	// Lines look like " [pkg] LEVEL  message"; find the level word.
	prio := 6
	if i := bytes.IndexByte(b, ']'); i >= 0 {
		rest := bytes.TrimLeft(b[i+1:], " ")
		if j := bytes.IndexByte(rest, ' '); j > 0 {
			if n, ok := priorities[string(rest[:j])]; ok {
				prio = n
			}
		}
	}
	line := append([]byte("<"+strconv.Itoa(prio)+">"), bytes.TrimLeft(b, " ")...)
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, err := p.w.Write(line); err != nil {
		return 0, err
	}
	return len(b), nil
}

// IsTerminal reports whether w is a file open on a terminal.
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && isTerminal(int(f.Fd()))
}

func isTerminal(fd int) bool {
	_, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	return err == nil
}

// isJournal reports whether fd is the stream systemd connected to journald
// ($JOURNAL_STREAM is "device:inode" of it).
func isJournal(fd int) bool {
	js := os.Getenv("JOURNAL_STREAM")
	if js == "" {
		return false
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		return false
	}
	return js == strconv.FormatUint(uint64(st.Dev), 10)+":"+strconv.FormatUint(st.Ino, 10)
}
