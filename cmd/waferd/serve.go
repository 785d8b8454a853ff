package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/waferd/waferd/board"
	"github.com/waferd/waferd/config"
	"github.com/waferd/waferd/daemon"
	"github.com/waferd/waferd/inspection/results"
	"github.com/waferd/waferd/internal/logging"
	"github.com/waferd/waferd/sim"
	"github.com/waferd/waferd/stop"
	"github.com/waferd/waferd/watchdog"
)

// cmdServe runs the controller as a long-lived daemon (systemd Type=notify).
// It exits 0 after a clean shutdown (SIGTERM or SIGINT: any run is stopped
// safely first), 2 on a bad configuration, 4 if the board cannot be opened.
func cmdServe(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("waferd serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "configuration `file` (TOML; see systemd/waferd.toml)")
	useSim := fs.Bool("sim", false, "use the simulated board (as [sim] enabled = true)")
	dataDir := fs.String("data", "", "results `directory` (overrides [data] dir)")
	logLevel := fs.String("log-level", "", "log `level` (overrides [log] level)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "waferd serve: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	var cfg *config.Config
	var err error
	switch {
	case *cfgPath == "" && !*useSim:
		fmt.Fprintln(stderr, "waferd serve: give --config FILE for the machine, or --sim for the simulated board")
		return exitUsage
	case *cfgPath == "":
		cfg = config.Default()
		cfg.Sim.Enabled = true
	case *useSim:
		cfg, err = config.LoadSim(*cfgPath)
	default:
		cfg, err = config.Load(*cfgPath)
	}
	if err != nil {
		fmt.Fprintf(stderr, "waferd serve: %v\n", err)
		return exitUsage
	}
	if cfg.Sim.Enabled {
		// The simulated inputs are active high and released low.
		for _, in := range []*config.Input{&cfg.Button, &cfg.EStop} {
			in.ActiveLow, in.Pull = false, "down"
		}
	}
	if *dataDir != "" {
		abs, err := filepath.Abs(*dataDir)
		if err != nil {
			fmt.Fprintf(stderr, "waferd serve: --data: %v\n", err)
			return exitUsage
		}
		cfg.Data.Dir = abs
	}
	if *logLevel != "" {
		cfg.Log.Level = *logLevel
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintf(stderr, "waferd serve: %v\n", err)
		return exitUsage
	}
	lvl, _ := logging.ParseLevel(cfg.Log.Level) // validated
	logs := logging.Auto(stderr, lvl)
	log := logs.For("waferd")

	store, err := results.Open(cfg.Data.Dir)
	if err != nil {
		log.Errorf("%v", err)
		return exitUsage
	}
	if marked, err := store.MarkInterrupted(); err != nil {
		log.Errorf("checking for unfinished runs: %v", err)
	} else {
		for _, m := range marked {
			log.Warnf("run %s was found unfinished (%d/%d sites): marked interrupted", m.ID, m.SitesDone, m.SitesTotal)
		}
	}

	// The hardware watchdog is opened first: from here a hang resets the
	// board.
	var hw *watchdog.Hardware
	if dev := cfg.Watchdog.HardwareDevice; dev != "" {
		if hw, err = watchdog.OpenHardware(dev, time.Duration(cfg.Watchdog.HardwareTimeoutS)*time.Second); err != nil {
			log.Errorf("%v", err)
			return exitFailed
		}
	}
	interval, err := watchdog.SystemdInterval()
	if err != nil {
		log.Warnf("%v", err)
	}

	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	var d *daemon.Daemon
	ready := make(chan struct{})
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	go func() {
		for s := range sigs {
			if ctx.Err() == nil {
				log.Noticef("%v: shutting down", s)
				cancel(stop.New(stop.Shutdown, s.String()))
				continue
			}
			select {
			case <-ready:
				d.Runner.Hurry("second " + s.String())
			default:
			}
		}
	}()

	openCtx, openCancel := context.WithTimeout(ctx, 15*time.Second)
	var b *board.Board
	if cfg.Sim.Enabled {
		b, err = board.OpenSim(openCtx, board.SimConfig{
			Sim:  sim.Config{TimeScale: cfg.Sim.TimeScale, Logf: logs.For("grblsim").Debugf},
			GRBL: board.GRBLConfig(cfg.Stage),
		})
	} else {
		b, err = board.Open(openCtx, cfg)
	}
	openCancel()
	if err != nil {
		log.Errorf("%v", err)
		if hw != nil {
			_ = hw.Close()
		}
		if ctx.Err() != nil {
			return 0
		}
		return exitFailed
	}
	defer func() {
		if err := b.Close(); err != nil {
			log.Errorf("closing the board: %v", err)
		}
	}()
	devs := daemon.Devices{Stage: b.Stage, Light: b.Light, Camera: b.Camera, Limits: b.Limits, Button: b.Button, EStop: b.EStop}
	if b.Sim != nil {
		devs.SetRecipe = b.Sim.SetRecipe
	}
	d, err = daemon.New(daemon.Options{
		Config: cfg, Devices: devs, Store: store, Logs: logs,
		Notifier: watchdog.SystemdNotifier{}, NotifyInterval: interval, Hardware: hw,
	})
	if err != nil {
		log.Errorf("%v", err)
		return exitFailed
	}
	close(ready)
	if err := d.Run(ctx); err != nil {
		log.Errorf("%v", err)
		return exitFailed
	}
	log.Noticef("stopped")
	return 0
}
