package grblsim

import (
	"errors"
	"os"
	"sync"
)

// ptyLine is the pseudo-terminal OpenPTY serves.
type ptyLine struct {
	master *os.File // non-blocking, so Close and deadlines interrupt I/O
	slave  *os.File // held open: the master reads EIO while no slave is open
	path   string
	done   chan struct{} // closed when the serving goroutine has returned

	once     sync.Once
	closeErr error
}

func (p *ptyLine) closeFiles() error {
	p.once.Do(func() {
		p.closeErr = errors.Join(p.master.Close(), p.slave.Close())
	})
	return p.closeErr
}
