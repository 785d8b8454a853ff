package main

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestServeTalksToSystemd runs `waferd serve --sim` as systemd would run the
// unit (NOTIFY_SOCKET, WATCHDOG_USEC) and checks READY, STATUS, WATCHDOG
// pings, then STOPPING and exit status 0 on SIGTERM.
func TestServeTalksToSystemd(t *testing.T) {
	dir, err := os.MkdirTemp("", "wd") // short: unix socket paths are < 108 bytes
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	require.NoError(t, err)
	defer conn.Close()

	var mu sync.Mutex
	var got []string
	go func() {
		buf := make([]byte, 4096)
		for {
			n, _, err := conn.ReadFromUnix(buf)
			if err != nil {
				return
			}
			mu.Lock()
			got = append(got, string(buf[:n]))
			mu.Unlock()
		}
	}()
	count := func(prefix string) int {
		mu.Lock()
		defer mu.Unlock()
		c := 0
		for _, s := range got {
			if strings.HasPrefix(s, prefix) {
				c++
			}
		}
		return c
	}

	cmd := exec.Command(waferdBin, "serve", "--sim", "--data", t.TempDir())
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+sock, "WATCHDOG_USEC=400000")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Start())
	require.Eventually(t, func() bool { return count("READY=1") == 1 }, 15*time.Second, 5*time.Millisecond, "READY=1; stderr:\n%s", &stderr)
	require.Eventually(t, func() bool { return count("WATCHDOG=1") >= 3 }, 5*time.Second, 5*time.Millisecond, "WATCHDOG=1 pings")
	assert.Positive(t, count("STATUS=machine idle"))

	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		require.NoError(t, err, "exit status 0 after SIGTERM; stderr:\n%s", &stderr)
	case <-time.After(15 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("serve did not exit after SIGTERM; stderr:\n%s", &stderr)
	}
	assert.Equal(t, 1, count("STOPPING=1"))
}

func TestServeRefusesBadConfig(t *testing.T) {
	p := filepath.Join(t.TempDir(), "waferd.toml")
	require.NoError(t, os.WriteFile(p, []byte("[stage]\nport = \"/dev/ttyUSB0\"\nbaud = 12\n[light]\nchip = \"gpiochip0\"\nline = \"GPIO17\"\n"), 0o644))
	var out, errb bytes.Buffer
	code := run([]string{"serve", "--config", p}, &out, &errb)
	assert.Equal(t, 2, code)
	assert.Contains(t, errb.String(), p+":3: stage.baud: unsupported baud rate 12")
	assert.Equal(t, 1, strings.Count(errb.String(), "waferd serve:"), "one message")

	code = run([]string{"serve"}, &out, &errb)
	assert.Equal(t, 2, code)
	assert.Contains(t, errb.String(), "give --config FILE")
}
