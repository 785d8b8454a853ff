package illumination

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/physic"
)

// DefaultSysfsPWMRoot is where the kernel lists its PWM controllers.
const DefaultSysfsPWMRoot = "/sys/class/pwm"

// DefaultExportTimeout bounds the wait for an exported channel's attributes
// to become writable (udev sets their group and mode after the kernel has
// created them).
const DefaultExportTimeout = time.Second

// SysfsPWMConfig names a PWM channel of the kernel's sysfs interface:
// Root/Chip/pwmChannel.
type SysfsPWMConfig struct {
	// Root is the sysfs PWM class directory; empty means
	// DefaultSysfsPWMRoot. Tests point it at a fake tree.
	Root string
	// Chip is the controller's directory name under Root, e.g. "pwmchip0".
	Chip string
	// Channel is the channel number on the chip, 0 ≤ Channel < npwm.
	Channel int
	// ExportTimeout bounds the wait after exporting the channel; zero means
	// DefaultExportTimeout.
	ExportTimeout time.Duration
}

// SysfsPWM is one PWM channel driven through /sys/class/pwm. It implements
// Dimmer: PWM sets the frequency and duty cycle, Out(gpio.Low) sets duty 0.
// Every method blocks only for sysfs writes (OpenSysfsPWM also for the
// export, see there) and is safe for concurrent use. Its safe state is duty
// 0; Close also disables the channel.
//
// The kernel refuses a duty_cycle longer than the period; the channel keeps
// that true at every write: the period is written before the duty cycle,
// and before a change of period the duty cycle is set to 0.
type SysfsPWM struct {
	dir      string // Root/Chip/pwmN
	chipDir  string // Root/Chip
	channel  int
	exported bool // we exported it, so Close unexports it

	// write stores value in the attribute at path. Tests replace it with
	// a fake kernel that enforces the kernel's rules.
	write func(path, value string) error

	mu      sync.Mutex
	period  int64 // ns, as last read or written; 0: not set
	duty    int64 // ns, as last read or written
	enabled bool
	closed  bool
}

var _ Dimmer = (*SysfsPWM)(nil)

// OpenSysfsPWM opens a channel: it checks the chip exists and has the
// channel, exports the channel if Root/Chip/pwmN does not exist yet, and
// sets its duty cycle to 0 (the safe state) if a period is set. After an
// export it waits, up to cfg.ExportTimeout or until ctx ends, for the
// channel's attributes to become writable. Errors name the files and what
// was written; a missing chip lists the chips found under Root.
func OpenSysfsPWM(ctx context.Context, cfg SysfsPWMConfig) (*SysfsPWM, error) {
	return openSysfsPWM(ctx, cfg, writeAttr)
}

