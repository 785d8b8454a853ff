package input

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"
	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpiotest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newPin(name string, l gpio.Level) *gpiotest.Pin {
	return &gpiotest.Pin{N: name, L: l, EdgesChan: make(chan gpio.Level, 32)}
}

// setLevel changes the line without an edge event (a missed edge).
func setLevel(p *gpiotest.Pin, l gpio.Level) {
	p.Lock()
	p.L = l
	p.Unlock()
}

// runner starts run in a goroutine and returns a stop function that cancels
// it, checks it returned nil within poll, and fails the test otherwise.
func runner(t *testing.T, poll time.Duration, run func(context.Context) error) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	time.Sleep(drainWait) // the drain after In ends with one empty wait
	synctest.Wait()       // Run has read the level and is waiting for an edge
	return func() {
		t.Helper()
		start := time.Now()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		if d := time.Since(start); d > poll {
			t.Errorf("Run returned %v after cancel, want ≤ %v", d, poll)
		}
	}
}

// edges injects levels gap apart, as a bouncing contact does.
func edges(p *gpiotest.Pin, gap time.Duration, ls ...gpio.Level) {
	for i, l := range ls {
		if i > 0 {
			time.Sleep(gap)
		}
		p.EdgesChan <- l
	}
	synctest.Wait()
}

// count returns the number of onPress calls so far, after letting Run
// react to whatever was injected.
func count(n *atomic.Int32) int32 {
	synctest.Wait()
	return n.Load()
}

func TestButtonBounceIsOnePress(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newPin("STOP", gpio.Low)
		var n atomic.Int32
		b, err := NewButton(Config{Pin: p, Pull: gpio.PullDown}, func() { n.Add(1) })
		if err != nil {
			t.Fatal(err)
		}
		stop := runner(t, DefaultPoll, b.Run)
		defer stop()

		// The leading edge is the press, at once: no time passes.
		start := time.Now()
		edges(p, 0, gpio.High)
		if got := count(&n); got != 1 || !b.Pressed() || time.Since(start) != 0 {
			t.Fatalf("after the leading edge: %d presses, Pressed=%v, %v later; want 1 true 0s", got, b.Pressed(), time.Since(start))
		}
		// The bounce that follows (edges within 8 ms, ending high) is the
		// same press.
		edges(p, 2*time.Millisecond, gpio.Low, gpio.High, gpio.Low, gpio.High)
		if got := count(&n); got != 1 {
			t.Fatalf("%d presses after bounce, want 1", got)
		}
		// Holding it produces no further press.
		time.Sleep(time.Second)
		if got := count(&n); got != 1 || !b.Pressed() {
			t.Fatalf("held: %d presses, Pressed=%v; want 1 true", got, b.Pressed())
		}
		// Neither does a bouncy release.
		edges(p, time.Millisecond, gpio.Low, gpio.High, gpio.Low, gpio.High, gpio.Low)
		time.Sleep(DefaultDebounce + time.Millisecond)
		if got := count(&n); got != 1 || b.Pressed() {
			t.Fatalf("after a bouncy release: %d presses, Pressed=%v; want 1 false", got, b.Pressed())
		}
	})
}

func TestButtonPressReleasePress(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newPin("STOP", gpio.Low)
		var n atomic.Int32
		const debounce = 10 * time.Millisecond
		b, err := NewButton(Config{Pin: p, Debounce: debounce}, func() { n.Add(1) })
		if err != nil {
			t.Fatal(err)
		}
		stop := runner(t, DefaultPoll, b.Run)
		defer stop()

		edges(p, 0, gpio.High) // a clean press
		if got := count(&n); got != 1 {
			t.Fatalf("%d presses after a clean press, want 1", got)
		}
		edges(p, time.Millisecond, gpio.Low, gpio.High, gpio.Low) // a bouncy release
		time.Sleep(debounce - time.Millisecond)
		if !b.Pressed() {
			t.Fatal("Pressed() = false before the release was steady for Debounce")
		}
		time.Sleep(2 * time.Millisecond)
		if count(&n) != 1 || b.Pressed() {
			t.Fatalf("after release: Pressed=%v presses=%d, want false 1", b.Pressed(), n.Load())
		}
		edges(p, 0, gpio.High)
		if got := count(&n); got != 2 || b.Presses() != 2 {
			t.Fatalf("%d presses (Presses()=%d) after the second press, want 2", got, b.Presses())
		}
	})
}

