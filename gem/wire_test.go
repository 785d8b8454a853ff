package gem_test

// The wire, byte for byte: golden transcripts (testdata/wire, see its
// README) built by hand from the standards' layouts, played against the
// equipment over a raw TCP socket. Both ends in one library could share a
// bug; these frames share nothing with it.

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/waferd/waferd/gem"
)

// token is one element of a frame: literal bytes or a named 4-byte value.
type token struct {
	lit []byte
	v   string
}

// step is one line of a transcript.
type step struct {
	line   int
	send   bool // > (else <)
	closed bool // < closed
	frame  []token
}

// parseTranscript reads a transcript.
func parseTranscript(t *testing.T, path string) []step {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	var steps []step
	sc := bufio.NewScanner(f)
	n := 0
	for sc.Scan() {
		n++
		raw := sc.Text()
		line, _, _ := strings.Cut(raw, "#")
		if strings.TrimSpace(line) == "" {
			continue
		}
		cont := line[0] == ' ' || line[0] == '\t'
		line = strings.TrimSpace(line)
		if !cont {
			require.True(t, line[0] == '>' || line[0] == '<', "%s:%d: want > or <", path, n)
			steps = append(steps, step{line: n, send: line[0] == '>'})
			line = strings.TrimSpace(line[1:])
			if line == "closed" {
				steps[len(steps)-1].closed = true
				continue
			}
		}
		require.NotEmpty(t, steps, "%s:%d: a continuation with no frame", path, n)
		s := &steps[len(steps)-1]
		for line != "" {
			var tok token
			switch {
			case line[0] == '"':
				end := strings.IndexByte(line[1:], '"')
				require.GreaterOrEqual(t, end, 0, "%s:%d: unterminated string", path, n)
				tok.lit = []byte(line[1 : 1+end])
				line = line[2+end:]
			case line[0] == '$':
				end := strings.IndexAny(line, " \t")
				if end < 0 {
					end = len(line)
				}
				tok.v = line[:end]
				line = line[end:]
			default:
				require.GreaterOrEqual(t, len(line), 2, "%s:%d: %q", path, n, line)
				b, err := hex.DecodeString(line[:2])
				require.NoError(t, err, "%s:%d", path, n)
				tok.lit = b
				line = line[2:]
			}
			s.frame = append(s.frame, tok)
			line = strings.TrimLeft(line, " \t")
		}
	}
	require.NoError(t, sc.Err())
	return steps
}

// bytesOf renders a frame to send, with the bound values.
func bytesOf(t *testing.T, s step, vars map[string][]byte) []byte {
	t.Helper()
	var out []byte
	for _, tok := range s.frame {
		if tok.v != "" {
			v, ok := vars[tok.v]
			require.True(t, ok, "line %d: %s is not bound yet", s.line, tok.v)
			out = append(out, v...)
			continue
		}
		out = append(out, tok.lit...)
	}
	return out
}

// match checks a received frame against an expected one, binding values;
// it returns what it would bind, or an error saying where it differs.
func match(s step, got []byte, vars map[string][]byte) (map[string][]byte, error) {
	bind := map[string][]byte{}
	i := 0
	for _, tok := range s.frame {
		want := tok.lit
		if tok.v != "" {
			if v, ok := vars[tok.v]; ok {
				want = v
			} else if v, ok := bind[tok.v]; ok {
				want = v
			} else {
				if i+4 > len(got) {
					return nil, fmt.Errorf("short frame at byte %d", i)
				}
				bind[tok.v] = got[i : i+4]
				i += 4
				continue
			}
		}
		if i+len(want) > len(got) || string(got[i:i+len(want)]) != string(want) {
			end := min(i+len(want), len(got))
			return nil, fmt.Errorf("byte %d: want % x, got % x", i, want, got[i:end])
		}
		i += len(want)
	}
	if i != len(got) {
		return nil, fmt.Errorf("%d bytes more than expected: % x", len(got)-i, got[i:])
	}
	return bind, nil
}

// readFrame reads one HSMS frame (length prefix included).
func readFrame(c net.Conn, d time.Duration) ([]byte, error) {
	if err := c.SetReadDeadline(time.Now().Add(d)); err != nil {
		return nil, err
	}
	var n [4]byte
	if _, err := io.ReadFull(c, n[:]); err != nil {
		return nil, err
	}
	size := binary.BigEndian.Uint32(n[:])
	if size > 1<<20 {
		return nil, fmt.Errorf("frame length %d", size)
	}
	f := make([]byte, 4+size)
	copy(f, n[:])
	_, err := io.ReadFull(c, f[4:])
	return f, err
}

// play runs a transcript against the equipment at addr.
func play(t *testing.T, path, addr string) {
	t.Helper()
	steps := parseTranscript(t, path)
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer c.Close()
	vars := map[string][]byte{}
	for i := 0; i < len(steps); {
		s := steps[i]
		if s.send {
			_, err := c.Write(bytesOf(t, s, vars))
			require.NoError(t, err, "line %d", s.line)
			i++
			continue
		}
		if s.closed {
			_, err := readFrame(c, 5*time.Second)
			require.True(t, errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || isReset(err), "line %d: want the connection closed, got %v", s.line, err)
			i++
			continue
		}
		// A group of frames from the equipment, in any order.
		j := i
		for j < len(steps) && !steps[j].send && !steps[j].closed {
			j++
		}
		pending := steps[i:j]
		for len(pending) > 0 {
			got, err := readFrame(c, 5*time.Second)
			require.NoError(t, err, "line %d: reading a frame", pending[0].line)
			var why []string
			found := -1
			for k, p := range pending {
				bind, err := match(p, got, vars)
				if err != nil {
					why = append(why, fmt.Sprintf("line %d: %v", p.line, err))
					continue
				}
				for name, v := range bind {
					vars[name] = v
				}
				found = k
				break
			}
			require.GreaterOrEqual(t, found, 0, "%s: an unexpected frame % x:\n%s", filepath.Base(path), got, strings.Join(why, "\n"))
			pending = append(pending[:found:found], pending[found+1:]...)
		}
		i = j
	}
}

func isReset(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && strings.Contains(op.Err.Error(), "reset")
}

func TestGoldenTranscripts(t *testing.T) {
	cases := []struct {
		file string
		edit func(*gem.Config)
	}{
		{"establish.txt", func(c *gem.Config) { c.InitialControl = gem.OnlineRemote }},
		{"offline.txt", nil},
		{"not-communicating.txt", func(c *gem.Config) { c.InitialControl = gem.OnlineRemote }},
		{"t3-timeout.txt", func(c *gem.Config) {
			c.InitialControl = gem.OnlineRemote
			c.T3 = 300 * time.Millisecond
		}},
	}
	for _, c := range cases {
		t.Run(c.file, func(t *testing.T) {
			r := newRig(t, c.edit, false)
			play(t, filepath.Join("testdata", "wire", c.file), r.eq.Addr())
		})
	}
}
