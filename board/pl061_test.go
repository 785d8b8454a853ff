package board

import (
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"periph.io/x/conn/v3/gpio"

	"github.com/waferd/waferd/illumination"
)

// TestGPIOPL061 uses a real GPIO controller's driver, not the simulator:
// the PL061 of qemu's arm64 virt machine (`make test-vm-arm64`), whose
// line 3 the kernel's gpio-keys driver holds as the power button. The
// light's enable line on line 0 is checked through the kernel's own view
// of the line (debugfs), and line 3 is refused naming the kernel driver
// that holds it.
//
// WAFERD_TEST_PL061 names the chip ("9030000.pl061"); it needs debugfs at
// /sys/kernel/debug and gpio_keys loaded. Without it the test skips.
func TestGPIOPL061(t *testing.T) {
	chip := os.Getenv("WAFERD_TEST_PL061")
	if chip == "" {
		t.Skip("WAFERD_TEST_PL061 not set: this test needs qemu's arm64 virt machine (`make test-vm-arm64`)")
	}
	l, err := OpenLine("light enable", chip, "0")
	require.NoError(t, err)
	defer func() { assert.NoError(t, l.Close()) }()
	light, err := illumination.New(illumination.Config{Enable: l})
	require.NoError(t, err)
	assert.Equal(t, "out lo", kernelView(t, ownConsumer()), "off after New")
	require.NoError(t, light.On(1))
	assert.Equal(t, "out hi", kernelView(t, ownConsumer()), "on")
	require.NoError(t, light.Off())
	assert.Equal(t, "out lo", kernelView(t, ownConsumer()), "off")

	key, err := OpenLine("stop button", chip, "3")
	require.NoError(t, err)
	defer func() { assert.NoError(t, key.Close()) }()
	err = key.In(gpio.PullNoChange, gpio.NoEdge)
	require.Error(t, err)
	t.Logf("line 3: %v", err)
	assert.Contains(t, err.Error(), `is busy: held by "GPIO Key Poweroff"`)
}

// kernelView returns the direction and value debugfs shows for the one
// line consumer holds, e.g. "out hi".
func kernelView(t *testing.T, consumer string) string {
	t.Helper()
	b, err := os.ReadFile("/sys/kernel/debug/gpio")
	require.NoError(t, err)
	for _, line := range strings.Split(string(b), "\n") {
		// " gpio-512 (                    |board.test@57       ) out hi "
		if _, rest, ok := strings.Cut(line, "|"+consumer); ok {
			if _, dv, ok := strings.Cut(rest, ")"); ok {
				return strings.Join(strings.Fields(dv)[:2], " ")
			}
		}
	}
	t.Fatalf("no line held by %s in /sys/kernel/debug/gpio:\n%s", consumer, b)
	return ""
}
