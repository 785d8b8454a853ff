package gem

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestTheReadmeListsEveryID: the README's compliance statement (its
// variable, event and alarm tables) says what the code does: every id with
// its name, units, data variables, category and text, and nothing else.
func TestTheReadmeListsEveryID(t *testing.T) {
	raw, err := os.ReadFile("../README.md")
	require.NoError(t, err)
	doc := string(raw)
	start := strings.Index(doc, "## The factory host (SECS/GEM)")
	require.GreaterOrEqual(t, start, 0)
	doc = doc[start:]
	rows := func(heading string) map[string][]string {
		i := strings.Index(doc, "### "+heading)
		require.GreaterOrEqual(t, i, 0, heading)
		section := doc[i+4:]
		if j := strings.Index(section, "\n### "); j >= 0 {
			section = section[:j]
		}
		out := map[string][]string{}
		for _, l := range strings.Split(section, "\n") {
			if !strings.HasPrefix(l, "| ") {
				continue
			}
			cells := strings.Split(strings.Trim(l, "|"), "|")
			for k := range cells {
				cells[k] = strings.TrimSpace(cells[k])
			}
			out[cells[0]] = cells
		}
		return out
	}

	vars := rows("Variables")
	for _, v := range variables {
		row, ok := vars[fmt.Sprint(v.id)]
		if assert.True(t, ok, "variable %d %s is not in the README", v.id, v.name) {
			assert.Equal(t, v.name, row[1], "variable %d", v.id)
			assert.Equal(t, v.units, row[3], "variable %d units", v.id)
		}
	}
	assert.Len(t, vars, len(variables)+2, "the README lists no other variable (+2: the header and its rule)")

	evs := rows("Events")
	for _, e := range events {
		row, ok := evs[fmt.Sprint(e.id)]
		if !assert.True(t, ok, "event %d %s is not in the README", e.id, e.name) {
			continue
		}
		assert.Equal(t, e.name, row[1], "event %d", e.id)
		var dvs []string
		for _, id := range e.dvs {
			v, _ := variableByID(id)
			dvs = append(dvs, v.name)
		}
		assert.Equal(t, strings.Join(dvs, ", "), row[3], "event %d's data variables", e.id)
	}
	assert.Len(t, evs, len(events)+2)

	als := rows("Alarms")
	for _, a := range alarms {
		row, ok := als[fmt.Sprint(a.id)]
		if assert.True(t, ok, "alarm %d is not in the README", a.id) {
			assert.True(t, strings.HasPrefix(row[1], fmt.Sprint(a.category)+" "), "alarm %d category: %q", a.id, row[1])
			assert.Equal(t, a.text, row[2], "alarm %d ALTX", a.id)
		}
	}
	assert.Len(t, als, len(alarms)+2)

	cmds := rows("Remote commands (S2F41)")
	for _, c := range []string{"`PP-SELECT`", "`START`", "`STOP`", "`ABORT`"} {
		assert.Contains(t, cmds, c)
	}
	// Every message the equipment answers is named in the statement.
	for sf := range routes {
		assert.Contains(t, doc, fmt.Sprintf("S%dF%d", sf[0], sf[1]), "S%dF%d is not in the README", sf[0], sf[1])
	}
}
