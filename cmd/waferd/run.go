package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"

	"github.com/waferd/waferd/board"
	"github.com/waferd/waferd/config"
	"github.com/waferd/waferd/inspection/recipe"
	"github.com/waferd/waferd/inspection/results"
	"github.com/waferd/waferd/internal/logging"
	"github.com/waferd/waferd/machine"
	"github.com/waferd/waferd/stop"
)

// runReason: Ctrl-C is the operator's stop, SIGTERM a shutdown.
func runReason(s os.Signal) stop.Reason {
	if s == syscall.SIGTERM {
		return stop.Shutdown
	}
	return stop.Operator
}

// cmdRun runs one recipe on the machine — the daemon with one run and no
// console — on the simulated board (the default) or on the hardware a
// configuration names (--config), and exits with the run's outcome.
func cmdRun(sigs *signals, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("waferd run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	recipePath := fs.String("recipe", "", "recipe `file` (TOML) to run")
	cfgPath := fs.String("config", "", "configuration `file` of the machine (TOML; see systemd/waferd.toml); without it, the simulated board")
	useSim := fs.Bool("sim", false, "the simulated board (the default without --config; with --config, that configuration on the simulated board)")
	dataDir := fs.String("data", "", "data `directory`; runs are written under DIR/runs/ (default: [data] dir with --config, else .)")
	timeScale := fs.Float64("time-scale", 1, "simulated board only: stage motion this many times faster than real time")
	logLevel := fs.String("log-level", "", "log `level`: error, warning, notice, info (default) or debug")
	fs.Usage = func() { fmt.Fprint(stderr, runUsage); fs.PrintDefaults() }
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
	if *timeScale <= 0 {
		fmt.Fprintf(stderr, "waferd run: --time-scale must be > 0 (got %g)\n", *timeScale)
		return exitUsage
	}
	if _, err := logging.ParseLevel(*logLevel); err != nil {
		fmt.Fprintf(stderr, "waferd run: --log-level: %v\n", err)
		return exitUsage
	}
	if *cfgPath == "" && *dataDir == "" {
		*dataDir = "."
	}
	cfg, err := loadConfig(*cfgPath, *useSim, *dataDir, *logLevel, "")
	if err != nil {
		fmt.Fprintf(stderr, "waferd run: %v\n", err)
		return exitUsage
	}
	if cfg.Sim.Enabled {
		cfg.Sim.TimeScale *= *timeScale
	} else if *timeScale != 1 {
		fmt.Fprintln(stderr, "waferd run: --time-scale works on the simulated board only")
		return exitUsage
	}
	lvl, _ := logging.ParseLevel(cfg.Log.Level) // validated
	logs := logging.Auto(stderr, lvl)
	log := logs.For("waferd")

	// The recipe is validated completely before anything is opened.
	rec, err := recipe.Load(*recipePath, board.ExpectedLimits(cfg))
	if err != nil {
		fmt.Fprintf(stderr, "waferd run: %v\n", err)
		return exitUsage
	}
	store, err := results.Open(cfg.Data.Dir)
	if err != nil {
		fmt.Fprintf(stderr, "waferd run: %v\n", err)
		return exitUsage
	}
	log.Infof("recipe %s: %d sites; results in %s; opening the %s", rec.Name, len(rec.Sites), cfg.Data.Dir, boardName(cfg))
	ctx := sigs.Context()
	if canceledEarly(sigs, stderr) {
		return exitCanceled
	}
	interrupted := markInterrupted(store, log)
	pub, err := openPublishing(cfg, store, interrupted, logs)
	if err != nil {
		fmt.Fprintf(stderr, "waferd run: %v\n", err)
		return exitUsage
	}

	p := newProgress(stdout)
	m, err := openMachine(ctx, cfg, machineOptions{store: store, logs: logs, progress: p.site, stdout: stdout, pub: pub})
	if err != nil {
		_ = pub.stop()
		if canceledEarly(sigs, stderr) {
			return exitCanceled
		}
		log.Errorf("%v", err)
		if errors.Is(err, board.ErrMismatch) {
			return exitUsage
		}
		return exitFailed
	}
	defer m.close()
	if m.board.Limits != board.ExpectedLimits(cfg) {
		// A camera that chose another frame size: check again.
		if rec, err = recipe.Load(*recipePath, m.board.Limits); err != nil {
			fmt.Fprintf(stderr, "waferd run: %v (with the camera's actual frame size)\n", err)
			return exitUsage
		}
	}
	d := m.d
	sigs.attach(d.Stop, d.Hurry)
	d.Start()
	pub.start()
	defer func() {
		if err := m.shutdown(context.Background(), "end of waferd run"); err != nil {
			log.Errorf("%v", err)
		}
	}()
	if canceledEarly(sigs, stderr) {
		return exitCanceled
	}
	// A signal from here on stops the run through the claim's context.
	res, err := d.Run(ctx, rec)
	p.end()
	if err != nil {
		log.Errorf("%v", err)
		return exitFailed
	}
	fmt.Fprintf(stdout, "%s: %s, %d/%d sites, %s", res.RunID, res.Outcome, res.Done, res.Total, plural(res.Defects, "defect"))
	if res.Reason != "" {
		fmt.Fprintf(stdout, " (%s)", res.Reason)
	}
	fmt.Fprintf(stdout, "\nresults:   %s\n", res.Dir)
	switch {
	case !res.Recorded:
		fmt.Fprintf(stdout, "the outcome could NOT be recorded (see the log): %s/run.json still says running; the next start marks it interrupted\n", res.Dir)
		return exitFailed
	case res.MapWritten:
		fmt.Fprintf(stdout, "wafer map: %s\n", filepath.Join(res.Dir, "wafermap.png"))
	default:
		fmt.Fprintln(stdout, "wafer map: not drawn (see the log)")
	}
	switch res.Outcome {
	case machine.Completed:
		return exitCompleted
	case machine.Canceled:
		return exitCanceled
	case machine.Aborted:
		return exitAborted
	}
	return exitFailed
}

func boardName(cfg *config.Config) string {
	if cfg.Sim.Enabled {
		return "simulated board"
	}
	return "board"
}

// plural says "1 defect", "2 defects".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// canceledEarly reports whether a signal came before the run started, and
// says so in one line.
func canceledEarly(sigs *signals, stderr io.Writer) bool {
	c := sigs.First()
	if c == nil {
		return false
	}
	fmt.Fprintf(stderr, "waferd run: canceled before the run started (%s)\n", c.Detail)
	return true
}

const runUsage = `usage: waferd run --recipe FILE [--config FILE] [--sim] [--data DIR] [--time-scale N] [--log-level L]

Runs one inspection and exits with its outcome: 0 completed, 2 usage,
recipe or configuration error, 3 canceled (Ctrl-C/SIGINT, SIGTERM), 4
failed, 5 aborted (a device fault). Without --config it runs on the
simulated board.

`
