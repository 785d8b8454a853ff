package grblsim

import (
	"context"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/waferd/waferd/motion"
)

// settings are the $-settings (settings.h). Acceleration is kept in mm/s².
type settings struct {
	pulseMicroseconds int
	stepperIdleLock   int
	stepInvertMask    int
	dirInvertMask     int
	invertStEnable    bool
	invertLimitPins   bool
	invertProbePin    bool
	statusReportMask  int
	junctionDeviation float64
	arcTolerance      float64
	reportInches      bool
	softLimits        bool
	hardLimits        bool
	homing            bool
	homingDirMask     int
	homingFeedRate    float64
	homingSeekRate    float64
	homingDebounce    int
	homingPulloff     float64
	rpmMax, rpmMin    float64
	laserMode         bool
	stepsPerMM        [3]float64
	maxRate           [3]float64 // mm/min
	accel             [3]float64 // mm/s²
	maxTravel         [3]float64 // mm, positive
}

// Status report mask bits ($10).
const (
	rtStatusPositionType = 1 << 0 // MPos rather than WPos
	rtStatusBufferState  = 1 << 1 // Bf:
)

// restoreSettings loads the defaults: GRBL 1.1h's own (defaults.h,
// DEFAULTS_GENERIC), then what the Config sets (see Config).
func (e *Emulator) restoreSettings() {
	c := e.cfg
	e.set = settings{
		pulseMicroseconds: 10,
		stepperIdleLock:   25,
		statusReportMask:  rtStatusPositionType,
		junctionDeviation: 0.01,
		arcTolerance:      0.002,
		homingFeedRate:    25,
		homingSeekRate:    500,
		homingDebounce:    250,
		homingPulloff:     1,
		rpmMax:            1000,
		stepsPerMM:        [3]float64{250, 250, 250},
		maxRate:           [3]float64{500, 500, 500},
		accel:             [3]float64{10, 10, 10},
		maxTravel:         [3]float64{200, 200, 200},
	}
	e.forceOrigin = c.ForceSetOrigin
	set := map[int]float64{}
	if t := c.Travel; t != (motion.Rect{}) {
		if t.Min.X >= 0 && t.Min.Y >= 0 {
			e.forceOrigin = true
			set[23] = 3 // home to the - ends: space 0..$13x
			set[130], set[131] = t.Max.X.Millimetres(), t.Max.Y.Millimetres()
		} else {
			set[23] = 0
			set[130], set[131] = (-t.Min.X).Millimetres(), (-t.Min.Y).Millimetres()
			if t.Max.X > 0 || t.Max.Y > 0 {
				set[130], set[131] = (t.Max.X - t.Min.X).Millimetres(), (t.Max.Y - t.Min.Y).Millimetres()
			}
		}
	}
	if c.MaxRate > 0 {
		set[110], set[111], set[112] = c.MaxRate, c.MaxRate, c.MaxRate
	}
	if c.Accel > 0 {
		set[120], set[121], set[122] = c.Accel, c.Accel, c.Accel
	}
	if c.HomingRequired {
		set[22], set[20] = 1, 1
	}
	maps.Copy(set, c.Settings)
	// $22 first: $20=1 needs homing enabled.
	keys := slices.Sorted(maps.Keys(set))
	if i := slices.Index(keys, 22); i > 0 {
		keys = append([]int{22}, slices.Delete(keys, i, i+1)...)
	}
	for _, n := range keys {
		if st := e.storeGlobalSetting(n, set[n]); st != statusOK {
			panic(fmt.Sprintf("grblsim: Config sets $%d=%g: error:%d", n, set[n], st))
		}
	}
}

// axisSpace returns machine space on an axis: where its soft limits are,
// what homing leaves between the switch and the far end.
func (e *Emulator) axisSpace(axis int) (lo, hi float64) {
	t := e.set.maxTravel[axis]
	if e.forceOrigin && e.set.homingDirMask&(1<<axis) != 0 {
		return 0, t
	}
	return -t, 0
}

