//go:build linux && (amd64 || arm64 || arm || 386 || riscv64 || loong64)

package v4l2

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// The kernel ABI of linux/videodev2.h, written so that the Go compiler lays
// the structs out exactly as the C compiler does on each architecture: the
// pointer-sized unions become uintptr (8 bytes on arm64 and amd64, 4 on
// arm and 386) and the timestamp is unix.Timeval (two longs). The
// ioctl numbers are computed from the struct sizes with the _IOC formula,
// as the C macros do, so v4l2_buffer's 88 bytes on 64-bit and 68 on 32-bit
// give different VIDIOC_QBUF numbers automatically; abi_linux_test.go checks
// them against the values the kernel headers produce.
//
// On 32-bit ARM this is the classic layout with a 32-bit time_t timeval
// (the C header with default flags on armhf bookworm), which the kernel
// serves through its VIDIOC_*_TIME32 entry points (CONFIG_COMPAT_32BIT_TIME,
// on in Debian and Raspberry Pi kernels, also for 32-bit programs on an
// arm64 kernel). The buffer timestamp is monotonic, so 2038 is no concern.
//
// The _IOC encoding used here (2 direction bits at 30, 14 size bits at 16)
// is asm-generic's, which is why the build is limited to the architectures
// above (and to little-endian ones, for the offset inside the m union).

// _IOC direction bits.
const (
	iocWrite = 1
	iocRead  = 2

	iocNRShift   = 0
	iocTypeShift = 8
	iocSizeShift = 16
	iocDirShift  = 30
	iocSizeMask  = 1<<14 - 1
)

// ioc is the _IOC macro.
func ioc(dir, typ, nr, size uintptr) uintptr {
	return dir<<iocDirShift | typ<<iocTypeShift | nr<<iocNRShift | size<<iocSizeShift
}

// v4l2_capability
type capability struct {
	Driver       [16]byte
	Card         [32]byte
	BusInfo      [32]byte
	Version      uint32
	Capabilities uint32
	DeviceCaps   uint32
	Reserved     [3]uint32
}

// v4l2_fmtdesc
type fmtdesc struct {
	Index       uint32
	Type        uint32
	Flags       uint32
	Description [32]byte
	PixelFormat uint32
	MbusCode    uint32
	Reserved    [3]uint32
}

// v4l2_pix_format
type pixFormat struct {
	Width        uint32
	Height       uint32
	PixelFormat  uint32
	Field        uint32
	BytesPerLine uint32
	SizeImage    uint32
	Colorspace   uint32
	Priv         uint32
	Flags        uint32
	YcbcrEnc     uint32
	Quantization uint32
	XferFunc     uint32
}

// v4l2_format: the union holds struct v4l2_window, which has pointers, so it
// is pointer-aligned (4 bytes of padding after Type on 64-bit).
type format struct {
	Type uint32
	Fmt  struct {
		_   [0]uintptr
		Pix pixFormat
		_   [200 - unsafe.Sizeof(pixFormat{})]byte
	}
}

// v4l2_requestbuffers
type requestBuffers struct {
	Count        uint32
	Type         uint32
	Memory       uint32
	Capabilities uint32
	Flags        uint8
	Reserved     [3]uint8
}

// v4l2_timecode
type timecode struct {
	Type     uint32
	Flags    uint32
	Frames   uint8
	Seconds  uint8
	Minutes  uint8
	Hours    uint8
	Userbits [4]uint8
}

// v4l2_buffer
type buffer struct {
	Index     uint32
	Type      uint32
	BytesUsed uint32
	Flags     uint32
	Field     uint32
	Timestamp unix.Timeval
	Timecode  timecode
	Sequence  uint32
	Memory    uint32
	// M is the union { __u32 offset; unsigned long userptr; struct
	// v4l2_plane *planes; __s32 fd; }. For MMAP it holds offset, in the
	// low 32 bits on these little-endian architectures.
	M         uintptr
	Length    uint32
	Reserved2 uint32
	RequestFD int32
}

