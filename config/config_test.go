package config

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/waferd/waferd/internal/tomlfile"
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
	// The example's [publish] is the defaults.
	def := Default().Publish
	assert.Empty(t, c.Publish.Brokers)
	c.Publish.Brokers = def.Brokers
	assert.Equal(t, def, c.Publish)
}

func TestDefaultsWithSim(t *testing.T) {
	c, err := Parse("min.toml", []byte("[sim]\nenabled = true\n"))
	require.NoError(t, err)
	assert.Equal(t, Default().Watchdog, c.Watchdog)
}

func TestErrorsNameFileLineAndKey(t *testing.T) {
	cases := map[string]string{
		"[stage]\nport = \"/dev/ttyUSB0\"\nbaud = 12345\n[light]\nline = \"GPIO17\"\nchip = \"gpiochip0\"\n": "bad.toml:3: stage.baud: unsupported baud rate 12345",
		"[sim]\nenabled = true\n[stage]\npoll_ms = -5\n":                                                     "bad.toml:4: stage.poll_ms: must be in [1, 10000] ms (got -5)",
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
		"[sim]\nenabled = true\n[light]\npwm_chip = \"sim\"\npwm_freq_hz = 0\n": "s.toml:5: light.pwm_freq_hz: must be in [1, 1000000] Hz (got 0)",
	} {
		_, err := Parse("s.toml", []byte(doc))
		require.Error(t, err, doc)
		assert.Contains(t, err.Error(), want, doc)
	}
}

// simDoc is the smallest valid configuration, plus extra.
func simDoc(extra string) string { return "[sim]\nenabled = true\n" + extra }

func TestArraysMustHaveTheirLength(t *testing.T) {
	for doc, want := range map[string]string{
		"[stage]\ntravel_max_mm = [300.0]\n":                 "c.toml:4: stage.travel_max_mm: expected an array of 2 numbers, found an array of 1 element",
		"[stage]\ntravel_min_mm = [0.0, 0.0, 0.0]\n":         "c.toml:4: stage.travel_min_mm: expected an array of 2 numbers, found an array of 3 elements",
		"[stage]\ntravel_min_mm = 0.0\n":                     "c.toml:4: stage.travel_min_mm: expected an array of 2 numbers, found the number 0",
		"[stage]\ntravel_min_mm = [0.0, \"zero\"]\n":         `c.toml:4: stage.travel_min_mm[1]: expected a number, found the string "zero"`,
		"[stage]\ntravel_max_mm = [300.0, 300.0]\n[stage]\n": "c.toml:5: stage: table [stage] defined twice (first on line 3)",
	} {
		_, err := Parse("c.toml", []byte(simDoc(doc)))
		require.Error(t, err, doc)
		assert.Equal(t, "config: "+want, err.Error(), doc)
	}
}

// floatKeys lists the dotted key of every float (or array of floats)
// setting of Config, found by reflection so that new tables are covered.
func floatKeys(t reflect.Type, prefix string) (keys []string, arrays []int) {
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		if name == "" || name == "-" {
			continue
		}
		key := name
		if prefix != "" {
			key = prefix + "." + name
		}
		switch ft := f.Type; {
		case ft.Kind() == reflect.Struct:
			k, a := floatKeys(ft, key)
			keys, arrays = append(keys, k...), append(arrays, a...)
		case ft.Kind() == reflect.Float64:
			keys, arrays = append(keys, key), append(arrays, 0)
		case ft.Kind() == reflect.Array && ft.Elem().Kind() == reflect.Float64:
			keys, arrays = append(keys, key), append(arrays, ft.Len())
		}
	}
	return keys, arrays
}

