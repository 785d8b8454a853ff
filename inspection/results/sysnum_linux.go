//go:build linux && !riscv64 && !loong64

package results

import "golang.org/x/sys/unix"

// sysRenameat is renameat(2), which every Linux kernel Go supports has
// (renameat2 needs 3.15).
const sysRenameat = unix.SYS_RENAMEAT
