// Command vmhelper is the scenario's tool inside the `make test-system` VM
// (vmtest/system/scenario.sh); it is not part of the product.
//
//	vmhelper grbl PORT             serve the GRBL emulator on a serial port;
//	                               print "RT <byte> <unix ns>" for every
//	                               realtime byte it receives
//	vmhelper console PORT TIMEOUT SEND EXPECT [SEND EXPECT]...
//	                               on a serial console port: discard what is
//	                               pending, then for each pair write SEND and
//	                               a newline and read until the regular
//	                               expression EXPECT matches what came back
//	vmhelper write FILE VALUE      write VALUE to FILE (a gpio-sim pull) and
//	                               print "T <unix ns>" taken just before
//	vmhelper run DIR [STATE [MIN_SITES [TIMEOUT]]]
//	                               print the newest run record under DIR/runs
//	                               (or DIR's own run.json, DIR being a run's
//	                               directory) as "id state reason
//	                               sites_done/sites_total";
//	                               with STATE, wait (up to TIMEOUT, default
//	                               60s) until it is in STATE with at least
//	                               MIN_SITES sites done
//
// Exit status 1 on a failed expectation or wait, 2 on bad usage.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"syscall"
	"time"

	"go.bug.st/serial"

	"github.com/waferd/waferd/sim"
	"github.com/waferd/waferd/sim/grblsim"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch args := os.Args[2:]; os.Args[1] {
	case "grbl":
		if len(args) != 1 {
			usage()
		}
		err = serveGRBL(args[0])
	case "console":
		if len(args) < 4 || len(args)%2 != 0 {
			usage()
		}
		err = console(args[0], args[1], args[2:])
	case "write":
		if len(args) != 2 {
			usage()
		}
		fmt.Printf("T %d\n", time.Now().UnixNano())
		err = os.WriteFile(args[0], []byte(args[1]), 0o644)
	case "run":
		if len(args) < 1 || len(args) > 4 {
			usage()
		}
		err = waitRun(args)
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "vmhelper:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: vmhelper grbl PORT | console PORT TIMEOUT SEND EXPECT... | write FILE VALUE | run DIR [STATE [MIN_SITES [TIMEOUT]]]")
	os.Exit(2)
}

func open(port string) (serial.Port, error) {
	return serial.Open(port, &serial.Mode{BaudRate: 115200, DataBits: 8, Parity: serial.NoParity, StopBits: serial.OneStopBit})
}

func serveGRBL(port string) error {
	p, err := open(port)
	if err != nil {
		return err
	}
	// The simulated board's stage profile (a 300 mm table whose machine
	// space is 0..300 mm), as waferd's default travel expects, locked
	// until homed.
	cfg := sim.EmulatorConfig(sim.Config{TimeScale: 1})
	cfg.HomingRequired = true
	emu := grblsim.New(cfg)
	emu.OnRealtime(func(b byte, at time.Time) {
		name := map[byte]string{'!': "!", '~': "~", '?': "?", 0x18: "reset"}[b]
		if name == "?" {
			return // the status polls: ten a second
		}
		if name == "" {
			name = fmt.Sprintf("0x%02x", b)
		}
		fmt.Printf("RT %s %d\n", name, at.UnixNano())
	})
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	fmt.Printf("serving the GRBL emulator on %s\n", port)
	err = emu.Serve(ctx, p)
	if ctx.Err() != nil {
		return emu.Close()
	}
	return err
}

func console(port, timeout string, pairs []string) error {
	d, err := time.ParseDuration(timeout)
	if err != nil {
		return err
	}
	p, err := open(port)
	if err != nil {
		return err
	}
	defer p.Close()
	if err := p.ResetInputBuffer(); err != nil {
		return err
	}
	if err := p.SetReadTimeout(100 * time.Millisecond); err != nil {
		return err
	}
	buf := make([]byte, 4096)
	for i := 0; i < len(pairs); i += 2 {
		send, expect := pairs[i], regexp.MustCompile(pairs[i+1])
		if _, err := p.Write([]byte(send + "\n")); err != nil {
			return err
		}
		var got []byte
		deadline := time.Now().Add(d)
		for !expect.Match(got) {
			if time.Now().After(deadline) {
				os.Stdout.Write(got)
				return fmt.Errorf("console %s: %q: no %q within %v", port, send, expect, d)
			}
			n, err := p.Read(buf)
			if err != nil {
				return err
			}
			got = append(got, buf[:n]...)
		}
		os.Stdout.Write(got)
		fmt.Println()
	}
	return nil
}

type runRecord struct {
	ID         string `json:"id"`
	State      string `json:"state"`
	Reason     string `json:"reason"`
	SitesDone  int    `json:"sites_done"`
	SitesTotal int    `json:"sites_total"`
	StartedAt  string `json:"started_at"`
}

func newest(dir string) (*runRecord, error) {
	files, err := filepath.Glob(filepath.Join(dir, "runs", "*", "run.json"))
	if _, serr := os.Stat(filepath.Join(dir, "run.json")); serr == nil {
		files = []string{filepath.Join(dir, "run.json")}
	}
	if err != nil || len(files) == 0 {
		return nil, fmt.Errorf("no run records under %s/runs", dir)
	}
	var runs []*runRecord
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		var r runRecord
		if err := json.Unmarshal(b, &r); err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		runs = append(runs, &r)
	}
	sort.Slice(runs, func(i, j int) bool { return runs[i].StartedAt < runs[j].StartedAt })
	return runs[len(runs)-1], nil
}

func waitRun(args []string) error {
	dir := args[0]
	state, minSites, timeout := "", 0, time.Minute
	if len(args) > 1 {
		state = args[1]
	}
	if len(args) > 2 {
		n, err := strconv.Atoi(args[2])
		if err != nil {
			return err
		}
		minSites = n
	}
	if len(args) > 3 {
		d, err := time.ParseDuration(args[3])
		if err != nil {
			return err
		}
		timeout = d
	}
	deadline := time.Now().Add(timeout)
	for {
		r, err := newest(dir)
		if err == nil && (state == "" || r.State == state && r.SitesDone >= minSites) {
			fmt.Printf("%s %s %q %d/%d\n", r.ID, r.State, r.Reason, r.SitesDone, r.SitesTotal)
			return nil
		}
		if time.Now().After(deadline) {
			if err != nil {
				return err
			}
			return fmt.Errorf("newest run %s is %s (%q) with %d/%d sites, not %s with %d after %v",
				r.ID, r.State, r.Reason, r.SitesDone, r.SitesTotal, state, minSites, timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
