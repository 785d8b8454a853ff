// Command installfiles writes the service files embedded in package systemd
// (the unit, sysusers, tmpfiles, udev rules and example configuration) under
// a root directory, at the paths and with the modes of systemd.Install, so
// that the Debian packages ship exactly what the tests check.
//
//	go run ./packaging/installfiles ROOT   write them under ROOT, print each path
//	go run ./packaging/installfiles -list  print "path mode" for each, write nothing
package main

import (
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/waferd/waferd/systemd"
)

func main() {
	list := flag.Bool("list", false, `print "path mode" for each file and write nothing`)
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: installfiles ROOT | installfiles -list")
	}
	flag.Parse()
	if *list {
		for _, f := range systemd.Install {
			fmt.Printf("%s %04o\n", f.Path, f.Mode)
		}
		return
	}
	if flag.NArg() != 1 {
		flag.Usage()
		os.Exit(2)
	}
	if err := install(flag.Arg(0)); err != nil {
		fmt.Fprintln(os.Stderr, "installfiles:", err)
		os.Exit(1)
	}
}

func install(root string) error {
	for _, f := range systemd.Install {
		data, err := fs.ReadFile(systemd.Files, f.File)
		if err != nil {
			return err
		}
		dst := filepath.Join(root, filepath.FromSlash(f.Path))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(dst, data, fs.FileMode(f.Mode)); err != nil {
			return err
		}
		// WriteFile applies the umask to a new file: set the mode exactly.
		if err := os.Chmod(dst, fs.FileMode(f.Mode)); err != nil {
			return err
		}
		fmt.Println(f.Path)
	}
	return nil
}
