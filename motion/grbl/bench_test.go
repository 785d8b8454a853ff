package grbl

import (
	"bytes"
	"context"
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/waferd/waferd/motion"
)

// BenchmarkMoveAllocs measures the driver's own cost of one MoveTo and one
// Status (what the inspection runner spends per site) against echoGrbl, an
// in-process controller that answers at once and allocates nothing itself,
// so that allocs/op are the driver's alone (with the in-process emulator
// they would include the emulator's). Production timing settings apply
// (Config defaults): the replies come long before the first poll.
//
// ctx=shared moves under one long-lived cancellable context, as the runner
// does (the abort hook stays registered on it: no allocation); ctx=per-move
// under a fresh context with a deadline per move, which adds what that
// costs: the context itself, its Done channel, and registering the abort
// hook on each new context.
func BenchmarkMoveAllocs(b *testing.B) {
	for _, perMove := range []bool{false, true} {
		name := "ctx=shared"
		if perMove {
			name = "ctx=per-move"
		}
		b.Run(name, func(b *testing.B) {
			port := newEchoGrbl()
			s := New(port, Config{})
			defer s.Close()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if err := s.Connect(ctx); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				p := motion.Point{X: motion.Distance(i%97) * 1800, Y: -motion.Distance(i%89) * 1800}
				i++
				mctx := ctx
				mcancel := context.CancelFunc(func() {})
				if perMove {
					mctx, mcancel = context.WithTimeout(ctx, time.Minute)
				}
				err := s.MoveTo(mctx, p, 6000)
				mcancel()
				if err != nil {
					b.Fatal(err)
				}
				st, err := s.Status(ctx)
				if err != nil {
					b.Fatal(err)
				}
				if st.XY() != p {
					b.Fatalf("status at %v, want %v", st.XY(), p)
				}
			}
		})
	}
}

// echoGrbl is a GRBL 1.1 controller reduced to what a move needs, answering
// from inside Write: every line gets "ok", a G1 line moves the stage to its
// X and Y at once, '?' gets an Idle report at the current position. It
// allocates nothing after its first few lines.
type echoGrbl struct {
	mu     sync.Mutex
	cond   sync.Cond
	out    []byte // not yet read by the driver
	line   []byte // partial line received
	pos    [2]motion.Distance
	closed bool
}

func newEchoGrbl() *echoGrbl {
	e := &echoGrbl{out: []byte(banner + "\r\n")}
	e.cond.L = &e.mu
	return e
}

func (e *echoGrbl) Read(p []byte) (int, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for len(e.out) == 0 && !e.closed {
		e.cond.Wait()
	}
	if e.closed {
		return 0, errors.New("echoGrbl: closed")
	}
	n := copy(p, e.out)
	e.out = e.out[:copy(e.out, e.out[n:])]
	return n, nil
}

func (e *echoGrbl) Write(p []byte) (int, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return 0, errors.New("echoGrbl: closed")
	}
	for _, c := range p {
		switch c {
		case rtStatus:
			e.out = append(e.out, "<Idle|MPos:"...)
			e.out = appendEchoMM(e.out, e.pos[0])
			e.out = append(e.out, ',')
			e.out = appendEchoMM(e.out, e.pos[1])
			e.out = append(e.out, ",0.000|FS:0,0|Ov:100,100,100>\r\n"...)
		case rtFeedHold, rtResume, rtSoftReset:
		case '\n':
			if x, ok := echoWord(e.line, " X"); ok && bytes.HasPrefix(e.line, []byte("G21 G90 G53 G1 ")) {
				y, _ := echoWord(e.line, " Y")
				e.pos = [2]motion.Distance{x, y}
			}
			e.line = e.line[:0]
			e.out = append(e.out, "ok\r\n"...)
		default:
			e.line = append(e.line, c)
		}
	}
	e.cond.Broadcast()
	return len(p), nil
}

func (e *echoGrbl) Close() error {
	e.mu.Lock()
	e.closed = true
	e.mu.Unlock()
	e.cond.Broadcast()
	return nil
}

// echoWord parses the millimetre number after word (" X") in line, to the
// micrometre.
func echoWord(line []byte, word string) (motion.Distance, bool) {
	i := bytes.Index(line, []byte(word))
	if i < 0 {
		return 0, false
	}
	var v, frac, scale int64 = 0, 0, 1000
	neg, point := false, false
	for _, c := range line[i+len(word):] {
		switch {
		case c == '-':
			neg = true
		case c == '.':
			point = true
		case c >= '0' && c <= '9' && !point:
			v = v*10 + int64(c-'0')
		case c >= '0' && c <= '9' && scale > 1:
			scale /= 10
			frac += int64(c-'0') * scale
		case c == ' ':
			goto done
		}
	}
done:
	d := motion.Distance(v*1000 + frac)
	if neg {
		d = -d
	}
	return d, true
}

func appendEchoMM(b []byte, d motion.Distance) []byte {
	if d < 0 {
		b = append(b, '-')
		d = -d
	}
	b = strconv.AppendInt(b, int64(d/1000), 10)
	f := int64(d % 1000)
	return append(b, '.', byte('0'+f/100), byte('0'+f/10%10), byte('0'+f%10))
}
