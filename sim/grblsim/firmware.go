package grblsim

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// Machine states (system.h). Only one is active at a time here; the
// firmware's bit encoding is not needed.
type fwState int

const (
	stIdle fwState = iota
	stAlarm
	stCheck
	stHoming
	stCycle
	stHold
	stJog
	stSleep
)

var fwStateNames = [...]string{"Idle", "Alarm", "Check", "Home", "Run", "Hold", "Jog", "Sleep"}

func (s fwState) String() string { return fwStateNames[s] }

// sys_rt_exec_state bits.
const (
	execStatus uint = 1 << iota
	execCycleStart
	execCycleStop
	execFeedHold
	execReset
	execMotionCancel
	execSleep
)

// pendAll is the idle mask that makes any pending real-time work cut a wait
// short: every exec bit plus alarms and overrides.
const (
	pendAlarm    uint = 1 << 16
	pendOverride uint = 1 << 17
	pendAll           = ^uint(0)
)

// sys.suspend bits.
const (
	suspHoldComplete uint = 1 << iota
	suspRestartRetract
	suspRetractComplete
	suspInitiateRestore
	suspRestoreComplete
	suspSafetyDoorAjar
	suspMotionCancel
	suspJogCancel
)

// sys.step_control bits.
const (
	stepExecuteHold uint = 1 << iota
	stepExecuteSysMotion
)

// Motion override bits (sys_rt_exec_motion_override).
const (
	ovrFeedReset uint = 1 << iota
	ovrFeedCoarsePlus
	ovrFeedCoarseMinus
	ovrFeedFinePlus
	ovrFeedFineMinus
	ovrRapidReset
	ovrRapidMedium
	ovrRapidLow
)

// Accessory override bits (sys_rt_exec_accessory_override).
const (
	accSpindleReset uint = 1 << iota
	accSpindleCoarsePlus
	accSpindleCoarseMinus
	accSpindleFinePlus
	accSpindleFineMinus
	accSpindleStop
	accCoolantFloodToggle
)

const (
	rxBufferSize   = 128 // RX_BUFFER_SIZE
	lineBufferSize = 80  // LINE_BUFFER_SIZE: at most 79 characters after stripping
	plannerBlocks  = 15  // BLOCK_BUFFER_SIZE-1
	alarmDelay     = 500 * time.Millisecond
	dwellTimeStep  = 50 * time.Millisecond
	maxTick        = 5 * time.Millisecond // longest wall-time wait while the stage moves
	// writeStall is how long (wall time) a write of the output may block
	// before the main loop counts as busy. Ten times the 11 ms in which
	// 128 bytes arrive at 115200 baud, so that a slow or loaded machine
	// does not pass for a host that has stopped reading.
	writeStall = 110 * time.Millisecond
)

// fw is the firmware's global state (sys, gc_state, settings, planner,
// serial buffer), guarded by Emulator.mu.
type fw struct {
	set         settings
	forceOrigin bool // built with HOMING_FORCE_SET_ORIGIN
	lastPins    uint // limit switches the stage was on at the last check point

	state     fwState
	abort     bool // sys.abort
	suspend   uint
	stepCtl   uint
	softLimit bool

	execState     uint
	execAlarm     int
	execMotionOvr uint
	execAccOvr    uint

	fOvr, rOvr, sOvr       int
	wcoCounter, ovrCounter int

	rx    [rxBufferSize]byte
	rxHd  int // index of the oldest byte
	rxLen int

	gc gcState

	planner []block
	plPos   [3]int64 // planner position in steps

	pos         [3]float64 // sys_position in mm (machine coordinates)
	off         [2]float64 // true stage position = pos + off
	vel         float64    // current speed, mm/s
	seg         *segment   // motion of the steppers, nil when they are idle
	homing      *homingMove
	holdStopped bool // a hold came to rest but InjectStuckHold kept it from completing

	suspendSim time.Duration // simulated time spent in the suspend loop, for dwells

	startup   [2]string
	buildInfo string

	// consuming is true while the main loop waits for input at its top
	// level (see wait), so that it will empty the receive buffer as soon as
	// it runs.
	// The firmware's main loop drains the buffer far faster than 115200
	// baud fills it; bursts from a pty do not have that pacing, so the
	// reader waits for room while consuming is true and drops bytes only
	// while the main loop is busy elsewhere.
	consuming bool
	rxSpace   *sync.Cond // on Emulator.mu: the buffer has room, or consuming has changed

	// writeStart is when the main loop began the write of its output in
	// progress (zero when none is); stall clears consuming once that
	// write has blocked for writeStall (see wait).
	writeStart time.Time
	stall      *time.Timer

	runErr error  // why the main loop must stop (context, write error)
	out    []byte // output waiting to be written
}

