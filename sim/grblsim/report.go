package grblsim

import (
	"math"
	"strconv"
	"strings"
)

// emit queues output; the main loop writes it when it next waits. A noisy
// link corrupts some of its lines on the way.
func (e *Emulator) emit(s string) {
	if e.mute {
		e.cnt.Muted += len(s)
		return
	}
	if e.noise == 0 {
		e.out = append(e.out, s...)
		return
	}
	for s != "" {
		line, rest, ok := strings.Cut(s, "\n")
		if ok {
			line += "\n"
		}
		s = rest
		body := strings.TrimRight(line, "\r\n")
		if body == "" || e.rng.Float64() >= e.noise {
			e.out = append(e.out, line...)
			continue
		}
		e.cnt.Corrupted++
		i := e.rng.IntN(len(body))
		b := []byte(line)
		if e.rng.IntN(2) == 0 {
			b = append(b[:i], b[i+1:]...) // a byte lost
		} else {
			c := byte(e.rng.IntN(254))
			if c >= '\n' {
				c++
			}
			if c >= '\r' {
				c++
			}
			if c == b[i] {
				c ^= 0x80
			}
			b[i] = c // a byte garbled; never into a line end
		}
		e.logf("noise: %q sent as %q", line, b)
		e.out = append(e.out, b...)
	}
}

// pinState is the Pn: field: the input pins active, in the firmware's
// order (probe, limits, door, reset, hold, cycle start).
func (e *Emulator) pinState() string {
	limits := e.limitPins()
	var b strings.Builder
	for _, p := range "PXYZDRHS" {
		on := strings.ContainsRune(e.pins, p)
		switch p {
		case 'X':
			on = on || limits&1 != 0
		case 'Y':
			on = on || limits&2 != 0
		}
		if on {
			b.WriteRune(p)
		}
	}
	return b.String()
}

// reportStatusMessage answers a line: "ok" or "error:N".
func (e *Emulator) reportStatusMessage(code int) {
	if code == statusOK {
		if e.dropOK > 0 {
			e.dropOK--
			e.cnt.OKDropped++
			return
		}
		e.emit("ok\r\n")
		return
	}
	e.logf("error:%d", code)
	e.emit("error:" + strconv.Itoa(code) + "\r\n")
}

// printFloat formats n with the given decimals the way GRBL's printFloat
// does: a '-' for any negative value, then round half up.
func printFloat(n float64, decimals int) string {
	var b strings.Builder
	if n < 0 {
		b.WriteByte('-')
		n = -n
	}
	p := math.Pow10(decimals)
	a := uint64(math.Floor(n*p + 0.5))
	if decimals == 0 {
		b.WriteString(strconv.FormatUint(a, 10))
		return b.String()
	}
	ip, fp := a/uint64(p), a%uint64(p)
	b.WriteString(strconv.FormatUint(ip, 10))
	b.WriteByte('.')
	fs := strconv.FormatUint(fp, 10)
	b.WriteString(strings.Repeat("0", decimals-len(fs)))
	b.WriteString(fs)
	return b.String()
}

func axisValues(v [3]float64) string {
	return printFloat(v[0], 3) + "," + printFloat(v[1], 3) + "," + printFloat(v[2], 3)
}

// reportRealtimeStatus is report_realtime_status: the answer to '?'.
func (e *Emulator) reportRealtimeStatus() {
	e.advance()
	var b strings.Builder
	b.WriteByte('<')
	switch e.state {
	case stHold:
		if e.suspend&suspJogCancel != 0 {
			b.WriteString("Jog")
		} else if e.suspend&suspHoldComplete != 0 {
			b.WriteString("Hold:0")
		} else {
			b.WriteString("Hold:1")
		}
	default:
		b.WriteString(e.state.String())
	}
	// Machine position on the step grid. Work offsets are always zero, so
	// WPos has the same numbers.
	pos := e.quantized()
	if e.set.statusReportMask&rtStatusPositionType != 0 {
		b.WriteString("|MPos:")
	} else {
		b.WriteString("|WPos:")
	}
	b.WriteString(axisValues(pos))
	if e.set.statusReportMask&rtStatusBufferState != 0 {
		b.WriteString("|Bf:" + strconv.Itoa(plannerBlocks-len(e.planner)) + "," + strconv.Itoa(rxBufferSize-e.rxLen))
	}
	spindle := 0.0
	if e.gc.modal.spindle != 0 {
		spindle = e.gc.spindleSpeed * float64(e.sOvr) / 100
	}
	b.WriteString("|FS:" + printFloat(e.vel*60, 0) + "," + printFloat(spindle, 0))
	if pins := e.pinState(); pins != "" {
		b.WriteString("|Pn:" + pins)
	}
	busy := e.state == stHoming || e.state == stCycle || e.state == stHold || e.state == stJog
	if e.wcoCounter > 0 {
		e.wcoCounter--
	} else {
		e.wcoCounter = 9 // REPORT_WCO_REFRESH_IDLE_COUNT-1
		if busy {
			e.wcoCounter = 29 // REPORT_WCO_REFRESH_BUSY_COUNT-1
		}
		if e.ovrCounter == 0 {
			e.ovrCounter = 1 // overrides on the next report
		}
		b.WriteString("|WCO:0.000,0.000,0.000")
	}
	if e.ovrCounter > 0 {
		e.ovrCounter--
	} else {
		e.ovrCounter = 9 // REPORT_OVR_REFRESH_IDLE_COUNT-1
		if busy {
			e.ovrCounter = 19 // REPORT_OVR_REFRESH_BUSY_COUNT-1
		}
		b.WriteString("|Ov:" + strconv.Itoa(e.fOvr) + "," + strconv.Itoa(e.rOvr) + "," + strconv.Itoa(e.sOvr))
		if e.gc.modal.spindle != 0 || e.gc.modal.coolant != 0 {
			b.WriteString("|A:")
			switch e.gc.modal.spindle {
			case 3:
				b.WriteByte('S')
			case 4:
				b.WriteByte('C')
			}
			if e.gc.modal.coolant&coolantFlood != 0 {
				b.WriteByte('F')
			}
		}
	}
	b.WriteString(">\r\n")
	e.emit(b.String())
}

