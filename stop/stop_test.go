package stop

import (
	"context"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestReasonsAreOrdered(t *testing.T) {
	order := []Reason{Operator, Host, Button, Shutdown, Fault, Watchdog, Abort, EStop}
	for i := 1; i < len(order); i++ {
		assert.Less(t, order[i-1], order[i])
	}
	for _, r := range order {
		p, err := ParseReason(r.String())
		require.NoError(t, err)
		assert.Equal(t, r, p)
	}
	_, err := ParseReason("none")
	assert.Error(t, err)
	assert.False(t, Shutdown.Aborts())
	assert.True(t, Fault.Aborts())
	assert.True(t, EStop.Immediate())
	assert.True(t, Abort.Immediate())
	assert.True(t, Abort.Latches())
	assert.False(t, Host.Aborts())
	assert.False(t, Host.Latches())
	assert.False(t, Watchdog.Immediate())
	assert.True(t, Watchdog.Latches())
	assert.False(t, Button.Latches())
}

func TestCauseTravelsThroughContext(t *testing.T) {
	ctx, cancel := context.WithCancelCause(context.Background())
	cancel(New(Button, "GPIO27"))
	c, ok := FromContext(ctx)
	require.True(t, ok)
	assert.Equal(t, Button, c.Reason)
	assert.Equal(t, "stopped: button (GPIO27)", c.Error())
	wrapped := fmt.Errorf("grbl: move: %w", context.Cause(ctx))
	c, ok = As(wrapped)
	require.True(t, ok)
	assert.Equal(t, "GPIO27", c.Detail)
	_, ok = FromContext(context.Background())
	assert.False(t, ok)
}
