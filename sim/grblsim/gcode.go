package grblsim

import (
	"context"
	"math"
)

// Status codes (report.h); meanings in shared/grbl/error_codes_en_US.csv.
const (
	statusOK                 = 0
	stExpectedCommandLetter  = 1
	stBadNumberFormat        = 2
	stInvalidStatement       = 3
	stNegativeValue          = 4
	stSettingDisabled        = 5
	stSettingStepPulseMin    = 6
	stIdleError              = 8
	stSystemGCLock           = 9
	stSoftLimitError         = 10
	stOverflow               = 11
	stTravelExceeded         = 15
	stInvalidJogCommand      = 16
	stUnsupportedCommand     = 20
	stModalGroupViolation    = 21
	stUndefinedFeedRate      = 22
	stCommandValueNotInteger = 23
	stAxisCommandConflict    = 24
	stWordRepeated           = 25
	stInvalidLineNumber      = 27
	stValueWordMissing       = 28
	stG53InvalidMotionMode   = 30
	stAxisWordsExist         = 31
	stUnusedWords            = 36
	stMaxValueExceeded       = 38
)

const (
	motionSeek   = 0
	motionLinear = 1
	motionNone   = 80

	coolantFlood = 1 << 1 // PL_COND_FLAG_COOLANT_FLOOD position does not matter here

	mmPerInch = 25.4
)

// gcModal is the modal state of the g-code parser.
type gcModal struct {
	motion      int // 0, 1, 80
	feedMode    int // 0: G94 (G93 unsupported)
	units       int // 0: G21 mm, 1: G20 inches
	distance    int // 0: G90, 1: G91
	plane       int // 0: G17, 1: G18, 2: G19
	coordSelect int // 0..5: G54..G59
	programFlow int // 0 running, 3: M0 paused, 2: M2, 30: M30
	spindle     int // 0 off (M5), 3: M3, 4: M4
	coolant     int // coolantFlood bit: M8
}

type gcState struct {
	modal        gcModal
	feed         float64 // mm/min
	spindleSpeed float64
	tool         int
	lineNumber   int32
	position     [3]float64 // where the parser thinks the tool is, machine mm
}

func (e *Emulator) gcInit() {
	e.gc = gcState{modal: gcModal{motion: motionSeek}}
}

func (e *Emulator) gcSyncPosition() { e.gc.position = e.quantized() }

// Modal groups (gcode.h) and value words, as bit indexes.
const (
	mgG0  = iota // G4, G53 (non-modal)
	mgG1         // motion
	mgG2         // plane
	mgG3         // distance
	mgG4         // G91.1
	mgG5         // feed rate mode
	mgG6         // units
	mgG7         // cutter radius compensation
	mgG8         // tool length offset
	mgG12        // coordinate system
	mgG13        // path control
	mgM4         // program flow
	mgM7         // spindle
	mgM8         // coolant
)

const (
	wordF = iota
	wordI
	wordJ
	wordK
	wordL
	wordN
	wordP
	wordR
	wordS
	wordT
	wordX
	wordY
	wordZ
)

const (
	axisCommandNone = iota
	axisCommandNonModal
	axisCommandMotionMode
	axisCommandToolLength
)

