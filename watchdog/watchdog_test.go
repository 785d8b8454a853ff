package watchdog

import (
	"context"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// offset keeps the test's actions between the loop's ticks (which fall on
// multiples of the tick after Run starts), so that no two goroutines act at
// the same fake instant.
const offset = DefaultInterval / 2

type message struct {
	at    time.Duration // fake time since the test started
	state string
}

// notifySocket is a NOTIFY_SOCKET for SystemdNotifier. Datagrams are in its
// receive buffer as soon as SdNotify returns, so after synctest.Wait they are
// read without blocking.
type notifySocket struct {
	conn  *net.UnixConn
	start time.Time
	msgs  []message
}

func listenNotify(t *testing.T) *notifySocket {
	t.Helper()
	dir, err := os.MkdirTemp("", "wd") // short: sun_path holds 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	t.Setenv("NOTIFY_SOCKET", path)
	return &notifySocket{conn: conn, start: time.Now()}
}

// read collects the datagrams waiting in the socket.
func (s *notifySocket) read(t *testing.T) {
	t.Helper()
	rc, err := s.conn.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	for {
		var n int
		var rerr error
		if err := rc.Read(func(fd uintptr) bool {
			n, _, rerr = unix.Recvfrom(int(fd), buf, unix.MSG_DONTWAIT)
			return true
		}); err != nil {
			t.Fatal(err)
		}
		if errors.Is(rerr, unix.EAGAIN) {
			return
		}
		if rerr != nil {
			t.Fatal(rerr)
		}
		s.msgs = append(s.msgs, message{time.Since(s.start), string(buf[:n])})
	}
}

// advance lets fake time pass and collects what was sent meanwhile.
func (s *notifySocket) advance(t *testing.T, d time.Duration) {
	t.Helper()
	time.Sleep(d)
	synctest.Wait()
	s.read(t)
}

// pings returns the times of WATCHDOG=1 messages in [from, to).
func pings(msgs []message, from, to time.Duration) []time.Duration {
	var at []time.Duration
	for _, m := range msgs {
		if m.state == "WATCHDOG=1" && m.at >= from && m.at < to {
			at = append(at, m.at)
		}
	}
	return at
}

func states(msgs []message, prefix string) []string {
	var out []string
	for _, m := range msgs {
		if strings.HasPrefix(m.state, prefix) {
			out = append(out, m.state)
		}
	}
	return out
}

type faults struct {
	mu   sync.Mutex
	list []fault
}

func (f *faults) add(name string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.list = append(f.list, fault{name, err})
}

func (f *faults) get() []fault {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]fault(nil), f.list...)
}

// start runs w.Run and returns a stop function that cancels it and checks
// that it returned at once with the wanted error.
func start(t *testing.T, w *Watchdog) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	synctest.Wait()
	return func() error {
		t0 := time.Now()
		cancel()
		err := <-done
		if d := time.Since(t0); d != 0 {
			t.Errorf("Run returned %v after cancel, want at once", d)
		}
		return err
	}
}

