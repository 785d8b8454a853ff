package main

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/waferd/waferd/sim"
	"github.com/waferd/waferd/sim/grblsim"
)

// TestServeLogsRealStageNoise: waferd serve with a real stage (a port
// path, not "sim": here a GRBL emulator of the test's own behind a pty)
// logs the driver's diagnostics: noise on the stage link is a warning in
// its log, where before only "stage not responding" ever appeared.
func TestServeLogsRealStageNoise(t *testing.T) {
	emu := grblsim.New(sim.EmulatorConfig(sim.Config{TimeScale: 20}))
	t.Cleanup(func() { emu.Close() })
	port, err := emu.OpenPTY()
	require.NoError(t, err)
	data := t.TempDir()
	p := filepath.Join(t.TempDir(), "waferd.toml")
	doc := "[stage]\nport = \"" + port + "\"\n[light]\nchip = \"sim\"\n[camera]\ndevice = \"sim\"\nwidth = 64\nheight = 64\n[data]\ndir = \"" + data + "\"\n"
	require.NoError(t, os.WriteFile(p, []byte(doc), 0o644))

	cmd := exec.Command(waferdBin, "serve", "--config", p, "--console", "stdio")
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	stderr, err := cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	var mu sync.Mutex
	var log []string
	seen := func(sub string) bool {
		mu.Lock()
		defer mu.Unlock()
		for _, l := range log {
			if strings.Contains(l, sub) {
				return true
			}
		}
		return false
	}
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			mu.Lock()
			log = append(log, sc.Text())
			mu.Unlock()
		}
	}()
	exited := make(chan error, 1)
	go func() {
		<-scanned
		exited <- cmd.Wait()
	}()
	t.Cleanup(func() { _ = cmd.Process.Kill() })

	require.Eventually(t, func() bool { return seen("board: ") }, 30*time.Second, 5*time.Millisecond, "no start-up")
	assert.False(t, seen("noise"), "a clean link makes no noise")
	// The daemon polls the stage: garble a third of its replies for a
	// moment.
	emu.InjectNoise(0.3)
	require.Eventually(t, func() bool { return seen("grbl: noise on the link") }, 10*time.Second, 5*time.Millisecond)
	emu.InjectNoise(0)
	require.NoError(t, stdin.Close())
	select {
	case err := <-exited:
		require.NoError(t, err)
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not exit at the end of input")
	}
	mu.Lock()
	defer mu.Unlock()
	joined := strings.Join(log, "\n")
	assert.Contains(t, joined, "grbl: noise on the link")
	assert.NotContains(t, joined, "Faulted", "noise is not a fault:\n%s", joined)
}

// TestServeRefusesATravelTheControllerCannotReach: a configured travel
// that a stock controller's machine space does not hold is a configuration
// error: exit status 2 (not retried by systemd), with one message naming
// the keys and the controller's settings.
func TestServeRefusesATravelTheControllerCannotReach(t *testing.T) {
	emu := grblsim.New(grblsim.Config{TimeScale: 20, HomingRequired: true}) // GRBL 1.1h as shipped: -200..0 mm
	t.Cleanup(func() { emu.Close() })
	port, err := emu.OpenPTY()
	require.NoError(t, err)
	p := filepath.Join(t.TempDir(), "waferd.toml")
	doc := "[stage]\nport = \"" + port + "\"\ntravel_max_mm = [300.0, 300.0]\n[light]\nchip = \"sim\"\n[camera]\ndevice = \"sim\"\nwidth = 64\nheight = 64\n[data]\ndir = \"" + t.TempDir() + "\"\n"
	require.NoError(t, os.WriteFile(p, []byte(doc), 0o644))
	out, err := exec.Command(waferdBin, "serve", "--config", p).CombinedOutput()
	var ee *exec.ExitError
	require.ErrorAs(t, err, &ee, "%s", out)
	assert.Equal(t, 2, ee.ExitCode(), "%s", out)
	assert.Contains(t, string(out), "stage.travel_min_mm, stage.travel_max_mm: grbl: travel X [0.000, 300.000] Y [0.000, 300.000] mm does not fit the controller's machine space clear of its switches X [-200.000, -1.000] Y [-200.000, -1.000] mm")
}

// TestRunOnAConfiguredMachine: waferd run --config runs on the hardware a
// configuration names, as waferd serve does: here a stage on a serial port
// path (a GRBL emulator of the test's own behind a pty) with the synthetic
// camera and light of the simulated board.
func TestRunOnAConfiguredMachine(t *testing.T) {
	emu := grblsim.New(sim.EmulatorConfig(sim.Config{TimeScale: 20}))
	t.Cleanup(func() { emu.Close() })
	port, err := emu.OpenPTY()
	require.NoError(t, err)
	data := t.TempDir()
	p := filepath.Join(t.TempDir(), "waferd.toml")
	doc := "[stage]\nport = \"" + port + "\"\n[light]\nchip = \"sim\"\n[camera]\ndevice = \"sim\"\nwidth = 160\nheight = 160\npixel_um = 20.0\n[data]\ndir = \"" + data + "\"\n"
	require.NoError(t, os.WriteFile(p, []byte(doc), 0o644))
	out, err := exec.Command(waferdBin, "run", "--config", p, "--recipe", writeRecipe(t, smallRecipe)).CombinedOutput()
	require.NoError(t, err, "%s", out)
	assert.Contains(t, string(out), ": completed,")
	assert.Contains(t, string(out), "opening the board")
	m := readRun(t, data)
	assert.Equal(t, "completed", m["state"])
	assert.Equal(t, m["sites_total"], m["sites_done"])
}
