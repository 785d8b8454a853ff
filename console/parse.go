package console

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Command is a parsed console line.
type Command struct {
	Name string   // canonical command name ("" for an empty line)
	Args []string // its arguments, checked against the command's usage
}

// spec describes one command.
type spec struct {
	name    string
	usage   string // arguments, e.g. "X Y"
	summary string
	help    string // more detail for help COMMAND
	min     int
	max     int
	check   func(args []string) error // nil: no further checks
	aliases []string
}

// commands is the console's command set, in the order help lists them.
var commands = []spec{
	{name: "help", usage: "[COMMAND]", summary: "list the commands, or explain one", max: 1, aliases: []string{"?"}},
	{name: "version", summary: "the daemon's version"},
	{name: "status", summary: "machine, stage, light, camera, watchdog, runs",
		help: "Machine state and latch, stage position and whether it is trusted, light, camera, heartbeats, temperature, the current and last run, the broker connection and the outbox's depth."},
	{name: "config", summary: "the configuration in effect (TOML)"},
	{name: "home", summary: "run the stage's homing cycle",
		help: "Needed before move and jog after start-up, a reset or a lost position. stop aborts it."},
	{name: "origin", usage: "X Y", summary: "a stage without homing: it stands at X Y mm (confirmed)", min: 2, max: 2,
		help: "For a stage without homing switches (stage.homing = false): jog to a known mark, then say where the mark is. " +
			"After a y the position is trusted: a wrong origin drives the stage into its ends.",
		check: func(a []string) error { return numbers("origin", "X Y", a) }},
	{name: "move", usage: "X Y", summary: "move to X Y mm (machine coordinates)", min: 2, max: 2,
		help:  "Refused outside the travel, before homing and during a run. stop holds the stage at once.",
		check: func(a []string) error { return numbers("move", "X Y", a) }},
	{name: "jog", usage: "DX DY", summary: "move by DX DY mm from where it is", min: 2, max: 2,
		help:  "Same rules as move; for example: jog 0.5 0",
		check: func(a []string) error { return numbers("jog", "DX DY", a) }},
	{name: "light", usage: "on [L] | off | level L", summary: "switch the light; L is 0.5 or 50% (1% steps)", min: 1, max: 2,
		help: levelRule + ". light on without L uses the level last set (80% at first). " +
			"A light switched on here goes off again before the watchdog's maximum on-time, on stop and when a run starts.",
		check: checkLight},
	{name: "capture", usage: "[NAME]", summary: "save a lit frame as <data>/captures/NAME.png", max: 1,
		check: func(a []string) error {
			if len(a) == 1 {
				return checkName("capture", "NAME", strings.TrimSuffix(a[0], ".png"))
			}
			return nil
		}},
	{name: "run", usage: "RECIPE", summary: "start a recipe (no name: list the recipes)", max: 1,
		help: "Progress is printed as sites finish; stop stops the run safely.",
		check: func(a []string) error {
			if len(a) == 1 {
				return checkName("run", "RECIPE", strings.TrimSuffix(a[0], ".toml"))
			}
			return nil
		}},
	{name: "stop", summary: "stop the run and any command, at once", max: 0,
		help: "On a terminal stop acts the moment it is typed, even while another command runs; commands typed ahead are discarded."},
	{name: "reset", summary: "clear a Faulted/EStop latch, or reset a held stage (confirmed)"},
	{name: "runs", usage: "[N]", summary: "recent runs: outcome, reason (default 10)", max: 1,
		check: func(a []string) error { return count("runs", a, 1000) }},
	{name: "show", usage: "RUN|last", summary: "one run: its id, a unique part, or last", min: 1, max: 1,
		check: func(a []string) error { return checkName("show", "RUN", a[0]) }},
	{name: "log", usage: "[N]", summary: "the last N log lines (default 20)", max: 1,
		check: func(a []string) error { return count("log", a, 1000) }},
	{name: "watch", usage: "[SECONDS]", summary: "live status until a key (or SECONDS)", max: 1,
		check: func(a []string) error { return seconds("watch", a) }},
	{name: "wait", usage: "[SECONDS]", summary: "wait for the run to end (for scripts)", max: 1,
		check: func(a []string) error { return seconds("wait", a) }},
	{name: "selftest", summary: "test each device safely: pass/fail",
		help: "Stage status (no motion), light on and off, one lit frame, heartbeats, temperature."},
	{name: "stats", summary: "stop latency, stops by reason, messages published",
		help: "Stop requests by reason, operations ended by a stop, stop latency histograms; messages sent to the broker, sent again, and dropped by a full outbox."},
	{name: "gem", usage: "[online|offline|local|remote]", summary: "the factory host's link (SECS/GEM), or switch its control state", max: 1,
		help:  "Without a word: where it listens, the host, communication and control state, alarms set. local: the host may watch but its commands are refused; remote: it may start and stop runs; offline/online: as E30's operator switch.",
		check: checkGem},
}

