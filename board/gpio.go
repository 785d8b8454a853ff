package board

import (
	"fmt"
	"strconv"
	"strings"
	"sync"

	"periph.io/x/conn/v3/driver/driverreg"
	"periph.io/x/host/v3/gpioioctl"
)

var initGPIO = sync.OnceValue(func() error {
	// Only the character-device driver is linked in: host.Init would also
	// load register-level drivers (bcm283x, allwinner) on ARM.
	_, err := driverreg.Init()
	return err
})

// OpenLine finds GPIO line (its name, or its offset as a decimal string) on
// chip (its label or device name, e.g. "pinctrl-bcm2711" or "gpiochip0").
// The error names what was asked for and lists what the kernel has.
func OpenLine(what, chip, line string) (*gpioioctl.GPIOLine, error) {
	if err := initGPIO(); err != nil {
		return nil, fmt.Errorf("board: %s: GPIO init: %w", what, err)
	}
	var found []string
	for _, c := range gpioioctl.Chips {
		found = append(found, fmt.Sprintf("%s (%s, %d lines)", c.Name(), c.Label(), c.LineCount()))
		if c.Name() != chip && c.Label() != chip && c.Path() != chip {
			continue
		}
		if l := c.ByName(line); l != nil {
			return l, nil
		}
		if n, err := strconv.Atoi(line); err == nil && n >= 0 && n < c.LineCount() {
			if l := c.ByNumber(n); l != nil {
				return l, nil
			}
		}
		var names []string
		for _, l := range c.Lines() {
			if l.Name() != "" {
				names = append(names, l.Name())
			}
		}
		return nil, fmt.Errorf("board: %s: no line %q on GPIO chip %s (%s); its named lines: %s",
			what, line, c.Name(), c.Label(), strings.Join(names, ", "))
	}
	if len(found) == 0 {
		return nil, fmt.Errorf("board: %s: GPIO chip %q not found: this machine has no GPIO chips (/dev/gpiochip*)", what, chip)
	}
	return nil, fmt.Errorf("board: %s: GPIO chip %q not found; chips present: %s", what, chip, strings.Join(found, "; "))
}
