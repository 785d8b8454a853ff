package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/waferd/waferd/motion"
	"github.com/waferd/waferd/systemd"
)

func TestExampleConfigLoads(t *testing.T) {
	c, err := Parse("waferd.toml", []byte(systemd.ExampleConfig))
	require.NoError(t, err)
	assert.Equal(t, 115200, c.Stage.Baud)
	assert.Equal(t, "GPIO27", c.Button.Line)
	assert.Equal(t, "/var/lib/waferd", c.Data.Dir)
	assert.False(t, c.Sim.Enabled)
	// For a stock GRBL 1.1h ($130=$131=200, homing to the + ends, 1 mm
	// pull-off): inside -200..0, a pull-off from the switches.
	assert.Equal(t, motion.Rect{Min: motion.Point{X: motion.MM(-200), Y: motion.MM(-200)}, Max: motion.Point{X: motion.MM(-1), Y: motion.MM(-1)}}, c.Stage.Travel())
}

func TestDefaultsWithSim(t *testing.T) {
	c, err := Parse("min.toml", []byte("[sim]\nenabled = true\n"))
	require.NoError(t, err)
	assert.Equal(t, Default().Watchdog, c.Watchdog)
}

func TestErrorsNameFileLineAndKey(t *testing.T) {
	cases := map[string]string{
		"[stage]\nport = \"/dev/ttyUSB0\"\nbaud = 12345\n[light]\nline = \"GPIO17\"\nchip = \"gpiochip0\"\n": "bad.toml:3: stage.baud: unsupported baud rate 12345",
		"[sim]\nenabled = true\n[stage]\npoll_ms = -5\n":                                                     "bad.toml:4: stage.poll_ms: must be > 0 (got -5)",
		"[sim]\nenabled = true\n[button]\npull = \"sideways\"\n":                                             `bad.toml:4: button.pull: must be "up", "down", "float" or "keep" (got "sideways")`,
		"[sim]\nenabled = true\nfrobnicate = 3\n":                                                            "bad.toml:3: sim.frobnicate: unknown key",
		"[sim]\nenabled = \"yes\"\n":                                                                         "bad.toml:2: sim.enabled:",
		"[sim]\nenabled = true\n[log]\nlevel = \"loud\"\n":                                                   `bad.toml:4: log.level: logging: unknown level "loud"`,
		"[sim]\nenabled = true\n[data]\ndir = \"relative\"\n":                                                `bad.toml:4: data.dir: must be an absolute path`,
		"[stage]\nbaud = 115200\n":                                                                           "bad.toml:1: stage.port: no serial port given",
	}
	for doc, want := range cases {
		_, err := Parse("bad.toml", []byte(doc))
		require.Error(t, err, doc)
		assert.Contains(t, err.Error(), want, doc)
	}
}

func TestLoadFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "w.toml")
	require.NoError(t, os.WriteFile(p, []byte("[sim]\nenabled = true\ntime_scale = 0\n"), 0o644))
	_, err := Load(p)
	require.Error(t, err)
	assert.True(t, strings.HasPrefix(err.Error(), "config: "+p+":3: sim.time_scale"), err.Error())
	_, err = Load(filepath.Join(t.TempDir(), "missing.toml"))
	assert.ErrorContains(t, err, "missing.toml")
}

func TestConsoleSection(t *testing.T) {
	c, err := Parse("c.toml", []byte("[sim]\nenabled = true\n[console]\nport = \"/dev/ttyGS0\"\nbaud = 57600\n"))
	require.NoError(t, err)
	assert.Equal(t, Console{Port: "/dev/ttyGS0", Baud: 57600}, c.Console)
	assert.Equal(t, 115200, Default().Console.Baud)
	assert.Empty(t, Default().Console.Port)

	for doc, want := range map[string]string{
		"[sim]\nenabled = true\n[console]\nbaud = 12\n":                                             "c.toml:4: console.baud: unsupported baud rate 12",
		"[sim]\nenabled = true\n[console]\nport = \"ttyS0\"\n":                                      "c.toml:4: console.port: must be an absolute device path",
		"[sim]\nenabled = true\n[stage]\nport = \"/dev/ttyS1\"\n[console]\nport = \"/dev/ttyS1\"\n": "console.port: /dev/ttyS1 is the stage's port",
		"[sim]\nenabled = true\n[console]\nspeed = 9600\n":                                          "c.toml:4: console.speed: unknown key",
	} {
		_, err := Parse("c.toml", []byte(doc))
		require.Error(t, err, doc)
		assert.Contains(t, err.Error(), want, doc)
	}
}

func TestTravel(t *testing.T) {
	c, err := Parse("t.toml", []byte("[sim]\nenabled = true\n[stage]\ntravel_min_mm = [-10.0, 0.0]\ntravel_max_mm = [190.0, 150.5]\n"))
	require.NoError(t, err)
	tr := c.Stage.Travel()
	assert.Equal(t, int64(-10000), int64(tr.Min.X))
	assert.Equal(t, int64(150500), int64(tr.Max.Y))
	_, err = Parse("t.toml", []byte("[sim]\nenabled = true\n[stage]\ntravel_max_mm = [0.0, 100.0]\n"))
	assert.ErrorContains(t, err, "t.toml:4: stage.travel_max_mm: X: maximum 0 mm must exceed the minimum 0 mm")
}

func TestPerDeviceSim(t *testing.T) {
	doc := `[stage]
port = "sim"
[light]
chip = "sim"
pwm_chip = "pwmchip0"
pwm_channel = 1
pwm_freq_hz = 1000
[camera]
device = "sim"
[button]
chip = "sim"
line = "button"
`
	c, err := Parse("s.toml", []byte(doc))
	require.NoError(t, err, "a simulated light needs no line")
	assert.False(t, c.Sim.Enabled)
	assert.Equal(t, SimDevice, c.Stage.Port)
	assert.Equal(t, SimDevice, c.Light.Chip)
	assert.Equal(t, Light{Chip: SimDevice, PWMChip: "pwmchip0", PWMChannel: 1, PWMFreqHz: 1000}, c.Light)
	assert.Equal(t, SimDevice, c.Camera.Device)

	for doc, want := range map[string]string{
		"[stage]\nport = \"sim\"\n[light]\nchip = \"gpiochip0\"\n":              `s.toml:3: light.line: no enable line given for the light (or set chip = "sim")`,
		"[sim]\nenabled = true\n[watchdog]\nhardware_device = \"sim\"\n":        `s.toml:4: watchdog.hardware_device: there is no simulated hardware watchdog: leave it empty ("") for none`,
		"[sim]\nenabled = true\n[watchdog]\nhardware_device = \"watchdog0\"\n":  `s.toml:4: watchdog.hardware_device: must be an absolute device path such as /dev/watchdog0 (got "watchdog0")`,
		"[sim]\nenabled = true\n[light]\npwm_chip = \"sim\"\npwm_freq_hz = 0\n": "s.toml:5: light.pwm_freq_hz: must be > 0 (got 0)",
	} {
		_, err := Parse("s.toml", []byte(doc))
		require.Error(t, err, doc)
		assert.Contains(t, err.Error(), want, doc)
	}
}