// ---------------------------------------------------------------------------
// Main loop (main.c, protocol.c)

// run is the firmware: power-up, then the main loop, re-initialised after
// every soft reset, until ctx ends or a write fails. The caller holds mu.
func (e *Emulator) run(ctx context.Context) error {
	e.powerUp()
	e.runErr = nil
	for {
		e.resetInit()
		e.protocolMainLoop(ctx)
		if e.runErr != nil {
			e.advance()
			e.stKill()
			return e.runErr
		}
	}
}

// powerUp is a power cycle: the step counters start from zero wherever the
// stage is, and homing-enabled machines lock in Alarm (HOMING_INIT_LOCK).
func (e *Emulator) powerUp() {
	e.advance()
	e.stKill()
	e.off[0] += e.pos[0]
	e.off[1] += e.pos[1]
	e.pos = [3]float64{}
	e.lastPins = e.limitPins()
	e.state = stIdle
	if e.set.homing {
		e.state = stAlarm
	}
	e.gcInit()
}

// resetInit is main.c's initialisation loop body, run at power-up and after
// every abort.
func (e *Emulator) resetInit() {
	prior := e.state
	e.abort = false
	e.suspend = 0
	e.stepCtl = 0
	e.softLimit = false
	e.state = prior
	e.fOvr, e.rOvr, e.sOvr = 100, 100, 100
	e.wcoCounter, e.ovrCounter = 0, 0
	e.execState, e.execAlarm, e.execMotionOvr, e.execAccOvr = 0, 0, 0, 0
	e.rxHd, e.rxLen = 0, 0 // serial_reset_read_buffer
	e.rxSpace.Broadcast()
	e.gcInit()
	e.planReset()
	e.stKill()
	e.holdStopped = false
	e.planSyncPosition()
	e.gcSyncPosition()
	e.emit("\r\nGrbl 1.1h ['$' for help]\r\n")
	e.logf("reset: state %v", prior)
}

const (
	lineFlagOverflow = 1 << iota
	lineFlagParens
	lineFlagSemicolon
)

func (e *Emulator) protocolMainLoop(ctx context.Context) {
	if e.state == stAlarm || e.state == stSleep {
		e.emit("[MSG:'$H'|'$X' to unlock]\r\n")
		e.state = stAlarm
	} else {
		e.state = stIdle
	}
	var line []byte
	flags := 0
	for {
		for e.rxLen > 0 {
			c := e.rxPop()
			if c == '\n' || c == '\r' {
				e.rt(ctx)
				if e.abort {
					return
				}
				e.cnt.Lines++
				e.logf("line %q", line)
				var status int
				switch {
				case flags&lineFlagOverflow != 0:
					status = stOverflow
				case len(line) == 0:
					status = statusOK
				case line[0] == '$':
					status = e.systemExecuteLine(ctx, string(line))
				case e.state == stAlarm || e.state == stJog:
					status = stSystemGCLock
				default:
					status = e.gcExecuteLine(ctx, string(line))
				}
				e.reportStatusMessage(status)
				line = line[:0]
				flags = 0
				continue
			}
			switch {
			case flags != 0:
				if c == ')' && flags&lineFlagParens != 0 {
					flags &^= lineFlagParens
				}
			case c <= ' ', c == '/':
				// Whitespace and control characters; block delete is not supported.
			case c == '(':
				flags |= lineFlagParens
			case c == ';':
				flags |= lineFlagSemicolon
			case len(line) >= lineBufferSize-1:
				flags |= lineFlagOverflow
			case c >= 'a' && c <= 'z':
				line = append(line, c-'a'+'A')
			default:
				line = append(line, c)
			}
		}
		e.autoCycleStart()
		e.rt(ctx)
		if e.abort {
			return
		}
		if e.rxLen == 0 {
			e.wait(ctx, 0, pendAll, true)
			if e.abort {
				return
			}
		}
	}
}

func (e *Emulator) rxPop() byte {
	c := e.rx[e.rxHd]
	e.rxHd = (e.rxHd + 1) % rxBufferSize
	if e.rxLen == rxBufferSize {
		e.rxSpace.Broadcast()
	}
	e.rxLen--
	return c
}

