// Command waferd is the wafer-inspection controller.
//
//	waferd run --recipe FILE [--config FILE | --sim] [--data DIR]  run one inspection
//	waferd serve (--config FILE | --sim) [--data DIR] [--gem ADDR]  run the controller daemon
//	waferd collect --broker URL [--db DSN]                          write the fleet's results to PostgreSQL
//	waferd gem-host HOST:PORT                                       a factory host for people (SECS/GEM)
//	waferd version                                                  print the version
//
// Exit status: 0 completed, 2 usage or configuration error, 3 canceled,
// 4 failed, 5 aborted.
package main

import (
	"fmt"
	"io"
	"os"
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
		// Signals are caught before anything else is done.
		sigs := newSignals(runReason)
		defer sigs.close()
		return cmdRun(sigs, args[1:], stdout, stderr)
	case "serve":
		sigs := newSignals(serveReason)
		defer sigs.close()
		return cmdServe(sigs, args[1:], stdout, stderr)
	case "collect":
		sigs := newSignals(collectReason)
		defer sigs.close()
		return cmdCollect(sigs, args[1:], stdout, stderr)
	case "gem-host":
		return cmdGemHost(args[1:], os.Stdin, stdout, stderr)
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
  waferd run --recipe FILE [--config FILE | --sim] [--data DIR] [--time-scale N] [--log-level L]
        run one inspection (without --config: on the simulated board)
  waferd serve (--config FILE | --sim) [--data DIR] [--log-level L] [--console WHERE]... [--publish URL] [--gem ADDR]
        run the controller daemon
  waferd collect --broker URL... [--db DSN] [--prefix P]
        write every tool's runs and events from the broker into PostgreSQL
  waferd gem-host [--device-id N] [--trace] HOST:PORT
        a factory host for people: talk SECS/GEM to a waferd serve --gem
  waferd version
        print the version

"waferd run -h", "waferd serve -h", "waferd collect -h" and "waferd gem-host -h" describe every option.
`)
}
