package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/waferd/waferd/internal/mqtttest"
	"github.com/waferd/waferd/internal/pgtest"
)

var (
	fleetTools = flag.Int("fleet.tools", 10, "simulated tools in TestFleet")
	fleetRuns  = flag.Int("fleet.runs", 3, "runs per tool in TestFleet")
)

// proc is a waferd process whose output is kept.
type proc struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	mu    sync.Mutex
	out   strings.Builder
	done  chan error
}

func startProc(t *testing.T, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(waferdBin, args...), done: make(chan error, 1)}
	var err error
	p.stdin, err = p.cmd.StdinPipe()
	require.NoError(t, err)
	pr, pw := io.Pipe()
	p.cmd.Stdout, p.cmd.Stderr = pw, pw
	require.NoError(t, p.cmd.Start())
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			p.mu.Lock()
			p.out.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
		}
	}()
	go func() {
		err := p.cmd.Wait()
		pw.Close()
		p.done <- err
	}()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
	})
	return p
}

func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

func (p *proc) count(re *regexp.Regexp) int { return len(re.FindAllString(p.output(), -1)) }

// kill SIGKILLs the process and waits for it.
func (p *proc) kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

var runEnded = regexp.MustCompile(`(?m)^run \S+ (completed|canceled|failed|aborted)`)

// fleetTool is one simulated tool: `waferd serve --sim --console stdio
// --publish URL` on its own data directory.
type fleetTool struct {
	name, config, data string
	p                  *proc
	want               int // runs it was asked for in its current process
}

func (ft *fleetTool) start(t *testing.T, broker string, runs int) {
	ft.p = startProc(t, "serve", "--config", ft.config, "--console", "stdio", "--publish", broker)
	ft.want = runs
	_, err := io.WriteString(ft.p.stdin, strings.Repeat("run small\nwait\n", runs))
	require.NoError(t, err)
}

func (ft *fleetTool) ended() int { return ft.p.count(runEnded) }