// autoCycleStart (protocol_auto_cycle_start) starts queued motion.
func (e *Emulator) autoCycleStart() {
	if len(e.planner) > 0 {
		e.execState |= execCycleStart
	}
}

// bufferSynchronize (protocol_buffer_synchronize) waits until the planner is
// empty and the cycle has ended.
func (e *Emulator) bufferSynchronize(ctx context.Context) {
	e.autoCycleStart()
	for {
		e.rt(ctx)
		if e.abort {
			return
		}
		if len(e.planner) == 0 && e.state != stCycle {
			return
		}
		e.idle(ctx, 0, pendAll)
	}
}

// rt is protocol_execute_realtime: a check point of the main program.
func (e *Emulator) rt(ctx context.Context) {
	e.rtSystem(ctx)
	if e.abort {
		return
	}
	if e.suspend != 0 {
		e.rtSuspend(ctx)
	}
}

// rtSystem is protocol_exec_rt_system: the state machine driven by the
// real-time flags.
func (e *Emulator) rtSystem(ctx context.Context) {
	e.advance()
	e.hardLimitCheck()
	if a := e.execAlarm; a != 0 {
		e.state = stAlarm
		e.emit(fmt.Sprintf("ALARM:%d\r\n", a))
		e.logf("ALARM:%d", a)
		e.sleepSim(ctx, alarmDelay) // report_alarm_message: delay_ms(500)
		if a == 1 || a == 2 {
			// Critical event: block everything but a reset.
			e.emit("[MSG:Reset to continue]\r\n")
			e.execState &^= execReset
			for e.execState&execReset == 0 && e.runErr == nil {
				e.idle(ctx, 0, execReset)
			}
		}
		e.execAlarm = 0
	}
	if e.runErr != nil {
		e.abort = true
		return
	}
	rt := e.execState
	if rt != 0 {
		if rt&execReset != 0 {
			e.abort = true
			return
		}
		if rt&execStatus != 0 {
			e.reportRealtimeStatus()
			e.execState &^= execStatus
		}
		if rt&(execMotionCancel|execFeedHold|execSleep) != 0 {
			if e.state != stAlarm && e.state != stCheck {
				if e.state == stCycle || e.state == stJog {
					if e.suspend&(suspMotionCancel|suspJogCancel) == 0 {
						e.stHold()
						e.stepCtl = stepExecuteHold
						if e.state == stJog && rt&execSleep == 0 {
							e.suspend |= suspJogCancel
						}
					}
				}
				if e.state == stIdle {
					e.suspend = suspHoldComplete
				}
				if rt&execMotionCancel != 0 && e.state != stJog {
					e.suspend |= suspMotionCancel
				}
				if rt&execFeedHold != 0 && e.state != stJog && e.state != stSleep {
					e.state = stHold
				}
			}
			if rt&execSleep != 0 {
				if e.state == stAlarm {
					e.suspend |= suspRetractComplete | suspHoldComplete
				}
				e.state = stSleep
			}
			e.execState &^= execMotionCancel | execFeedHold | execSleep
		}
		if rt&execCycleStart != 0 {
			// Not at the same time as a hold: auto cycle start must not resume one.
			if rt&(execFeedHold|execMotionCancel) == 0 {
				if e.state == stIdle || (e.state == stHold && e.suspend&suspHoldComplete != 0) {
					e.stepCtl = 0
					if len(e.planner) > 0 && e.suspend&suspMotionCancel == 0 {
						e.suspend = 0
						e.state = stCycle
						e.stWakeUp()
					} else {
						e.suspend = 0
						e.state = stIdle
					}
				}
			}
			e.execState &^= execCycleStart
		}
		if rt&execCycleStop != 0 {
			if (e.state == stHold || e.state == stSleep) && !e.softLimit && e.suspend&suspJogCancel == 0 {
				// Hold complete: stay in Hold until resumed or reset.
				if e.stepCtl&stepExecuteHold != 0 {
					e.suspend |= suspHoldComplete
				}
				e.stepCtl &^= stepExecuteHold | stepExecuteSysMotion
			} else {
				// Motion complete, or a jog cancel / soft-limit stop.
				if e.suspend&suspJogCancel != 0 {
					e.stepCtl = 0
					e.planReset()
					e.stKill()
					e.gcSyncPosition()
					e.planSyncPosition()
				}
				e.suspend = 0
				e.state = stIdle
			}
			e.execState &^= execCycleStop
		}
	}
	if e.execMotionOvr != 0 {
		e.motionOverrides()
	}
	if e.execAccOvr != 0 {
		e.accessoryOverrides()
	}
	e.noteState()
}

