package collect

import (
	"context"
	"fmt"
	"image"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/waferd/waferd/control"
	"github.com/waferd/waferd/inspection"
	"github.com/waferd/waferd/inspection/recipe"
	"github.com/waferd/waferd/inspection/results"
	"github.com/waferd/waferd/internal/logging"
	"github.com/waferd/waferd/internal/mqtttest"
	"github.com/waferd/waferd/internal/pgtest"
	"github.com/waferd/waferd/publish"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// pgxpool's health check goroutine ends shortly after Close.
		goleak.IgnoreTopFunction("github.com/jackc/pgx/v5/pgxpool.(*Pool).backgroundHealthCheck"),
		goleak.IgnoreTopFunction("github.com/jackc/puddle/v2.(*Pool).Close"))
}

// tool is a publisher with a results store, as on a tool.
type tool struct {
	store  *results.Store
	pub    *publish.Publisher
	cancel context.CancelFunc
	done   chan struct{}
}

func startTool(t *testing.T, name, broker string) *tool {
	t.Helper()
	dir := t.TempDir()
	store, err := results.Open(dir)
	require.NoError(t, err)
	ob, err := publish.OpenOutbox(filepath.Join(dir, "outbox.db"), 1<<20)
	require.NoError(t, err)
	pub, err := publish.New(publish.Config{Tool: name, Prefix: "fab", Brokers: []string{broker}, QoS: 1,
		Outbox: ob, Store: store, RetryMax: 200 * time.Millisecond})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	tl := &tool{store: store, pub: pub, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(tl.done)
		_ = pub.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-tl.done
		ob.Close()
	})
	return tl
}

// run records a finished run of n sites (site i has i%3 defects) and feeds
// the publisher the daemon's events.
func (tl *tool) run(t *testing.T, id string, n int) {
	t.Helper()
	run := results.Run{ID: id, Recipe: "demo"}
	for i := range n {
		run.Sites = append(run.Sites, results.Site{Index: i, Die: [2]int{i % 4, i / 4}, XMM: float64(i), YMM: 1})
	}
	rcd, err := tl.store.Create(run)
	require.NoError(t, err)
	tl.pub.Accept(control.Event{Kind: control.RunStarted, RunID: id})
	for i := range n {
		var d []results.Defect
		for k := range i % 3 {
			d = append(d, results.Defect{XMM: float64(k), YMM: 2, Box: [4]int{1, 2, 3, 4}, AreaPx: 5, AreaUM2: 1.5, Peak: 99})
		}
		require.NoError(t, rcd.SaveSite(i, d, image.NewGray(image.Rect(0, 0, 4, 4))))
		tl.pub.Accept(control.Event{Kind: control.RunProgress, Progress: inspection.Progress{RunID: id, Done: i + 1, Site: recipe.Site{Index: i}}})
	}
	require.NoError(t, rcd.Finish(results.Completed, "", nil, true))
	tl.pub.Accept(control.Event{Kind: control.RunEnded, Result: inspection.Result{RunID: id}})
}

func startCollector(t *testing.T, broker, dsn string) (*Collector, func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	c, err := Open(ctx, Config{Brokers: []string{broker}, Prefix: "fab", ClientID: "collect-" + t.Name(), DB: dsn,
		Log: logging.New(os.Stderr, logging.Options{Level: logging.Warn}).For("collect")})
	require.NoError(t, err)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = c.Run(ctx)
	}()
	stop := func() {
		cancel()
		<-done
		c.Close()
	}
	return c, stop
}

func count(t *testing.T, db *pgxpool.Pool, q string, args ...any) int {
	t.Helper()
	var n int
	require.NoError(t, db.QueryRow(context.Background(), q, args...).Scan(&n))
	return n
}

