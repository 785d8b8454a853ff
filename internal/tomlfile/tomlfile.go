// Package tomlfile decodes TOML configuration files strictly: unknown keys
// and badly typed values are errors that name the file, the line and the key,
// and later validation can ask on which line a key was written so its errors
// can do the same.
package tomlfile

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	toml "github.com/pelletier/go-toml/v2"
	"github.com/pelletier/go-toml/v2/unstable"
)

// Error is a problem at a place in a TOML file.
type Error struct {
	File string
	Line int    // 1-based; 0 when unknown
	Key  string // dotted key, e.g. "wafer.diameter_mm" or "site[2].die"; may be empty
	Msg  string
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		b.WriteString(":" + strconv.Itoa(e.Line))
	}
	b.WriteString(": ")
	if e.Key != "" {
		b.WriteString(e.Key + ": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// File is a decoded TOML document that remembers where each key was written.
// Not safe for concurrent mutation; read-only use is safe.
type File struct {
	Name  string
	lines map[string]int
}

// Load reads and decodes the TOML file at path into v (a pointer to a
// struct), rejecting unknown keys. All problems found are returned, joined.
func Load(path string, v any) (*File, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Decode(path, data, v)
}

// Decode decodes data (named name in errors) into v, rejecting unknown keys.
func Decode(name string, data []byte, v any) (*File, error) {
	f := &File{Name: name}
	var err error
	if f.lines, err = keyLines(data); err != nil {
		var pe *unstable.ParserError
		if errors.As(err, &pe) {
			return nil, f.parseError(data, pe)
		}
		return nil, &Error{File: name, Msg: err.Error()}
	}
	dec := toml.NewDecoder(bytes.NewReader(data)).DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var sm *toml.StrictMissingError
		var de *toml.DecodeError
		switch {
		case errors.As(err, &sm):
			errs := make([]error, 0, len(sm.Errors))
			for i := range sm.Errors {
				line, _ := sm.Errors[i].Position()
				errs = append(errs, &Error{File: name, Line: line, Key: strings.Join(sm.Errors[i].Key(), "."), Msg: "unknown key"})
			}
			return nil, errors.Join(errs...)
		case errors.As(err, &de):
			line, _ := de.Position()
			return nil, &Error{File: name, Line: line, Key: strings.Join(de.Key(), "."), Msg: strings.TrimPrefix(de.Error(), "toml: ")}
		default:
			return nil, &Error{File: name, Msg: err.Error()}
		}
	}
	return f, nil
}

func (f *File) parseError(data []byte, pe *unstable.ParserError) error {
	line := 0
	if len(pe.Highlight) > 0 {
		// Highlight is a sub-slice of data: its capacity gives its offset.
		if off := cap(data) - cap(pe.Highlight); off >= 0 && off <= len(data) {
			line = 1 + bytes.Count(data[:off], []byte("\n"))
		}
	}
	return &Error{File: f.Name, Line: line, Key: strings.Join(pe.Key, "."), Msg: "syntax: " + pe.Message}
}

// Line returns the line on which key (dotted, with [i] for the i-th entry of
// an array of tables, e.g. "site[2].die") was written, or 0 if it was not.
func (f *File) Line(key string) int {
	if f == nil {
		return 0
	}
	return f.lines[key]
}

// Errorf returns an *Error at key's line.
func (f *File) Errorf(key, format string, args ...any) error {
	name := ""
	if f != nil {
		name = f.Name
	}
	return &Error{File: name, Line: f.Line(key), Key: key, Msg: fmt.Sprintf(format, args...)}
}

// keyLines maps every key path to the line it appears on. Table headers map
// the table's own path ("wafer", "site[0]").
func keyLines(data []byte) (map[string]int, error) {
	lines := make(map[string]int)
	arrays := make(map[string]int) // array-of-tables path → count so far
	var p unstable.Parser
	p.Reset(data)
	lineOf := func(n *unstable.Node) (line int) {
		if n == nil || len(n.Data) == 0 {
			return 0
		}
		// Data of plain keys references the input; a key with escapes is
		// a copy, for which Range panics: its line is then unknown.
		defer func() {
			if recover() != nil {
				line = 0
			}
		}()
		return p.Shape(p.Range(n.Data)).Start.Line
	}
	keyPath := func(it unstable.Iterator) (string, *unstable.Node) {
		var parts []string
		var first *unstable.Node
		for it.Next() {
			if first == nil {
				first = it.Node()
			}
			parts = append(parts, string(it.Node().Data))
		}
		return strings.Join(parts, "."), first
	}
	table := ""
	for p.NextExpression() {
		e := p.Expression()
		switch e.Kind {
		case unstable.Table:
			path, first := keyPath(e.Children())
			table = path
			lines[table] = lineOf(first)
		case unstable.ArrayTable:
			path, first := keyPath(e.Children())
			i := arrays[path]
			arrays[path] = i + 1
			table = path + "[" + strconv.Itoa(i) + "]"
			lines[table] = lineOf(first)
		case unstable.KeyValue:
			path, first := keyPath(e.Key())
			if table != "" {
				path = table + "." + path
			}
			lines[path] = lineOf(first)
		}
	}
	return lines, p.Error()
}
