package watchdog

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// DefaultThermalZone is the board's first thermal zone.
const DefaultThermalZone = "/sys/class/thermal/thermal_zone0/temp"

// ThermalZone returns a sensor read function for a Linux thermal zone file,
// which holds millidegrees Celsius; the function returns degrees Celsius.
// An empty path means DefaultThermalZone.
func ThermalZone(path string) func() (float64, error) {
	if path == "" {
		path = DefaultThermalZone
	}
	return func() (float64, error) {
		b, err := os.ReadFile(path)
		if err != nil {
			return 0, fmt.Errorf("watchdog: thermal zone: %w", err)
		}
		milli, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("watchdog: thermal zone %s: %w", path, err)
		}
		return float64(milli) / 1000, nil
	}
}
