package grblsim

import (
	"os"
	"slices"
	"testing"
	"time"
)

// BenchmarkPTYByte measures the floor under the stop-latency figures: from
// writing one real-time byte ('?') on the pty's slave side, as the serial
// driver does (a plain write(2)), to the emulator's reader seeing it, with
// nothing else going on. Reports p50-µs and p99-µs (nearest rank).
func BenchmarkPTYByte(b *testing.B) {
	e := New(Config{})
	path, err := e.OpenPTY()
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	tty, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer tty.Close()
	seen := make(chan time.Time, 1)
	e.OnRealtime(func(c byte, at time.Time) {
		if c == '?' {
			select {
			case seen <- at:
			default:
			}
		}
	})
	defer e.OnRealtime(nil)
	var lat []time.Duration
	for b.Loop() {
		time.Sleep(time.Millisecond) // let the status report go out; idle again
		t0 := time.Now()
		if _, err := tty.Write([]byte{'?'}); err != nil {
			b.Fatal(err)
		}
		select {
		case at := <-seen:
			lat = append(lat, at.Sub(t0))
		case <-time.After(5 * time.Second):
			b.Fatal("the emulator did not see the byte")
		}
	}
	slices.Sort(lat)
	rank := func(p float64) float64 {
		i := int(float64(len(lat))*p+0.999999) - 1
		return float64(lat[max(i, 0)]) / float64(time.Microsecond)
	}
	b.ReportMetric(rank(0.5), "p50-µs")
	b.ReportMetric(rank(0.99), "p99-µs")
}
