package board

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"periph.io/x/conn/v3/gpio"

	"github.com/waferd/waferd/config"
	"github.com/waferd/waferd/illumination"
	"github.com/waferd/waferd/input"
)

// The GPIO tests run on real kernel GPIO lines: gpio-sim chips (the
// kernel's GPIO simulator, built for Debian's kernel by `make test-vm`),
// created here through configfs and driven through their sysfs pull and
// value files, while the production path (OpenLine: periph's gpioioctl
// driver on /dev/gpiochipN; illumination; input) uses the lines.
//
// WAFERD_TEST_GPIOSIM names gpio-sim's configfs directory
// (/sys/kernel/config/gpio-sim); it needs root and the gpio-sim module.
// Without it the tests skip.
//
// periph enumerates the chips once per process (the first OpenLine), so
// TestMain creates every chip before any test runs.

const simLabel, goneLabel = "waferd-sim", "waferd-gone"

var (
	simMain, simGone *simChip // nil unless WAFERD_TEST_GPIOSIM is set
	simSetupErr      error
)

func TestMain(m *testing.M) {
	if line := os.Getenv("WAFERD_TEST_GPIO_HOLD"); line != "" {
		os.Exit(holdLine(line))
	}
	root := os.Getenv("WAFERD_TEST_GPIOSIM")
	if root == "" {
		os.Exit(m.Run())
	}
	simMain, simSetupErr = newSimChip(root, "waferd-main", simLabel, "light", "button", "estop", "sense", "held")
	if simSetupErr == nil {
		simGone, simSetupErr = newSimChip(root, "waferd-gone", goneLabel, "light", "button", "estop")
	}
	code := m.Run()
	for _, c := range []*simChip{simGone, simMain} {
		if c != nil {
			if err := c.remove(); err != nil {
				fmt.Fprintln(os.Stderr, "gpio-sim teardown:", err)
				code = 1
			}
		}
	}
	os.Exit(code)
}

// needSim skips unless the gpio-sim chips were set up.
func needSim(t *testing.T) {
	t.Helper()
	if os.Getenv("WAFERD_TEST_GPIOSIM") == "" {
		t.Skip("WAFERD_TEST_GPIOSIM not set: these tests need the kernel's gpio-sim module and root " +
			"(`make test-vm` runs them in a VM); set WAFERD_TEST_GPIOSIM=/sys/kernel/config/gpio-sim")
	}
	require.NoError(t, simSetupErr, "setting up the gpio-sim chips")
}

// simChip is one gpio-sim device with one bank of named lines.
type simChip struct {
	dir   string // configfs: <root>/<name>
	label string
	name  string // gpiochipN
	sysfs string // /sys/devices/platform/<dev>/<chip>
	lines []string
}

func newSimChip(root, name, label string, lines ...string) (*simChip, error) {
	c := &simChip{dir: filepath.Join(root, name), label: label, lines: lines}
	bank := filepath.Join(c.dir, "bank0")
	if err := os.MkdirAll(bank, 0o755); err != nil {
		return nil, err
	}
	write := func(path, v string) error { return os.WriteFile(path, []byte(v), 0o644) }
	if err := errors.Join(write(filepath.Join(bank, "label"), label),
		write(filepath.Join(bank, "num_lines"), strconv.Itoa(len(lines)))); err != nil {
		return nil, err
	}
	for i, l := range lines {
		dir := filepath.Join(bank, fmt.Sprintf("line%d", i))
		if err := os.Mkdir(dir, 0o755); err != nil {
			return nil, err
		}
		if err := write(filepath.Join(dir, "name"), l); err != nil {
			return nil, err
		}
	}
	if err := write(filepath.Join(c.dir, "live"), "1"); err != nil {
		return nil, fmt.Errorf("gpio-sim %s live: %w", name, err)
	}
	dev, err := os.ReadFile(filepath.Join(c.dir, "dev_name"))
	if err != nil {
		return nil, err
	}
	chip, err := os.ReadFile(filepath.Join(bank, "chip_name"))
	if err != nil {
		return nil, err
	}
	c.name = strings.TrimSpace(string(chip))
	c.sysfs = filepath.Join("/sys/devices/platform", strings.TrimSpace(string(dev)), c.name)
	return c, nil
}