func (e *Emulator) motionOverrides() {
	o := e.execMotionOvr
	e.execMotionOvr = 0
	f, r := e.fOvr, e.rOvr
	if o&ovrFeedReset != 0 {
		f = 100
	}
	if o&ovrFeedCoarsePlus != 0 {
		f += 10
	}
	if o&ovrFeedCoarseMinus != 0 {
		f -= 10
	}
	if o&ovrFeedFinePlus != 0 {
		f++
	}
	if o&ovrFeedFineMinus != 0 {
		f--
	}
	f = min(max(f, 10), 200)
	if o&ovrRapidReset != 0 {
		r = 100
	}
	if o&ovrRapidMedium != 0 {
		r = 50
	}
	if o&ovrRapidLow != 0 {
		r = 25
	}
	if f != e.fOvr || r != e.rOvr {
		e.fOvr, e.rOvr = f, r
		e.ovrCounter = 0
	}
}

func (e *Emulator) accessoryOverrides() {
	o := e.execAccOvr
	e.execAccOvr = 0
	s := e.sOvr
	if o&accSpindleReset != 0 {
		s = 100
	}
	if o&accSpindleCoarsePlus != 0 {
		s += 10
	}
	if o&accSpindleCoarseMinus != 0 {
		s -= 10
	}
	if o&accSpindleFinePlus != 0 {
		s++
	}
	if o&accSpindleFineMinus != 0 {
		s--
	}
	s = min(max(s, 10), 200)
	if s != e.sOvr {
		e.sOvr = s
		e.ovrCounter = 0
	}
	if o&accCoolantFloodToggle != 0 && (e.state == stIdle || e.state == stCycle || e.state == stHold || e.state == stJog) {
		e.gc.modal.coolant ^= coolantFlood
		e.ovrCounter = 0
	}
}

// rtSuspend is protocol_exec_rt_suspend: the main program stays here while a
// hold (or sleep) is in effect.
func (e *Emulator) rtSuspend(ctx context.Context) {
	start := e.simNow()
	defer func() { e.suspendSim += e.simNow() - start }()
	for e.suspend != 0 {
		if e.abort {
			return
		}
		if e.suspend&suspHoldComplete != 0 && e.state == stSleep {
			if e.suspend&suspRetractComplete == 0 {
				// No parking motion here: the retraction is complete at
				// once, and GRBL's loop goes straight on to report the
				// sleep. Idling first would wait for input that need not
				// come (the report would wait for the next byte).
				e.suspend |= suspRetractComplete
				e.rtSystem(ctx)
				continue
			}
			e.emit("[MSG:Sleeping]\r\n")
			e.stKill()
			for !e.abort {
				e.rtSystem(ctx)
				if !e.abort {
					e.idle(ctx, 0, pendAll)
				}
			}
			return
		}
		e.rtSystem(ctx)
		if e.abort || e.suspend == 0 {
			return
		}
		e.idle(ctx, 0, pendAll)
	}
}

// hardLimitCheck is the limit pin change interrupt: with hard limits on
// ($21=1), reaching a switch outside homing kills the steppers and raises
// ALARM:1. Here it runs at every check point of the main loop, which comes
// at least every maxTick while the stage moves.
func (e *Emulator) hardLimitCheck() {
	pins := e.limitPins()
	reached := pins &^ e.lastPins
	e.lastPins = pins
	if reached == 0 || !e.set.hardLimits || e.state == stAlarm || e.state == stHoming || e.homing != nil || e.execAlarm != 0 {
		return
	}
	// The firmware's interrupt comes the moment the switch closes; this
	// check comes a little later: put the stage back where the switch
	// closed, along the move it was making.
	if s := e.seg; s != nil {
		for axis := range 2 {
			if reached&(1<<axis) == 0 || s.dir[axis] == 0 {
				continue
			}
			sw, _ := e.switchAt(axis)
			if d := (sw - e.off[axis] - s.from[axis]) / s.dir[axis]; d >= 0 && d <= s.length {
				e.setAlong(s, d)
				e.stKill()
				break
			}
		}
	}
	e.logf("hard limit: switch %b reached at %.3f,%.3f", reached, e.pos[0], e.pos[1])
	e.mcReset()
	e.execAlarm = 1
}

