package grblsim

import (
	"math"
	"time"
)

// block is a planner block: a straight move to target.
type block struct {
	target [3]float64 // machine mm, on the step grid
	feed   float64    // mm/min, ignored for rapids
	rapid  bool       // G0: runs at the axes' maximum rate
	jog    bool       // no feed override
}

// segment is what the steppers execute: the move from the position where
// the block started (or resumed after a hold) to its target, accelerating
// from rest and decelerating to rest (trapezoid, or triangle when short).
type segment struct {
	from   [3]float64
	dir    [3]float64
	length float64 // mm
	acc    float64 // mm/s²
	vpk    float64 // peak speed, mm/s
	ta     float64 // time accelerating (= decelerating), s
	tc     float64 // time cruising, s
	t0     time.Duration

	// Feed hold: from (hs, hv) at ht0 decelerate at acc to rest.
	hold   bool
	hs, hv float64
	ht0    time.Duration
}

func (s *segment) total() float64 { return 2*s.ta + s.tc }

// at returns the distance travelled and the speed t seconds after t0.
func (s *segment) at(t float64) (d, v float64) {
	da := 0.5 * s.acc * s.ta * s.ta
	switch T := s.total(); {
	case t <= 0:
		return 0, 0
	case t < s.ta:
		return 0.5 * s.acc * t * t, s.acc * t
	case t < s.ta+s.tc:
		return da + s.vpk*(t-s.ta), s.vpk
	case t < T:
		r := T - t
		return s.length - 0.5*s.acc*r*r, s.acc * r
	}
	return s.length, 0
}

// homingMove is the simulated homing cycle: a straight move of the true
// stage position.
type homingMove struct {
	from, to [2]float64
	t0, dur  time.Duration
	done     bool
}

// toSteps converts a position on an axis in mm to whole steps as the
// firmware does (plan_buffer_line): lround(target*steps_per_mm) in 32-bit
// floating point, the AVR's float and double.
func (e *Emulator) toSteps(axis int, mm float64) int64 {
	return int64(math.Round(float64(float32(float32(mm) * float32(e.set.stepsPerMM[axis])))))
}

// fromSteps converts steps on an axis to mm.
func (e *Emulator) fromSteps(axis int, steps int64) float64 {
	return float64(steps) / e.set.stepsPerMM[axis]
}

// gridMM returns the position on the step grid nearest mm.
func (e *Emulator) gridMM(axis int, mm float64) float64 {
	return e.fromSteps(axis, e.toSteps(axis, mm))
}

func (e *Emulator) planReset() { e.planner = e.planner[:0] }

// quantized returns the machine position on the step grid (sys_position).
func (e *Emulator) quantized() [3]float64 {
	var q [3]float64
	for i, v := range e.pos {
		q[i] = e.gridMM(i, v)
	}
	return q
}

// planSyncPosition sets the planner position to the machine position.
func (e *Emulator) planSyncPosition() {
	for i := range e.plPos {
		e.plPos[i] = e.toSteps(i, e.pos[i])
	}
}

// planBufferLine appends a block; a move of no steps is dropped
// (PLAN_EMPTY_BLOCK).
func (e *Emulator) planBufferLine(target [3]float64, feed float64, rapid, jog bool) {
	var st [3]int64
	var q [3]float64
	for i := range target {
		st[i] = e.toSteps(i, target[i])
		q[i] = e.fromSteps(i, st[i])
	}
	if st == e.plPos {
		return
	}
	e.plPos = st
	e.planner = append(e.planner, block{target: q, feed: feed, rapid: rapid, jog: jog})
}

// limitByAxis is limit_value_by_axis_maximum: the largest value along unit
// that keeps every axis within its own maximum.
func limitByAxis(maxv [3]float64, unit [3]float64) float64 {
	v := math.Inf(1)
	for i, u := range unit {
		if u != 0 {
			v = math.Min(v, math.Abs(maxv[i]/u))
		}
	}
	return v
}

