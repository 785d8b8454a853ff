package gem

import (
	"bufio"
	"context"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/arloliu/go-secs/v2/hsms"

	"github.com/waferd/waferd/daemon/daemontest"
	"github.com/waferd/waferd/internal/logging"
)

// FuzzFrame hands random bytes, as an HSMS frame, to the decoder (the HSMS
// layer's, then SECS-II's) and then to the equipment's receive path and
// every handler, communicating and online remote, against a daemon on
// fake devices. Nothing may panic: a frame that does not decode is
// refused, a body of the wrong shape is illegal data (S9F7), anything else
// is answered. The seeds are the host's frames of the golden transcripts.
// make fuzz runs it; go test runs the seeds.
func FuzzFrame(f *testing.F) {
	for _, s := range transcriptFrames(f) {
		f.Add(s)
	}
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0, 7, 0x81, 1, 0, 0, 0, 0, 0, 2})
	r := daemontest.New(f, daemontest.Options{})
	e, err := New(Config{Listen: "127.0.0.1:0", DeviceID: 7, T8: 10 * time.Millisecond, Log: logging.Discard()}, r.D)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = e.Close() })
	ctx := context.Background()
	f.Fuzz(func(t *testing.T, frame []byte) {
		msg, err := hsms.DecodeHSMSMessage(frame)
		if err != nil {
			return
		}
		dm, ok := msg.ToDataMessage()
		if !ok {
			return
		}
		e.mu.Lock()
		e.comm, e.ctl = CommCommunicating, OnlineRemote
		e.mu.Unlock()
		e.onMessage(dm, nil)
		for len(e.work) > 0 {
			e.dispatch(ctx, <-e.work)
		}
		for len(e.out) > 0 {
			<-e.out
		}
		for len(e.notes) > 0 {
			<-e.notes
		}
	})
}

// transcriptFrames are the host's frames of testdata/wire, with the
// equipment's system bytes as zeros.
func transcriptFrames(tb testing.TB) [][]byte {
	paths, err := filepath.Glob(filepath.Join("testdata", "wire", "*.txt"))
	if err != nil || len(paths) == 0 {
		tb.Fatalf("no transcripts: %v", err)
	}
	var frames [][]byte
	for _, p := range paths {
		file, err := os.Open(p)
		if err != nil {
			tb.Fatal(err)
		}
		sc := bufio.NewScanner(file)
		for sc.Scan() {
			line, _, _ := strings.Cut(sc.Text(), "#")
			if !strings.HasPrefix(line, ">") {
				continue
			}
			var b []byte
			for _, tok := range strings.Fields(line[1:]) {
				switch {
				case strings.HasPrefix(tok, "$"):
					b = append(b, 0, 0, 0, 0)
				case strings.HasPrefix(tok, `"`):
					b = append(b, strings.Trim(tok, `"`)...)
				default:
					x, err := hex.DecodeString(tok)
					if err != nil {
						tb.Fatalf("%s: %q: %v", p, tok, err)
					}
					b = append(b, x...)
				}
			}
			frames = append(frames, b)
		}
		file.Close()
	}
	return frames
}
