package tomlfile

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type doc struct {
	Name string `toml:"name"`
	Box  struct {
		Size   int        `toml:"size"`
		Width  float64    `toml:"width_mm"`
		Center [2]float64 `toml:"center_mm"`
		Die    [2]int     `toml:"die"`
		On     bool       `toml:"on"`
		Seed   uint64     `toml:"seed"`
		Small  int8       `toml:"small"`
	} `toml:"box"`
	Item []struct {
		ID int `toml:"id"`
	} `toml:"item"`
	private int
}

const src = `name = "x"

[box]
size = 3

[[item]]
id = 1

[[item]]
id = 2
`

func TestLinesOfKeys(t *testing.T) {
	var d doc
	f, err := Decode("d.toml", []byte(src), &d)
	require.NoError(t, err)
	assert.Equal(t, 1, f.Line("name"))
	assert.Equal(t, 3, f.Line("box"))
	assert.Equal(t, 4, f.Line("box.size"))
	assert.Equal(t, 7, f.Line("item[0].id"))
	assert.Equal(t, 10, f.Line("item[1].id"))
	assert.Equal(t, 0, f.Line("missing"))
	assert.EqualError(t, f.Errorf("item[1].id", "bad %d", 2), "d.toml:10: item[1].id: bad 2")
	assert.EqualError(t, f.Errorf("box.center_mm[1]", "bad"), "d.toml:3: box.center_mm[1]: bad", "the nearest enclosing key's line")
	assert.Equal(t, 3, d.Box.Size)
	assert.True(t, f.Has("box.size"))
	assert.True(t, f.Has("item[1].id"))
	assert.False(t, f.Has("box.width_mm"))
	require.Len(t, d.Item, 2)
	assert.Equal(t, 2, d.Item[1].ID)
}

func TestDecodeKeepsDefaults(t *testing.T) {
	var d doc
	d.Box.Width = 7
	d.Box.Center = [2]float64{1, 2}
	_, err := Decode("d.toml", []byte("[box]\ncenter_mm = [3, 4.5]\ndie = [-1, 2]\non = true\nseed = 9\n"), &d)
	require.NoError(t, err)
	assert.Equal(t, 7.0, d.Box.Width, "a key not written keeps its value")
	assert.Equal(t, [2]float64{3, 4.5}, d.Box.Center, "an integer is a number")
	assert.Equal(t, [2]int{-1, 2}, d.Box.Die)
	assert.True(t, d.Box.On)
	assert.EqualValues(t, 9, d.Box.Seed)

	f, err := Decode("d.toml", []byte("box = {size = 2}\n"), &d)
	require.NoError(t, err)
	assert.True(t, f.Has("box.size"), "in an inline table")
	assert.Equal(t, 0, f.Line("box.size"))
	assert.False(t, f.Has("box.die"))
}

