//go:build linux && (amd64 || arm64 || arm || 386 || riscv64 || loong64)

package v4l2

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/waferd/waferd/camera"
)

func TestOpenErrors(t *testing.T) {
	cfg := Config{Width: 640, Height: 480, Format: GREY, PixelSize: 5}
	missing := filepath.Join(t.TempDir(), "video9")
	if _, err := Open(missing, cfg); !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), missing) {
		t.Errorf("missing device: %v", err)
	}
	if _, err := Open("/dev/null", cfg); err == nil || !strings.Contains(err.Error(), "/dev/null is not a V4L2 device") {
		t.Errorf("/dev/null: %v", err)
	}
	if _, err := Open("/dev/null", Config{Width: 640, Height: 480, Format: "RGB3", PixelSize: 5}); err == nil || !strings.Contains(err.Error(), `format "RGB3"`) {
		t.Errorf("bad format: %v", err)
	}
}

// videoDevice returns the capture device named by WAFERD_TEST_VIDEO, or
// skips the test.
func videoDevice(t *testing.T) string {
	t.Helper()
	p := os.Getenv("WAFERD_TEST_VIDEO")
	if p == "" {
		t.Skip("WAFERD_TEST_VIDEO not set: this test needs a real V4L2 capture device; `make test-vm` runs it against the kernel's vivid driver, or set WAFERD_TEST_VIDEO=/dev/videoN")
	}
	return p
}

func openDevice(t *testing.T, cfg Config) *Camera {
	t.Helper()
	c, err := Open(videoDevice(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Error(err)
		}
	})
	return c
}