// switchAt returns where an axis's limit switch triggers, in machine
// coordinates after homing, and whether it is at the + end.
func (e *Emulator) switchAt(axis int) (at float64, plus bool) {
	t, p := e.set.maxTravel[axis], e.set.homingPulloff
	minus := e.set.homingDirMask&(1<<axis) != 0
	switch {
	case e.forceOrigin && minus:
		return -p, false
	case e.forceOrigin:
		return p, true
	case minus:
		return -t, false
	}
	return 0, true
}

// homedRest returns the machine position (X, Y) where the homing cycle
// leaves the stage: pull-off away from the switch (limits_go_home), on the
// step grid.
func (e *Emulator) homedRest() [2]float64 {
	var r [2]float64
	for axis := range r {
		sw, plus := e.switchAt(axis)
		switch {
		case e.forceOrigin:
			r[axis] = 0
		case plus:
			r[axis] = e.gridMM(axis, sw-e.set.homingPulloff)
		default:
			r[axis] = e.gridMM(axis, sw+e.set.homingPulloff)
		}
	}
	return r
}

// limitPins returns the limit switches the stage is on (bit per axis).
func (e *Emulator) limitPins() uint {
	var pins uint
	for axis := range 2 {
		x := e.pos[axis] + e.off[axis]
		sw, plus := e.switchAt(axis)
		const eps = 1e-6
		if plus && x >= sw-eps || !plus && x <= sw+eps {
			pins |= 1 << axis
		}
	}
	return pins
}

// storeGlobalSetting is settings_store_global_setting.
func (e *Emulator) storeGlobalSetting(param int, value float64) int {
	if value < 0 {
		return stNegativeValue
	}
	s := &e.set
	if param >= 100 {
		p := param - 100
		axis, set := p%10, p/10
		if axis >= 3 || set >= 4 {
			return stInvalidStatement
		}
		switch set {
		case 0:
			if value <= 0 {
				return stInvalidStatement // the firmware would divide by zero
			}
			// The firmware keeps the step counts: the stage stays put, its
			// position in mm changes.
			steps := e.toSteps(axis, e.pos[axis])
			s.stepsPerMM[axis] = value
			if axis < 2 {
				x := e.pos[axis] + e.off[axis]
				e.pos[axis] = float64(steps) / value
				e.off[axis] = x - e.pos[axis]
			} else {
				e.pos[axis] = float64(steps) / value
			}
			e.planSyncPosition()
			e.gcSyncPosition()
		case 1:
			s.maxRate[axis] = value
		case 2:
			s.accel[axis] = value
		case 3:
			s.maxTravel[axis] = value
		}
		return statusOK
	}
	iv := int(uint8(math.Trunc(value)))
	switch param {
	case 0:
		if iv < 3 {
			return stSettingStepPulseMin
		}
		s.pulseMicroseconds = iv
	case 1:
		s.stepperIdleLock = iv
	case 2:
		s.stepInvertMask = iv
	case 3:
		s.dirInvertMask = iv
	case 4:
		s.invertStEnable = iv != 0
	case 5:
		s.invertLimitPins = iv != 0
	case 6:
		s.invertProbePin = iv != 0
	case 10:
		s.statusReportMask = iv
	case 11:
		s.junctionDeviation = value
	case 12:
		s.arcTolerance = value
	case 13:
		s.reportInches = iv != 0
		e.wcoCounter = 0
	case 20:
		if iv != 0 {
			if !s.homing {
				return stSoftLimitError
			}
			s.softLimits = true
		} else {
			s.softLimits = false
		}
	case 21:
		s.hardLimits = iv != 0
	case 22:
		s.homing = iv != 0
		if !s.homing {
			s.softLimits = false
		}
	case 23:
		s.homingDirMask = iv
	case 24:
		s.homingFeedRate = value
	case 25:
		s.homingSeekRate = value
	case 26:
		s.homingDebounce = iv
	case 27:
		s.homingPulloff = value
	case 30:
		s.rpmMax = value
	case 31:
		s.rpmMin = value
	case 32:
		s.laserMode = iv != 0
	default:
		return stInvalidStatement
	}
	return statusOK
}

