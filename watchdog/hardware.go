package watchdog

import (
	"fmt"
	"sync"
	"time"
)

// DefaultHardwareDevice is the first hardware watchdog. The legacy
// /dev/watchdog is the same device, but as misc device 10:130 it cannot be
// allowed in the unit without allowing every misc device.
const DefaultHardwareDevice = "/dev/watchdog0"

// Hardware is an open hardware watchdog device. Opening it arms it: from
// then on the board resets unless Keepalive is called within Timeout, or the
// device is magic-closed (Close). A crash closes the file without the magic
// character, so the watchdog stays armed and resets the board unless the
// restarted daemon opens it again in time. Methods are safe for concurrent
// use.
type Hardware struct {
	path     string
	identity string
	timeout  time.Duration
	magic    bool // the driver honours the magic close

	mu  sync.Mutex
	dev device // nil once closed
}

// device is the open watchdog file; tests use a fake.
type device interface {
	keepalive() error
	magicClose() error // write 'V', then close
}

// Path returns the device path.
func (h *Hardware) Path() string { return h.path }

// Timeout returns the timeout the driver reports (whole seconds).
func (h *Hardware) Timeout() time.Duration { return h.timeout }

// Identity returns the driver's identity string, e.g. "i6300ESB timer".
func (h *Hardware) Identity() string { return h.identity }

// Keepalive pings the watchdog.
func (h *Hardware) Keepalive() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.dev == nil {
		return fmt.Errorf("watchdog: keepalive %s: device closed", h.path)
	}
	if err := h.dev.keepalive(); err != nil {
		return fmt.Errorf("watchdog: keepalive %s: %w", h.path, err)
	}
	return nil
}

// Close disarms the watchdog with the magic close (writes 'V', then closes)
// and is idempotent. If the driver does not honour the magic close
// (NOWAYOUT), the watchdog stays armed and Close says so in its error: the
// board will reset within Timeout unless it is opened again.
func (h *Hardware) Close() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.dev == nil {
		return nil
	}
	err := h.dev.magicClose()
	h.dev = nil
	if err != nil {
		return fmt.Errorf("watchdog: magic close %s: %w (the watchdog may still be armed)", h.path, err)
	}
	if !h.magic {
		return fmt.Errorf("watchdog: %s (%s) does not support the magic close: it stays armed and resets the board within %v", h.path, h.identity, h.timeout)
	}
	return nil
}