func TestSystemdNotifyHealthyStaleRecovered(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sock := listenNotify(t)
		var f faults
		const sdInterval = 2 * time.Second
		w := New(Config{Notify: SystemdNotifier{}, NotifyInterval: sdInterval, OnFault: f.add, Log: t.Logf})
		stage := w.Register("stage-poll", time.Second)
		stop := start(t, w)
		w.Ready()
		w.SetStatus("idle")
		sock.advance(t, offset)

		// Healthy for 5 s: WATCHDOG=1 at least every sdInterval/2.
		for range 20 {
			stage.Beat()
			sock.advance(t, DefaultInterval)
		}
		healthyUntil := time.Since(sock.start)
		if got := states(sock.msgs, ""); !contains(got, "READY=1") || !contains(got, "STATUS=idle") {
			t.Fatalf("messages %q, want READY=1 and STATUS=idle", got)
		}
		ps := pings(sock.msgs, 0, healthyUntil)
		if len(ps) < 5 {
			t.Fatalf("%d WATCHDOG=1 in 5 s healthy, want ≥ 5: %v", len(ps), ps)
		}
		checkGaps(t, ps, sdInterval/2)
		if len(f.get()) != 0 {
			t.Fatalf("faults while healthy: %v", f.get())
		}

		// The stage poll hangs: one fault, then no WATCHDOG=1 at all.
		lastBeat := healthyUntil - DefaultInterval
		for range 12 {
			sock.advance(t, DefaultInterval)
		}
		fs := f.get()
		if len(fs) != 1 || fs[0].name != "stage-poll" || !errors.Is(fs[0].err, ErrStale) {
			t.Fatalf("faults after the heartbeat stopped: %v, want one ErrStale for stage-poll", fs)
		}
		staleAt := time.Duration(0)
		for _, m := range sock.msgs {
			if m.state == "STATUS=idle; watchdog: stage-poll stale" {
				staleAt = m.at
			}
		}
		if staleAt == 0 || staleAt > lastBeat+time.Second+DefaultInterval+offset {
			t.Fatalf("stale STATUS at %v (last beat %v); messages %v", staleAt, lastBeat, sock.msgs)
		}
		if late := pings(sock.msgs, staleAt, time.Hour); len(late) != 0 {
			t.Fatalf("WATCHDOG=1 sent at %v while stage-poll was stale (from %v)", late, staleAt)
		}
		if info := w.Snapshot(); len(info) != 1 || info[0].Fresh || info[0].Age < time.Second {
			t.Fatalf("Snapshot while stale: %+v", info)
		}

		// It recovers: pings and the plain status come back.
		recovered := time.Since(sock.start)
		for range 8 {
			stage.Beat()
			sock.advance(t, DefaultInterval)
		}
		if ps := pings(sock.msgs, recovered, time.Hour); len(ps) < 2 {
			t.Fatalf("%d WATCHDOG=1 after recovery, want ≥ 2", len(ps))
		}
		if st := states(sock.msgs, "STATUS="); st[len(st)-1] != "STATUS=idle" {
			t.Fatalf("status after recovery %q", st[len(st)-1])
		}
		if len(f.get()) != 1 {
			t.Fatalf("faults after recovery: %v", f.get())
		}

		w.Stopping()
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		sock.read(t)
		if last := sock.msgs[len(sock.msgs)-1].state; last != "STOPPING=1" {
			t.Fatalf("last message %q, want STOPPING=1", last)
		}
	})
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func checkGaps(t *testing.T, at []time.Duration, limit time.Duration) {
	t.Helper()
	for i := 1; i < len(at); i++ {
		if gap := at[i] - at[i-1]; gap > limit {
			t.Errorf("gap of %v between pings at %v and %v, want ≤ %v", gap, at[i-1], at[i], limit)
		}
	}
}

// recorder is a Notifier that keeps the states it was sent.
type recorder struct {
	mu    sync.Mutex
	start time.Time
	msgs  []message
}

func newRecorder() *recorder { return &recorder{start: time.Now()} }

func (r *recorder) Notify(state string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, message{time.Since(r.start), state})
	return nil
}

func (r *recorder) get() []message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]message(nil), r.msgs...)
}

func TestPausedHeartbeatNeverStale(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := newRecorder()
		var f faults
		w := New(Config{Notify: rec, NotifyInterval: time.Second, OnFault: f.add})
		runner := w.Register("runner", time.Second)
		runner.Pause()
		stop := start(t, w)
		defer stop()
		time.Sleep(offset + 5*time.Second)
		synctest.Wait()
		if len(f.get()) != 0 {
			t.Fatalf("faults from a paused heartbeat: %v", f.get())
		}
		checkGaps(t, pings(rec.get(), 0, time.Hour), 500*time.Millisecond)
		if n := len(pings(rec.get(), 0, time.Hour)); n < 10 {
			t.Fatalf("%d pings in 5 s with interval 1 s", n)
		}
		if info := w.Snapshot()[0]; !info.Paused || !info.Fresh {
			t.Fatalf("Snapshot of paused heartbeat: %+v", info)
		}
		runner.Resume() // counts from now
		time.Sleep(time.Second)
		synctest.Wait()
		if len(f.get()) != 0 {
			t.Fatalf("fault within max age of Resume: %v", f.get())
		}
		time.Sleep(2 * DefaultInterval)
		synctest.Wait()
		if fs := f.get(); len(fs) != 1 || !errors.Is(fs[0].err, ErrStale) {
			t.Fatalf("faults after resumed heartbeat stopped: %v", fs)
		}
	})
}