func (c *simChip) offset(t *testing.T, line string) int {
	for i, l := range c.lines {
		if l == line {
			return i
		}
	}
	t.Fatalf("no line %q on %s", line, c.label)
	return -1
}

// pull sets the simulated external pull of line: what an input reads when
// nothing drives it (a switch closing to ground is pull(false)).
func (c *simChip) pull(t *testing.T, line string, up bool) {
	t.Helper()
	v := "pull-down"
	if up {
		v = "pull-up"
	}
	p := filepath.Join(c.sysfs, fmt.Sprintf("sim_gpio%d", c.offset(t, line)), "pull")
	require.NoError(t, os.WriteFile(p, []byte(v), 0o644))
}

// value reads the line's value as the simulator sees it (for an output:
// what its user drives).
func (c *simChip) value(t *testing.T, line string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(c.sysfs, fmt.Sprintf("sim_gpio%d", c.offset(t, line)), "value"))
	require.NoError(t, err)
	v, err := strconv.Atoi(strings.TrimSpace(string(b)))
	require.NoError(t, err)
	return v
}

// remove takes the chip away (as a USB expander unplugged) and deletes its
// configuration. Safe to call twice.
func (c *simChip) remove() error {
	if _, err := os.Stat(c.dir); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err := os.WriteFile(filepath.Join(c.dir, "live"), []byte("0"), 0o644); err != nil {
		return fmt.Errorf("gpio-sim %s: live=0: %w", c.label, err)
	}
	bank := filepath.Join(c.dir, "bank0")
	var errs []error
	for i := range c.lines {
		errs = append(errs, os.Remove(filepath.Join(bank, fmt.Sprintf("line%d", i))))
	}
	errs = append(errs, os.Remove(bank), os.Remove(c.dir))
	return errors.Join(errs...)
}

// holdLine is the helper process of TestGPIOLineHeldByAnotherProcess: it
// requests chip/line as an input, says "held" and holds it until its
// standard input ends.
func holdLine(spec string) int {
	chip, line, _ := strings.Cut(spec, "/")
	l, err := OpenLine("holder", chip, line)
	if err == nil {
		err = l.In(gpio.PullNoChange, gpio.NoEdge)
	}
	if err != nil {
		fmt.Println("error:", err)
		return 1
	}
	fmt.Println("held")
	_, _ = io.Copy(io.Discard, os.Stdin)
	return 0
}

// The light's enable line as the simulator sees it: low at start (off),
// high while on, low again after Off and after Close; inverted with
// active_low.
func TestGPIOLightEnableLine(t *testing.T) {
	needSim(t)
	l, err := OpenLine("light enable", simLabel, "light")
	require.NoError(t, err)
	defer func() { assert.NoError(t, l.Close()) }()
	assert.Equal(t, simMain.name+"/light", l.String())

	light, err := illumination.New(illumination.Config{Enable: l})
	require.NoError(t, err)
	assert.Equal(t, 0, simMain.value(t, "light"), "off after New")
	require.NoError(t, light.On(1))
	assert.Equal(t, 1, simMain.value(t, "light"), "on")
	require.NoError(t, light.Off())
	assert.Equal(t, 0, simMain.value(t, "light"), "off")

	inv, err := illumination.New(illumination.Config{Enable: l, ActiveLow: true})
	require.NoError(t, err)
	assert.Equal(t, 1, simMain.value(t, "light"), "active low: off is high")
	require.NoError(t, inv.On(0.5))
	assert.Equal(t, 0, simMain.value(t, "light"), "active low: on is low")
	require.NoError(t, inv.Halt())
	assert.Equal(t, 1, simMain.value(t, "light"), "active low: halted is off")
}

// runInput runs an input's Run until the test ends and checks it ended
// cleanly.
func runInput(t *testing.T, run func(context.Context) error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	t.Cleanup(func() {
		cancel()
		assert.NoError(t, <-done)
	})
}

