package board

import (
	"context"
	"errors"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.bug.st/serial"

	"github.com/waferd/waferd/motion"
	"github.com/waferd/waferd/motion/grbl"
	"github.com/waferd/waferd/sim/grblsim"
)

// uartEnds returns the two ends of a real serial line named by the
// environment, or skips the test.
func uartEnds(t *testing.T) (driver, emulator string) {
	driver, emulator = os.Getenv("WAFERD_TEST_UART_DRIVER"), os.Getenv("WAFERD_TEST_UART_EMULATOR")
	if driver == "" || emulator == "" {
		t.Skip("WAFERD_TEST_UART_DRIVER and WAFERD_TEST_UART_EMULATOR not set: this test needs two serial ports wired to each other " +
			"(a null-modem cable, or the guest's /dev/ttyS1 and /dev/ttyS2 that `make test-vm` wires together in qemu); " +
			"set WAFERD_TEST_UART_DRIVER=/dev/ttySx WAFERD_TEST_UART_EMULATOR=/dev/ttySy")
	}
	return driver, emulator
}

// TestUARTStage drives the GRBL emulator across a real UART (the kernel's
// 8250 driver in `make test-vm`): the emulator serves one end of the line,
// the production path (OpenStage: go.bug.st/serial at 115200 8N1, the GRBL
// driver) opens the other, then homes, moves, feed-holds a move in progress
// (measuring the time from the cancel to the '!' reaching the emulator
// through both UARTs), soft-resets and checks the reported position
// against the emulator's true one.
func TestUARTStage(t *testing.T) {
	drvPath, emuPath := uartEnds(t)
	noLeaks(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	line, err := serial.Open(emuPath, &serial.Mode{BaudRate: 115200, DataBits: 8, Parity: serial.NoParity, StopBits: serial.OneStopBit})
	require.NoError(t, err, "the emulator's end")
	emu := grblsim.New(stageEmu(5, true))
	var mu sync.Mutex
	var holdAt []time.Time
	emu.OnRealtime(func(b byte, at time.Time) {
		if b == '!' {
			mu.Lock()
			holdAt = append(holdAt, at)
			mu.Unlock()
		}
	})
	sctx, scancel := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- emu.Serve(sctx, line) }() // Serve closes line when it returns
	t.Cleanup(func() {
		scancel()
		assert.ErrorIs(t, <-served, context.Canceled)
		assert.NoError(t, emu.Close())
	})

	// The banner the emulator printed at power-up may have been cut by
	// the driver's end opening (the 8250 clears its FIFO): Connect then
	// provokes another with a soft reset, as on a real controller.
	began := time.Now()
	st, err := OpenStage(ctx, StageConfig{Port: drvPath, Baud: 115200, GRBL: grbl.Config{
		ConnectTimeout: time.Second, ReplyTimeout: 2 * time.Second, PollInterval: 20 * time.Millisecond, HomingTimeout: 10 * time.Second,
	}})
	require.NoError(t, err)
	defer func() { assert.NoError(t, st.Close()) }()
	t.Logf("connected over %s ↔ %s in %v, GRBL %s", drvPath, emuPath, time.Since(began).Round(time.Millisecond), st.Version())
	assert.Equal(t, "1.1h", st.Version())
	require.NotNil(t, st.Alarm(), "powers up locked: homing required")

	require.NoError(t, st.Home(ctx))
	s, err := st.Status(ctx)
	require.NoError(t, err)
	assert.Equal(t, motion.StateIdle, s.State)
	to := motion.Point{X: motion.MM(12.345), Y: motion.MM(6.789)}
	require.NoError(t, st.MoveTo(ctx, to, 3000))
	assert.Equal(t, to, emu.Position())

	// A long move, feed-held mid-way by cancelling its context.
	mctx, mcancel := context.WithCancelCause(ctx)
	moved := make(chan error, 1)
	go func() { moved <- st.MoveTo(mctx, motion.Point{X: motion.MM(280), Y: motion.MM(250)}, 6000) }()
	require.Eventually(t, emu.Moving, 10*time.Second, time.Millisecond)
	stopAt := time.Now()
	stopped := errors.New("test stop")
	mcancel(stopped)
	require.ErrorIs(t, <-moved, stopped)
	require.NoError(t, st.Hold(ctx))
	mu.Lock()
	require.NotEmpty(t, holdAt, "the feed hold reached the emulator")
	latency := holdAt[0].Sub(stopAt)
	mu.Unlock()
	t.Logf("stop latency over the UART (cancel to '!' read by the emulator): %v", latency)
	assert.Less(t, latency, 250*time.Millisecond)
	s, err = st.Status(ctx)
	require.NoError(t, err)
	assert.Equal(t, motion.StateHold, s.State)
	assert.Equal(t, 0, s.Sub, "stopped in the hold")
	held := emu.Position()
	assert.Equal(t, held, s.XY())
	assert.NotEqual(t, to, held, "the stage moved before the hold")

	// A soft reset after the hold keeps the position and raises no alarm.
	resets := emu.Counters().Resets
	require.NoError(t, st.Reset(ctx))
	assert.Equal(t, resets+1, emu.Counters().Resets)
	assert.Nil(t, st.Alarm())
	s, err = st.Status(ctx)
	require.NoError(t, err)
	assert.Equal(t, motion.StateIdle, s.State)
	assert.Equal(t, held, s.XY())
	require.NoError(t, st.MoveTo(ctx, to, 6000), "moves again after the reset")
	assert.Equal(t, to, emu.Position())
	assert.Zero(t, emu.Counters().RxDropped, "no byte lost in the emulator's receive buffer")
}
