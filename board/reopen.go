package board

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/waferd/waferd/internal/logging"
	"github.com/waferd/waferd/motion"
	"github.com/waferd/waferd/motion/grbl"
)

// Stage is the XY stage as a Board hands it out: a motion.Stage with the
// extras of the GRBL driver that callers use. *grbl.Stage (the simulated
// stage) and *ReopeningStage (a real serial port) implement it.
type Stage interface {
	motion.Stage
	// LastStatus returns the last status report received and when; it
	// does not block or talk to the controller.
	LastStatus() (motion.Status, time.Time)
	// Err returns nil while the stage is usable, and otherwise why not: an
	// error wrapping motion.ErrLinkLost (the link was lost) or
	// grbl.ErrClosed (Close was called).
	Err() error
	// Noise returns the noise seen on the link to the controller (see
	// grbl.NoiseStats); it does not block.
	Noise() grbl.NoiseStats
	// Reach returns where a move to p ends as the controller reports it:
	// p on its step grid (see grbl.Stage.Reach); it does not block.
	Reach(p motion.Point) motion.Point
	// Machine returns the controller's settings (see grbl.Machine).
	Machine(ctx context.Context) (grbl.Machine, error)
	// SetOrigin declares where a stage without homing stands (see
	// grbl.Stage.SetOrigin).
	SetOrigin(ctx context.Context, p motion.Point) error
}

var (
	_ Stage              = (*grbl.Stage)(nil)
	_ Stage              = (*ReopeningStage)(nil)
	_ motion.LinkWatcher = (*ReopeningStage)(nil)
)

// DefaultRetryInterval is how often a ReopeningStage tries to reopen a lost
// serial port unless told otherwise.
const DefaultRetryInterval = time.Second

// ReopenConfig configures OpenReopeningStage.
type ReopenConfig struct {
	// Stage names the serial port and configures the driver. Give a path
	// that comes back when the adapter does: /dev/serial/by-id/... (udev
	// may name the adapter /dev/ttyUSB1 when it returns).
	Stage StageConfig
	// RetryInterval is the pause between two attempts to reopen the port
	// after the link was lost, measured from the end of one attempt to the
	// start of the next. Default DefaultRetryInterval (1 s).
	RetryInterval time.Duration
	// Log receives one message per change of the link (lost; reopening
	// failed for a new reason; back), never one per attempt. Nil discards.
	Log *logging.Log
}

// link is what a ReopeningStage needs of a connected driver (*grbl.Stage).
type link interface {
	Stage
	// Done is closed when the driver becomes unusable (link lost or
	// closed); Err then says which.
	Done() <-chan struct{}
}

// ReopeningStage is a GRBL stage on a serial port that can disappear and
// come back (a USB serial adapter unplugged, the controller power-cycled).
// It delegates every call to the current *grbl.Stage. When that driver
// loses its link (a read or write error, the port gone), the
// ReopeningStage closes it, reports the loss to its watchers (WatchLink)
// and, from a goroutine of its own, tries to open the same port path every
// RetryInterval until a controller answers with its banner; the new driver
// then takes over and the watchers hear that the link is back. Meanwhile
// every call fails at once with an error wrapping motion.ErrLinkLost that
// names the port and says it is reconnecting.
//
// A controller behind a re-established link has restarted (GRBL resets when
// its USB link comes back): the position it reports is not the stage's
// true position, and it may be in an alarm lock (homing enabled) that needs
// Home (or Unlock). The ReopeningStage does not home by itself; its
// watchers (the daemon) mark the position untrusted.
//
// Its methods are safe for concurrent use and block as those of
// *grbl.Stage do; a call in progress when the link is lost fails with the
// driver's error (wrapping motion.ErrLinkLost). Close ends the reconnection
// goroutine.
type ReopeningStage struct {
	port  string
	retry time.Duration
	log   *logging.Log
	open  func(ctx context.Context) (link, error)

	ctx    context.Context // ends at Close: bounds reopening attempts
	cancel context.CancelFunc
	done   chan struct{} // closed when the reconnection goroutine returns

	closeOnce sync.Once
	closeErr  error

	mu         sync.Mutex
	cur        link  // nil while the link is down or after Close
	lost       error // the driver error that ended the link (wraps motion.ErrLinkLost), nil while up
	attemptErr error // why the last attempt to reopen failed
	closed     bool
	last       motion.Status // the last driver's last report, while down
	lastAt     time.Time
	noise      grbl.NoiseStats // the noise of the links lost so far
	machine    grbl.Machine    // the last driver's settings, for Reach while down
	watchers   map[int]func(motion.LinkEvent)
	nextID     int
	reconnects int
}

