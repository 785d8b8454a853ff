//go:build !linux

package atomicfile

import (
	"os"
	"testing"
)

// unprivileged runs f; as root it skips the test (capabilities are dropped
// per thread only on Linux).
func unprivileged(t *testing.T, f func()) {
	t.Helper()
	if os.Geteuid() == 0 {
		t.Skip("running as root: permission bits do not apply")
	}
	f()
}