// mcReset is mc_reset, called from the reader on 0x18 and from the firmware:
// it flags the reset and kills the steppers, raising ALARM:3 (ALARM:6 when
// homing) if they were moving. Caller holds mu.
func (e *Emulator) mcReset() {
	if e.execState&execReset != 0 {
		return
	}
	e.execState |= execReset
	e.advance()
	if e.state == stCycle || e.state == stHoming || e.state == stJog || e.stepCtl&(stepExecuteHold|stepExecuteSysMotion) != 0 {
		if e.state == stHoming {
			if e.execAlarm == 0 {
				e.execAlarm = 6
			}
		} else {
			e.execAlarm = 3
		}
	}
	e.stKill()
	e.signal()
}

// stalled is the stall timer's function: the main loop's write has blocked
// for writeStall, so the loop is busy and a full receive buffer drops
// bytes. A late call for an earlier write finds the current one too young
// and leaves it alone.
func (e *Emulator) stalled() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.writeStart.IsZero() && time.Since(e.writeStart) >= writeStall {
		e.consuming = false
		e.rxSpace.Broadcast()
	}
}

// idle flushes the pending output, then waits with mu released until the
// reader signals, simMax of simulated time has passed (0: no limit), or ctx
// ends. It does not wait at all while work in mask is pending. The next
// stepper event bounds the wait, and so does maxTick while the stage moves.
// A write failure or the end of ctx sets runErr and abort.
func (e *Emulator) idle(ctx context.Context, simMax time.Duration, mask uint) {
	e.wait(ctx, simMax, mask, false)
}

// wait is idle; input tells that the main loop waits for input at its top
// level and will empty the receive buffer as soon as it runs (consuming).
func (e *Emulator) wait(ctx context.Context, simMax time.Duration, mask uint, input bool) {
	wait := time.Duration(-1)
	if simMax > 0 {
		wait = max(e.wall(simMax), time.Microsecond)
	}
	if next, ok := e.nextEvent(); ok {
		t := min(max(e.wall(next), 100*time.Microsecond), maxTick)
		if wait < 0 || t < wait {
			wait = t
		}
	}
	if e.pending()&mask != 0 {
		wait = 0
	}
	out := e.out
	e.out = nil
	// The firmware's transmit buffer is emptied by an interrupt: writing
	// keeps its main loop from the receive buffer only once the host stops
	// reading and the buffer fills. So the loop stays consuming while it
	// writes, unless the write blocks for writeStall (stalled). Counting
	// every write as busy let a host that answers a reply at once, before
	// this write call had returned, lose bytes of a long line.
	e.consuming = input
	if !e.consuming {
		e.rxSpace.Broadcast()
	}
	e.noteState()
	notes, onState := e.takeNotes()
	e.mu.Unlock()
	for _, n := range notes {
		onState(n.st, n.sub, n.at)
	}
	var err error
	if len(out) > 0 {
		e.mu.Lock()
		e.writeStart = time.Now()
		e.mu.Unlock()
		e.stall.Reset(writeStall)
		_, err = e.w.Write(out)
		e.stall.Stop()
		e.mu.Lock()
		e.writeStart = time.Time{}
		e.consuming = input && err == nil
		e.mu.Unlock()
	}
	if err == nil && wait != 0 {
		if wait < 0 {
			select {
			case <-e.wake:
			case <-ctx.Done():
			}
		} else {
			e.timer.Reset(wait)
			select {
			case <-e.wake:
			case <-e.timer.C:
			case <-ctx.Done():
			}
			e.timer.Stop()
		}
	}
	e.mu.Lock()
	e.consuming = false
	switch {
	case e.runErr != nil:
	case err != nil:
		e.runErr = fmt.Errorf("grblsim: write: %w", err)
	case ctx.Err() != nil:
		e.runErr = context.Cause(ctx)
	}
	if e.runErr != nil {
		e.abort = true
	}
}

func (e *Emulator) pending() uint {
	p := e.execState
	if e.execAlarm != 0 {
		p |= pendAlarm
	}
	if e.execMotionOvr != 0 || e.execAccOvr != 0 {
		p |= pendOverride
	}
	return p
}

// sleepSim is a busy delay of the firmware (delay_ms): nothing is processed
// for d of simulated time.
func (e *Emulator) sleepSim(ctx context.Context, d time.Duration) {
	end := e.simNow() + d
	for e.runErr == nil {
		left := end - e.simNow()
		if left <= 0 {
			return
		}
		e.idle(ctx, left, 0)
	}
}

// ---------------------------------------------------------------------------
// Motion control (motion_control.c, limits.c, jog.c)