// The stop button wired as in the example configuration (to ground, pull
// up, active low), pressed by pulling the simulated line down: every press
// is one stop, a bouncing contact within the debounce time is one press,
// and a press takes one edge wake-up to be seen.
func TestGPIOButton(t *testing.T) {
	needSim(t)
	noLeaks(t)
	simMain.pull(t, "button", true)
	l, err := openInput("stop button", simLabel, "button")
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, l.Close()) }) // after runInput's

	const debounce = 300 * time.Millisecond
	var presses atomic.Int64
	var pressedAt atomic.Int64 // UnixNano of the last onPress
	b, err := input.NewButton(input.Config{Pin: l, ActiveLow: true, Pull: gpio.PullUp, Debounce: debounce}, func() {
		pressedAt.Store(time.Now().UnixNano())
		presses.Add(1)
	})
	require.NoError(t, err)
	runInput(t, b.Run)
	// Run has configured the line when it reads it: wait for the released
	// level to be the debounced state.
	time.Sleep(50 * time.Millisecond)
	require.Zero(t, presses.Load(), "released at start")

	var lat []time.Duration
	for i := 1; i <= 3; i++ {
		edge := time.Now()
		simMain.pull(t, "button", false) // pressed
		require.Eventually(t, func() bool { return presses.Load() == int64(i) }, 5*time.Second, time.Millisecond, "press %d", i)
		lat = append(lat, time.Unix(0, pressedAt.Load()).Sub(edge))
		simMain.pull(t, "button", true) // released
		require.Eventually(t, func() bool { return !b.Pressed() }, 5*time.Second, time.Millisecond, "release %d", i)
	}
	t.Logf("button: pull written → onPress: %v (gpio-sim edge, gpioioctl event, input's wake-up and read)", lat)

	// A bouncing contact: five edges on press and five on release, all
	// within the debounce time, are one press.
	start := time.Now()
	for _, down := range []bool{true, false, true, false, true} {
		simMain.pull(t, "button", !down)
	}
	burst := time.Since(start)
	require.Eventually(t, func() bool { return presses.Load() == 4 }, 5*time.Second, time.Millisecond)
	start = time.Now()
	for _, up := range []bool{true, false, true, false, true} {
		simMain.pull(t, "button", up)
	}
	burst = max(burst, time.Since(start))
	require.Less(t, burst, debounce, "each bounce burst must fit in the debounce time for this check; the host was too slow")
	require.Eventually(t, func() bool { return !b.Pressed() }, 5*time.Second, time.Millisecond)
	assert.Equal(t, int64(4), presses.Load(), "a bouncing press and release count once (bursts of %v)", burst)
	assert.Equal(t, uint64(4), b.Presses())
}

// The e-stop's normally-closed contact holds the line low (pulled down
// here; pull "keep": the line's bias is the wiring's); engaged, the line
// goes high. A trip is at once and once however the contact bounces; the
// e-stop stays engaged (latched: Released open) while held, whatever the
// time, and is released only once the line has read released for the
// debounce time.
func TestGPIOEStop(t *testing.T) {
	needSim(t)
	noLeaks(t)
	simMain.pull(t, "estop", false) // contact closed: all is well
	l, err := openInput("e-stop", simLabel, "estop")
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, l.Close()) }) // after runInput's

	const debounce = 300 * time.Millisecond
	var trips atomic.Int64
	e, err := input.NewEStop(input.Config{Pin: l, Pull: gpio.PullNoChange, Debounce: debounce}, func() { trips.Add(1) })
	require.NoError(t, err)
	runInput(t, e.Run)
	require.Eventually(t, func() bool { return !e.Active() }, 5*time.Second, time.Millisecond, "released at start")

	start := time.Now()
	for _, up := range []bool{true, false, true, false, true} { // engaged, bouncing
		simMain.pull(t, "estop", up)
	}
	burst := time.Since(start)
	require.Eventually(t, func() bool { return trips.Load() == 1 }, 5*time.Second, time.Millisecond)
	tripped := time.Since(start)
	assert.True(t, e.Active())
	released := e.Released()
	// Held for several debounce times: still engaged, no second trip.
	time.Sleep(3 * debounce)
	assert.True(t, e.Active(), "held")
	select {
	case <-released:
		t.Fatal("Released closed while the e-stop is held")
	default:
	}
	simMain.pull(t, "estop", false) // released
	relAt := time.Now()
	select {
	case <-released:
	case <-time.After(5 * time.Second):
		t.Fatal("Released not closed 5 s after the release")
	}
	assert.GreaterOrEqual(t, time.Since(relAt), debounce, "released only after the debounce time")
	require.Less(t, burst, debounce, "the bounce burst must fit in the debounce time for this check; the host was too slow")
	assert.Equal(t, int64(1), trips.Load(), "a bouncing e-stop trips once")
	assert.False(t, e.Active())
	t.Logf("e-stop: first pull written → trip seen %v; bounce burst %v", tripped.Round(time.Microsecond), burst.Round(time.Microsecond))
}

