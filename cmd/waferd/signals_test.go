package main

import (
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/waferd/waferd/daemon/daemontest"
	"github.com/waferd/waferd/machine"
)

// TestSIGINTThenSIGTERMEscalatesToShutdown: waferd run's signals go
// through the machine's one stop path. Ctrl-C stops the run (operator); a
// SIGTERM while its safe stop holds the stage escalates the stop to reason
// shutdown (the README ranks shutdown above operator) and hurries it: the
// hold is abandoned for a reset. Signals are fed to the handler's channel,
// as signal.Notify does.
func TestSIGINTThenSIGTERMEscalatesToShutdown(t *testing.T) {
	r := daemontest.New(t, daemontest.Options{})
	r.Stage.SetHoldTime(time.Hour) // the hold ends only if hurried
	sigs := newSignals(runReason)
	defer sigs.close()
	sigs.attach(r.D.Stop, r.D.Hurry)
	var once sync.Once
	r.Stage.OnCall(func(call string) {
		switch call {
		case "moving":
			once.Do(func() { sigs.ch <- syscall.SIGINT })
		case "Hold":
			sigs.ch <- syscall.SIGTERM
		}
	})
	res, err := r.D.Run(sigs.Context(), r.Recipe)
	require.NoError(t, err)
	assert.Equal(t, machine.Canceled, res.Outcome, "%s %v", res.Reason, res.Err)
	assert.Equal(t, "shutdown (escalated from stopped: operator (interrupt))", res.Reason)
	assert.Equal(t, machine.Idle, r.D.Machine.State())
	assert.False(t, r.D.Machine.Trusted(), "hurried: reset while decelerating")
}
