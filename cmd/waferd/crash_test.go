package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"image/png"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var crashKills = flag.Int("crash.kills", 20, "SIGKILLs in TestCrashLeavesNothingCorrupt")

// TestCrashLeavesNothingCorrupt kills `waferd run --sim` with SIGKILL at
// random moments, restarting it each time on the same data directory, and
// checks that no file is ever corrupt and that every unfinished run is
// marked interrupted (by the next start) with the sites it finished.
// With -short (the ARM suites under qemu-user) 6 kills. More: make soak, or
// go test -run TestCrash ./cmd/waferd/ -args -crash.kills=200
func TestCrashLeavesNothingCorrupt(t *testing.T) {
	kills := *crashKills
	if testing.Short() {
		kills = min(kills, 6)
	}
	data := t.TempDir()
	recipe := writeRecipe(t, smallRecipe)
	rng := rand.New(rand.NewPCG(7, 7))
	checked := map[string]string{} // run directory → what it was when checked
	for i := range kills {
		cmd := exec.Command(waferdBin, "run", "--sim", "--recipe", recipe, "--data", data, "--time-scale", "20")
		var out bytes.Buffer // what waferd printed, for the failure message
		cmd.Stdout, cmd.Stderr = &out, &out
		require.NoError(t, cmd.Start())
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		delay := time.Duration(rng.IntN(1500)) * time.Millisecond
		select {
		case <-time.After(delay):
			require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
			<-done
		case err := <-done:
			require.NoError(t, err, "kill %d: the run ended before the kill, and it must have completed:\n%s", i, out.Bytes())
		}
		checkDataDir(t, data, false, checked)
	}
	// One kill certain to land mid-run, after its first site, however
	// slowly this host (or an emulator) starts waferd: the random delays
	// above may all fall before the run's record or after its end.
	cmd := exec.Command(waferdBin, "run", "--sim", "--recipe", recipe, "--data", data, "--time-scale", "20")
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	sc := bufio.NewScanner(stdout)
	for sc.Scan() && !strings.HasPrefix(sc.Text(), "site 1/") {
	}
	require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
	for sc.Scan() {
	}
	_ = cmd.Wait()
	checkDataDir(t, data, false, checked)
	// A clean start marks the last victim interrupted and completes a run.
	out, err := exec.Command(waferdBin, "run", "--sim", "--recipe", recipe, "--data", data, "--time-scale", "20").CombinedOutput()
	require.NoError(t, err, "%s", out)
	states := checkDataDir(t, data, true, nil)
	t.Logf("run states after %d kills: %v", kills, states)
	assert.Positive(t, states["interrupted"], "some kills must have hit a run in progress")
	assert.Positive(t, states["completed"])
}

// checkDataDir parses every file under data/runs. With settled, no run may
// still say running (the last start has marked them). With checked, it
// skips the runs whose run.json and wafer map are as they were when it last
// checked them (and notes those it checks): files of a run are written
// whole before run.json names them, so they cannot have changed unseen.
func checkDataDir(t *testing.T, data string, settled bool, checked map[string]string) map[string]int {
	t.Helper()
	states := map[string]int{}
	runs, err := filepath.Glob(filepath.Join(data, "runs", "*"))
	require.NoError(t, err)
	for _, dir := range runs {
		if strings.HasPrefix(filepath.Base(dir), ".") {
			continue // the store's own: .running, a .probe a kill left
		}
		if checked != nil {
			var stamp string
			for _, f := range []string{"run.json", "wafermap.png"} {
				if fi, err := os.Stat(filepath.Join(dir, f)); err == nil {
					stamp += fi.ModTime().String() + " " + strconv.FormatInt(fi.Size(), 10) + ";"
				}
			}
			if checked[dir] == stamp {
				continue
			}
			checked[dir] = stamp
		}
		raw, err := os.ReadFile(filepath.Join(dir, "run.json"))
		if os.IsNotExist(err) {
			// Killed between creating the directory and its first record.
			continue
		}
		require.NoError(t, err)
		var run struct {
			State     string `json:"state"`
			SitesDone int    `json:"sites_done"`
			Complete  bool   `json:"complete"`
			Sites     []struct {
				Index  int    `json:"index"`
				Status string `json:"status"`
				Result string `json:"result"`
				Image  string `json:"image"`
			} `json:"sites"`
		}
		require.NoError(t, json.Unmarshal(raw, &run), "%s/run.json must always be valid JSON", dir)
		states[run.State]++
		done := 0
		for _, s := range run.Sites {
			if s.Status != "done" {
				continue
			}
			done++
			var sr map[string]any
			b, err := os.ReadFile(filepath.Join(dir, s.Result))
			require.NoError(t, err)
			require.NoError(t, json.Unmarshal(b, &sr), "%s", s.Result)
			f, err := os.Open(filepath.Join(dir, s.Image))
			require.NoError(t, err)
			_, err = png.Decode(f)
			f.Close()
			require.NoError(t, err, "%s/%s must be a whole PNG", dir, s.Image)
		}
		assert.Equal(t, done, run.SitesDone, "%s: sites_done", dir)
		if settled {
			assert.NotEqual(t, "running", run.State, "%s: unfinished runs are marked interrupted at start-up", dir)
			if run.State == "interrupted" {
				assert.False(t, run.Complete)
				// Every site whose result file exists counts as done.
				files, _ := filepath.Glob(filepath.Join(dir, "sites", "*.json"))
				assert.Len(t, files, run.SitesDone, "%s: the sites it finished", dir)
			}
			// Every site image (sites/NNNN.png, inspection/results) has
			// its site record: a done site that names it. An image a kill
			// left without its defect list is removed by the restart.
			images, _ := filepath.Glob(filepath.Join(dir, "sites", "*.png"))
			assert.Len(t, images, run.SitesDone, "%s: site images, one per site done", dir)
			recorded := map[string]bool{}
			for _, s := range run.Sites {
				if s.Status == "done" {
					recorded[s.Image] = true
				}
			}
			for _, img := range images {
				rel := "sites/" + filepath.Base(img)
				n, err := strconv.Atoi(strings.TrimSuffix(filepath.Base(img), ".png"))
				assert.NoError(t, err, "%s/%s: site images are named sites/NNNN.png", dir, rel)
				assert.True(t, recorded[rel], "%s/%s (site %d) has no site record", dir, rel, n)
			}
		}
		if wm, err := os.Open(filepath.Join(dir, "wafermap.png")); err == nil {
			_, err = png.Decode(wm)
			wm.Close()
			require.NoError(t, err, "%s/wafermap.png must be a whole PNG", dir)
		}
	}
	return states
}
