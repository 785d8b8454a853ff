package config

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestPublishSection(t *testing.T) {
	c, err := Parse("p.toml", []byte("[sim]\nenabled = true\n[publish]\nenabled = true\nbrokers = [\"mqtts://broker.fab:8883\", \"mqtt://127.0.0.1:1883\"]\ntool = \"t7\"\nqos = 2\n"))
	require.NoError(t, err)
	assert.Equal(t, "t7", c.Publish.ToolName())
	assert.Equal(t, "waferd", c.Publish.TopicPrefix)
	assert.Equal(t, 2, c.Publish.QoS)
	assert.Equal(t, "/var/lib/waferd/outbox.db", c.Publish.OutboxPath(c.Data.Dir))

	// Off by default: nothing is checked.
	c, err = Parse("p.toml", []byte("[sim]\nenabled = true\n"))
	require.NoError(t, err)
	assert.False(t, c.Publish.Enabled)
	assert.Equal(t, 1, c.Publish.QoS)
}

func TestPublishErrors(t *testing.T) {
	const head = "[sim]\nenabled = true\n[publish]\nenabled = true\n"
	cases := map[string]string{
		"":                             "p.toml:3: publish.brokers: no broker given",
		"brokers = [\"http://x:1\"]\n": `p.toml:5: publish.brokers: broker 1: scheme "http"`,
		"brokers = [\"mqtt://x\"]\n":   "p.toml:5: publish.brokers: broker 1: mqtt://x: give the host and the port",
		"brokers = [\"mqtt://u:s3cret@x:1883\"]\n":             "p.toml:5: publish.brokers: broker 1: a user name or password in the URL: put them in credentials_file",
		"brokers = [\"mqtt://x:1\"]\ntool = \"a/b\"\n":         `p.toml:6: publish.tool: "a/b" cannot be a topic level`,
		"brokers = [\"mqtt://x:1\"]\ntopic_prefix = \"f/#\"\n": `p.toml:6: publish.topic_prefix: "f/#"`,
		"brokers = [\"mqtt://x:1\"]\nqos = 3\n":                "p.toml:6: publish.qos: must be 0, 1 or 2 (got 3)",
		"brokers = [\"mqtt://x:1\"]\ncert_file = \"/c.pem\"\n": "p.toml:6: publish.cert_file: give both cert_file and key_file",
		"brokers = [\"mqtt://x:1\"]\nca_file = \"ca.pem\"\n":   `p.toml:6: publish.ca_file: must be an absolute path`,
		"brokers = [\"mqtt://x:1\"]\noutbox_max_mb = 0\n":      "p.toml:6: publish.outbox_max_mb: must be > 0",
		"brokers = [\"mqtt://x:1\"]\npassword = \"s3cret\"\n":  "p.toml:6: publish.password: unknown key",
	}
	for doc, want := range cases {
		_, err := Parse("p.toml", []byte(head+doc))
		require.Error(t, err, doc)
		assert.Contains(t, err.Error(), want, doc)
		assert.NotContains(t, err.Error(), "s3cret", "a password never appears in an error")
	}
}

func TestLoadCredentials(t *testing.T) {
	dir := t.TempDir()
	write := func(name, doc string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(doc), 0o600))
		require.NoError(t, os.Chmod(p, mode))
		return p
	}
	c, err := LoadCredentials(write("ok", "username = \"tool7\"\npassword = \"s3cret\"\n", 0o600))
	require.NoError(t, err)
	assert.Equal(t, Credentials{Username: "tool7", Password: "s3cret"}, c)
	for _, f := range []string{"%v", "%+v", "%#v", "%s"} {
		assert.NotContains(t, fmt.Sprintf(f, c), "s3cret", f)
	}

	_, err = LoadCredentials(write("open", "username = \"tool7\"\npassword = \"s3cret\"\n", 0o644))
	assert.ErrorContains(t, err, "is readable by group or others (mode 0644): chmod 600 it")

	_, err = LoadCredentials(write("bad", "username = \"tool7\"\npassword = s3cret\n", 0o600))
	require.Error(t, err)
	assert.Contains(t, err.Error(), filepath.Join(dir, "bad")+":2")
	assert.NotContains(t, err.Error(), "s3cret")

	_, err = LoadCredentials(write("unknown", "username = \"tool7\"\npasswd = \"s3cret\"\n", 0o600))
	assert.ErrorContains(t, err, ":2: passwd: unknown key")

	_, err = LoadCredentials(filepath.Join(dir, "missing"))
	assert.ErrorContains(t, err, "publish.credentials_file")
}
