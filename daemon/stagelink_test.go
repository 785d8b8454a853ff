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
	"github.com/waferd/waferd/daemon"
	"github.com/waferd/waferd/daemon/daemontest"
	"github.com/waferd/waferd/inspection/recipe"
	"github.com/waferd/waferd/inspection/results"
	"github.com/waferd/waferd/internal/logging"
	"github.com/waferd/waferd/machine"
	"github.com/waferd/waferd/motion"
	"github.com/waferd/waferd/sim"
	"github.com/waferd/waferd/sim/grblsim"
	"github.com/waferd/waferd/stop"
)

// usbRig is a daemon on a board whose stage is "real": a GRBL emulator on
// a pty behind a /dev/serial/by-id style symlink, opened by board.Open
// (and so reopened by itself when lost); light, camera and inputs are
// simulated. The test unplugs the adapter (hangs the pty up, removes the
// link) and plugs it back (a new controller on a new pty).
type usbRig struct {
	d     *daemon.Daemon
	b     *board.Board
	rec   *recipe.Recipe
	notes *daemontest.Notes
	link  string
	emu   *grblsim.Emulator
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
	cfg.Watchdog.StageHeartbeatMS = 600 // thirty polls: a loaded host is not a mute stage
	require.NoError(t, cfg.Validate())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := board.Open(ctx, cfg, board.WithStageRetryInterval(20*time.Millisecond))
	require.NoError(t, err)
	assert.Equal(t, []string{"light", "stop button", "e-stop", "camera"}, b.Simulated)
	t.Cleanup(func() { r.emu.Close() }) // after the daemon's and the board's
	t.Cleanup(func() { assert.NoError(t, b.Close()) })
	store, err := results.Open(cfg.Data.Dir)
	require.NoError(t, err)
	r.b, r.notes = b, &daemontest.Notes{}
	r.d, err = daemon.New(daemon.Options{
		Config: cfg, Store: store, Logs: logging.New(os.Stderr, logging.Options{Level: logging.Error}),
		Devices: daemon.Devices{Stage: b.Stage, Light: b.Light, Camera: b.Camera, Limits: b.Limits,
			Button: b.Button, EStop: b.EStop, SetRecipe: b.Sim.SetRecipe},
		Notifier: r.notes, NotifyInterval: 200 * time.Millisecond,
	})
	require.NoError(t, err)
	r.rec, err = recipe.Parse("slow.toml", []byte(daemontest.Recipe), b.Limits)
	require.NoError(t, err)
	r.d.Start()
	t.Cleanup(func() { assert.NoError(t, r.d.Shutdown(context.Background(), "end of test")) })
	return r
}

// plug powers up a new controller (homing required: it starts locked) on a
// new pty and points the link at it.
func (r *usbRig) plug(t *testing.T) {
	t.Helper()
	if r.emu != nil {
		r.emu.Close()
	}
	r.emu = grblsim.New(sim.EmulatorConfig(sim.Config{TimeScale: 10}))
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
	require.NoError(t, r.d.StartRun(context.Background(), r.rec))
	require.Eventually(t, func() bool { return r.b.Sim.Camera.Captures() >= 2 && r.emu.Moving() }, 10*time.Second, time.Millisecond)
	r.unplug(t)
	require.NoError(t, r.d.WaitRun(context.Background()))
	out := r.d.Last()
	assert.Equal(t, machine.Aborted, out.Outcome, "%s %v", out.Reason, out.Err)
	assert.True(t, strings.HasPrefix(out.Reason, "fault: stage"), out.Reason)
	assert.Contains(t, out.Reason, "link lost")
	assert.Equal(t, machine.Faulted, r.d.Machine.State())
	assert.False(t, r.d.Machine.Trusted())
	require.ErrorIs(t, r.d.StartRun(context.Background(), r.rec), machine.ErrLatched)
	_, err := r.b.Stage.Status(context.Background())
	require.ErrorIs(t, err, motion.ErrLinkLost)
	assert.ErrorContains(t, err, "reconnecting")

	r.plug(t)
	require.Eventually(t, func() bool { return r.b.Stage.Err() == nil }, 10*time.Second, time.Millisecond, "the stage reconnects by itself")
	st, err := r.b.Stage.Status(context.Background())
	require.NoError(t, err)
	assert.Equal(t, motion.StateAlarm, st.State, "the new controller is locked until homed")
	assert.Equal(t, machine.Faulted, r.d.Machine.State(), "still latched: an operator clears it")
	require.NoError(t, r.d.Reset(context.Background()))
	assert.False(t, r.d.Machine.Trusted())
	require.NoError(t, r.d.StartRun(context.Background(), r.rec))
	require.NoError(t, r.d.WaitRun(context.Background()))
	out = r.d.Last()
	assert.Equal(t, machine.Completed, out.Outcome, "%s %v", out.Reason, out.Err)
	assert.True(t, r.d.Machine.Trusted(), "the run homed first")
}

// TestStageUnpluggedWhileIdle: a lost link while idle latches Faulted at
// once with reason fault (not a stale watchdog heartbeat later), the
// position becomes untrusted, and the service keeps pinging systemd while
// the stage reconnects: the loss is handled, the controller is not hung.
func TestStageUnpluggedWhileIdle(t *testing.T) {
	r := startUSB(t)
	require.NoError(t, r.d.Home(context.Background()))
	require.True(t, r.d.Machine.Trusted())

	r.unplug(t)
	require.Eventually(t, func() bool { return r.d.Machine.State() == machine.Faulted }, 5*time.Second, time.Millisecond)
	assert.True(t, strings.HasPrefix(r.d.Machine.LatchReason(), "fault: stage:"), r.d.Machine.LatchReason())
	assert.False(t, r.d.Machine.Trusted())
	pings := r.notes.Count("WATCHDOG=1")
	time.Sleep(1800 * time.Millisecond) // three stage heartbeat limits, eighteen ping periods
	assert.Greater(t, r.notes.Count("WATCHDOG=1"), pings+2, "pings go on while the stage reconnects")
	assert.NotContains(t, r.d.Machine.LatchReason(), "watchdog")
	for _, h := range r.d.Heartbeats() {
		assert.True(t, h.Fresh, "%s fresh", h.Name)
	}

	r.plug(t)
	require.Eventually(t, func() bool { return r.b.Stage.Err() == nil }, 10*time.Second, time.Millisecond)
	assert.False(t, r.d.Machine.Trusted(), "the controller restarted: position unknown")
	require.NoError(t, r.d.Reset(context.Background()))
	assert.Equal(t, machine.Idle, r.d.Machine.State())
	r.d.Stop(stop.Operator, "nothing to stop")
}
