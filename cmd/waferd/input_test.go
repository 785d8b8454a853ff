package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// maxInputRSS is the most memory waferd may take to refuse bad input; a
// regression that reads /dev/zero is killed there, not by the kernel's OOM
// killer on a shared host.
const maxInputRSS = 512 << 20

// refuse runs the real waferd with args and returns its exit status and
// stderr. It kills waferd beyond maxInputRSS or 60 s.
func refuse(t *testing.T, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, waferdBin, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Start())
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			var ee *exec.ExitError
			if err != nil && !errors.As(err, &ee) {
				t.Fatalf("waferd %v: %v", args, err)
			}
			return cmd.ProcessState.ExitCode(), stderr.String()
		case <-tick.C:
			if rss := vmRSS(cmd.Process.Pid); rss > maxInputRSS {
				_ = cmd.Process.Kill()
				<-done
				t.Fatalf("waferd %v: %d MiB resident, still reading", args, rss>>20)
			}
		}
	}
}

// vmRSS returns the resident memory of process pid in bytes (0 if gone).
func vmRSS(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// TestBadInputIsOneLine: waferd run --recipe /dev/zero and serve --config
// /dev/zero grew to 24 GB; center_mm = [150.0] gave 26 lines about sites
// outside the travel, never naming center_mm. Each is now exit status 2
// and one line naming the file (and line and key).
func TestBadInputIsOneLine(t *testing.T) {
	dir := t.TempDir()
	write := func(name, doc string) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(doc), 0o644))
		return p
	}
	shortArray := write("short.toml", strings.Replace(smallRecipe, "center_mm = [150.0, 150.0]", "center_mm = [150.0]", 1))
	fine := write("fine.toml", strings.Replace(smallRecipe, "pitch_mm = [10.0, 10.0]", "pitch_mm = [0.15, 10.0]", 1))
	nanDiameter := write("nan.toml", strings.Replace(smallRecipe, "diameter_mm = 50.0", "diameter_mm = nan", 1))
	longExposure := write("exposure.toml", strings.Replace(smallRecipe, "exposure_ms = 2", "exposure_ms = 2000", 1))
	sim := "[sim]\nenabled = true\n[data]\ndir = \"" + dir + "\"\n"
	shortTravel := write("travel.toml", sim+"[stage]\ntravel_max_mm = [300.0]\n")
	longHold := write("hold.toml", sim+"[runner]\nhold_timeout_ms = 30000\n")
	noZone := write("zone.toml", sim+"[watchdog]\nthermal_zone = \""+filepath.Join(dir, "thermal_zone9", "temp")+"\"\n")

	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"run", "--recipe", "/dev/zero"}, "waferd run: recipe: /dev/zero: not a regular file (a character device): give a TOML file"},
		{[]string{"serve", "--config", "/dev/zero"}, "waferd serve: config: /dev/zero: not a regular file (a character device): give a TOML file"},
		{[]string{"run", "--config", "/dev/zero", "--recipe", shortArray}, "waferd run: config: /dev/zero: not a regular file (a character device): give a TOML file"},
		{[]string{"run", "--recipe", dir}, "waferd run: recipe: " + dir + ": not a regular file (a directory): give a TOML file"},
		{[]string{"run", "--recipe", shortArray}, "waferd run: recipe: " + shortArray + ":5: wafer.center_mm: expected an array of 2 numbers, found an array of 1 element"},
		{[]string{"run", "--recipe", nanDiameter}, "waferd run: recipe: " + nanDiameter + ":4: wafer.diameter_mm: expected a finite number, found nan"},
		{[]string{"run", "--recipe", longExposure}, "waferd run: recipe: " + longExposure + ":11: capture.exposure_ms: 2000 ms is longer than this machine's watchdog allows, 1500 ms (half the shorter of [watchdog] light_max_on_ms and camera_heartbeat_ms)"},
		{[]string{"run", "--recipe", fine}, "waferd run: recipe: " + fine + ":7: dies.pitch_mm: X: 0.15 mm is less than the 0.201mm this camera can image"},
		{[]string{"serve", "--config", shortTravel}, "waferd serve: config: " + shortTravel + ":6: stage.travel_max_mm: expected an array of 2 numbers, found an array of 1 element"},
		{[]string{"serve", "--config", longHold}, "waferd serve: config: " + longHold + ":6: runner.hold_timeout_ms: a safe stop could take hold_timeout_ms 30000 + reset_timeout_ms 3000 + 4s (camera, results, exit) = 37s, not below the unit's TimeoutStopSec=20s"},
		{[]string{"serve", "--config", noZone}, "waferd serve: config: " + noZone + ":6: watchdog.thermal_zone: " + filepath.Join(dir, "thermal_zone9", "temp") + " does not exist"},
		{[]string{"run", "--config", noZone, "--recipe", shortArray}, "waferd run: config: " + noZone + ":6: watchdog.thermal_zone: "},
	} {
		code, stderr := refuse(t, c.args...)
		assert.Equal(t, exitUsage, code, "%v: %s", c.args, stderr)
		assert.True(t, strings.HasPrefix(stderr, c.want), "%v:\n got %s\nwant %s", c.args, stderr, c.want)
		assert.Equal(t, 1, strings.Count(stderr, "\n"), "%v: one line:\n%s", c.args, stderr)
	}
}
