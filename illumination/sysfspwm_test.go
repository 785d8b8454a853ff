package illumination

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpiotest"
	"periph.io/x/conn/v3/physic"
)

// fakeChip creates root/name with npwm and the export files, as the kernel
// lists a PWM controller.
func fakeChip(t *testing.T, root, name string, npwm int) string {
	t.Helper()
	dir := filepath.Join(root, name)
	require.NoError(t, os.MkdirAll(dir, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "npwm"), []byte(strconv.Itoa(npwm)+"\n"), 0o644))
	for _, f := range []string{"export", "unexport"} {
		require.NoError(t, os.WriteFile(filepath.Join(dir, f), nil, 0o644))
	}
	return dir
}

// fakeChannel creates chipDir/pwmN with its attributes, as an export does.
func fakeChannel(chipDir string, n int, period, duty, enable int64) error {
	dir := filepath.Join(chipDir, "pwm"+strconv.Itoa(n))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for name, v := range map[string]int64{"period": period, "duty_cycle": duty, "enable": enable} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(strconv.FormatInt(v, 10)+"\n"), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func attr(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return strings.TrimSpace(string(b))
}

// fakeKernel stands for the PWM core behind the fake tree: it refuses what
// the kernel refuses (a duty cycle longer than the period, enabling without
// a period), creates a channel on export, and records every write.
type fakeKernel struct {
	mu  sync.Mutex
	log []string // "attribute=value", in order
}

func (k *fakeKernel) write(path, value string) error {
	dir, name := filepath.Split(path)
	v, err := strconv.ParseInt(value, 10, 64)
	if err != nil {
		return syscall.EINVAL
	}
	cur := func(a string) int64 {
		n, _ := readInt(filepath.Join(dir, a))
		return n
	}
	switch name {
	case "duty_cycle":
		if v > cur("period") {
			return syscall.EINVAL
		}
	case "period":
		if cur("duty_cycle") > v {
			return syscall.EINVAL
		}
	case "enable":
		if v == 1 && cur("period") == 0 {
			return syscall.EINVAL
		}
	case "export":
		if err := fakeChannel(dir, int(v), 0, 0, 0); err != nil {
			return err
		}
	}
	k.mu.Lock()
	k.log = append(k.log, name+"="+value)
	k.mu.Unlock()
	return writeAttr(path, value)
}

func (k *fakeKernel) take() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	l := k.log
	k.log = nil
	return l
}

func TestFakeKernelRefusesDutyOverPeriod(t *testing.T) {
	chip := fakeChip(t, t.TempDir(), "pwmchip0", 1)
	require.NoError(t, fakeChannel(chip, 0, 1000, 500, 1))
	k := &fakeKernel{}
	dir := filepath.Join(chip, "pwm0")
	assert.ErrorIs(t, k.write(filepath.Join(dir, "duty_cycle"), "1001"), syscall.EINVAL)
	assert.ErrorIs(t, k.write(filepath.Join(dir, "period"), "400"), syscall.EINVAL)
}

func TestSysfsPWMOrderAndDuty(t *testing.T) {
	root := t.TempDir()
	chip := fakeChip(t, root, "pwmchip0", 2)
	k := &fakeKernel{}
	c, err := openSysfsPWM(context.Background(), SysfsPWMConfig{Root: root, Chip: "pwmchip0", Channel: 1}, k.write)
	require.NoError(t, err)
	assert.Equal(t, []string{"export=1"}, k.take(), "a fresh channel has no period: nothing to switch off")
	assert.Equal(t, filepath.Join(chip, "pwm1"), c.String())
	dir := filepath.Join(chip, "pwm1")

	require.NoError(t, c.PWM(gpio.DutyMax/2, 20*physic.KiloHertz))
	assert.Equal(t, []string{"period=50000", "duty_cycle=25000", "enable=1"}, k.take(), "period before duty, then enable")

	require.NoError(t, c.PWM(gpio.DutyMax/4, 20*physic.KiloHertz))
	assert.Equal(t, []string{"duty_cycle=12500"}, k.take(), "same period: only the duty cycle")

	// A shorter period than the current duty cycle: duty 0 first, or the
	// kernel refuses the period.
	require.NoError(t, c.PWM(gpio.DutyMax, 100*physic.KiloHertz))
	assert.Equal(t, []string{"duty_cycle=0", "period=10000", "duty_cycle=10000"}, k.take())
	require.NoError(t, c.PWM(gpio.DutyMax/10, 1*physic.KiloHertz))
	assert.Equal(t, []string{"duty_cycle=0", "period=1000000", "duty_cycle=100000"}, k.take())
	assert.Equal(t, "1000000", attr(t, filepath.Join(dir, "period")))
	assert.Equal(t, "100000", attr(t, filepath.Join(dir, "duty_cycle")))
	assert.Equal(t, "1", attr(t, filepath.Join(dir, "enable")))

	require.NoError(t, c.Out(gpio.High))
	assert.Equal(t, []string{"duty_cycle=1000000"}, k.take())
	require.NoError(t, c.Out(gpio.Low))
	assert.Equal(t, []string{"duty_cycle=0"}, k.take(), "off is duty 0, channel left enabled")
	require.NoError(t, c.Halt())
	assert.Equal(t, []string{"duty_cycle=0"}, k.take(), "off always writes")

	assert.ErrorContains(t, c.PWM(gpio.DutyMax+1, physic.KiloHertz), "out of range")
	assert.ErrorContains(t, c.PWM(1, 0), "frequency")
	assert.Empty(t, k.take())

	require.NoError(t, c.Close())
	assert.Equal(t, []string{"duty_cycle=0", "enable=0", "unexport=1"}, k.take(), "we exported it, so Close unexports")
	require.NoError(t, c.Close(), "Close is idempotent")
	require.NoError(t, c.Halt(), "Halt after Close is a no-op")
	assert.ErrorContains(t, c.PWM(gpio.DutyMax/2, physic.KiloHertz), "closed")
	assert.Empty(t, k.take())
}

