package console

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/waferd/waferd/inspection/recipe"
)

func TestParseCommands(t *testing.T) {
	for line, want := range map[string]Command{
		"":                        {},
		"   ":                     {},
		"status":                  {Name: "status", Args: []string{}},
		"  STATUS  ":              {Name: "status", Args: []string{}},
		"?":                       {Name: "help", Args: []string{}},
		"help move":               {Name: "help", Args: []string{"move"}},
		"move 150 -2.5":           {Name: "move", Args: []string{"150", "-2.5"}},
		"move 150mm 2mm":          {Name: "move", Args: []string{"150mm", "2mm"}},
		"jog 0.5 0":               {Name: "jog", Args: []string{"0.5", "0"}},
		"light on":                {Name: "light", Args: []string{"on"}},
		"light on 50%":            {Name: "light", Args: []string{"on", "50%"}},
		"light level 0.3":         {Name: "light", Args: []string{"level", "0.3"}},
		"light OFF":               {Name: "light", Args: []string{"OFF"}},
		"capture edge-3":          {Name: "capture", Args: []string{"edge-3"}},
		"run demo":                {Name: "run", Args: []string{"demo"}},
		"run demo.toml":           {Name: "run", Args: []string{"demo.toml"}},
		"show last":               {Name: "show", Args: []string{"last"}},
		"runs 5":                  {Name: "runs", Args: []string{"5"}},
		"log 100":                 {Name: "log", Args: []string{"100"}},
		"watch 2.5":               {Name: "watch", Args: []string{"2.5"}},
		"wait 10s":                {Name: "wait", Args: []string{"10s"}},
		"selftest":                {Name: "selftest", Args: []string{}},
		"stats":                   {Name: "stats", Args: []string{}},
		"show 20261126T082940Z-d": {Name: "show", Args: []string{"20261126T082940Z-d"}},
	} {
		got, err := Parse(line)
		require.NoError(t, err, line)
		assert.Equal(t, want, got, line)
	}
}

func TestParseErrors(t *testing.T) {
	for line, want := range map[string]string{
		"satus":                     `unknown command "satus": did you mean status?`,
		"stpo":                      `unknown command "stpo": did you mean stop?`,
		"hme":                       `unknown command "hme": did you mean home?`,
		"selftets":                  `unknown command "selftets": did you mean selftest?`,
		"sel":                       `did you mean selftest?`,
		"xyzzy":                     `unknown command "xyzzy": help lists the commands`,
		"help frob":                 `help: unknown command "frob"`,
		"move 1":                    "move: missing arguments; usage: move X Y",
		"move 1 2 3":                "move: too many arguments; usage: move X Y",
		"move a 2":                  `move: "a" is not a length in mm; usage: move X Y`,
		"move NaN 2":                `"NaN" is not a length in mm`,
		"move 1e9 2":                `"1e9" is not a length in mm`,
		"status now":                "status: takes no arguments; usage: status",
		"light dim":                 `light: "dim" is not on, off or level`,
		"light on 2000":             `light: level "2000" is more than 1`,
		"light on 0":                `light: level "0" is below the lowest level, 0.01 (light off switches it off)`,
		"light level":               "light: level needs a value",
		"light off 3":               "light: off takes no level",
		"run ../../etc/passwd":      `run: "../../etc/passwd" is not a valid RECIPE: use a plain name`,
		"run /etc/waferd/x":         `is not a valid RECIPE`,
		"run .hidden":               `is not a valid RECIPE`,
		"run a..b":                  `is not a valid RECIPE`,
		"capture ../x":              `capture: "../x" is not a valid NAME`,
		"show a/b":                  `show: "a/b" is not a valid RUN`,
		"runs 0":                    `runs: "0" is not a count from 1 to 1000`,
		"log many":                  `log: "many" is not a count`,
		"watch -1":                  `watch: "-1" is not a number of seconds`,
		"stop":                      "", // valid: checked below
		strings.Repeat("q", 200):    `unknown command "qqqqqqqqqqqqqqqqqqqqqqqq"…: help lists the commands`,
		"mov\x00e 1 2":              `unknown command "mov\x00e"`,
		"move 1 2\x1b[31m":          `move: "2\x1b[31m" is not a length in mm`,
		"\u00e9tat":                 `unknown command "état"`,
		"capture " + "\u00e9\u00e9": `is not a valid NAME`,
	} {
		got, err := Parse(line)
		if want == "" {
			require.NoError(t, err, line)
			assert.Equal(t, "stop", got.Name)
			continue
		}
		require.Error(t, err, line)
		assert.Contains(t, err.Error(), want, "%q", line)
		assert.NotContains(t, err.Error(), "\n", "one line")
	}
}

