package systemd

import (
	"bufio"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pelletier/go-toml/v2"
)

// The tests need the Debian package "systemd" (systemd-analyze,
// systemd-sysusers, systemd-tmpfiles); without it they skip. udevadm verify
// (systemd ≥ 254, package "udev") is used when present.

func tool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("%s not found (install the Debian package systemd): %v", name, err)
	}
	return p
}

// tolerated are messages from systemd-analyze that depend on the machine
// running the test, not on the unit.
var tolerated = regexp.MustCompile(`(?i)(user|group)\b.*(does not exist|doesn't exist|not found|unknown)|Failed to parse system call`)

// unitDir writes the unit into a temporary directory with ExecStart
// pointing at an executable there (verify insists that it exists) and
// returns the unit's path.
func unitDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	exe := filepath.Join(dir, "waferd")
	if err := os.WriteFile(exe, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	const orig = "ExecStart=/usr/bin/waferd "
	if strings.Count(Unit, orig) != 1 {
		t.Fatalf("the unit has no single %q line", orig)
	}
	path := filepath.Join(dir, "waferd.service")
	if err := os.WriteFile(path, []byte(strings.Replace(Unit, orig, "ExecStart="+exe+" ", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func run(t *testing.T, dir string, name string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "SYSTEMD_COLORS=0", "SYSTEMD_PAGER=", "SYSTEMD_LOG_COLOR=0", "LC_ALL=C")
	var o, e strings.Builder
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.String(), e.String(), err
}

// complaints returns the lines of out that are about our unit and not
// tolerated.
func complaints(out string) []string {
	var bad []string
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "waferd") && !tolerated.MatchString(l) {
			bad = append(bad, l)
		}
	}
	return bad
}

func TestUnitVerify(t *testing.T) {
	sa := tool(t, "systemd-analyze")
	path := unitDir(t)
	stdout, stderr, err := run(t, filepath.Dir(path), sa, "verify", "--man=no", path)
	if err != nil {
		t.Fatalf("systemd-analyze verify %s: %v\n%s%s", path, err, stdout, stderr)
	}
	if bad := complaints(stdout + stderr); len(bad) > 0 {
		t.Fatalf("systemd-analyze verify warns about the unit:\n%s", strings.Join(bad, "\n"))
	}
}

var exposureRE = regexp.MustCompile(`Overall exposure level for waferd\.service: ([0-9]+(?:\.[0-9]+)?)`)

// MaxExposure is the highest acceptable `systemd-analyze security` exposure.
const MaxExposure = 1.0

func TestUnitSecurity(t *testing.T) {
	sa := tool(t, "systemd-analyze")
	path := unitDir(t)
	stdout, stderr, err := run(t, filepath.Dir(path), sa, "security", "--offline=true", "--no-pager", path)
	if err != nil {
		t.Fatalf("systemd-analyze security --offline=true %s: %v\n%s%s", path, err, stdout, stderr)
	}
	if bad := complaints(stderr); len(bad) > 0 {
		t.Fatalf("systemd-analyze security warns about the unit:\n%s", strings.Join(bad, "\n"))
	}
	m := exposureRE.FindStringSubmatch(stdout)
	if m == nil {
		t.Fatalf("no overall exposure level in:\n%s", stdout)
	}
	exposure, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("systemd-analyze security --offline=true waferd.service: overall exposure %.1f", exposure)
	if exposure > MaxExposure {
		t.Fatalf("exposure %.1f > %.1f; findings:\n%s", exposure, MaxExposure, openFindings(stdout))
	}
}

func openFindings(out string) string {
	var l []string
	for _, s := range strings.Split(out, "\n") {
		if strings.HasPrefix(s, "✗") {
			l = append(l, strings.Join(strings.Fields(s), " "))
		}
	}
	return strings.Join(l, "\n")
}

// unit is a parsed unit file: section → key → values in order.
type unit map[string]map[string][]string

func parseUnit(t *testing.T, text string) unit {
	t.Helper()
	u := unit{}
	section := ""
	sc := bufio.NewScanner(strings.NewReader(text))
	for n := 1; sc.Scan(); n++ {
		l := strings.TrimSpace(sc.Text())
		switch {
		case l == "" || l[0] == '#' || l[0] == ';':
		case l[0] == '[' && l[len(l)-1] == ']':
			section = l[1 : len(l)-1]
			u[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(l, "=")
			if !ok || section == "" || strings.HasSuffix(l, `\`) {
				t.Fatalf("waferd.service:%d: cannot parse %q", n, l)
			}
			u[section][k] = append(u[section][k], v)
		}
	}
	return u
}

func (u unit) get(t *testing.T, key string) string {
	t.Helper()
	v := u["Service"][key]
	if len(v) == 0 {
		t.Fatalf("waferd.service: no %s=", key)
	}
	return v[len(v)-1]
}

func seconds(t *testing.T, key, v string) time.Duration {
	t.Helper()
	d, err := time.ParseDuration(v)
	if err != nil {
		t.Fatalf("waferd.service: %s=%s: %v", key, v, err)
	}
	return d
}

type config struct {
	Runner struct {
		HoldTimeoutMS  int `toml:"hold_timeout_ms"`
		ResetTimeoutMS int `toml:"reset_timeout_ms"`
	}
	Button, EStop struct {
		Pull       string
		DebounceMS int `toml:"debounce_ms"`
	}
	Watchdog struct {
		StageHeartbeatMS  int    `toml:"stage_heartbeat_ms"`
		CameraHeartbeatMS int    `toml:"camera_heartbeat_ms"`
		HardwareDevice    string `toml:"hardware_device"`
		HardwareTimeoutS  int    `toml:"hardware_timeout_s"`
	}
	Data struct{ Dir string }
	Log  struct{ Level string }
}

// TestUnitSettings checks the settings the issue asks for, and that the
// unit and the example configuration agree.
func TestUnitSettings(t *testing.T) {
	u := parseUnit(t, Unit)
	for key, want := range map[string]string{
		"Type":                  "notify",
		"ExecStart":             "/usr/bin/waferd serve --config /etc/waferd/waferd.toml",
		"Restart":               "on-failure",
		"User":                  "waferd",
		"DevicePolicy":          "closed",
		"PrivateDevices":        "no",
		"PrivateUsers":          "no",
		"StateDirectory":        "waferd",
		"ProtectSystem":         "strict",
		"NoNewPrivileges":       "yes",
		"CapabilityBoundingSet": "",
		"AmbientCapabilities":   "",
		"UMask":                 "0027",
	} {
		if got := u.get(t, key); got != want {
			t.Errorf("waferd.service: %s=%s, want %s", key, got, want)
		}
	}
	groups := strings.Fields(u.get(t, "SupplementaryGroups"))
	for _, g := range []string{"dialout", "video", "gpio"} {
		if !slices.Contains(groups, g) {
			t.Errorf("waferd.service: SupplementaryGroups= lacks %s", g)
		}
	}

	var cfg config
	if err := toml.Unmarshal([]byte(ExampleConfig), &cfg); err != nil {
		t.Fatalf("waferd.toml: %v", err)
	}
	// The safe stop fits in TimeoutStopSec with the 4 s the unit's comment
	// counts for camera, results and exit.
	stopTO := seconds(t, "TimeoutStopSec", u.get(t, "TimeoutStopSec"))
	safeStop := time.Duration(cfg.Runner.HoldTimeoutMS+cfg.Runner.ResetTimeoutMS)*time.Millisecond + 4*time.Second
	if safeStop >= stopTO {
		t.Errorf("safe stop %v (hold %d ms + reset %d ms + 4 s) does not fit TimeoutStopSec=%v", safeStop, cfg.Runner.HoldTimeoutMS, cfg.Runner.ResetTimeoutMS, stopTO)
	}
	// systemd gives a stale heartbeat's safe stop time to finish before it
	// kills the service.
	wdSec := seconds(t, "WatchdogSec", u.get(t, "WatchdogSec"))
	longest := time.Duration(max(cfg.Watchdog.StageHeartbeatMS, cfg.Watchdog.CameraHeartbeatMS)) * time.Millisecond
	if longest+safeStop >= wdSec {
		t.Errorf("WatchdogSec=%v leaves no room for a heartbeat limit (%v) plus the safe stop (%v)", wdSec, longest, safeStop)
	}
	if want := "/var/lib/" + u.get(t, "StateDirectory"); cfg.Data.Dir != want {
		t.Errorf("waferd.toml [data] dir = %q, want the unit's StateDirectory %s", cfg.Data.Dir, want)
	}
	if d := cfg.Watchdog.HardwareDevice; d != "" && !regexp.MustCompile(`^/dev/watchdog[0-9]+$`).MatchString(d) {
		t.Errorf("waferd.toml hardware_device %q is not a /dev/watchdogN that DeviceAllow=char-watchdog permits", d)
	}
	if restart := seconds(t, "RestartSec", u.get(t, "RestartSec")); time.Duration(cfg.Watchdog.HardwareTimeoutS)*time.Second <= restart+seconds(t, "TimeoutStartSec", u.get(t, "TimeoutStartSec")) {
		t.Errorf("hardware_timeout_s = %d does not outlast a restart", cfg.Watchdog.HardwareTimeoutS)
	}
	for _, in := range []struct {
		name       string
		pull       string
		debounceMS int
	}{{"button", cfg.Button.Pull, cfg.Button.DebounceMS}, {"estop", cfg.EStop.Pull, cfg.EStop.DebounceMS}} {
		if !slices.Contains([]string{"up", "down", "float", "keep"}, in.pull) || in.debounceMS <= 0 {
			t.Errorf("waferd.toml [%s]: pull %q, debounce_ms %d", in.name, in.pull, in.debounceMS)
		}
	}
	if !slices.Contains([]string{"error", "warning", "notice", "info", "debug"}, cfg.Log.Level) {
		t.Errorf("waferd.toml [log] level %q", cfg.Log.Level)
	}
}

// TestExampleConfigDocumented checks that the example has the expected
// sections and that every key has a comment above it (directly, or above
// the group of keys it belongs to).
func TestExampleConfigDocumented(t *testing.T) {
	var m map[string]map[string]any
	if err := toml.Unmarshal([]byte(ExampleConfig), &m); err != nil {
		t.Fatalf("waferd.toml: %v", err)
	}
	var sections []string
	for s := range m {
		sections = append(sections, s)
	}
	slices.Sort(sections)
	want := []string{"button", "camera", "console", "data", "estop", "gem", "light", "log", "publish", "runner", "sim", "stage", "watchdog"}
	if !slices.Equal(sections, want) {
		t.Errorf("waferd.toml sections %v, want %v", sections, want)
	}
	documented := false
	for n, l := range strings.Split(ExampleConfig, "\n") {
		l = strings.TrimSpace(l)
		switch {
		case strings.HasPrefix(l, "#"):
			documented = true
		case l == "" || strings.HasPrefix(l, "["):
			documented = false
		case !documented:
			t.Errorf("waferd.toml:%d: %q has no comment", n+1, l)
		}
	}
}

// ignoring matches the warnings of systemd-sysusers and systemd-tmpfiles
// about lines they skip.
var ignoring = regexp.MustCompile(`(?i)ignoring|invalid|unknown|failed`)

// TestSysusersTmpfiles applies the sysusers and tmpfiles entries to a
// scratch root.
func TestSysusersTmpfiles(t *testing.T) {
	sysusers := tool(t, "systemd-sysusers")
	tmpfiles := tool(t, "systemd-tmpfiles")
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	conf := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	if stdout, stderr, err := run(t, dir, sysusers, "--root="+root, conf("waferd.sysusers.conf", Sysusers)); err != nil || ignoring.MatchString(stderr) {
		t.Fatalf("systemd-sysusers: %v\n%s%s", err, stdout, stderr)
	}
	passwd, _ := os.ReadFile(filepath.Join(root, "etc/passwd"))
	group, _ := os.ReadFile(filepath.Join(root, "etc/group"))
	if !regexp.MustCompile(`(?m)^waferd:x:\d+:\d+:waferd wafer-inspection controller:/var/lib/waferd:`).Match(passwd) {
		t.Errorf("no waferd user in /etc/passwd:\n%s", passwd)
	}
	for _, g := range []string{"gpio", "dialout", "video"} {
		if !regexp.MustCompile(`(?m)^` + g + `:x:\d+:waferd$`).Match(group) {
			t.Errorf("waferd not in group %s:\n%s", g, group)
		}
	}

	if os.Geteuid() != 0 {
		t.Skip("systemd-tmpfiles --create chowns to waferd: needs root")
	}
	if stdout, stderr, err := run(t, dir, tmpfiles, "--root="+root, "--create", conf("waferd.tmpfiles.conf", Tmpfiles)); err != nil || ignoring.MatchString(stderr) {
		t.Fatalf("systemd-tmpfiles: %v\n%s%s", err, stdout, stderr)
	}
	for _, d := range []string{"var/lib/waferd/runs", "etc/waferd/recipes"} {
		fi, err := os.Stat(filepath.Join(root, d))
		if err != nil || !fi.IsDir() {
			t.Errorf("tmpfiles did not create /%s: %v", d, err)
		}
	}
	if fi, err := os.Stat(filepath.Join(root, "var/lib/waferd")); err != nil || fi.Mode().Perm() != 0o750 {
		t.Errorf("/var/lib/waferd: %v %v, want mode 0750", fi.Mode(), err)
	}
}

func TestUdevRules(t *testing.T) {
	if !regexp.MustCompile(`(?m)^SUBSYSTEM=="gpio", KERNEL=="gpiochip\[0-9\]\*", GROUP="gpio", MODE="0660"$`).MatchString(UdevRules) {
		t.Error("waferd.udev.rules: no rule giving /dev/gpiochip* to the gpio group")
	}
	for n, l := range strings.Split(UdevRules, "\n") {
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		for _, kv := range strings.Split(l, ", ") {
			if !regexp.MustCompile(`^[A-Z_]+(\{[^}]+\})?(==|!=|=|\+=|:=)"[^"]*"$`).MatchString(kv) {
				t.Errorf("waferd.udev.rules:%d: cannot parse %q", n+1, kv)
			}
		}
	}
	udevadm, err := exec.LookPath("udevadm")
	if err != nil {
		t.Skip("udevadm not found (Debian package udev): rules syntax checked only by this test")
	}
	if _, _, err := run(t, "", udevadm, "verify", "--help"); err != nil {
		t.Skip("udevadm verify needs systemd ≥ 254: rules syntax checked only by this test")
	}
	path := filepath.Join(t.TempDir(), "60-waferd.rules")
	if err := os.WriteFile(path, []byte(UdevRules), 0o644); err != nil {
		t.Fatal(err)
	}
	if stdout, stderr, err := run(t, "", udevadm, "verify", path); err != nil {
		t.Fatalf("udevadm verify: %v\n%s%s", err, stdout, stderr)
	}
}

func TestInstallList(t *testing.T) {
	seen := map[string]bool{}
	for _, f := range Install {
		if _, err := fs.Stat(Files, f.File); err != nil {
			t.Errorf("Install names %s: %v", f.File, err)
		}
		seen[f.File] = true
	}
	entries, err := fs.ReadDir(Files, ".")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !seen[e.Name()] {
			t.Errorf("%s is embedded but not in Install", e.Name())
		}
	}
	if _, err := fs.Stat(Files, "nope"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
}