func TestEveryFloatRefusesNaNAndInfinity(t *testing.T) {
	keys, arrays := floatKeys(reflect.TypeFor[Config](), "")
	require.Contains(t, keys, "stage.travel_max_mm")
	require.Contains(t, keys, "watchdog.temp_limit_c")
	for i, key := range keys {
		table, name, _ := strings.Cut(key, ".")
		for _, v := range []string{"nan", "+nan", "inf", "-inf"} {
			val := v
			if n := arrays[i]; n > 0 {
				val = "[" + strings.Repeat("1.0, ", n-1) + v + "]"
			}
			doc, line := simDoc(fmt.Sprintf("[%s]\n%s = %s\n", table, name, val)), 4
			if table == "sim" {
				doc, line = simDoc(fmt.Sprintf("%s = %s\n", name, val)), 3
			}
			_, err := Parse("c.toml", []byte(doc))
			require.Error(t, err, doc)
			assert.Contains(t, err.Error(), fmt.Sprintf("c.toml:%d: %s", line, key), doc)
			assert.Contains(t, err.Error(), "expected a finite number, found "+strings.TrimPrefix(v, "+"), doc)
		}
	}
}

func TestStopFitsInTheUnitsTimeoutStopSec(t *testing.T) {
	assert.Equal(t, 20*time.Second, TimeoutStop, "systemd/waferd.service")
	_, err := Parse("c.toml", []byte(systemd.ExampleConfig))
	require.NoError(t, err, "the example's 5 s + 3 s + 4 s fits")

	for doc, want := range map[string]string{
		"[runner]\nhold_timeout_ms = 30000\n":  "c.toml:4: runner.hold_timeout_ms: a safe stop could take hold_timeout_ms 30000 + reset_timeout_ms 3000 + 4s (camera, results, exit) = 37s, not below the unit's TimeoutStopSec=20s after which systemd kills the daemon: keep the sum under 16s",
		"[runner]\nhold_timeout_ms = 13000\n":  "runner.hold_timeout_ms: a safe stop could take hold_timeout_ms 13000 + reset_timeout_ms 3000 + 4s (camera, results, exit) = 20s, not below",
		"[runner]\nreset_timeout_ms = 12000\n": "c.toml:4: runner.reset_timeout_ms: a safe stop could take",
		"[runner]\nhold_timeout_ms = 60001\n":  "c.toml:4: runner.hold_timeout_ms: must be in [1, 60000] ms (got 60001)",
	} {
		_, err := Parse("c.toml", []byte(simDoc(doc)))
		require.Error(t, err, doc)
		assert.Contains(t, err.Error(), want, doc)
		assert.NotContains(t, err.Error(), "\n", doc)
	}
	_, err = Parse("c.toml", []byte(simDoc("[runner]\nhold_timeout_ms = 12999\n")))
	assert.NoError(t, err, "12.999 s + 3 s + 4 s is below 20 s")
}

func TestUnitSeconds(t *testing.T) {
	assert.Equal(t, 20*time.Second, unitSeconds("[Service]\n# TimeoutStopSec=1s\nTimeoutStopSec=20s\n", "TimeoutStopSec"))
	assert.Equal(t, 7*time.Second, unitSeconds("TimeoutStopSec=7\n", "TimeoutStopSec"))
	assert.Panics(t, func() { unitSeconds("TimeoutStopSec=1min\n", "TimeoutStopSec") })
	assert.Panics(t, func() { unitSeconds("", "TimeoutStopSec") })
}

