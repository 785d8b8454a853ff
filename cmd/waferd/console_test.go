package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// simConfig writes a configuration for the simulated board at 20 times
// real time, results under data.
func simConfig(t *testing.T, data string) string {
	p := filepath.Join(t.TempDir(), "waferd.toml")
	doc := "[sim]\nenabled = true\ntime_scale = 20.0\n[data]\ndir = \"" + data + "\"\n"
	require.NoError(t, os.WriteFile(p, []byte(doc), 0o644))
	return p
}

// TestServeConsoleStdioScript is `printf '...' | waferd serve --sim
// --console stdio`: the commands run in order, the built-in demo recipe
// runs, and the end of input shuts the daemon down cleanly, stopping the
// run safely.
func TestServeConsoleStdioScript(t *testing.T) {
	data := t.TempDir()
	cmd := exec.Command(waferdBin, "serve", "--config", simConfig(t, data), "--console", "stdio")
	cmd.Stdin = strings.NewReader("version\nstatus\nhome\nmove 150 150\nlight on 50%\nlight off\ncapture c1\nsatus\nrun ../demo\nrun demo\n")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	done := make(chan error, 1)
	require.NoError(t, cmd.Start())
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		require.NoError(t, err, "exit 0 at the end of input; stderr:\n%s", &stderr)
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("serve did not exit at the end of input; stdout:\n%s\nstderr:\n%s", &stdout, &stderr)
	}
	out := stdout.String()
	for _, want := range []string{
		"waferd dev\n",
		"position NOT trusted: home first\n",
		"homed: stage Idle at X 0.000 Y 0.000 mm\n",
		"moved: stage Idle at X 150.000 Y 150.000 mm\n",
		"light on at 50%\n", "light off\n",
		"captured " + filepath.Join(data, "captures", "c1.png"),
		"error: unknown command \"satus\": did you mean status?",
		"error: run: \"../demo\" is not a valid RECIPE",
		"run demo started: 61 sites",
		"canceled, ", "(shutdown: end of console input)\n",
	} {
		assert.Contains(t, out, want, "stdout:\n%s", out)
	}
	assert.NotContains(t, out, "waferd> ", "no prompt on a pipe")
	m := readRun(t, data)
	assert.Equal(t, "canceled", m["state"])
	assert.Equal(t, "shutdown: end of console input", m["reason"])
	assert.Equal(t, "built-in demo.toml", m["recipe_file"])
	assert.Contains(t, stderr.String(), "console input ended: shutting down")
}

// TestServeConsolePTY is `waferd serve --sim --console pty`: the path of a
// fresh pseudo-terminal is printed, and an engineer connected to it runs
// and stops a recipe.
func TestServeConsolePTY(t *testing.T) {
	data := t.TempDir()
	cmd := exec.Command(waferdBin, "serve", "--config", simConfig(t, data), "--console", "pty")
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	stderr := &lockedBuffer{}
	cmd.Stderr = stderr
	require.NoError(t, cmd.Start())
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	exited := false
	t.Cleanup(func() {
		if !exited {
			_ = cmd.Process.Kill()
			<-done
		}
	})
	first, err := bufio.NewReader(stdout).ReadString('\n')
	require.NoError(t, err, "stderr:\n%s", stderr)
	m := regexp.MustCompile(`^console on (/dev/pts/\d+) \(connect: screen /dev/pts/\d+ 115200\)\n$`).FindStringSubmatch(first)
	require.NotNil(t, m, first)

	f, err := os.OpenFile(m[1], os.O_RDWR|syscall.O_NOCTTY, 0)
	require.NoError(t, err)
	defer f.Close()
	expect := readTerminal(t, f, stderr)
	_, err = f.WriteString("status\r")
	require.NoError(t, err)
	expect("machine   idle\r\n")
	_, err = f.WriteString("run demo\r")
	require.NoError(t, err)
	expect(" site 2/61 ")
	_, err = f.WriteString("stop\r")
	require.NoError(t, err)
	expect("stop: stopping the run demo safely")
	expect("canceled, ")
	expect("(operator: console pty " + m[1] + ")\r\n")

	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	select {
	case err := <-done:
		exited = true
		require.NoError(t, err, "stderr:\n%s", stderr)
	case <-time.After(20 * time.Second):
		t.Fatalf("serve did not exit after SIGTERM; stderr:\n%s", stderr)
	}
	run := readRun(t, data)
	assert.Equal(t, "canceled", run["state"])
	assert.Equal(t, "operator: console pty "+m[1], run["reason"])
}

