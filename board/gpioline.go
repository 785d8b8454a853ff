package board

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
	"periph.io/x/conn/v3/gpio"
	"periph.io/x/host/v3/gpioioctl"
)

// Line is a GPIO line of the kernel's GPIO character device as OpenLine
// returns it: periph's gpioioctl line, with
//   - a short String, "gpiochip1/button" (periph's is multi-line JSON, and
//     it ends up in error messages and in a run's stop reason);
//   - In and Out errors that name the line and, when another process or a
//     kernel driver holds it, who holds it (periph's say only "device or
//     resource busy");
//   - Err, which tells whether the chip is still there. A chip can go away
//     under a running daemon (a USB GPIO expander unplugged, its driver
//     unbound); periph's Read cannot tell, it then reads Low.
//
// Its methods are safe for concurrent use as far as periph's are (In, Out,
// Read and WaitForEdge lock the line; see input for how a line is waited
// on).
type Line struct {
	*gpioioctl.GPIOLine
	desc string   // "gpiochip1/button"
	chip *os.File // our own handle on the chip's device, for Err and holder
}

// String names the line as "chip/line", e.g. "gpiochip0/GPIO17" (the line's
// offset when it has no name).
func (l *Line) String() string { return l.desc }

// In configures the line as an input (see gpio.PinIn).
func (l *Line) In(pull gpio.Pull, edge gpio.Edge) error {
	return l.explain("configure as input", l.GPIOLine.In(pull, edge))
}

// Out drives the line (see gpio.PinOut).
func (l *Line) Out(level gpio.Level) error {
	return l.explain("drive "+level.String(), l.GPIOLine.Out(level))
}

// Err returns nil while the line's chip is there, and an error saying that
// it is gone (wrapping ErrChipGone) once the kernel has removed it, or that
// the line was closed: its reads are then meaningless. It costs one ioctl;
// safe for concurrent use.
func (l *Line) Err() error {
	var info gpioChipInfo
	switch err := l.ioctl(gpioGetChipInfo, unsafe.Pointer(&info)); {
	case errors.Is(err, os.ErrClosed):
		return fmt.Errorf("board: GPIO line %s: closed", l.desc)
	case err != nil:
		return fmt.Errorf("board: GPIO line %s: the chip is gone (%w): %w", l.desc, err, ErrChipGone)
	}
	return nil
}

// ErrChipGone is wrapped by Line.Err and by In and Out errors once the
// line's GPIO chip has disappeared.
var ErrChipGone = errors.New("GPIO chip removed")

// Close releases the line and the handle on its chip. Safe to call more
// than once.
func (l *Line) Close() error {
	l.GPIOLine.Close()
	err := l.chip.Close()
	if errors.Is(err, os.ErrClosed) {
		return nil
	}
	return err
}

// explain turns a failed In or Out of periph's into an error that says
// which line failed and why: its chip is gone, or someone else holds it.
func (l *Line) explain(op string, err error) error {
	if err == nil {
		return nil
	}
	if gone := l.Err(); gone != nil {
		return fmt.Errorf("%w (%s: %w)", gone, op, err)
	}
	if who := l.holder(); who != "" {
		return fmt.Errorf("board: GPIO line %s is busy: held by %q (another process, or a kernel driver; see gpioinfo): %s: %w", l.desc, who, op, err)
	}
	return fmt.Errorf("board: GPIO line %s: %s: %w", l.desc, op, err)
}

// kernelName returns the kernel's name of line offset on l's chip.
func (l *Line) kernelName(offset int) (string, error) {
	info := gpioV2LineInfo{Offset: uint32(offset)}
	if err := l.ioctl(gpioV2GetLineInfo, unsafe.Pointer(&info)); err != nil {
		return "", err
	}
	return cString(info.Name[:]), nil
}

// holder returns the consumer the kernel reports for the line when it is
// in use by someone other than this process, else "".
func (l *Line) holder() string {
	info := gpioV2LineInfo{Offset: uint32(l.Number())}
	if l.ioctl(gpioV2GetLineInfo, unsafe.Pointer(&info)) != nil || info.Flags&gpioV2LineFlagUsed == 0 {
		return ""
	}
	who := cString(info.Consumer[:])
	if who == ownConsumer() {
		return ""
	}
	if who == "" {
		who = "an unnamed consumer"
	}
	return who
}

func (l *Line) ioctl(req uintptr, arg unsafe.Pointer) error {
	rc, err := l.chip.SyscallConn()
	if err != nil {
		return err
	}
	var errno unix.Errno
	if err := rc.Control(func(fd uintptr) {
		_, _, errno = unix.Syscall(unix.SYS_IOCTL, fd, req, uintptr(arg))
	}); err != nil {
		return err
	}
	if errno != 0 {
		return errno
	}
	return nil
}

// ownConsumer is the consumer name periph's gpioioctl gives the lines this
// process requests: "program@pid", cut to the kernel's 31 characters.
func ownConsumer() string {
	s := fmt.Sprintf("%s@%d", filepath.Base(os.Args[0]), os.Getpid())
	if len(s) > gpioMaxNameSize-1 {
		s = s[:gpioMaxNameSize-1]
	}
	return s
}

func cString(b []byte) string {
	s, _, _ := strings.Cut(string(b), "\x00")
	return s
}

// The two ioctls of <linux/gpio.h> that periph does not expose.
const (
	gpioMaxNameSize        = 32
	gpioV2LineNumAttrsMax  = 10
	gpioV2LineFlagUsed     = 1 << 0
	iocRead, iocReadWrite  = 2, 3
	iocDirShift, iocSizeSh = 30, 16
)

type gpioChipInfo struct {
	Name, Label [gpioMaxNameSize]byte
	Lines       uint32
}

type gpioV2LineInfo struct {
	Name, Consumer [gpioMaxNameSize]byte
	Offset         uint32
	NumAttrs       uint32
	Flags          uint64
	Attrs          [gpioV2LineNumAttrsMax]struct {
		ID, Padding uint32
		Value       uint64
	}
	Padding [4]uint32
}

var (
	// GPIO_GET_CHIPINFO_IOCTL: _IOR(0xB4, 0x01, struct gpiochip_info)
	gpioGetChipInfo = uintptr(iocRead<<iocDirShift | unsafe.Sizeof(gpioChipInfo{})<<iocSizeSh | 0xB4<<8 | 0x01)
	// GPIO_V2_GET_LINEINFO_IOCTL: _IOWR(0xB4, 0x05, struct gpio_v2_line_info)
	gpioV2GetLineInfo = uintptr(iocReadWrite<<iocDirShift | unsafe.Sizeof(gpioV2LineInfo{})<<iocSizeSh | 0xB4<<8 | 0x05)
)