// lookup finds the spec of a lower-case command name or alias.
func lookup(name string) *spec {
	for i := range commands {
		c := &commands[i]
		if c.name == name {
			return c
		}
		for _, a := range c.aliases {
			if a == name {
				return c
			}
		}
	}
	return nil
}

// maxQuoted is how much of a user's text an error message repeats.
const maxQuoted = 24

// quote quotes user text for an error message: escaped, and cut short.
func quote(s string) string {
	if utf8.RuneCountInString(s) > maxQuoted {
		r := []rune(s)
		return strconv.Quote(string(r[:maxQuoted])) + "…"
	}
	return strconv.Quote(s)
}

// Parse parses one console line. An empty (or blank) line gives a Command
// with an empty Name and no error. Errors are one line each, say what was
// wrong and what to do, and for an unknown command suggest the closest one.
func Parse(line string) (Command, error) {
	f := strings.Fields(line)
	if len(f) == 0 {
		return Command{}, nil
	}
	name := strings.ToLower(f[0])
	c := lookup(name)
	if c == nil {
		return Command{}, unknown(f[0])
	}
	args := f[1:]
	if len(args) < c.min || len(args) > c.max {
		return Command{}, fmt.Errorf("%s: %s; usage: %s", c.name, argCount(c, len(args)), usage(c))
	}
	if c.check != nil {
		if err := c.check(args); err != nil {
			return Command{}, err
		}
	}
	if c.name == "help" && len(args) == 1 && lookup(strings.ToLower(args[0])) == nil {
		return Command{}, fmt.Errorf("help: %w", unknown(args[0]))
	}
	return Command{Name: c.name, Args: args}, nil
}

func argCount(c *spec, n int) string {
	switch {
	case c.max == 0:
		return "takes no arguments"
	case n < c.min:
		return "missing arguments"
	}
	return "too many arguments"
}

func usage(c *spec) string {
	if c.usage == "" {
		return c.name
	}
	return c.name + " " + c.usage
}

func unknown(word string) error {
	if s := suggest(strings.ToLower(word)); s != "" {
		return fmt.Errorf("unknown command %s: did you mean %s? (help lists the commands)", quote(word), s)
	}
	return fmt.Errorf("unknown command %s: help lists the commands", quote(word))
}

// suggest returns the command closest to word by edit distance, or "" if
// none is close.
func suggest(word string) string {
	if word == "" || len(word) > 32 {
		return ""
	}
	prefixed := ""
	for _, c := range commands {
		if strings.HasPrefix(c.name, word) {
			if prefixed != "" {
				prefixed = "-" // more than one
				break
			}
			prefixed = c.name
		}
	}
	if prefixed != "" && prefixed != "-" && len(word) >= 2 {
		return prefixed
	}
	best, bestD := "", math.MaxInt
	for _, c := range commands {
		for _, n := range append([]string{c.name}, c.aliases...) {
			if d := distance(word, n); d < bestD {
				best, bestD = c.name, d
			}
		}
	}
	// Close means: at most 2 edits, and fewer than half the word changed.
	if bestD <= 2 && bestD*2 < max(len(word), len(best)) {
		return best
	}
	return ""
}

// distance is the Damerau-Levenshtein (optimal string alignment) distance
// between a and b, in bytes.
func distance(a, b string) int {
	prev2 := make([]int, len(b)+1)
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(b)]
}

// maxMM bounds coordinates typed on the console.
const maxMM = 10000

// ParseMM parses a length in millimetres ("12.5", "-3", "12.5mm").
func ParseMM(s string) (float64, error) {
	v, err := strconv.ParseFloat(strings.TrimSuffix(strings.ToLower(s), "mm"), 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) || math.Abs(v) > maxMM {
		return 0, fmt.Errorf("%s is not a length in mm", quote(s))
	}
	return v, nil
}

