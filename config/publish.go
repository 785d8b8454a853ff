package config

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/waferd/waferd/internal/tomlfile"
)

// BrokerSchemes are the broker URL schemes [publish] accepts: plain TCP
// and TLS.
var BrokerSchemes = map[string]bool{"mqtt": false, "tcp": false, "mqtts": true, "ssl": true, "tls": true}

// ToolName is [publish] tool, or the host name when it is empty.
func (p Publish) ToolName() string {
	if p.Tool != "" {
		return p.Tool
	}
	h, _ := os.Hostname()
	return h
}

// OutboxPath is [publish] outbox, or <dataDir>/outbox.db.
func (p Publish) OutboxPath(dataDir string) string {
	if p.Outbox != "" {
		return p.Outbox
	}
	return filepath.Join(dataDir, "outbox.db")
}

// CheckBroker checks a broker URL. Its errors never repeat the URL's user
// information (a password would end up in a log line).
func CheckBroker(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return errors.New("not a URL (want mqtt://host:port or mqtts://host:port)")
	}
	if u.User != nil {
		return errors.New("a user name or password in the URL: put them in credentials_file, readable only by the service")
	}
	if _, ok := BrokerSchemes[u.Scheme]; !ok {
		return fmt.Errorf("scheme %q: want mqtt:// (or tcp://) or mqtts:// (TLS; or ssl://, tls://)", u.Scheme)
	}
	if u.Hostname() == "" || u.Port() == "" {
		return fmt.Errorf("%s://%s: give the host and the port (1883 for mqtt, 8883 for mqtts)", u.Scheme, u.Host)
	}
	if u.Path != "" && u.Path != "/" || u.RawQuery != "" {
		return fmt.Errorf("%s://%s: no path or query allowed", u.Scheme, u.Host)
	}
	return nil
}

// validTopicLevel reports whether s can be one level of an MQTT topic we
// publish on.
func validTopicLevel(s string) bool { return s != "" && !strings.ContainsAny(s, "/+#\x00") }

func (c *Config) validatePublish(bad func(key, format string, args ...any)) {
	p := c.Publish
	if !p.Enabled {
		return
	}
	if len(p.Brokers) == 0 {
		bad("publish.brokers", `no broker given (e.g. brokers = ["mqtt://broker.fab:1883"])`)
	}
	for i, b := range p.Brokers {
		if err := CheckBroker(b); err != nil {
			bad("publish.brokers", "broker %d: %v", i+1, err)
		}
	}
	if t := p.ToolName(); !validTopicLevel(t) {
		bad("publish.tool", "%q cannot be a topic level (no '/', '+', '#'; empty: the host name): set tool", t)
	}
	if p.ClientID != "" && len(p.ClientID) > 23*8 {
		bad("publish.client_id", "too long (%d bytes)", len(p.ClientID))
	}
	for _, level := range strings.Split(p.TopicPrefix, "/") {
		if !validTopicLevel(level) {
			bad("publish.topic_prefix", "%q: want levels separated by '/', none empty, no '+' or '#'", p.TopicPrefix)
			break
		}
	}
	if p.QoS < 0 || p.QoS > 2 {
		bad("publish.qos", "must be 0, 1 or 2 (got %d)", p.QoS)
	}
	for _, f := range []struct{ key, path string }{
		{"publish.ca_file", p.CAFile}, {"publish.cert_file", p.CertFile}, {"publish.key_file", p.KeyFile},
		{"publish.credentials_file", p.CredentialsFile}, {"publish.outbox", p.Outbox},
	} {
		if f.path != "" && !filepath.IsAbs(f.path) {
			bad(f.key, "must be an absolute path (got %q)", f.path)
		}
	}
	if (p.CertFile == "") != (p.KeyFile == "") {
		bad("publish.cert_file", "give both cert_file and key_file, or neither")
	}
	if p.OutboxMaxMB <= 0 {
		bad("publish.outbox_max_mb", "must be > 0 (got %d)", p.OutboxMaxMB)
	}
	if p.KeepAliveS <= 0 {
		bad("publish.keepalive_s", "must be > 0 (got %d)", p.KeepAliveS)
	}
	if p.DrainTimeoutMS < 0 {
		bad("publish.drain_timeout_ms", "must be ≥ 0 (got %d)", p.DrainTimeoutMS)
	}
}

// Credentials are the broker's user name and password. They print as
// "username ... password (hidden)", never the password.
type Credentials struct {
	Username string `toml:"username"`
	Password string `toml:"password"`
}

func (c Credentials) String() string { return fmt.Sprintf("username %q password (hidden)", c.Username) }

// GoString hides the password from %#v too.
func (c Credentials) GoString() string { return c.String() }

// LoadCredentials reads a credentials file:
//
//	username = "tool7"
//	password = "..."
//
// It must be a regular file owned by this process's user and readable by
// no one else (mode 0600 or 0400). Errors name the file and what is wrong
// with it, never its content.
func LoadCredentials(path string) (Credentials, error) {
	st, err := os.Stat(path)
	if err != nil {
		return Credentials{}, fmt.Errorf("config: publish.credentials_file: %w", err)
	}
	if !st.Mode().IsRegular() {
		return Credentials{}, fmt.Errorf("config: publish.credentials_file: %s is not a regular file", path)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return Credentials{}, fmt.Errorf("config: publish.credentials_file: %s is readable by group or others (mode %04o): chmod 600 it", path, perm)
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok && int(sys.Uid) != os.Geteuid() {
		return Credentials{}, fmt.Errorf("config: publish.credentials_file: %s belongs to uid %d, not to the service's user (uid %d): chown it", path, sys.Uid, os.Geteuid())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return Credentials{}, fmt.Errorf("config: publish.credentials_file: %w", err)
	}
	var c Credentials
	if _, err := tomlfile.Decode(path, data, &c); err != nil {
		// The decoder's message may quote the file: keep only where.
		var te *tomlfile.Error
		if errors.As(err, &te) {
			what := "cannot parse (want username = \"...\" and password = \"...\")"
			if strings.HasPrefix(te.Msg, "unknown key") {
				what = te.Msg // names the keys, never a value
			}
			return Credentials{}, fmt.Errorf("config: %s", (&tomlfile.Error{File: te.File, Line: te.Line, Key: te.Key, Msg: what}).Error())
		}
		return Credentials{}, fmt.Errorf("config: %s: cannot parse (want username = \"...\" and password = \"...\")", path)
	}
	if c.Username == "" {
		return Credentials{}, fmt.Errorf("config: %s: no username", path)
	}
	return c, nil
}
