package config

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"
	"strings"

	"github.com/waferd/waferd/internal/tomlfile"
)

// defaultThermalZone is the board's first thermal zone (the example's).
const defaultThermalZone = "/sys/class/thermal/thermal_zone0/temp"

// checkPaths checks the local files and directories the configuration
// names that are there from boot or not at all, so that one that cannot
// work stops the daemon at start-up (exit status 2) instead of faulting it
// later: the thermal zone reads as a temperature, the hardware watchdog
// device is a character device (it is not opened: that would arm it), and
// the recipe directory, if it exists, is a directory. Nothing is created,
// written or opened but the thermal zone. Devices that can be plugged in
// later (the stage's serial port, the camera, GPIO chips) are left to the
// board, whose failures are retried; the results directory is created by
// the results store (and --data may replace it).
func (c *Config) checkPaths() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, c.file.Errorf(key, format, args...))
	}
	if p := c.Watchdog.ThermalZone; p != "" {
		if err := readsAsTemperature(p); err != nil {
			bad("watchdog.thermal_zone", "%v: give the board's zone (ls /sys/class/thermal/) or \"\" not to watch the temperature", err)
		}
	}
	if p := c.Watchdog.HardwareDevice; p != "" && p != SimDevice {
		fi, err := os.Stat(p)
		switch {
		case err != nil:
			bad("watchdog.hardware_device", "%v: give a /dev/watchdogN that exists (ls /dev/watchdog*) or \"\" for none", pathErr(err))
		case fi.Mode()&fs.ModeCharDevice == 0:
			bad("watchdog.hardware_device", "%s is not a character device: give a /dev/watchdogN (ls /dev/watchdog*) or \"\" for none", p)
		}
	}
	if p := c.Data.Recipes; p != "" {
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
			bad("data.recipes", "%s is not a directory", p)
		}
	}
	if err := tomlfile.Join(errs); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	return nil
}

// readsAsTemperature reads the thermal zone file at path as the watchdog
// does: millidegrees Celsius, a decimal integer. A file that is not
// regular (sysfs attributes are) is not opened: a FIFO would block and a
// device might never end.
func readsAsTemperature(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return pathErr(err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a thermal zone file (not a regular file)", path)
	}
	f, err := os.Open(path)
	if err != nil {
		return pathErr(err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 64))
	if err != nil {
		return fmt.Errorf("%s: %w", path, errors.Unwrap(err))
	}
	text := strings.TrimSpace(string(b))
	milli, err := strconv.ParseInt(text, 10, 64)
	if err != nil || milli < -273_150 || milli > 1_000_000 {
		if len(text) > 20 {
			text = text[:20] + "…"
		}
		return fmt.Errorf("%s does not read as a temperature in millidegrees Celsius (read %q)", path, text)
	}
	return nil
}

// pathErr words an error of os.Stat or os.Open as "PATH: does not exist".
func pathErr(err error) error {
	var pe *fs.PathError
	if !errors.As(err, &pe) {
		return err
	}
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%s does not exist", pe.Path)
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("%s cannot be read by this user (permission denied)", pe.Path)
	}
	return fmt.Errorf("%s: %v", pe.Path, pe.Err)
}
