// Package systemd holds the files that install waferd as a systemd service,
// embedded so that packaging and tests use exactly what is in the
// repository:
//
//	waferd.service        the unit (/usr/lib/systemd/system/waferd.service)
//	waferd.sysusers.conf  the waferd user and device groups (/usr/lib/sysusers.d/waferd.conf)
//	waferd.tmpfiles.conf  state and config directories (/usr/lib/tmpfiles.d/waferd.conf)
//	waferd.udev.rules     GPIO chip permissions (/usr/lib/udev/rules.d/60-waferd.rules)
//	waferd.toml           the commented example configuration (/etc/waferd/waferd.toml)
//
// The tests check the unit with systemd-analyze verify and security, and the
// sysusers and tmpfiles entries with systemd-sysusers and systemd-tmpfiles
// on a scratch root; they need the Debian package "systemd".
package systemd

import "embed"

// Files holds every file listed above, by its name in this directory.
//
//go:embed waferd.service waferd.sysusers.conf waferd.tmpfiles.conf waferd.udev.rules waferd.toml
var Files embed.FS

// The files one by one.
var (
	//go:embed waferd.service
	Unit string
	//go:embed waferd.sysusers.conf
	Sysusers string
	//go:embed waferd.tmpfiles.conf
	Tmpfiles string
	//go:embed waferd.udev.rules
	UdevRules string
	//go:embed waferd.toml
	ExampleConfig string
)

// Install lists where each file goes on the target, relative to the root
// (DESTDIR), with its mode.
var Install = []struct {
	File, Path string
	Mode       uint32
}{
	{"waferd.service", "usr/lib/systemd/system/waferd.service", 0o644},
	{"waferd.sysusers.conf", "usr/lib/sysusers.d/waferd.conf", 0o644},
	{"waferd.tmpfiles.conf", "usr/lib/tmpfiles.d/waferd.conf", 0o644},
	{"waferd.udev.rules", "usr/lib/udev/rules.d/60-waferd.rules", 0o644},
	{"waferd.toml", "etc/waferd/waferd.toml", 0o644},
}