// A line held by another process: OpenLine finds it, but requesting it
// fails with an error that names the line and the holder, and board.Open
// refuses to start with it, naming the device.
func TestGPIOLineHeldByAnotherProcess(t *testing.T) {
	needSim(t)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "WAFERD_TEST_GPIO_HOLD="+simLabel+"/held")
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	defer func() {
		_ = stdin.Close()
		assert.NoError(t, cmd.Wait())
	}()
	said, _ := bufio.NewReader(stdout).ReadString('\n')
	require.Equal(t, "held\n", said)
	holder := fmt.Sprintf("%q", fmt.Sprintf("%s@%d", filepath.Base(os.Args[0]), cmd.Process.Pid))

	l, err := OpenLine("stop button", simLabel, "held")
	require.NoError(t, err, "finding the line does not request it")
	err = l.In(gpio.PullUp, gpio.BothEdges)
	require.Error(t, err)
	t.Logf("In: %v", err)
	assert.Contains(t, err.Error(), "board: GPIO line "+simMain.name+"/held is busy: held by "+holder)
	assert.NoError(t, l.Close())

	cfg := gpioConfig(t)
	cfg.Button = config.Input{Chip: simLabel, Line: "held", ActiveLow: true, Pull: "up", DebounceMS: 20}
	_, err = Open(openCtx(t), cfg)
	require.Error(t, err)
	t.Logf("Open: %v", err)
	assert.Contains(t, err.Error(), "board: stop button: board: GPIO line "+simMain.name+"/held is busy: held by "+holder)

	cfg = gpioConfig(t)
	cfg.Light = config.Light{Chip: simLabel, Line: "held", PWMFreqHz: 20000}
	_, err = Open(openCtx(t), cfg)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "board: GPIO line "+simMain.name+"/held is busy: held by "+holder)
}

// gpioConfig is simConfig (everything simulated) with no GPIO devices
// fitted, for the tests to set real lines.
func gpioConfig(t *testing.T) *config.Config {
	cfg := simConfig(t)
	cfg.Light.PWMChip = ""
	cfg.Button.Line, cfg.EStop.Line = "", ""
	return cfg
}

// board.Open on real lines: the light, the button and the e-stop of the
// configuration are the gpio-sim lines, named short in the description.
func TestGPIOOpen(t *testing.T) {
	needSim(t)
	noLeaks(t)
	simMain.pull(t, "estop", false)
	cfg := gpioConfig(t)
	cfg.Light = config.Light{Chip: simLabel, Line: "light", SenseLine: "sense", PWMFreqHz: 20000}
	cfg.Button = config.Input{Chip: simMain.name, Line: "button", ActiveLow: true, Pull: "up", DebounceMS: 20}
	cfg.EStop = config.Input{Chip: simLabel, Line: "2", Pull: "keep", DebounceMS: 20}
	b, err := Open(openCtx(t), cfg)
	require.NoError(t, err)
	desc := b.String()
	assert.Contains(t, desc, "light "+simLabel+"/light, sense sense")
	assert.Contains(t, desc, "stop button "+simMain.name+"/button")
	assert.Equal(t, simMain.name+"/button", b.Button.String())
	assert.Equal(t, simMain.name+"/estop", b.EStop.String(), "by offset, named by its name")
	assert.Equal(t, 0, simMain.value(t, "light"))
	simMain.pull(t, "sense", true) // the photodiode sees light
	require.NoError(t, b.Light.On(1))
	assert.Equal(t, 1, simMain.value(t, "light"))
	simMain.pull(t, "sense", false)
	require.NoError(t, b.Close())
	assert.Equal(t, 0, simMain.value(t, "light"), "Close leaves the light off")
	// Closed lines are free again.
	l, err := openInput("again", simLabel, "button")
	require.NoError(t, err)
	assert.NoError(t, l.Close())
}