func TestServeConsoleFlags(t *testing.T) {
	var out, errb bytes.Buffer
	p := filepath.Join(t.TempDir(), "w.toml")
	require.NoError(t, os.WriteFile(p, []byte("[stage]\nport = \"/dev/ttyUSB0\"\n[light]\nchip = \"gpiochip0\"\nline = \"GPIO17\"\n"), 0o644))
	assert.Equal(t, exitUsage, run([]string{"serve", "--config", p, "--console", "pty"}, &out, &errb))
	assert.Contains(t, errb.String(), "--console pty: only on the simulated board")
	errb.Reset()
	assert.Equal(t, exitUsage, run([]string{"serve", "--sim", "--console", "ttyS0"}, &out, &errb))
	assert.Contains(t, errb.String(), `--console "ttyS0": want stdio, pty or a serial device path`)
}

// TestServePerDeviceSim is machine bring-up with every device named "sim"
// in an ordinary configuration (no [sim] section): board.Open serves each
// from the simulated board, the log says so, and the console drives them.
func TestServePerDeviceSim(t *testing.T) {
	data := t.TempDir()
	p := filepath.Join(t.TempDir(), "waferd.toml")
	doc := `[stage]
port = "sim"
[light]
chip = "sim"
[camera]
device = "sim"
width = 256
height = 256
[data]
dir = "` + data + `"
`
	require.NoError(t, os.WriteFile(p, []byte(doc), 0o644))
	cmd := exec.Command(waferdBin, "serve", "--config", p, "--console", "stdio")
	cmd.Stdin = strings.NewReader("status\nhome\nmove 20 30\nlight on\nlight off\ncapture bringup\n")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	require.NoError(t, cmd.Start())
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		require.NoError(t, err, "stderr:\n%s", &stderr)
	case <-time.After(90 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("serve did not exit at the end of input; stdout:\n%s\nstderr:\n%s", &stdout, &stderr)
	}
	out := stdout.String()
	for _, want := range []string{
		"homed: stage Idle at X 0.000 Y 0.000 mm\n",
		"moved: stage Idle at X 20.000 Y 30.000 mm\n",
		"light on", "light off\n",
		"captured " + filepath.Join(data, "captures", "bringup.png"),
	} {
		assert.Contains(t, out, want, "stdout:\n%s\nstderr:\n%s", out, &stderr)
	}
	assert.Contains(t, stderr.String(), "simulated devices: light, stage, camera")
	assert.FileExists(t, filepath.Join(data, "captures", "bringup.png"))
}

