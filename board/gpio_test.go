package board

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestOpenLineNamesWhatIsMissing(t *testing.T) {
	_, err := OpenLine("light enable", "no-such-chip", "GPIO17")
	require.Error(t, err)
	assert.Contains(t, err.Error(), `board: light enable: GPIO chip "no-such-chip" not found`)
}
