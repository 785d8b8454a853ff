// Package watchdog is the controller's watchdog goroutine. Subsystems report
// heartbeats (the stage status poll, the camera, the runner's progress); the
// light holds an on-time lease; sensors (the board temperature) are read
// periodically against a limit. A stale heartbeat, an expired lease or a
// sensor alarm calls Config.OnFault once per fault episode; the daemon wires
// that to Stop(stop.Watchdog, ...).
//
// The same loop keeps the service alive: systemd's WATCHDOG=1 and the
// optional hardware watchdog (/dev/watchdogN) are pinged at half their
// timeout or more often, and only while every heartbeat is fresh, so that a
// hung controller is restarted (systemd) or the board reset (hardware).
// Leases and sensor alarms stop the run but do not withhold the pings: the
// watchdog has handled them, the controller is not hung.
//
// All times are measured on the monotonic clock: a wall-clock step (an NTP
// sync on a board without RTC) never makes a heartbeat look stale.
//
// A busy host is not a stuck subsystem. When the host stalls the whole
// process (every goroutine, the watchdog's own loop included), the loop
// wakes late, and by how much is visible on the monotonic clock: that time
// is credited as a stall, and heartbeat ages count process time, the
// monotonic time minus the stalls. A subsystem that is stuck while the
// process runs still goes stale within its limit (of process time, plus
// one loop period); one that only looks late because nothing ran does not.
// Leases count real time: a light left on during a stall is still on.
package watchdog

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultInterval is the default period of the watchdog loop.
const DefaultInterval = 250 * time.Millisecond

// SensorErrorLimit is how many consecutive failed reads of a sensor make a
// fault.
const SensorErrorLimit = 3

// StallAllowance is how late the loop may wake before the lateness counts
// as a stall of the process: ordinary scheduling delay.
const StallAllowance = 10 * time.Millisecond

// Errors wrapped by the errors passed to Config.OnFault.
var (
	ErrStale        = errors.New("watchdog: heartbeat stale")
	ErrLeaseExpired = errors.New("watchdog: lease expired")
	ErrOverLimit    = errors.New("watchdog: sensor above limit")
	ErrSensorFailed = errors.New("watchdog: sensor read failed")
	ErrRunning      = errors.New("watchdog: Run already called")
)

// Config wires a Watchdog. Every field is optional.
type Config struct {
	// Interval is how often the loop checks heartbeats (default 250 ms).
	// The loop also wakes at every lease deadline and sensor read, and at
	// least at half the systemd and hardware timeouts.
	Interval time.Duration
	// Notify receives sd_notify states (READY=1, STATUS=..., WATCHDOG=1,
	// STOPPING=1). Nil sends nothing.
	Notify Notifier
	// NotifyInterval is systemd's watchdog timeout (WatchdogSec=, from
	// SystemdInterval). WATCHDOG=1 is sent at least every NotifyInterval/2
	// while healthy. Zero sends no WATCHDOG=1.
	NotifyInterval time.Duration
	// Hardware, if set, is kept alive by the loop under the same rule and
	// magic-closed when Run returns. Run owns it from then on.
	Hardware *Hardware
	// Log receives printf-style messages about faults, recoveries and
	// notification errors. Nil discards them.
	Log func(format string, args ...any)
	// OnFault is called from the loop goroutine when a heartbeat goes stale,
	// a lease expires or a sensor alarms, once per fault episode (until the
	// heartbeat beats again, the lease ends, the sensor reads good). err's
	// message begins with the item's name ("stage-poll: no beat for ...")
	// and wraps ErrStale, ErrLeaseExpired, ErrOverLimit or ErrSensorFailed.
	// It must not block: the loop and its pings wait for it.
	OnFault func(name string, err error)
}

// Watchdog watches heartbeats, leases and sensors. Its methods are safe for
// concurrent use.
type Watchdog struct {
	cfg       Config
	epoch     time.Time    // monotonic origin of every timestamp
	clock     func() int64 // monotonic ns since epoch (tests replace it)
	stalled   atomic.Int64 // ns of whole-process stalls credited so far
	tick      time.Duration
	pingEvery time.Duration // 0: no WATCHDOG=1
	hwEvery   time.Duration // 0: no hardware
	wake      chan struct{}
	running   atomic.Bool

	mu        sync.Mutex
	names     map[string]bool
	lastStall int64 // when a stall was last logged (raw ns), for rate limiting
	beats     []*Heartbeat
	leases    []*Lease
	sensors   []*sensor
	status    string // set by SetStatus
	sent      string // last STATUS= sent
	faulted   []string
	notifyErr string // last notification error logged
	hwErr     string // last keepalive error logged
}