// gcExecuteLine is gc_execute_line for the supported subset: it parses and
// checks a whole block, then executes it. line is upper case without
// spaces or comments. A line starting with "$J=" is a jog.
func (e *Emulator) gcExecuteLine(ctx context.Context, line string) int {
	blk := e.gc.modal
	jog := line[0] == '$'
	var (
		axisCommand  = axisCommandNone
		axisWords    uint
		commandWords uint
		valueWords   uint
		nonModal     int
		f, p, s      float64
		n            float64
		t            int
		xyz          [3]float64
	)
	i := 0
	if jog {
		blk.motion = motionLinear
		blk.feedMode = 0
		i = 3
	}
	for i < len(line) {
		letter := line[i]
		if letter < 'A' || letter > 'Z' {
			return stExpectedCommandLetter
		}
		i++
		value, ok := readFloat(line, &i)
		if !ok {
			return stBadNumberFormat
		}
		intValue := int(math.Trunc(value))
		mantissa := int(math.Round(100 * (value - float64(intValue))))
		switch letter {
		case 'G':
			var bit int
			switch intValue {
			case 4, 53:
				bit = mgG0
				nonModal = intValue
			case 0, 1:
				if axisCommand != axisCommandNone {
					return stAxisCommandConflict
				}
				axisCommand = axisCommandMotionMode
				bit = mgG1
				blk.motion = intValue
			case 80:
				bit = mgG1
				blk.motion = motionNone
			case 17, 18, 19:
				bit = mgG2
				blk.plane = intValue - 17
			case 90, 91:
				if mantissa == 0 {
					bit = mgG3
					blk.distance = intValue - 90
				} else {
					bit = mgG4
					if mantissa != 10 || intValue == 90 {
						return stUnsupportedCommand // G90.1
					}
					mantissa = 0 // G91.1: arc IJK incremental, the default.
				}
			case 94:
				bit = mgG5
			case 20, 21:
				bit = mgG6
				blk.units = 21 - intValue
			case 40:
				bit = mgG7
			case 49:
				if axisCommand != axisCommandNone {
					return stAxisCommandConflict
				}
				axisCommand = axisCommandToolLength
				bit = mgG8
			case 54, 55, 56, 57, 58, 59:
				bit = mgG12
				blk.coordSelect = intValue - 54
			case 61:
				bit = mgG13
				if mantissa != 0 {
					return stUnsupportedCommand
				}
			default:
				// Includes G2/G3, G10, G28, G30, G38.x, G43.1, G92 and G93,
				// which the firmware has but this emulator does not.
				return stUnsupportedCommand
			}
			if mantissa > 0 {
				return stCommandValueNotInteger
			}
			if commandWords&(1<<bit) != 0 {
				return stModalGroupViolation
			}
			commandWords |= 1 << bit
		case 'M':
			if mantissa > 0 {
				return stCommandValueNotInteger
			}
			var bit int
			switch intValue {
			case 0, 1, 2, 30:
				bit = mgM4
				switch intValue {
				case 0:
					blk.programFlow = 3
				case 1: // optional stop: ignored
				default:
					blk.programFlow = intValue
				}
			case 3, 4, 5:
				bit = mgM7
				blk.spindle = intValue
				if intValue == 5 {
					blk.spindle = 0
				}
			case 8, 9: // M7 needs ENABLE_M7, off by default
				bit = mgM8
				if intValue == 8 {
					blk.coolant |= coolantFlood
				} else {
					blk.coolant = 0
				}
			default:
				return stUnsupportedCommand
			}
			if commandWords&(1<<bit) != 0 {
				return stModalGroupViolation
			}
			commandWords |= 1 << bit
		default:
			var bit int
			switch letter {
			case 'F':
				bit, f = wordF, value
			case 'I':
				bit = wordI
			case 'J':
				bit = wordJ
			case 'K':
				bit = wordK
			case 'L':
				bit = wordL
			case 'N':
				bit, n = wordN, math.Trunc(value)
			case 'P':
				bit, p = wordP, value
			case 'R':
				bit = wordR
			case 'S':
				bit, s = wordS, value
			case 'T':
				bit = wordT
				if value > 255 {
					return stMaxValueExceeded
				}
				t = intValue
			case 'X', 'Y', 'Z':
				ax := int(letter - 'X')
				bit = wordX + ax
				xyz[ax] = value
				axisWords |= 1 << ax
			default:
				return stUnsupportedCommand
			}
			if valueWords&(1<<bit) != 0 {
				return stWordRepeated
			}
			if bit == wordF || bit == wordN || bit == wordP || bit == wordT || bit == wordS {
				if value < 0 {
					return stNegativeValue
				}
			}
			valueWords |= 1 << bit
		}
	}

	// Error checks (STEP 3).
	if axisWords != 0 && axisCommand == axisCommandNone {
		axisCommand = axisCommandMotionMode
	}
	if valueWords&(1<<wordN) != 0 && n > 10000000 {
		return stInvalidLineNumber
	}
	if jog {
		if valueWords&(1<<wordF) == 0 {
			return stUndefinedFeedRate
		}
		if blk.units == 1 {
			f *= mmPerInch
		}
	} else if valueWords&(1<<wordF) != 0 {
		if blk.units == 1 {
			f *= mmPerInch
		}
	} else {
		f = e.gc.feed
	}
	if valueWords&(1<<wordS) == 0 {
		s = e.gc.spindleSpeed
	}
	if nonModal == 4 {
		if valueWords&(1<<wordP) == 0 {
			return stValueWordMissing
		}
		valueWords &^= 1 << wordP
	}
	if blk.units == 1 {
		for ax := range xyz {
			if axisWords&(1<<ax) != 0 {
				xyz[ax] *= mmPerInch
			}
		}
	}
	if axisCommand != axisCommandToolLength && axisWords != 0 {
		for ax := range xyz {
			switch {
			case axisWords&(1<<ax) == 0:
				xyz[ax] = e.gc.position[ax]
			case nonModal == 53:
				// Machine coordinates as given.
			case blk.distance == 1:
				xyz[ax] += e.gc.position[ax]
			}
			// Absolute: work coordinate offsets are all zero here.
		}
	}
	if nonModal == 53 && blk.motion != motionSeek && blk.motion != motionLinear {
		return stG53InvalidMotionMode
	}
	if blk.motion == motionNone {
		if axisWords != 0 {
			return stAxisWordsExist
		}
	} else if axisCommand == axisCommandMotionMode {
		if blk.motion == motionLinear && f == 0 {
			return stUndefinedFeedRate
		}
		if axisWords == 0 {
			axisCommand = axisCommandNone
		}
	}
	if jog {
		valueWords &^= 1<<wordN | 1<<wordF
	} else {
		valueWords &^= 1<<wordN | 1<<wordF | 1<<wordS | 1<<wordT
	}
	if axisCommand != axisCommandNone {
		valueWords &^= 1<<wordX | 1<<wordY | 1<<wordZ
	}
	if valueWords != 0 {
		return stUnusedWords
	}

	// Execute (STEP 4).
	if jog {
		if commandWords&^(1<<mgG3|1<<mgG6|1<<mgG0) != 0 {
			return stInvalidJogCommand
		}
		if nonModal != 53 && nonModal != 0 {
			return stInvalidJogCommand
		}
		if axisWords == 0 {
			return statusOK
		}
		st := e.jogExecute(ctx, xyz, f)
		if st == statusOK {
			e.gc.position = xyz
		}
		return st
	}
	e.gc.lineNumber = int32(n)
	e.gc.modal.feedMode = blk.feedMode
	e.gc.feed = f
	if e.gc.spindleSpeed != s {
		if e.gc.modal.spindle != 0 {
			e.spindleSync(ctx)
		}
		e.gc.spindleSpeed = s
	}
	e.gc.tool = t
	if e.gc.modal.spindle != blk.spindle {
		e.spindleSync(ctx)
		e.gc.modal.spindle = blk.spindle
	}
	if e.gc.modal.coolant != blk.coolant {
		e.spindleSync(ctx) // coolant_sync
		e.gc.modal.coolant = blk.coolant
	}
	if nonModal == 4 {
		e.mcDwell(ctx, p)
	}
	e.gc.modal.plane = blk.plane
	e.gc.modal.units = blk.units
	e.gc.modal.coordSelect = blk.coordSelect
	e.gc.modal.distance = blk.distance
	e.gc.modal.motion = blk.motion
	if blk.motion != motionNone && axisCommand == axisCommandMotionMode {
		e.mcLine(ctx, xyz, f, blk.motion == motionSeek, false)
		e.gc.position = xyz
	}
	e.gc.modal.programFlow = blk.programFlow
	if blk.programFlow != 0 {
		e.bufferSynchronize(ctx)
		if blk.programFlow == 3 { // M0
			if e.state != stCheck {
				e.execState |= execFeedHold
				e.rt(ctx)
			}
		} else { // M2, M30
			m := &e.gc.modal
			m.motion, m.plane, m.distance, m.feedMode, m.coordSelect = motionLinear, 0, 0, 0, 0
			m.spindle, m.coolant = 0, 0
			e.fOvr, e.rOvr, e.sOvr = 100, 100, 100
			e.wcoCounter = 0
			e.emit("[MSG:Pgm End]\r\n")
		}
		e.gc.modal.programFlow = 0
	}
	return statusOK
}

