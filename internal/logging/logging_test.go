package logging

import (
	"bytes"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestJournalPriorities(t *testing.T) {
	var buf bytes.Buffer
	log := New(&buf, Options{Level: Debug, Journal: true}).For("grbl")
	log.Errorf("link lost: %v", "EOF")
	log.Warnf("w")
	log.Noticef("n")
	log.Infof("i")
	log.Debugf("d")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	require.Len(t, lines, 5)
	for i, want := range []string{"<3>[grbl] ERROR  link lost: EOF", "<4>", "<5>", "<6>", "<7>"} {
		assert.True(t, strings.HasPrefix(lines[i], want), "line %d = %q, want prefix %q", i, lines[i], want)
	}
	assert.NotContains(t, buf.String(), "\x1b[", "no colours into the journal")
}

func TestPlainNoColourAndLevelFilter(t *testing.T) {
	var buf bytes.Buffer
	log := New(&buf, Options{Level: Info}).For("runner")
	log.Debugf("hidden")
	log.Infof("site %d/%d", 3, 10)
	out := buf.String()
	assert.NotContains(t, out, "hidden")
	assert.Contains(t, out, "[runner] INFO  site 3/10")
	assert.NotContains(t, out, "\x1b[")
	assert.NotContains(t, out, "<6>")
}

func TestFormatsWithFmtNotSpew(t *testing.T) {
	var buf bytes.Buffer
	type pt struct{ X, Y int }
	New(&buf, Options{Level: Info}).For("x").Infof("%v", pt{1, 2})
	assert.Contains(t, buf.String(), "{1 2}")
}

func TestParseLevel(t *testing.T) {
	l, err := ParseLevel("warning")
	require.NoError(t, err)
	assert.Equal(t, Warn, l)
	_, err = ParseLevel("loud")
	assert.ErrorContains(t, err, `unknown level "loud"`)
}

func TestRingKeepsTheLastLines(t *testing.T) {
	var buf bytes.Buffer
	root := New(&buf, Options{Level: Warn})
	ring := NewRing(3)
	root.Tee(ring, Info)
	log := root.For("console")
	for i := range 5 {
		log.Infof("line %d", i)
	}
	log.Warnf("multi\nline")
	lines := ring.Lines(0)
	require.Len(t, lines, 3)
	assert.Contains(t, lines[0], "line 4")
	assert.Contains(t, lines[1], "[console] WARN  multi")
	assert.Equal(t, "line", lines[2])
	assert.Len(t, ring.Lines(1), 1)
	assert.Equal(t, uint64(7), ring.Total())
	assert.NotContains(t, buf.String(), "line 4", "stderr keeps its own level")

	j := New(&buf, Options{Level: Info, Journal: true})
	jr := NewRing(4)
	j.Tee(jr, Info)
	j.For("x").Infof("stamped")
	require.Len(t, jr.Lines(0), 1)
	assert.Regexp(t, `^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3} \[x\] INFO  stamped$`, jr.Lines(0)[0])
}