// TestServeConsoleCtrlDOnATerminal: on a terminal, Ctrl-D closes the stdio
// console only. A run in progress goes on, the daemon keeps running with
// the terminal given back (signals from Ctrl-C again), and SIGTERM then
// stops it, the run with it.
func TestServeConsoleCtrlDOnATerminal(t *testing.T) {
	data := t.TempDir()
	master, slave, err := pty.Open()
	require.NoError(t, err)
	defer master.Close()
	cmd := exec.Command(waferdBin, "serve", "--config", simConfig(t, data), "--console", "stdio")
	cmd.Stdin, cmd.Stdout = slave, slave
	stderr := &lockedBuffer{}
	cmd.Stderr = stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true}
	require.NoError(t, cmd.Start())
	require.NoError(t, slave.Close())
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	exited := false
	t.Cleanup(func() {
		if !exited {
			_ = cmd.Process.Kill()
			<-done
		}
	})
	expect := readTerminal(t, master, stderr)
	expect("waferd> ")
	_, err = master.WriteString("run demo\r")
	require.NoError(t, err)
	expect(" site 2/61 ")
	_, err = master.Write([]byte{0x04}) // Ctrl-D on an empty line
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		return strings.Contains(stderr.String(), "console on the terminal closed (Ctrl-D); waferd keeps running")
	}, 30*time.Second, 5*time.Millisecond, "stderr:\n%s", stderr)
	select {
	case err := <-done:
		exited = true
		t.Fatalf("Ctrl-D ended the daemon: %v; stderr:\n%s", err, stderr)
	case <-time.After(500 * time.Millisecond):
	}
	runs, _ := filepath.Glob(filepath.Join(data, "runs", "*", "run.json"))
	require.Len(t, runs, 1)
	raw, err := os.ReadFile(runs[0])
	require.NoError(t, err)
	assert.Contains(t, string(raw), `"state": "running"`, "the run goes on")

	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	select {
	case err := <-done:
		exited = true
		require.NoError(t, err, "stderr:\n%s", stderr)
	case <-time.After(20 * time.Second):
		t.Fatalf("serve did not exit after SIGTERM; stderr:\n%s", stderr)
	}
	assert.Equal(t, "canceled", readRun(t, data)["state"])
}

// readTerminal reads the engineer's end of a terminal in the background
// and returns a function that waits (at most 30 s) until what was read
// contains s; a failure shows the terminal and logs (what String says).
func readTerminal(t *testing.T, f io.Reader, logs fmt.Stringer) func(s string) {
	got := &lockedBuffer{}
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := f.Read(buf)
			got.Write(buf[:n])
			if err != nil {
				return
			}
		}
	}()
	return func(s string) {
		t.Helper()
		require.Eventually(t, func() bool { return strings.Contains(got.String(), s) }, 30*time.Second, 5*time.Millisecond,
			"%q; terminal:\n%s\nlog:\n%s", s, got, logs)
	}
}

// lockedBuffer is a bytes.Buffer safe for a writer goroutine and a reader.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestServeExitsPastAConsoleNobodyReads: a serial console whose far end
// takes no output fills up and blocks its writer (a serial port's Close
// does not unblock a blocked write). SIGTERM must still end the daemon,
// well within systemd's stop timeout (20 s). On a pty the console gives up
// its writer after its flush timeouts; on a real UART the kernel's close
// may also wait for the transmitter to drain (closing_wait, 30 s by
// default), which the daemon's bounded wait for its consoles covers and
// this test cannot reproduce.
func TestServeExitsPastAConsoleNobodyReads(t *testing.T) {
	master, slave, err := pty.Open()
	require.NoError(t, err)
	defer master.Close()
	defer slave.Close()
	data := t.TempDir()
	p := filepath.Join(t.TempDir(), "waferd.toml")
	doc := "[sim]\nenabled = true\ntime_scale = 20.0\n[data]\ndir = \"" + data + "\"\n[console]\nport = \"" + slave.Name() + "\"\n"
	require.NoError(t, os.WriteFile(p, []byte(doc), 0o644))
	cmd := exec.Command(waferdBin, "serve", "--config", p)
	stderr := &lockedBuffer{}
	cmd.Stderr = stderr
	require.NoError(t, cmd.Start())
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	exited := false
	t.Cleanup(func() {
		if !exited {
			_ = cmd.Process.Kill()
			<-done
		}
	})
	require.Eventually(t, func() bool { return strings.Contains(stderr.String(), "ready") }, 30*time.Second, 5*time.Millisecond, "stderr:\n%s", stderr)
	// Ask for output and never read it: the pty's buffer fills.
	for range 100 {
		if _, err := master.WriteString("help\r"); err != nil {
			break
		}
	}
	time.Sleep(500 * time.Millisecond) // let the console write what it can
	start := time.Now()
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	select {
	case err := <-done:
		exited = true
		require.NoError(t, err, "stderr:\n%s", stderr)
		t.Logf("exited %v after SIGTERM", time.Since(start).Round(time.Millisecond))
	case <-time.After(15 * time.Second):
		t.Fatalf("serve did not exit within 15 s of SIGTERM; stderr:\n%s", stderr)
	}
}