func (b *buffer) offset() uint32 { return uint32(b.M) }

// v4l2_control
type control struct {
	ID    uint32
	Value int32
}

// v4l2_queryctrl
type queryCtrl struct {
	ID           uint32
	Type         uint32
	Name         [32]byte
	Minimum      int32
	Maximum      int32
	Step         int32
	DefaultValue int32
	Flags        uint32
	Reserved     [2]uint32
}

// v4l2_streamparm with its v4l2_captureparm (the union is 200 bytes).
type streamParm struct {
	Type         uint32
	Capability   uint32
	CaptureMode  uint32
	Numerator    uint32 // timeperframe: seconds per frame as a fraction
	Denominator  uint32
	ExtendedMode uint32
	ReadBuffers  uint32
	Reserved     [4]uint32
	_            [200 - 40]byte
}

// ioctl requests (linux/videodev2.h).
var (
	vidiocQuerycap  = ioc(iocRead, 'V', 0, unsafe.Sizeof(capability{}))
	vidiocEnumFmt   = ioc(iocRead|iocWrite, 'V', 2, unsafe.Sizeof(fmtdesc{}))
	vidiocSFmt      = ioc(iocRead|iocWrite, 'V', 5, unsafe.Sizeof(format{}))
	vidiocReqbufs   = ioc(iocRead|iocWrite, 'V', 8, unsafe.Sizeof(requestBuffers{}))
	vidiocQuerybuf  = ioc(iocRead|iocWrite, 'V', 9, unsafe.Sizeof(buffer{}))
	vidiocQbuf      = ioc(iocRead|iocWrite, 'V', 15, unsafe.Sizeof(buffer{}))
	vidiocDqbuf     = ioc(iocRead|iocWrite, 'V', 17, unsafe.Sizeof(buffer{}))
	vidiocStreamon  = ioc(iocWrite, 'V', 18, unsafe.Sizeof(int32(0)))
	vidiocStreamoff = ioc(iocWrite, 'V', 19, unsafe.Sizeof(int32(0)))
	vidiocSCtrl     = ioc(iocRead|iocWrite, 'V', 28, unsafe.Sizeof(control{}))
	vidiocQueryctrl = ioc(iocRead|iocWrite, 'V', 36, unsafe.Sizeof(queryCtrl{}))
	vidiocSParm     = ioc(iocRead|iocWrite, 'V', 22, unsafe.Sizeof(streamParm{}))
)

// Constants from linux/videodev2.h and linux/v4l2-controls.h.
const (
	bufTypeVideoCapture = 1
	memoryMMAP          = 1
	fieldAny            = 0
	fieldNone           = 1

	bufFlagError              = 0x00000040
	bufFlagTimestampMask      = 0x0000e000
	bufFlagTimestampMonotonic = 0x00002000

	capTimePerFrame = 0x1000 // V4L2_CAP_TIMEPERFRAME, in v4l2_captureparm.capability

	ctrlFlagDisabled = 0x0001
	ctrlFlagReadOnly = 0x0004
	ctrlFlagInactive = 0x0010

	cidExposureAuto     = 0x009a0901 // V4L2_CID_CAMERA_CLASS_BASE + 1
	cidExposureAbsolute = 0x009a0902 // V4L2_CID_CAMERA_CLASS_BASE + 2, in 100 µs
	exposureManual      = 1          // V4L2_EXPOSURE_MANUAL

	exposureUnit = 100 * 1000 // ns per V4L2_CID_EXPOSURE_ABSOLUTE step
)

// ioctl issues a request on fd with a pointer argument, retrying on EINTR.
func ioctl(fd int, req uintptr, arg unsafe.Pointer) error {
	for {
		_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, uintptr(arg))
		switch e {
		case 0:
			return nil
		case unix.EINTR:
			continue
		}
		return e
	}
}
