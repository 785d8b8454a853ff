package board

import (
	"errors"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"

	"github.com/waferd/waferd/config"
)

func TestOpenCameraErrors(t *testing.T) {
	c := config.Default().Camera
	c.Device = filepath.Join(t.TempDir(), "video0")
	_, err := OpenCamera(c)
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), c.Device) || !strings.Contains(err.Error(), "camera.device") {
		t.Errorf("missing device: %v", err)
	}
	c.Device = "/dev/null"
	if _, err := OpenCamera(c); err == nil || !strings.Contains(err.Error(), "/dev/null is not a V4L2 device") {
		t.Errorf("/dev/null: %v", err)
	}
}