func TestLeaseExpiry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := newRecorder()
		var f faults
		var expired atomic.Int32
		w := New(Config{Notify: rec, NotifyInterval: 2 * time.Second, OnFault: f.add})
		var light *Lease
		light = w.Lease("light", 2*time.Second, func() {
			expired.Add(1)
			light.End() // what switching the light off does
		})
		stop := start(t, w)
		defer stop()
		time.Sleep(offset)

		light.Start()
		light.Start() // does not extend
		time.Sleep(2*time.Second - time.Millisecond)
		synctest.Wait()
		if expired.Load() != 0 || len(f.get()) != 0 {
			t.Fatal("lease expired early")
		}
		if i := w.Snapshot()[0]; i.Paused || i.Age != 2*time.Second-time.Millisecond {
			t.Fatalf("Snapshot of a held lease: %+v", i)
		}
		time.Sleep(2 * time.Millisecond) // the loop wakes at the deadline itself
		synctest.Wait()
		if expired.Load() != 1 {
			t.Fatalf("expire called %d times at the deadline, want 1", expired.Load())
		}
		if fs := f.get(); len(fs) != 1 || fs[0].name != "light" || !errors.Is(fs[0].err, ErrLeaseExpired) {
			t.Fatalf("faults: %v, want one ErrLeaseExpired for light", fs)
		}

		// Held briefly, many times: never expires.
		for range 10 {
			light.Start()
			time.Sleep(1500 * time.Millisecond)
			light.End()
			time.Sleep(time.Second)
		}
		synctest.Wait()
		if expired.Load() != 1 || len(f.get()) != 1 {
			t.Fatalf("short holdings expired: %d expiries, faults %v", expired.Load(), f.get())
		}
		// An expired lease does not stop the systemd pings: nothing is hung.
		if n := len(pings(rec.get(), 3*time.Second, time.Hour)); n < 20 {
			t.Fatalf("%d pings after the lease expiry, want ≥ 20", n)
		}
	})
}

func TestShortLeaseIsPrecise(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var at atomic.Int64
		var f faults
		w := New(Config{OnFault: f.add})
		t0 := time.Now()
		l := w.Lease("flash", 30*time.Millisecond, func() { at.Store(int64(time.Since(t0))) })
		stop := start(t, w)
		defer stop()
		time.Sleep(10 * time.Millisecond)
		l.Start()
		time.Sleep(time.Second)
		synctest.Wait()
		if got := time.Duration(at.Load()); got != 40*time.Millisecond {
			t.Fatalf("30 ms lease started at 10 ms expired at %v, want 40ms", got)
		}
		if i := w.Snapshot()[0]; i.Fresh {
			t.Fatalf("expired lease still held reported fresh: %+v", i)
		}
		l.End()
		if i := w.Snapshot()[0]; !i.Fresh || !i.Paused {
			t.Fatalf("ended lease: %+v", i)
		}
	})
}

func TestSensorAlarm(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := newRecorder()
		var f faults
		var temp atomic.Int64 // °C
		var fail atomic.Bool
		temp.Store(50)
		read := func() (float64, error) {
			if fail.Load() {
				return 0, errors.New("i2c: no ack")
			}
			return float64(temp.Load()), nil
		}
		w := New(Config{Notify: rec, NotifyInterval: 2 * time.Second, OnFault: f.add, Log: t.Logf})
		w.AddSensor("board-temp", 500*time.Millisecond, read, 70)
		w.SetStatus("idle")
		stop := start(t, w)
		defer stop()
		step := func(d time.Duration) { time.Sleep(d); synctest.Wait() }
		step(offset + time.Second)
		if len(f.get()) != 0 {
			t.Fatalf("fault at 50 °C: %v", f.get())
		}
		if i := w.Snapshot()[0]; i.Value != 50 || i.Max != 70 || !i.Fresh {
			t.Fatalf("Snapshot: %+v", i)
		}
		temp.Store(75)
		step(500 * time.Millisecond)
		step(2 * time.Second) // stays hot: still one fault
		fs := f.get()
		if len(fs) != 1 || fs[0].name != "board-temp" || !errors.Is(fs[0].err, ErrOverLimit) || !strings.Contains(fs[0].err.Error(), "75.0") {
			t.Fatalf("faults at 75 °C: %v, want one ErrOverLimit", fs)
		}
		st := states(rec.get(), "STATUS=")
		if st[len(st)-1] != "STATUS=idle; watchdog: board-temp alarm" {
			t.Fatalf("status while hot: %q", st[len(st)-1])
		}
		hot := time.Since(rec.start)
		temp.Store(60)
		step(time.Second)
		temp.Store(80)
		step(time.Second)
		if fs := f.get(); len(fs) != 2 {
			t.Fatalf("faults after cooling and heating again: %v, want 2", fs)
		}
		if n := len(pings(rec.get(), hot, time.Hour)); n < 2 {
			t.Fatalf("%d pings during a temperature alarm; an alarm must not withhold them", n)
		}

		temp.Store(40)
		step(time.Second)
		fail.Store(true)
		step(2 * 500 * time.Millisecond) // two failed reads: logged only
		if len(f.get()) != 2 {
			t.Fatalf("fault after %d failed reads: %v", SensorErrorLimit-1, f.get())
		}
		step(500 * time.Millisecond)
		fs = f.get()
		if len(fs) != 3 || !errors.Is(fs[2].err, ErrSensorFailed) || !strings.Contains(fs[2].err.Error(), "no ack") {
			t.Fatalf("faults after %d failed reads: %v, want ErrSensorFailed", SensorErrorLimit, fs)
		}
	})
}

