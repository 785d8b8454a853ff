package config

import (
	"math"
	"reflect"
	"testing"

	"github.com/waferd/waferd/internal/tomlfile/tomlfiletest"
	"github.com/waferd/waferd/systemd"
)

// FuzzConfig parses arbitrary configurations (make fuzz). The invariant:
// either a clean error (every line names the file, no Go internals, no
// control characters, at most 21 lines) or a configuration that passes
// Validate again, has no NaN or infinity, a travel box with its maximum
// beyond its minimum, durations that did not wrap, a safe stop within the
// unit's TimeoutStopSec, and is the same when parsed again.
func FuzzConfig(f *testing.F) {
	f.Add([]byte(systemd.ExampleConfig))
	for _, doc := range []string{
		"[sim]\nenabled = true\n",
		"[sim]\nenabled = true\n[stage]\ntravel_max_mm = [300.0]\n",
		"[sim]\nenabled = true\n[runner]\nhold_timeout_ms = 30000\n",
		"[sim]\nenabled = true\n[camera]\npixel_um = nan\n",
		"[stage]\nport = \"sim\"\n[light]\nchip = \"sim\"\n[watchdog]\nthermal_zone = \"/x\"\n",
		"[sim]\nenabled = true\n[stage]\nbaud = 1\nbaud = 2\n",
		"[sim]\nenabled = true\n[console]\nport = \"/dev/ttyGS0\"\n",
	} {
		f.Add([]byte(doc))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse("f.toml", data)
		if err != nil {
			if why := tomlfiletest.CheckMessage(err.Error(), "config: ", "f.toml"); why != "" {
				t.Fatalf("unclean error: %s\n%s", why, err)
			}
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("parsed, then invalid: %v", err)
		}
		finite(t, reflect.ValueOf(c).Elem(), "")
		tr := c.Stage.Travel()
		if tr.Max.X <= tr.Min.X || tr.Max.Y <= tr.Min.Y {
			t.Fatalf("travel %v", tr)
		}
		for _, ms := range []int{c.Stage.PollMS, c.Stage.ReplyTimeoutMS, c.Stage.ConnectTimeoutMS, c.Stage.HomingTimeoutMS,
			c.Runner.HoldTimeoutMS, c.Runner.ResetTimeoutMS, c.Runner.CaptureTimeoutMS,
			c.Watchdog.IntervalMS, c.Watchdog.StageHeartbeatMS, c.Watchdog.CameraHeartbeatMS, c.Watchdog.RunnerHeartbeatMS, c.Watchdog.LightMaxOnMS} {
			if d := MS(ms); d <= 0 || d.Milliseconds() != int64(ms) {
				t.Fatalf("%d ms became %v", ms, d)
			}
		}
		if MS(c.Runner.HoldTimeoutMS)+MS(c.Runner.ResetTimeoutMS)+StopOverhead >= TimeoutStop {
			t.Fatalf("safe stop %d + %d ms does not fit %v", c.Runner.HoldTimeoutMS, c.Runner.ResetTimeoutMS, TimeoutStop)
		}
		again, err := Parse("f.toml", data)
		if err != nil {
			t.Fatalf("parsed once, not twice: %v", err)
		}
		c.file, again.file = nil, nil
		if !reflect.DeepEqual(c, again) {
			t.Fatalf("parsed twice, two configurations:\n%+v\n%+v", c, again)
		}
	})
}

// finite fails t if a float in v is NaN or infinite.
func finite(t *testing.T, v reflect.Value, path string) {
	t.Helper()
	switch v.Kind() {
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				finite(t, v.Field(i), path+"."+v.Type().Field(i).Name)
			}
		}
	case reflect.Array, reflect.Slice:
		for i := range v.Len() {
			finite(t, v.Index(i), path)
		}
	case reflect.Float32, reflect.Float64:
		if x := v.Float(); math.IsNaN(x) || math.IsInf(x, 0) {
			t.Fatalf("%s = %g", path, x)
		}
	}
}
