package inspection_test

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpiotest"

	"github.com/waferd/waferd/camera/cameratest"
	"github.com/waferd/waferd/illumination"
	"github.com/waferd/waferd/inspection"
	"github.com/waferd/waferd/inspection/recipe"
	"github.com/waferd/waferd/inspection/results"
	"github.com/waferd/waferd/machine"
	"github.com/waferd/waferd/motion"
	"github.com/waferd/waferd/motion/motiontest"
)

// fakeLimits are the fake machine's: a 300 mm square travel and the fake
// camera's 1.6 mm field of view (160 pixels of 10 µm).
var fakeLimits = recipe.Limits{
	Travel:  motion.Rect{Max: motion.Point{X: motion.MM(300), Y: motion.MM(300)}},
	FOV:     motion.Point{X: motion.MM(1.6), Y: motion.MM(1.6)},
	MaxFeed: 6000,
}

// fakeRig is the machine and a runner on fakes: a scriptable stage whose
// moves take 20 ms and homing 50 ms, a fake camera, the real light driver
// on a test pin, and a results store in a temporary directory (on tmpfs if
// there is one). Make it inside synctest.Test: the waits are then on a
// fake clock.
type fakeRig struct {
	rec    *recipe.Recipe
	m      *machine.Machine
	runner *inspection.Runner
	stage  *motiontest.Stage
	camera *cameratest.Camera
	light  illumination.Lamp
	pin    *gpiotest.Pin // the light's enable line
	data   string
}

func newFakeRig(t *testing.T, doc string) *fakeRig {
	t.Helper()
	rec, err := recipe.Parse("fake.toml", []byte(doc), fakeLimits)
	require.NoError(t, err)
	g := &fakeRig{rec: rec, data: fastTempDir(t),
		stage:  motiontest.New(20*time.Millisecond, 50*time.Millisecond),
		camera: cameratest.New(160, 160, 10),
		pin:    &gpiotest.Pin{N: "LIGHT"},
	}
	g.light, err = illumination.New(illumination.Config{Enable: g.pin})
	require.NoError(t, err)
	store, err := results.Open(g.data)
	require.NoError(t, err)
	g.m = machine.New(machine.Config{Stage: g.stage, Light: g.light, HoldTimeout: 3 * time.Second, ResetTimeout: 3 * time.Second})
	g.runner = &inspection.Runner{Stage: g.stage, Light: g.light, Camera: g.camera, Store: store,
		Config: inspection.Config{CaptureTimeout: time.Second}}
	return g
}

// run runs rec under the machine's claim, released once the outcome is
// recorded, as the daemon does.
func (g *fakeRig) run(t *testing.T, rec *recipe.Recipe) (inspection.Result, error) {
	t.Helper()
	return runClaimed(t.Context(), g.m, g.runner, rec)
}

// checkStopped asserts the invariants of a stopped run: the machine at
// rest and a valid record that says what happened.
func (g *fakeRig) checkStopped(t *testing.T, out inspection.Result, want expect) {
	t.Helper()
	assert.Equal(t, want.state, out.Outcome, "outcome (reason %q, err %v)", out.Reason, out.Err)
	assert.True(t, strings.HasPrefix(out.Reason, want.reason), "reason %q, want prefix %q", out.Reason, want.reason)
	assert.Equal(t, want.latched, out.After, "latched state")
	assert.Equal(t, want.latched, g.m.State(), "machine state")

	assert.Equal(t, gpio.Low, g.pin.Read(), "light off")
	assert.False(t, g.stage.Moving(), "stage not moving")
	st, _, _ := g.stage.State()
	assert.Contains(t, []motion.State{motion.StateIdle, motion.StateAlarm}, st, "stage idle (or alarm after a lost position), not %v", st)
	if st == motion.StateAlarm {
		assert.False(t, g.m.Trusted(), "an alarm means the position is not trusted")
	}
	assert.False(t, g.camera.Streaming(), "camera not streaming")
	checkRecord(t, out, want)
}

// home homes the stage under the machine's claim, as the console's home
// does: the position is trusted, and no run's record is written for it.
func (g *fakeRig) home(t *testing.T) {
	t.Helper()
	c, err := g.m.Claim(t.Context(), "home")
	require.NoError(t, err)
	defer c.Release()
	require.NoError(t, g.stage.Home(c.Context()))
	c.Homed()
}
