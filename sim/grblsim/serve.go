package grblsim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"
)

// Serve powers the controller up and runs the protocol over rw until ctx
// ends, rw fails (a read error or EOF, a write error), or Close is called.
// It blocks; it returns context.Cause(ctx) when ctx ends, ErrClosed after
// Close, and otherwise the stream's error. Only one Serve may run at a
// time. Settings ($$) and the true stage position survive from one Serve
// to the next; everything else starts afresh as after a power cycle.
//
// Serve reads rw from a goroutine of its own. To stop a Read in progress
// when it returns, Serve sets a past deadline on rw if rw has
// SetDeadline(time.Time) error, and otherwise closes rw if it is an
// io.Closer; with neither, that goroutine (and Serve) ends only when the
// pending Read returns.
func (e *Emulator) Serve(ctx context.Context, rw io.ReadWriter) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	if err := e.claim(rw, cancel, nil); err != nil {
		return err
	}
	return e.serve(ctx, cancel, rw)
}

// claim marks the emulator as serving rw (and owning the pty p, if any).
func (e *Emulator) claim(rw io.ReadWriter, cancel context.CancelCauseFunc, p *ptyLine) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return ErrClosed
	}
	if e.serving || e.pty != nil {
		return errors.New("grblsim: already serving")
	}
	e.serving, e.rw, e.cancelServe = true, rw, cancel
	if p != nil {
		e.pty = p
	}
	return nil
}

// serve runs the reader goroutine and the firmware until either ends.
func (e *Emulator) serve(ctx context.Context, cancel context.CancelCauseFunc, rw io.ReadWriter) error {
	if d, ok := rw.(interface{ SetDeadline(time.Time) error }); ok {
		_ = d.SetDeadline(time.Time{})
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		err := e.readLoop(rw)
		if err == nil || errors.Is(err, io.EOF) {
			err = io.EOF
		}
		cancel(fmt.Errorf("grblsim: read: %w", err))
	})
	// A blocked Write does not watch ctx: unblock it when ctx ends.
	unblocked := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(unblocked)
		unblock(rw)
	})

	e.mu.Lock()
	e.w = rw
	e.timer = time.NewTimer(time.Hour)
	e.timer.Stop()
	e.stall = time.AfterFunc(time.Hour, e.stalled)
	e.stall.Stop()
	err := e.run(ctx)
	e.serving, e.rw, e.cancelServe, e.w = false, nil, nil, nil
	e.consuming = false
	e.rxSpace.Broadcast()
	e.out = nil
	e.mu.Unlock()

	cancel(err)
	if !stop() {
		<-unblocked
	} else {
		unblock(rw)
	}
	wg.Wait()
	e.logf("serve ended: %v", err)
	return err
}

// unblock makes pending and future I/O on rw fail at once.
func unblock(rw io.ReadWriter) {
	if d, ok := rw.(interface{ SetDeadline(time.Time) error }); ok {
		if d.SetDeadline(time.Unix(1, 0)) == nil {
			return
		}
	}
	if c, ok := rw.(io.Closer); ok {
		_ = c.Close()
	}
}

// readLoop is the serial receive interrupt: it reads the wire until it
// fails and hands every byte to rxByte.
func (e *Emulator) readLoop(r io.Reader) error {
	buf := make([]byte, 256)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			at := time.Now()
			for _, b := range buf[:n] {
				e.rxByte(b, at)
			}
		}
		if err != nil {
			return err
		}
	}
}

// Real-time command bytes (config.h).
const (
	cmdReset                  = 0x18
	cmdStatusReport           = '?'
	cmdCycleStart             = '~'
	cmdFeedHold               = '!'
	cmdSafetyDoor             = 0x84
	cmdJogCancel              = 0x85
	cmdFeedOvrReset           = 0x90
	cmdFeedOvrCoarsePlus      = 0x91
	cmdFeedOvrCoarseMinus     = 0x92
	cmdFeedOvrFinePlus        = 0x93
	cmdFeedOvrFineMinus       = 0x94
	cmdRapidOvrReset          = 0x95
	cmdRapidOvrMedium         = 0x96
	cmdRapidOvrLow            = 0x97
	cmdSpindleOvrReset        = 0x99
	cmdSpindleOvrCoarsePlus   = 0x9A
	cmdSpindleOvrCoarseMinus  = 0x9B
	cmdSpindleOvrFinePlus     = 0x9C
	cmdSpindleOvrFineMinus    = 0x9D
	cmdSpindleOvrStop         = 0x9E
	cmdCoolantFloodOvrToggle  = 0xA0
	cmdCoolantMistOvrToggleM7 = 0xA1 // only with ENABLE_M7: dropped here
)