func numbers(cmd, names string, a []string) error {
	for _, s := range a {
		if _, err := ParseMM(s); err != nil {
			return fmt.Errorf("%s: %v; usage: %s %s (millimetres, e.g. %s 150 150)", cmd, err, cmd, names, cmd)
		}
	}
	return nil
}

// levelRule is the rule of light levels as help states it: that of
// recipe.ValidLightLevel, which recipes' capture.light_level follows too.
const levelRule = "L is a fraction from 0.01 to 1 (0.5) or a percentage from 1% to 100% (50%), in steps of 1%"

// ParseLevel parses a light level: a fraction from 0.01 to 1 ("0.5"), or a
// percentage from 1% to 100% with its sign ("50%"), in steps of 1% (the
// rule of recipe.ValidLightLevel). A number without % is always a
// fraction: "2" is refused, not taken as 2%. The level returned is a whole
// number of percent, as a fraction.
func ParseLevel(s string) (float64, error) {
	num, pct := strings.CutSuffix(s, "%")
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, fmt.Errorf("light: level %s is not a number: %s", quote(s), levelRule)
	}
	percent := v
	if !pct {
		percent = v * 100
	}
	// written gives p percent back as the user wrote levels.
	written := func(p float64) string {
		if pct {
			return strconv.FormatFloat(p, 'f', -1, 64) + "%"
		}
		return strconv.FormatFloat(p/100, 'f', -1, 64)
	}
	whole := math.Round(percent)
	switch {
	case !pct && v > 1:
		return 0, fmt.Errorf("light: level %s is more than 1: without %% a level is a fraction (0.5 is half); %s", quote(s), levelRule)
	case percent > 100:
		return 0, fmt.Errorf("light: level %s is more than 100%%: %s", quote(s), levelRule)
	case percent < 1:
		return 0, fmt.Errorf("light: level %s is below the lowest level, %s (light off switches it off)", quote(s), written(1))
	case math.Abs(percent-whole) > 1e-6:
		return 0, fmt.Errorf("light: level %s is finer than 1%%: give %s or %s", quote(s), written(math.Floor(percent)), written(math.Ceil(percent)))
	}
	return whole / 100, nil
}

func checkLight(a []string) error {
	switch strings.ToLower(a[0]) {
	case "on":
		if len(a) == 2 {
			_, err := ParseLevel(a[1])
			return err
		}
		return nil
	case "off":
		if len(a) == 2 {
			return fmt.Errorf("light: off takes no level; usage: light on [L] | off | level L")
		}
		return nil
	case "level":
		if len(a) != 2 {
			return fmt.Errorf("light: level needs a value; usage: light level L (0.5 or 50%%, 1%% steps)")
		}
		_, err := ParseLevel(a[1])
		return err
	}
	return fmt.Errorf("light: %s is not on, off or level; usage: light on [L] | off | level L", quote(a[0]))
}

// checkName accepts 1-64 of [A-Za-z0-9._-], not starting with '.' and
// without "..": names of recipes, runs and captures, never paths.
func checkName(cmd, what, s string) error {
	bad := s == "" || len(s) > 64 || s[0] == '.' || strings.Contains(s, "..")
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			bad = true
		}
	}
	if bad {
		return fmt.Errorf("%s: %s is not a valid %s: use a plain name (letters, digits, '.', '_', '-'), no / or ..", cmd, quote(s), what)
	}
	return nil
}

func count(cmd string, a []string, limit int) error {
	if len(a) == 0 {
		return nil
	}
	if n, err := strconv.Atoi(a[0]); err != nil || n < 1 || n > limit {
		return fmt.Errorf("%s: %s is not a count from 1 to %d", cmd, quote(a[0]), limit)
	}
	return nil
}

// maxSeconds bounds watch and wait.
const maxSeconds = 24 * 3600

func seconds(cmd string, a []string) error {
	if len(a) == 0 {
		return nil
	}
	if v, err := strconv.ParseFloat(strings.TrimSuffix(a[0], "s"), 64); err != nil || math.IsNaN(v) || v <= 0 || v > maxSeconds {
		return fmt.Errorf("%s: %s is not a number of seconds from 0 to %d", cmd, quote(a[0]), maxSeconds)
	}
	return nil
}
