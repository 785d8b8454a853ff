// Package config loads the daemon's configuration (systemd/waferd.toml is
// the commented example of every key). Unknown keys and bad values are
// errors naming the file, the line and the key; every problem is reported at
// once. Load also checks, without side effects, the local files that the
// configuration names and that cannot appear later (the thermal zone, the
// hardware watchdog device, the recipe directory), so that a path that
// cannot work stops the daemon at start-up rather than faulting it later.
package config

import (
	"fmt"
	"path/filepath"
	"time"

	"github.com/waferd/waferd/internal/logging"
	"github.com/waferd/waferd/internal/tomlfile"
	"github.com/waferd/waferd/motion"
)

// SimDevice, as a device's port, chip or path (stage.port, light.chip,
// light.pwm_chip, camera.device, button.chip, estop.chip), puts the
// simulated device in place of the real one while the others stay real:
// machine bring-up with, say, a real stage and a simulated camera.
const SimDevice = "sim"

// Config is the whole daemon configuration. Field comments give the units;
// systemd/waferd.toml documents every key.
type Config struct {
	Stage    Stage    `toml:"stage"`
	Runner   Runner   `toml:"runner"`
	Light    Light    `toml:"light"`
	Camera   Camera   `toml:"camera"`
	Button   Input    `toml:"button"`
	EStop    Input    `toml:"estop"`
	Watchdog Watchdog `toml:"watchdog"`
	Data     Data     `toml:"data"`
	Log      Log      `toml:"log"`
	Console  Console  `toml:"console"`
	GEM      GEM      `toml:"gem"`
	Sim      Sim      `toml:"sim"`
	Publish  Publish  `toml:"publish"`

	file *tomlfile.File
}

type Stage struct {
	Port             string `toml:"port"`
	Baud             int    `toml:"baud"`
	PollMS           int    `toml:"poll_ms"`
	ReplyTimeoutMS   int    `toml:"reply_timeout_ms"`
	ConnectTimeoutMS int    `toml:"connect_timeout_ms"`
	HomingTimeoutMS  int    `toml:"homing_timeout_ms"`
	// Homing says the stage has homing switches and the controller homes
	// ($22=1). false: a stage without them; an operator jogs to a mark
	// and sets the origin from the console (origin X Y), and start-up
	// refuses a controller whose $22 says otherwise.
	Homing bool `toml:"homing"`
	// TravelMinMM and TravelMaxMM bound the reachable stage positions in
	// machine coordinates, mm. The default, 0..300, is the simulated
	// board's; a stock GRBL's machine space is -$130..0 (see
	// systemd/waferd.toml), and start-up refuses a travel outside the
	// controller's (board.OpenStage).
	TravelMinMM [2]float64 `toml:"travel_min_mm"`
	TravelMaxMM [2]float64 `toml:"travel_max_mm"`
	// MaxFeedMMMin is the fastest feed a recipe may use, mm/min.
	MaxFeedMMMin float64 `toml:"max_feed_mm_min"`
}

type Runner struct {
	HoldTimeoutMS    int `toml:"hold_timeout_ms"`
	ResetTimeoutMS   int `toml:"reset_timeout_ms"`
	CaptureTimeoutMS int `toml:"capture_timeout_ms"`
}

type Light struct {
	Chip           string `toml:"chip"`
	Line           string `toml:"line"`
	ActiveLow      bool   `toml:"active_low"`
	PWMChip        string `toml:"pwm_chip"`
	PWMChannel     int    `toml:"pwm_channel"`
	PWMFreqHz      int    `toml:"pwm_freq_hz"`
	SenseLine      string `toml:"sense_line"`
	SenseActiveLow bool   `toml:"sense_active_low"`
}

type Camera struct {
	Device         string  `toml:"device"`
	Width          int     `toml:"width"`
	Height         int     `toml:"height"`
	Format         string  `toml:"format"`
	PixelUM        float64 `toml:"pixel_um"`
	ManualExposure bool    `toml:"manual_exposure"`
}

// Input is a GPIO input: the stop button or the e-stop sense line.
type Input struct {
	Chip       string `toml:"chip"`
	Line       string `toml:"line"` // empty: not fitted
	ActiveLow  bool   `toml:"active_low"`
	Pull       string `toml:"pull"` // up, down, float, keep
	DebounceMS int    `toml:"debounce_ms"`
}

type Watchdog struct {
	IntervalMS        int     `toml:"interval_ms"`
	StageHeartbeatMS  int     `toml:"stage_heartbeat_ms"`
	CameraHeartbeatMS int     `toml:"camera_heartbeat_ms"`
	RunnerHeartbeatMS int     `toml:"runner_heartbeat_ms"`
	LightMaxOnMS      int     `toml:"light_max_on_ms"`
	ThermalZone       string  `toml:"thermal_zone"`
	TempPollMS        int     `toml:"temp_poll_ms"`
	TempLimitC        float64 `toml:"temp_limit_c"`
	HardwareDevice    string  `toml:"hardware_device"`
	HardwareTimeoutS  int     `toml:"hardware_timeout_s"`
}

