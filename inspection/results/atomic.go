package results

import (
	"fmt"
	"os"
)

// Every file of a run is replaced atomically: writeFileAtomic and
// dirHandle.writeFile write into a temporary file in the same directory,
// fsync and close it, rename it over the target and fsync the directory.
// On any error (including a panic in the callback that produces the
// content) the temporary file is removed and the target is left as it was;
// the error names the target. Files get mode 0644.
//
// On Linux (atomic_linux.go) the writes go through raw system calls on a
// directory descriptor held open, with names in reusable buffers, so that
// saving a site allocates nothing; elsewhere (atomic_other.go) through
// package os.

// tmpMarker is part of every temporary file name
// (".<base>.tmp-<random>"); removeTemps looks for it.
const tmpMarker = ".tmp-"

// syncDir fsyncs a directory so that entries created or renamed in it are
// durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync directory: %w", err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}
