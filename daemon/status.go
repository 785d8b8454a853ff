package daemon

import (
	"context"

	"github.com/waferd/waferd/config"
	"github.com/waferd/waferd/control"
	"github.com/waferd/waferd/machine"
	"github.com/waferd/waferd/motion"
)

// Status returns a snapshot of the machine. It asks the stage for a status
// report (bounded by ctx and the reply timeout).
func (d *Daemon) Status(ctx context.Context) control.Status {
	sctx, cancel := context.WithTimeout(ctx, config.MS(d.opts.Config.Stage.ReplyTimeoutMS))
	st, serr := d.opts.Devices.Stage.Status(sctx)
	cancel()
	s := control.Status{
		Machine: d.Machine.State(), LatchReason: d.Machine.LatchReason(), Busy: d.Machine.Busy(),
		Stage: st, StageErr: serr, Trusted: d.Machine.Trusted(), Homes: d.opts.Config.Stage.Homing,
		Travel: d.opts.Devices.Limits.Travel, Light: d.light.state(),
		Camera: d.opts.Devices.Camera.Info(), Watchdog: d.Heartbeats(),
		Publish: d.Publishing(),
	}
	d.mu.Lock()
	s.LightLevel = d.lightLevelLocked()
	if d.run != nil {
		r := *d.run
		s.Run = &r
	}
	s.Last = d.last
	d.mu.Unlock()
	if serr == nil && st.State == motion.StateAlarm {
		s.Trusted = false
	}
	return s
}

// Busy names the operation holding the machine ("run demo", "home", ...;
// "" when idle) without asking any device: it never blocks.
func (d *Daemon) Busy() string { return d.Machine.Busy() }

// Stats returns the machine's stop statistics.
func (d *Daemon) Stats() machine.Stats { return d.Machine.Stats() }

// LinkNoise describes the noise seen on the stage's link ("" when the
// stage does not count it).
func (d *Daemon) LinkNoise() string {
	if f := d.opts.Devices.LinkNoise; f != nil {
		return f()
	}
	return ""
}

// Publishing reports the broker connection and the outbox; nil when
// publishing is off.
func (d *Daemon) Publishing() *control.PublishStatus {
	if d.opts.Publishing == nil {
		return nil
	}
	return d.opts.Publishing()
}
