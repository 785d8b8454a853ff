package daemon

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/waferd/waferd/camera"
	"github.com/waferd/waferd/config"
	"github.com/waferd/waferd/control"
	"github.com/waferd/waferd/internal/atomicfile"
	"github.com/waferd/waferd/machine"
	"github.com/waferd/waferd/motion"
	"github.com/waferd/waferd/stop"
	"github.com/waferd/waferd/watchdog"
)

// CaptureExposure is the exposure of console captures and the self-test.
const CaptureExposure = 20 * time.Millisecond

// ValidName checks a capture or file name: 1–64 of [A-Za-z0-9._-], not
// starting with '.', without "..".
func ValidName(name string) error {
	if name == "" || len(name) > 64 || name[0] == '.' || strings.Contains(name, "..") {
		return fmt.Errorf("daemon: bad name %q: use 1-64 letters, digits, '.', '_' or '-', not starting with '.'", name)
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("daemon: bad name %q: use 1-64 letters, digits, '.', '_' or '-'", name)
		}
	}
	return nil
}

// Capture takes one lit frame at the stage's position, holding the
// machine's claim, and saves it as <data>/captures/<name>.png (atomically;
// an existing file is replaced). An empty name is "capture-<UTC time>".
// The light is switched on at the console level for the exposure unless it
// is already on.
func (d *Daemon) Capture(ctx context.Context, name string) (control.CaptureResult, error) {
	if name == "" {
		name = "capture-" + time.Now().UTC().Format("20060102T150405.000Z")
	}
	name = strings.TrimSuffix(name, ".png")
	if err := ValidName(name); err != nil {
		return control.CaptureResult{}, err
	}
	var res control.CaptureResult
	err := d.operate(ctx, "capture", func(c *machine.Claim) error {
		f, err := d.litFrame(c.Context())
		if err != nil {
			return err
		}
		defer f.Release()
		dir := filepath.Join(d.opts.Config.Data.Dir, "captures")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("daemon: capture: %w", err)
		}
		var buf bytes.Buffer
		if err := png.Encode(&buf, f.Gray()); err != nil {
			return fmt.Errorf("daemon: capture: encode: %w", err)
		}
		p := filepath.Join(dir, name+".png")
		if err := atomicfile.Write(p, buf.Bytes(), 0o644); err != nil {
			return fmt.Errorf("daemon: capture: %w", err)
		}
		res = control.CaptureResult{Path: p, Width: f.Width, Height: f.Height, Mean: meanGrey(f)}
		return nil
	})
	return res, err
}

// litFrame captures one frame with the light on (switched on for it, and
// off again, unless it was on). Device errors are marked machine.Fault.
func (d *Daemon) litFrame(ctx context.Context) (*camera.Frame, error) {
	wasOn := d.light.state().On
	if !wasOn {
		d.mu.Lock()
		level := d.lightLevelLocked()
		d.mu.Unlock()
		if err := d.light.On(level); err != nil {
			return nil, machine.Fault("light", err)
		}
	}
	to := config.MS(d.opts.Config.Runner.CaptureTimeoutMS)
	cctx, cancel := context.WithTimeoutCause(ctx, CaptureExposure+to, fmt.Errorf("camera: no frame within %v", CaptureExposure+to))
	f, err := d.runner.Camera.Capture(cctx, CaptureExposure)
	cancel()
	err = machine.Fault("camera", err)
	if !wasOn {
		if offErr := d.light.Off(); offErr != nil {
			err = errors.Join(err, machine.Fault("light", offErr))
		}
	}
	if err != nil && f != nil {
		f.Release()
		f = nil
	}
	return f, err
}

func meanGrey(f *camera.Frame) float64 {
	var sum uint64
	for y := range f.Height {
		for _, v := range f.Row(y) {
			sum += uint64(v)
		}
	}
	if f.Width*f.Height == 0 {
		return 0
	}
	return float64(sum) / float64(f.Width*f.Height)
}

// SelfTest exercises each device safely, holding the machine's claim — the
// stage answers a status request (it does not move), the light goes on and
// off, the camera takes one lit frame — and reports the watchdog's
// heartbeats and the temperature. A device that fails its test is
// reported FAIL, not treated as a fault. Stop ends it: the remaining steps
// are reported as skipped, and the error says how it was stopped.
func (d *Daemon) SelfTest(ctx context.Context) ([]control.TestResult, error) {
	var res []control.TestResult
	err := d.operate(ctx, "selftest", func(c *machine.Claim) error {
		res = d.selfTest(c.Context())
		return nil
	})
	return res, err
}

func (d *Daemon) selfTest(ctx context.Context) []control.TestResult {
	var res []control.TestResult
	add := func(dev string, err error, format string, args ...any) {
		r := control.TestResult{Device: dev, Pass: err == nil, Detail: fmt.Sprintf(format, args...)}
		if err != nil {
			r.Detail = oneLine(err.Error())
			if c, ok := stop.FromContext(ctx); ok {
				r.Detail = "skipped: " + c.Error()
			}
		}
		res = append(res, r)
	}
	st, err := d.stageStatus(ctx)
	note := ""
	if st.State == motion.StateAlarm {
		note = " (alarm: home to clear)"
	}
	add("stage", err, "answers: %s%s", st, note)

	err = ctx.Err()
	if err == nil {
		err = d.light.On(0.5)
		if err == nil {
			err = d.light.Off()
		}
	}
	add("light", err, "switched on (50%%) and off")

	var f *camera.Frame
	if err = ctx.Err(); err == nil {
		f, err = d.litFrame(ctx)
	}
	if err == nil {
		info := d.opts.Devices.Camera.Info()
		mean := meanGrey(f)
		switch {
		case f.Width != info.Width || f.Height != info.Height:
			err = fmt.Errorf("frame is %dx%d, the camera reports %dx%d", f.Width, f.Height, info.Width, info.Height)
		case mean < 1:
			err = fmt.Errorf("frame is black (mean grey %.1f): light or lens?", mean)
		}
		add("camera", err, "one %dx%d frame, mean grey %.0f", f.Width, f.Height, mean)
		f.Release()
	} else {
		add("camera", err, "")
	}

	var stale []string
	temp := control.TestResult{Device: "temperature", Pass: true, Detail: "not watched (watchdog.thermal_zone is empty)"}
	for _, h := range d.Heartbeats() {
		if h.Kind == watchdog.KindSensor && h.Name == "temperature" {
			temp.Pass = h.Fresh && h.Age >= 0
			temp.Detail = fmt.Sprintf("%.1f °C (limit %.1f °C)", h.Value, h.Max)
			if h.Age < 0 {
				temp.Detail = "no reading yet"
			}
			continue
		}
		if !h.Fresh {
			stale = append(stale, h.Name)
		}
	}
	if len(stale) == 0 {
		res = append(res, control.TestResult{Device: "watchdog", Pass: true, Detail: "every heartbeat fresh"})
	} else {
		res = append(res, control.TestResult{Device: "watchdog", Detail: "stale: " + strings.Join(stale, ", ")})
	}
	return append(res, temp)
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", "; ")), " ")
}
