package config

import (
	"net"
	"strconv"
	"time"
)

// GEM is the factory host's interface: SECS/GEM over HSMS-SS, waferd
// listening (passive). Times are milliseconds; the timers' defaults and
// upper bounds are SEMI E37's.
type GEM struct {
	Enabled bool `toml:"enabled"`
	// Listen is host:port, e.g. "0.0.0.0:5000".
	Listen string `toml:"listen"`
	// DeviceID is the HSMS session id, 0–32767.
	DeviceID int `toml:"device_id"`
	T3MS     int `toml:"t3_ms"`
	T5MS     int `toml:"t5_ms"`
	T6MS     int `toml:"t6_ms"`
	T7MS     int `toml:"t7_ms"`
	T8MS     int `toml:"t8_ms"`
	// LinktestMS is the interval of the equipment's linktests on an idle
	// link; 0: none.
	LinktestMS int `toml:"linktest_ms"`
	// EstablishRetryMS is E30's establish-communications timeout.
	EstablishRetryMS int `toml:"establish_retry_ms"`
	// InitialControl is "equipment-offline", "host-offline" or "online".
	InitialControl string `toml:"initial_control"`
	// OnlineMode is the online sub-state at start: "remote" or "local".
	OnlineMode string `toml:"online_mode"`
}

// defaultGEM is [gem]'s defaults.
func defaultGEM() GEM {
	return GEM{Listen: "0.0.0.0:5000", T3MS: 45000, T5MS: 10000, T6MS: 5000, T7MS: 10000, T8MS: 5000,
		LinktestMS: 30000, EstablishRetryMS: 10000, InitialControl: "host-offline", OnlineMode: "remote"}
}

// validate checks [gem] (also when it is not enabled: a bad value waits
// for no one to switch it on).
func (g GEM) validate(bad func(key, format string, args ...any)) {
	host, port, err := net.SplitHostPort(g.Listen)
	if n, perr := strconv.Atoi(port); err != nil || perr != nil || n < 0 || n > 65535 {
		bad("gem.listen", "want host:port such as 0.0.0.0:5000 (got %q)", g.Listen)
	} else if host != "" && net.ParseIP(host) == nil && host != "localhost" {
		bad("gem.listen", "the host must be an IP address, or empty for every address (got %q)", host)
	}
	if g.DeviceID < 0 || g.DeviceID > 0x7fff {
		bad("gem.device_id", "must be in [0, 32767] (got %d)", g.DeviceID)
	}
	// E37 table 10: the timers' ranges (seconds); below a second is
	// accepted for tests on loopback.
	for _, t := range []struct {
		key string
		ms  int
		max time.Duration
	}{
		{"gem.t3_ms", g.T3MS, 120 * time.Second}, {"gem.t5_ms", g.T5MS, 240 * time.Second},
		{"gem.t6_ms", g.T6MS, 240 * time.Second}, {"gem.t7_ms", g.T7MS, 240 * time.Second},
		{"gem.t8_ms", g.T8MS, 120 * time.Second},
	} {
		if t.ms <= 0 || MS(t.ms) > t.max {
			bad(t.key, "must be in (0, %d] ms (SEMI E37; got %d)", t.max.Milliseconds(), t.ms)
		}
	}
	if g.LinktestMS < 0 {
		bad("gem.linktest_ms", "must be ≥ 0 (0: no linktests; got %d)", g.LinktestMS)
	}
	if g.EstablishRetryMS <= 0 || MS(g.EstablishRetryMS) > 240*time.Second {
		bad("gem.establish_retry_ms", "must be in (0, 240000] ms (got %d)", g.EstablishRetryMS)
	}
	switch g.InitialControl {
	case "equipment-offline", "host-offline", "online":
	default:
		bad("gem.initial_control", `must be "equipment-offline", "host-offline" or "online" (got %q)`, g.InitialControl)
	}
	if g.OnlineMode != "remote" && g.OnlineMode != "local" {
		bad("gem.online_mode", `must be "remote" or "local" (got %q)`, g.OnlineMode)
	}
}
