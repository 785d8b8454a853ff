package gem

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/arloliu/go-secs/v2/hsms"
	"github.com/arloliu/go-secs/v2/secs2"
)

// Sending: our primaries (S1F13, S1F1, S6F11, S5F1, S10F1) wait in a
// bounded queue and go out one at a time from one goroutine (comms), each
// waiting for its reply. Nothing waits for the queue: what the host cannot
// receive now (not communicating, offline, the queue full) is dropped.

// outbound is a primary message of ours, for the sender.
type outbound struct {
	stream, function byte
	body             secs2.Item
	what             string // for the log: "S6F11 RunStarted"
	// offline: sent while the control state is offline too (S1F1 of an
	// attempt to go online).
	offline bool
	// done, if set, learns the reply (or why there is none), on the
	// sender's goroutine.
	done func(reply *hsms.DataMessage, err error)
}

var errNotSent = errors.New("gem: not sent: not communicating, or offline")

// enqueue queues o for the sender, unless the host cannot receive it now
// (not communicating, or offline: no spooling) or the queue is full. It
// never blocks.
func (e *Equipment) enqueue(o outbound) {
	e.mu.Lock()
	ok := e.comm == CommCommunicating && (e.ctl.Online() || o.offline)
	e.mu.Unlock()
	if ok {
		select {
		case e.out <- o:
			e.mu.Lock()
			e.dropping = false
			e.mu.Unlock()
			return
		default:
			e.mu.Lock()
			if !e.dropping {
				e.log.Warnf("host is not keeping up: %s and what follows dropped (queue of %d full)", o.what, outQueue)
			}
			e.dropping = true
			e.mu.Unlock()
		}
	}
	if o.done != nil {
		o.done(nil, errNotSent)
	}
}

// comms is the sender: it establishes communication (S1F13) whenever a
// session is selected, and sends our primaries one at a time, each waiting
// for its reply (T3). A reply that does not come is a communication
// failure: communication is established again. When drain closes, it
// sends what is queued (within drainTimeout) and returns.
func (e *Equipment) comms(ctx context.Context, drain <-chan struct{}) {
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	waiting := false // retry is armed for this wait
	for {
		e.mu.Lock()
		st, rsp := e.comm, e.rspOut
		e.mu.Unlock()
		if st != CommNoSession && !rsp {
			// The host sent data before our Select.rsp was written:
			// nothing of ours goes out before it.
			select {
			case <-e.kick:
			case <-drain:
				return
			}
			continue
		}
		if st != CommWaitDelay {
			waiting = false
		} else if !waiting {
			retry.Reset(e.cfg.EstablishRetry)
			waiting = true
		}
		switch st {
		case CommNoSession:
			e.discardQueued()
			select {
			case <-e.kick:
			case <-drain:
				return
			}
		case CommWaitCRA:
			e.establish(ctx)
		case CommWaitDelay:
			e.discardQueued()
			select {
			case <-e.kick:
			case <-retry.C:
				e.setComm(commRetry)
			case <-drain:
				return
			}
		case CommCommunicating:
			select {
			case o := <-e.out:
				e.sendOut(ctx, o)
			case <-e.kick:
			case <-drain:
				e.drainQueued()
				return
			}
		}
	}
}

// establish sends S1F13 and applies the host's answer.
func (e *Equipment) establish(ctx context.Context) {
	reply, err := e.conn.SendDataMessage(ctx, 1, 13, true, e.mdln())
	accepted := false
	if err == nil {
		ack, aerr := secs2.NewCursor(mustItem(reply)).At(0).Binary()
		accepted = aerr == nil && len(ack) == 1 && ack[0] == 0 && reply.Function() == 14
		if !accepted {
			e.log.Warnf("host denied establish communications (S1F13): %s", sml(reply))
		}
	} else if ctx.Err() == nil {
		e.log.Infof("establish communications (S1F13): %v", err)
	}
	if accepted {
		e.setComm(commAccepted)
	} else {
		e.setComm(commDenied)
	}
}

// sendOut sends one primary and waits for its reply.
func (e *Equipment) sendOut(ctx context.Context, o outbound) {
	reply, err := e.conn.SendDataMessage(ctx, o.stream, o.function, true, o.body)
	if err == nil && reply.Function() == 0 {
		err = fmt.Errorf("gem: %s: the host aborted the transaction (S%dF0)", o.what, o.stream)
	}
	switch {
	case err == nil:
		e.log.Debugf("sent %s", o.what)
	case errors.Is(err, hsms.ErrT3Timeout):
		e.log.Warnf("%s: no reply within T3 (%v): communication failure, establishing it again", o.what, e.cfg.T3)
		e.setComm(commFailed)
	case ctx.Err() == nil:
		e.log.Infof("%s: %v", o.what, err)
	}
	if o.done != nil {
		o.done(reply, err)
	}
}

// discardQueued drops what waits to be sent: the session it was for is
// gone, and the host defines anew what it wants to hear.
func (e *Equipment) discardQueued() {
	for {
		select {
		case o := <-e.out:
			if o.done != nil {
				o.done(nil, errNotSent)
			}
		default:
			return
		}
	}
}

// drainQueued sends what is queued, within drainTimeout.
func (e *Equipment) drainQueued() {
	ctx, cancel := context.WithTimeout(context.Background(), drainTimeout)
	defer cancel()
	for ctx.Err() == nil {
		select {
		case o := <-e.out:
			e.sendOut(ctx, o)
		default:
			return
		}
	}
	e.discardQueued()
}
