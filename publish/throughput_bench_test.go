package publish

import (
	"context"
	"image"
	"path/filepath"
	"testing"
	"time"

	"github.com/waferd/waferd/control"
	"github.com/waferd/waferd/inspection"
	"github.com/waferd/waferd/inspection/recipe"
	"github.com/waferd/waferd/inspection/results"
	"github.com/waferd/waferd/internal/mqtttest"
)

// BenchmarkOutbox measures how many events one tool publishes per second
// through the outbox: each event is a saved site (its defect list read
// back from disk, as in a run), committed to the bbolt outbox with fsync
// (on the disk of the test's temporary directory, not tmpfs), and, for
// "sent", published with QoS 1 to a local mosquitto and deleted once
// acknowledged. "committed" has the broker down: the outbox alone. It
// reports events/s; ns/op is the time per event.
func BenchmarkOutbox(b *testing.B) {
	for _, mode := range []string{"committed", "sent"} {
		b.Run(mode, func(b *testing.B) {
			url := "mqtt://127.0.0.1:1" // nothing listens there
			if mode == "sent" {
				url = mqtttest.Start(b, mqtttest.Options{}).URL
			}
			dir := b.TempDir()
			store, err := results.Open(dir)
			if err != nil {
				b.Fatal(err)
			}
			const sites = 100
			run := results.Run{ID: "20261201T000000Z-bench", Recipe: "bench"}
			for i := range sites {
				run.Sites = append(run.Sites, results.Site{Index: i, Die: [2]int{i, 0}})
			}
			rcd, err := store.Create(run)
			if err != nil {
				b.Fatal(err)
			}
			for i := range sites {
				d := []results.Defect{{XMM: 1, YMM: 2, Box: [4]int{1, 2, 3, 4}, AreaPx: 7, AreaUM2: 28, Peak: 80}}
				if err := rcd.SaveSite(i, d, image.NewGray(image.Rect(0, 0, 8, 8))); err != nil {
					b.Fatal(err)
				}
			}
			ob, err := OpenOutbox(filepath.Join(dir, "outbox.db"), 1<<30)
			if err != nil {
				b.Fatal(err)
			}
			defer ob.Close()
			pub, err := New(Config{Tool: "bench", Prefix: "bench", Brokers: []string{url}, QoS: 1, Outbox: ob, Store: store,
				RetryMax: time.Second, DrainTimeout: time.Millisecond})
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
			if mode == "sent" {
				for !pub.Status().Connected {
					time.Sleep(time.Millisecond)
				}
			}
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < b.N; i++ {
				pub.Accept(control.Event{Kind: control.RunProgress, Progress: inspection.Progress{
					RunID: run.ID, Done: i%sites + 1, Site: recipe.Site{Index: i % sites}}})
			}
			for {
				st := pub.Status()
				if mode == "committed" && st.Depth >= b.N || mode == "sent" && st.Sent >= uint64(b.N) {
					break
				}
				time.Sleep(100 * time.Microsecond)
			}
			el := time.Since(start)
			b.StopTimer()
			b.ReportMetric(float64(b.N)/el.Seconds(), "events/s")
		})
	}
}