func openSysfsPWM(ctx context.Context, cfg SysfsPWMConfig, write func(path, value string) error) (*SysfsPWM, error) {
	if cfg.Root == "" {
		cfg.Root = DefaultSysfsPWMRoot
	}
	if cfg.ExportTimeout <= 0 {
		cfg.ExportTimeout = DefaultExportTimeout
	}
	if cfg.Chip == "" || strings.ContainsRune(cfg.Chip, '/') || cfg.Chip == "." || cfg.Chip == ".." {
		return nil, fmt.Errorf("illumination: PWM chip name %q: want a directory name under %s such as pwmchip0", cfg.Chip, cfg.Root)
	}
	chipDir := filepath.Join(cfg.Root, cfg.Chip)
	if _, err := os.Stat(chipDir); err != nil {
		return nil, fmt.Errorf("illumination: PWM chip %s: %w; %s", chipDir, unwrapPath(err), listChips(cfg.Root))
	}
	npwm, err := readInt(filepath.Join(chipDir, "npwm"))
	if err != nil {
		return nil, fmt.Errorf("illumination: PWM chip %s: %w", chipDir, err)
	}
	if cfg.Channel < 0 || int64(cfg.Channel) >= npwm {
		return nil, fmt.Errorf("illumination: PWM channel %d out of range: %s has %s (npwm)", cfg.Channel, chipDir, channels(npwm))
	}
	c := &SysfsPWM{
		dir:     filepath.Join(chipDir, "pwm"+strconv.Itoa(cfg.Channel)),
		chipDir: chipDir,
		channel: cfg.Channel,
		write:   write,
	}
	if _, err := os.Stat(c.dir); errors.Is(err, os.ErrNotExist) {
		if err := c.writeAttr(filepath.Join(chipDir, "export"), strconv.Itoa(cfg.Channel)); err != nil {
			if errors.Is(err, syscall.EBUSY) {
				err = fmt.Errorf("%w (is the channel claimed by a kernel driver, e.g. pwm-fan or a backlight?)", err)
			}
			return nil, err
		}
		c.exported = true
		if err := c.waitReady(ctx, cfg.ExportTimeout); err != nil {
			return nil, errors.Join(err, c.unexport())
		}
	} else if err != nil {
		return nil, fmt.Errorf("illumination: PWM channel %s: %w", c.dir, unwrapPath(err))
	}
	fail := func(err error) (*SysfsPWM, error) { return nil, errors.Join(err, c.unexport()) }
	if c.period, err = readInt(c.attr("period")); err != nil {
		return fail(fmt.Errorf("illumination: %w", err))
	}
	if c.duty, err = readInt(c.attr("duty_cycle")); err != nil {
		return fail(fmt.Errorf("illumination: %w", err))
	}
	en, err := readInt(c.attr("enable"))
	if err != nil {
		return fail(fmt.Errorf("illumination: %w", err))
	}
	c.enabled = en != 0
	if err := c.Halt(); err != nil {
		return fail(err)
	}
	return c, nil
}

// listChips describes the PWM controllers under root, for an error message.
func listChips(root string) string {
	entries, err := os.ReadDir(root)
	if err != nil {
		return fmt.Sprintf("no PWM controllers: %v", err)
	}
	var chips []string
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), "pwmchip") {
			continue
		}
		if n, err := readInt(filepath.Join(root, e.Name(), "npwm")); err == nil {
			chips = append(chips, fmt.Sprintf("%s (%s)", e.Name(), channels(n)))
		} else {
			chips = append(chips, e.Name())
		}
	}
	if len(chips) == 0 {
		return fmt.Sprintf("no PWM controllers under %s (is the PWM overlay enabled, e.g. dtoverlay=pwm on a Raspberry Pi?)", root)
	}
	sort.Strings(chips)
	return fmt.Sprintf("PWM controllers under %s: %s", root, strings.Join(chips, ", "))
}

func channels(n int64) string {
	switch n {
	case 0:
		return "no channels"
	case 1:
		return "1 channel (0)"
	}
	return fmt.Sprintf("%d channels (0 to %d)", n, n-1)
}

// waitReady waits until the channel's attributes can be opened for writing.
func (c *SysfsPWM) waitReady(ctx context.Context, timeout time.Duration) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		err := c.writable()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("illumination: waiting for exported PWM channel %s: %w (last: %v)", c.dir, context.Cause(ctx), err)
		case <-deadline.C:
			return fmt.Errorf("illumination: exported PWM channel %s not writable after %v: %w", c.dir, timeout, err)
		case <-tick.C:
		}
	}
}

func (c *SysfsPWM) writable() error {
	for _, a := range []string{"period", "duty_cycle", "enable"} {
		f, err := os.OpenFile(c.attr(a), os.O_WRONLY, 0)
		if err != nil {
			return err
		}
		f.Close()
	}
	return nil
}

func (c *SysfsPWM) attr(name string) string { return filepath.Join(c.dir, name) }

// String is the channel's sysfs directory.
func (c *SysfsPWM) String() string { return c.dir }

// PWM sets the channel to duty (0 to gpio.DutyMax) at frequency f and
// enables it. The period is f's in whole nanoseconds, the duty cycle that
// fraction of it, rounded.
func (c *SysfsPWM) PWM(duty gpio.Duty, f physic.Frequency) error {
	if duty < 0 || duty > gpio.DutyMax {
		return fmt.Errorf("illumination: %s: duty %d out of range [0, %d]", c.dir, duty, gpio.DutyMax)
	}
	period := int64(f.Period())
	if f <= 0 || period <= 0 {
		return fmt.Errorf("illumination: %s: frequency %s out of range", c.dir, f)
	}
	d := int64(math.Round(float64(period) * float64(duty) / float64(gpio.DutyMax)))
	d = min(d, period)
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.setLocked(period, d)
}