func TestBoundsKeepValuesSane(t *testing.T) {
	for doc, want := range map[string]string{
		"[stage]\ntravel_max_mm = [1e300, 300.0]\n":       "c.toml:4: stage.travel_max_mm: must be within ±10000 mm (got [1e+300, 300])",
		"[stage]\nmax_feed_mm_min = 1e9\n":                "c.toml:4: stage.max_feed_mm_min: must be in (0, 1000000] mm/min (got 1e+09)",
		"[stage]\nhoming_timeout_ms = 9000000000\n":       "c.toml:4: stage.homing_timeout_ms: must be in [1, 3600000] ms (got 9000000000)",
		"[camera]\nwidth = 100000\n":                      "c.toml:4: camera.width: frame size must be 1 to 16384 pixels a side (got 100000x1024)",
		"[camera]\npixel_um = 0.0\n":                      "c.toml:4: camera.pixel_um: must be in (0, 1000] µm (got 0)",
		"[sim]\ntime_scale = 1e6\n":                       "c.toml:3: sim.time_scale: must be in (0, 1000] (got 1e+06)",
		"[watchdog]\nhardware_timeout_s = -1\n":           "c.toml:4: watchdog.hardware_timeout_s: must be in [0, 3600] s (got -1)",
		"[watchdog]\nthermal_zone = \"temp\"\n":           `c.toml:4: watchdog.thermal_zone: must be an absolute path such as /sys/class/thermal/thermal_zone0/temp (got "temp")`,
		"[data]\nrecipes = \"recipes\"\n":                 `c.toml:4: data.recipes: must be an absolute path (got "recipes")`,
		"[light]\npwm_chip = \"sim\"\npwm_channel = -1\n": "c.toml:5: light.pwm_channel: must be in [0, 1023] (got -1)",
	} {
		if strings.HasPrefix(doc, "[sim]") {
			doc = strings.Replace(doc, "[sim]\n", "", 1)
		}
		if strconv.IntSize == 32 && strings.Contains(doc, "9000000000") {
			// On a 32-bit board (armv7) int is 32 bits: the decoder
			// refuses the value before the bound does, as clearly.
			want = "c.toml:4: stage.homing_timeout_ms: expected an integer from -2147483648 to 2147483647, found the integer 9000000000"
		}
		_, err := Parse("c.toml", []byte(simDoc(doc)))
		require.Error(t, err, doc)
		assert.Contains(t, err.Error(), want, doc)
	}
}

// TestLoadRefusesWhatIsNotAConfigurationFile: /dev/zero was read until
// the kernel killed the daemon.
func TestLoadRefusesWhatIsNotAConfigurationFile(t *testing.T) {
	_, err := Load("/dev/zero")
	assert.EqualError(t, err, "config: /dev/zero: not a regular file (a character device): give a TOML file")
	big := filepath.Join(t.TempDir(), "big.toml")
	require.NoError(t, os.WriteFile(big, make([]byte, tomlfile.MaxSize+1), 0o644))
	_, err = Load(big)
	assert.EqualError(t, err, fmt.Sprintf("config: %s: %d bytes, over the limit of %d bytes (1 MiB) for a TOML file", big, tomlfile.MaxSize+1, tomlfile.MaxSize))
}

// TestLoadChecksThePathsItCan: a missing thermal zone started the daemon,
// which latched Faulted 3 s later.
func TestLoadChecksThePathsItCan(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(body), 0o644))
		return p
	}
	zone := write("temp", "45123\n")
	garbage := write("garbage", "hot\n")
	regular := write("regular", "")
	fifo := filepath.Join(dir, "fifo")
	require.NoError(t, syscall.Mkfifo(fifo, 0o600))
	missing := filepath.Join(dir, "missing")

	load := func(extra string) error {
		_, err := Load(write("c.toml", simDoc(extra)))
		return err
	}
	require.NoError(t, load(fmt.Sprintf("[watchdog]\nthermal_zone = %q\nhardware_device = \"/dev/null\"\n[data]\nrecipes = %q\n", zone, missing)),
		"a zone that reads as a temperature, a character device, no recipe directory (the built-in examples)")
	require.NoError(t, load(fmt.Sprintf("[data]\nrecipes = %q\n", dir)))

	cfgPath := filepath.Join(dir, "c.toml")
	for extra, want := range map[string]string{
		fmt.Sprintf("[watchdog]\nthermal_zone = %q\n", missing):    cfgPath + ":4: watchdog.thermal_zone: " + missing + " does not exist: give the board's zone (ls /sys/class/thermal/) or \"\" not to watch the temperature",
		fmt.Sprintf("[watchdog]\nthermal_zone = %q\n", garbage):    cfgPath + ":4: watchdog.thermal_zone: " + garbage + ` does not read as a temperature in millidegrees Celsius (read "hot")`,
		fmt.Sprintf("[watchdog]\nthermal_zone = %q\n", fifo):       cfgPath + ":4: watchdog.thermal_zone: " + fifo + " is not a thermal zone file (not a regular file)",
		fmt.Sprintf("[watchdog]\nthermal_zone = %q\n", dir):        cfgPath + ":4: watchdog.thermal_zone: " + dir + " is not a thermal zone file (not a regular file)",
		fmt.Sprintf("[watchdog]\nhardware_device = %q\n", missing): cfgPath + ":4: watchdog.hardware_device: " + missing + " does not exist: give a /dev/watchdogN that exists",
		fmt.Sprintf("[watchdog]\nhardware_device = %q\n", regular): cfgPath + ":4: watchdog.hardware_device: " + regular + " is not a character device",
		fmt.Sprintf("[data]\nrecipes = %q\n", regular):             cfgPath + ":4: data.recipes: " + regular + " is not a directory",
	} {
		err := load(extra)
		require.Error(t, err, extra)
		assert.True(t, strings.HasPrefix(err.Error(), "config: "+want), "%s\n got %v\nwant %s", extra, err, want)
		assert.NotContains(t, err.Error(), "\n")
	}

	// Parse names no file on disk: it does not look at paths.
	_, err := Parse("c.toml", []byte(simDoc(fmt.Sprintf("[watchdog]\nthermal_zone = %q\n", missing))))
	assert.NoError(t, err)
}

