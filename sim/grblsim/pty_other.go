//go:build !unix

package grblsim

import "errors"

// OpenPTY needs a Unix pseudo-terminal.
func (e *Emulator) OpenPTY() (path string, err error) {
	return "", errors.New("grblsim: pseudo-terminals are not supported on this system")
}