// OpenReopeningStage opens the serial port and connects the GRBL driver as
// OpenStage does, and fails as it does if the port or the controller is not
// there now: start-up does not wait for hardware. From then on the stage
// reopens its port by itself whenever the link is lost (see
// ReopeningStage). It blocks until connected or ctx ends; ctx does not
// bound the stage's life. Close it when done.
func OpenReopeningStage(ctx context.Context, cfg ReopenConfig) (*ReopeningStage, error) {
	open := func(ctx context.Context) (link, error) {
		st, err := OpenStage(ctx, cfg.Stage)
		if err != nil {
			return nil, err
		}
		return st, nil
	}
	first, err := open(ctx)
	if err != nil {
		return nil, err
	}
	return newReopeningStage(cfg, first, open), nil
}

// newReopeningStage starts watching first, reopening with open.
func newReopeningStage(cfg ReopenConfig, first link, open func(context.Context) (link, error)) *ReopeningStage {
	if cfg.RetryInterval <= 0 {
		cfg.RetryInterval = DefaultRetryInterval
	}
	if cfg.Log == nil {
		cfg.Log = logging.Discard()
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &ReopeningStage{
		port: cfg.Stage.Port, retry: cfg.RetryInterval, log: cfg.Log, open: open,
		ctx: ctx, cancel: cancel, done: make(chan struct{}),
		cur: first, watchers: map[int]func(motion.LinkEvent){},
	}
	go s.supervise(first)
	return s
}

// Port returns the serial port path the stage (re)opens.
func (s *ReopeningStage) Port() string { return s.port }

// Reconnects returns how many times the link has been re-established.
func (s *ReopeningStage) Reconnects() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reconnects
}

// WatchLink registers f to hear of every loss and re-establishment of the
// link (see motion.LinkWatcher). f runs on the reconnection goroutine: a
// loss is reported before the first attempt to reopen the port, a
// re-establishment after the new driver has taken over. f must not block
// and must not call the stage.
func (s *ReopeningStage) WatchLink(f func(motion.LinkEvent)) (unregister func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	id := s.nextID
	s.nextID++
	s.watchers[id] = f
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		delete(s.watchers, id)
	}
}

// driver returns the current driver, or why there is none.
func (s *ReopeningStage) driver() (link, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return nil, fmt.Errorf("board: stage on %s: %w", s.port, grbl.ErrClosed)
	case s.cur == nil:
		return nil, s.downErrLocked()
	}
	return s.cur, nil
}

func (s *ReopeningStage) downErrLocked() error {
	if s.attemptErr != nil {
		return fmt.Errorf("board: stage on %s (reconnecting; last attempt: %v): %w", s.port, s.attemptErr, s.lost)
	}
	return fmt.Errorf("board: stage on %s (reconnecting): %w", s.port, s.lost)
}

// wrap names the port in a lost-link error of the driver: the stage is
// about to reconnect.
func (s *ReopeningStage) wrap(err error) error {
	if err != nil && errors.Is(err, motion.ErrLinkLost) {
		return fmt.Errorf("board: stage on %s (reconnecting): %w", s.port, err)
	}
	return err
}

// Home runs the homing cycle on the current link (see grbl.Stage.Home).
func (s *ReopeningStage) Home(ctx context.Context) error {
	d, err := s.driver()
	if err != nil {
		return err
	}
	return s.wrap(d.Home(ctx))
}

// MoveTo moves to p at feed rate f on the current link (see
// grbl.Stage.MoveTo). Cancelling ctx feed-holds at once.
func (s *ReopeningStage) MoveTo(ctx context.Context, p motion.Point, f motion.Speed) error {
	d, err := s.driver()
	if err != nil {
		return err
	}
	return s.wrap(d.MoveTo(ctx, p, f))
}

