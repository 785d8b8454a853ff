package daemon_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/waferd/waferd/board"
	"github.com/waferd/waferd/config"
	"github.com/waferd/waferd/inspection"
	"github.com/waferd/waferd/motion"
	"github.com/waferd/waferd/sim/grblsim"
	"github.com/waferd/waferd/stop"
)

// usbRig is a daemon on a board whose stage is "real": a GRBL emulator on
// a pty behind a /dev/serial/by-id style symlink, opened by board.Open
// (and so reopened by itself when lost); light, camera and inputs are
// simulated. The test unplugs the adapter (hangs the pty up, removes the
// link) and plugs it back (a new controller on a new pty).
type usbRig struct {
	*fixture
	link string
	emu  *grblsim.Emulator
}

func startUSB(t *testing.T) *usbRig {
	t.Helper()
	r := &usbRig{link: filepath.Join(t.TempDir(), "usb-Arduino_GRBL-if00")}
	r.plug(t)
	cfg := config.Default()
	cfg.Data.Dir = t.TempDir()
	cfg.Stage.Port = r.link
	cfg.Stage.PollMS = 20
	cfg.Stage.ReplyTimeoutMS = 1000
	cfg.Stage.ConnectTimeoutMS = 500
	cfg.Light.Chip = config.SimDevice
	cfg.Camera.Device = config.SimDevice
	cfg.Camera.Width, cfg.Camera.Height, cfg.Camera.PixelUM = 160, 160, 20
	cfg.Button = config.Input{Chip: config.SimDevice, Line: "button", Pull: "down", DebounceMS: 20}
	cfg.EStop = config.Input{Chip: config.SimDevice, Line: "estop", Pull: "down", DebounceMS: 20}
	cfg.Watchdog.IntervalMS = 20
	cfg.Watchdog.StageHeartbeatMS = 200
	require.NoError(t, cfg.Validate())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := board.Open(ctx, cfg, board.WithStageRetryInterval(20*time.Millisecond))
	require.NoError(t, err)
	assert.Equal(t, []string{"light", "stop button", "e-stop", "camera"}, b.Simulated)
	t.Cleanup(func() { r.emu.Close() }) // after the daemon's and the board's
	r.fixture = runDaemon(t, cfg, b)
	return r
}

// plug powers up a new controller (homing required: it starts locked) on a
// new pty and points the link at it.
func (r *usbRig) plug(t *testing.T) {
	t.Helper()
	if r.emu != nil {
		r.emu.Close()
	}
	r.emu = grblsim.New(grblsim.Config{TimeScale: 10, HomingRequired: true})
	pty, err := r.emu.OpenPTY()
	require.NoError(t, err)
	require.NoError(t, os.Symlink(pty, r.link))
}

func (r *usbRig) unplug(t *testing.T) {
	t.Helper()
	r.emu.InjectHangup()
	require.NoError(t, os.Remove(r.link))
}

// TestStageUnpluggedDuringRun: the USB adapter is pulled while the stage
// moves: the run ends Aborted with reason fault (stage), the machine
// latches Faulted with the position untrusted; once the adapter is back the
// stage reconnects by itself, and after a reset the next run homes first
// and completes.
func TestStageUnpluggedDuringRun(t *testing.T) {
	r := startUSB(t)
	r.startRun(t)
	require.Eventually(t, func() bool { return r.b.Sim.Camera.Captures() >= 2 && r.emu.Moving() }, 10*time.Second, time.Millisecond)
	r.unplug(t)
	out := r.outcome(t)
	assert.Equal(t, inspection.Aborted, out.State, "%s %v", out.Reason, out.Err)
	assert.True(t, strings.HasPrefix(out.Reason, "fault: stage"), out.Reason)
	assert.Contains(t, out.Reason, "link lost")
	assert.Equal(t, inspection.Faulted, r.d.Runner.State())
	assert.False(t, r.d.Runner.Trusted())
	require.ErrorIs(t, r.d.StartRun(context.Background(), r.rec), inspection.ErrLatched)
	_, err := r.b.Stage.Status(context.Background())
	require.ErrorIs(t, err, motion.ErrLinkLost)
	assert.ErrorContains(t, err, "reconnecting")

	r.plug(t)
	require.Eventually(t, func() bool { return r.b.Stage.Err() == nil }, 10*time.Second, time.Millisecond, "the stage reconnects by itself")
	st, err := r.b.Stage.Status(context.Background())
	require.NoError(t, err)
	assert.Equal(t, motion.StateAlarm, st.State, "the new controller is locked until homed")
	assert.Equal(t, inspection.Faulted, r.d.Runner.State(), "still latched: an operator clears it")
	require.NoError(t, r.d.Reset(context.Background()))
	assert.False(t, r.d.Runner.Trusted())
	r.startRun(t)
	out = r.outcome(t)
	assert.Equal(t, inspection.Completed, out.State, "%s %v", out.Reason, out.Err)
	assert.True(t, r.d.Runner.Trusted(), "the run homed first")
}

// TestStageUnpluggedWhileIdle: a lost link while idle latches Faulted at
// once with reason fault (not a stale watchdog heartbeat later), the
// position becomes untrusted, and the service keeps pinging systemd while
// the stage reconnects: the loss is handled, the controller is not hung.
func TestStageUnpluggedWhileIdle(t *testing.T) {
	r := startUSB(t)
	require.NoError(t, r.b.Stage.Home(context.Background()))
	require.NoError(t, r.d.Runner.NoteHomed())
	require.True(t, r.d.Runner.Trusted())

	r.unplug(t)
	require.Eventually(t, func() bool { return r.d.Runner.State() == inspection.Faulted }, 5*time.Second, time.Millisecond)
	assert.True(t, strings.HasPrefix(r.d.Runner.LatchReason(), "stopped: fault (stage:"), r.d.Runner.LatchReason())
	assert.False(t, r.d.Runner.Trusted())
	pings := r.notes.count("WATCHDOG=1")
	time.Sleep(600 * time.Millisecond) // three stage heartbeat limits, six ping periods
	assert.Greater(t, r.notes.count("WATCHDOG=1"), pings+2, "pings go on while the stage reconnects")
	assert.NotContains(t, r.d.Runner.LatchReason(), "watchdog")
	for _, h := range r.d.Heartbeats() {
		assert.True(t, h.Fresh, "%s fresh", h.Name)
	}

	r.plug(t)
	require.Eventually(t, func() bool { return r.b.Stage.Err() == nil }, 10*time.Second, time.Millisecond)
	assert.False(t, r.d.Runner.Trusted(), "the controller restarted: position unknown")
	require.NoError(t, r.d.Reset(context.Background()))
	assert.Equal(t, inspection.Idle, r.d.Runner.State())
	r.d.Stop(stop.Operator, "nothing to stop")
}