type fakeDevice struct {
	mu          sync.Mutex
	keepalives  []time.Duration
	start       time.Time
	magicClosed int
}

func (d *fakeDevice) keepalive() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.keepalives = append(d.keepalives, time.Since(d.start))
	return nil
}

func (d *fakeDevice) magicClose() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.magicClosed++
	return nil
}

func (d *fakeDevice) get() ([]time.Duration, int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]time.Duration(nil), d.keepalives...), d.magicClosed
}

func TestHardwareKeptAliveWhileHealthy(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dev := &fakeDevice{start: time.Now()}
		hw := &Hardware{path: "fake", identity: "fake", timeout: 10 * time.Second, magic: true, dev: dev}
		w := New(Config{Hardware: hw})
		hb := w.Register("camera", 2*time.Second)
		stop := start(t, w)
		time.Sleep(offset)
		for range 40 {
			hb.Beat()
			time.Sleep(DefaultInterval)
		}
		synctest.Wait()
		ka, _ := dev.get()
		if len(ka) < 2 {
			t.Fatalf("%d keepalives in 10 s with a 10 s timeout", len(ka))
		}
		checkGaps(t, ka, 5*time.Second)
		healthyUntil := time.Since(dev.start)
		time.Sleep(20 * time.Second)
		synctest.Wait()
		ka, _ = dev.get()
		if last := ka[len(ka)-1]; last > healthyUntil+2*time.Second {
			t.Fatalf("keepalive at %v although camera was stale from %v", last, healthyUntil+2*time.Second)
		}
		if err := stop(); err != nil {
			t.Fatalf("Run: %v", err)
		}
		if _, closed := dev.get(); closed != 1 {
			t.Fatalf("magic close %d times on exit, want 1", closed)
		}
		if err := hw.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
		if err := hw.Keepalive(); err == nil {
			t.Fatal("Keepalive after Close succeeded")
		}
	})
}

func TestHardwareWithoutMagicClose(t *testing.T) {
	hw := &Hardware{path: "fake", identity: "nowayout", timeout: time.Minute, dev: &fakeDevice{}}
	if err := hw.Close(); err == nil || !strings.Contains(err.Error(), "stays armed") {
		t.Fatalf("Close of a NOWAYOUT watchdog: %v, want a warning that it stays armed", err)
	}
}

// OpenHardware on something that is not a watchdog fails, and still writes
// the magic 'V' before closing: a failed set-up never leaves a real device
// armed.
func TestOpenHardwareNotAWatchdog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "watchdog")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := OpenHardware(path, 10*time.Second)
	if err == nil || !strings.Contains(err.Error(), "not a watchdog") {
		t.Fatalf("OpenHardware on a file: %v", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "V" {
		t.Fatalf("file holds %q after the failed open, want the magic %q", b, "V")
	}
}

func TestOpenHardwareErrors(t *testing.T) {
	if _, err := OpenHardware(filepath.Join(t.TempDir(), "none"), 0); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing device: %v", err)
	}
	if _, err := OpenHardware("/dev/null", 1500*time.Millisecond); err == nil || !strings.Contains(err.Error(), "whole number of seconds") {
		t.Errorf("fractional timeout: %v", err)
	}
	err := openError("/dev/watchdog", unix.EBUSY)
	if !errors.Is(err, unix.EBUSY) || !strings.Contains(err.Error(), "RuntimeWatchdogSec") {
		t.Errorf("busy device: %v, want EBUSY naming RuntimeWatchdogSec", err)
	}
}

