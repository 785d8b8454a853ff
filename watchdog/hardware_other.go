//go:build !linux

package watchdog

import (
	"errors"
	"fmt"
	"time"
)

// OpenHardware is only implemented on Linux.
func OpenHardware(path string, timeout time.Duration) (*Hardware, error) {
	return nil, fmt.Errorf("watchdog: open %s: %w", path, errors.ErrUnsupported)
}
