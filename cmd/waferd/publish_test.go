package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/waferd/waferd/internal/mqtttest"
)

// publishConfig writes a configuration for the simulated board with
// [publish] lines added.
func publishConfig(t *testing.T, data, publish string) string {
	p := filepath.Join(t.TempDir(), "waferd.toml")
	doc := "[sim]\nenabled = true\ntime_scale = 20.0\n[data]\ndir = \"" + data + "\"\n[publish]\ntool = \"t1\"\n" + publish
	require.NoError(t, os.WriteFile(p, []byte(doc), 0o644))
	return p
}

// retained returns the retained messages under topic filter.
func retained(t *testing.T, url string, tlsFrom *mqtttest.Broker, filter string) map[string][]byte {
	t.Helper()
	opts := mqtt.NewClientOptions().AddBroker(url).SetClientID(fmt.Sprintf("r%d", time.Now().UnixNano()))
	if tlsFrom != nil {
		opts.SetTLSConfig(tlsFrom.ClientTLS(true))
	}
	c := mqtt.NewClient(opts)
	tok := c.Connect()
	require.True(t, tok.WaitTimeout(5*time.Second))
	require.NoError(t, tok.Error())
	defer c.Disconnect(0)
	var mu sync.Mutex
	got := map[string][]byte{}
	tok = c.Subscribe(filter, 1, func(_ mqtt.Client, m mqtt.Message) {
		mu.Lock()
		got[m.Topic()] = append([]byte(nil), m.Payload()...)
		mu.Unlock()
	})
	require.True(t, tok.WaitTimeout(5*time.Second))
	require.NoError(t, tok.Error())
	time.Sleep(200 * time.Millisecond) // retained messages come right after the subscription
	mu.Lock()
	defer mu.Unlock()
	return got
}

func online(t *testing.T, payload []byte) bool {
	var o struct{ Online bool }
	require.NoError(t, json.Unmarshal(payload, &o), "%s", payload)
	return o.Online
}

// TestServePublishes is `waferd serve --sim --publish URL`: status shows
// the broker connection and the outbox, a broker that goes away lets the
// outbox fill and drain, stats counts the messages, and a tool killed
// with SIGKILL is marked offline by its last will.
func TestServePublishes(t *testing.T) {
	b := mqtttest.Start(t, mqtttest.Options{})
	data := t.TempDir()
	p := startProc(t, "serve", "--config", simConfig(t, data), "--console", "stdio", "--publish", b.URL)
	send := func(cmd string) {
		_, err := io.WriteString(p.stdin, cmd+"\n")
		require.NoError(t, err)
	}
	eventually := func(re string, what string) {
		t.Helper()
		rx := regexp.MustCompile(re)
		require.Eventually(t, func() bool { return rx.MatchString(p.output()) }, 60*time.Second, 10*time.Millisecond, "%s; output:\n%s", what, p.output())
	}
	host, _ := os.Hostname()
	eventually(`connected to `+regexp.QuoteMeta(b.URL)+` as `+regexp.QuoteMeta(host), "connected, the host name as the tool")
	send("status")
	eventually(`publish\s+connected to `+regexp.QuoteMeta(b.URL)+` since \d\d:\d\d:\d\d; outbox 0 messages`, "status")

	b.Kill()
	send("run demo")
	send("wait")
	eventually(`run \S+ completed, 61/61`, "the run completes with the broker down")
	send("status")
	eventually(`publish\s+NOT connected to \S+ since \d\d:\d\d:\d\d \(.*\); outbox \d+ messages`, "status while the broker is down")
	warnings := regexp.MustCompile(`(?m)^.*\[publish\] WARN .*$`).FindAllString(p.output(), -1)
	assert.Len(t, warnings, 1, "one warning while the broker stays down:\n%s", p.output())

	b.Restart()
	send("stats")
	eventually(`messages published since start-up: sent \d+, retried \d+, dropped 0; \d+ waiting in the outbox`, "stats")
	require.Eventually(t, func() bool {
		send("stats")
		return regexp.MustCompile(`sent 6[4-9], retried \d+, dropped 0; 0 waiting`).MatchString(p.output())
	}, 30*time.Second, 200*time.Millisecond, "every message of the run sent (started, 61 sites, ended, record, ledger and states); output:\n%s", p.output())

	prefix := "waferd/" + host + "/"
	got := retained(t, b.URL, nil, prefix+"+")
	require.Contains(t, got, prefix+"online")
	assert.True(t, online(t, got[prefix+"online"]))
	assert.Contains(t, string(got[prefix+"state"]), `"state":"idle"`)

	p.kill() // SIGKILL: the broker publishes the will
	require.Eventually(t, func() bool {
		o, ok := retained(t, b.URL, nil, prefix+"online")[prefix+"online"]
		return ok && !online(t, o)
	}, 30*time.Second, 100*time.Millisecond, "the last will marks the tool offline")
}