// New returns a watchdog; nothing runs until Run.
func New(cfg Config) *Watchdog {
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Log == nil {
		cfg.Log = func(string, ...any) {}
	}
	if cfg.OnFault == nil {
		cfg.OnFault = func(string, error) {}
	}
	w := &Watchdog{cfg: cfg, epoch: time.Now(), tick: cfg.Interval, wake: make(chan struct{}, 1), names: map[string]bool{}}
	w.clock = func() int64 { return int64(time.Since(w.epoch)) }
	if cfg.Notify != nil && cfg.NotifyInterval > 0 {
		w.pingEvery = cfg.NotifyInterval / 2
		w.tick = min(w.tick, w.pingEvery)
	}
	if cfg.Hardware != nil && cfg.Hardware.Timeout() > 0 {
		w.hwEvery = cfg.Hardware.Timeout() / 2
		w.tick = min(w.tick, w.hwEvery)
	}
	return w
}

// now is the monotonic time since New, in nanoseconds.
func (w *Watchdog) now() int64 { return w.clock() }

// progress is process time: the monotonic time since New minus the
// whole-process stalls credited so far, in nanoseconds. Heartbeats count it.
func (w *Watchdog) progress() int64 { return w.clock() - w.stalled.Load() }

// woke accounts for the loop waking at now when it meant to wake at due
// (both raw monotonic ns): lateness beyond StallAllowance was a stall of
// the process, credited so that it does not age the heartbeats. It returns
// the stall credited.
func (w *Watchdog) woke(due, now int64) time.Duration {
	late := time.Duration(now - due)
	if late <= StallAllowance {
		return 0
	}
	w.stalled.Add(int64(late))
	w.mu.Lock()
	logIt := now-w.lastStall >= int64(10*time.Second) || w.lastStall == 0
	if logIt {
		w.lastStall = now
	}
	w.mu.Unlock()
	if logIt && late >= 100*time.Millisecond {
		w.cfg.Log("watchdog: the process stalled for %v (its own loop woke that late; a busy host?): heartbeat ages exclude it", late.Round(time.Millisecond))
	}
	return late
}

// poke wakes the loop to recompute its next deadline.
func (w *Watchdog) poke() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *Watchdog) claim(kind, name string) {
	if name == "" {
		panic("watchdog: " + kind + " with an empty name")
	}
	if w.names[name] {
		panic(fmt.Sprintf("watchdog: %s %q: name already registered", kind, name))
	}
	w.names[name] = true
}

// Heartbeat is one subsystem's proof of progress. Its methods are safe for
// concurrent use and cheap (an atomic store and a monotonic clock read).
type Heartbeat struct {
	name    string
	maxAge  time.Duration
	w       *Watchdog
	last    atomic.Int64 // process time of the last beat
	lastRaw atomic.Int64 // monotonic time of the last beat, for messages
	paused  atomic.Bool
	fault   bool // loop state, under w.mu
}

