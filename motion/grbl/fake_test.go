package grbl

import (
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeGrbl is a scripted, in-memory GRBL 1.1 peer on one end of a net.Pipe.
// It models the 128-byte receive buffer (rx: bytes received, not yet taken
// by the line processor) so tests can assert the driver never overflows it,
// picks real-time bytes out of the stream as GRBL does, and runs a tiny
// motion model: G1 sets a target and Run; "G4 P0" is answered when the move
// is over; '!' holds (Hold:1 for holdDecel, then Hold:0); '~' resumes;
// 0x18 resets (ALARM:3 if moving), printing the banner.
type fakeGrbl struct {
	t    testing.TB
	conn net.Conn
	out  chan string
	quit chan struct{}
	kick chan struct{}
	wg   sync.WaitGroup

	mu          sync.Mutex
	rx          []byte
	maxRx       int
	lines       []string
	rt          []rtByte
	state       string // "Idle", "Run", "Hold:1", "Hold:0", "Alarm", "Home"
	pos         [3]float64
	target      [3]float64
	remaining   time.Duration // move time left
	moveFrom    time.Time     // when the current Run segment began
	epoch       int           // incremented by each soft reset
	resetCh     chan struct{} // closed by a soft reset
	lineReset   chan struct{} // resetCh when the line being handled was taken
	lineEpoch   int           // epoch when the line being handled was taken
	critical    bool          // ALARM:1/2: '?' and lines ignored until reset
	critPause   bool          // between ALARM:1/2 and its MSG: 0x18 is discarded
	mute        bool          // drop all output
	statusDelay time.Duration
	statusOwed  bool // a '?' came during homing

	// Script knobs (set before start or under mu).
	moveDur   time.Duration // duration of any G1 move
	holdDecel time.Duration // Hold:1 duration
	homeDur   time.Duration
	bootMsg   []string // printed after the banner at start and reset (e.g. alarm lock)
	noBanner  bool     // print no banner at start (only after 0x18)
	procDelay time.Duration
	onLine    func(f *fakeGrbl, line string) ([]string, bool) // custom handler; false: use default
}

type rtByte struct {
	b  byte
	at time.Time
}

const banner = "Grbl 1.1h ['$' for help]"

func newFake(t testing.TB, conn net.Conn, setup func(f *fakeGrbl)) *fakeGrbl {
	f := &fakeGrbl{
		t: t, conn: conn,
		out:       make(chan string, 1024),
		quit:      make(chan struct{}),
		kick:      make(chan struct{}, 1),
		state:     "Idle",
		resetCh:   make(chan struct{}),
		moveDur:   50 * time.Millisecond,
		holdDecel: 30 * time.Millisecond,
		homeDur:   100 * time.Millisecond,
	}
	if setup != nil {
		setup(f)
	}
	if !f.noBanner {
		f.send("", banner)
		f.send(f.bootMsg...)
	}
	f.wg.Add(3)
	go f.writer()
	go f.reader()
	go f.processor()
	return f
}

func (f *fakeGrbl) Close() {
	select {
	case <-f.quit:
		return
	default:
	}
	close(f.quit)
	f.conn.Close()
	f.wg.Wait()
}

// send queues lines for output (dropped while muted).
func (f *fakeGrbl) send(lines ...string) {
	f.mu.Lock()
	mute := f.mute
	f.mu.Unlock()
	if mute {
		return
	}
	for _, l := range lines {
		select {
		case f.out <- l:
		case <-f.quit:
			return
		}
	}
}

func (f *fakeGrbl) writer() {
	defer f.wg.Done()
	for {
		select {
		case l := <-f.out:
			if _, err := f.conn.Write([]byte(l + "\r\n")); err != nil {
				return
			}
		case <-f.quit:
			return
		}
	}
}

func (f *fakeGrbl) reader() {
	defer f.wg.Done()
	buf := make([]byte, 64)
	for {
		n, err := f.conn.Read(buf)
		for _, b := range buf[:n] {
			switch {
			case b == '?' || b == '!' || b == '~' || b == 0x18 || b >= 0x80:
				f.realtime(b)
			default:
				f.mu.Lock()
				f.rx = append(f.rx, b)
				if len(f.rx) > f.maxRx {
					f.maxRx = len(f.rx)
				}
				f.mu.Unlock()
				if b == '\n' {
					select {
					case f.kick <- struct{}{}:
					default:
					}
				}
			}
		}
		if err != nil {
			return
		}
	}
}

func (f *fakeGrbl) realtime(b byte) {
	f.mu.Lock()
	f.rt = append(f.rt, rtByte{b, time.Now()})
	f.advanceLocked()
	switch b {
	case '?':
		if f.state == "Home" {
			f.statusOwed = true // answered when homing ends, as GRBL does
		}
		if f.critical || f.state == "Home" {
			f.mu.Unlock()
			return
		}
		st := f.statusLocked()
		d := f.statusDelay
		f.mu.Unlock()
		if d > 0 {
			go func() {
				select {
				case <-time.After(d):
					f.send(st)
				case <-f.quit:
				}
			}()
			return
		}
		f.send(st)
		return
	case '!':
		switch f.state {
		case "Run":
			f.remaining -= time.Since(f.moveFrom)
			f.state = "Hold:1"
			f.moveFrom = time.Now()
		case "Idle":
			f.state = "Hold:0"
		}
	case '~':
		if f.state == "Hold:0" {
			if f.remaining > 0 {
				f.state = "Run"
				f.moveFrom = time.Now()
			} else {
				f.state = "Idle"
			}
		}
	case 0x18:
		if f.critPause {
			f.mu.Unlock()
			return
		}
		var pre []string
		if f.state == "Run" || f.state == "Hold:1" {
			pre = append(pre, "ALARM:3")
			f.state = "Alarm"
			f.remaining = 0
		}
		if f.state == "Home" {
			pre = append(pre, "ALARM:6")
			f.state = "Alarm"
		}
		if f.state == "Hold:0" {
			f.state = "Idle"
			f.remaining = 0
		}
		f.critical = false
		f.rx = nil
		f.epoch++
		close(f.resetCh)
		f.resetCh = make(chan struct{})
		post := []string{"", banner}
		if f.state == "Alarm" {
			post = append(post, "[MSG:'$H'|'$X' to unlock]")
		}
		f.mu.Unlock()
		f.send(pre...)
		f.send(post...)
		return
	}
	f.mu.Unlock()
}

// advanceLocked moves the motion model forward to now.
func (f *fakeGrbl) advanceLocked() {
	now := time.Now()
	switch f.state {
	case "Run":
		if now.Sub(f.moveFrom) >= f.remaining {
			f.state, f.pos, f.remaining = "Idle", f.target, 0
		}
	case "Hold:1":
		if now.Sub(f.moveFrom) >= f.holdDecel {
			f.state = "Hold:0"
		}
	}
}

func (f *fakeGrbl) statusLocked() string {
	return fmt.Sprintf("<%s|MPos:%.3f,%.3f,%.3f|FS:0,0>", f.state, f.pos[0], f.pos[1], f.pos[2])
}

func (f *fakeGrbl) processor() {
	defer f.wg.Done()
	for {
		f.mu.Lock()
		i := strings.IndexByte(string(f.rx), '\n')
		var line string
		if i >= 0 {
			line = string(f.rx[:i])
			f.rx = append(f.rx[:0:0], f.rx[i+1:]...)
		}
		epoch, resetCh, critical := f.epoch, f.resetCh, f.critical
		f.mu.Unlock()
		if i < 0 || critical {
			select {
			case <-f.kick:
			case <-resetCh:
			case <-f.quit:
				return
			}
			if critical && i >= 0 { // put it back: GRBL processes nothing until reset
				f.mu.Lock()
				if f.epoch == epoch {
					f.rx = append([]byte(line+"\n"), f.rx...)
				}
				f.mu.Unlock()
			}
			continue
		}
		if f.procDelay > 0 {
			time.Sleep(f.procDelay)
		}
		f.mu.Lock()
		f.lines = append(f.lines, line)
		f.lineReset, f.lineEpoch = resetCh, epoch
		f.mu.Unlock()
		replies := f.handle(line, resetCh)
		f.mu.Lock()
		stale := f.epoch != epoch
		f.mu.Unlock()
		if !stale {
			f.send(replies...)
		}
	}
}

func (f *fakeGrbl) handle(line string, resetCh chan struct{}) []string {
	if f.onLine != nil {
		if r, ok := f.onLine(f, line); ok {
			return r
		}
	}
	f.mu.Lock()
	state := f.state
	f.mu.Unlock()
	alarmed := state == "Alarm"
	switch {
	case line == "$$":
		return append(slices.Clone(fakeSettings), "ok")
	case line == "$X":
		if alarmed {
			f.mu.Lock()
			f.state = "Idle"
			f.mu.Unlock()
			return []string{"[MSG:Caution: Unlocked]", "ok"}
		}
		return []string{"ok"}
	case line == "$H":
		f.mu.Lock()
		f.state = "Home"
		f.mu.Unlock()
		select {
		case <-time.After(f.homeDur):
		case <-resetCh:
			return nil
		case <-f.quit:
			return nil
		}
		f.mu.Lock()
		var replies []string
		if f.statusOwed {
			f.statusOwed = false
			f.pos = [3]float64{}
			replies = append(replies, f.statusLocked()) // still Home, at the homed position
		}
		f.state, f.pos = "Idle", [3]float64{}
		f.mu.Unlock()
		return append(replies, "ok")
	case strings.HasPrefix(line, "$"):
		return []string{"ok"}
	case alarmed:
		return []string{"error:9"}
	case strings.Contains(line, "G4"):
		// Answered when the planner is empty: the move is over.
		for {
			f.mu.Lock()
			f.advanceLocked()
			idle := f.state == "Idle" || f.state == "Alarm"
			f.mu.Unlock()
			if idle {
				return []string{"ok"}
			}
			select {
			case <-time.After(2 * time.Millisecond):
			case <-resetCh:
				return nil
			case <-f.quit:
				return nil
			}
		}
	case strings.Contains(line, "G1") || strings.Contains(line, "G0"):
		f.mu.Lock()
		f.target = f.pos
		for _, w := range strings.Fields(line) {
			if len(w) < 2 {
				continue
			}
			v, err := strconv.ParseFloat(w[1:], 64)
			if err != nil {
				continue
			}
			switch w[0] {
			case 'X':
				f.target[0] = v
			case 'Y':
				f.target[1] = v
			case 'Z':
				f.target[2] = v
			}
		}
		if f.state == "Idle" {
			f.state = "Run"
			f.moveFrom = time.Now()
		}
		f.remaining += f.moveDur
		f.mu.Unlock()
		return []string{"ok"}
	}
	return []string{"ok"}
}

// fakeSettings are what the fake answers to $$: 1 µm steps, so that every
// target is on the step grid.
var fakeSettings = []string{
	"$0=10", "$10=1", "$13=0", "$20=0", "$21=0", "$22=1", "$23=0", "$27=1.000",
	"$100=1000.000", "$101=1000.000", "$110=500.000", "$111=500.000",
	"$120=10.000", "$121=10.000", "$130=200.000", "$131=200.000",
}

// Accessors for tests.

// Lines returns the lines the fake took, but for the $$ and $I of the
// driver's Connect.
func (f *fakeGrbl) Lines() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, l := range f.lines {
		if l != "$$" && l != "$I" {
			out = append(out, l)
		}
	}
	return out
}

func (f *fakeGrbl) MaxRx() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.maxRx
}

func (f *fakeGrbl) RT(b byte) []time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []time.Time
	for _, r := range f.rt {
		if r.b == b {
			out = append(out, r.at)
		}
	}
	return out
}

func (f *fakeGrbl) State() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.advanceLocked()
	return f.state
}

func (f *fakeGrbl) Set(fn func(f *fakeGrbl)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

// timeoutPort makes Read behave like go.bug.st/serial with a read timeout:
// when nothing arrives within a few milliseconds it returns (0, nil).
type timeoutPort struct {
	net.Conn
	zeros atomic.Int64
}

func (p *timeoutPort) Read(b []byte) (int, error) {
	_ = p.Conn.SetReadDeadline(time.Now().Add(2 * time.Millisecond))
	n, err := p.Conn.Read(b)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		p.zeros.Add(1)
		return n, nil
	}
	return n, err
}

// logSink collects Logf output.
type logSink struct {
	mu    sync.Mutex
	lines []string
}

func (l *logSink) Logf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, fmt.Sprintf(format, args...))
}

func (l *logSink) Contains(sub string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range l.lines {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}