// A release shorter than Debounce is bounce: pressing again within it is
// the same press.
func TestButtonShortReleaseIsSamePress(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newPin("STOP", gpio.Low)
		var n atomic.Int32
		b, _ := NewButton(Config{Pin: p}, func() { n.Add(1) })
		stop := runner(t, DefaultPoll, b.Run)
		defer stop()

		edges(p, 0, gpio.High)
		edges(p, 0, gpio.Low)
		time.Sleep(DefaultDebounce - time.Millisecond)
		edges(p, 0, gpio.High)
		time.Sleep(time.Second)
		if got := count(&n); got != 1 || !b.Pressed() {
			t.Fatalf("press, %v release, press: %d presses, Pressed=%v; want 1 true", DefaultDebounce-time.Millisecond, got, b.Pressed())
		}
	})
}

// A glitch to the active level that is still there when Run reads the line
// is a press (the safe failure for a stop input); one that is gone by then
// is not.
func TestButtonGlitch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newPin("STOP", gpio.Low)
		var n atomic.Int32
		b, _ := NewButton(Config{Pin: p}, func() { n.Add(1) })
		stop := runner(t, DefaultPoll, b.Run)
		defer stop()

		// An edge event after which the line reads inactive again (the
		// glitch ended before the wake-up): no press.
		edges(p, 0, gpio.Low)
		time.Sleep(time.Second)
		if got := count(&n); got != 0 || b.Pressed() {
			t.Fatalf("unconfirmed edge: %d presses, Pressed=%v; want 0 false", got, b.Pressed())
		}

		// A 5 ms glitch seen active: one press, released Debounce later.
		edges(p, 5*time.Millisecond, gpio.High, gpio.Low)
		if got := count(&n); got != 1 {
			t.Fatalf("%d presses from a 5 ms glitch, want 1", got)
		}
		time.Sleep(DefaultDebounce + time.Millisecond)
		if got := count(&n); got != 1 || b.Pressed() {
			t.Fatalf("after the glitch: %d presses, Pressed=%v; want 1 false", got, b.Pressed())
		}
	})
}

func TestButtonActiveLow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newPin("STOP_N", gpio.Low)
		var n atomic.Int32
		// The pull-up makes the idle line High (gpiotest applies it in In).
		b, _ := NewButton(Config{Pin: p, ActiveLow: true, Pull: gpio.PullUp}, func() { n.Add(1) })
		stop := runner(t, DefaultPoll, b.Run)
		defer stop()
		if b.Pressed() || p.P != gpio.PullUp {
			t.Fatalf("idle active-low button: Pressed=%v pull=%s", b.Pressed(), p.P)
		}
		edges(p, time.Millisecond, gpio.Low, gpio.High, gpio.Low)
		if got := count(&n); got != 1 || !b.Pressed() {
			t.Fatalf("active-low press: %d presses, Pressed=%v; want 1 true", got, b.Pressed())
		}
		edges(p, 0, gpio.High)
		time.Sleep(DefaultDebounce + time.Millisecond)
		if count(&n) != 1 || b.Pressed() {
			t.Fatalf("after release: %d presses, Pressed=%v; want 1 false", n.Load(), b.Pressed())
		}
	})
}

