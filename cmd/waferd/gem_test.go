package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/arloliu/go-secs/v2/secs2"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/waferd/waferd/gem"
	"github.com/waferd/waferd/gem/gemhost"
)

// gemServe is `waferd serve --sim --gem 127.0.0.1:0 --console stdio` with
// a recipe directory holding the demo recipe: the console's input is a
// pipe the test writes to, its output a stream of lines.
type gemServe struct {
	cmd    *exec.Cmd
	addr   string
	data   string
	stdin  io.WriteCloser
	lines  chan string
	stderr *lockedBuffer
	done   chan error
}

func startGEMServe(t *testing.T) *gemServe {
	t.Helper()
	data := t.TempDir()
	recipes := filepath.Join(data, "recipes")
	require.NoError(t, os.Mkdir(recipes, 0o755))
	demo, err := os.ReadFile(filepath.Join("..", "..", "examples", "recipes", "demo.toml"))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(recipes, "demo.toml"), demo, 0o644))
	cfg := filepath.Join(t.TempDir(), "waferd.toml")
	doc := "[sim]\nenabled = true\ntime_scale = 10.0\n[data]\ndir = \"" + data + "\"\nrecipes = \"" + recipes + "\"\n" +
		"[gem]\ndevice_id = 7\nt3_ms = 5000\nestablish_retry_ms = 500\n"
	require.NoError(t, os.WriteFile(cfg, []byte(doc), 0o644))
	s := &gemServe{data: data, lines: make(chan string, 1024), stderr: &lockedBuffer{}, done: make(chan error, 1)}
	s.cmd = exec.Command(waferdBin, "serve", "--config", cfg, "--console", "stdio", "--gem", "127.0.0.1:0")
	s.cmd.Stderr = s.stderr
	s.stdin, err = s.cmd.StdinPipe()
	require.NoError(t, err)
	out, err := s.cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, s.cmd.Start())
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			s.lines <- sc.Text()
		}
		close(s.lines)
		s.done <- s.cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = s.stdin.Close()
		select {
		case <-s.done:
		case <-time.After(30 * time.Second):
			_ = s.cmd.Process.Kill()
			t.Errorf("serve did not exit; stderr:\n%s", s.stderr)
		}
	})
	line := s.expect(t, "gem on ")
	s.addr = strings.Fields(strings.TrimPrefix(line, "gem on "))[0]
	return s
}

// expect waits for a line of the console's output (stdout) containing want.
func (s *gemServe) expect(t *testing.T, want string) string {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case l, ok := <-s.lines:
			require.True(t, ok, "serve's output ended before %q; stderr:\n%s", want, s.stderr)
			if strings.Contains(l, want) {
				return l
			}
		case <-timeout:
			t.Fatalf("no %q from serve within 30 s; stderr:\n%s", want, s.stderr)
		}
	}
}

// console types a line at the console.
func (s *gemServe) console(t *testing.T, line string) {
	t.Helper()
	_, err := io.WriteString(s.stdin, line+"\n")
	require.NoError(t, err)
}

// host is the test's factory host: go-secs in the host role.
type host struct {
	*gemhost.Host
}

func connectHost(t *testing.T, addr string) *host {
	t.Helper()
	ctx := context.Background()
	h, err := gemhost.Dial(ctx, gemhost.Config{Addr: addr, DeviceID: 7, T3: 5 * time.Second})
	require.NoError(t, err)
	code, err := h.Establish(ctx)
	require.NoError(t, err)
	require.Equal(t, byte(0), code, "COMMACK")
	code, err = h.Online(ctx)
	require.NoError(t, err)
	require.Equal(t, byte(0), code, "ONLACK")
	_, err = h.Setup(ctx, gem.SVRunID, gem.SVSitesDone, gem.SVSitesTotal, gem.SVMachineState, gem.SVLatchReason)
	require.NoError(t, err)
	return &host{h}
}

