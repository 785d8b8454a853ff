package daemon

import (
	"fmt"
	"sync"
	"time"

	"github.com/waferd/waferd/control"
)

// EventBuffer is how many events a subscriber may fall behind before it
// loses some.
const EventBuffer = 256

// bus fans events out to subscribers without ever blocking the publisher:
// a subscriber that does not keep up loses events. Publishing from the
// machine's event callback (under the machine's lock) is therefore safe.
type bus struct {
	mu   sync.Mutex
	subs map[chan control.Event]struct{}
	tap  func(control.Event) // Options.Events: every event, in order
}

// Subscribe returns a channel of events from now on and a function that
// ends the subscription (and closes the channel). The daemon never blocks
// on a subscriber: events a slow one has no room for are dropped.
func (d *Daemon) Subscribe() (<-chan control.Event, func()) {
	b := &d.bus
	ch := make(chan control.Event, EventBuffer)
	b.mu.Lock()
	if b.subs == nil {
		b.subs = make(map[chan control.Event]struct{})
	}
	b.subs[ch] = struct{}{}
	b.mu.Unlock()
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			b.mu.Lock()
			delete(b.subs, ch)
			close(ch)
			b.mu.Unlock()
		})
	}
}

func (b *bus) publish(e control.Event) {
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.tap != nil {
		b.tap(e)
	}
	for ch := range b.subs {
		select {
		case ch <- e:
		default:
		}
	}
}

// notice tells every console something.
func (d *Daemon) notice(format string, args ...any) {
	d.bus.publish(control.Event{Kind: control.Notice, Text: fmt.Sprintf(format, args...)})
}
