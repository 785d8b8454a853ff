package inspection_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/waferd/waferd/inspection/results"
	"github.com/waferd/waferd/publish"
	"github.com/waferd/waferd/stop"
)

// BenchmarkStopLatencyPublishing measures the stop latency (a stop request
// to the feed-hold byte '!' at the emulator, as BenchmarkStopLatency) and
// the safe stop (Hold:0 to the outcome persisted, as BenchmarkSafeStop)
// with publishing off and with publishing on while the broker is down,
// taking turns within each iteration on the same board: "on" hands every
// event of the machine and the run to a publish.Publisher, as the daemon
// does (the machine's under its lock), whose outbox (with fsync, on disk)
// fills and whose sender keeps trying a broker that is not there.
//
// It reports p50/p99 of both latencies for each, and the paired medians
// on-ratio-p50 (stop latency on / off) and safe-ratio-p50 (safe stop on /
// off). Goal: no difference beyond noise (ratios near 1).
func BenchmarkStopLatencyPublishing(b *testing.B) {
	g := newStopBench(b)
	dir := b.TempDir()
	store, err := results.Open(dir)
	if err != nil {
		b.Fatal(err)
	}
	g.runner.Store = store // the publisher reads the runs it publishes from here
	ob, err := publish.OpenOutbox(filepath.Join(dir, "outbox.db"), 64<<20)
	if err != nil {
		b.Fatal(err)
	}
	defer ob.Close()
	pub, err := publish.New(publish.Config{Tool: "bench", Prefix: "bench", Brokers: []string{"mqtt://127.0.0.1:1"}, QoS: 1,
		Outbox: ob, Store: store, ConnectTimeout: time.Second, RetryMax: time.Second})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = pub.Run(ctx)
	}()
	defer func() {
		cancel()
		<-done
	}()
	accept := pub.Accept
	var lat, safe [2][]time.Duration // [off, on]
	var ratio, safeRatio []float64
	late := 0
	for i := 0; b.Loop(); i++ {
		var this, thisSafe [2]time.Duration
		for k := range 2 {
			on := (i+k)%2 == 1
			if on {
				g.events.Store(&accept)
			} else {
				g.events.Store(nil)
			}
			ts := g.stopOnce(func() { g.m.Stop(stop.Operator, "bench") }, stop.Operator)
			idx := 0
			if on {
				idx = 1
			}
			if !ts.moving {
				late++
				continue
			}
			this[idx], thisSafe[idx] = ts.bang.Sub(ts.trigger), ts.saved.Sub(ts.hold0)
			lat[idx] = append(lat[idx], this[idx])
			safe[idx] = append(safe[idx], thisSafe[idx])
		}
		if this[0] > 0 && this[1] > 0 {
			ratio = append(ratio, float64(this[1])/float64(this[0]))
			safeRatio = append(safeRatio, float64(thisSafe[1])/float64(thisSafe[0]))
		}
	}
	g.events.Store(nil)
	for k, name := range []string{"off", "on"} {
		percentiles(b, lat[k], time.Microsecond, name+"-", "µs")
		percentiles(b, safe[k], time.Millisecond, name+"-safe-", "ms")
	}
	if len(ratio) > 0 {
		b.ReportMetric(median(ratio), "on-ratio-p50")
		b.ReportMetric(median(safeRatio), "safe-ratio-p50")
	}
	b.ReportMetric(float64(late), "late")
	if st := pub.Status(); st.Connected || st.Depth == 0 {
		b.Fatalf("publishing was not on with the broker down: %+v", st)
	}
}
