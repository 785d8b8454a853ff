//go:build linux && (amd64 || arm64 || arm || 386 || riscv64 || loong64)

package v4l2

import (
	"runtime"
	"testing"
	"unsafe"
)

// The _IOC formula against requests whose values are fixed by the kernel
// headers, independent of the build architecture.
func TestIOCFormula(t *testing.T) {
	for _, c := range []struct {
		name          string
		dir, nr, size uintptr
		want          uintptr
	}{
		{"VIDIOC_QUERYCAP", iocRead, 0, 104, 0x80685600},
		{"VIDIOC_STREAMON", iocWrite, 18, 4, 0x40045612},
		{"VIDIOC_QBUF 64-bit", iocRead | iocWrite, 15, 88, 0xc058560f},
		{"VIDIOC_QBUF 32-bit", iocRead | iocWrite, 15, 68, 0xc044560f},
		{"VIDIOC_S_FMT 64-bit", iocRead | iocWrite, 5, 208, 0xc0d05605},
		{"VIDIOC_S_FMT 32-bit", iocRead | iocWrite, 5, 204, 0xc0cc5605},
		{"VIDIOC_S_PARM", iocRead | iocWrite, 22, 204, 0xc0cc5616},
	} {
		if got := ioc(c.dir, 'V', c.nr, c.size); got != c.want {
			t.Errorf("%s: ioc = %#x, want %#x", c.name, got, c.want)
		}
	}
}

// abi is what linux/videodev2.h gives on one architecture. The 64-bit
// values were printed by a C program including <linux/videodev2.h>
// (linux-libc-dev 6.1, gcc, amd64; arm64 has the same LP64 layout); the
// 32-bit ones follow from the same header with 4-byte longs and pointers
// and a 32-bit time_t timeval: v4l2_buffer is 68 bytes with m at 52 (timestamp 20, timecode 28, sequence 44, memory 48), and
// v4l2_format's union needs no padding (204 bytes).
type abi struct {
	querycap, enumFmt, sFmt, reqbufs, querybuf, qbuf, dqbuf, streamon, streamoff, sCtrl, queryctrl uintptr
	sizeBuffer, sizeFormat, offM, offTimestamp                                                     uintptr
}

var abi64 = abi{
	querycap: 0x80685600, enumFmt: 0xc0405602, sFmt: 0xc0d05605, reqbufs: 0xc0145608,
	querybuf: 0xc0585609, qbuf: 0xc058560f, dqbuf: 0xc0585611, streamon: 0x40045612, streamoff: 0x40045613,
	sCtrl: 0xc008561c, queryctrl: 0xc0445624,
	sizeBuffer: 88, sizeFormat: 208, offM: 64, offTimestamp: 24,
}

var abi32 = abi{
	querycap: 0x80685600, enumFmt: 0xc0405602, sFmt: 0xc0cc5605, reqbufs: 0xc0145608,
	querybuf: 0xc0445609, qbuf: 0xc044560f, dqbuf: 0xc0445611, streamon: 0x40045612, streamoff: 0x40045613,
	sCtrl: 0xc008561c, queryctrl: 0xc0445624,
	sizeBuffer: 68, sizeFormat: 204, offM: 52, offTimestamp: 20,
}

// TestABI checks the requests and struct layouts of the architecture the
// test is built for. Run it for the boards with qemu-user:
//
//	GOARCH=arm64 go test -exec qemu-aarch64-static -run ABI ./camera/v4l2/
//	GOARCH=arm GOARM=7 go test -exec qemu-arm-static -run ABI ./camera/v4l2/
func TestABI(t *testing.T) {
	want := map[string]abi{"amd64": abi64, "arm64": abi64, "riscv64": abi64, "loong64": abi64, "arm": abi32, "386": abi32}[runtime.GOARCH]
	got := abi{
		querycap: vidiocQuerycap, enumFmt: vidiocEnumFmt, sFmt: vidiocSFmt, reqbufs: vidiocReqbufs,
		querybuf: vidiocQuerybuf, qbuf: vidiocQbuf, dqbuf: vidiocDqbuf, streamon: vidiocStreamon, streamoff: vidiocStreamoff,
		sCtrl: vidiocSCtrl, queryctrl: vidiocQueryctrl,
		sizeBuffer: unsafe.Sizeof(buffer{}), sizeFormat: unsafe.Sizeof(format{}),
		offM: unsafe.Offsetof(buffer{}.M), offTimestamp: unsafe.Offsetof(buffer{}.Timestamp),
	}
	if got != want {
		t.Errorf("%s:\n got %+x\nwant %+x", runtime.GOARCH, got, want)
	}
	for name, s := range map[string]uintptr{
		"v4l2_capability": unsafe.Sizeof(capability{}), "v4l2_fmtdesc": unsafe.Sizeof(fmtdesc{}),
		"v4l2_pix_format": unsafe.Sizeof(pixFormat{}), "v4l2_requestbuffers": unsafe.Sizeof(requestBuffers{}),
		"v4l2_timecode": unsafe.Sizeof(timecode{}), "v4l2_control": unsafe.Sizeof(control{}),
		"v4l2_queryctrl": unsafe.Sizeof(queryCtrl{}), "v4l2_streamparm": unsafe.Sizeof(streamParm{}),
	} {
		w := map[string]uintptr{"v4l2_capability": 104, "v4l2_fmtdesc": 64, "v4l2_pix_format": 48,
			"v4l2_requestbuffers": 20, "v4l2_timecode": 16, "v4l2_control": 8, "v4l2_queryctrl": 68, "v4l2_streamparm": 204}[name]
		if s != w {
			t.Errorf("sizeof(%s) = %d, want %d", name, s, w)
		}
	}
	if vidiocSParm != 0xc0cc5616 {
		t.Errorf("VIDIOC_S_PARM = %#x, want 0xc0cc5616", vidiocSParm)
	}
	if s := unsafe.Sizeof(buffer{}); s > iocSizeMask {
		t.Errorf("v4l2_buffer %d bytes does not fit the ioctl size field", s)
	}
}
