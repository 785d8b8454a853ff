package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/waferd/waferd/board"
	"github.com/waferd/waferd/config"
	"github.com/waferd/waferd/console"
	"github.com/waferd/waferd/gem"
	"github.com/waferd/waferd/inspection/results"
	"github.com/waferd/waferd/internal/logging"
	"github.com/waferd/waferd/stop"
)

// serveReason: SIGTERM and SIGINT both shut the daemon down.
func serveReason(os.Signal) stop.Reason { return stop.Shutdown }

// cmdServe runs the controller as a long-lived daemon (systemd Type=notify).
// It exits 0 after a clean shutdown (SIGTERM or SIGINT, or the end of a
// --console stdio input: any run is stopped safely first), 2 on a bad
// configuration, 4 if the board cannot be opened.
func cmdServe(sigs *signals, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("waferd serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "configuration `file` (TOML; see systemd/waferd.toml)")
	useSim := fs.Bool("sim", false, "use the simulated board (as [sim] enabled = true)")
	dataDir := fs.String("data", "", "results `directory` (overrides [data] dir)")
	logLevel := fs.String("log-level", "", "log `level` (overrides [log] level)")
	publishURL := fs.String("publish", "", "publish events and results to the MQTT broker at `URL` (mqtt://host:1883, mqtts://host:8883; turns [publish] on with that broker)")
	gemAddr := fs.String("gem", "", "serve the factory host (SECS/GEM over HSMS-SS) on `host:port` (as [gem] enabled, listen)")
	var consoles []string
	fs.Func("console", "also serve the console on `WHERE`: stdio (stdin/stdout; end of input shuts down), pty (simulated board: a new pseudo-terminal, its path is printed) or a serial device; repeatable", func(v string) error {
		consoles = append(consoles, v)
		return nil
	})
	fs.Usage = func() { fmt.Fprint(stderr, serveUsage); fs.PrintDefaults() }
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
	if *cfgPath == "" && !*useSim {
		fmt.Fprintln(stderr, "waferd serve: give --config FILE for the machine, or --sim for the simulated board")
		return exitUsage
	}
	cfg, err := loadConfig(*cfgPath, *useSim, *dataDir, *logLevel, *publishURL)
	if err != nil {
		fmt.Fprintf(stderr, "waferd serve: %v\n", err)
		return exitUsage
	}
	if *gemAddr != "" {
		if err := checkGemFlag(*gemAddr); err != nil {
			fmt.Fprintf(stderr, "waferd serve: %v\n", err)
			return exitUsage
		}
		cfg.GEM.Enabled, cfg.GEM.Listen = true, *gemAddr
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
	if stdio != nil && stdio.Interactive && logging.IsTerminal(stderr) {
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
	interrupted := markInterrupted(store, log)
	pub, err := openPublishing(cfg, store, interrupted, logs)
	if err != nil {
		log.Errorf("%v", err)
		return exitUsage
	}

	ctx := sigs.Context()
	m, err := openMachine(ctx, cfg, machineOptions{store: store, logs: logs, ring: ring, stdout: stdout, pub: pub})
	if err != nil {
		_ = pub.stop()
		log.Errorf("%v", err)
		switch {
		case ctx.Err() != nil:
			return 0 // a signal during start-up: nothing started, a clean exit
		case errors.Is(err, board.ErrMismatch):
			return exitUsage // the configuration must change: not retried by systemd
		}
		return exitFailed
	}
	defer m.close()
	d := m.d
	sigs.attach(d.Stop, d.Hurry)

	// The factory host's interface: one more front end of the daemon.
	var eq *gem.Equipment
	if cfg.GEM.Enabled {
		if eq, err = gem.New(gemConfig(cfg.GEM, logs), d); err != nil {
			log.Errorf("%v", err)
			return exitFailed
		}
		defer eq.Close()
		fmt.Fprintf(stdout, "gem on %s (HSMS-SS, device id %d)\n", eq.Addr(), cfg.GEM.DeviceID)
	}

	// The end of a stdio console's input shuts down as a signal does.
	sctx, shutdown := context.WithCancelCause(ctx)
	defer shutdown(nil)

	// The consoles outlive the daemon's shutdown, so that they show how
	// the run in progress ended.
	cctx, ccancel := context.WithCancel(context.Background())
	var cwg sync.WaitGroup
	defer func() {
		ccancel()
		// A console whose port takes no output (a UART nobody reads: a
		// serial write does not return on Close) must not hold the exit
		// past systemd's stop timeout.
		ended := make(chan struct{})
		go func() { cwg.Wait(); close(ended) }()
		select {
		case <-ended:
		case <-time.After(consoleExitWait):
			log.Warnf("a console did not end within %v of the shutdown: exiting without it", consoleExitWait)
		}
	}()
	clog := logs.For("console")
	for _, where := range consoles {
		opts := console.Options{Version: version, Log: clog}
		if eq != nil {
			opts.Host = eq
		}
		var serve func(context.Context) error
		switch where {
		case "stdio":
			opts.Name, opts.Interactive, opts.CtrlDEOF, opts.LogSink = "stdio", stdio.Interactive, stdio.Interactive, sink
			if !stdio.Interactive {
				// A script on a pipe: its end shuts the daemon down.
				opts.OnEOF = func() {
					log.Noticef("console input ended: shutting down")
					shutdown(stop.New(stop.Shutdown, "end of console input"))
				}
			}
			serve = func(ctx context.Context) error {
				err := console.Serve(ctx, stdio, d, opts)
				if errors.Is(err, io.EOF) && stdio.Interactive {
					// Ctrl-D on a terminal closes this console, not the
					// daemon: a run in progress goes on.
					log.Noticef("console on the terminal closed (Ctrl-D); waferd keeps running: Ctrl-C or SIGTERM stops it")
				}
				return err
			}
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

	d.Start()
	pub.start()
	// The host hears how a run the shutdown stops ends: its interface
	// ends after the daemon.
	gctx, gcancel := context.WithCancel(context.Background())
	gemDone := make(chan error, 1)
	if eq != nil {
		go func() { gemDone <- eq.Run(gctx) }()
	} else {
		gemDone <- nil
	}
	<-sctx.Done()
	detail := "shutdown"
	if c, ok := stop.FromContext(sctx); ok {
		detail = c.Detail
	}
	err = m.shutdown(context.Background(), detail)
	gcancel()
	if gerr := <-gemDone; gerr != nil {
		log.Errorf("%v", gerr)
	}
	if err != nil {
		log.Errorf("%v", err)
		return exitFailed
	}
	log.Noticef("stopped")
	return 0
}

// consoleExitWait bounds the wait for the consoles at exit.
const consoleExitWait = 3 * time.Second

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

const serveUsage = `usage: waferd serve (--config FILE | --sim) [--data DIR] [--log-level L] [--console WHERE]... [--publish URL] [--gem ADDR]

Runs the controller daemon (systemd Type=notify) until SIGTERM or SIGINT,
which stop any run safely; exits 0 then, 2 on a bad configuration, 4 if
the board cannot be opened.

`
