// Package v4l2 is a Video4Linux2 capture driver for camera.Camera, written
// on golang.org/x/sys/unix only (no cgo): it cross-compiles with
// CGO_ENABLED=0 for linux/arm64 and linux/arm.
//
// Open queries the device's capabilities, sets the pixel format (GREY, or
// YUYV converted to 8-bit luminance) and the frame size (the driver may
// choose another size; Info reports the one it chose), switches the camera to
// manual exposure where it has the controls, maps the streaming buffers and
// starts streaming. Capture dequeues one frame into a pooled camera.Frame
// and re-queues the buffer at once.
//
// A frame wait polls the device and an eventfd together; cancelling the
// capture's context writes the eventfd (context.AfterFunc), so a pending wait
// is abandoned within microseconds, and the stream keeps running for the
// next capture. Captures are serialised by a mutex that Close also takes, so
// stream on/off never races with a capture: Close wakes a pending capture
// (which returns camera.ErrClosed), then stops the stream and unmaps the
// buffers.
package v4l2

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/waferd/waferd/camera"
)

// Pixel formats Open accepts (Config.Format), as V4L2 fourcc codes.
const (
	GREY = "GREY" // 8-bit luminance, copied as is
	YUYV = "YUYV" // 4:2:2 packed Y0 U Y1 V, reduced to its Y samples
)

// Config is what Open asks of the device.
type Config struct {
	// Width and Height are the requested frame size in pixels. The driver
	// may choose the nearest size it supports; Info reports it.
	Width, Height int
	// Format is GREY or YUYV.
	Format string
	// PixelSize is the size of one pixel on the wafer, in micrometres,
	// reported by Info.
	PixelSize float64
	// ManualExposure switches the camera to manual exposure
	// (V4L2_CID_EXPOSURE_AUTO) and sets each Capture's exposure through
	// V4L2_CID_EXPOSURE_ABSOLUTE. A camera without those controls is not an
	// error: Details().Exposure says so and Capture ignores its exposure.
	ManualExposure bool
	// Buffers is the number of mmap streaming buffers to ask for (default
	// 4; the driver may grant more, at least 2 are required).
	Buffers int
	// SkipFrames is how many frames completed after Capture is called are
	// thrown away before one is returned, so that the returned frame was
	// exposed after the call (after the light was switched on, the stage
	// settled, the exposure changed). 0 means the default, 1: the frame
	// being exposed when Capture is called is discarded. Negative means
	// none: the next frame to complete is returned.
	SkipFrames int
	// FrameInterval, if positive, asks the driver for this time between
	// frames (VIDIOC_S_PARM); the driver picks the nearest it has, and
	// Details().FrameInterval says what it chose (or why not).
	FrameInterval time.Duration
}

func (c Config) skipFrames() int {
	switch {
	case c.SkipFrames < 0:
		return 0
	case c.SkipFrames == 0:
		return 1
	}
	return c.SkipFrames
}

func (c Config) buffers() int {
	if c.Buffers <= 0 {
		return 4
	}
	return c.Buffers
}

func (c Config) validate(path string) error {
	if c.Format != GREY && c.Format != YUYV {
		return fmt.Errorf("v4l2: %s: format %q: want %q or %q", path, c.Format, GREY, YUYV)
	}
	if c.Width <= 0 || c.Height <= 0 {
		return fmt.Errorf("v4l2: %s: bad frame size %dx%d", path, c.Width, c.Height)
	}
	if c.PixelSize <= 0 {
		return fmt.Errorf("v4l2: %s: pixel size %g µm must be > 0", path, c.PixelSize)
	}
	return nil
}

// Details describes the opened device and what the driver granted.
type Details struct {
	Device  string // the path opened
	Driver  string // e.g. "uvcvideo", "vivid"
	Card    string // e.g. "vivid"
	BusInfo string // e.g. "platform:vivid-000"
	// Format is the pixel format streamed (GREY or YUYV).
	Format string
	// Width, Height and BytesPerLine are what the driver chose.
	Width, Height, BytesPerLine int
	// Buffers is the number of streaming buffers mapped.
	Buffers int
	// Exposure says whether Capture sets the exposure, and if not, why.
	Exposure Exposure
	// FrameInterval is the time between frames the driver chose when
	// Config.FrameInterval asked for one (0: not asked, or not settable:
	// FrameIntervalNote says why).
	FrameInterval     time.Duration
	FrameIntervalNote string
}

