package tomlfile

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type doc struct {
	Name string `toml:"name"`
	Box  struct {
		Size int `toml:"size"`
	} `toml:"box"`
	Item []struct {
		ID int `toml:"id"`
	} `toml:"item"`
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
}

func TestStrictErrors(t *testing.T) {
	var d doc
	_, err := Decode("d.toml", []byte("name = \"x\"\n[box]\nsize = \"big\"\ncolour = 1\n"), &d)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "d.toml:3: box.size:")

	_, err = Decode("d.toml", []byte("name = \"x\"\n[box]\ncolour = 1\n"), &d)
	assert.EqualError(t, err, "d.toml:3: box.colour: unknown key")

	_, err = Decode("d.toml", []byte("name = \n"), &d)
	assert.ErrorContains(t, err, "d.toml:1: syntax:")
}