// TestFleet: ten simulated tools (waferd serve --sim processes) run
// recipes at once and publish to one broker; one collector writes to
// PostgreSQL. Meanwhile the broker is killed (SIGKILL) and restarted twice,
// one tool is SIGKILLed mid-run and restarted, and the collector is
// SIGKILLed and restarted. At the end every site of every run is in the
// database exactly once and every run's outcome is its run.json's.
// A longer soak: go test -run TestFleet ./cmd/waferd/ -args -fleet.tools=20 -fleet.runs=10
func TestFleet(t *testing.T) {
	if testing.Short() {
		t.Skip("-short (the ARM suites): a fleet of processes and a broker is not what they check; make test runs it")
	}
	b := mqtttest.Start(t, mqtttest.Options{})
	pg := pgtest.Start(t)
	defer pg.Stop()
	dsn := pg.NewDB(t, "fleet")
	collector := func() *proc {
		return startProc(t, "collect", "--broker", b.URL, "--db", dsn, "--prefix", "fleet", "--client-id", "fleet-collector")
	}
	coll := collector()

	recipes := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(recipes, "small.toml"), []byte(smallRecipe), 0o644))
	tools := make([]*fleetTool, *fleetTools)
	for i := range tools {
		ft := &fleetTool{name: fmt.Sprintf("tool%02d", i+1), data: t.TempDir()}
		ft.config = filepath.Join(t.TempDir(), "waferd.toml")
		// Small frames, and heartbeats that a host loaded by eleven
		// processes does not miss: this test is about what leaves the
		// tools, not about their watchdog.
		doc := fmt.Sprintf("[sim]\nenabled = true\ntime_scale = 20.0\n[camera]\nwidth = 256\nheight = 256\npixel_um = 20.0\n"+
			"[watchdog]\nstage_heartbeat_ms = 20000\ncamera_heartbeat_ms = 20000\nrunner_heartbeat_ms = 60000\n"+
			"[data]\ndir = %q\nrecipes = %q\n"+
			"[publish]\ntool = %q\ntopic_prefix = \"fleet\"\nkeepalive_s = 5\ndrain_timeout_ms = 5000\n", ft.data, recipes, ft.name)
		require.NoError(t, os.WriteFile(ft.config, []byte(doc), 0o644))
		ft.start(t, b.URL, *fleetRuns)
		tools[i] = ft
	}
	total := func() int {
		n := 0
		for _, ft := range tools {
			n += ft.ended()
		}
		return n
	}
	waitTotal := func(n int, what string) {
		t.Helper()
		require.Eventually(t, func() bool { return total() >= n }, 3*time.Minute, 20*time.Millisecond, "%d runs ended before %s", n, what)
	}
	all := *fleetTools * *fleetRuns
	step := max(all/6, 1)

	waitTotal(step, "the first broker kill")
	b.Kill()
	time.Sleep(300 * time.Millisecond) // the tools' outboxes fill meanwhile
	b.Restart()
	t.Logf("broker killed and restarted after %d runs", total())

	// A tool killed in the middle of a run: its run is interrupted, and
	// published as such by the next start.
	victim := tools[len(tools)/2]
	waitTotal(2*step, "the tool's kill")
	site := regexp.MustCompile(`(?m)^\S+: site \d+/`)
	before := victim.p.count(site)
	require.Eventually(t, func() bool { return victim.p.count(site) > before }, time.Minute, time.Millisecond, "the victim in a run")
	victim.p.kill()
	victimEnded := victim.ended()
	victim.start(t, b.URL, 2)
	t.Logf("%s SIGKILLed after %d runs and restarted", victim.name, victimEnded)

	waitTotal(3*step, "the collector's kill")
	coll.kill()
	time.Sleep(300 * time.Millisecond)
	coll = collector()
	t.Logf("collector killed and restarted after %d runs", total())

	waitTotal(4*step, "the second broker kill")
	b.Kill()
	time.Sleep(300 * time.Millisecond)
	b.Restart()
	t.Logf("broker killed and restarted again after %d runs", total())

	for _, ft := range tools {
		require.Eventually(t, func() bool { return ft.ended() >= ft.want }, 3*time.Minute, 20*time.Millisecond,
			"%s: its runs end; output:\n%s", ft.name, ft.p.output())
	}

	db, err := pgxpool.New(context.Background(), dsn)
	require.NoError(t, err)
	defer db.Close()
	var (
		report string
		lost   int // at the last comparison
	)
	ok := assert.Eventually(t, func() bool {
		lost, report = compareFleet(t, db, tools)
		return lost == 0
	}, 90*time.Second, 200*time.Millisecond, "the database matches every tool's runs")
	if !ok {
		t.Logf("differences:\n%s\ncollector:\n%s", report, coll.output())
	}
	runs, sites := 0, 0
	require.NoError(t, db.QueryRow(context.Background(), `SELECT count(*), (SELECT count(*) FROM sites) FROM runs`).Scan(&runs, &sites))
	// No site twice: the sites table's key (tool, run_id, idx) guarantees
	// it. What can differ is a site row the tool does not count as done,
	// or one of a run no tool has: each run's rows must be its sites_done,
	// and there must be no others.
	extra, done := fleetSiteCounts(t, db, tools)
	assert.Empty(t, extra, "site rows that no tool counts as done")
	assert.Equal(t, done, sites, "site rows in the database, sites done in the tools' run.json")
	var interrupted int
	require.NoError(t, db.QueryRow(context.Background(), `SELECT count(*) FROM runs WHERE tool = $1 AND state = 'interrupted'`, victim.name).Scan(&interrupted))
	assert.Equal(t, 1, interrupted, "the killed tool's run is recorded interrupted")
	t.Logf("database: %d runs, %d sites from %d tools; lost %d", runs, sites, len(tools), lost)

	// A clean shutdown of every tool marks it offline.
	for _, ft := range tools {
		require.NoError(t, ft.p.stdin.Close())
	}
	for _, ft := range tools {
		select {
		case err := <-ft.p.done:
			require.NoError(t, err, "%s exits 0; output:\n%s", ft.name, ft.p.output())
		case <-time.After(time.Minute):
			t.Fatalf("%s did not exit", ft.name)
		}
	}
	require.Eventually(t, func() bool {
		var online int
		_ = db.QueryRow(context.Background(), `SELECT count(*) FROM tools WHERE online`).Scan(&online)
		return online == 0
	}, 30*time.Second, 50*time.Millisecond, "every tool offline in the database")
	require.NoError(t, coll.cmd.Process.Signal(syscall.SIGTERM))
	select {
	case err := <-coll.done:
		require.NoError(t, err, "collector exits 0 on SIGTERM:\n%s", coll.output())
		if m := regexp.MustCompile(`stopped: .*`).FindString(coll.output()); m != "" {
			t.Logf("last collector: %s", m)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the collector did not exit on SIGTERM")
	}
}

