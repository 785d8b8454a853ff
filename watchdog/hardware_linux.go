package watchdog

import (
	"bytes"
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// OpenHardware opens and arms the hardware watchdog at path (default
// DefaultHardwareDevice, /dev/watchdog0), sets its timeout (whole seconds;
// 0 keeps the driver's, which may also refuse or cap a value) and pings it
// once. On any error after the open the device is magic-closed again, so a
// failed open never leaves the board armed. If the device is busy, systemd
// (RuntimeWatchdogSec= in system.conf) or a watchdog daemon probably owns
// it: the device has a single opener.
func OpenHardware(path string, timeout time.Duration) (*Hardware, error) {
	if path == "" {
		path = DefaultHardwareDevice
	}
	if timeout < 0 || timeout%time.Second != 0 || timeout > time.Duration(1<<31-1)*time.Second {
		return nil, fmt.Errorf("watchdog: %s: timeout %v is not a whole number of seconds", path, timeout)
	}
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, openError(path, err)
	}
	dev := fdDevice(fd)
	h, err := setUp(path, fd, timeout)
	if err != nil {
		return nil, errors.Join(err, dev.magicClose())
	}
	h.dev = dev
	return h, nil
}

func openError(path string, err error) error {
	if errors.Is(err, unix.EBUSY) {
		return fmt.Errorf("watchdog: open %s: %w: it has a single opener, and systemd's RuntimeWatchdogSec= (system.conf) or a watchdog daemon probably owns it; leave the hardware watchdog to systemd or disable that owner", path, err)
	}
	return fmt.Errorf("watchdog: open %s: %w", path, err)
}

func setUp(path string, fd int, timeout time.Duration) (*Hardware, error) {
	info, err := unix.IoctlGetWatchdogInfo(fd)
	if err != nil {
		return nil, fmt.Errorf("watchdog: %s: get info (not a watchdog device?): %w", path, err)
	}
	h := &Hardware{
		path:     path,
		identity: string(bytes.TrimRight(info.Identity[:], "\x00")),
		magic:    info.Options&unix.WDIOF_MAGICCLOSE != 0,
	}
	if timeout > 0 {
		if info.Options&unix.WDIOF_SETTIMEOUT == 0 {
			return nil, fmt.Errorf("watchdog: %s (%s) cannot set its timeout; configure timeout 0 to use the driver's", path, h.identity)
		}
		if err := unix.IoctlSetPointerInt(fd, unix.WDIOC_SETTIMEOUT, int(timeout/time.Second)); err != nil {
			return nil, fmt.Errorf("watchdog: %s (%s): set timeout %v: %w", path, h.identity, timeout, err)
		}
	}
	secs, err := unix.IoctlGetInt(fd, unix.WDIOC_GETTIMEOUT)
	switch {
	case err == nil && secs > 0:
		h.timeout = time.Duration(secs) * time.Second
	case timeout > 0:
		h.timeout = timeout
	default:
		return nil, fmt.Errorf("watchdog: %s (%s): cannot read its timeout (%v); configure one", path, h.identity, err)
	}
	if err := unix.IoctlWatchdogKeepalive(fd); err != nil {
		return nil, fmt.Errorf("watchdog: %s (%s): keepalive: %w", path, h.identity, err)
	}
	return h, nil
}

type fdDevice int

func (d fdDevice) keepalive() error { return unix.IoctlWatchdogKeepalive(int(d)) }

func (d fdDevice) magicClose() error {
	_, werr := unix.Write(int(d), []byte{'V'})
	return errors.Join(werr, unix.Close(int(d)))
}