func TestButtonHeldAtStartIsNotAPress(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newPin("STOP", gpio.High)
		var n atomic.Int32
		b, _ := NewButton(Config{Pin: p}, func() { n.Add(1) })
		stop := runner(t, DefaultPoll, b.Run)
		defer stop()
		time.Sleep(time.Second)
		if count(&n) != 0 || !b.Pressed() {
			t.Fatalf("held at start: presses=%d Pressed=%v, want 0 true", n.Load(), b.Pressed())
		}
		edges(p, 0, gpio.Low)
		time.Sleep(DefaultDebounce + time.Millisecond)
		edges(p, 0, gpio.High)
		if count(&n) != 1 {
			t.Fatalf("release and press after start: %d presses, want 1", n.Load())
		}
	})
}

// A lost edge event is caught by the level sampled every Poll; the press
// then counts at once, and so does a later release (after Debounce).
func TestButtonMissedEdge(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newPin("STOP", gpio.Low)
		var n atomic.Int32
		b, _ := NewButton(Config{Pin: p}, func() { n.Add(1) })
		stop := runner(t, DefaultPoll, b.Run)
		defer stop()
		setLevel(p, gpio.High)
		time.Sleep(DefaultPoll + time.Millisecond)
		if count(&n) != 1 || !b.Pressed() {
			t.Fatalf("press without an edge event: %d presses after Poll, Pressed=%v; want 1 true", n.Load(), b.Pressed())
		}
		setLevel(p, gpio.Low)
		time.Sleep(DefaultPoll + DefaultDebounce + time.Millisecond)
		if count(&n) != 1 || b.Pressed() {
			t.Fatalf("release without an edge event: %d presses, Pressed=%v; want 1 false", n.Load(), b.Pressed())
		}
	})
}

// keepEdgesPin is a test pin whose In keeps queued edges, as a kernel line
// buffer can hold events from before the request was reconfigured.
type keepEdgesPin struct{ *gpiotest.Pin }

func (p keepEdgesPin) In(pull gpio.Pull, _ gpio.Edge) error {
	p.Lock()
	p.P = pull
	p.Unlock()
	return nil
}

// Stale edges queued before Run are drained; the level read decides.
func TestButtonStaleEdgesDrained(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newPin("STOP", gpio.Low)
		var n atomic.Int32
		b, _ := NewButton(Config{Pin: keepEdgesPin{p}}, func() { n.Add(1) })
		for _, l := range []gpio.Level{gpio.High, gpio.Low, gpio.High, gpio.Low} {
			p.EdgesChan <- l
		}
		stop := runner(t, DefaultPoll, b.Run)
		defer stop()
		if len(p.EdgesChan) != 0 {
			t.Fatalf("%d stale edges left after Run started, want 0", len(p.EdgesChan))
		}
		time.Sleep(time.Second)
		synctest.Wait()
		if n.Load() != 0 {
			t.Fatalf("stale edges: %d presses, want 0", n.Load())
		}
	})
}

func TestEStopTripActiveRelease(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newPin("ESTOP", gpio.Low)
		var n atomic.Int32
		e, err := NewEStop(Config{Pin: p}, func() { n.Add(1) })
		if err != nil {
			t.Fatal(err)
		}
		if !e.Active() {
			t.Fatal("Active() = false before Run read the input; an unknown e-stop must count as engaged")
		}
		before := e.Released()
		stop := runner(t, DefaultPoll, e.Run)
		defer stop()
		if e.Active() || !closed(before) || !closed(e.Released()) {
			t.Fatalf("released at start: Active=%v released=%v", e.Active(), closed(e.Released()))
		}

		// Trips on the leading edge, at once; the bounce is the same trip.
		edges(p, 0, gpio.High)
		if n.Load() != 1 || !e.Active() {
			t.Fatalf("trip: %d trips, Active=%v; want 1 true", n.Load(), e.Active())
		}
		edges(p, time.Millisecond, gpio.Low, gpio.High)
		if n.Load() != 1 || !e.Active() {
			t.Fatalf("bounce: %d trips, Active=%v; want 1 true", n.Load(), e.Active())
		}
		rel := e.Released()
		if closed(rel) {
			t.Fatal("Released() closed while engaged")
		}
		time.Sleep(time.Second) // stays engaged, no further trips
		synctest.Wait()
		if n.Load() != 1 || !e.Active() || closed(rel) {
			t.Fatalf("held: %d trips, Active=%v", n.Load(), e.Active())
		}

		// The release counts only once steady for Debounce.
		edges(p, 0, gpio.Low)
		time.Sleep(DefaultDebounce - time.Millisecond)
		synctest.Wait()
		if !e.Active() || closed(rel) {
			t.Fatalf("release before Debounce: Active=%v released=%v; want true false", e.Active(), closed(rel))
		}
		time.Sleep(2 * time.Millisecond)
		synctest.Wait()
		if e.Active() || !closed(rel) {
			t.Fatalf("release: Active=%v released=%v; want false true", e.Active(), closed(rel))
		}

		edges(p, 0, gpio.High)
		if n.Load() != 2 || e.Trips() != 2 || !e.Active() || closed(e.Released()) {
			t.Fatalf("second trip: %d trips, Active=%v", n.Load(), e.Active())
		}
	})
}