// TestErrorsSayWhatWasExpectedAndFound: each message names the file, the
// line, the table and key, what was expected and what was found, and
// nothing of Go's types.
func TestErrorsSayWhatWasExpectedAndFound(t *testing.T) {
	for in, want := range map[string]string{
		"[box]\nsize = \"big\"\n":              `d.toml:2: box.size: expected an integer, found the string "big"`,
		"[box]\nsize = 1.5\n":                  `d.toml:2: box.size: expected an integer, found the number 1.5`,
		"[box]\nwidth_mm = \"ten\"\n":          `d.toml:2: box.width_mm: expected a number, found the string "ten"`,
		"[box]\nwidth_mm = nan\n":              `d.toml:2: box.width_mm: expected a finite number, found nan`,
		"[box]\nwidth_mm = -inf\n":             `d.toml:2: box.width_mm: expected a finite number, found -inf`,
		"[box]\nwidth_mm = [1.0]\n":            `d.toml:2: box.width_mm: expected a number, found an array of 1 element`,
		"[box]\ncenter_mm = [150.0]\n":         `d.toml:2: box.center_mm: expected an array of 2 numbers, found an array of 1 element`,
		"[box]\ncenter_mm = [1, 2, 3]\n":       `d.toml:2: box.center_mm: expected an array of 2 numbers, found an array of 3 elements`,
		"[box]\ncenter_mm = 150.0\n":           `d.toml:2: box.center_mm: expected an array of 2 numbers, found the number 150`,
		"[box]\ncenter_mm = [1, \"a\"]\n":      `d.toml:2: box.center_mm[1]: expected a number, found the string "a"`,
		"[box]\ncenter_mm = [1, inf]\n":        `d.toml:2: box.center_mm[1]: expected a finite number, found inf`,
		"[box]\ndie = [1, 2.5]\n":              `d.toml:2: box.die[1]: expected an integer, found the number 2.5`,
		"[box]\non = 1\n":                      `d.toml:2: box.on: expected true or false, found the integer 1`,
		"[box]\nseed = -1\n":                   `d.toml:2: box.seed: expected an integer ≥ 0, found the integer -1`,
		"[box]\nsmall = 300\n":                 `d.toml:2: box.small: expected an integer from -128 to 127, found the integer 300`,
		"name = 1979-05-27\n":                  `d.toml:1: name: expected a string, found a date or time`,
		"box = 3\n":                            `d.toml:1: box: expected a table, found the integer 3`,
		"item = 3\n":                           `d.toml:1: item: expected an array of tables ([[item]]), found the integer 3`,
		"item = [1]\n":                         `d.toml:1: item[0]: expected a table, found the integer 1`,
		"box = {size = \"s\"}\n":               `d.toml:1: box.size: expected an integer, found the string "s"`,
		"[box]\ncolour = 1\n":                  `d.toml:2: box.colour: unknown key ([box] has size, width_mm, center_mm, die, on, seed, small)`,
		"colour = 1\n":                         `d.toml:1: colour: unknown key (the top level has name, box, item)`,
		"[[item]]\nid = 1\n[[item]]\nx=1\n":    `d.toml:4: item[1].x: unknown key ([item[1]] has id)`,
		"\"a\\nb\" = 1\n":                      `d.toml:1: "a\nb": unknown key`,
		"[box]\nsize = 1\nsize = 2\n":          `d.toml:3: box.size: key defined twice (first on line 2)`,
		"[box]\n[box]\n":                       `d.toml:2: box: table [box] defined twice (first on line 1)`,
		"[[item]]\nid = 1\nid = 2\n":           `d.toml:3: item[0].id: key defined twice (first on line 2)`,
		"[box]\nsize = 99999999999999999999\n": `d.toml:2: box.size: `,
		"name = \n":                            `d.toml:1: syntax:`,
		"name = \"x\"\u0000\n":                 `d.toml:1: `,
	} {
		var d doc
		_, err := Decode("d.toml", []byte(in), &d)
		require.Error(t, err, in)
		msg := err.Error()
		assert.True(t, strings.HasPrefix(msg, want), "%q:\n got %s\nwant %s", in, msg, want)
		assert.NotContains(t, msg, "\n", in)
		for _, leak := range []string{"struct", "float64", "int64", "interface", "map[", "reflect", "go-toml"} {
			assert.NotContains(t, msg, leak, in)
		}
		var e *Error
		assert.True(t, errors.As(err, &e), in)
	}
}

func TestEveryProblemAtOnceByLine(t *testing.T) {
	var d doc
	_, err := Decode("d.toml", []byte("[box]\nwidth_mm = nan\nsize = \"s\"\ncolour = 1\n"), &d)
	require.Error(t, err)
	lines := strings.Split(err.Error(), "\n")
	require.Len(t, lines, 3)
	assert.True(t, strings.HasPrefix(lines[0], "d.toml:2: box.width_mm:"), lines[0])
	assert.True(t, strings.HasPrefix(lines[1], "d.toml:3: box.size:"), lines[1])
	assert.True(t, strings.HasPrefix(lines[2], "d.toml:4: box.colour:"), lines[2])
}

func TestJoinCaps(t *testing.T) {
	var errs []error
	for i := 30; i > 0; i-- {
		errs = append(errs, &Error{File: "f", Line: i, Msg: "bad"})
	}
	msg := Join(errs).Error()
	lines := strings.Split(msg, "\n")
	require.Len(t, lines, MaxErrors+1)
	assert.Equal(t, "f:1: bad", lines[0], "sorted by line")
	assert.Equal(t, "… and 10 more problems", lines[MaxErrors])
	assert.Nil(t, Join(nil))
}

func TestErrorIsOneLine(t *testing.T) {
	e := &Error{File: "a\nb.toml", Line: 2, Key: `"x"`, Msg: "found \x1b[31m\u2028"}
	assert.Equal(t, `a\nb.toml:2: "x": found \x1b[31m\u2028`, e.Error())
}

func TestLongKeysAreCut(t *testing.T) {
	var d doc
	_, err := Decode("d.toml", []byte("[box]\n"+strings.Repeat("k", 5000)+" = 1\n"), &d)
	require.Error(t, err)
	assert.Equal(t, "d.toml:2: box."+strings.Repeat("k", 76)+"…: unknown key ([box] has size, width_mm, center_mm, die, on, seed, small)", err.Error())
}

func TestReadFileRefusesWhatIsNotAFile(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	require.NoError(t, syscall.Mkfifo(fifo, 0o600))
	for path, want := range map[string]string{
		"/dev/zero": "/dev/zero: not a regular file (a character device): give a TOML file",
		dir:         dir + ": not a regular file (a directory): give a TOML file",
		fifo:        fifo + ": not a regular file (a named pipe): give a TOML file",
	} {
		var d doc
		_, err := Load(path, &d)
		assert.EqualError(t, err, want)
	}
}

