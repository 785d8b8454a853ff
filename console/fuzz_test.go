package console

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/waferd/waferd/inspection/recipe"
)

// FuzzEditor feeds arbitrary bytes to the line reader: it must not panic,
// every line it returns must be printable ASCII within the limit, the echo
// must stay bounded per input byte, and its memory (line, escape
// sequence, history) bounded whatever the input.
func FuzzEditor(f *testing.F) {
	f.Add([]byte("status\r\n"), false)
	f.Add([]byte("move 1 2\x7f3\r\x1b[A\r\x03\x15"), true)
	f.Add([]byte("\x00\xff\x1b[1;5A\x1bOB\x1b\x1b[\r\n\n\r"), false)
	f.Add([]byte(strings.Repeat("x", 300)+"\r"), true)
	f.Fuzz(func(t *testing.T, in []byte, ctrlD bool) {
		e := &Editor{Echo: true, Prompt: "waferd> ", Max: 64, CtrlDEOF: ctrlD}
		for i, b := range in {
			ev := e.Feed(b)
			out := e.Output()
			// The longest echo of one byte is a history recall: erase
			// and redraw of a full line.
			if limit := 2*(len(e.Prompt)+e.Max) + 8; len(out) > limit {
				t.Fatalf("byte %d (%#x): %d bytes of echo", i, b, len(out))
			}
			if len(e.buf) > e.Max || len(e.esc) > maxEscape || len(e.hist) > MaxHistory {
				t.Fatalf("byte %d: unbounded state: line %d, escape %d, history %d", i, len(e.buf), len(e.esc), len(e.hist))
			}
			switch ev.Kind {
			case Line:
				if len(ev.Line) > e.Max {
					t.Fatalf("line of %d bytes > %d", len(ev.Line), e.Max)
				}
				for j := 0; j < len(ev.Line); j++ {
					if c := ev.Line[j]; c < 0x20 || c >= 0x7f {
						t.Fatalf("line %q has byte %#x", ev.Line, c)
					}
				}
				// Whatever a line holds, parsing it is safe.
				_, _ = Parse(ev.Line)
			case TooLong:
				if ev.Len <= e.Max {
					t.Fatalf("TooLong with %d bytes", ev.Len)
				}
			case EndOfFile:
				if !ctrlD {
					t.Fatal("EndOfFile without CtrlDEOF")
				}
			}
		}
		for _, h := range e.hist {
			if len(h) > e.Max || h == "" {
				t.Fatalf("history entry %q", h)
			}
		}
	})
}

// FuzzParse parses arbitrary text: no panic, and any error is one short
// line of valid UTF-8 without control characters.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"status", "move 150 150", "light on 50%", "run ../x", "satus", "help stop",
		"capture a..b", "jog -1e3 2mm", "show last", "watch 1e400", "\x00\x1b[A", "run demo\u00e9"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		c, err := Parse(line)
		if err != nil {
			msg := err.Error()
			if strings.ContainsAny(msg, "\r\n") || !utf8.ValidString(msg) {
				t.Fatalf("error %q is not one clean line", msg)
			}
			for _, r := range msg {
				if r < 0x20 || r == 0x7f {
					t.Fatalf("error %q has a control character", msg)
				}
			}
			if len(msg) > 400 {
				t.Fatalf("error of %d bytes", len(msg))
			}
			return
		}
		if c.Name == "" {
			if strings.TrimSpace(line) != "" && len(strings.Fields(line)) > 0 {
				t.Fatalf("%q parsed to nothing", line)
			}
			return
		}
		if lookup(c.Name) == nil || handlers[c.Name] == nil {
			t.Fatalf("%q parsed to unknown command %q", line, c.Name)
		}
		switch c.Name {
		case "run", "capture", "show":
			for _, a := range c.Args {
				if strings.ContainsAny(a, `/\`) || strings.Contains(a, "..") || strings.HasPrefix(a, ".") {
					t.Fatalf("%q: name %q accepted", line, a)
				}
			}
		case "move", "jog":
			for _, a := range c.Args {
				if _, err := ParseMM(a); err != nil {
					t.Fatalf("%q: %v after Parse accepted it", line, err)
				}
			}
		case "light":
			if len(c.Args) == 2 {
				// One rule: what the console accepts, a recipe accepts.
				v, err := ParseLevel(c.Args[1])
				if err != nil || !recipe.ValidLightLevel(v) {
					t.Fatalf("%q: level %g (%v) after Parse accepted it", line, v, err)
				}
			}
		}
	})
}
