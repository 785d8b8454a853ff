//go:build linux && (amd64 || arm64 || arm || 386 || riscv64 || loong64)

package v4l2

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/waferd/waferd/camera"
)

// Camera is an open V4L2 capture device, streaming from Open until Close.
// Info and Details are safe to call at any time; Capture and Close are safe
// for concurrent use (captures are serialised, Close wakes a pending one).
type Camera struct {
	path    string
	info    camera.Info
	details Details
	skip    int
	pool    *camera.Pool

	closing atomic.Bool

	wmu  sync.Mutex // guards wake against being closed while written
	wake int        // eventfd: written on cancellation and by Close; -1 once closed

	// mu is held by Capture for the whole capture and by Close for the
	// teardown, so stream on/off never happens during a capture.
	mu        sync.Mutex
	fd        int // -1 once closed
	bufs      [][]byte
	streaming bool
	seq       uint64
	exposure  time.Duration // last exposure set, 0 none
}

var _ camera.Camera = (*Camera)(nil)

// Open opens the capture device at path (e.g. /dev/video0) and starts
// streaming; see the package documentation. Every error names the device,
// and where the device is not what is expected, what was found (its
// driver, card, capabilities, the pixel formats it offers).
func Open(path string, cfg Config) (*Camera, error) {
	if err := cfg.validate(path); err != nil {
		return nil, err
	}
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("v4l2: open %s: %w", path, err)
	}
	c := &Camera{path: path, fd: fd, wake: -1, skip: cfg.skipFrames()}
	if err := c.setUp(cfg); err != nil {
		return nil, errors.Join(err, c.teardown())
	}
	return c, nil
}

func (c *Camera) setUp(cfg Config) error {
	var cp capability
	if err := ioctl(c.fd, vidiocQuerycap, unsafe.Pointer(&cp)); err != nil {
		if errors.Is(err, unix.ENOTTY) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) { // ENOSYS: under qemu-user
			return fmt.Errorf("v4l2: %s is not a V4L2 device (VIDIOC_QUERYCAP: %w)", c.path, err)
		}
		return fmt.Errorf("v4l2: %s: query capabilities: %w", c.path, err)
	}
	d := &c.details
	d.Device, d.Driver, d.Card, d.BusInfo = c.path, cString(cp.Driver[:]), cString(cp.Card[:]), cString(cp.BusInfo[:])
	caps := cp.Capabilities
	if caps&capDeviceCaps != 0 {
		caps = cp.DeviceCaps
	}
	if err := checkCaps(c.path, d.Driver, d.Card, caps); err != nil {
		return err
	}
	if err := c.setFormat(cfg); err != nil {
		return err
	}
	d.Exposure = c.setUpExposure(cfg.ManualExposure)
	if cfg.FrameInterval > 0 {
		d.FrameInterval, d.FrameIntervalNote = c.setFrameInterval(cfg.FrameInterval)
	}
	c.info = camera.Info{Width: d.Width, Height: d.Height, PixelSize: cfg.PixelSize}
	pool, err := camera.NewPool(d.Width, d.Height)
	if err != nil {
		return fmt.Errorf("v4l2: %s: %w", c.path, err)
	}
	c.pool = pool
	if err := c.mapBuffers(cfg.buffers()); err != nil {
		return err
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return fmt.Errorf("v4l2: %s: eventfd: %w", c.path, err)
	}
	c.wake = wake
	typ := int32(bufTypeVideoCapture)
	if err := ioctl(c.fd, vidiocStreamon, unsafe.Pointer(&typ)); err != nil {
		return fmt.Errorf("v4l2: %s: stream on: %w", c.path, err)
	}
	c.streaming = true
	return nil
}

// setFormat asks for cfg's format and size and records what the driver
// chose.
func (c *Camera) setFormat(cfg Config) error {
	d := &c.details
	name := fmt.Sprintf("%s (driver %q, card %q)", c.path, d.Driver, d.Card)
	var f format
	f.Type = bufTypeVideoCapture
	f.Fmt.Pix = pixFormat{Width: uint32(cfg.Width), Height: uint32(cfg.Height), PixelFormat: fourcc(cfg.Format), Field: fieldNone}
	if err := ioctl(c.fd, vidiocSFmt, unsafe.Pointer(&f)); err != nil {
		if errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("v4l2: %s: set format: %w (another program is streaming from it?)", name, err)
		}
		return fmt.Errorf("v4l2: %s: set format %s %dx%d: %w", name, cfg.Format, cfg.Width, cfg.Height, err)
	}
	p := f.Fmt.Pix
	if got := fourccString(p.PixelFormat); got != cfg.Format {
		return fmt.Errorf("v4l2: %s does not stream %s: expected %s (or %s), found the driver offers %s: %w",
			name, cfg.Format, GREY, YUYV, strings.Join(c.formats(), ", "), ErrUnsupported)
	}
	if p.Field != fieldNone && p.Field != fieldAny {
		return fmt.Errorf("v4l2: %s: expected progressive frames (field none), found field order %d: %w", name, p.Field, ErrUnsupported)
	}
	d.Format, d.Width, d.Height, d.BytesPerLine = cfg.Format, int(p.Width), int(p.Height), int(p.BytesPerLine)
	if d.BytesPerLine == 0 { // allowed for some drivers: tightly packed
		d.BytesPerLine = d.Width
		if cfg.Format == YUYV {
			d.BytesPerLine *= 2
		}
	}
	if _, err := frameLayout(d.Format, d.Width, d.Height, d.BytesPerLine); err != nil {
		return fmt.Errorf("v4l2: %s: driver chose %dx%d %s: %w", name, d.Width, d.Height, d.Format, err)
	}
	return nil
}