type Data struct {
	Dir     string `toml:"dir"`
	Recipes string `toml:"recipes"`
}

type Log struct {
	Level string `toml:"level"`
}

// Console is the serial console for field engineers.
type Console struct {
	Port string `toml:"port"` // serial device; empty: no serial console
	Baud int    `toml:"baud"`
}

type Sim struct {
	Enabled   bool    `toml:"enabled"`
	TimeScale float64 `toml:"time_scale"`
}

// Publish sends events and results to an MQTT broker (package publish).
type Publish struct {
	Enabled bool `toml:"enabled"`
	// Brokers are URLs, tried in order: mqtt://host:port, mqtts://host:port.
	Brokers []string `toml:"brokers"`
	// Tool names this tool in the topics; empty: the host name.
	Tool string `toml:"tool"`
	// ClientID is the MQTT client id; empty: the tool's name.
	ClientID    string `toml:"client_id"`
	TopicPrefix string `toml:"topic_prefix"`
	QoS         int    `toml:"qos"`
	// TLS: the CA that signed the broker's certificate (empty: the
	// system's), and this tool's certificate and key.
	CAFile   string `toml:"ca_file"`
	CertFile string `toml:"cert_file"`
	KeyFile  string `toml:"key_file"`
	// CredentialsFile holds username and password (LoadCredentials).
	CredentialsFile string `toml:"credentials_file"`
	// Outbox is the outbox file; empty: <data dir>/outbox.db.
	Outbox      string `toml:"outbox"`
	OutboxMaxMB int    `toml:"outbox_max_mb"`
	KeepAliveS  int    `toml:"keepalive_s"`
	// DrainTimeoutMS is how long a shutdown goes on sending the outbox.
	DrainTimeoutMS int `toml:"drain_timeout_ms"`
}

// Default returns the configuration every key defaults to (the values in
// systemd/waferd.toml, with no GPIO lines fitted, but for the stage's
// travel, which that file sets for a stock GRBL controller).
func Default() *Config {
	return &Config{
		Stage: Stage{Baud: 115200, PollMS: 100, ReplyTimeoutMS: 2000, ConnectTimeoutMS: 2500, HomingTimeoutMS: 60000, Homing: true,
			TravelMaxMM: [2]float64{300, 300}, MaxFeedMMMin: 6000},
		Runner: Runner{HoldTimeoutMS: 5000, ResetTimeoutMS: 3000, CaptureTimeoutMS: 2000},
		Light:  Light{PWMFreqHz: 20000},
		Camera: Camera{Device: "/dev/video0", Width: 1280, Height: 1024, Format: "GREY", PixelUM: 5, ManualExposure: true},
		Button: Input{ActiveLow: true, Pull: "up", DebounceMS: 20},
		EStop:  Input{Pull: "up", DebounceMS: 20},
		Watchdog: Watchdog{IntervalMS: 250, StageHeartbeatMS: 1000, CameraHeartbeatMS: 3000, RunnerHeartbeatMS: 30000,
			LightMaxOnMS: 5000, TempPollMS: 1000, TempLimitC: 80, HardwareTimeoutS: 60},
		Data:    Data{Dir: "/var/lib/waferd", Recipes: "/etc/waferd/recipes"},
		Log:     Log{Level: "info"},
		Console: Console{Baud: 115200},
		GEM:     defaultGEM(),
		Sim:     Sim{TimeScale: 1},
		Publish: Publish{TopicPrefix: "waferd", QoS: 1, OutboxMaxMB: 64, KeepAliveS: 30, DrainTimeoutMS: 2000},
	}
}

// Load reads path over the defaults and validates the result.
func Load(path string) (*Config, error) { return load(path, false) }

// LoadSim is Load with [sim] enabled forced on before validation, for
// trying a machine's configuration on the simulated board (--sim).
func LoadSim(path string) (*Config, error) { return load(path, true) }

func load(path string, sim bool) (*Config, error) {
	data, err := tomlfile.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	c, err := parse(path, data, sim)
	if err != nil {
		return nil, err
	}
	if err := c.checkPaths(); err != nil {
		return nil, err
	}
	return c, nil
}

// Parse is Load for a document in memory, named name in errors. It does
// not look at the files the configuration names.
func Parse(name string, data []byte) (*Config, error) { return parse(name, data, false) }

