// Package pgtest starts a real PostgreSQL server (Debian's postgresql) for
// tests: initdb into a temporary directory, the server on a loopback port
// and a Unix socket in that directory. PostgreSQL refuses to run as root,
// so as root it runs as the unprivileged user nobody (setpriv). Tests skip
// when PostgreSQL is not installed, except under CI (CI set), where they
// fail: .ci/run installs it.
package pgtest

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Server is a running PostgreSQL.
type Server struct {
	Port int
	Dir  string
	cmd  *exec.Cmd
	done chan struct{}
}

// bin finds PostgreSQL's programs (initdb, postgres): on PATH, else the
// newest /usr/lib/postgresql/N/bin.
func bin(t testing.TB) string {
	t.Helper()
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p)
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Strings(dirs)
	for i := len(dirs) - 1; i >= 0; i-- {
		if _, err := os.Stat(filepath.Join(dirs[i], "initdb")); err == nil {
			return dirs[i]
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("PostgreSQL is not installed (.ci/run installs the Debian package postgresql)")
	}
	t.Skip("PostgreSQL is not installed: apt-get install postgresql (Debian) to run this test")
	return ""
}

// Start initialises and starts a server; it is stopped when the test (or
// the TestMain that owns tb) ends, with Stop.
func Start(t testing.TB) *Server {
	t.Helper()
	bindir := bin(t)
	dir, err := os.MkdirTemp("", "pgtest-")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Dir: dir}
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		const nobody = 65534
		if err := os.Chown(dir, nobody, nobody); err != nil {
			t.Fatal(err)
		}
		cred = &syscall.Credential{Uid: nobody, Gid: nobody}
	}
	data := filepath.Join(dir, "data")
	initdb := exec.Command(filepath.Join(bindir, "initdb"), "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync", "--locale=C")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	initdb.Dir = dir
	if out, err := initdb.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	s.Port = freePort(t)
	cmd := exec.Command(filepath.Join(bindir, "postgres"), "-D", data, "-k", dir, "-p", fmt.Sprint(s.Port),
		"-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
		"-c", "max_connections=200", "-c", "logging_collector=off")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	cmd.Dir = dir
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		t.Fatalf("postgres: %v", err)
	}
	ready := make(chan struct{})
	s.done = make(chan struct{})
	var logMu sync.Mutex
	var log strings.Builder
	go func() {
		sc := bufio.NewScanner(stderr)
		once := sync.Once{}
		for sc.Scan() {
			logMu.Lock()
			log.WriteString(sc.Text() + "\n")
			logMu.Unlock()
			if strings.Contains(sc.Text(), "ready to accept connections") {
				once.Do(func() { close(ready) })
			}
		}
		_ = cmd.Wait()
		close(s.done)
	}()
	s.cmd = cmd
	select {
	case <-ready:
	case <-s.done:
		logMu.Lock()
		defer logMu.Unlock()
		os.RemoveAll(dir)
		t.Fatalf("postgres exited at start:\n%s", log.String())
	case <-time.After(60 * time.Second):
		s.Stop()
		t.Fatal("postgres did not start within 60 s")
	}
	return s
}

// Stop stops the server (fast shutdown) and removes its directory.
func (s *Server) Stop() {
	if s.cmd != nil {
		_ = s.cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-s.done:
		case <-time.After(30 * time.Second):
			_ = s.cmd.Process.Kill()
			<-s.done
		}
		s.cmd = nil
	}
	os.RemoveAll(s.Dir)
}

// NewDB creates a fresh database and returns its connection string.
func (s *Server) NewDB(t testing.TB, name string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, s.DSN("postgres"))
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		t.Fatalf("pgtest: create database %s: %v", name, err)
	}
	return s.DSN(name)
}

// DSN is the connection string of database db.
func (s *Server) DSN(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", s.Port, db)
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
