// Package tomlfiletest checks the errors of loaders built on tomlfile, for
// their tests and fuzz tests.
package tomlfiletest

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/waferd/waferd/internal/tomlfile"
)

// leaks are fragments of Go's own wording that must never reach a user.
var leaks = []string{"struct field", "float64", "int64", "uint64", "interface {}", "[]interface", "map[", "reflect", "%!", "go-toml", "cannot decode"}

// CheckMessage returns why msg, the text of an error from a loader that
// prefixes its package name (prefix, e.g. "recipe: ") to errors about the
// file name, is not clean: every line must name the file (or count the
// problems left out), be valid UTF-8 without control characters, say
// nothing of Go's types, and stay short; there are at most tomlfile.MaxErrors+1
// lines. It returns "" for a clean message.
func CheckMessage(msg, prefix, name string) string {
	if msg == "" {
		return "empty error"
	}
	lines := strings.Split(msg, "\n")
	if len(lines) > tomlfile.MaxErrors+1 {
		return fmt.Sprintf("%d lines", len(lines))
	}
	for i, l := range lines {
		if i == 0 {
			if !strings.HasPrefix(l, prefix) {
				return fmt.Sprintf("line %q lacks the prefix %q", l, prefix)
			}
			l = strings.TrimPrefix(l, prefix)
		}
		if !strings.HasPrefix(l, name+":") && !(i == tomlfile.MaxErrors && strings.HasPrefix(l, "… and ")) {
			return fmt.Sprintf("line %q does not name the file %s", l, name)
		}
		if !utf8.ValidString(l) {
			return fmt.Sprintf("line %q is not UTF-8", l)
		}
		for _, r := range l {
			if !unicode.IsPrint(r) && r != ' ' {
				return fmt.Sprintf("line %q has the control character %U", l, r)
			}
		}
		for _, leak := range leaks {
			if strings.Contains(l, leak) {
				return fmt.Sprintf("line %q has %q", l, leak)
			}
		}
		if len(l) > 600 {
			return fmt.Sprintf("line of %d bytes", len(l))
		}
	}
	return ""
}
