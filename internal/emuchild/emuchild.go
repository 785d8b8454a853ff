// Package emuchild runs the GRBL emulator in a child process (the test
// binary, re-executed), the way the stage controller is a separate
// machine: its serial receive path does not wait for a Go scheduler it
// shares with waferd. The child serves a pty and reports, on stdout, every
// real-time byte it reads and every state change, with wall-clock times.
// The stop-latency benchmarks of inspection and gem use it; a test binary
// that starts children calls Main first thing in its TestMain.
package emuchild

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/waferd/waferd/board"
	"github.com/waferd/waferd/config"
	"github.com/waferd/waferd/motion"
	"github.com/waferd/waferd/sim"
	"github.com/waferd/waferd/sim/grblsim"
)

// emulatorChildEnv, set to the time scale, makes the test binary run as the
// emulator child instead of the tests; emulatorQuietEnv=1 keeps it from
// reporting events (a benchmark counting the parent's allocations does not
// want to parse them).
const (
	emulatorChildEnv = "WAFERD_TEST_EMULATOR_CHILD"
	emulatorQuietEnv = "WAFERD_TEST_EMULATOR_QUIET"
)

// Main runs the emulator child and exits, when this process is one (its
// environment says so); otherwise it returns at once. Call it first in
// TestMain.
func Main() {
	if scale := os.Getenv(emulatorChildEnv); scale != "" {
		os.Exit(runEmulatorChild(scale))
	}
}

// runEmulatorChild serves the emulator on a pty until stdin closes. Its
// stdout protocol, one line each:
//
//	pty PATH
//	rt BYTE UNIXNANO              (a real-time byte read, as a decimal)
//	st STATE SUB MOVING UNIXNANO  (a state change; MOVING 0 or 1)
func runEmulatorChild(scale string) int {
	ts, err := strconv.ParseFloat(scale, 64)
	if err != nil {
		fmt.Fprintf(os.Stderr, "emulator child: time scale %q: %v\n", scale, err)
		return 2
	}
	e := grblsim.New(sim.EmulatorConfig(sim.Config{TimeScale: ts}))
	var mu sync.Mutex
	out := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(os.Stdout, format, args...)
	}
	if os.Getenv(emulatorQuietEnv) != "1" {
		e.OnRealtime(func(b byte, at time.Time) { out("rt %d %d\n", b, at.UnixNano()) })
		e.OnState(func(st motion.State, sub int, at time.Time) {
			moving := 0
			if e.Moving() {
				moving = 1
			}
			out("st %s %d %d %d\n", st, sub, moving, at.UnixNano())
		})
	}
	path, err := e.OpenPTY()
	if err != nil {
		fmt.Fprintf(os.Stderr, "emulator child: %v\n", err)
		return 1
	}
	out("pty %s\n", path)
	_, _ = io.Copy(io.Discard, os.Stdin)
	_ = e.Close()
	return 0
}

// Child is the parent's handle on a running emulator child.
type Child struct {
	PTY string
	cmd *exec.Cmd
	in  io.WriteCloser
	// OnRT and OnState are called from the goroutine reading the child's
	// output, in order. Set them before the stage is opened.
	OnRT    func(b byte, at time.Time)
	OnState func(st string, sub int, moving bool, at time.Time)

	mu     sync.Mutex
	moving bool
	done   chan struct{}
}

// Start starts the emulator child at the time scale and waits for its
// pty. A quiet child reports no events. It ends when the test does.
func Start(tb testing.TB, scale float64, quiet bool) *Child {
	tb.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), emulatorChildEnv+"="+strconv.FormatFloat(scale, 'g', -1, 64))
	if quiet {
		cmd.Env = append(cmd.Env, emulatorQuietEnv+"=1")
	}
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	outp, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	c := &Child{cmd: cmd, in: in, done: make(chan struct{})}
	tb.Cleanup(func() {
		_ = c.in.Close()
		<-c.done
		_ = c.cmd.Wait()
	})
	sc := bufio.NewScanner(outp)
	if !sc.Scan() || !strings.HasPrefix(sc.Text(), "pty ") {
		tb.Fatalf("emulator child: no pty line (%q, %v)", sc.Text(), sc.Err())
	}
	c.PTY = strings.TrimPrefix(sc.Text(), "pty ")
	go c.read(sc)
	return c
}

func (c *Child) read(sc *bufio.Scanner) {
	defer close(c.done)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) == 3 && f[0] == "rt":
			b, _ := strconv.Atoi(f[1])
			ns, _ := strconv.ParseInt(f[2], 10, 64)
			if c.OnRT != nil {
				c.OnRT(byte(b), time.Unix(0, ns))
			}
		case len(f) == 5 && f[0] == "st":
			sub, _ := strconv.Atoi(f[2])
			moving := f[3] == "1"
			ns, _ := strconv.ParseInt(f[4], 10, 64)
			c.mu.Lock()
			c.moving = moving
			c.mu.Unlock()
			if c.OnState != nil {
				c.OnState(f[1], sub, moving, time.Unix(0, ns))
			}
		}
	}
}

// Moving reports whether the last state change left the stage moving.
func (c *Child) Moving() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.moving
}

// OpenBoard opens, through board.Open as for a machine, a board whose
// stage is the emulator child on its pty and whose light and camera are the
// simulated devices (per-device "sim"), the camera w×h pixels of 20 µm. The
// production GRBL driver settings apply (grbl.Config's defaults).
func OpenBoard(tb testing.TB, emu *Child, w, h int) *board.Board {
	tb.Helper()
	cfg, err := config.Parse("bench.toml", []byte(fmt.Sprintf(`
[stage]
port = %q
travel_max_mm = [300.0, 300.0]
[light]
chip = "sim"
[camera]
device = "sim"
width = %d
height = %d
pixel_um = 20
`, emu.PTY, w, h)))
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	brd, err := board.Open(ctx, cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := brd.Close(); err != nil {
			tb.Error(err)
		}
	})
	return brd
}
