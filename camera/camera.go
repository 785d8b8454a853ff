// Package camera holds the camera abstraction consumed by the inspection
// workflow: the Camera interface, 8-bit grey Frames and the pool their
// buffers come from. Drivers live elsewhere (camera/v4l2, the synthetic
// camera in sim).
package camera

import (
	"context"
	"errors"
	"fmt"
	"image"
	"math"
	"sync"
	"time"

	"github.com/waferd/waferd/motion"
)

// Camera captures single frames.
//
// Capture blocks until a frame is available or ctx is cancelled; on
// cancellation the pending frame wait is abandoned promptly and Capture
// returns an error wrapping context.Cause(ctx). The device stays usable for
// the next Capture. Implementations are safe for concurrent use, but
// captures are serialised.
type Camera interface {
	// Info describes the frames this camera produces.
	Info() Info
	// Capture takes one exposure and returns the frame. The caller owns the
	// frame and must call Release when done with it.
	Capture(ctx context.Context, exposure time.Duration) (*Frame, error)
	// Close releases the device. It is safe to call more than once.
	Close() error
}

// Info describes a camera's frames.
type Info struct {
	Width, Height int
	// PixelSize is the size of one pixel on the wafer, in micrometres.
	PixelSize float64
}

// ToMachine maps a position in a frame, in pixel index coordinates, to
// machine coordinates (µm), given the machine position center of the frame
// centre (the stage position at exposure). Pixel (i, j) is centred at
// (px, py) = (i, j) and covers ±0.5 around it, so a blob centroid computed as
// the mean of pixel indices maps to the centre of the blob. Image x grows
// with machine X; image y grows downward, i.e. with decreasing machine Y:
//
//	X = center.X + (px + 0.5 - Width/2)  * PixelSize
//	Y = center.Y - (py + 0.5 - Height/2) * PixelSize
//
// The result is rounded to the nearest micrometre.
func (i Info) ToMachine(center motion.Point, px, py float64) motion.Point {
	x := (px + 0.5 - float64(i.Width)/2) * i.PixelSize
	y := (py + 0.5 - float64(i.Height)/2) * i.PixelSize
	return motion.Point{
		X: center.X + motion.Distance(math.Round(x)),
		Y: center.Y - motion.Distance(math.Round(y)),
	}
}

// ErrClosed is returned by Capture after Close.
var ErrClosed = errors.New("camera: closed")

// Frame is one 8-bit grey image. Pix holds Height rows of Stride bytes.
// A Frame is not safe for concurrent mutation.
type Frame struct {
	Width, Height, Stride int
	Pix                   []byte
	// Time is when the exposure ended.
	Time time.Time
	// Seq counts frames captured by the camera, from 1.
	Seq uint64

	pool *Pool
}

// Gray returns the frame as an image.Gray sharing its pixels (valid until
// Release).
func (f *Frame) Gray() *image.Gray {
	return &image.Gray{Pix: f.Pix, Stride: f.Stride, Rect: image.Rect(0, 0, f.Width, f.Height)}
}

// Row returns row y of the frame (Width bytes).
func (f *Frame) Row(y int) []byte { return f.Pix[y*f.Stride : y*f.Stride+f.Width] }

// Release returns the frame's buffer to its pool. The frame must not be used
// afterwards. Calling Release on a frame without a pool is a no-op.
func (f *Frame) Release() {
	if f == nil || f.pool == nil {
		return
	}
	p := f.pool
	f.pool = nil
	p.put(f)
}

// Pool hands out frames of one size and takes them back (Frame.Release),
// so that frames are reused while a run captures them: a 2048×2048 frame is
// 4 MiB, and a new one per capture would be zeroed each time and make the
// garbage collector run every few frames. Released frames are kept in a
// sync.Pool: idle ones are freed by the garbage collector, so between runs
// the pool holds no memory for long. Safe for concurrent use.
type Pool struct {
	width, height int
	free          sync.Pool // of *Frame
}

// NewPool returns a pool of width×height frames (stride = width).
func NewPool(width, height int) (*Pool, error) {
	if width <= 0 || height <= 0 {
		return nil, fmt.Errorf("camera: bad frame size %dx%d", width, height)
	}
	return &Pool{width: width, height: height}, nil
}

// Get returns a released frame, or a new one when none is idle. Its pixel
// contents are undefined; its other fields are as new. It does not block.
func (p *Pool) Get() *Frame {
	f, _ := p.free.Get().(*Frame)
	if f == nil {
		return &Frame{Width: p.width, Height: p.height, Stride: p.width, Pix: make([]byte, p.width*p.height), pool: p}
	}
	*f = Frame{Width: p.width, Height: p.height, Stride: p.width, Pix: f.Pix, pool: p}
	return f
}

func (p *Pool) put(f *Frame) { p.free.Put(f) }
