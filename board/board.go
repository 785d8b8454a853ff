// Package board opens the devices a machine is built from and hands out the
// interfaces the workflow consumes. It is, with cmd, the only place that
// knows which implementation is behind each device: real hardware named in
// the configuration, or the simulated board.
package board

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"go.bug.st/serial"

	"github.com/waferd/waferd/camera"
	"github.com/waferd/waferd/illumination"
	"github.com/waferd/waferd/inspection/recipe"
	"github.com/waferd/waferd/motion/grbl"
	"github.com/waferd/waferd/sim"
)

// Board is an opened machine. Close releases everything it opened, leaving
// the light off.
type Board struct {
	Stage  *grbl.Stage
	Light  *illumination.Light
	Camera camera.Camera
	// Limits are what recipes are validated against.
	Limits recipe.Limits
	// Sim is the simulated board behind the devices, nil on real hardware.
	Sim *sim.Board

	closeOnce sync.Once
	closeErr  error
	closers   []func() error // in reverse order of opening
}

// StageConfig names the stage's serial line.
type StageConfig struct {
	Port string // e.g. /dev/serial/by-id/usb-Arduino…-if00 or /dev/ttyUSB0
	Baud int    // default 115200
	GRBL grbl.Config
}

// OpenStage opens the serial port, connects the GRBL driver and waits for the
// controller's banner. It blocks until connected or ctx ends.
func OpenStage(ctx context.Context, cfg StageConfig) (*grbl.Stage, error) {
	if cfg.Baud == 0 {
		cfg.Baud = 115200
	}
	port, err := serial.Open(cfg.Port, &serial.Mode{BaudRate: cfg.Baud, DataBits: 8, Parity: serial.NoParity, StopBits: serial.OneStopBit})
	if err != nil {
		return nil, fmt.Errorf("board: stage serial port %s: %w", cfg.Port, err)
	}
	st := grbl.New(port, cfg.GRBL)
	if err := st.Connect(ctx); err != nil {
		return nil, errors.Join(fmt.Errorf("board: stage on %s: %w", cfg.Port, err), st.Close())
	}
	return st, nil
}

// SimConfig sets up the simulated board.
type SimConfig struct {
	Sim  sim.Config
	GRBL grbl.Config
}

// OpenSim starts the simulated board and opens its devices through the same
// drivers as real hardware: the GRBL driver on the emulator's pty, the light
// on a periph test pin.
func OpenSim(ctx context.Context, cfg SimConfig) (*Board, error) {
	sb, err := sim.New(cfg.Sim)
	if err != nil {
		return nil, fmt.Errorf("board: %w", err)
	}
	b := &Board{Sim: sb, Camera: sb.Camera, Limits: cfg.Sim.Limits()}
	b.closers = append(b.closers, sb.Close)
	if b.Stage, err = OpenStage(ctx, StageConfig{Port: sb.PTY, GRBL: cfg.GRBL}); err != nil {
		return nil, errors.Join(err, b.Close())
	}
	b.closers = append(b.closers, b.Stage.Close)
	if b.Light, err = illumination.New(illumination.Config{Enable: sb.LightPin}); err != nil {
		return nil, errors.Join(err, b.Close())
	}
	b.closers = append(b.closers, b.Light.Off)
	return b, nil
}

// Close switches the light off and closes the stage link, the camera and
// (on the simulated board) the simulator, in that order. It does not move the
// stage. Safe to call more than once.
func (b *Board) Close() error {
	b.closeOnce.Do(func() {
		var errs []error
		for i := len(b.closers) - 1; i >= 0; i-- {
			errs = append(errs, b.closers[i]())
		}
		b.closeErr = errors.Join(errs...)
	})
	return b.closeErr
}
