// Package illumination drives the inspection light: an enable line on a
// periph gpio.PinOut, an optional intensity (PWM) output (a periph pin with
// PWM, or a sysfs PWM channel: SysfsPWM) and an optional sense input that
// confirms the light really is on or off. Its safe state is off.
package illumination

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/physic"
)

// Config wires a light.
type Config struct {
	// Enable switches the light (required).
	Enable gpio.PinOut
	// ActiveLow: the light is on when Enable is driven low.
	ActiveLow bool
	// Dimmer, if set, sets the intensity by PWM duty cycle at DimmerFreq
	// (default 20 kHz). Without it the light is on/off only and any level
	// > 0 means fully on.
	Dimmer     Dimmer
	DimmerFreq physic.Frequency
	// Sense, if set, reads back whether light is present (High = lit,
	// unless SenseActiveLow). Never the Enable line itself: reading an
	// output line reconfigures it as an input.
	Sense          gpio.PinIn
	SenseActiveLow bool
}

// Dimmer is a PWM output that sets the light's intensity. Every
// gpio.PinOut is one (if its driver implements PWM); so is SysfsPWM.
type Dimmer interface {
	// PWM outputs duty (0 to gpio.DutyMax) at frequency f.
	PWM(duty gpio.Duty, f physic.Frequency) error
	// Out(gpio.Low) holds the output low (duty 0): the dimmer's off.
	Out(l gpio.Level) error
	// String names the output in errors.
	String() string
}

var _ Dimmer = gpio.PinOut(nil)

// Lamp is the light's contract: what the machine and the inspection
// workflow need of it. *Light implements it, and so must every wrapper
// (the daemon's on-time lease and state tracking): Halt is on the stop
// path, and a wrapper that does not pass it on does not compile. Methods
// are safe for concurrent use and block for nothing but a GPIO or sysfs
// write.
type Lamp interface {
	// On switches the light on at level (0 < level ≤ 1).
	On(level float64) error
	// Off switches the light off, confirmed where it can be (sense input).
	Off() error
	// Halt returns the light to its safe state (off); idempotent, from any
	// goroutine. Every stop calls it first.
	Halt() error
}

var _ Lamp = (*Light)(nil)

// Light is the inspection light. Methods are safe for concurrent use; none
// blocks beyond a GPIO or sysfs write.
type Light struct {
	cfg Config

	mu    sync.Mutex
	on    bool
	level float64
	since time.Time
	err   error // last hardware error, for status
}

// ErrSense reports that the sense input contradicts the commanded state.
var ErrSense = errors.New("illumination: sense input disagrees")

// New returns a light and drives it to its safe state (off).
func New(cfg Config) (*Light, error) {
	if cfg.Enable == nil {
		return nil, errors.New("illumination: no enable line configured")
	}
	if cfg.DimmerFreq == 0 {
		cfg.DimmerFreq = 20 * physic.KiloHertz
	}
	l := &Light{cfg: cfg}
	if err := l.Off(); err != nil {
		return nil, err
	}
	return l, nil
}

// On switches the light on at level (0 < level ≤ 1).
func (l *Light) On(level float64) error {
	if level <= 0 || level > 1 {
		return fmt.Errorf("illumination: level %g out of range (0, 1]", level)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cfg.Dimmer != nil {
		duty := gpio.Duty(level * float64(gpio.DutyMax))
		if err := l.cfg.Dimmer.PWM(duty, l.cfg.DimmerFreq); err != nil {
			return l.fail(fmt.Errorf("illumination: set level %g on %s: %w", level, l.cfg.Dimmer, err))
		}
	}
	if err := l.cfg.Enable.Out(l.activeLevel(true)); err != nil {
		return l.fail(fmt.Errorf("illumination: switch on %s: %w", l.cfg.Enable, err))
	}
	if !l.on {
		l.since = time.Now()
	}
	l.on, l.level = true, level
	if err := l.checkSense(true); err != nil {
		return l.fail(err)
	}
	l.err = nil
	return nil
}

// fail switches the light off after err and returns both errors.
func (l *Light) fail(err error) error {
	err = errors.Join(err, l.offLocked())
	l.err = err
	return err
}

// Off switches the light off. It always tries every output, is idempotent,
// and is the light's Halt.
func (l *Light) Off() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.offLocked()
}

// Halt returns the light to its safe state (off).
func (l *Light) Halt() error { return l.Off() }

func (l *Light) offLocked() error {
	// No slice of errors: switching off is on every site's path, and
	// allocates nothing when it works.
	var enErr, dimErr, senseErr error
	if err := l.cfg.Enable.Out(l.activeLevel(false)); err != nil {
		enErr = fmt.Errorf("illumination: switch off %s: %w", l.cfg.Enable, err)
	}
	if l.cfg.Dimmer != nil {
		if err := l.cfg.Dimmer.Out(gpio.Low); err != nil {
			dimErr = fmt.Errorf("illumination: dimmer off %s: %w", l.cfg.Dimmer, err)
		}
	}
	if enErr == nil && dimErr == nil {
		l.on, l.level = false, 0
		senseErr = l.checkSense(false)
	}
	err := errors.Join(enErr, dimErr, senseErr)
	if err != nil {
		l.err = err
	}
	return err
}

func (l *Light) checkSense(want bool) error {
	if l.cfg.Sense == nil {
		return nil
	}
	lit := l.cfg.Sense.Read() == gpio.High
	if l.cfg.SenseActiveLow {
		lit = !lit
	}
	if lit != want {
		l.err = fmt.Errorf("%w: commanded %s but %s reads %s", ErrSense, onOff(want), l.cfg.Sense, onOff(lit))
		return l.err
	}
	return nil
}

func (l *Light) activeLevel(on bool) gpio.Level {
	return gpio.Level(on != l.cfg.ActiveLow)
}

// State describes the light.
type State struct {
	On    bool
	Level float64   // 0..1
	Since time.Time // when it was last switched on
	Err   error     // last hardware error, nil when healthy
}

// State returns the light's commanded state.
func (l *Light) State() State {
	l.mu.Lock()
	defer l.mu.Unlock()
	return State{On: l.on, Level: l.level, Since: l.since, Err: l.err}
}

// IsOn reports whether the light is commanded on.
func (l *Light) IsOn() bool { return l.State().On }

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}