// formats lists the capture pixel formats the device offers.
func (c *Camera) formats() []string {
	var out []string
	for i := uint32(0); i < 64; i++ {
		fd := fmtdesc{Index: i, Type: bufTypeVideoCapture}
		if ioctl(c.fd, vidiocEnumFmt, unsafe.Pointer(&fd)) != nil {
			break
		}
		out = append(out, fmt.Sprintf("%s (%s)", fourccString(fd.PixelFormat), cString(fd.Description[:])))
	}
	if len(out) == 0 {
		return []string{"no capture formats"}
	}
	return out
}

// setUpExposure switches to manual exposure if asked and possible. A
// missing control is reported, not an error.
// setFrameInterval asks the driver for iv between frames and returns what
// it chose, or 0 and why not.
func (c *Camera) setFrameInterval(iv time.Duration) (time.Duration, string) {
	p := streamParm{Type: bufTypeVideoCapture, Numerator: uint32(iv / time.Microsecond), Denominator: 1_000_000}
	if err := ioctl(c.fd, vidiocSParm, unsafe.Pointer(&p)); err != nil {
		return 0, fmt.Sprintf("%s (driver %q): frame interval not settable (VIDIOC_S_PARM: %v)", c.path, c.details.Driver, err)
	}
	if p.Capability&capTimePerFrame == 0 || p.Denominator == 0 {
		return 0, fmt.Sprintf("%s (driver %q): frame interval not settable (no V4L2_CAP_TIMEPERFRAME)", c.path, c.details.Driver)
	}
	return time.Duration(uint64(p.Numerator) * uint64(time.Second) / uint64(p.Denominator)), ""
}

func (c *Camera) setUpExposure(manual bool) Exposure {
	if !manual {
		return Exposure{Note: "manual exposure not requested: the camera's exposure settings are left as they are"}
	}
	q := queryCtrl{ID: cidExposureAbsolute}
	if err := ioctl(c.fd, vidiocQueryctrl, unsafe.Pointer(&q)); err != nil || q.Flags&(ctrlFlagDisabled|ctrlFlagReadOnly) != 0 {
		return Exposure{Note: fmt.Sprintf("%s (driver %q) has no writable exposure_time_absolute control (V4L2_CID_EXPOSURE_ABSOLUTE): the exposure is the camera's own", c.path, c.details.Driver)}
	}
	auto := control{ID: cidExposureAuto, Value: exposureManual}
	if err := ioctl(c.fd, vidiocSCtrl, unsafe.Pointer(&auto)); err != nil && !errors.Is(err, unix.EINVAL) {
		// EINVAL: no auto exposure control at all, so manual already.
		return Exposure{Note: fmt.Sprintf("%s (driver %q): cannot switch auto_exposure (V4L2_CID_EXPOSURE_AUTO) to manual: %v", c.path, c.details.Driver, err)}
	}
	step := q.Step
	if step < 1 {
		step = 1
	}
	return Exposure{
		Manual: true,
		Min:    time.Duration(q.Minimum) * exposureUnit,
		Max:    time.Duration(q.Maximum) * exposureUnit,
		Step:   time.Duration(step) * exposureUnit,
	}
}

// setExposure applies a capture's exposure. Called with mu held.
func (c *Camera) setExposure(exposure time.Duration) error {
	e := c.details.Exposure
	if !e.Manual || exposure <= 0 || exposure == c.exposure {
		return nil
	}
	if exposure < e.Min || exposure > e.Max {
		return fmt.Errorf("v4l2: %s: exposure %v is outside the camera's range %v…%v", c.path, exposure, e.Min, e.Max)
	}
	steps := (exposure - e.Min + e.Step/2) / e.Step
	v := control{ID: cidExposureAbsolute, Value: int32((e.Min + steps*e.Step) / exposureUnit)}
	if err := ioctl(c.fd, vidiocSCtrl, unsafe.Pointer(&v)); err != nil {
		return fmt.Errorf("v4l2: %s: set exposure %v: %w", c.path, exposure, err)
	}
	c.exposure = exposure
	return nil
}