func TestDistance(t *testing.T) {
	assert.Equal(t, 0, distance("stop", "stop"))
	assert.Equal(t, 1, distance("stpo", "stop"), "a transposition is one edit")
	assert.Equal(t, 1, distance("satus", "status"))
	assert.Equal(t, 4, distance("", "home"))
	assert.Equal(t, 3, distance("kitten", "sitting"))
}

// TestParseLevel: "light level 1" was 100% but "2" was 2% and "1.5" was
// "2%"; 0.0001 was accepted and shown as 0% while "light on 0" was
// refused. One rule now: a fraction from 0.01 to 1 or a percentage from 1%
// to 100%, in steps of 1%.
func TestParseLevel(t *testing.T) {
	for in, want := range map[string]float64{"0.5": 0.5, "1": 1, "1.0": 1, "50%": 0.5, "0.8": 0.8, "100%": 1, "5%": 0.05,
		"1%": 0.01, "0.01": 0.01, "0.07": 0.07, "7%": 0.07, "0.55": 0.55, "55.0%": 0.55, "5e-1": 0.5} {
		got, err := ParseLevel(in)
		require.NoError(t, err, in)
		assert.Equal(t, want, got, in)
		assert.True(t, recipe.ValidLightLevel(got), "%s: the recipe's rule", in)
	}
	for in, want := range map[string]string{
		"2":      `light: level "2" is more than 1: without % a level is a fraction (0.5 is half); L is a fraction from 0.01 to 1 (0.5) or a percentage from 1% to 100% (50%), in steps of 1%`,
		"1.5":    `light: level "1.5" is more than 1: without % a level is a fraction`,
		"80":     `light: level "80" is more than 1`,
		"101%":   `light: level "101%" is more than 100%: L is a fraction`,
		"0.0001": `light: level "0.0001" is below the lowest level, 0.01 (light off switches it off)`,
		"0":      `light: level "0" is below the lowest level, 0.01`,
		"0%":     `light: level "0%" is below the lowest level, 1%`,
		"0.5%":   `light: level "0.5%" is below the lowest level, 1%`,
		"-1":     `light: level "-1" is below the lowest level`,
		"0.555":  `light: level "0.555" is finer than 1%: give 0.55 or 0.56`,
		"50.5%":  `light: level "50.5%" is finer than 1%: give 50% or 51%`,
		"abc":    `light: level "abc" is not a number: L is a fraction from 0.01 to 1 (0.5) or a percentage from 1% to 100% (50%), in steps of 1%`,
		"NaN":    `light: level "NaN" is not a number`,
		"inf%":   `light: level "inf%" is not a number`,
		"1e400":  `light: level "1e400" is not a number`,
		"%":      `light: level "%" is not a number`,
		"50%%":   `light: level "50%%" is not a number`,
	} {
		_, err := ParseLevel(in)
		require.Error(t, err, in)
		assert.True(t, strings.HasPrefix(err.Error(), want), "%s:\n got %v\nwant %s", in, err, want)
	}
}

func TestHelpStatesTheLevelRule(t *testing.T) {
	assert.Contains(t, lookup("light").help, "a fraction from 0.01 to 1 (0.5) or a percentage from 1% to 100% (50%), in steps of 1%")
	assert.Contains(t, lookup("light").summary, "1% steps")
}

func TestEveryCommandHasAHandlerAndHelp(t *testing.T) {
	for _, c := range commands {
		assert.NotNil(t, handlers[c.name], c.name)
		assert.NotEmpty(t, c.summary, c.name)
		_, err := Parse("help " + c.name)
		assert.NoError(t, err, c.name)
	}
}