// Register adds a heartbeat that must beat at least every maxAge, counted
// from now (and from Run's start). It panics on an empty or duplicate name or
// a maxAge ≤ 0: these are wiring errors, and configuration values must be
// validated before they get here.
func (w *Watchdog) Register(name string, maxAge time.Duration) *Heartbeat {
	if maxAge <= 0 {
		panic(fmt.Sprintf("watchdog: heartbeat %q: max age %v must be positive", name, maxAge))
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.claim("heartbeat", name)
	h := &Heartbeat{name: name, maxAge: maxAge, w: w}
	h.Beat()
	w.beats = append(w.beats, h)
	return h
}

// Beat records progress now.
func (h *Heartbeat) Beat() {
	h.lastRaw.Store(h.w.now())
	h.last.Store(h.w.progress())
}

// Pause stops the heartbeat from counting, e.g. the runner between runs. A
// paused heartbeat is never stale.
func (h *Heartbeat) Pause() { h.paused.Store(true) }

// Resume makes the heartbeat count again, as if it had just beaten.
func (h *Heartbeat) Resume() {
	h.Beat()
	h.paused.Store(false)
}

// Name returns the heartbeat's name.
func (h *Heartbeat) Name() string { return h.name }

// Lease bounds how long something may stay on: the light holds a lease
// while lit. Its methods are safe for concurrent use.
type Lease struct {
	name   string
	max    time.Duration
	expire func()
	w      *Watchdog

	mu    sync.Mutex
	held  bool
	since int64 // when Start began the current holding
	fired bool  // expired during the current holding
}

// Lease adds a lease that may be held for at most max. If a holding lasts
// longer, the loop calls expire (switch the light off), then OnFault, once
// per holding. expire runs on the loop goroutine and must not block; it may
// call End. Lease panics on an empty or duplicate name, max ≤ 0 or a nil
// expire.
func (w *Watchdog) Lease(name string, max time.Duration, expire func()) *Lease {
	if max <= 0 || expire == nil {
		panic(fmt.Sprintf("watchdog: lease %q: max %v must be positive and expire non-nil", name, max))
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.claim("lease", name)
	l := &Lease{name: name, max: max, expire: expire, w: w}
	w.leases = append(w.leases, l)
	return l
}

// Start begins holding the lease (light on). Starting a lease already held
// does not extend it: the on-time counts from the first Start.
func (l *Lease) Start() {
	l.mu.Lock()
	if !l.held {
		l.held, l.since, l.fired = true, l.w.now(), false
	}
	l.mu.Unlock()
	l.w.poke()
}

// End stops holding the lease (light off). Idempotent.
func (l *Lease) End() {
	l.mu.Lock()
	l.held, l.fired = false, false
	l.mu.Unlock()
}

// Name returns the lease's name.
func (l *Lease) Name() string { return l.name }

type sensor struct {
	name  string
	every time.Duration
	read  func() (float64, error)
	limit float64

	// loop state, under w.mu
	next     int64 // when to read next
	lastGood int64 // when it last read without error (-1 never)
	value    float64
	errs     int // consecutive failed reads
	fault    error
}

// AddSensor reads read every interval on the loop goroutine (so read must
// be quick, like a sysfs file) and faults when a reading is above limit, or
// after SensorErrorLimit consecutive failed reads. The episode ends on a
// good reading at or below limit. It panics on an empty or duplicate name,
// every ≤ 0 or a nil read.
func (w *Watchdog) AddSensor(name string, every time.Duration, read func() (float64, error), limit float64) {
	if every <= 0 || read == nil {
		panic(fmt.Sprintf("watchdog: sensor %q: period %v must be positive and read non-nil", name, every))
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.claim("sensor", name)
	w.sensors = append(w.sensors, &sensor{name: name, every: every, read: read, limit: limit, next: w.now(), lastGood: -1})
	w.poke()
}

// Run is the watchdog loop. It returns when ctx ends, after magic-closing
// the hardware watchdog (the error is that of the close); it never returns
// earlier except with ErrRunning when called twice.
func (w *Watchdog) Run(ctx context.Context) error {
	if !w.running.CompareAndSwap(false, true) {
		return ErrRunning
	}
	w.mu.Lock()
	now, prog := w.now(), w.progress()
	for _, h := range w.beats {
		h.last.Store(max(h.last.Load(), prog)) // ages count from Run's start
		h.lastRaw.Store(max(h.lastRaw.Load(), now))
	}
	w.mu.Unlock()

	lastPing, lastHW := int64(math.MinInt64/2), int64(math.MinInt64/2)
	timer := time.NewTimer(0)
	defer timer.Stop()
	due := now // when the timer is meant to fire (raw ns)
	for {
		select {
		case <-ctx.Done():
			if hw := w.cfg.Hardware; hw != nil {
				return hw.Close()
			}
			return nil
		case <-timer.C:
			w.woke(due, w.now())
		case <-w.wake:
		}
		healthy, next := w.check()
		now := w.now()
		if healthy && w.pingEvery > 0 && now-lastPing >= int64(w.pingEvery-w.tick) {
			lastPing = now
			w.notify("WATCHDOG=1")
		}
		if healthy && w.hwEvery > 0 && now-lastHW >= int64(w.hwEvery-w.tick) {
			lastHW = now
			w.keepalive()
		}
		wait := min(w.tick, next)
		due = w.now() + int64(wait)
		timer.Reset(wait)
	}
}

type fault struct {
	name string
	err  error
}

// itemError is a fault of one watched item: its message names the item
// and says what is wrong ("stage-poll: no beat for 1.2s (limit 1s)"), and
// it wraps one of the package's sentinel errors (and the cause, if any).
type itemError struct {
	name, what string
	err        error
}

func (e *itemError) Error() string { return e.name + ": " + e.what }
func (e *itemError) Unwrap() error { return e.err }

// staleError says how long h has not beaten, in process time, and how much
// longer that was on the clock when the process stalled meanwhile.
func staleError(h *Heartbeat, age, raw time.Duration) error {
	what := fmt.Sprintf("no beat for %v (limit %v)", age.Round(time.Millisecond), h.maxAge)
	if stall := raw - age; stall >= 100*time.Millisecond {
		what = fmt.Sprintf("no beat for %v of process time (limit %v; %v on the clock, the host stalled the whole process for %v)",
			age.Round(time.Millisecond), h.maxAge, raw.Round(time.Millisecond), stall.Round(time.Millisecond))
	}
	return &itemError{h.name, what, ErrStale}
}

// check runs one pass over heartbeats, leases and sensors, calls expire and
// OnFault for new faults, and returns whether every heartbeat is fresh and
// how long until the next lease deadline or sensor read.
func (w *Watchdog) check() (healthy bool, next time.Duration) {
	next = w.tick
	now, prog := w.now(), w.progress()
	var (
		faults  []fault
		expires []func()
		due     []*sensor
	)
	w.mu.Lock()
	healthy = true
	for _, h := range w.beats {
		age := time.Duration(prog - h.last.Load())
		stale := !h.paused.Load() && age > h.maxAge
		switch {
		case stale && !h.fault:
			faults = append(faults, fault{h.name, staleError(h, age, time.Duration(now-h.lastRaw.Load()))})
		case !stale && h.fault:
			w.cfg.Log("watchdog: heartbeat %q fresh again (paused: %v)", h.name, h.paused.Load())
		}
		h.fault = stale
		healthy = healthy && !stale
	}
	for _, l := range w.leases {
		l.mu.Lock()
		if l.held && !l.fired {
			held := time.Duration(now - l.since)
			if held >= l.max {
				l.fired = true
				expires = append(expires, l.expire)
				faults = append(faults, fault{l.name, &itemError{l.name, fmt.Sprintf("on for %v (limit %v)", held.Round(time.Millisecond), l.max), ErrLeaseExpired}})
			} else {
				next = min(next, l.max-held)
			}
		}
		l.mu.Unlock()
	}
	for _, s := range w.sensors {
		if now >= s.next {
			due = append(due, s)
			s.next = now + int64(s.every)
		}
		next = min(next, time.Duration(s.next-now))
	}
	w.mu.Unlock()

	for _, expire := range expires {
		expire()
	}
	// Sensors are read without the lock: Snapshot must not wait for them.
	type reading struct {
		v   float64
		err error
	}
	readings := make([]reading, len(due))
	for i, s := range due {
		v, err := s.read()
		if err == nil && (math.IsNaN(v) || math.IsInf(v, 0)) {
			err = fmt.Errorf("reading %v", v)
		}
		readings[i] = reading{v, err}
	}
	now = w.now()
	w.mu.Lock()
	for i, s := range due {
		r := readings[i]
		var err error
		if r.err != nil {
			s.errs++
			if s.errs >= SensorErrorLimit {
				err = &itemError{s.name, fmt.Sprintf("%d failed reads in a row, last: %v", s.errs, r.err), errors.Join(ErrSensorFailed, r.err)}
			} else {
				w.cfg.Log("watchdog: sensor %q: read failed (%d of %d): %v", s.name, s.errs, SensorErrorLimit, r.err)
				err = s.fault // a single failed read neither starts nor ends an episode
			}
		} else {
			s.errs, s.value, s.lastGood = 0, r.v, now
			if r.v > s.limit {
				err = &itemError{s.name, fmt.Sprintf("%.1f above its limit %.1f", r.v, s.limit), ErrOverLimit}
			}
		}
		switch {
		case err != nil && s.fault == nil:
			faults = append(faults, fault{s.name, err})
		case err == nil && s.fault != nil:
			w.cfg.Log("watchdog: sensor %q good again (%.1f)", s.name, r.v)
		}
		s.fault = err
	}
	w.mu.Unlock()

	for _, f := range faults {
		w.cfg.Log("%v", f.err)
		w.cfg.OnFault(f.name, f.err)
	}
	w.updateStatus()
	return healthy, max(next, 0)
}

// faultNames lists the items in a fault episode, under w.mu.
func (w *Watchdog) faultNames() []string {
	var names []string
	for _, h := range w.beats {
		if h.fault {
			names = append(names, h.name+" stale")
		}
	}
	for _, l := range w.leases {
		l.mu.Lock()
		if l.fired {
			names = append(names, l.name+" lease expired")
		}
		l.mu.Unlock()
	}
	for _, s := range w.sensors {
		if s.fault != nil {
			names = append(names, s.name+" alarm")
		}
	}
	return names
}

// updateStatus sends STATUS= when the status text or the set of faults
// changed.
func (w *Watchdog) updateStatus() {
	w.mu.Lock()
	w.faulted = w.faultNames()
	text := w.status
	if len(w.faulted) > 0 {
		if text != "" {
			text += "; "
		}
		text += "watchdog: " + strings.Join(w.faulted, ", ")
	}
	changed := text != w.sent
	w.sent = text
	w.mu.Unlock()
	if changed {
		w.notify("STATUS=" + text)
	}
}

func (w *Watchdog) notify(state string) {
	if w.cfg.Notify == nil {
		return
	}
	err := w.cfg.Notify.Notify(state)
	w.mu.Lock()
	defer w.mu.Unlock()
	if err == nil {
		w.notifyErr = ""
		return
	}
	if msg := err.Error(); msg != w.notifyErr {
		w.notifyErr = msg
		w.cfg.Log("watchdog: notify %q: %v", state, err)
	}
}

func (w *Watchdog) keepalive() {
	err := w.cfg.Hardware.Keepalive()
	w.mu.Lock()
	defer w.mu.Unlock()
	if err == nil {
		w.hwErr = ""
		return
	}
	if msg := err.Error(); msg != w.hwErr {
		w.hwErr = msg
		w.cfg.Log("%v", err)
	}
}

// Ready tells systemd that start-up is finished (READY=1): call it once the
// board is up.
func (w *Watchdog) Ready() { w.notify("READY=1") }

// SetStatus sets the status line systemd shows (STATUS=), e.g. the machine
// state; the loop appends current watchdog faults to it.
func (w *Watchdog) SetStatus(s string) {
	s = strings.ReplaceAll(s, "\n", " ")
	w.mu.Lock()
	w.status = s
	w.mu.Unlock()
	w.updateStatus()
}

// Stopping tells systemd that the service is shutting down (STOPPING=1).
func (w *Watchdog) Stopping() { w.notify("STOPPING=1") }

// Kind says what a HeartbeatInfo describes.
type Kind int

const (
	KindHeartbeat Kind = iota
	KindLease
	KindSensor
)

func (k Kind) String() string {
	switch k {
	case KindHeartbeat:
		return "heartbeat"
	case KindLease:
		return "lease"
	case KindSensor:
		return "sensor"
	}
	return fmt.Sprintf("kind(%d)", int(k))
}

// HeartbeatInfo describes one watched item for a status command.
type HeartbeatInfo struct {
	Name string
	Kind Kind
	// Limit is a heartbeat's max age, a lease's max on-time, or a sensor's
	// read period.
	Limit time.Duration
	// Age is the time since a heartbeat's last beat (process time: see the
	// package documentation), since a lease's
	// Start (0 when not held), or since a sensor's last good reading (-1
	// if none yet).
	Age time.Duration
	// Paused: a paused heartbeat, or a lease not held.
	Paused bool
	// Fresh: not in a fault episode. A heartbeat is fresh when paused or
	// younger than its limit.
	Fresh bool
	// Value and Max are a sensor's last good reading and its limit.
	Value, Max float64
}

// Snapshot describes every heartbeat, lease and sensor, in registration
// order by kind.
func (w *Watchdog) Snapshot() []HeartbeatInfo {
	now, prog := w.now(), w.progress()
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []HeartbeatInfo
	for _, h := range w.beats {
		age, paused := time.Duration(prog-h.last.Load()), h.paused.Load()
		out = append(out, HeartbeatInfo{Name: h.name, Kind: KindHeartbeat, Limit: h.maxAge, Age: age, Paused: paused, Fresh: paused || age <= h.maxAge})
	}
	for _, l := range w.leases {
		l.mu.Lock()
		i := HeartbeatInfo{Name: l.name, Kind: KindLease, Limit: l.max, Paused: !l.held, Fresh: !l.fired}
		if l.held {
			i.Age = time.Duration(now - l.since)
		}
		l.mu.Unlock()
		out = append(out, i)
	}
	for _, s := range w.sensors {
		i := HeartbeatInfo{Name: s.name, Kind: KindSensor, Limit: s.every, Age: -1, Fresh: s.fault == nil, Value: s.value, Max: s.limit}
		if s.lastGood >= 0 {
			i.Age = time.Duration(now - s.lastGood)
		}
		out = append(out, i)
	}
	return slices.Clip(out)
}
