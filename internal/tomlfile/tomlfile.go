// Package tomlfile decodes TOML configuration files strictly: the file must
// be a regular file of at most MaxSize bytes, and every problem (a syntax
// error, a key defined twice, an unknown key, a value of the wrong type, an
// array of the wrong length, a NaN or an infinity) is an error that names
// the file, the line and the key, and says what was expected and what was
// found. Later validation can ask on which line a key was written so that
// its errors can do the same.
//
// Decoding goes through a generic TOML tree (go-toml's map[string]any) and
// then into the target struct by this package's own rules, so that no
// message of a decoder's reflection ("cannot decode TOML string into struct
// field ...") reaches a user.
package tomlfile

import (
	"cmp"
	"encoding"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	toml "github.com/pelletier/go-toml/v2"
	"github.com/pelletier/go-toml/v2/unstable"
)

// MaxSize is the largest file Load reads, in bytes: 1 MiB. The largest
// documents we expect are recipes that list their sites: a [[site]] table
// takes 26 bytes ("[[site]]\ndie = [-12, 34]\n\n"), so a recipe of 10,000
// sites is 260 KB (measured on the demo recipe with 10,000 [[site]]
// tables), and 1 MiB leaves room for a comment on every site. The daemon's
// configuration, every key commented, is 14 KB.
const MaxSize = 1 << 20

// MaxErrors is how many problems one error lists; more are counted.
const MaxErrors = 20

// Error is a problem at a place in a TOML file.
type Error struct {
	File string
	Line int    // 1-based; 0 when unknown
	Key  string // dotted key, e.g. "wafer.diameter_mm" or "site[2].die"; may be empty
	Msg  string
}

// Error formats e on one line: "FILE:LINE: KEY: MSG". Control characters
// are escaped, so that no input can break the line.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		b.WriteString(":" + strconv.Itoa(e.Line))
	}
	b.WriteString(": ")
	if key := e.Key; key != "" {
		if utf8.RuneCountInString(key) > maxShownKey {
			key = string([]rune(key)[:maxShownKey]) + "…"
		}
		b.WriteString(key + ": ")
	}
	b.WriteString(e.Msg)
	return printable(b.String())
}