// reportSettings is report_grbl_settings ($$).
func (e *Emulator) reportSettings() {
	s := &e.set
	var b strings.Builder
	u := func(n int, v int) {
		b.WriteString("$" + strconv.Itoa(n) + "=" + strconv.Itoa(v) + "\r\n")
	}
	f := func(n int, v float64, dec int) {
		b.WriteString("$" + strconv.Itoa(n) + "=" + printFloat(v, dec) + "\r\n")
	}
	bi := func(v bool) int {
		if v {
			return 1
		}
		return 0
	}
	u(0, s.pulseMicroseconds)
	u(1, s.stepperIdleLock)
	u(2, s.stepInvertMask)
	u(3, s.dirInvertMask)
	u(4, bi(s.invertStEnable))
	u(5, bi(s.invertLimitPins))
	u(6, bi(s.invertProbePin))
	u(10, s.statusReportMask)
	f(11, s.junctionDeviation, 3)
	f(12, s.arcTolerance, 3)
	u(13, bi(s.reportInches))
	u(20, bi(s.softLimits))
	u(21, bi(s.hardLimits))
	u(22, bi(s.homing))
	u(23, s.homingDirMask)
	f(24, s.homingFeedRate, 3)
	f(25, s.homingSeekRate, 3)
	u(26, s.homingDebounce)
	f(27, s.homingPulloff, 3)
	f(30, s.rpmMax, 0)
	f(31, s.rpmMin, 0)
	u(32, bi(s.laserMode))
	for set, vals := range [4][3]float64{s.stepsPerMM, s.maxRate, s.accel, s.maxTravel} {
		for axis, v := range vals {
			f(100+10*set+axis, v, 3)
		}
	}
	e.emit(b.String())
}

// reportGcodeModes is report_gcode_modes ($G).
func (e *Emulator) reportGcodeModes() {
	m := e.gc.modal
	var b strings.Builder
	b.WriteString("[GC:G" + strconv.Itoa(m.motion))
	b.WriteString(" G" + strconv.Itoa(m.coordSelect+54))
	b.WriteString(" G" + strconv.Itoa(m.plane+17))
	b.WriteString(" G" + strconv.Itoa(21-m.units))
	b.WriteString(" G" + strconv.Itoa(m.distance+90))
	b.WriteString(" G" + strconv.Itoa(94-m.feedMode))
	switch m.programFlow {
	case 3:
		b.WriteString(" M0")
	case 2, 30:
		b.WriteString(" M" + strconv.Itoa(m.programFlow))
	}
	switch m.spindle {
	case 3:
		b.WriteString(" M3")
	case 4:
		b.WriteString(" M4")
	default:
		b.WriteString(" M5")
	}
	if m.coolant&coolantFlood != 0 {
		b.WriteString(" M8")
	} else {
		b.WriteString(" M9")
	}
	b.WriteString(" T" + strconv.Itoa(e.gc.tool))
	b.WriteString(" F" + printFloat(e.gc.feed, 0))
	b.WriteString(" S" + printFloat(e.gc.spindleSpeed, 0))
	b.WriteString("]\r\n")
	e.emit(b.String())
}

// reportNgcParameters is report_ngc_parameters ($#): all offsets are zero.
func (e *Emulator) reportNgcParameters() {
	const zero = "0.000,0.000,0.000"
	var b strings.Builder
	for _, n := range []string{"54", "55", "56", "57", "58", "59", "28", "30", "92"} {
		b.WriteString("[G" + n + ":" + zero + "]\r\n")
	}
	b.WriteString("[TLO:0.000]\r\n[PRB:" + zero + ":0]\r\n")
	e.emit(b.String())
}
