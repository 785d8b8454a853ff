package main

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// BenchmarkServeReady measures the time from starting `waferd serve --sim`
// (exec) to its READY=1 on NOTIFY_SOCKET, as systemd sees it: the
// simulated board up (the GRBL emulator on its pty, the driver connected
// and its settings read), the results directory checked, the watchdog
// running. Each iteration is one start, then SIGTERM and exit. Reports
// p50-ms and p99-ms (nearest rank); ns/op is the mean. Goal (issue 8):
// within 100 ms. Use -benchtime=Nx.
func BenchmarkServeReady(b *testing.B) {
	dir, err := os.MkdirTemp("", "wd") // short: unix socket paths are < 108 bytes
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	ready := make(chan time.Time, 1)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, _, err := conn.ReadFromUnix(buf)
			if err != nil {
				return
			}
			if strings.Contains(string(buf[:n]), "READY=1") {
				ready <- time.Now()
			}
		}
	}()
	data := b.TempDir()
	var lat []time.Duration
	for b.Loop() {
		cmd := exec.Command(waferdBin, "serve", "--sim", "--data", data)
		cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+sock)
		t0 := time.Now()
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		select {
		case at := <-ready:
			lat = append(lat, at.Sub(t0))
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			b.Fatal("no READY=1 within 15 s")
		}
		_ = cmd.Process.Signal(syscall.SIGTERM)
		if err := cmd.Wait(); err != nil {
			b.Fatalf("serve after SIGTERM: %v", err)
		}
	}
	slices.Sort(lat)
	rank := func(p float64) float64 {
		i := int(float64(len(lat))*p+0.999999) - 1
		return float64(lat[max(i, 0)]) / float64(time.Millisecond)
	}
	var sum time.Duration
	for _, d := range lat {
		sum += d
	}
	b.ReportMetric(rank(0.5), "p50-ms")
	b.ReportMetric(rank(0.99), "p99-ms")
	b.ReportMetric(float64(sum)/float64(len(lat)), "ns/op")
}
