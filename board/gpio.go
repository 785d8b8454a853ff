package board

import (
	"cmp"
	"errors"
	"fmt"
	"os"
	"slices"
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
// The error names what was asked for and lists what the kernel has: the
// chips, or the chip's line names. The line is not requested from the
// kernel yet: its first In or Out does that (and fails if another process
// holds it). The chips are those present the first time OpenLine is called
// in this process.
//
// Line names are the kernel's, read from the chip: periph renames a line
// whose name another chip also has ("gpiochip1-GPIO17"), which would make
// a configured name match on one chip and not on the other.
func OpenLine(what, chip, line string) (*Line, error) {
	if err := initGPIO(); err != nil {
		return nil, fmt.Errorf("board: %s: GPIO init: %w", what, err)
	}
	var found []string
	for _, c := range gpioioctl.Chips {
		found = append(found, fmt.Sprintf("%s (%s, %d lines)", c.Name(), c.Label(), c.LineCount()))
		if c.Name() != chip && c.Label() != chip && c.Path() != chip {
			continue
		}
		f, err := os.Open(c.Path())
		if err != nil {
			return nil, fmt.Errorf("board: %s: GPIO chip %s: %w", what, c.Name(), err)
		}
		l := &Line{chip: f}
		names := make([]string, c.LineCount())
		var named []string
		for i := range names {
			if names[i], err = l.kernelName(i); err != nil {
				return nil, errors.Join(fmt.Errorf("board: %s: GPIO chip %s: line %d: %w", what, c.Name(), i, err), f.Close())
			}
			if names[i] != "" {
				named = append(named, names[i])
			}
		}
		n := slices.Index(names, line)
		if i, err := strconv.Atoi(line); n < 0 && err == nil && i >= 0 && i < c.LineCount() {
			n = i
		}
		if n >= 0 && n < len(c.Lines()) {
			l.GPIOLine = c.Lines()[n]
			l.desc = c.Name() + "/" + cmp.Or(names[n], strconv.Itoa(n))
			return l, nil
		}
		has := "its named lines: " + strings.Join(named, ", ")
		if len(named) == 0 {
			has = "it has no named lines"
		}
		return nil, errors.Join(fmt.Errorf("board: %s: no line %q on GPIO chip %s (%s); %s (or an offset 0–%d)",
			what, line, c.Name(), c.Label(), has, c.LineCount()-1), f.Close())
	}
	if len(found) == 0 {
		return nil, fmt.Errorf("board: %s: GPIO chip %q not found: this machine has no GPIO chips (/dev/gpiochip*)", what, chip)
	}
	return nil, fmt.Errorf("board: %s: GPIO chip %q not found; chips present: %s", what, chip, strings.Join(found, "; "))
}
