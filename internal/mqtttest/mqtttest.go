// Package mqtttest starts a real MQTT broker (Debian's mosquitto) for
// tests: on a loopback port, its configuration, persistence and
// certificates in a temporary directory, optionally with TLS (client
// certificates required) and passwords. Tests skip when mosquitto is not
// installed, except under CI (CI set), where they fail: .ci/run installs it.
package mqtttest

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Options configure a broker.
type Options struct {
	// Users and their passwords; none: anonymous clients are allowed.
	Users map[string]string
	// TLS serves mqtts:// only, with a certificate of a CA made for the
	// test, and requires clients to present a certificate of that CA.
	TLS bool
}

// Broker is a running mosquitto.
type Broker struct {
	// URL is mqtt://127.0.0.1:PORT (mqtts:// with TLS).
	URL  string
	Port int
	Dir  string
	// With TLS: the CA certificate, and a client certificate and key it
	// signed (PEM files in Dir).
	CAFile, CertFile, KeyFile string

	t    testing.TB
	conf string
	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	log  strings.Builder // every run's log lines
}

// Log returns what the broker logged so far (connections, refusals).
func (b *Broker) Log() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.log.String()
}

// Binary returns mosquitto's path, skipping the test (failing it under CI)
// when it is not installed.
func Binary(t testing.TB) string {
	t.Helper()
	for _, p := range []string{"mosquitto", "/usr/sbin/mosquitto"} {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("mosquitto is not installed (.ci/run installs the Debian package mosquitto)")
	}
	t.Skip("mosquitto is not installed: apt-get install mosquitto (Debian) to run this test")
	return ""
}

// Start starts a broker; it is killed when the test ends.
func Start(t testing.TB, o Options) *Broker {
	t.Helper()
	bin := Binary(t)
	dir, err := os.MkdirTemp("", "mqtttest-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	b := &Broker{Dir: dir, t: t, Port: FreePort(t)}
	scheme := "mqtt"
	var conf strings.Builder
	fmt.Fprintf(&conf, "listener %d 127.0.0.1\n", b.Port)
	fmt.Fprintf(&conf, "persistence true\npersistence_location %s/\nautosave_interval 5\n", dir)
	conf.WriteString("log_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\nlog_type information\nconnection_messages true\n")
	conf.WriteString("max_queued_messages 100000\nmax_inflight_messages 100\n")
	if os.Geteuid() == 0 {
		conf.WriteString("user root\n") // no privileges to drop: the files are root's
	}
	if len(o.Users) > 0 {
		pw := filepath.Join(dir, "passwd")
		if err := os.WriteFile(pw, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		for u, p := range o.Users {
			out, err := exec.Command("mosquitto_passwd", "-b", pw, u, p).CombinedOutput()
			if err != nil {
				t.Fatalf("mosquitto_passwd: %v: %s", err, out)
			}
		}
		fmt.Fprintf(&conf, "allow_anonymous false\npassword_file %s\n", pw)
	} else {
		conf.WriteString("allow_anonymous true\n")
	}
	if o.TLS {
		scheme = "mqtts"
		b.makeCerts()
		fmt.Fprintf(&conf, "cafile %s\ncertfile %s\nkeyfile %s\nrequire_certificate true\n",
			b.CAFile, filepath.Join(dir, "server.pem"), filepath.Join(dir, "server.key"))
	}
	b.conf = filepath.Join(dir, "mosquitto.conf")
	if err := os.WriteFile(b.conf, []byte(conf.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	b.URL = fmt.Sprintf("%s://127.0.0.1:%d", scheme, b.Port)
	b.start(bin)
	t.Cleanup(b.Kill)
	return b
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func (b *Broker) start(bin string) {
	b.t.Helper()
	cmd := exec.Command(bin, "-c", b.conf)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		b.t.Fatal(err)
	}
	cmd.Stdout = nil
	if err := cmd.Start(); err != nil {
		b.t.Fatalf("mosquitto: %v", err)
	}
	ready := make(chan struct{})
	done := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		once := sync.Once{}
		for sc.Scan() {
			b.mu.Lock()
			b.log.WriteString(sc.Text() + "\n")
			b.mu.Unlock()
			if strings.Contains(sc.Text(), " running") {
				once.Do(func() { close(ready) })
			}
		}
		_ = cmd.Wait()
		close(done)
	}()
	select {
	case <-ready:
	case <-done:
		b.t.Fatalf("mosquitto exited at start:\n%s", b.Log())
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Kill()
		b.t.Fatal("mosquitto did not start within 20 s")
	}
	b.mu.Lock()
	b.cmd, b.done = cmd, done
	b.mu.Unlock()
}

// Kill kills the broker with SIGKILL (what it had not saved is lost, as
// in a crash) and waits for it to exit. It does nothing if it is not
// running.
func (b *Broker) Kill() {
	b.mu.Lock()
	cmd, done := b.cmd, b.done
	b.cmd = nil
	b.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-done
}

// Restart starts the killed broker again on the same port, configuration
// and persistence directory.
func (b *Broker) Restart() {
	b.t.Helper()
	b.start(Binary(b.t))
}

// ClientTLS returns a TLS configuration that trusts the test CA, with the
// client certificate when withCert.
func (b *Broker) ClientTLS(withCert bool) *tls.Config {
	b.t.Helper()
	pool := x509.NewCertPool()
	ca, err := os.ReadFile(b.CAFile)
	if err != nil {
		b.t.Fatal(err)
	}
	pool.AppendCertsFromPEM(ca)
	c := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	if withCert {
		cert, err := tls.LoadX509KeyPair(b.CertFile, b.KeyFile)
		if err != nil {
			b.t.Fatal(err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c
}

// makeCerts writes a CA, a server certificate for 127.0.0.1 and a client
// certificate, all signed by the CA, as PEM files in Dir.
func (b *Broker) makeCerts() {
	t := b.t
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "waferd test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	b.CAFile = filepath.Join(b.Dir, "ca.pem")
	writePEM(t, b.CAFile, "CERTIFICATE", caDER)
	leaf := func(name string, serial int64, usage x509.ExtKeyUsage, ip bool) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
		}
		if ip {
			tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kb, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		writePEM(t, filepath.Join(b.Dir, name+".pem"), "CERTIFICATE", der)
		writePEM(t, filepath.Join(b.Dir, name+".key"), "EC PRIVATE KEY", kb)
	}
	leaf("server", 2, x509.ExtKeyUsageServerAuth, true)
	leaf("client", 3, x509.ExtKeyUsageClientAuth, false)
	b.CertFile, b.KeyFile = filepath.Join(b.Dir, "client.pem"), filepath.Join(b.Dir, "client.key")
}

func writePEM(t testing.TB, path, typ string, der []byte) {
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}