// fleetRun is one run.json of one tool.
type fleetRun struct {
	tool      string
	ID        string `json:"id"`
	State     string `json:"state"`
	SitesDone int    `json:"sites_done"`
	Sites     []struct {
		Index  int    `json:"index"`
		Status string `json:"status"`
	} `json:"sites"`
}

// readFleetRuns reads every run.json of every tool.
func readFleetRuns(t *testing.T, tools []*fleetTool) []fleetRun {
	t.Helper()
	var runs []fleetRun
	for _, ft := range tools {
		files, err := filepath.Glob(filepath.Join(ft.data, "runs", "*", "run.json"))
		require.NoError(t, err)
		for _, f := range files {
			raw, err := os.ReadFile(f)
			require.NoError(t, err)
			run := fleetRun{tool: ft.name}
			require.NoError(t, json.Unmarshal(raw, &run))
			runs = append(runs, run)
		}
	}
	return runs
}

// compareFleet compares every run.json of every tool with the database and
// returns the number of lost messages (runs missing or with another
// outcome, sites missing) and a description of the differences.
func compareFleet(t *testing.T, db *pgxpool.Pool, tools []*fleetTool) (lost int, report string) {
	t.Helper()
	ctx := context.Background()
	var diffs []string
	for _, run := range readFleetRuns(t, tools) {
		if run.State == "running" {
			lost++
			diffs = append(diffs, fmt.Sprintf("%s %s: still running", run.tool, run.ID))
			continue
		}
		var state string
		if err := db.QueryRow(ctx, `SELECT state FROM runs WHERE tool = $1 AND run_id = $2 AND record IS NOT NULL`, run.tool, run.ID).Scan(&state); err != nil {
			lost++
			diffs = append(diffs, fmt.Sprintf("%s %s: no record in the database (%v)", run.tool, run.ID, err))
			continue
		}
		if state != run.State {
			lost++
			diffs = append(diffs, fmt.Sprintf("%s %s: %s in the database, %s in run.json", run.tool, run.ID, state, run.State))
		}
		rows, err := db.Query(ctx, `SELECT idx FROM sites WHERE tool = $1 AND run_id = $2`, run.tool, run.ID)
		require.NoError(t, err)
		have := map[int]int{}
		for rows.Next() {
			var i int
			require.NoError(t, rows.Scan(&i))
			have[i]++
		}
		rows.Close()
		var missing []int
		for _, s := range run.Sites {
			if s.Status == "done" && have[s.Index] != 1 {
				missing = append(missing, s.Index)
			}
		}
		if len(missing) > 0 {
			sort.Ints(missing)
			lost += len(missing)
			diffs = append(diffs, fmt.Sprintf("%s %s: sites %v missing", run.tool, run.ID, missing))
		}
	}
	return lost, strings.Join(diffs, "\n")
}

// fleetSiteCounts compares, for every run.json of every tool, the number
// of the run's rows in the sites table with its sites_done, and returns the
// differences and the sum of sites_done.
func fleetSiteCounts(t *testing.T, db *pgxpool.Pool, tools []*fleetTool) (diffs []string, done int) {
	t.Helper()
	ctx := context.Background()
	for _, run := range readFleetRuns(t, tools) {
		done += run.SitesDone
		var rows int
		require.NoError(t, db.QueryRow(ctx, `SELECT count(*) FROM sites WHERE tool = $1 AND run_id = $2`, run.tool, run.ID).Scan(&rows))
		if rows != run.SitesDone {
			diffs = append(diffs, fmt.Sprintf("%s %s: %d site rows, sites_done %d", run.tool, run.ID, rows, run.SitesDone))
		}
	}
	return diffs, done
}
