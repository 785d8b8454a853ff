package console

import (
	"strings"
	"unicode/utf8"
)

// Limits of the line editor.
const (
	// DefaultMaxLine is the longest accepted line, in bytes.
	DefaultMaxLine = 256
	// MaxHistory is how many lines the history keeps.
	MaxHistory = 64
	// maxEscape bounds an escape sequence; longer ones are noise.
	maxEscape = 16
)

// Control bytes the editor understands.
const (
	ctrlC = 0x03
	ctrlD = 0x04
	bel   = 0x07
	bs    = 0x08
	tab   = 0x09
	lf    = 0x0a
	ctrlL = 0x0c
	cr    = 0x0d
	ctrlU = 0x15
	ctrlW = 0x17
	esc   = 0x1b
	del   = 0x7f
)

// EventKind is what a byte fed to the Editor completed.
type EventKind int

const (
	None      EventKind = iota // nothing complete yet
	Line                       // a line ended (CR, LF or CRLF): Event.Line
	Interrupt                  // Ctrl-C: the line was cleared
	TooLong                    // a line ended that was longer than the limit: it is discarded
	EndOfFile                  // Ctrl-D on an empty line (only with Editor.CtrlDEOF)
)

// Event is the result of feeding one byte.
type Event struct {
	Kind EventKind
	Line string // Line: the text, without the line end
	Len  int    // TooLong: how many bytes the line had (capped at 1<<20)
}

// Editor turns the bytes a terminal sends into lines and produces the echo
// a dumb terminal needs: printable ASCII is echoed, backspace/DEL erase with
// "\b \b", Ctrl-C and Ctrl-U clear the line, Ctrl-W erases a word, Ctrl-L
// redraws, the up and down arrows (ANSI "ESC [ A", "ESC O A") walk the
// history. CR, LF and CRLF each end one line. Every other byte (NUL, other
// control bytes, bytes ≥ 0x80, unknown escape sequences) is ignored, and a
// line longer than Max is discarded at its end with a TooLong event, so
// that line noise never runs a command. It is not safe for concurrent use;
// memory is bounded by Max, MaxHistory and maxEscape.
type Editor struct {
	// Prompt is drawn before the line.
	Prompt string
	// Max is the longest line in bytes (DefaultMaxLine if ≤ 0).
	Max int
	// Echo produces echo and redraw output (a terminal); without it Output
	// stays empty (a script on a pipe).
	Echo bool
	// CtrlDEOF makes Ctrl-D on an empty line an EndOfFile event.
	CtrlDEOF bool
	// Hide leaves the line out of Draw (while another line occupies the
	// terminal, e.g. watch); typing continues invisibly.
	Hide bool

	buf    []byte
	over   int  // bytes dropped from the current line (0: not overlong)
	lastCR bool // the previous byte was CR: a following LF is part of it
	esc    []byte
	inEsc  bool
	hist   []string
	hpos   int    // history position while browsing (len(hist): not browsing)
	saved  string // the line being typed when browsing began
	shown  int    // display width of what is on the terminal's current row
	out    []byte
}

func (e *Editor) max() int {
	if e.Max <= 0 {
		return DefaultMaxLine
	}
	return e.Max
}

// Feed processes one input byte.
func (e *Editor) Feed(b byte) Event {
	if e.inEsc {
		return e.escape(b)
	}
	wasCR := e.lastCR
	e.lastCR = false
	switch {
	case b == cr:
		e.lastCR = true
		return e.endLine()
	case b == lf:
		if wasCR {
			return Event{}
		}
		return e.endLine()
	case b == bs || b == del:
		if n := len(e.buf); n > 0 {
			e.buf = e.buf[:n-1]
			if !e.Hide {
				e.echo("\b \b")
				e.shown--
			}
		}
	case b == ctrlC:
		e.echo("^C\r\n")
		e.shown = 0
		e.reset()
		return Event{Kind: Interrupt}
	case b == ctrlD:
		if e.CtrlDEOF && len(e.buf) == 0 && e.over == 0 {
			return Event{Kind: EndOfFile}
		}
	case b == ctrlU:
		e.replace("")
		e.over = 0
	case b == ctrlW:
		s := strings.TrimRight(string(e.buf), " ")
		if i := strings.LastIndexByte(s, ' '); i >= 0 {
			s = s[:i+1]
		} else {
			s = ""
		}
		e.replace(s)
		if s == "" {
			e.over = 0 // the whole line erased: a fresh start, as Ctrl-U
		}
	case b == ctrlL:
		e.echo("\r\n")
		e.shown = 0
		e.echo(e.Draw())
	case b == esc:
		e.inEsc, e.esc = true, e.esc[:0]
	case b == tab:
		e.insert(' ')
	case b >= 0x20 && b < del:
		e.insert(b)
	}
	return Event{}
}