func isRealtime(b byte) bool {
	switch b {
	case cmdReset, cmdStatusReport, cmdCycleStart, cmdFeedHold,
		cmdSafetyDoor, cmdJogCancel, cmdSpindleOvrStop, cmdCoolantFloodOvrToggle:
		return true
	}
	return b >= cmdFeedOvrReset && b <= cmdSpindleOvrFineMinus && b != 0x98
}

// rxByte is the serial receive interrupt for one byte: real-time commands
// act at once, other bytes above 0x7F are dropped, the rest go into the
// 128-byte receive buffer if it has room.
func (e *Emulator) rxByte(b byte, at time.Time) {
	if isRealtime(b) {
		e.mu.Lock()
		fn := e.onRT
		e.mu.Unlock()
		if fn != nil {
			fn(b, at)
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	switch b {
	case cmdReset:
		e.cnt.Resets++
		e.logf("rt: reset in %v", e.state)
		e.mcReset()
	case cmdStatusReport:
		e.cnt.StatusQueries++
		e.execState |= execStatus
	case cmdCycleStart:
		e.cnt.CycleStarts++
		e.logf("rt: cycle start in %v", e.state)
		e.execState |= execCycleStart
	case cmdFeedHold:
		e.cnt.FeedHolds++
		e.logf("rt: feed hold in %v", e.state)
		e.execState |= execFeedHold
	default:
		if b <= 0x7f {
			for e.rxLen == rxBufferSize {
				if !e.consuming || !e.serving {
					e.cnt.RxDropped++
					return
				}
				e.signal()
				e.rxSpace.Wait()
			}
			e.rx[(e.rxHd+e.rxLen)%rxBufferSize] = b
			e.rxLen++
			break
		}
		switch b {
		case cmdJogCancel:
			e.cnt.JogCancels++
			if e.state == stJog {
				e.execState |= execMotionCancel
			}
		case cmdSafetyDoor:
			e.cnt.OtherRealtime++
			return
		case cmdFeedOvrReset:
			e.execMotionOvr |= ovrFeedReset
		case cmdFeedOvrCoarsePlus:
			e.execMotionOvr |= ovrFeedCoarsePlus
		case cmdFeedOvrCoarseMinus:
			e.execMotionOvr |= ovrFeedCoarseMinus
		case cmdFeedOvrFinePlus:
			e.execMotionOvr |= ovrFeedFinePlus
		case cmdFeedOvrFineMinus:
			e.execMotionOvr |= ovrFeedFineMinus
		case cmdRapidOvrReset:
			e.execMotionOvr |= ovrRapidReset
		case cmdRapidOvrMedium:
			e.execMotionOvr |= ovrRapidMedium
		case cmdRapidOvrLow:
			e.execMotionOvr |= ovrRapidLow
		case cmdSpindleOvrReset:
			e.execAccOvr |= accSpindleReset
		case cmdSpindleOvrCoarsePlus:
			e.execAccOvr |= accSpindleCoarsePlus
		case cmdSpindleOvrCoarseMinus:
			e.execAccOvr |= accSpindleCoarseMinus
		case cmdSpindleOvrFinePlus:
			e.execAccOvr |= accSpindleFinePlus
		case cmdSpindleOvrFineMinus:
			e.execAccOvr |= accSpindleFineMinus
		case cmdSpindleOvrStop:
			e.execAccOvr |= accSpindleStop
		case cmdCoolantFloodOvrToggle:
			e.execAccOvr |= accCoolantFloodToggle
		default:
			e.cnt.Unknown++
			return
		}
		if b != cmdJogCancel {
			e.cnt.Overrides++
		}
	}
	e.signal()
}