// printable escapes control and invalid characters of s.
func printable(s string) string {
	clean := true
	for _, r := range s {
		if r == utf8.RuneError || !unicode.IsPrint(r) && r != ' ' {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	for i, r := range s {
		switch {
		case r == utf8.RuneError:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case !unicode.IsPrint(r) && r != ' ':
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// File is a decoded TOML document that remembers where each key was written.
// Not safe for concurrent mutation; read-only use is safe.
type File struct {
	Name  string
	lines map[string]int
	set   map[string]bool // keys decoded, in inline tables too
}

// ReadFile reads the file at path, refusing anything but a regular file of
// at most MaxSize bytes (a device such as /dev/zero, a FIFO or a directory
// would otherwise be read without end, block or fail obscurely). Errors are
// one line that names the file.
func ReadFile(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if err := regular(path, fi); err != nil {
		return nil, err
	}
	f, err := os.Open(path) // not a FIFO: does not block
	if err != nil {
		return nil, err
	}
	defer f.Close()
	// Checked again on what was opened: the path may have changed.
	if fi, err = f.Stat(); err != nil {
		return nil, err
	}
	if err := regular(path, fi); err != nil {
		return nil, err
	}
	// Read at most one byte more than allowed: a file that grows while it
	// is read (or reports no size, as in /proc) is still bounded.
	data, err := io.ReadAll(io.LimitReader(f, MaxSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > MaxSize {
		return nil, &Error{File: path, Msg: fmt.Sprintf("more than %d bytes, over the limit of 1 MiB for a TOML file", MaxSize)}
	}
	return data, nil
}

func regular(path string, fi fs.FileInfo) error {
	if !fi.Mode().IsRegular() {
		return &Error{File: path, Msg: "not a regular file (" + kind(fi.Mode()) + "): give a TOML file"}
	}
	if fi.Size() > MaxSize {
		return &Error{File: path, Msg: fmt.Sprintf("%d bytes, over the limit of %d bytes (1 MiB) for a TOML file", fi.Size(), MaxSize)}
	}
	return nil
}

func kind(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&fs.ModeCharDevice != 0:
		return "a character device"
	case m&fs.ModeDevice != 0:
		return "a block device"
	case m&fs.ModeNamedPipe != 0:
		return "a named pipe"
	case m&fs.ModeSocket != 0:
		return "a socket"
	}
	return "mode " + m.Type().String()
}

// Load reads the TOML file at path (see ReadFile) and decodes it into v, a
// pointer to a struct, as Decode does.
func Load(path string, v any) (*File, error) {
	data, err := ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Decode(path, data, v)
}

// Decode decodes data (named name in errors) into v, a pointer to a struct
// whose fields carry `toml:"key"` tags. Only the keys present in data are
// set, so v may hold defaults. The field types understood are bool, string,
// the integer and float kinds (integers range-checked, floats finite),
// time.Time, types that implement encoding.TextUnmarshaler (from a
// string), fixed-size arrays (the TOML array must have exactly that
// length), slices, structs (tables; slices of them are arrays of tables),
// maps with string keys, pointers to these and any. Decode panics on a
// field of another type. Data over MaxSize is refused. Every problem found is
// returned (see Join); v is then partly assigned and must not be used.
func Decode(name string, data []byte, v any) (*File, error) {
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.Elem().Kind() != reflect.Struct {
		panic(fmt.Sprintf("tomlfile: Decode needs a pointer to a struct, not %T", v))
	}
	if len(data) > MaxSize {
		return nil, &Error{File: name, Msg: fmt.Sprintf("%d bytes, over the limit of %d bytes (1 MiB) for a TOML file", len(data), MaxSize)}
	}
	f := &File{Name: name}
	var err error
	var onLine map[int]string
	if f.lines, onLine, err = f.keyLines(data); err != nil {
		return nil, err
	}
	var tree map[string]any
	if err := toml.Unmarshal(data, &tree); err != nil {
		var de *toml.DecodeError
		if errors.As(err, &de) {
			line, _ := de.Position()
			return nil, &Error{File: name, Line: line, Key: onLine[line], Msg: strings.TrimPrefix(de.Error(), "toml: ")}
		}
		return nil, &Error{File: name, Msg: strings.TrimPrefix(err.Error(), "toml: ")}
	}
	f.set = make(map[string]bool)
	d := decoder{f: f}
	d.table(rv.Elem(), tree, "")
	if len(d.errs) > 0 {
		return nil, Join(d.errs)
	}
	return f, nil
}

// Line returns the line on which key (dotted, with [i] for the i-th entry of
// an array of tables, e.g. "site[2].die") was written, or 0 if it was not.
func (f *File) Line(key string) int {
	if f == nil {
		return 0
	}
	return f.lines[key]
}

// Has reports whether key (as for Line) was written in the file, on a line
// of its own or in an inline table.
func (f *File) Has(key string) bool {
	return f != nil && f.set[key]
}

// near returns the line of key or, when it was not written on a line of
// its own (a key inside an inline table, an array element), of the nearest
// enclosing key that was.
func (f *File) near(key string) int {
	for key != "" {
		if l := f.Line(key); l > 0 {
			return l
		}
		i := strings.LastIndexAny(key, ".[")
		if i < 0 {
			break
		}
		key = key[:i]
	}
	return 0
}

// Errorf returns an *Error at key's line (or its nearest enclosing key's).
func (f *File) Errorf(key, format string, args ...any) error {
	name := ""
	if f != nil {
		name = f.Name
	}
	return &Error{File: name, Line: f.near(key), Key: key, Msg: fmt.Sprintf(format, args...)}
}

// Join joins errs into one error, one problem per line: sorted by line
// (errors without a line first, in their order), at most MaxErrors of them
// and then a count of the others. It returns nil if errs is empty.
func Join(errs []error) error {
	if len(errs) == 0 {
		return nil
	}
	lineOf := func(err error) int {
		var e *Error
		if errors.As(err, &e) {
			return e.Line
		}
		return 0
	}
	errs = slices.Clone(errs)
	slices.SortStableFunc(errs, func(a, b error) int { return cmp.Compare(lineOf(a), lineOf(b)) })
	if n := len(errs); n > MaxErrors {
		errs = append(errs[:MaxErrors], fmt.Errorf("… and %d more problems", n-MaxErrors))
	}
	return errors.Join(errs...)
}

// keyPart writes one key of a dotted path as TOML would: bare when it can
// be, quoted otherwise.
func keyPart(k string) string {
	if k == "" {
		return `""`
	}
	for _, c := range k {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return strconv.Quote(k)
		}
	}
	return k
}

func join(table, key string) string {
	if table == "" {
		return key
	}
	return table + "." + key
}

// keyLines maps every key path to the line it appears on (table headers map
// the table's own path: "wafer", "site[0]"), and every line holding a
// key/value to its key. A key or table defined twice is an error naming
// both lines.
func (f *File) keyLines(data []byte) (lines map[string]int, onLine map[int]string, err error) {
	lines = make(map[string]int)
	onLine = make(map[int]string)
	arrays := make(map[string]int) // array-of-tables path → count so far
	var p unstable.Parser
	p.Reset(data)
	lineOf := func(n *unstable.Node) (line int) {
		if n == nil {
			return 0
		}
		if n.Raw.Length > 0 {
			return p.Shape(n.Raw).Start.Line
		}
		if len(n.Data) == 0 {
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
	keyPath := func(it unstable.Iterator) (string, int) {
		var parts []string
		line := 0
		for it.Next() {
			if line == 0 {
				line = lineOf(it.Node())
			}
			parts = append(parts, keyPart(string(it.Node().Data)))
		}
		return strings.Join(parts, "."), line
	}
	var errs []error
	define := func(path string, line int, what string) {
		if first, dup := lines[path]; dup {
			msg := what + " defined twice"
			if first > 0 {
				msg += " (first on line " + strconv.Itoa(first) + ")"
			}
			errs = append(errs, &Error{File: f.Name, Line: line, Key: path, Msg: msg})
			return
		}
		lines[path] = line
	}
	table := ""
	for p.NextExpression() {
		e := p.Expression()
		switch e.Kind {
		case unstable.Table:
			path, line := keyPath(e.Children())
			table = path
			define(table, line, "table ["+path+"]")
		case unstable.ArrayTable:
			path, line := keyPath(e.Children())
			i := arrays[path]
			arrays[path] = i + 1
			if _, ok := lines[path]; !ok {
				lines[path] = line
			}
			table = path + "[" + strconv.Itoa(i) + "]"
			lines[table] = line
		case unstable.KeyValue:
			path, line := keyPath(e.Key())
			path = join(table, path)
			define(path, line, "key")
			if _, taken := onLine[line]; !taken && line > 0 {
				onLine[line] = path
			}
		}
	}
	if err := p.Error(); err != nil {
		var pe *unstable.ParserError
		if errors.As(err, &pe) {
			return nil, nil, f.parseError(data, pe)
		}
		return nil, nil, &Error{File: f.Name, Msg: err.Error()}
	}
	if len(errs) > 0 {
		return nil, nil, Join(errs)
	}
	return lines, onLine, nil
}

func (f *File) parseError(data []byte, pe *unstable.ParserError) error {
	line := 0
	if len(pe.Highlight) > 0 {
		// Highlight is a sub-slice of data: its capacity gives its offset.
		if off := cap(data) - cap(pe.Highlight); off >= 0 && off <= len(data) {
			line = 1 + strings.Count(string(data[:off]), "\n")
		}
	}
	key := make([]string, len(pe.Key))
	for i, k := range pe.Key {
		key[i] = keyPart(k)
	}
	return &Error{File: f.Name, Line: line, Key: strings.Join(key, "."), Msg: "syntax: " + pe.Message}
}

// decoder assigns a generic TOML tree to a struct, collecting errors.
type decoder struct {
	f    *File
	errs []error
}

func (d *decoder) bad(key, format string, args ...any) {
	d.errs = append(d.errs, d.f.Errorf(key, format, args...))
}

// wrong reports a value of the wrong type or shape.
func (d *decoder) wrong(key string, want string, got any) {
	d.bad(key, "expected %s, found %s", want, describe(got))
}

// table assigns the TOML table src to the struct dst; path is the table's
// dotted path ("" at the top).
func (d *decoder) table(dst reflect.Value, src map[string]any, path string) {
	fields := tomlFields(dst.Type())
	keys := make([]string, 0, len(src))
	for k := range src {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		key := join(path, keyPart(k))
		i, ok := fields[k]
		if !ok {
			d.bad(key, "unknown key (%s)", known(fields, path))
			continue
		}
		d.f.set[key] = true
		d.value(dst.Field(i), src[k], key)
	}
}

// value assigns one TOML value to dst.
func (d *decoder) value(dst reflect.Value, src any, key string) {
	// Types that decode themselves, and dates.
	if dst.Type() == timeType {
		t, ok := src.(time.Time)
		if !ok {
			d.wrong(key, "a date and time with its offset (1979-05-27T07:32:00Z)", src)
			return
		}
		dst.Set(reflect.ValueOf(t))
		return
	}
	if dst.CanAddr() {
		if u, ok := dst.Addr().Interface().(encoding.TextUnmarshaler); ok {
			s, ok := src.(string)
			if !ok {
				d.wrong(key, "a string", src)
				return
			}
			if err := u.UnmarshalText([]byte(s)); err != nil {
				d.bad(key, "%s is not valid: %v", describe(src), err)
			}
			return
		}
	}
	switch dst.Kind() {
	case reflect.Pointer:
		v := reflect.New(dst.Type().Elem())
		d.value(v.Elem(), src, key)
		dst.Set(v)
	case reflect.Interface:
		if dst.NumMethod() != 0 {
			panic("tomlfile: unsupported field type " + dst.Type().String() + " for " + key)
		}
		dst.Set(reflect.ValueOf(src))
	case reflect.Struct:
		t, ok := src.(map[string]any)
		if !ok {
			d.wrong(key, "a table", src)
			return
		}
		d.table(dst, t, key)
	case reflect.Map:
		if dst.Type().Key().Kind() != reflect.String {
			panic("tomlfile: unsupported field type " + dst.Type().String() + " for " + key)
		}
		t, ok := src.(map[string]any)
		if !ok {
			d.wrong(key, "a table", src)
			return
		}
		m := reflect.MakeMapWithSize(dst.Type(), len(t))
		for k, e := range t {
			v := reflect.New(dst.Type().Elem()).Elem()
			d.value(v, e, join(key, keyPart(k)))
			m.SetMapIndex(reflect.ValueOf(k).Convert(dst.Type().Key()), v)
		}
		dst.Set(m)
	case reflect.Slice:
		a, ok := src.([]any)
		if !ok {
			want := "an array"
			if dst.Type().Elem().Kind() == reflect.Struct {
				want = "an array of tables ([[" + key + "]])"
			}
			d.wrong(key, want, src)
			return
		}
		s := reflect.MakeSlice(dst.Type(), len(a), len(a))
		for i, e := range a {
			d.value(s.Index(i), e, key+"["+strconv.Itoa(i)+"]")
		}
		dst.Set(s)
	case reflect.Array:
		want := fmt.Sprintf("an array of %d %s", dst.Len(), plural(dst.Type().Elem(), dst.Len()))
		a, ok := src.([]any)
		if !ok {
			d.wrong(key, want, src)
			return
		}
		if len(a) != dst.Len() {
			d.wrong(key, want, src)
			return
		}
		for i, e := range a {
			d.value(dst.Index(i), e, key+"["+strconv.Itoa(i)+"]")
		}
	case reflect.Bool:
		b, ok := src.(bool)
		if !ok {
			d.wrong(key, "true or false", src)
			return
		}
		dst.SetBool(b)
	case reflect.String:
		s, ok := src.(string)
		if !ok {
			d.wrong(key, "a string", src)
			return
		}
		dst.SetString(s)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, ok := src.(int64)
		if !ok {
			d.wrong(key, "an integer", src)
			return
		}
		if dst.OverflowInt(n) {
			bits := dst.Type().Bits()
			d.wrong(key, fmt.Sprintf("an integer from %d to %d", int64(-1)<<(bits-1), int64(1)<<(bits-1)-1), src)
			return
		}
		dst.SetInt(n)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		n, ok := src.(int64)
		if !ok || n < 0 || dst.OverflowUint(uint64(n)) {
			d.wrong(key, "an integer ≥ 0", src)
			return
		}
		dst.SetUint(uint64(n))
	case reflect.Float32, reflect.Float64:
		var x float64
		switch n := src.(type) {
		case int64:
			x = float64(n)
		case float64:
			x = n
		default:
			d.wrong(key, "a number", src)
			return
		}
		if math.IsNaN(x) || math.IsInf(x, 0) || dst.OverflowFloat(x) {
			d.wrong(key, "a finite number", src)
			return
		}
		dst.SetFloat(x)
	default:
		panic("tomlfile: unsupported field type " + dst.Type().String() + " for " + key)
	}
}

var timeType = reflect.TypeFor[time.Time]()

// tomlFields maps the TOML keys of struct type t to field indexes.
func tomlFields(t reflect.Type) map[string]int {
	m := make(map[string]int, t.NumField())
	for i := range t.NumField() {
		sf := t.Field(i)
		name, _, _ := strings.Cut(sf.Tag.Get("toml"), ",")
		if !sf.IsExported() || name == "" || name == "-" {
			continue
		}
		m[name] = i
	}
	return m
}

// known lists a table's keys for an "unknown key" error.
func known(fields map[string]int, path string) string {
	names := make([]string, 0, len(fields))
	for k := range fields {
		names = append(names, k)
	}
	slices.SortFunc(names, func(a, b string) int { return cmp.Compare(fields[a], fields[b]) })
	where := "the top level"
	if path != "" {
		where = "[" + path + "]"
	}
	if len(names) == 0 {
		return where + " has no keys"
	}
	return where + " has " + strings.Join(names, ", ")
}

// plural names n values of type t.
func plural(t reflect.Type, n int) string {
	var one, many string
	switch t.Kind() {
	case reflect.Float32, reflect.Float64:
		one, many = "number", "numbers"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		one, many = "integer", "integers"
	case reflect.String:
		one, many = "string", "strings"
	case reflect.Bool:
		one, many = "boolean", "booleans"
	default:
		one, many = "value", "values"
	}
	if n == 1 {
		return one
	}
	return many
}

// maxShown is how much of a string value an error repeats; maxShownKey,
// of a key.
const (
	maxShown    = 32
	maxShownKey = 80
)

// describe says what a TOML value is, for "found ..." in errors.
func describe(v any) string {
	switch x := v.(type) {
	case string:
		if utf8.RuneCountInString(x) > maxShown {
			return "the string " + strconv.Quote(string([]rune(x)[:maxShown])) + "…"
		}
		return "the string " + strconv.Quote(x)
	case int64:
		return "the integer " + strconv.FormatInt(x, 10)
	case float64:
		switch {
		case math.IsNaN(x):
			return "nan"
		case math.IsInf(x, 1):
			return "inf"
		case math.IsInf(x, -1):
			return "-inf"
		}
		return "the number " + strconv.FormatFloat(x, 'g', -1, 64)
	case bool:
		return "the boolean " + strconv.FormatBool(x)
	case []any:
		if len(x) == 1 {
			return "an array of 1 element"
		}
		return fmt.Sprintf("an array of %d elements", len(x))
	case map[string]any:
		return "a table"
	case time.Time, toml.LocalDate, toml.LocalTime, toml.LocalDateTime:
		return "a date or time"
	}
	return "a value of another type"
}
