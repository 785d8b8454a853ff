package inspection

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestTransitions(t *testing.T) {
	ok := [][2]State{
		{Idle, Running}, {Running, Stopping}, {Running, Idle}, {Stopping, Idle},
		{Stopping, Faulted}, {Stopping, EStop}, {Idle, Faulted}, {Idle, EStop},
		{Faulted, Idle}, {Faulted, EStop}, {EStop, Idle},
	}
	for _, tr := range ok {
		assert.NoError(t, transition(tr[0], tr[1]), "%s → %s", tr[0], tr[1])
	}
	bad := [][2]State{
		{Idle, Stopping}, {Faulted, Running}, {EStop, Running}, {EStop, Faulted},
		{Stopping, Running}, {Running, Faulted}, {Idle, Completed},
	}
	for _, tr := range bad {
		assert.ErrorContains(t, transition(tr[0], tr[1]), "illegal transition", "%s → %s", tr[0], tr[1])
	}
	assert.True(t, Faulted.Latched())
	assert.False(t, Aborted.Latched())
	assert.True(t, Aborted.Outcome())
	assert.Equal(t, "estop", EStop.String())
}