func (e *Editor) insert(b byte) {
	if len(e.buf) >= e.max() {
		if e.over == 0 {
			e.echo(string(rune(bel)))
		}
		if e.over < 1<<20 {
			e.over++
		}
		return
	}
	e.buf = append(e.buf, b)
	if !e.Hide {
		e.echo(string(b))
		e.shown++
	}
}

// escape handles the bytes after ESC: CSI ("ESC [" parameters final) and
// SS3 ("ESC O" final). Up and down arrows walk the history; every other
// sequence is ignored. A byte that cannot continue a sequence ends it and
// is processed normally.
func (e *Editor) escape(b byte) Event {
	if len(e.esc) < maxEscape {
		e.esc = append(e.esc, b)
	} else {
		e.esc[maxEscape-1] = b // too long to be a key: consumed as noise until its end
	}
	switch {
	case len(e.esc) == 1:
		if b == '[' || b == 'O' {
			return Event{}
		}
		e.inEsc = false
		if b == esc {
			e.inEsc, e.esc = true, e.esc[:0]
			return Event{}
		}
		return e.Feed(b)
	case b >= 0x40 && b <= 0x7e && (e.esc[0] == '[' || len(e.esc) == 2):
		e.inEsc = false
		if len(e.esc) == 2 { // no parameters: a plain key
			switch b {
			case 'A':
				e.history(-1)
			case 'B':
				e.history(+1)
			}
		}
		return Event{}
	case e.esc[0] == '[' && b >= 0x20 && b <= 0x3f:
		return Event{} // parameter or intermediate bytes
	}
	e.inEsc = false
	return e.Feed(b)
}

func (e *Editor) history(dir int) {
	if e.over > 0 {
		return
	}
	n := len(e.hist)
	if e.hpos > n {
		e.hpos = n
	}
	switch {
	case dir < 0 && e.hpos > 0:
		if e.hpos == n {
			e.saved = string(e.buf)
		}
		e.hpos--
		e.replace(e.hist[e.hpos])
	case dir > 0 && e.hpos < n:
		e.hpos++
		if e.hpos == n {
			e.replace(e.saved)
		} else {
			e.replace(e.hist[e.hpos])
		}
	}
}

// replace shows s instead of the current line.
func (e *Editor) replace(s string) {
	if len(s) > e.max() {
		s = s[:e.max()]
	}
	if !e.Hide {
		e.echo(e.Erase())
	}
	e.buf = append(e.buf[:0], s...)
	if !e.Hide {
		e.echo(e.Draw())
	}
}

func (e *Editor) endLine() Event {
	line, over := string(e.buf), e.over
	if !e.Hide {
		e.echo("\r\n")
		e.shown = 0
	}
	e.reset()
	if over > 0 {
		return Event{Kind: TooLong, Len: min(e.max()+over, 1<<20)}
	}
	if t := strings.TrimSpace(line); t != "" && (len(e.hist) == 0 || e.hist[len(e.hist)-1] != t) {
		if len(e.hist) == MaxHistory {
			copy(e.hist, e.hist[1:])
			e.hist = e.hist[:MaxHistory-1]
		}
		e.hist = append(e.hist, t)
	}
	e.hpos = len(e.hist)
	return Event{Kind: Line, Line: line}
}

func (e *Editor) reset() {
	e.buf, e.over, e.saved = e.buf[:0], 0, ""
	e.hpos = len(e.hist)
}

func (e *Editor) echo(s string) {
	if e.Echo {
		e.out = append(e.out, s...)
	}
}

// Output returns the echo produced since the last call and clears it.
func (e *Editor) Output() []byte {
	out := e.out
	e.out = nil
	return out
}

// Pending returns the line typed so far (for the end of input).
func (e *Editor) Pending() string { return string(e.buf) }

// Erase returns what clears the terminal's current row on a dumb
// terminal (carriage return, spaces, carriage return) and notes that it is
// empty.
func (e *Editor) Erase() string {
	if !e.Echo || e.shown <= 0 {
		e.shown = 0
		return ""
	}
	n := e.shown
	e.shown = 0
	return "\r" + strings.Repeat(" ", n) + "\r"
}

// Draw returns the prompt and the line typed so far (or only the prompt
// when Hide is set), and notes that they are on the terminal.
func (e *Editor) Draw() string {
	if !e.Echo {
		return ""
	}
	s := e.Prompt
	if !e.Hide {
		s += string(e.buf)
	}
	e.shown += utf8.RuneCountInString(s)
	return s
}
