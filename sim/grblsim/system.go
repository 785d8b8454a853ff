package grblsim

import (
	"context"
	"math"
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

// restoreSettings loads the defaults, derived from the Config. $10=3
// (MPos and Bf:); the firmware's default is 1.
func (e *Emulator) restoreSettings() {
	c := e.cfg
	e.travel = c.Travel
	e.set = settings{
		pulseMicroseconds: 10,
		stepperIdleLock:   25,
		statusReportMask:  rtStatusPositionType | rtStatusBufferState,
		junctionDeviation: 0.01,
		arcTolerance:      0.002,
		softLimits:        c.HomingRequired,
		homing:            c.HomingRequired,
		homingFeedRate:    25,
		homingSeekRate:    500,
		homingDebounce:    250,
		homingPulloff:     1,
		rpmMax:            1000,
		stepsPerMM:        [3]float64{stepsPerMM, stepsPerMM, stepsPerMM},
		maxRate:           [3]float64{c.MaxRate, c.MaxRate, c.MaxRate},
		accel:             [3]float64{c.Accel, c.Accel, c.Accel},
		maxTravel: [3]float64{
			(c.Travel.Max.X - c.Travel.Min.X).Millimetres(),
			(c.Travel.Max.Y - c.Travel.Min.Y).Millimetres(),
			50,
		},
	}
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
			// Positions are always on a 1 µm grid here; the value is only reported.
			s.stepsPerMM[axis] = value
		case 1:
			s.maxRate[axis] = value
		case 2:
			s.accel[axis] = value
		case 3:
			s.maxTravel[axis] = value
			switch axis {
			case 0:
				e.travel.Max.X = e.travel.Min.X + motion.MM(value)
			case 1:
				e.travel.Max.Y = e.travel.Min.Y + motion.MM(value)
			}
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
			e.emit("[VER:1.1h.20190830:" + e.buildInfo + "]\r\n[OPT:V,15,128]\r\n")
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