// mcLine queues a straight move to target (machine mm), waiting for planner
// space. Soft limits are checked first.
func (e *Emulator) mcLine(ctx context.Context, target [3]float64, feed float64, rapid, jog bool) {
	if e.set.softLimits && e.state != stJog {
		e.limitsSoftCheck(ctx, target)
	}
	if e.state == stCheck {
		return
	}
	for {
		e.rt(ctx)
		if e.abort {
			return
		}
		if len(e.planner) < plannerBlocks {
			break
		}
		if e.state == stIdle {
			// The buffer is full: auto cycle start. (In any other state it
			// would be ignored.)
			e.autoCycleStart()
			continue
		}
		e.idle(ctx, 0, pendAll)
		if e.abort {
			return
		}
	}
	e.planBufferLine(target, feed, rapid, jog)
}

// outsideTravel reports whether target lies outside the soft-limit box
// (system_check_travel_limits; Z is not limited here).
func (e *Emulator) outsideTravel(target [3]float64) bool {
	const eps = 1e-6
	for axis := range 2 {
		lo, hi := e.axisSpace(axis)
		if target[axis] < lo-eps || target[axis] > hi+eps {
			return true
		}
	}
	return false
}

// limitsSoftCheck is limits_soft_check: a target outside the machine travel
// brings a running cycle to a controlled stop, then raises the critical
// ALARM:2, which blocks until a soft reset.
func (e *Emulator) limitsSoftCheck(ctx context.Context, target [3]float64) {
	if !e.outsideTravel(target) {
		return
	}
	e.logf("soft limit: target %.3f,%.3f", target[0], target[1])
	e.softLimit = true
	if e.state == stCycle {
		e.execState |= execFeedHold
		for {
			e.rt(ctx)
			if e.abort {
				return
			}
			if e.state == stIdle {
				break
			}
			e.idle(ctx, 0, pendAll)
		}
	}
	e.mcReset()
	e.execAlarm = 2
	e.rt(ctx)
}

// mcDwell is G4: wait for the planner to empty, then dwell.
func (e *Emulator) mcDwell(ctx context.Context, seconds float64) {
	if e.state == stCheck {
		return
	}
	e.bufferSynchronize(ctx)
	// delay_sec: whole DWELL_TIME_STEP increments, real-time checks between
	// them; time spent suspended in a hold does not count.
	steps := int64(ceilPositive(seconds * float64(time.Second/dwellTimeStep)))
	d := time.Duration(steps) * dwellTimeStep
	start, susp := e.simNow(), e.suspendSim
	for {
		if e.abort {
			return
		}
		e.rt(ctx)
		if e.abort {
			return
		}
		left := d - (e.simNow() - start - (e.suspendSim - susp))
		if left <= 0 {
			return
		}
		e.idle(ctx, left, pendAll)
	}
}

// homingCycle is mc_homing_cycle: the stage travels in HomingTime to where
// the firmware's cycle leaves it, pull-off away from its switches, and the
// machine position is set as limits_go_home sets it. Only a reset
// interrupts it (ALARM:6); '?' is answered once it has finished.
func (e *Emulator) homingCycle(ctx context.Context) {
	e.advance()
	rest := e.homedRest()
	e.homing = &homingMove{
		from: [2]float64{e.pos[0] + e.off[0], e.pos[1] + e.off[1]},
		to:   rest,
		t0:   e.simNow(),
		dur:  e.cfg.HomingTime,
	}
	for {
		e.advance()
		if e.execState&execReset != 0 || e.runErr != nil {
			e.homing = nil
			e.rt(ctx) // reports ALARM:6 (set by mcReset) and aborts
			return
		}
		if e.homing.done {
			break
		}
		e.idle(ctx, e.homing.t0+e.homing.dur-e.simNow(), execReset)
	}
	e.homing = nil
	e.vel = 0
	e.pos = [3]float64{rest[0], rest[1], e.pos[2]}
	e.off = [2]float64{}
	e.lastPins = e.limitPins()
	e.logf("homed at %.3f,%.3f", e.pos[0], e.pos[1])
	e.rt(ctx)
	if e.abort {
		return
	}
	e.gcSyncPosition()
	e.planSyncPosition()
}

// jogExecute is jog_execute.
func (e *Emulator) jogExecute(ctx context.Context, target [3]float64, feed float64) int {
	if e.set.softLimits && e.outsideTravel(target) {
		return stTravelExceeded
	}
	e.mcLine(ctx, target, feed, false, true)
	if e.state == stIdle && len(e.planner) > 0 {
		e.state = stJog
		e.stWakeUp()
	}
	return statusOK
}