func TestCollectorWritesEveryToolOnce(t *testing.T) {
	b := mqtttest.Start(t, mqtttest.Options{})
	pg := pgtest.Start(t)
	defer pg.Stop()
	dsn := pg.NewDB(t, "fleet")
	db, err := pgxpool.New(context.Background(), dsn)
	require.NoError(t, err)
	defer db.Close()

	c, stop := startCollector(t, b.URL, dsn)
	defer func() { stop() }()
	t1, t2 := startTool(t, "t1", b.URL), startTool(t, "t2", b.URL)
	// The same run id on two tools: they are two runs.
	t1.run(t, "20261201T000000Z-demo", 6)
	t2.run(t, "20261201T000000Z-demo", 5)
	t2.run(t, "20261201T000100Z-demo", 4)
	require.Eventually(t, func() bool {
		return count(t, db, `SELECT count(*) FROM runs WHERE record IS NOT NULL`) == 3
	}, 20*time.Second, 10*time.Millisecond)
	assert.Equal(t, 15, count(t, db, `SELECT count(*) FROM sites`))
	assert.Equal(t, 0+1+2+0+1+2, count(t, db, `SELECT count(*) FROM defects WHERE tool = 't1'`), "i%3 defects for i < 6")
	assert.Equal(t, 3, count(t, db, `SELECT count(*) FROM runs WHERE state = 'completed' AND complete`))

	// At least once: the whole of a run sent again (a restart of the
	// tool, a resend) changes nothing.
	before := c.Stats().Received
	require.NoError(t, t1.pub.Recover([]results.Run{{ID: "20261201T000000Z-demo"}}))
	require.Eventually(t, func() bool { return c.Stats().Received >= before+10 }, 20*time.Second, 10*time.Millisecond)
	assert.Equal(t, 15, count(t, db, `SELECT count(*) FROM sites`))
	assert.Equal(t, 3, count(t, db, `SELECT count(*) FROM runs`))

	// A site lost on the way (a broker that crashed before it forwarded
	// it): the next ledger shows the run incomplete, the collector asks for
	// it again and gets it.
	_, err = db.Exec(context.Background(), `DELETE FROM sites WHERE tool = 't2' AND run_id = '20261201T000100Z-demo' AND idx = 2`)
	require.NoError(t, err)
	t2.run(t, "20261201T000200Z-demo", 2) // its ledger lists the damaged run too
	require.Eventually(t, func() bool {
		return count(t, db, `SELECT count(*) FROM sites WHERE tool = 't2' AND run_id = '20261201T000100Z-demo'`) == 4
	}, 20*time.Second, 10*time.Millisecond, "the lost site is asked for again")
	assert.Positive(t, c.Stats().Resends)

	// The README's queries run on what was collected.
	for _, q := range []string{QueryDefectsPerSite, QueryDiesAcrossTools} {
		rows, err := db.Query(context.Background(), q)
		require.NoError(t, err, q)
		n := 0
		for rows.Next() {
			n++
		}
		rows.Close()
		require.NoError(t, rows.Err())
		assert.Positive(t, n, q)
	}
	readme, err := os.ReadFile(repoFile("README.md"))
	require.NoError(t, err)
	for _, q := range []string{QueryDefectsPerSite, QueryDiesAcrossTools} {
		assert.True(t, strings.Contains(string(readme), q), "the README quotes the queries the test runs:\n%s", q)
	}

	// Tools' state: online, and the events of each.
	assert.Equal(t, 2, count(t, db, `SELECT count(*) FROM tools WHERE online`))

	// A restarted collector migrates nothing and goes on.
	stop()
	_, stop = startCollector(t, b.URL, dsn)
	assert.Equal(t, SchemaVersion, count(t, db, `SELECT max(version) FROM schema_version`))
	assert.Equal(t, SchemaVersion, count(t, db, `SELECT count(*) FROM schema_version`))
}

func TestMigrateRefusesANewerDatabase(t *testing.T) {
	pg := pgtest.Start(t)
	defer pg.Stop()
	dsn := pg.NewDB(t, "newer")
	ctx := context.Background()
	db, err := pgxpool.New(ctx, dsn)
	require.NoError(t, err)
	defer db.Close()
	require.NoError(t, Migrate(ctx, db))
	require.NoError(t, Migrate(ctx, db), "twice: nothing to do")
	_, err = db.Exec(ctx, `INSERT INTO schema_version (version) VALUES ($1)`, SchemaVersion+1)
	require.NoError(t, err)
	err = Migrate(ctx, db)
	require.ErrorContains(t, err, fmt.Sprintf("schema version %d, newer than this collector's %d", SchemaVersion+1, SchemaVersion))

	// Collectors starting at once take turns.
	fresh := pg.NewDB(t, "fresh")
	errs := make(chan error, 4)
	for range 4 {
		go func() {
			p, err := pgxpool.New(ctx, fresh)
			if err != nil {
				errs <- err
				return
			}
			defer p.Close()
			errs <- Migrate(ctx, p)
		}()
	}
	for range 4 {
		require.NoError(t, <-errs)
	}
}

func repoFile(parts ...string) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(append([]string{filepath.Dir(file), ".."}, parts...)...)
}