// until returns the next event report of ceid, and the alarms reported
// before it.
func (h *host) until(t *testing.T, ceid uint32) (gemhost.Event, []gemhost.Alarm) {
	t.Helper()
	var alarms []gemhost.Alarm
	timeout := time.After(30 * time.Second)
	for {
		select {
		case m := <-h.Messages():
			switch {
			case m.Stream() == 6 && m.Function() == 11:
				ev, err := h.ParseEvent(m)
				require.NoError(t, err)
				if ev.CEID == ceid {
					return ev, alarms
				}
			case m.Stream() == 5 && m.Function() == 1:
				a, err := gemhost.ParseAlarm(m)
				require.NoError(t, err)
				alarms = append(alarms, a)
			}
		case <-timeout:
			t.Fatalf("no event %d within 30 s", ceid)
		}
	}
}

func (h *host) command(t *testing.T, rcmd string, ppid string) byte {
	t.Helper()
	var ps []gemhost.Param
	if ppid != "" {
		ps = append(ps, gemhost.Param{Name: "PPID", Value: ppid})
	}
	hc, _, err := h.Command(context.Background(), rcmd, ps...)
	require.NoError(t, err)
	return hc
}

func ascii(t *testing.T, it secs2.Item) string {
	t.Helper()
	require.NotNil(t, it)
	s, err := it.ToASCII()
	require.NoError(t, err, it.ToSML())
	return s
}

func runRecord(t *testing.T, data, id string) map[string]any {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(data, "runs", id, "run.json"))
	require.NoError(t, err)
	var m map[string]any
	require.NoError(t, json.Unmarshal(raw, &m))
	return m
}

// TestServeGEM drives `waferd serve --sim --gem` as a factory host does,
// over loopback TCP: establish communication, online remote, select and
// start the demo recipe, RunStarted and SiteCompleted reports, STOP
// mid-run (RunStopped with its reason, the run recorded canceled), ABORT
// (the run aborted, the alarm set), the latch cleared from the console
// (the alarm cleared), a bad and a good recipe uploaded, and the
// console's gem local refusing the host's commands.
func TestServeGEM(t *testing.T) {
	// The host's goroutines (go-secs, in this process) end with the test.
	before := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, before) })
	s := startGEMServe(t)
	h := connectHost(t, s.addr)
	defer h.Close()
	ctx := context.Background()

	require.Equal(t, byte(0), h.command(t, "PP-SELECT", "demo"))
	require.Equal(t, byte(4), h.command(t, "START", ""))
	ev, _ := h.until(t, gem.CERunStarted)
	assert.Equal(t, uint64(61), must(ev.Values[gem.SVSitesTotal].ToUint())[0])
	ev, _ = h.until(t, gem.CESiteCompleted)
	assert.Equal(t, uint64(1), must(ev.Values[gem.SVSitesDone].ToUint())[0])
	_, err := ev.Values[gem.DVSiteDefects].ToUint()
	require.NoError(t, err, "SiteCompleted carries the site's defects")
	require.Equal(t, byte(0), h.command(t, "STOP", ""))
	ev, _ = h.until(t, gem.CERunStopped)
	reason := ascii(t, ev.Values[gem.DVStopReason])
	assert.True(t, strings.HasPrefix(reason, "host: host 127.0.0.1:") && strings.HasSuffix(reason, " STOP"), reason)
	run := runRecord(t, s.data, ascii(t, ev.Values[gem.SVRunID]))
	assert.Equal(t, "canceled", run["state"])
	assert.Equal(t, reason, run["reason"])

	require.Equal(t, byte(4), h.command(t, "START", "demo"))
	h.until(t, gem.CESiteCompleted)
	require.Equal(t, byte(0), h.command(t, "ABORT", ""))
	ev, alarms := h.until(t, gem.CERunAborted)
	run = runRecord(t, s.data, ascii(t, ev.Values[gem.SVRunID]))
	assert.Equal(t, "aborted", run["state"])
	assert.Contains(t, run["reason"], "abort: host 127.0.0.1:")
	assert.Equal(t, false, run["position_trusted"], "reset at once: the position is lost")
	require.Len(t, alarms, 1)
	assert.Equal(t, gemhost.Alarm{Set: true, Category: 6, ID: gem.ALHostAbort, Text: "host ABORT: machine faulted"}, alarms[0])
	vals, err := h.Status(ctx, gem.SVMachineState, gem.SVAlarmsSet)
	require.NoError(t, err)
	assert.Equal(t, "faulted", ascii(t, vals[0]))
	assert.Equal(t, []uint64{gem.ALHostAbort}, must(vals[1].ToUint()))

	s.console(t, "reset")
	s.console(t, "y")
	_, alarms = h.until(t, gem.CELatchCleared)
	require.Len(t, alarms, 1)
	assert.Equal(t, gemhost.Alarm{Set: false, Category: 6, ID: gem.ALHostAbort, Text: "host ABORT: machine faulted"}, alarms[0])

	// Recipes: a bad one is refused and its first error logged; a good one
	// is stored.
	bad := []byte("name = \"bad\"\n[wafer]\ndiameter_mm = -1.0\n")
	m, err := h.Send(ctx, 7, 3, secs2.NewListItem(secs2.NewASCIIItem("bad"), secs2.NewBinaryItem(bad)))
	require.NoError(t, err)
	assert.Equal(t, "<B[1] 0x01>", gemhost.Body(m).ToSML(), "ACKC7 1: refused")
	_, err = os.Stat(filepath.Join(s.data, "recipes", "bad.toml"))
	assert.ErrorIs(t, err, os.ErrNotExist)
	good, err := os.ReadFile(filepath.Join("..", "..", "examples", "recipes", "demo.toml"))
	require.NoError(t, err)
	m, err = h.Send(ctx, 7, 3, secs2.NewListItem(secs2.NewASCIIItem("good"), secs2.NewBinaryItem(good)))
	require.NoError(t, err)
	assert.Equal(t, "<B[1] 0x00>", gemhost.Body(m).ToSML())
	ev, _ = h.until(t, gem.CEPPChanged)
	stored, err := os.ReadFile(filepath.Join(s.data, "recipes", "good.toml"))
	require.NoError(t, err)
	assert.Equal(t, good, stored)
	assert.Contains(t, s.stderr.String(), `S7F3 bad refused: recipe "bad" refused: bad.toml:`)

	// The console switches the host to local: its commands are refused.
	s.console(t, "gem local")
	s.expect(t, "gem: control state online local")
	assert.Equal(t, byte(2), h.command(t, "START", "good"))
	s.console(t, "gem")
	s.expect(t, "host      127.0.0.1:")
}