// newSegment starts the front planner block from the current position.
func (e *Emulator) newSegment(t0 time.Duration) *segment {
	b := e.planner[0]
	s := &segment{from: e.pos, t0: t0}
	var l2 float64
	for i := range b.target {
		d := b.target[i] - e.pos[i]
		s.dir[i] = d
		l2 += d * d
	}
	s.length = math.Sqrt(l2)
	if s.length < 1e-9 {
		s.length = 0
		return s
	}
	for i := range s.dir {
		s.dir[i] /= s.length
	}
	rapidRate := limitByAxis(e.set.maxRate, s.dir)          // mm/min
	s.acc = math.Max(limitByAxis(e.set.accel, s.dir), 1e-3) // mm/s²; $12x=0 would never move
	var nominal float64
	if b.rapid {
		nominal = rapidRate * float64(e.rOvr) / 100
	} else {
		nominal = b.feed
		if !b.jog {
			nominal *= float64(e.fOvr) / 100
		}
		nominal = math.Min(nominal, rapidRate)
	}
	nominal = math.Max(nominal, 1) // MINIMUM_FEED_RATE
	vmax := nominal / 60
	s.vpk = math.Min(vmax, math.Sqrt(s.acc*s.length))
	s.ta = s.vpk / s.acc
	da := 0.5 * s.acc * s.ta * s.ta
	s.tc = math.Max(0, (s.length-2*da)/s.vpk)
	return s
}

// stWakeUp starts the steppers on the planner's front block.
func (e *Emulator) stWakeUp() {
	if e.seg == nil && len(e.planner) > 0 {
		e.advance()
		e.seg = e.newSegment(e.simNow())
		e.holdStopped = false
	}
}

// stKill stops the steppers at once (st_go_idle): the stage stays where it
// is this instant, at its last whole step.
func (e *Emulator) stKill() {
	e.seg = nil
	e.homing = nil
	e.vel = 0
	e.pos = e.quantized()
}

// stHold makes the steppers decelerate to rest (feed hold).
func (e *Emulator) stHold() {
	e.advance()
	s := e.seg
	if s == nil {
		if e.execState&execCycleStop == 0 {
			e.holdStop()
		}
		return
	}
	if s.hold {
		return
	}
	now := e.simNow()
	s.hs, s.hv = s.at((now - s.t0).Seconds())
	s.ht0 = now
	s.hold = true
	e.advance()
}

// holdStop records that a hold has come to rest. The firmware then flags
// EXEC_CYCLE_STOP; InjectStuckHold withholds it.
func (e *Emulator) holdStop() {
	if e.stuckHold {
		e.holdStopped = true
		return
	}
	e.execState |= execCycleStop
	e.signal()
}

func (e *Emulator) setAlong(s *segment, d float64) {
	for i := range e.pos {
		e.pos[i] = s.from[i] + s.dir[i]*d
	}
}

// advance brings the simulated stage up to the present: position, speed,
// completed blocks, the end of a hold or of the cycle.
func (e *Emulator) advance() {
	now := e.simNow()
	if h := e.homing; h != nil {
		f := 1.0
		if h.dur > 0 {
			f = math.Min(1, float64(now-h.t0)/float64(h.dur))
		}
		if f >= 1 {
			h.done = true
		}
		for i := range 2 {
			e.pos[i] = h.from[i] + (h.to[i]-h.from[i])*f - e.off[i]
		}
		return
	}
	for e.seg != nil {
		s := e.seg
		if s.hold {
			th := (now - s.ht0).Seconds()
			if s.acc > 0 && th < s.hv/s.acc {
				e.setAlong(s, s.hs+s.hv*th-0.5*s.acc*th*th)
				e.vel = s.hv - s.acc*th
				return
			}
			d := s.hs
			if s.acc > 0 {
				d += s.hv * s.hv / (2 * s.acc)
			}
			e.vel = 0
			e.seg = nil
			if d >= s.length-1e-9 {
				e.pos = e.planner[0].target
				e.planner = e.planner[1:]
			} else {
				e.setAlong(s, d)
				e.pos = e.quantized() // the steppers stop on a step
			}
			e.holdStop()
			return
		}
		t := (now - s.t0).Seconds()
		if t < s.total() {
			d, v := s.at(t)
			e.setAlong(s, d)
			e.vel = v
			return
		}
		e.pos = e.planner[0].target
		e.planner = e.planner[1:]
		e.vel = 0
		if len(e.planner) > 0 {
			e.seg = e.newSegment(s.t0 + time.Duration(s.total()*float64(time.Second)))
			continue
		}
		e.seg = nil
		e.execState |= execCycleStop
		e.signal()
		return
	}
}

// nextEvent returns the simulated time until the steppers' next
// transition (end of a block, of a hold, of homing), if they are running.
func (e *Emulator) nextEvent() (time.Duration, bool) {
	now := e.simNow()
	if h := e.homing; h != nil {
		return max(h.t0+h.dur-now, 0), true
	}
	s := e.seg
	if s == nil {
		return 0, false
	}
	var end time.Duration
	if s.hold {
		if s.acc > 0 {
			end = s.ht0 + time.Duration(s.hv/s.acc*float64(time.Second))
		}
	} else {
		end = s.t0 + time.Duration(s.total()*float64(time.Second))
	}
	return max(end-now, 0), true
}
