package watchdog

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// Notifier sends one sd_notify state, e.g. "READY=1" or "STATUS=idle".
type Notifier interface {
	Notify(state string) error
}

// SystemdNotifier notifies systemd through $NOTIFY_SOCKET. Without
// NOTIFY_SOCKET (not started by systemd, or the unit is not Type=notify) it
// does nothing and reports no error.
type SystemdNotifier struct{}

// Notify implements Notifier.
func (SystemdNotifier) Notify(state string) error {
	if _, err := daemon.SdNotify(false, state); err != nil {
		return fmt.Errorf("watchdog: sd_notify %s to %s: %w", firstLine(state), os.Getenv("NOTIFY_SOCKET"), err)
	}
	return nil
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return strconv.Quote(s)
}

// SystemdInterval returns systemd's watchdog timeout for this process
// (WatchdogSec= of the unit, passed as $WATCHDOG_USEC), or 0 when systemd's
// watchdog is not enabled for it. Put it in Config.NotifyInterval.
func SystemdInterval() (time.Duration, error) {
	d, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		return 0, fmt.Errorf("watchdog: systemd watchdog interval: %w", err)
	}
	return d, nil
}