func TestSysfsPWMAlreadyExported(t *testing.T) {
	root := t.TempDir()
	chip := fakeChip(t, root, "pwmchip0", 1)
	require.NoError(t, fakeChannel(chip, 0, 50000, 30000, 1)) // left on by someone
	k := &fakeKernel{}
	c, err := openSysfsPWM(context.Background(), SysfsPWMConfig{Root: root, Chip: "pwmchip0"}, k.write)
	require.NoError(t, err)
	assert.Equal(t, []string{"duty_cycle=0"}, k.take(), "open drives the safe state; no export")
	require.NoError(t, c.PWM(gpio.DutyMax/2, 20*physic.KiloHertz))
	assert.Equal(t, []string{"duty_cycle=25000"}, k.take(), "period and enable already as wanted")
	require.NoError(t, c.Close())
	assert.Equal(t, []string{"duty_cycle=0", "enable=0"}, k.take(), "not exported by us: not unexported")
}

func TestSysfsPWMWithLight(t *testing.T) {
	root := t.TempDir()
	chip := fakeChip(t, root, "pwmchip0", 1)
	require.NoError(t, fakeChannel(chip, 0, 0, 0, 0))
	c, err := OpenSysfsPWM(context.Background(), SysfsPWMConfig{Root: root, Chip: "pwmchip0"})
	require.NoError(t, err)
	en := &gpiotest.Pin{N: "EN"}
	l, err := New(Config{Enable: en, Dimmer: c, DimmerFreq: 25 * physic.KiloHertz})
	require.NoError(t, err)
	require.NoError(t, l.On(0.25))
	dir := filepath.Join(chip, "pwm0")
	assert.Equal(t, "40000", attr(t, filepath.Join(dir, "period")))
	assert.Equal(t, "10000", attr(t, filepath.Join(dir, "duty_cycle")))
	assert.Equal(t, "1", attr(t, filepath.Join(dir, "enable")))
	require.NoError(t, l.Off())
	assert.Equal(t, "0", attr(t, filepath.Join(dir, "duty_cycle")))
	require.NoError(t, c.Close())
	assert.Equal(t, "0", attr(t, filepath.Join(dir, "enable")))
	assert.Empty(t, attr(t, filepath.Join(chip, "unexport")))
}

// TestSysfsPWMExportAppearsLater: the channel's directory and attributes
// appear only after the export is written, one by one, as udev may make
// them usable a moment later.
func TestSysfsPWMExportAppearsLater(t *testing.T) {
	root := t.TempDir()
	chip := fakeChip(t, root, "pwmchip3", 4)
	done := make(chan struct{})
	exported := make(chan error, 1)
	go func() {
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				exported <- nil
				return
			case <-tick.C:
			}
			b, err := os.ReadFile(filepath.Join(chip, "export"))
			if err != nil || strings.TrimSpace(string(b)) == "" {
				continue
			}
			n, err := strconv.Atoi(strings.TrimSpace(string(b)))
			if err == nil {
				dir := filepath.Join(chip, "pwm"+strconv.Itoa(n))
				err = os.Mkdir(dir, 0o755)
				for _, a := range []string{"period", "duty_cycle", "enable"} {
					<-tick.C
					// Whole files only, as sysfs shows them: write, then rename.
					tmp := filepath.Join(root, a+".tmp")
					err = errors.Join(err, os.WriteFile(tmp, []byte("0\n"), 0o644), os.Rename(tmp, filepath.Join(dir, a)))
				}
			}
			exported <- err
			return
		}
	}()
	defer close(done)
	c, err := OpenSysfsPWM(context.Background(), SysfsPWMConfig{Root: root, Chip: "pwmchip3", Channel: 2})
	require.NoError(t, err)
	require.NoError(t, <-exported)
	assert.Equal(t, "2", attr(t, filepath.Join(chip, "export")))
	require.NoError(t, c.PWM(gpio.DutyMax/2, physic.KiloHertz))
	assert.Equal(t, "500000", attr(t, filepath.Join(chip, "pwm2", "duty_cycle")))
	require.NoError(t, c.Close())
	assert.Equal(t, "2", attr(t, filepath.Join(chip, "unexport")))
}

