//go:build !(linux && (amd64 || arm64 || arm || 386 || riscv64 || loong64))

package v4l2

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/waferd/waferd/camera"
)

// Camera is a V4L2 capture device; on this platform Open always fails.
type Camera struct{}

var _ camera.Camera = (*Camera)(nil)

// Open is implemented on Linux (amd64, arm64, arm, 386, riscv64, loong64)
// only.
func Open(path string, cfg Config) (*Camera, error) {
	return nil, fmt.Errorf("v4l2: open %s: %w", path, errors.ErrUnsupported)
}

// Info returns the zero Info.
func (c *Camera) Info() camera.Info { return camera.Info{} }

// Details returns the zero Details.
func (c *Camera) Details() Details { return Details{} }

// Capture returns camera.ErrClosed.
func (c *Camera) Capture(context.Context, time.Duration) (*camera.Frame, error) {
	return nil, camera.ErrClosed
}

// Close does nothing.
func (c *Camera) Close() error { return nil }