func TestEStopEngagedAtStartTrips(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newPin("ESTOP_N", gpio.Low)
		var n atomic.Int32
		e, _ := NewEStop(Config{Pin: p, ActiveLow: true}, func() { n.Add(1) })
		stop := runner(t, DefaultPoll, e.Run)
		defer stop()
		if n.Load() != 1 || !e.Active() || closed(e.Released()) {
			t.Fatalf("engaged at start: %d trips, Active=%v; want 1 true", n.Load(), e.Active())
		}
	})
}

func closed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// With the real clock and the race detector: cancellation ends Run within
// Poll even while edges keep arriving.
func TestRunEndsPromptlyRealClock(t *testing.T) {
	p := newPin("STOP", gpio.Low)
	var n atomic.Int32
	const poll = 50 * time.Millisecond
	b, _ := NewButton(Config{Pin: p, Poll: poll, Debounce: 5 * time.Millisecond}, func() { n.Add(1) })
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	ticker := time.NewTicker(time.Millisecond)
	defer ticker.Stop()
	deadline := time.After(300 * time.Millisecond)
	l := gpio.Low
loop:
	for {
		select {
		case <-ticker.C:
			l = !l
			select {
			case p.EdgesChan <- l:
			default:
			}
		case <-deadline:
			break loop
		}
	}
	start := time.Now()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	if d := time.Since(start); d > poll+500*time.Millisecond {
		t.Errorf("Run took %v to return, want about ≤ %v", d, poll)
	}
	_ = b.Pressed()
}

func TestRunTwice(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b, _ := NewButton(Config{Pin: newPin("STOP", gpio.Low)}, func() {})
		stop := runner(t, DefaultPoll, b.Run)
		defer stop()
		if err := b.Run(t.Context()); !errors.Is(err, ErrRunning) {
			t.Fatalf("second Run: %v, want ErrRunning", err)
		}
	})
}

func TestRunPinError(t *testing.T) {
	b, _ := NewButton(Config{Pin: &gpiotest.Pin{N: "NOEDGE"}}, func() {})
	err := b.Run(t.Context())
	if err == nil || !strings.Contains(err.Error(), "NOEDGE") {
		t.Fatalf("Run on a pin without edge support: %v, want an error naming the pin", err)
	}
}

