package machine_test

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"periph.io/x/conn/v3/gpio"

	"github.com/waferd/waferd/daemon/daemontest"
	"github.com/waferd/waferd/inspection/recipe"
	"github.com/waferd/waferd/inspection/results"
	"github.com/waferd/waferd/machine"
	"github.com/waferd/waferd/stop"
)

// threeSites is a short run: the reference die and three sites.
const threeSites = `
name = "three"
[wafer]
diameter_mm = 50.0
center_mm = [150.0, 150.0]
[dies]
pitch_mm = [10.0, 10.0]
reference = [0, 0]
[[site]]
die = [1, 0]
[[site]]
die = [1, 1]
[[site]]
die = [0, 1]
[capture]
exposure_ms = 5
light_level = 0.7
settle_ms = 5
feed_mm_min = 3000
`

var stormCases = flag.Int("storm.cases", 50, "number of random-time stops in TestStopStorm")

// TestStopStorm stops runs at seeded random moments (on a fake clock,
// testing/synctest) with random reasons, and checks after each that the
// machine is at rest, the light off, the latch and the outcome those of
// the reason (or completed, when the stop came after the run), the record
// valid and consistent, and, after a reset, that the next run completes.
// Each case writes a run's record and wafer map, about 0.5 s of CPU under
// the race detector, so make test runs 50 and -short (the ARM suites under
// qemu-user) 10; make soak runs 5000 (or
// go test -run TestStopStorm ./machine/ -args -storm.cases=5000).
func TestStopStorm(t *testing.T) {
	cases := *stormCases
	if testing.Short() {
		cases = min(cases, 10)
	}
	synctest.Test(t, func(t *testing.T) {
		r := daemontest.New(t, daemontest.Options{})
		rec, err := recipe.Parse("three.toml", []byte(threeSites), daemontest.Limits)
		require.NoError(t, err)
		rng := rand.New(rand.NewPCG(2026, 12))
		counts := map[machine.Outcome]int{}
		for i := range cases {
			reason := reasons[rng.IntN(len(reasons))]
			delay := time.Duration(rng.IntN(200_000)) * time.Microsecond // a run takes about 170 ms
			timer := time.AfterFunc(delay, func() { r.D.Stop(reason, "storm") })
			res, err := r.D.Run(context.Background(), rec)
			require.NoError(t, err, "case %d", i)
			fired := !timer.Stop()
			synctest.Wait() // a stop that fired has returned
			counts[res.Outcome]++
			what := fmt.Sprintf("case %d: %v after %v: %s (%s)", i, reason, delay, res.Outcome, res.Reason)

			assert.Equal(t, gpio.Low, r.Light(), "light off; %s", what)
			assert.False(t, r.Stage.Moving(), "stage at rest; %s", what)
			assert.False(t, r.Camera.Streaming(), "camera idle; %s", what)
			outcome, latch := expected(reason)
			if res.Outcome == machine.Completed {
				// The stop came after the run (an idle machine's stop), or
				// not at all.
				if fired && reason.Latches() {
					latch = map[bool]machine.State{true: machine.EStop, false: machine.Faulted}[reason == stop.EStop]
				} else {
					latch = machine.Idle
				}
			} else {
				assert.Equal(t, outcome, res.Outcome, what)
				assert.Contains(t, res.Reason, reason.String(), what)
			}
			assert.Equal(t, latch, r.D.Machine.State(), what)

			raw, err := os.ReadFile(filepath.Join(res.Dir, "run.json"))
			require.NoError(t, err, what)
			var run results.Run
			require.NoError(t, json.Unmarshal(raw, &run), what)
			assert.Equal(t, res.Outcome.String(), string(run.State), what)
			assert.Equal(t, res.Done, run.SitesDone, what)
			assert.Equal(t, res.Outcome == machine.Completed, run.Complete, what)
			if t.Failed() {
				return
			}
			if r.D.Machine.State().Latched() {
				require.NoError(t, r.D.Reset(context.Background()), what)
			}
		}
		t.Logf("outcomes over %d random stops: %v", cases, counts)
		res, err := r.D.Run(context.Background(), r.Recipe)
		require.NoError(t, err)
		assert.Equal(t, machine.Completed, res.Outcome, "after all that, a run completes")
		require.NoError(t, r.Shutdown(context.Background(), "end of storm"))
	})
}