// spindleSync is spindle_sync/coolant_sync: wait for the planner to empty
// before switching.
func (e *Emulator) spindleSync(ctx context.Context) {
	if e.state == stCheck {
		return
	}
	e.bufferSynchronize(ctx)
}

// readFloat is nuts_bolts.c read_float: an optional sign, digits and one
// decimal point, no exponent. It advances *i past the number.
func readFloat(line string, i *int) (float64, bool) {
	p := *i
	at := func(k int) byte {
		if k < len(line) {
			return line[k]
		}
		return 0
	}
	c := at(p)
	p++
	neg := false
	if c == '-' {
		neg = true
		c = at(p)
		p++
	} else if c == '+' {
		c = at(p)
		p++
	}
	var intval uint64
	exp, ndigit := 0, 0
	decimal := false
	for {
		d := c - '0'
		if d <= 9 {
			ndigit++
			if ndigit <= 8 { // MAX_INT_DIGITS
				if decimal {
					exp--
				}
				intval = intval*10 + uint64(d)
			} else if !decimal {
				exp++ // drop overflow digits
			}
		} else if c == '.' && !decimal {
			decimal = true
		} else {
			break
		}
		c = at(p)
		p++
	}
	if ndigit == 0 {
		return 0, false
	}
	// In 32-bit floating point, step by step as the firmware does: the
	// step grid depends on it (-20.002 is 20.0020008, which at 250 steps/mm
	// rounds to -5001 steps, not -5000).
	v := float32(intval)
	if v != 0 {
		for exp <= -2 {
			v = float32(v * 0.01)
			exp += 2
		}
		if exp < 0 {
			v = float32(v * 0.1)
		}
		for ; exp > 0; exp-- {
			v = float32(v * 10)
		}
	}
	if neg {
		v = -v
	}
	*i = p - 1
	return float64(v), true
}

func ceilPositive(x float64) float64 {
	if x <= 0 {
		return 0
	}
	return math.Ceil(x - 1e-9)
}