// Status polls the controller once (see grbl.Stage.Status); while the link
// is down it fails at once.
func (s *ReopeningStage) Status(ctx context.Context) (motion.Status, error) {
	d, err := s.driver()
	if err != nil {
		return motion.Status{}, err
	}
	st, err := d.Status(ctx)
	return st, s.wrap(err)
}

// Hold feed-holds and waits until the stage has stopped (see
// grbl.Stage.Hold).
func (s *ReopeningStage) Hold(ctx context.Context) error {
	d, err := s.driver()
	if err != nil {
		return err
	}
	return s.wrap(d.Hold(ctx))
}

// Resume continues after a hold.
func (s *ReopeningStage) Resume(ctx context.Context) error {
	d, err := s.driver()
	if err != nil {
		return err
	}
	return s.wrap(d.Resume(ctx))
}

// Reset soft-resets the controller and waits for it to restart (see
// grbl.Stage.Reset).
func (s *ReopeningStage) Reset(ctx context.Context) error {
	d, err := s.driver()
	if err != nil {
		return err
	}
	return s.wrap(d.Reset(ctx))
}

// Unlock clears an alarm lock without homing (see grbl.Stage.Unlock).
func (s *ReopeningStage) Unlock(ctx context.Context) error {
	d, err := s.driver()
	if err != nil {
		return err
	}
	return s.wrap(d.Unlock(ctx))
}

// Halt writes a feed hold at once (see grbl.Stage.Halt); it does not
// block beyond the write. While the link is down there is nothing to hold
// it on: it fails.
func (s *ReopeningStage) Halt() error {
	d, err := s.driver()
	if err != nil {
		return err
	}
	return s.wrap(d.Halt())
}

// Abort writes a soft reset at once (see grbl.Stage.Abort); it does not
// block beyond the write. While the link is down it fails: the controller
// is then beyond reach, whatever it is doing.
func (s *ReopeningStage) Abort() error {
	d, err := s.driver()
	if err != nil {
		return err
	}
	return s.wrap(d.Abort())
}

// LastStatus returns the last status report received, from the link that
// was lost while the link is down. It does not block.
func (s *ReopeningStage) LastStatus() (motion.Status, time.Time) {
	s.mu.Lock()
	d, last, at := s.cur, s.last, s.lastAt
	s.mu.Unlock()
	if d == nil {
		return last, at
	}
	return d.LastStatus()
}

// Noise returns the noise seen on every link this stage has had, the
// current one included. It does not block.
func (s *ReopeningStage) Noise() grbl.NoiseStats {
	s.mu.Lock()
	d, n := s.cur, s.noise
	s.mu.Unlock()
	if d == nil {
		return n
	}
	return n.Add(d.Noise())
}

// Reach returns where a move to p ends (see grbl.Stage.Reach), by the
// settings of the current link, or the last one while it is down. It does
// not block.
func (s *ReopeningStage) Reach(p motion.Point) motion.Point {
	s.mu.Lock()
	d, m := s.cur, s.machine
	s.mu.Unlock()
	if d == nil {
		return m.Reach(p)
	}
	return d.Reach(p)
}

// Machine returns the controller's settings on the current link (see
// grbl.Stage.Machine); while the link is down it fails at once.
func (s *ReopeningStage) Machine(ctx context.Context) (grbl.Machine, error) {
	d, err := s.driver()
	if err != nil {
		return grbl.Machine{}, err
	}
	m, err := d.Machine(ctx)
	return m, s.wrap(err)
}

// SetOrigin declares where the stage stands, on a controller without
// homing (see grbl.Stage.SetOrigin), on the current link: a reconnection
// loses it. While the link is down it fails at once.
func (s *ReopeningStage) SetOrigin(ctx context.Context, p motion.Point) error {
	s.mu.Lock()
	d := s.cur
	s.mu.Unlock()
	if d == nil {
		_, err := s.driver()
		return err
	}
	return s.wrap(d.SetOrigin(ctx, p))
}

