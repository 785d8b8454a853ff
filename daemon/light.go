package daemon

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/waferd/waferd/config"
	"github.com/waferd/waferd/control"
	"github.com/waferd/waferd/illumination"
	"github.com/waferd/waferd/inspection/recipe"
	"github.com/waferd/waferd/machine"
	"github.com/waferd/waferd/watchdog"
)

// DefaultLightLevel is the level of a console's "light on" until set.
const DefaultLightLevel = 0.8

// SetLight switches the light on at level (a light level by
// recipe.ValidLightLevel: 0.01 to 1 in steps of 0.01; 0 keeps the console
// level) or off. Switching on holds the machine's claim for the
// switching, so it is refused during a run or another operation and while
// the machine is latched; the light then stays on until a console switches
// it off, a Stop, a run starting, or 90% of the watchdog's maximum on-time
// (so that the watchdog never faults). Switching off always works: off is
// the safe state. During a run it is logged, because the run switches the
// light on again at its next site (a capture it interrupts may be dark).
func (d *Daemon) SetLight(on bool, level float64) error {
	if level != 0 && !recipe.ValidLightLevel(level) {
		return fmt.Errorf("daemon: light level %g: %w", level, errLightLevel)
	}
	d.mu.Lock()
	if level > 0 {
		d.level = level
	}
	level = d.lightLevelLocked()
	d.mu.Unlock()
	if !on {
		if busy := d.Machine.Busy(); busy != "" {
			d.log.Noticef("light switched off by a console during %s", busy)
			d.notice("light switched off during %s: it switches the light on again when it needs it (stop it to keep it off)", busy)
		}
		d.stopLightTimer()
		return d.light.Off()
	}
	err := d.operate(context.Background(), "light", func(c *machine.Claim) error {
		return machine.Fault("light", d.light.On(level))
	})
	if err != nil {
		return err
	}
	maxOn := config.MS(d.opts.Config.Watchdog.LightMaxOnMS)
	var t *time.Timer
	t = time.AfterFunc(maxOn*9/10, func() {
		d.mu.Lock()
		mine := d.lightTimer == t
		if mine {
			d.lightTimer = nil
		}
		d.mu.Unlock()
		if !mine || !d.light.state().On {
			return // switched off meanwhile (a stop halts the light)
		}
		err := d.light.Off()
		d.notice("light switched off: on for %v, near its maximum on-time (watchdog light_max_on_ms = %d)", (maxOn * 9 / 10).Round(time.Millisecond), d.opts.Config.Watchdog.LightMaxOnMS)
		if err != nil {
			d.log.Errorf("light off after its on-time: %v", err)
		}
	})
	d.mu.Lock()
	old := d.lightTimer
	d.lightTimer = t
	d.mu.Unlock()
	if old != nil {
		old.Stop()
	}
	return nil
}

// SetLightLevel sets the level a console's "light on" uses (a light level
// by recipe.ValidLightLevel); a light a console switched on changes to it at
// once.
func (d *Daemon) SetLightLevel(level float64) error {
	if !recipe.ValidLightLevel(level) {
		return fmt.Errorf("daemon: light level %g: %w", level, errLightLevel)
	}
	d.mu.Lock()
	d.level = level
	on := d.lightTimer != nil
	d.mu.Unlock()
	if on {
		return d.SetLight(true, level)
	}
	return nil
}

// errLightLevel is the light-level rule (recipe.ValidLightLevel).
var errLightLevel = errors.New("not a fraction from 0.01 to 1 in steps of 0.01 (1%)")

func (d *Daemon) lightLevelLocked() float64 {
	if d.level > 0 {
		return d.level
	}
	return DefaultLightLevel
}

func (d *Daemon) stopLightTimer() bool {
	d.mu.Lock()
	t := d.lightTimer
	d.lightTimer = nil
	d.mu.Unlock()
	if t != nil {
		t.Stop()
	}
	return t != nil
}

// switchConsoleLightOff switches off a light a console left on (a run is
// starting and switches the light itself).
func (d *Daemon) switchConsoleLightOff(why string) {
	if !d.stopLightTimer() {
		return
	}
	if err := d.light.Off(); err != nil {
		d.log.Errorf("%s: switching the console's light off: %v", why, err)
	}
}

// leasedLight holds the watchdog's on-time lease while the light is on.
type leasedLight struct {
	illumination.Lamp
	lease *watchdog.Lease
}

func (l *leasedLight) On(level float64) error {
	l.lease.Start()
	return l.Lamp.On(level)
}

func (l *leasedLight) Off() error {
	err := l.Lamp.Off()
	l.lease.End()
	return err
}

func (l *leasedLight) Halt() error {
	err := l.Lamp.Halt()
	l.lease.End()
	return err
}

// trackedLight records what the light was last told, for the console.
type trackedLight struct {
	illumination.Lamp
	mu sync.Mutex
	st control.LightState
}

func (l *trackedLight) On(level float64) error {
	err := l.Lamp.On(level)
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil {
		l.st = control.LightState{Err: err}
		return err
	}
	if !l.st.On {
		l.st.Since = time.Now()
	}
	l.st.On, l.st.Level, l.st.Err = true, level, nil
	return nil
}

func (l *trackedLight) Off() error { return l.off(l.Lamp.Off()) }

func (l *trackedLight) Halt() error { return l.off(l.Lamp.Halt()) }

func (l *trackedLight) off(err error) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err == nil {
		l.st = control.LightState{}
	} else {
		l.st.Err = err
	}
	return err
}

func (l *trackedLight) state() control.LightState {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.st
}