func TestConfigErrors(t *testing.T) {
	p := newPin("P", gpio.Low)
	for _, tc := range []struct {
		name string
		cfg  Config
		fn   func()
		want string
	}{
		{"no pin", Config{}, func() {}, "no pin"},
		{"negative debounce", Config{Pin: p, Debounce: -1}, func() {}, "negative debounce"},
		{"negative poll", Config{Pin: p, Poll: -1}, func() {}, "negative poll"},
		{"nil callback", Config{Pin: p}, nil, "nil"},
	} {
		if _, err := NewButton(tc.cfg, tc.fn); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("NewButton %s: %v, want %q", tc.name, err, tc.want)
		}
		if _, err := NewEStop(tc.cfg, tc.fn); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("NewEStop %s: %v, want %q", tc.name, err, tc.want)
		}
	}
	b, err := NewButton(Config{Pin: p}, func() {})
	if err != nil || b.l.cfg.Debounce != DefaultDebounce || b.l.cfg.Poll != DefaultPoll {
		t.Fatalf("defaults: %v %+v", err, b.l.cfg)
	}
	if b.String() != "button P(0)" {
		t.Errorf("String() = %q", b.String())
	}
}

// lostPin is a test pin that can be made unreadable (Checker), as a
// board.Line whose GPIO chip has been removed.
type lostPin struct {
	*gpiotest.Pin
	lost atomic.Bool
}

var errGone = errors.New("chip gone")

func (p *lostPin) Err() error {
	if p.lost.Load() {
		return errGone
	}
	return nil
}

// An input that can no longer be read counts as active: the e-stop trips
// once and stays engaged, the button presses once; Run returns the pin's
// error within one Poll, with no edge.
func TestUnreadableInputIsActive(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ep := &lostPin{Pin: newPin("ESTOP", gpio.Low)}
		var trips atomic.Int32
		e, err := NewEStop(Config{Pin: ep}, func() { trips.Add(1) })
		if err != nil {
			t.Fatal(err)
		}
		bp := &lostPin{Pin: newPin("STOP", gpio.Low)}
		var presses atomic.Int32
		b, err := NewButton(Config{Pin: bp}, func() { presses.Add(1) })
		if err != nil {
			t.Fatal(err)
		}
		eDone, bDone := make(chan error, 1), make(chan error, 1)
		go func() { eDone <- e.Run(t.Context()) }()
		go func() { bDone <- b.Run(t.Context()) }()
		time.Sleep(drainWait)
		synctest.Wait()
		if e.Active() || count(&trips) != 0 || count(&presses) != 0 {
			t.Fatalf("before: Active=%v trips=%d presses=%d, want false 0 0", e.Active(), trips.Load(), presses.Load())
		}
		ep.lost.Store(true)
		bp.lost.Store(true)
		start := time.Now()
		for _, done := range []chan error{eDone, bDone} {
			if err := <-done; !errors.Is(err, errGone) || !strings.Contains(err.Error(), "can no longer be read") {
				t.Errorf("Run: %v, want the pin's error", err)
			}
		}
		if d := time.Since(start); d > DefaultPoll {
			t.Errorf("Run returned %v after the line was lost, want ≤ %v", d, DefaultPoll)
		}
		if trips.Load() != 1 || !e.Active() || presses.Load() != 1 {
			t.Errorf("after: trips=%d Active=%v presses=%d, want 1 true 1", trips.Load(), e.Active(), presses.Load())
		}
		select {
		case <-e.Released():
			t.Error("Released closed after the e-stop line was lost")
		default:
		}
	})
}

// An e-stop whose line reads released because it was lost is not released.
func TestUnreadableEStopIsNotReleased(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := &lostPin{Pin: newPin("ESTOP", gpio.Low)}
		e, err := NewEStop(Config{Pin: p}, func() {})
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- e.Run(t.Context()) }()
		time.Sleep(drainWait)
		edges(p.Pin, 0, gpio.High) // engaged
		if !e.Active() {
			t.Fatal("not tripped")
		}
		p.lost.Store(true)
		edges(p.Pin, 0, gpio.Low) // reads released, but the line is gone
		if err := <-done; !errors.Is(err, errGone) {
			t.Fatalf("Run: %v, want the pin's error", err)
		}
		if !e.Active() || e.Trips() != 1 {
			t.Fatalf("Active=%v trips=%d, want true 1", e.Active(), e.Trips())
		}
	})
}