// TestStageHeartbeatFitsThePollCadence: the stage heartbeat's limit must
// cover what a healthy poll takes (a poll waits up to four periods for its
// answer), or an idle machine faults itself on a busy host.
func TestStageHeartbeatFitsThePollCadence(t *testing.T) {
	_, err := Parse("w.toml", []byte("[sim]\nenabled = true\n[stage]\npoll_ms = 100\n[watchdog]\nstage_heartbeat_ms = 400\n"))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "watchdog.stage_heartbeat_ms: 400 ms is less than five stage polls (stage.poll_ms = 100")
	_, err = Parse("w.toml", []byte("[sim]\nenabled = true\n[stage]\npoll_ms = 100\n[watchdog]\nstage_heartbeat_ms = 500\n"))
	require.NoError(t, err)
}

func TestGEMSection(t *testing.T) {
	c, err := Parse("g.toml", []byte("[sim]\nenabled = true\n[gem]\nenabled = true\nlisten = \"127.0.0.1:5555\"\ndevice_id = 3\nt3_ms = 30000\n"))
	require.NoError(t, err)
	want := Default().GEM
	want.Enabled, want.Listen, want.DeviceID, want.T3MS = true, "127.0.0.1:5555", 3, 30000
	assert.Equal(t, want, c.GEM)

	cases := map[string]string{
		"listen = \"5000\"\n":             `bad.toml:4: gem.listen: want host:port such as 0.0.0.0:5000 (got "5000")`,
		"listen = \"example.com:5000\"\n": `bad.toml:4: gem.listen: the host must be an IP address`,
		"device_id = 40000\n":             "bad.toml:4: gem.device_id: must be in [0, 32767] (got 40000)",
		"t3_ms = 0\n":                     "bad.toml:4: gem.t3_ms: must be in (0, 120000] ms (SEMI E37; got 0)",
		"t8_ms = 200000\n":                "bad.toml:4: gem.t8_ms: must be in (0, 120000] ms",
		"t6_ms = 300000\n":                "bad.toml:4: gem.t6_ms: must be in (0, 240000] ms",
		"linktest_ms = -1\n":              "bad.toml:4: gem.linktest_ms: must be ≥ 0",
		"establish_retry_ms = 0\n":        "bad.toml:4: gem.establish_retry_ms: must be in (0, 240000] ms",
		"initial_control = \"remote\"\n":  `bad.toml:4: gem.initial_control: must be "equipment-offline", "host-offline" or "online" (got "remote")`,
		"online_mode = \"maybe\"\n":       `bad.toml:4: gem.online_mode: must be "remote" or "local" (got "maybe")`,
		"frobnicate = 1\n":                "bad.toml:4: gem.frobnicate: unknown key",
	}
	for body, want := range cases {
		_, err := Parse("bad.toml", []byte("[sim]\nenabled = true\n[gem]\n"+body))
		require.Error(t, err, body)
		assert.Contains(t, err.Error(), want, body)
	}
}
