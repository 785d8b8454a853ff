// Command waferd is the wafer-inspection controller.
//
//	waferd run --recipe FILE [--data DIR] [--sim]   run one inspection
//	waferd serve --config FILE | --sim [--data DIR]  run the controller daemon
//	waferd version                                   print the version
//
// Exit status: 0 completed, 2 usage or configuration error, 3 canceled,
// 4 failed, 5 aborted.
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
	"sync"
	"syscall"
	"time"

	"github.com/waferd/waferd/board"
	"github.com/waferd/waferd/inspection"
	"github.com/waferd/waferd/inspection/recipe"
	"github.com/waferd/waferd/inspection/results"
	"github.com/waferd/waferd/internal/logging"
	"github.com/waferd/waferd/motion/grbl"
	"github.com/waferd/waferd/sim"
	"github.com/waferd/waferd/stop"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// Exit statuses.
const (
	exitCompleted = 0
	exitInternal  = 1
	exitUsage     = 2
	exitCanceled  = 3
	exitFailed    = 4
	exitAborted   = 5
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return exitUsage
	}
	switch args[0] {
	case "run":
		return cmdRun(args[1:], stdout, stderr)
	case "serve":
		return cmdServe(args[1:], stdout, stderr)
	case "version", "--version":
		fmt.Fprintln(stdout, "waferd", version)
		return 0
	case "help", "-h", "--help":
		usage(stdout)
		return 0
	}
	fmt.Fprintf(stderr, "waferd: unknown command %q\n", args[0])
	usage(stderr)
	return exitUsage
}

func usage(w io.Writer) {
	fmt.Fprint(w, `usage:
  waferd run --recipe FILE [--data DIR] [--sim]   run one inspection
  waferd serve --config FILE | --sim [--data DIR]  run the controller daemon
  waferd version                                   print the version

Run "waferd run -h" for the options of run.
`)
}

func cmdRun(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("waferd run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	recipePath := fs.String("recipe", "", "recipe `file` (TOML) to run")
	dataDir := fs.String("data", ".", "data `directory`; runs are written under DIR/runs/")
	useSim := fs.Bool("sim", true, "run on the simulated board (the only board this build opens for run)")
	timeScale := fs.Float64("time-scale", 1, "simulated board only: run stage motion this many times faster than real time")
	logLevel := fs.String("log-level", "info", "log `level`: error, warning, notice, info or debug")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "waferd run: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	if *recipePath == "" {
		fmt.Fprintln(stderr, "waferd run: --recipe FILE is required (try examples/recipes/demo.toml)")
		return exitUsage
	}
	if !*useSim {
		fmt.Fprintln(stderr, "waferd run: real hardware is not supported by this build yet; use --sim")
		return exitUsage
	}
	if *timeScale <= 0 {
		fmt.Fprintf(stderr, "waferd run: --time-scale must be > 0 (got %g)\n", *timeScale)
		return exitUsage
	}
	lvl, err := logging.ParseLevel(*logLevel)
	if err != nil {
		fmt.Fprintf(stderr, "waferd run: --log-level: %v\n", err)
		return exitUsage
	}
	logs := logging.Auto(stderr, lvl)
	log := logs.For("waferd")

	simCfg := sim.Config{TimeScale: *timeScale}
	rec, err := recipe.Load(*recipePath, simCfg.Limits())
	if err != nil {
		fmt.Fprintf(stderr, "waferd run: %v\n", err)
		return exitUsage
	}
	store, err := results.Open(*dataDir)
	if err != nil {
		fmt.Fprintf(stderr, "waferd run: %v\n", err)
		return exitUsage
	}

	markInterrupted(store, log)

	// Signals go through the run's one cancel path: the first cancels the
	// run with a typed cause (SIGINT: operator, SIGTERM: shutdown); a
	// further one hurries the safe stop but never skips it.
	runCtx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	var runner *inspection.Runner
	var runnerMu sync.Mutex
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	go func() {
		for s := range sigs {
			if runCtx.Err() == nil {
				reason := stop.Operator
				if s == syscall.SIGTERM {
					reason = stop.Shutdown
				}
				cancel(stop.New(reason, s.String()))
				continue
			}
			runnerMu.Lock()
			if runner != nil {
				runner.Hurry("second " + s.String())
			}
			runnerMu.Unlock()
		}
	}()

	simCfg.Scene = sim.SceneFor(rec, simCfg.FOV())
	simCfg.Logf = logs.For("grblsim").Debugf
	openCtx, openCancel := context.WithTimeout(runCtx, 10*time.Second)
	b, err := board.OpenSim(openCtx, board.SimConfig{
		Sim:  simCfg,
		GRBL: grbl.Config{Logf: logs.For("grbl").Debugf},
	})
	openCancel()
	if err != nil {
		if c, ok := stop.FromContext(runCtx); ok {
			log.Warnf("%v before the run started", c)
			return exitCanceled
		}
		log.Errorf("%v", err)
		return exitFailed
	}
	defer func() {
		if err := b.Close(); err != nil {
			log.Errorf("closing the board: %v", err)
		}
	}()

	p := newProgress(stdout)
	r := &inspection.Runner{
		Stage: b.Stage, Light: b.Light, Camera: b.Camera, Store: store,
		Log: logs.For("runner"), Progress: p.site,
	}
	runnerMu.Lock()
	runner = r
	runnerMu.Unlock()
	out, err := r.Run(runCtx, rec)
	p.end()
	if err != nil {
		log.Errorf("%v", err)
		return exitFailed
	}
	fmt.Fprintf(stdout, "%s: %s, %d/%d sites, %d defects", out.RunID, out.State, out.Done, out.Total, out.Defects)
	if out.Reason != "" {
		fmt.Fprintf(stdout, " (%s)", out.Reason)
	}
	fmt.Fprintf(stdout, "\nresults:   %s\nwafer map: %s\n", out.Dir, filepath.Join(out.Dir, "wafermap.png"))
	switch out.State {
	case inspection.Completed:
		return exitCompleted
	case inspection.Canceled:
		return exitCanceled
	case inspection.Aborted:
		return exitAborted
	default:
		return exitFailed
	}
}

// markInterrupted marks every run found unfinished in store (a crash or
// power loss during it) as interrupted, and logs each.
func markInterrupted(store *results.Store, log *logging.Log) {
	marked, err := store.MarkInterrupted()
	if err != nil {
		log.Errorf("checking for unfinished runs: %v", err)
	}
	for _, m := range marked {
		log.Warnf("run %s was found unfinished (%d/%d sites): marked interrupted", m.ID, m.SitesDone, m.SitesTotal)
	}
}
