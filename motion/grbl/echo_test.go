package grbl

import (
	"bytes"
	"errors"
	"strconv"
	"sync"

	"github.com/waferd/waferd/motion"
)

// echoGrbl is a GRBL 1.1 controller reduced to what a move needs, answering
// from inside Write: every line gets "ok", a G1 line moves the stage to its
// X and Y at once, '?' gets an Idle report at the current position. It
// lets a test make hundreds of moves in a fraction of a second.
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