// Err returns nil while the link is up; while it is down an error wrapping
// motion.ErrLinkLost (naming the port, reconnecting); after Close one
// wrapping grbl.ErrClosed.
func (s *ReopeningStage) Err() error {
	_, err := s.driver()
	return err
}

// Close stops reopening the port, waits for the reconnection goroutine to
// end (an attempt in progress is abandoned) and closes the current driver
// (see grbl.Stage.Close). It does not move the stage. Idempotent; safe for
// concurrent use.
func (s *ReopeningStage) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		cur := s.cur
		s.cur = nil
		s.mu.Unlock()
		s.cancel()
		if cur != nil {
			s.closeErr = cur.Close()
		}
		<-s.done
	})
	return s.closeErr
}

// supervise is the reconnection goroutine: it waits for the current
// driver's link to fail, then reopens the port until it succeeds or Close.
func (s *ReopeningStage) supervise(cur link) {
	defer close(s.done)
	for {
		select {
		case <-cur.Done():
		case <-s.ctx.Done():
			return
		}
		if s.ctx.Err() != nil {
			return // Close closed it
		}
		cause := cur.Err()
		if !errors.Is(cause, motion.ErrLinkLost) {
			cause = fmt.Errorf("%w: %w", motion.ErrLinkLost, cause)
		}
		st, at := cur.LastStatus()
		noise := cur.Noise()
		m, merr := cur.Machine(context.Background()) // known: the link is down, nothing is asked
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return
		}
		s.cur, s.lost, s.attemptErr = nil, cause, nil
		s.last, s.lastAt = st, at
		s.noise = s.noise.Add(noise)
		if merr == nil {
			s.machine = m
		}
		s.mu.Unlock()
		_ = cur.Close() // the port is closed already; this waits for the reader
		since := time.Now()
		s.log.Warnf("stage link on %s lost: %v; reopening it every %v", s.port, cause, s.retry)
		s.notify(motion.LinkEvent{Port: s.port, Err: fmt.Errorf("board: stage on %s: %w", s.port, cause)})

		next, attempts := s.reconnect()
		if next == nil {
			return // closed
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			_ = next.Close()
			return
		}
		s.cur, s.lost, s.attemptErr = next, nil, nil
		s.reconnects++
		s.mu.Unlock()
		now, _ := next.LastStatus()
		s.log.Noticef("stage link on %s back after %v (%d attempts); controller restarted (%s): position untrusted until homed",
			s.port, time.Since(since).Round(time.Millisecond), attempts, now.State)
		s.notify(motion.LinkEvent{Up: true, Port: s.port})
		cur = next
	}
}

// reconnect tries to reopen the port every retry interval until it works
// (the new driver and the number of attempts) or Close (nil).
func (s *ReopeningStage) reconnect() (link, int) {
	t := time.NewTimer(s.retry)
	defer t.Stop()
	logged := ""
	for n := 1; ; n++ {
		select {
		case <-t.C:
		case <-s.ctx.Done():
			return nil, n - 1
		}
		d, err := s.open(s.ctx)
		if err == nil {
			return d, n
		}
		if s.ctx.Err() != nil {
			return nil, n
		}
		s.mu.Lock()
		s.attemptErr = err
		s.mu.Unlock()
		if msg := err.Error(); msg != logged {
			// Once per reason, not per attempt: a port that is simply
			// absent says so once.
			s.log.Infof("stage on %s not back yet: %v (retrying every %v)", s.port, err, s.retry)
			logged = msg
		}
		t.Reset(s.retry)
	}
}

// notify calls the watchers, in registration order, outside the lock.
func (s *ReopeningStage) notify(ev motion.LinkEvent) {
	s.mu.Lock()
	ids := make([]int, 0, len(s.watchers))
	for id := range s.watchers {
		ids = append(ids, id)
	}
	fs := make([]func(motion.LinkEvent), 0, len(ids))
	slices.Sort(ids)
	for _, id := range ids {
		fs = append(fs, s.watchers[id])
	}
	s.mu.Unlock()
	for _, f := range fs {
		f(ev)
	}
}