// TestServePublishAuth: a wrong password is refused by the broker and
// waferd says so in one line however often it retries; the password
// appears in no log line and not in the console's config; the right one
// connects.
func TestServePublishAuth(t *testing.T) {
	const secret = "s3cr3t-Pa55"
	b := mqtttest.Start(t, mqtttest.Options{Users: map[string]string{"tool": secret}})
	creds := filepath.Join(t.TempDir(), "mqtt.cred")
	write := func(pw string) {
		require.NoError(t, os.WriteFile(creds, []byte("username = \"tool\"\npassword = \""+pw+"\"\n"), 0o600))
	}
	write("wrong-" + secret)
	cfg := publishConfig(t, t.TempDir(), "enabled = true\nbrokers = [\""+b.URL+"\"]\ncredentials_file = \""+creds+"\"\n")
	p := startProc(t, "serve", "--config", cfg, "--console", "stdio")
	require.Eventually(t, func() bool { return strings.Count(b.Log(), "not authorised") >= 3 }, 30*time.Second, 10*time.Millisecond,
		"three refused attempts; broker:\n%s", b.Log())
	_, err := io.WriteString(p.stdin, "config\nstatus\n")
	require.NoError(t, err)
	require.Eventually(t, func() bool { return strings.Contains(p.output(), "publish   NOT connected") }, 10*time.Second, 10*time.Millisecond)
	out := p.output()
	refused := regexp.MustCompile(`(?m)^.*\[publish\] WARN .*the broker refused the connection: .*$`).FindAllString(out, -1)
	require.Len(t, refused, 1, "one line for the refusals:\n%s", out)
	assert.Contains(t, refused[0], "(check the credentials file)")
	assert.Contains(t, out, `credentials_file = '`+creds+`'`, "config shows where the credentials are")
	assert.NotContains(t, out, secret, "the password is in no log line and not in config")
	p.kill()

	write(secret)
	p = startProc(t, "serve", "--config", cfg)
	require.Eventually(t, func() bool { return strings.Contains(p.output(), "connected to "+b.URL+" as t1") }, 30*time.Second, 10*time.Millisecond, p.output())
	assert.NotContains(t, p.output(), secret)

	// A credentials file others can read is a configuration error.
	require.NoError(t, os.Chmod(creds, 0o644))
	var stdout, stderr bytes.Buffer
	assert.Equal(t, 2, run([]string{"serve", "--config", cfg}, &stdout, &stderr))
	assert.Contains(t, stderr.String(), "is readable by group or others (mode 0644): chmod 600 it")
	assert.NotContains(t, stderr.String(), secret)
}

// TestServePublishTLS: a broker that requires client certificates refuses
// a tool without one, which says so in one line; with its certificate it
// connects.
func TestServePublishTLS(t *testing.T) {
	b := mqtttest.Start(t, mqtttest.Options{TLS: true})
	tlsKeys := "ca_file = \"" + b.CAFile + "\"\n"
	cfg := publishConfig(t, t.TempDir(), "enabled = true\nbrokers = [\""+b.URL+"\"]\n"+tlsKeys)
	p := startProc(t, "serve", "--config", cfg)
	require.Eventually(t, func() bool { return strings.Count(b.Log(), "New connection from") >= 3 }, 30*time.Second, 10*time.Millisecond,
		"three refused attempts; broker:\n%s", b.Log())
	warn := regexp.MustCompile(`(?m)^.*\[publish\] WARN .*$`)
	// The first refusal's line was written before the second attempt; its
	// copy from the child's stderr may lag the broker's log.
	require.Eventually(t, func() bool { return warn.MatchString(p.output()) }, 10*time.Second, 10*time.Millisecond, p.output())
	out := p.output()
	lines := warn.FindAllString(out, -1)
	require.Len(t, lines, 1, "one line for the refusals:\n%s", out)
	assert.Contains(t, lines[0], "check ca_file, cert_file and key_file", "either wording: a TLS error, or the broker closing the handshake")
	p.kill()

	cfg = publishConfig(t, t.TempDir(), "enabled = true\nbrokers = [\""+b.URL+"\"]\n"+tlsKeys+
		"cert_file = \""+b.CertFile+"\"\nkey_file = \""+b.KeyFile+"\"\n")
	p = startProc(t, "serve", "--config", cfg)
	require.Eventually(t, func() bool { return strings.Contains(p.output(), "connected to "+b.URL+" as t1") }, 30*time.Second, 10*time.Millisecond, p.output())
	got := retained(t, b.URL, b, "waferd/t1/online")
	assert.True(t, online(t, got["waferd/t1/online"]))
}