// TestGemHostTool is a field engineer proving the link with `waferd
// gem-host` against `waferd serve --sim --gem`, from a script.
func TestGemHostTool(t *testing.T) {
	s := startGEMServe(t)
	cmd := exec.Command(waferdBin, "gem-host", "--device-id", "7", "--trace", s.addr)
	cmd.Stdin = strings.NewReader("status\nrecipes\nselect demo\nstart\nwait SiteCompleted 30\ntrace off\nstop\nwait RunStopped 30\nalarms\nsend S1F3 W <L <U4 1003>>\nfrobnicate\nquit\n")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	require.NoError(t, cmd.Run(), "stderr:\n%s\nstdout:\n%s", &errb, &out)
	for _, want := range []string{
		"connected; establish communication (S1F13): COMMACK 0 (accepted)",
		"request online (S1F17): ONLACK 0 (online now)",
		"> Select.req", "< Select.rsp", "> S1F13 W <L[0]>",
		`  MachineState     "idle"`,
		`recipes: <L[1] <A[4] "demo"> >`,
		"PP-SELECT: HCACK 0 (done)",
		"START: HCACK 4 (accepted, the events follow)",
		"event SiteCompleted (102): ",
		"STOP: HCACK 0 (done)",
		`event RunStopped (104): `, `RunOutcome="canceled"`,
		"  alarm 3 clear host ABORT: machine faulted",
		`S1F4 <L[1] <A[4] "idle"> >`,
		`error: unknown command "frobnicate": help lists them`,
	} {
		assert.Contains(t, out.String(), want)
	}
	assert.NotContains(t, out.String(), "> S2F41 W <L[2] <A[4] \"STOP\">", "trace off")
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