// setLocked writes period and duty cycle (ns) in an order the kernel
// accepts, then enables the channel.
func (c *SysfsPWM) setLocked(period, duty int64) error {
	if c.closed {
		return fmt.Errorf("illumination: %s: closed", c.dir)
	}
	if period != c.period {
		if c.duty != 0 {
			if err := c.setDutyLocked(0); err != nil {
				return err
			}
		}
		if err := c.writeAttr(c.attr("period"), strconv.FormatInt(period, 10)); err != nil {
			return err
		}
		c.period = period
	}
	if duty != c.duty {
		if err := c.setDutyLocked(duty); err != nil {
			return err
		}
	}
	if !c.enabled {
		if err := c.writeAttr(c.attr("enable"), "1"); err != nil {
			return err
		}
		c.enabled = true
	}
	return nil
}

func (c *SysfsPWM) setDutyLocked(duty int64) error {
	if err := c.writeAttr(c.attr("duty_cycle"), strconv.FormatInt(duty, 10)); err != nil {
		return err
	}
	c.duty = duty
	return nil
}

// Out(gpio.Low) sets the duty cycle to 0, output low; Out(gpio.High) sets
// it to the whole period, which needs a period set by PWM before.
func (c *SysfsPWM) Out(l gpio.Level) error {
	if l == gpio.Low {
		return c.Halt()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.period == 0 {
		return fmt.Errorf("illumination: %s: output high needs a period: call PWM first", c.dir)
	}
	return c.setLocked(c.period, c.period)
}

// Halt sets the duty cycle to 0 (the safe state: output low) and leaves the
// channel enabled. It always writes, unless no period was ever set (the
// duty cycle is then 0 already). Idempotent; a no-op after Close.
func (c *SysfsPWM) Halt() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.period == 0 {
		return nil
	}
	return c.setDutyLocked(0)
}

// Close sets the duty cycle to 0, disables the channel and, if
// OpenSysfsPWM exported it, unexports it. It tries every step. Safe to call
// more than once.
func (c *SysfsPWM) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	var errs []error
	if c.period != 0 {
		errs = append(errs, c.setDutyLocked(0))
	}
	if err := c.writeAttr(c.attr("enable"), "0"); err != nil {
		errs = append(errs, err)
	} else {
		c.enabled = false
	}
	errs = append(errs, c.unexport())
	c.closed = true
	return errors.Join(errs...)
}

// unexport undoes our export, if we made one.
func (c *SysfsPWM) unexport() error {
	if !c.exported {
		return nil
	}
	c.exported = false
	return c.writeAttr(filepath.Join(c.chipDir, "unexport"), strconv.Itoa(c.channel))
}

// writeAttr writes through c.write and names the file and the value in
// its error.
func (c *SysfsPWM) writeAttr(path, value string) error {
	err := c.write(path, value)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, syscall.EROFS):
		return fmt.Errorf("illumination: write %q to %s: %w (/sys is read-only to the service: see ProtectKernelTunables= and ReadWritePaths= in waferd.service)", value, path, err)
	case errors.Is(err, syscall.EACCES):
		return fmt.Errorf("illumination: write %q to %s: %w (the PWM files need a udev rule giving them to the service's group)", value, path, err)
	}
	return fmt.Errorf("illumination: write %q to %s: %w", value, path, err)
}

// writeAttr stores value in an existing sysfs attribute (never creating a
// file).
func writeAttr(path, value string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return unwrapPath(err)
	}
	_, err = f.WriteString(value)
	return errors.Join(unwrapPath(err), unwrapPath(f.Close()))
}

// unwrapPath drops the *PathError's repetition of the path (the caller names
// it), keeping the cause.
func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// readInt reads a sysfs attribute holding one integer.
func readInt(path string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	return n, nil
}