// mapBuffers requests, maps and queues the streaming buffers.
func (c *Camera) mapBuffers(n int) error {
	rb := requestBuffers{Count: uint32(n), Type: bufTypeVideoCapture, Memory: memoryMMAP}
	if err := ioctl(c.fd, vidiocReqbufs, unsafe.Pointer(&rb)); err != nil {
		return fmt.Errorf("v4l2: %s: request %d mmap buffers: %w", c.path, n, err)
	}
	if rb.Count < 2 {
		return fmt.Errorf("v4l2: %s: expected at least 2 mmap buffers, the driver granted %d", c.path, rb.Count)
	}
	c.details.Buffers = int(rb.Count)
	need, _ := frameLayout(c.details.Format, c.details.Width, c.details.Height, c.details.BytesPerLine)
	for i := uint32(0); i < rb.Count; i++ {
		b := buffer{Index: i, Type: bufTypeVideoCapture, Memory: memoryMMAP}
		if err := ioctl(c.fd, vidiocQuerybuf, unsafe.Pointer(&b)); err != nil {
			return fmt.Errorf("v4l2: %s: query buffer %d: %w", c.path, i, err)
		}
		if int(b.Length) < need {
			return fmt.Errorf("v4l2: %s: buffer %d holds %d bytes, a %dx%d %s frame needs %d", c.path, i, b.Length, c.details.Width, c.details.Height, c.details.Format, need)
		}
		m, err := unix.Mmap(c.fd, int64(b.offset()), int(b.Length), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
		if err != nil {
			return fmt.Errorf("v4l2: %s: map buffer %d (%d bytes): %w", c.path, i, b.Length, err)
		}
		c.bufs = append(c.bufs, m)
		if err := c.queue(i); err != nil {
			return err
		}
	}
	return nil
}

func (c *Camera) queue(i uint32) error {
	b := buffer{Index: i, Type: bufTypeVideoCapture, Memory: memoryMMAP}
	if err := ioctl(c.fd, vidiocQbuf, unsafe.Pointer(&b)); err != nil {
		return fmt.Errorf("v4l2: %s: queue buffer %d: %w", c.path, i, err)
	}
	return nil
}

// dequeue takes a filled buffer off the driver's queue; ok is false when
// none is ready.
func (c *Camera) dequeue() (b buffer, ok bool, err error) {
	b = buffer{Type: bufTypeVideoCapture, Memory: memoryMMAP}
	if err := ioctl(c.fd, vidiocDqbuf, unsafe.Pointer(&b)); err != nil {
		if errors.Is(err, unix.EAGAIN) {
			return b, false, nil
		}
		return b, false, fmt.Errorf("v4l2: %s: dequeue: %w", c.path, err)
	}
	if int(b.Index) >= len(c.bufs) {
		return b, false, fmt.Errorf("v4l2: %s: driver returned buffer %d of %d", c.path, b.Index, len(c.bufs))
	}
	return b, true, nil
}

// Info describes the frames: the size the driver chose and the pixel size.
func (c *Camera) Info() camera.Info { return c.info }

// Details describes the device and what the driver granted.
func (c *Camera) Details() Details { return c.details }

// Capture returns the next frame exposed after the call (see
// Config.SkipFrames), with exposure set first if the camera is in manual
// exposure (0 keeps the current exposure). It blocks until the frame is in
// or ctx is cancelled; a cancelled wait returns within microseconds an error
// wrapping context.Cause(ctx), and the stream stays up for the next capture.
// After Close it returns camera.ErrClosed.
func (c *Camera) Capture(ctx context.Context, exposure time.Duration) (*camera.Frame, error) {
	if c.closing.Load() {
		return nil, camera.ErrClosed
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing.Load() || c.fd < 0 {
		return nil, camera.ErrClosed
	}
	if ctx.Err() != nil {
		return nil, fmt.Errorf("v4l2: %s: capture: %w", c.path, context.Cause(ctx))
	}
	// Cancelling ctx wakes the frame wait below.
	woke := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(woke)
		c.signal()
	})
	defer func() {
		if !stop() {
			// The wake-up is being written: wait for it and consume it,
			// so that the next capture does not see it.
			<-woke
			c.drainWake()
		}
	}()
	if err := c.setExposure(exposure); err != nil {
		return nil, err
	}
	// Frames completed before the call are stale: hand them back.
	for {
		b, ok, err := c.dequeue()
		if err != nil {
			return nil, err
		}
		if !ok {
			break
		}
		if err := c.queue(b.Index); err != nil {
			return nil, err
		}
	}
	skip := c.skip
	fds := []unix.PollFd{{Fd: int32(c.fd), Events: unix.POLLIN}, {Fd: int32(c.wake), Events: unix.POLLIN}}
	for {
		fds[0].Revents, fds[1].Revents = 0, 0
		if _, err := unix.Poll(fds, -1); err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return nil, fmt.Errorf("v4l2: %s: poll: %w", c.path, err)
		}
		if fds[1].Revents != 0 {
			switch {
			case c.closing.Load():
				return nil, camera.ErrClosed
			case ctx.Err() != nil:
				return nil, fmt.Errorf("v4l2: %s: capture: %w", c.path, context.Cause(ctx))
			}
			c.drainWake() // a stale wake-up; not ours
		}
		if fds[0].Revents&(unix.POLLERR|unix.POLLHUP|unix.POLLNVAL) != 0 && fds[0].Revents&unix.POLLIN == 0 {
			return nil, fmt.Errorf("v4l2: %s: the device stopped streaming or was disconnected (poll events %#x)", c.path, fds[0].Revents)
		}
		if fds[0].Revents&unix.POLLIN == 0 {
			continue
		}
		b, ok, err := c.dequeue()
		if err != nil {
			return nil, err
		}
		if !ok {
			continue
		}
		if b.Flags&bufFlagError != 0 || skip > 0 {
			if b.Flags&bufFlagError == 0 {
				skip--
			}
			if err := c.queue(b.Index); err != nil {
				return nil, err
			}
			continue
		}
		f, err := c.frame(b)
		if qerr := c.queue(b.Index); qerr != nil {
			f.Release()
			return nil, errors.Join(err, qerr)
		}
		return f, err
	}
}