// systemExecuteLine is system_execute_line: the '$' commands.
func (e *Emulator) systemExecuteLine(ctx context.Context, line string) int {
	at := func(k int) byte {
		if k < len(line) {
			return line[k]
		}
		return 0
	}
	switch at(1) {
	case 0:
		e.emit("[HLP:$$ $# $G $I $N $x=val $Nx=line $J=line $SLP $C $X $H ~ ! ? ctrl-x]\r\n")
		return statusOK
	case 'J':
		if e.state != stIdle && e.state != stJog {
			return stIdleError
		}
		if at(2) != '=' {
			return stInvalidStatement
		}
		return e.gcExecuteLine(ctx, line)
	case '$', 'G', 'C', 'X':
		if at(2) != 0 {
			return stInvalidStatement
		}
		switch at(1) {
		case '$':
			if e.state == stCycle || e.state == stHold {
				return stIdleError
			}
			e.reportSettings()
		case 'G':
			e.reportGcodeModes()
		case 'C':
			if e.state == stCheck {
				e.mcReset()
				e.emit("[MSG:Disabled]\r\n")
			} else {
				if e.state != stIdle {
					return stIdleError
				}
				e.state = stCheck
				e.emit("[MSG:Enabled]\r\n")
			}
		case 'X':
			if e.state == stAlarm {
				e.emit("[MSG:Caution: Unlocked]\r\n")
				e.state = stIdle
			}
		}
		return statusOK
	}
	// Everything else needs Idle or Alarm.
	if e.state != stIdle && e.state != stAlarm {
		return stIdleError
	}
	switch at(1) {
	case '#':
		if at(2) != 0 {
			return stInvalidStatement
		}
		e.reportNgcParameters()
		return statusOK
	case 'H':
		if !e.set.homing {
			return stSettingDisabled
		}
		if at(2) != 0 {
			return stInvalidStatement // no HOMING_SINGLE_AXIS_COMMANDS
		}
		e.state = stHoming
		e.homingCycle(ctx)
		if !e.abort {
			e.state = stIdle
		}
		return statusOK
	case 'S':
		if line != "$SLP" {
			return stInvalidStatement
		}
		e.execState |= execSleep
		return statusOK
	case 'I':
		if at(2) == 0 {
			opt := "V"
			if e.forceOrigin {
				opt += "Z"
			}
			e.emit("[VER:1.1h.20190830:" + e.buildInfo + "]\r\n[OPT:" + opt + ",15,128]\r\n")
			return statusOK
		}
		if at(2) != '=' {
			return stInvalidStatement
		}
		e.buildInfo = line[3:]
		return statusOK
	case 'R':
		if len(line) != 6 || !strings.HasPrefix(line, "$RST=") {
			return stInvalidStatement
		}
		switch line[5] {
		case '$', '*':
			e.restoreSettings()
		case '#':
		default:
			return stInvalidStatement
		}
		e.emit("[MSG:Restoring defaults]\r\n")
		e.mcReset()
		return statusOK
	case 'N':
		if at(2) == 0 {
			for n, l := range e.startup {
				e.emit("$N" + strconv.Itoa(n) + "=" + l + "\r\n")
			}
			return statusOK
		}
		if e.state != stIdle {
			return stIdleError
		}
		i := 2
		param, ok := readFloat(line, &i)
		if !ok {
			return stBadNumberFormat
		}
		if at(i) != '=' {
			return stInvalidStatement
		}
		if n := int(param); n >= 0 && n < len(e.startup) {
			e.startup[n] = line[i+1:] // stored, never executed
		}
		return statusOK
	}
	i := 1
	param, ok := readFloat(line, &i)
	if !ok {
		return stBadNumberFormat
	}
	if at(i) != '=' {
		return stInvalidStatement
	}
	i++
	value, ok := readFloat(line, &i)
	if !ok {
		return stBadNumberFormat
	}
	if at(i) != 0 || param > 255 || param < 0 {
		return stInvalidStatement
	}
	st := e.storeGlobalSetting(int(uint8(param)), value)
	if st == statusOK {
		e.logf("setting $%d=%g", int(param), value)
	}
	return st
}
