//go:build !linux

package grblsim

import (
	"errors"
	"os"
)

// makeRaw is implemented for Linux only.
func makeRaw(*os.File) error { return errors.New("grblsim: raw mode is only implemented on linux") }
