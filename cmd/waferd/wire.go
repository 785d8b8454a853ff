package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"path/filepath"
	"strings"
	"time"

	"github.com/waferd/waferd/board"
	"github.com/waferd/waferd/config"
	"github.com/waferd/waferd/daemon"
	"github.com/waferd/waferd/examples"
	"github.com/waferd/waferd/inspection"
	"github.com/waferd/waferd/inspection/results"
	"github.com/waferd/waferd/internal/logging"
	"github.com/waferd/waferd/sim"
	"github.com/waferd/waferd/watchdog"
)

// loadConfig reads the configuration for run and serve: the file at path
// (with [sim] forced on when useSim), or the defaults on the simulated
// board when path is empty. dataDir and logLevel override [data] dir and
// [log] level when set; publishURL turns [publish] on with that broker.
func loadConfig(path string, useSim bool, dataDir, logLevel, publishURL string) (*config.Config, error) {
	var cfg *config.Config
	var err error
	switch {
	case path == "":
		cfg = config.Default()
		cfg.Sim.Enabled = true
	case useSim:
		cfg, err = config.LoadSim(path)
	default:
		cfg, err = config.Load(path)
	}
	if err != nil {
		return nil, err
	}
	if cfg.Sim.Enabled {
		// The simulated inputs are active high and released low.
		for _, in := range []*config.Input{&cfg.Button, &cfg.EStop} {
			in.ActiveLow, in.Pull = false, "down"
		}
	}
	if dataDir != "" {
		abs, err := filepath.Abs(dataDir)
		if err != nil {
			return nil, fmt.Errorf("--data: %w", err)
		}
		cfg.Data.Dir = abs
	}
	if logLevel != "" {
		cfg.Log.Level = logLevel
	}
	if publishURL != "" {
		if err := config.CheckBroker(publishURL); err != nil {
			return nil, fmt.Errorf("--publish: %w", err)
		}
		cfg.Publish.Enabled, cfg.Publish.Brokers = true, []string{publishURL}
	}
	return cfg, cfg.Validate()
}

// wiredMachine is the board and the daemon wired on it: what run and serve
// share.
type wiredMachine struct {
	cfg   *config.Config
	board *board.Board
	d     *daemon.Daemon
	hw    *watchdog.Hardware
	log   *logging.Log
	pub   *publishing // nil when publishing is off
}

// machineOptions are what run and serve wire differently.
type machineOptions struct {
	store    *results.Store
	logs     *logging.Root
	ring     *logging.Ring
	progress func(inspection.Progress)
	stdout   io.Writer
	pub      *publishing // [publish], opened; nil when off
}

// openMachine opens the hardware watchdog (first: from then on a hang
// resets the board), the board (simulated or real, as cfg says) and wires
// the daemon on it. ctx bounds the opening (a signal cancels it). Close
// releases everything.
func openMachine(ctx context.Context, cfg *config.Config, o machineOptions) (*wiredMachine, error) {
	m := &wiredMachine{cfg: cfg, log: o.logs.For("waferd"), pub: o.pub}
	var err error
	if dev := cfg.Watchdog.HardwareDevice; dev != "" {
		if m.hw, err = watchdog.OpenHardware(dev, time.Duration(cfg.Watchdog.HardwareTimeoutS)*time.Second); err != nil {
			return nil, err
		}
	}
	interval, err := watchdog.SystemdInterval()
	if err != nil {
		m.log.Warnf("%v", err)
	}
	openCtx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if cfg.Sim.Enabled {
		m.board, err = board.OpenSim(openCtx, board.SimConfig{
			Sim:  sim.Config{TimeScale: cfg.Sim.TimeScale, NoHoming: !cfg.Stage.Homing, Logf: o.logs.For("grblsim").Debugf},
			GRBL: board.GRBLLog(board.GRBLConfig(cfg.Stage), o.logs.For("grbl")),
		})
	} else {
		m.board, err = board.Open(openCtx, cfg, board.WithSimLog(o.logs.For("grblsim").Debugf), board.WithStageLog(o.logs.For("stage")), board.WithGRBLLog(o.logs.For("grbl")))
	}
	if err != nil {
		return nil, errors.Join(err, m.closeHW())
	}
	b := m.board
	// The watchdog's limits are the configuration's, not the board's.
	b.Limits.MaxExposure = board.ExposureLimit(cfg)
	if !cfg.Sim.Enabled {
		m.log.Infof("board: %v", b)
		if len(b.Simulated) > 0 {
			m.log.Warnf("board: simulated devices: %s", strings.Join(b.Simulated, ", "))
		}
	}
	devs := daemon.Devices{Stage: b.Stage, Light: b.Light, Camera: b.Camera, Limits: b.Limits, Button: b.Button, EStop: b.EStop,
		Reach: b.Stage.Reach, LinkNoise: func() string { return b.Stage.Noise().String() }}
	var builtin iofs.FS
	if b.Sim != nil && b.Sim.Camera != nil {
		// The synthetic camera shows the wafer of the recipe being run.
		devs.SetRecipe = b.Sim.SetRecipe
	}
	if b.Sim != nil && b.Sim.Camera != nil && b.Sim.Emulator != nil {
		// The shipped examples, when the recipe directory does not exist:
		// they are written for the simulated stage and camera.
		builtin, _ = iofs.Sub(examples.Recipes, examples.RecipeDir)
	}
	dopts := daemon.Options{
		Config: cfg, Devices: devs, Store: o.store, Logs: o.logs,
		Notifier: watchdog.SystemdNotifier{}, NotifyInterval: interval, Hardware: m.hw,
		Recipes: builtin, LogRing: o.ring, Progress: o.progress,
	}
	if o.pub != nil {
		dopts.Events, dopts.Publishing = o.pub.pub.Accept, o.pub.pub.Status
	}
	m.d, err = daemon.New(dopts)
	if err != nil {
		return nil, errors.Join(err, b.Close(), m.closeHW())
	}
	return m, nil
}

func (m *wiredMachine) closeHW() error {
	if m.hw == nil {
		return nil
	}
	return m.hw.Close()
}

// shutdown shuts the daemon down (Daemon.Shutdown), then the publisher
// (what the daemon said last is committed, and sent if the broker is
// there).
func (m *wiredMachine) shutdown(ctx context.Context, detail string) error {
	err := m.d.Shutdown(ctx, detail)
	return errors.Join(err, m.pub.stop())
}

// close releases the board, leaving the light off, and the hardware
// watchdog (magic close). The daemon must be shut down first.
func (m *wiredMachine) close() {
	if err := errors.Join(m.board.Close(), m.closeHW()); err != nil {
		m.log.Errorf("closing the board: %v", err)
	}
}

// markInterrupted marks every run found unfinished in store (a crash or
// power loss during it) as interrupted, logs each and returns them.
func markInterrupted(store *results.Store, log *logging.Log) []results.Run {
	marked, err := store.MarkInterrupted()
	if err != nil {
		log.Errorf("checking for unfinished runs: %v", err)
	}
	for _, m := range marked {
		log.Warnf("run %s was found unfinished (%d/%d sites): marked interrupted", m.ID, m.SitesDone, m.SitesTotal)
	}
	return marked
}