// Exposure describes the manual exposure control.
type Exposure struct {
	// Manual is true when Capture sets the exposure it is given.
	Manual bool
	// Min, Max and Step are the control's range (V4L2_CID_EXPOSURE_ABSOLUTE
	// counts 100 µs units).
	Min, Max, Step time.Duration
	// Note explains why Manual is false, e.g. the device has no such
	// control.
	Note string
}

// String describes the exposure control for a log line.
func (e Exposure) String() string {
	if e.Manual {
		return fmt.Sprintf("manual exposure %v…%v in steps of %v", e.Min, e.Max, e.Step)
	}
	return "exposure not set per capture: " + e.Note
}

// ErrUnsupported is wrapped by errors about devices this driver cannot
// use: not a capture device, no streaming I/O, a pixel format or field
// order it does not handle.
var ErrUnsupported = errors.New("unsupported device")

// fourcc returns the V4L2 pixel format code of a four-character name.
func fourcc(s string) uint32 {
	var b [4]byte
	copy(b[:], s)
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}

// fourccString is the inverse of fourcc, with trailing spaces trimmed.
func fourccString(v uint32) string {
	b := []byte{byte(v), byte(v >> 8), byte(v >> 16), byte(v >> 24)}
	for i, c := range b {
		if c == 0 {
			b[i] = ' '
		} else if c < 0x20 || c > 0x7e {
			b[i] = '?'
		}
	}
	return strings.TrimRight(string(b), " ")
}

// cString returns a NUL-terminated byte array as a string.
func cString(b []byte) string {
	if i := strings.IndexByte(string(b), 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// Capability bits (linux/videodev2.h).
const (
	capVideoCapture       = 0x00000001
	capVideoCaptureMplane = 0x00001000
	capReadWrite          = 0x01000000
	capStreaming          = 0x04000000
	capDeviceCaps         = 0x80000000
)

// checkCaps accepts a single-planar capture device with streaming I/O.
// caps are the device's capabilities (device_caps when the driver reports
// them, else the capabilities of the whole physical device).
func checkCaps(path, driver, card string, caps uint32) error {
	var missing []string
	if caps&capVideoCapture == 0 {
		if caps&capVideoCaptureMplane != 0 {
			return fmt.Errorf("v4l2: %s (driver %q, card %q) is a multi-planar capture device (capabilities %#08x); this driver handles single-planar capture only: %w", path, driver, card, caps, ErrUnsupported)
		}
		missing = append(missing, "video capture")
	}
	if caps&capStreaming == 0 {
		missing = append(missing, "streaming I/O")
	}
	if len(missing) > 0 {
		return fmt.Errorf("v4l2: %s (driver %q, card %q) is not a streaming capture device: expected video capture with streaming I/O, found capabilities %#08x without %s (is it a metadata or output node? try the other /dev/video* of the camera): %w",
			path, driver, card, caps, strings.Join(missing, " and "), ErrUnsupported)
	}
	return nil
}

// frameLayout checks a driver-chosen format and returns the bytes a whole
// frame occupies.
func frameLayout(format string, width, height, bytesPerLine int) (int, error) {
	px := 1
	if format == YUYV {
		px = 2
	}
	if width <= 0 || height <= 0 {
		return 0, fmt.Errorf("bad frame size %dx%d", width, height)
	}
	if bytesPerLine < width*px {
		return 0, fmt.Errorf("%d bytes per line is less than %d pixels of %s", bytesPerLine, width, format)
	}
	return bytesPerLine*(height-1) + width*px, nil
}

// toGrey converts one frame in format (GREY or YUYV) with the given
// line pitch into f, whose Width and Height it must match. YUYV keeps the
// luminance samples (every even byte).
func toGrey(f *camera.Frame, src []byte, format string, bytesPerLine int) error {
	need, err := frameLayout(format, f.Width, f.Height, bytesPerLine)
	if err != nil {
		return err
	}
	if len(src) < need {
		return fmt.Errorf("short frame: %d bytes, want %d (%dx%d %s, %d bytes per line)", len(src), need, f.Width, f.Height, format, bytesPerLine)
	}
	w := f.Width
	for y := 0; y < f.Height; y++ {
		row := src[y*bytesPerLine:]
		dst := f.Pix[y*f.Stride : y*f.Stride+w]
		switch format {
		case GREY:
			copy(dst, row[:w])
		case YUYV:
			row = row[:2*w]
			for x := range dst {
				dst[x] = row[2*x]
			}
		default:
			return fmt.Errorf("format %q: %w", format, ErrUnsupported)
		}
	}
	return nil
}