func TestReadFileBoundsTheSize(t *testing.T) {
	dir := t.TempDir()
	exact := filepath.Join(dir, "exact.toml")
	line := "# " + strings.Repeat("x", 61) + "\n" // 64 bytes
	body := strings.Repeat(line, MaxSize/len(line))
	require.Len(t, body, MaxSize)
	require.NoError(t, os.WriteFile(exact, []byte(body), 0o644))
	data, err := ReadFile(exact)
	require.NoError(t, err)
	assert.Len(t, data, MaxSize)

	big := filepath.Join(dir, "big.toml")
	require.NoError(t, os.WriteFile(big, []byte(body+"\n"), 0o644))
	_, err = ReadFile(big)
	assert.EqualError(t, err, fmt.Sprintf("%s: %d bytes, over the limit of %d bytes (1 MiB) for a TOML file", big, MaxSize+1, MaxSize))

	var d doc
	_, err = Decode("big.toml", []byte(body+"\n"), &d)
	assert.EqualError(t, err, fmt.Sprintf("big.toml: %d bytes, over the limit of %d bytes (1 MiB) for a TOML file", MaxSize+1, MaxSize))

	_, err = ReadFile(filepath.Join(dir, "missing.toml"))
	assert.ErrorContains(t, err, "missing.toml")
}

// TestReadFileBoundsWhatStatDoesNotSize: files in /proc say they are
// empty; reading still stops at the limit.
func TestReadFileBoundsWhatStatDoesNotSize(t *testing.T) {
	data, err := ReadFile("/proc/self/status")
	require.NoError(t, err)
	assert.NotEmpty(t, data)
	assert.LessOrEqual(t, len(data), MaxSize)
}

// more holds the other types a configuration table may grow.
type more struct {
	Tags   []string         `toml:"tags"`
	Levels []float64        `toml:"levels"`
	Limits map[string]int   `toml:"limits"`
	When   time.Time        `toml:"when"`
	Addr   netip.Addr       `toml:"addr"`
	Port   *int             `toml:"port"`
	Extra  any              `toml:"extra"`
	Topics map[string]topic `toml:"topic"`
}

type topic struct {
	QoS int `toml:"qos"`
}

func TestOtherTypes(t *testing.T) {
	var m more
	_, err := Decode("m.toml", []byte(`tags = ["a", "b"]
levels = [0.5]
limits = {a = 1, b = 2}
when = 1979-05-27T07:32:00Z
addr = "192.0.2.1"
port = 1883
extra = [1, "x"]
[topic.runs]
qos = 1
`), &m)
	require.NoError(t, err)
	assert.Equal(t, []string{"a", "b"}, m.Tags)
	assert.Equal(t, []float64{0.5}, m.Levels)
	assert.Equal(t, map[string]int{"a": 1, "b": 2}, m.Limits)
	assert.Equal(t, 1979, m.When.Year())
	assert.Equal(t, netip.MustParseAddr("192.0.2.1"), m.Addr)
	require.NotNil(t, m.Port)
	assert.Equal(t, 1883, *m.Port)
	assert.Equal(t, []any{int64(1), "x"}, m.Extra)
	assert.Equal(t, map[string]topic{"runs": {QoS: 1}}, m.Topics)

	for in, want := range map[string]string{
		"tags = [\"a\", 1]\n":         `m.toml:1: tags[1]: expected a string, found the integer 1`,
		"tags = \"a\"\n":              `m.toml:1: tags: expected an array, found the string "a"`,
		"levels = [nan]\n":            `m.toml:1: levels[0]: expected a finite number, found nan`,
		"limits = {a = \"x\"}\n":      `m.toml:1: limits.a: expected an integer, found the string "x"`,
		"when = \"today\"\n":          `m.toml:1: when: expected a date and time with its offset (1979-05-27T07:32:00Z), found the string "today"`,
		"addr = \"nowhere\"\n":        `m.toml:1: addr: the string "nowhere" is not valid: ParseAddr("nowhere"): unable to parse IP`,
		"addr = 1\n":                  `m.toml:1: addr: expected a string, found the integer 1`,
		"port = \"x\"\n":              `m.toml:1: port: expected an integer, found the string "x"`,
		"[topic.runs]\nqos = \"1\"\n": `m.toml:2: topic.runs.qos: expected an integer, found the string "1"`,
	} {
		var m more
		_, err := Decode("m.toml", []byte(in), &m)
		require.Error(t, err, in)
		assert.Equal(t, want, err.Error(), in)
	}
}