// frame copies a dequeued buffer into a pooled frame.
func (c *Camera) frame(b buffer) (*camera.Frame, error) {
	src := c.bufs[b.Index]
	if b.BytesUsed > 0 && int(b.BytesUsed) < len(src) {
		src = src[:b.BytesUsed]
	}
	f := c.pool.Get()
	if err := toGrey(f, src, c.details.Format, c.details.BytesPerLine); err != nil {
		f.Release()
		return nil, fmt.Errorf("v4l2: %s: frame %d: %w", c.path, b.Sequence, err)
	}
	c.seq++
	f.Seq = c.seq
	f.Time = time.Now()
	if b.Flags&bufFlagTimestampMask == bufFlagTimestampMonotonic {
		var now unix.Timespec
		if unix.ClockGettime(unix.CLOCK_MONOTONIC, &now) == nil {
			age := time.Duration(now.Nano() - b.Timestamp.Nano())
			if age >= 0 && age < time.Minute {
				f.Time = f.Time.Add(-age)
			}
		}
	}
	return f, nil
}

// signal wakes a pending frame wait.
func (c *Camera) signal() {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.wake >= 0 {
		var one [8]byte
		binary.NativeEndian.PutUint64(one[:], 1)
		_, _ = unix.Write(c.wake, one[:])
	}
}

// drainWake resets the eventfd.
func (c *Camera) drainWake() {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.wake >= 0 {
		var v [8]byte
		_, _ = unix.Read(c.wake, v[:])
	}
}

// Close wakes a pending Capture (it returns camera.ErrClosed), then stops
// streaming, unmaps the buffers and closes the device. It blocks only for
// the pending capture to return, and is safe to call more than once.
func (c *Camera) Close() error {
	if !c.closing.Swap(true) {
		c.signal()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.teardown()
}

// teardown releases whatever is set up; called with mu held or before the
// Camera is shared.
func (c *Camera) teardown() error {
	if c.fd < 0 {
		return nil
	}
	var errs []error
	if c.streaming {
		typ := int32(bufTypeVideoCapture)
		if err := ioctl(c.fd, vidiocStreamoff, unsafe.Pointer(&typ)); err != nil {
			errs = append(errs, fmt.Errorf("v4l2: %s: stream off: %w", c.path, err))
		}
		c.streaming = false
	}
	for i, b := range c.bufs {
		if err := unix.Munmap(b); err != nil {
			errs = append(errs, fmt.Errorf("v4l2: %s: unmap buffer %d: %w", c.path, i, err))
		}
	}
	if c.bufs != nil {
		c.bufs = nil
		rb := requestBuffers{Count: 0, Type: bufTypeVideoCapture, Memory: memoryMMAP}
		_ = ioctl(c.fd, vidiocReqbufs, unsafe.Pointer(&rb)) // freed on close anyway
	}
	if err := unix.Close(c.fd); err != nil {
		errs = append(errs, fmt.Errorf("v4l2: close %s: %w", c.path, err))
	}
	c.fd = -1
	c.wmu.Lock()
	if c.wake >= 0 {
		_ = unix.Close(c.wake)
		c.wake = -1
	}
	c.wmu.Unlock()
	return errors.Join(errs...)
}