func TestSysfsPWMExportNeverAppears(t *testing.T) {
	root := t.TempDir()
	chip := fakeChip(t, root, "pwmchip0", 1)
	start := time.Now()
	_, err := OpenSysfsPWM(context.Background(), SysfsPWMConfig{Root: root, Chip: "pwmchip0", ExportTimeout: 30 * time.Millisecond})
	require.Error(t, err)
	assert.Less(t, time.Since(start), time.Second)
	assert.ErrorContains(t, err, filepath.Join(chip, "pwm0")+" not writable after 30ms")
	assert.ErrorIs(t, err, fs.ErrNotExist)
	assert.Equal(t, "0", attr(t, filepath.Join(chip, "unexport")), "a failed open undoes its export")

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = OpenSysfsPWM(ctx, SysfsPWMConfig{Root: root, Chip: "pwmchip0"})
	assert.ErrorIs(t, err, context.Canceled)
}

func TestSysfsPWMMissingChipListsChips(t *testing.T) {
	root := t.TempDir()
	fakeChip(t, root, "pwmchip0", 2)
	fakeChip(t, root, "pwmchip4", 1)
	_, err := OpenSysfsPWM(context.Background(), SysfsPWMConfig{Root: root, Chip: "pwmchip1"})
	require.Error(t, err)
	assert.ErrorIs(t, err, fs.ErrNotExist)
	assert.ErrorContains(t, err, fmt.Sprintf("illumination: PWM chip %s: no such file or directory; PWM controllers under %s: pwmchip0 (2 channels (0 to 1)), pwmchip4 (1 channel (0))",
		filepath.Join(root, "pwmchip1"), root))

	empty := t.TempDir()
	_, err = OpenSysfsPWM(context.Background(), SysfsPWMConfig{Root: empty, Chip: "pwmchip0"})
	assert.ErrorContains(t, err, "no PWM controllers under "+empty)
	_, err = OpenSysfsPWM(context.Background(), SysfsPWMConfig{Root: filepath.Join(empty, "nothing"), Chip: "pwmchip0"})
	assert.ErrorContains(t, err, "no PWM controllers: open "+filepath.Join(empty, "nothing"))
	_, err = OpenSysfsPWM(context.Background(), SysfsPWMConfig{Root: root, Chip: "../pwmchip0"})
	assert.ErrorContains(t, err, "want a directory name")
}

func TestSysfsPWMChannelBeyondNPWM(t *testing.T) {
	root := t.TempDir()
	chip := fakeChip(t, root, "pwmchip0", 2)
	for _, n := range []int{2, -1} {
		_, err := OpenSysfsPWM(context.Background(), SysfsPWMConfig{Root: root, Chip: "pwmchip0", Channel: n})
		assert.ErrorContains(t, err, fmt.Sprintf("illumination: PWM channel %d out of range: %s has 2 channels (0 to 1) (npwm)", n, chip))
	}
	assert.Empty(t, attr(t, filepath.Join(chip, "export")), "nothing exported")
}

func TestSysfsPWMWriteErrorNamesFileAndValue(t *testing.T) {
	root := t.TempDir()
	chip := fakeChip(t, root, "pwmchip0", 1)
	require.NoError(t, fakeChannel(chip, 0, 0, 0, 0))
	c, err := OpenSysfsPWM(context.Background(), SysfsPWMConfig{Root: root, Chip: "pwmchip0"})
	require.NoError(t, err)
	period := filepath.Join(chip, "pwm0", "period")
	require.NoError(t, os.Remove(period))
	err = c.PWM(gpio.DutyMax/2, 20*physic.KiloHertz)
	assert.EqualError(t, err, `illumination: write "50000" to `+period+`: no such file or directory`)
	_, statErr := os.Stat(period)
	assert.ErrorIs(t, statErr, fs.ErrNotExist, "a write never creates an attribute")

	k := &fakeKernel{}
	busy := func(path, value string) error {
		if filepath.Base(path) == "export" {
			return syscall.EBUSY
		}
		return k.write(path, value)
	}
	fakeChip(t, root, "pwmchip1", 1)
	_, err = openSysfsPWM(context.Background(), SysfsPWMConfig{Root: root, Chip: "pwmchip1"}, busy)
	assert.ErrorContains(t, err, `illumination: write "0" to `+filepath.Join(root, "pwmchip1", "export")+": device or resource busy (is the channel claimed by a kernel driver")
}
