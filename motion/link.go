package motion

// LinkEvent reports that a stage's link to its controller was lost or has
// been re-established.
type LinkEvent struct {
	// Up is false when the link was lost and true when it is back.
	Up bool
	// Port names the link (the serial port path), for messages.
	Port string
	// Err says why the link was lost (Up false); it wraps ErrLinkLost.
	Err error
}

// LinkWatcher is implemented by a Stage that re-establishes a lost link by
// itself (board.ReopeningStage: a USB serial adapter unplugged and plugged
// back). While the link is down its calls fail with errors wrapping
// ErrLinkLost. A re-established link leads to a controller that has
// restarted: the stage's position is unknown (it must be homed again) and
// the controller may be in an alarm lock.
type LinkWatcher interface {
	// WatchLink registers f to be called on every loss and every
	// re-establishment of the link, in order. A loss is reported before
	// the first attempt to reconnect, so a caller can stop whatever relied
	// on the old link before a new one exists. f is called from the
	// stage's own goroutine: it must not block and must not call the
	// stage. The returned function unregisters f; it does not wait for a
	// call of f in progress.
	WatchLink(f func(LinkEvent)) (unregister func())
}
