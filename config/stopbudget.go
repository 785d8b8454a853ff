package config

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/waferd/waferd/systemd"
)

// StopOverhead is the part of a safe stop that follows the stage's feed
// hold and soft reset, as systemd/waferd.service itemizes it: the camera
// stream off (≤ 1 s), the results flushed (≤ 2 s), the devices released
// and the exit (≤ 1 s).
const StopOverhead = 4 * time.Second

// TimeoutStop is the unit's TimeoutStopSec= (systemd/waferd.service, as
// embedded in package systemd): systemd kills the daemon that long after
// SIGTERM, whatever its safe stop is doing. hold_timeout_ms +
// reset_timeout_ms + StopOverhead must stay below it.
var TimeoutStop = unitSeconds(systemd.Unit, "TimeoutStopSec")

// checkStopBudget checks that a safe stop fits in the unit's TimeoutStopSec
// with the configured hold and reset timeouts.
func (c *Config) checkStopBudget(bad func(key, format string, args ...any)) {
	hold, reset := c.Runner.HoldTimeoutMS, c.Runner.ResetTimeoutMS
	if hold <= 0 || reset <= 0 || hold > maxTimeoutMS || reset > maxTimeoutMS {
		return // reported on its own
	}
	total := MS(hold) + MS(reset) + StopOverhead
	if total < TimeoutStop {
		return
	}
	// Blame the key that was written (the hold, if both were).
	key := "runner.hold_timeout_ms"
	if c.file.Line(key) == 0 && c.file.Line("runner.reset_timeout_ms") > 0 {
		key = "runner.reset_timeout_ms"
	}
	bad(key, "a safe stop could take hold_timeout_ms %d + reset_timeout_ms %d + %v (camera, results, exit) = %v, not below the unit's TimeoutStopSec=%v after which systemd kills the daemon: keep the sum under %v",
		hold, reset, StopOverhead, total, TimeoutStop, TimeoutStop-StopOverhead)
}

// unitSeconds returns the time span of setting key in the unit file text:
// a number of seconds, with or without "s" ("20s", "20"). It panics if the
// setting is missing or in another form: the unit is part of the build,
// and config's tests load it.
func unitSeconds(unit, key string) time.Duration {
	for line := range strings.Lines(unit) {
		v, ok := strings.CutPrefix(strings.TrimSpace(line), key+"=")
		if !ok {
			continue
		}
		n, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), "s"))
		if err != nil || n <= 0 {
			panic(fmt.Sprintf("config: waferd.service: %s=%s is not a number of seconds", key, v))
		}
		return time.Duration(n) * time.Second
	}
	panic("config: waferd.service has no " + key + "=")
}