func parse(name string, data []byte, sim bool) (*Config, error) {
	c := Default()
	f, err := tomlfile.Decode(name, data, c)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	c.file = f
	if sim {
		c.Sim.Enabled = true
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// Validate checks every value, naming file, line and key in its errors. It
// does not look at the files the configuration names (Load does).
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, c.file.Errorf(key, format, args...))
	}
	// between checks an integer setting against its range; the upper
	// bounds keep durations and sizes far from overflow.
	between := func(key string, v, lo, hi int, unit string) {
		if v < lo || v > hi {
			bad(key, "must be in [%d, %d]%s (got %d)", lo, hi, unit, v)
		}
	}
	if !c.Sim.Enabled && c.Stage.Port == "" {
		bad("stage.port", "no serial port given (or set [sim] enabled = true)")
	}
	switch c.Stage.Baud {
	case 9600, 19200, 38400, 57600, 115200, 230400, 250000:
	default:
		bad("stage.baud", "unsupported baud rate %d (GRBL 1.1 uses 115200)", c.Stage.Baud)
	}
	between("stage.poll_ms", c.Stage.PollMS, 1, 10_000, " ms")
	between("stage.reply_timeout_ms", c.Stage.ReplyTimeoutMS, 1, maxTimeoutMS, " ms")
	between("stage.connect_timeout_ms", c.Stage.ConnectTimeoutMS, 1, maxTimeoutMS, " ms")
	between("stage.homing_timeout_ms", c.Stage.HomingTimeoutMS, 1, maxLongMS, " ms")
	for _, k := range []struct {
		key string
		v   [2]float64
	}{{"stage.travel_min_mm", c.Stage.TravelMinMM}, {"stage.travel_max_mm", c.Stage.TravelMaxMM}} {
		if max(abs(k.v[0]), abs(k.v[1])) > MaxTravelMM {
			bad(k.key, "must be within ±%d mm (got [%g, %g])", MaxTravelMM, k.v[0], k.v[1])
		}
	}
	for i, axis := range []string{"X", "Y"} {
		if c.Stage.TravelMaxMM[i] <= c.Stage.TravelMinMM[i] {
			bad("stage.travel_max_mm", "%s: maximum %g mm must exceed the minimum %g mm", axis, c.Stage.TravelMaxMM[i], c.Stage.TravelMinMM[i])
		}
	}
	if f := c.Stage.MaxFeedMMMin; f <= 0 || f > maxFeedMMMin {
		bad("stage.max_feed_mm_min", "must be in (0, %d] mm/min (got %g)", maxFeedMMMin, f)
	}
	between("runner.hold_timeout_ms", c.Runner.HoldTimeoutMS, 1, maxTimeoutMS, " ms")
	between("runner.reset_timeout_ms", c.Runner.ResetTimeoutMS, 1, maxTimeoutMS, " ms")
	between("runner.capture_timeout_ms", c.Runner.CaptureTimeoutMS, 1, maxTimeoutMS, " ms")
	c.checkStopBudget(bad)
	if !c.Sim.Enabled && c.Light.Line == "" && c.Light.Chip != SimDevice {
		bad("light.line", `no enable line given for the light (or set chip = "sim")`)
	}
	if c.Light.PWMChip != "" {
		between("light.pwm_freq_hz", c.Light.PWMFreqHz, 1, 1_000_000, " Hz")
		between("light.pwm_channel", c.Light.PWMChannel, 0, 1023, "")
	}
	if c.Camera.Width <= 0 || c.Camera.Height <= 0 || c.Camera.Width > maxFrameSide || c.Camera.Height > maxFrameSide {
		bad("camera.width", "frame size must be 1 to %d pixels a side (got %dx%d)", maxFrameSide, c.Camera.Width, c.Camera.Height)
	}
	if c.Camera.Format != "GREY" && c.Camera.Format != "YUYV" {
		bad("camera.format", `must be "GREY" or "YUYV" (got %q)`, c.Camera.Format)
	}
	if p := c.Camera.PixelUM; p <= 0 || p > 1000 {
		bad("camera.pixel_um", "must be in (0, 1000] µm (got %g)", p)
	}
	for _, in := range []struct {
		key string
		in  Input
	}{{"button", c.Button}, {"estop", c.EStop}} {
		switch in.in.Pull {
		case "up", "down", "float", "keep":
		default:
			bad(in.key+".pull", `must be "up", "down", "float" or "keep" (got %q)`, in.in.Pull)
		}
		if in.in.DebounceMS < 0 || in.in.DebounceMS > 1000 {
			bad(in.key+".debounce_ms", "must be in [0, 1000] ms (got %d)", in.in.DebounceMS)
		}
		if in.in.Line != "" && in.in.Chip == "" {
			bad(in.key+".chip", "a line is given but no chip")
		}
	}
	w := c.Watchdog
	between("watchdog.interval_ms", w.IntervalMS, 1, maxTimeoutMS, " ms")
	between("watchdog.stage_heartbeat_ms", w.StageHeartbeatMS, 1, maxLongMS, " ms")
	between("watchdog.camera_heartbeat_ms", w.CameraHeartbeatMS, 1, maxLongMS, " ms")
	between("watchdog.runner_heartbeat_ms", w.RunnerHeartbeatMS, 1, maxLongMS, " ms")
	between("watchdog.light_max_on_ms", w.LightMaxOnMS, 1, maxLongMS, " ms")
	// A poll waits up to four periods for its answer before the next one
	// starts: a healthy stage can go five periods between beats.
	if w.StageHeartbeatMS > 0 && w.StageHeartbeatMS < 5*c.Stage.PollMS {
		bad("watchdog.stage_heartbeat_ms", "%d ms is less than five stage polls (stage.poll_ms = %d: a poll waits up to four periods for its answer)", w.StageHeartbeatMS, c.Stage.PollMS)
	}
	if w.ThermalZone != "" {
		if !filepath.IsAbs(w.ThermalZone) {
			bad("watchdog.thermal_zone", "must be an absolute path such as %s (got %q)", defaultThermalZone, w.ThermalZone)
		}
		between("watchdog.temp_poll_ms", w.TempPollMS, 1, maxLongMS, " ms")
		if w.TempLimitC <= 0 || w.TempLimitC > 150 {
			bad("watchdog.temp_limit_c", "must be in (0, 150] °C (got %g)", w.TempLimitC)
		}
	}
	switch hw := w.HardwareDevice; {
	case hw == SimDevice:
		bad("watchdog.hardware_device", `there is no simulated hardware watchdog: leave it empty ("") for none`)
	case hw != "" && !filepath.IsAbs(hw):
		bad("watchdog.hardware_device", "must be an absolute device path such as /dev/watchdog0 (got %q)", hw)
	}
	between("watchdog.hardware_timeout_s", w.HardwareTimeoutS, 0, 3600, " s")
	if c.Data.Dir == "" {
		bad("data.dir", "no results directory given")
	} else if !filepath.IsAbs(c.Data.Dir) {
		bad("data.dir", "must be an absolute path (got %q)", c.Data.Dir)
	}
	if c.Data.Recipes != "" && !filepath.IsAbs(c.Data.Recipes) {
		bad("data.recipes", "must be an absolute path (got %q)", c.Data.Recipes)
	}
	if _, err := logging.ParseLevel(c.Log.Level); err != nil {
		bad("log.level", "%v", err)
	}
	if p := c.Console.Port; p != "" {
		switch {
		case !filepath.IsAbs(p):
			bad("console.port", "must be an absolute device path such as /dev/ttyGS0 (got %q)", p)
		case p == c.Stage.Port:
			bad("console.port", "%s is the stage's port (stage.port)", p)
		}
	}
	switch c.Console.Baud {
	case 9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600:
	default:
		bad("console.baud", "unsupported baud rate %d (use 9600 … 921600; field engineers expect 115200)", c.Console.Baud)
	}
	c.GEM.validate(bad)
	if ts := c.Sim.TimeScale; ts <= 0 || ts > maxTimeScale {
		bad("sim.time_scale", "must be in (0, %d] (got %g)", maxTimeScale, ts)
	}
	c.validatePublish(bad)
	if err := tomlfile.Join(errs); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	return nil
}

// Bounds of settings that have no natural limit: far beyond any machine,
// and far from overflowing a time.Duration or a motion.Distance.
const (
	// MaxTravelMM bounds stage.travel_min_mm and travel_max_mm: ±10 m.
	MaxTravelMM  = 10_000
	maxFeedMMMin = 1_000_000
	maxTimeoutMS = 60_000    // a reply, a connection, a hold, a reset: 1 min
	maxLongMS    = 3_600_000 // homing, heartbeats, the light's on-time: 1 h
	maxFrameSide = 16384     // pixels
	maxTimeScale = 1000
)

func abs(x float64) float64 {
	if x < 0 {
		return -x
	}
	return x
}

// Travel is the reachable box of [stage], in machine coordinates.
func (s Stage) Travel() motion.Rect {
	return motion.Rect{
		Min: motion.Point{X: motion.MM(s.TravelMinMM[0]), Y: motion.MM(s.TravelMinMM[1])},
		Max: motion.Point{X: motion.MM(s.TravelMaxMM[0]), Y: motion.MM(s.TravelMaxMM[1])},
	}
}

// MS converts a millisecond setting to a duration.
func MS(ms int) time.Duration { return time.Duration(ms) * time.Millisecond }