// A wrong line or chip name: the error lists what the kernel has.
func TestGPIOWrongNames(t *testing.T) {
	needSim(t)
	_, err := OpenLine("stop button", simLabel, "GPIO27")
	require.Error(t, err)
	assert.Equal(t, fmt.Sprintf(`board: stop button: no line "GPIO27" on GPIO chip %s (%s); its named lines: light, button, estop, sense, held (or an offset 0–4)`,
		simMain.name, simLabel), err.Error())
	_, err = OpenLine("stop button", "pinctrl-bcm2711", "GPIO27")
	require.Error(t, err)
	assert.Contains(t, err.Error(), `board: stop button: GPIO chip "pinctrl-bcm2711" not found; chips present: `)
	assert.Contains(t, err.Error(), simMain.name+" ("+simLabel+", 5 lines)")
	assert.Contains(t, err.Error(), simGone.name+" ("+goneLabel+", 3 lines)")
}

// The chip disappears under running inputs and a light (a USB GPIO expander
// unplugged): the e-stop trips and stays engaged, the button presses once,
// both inputs end with an error saying the chip is gone, and the light's
// next switch fails saying so.
func TestGPIOChipGone(t *testing.T) {
	needSim(t)
	noLeaks(t)
	simGone.pull(t, "button", true)
	simGone.pull(t, "estop", false)
	light, err := OpenLine("light enable", goneLabel, "light")
	require.NoError(t, err)
	defer func() { assert.NoError(t, light.Close()) }()
	lt, err := illumination.New(illumination.Config{Enable: light})
	require.NoError(t, err)
	var lines []*Line
	for _, n := range []string{"button", "estop"} {
		l, err := openInput(n, goneLabel, n)
		require.NoError(t, err)
		defer func() { assert.NoError(t, l.Close()) }()
		lines = append(lines, l)
	}
	var presses, trips atomic.Int64
	b, err := input.NewButton(input.Config{Pin: lines[0], ActiveLow: true, Pull: gpio.PullUp}, func() { presses.Add(1) })
	require.NoError(t, err)
	e, err := input.NewEStop(input.Config{Pin: lines[1]}, func() { trips.Add(1) })
	require.NoError(t, err)
	bDone, eDone := make(chan error, 1), make(chan error, 1)
	go func() { bDone <- b.Run(t.Context()) }()
	go func() { eDone <- e.Run(t.Context()) }()
	require.Eventually(t, func() bool { return !e.Active() }, 5*time.Second, time.Millisecond)
	require.NoError(t, light.Err())

	gone := time.Now()
	require.NoError(t, simGone.remove())
	for what, done := range map[string]chan error{"button": bDone, "e-stop": eDone} {
		select {
		case err := <-done:
			require.Error(t, err, what)
			assert.ErrorIs(t, err, ErrChipGone, what)
			t.Logf("%s Run ended %v after the removal: %v", what, time.Since(gone).Round(time.Millisecond), err)
		case <-time.After(10 * time.Second):
			t.Fatalf("%s Run still running 10 s after its chip was removed", what)
		}
	}
	assert.Equal(t, int64(1), presses.Load(), "the button counts one press")
	assert.Equal(t, int64(1), trips.Load(), "the e-stop trips")
	assert.True(t, e.Active(), "the e-stop stays engaged")
	assert.ErrorIs(t, light.Err(), ErrChipGone)
	err = lt.On(1)
	require.Error(t, err)
	t.Logf("light On: %v", err)
	assert.ErrorIs(t, err, ErrChipGone)
	assert.Contains(t, err.Error(), "board: GPIO line "+simGone.name+"/light: the chip is gone")
}
