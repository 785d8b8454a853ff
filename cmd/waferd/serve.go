package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	iofs "io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/waferd/waferd/board"
	"github.com/waferd/waferd/config"
	"github.com/waferd/waferd/console"
	"github.com/waferd/waferd/daemon"
	"github.com/waferd/waferd/examples"
	"github.com/waferd/waferd/inspection/results"
	"github.com/waferd/waferd/internal/logging"
	"github.com/waferd/waferd/sim"
	"github.com/waferd/waferd/stop"
	"github.com/waferd/waferd/watchdog"
)

// cmdServe runs the controller as a long-lived daemon (systemd Type=notify).
// It exits 0 after a clean shutdown (SIGTERM or SIGINT, or the end of a
// --console stdio input: any run is stopped safely first), 2 on a bad
// configuration, 4 if the board cannot be opened.
func cmdServe(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("waferd serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "configuration `file` (TOML; see systemd/waferd.toml)")
	useSim := fs.Bool("sim", false, "use the simulated board (as [sim] enabled = true)")
	dataDir := fs.String("data", "", "results `directory` (overrides [data] dir)")
	logLevel := fs.String("log-level", "", "log `level` (overrides [log] level)")
	var consoles []string
	fs.Func("console", "also serve the console on `WHERE`: stdio (stdin/stdout; end of input shuts down), pty (simulated board: a new pseudo-terminal, its path is printed) or a serial device; repeatable", func(v string) error {
		consoles = append(consoles, v)
		return nil
	})
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
	consoles, err = consoleList(consoles, cfg)
	if err != nil {
		fmt.Fprintf(stderr, "waferd serve: %v\n", err)
		return exitUsage
	}
	var stdio *console.Stdio
	if slices.Contains(consoles, "stdio") {
		if stdio, err = console.OpenStdio(os.Stdin, os.Stdout); err != nil {
			fmt.Fprintf(stderr, "waferd serve: --console stdio: %v\n", err)
			return exitUsage
		}
		defer stdio.Close()
	}
	lvl, _ := logging.ParseLevel(cfg.Log.Level) // validated
	// Logs on the terminal the stdio console uses are printed above the
	// line being typed.
	var sink *console.LogSink
	logs := logging.Auto(stderr, lvl)
	if stdio != nil && stdio.Interactive && sameTerminal(stderr) {
		sink = &console.LogSink{Fallback: stderr}
		logs = logging.New(sink, logging.Options{Level: lvl})
	}
	ring := logging.NewRing(1000)
	logs.Tee(ring, max(lvl, logging.Info))
	log := logs.For("waferd")

	store, err := results.Open(cfg.Data.Dir)
	if err != nil {
		log.Errorf("%v", err)
		return exitUsage
	}
	markInterrupted(store, log)

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
		b, err = board.Open(openCtx, cfg, board.WithSimLog(logs.For("grblsim").Debugf), board.WithStageLog(logs.For("stage")))
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
	if !cfg.Sim.Enabled {
		log.Infof("board: %v", b)
		if len(b.Simulated) > 0 {
			log.Warnf("board: simulated devices: %s", strings.Join(b.Simulated, ", "))
		}
	}
	devs := daemon.Devices{Stage: b.Stage, Light: b.Light, Camera: b.Camera, Limits: b.Limits, Button: b.Button, EStop: b.EStop}
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
	d, err = daemon.New(daemon.Options{
		Config: cfg, Devices: devs, Store: store, Logs: logs,
		Notifier: watchdog.SystemdNotifier{}, NotifyInterval: interval, Hardware: hw,
		Recipes: builtin, LogRing: ring,
	})
	if err != nil {
		log.Errorf("%v", err)
		return exitFailed
	}
	close(ready)

	// The consoles outlive the daemon's shutdown, so that they show how
	// the run in progress ended.
	cctx, ccancel := context.WithCancel(context.Background())
	var cwg sync.WaitGroup
	defer cwg.Wait()
	defer ccancel()
	clog := logs.For("console")
	for _, where := range consoles {
		opts := console.Options{Version: version, Log: clog}
		var serve func(context.Context) error
		switch where {
		case "stdio":
			opts.Name, opts.Interactive, opts.CtrlDEOF, opts.LogSink = "stdio", stdio.Interactive, stdio.Interactive, sink
			opts.OnEOF = func() {
				log.Noticef("console input ended: shutting down")
				cancel(stop.New(stop.Shutdown, "end of console input"))
			}
			serve = func(ctx context.Context) error { return console.Serve(ctx, stdio, d, opts) }
		case "pty":
			p, err := console.OpenPTY()
			if err != nil {
				log.Errorf("%v", err)
				return exitFailed
			}
			fmt.Fprintf(stdout, "console on %s (connect: screen %s 115200)\n", p.Path, p.Path)
			log.Noticef("console on %s", p.Path)
			serve = func(ctx context.Context) error { return p.Serve(ctx, d, opts) }
		default:
			serve = func(ctx context.Context) error { return console.ServePort(ctx, where, cfg.Console.Baud, d, opts) }
		}
		cwg.Add(1)
		go func() {
			defer cwg.Done()
			if err := serve(cctx); err != nil && !errors.Is(err, io.EOF) {
				clog.Errorf("console %s: %v", where, err)
			}
		}()
	}

	if err := d.Run(ctx); err != nil {
		log.Errorf("%v", err)
		return exitFailed
	}
	log.Noticef("stopped")
	return 0
}

// consoleList merges the --console flags with [console] port: "stdio",
// "pty" (simulated board only) or device paths, each once.
func consoleList(flags []string, cfg *config.Config) ([]string, error) {
	var out []string
	if cfg.Console.Port != "" {
		out = append(out, cfg.Console.Port)
	}
	for _, c := range flags {
		switch {
		case c == "pty" && !cfg.Sim.Enabled:
			return nil, errors.New("--console pty: only on the simulated board (--sim); on the machine name a serial device")
		case c != "stdio" && c != "pty" && !filepath.IsAbs(c):
			return nil, fmt.Errorf("--console %q: want stdio, pty or a serial device path such as /dev/ttyGS0", c)
		case c == cfg.Stage.Port && !cfg.Sim.Enabled:
			return nil, fmt.Errorf("--console %s: that is the stage's port", c)
		case slices.Contains(out, c) && c != "pty":
			continue
		}
		out = append(out, c)
	}
	return out, nil
}

// sameTerminal reports whether w is a terminal (then it is the one the
// stdio console uses, in every practical case).
func sameTerminal(w io.Writer) bool {
	return logging.IsTerminal(w)
}
