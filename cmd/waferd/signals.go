package main

import (
	"context"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"github.com/waferd/waferd/stop"
)

// signals turns SIGINT and SIGTERM into stops from the first instant of
// the process: Notify is called before anything else is done, so that no
// signal kills waferd without a record or is lost.
//
// The first signal cancels Context with a *stop.Cause (its reason from
// reasonOf): what is starting up gives up, and an operation that holds the
// machine's claim under that context is stopped through the machine's one
// stop path. Every later signal is a Stop of its own (a stronger reason
// escalates the stop in progress: SIGINT, then SIGTERM, ends with reason
// shutdown) and hurries the safe stop (no controlled hold), once the
// daemon is attached.
type signals struct {
	ch       chan os.Signal
	ctx      context.Context
	cancel   context.CancelCauseFunc
	reasonOf func(os.Signal) stop.Reason
	done     chan struct{}

	mu    sync.Mutex
	first *stop.Cause
	stop  func(stop.Reason, string) // the daemon's Stop, once attached
	hurry func(string)
}

func newSignals(reasonOf func(os.Signal) stop.Reason) *signals {
	s := &signals{ch: make(chan os.Signal, 4), reasonOf: reasonOf, done: make(chan struct{})}
	signal.Notify(s.ch, syscall.SIGINT, syscall.SIGTERM)
	s.ctx, s.cancel = context.WithCancelCause(context.Background())
	go s.loop()
	return s
}

func (s *signals) loop() {
	defer close(s.done)
	for sig := range s.ch {
		cause := stop.New(s.reasonOf(sig), sig.String())
		s.mu.Lock()
		first := s.first == nil
		if first {
			s.first = cause
		}
		stopf, hurry := s.stop, s.hurry
		s.mu.Unlock()
		if first {
			s.cancel(cause)
			continue
		}
		if stopf != nil {
			stopf(cause.Reason, cause.Detail)
			hurry("second signal, " + sig.String())
		}
	}
}

// Context is cancelled by the first signal, with its *stop.Cause.
func (s *signals) Context() context.Context { return s.ctx }

// First returns the first signal's cause, nil if none came.
func (s *signals) First() *stop.Cause {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.first
}

// attach directs later signals to the daemon's Stop and Hurry.
func (s *signals) attach(stopf func(stop.Reason, string), hurry func(string)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stop, s.hurry = stopf, hurry
}

// close stops the delivery of signals to s.
func (s *signals) close() {
	signal.Stop(s.ch)
	close(s.ch)
	<-s.done
}