// TestHardwareDevice opens a real watchdog. It is opt-in, because a crash of
// the test would leave the device armed and reset the machine: set
// WAFERD_TEST_WATCHDOG=/dev/watchdog0 (e.g. in a VM with i6300esb or
// softdog).
func TestHardwareDevice(t *testing.T) {
	path := os.Getenv("WAFERD_TEST_WATCHDOG")
	if path == "" {
		t.Skip("WAFERD_TEST_WATCHDOG not set: opening a real watchdog arms it (and resets the machine if the test dies); run it in a VM with i6300esb or softdog")
	}
	if _, err := os.Stat(path); err != nil {
		t.Skipf("no hardware watchdog: %v", err)
	}
	hw, err := OpenHardware(path, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: %s, timeout %v", hw.Path(), hw.Identity(), hw.Timeout())
	if hw.Timeout() != 30*time.Second {
		t.Errorf("timeout %v, want 30s", hw.Timeout())
	}
	if err := hw.Keepalive(); err != nil {
		t.Error(err)
	}
	if err := hw.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestThermalZone(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "temp")
	if err := os.WriteFile(path, []byte("45123\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if v, err := ThermalZone(path)(); err != nil || v != 45.123 {
		t.Fatalf("ThermalZone: %v, %v; want 45.123", v, err)
	}
	if err := os.WriteFile(path, []byte("hot\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ThermalZone(path)(); err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("bad content: %v", err)
	}
	if _, err := ThermalZone(filepath.Join(dir, "none"))(); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing zone: %v", err)
	}
	if _, err := os.Stat(DefaultThermalZone); err == nil {
		if v, err := ThermalZone("")(); err != nil || v < -40 || v > 150 {
			t.Errorf("this machine's %s: %v °C, %v", DefaultThermalZone, v, err)
		}
	}
}

func TestSystemdInterval(t *testing.T) {
	t.Setenv("WATCHDOG_USEC", "")
	t.Setenv("WATCHDOG_PID", "")
	if d, err := SystemdInterval(); d != 0 || err != nil {
		t.Fatalf("without WATCHDOG_USEC: %v, %v", d, err)
	}
	t.Setenv("WATCHDOG_USEC", "20000000")
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	if d, err := SystemdInterval(); d != 20*time.Second || err != nil {
		t.Fatalf("WATCHDOG_USEC=20000000: %v, %v", d, err)
	}
	t.Setenv("WATCHDOG_PID", "1")
	if d, err := SystemdInterval(); d != 0 || err != nil {
		t.Fatalf("another process's watchdog: %v, %v", d, err)
	}
	t.Setenv("WATCHDOG_USEC", "x")
	t.Setenv("WATCHDOG_PID", "")
	if _, err := SystemdInterval(); err == nil {
		t.Fatal("bad WATCHDOG_USEC accepted")
	}
}

func TestNotifierWithoutSocket(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	if err := (SystemdNotifier{}).Notify("READY=1"); err != nil {
		t.Fatalf("without NOTIFY_SOCKET: %v", err)
	}
	t.Setenv("NOTIFY_SOCKET", filepath.Join(t.TempDir(), "gone"))
	if err := (SystemdNotifier{}).Notify("READY=1"); err == nil || !strings.Contains(err.Error(), "READY=1") {
		t.Fatalf("to a missing socket: %v", err)
	}
}

func TestNotifyErrorsLoggedOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		t.Setenv("NOTIFY_SOCKET", filepath.Join(t.TempDir(), "gone"))
		var logs atomic.Int32
		w := New(Config{Notify: SystemdNotifier{}, NotifyInterval: time.Second, Log: func(string, ...any) { logs.Add(1) }})
		stop := start(t, w)
		defer stop()
		time.Sleep(10 * time.Second)
		synctest.Wait()
		if n := logs.Load(); n != 1 {
			t.Fatalf("%d log lines for the same notify error, want 1", n)
		}
	})
}

func TestRunTwiceAndWiringPanics(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := New(Config{})
		stop := start(t, w)
		defer stop()
		if err := w.Run(t.Context()); !errors.Is(err, ErrRunning) {
			t.Fatalf("second Run: %v", err)
		}
	})
	w := New(Config{})
	w.Register("camera", time.Second)
	for name, f := range map[string]func(){
		"duplicate":  func() { w.Lease("camera", time.Second, func() {}) },
		"empty name": func() { w.Register("", time.Second) },
		"zero age":   func() { w.Register("x", 0) },
		"nil expire": func() { w.Lease("l", time.Second, nil) },
		"nil read":   func() { w.AddSensor("s", time.Second, nil, 1) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: no panic", name)
				}
			}()
			f()
		}()
	}
}

func TestSnapshotKinds(t *testing.T) {
	w := New(Config{})
	w.Register("stage-poll", time.Second)
	w.Lease("light", time.Second, func() {})
	w.AddSensor("board-temp", time.Second, func() (float64, error) { return 1, nil }, 80)
	var kinds []string
	for _, i := range w.Snapshot() {
		kinds = append(kinds, i.Name+":"+i.Kind.String())
	}
	if got := strings.Join(kinds, " "); got != "stage-poll:heartbeat light:lease board-temp:sensor" {
		t.Fatalf("Snapshot kinds: %s", got)
	}
}
