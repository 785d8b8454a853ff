package v4l2

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/waferd/waferd/camera"
)

func TestFourcc(t *testing.T) {
	if got := fourcc("GREY"); got != 0x59455247 {
		t.Errorf("GREY = %#x", got)
	}
	if got := fourcc("YUYV"); got != 0x56595559 {
		t.Errorf("YUYV = %#x", got)
	}
	for _, s := range []string{"GREY", "YUYV", "RGB3", "Y16"} {
		if got := fourccString(fourcc(s)); got != s {
			t.Errorf("fourccString(fourcc(%q)) = %q", s, got)
		}
	}
}

func frame(t *testing.T, w, h int) *camera.Frame {
	t.Helper()
	p, err := camera.NewPool(w, h)
	if err != nil {
		t.Fatal(err)
	}
	return p.Get()
}

func TestGreyWithPadding(t *testing.T) {
	const w, h, bpl = 3, 2, 4
	src := []byte{1, 2, 3, 99, 4, 5, 6} // the last line's padding may be cut
	f := frame(t, w, h)
	if err := toGrey(f, src, GREY, bpl); err != nil {
		t.Fatal(err)
	}
	if want := []byte{1, 2, 3, 4, 5, 6}; !bytes.Equal(f.Pix, want) {
		t.Errorf("pix %v, want %v", f.Pix, want)
	}
}

func TestYUYVToGrey(t *testing.T) {
	const w, h, bpl = 4, 2, 10 // 8 bytes of pixels + 2 of padding per line
	src := []byte{
		10, 128, 20, 129, 30, 130, 40, 131, 0xee, 0xee,
		50, 100, 60, 101, 70, 102, 80, 103, 0xee, 0xee,
	}
	f := frame(t, w, h)
	if err := toGrey(f, src, YUYV, bpl); err != nil {
		t.Fatal(err)
	}
	if want := []byte{10, 20, 30, 40, 50, 60, 70, 80}; !bytes.Equal(f.Pix, want) {
		t.Errorf("pix %v, want %v", f.Pix, want)
	}
	if err := toGrey(f, src[:17], YUYV, bpl); err == nil || !strings.Contains(err.Error(), "short frame: 17 bytes, want 18") {
		t.Errorf("short frame: %v", err)
	}
	if err := toGrey(f, src, YUYV, 6); err == nil || !strings.Contains(err.Error(), "6 bytes per line is less than 4 pixels of YUYV") {
		t.Errorf("narrow line: %v", err)
	}
}

func BenchmarkYUYVToGrey(b *testing.B) {
	const w, h = 1280, 1024
	p, _ := camera.NewPool(w, h)
	f := p.Get()
	src := make([]byte, 2*w*h)
	b.SetBytes(int64(len(src)))
	for b.Loop() {
		if err := toGrey(f, src, YUYV, 2*w); err != nil {
			b.Fatal(err)
		}
	}
}

func TestCheckCaps(t *testing.T) {
	if err := checkCaps("/dev/video0", "uvcvideo", "Cam", capVideoCapture|capStreaming); err != nil {
		t.Errorf("capture+streaming: %v", err)
	}
	for _, c := range []struct {
		caps uint32
		want []string
	}{
		{capReadWrite | capVideoCapture, []string{`/dev/video1 (driver "uvcvideo", card "Cam")`, "without streaming I/O", "0x01000001"}},
		{0x00800000, []string{"expected video capture with streaming I/O", "without video capture and streaming I/O", "metadata"}},
		{capVideoCaptureMplane | capStreaming, []string{"multi-planar"}},
	} {
		err := checkCaps("/dev/video1", "uvcvideo", "Cam", c.caps)
		if !errors.Is(err, ErrUnsupported) {
			t.Errorf("caps %#x: %v, want ErrUnsupported", c.caps, err)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("caps %#x: %q does not say %q", c.caps, err, w)
			}
		}
	}
}

func TestConfig(t *testing.T) {
	ok := Config{Width: 640, Height: 480, Format: YUYV, PixelSize: 5}
	if err := ok.validate("/dev/video0"); err != nil {
		t.Error(err)
	}
	for _, c := range []struct {
		cfg  Config
		want string
	}{
		{Config{Width: 640, Height: 480, Format: "MJPG", PixelSize: 5}, `/dev/video0: format "MJPG": want "GREY" or "YUYV"`},
		{Config{Width: 0, Height: 480, Format: GREY, PixelSize: 5}, "bad frame size 0x480"},
		{Config{Width: 640, Height: 480, Format: GREY}, "pixel size 0 µm"},
	} {
		if err := c.cfg.validate("/dev/video0"); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %q", c.cfg, err, c.want)
		}
	}
	for in, want := range map[int]int{-1: 0, 0: 1, 3: 3} {
		if got := (Config{SkipFrames: in}).skipFrames(); got != want {
			t.Errorf("SkipFrames %d: skip %d, want %d", in, got, want)
		}
	}
	if got := (Config{}).buffers(); got != 4 {
		t.Errorf("default buffers %d", got)
	}
}
