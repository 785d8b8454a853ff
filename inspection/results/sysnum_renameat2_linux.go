//go:build linux && (riscv64 || loong64)

package results

import "golang.org/x/sys/unix"

// sysRenameat is renameat2(2): these architectures never had renameat.
// Called with flags 0 it is renameat.
const sysRenameat = unix.SYS_RENAMEAT2
