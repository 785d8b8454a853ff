// Package cameratest is a fake camera.Camera for unit tests: a capture
// takes its exposure (use testing/synctest for a fake clock) and returns a
// frame that Fill paints; captures can be made to hang until cancelled or
// to fail, as a camera that stopped delivering frames or broke.
package cameratest

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/waferd/waferd/camera"
)

// Camera is a fake camera. Methods are safe for concurrent use; captures
// are serialised, as the interface says.
type Camera struct {
	info camera.Info
	pool *camera.Pool
	// Fill, if set, paints each frame (seq counts captures from 1);
	// otherwise frames are mid-grey. Set it before the first capture.
	Fill func(seq uint64, f *camera.Frame)

	capMu sync.Mutex // serialises captures

	mu        sync.Mutex
	hang      bool
	unhang    chan struct{} // closed when hang is switched off
	failNext  error
	streaming bool
	seq       uint64
	closed    bool
}

var _ camera.Camera = (*Camera)(nil)

// New returns a camera of width×height frames of pixelUM µm pixels.
func New(width, height int, pixelUM float64) *Camera {
	pool, err := camera.NewPool(width, height)
	if err != nil {
		panic(err)
	}
	return &Camera{info: camera.Info{Width: width, Height: height, PixelSize: pixelUM}, pool: pool, unhang: make(chan struct{})}
}

// Info describes the frames.
func (c *Camera) Info() camera.Info { return c.info }

// ErrClosed is returned by Capture after Close.
var ErrClosed = camera.ErrClosed

// Capture waits the exposure (and, while InjectHang is on, until ctx is
// cancelled), then returns a painted frame. A cancelled capture returns an
// error wrapping context.Cause(ctx) at once.
func (c *Camera) Capture(ctx context.Context, exposure time.Duration) (*camera.Frame, error) {
	c.capMu.Lock()
	defer c.capMu.Unlock()
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, ErrClosed
	}
	if err := c.failNext; err != nil {
		c.failNext = nil
		c.mu.Unlock()
		return nil, fmt.Errorf("cameratest: capture: %w", err)
	}
	c.streaming = true
	c.seq++
	seq := c.seq
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.streaming = false
		c.mu.Unlock()
	}()
	t := time.NewTimer(exposure)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
		return nil, fmt.Errorf("cameratest: capture: %w", context.Cause(ctx))
	}
	for {
		c.mu.Lock()
		hang, unhang := c.hang, c.unhang
		c.mu.Unlock()
		if !hang {
			break
		}
		select {
		case <-unhang:
		case <-ctx.Done():
			return nil, fmt.Errorf("cameratest: capture: frame wait: %w", context.Cause(ctx))
		}
	}
	f := c.pool.Get()
	f.Seq, f.Time = seq, time.Now()
	if c.Fill != nil {
		c.Fill(seq, f)
	} else {
		for i := range f.Pix {
			f.Pix[i] = 128
		}
	}
	return f, nil
}

// InjectHang makes captures wait, after their exposure, until cancelled
// (on), or releases them (off).
func (c *Camera) InjectHang(on bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.hang && !on {
		close(c.unhang)
		c.unhang = make(chan struct{})
	}
	c.hang = on
}

// FailNext makes the next capture fail with err, at once.
func (c *Camera) FailNext(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.failNext = err
}

// Streaming reports whether a capture is in progress.
func (c *Camera) Streaming() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.streaming
}

// Captures counts the captures begun.
func (c *Camera) Captures() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.seq
}

// Close makes later captures fail with ErrClosed. Idempotent.
func (c *Camera) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	return nil
}
