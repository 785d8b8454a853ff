//go:build linux

package results

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// The system calls that take file names, on names the caller keeps
// NUL-terminated in reusable buffers. package os and x/sys/unix copy every
// name into a new NUL-terminated byte slice on each call
// (unix.BytePtrFromString): one allocation per name per call, three to
// five per atomic write. These wrappers pass the buffer itself.
//
// Why unsafe is sound here: the kernel needs the buffer's address as a
// uintptr. unsafe.Pointer(&name[0]) is converted to uintptr inside the
// argument list of the unix.Syscall6 call expression, which rule 4 of
// package unsafe allows: the compiler keeps the buffer alive and in place
// until the call returns. The buffer is never converted outside a call,
// and every wrapper checks that the name is NUL-terminated, so the kernel
// cannot read past it.

// openat opens name relative to the directory dirfd, retrying when
// interrupted, and returns the new descriptor.
func openat(dirfd int, name []byte, flags int, mode uint32) (int, error) {
	if !cString(name) {
		return -1, unix.EINVAL
	}
	for {
		fd, _, e := unix.Syscall6(unix.SYS_OPENAT, uintptr(dirfd), uintptr(unsafe.Pointer(&name[0])), uintptr(flags), uintptr(mode), 0, 0)
		switch e {
		case 0:
			return int(fd), nil
		case unix.EINTR:
			continue
		}
		return -1, e
	}
}

// renameat renames oldname in directory olddirfd to newname in newdirfd,
// replacing newname.
func renameat(olddirfd int, oldname []byte, newdirfd int, newname []byte) error {
	if !cString(oldname) || !cString(newname) {
		return unix.EINVAL
	}
	// sysRenameat is renameat, or renameat2 with flags 0 where the
	// architecture has no renameat (a sixth argument renameat ignores).
	_, _, e := unix.Syscall6(sysRenameat, uintptr(olddirfd), uintptr(unsafe.Pointer(&oldname[0])),
		uintptr(newdirfd), uintptr(unsafe.Pointer(&newname[0])), 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

// unlinkat removes file name from directory dirfd.
func unlinkat(dirfd int, name []byte) error {
	if !cString(name) {
		return unix.EINVAL
	}
	_, _, e := unix.Syscall(unix.SYS_UNLINKAT, uintptr(dirfd), uintptr(unsafe.Pointer(&name[0])), 0)
	if e != 0 {
		return e
	}
	return nil
}

// cString reports whether b is a NUL-terminated name: not empty, ending in
// its only NUL.
func cString(b []byte) bool {
	for i, c := range b {
		if c == 0 {
			return i == len(b)-1
		}
	}
	return false
}
