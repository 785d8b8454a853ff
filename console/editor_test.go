package console

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// feed types s into e and returns the events and the echo.
func feed(e *Editor, s string) ([]Event, string) {
	var evs []Event
	for i := 0; i < len(s); i++ {
		if ev := e.Feed(s[i]); ev.Kind != None {
			evs = append(evs, ev)
		}
	}
	return evs, string(e.Output())
}

func lines(evs []Event) []string {
	var l []string
	for _, ev := range evs {
		if ev.Kind == Line {
			l = append(l, ev.Line)
		}
	}
	return l
}

func TestEditorLineEnds(t *testing.T) {
	e := &Editor{Echo: true}
	evs, _ := feed(e, "a\rb\nc\r\nd\n\re\r\r")
	// CRLF is one line; LF CR is two (the second empty).
	assert.Equal(t, []string{"a", "b", "c", "d", "", "e", ""}, lines(evs))
	evs, _ = feed(e, "\n") // the LF of a CRLF split across reads
	assert.Empty(t, evs)
}

func TestEditorEditing(t *testing.T) {
	e := &Editor{Echo: true, Prompt: "> "}
	evs, echo := feed(e, "statux\x7fs\r")
	assert.Equal(t, []string{"status"}, lines(evs))
	assert.Equal(t, "statux\b \bs\r\n", echo, "dumb-terminal echo")

	evs, _ = feed(e, "abc\x08\x08d\r")
	assert.Equal(t, []string{"ad"}, lines(evs))

	evs, echo = feed(e, "home\x03")
	require.Len(t, evs, 1)
	assert.Equal(t, Interrupt, evs[0].Kind)
	assert.Equal(t, "home^C\r\n", echo)
	assert.Empty(t, e.Pending())

	evs, _ = feed(e, "move 1 2\x15version\r")
	assert.Equal(t, []string{"version"}, lines(evs), "Ctrl-U clears the line")

	evs, _ = feed(e, "light on 50\x17off\r")
	assert.Equal(t, []string{"light on off"}, lines(evs), "Ctrl-W erases a word")

	evs, _ = feed(e, "\x7f\x7f\x08x\r") // backspace on an empty line does nothing
	assert.Equal(t, []string{"x"}, lines(evs))
}

func TestEditorIgnoresNoise(t *testing.T) {
	e := &Editor{Echo: true}
	evs, echo := feed(e, "st\x00a\x01\x02t\xff\xfe\x80us\x1b[5~\x1b[1;5C\x1bx\r")
	assert.Equal(t, []string{"statusx"}, lines(evs), "NUL, controls, high bytes and unknown sequences are dropped; ESC x is x")
	assert.NotContains(t, echo, "\x00")
	assert.NotContains(t, echo, "\xff")

	// A sequence too long to be a key is consumed to its final byte
	// without keeping more than maxEscape bytes; its parameters do not
	// become text.
	evs, _ = feed(e, "\x1b["+strings.Repeat("1", 40)+"mok\r")
	assert.LessOrEqual(t, cap(e.esc), 2*maxEscape)
	assert.Equal(t, []string{"ok"}, lines(evs))
	// A line end inside a sequence still ends the line.
	evs, _ = feed(e, "a\x1b[\rb\r")
	assert.Equal(t, []string{"a", "b"}, lines(evs))
}

func TestEditorHistory(t *testing.T) {
	e := &Editor{Echo: true, Prompt: "> "}
	feed(e, "status\rversion\rversion\r")
	evs, _ := feed(e, "\x1b[A\r") // up: the last line
	assert.Equal(t, []string{"version"}, lines(evs))
	evs, _ = feed(e, "\x1b[A\x1b[A\r") // duplicates are kept once
	assert.Equal(t, []string{"status"}, lines(evs))
	// History: status, version, status.
	evs, _ = feed(e, "\x1bOA\x1bOA\x1bOB\r") // SS3 arrows (application mode)
	assert.Equal(t, []string{"status"}, lines(evs))
	evs, echo := feed(e, "ho\x1b[A\x1b[B\r") // down again restores the line being typed
	assert.Equal(t, []string{"ho"}, lines(evs))
	assert.Contains(t, echo, "ho\r  \r> status\r        \r> ho\r\n", "erase, then the recalled line, then back")

	for i := range MaxHistory + 10 {
		feed(e, strings.Repeat("x", i+1)+"\r")
	}
	assert.Len(t, e.hist, MaxHistory)
}

func TestEditorOverlongLine(t *testing.T) {
	e := &Editor{Echo: true, Max: 16}
	evs, echo := feed(e, strings.Repeat("a", 40)+"\r")
	require.Len(t, evs, 1)
	assert.Equal(t, TooLong, evs[0].Kind)
	assert.Equal(t, 40, evs[0].Len)
	assert.Equal(t, 1, strings.Count(echo, "\a"), "one bell when the line overflows")
	assert.Equal(t, 16, strings.Count(echo, "a"), "only what fits is echoed")
	evs, _ = feed(e, "status\r")
	assert.Equal(t, []string{"status"}, lines(evs), "the next line is fine")

	evs, _ = feed(e, strings.Repeat("b", 20)+"\x15ok\r")
	assert.Equal(t, []string{"ok"}, lines(evs), "Ctrl-U forgets an overlong line")
	evs, _ = feed(e, strings.Repeat("c", 20)+"\x17ok\r")
	assert.Equal(t, []string{"ok"}, lines(evs), "so does Ctrl-W erasing all of it")
	evs, _ = feed(e, "x "+strings.Repeat("c", 20)+"\x17\r")
	require.Len(t, evs, 1)
	assert.Equal(t, TooLong, evs[0].Kind, "but not a partial erase")
}

func TestEditorEraseAndDraw(t *testing.T) {
	e := &Editor{Echo: true, Prompt: "waferd> "}
	assert.Equal(t, "waferd> ", e.Draw())
	feed(e, "sta")
	assert.Equal(t, "\r"+strings.Repeat(" ", 11)+"\r", e.Erase())
	assert.Empty(t, e.Erase(), "nothing left to erase")
	assert.Equal(t, "waferd> sta", e.Draw())

	e.Hide = true
	e.Erase()
	assert.Equal(t, "waferd> ", e.Draw(), "hidden input is not drawn")

	quiet := &Editor{}
	evs, echo := feed(quiet, "ab\x7fc\r")
	assert.Equal(t, []string{"ac"}, lines(evs))
	assert.Empty(t, echo)
	assert.Empty(t, quiet.Draw())
}

func TestEditorCtrlD(t *testing.T) {
	e := &Editor{CtrlDEOF: true}
	evs, _ := feed(e, "ab\x04\r\x04")
	require.Len(t, evs, 2)
	assert.Equal(t, "ab", evs[0].Line, "Ctrl-D inside a line is ignored")
	assert.Equal(t, EndOfFile, evs[1].Kind)
	evs, _ = feed(&Editor{}, "\x04")
	assert.Empty(t, evs, "without CtrlDEOF it is ignored")
}