func capture(t *testing.T, c *Camera) *camera.Frame {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	f, err := c.Capture(ctx, 10*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// checkFrame checks a frame against the camera's Info and that it shows
// something (vivid's default test pattern is colour bars).
func checkFrame(t *testing.T, c *Camera, f *camera.Frame) {
	t.Helper()
	info := c.Info()
	if f.Width != info.Width || f.Height != info.Height || len(f.Pix) < f.Stride*f.Height {
		t.Fatalf("frame %dx%d (stride %d, %d bytes), Info %dx%d", f.Width, f.Height, f.Stride, len(f.Pix), info.Width, info.Height)
	}
	if !slices.ContainsFunc(f.Pix, func(b byte) bool { return b != 0 }) {
		t.Errorf("frame %d is all zero", f.Seq)
	}
	if age := time.Since(f.Time); age < 0 || age > 10*time.Second {
		t.Errorf("frame %d time %v is %v old", f.Seq, f.Time, age)
	}
}

func TestDeviceCapture(t *testing.T) {
	for _, format := range []string{GREY, YUYV} {
		t.Run(format, func(t *testing.T) {
			c := openDevice(t, Config{Width: 640, Height: 480, Format: format, PixelSize: 3.5, ManualExposure: true})
			d := c.Details()
			t.Logf("%+v", d)
			t.Logf("%v", d.Exposure)
			if d.Format != format || d.Device != videoDevice(t) || d.Driver == "" || d.Buffers < 2 {
				t.Errorf("details %+v", d)
			}
			if want := (camera.Info{Width: d.Width, Height: d.Height, PixelSize: 3.5}); c.Info() != want {
				t.Errorf("Info %+v, want the driver's choice %+v", c.Info(), want)
			}
			if !d.Exposure.Manual && d.Exposure.Note == "" {
				t.Errorf("no manual exposure and no note saying why")
			}
			var last uint64
			for range 5 {
				f := capture(t, c)
				checkFrame(t, c, f)
				if f.Seq != last+1 {
					t.Errorf("seq %d after %d", f.Seq, last)
				}
				last = f.Seq
				f.Release()
			}
		})
	}
}

// TestDeviceChosenSize asks for a size the driver is unlikely to have and
// checks that Info reports what it chose.
func TestDeviceChosenSize(t *testing.T) {
	c := openDevice(t, Config{Width: 1001, Height: 701, Format: YUYV, PixelSize: 5})
	d := c.Details()
	t.Logf("asked for 1001x701, driver chose %dx%d (%d bytes per line)", d.Width, d.Height, d.BytesPerLine)
	if c.Info().Width != d.Width || c.Info().Height != d.Height {
		t.Errorf("Info %+v, details %dx%d", c.Info(), d.Width, d.Height)
	}
	f := capture(t, c)
	defer f.Release()
	checkFrame(t, c, f)
}

// TestDeviceCancelPendingWait cancels captures while they wait for a frame,
// with the stream slowed to a frame every 200 ms: every cancelled wait must
// return the cancellation's cause, and before the next frame is made (the
// frame a capture that ignored the cancellation would have returned). This
// holds however slow the host: it is an order, not a time bound. The time
// from the cancellation to the return is logged as a figure (test-vm runs
// under software emulation on a shared host).
func TestDeviceCancelPendingWait(t *testing.T) {
	c := openDevice(t, Config{Width: 320, Height: 180, Format: GREY, PixelSize: 5, SkipFrames: -1, FrameInterval: 200 * time.Millisecond})
	d := c.Details()
	if d.FrameInterval < 100*time.Millisecond {
		t.Skipf("the driver did not slow the stream (%v, %s): the order of a cancelled wait and the next frame cannot be told apart", d.FrameInterval, d.FrameIntervalNote)
	}
	t.Logf("frame interval %v", d.FrameInterval)
	cause := errors.New("operator stop")
	var lats []time.Duration
	for i := range 8 {
		first := capture(t, c) // a frame has just been made: the next one is an interval away
		ctx, cancel := context.WithCancelCause(t.Context())
		delay := time.Duration(5+5*i) * time.Millisecond
		cancelledAt := make(chan time.Time, 1)
		timer := time.AfterFunc(delay, func() {
			cancelledAt <- time.Now()
			cancel(cause)
		})
		f, err := c.Capture(ctx, 0)
		returned := time.Now()
		timer.Stop()
		cancel(nil)
		first.Release()
		if err == nil {
			f.Release()
			t.Fatalf("capture %d returned a frame instead of its cancellation (cancelled %v after the last frame, the next due %v after it)", i, delay, d.FrameInterval)
		}
		if !errors.Is(err, cause) {
			t.Fatalf("capture %d: %v, want the cause %v", i, err, cause)
		}
		lats = append(lats, returned.Sub(<-cancelledAt))
		next := capture(t, c)
		if !returned.Before(next.Time) {
			t.Errorf("capture %d returned its cancellation at %v, after the next frame (%v): it waited for the frame", i, returned.Format("15:04:05.000000"), next.Time.Format("15:04:05.000000"))
		}
		checkFrame(t, c, next)
		next.Release()
	}
	slices.Sort(lats)
	t.Logf("%d pending waits cancelled; returned after %v", len(lats), lats)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := c.Capture(ctx, 0); !errors.Is(err, context.Canceled) {
		t.Errorf("capture on a cancelled context: %v", err)
	}
	f := capture(t, c)
	checkFrame(t, c, f)
	f.Release()
}

// TestDeviceCloseDuringCapture closes the camera while a capture waits: the
// capture returns camera.ErrClosed promptly, Close stops the stream, and
// everything after is ErrClosed or a no-op.
func TestDeviceCloseDuringCapture(t *testing.T) {
	c, err := Open(videoDevice(t), Config{Width: 640, Height: 480, Format: GREY, PixelSize: 5, SkipFrames: 1000})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := c.Capture(t.Context(), 0)
		done <- err
	}()
	timer := time.NewTimer(50 * time.Millisecond)
	<-timer.C
	start := time.Now()
	if err := c.Close(); err != nil {
		t.Error(err)
	}
	if err := <-done; !errors.Is(err, camera.ErrClosed) {
		t.Errorf("pending capture: %v, want ErrClosed", err)
	}
	t.Logf("Close with a capture pending took %v", time.Since(start))
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := c.Capture(t.Context(), 0); !errors.Is(err, camera.ErrClosed) {
		t.Errorf("capture after Close: %v", err)
	}
}

// TestDeviceRestart stops and restarts streaming by closing and opening
// again, and checks that a second opener is refused with a message naming
// the device while the first streams.
func TestDeviceRestart(t *testing.T) {
	path := videoDevice(t)
	cfg := Config{Width: 640, Height: 480, Format: GREY, PixelSize: 5}
	for i := range 3 {
		c, err := Open(path, cfg)
		if err != nil {
			t.Fatalf("open %d: %v", i, err)
		}
		if i == 0 {
			if _, err := Open(path, cfg); err == nil || !strings.Contains(err.Error(), path) {
				t.Errorf("second opener while streaming: %v", err)
			} else {
				t.Logf("second opener: %v", err)
			}
		}
		f := capture(t, c)
		checkFrame(t, c, f)
		f.Release()
		if err := c.Close(); err != nil {
			t.Fatalf("close %d: %v", i, err)
		}
	}
}

// TestDeviceNotCapture opens the driver's other video nodes (vivid also
// creates output and metadata nodes): they are refused with a message
// naming the device, its driver and what it is.
func TestDeviceNotCapture(t *testing.T) {
	path := videoDevice(t)
	nodes, _ := filepath.Glob("/dev/video*")
	tried := 0
	for _, n := range nodes {
		if n == path {
			continue
		}
		c, err := Open(n, Config{Width: 640, Height: 480, Format: GREY, PixelSize: 5})
		if err == nil {
			_ = c.Close()
			continue
		}
		tried++
		t.Logf("%v", err)
		if !strings.Contains(err.Error(), n) {
			t.Errorf("error does not name %s: %v", n, err)
		}
	}
	if tried == 0 {
		t.Skip("no other video node that is not a capture device")
	}
}
