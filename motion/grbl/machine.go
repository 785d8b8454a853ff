package grbl

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/waferd/waferd/motion"
)

// Machine is what the controller says about the stage it drives: its
// settings ($$) and build options ($I), read by Connect. Axis arrays are X
// then Y.
type Machine struct {
	// StepsPerMM are $100 and $101. GRBL moves in whole steps: a target is
	// rounded to the nearest one, and a reported position is a whole
	// number of steps (see Grid).
	StepsPerMM [2]float64
	// MaxRate ($110, $111) in mm/min and Accel ($120, $121) in mm/s².
	MaxRate, Accel [2]float64
	// MaxTravel are $130 and $131 in mm.
	MaxTravel [2]float64
	// Homing is $22: the homing cycle is enabled.
	Homing bool
	// HomingDirMask is $23: an axis whose bit is set homes to its - end.
	HomingDirMask int
	// PullOff is $27 in mm: how far homing backs off the switch.
	PullOff float64
	// SoftLimits ($20) and HardLimits ($21).
	SoftLimits, HardLimits bool
	// StatusMask is $10: bit 0 reports MPos (else WPos), bit 1 adds Bf:.
	StatusMask int
	// ReportInches is $13.
	ReportInches bool
	// Options are the build option letters of $I's [OPT:...] line, ""
	// if the controller did not say; ForceOrigin is option Z, a firmware
	// built with HOMING_FORCE_SET_ORIGIN.
	Options     string
	ForceOrigin bool
	// PlannerBlocks and RxBuffer are the planner's blocks and the serial
	// receive buffer's bytes, from [OPT:...] (0 if not reported): what
	// Bf: shows when both are empty.
	PlannerBlocks, RxBuffer int
}

// BufferReports reports whether status reports carry Bf: ($10 bit 1) and
// the controller said what its empty buffers show.
func (m Machine) BufferReports() bool {
	return m.StatusMask&2 != 0 && m.PlannerBlocks > 0 && m.RxBuffer > 0
}

// Space returns machine space, the box homing defines: GRBL sets machine
// zero at the switch an axis homes to, so an axis has -$13x..0 whichever
// end it homes to, and rests pull-off ($27) from its switch after homing;
// built with HOMING_FORCE_SET_ORIGIN, zero is where it rests and an axis
// that homes to its - end has 0..$13x. ok is false when homing is
// disabled ($22=0): machine zero is then wherever the controller powered
// up.
func (m Machine) Space() (space motion.Rect, ok bool) {
	if !m.Homing {
		return motion.Rect{}, false
	}
	var lo, hi [2]motion.Distance
	for axis := range 2 {
		t := motion.MM(m.MaxTravel[axis])
		if m.ForceOrigin && m.HomingDirMask&(1<<axis) != 0 {
			lo[axis], hi[axis] = 0, t
		} else {
			lo[axis], hi[axis] = -t, 0
		}
	}
	return motion.Rect{Min: motion.Point{X: lo[0], Y: lo[1]}, Max: motion.Point{X: hi[0], Y: hi[1]}}, true
}

// Clear returns the part of machine space (see Space) the stage can be
// sent to: without HOMING_FORCE_SET_ORIGIN machine zero is at the switch
// of an axis homed to its + end (and -$13x at one homed to its - end), so
// the pull-off ($27) on that side is kept clear; a move onto the switch
// would trip it (an alarm with hard limits, $21=1). With
// HOMING_FORCE_SET_ORIGIN zero is already pull-off from the switch. ok is
// false when homing is disabled.
func (m Machine) Clear() (clear motion.Rect, ok bool) {
	space, ok := m.Space()
	if !ok || m.ForceOrigin {
		return space, ok
	}
	p := motion.MM(m.PullOff)
	if m.HomingDirMask&1 != 0 {
		space.Min.X += p
	} else {
		space.Max.X -= p
	}
	if m.HomingDirMask&2 != 0 {
		space.Min.Y += p
	} else {
		space.Max.Y -= p
	}
	return space, true
}

// CheckTravel returns an error naming both when travel (a box of machine
// coordinates the stage is to reach) does not lie inside machine space
// less the pull-off at the switches (see Clear). With homing disabled
// there is nothing to check against and it returns nil.
func (m Machine) CheckTravel(travel motion.Rect) error {
	space, ok := m.Clear()
	if !ok {
		return nil
	}
	inside := travel.Min.X >= space.Min.X && travel.Max.X <= space.Max.X &&
		travel.Min.Y >= space.Min.Y && travel.Max.Y <= space.Max.Y
	if inside {
		return nil
	}
	var ends []string
	for axis, name := range []string{"X", "Y"} {
		end := "+ end of "
		if m.HomingDirMask&(1<<axis) != 0 {
			end = "- end of "
		}
		if axis == 1 && len(ends) == 1 && strings.HasPrefix(ends[0], end) {
			ends[0] += " and Y"
			continue
		}
		ends = append(ends, end+name)
	}
	how := "GRBL sets machine zero at the limit switch an axis homes to and homes into negative space"
	if m.ForceOrigin {
		how = "this firmware (built with HOMING_FORCE_SET_ORIGIN) sets machine zero where homing leaves the stage, so an axis homed to its - end has positive space"
	}
	return fmt.Errorf("grbl: travel %s does not fit the controller's machine space clear of its switches %s ($130=%s, $131=%s, homing to the %s ($23=%d), pull-off $27=%s mm): %s",
		fmtBox(travel), fmtBox(space), fmtSetting(m.MaxTravel[0]), fmtSetting(m.MaxTravel[1]),
		strings.Join(ends, ", "), m.HomingDirMask, fmtSetting(m.PullOff), how)
}

// fmtBox formats a box as "X [min, max] Y [min, max] mm".
func fmtBox(r motion.Rect) string {
	return fmt.Sprintf("X [%s, %s] Y [%s, %s] mm", motion.FormatMM(r.Min.X), motion.FormatMM(r.Max.X), motion.FormatMM(r.Min.Y), motion.FormatMM(r.Max.Y))
}

// Grid returns the machine position GRBL reaches for a target of mm on
// axis (0 X, 1 Y): the nearest whole step. Without steps per mm it
// returns mm itself.
func (m Machine) Grid(axis int, mm float64) float64 {
	spm := m.StepsPerMM[axis]
	if spm <= 0 {
		return mm
	}
	return math.Round(mm*spm) / spm
}

// Step returns the length of one step on axis, in mm (0 if unknown).
func (m Machine) Step(axis int) float64 {
	if m.StepsPerMM[axis] <= 0 {
		return 0
	}
	return 1 / m.StepsPerMM[axis]
}

// Reach returns the position a move to p ends at, as the controller
// reports it: p on the step grid, to the micrometre.
func (m Machine) Reach(p motion.Point) motion.Point {
	return motion.Point{X: motion.MM(m.Grid(0, p.X.Millimetres())), Y: motion.MM(m.Grid(1, p.Y.Millimetres()))}
}

func fmtSetting(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }

// settingsNeeded are the settings Machine is made of.
var settingsNeeded = []int{10, 13, 20, 21, 22, 23, 27, 100, 101, 110, 111, 120, 121, 130, 131}

// machineFrom builds a Machine from the settings of $$ and the text of
// $I's [OPT:...] line ("" if none).
func machineFrom(set map[int]string, opt string) (Machine, error) {
	var missing []string
	num := func(n int) float64 {
		s, ok := set[n]
		if !ok {
			missing = append(missing, "$"+strconv.Itoa(n))
			return 0
		}
		v, err := parseNumber(s)
		if err != nil {
			missing = append(missing, fmt.Sprintf("$%d (%q)", n, s))
		}
		return v
	}
	flag := func(n int) bool { return num(n) != 0 }
	m := Machine{
		StepsPerMM:    [2]float64{num(100), num(101)},
		MaxRate:       [2]float64{num(110), num(111)},
		Accel:         [2]float64{num(120), num(121)},
		MaxTravel:     [2]float64{num(130), num(131)},
		Homing:        flag(22),
		HomingDirMask: int(num(23)),
		PullOff:       num(27),
		SoftLimits:    flag(20),
		HardLimits:    flag(21),
		StatusMask:    int(num(10)),
		ReportInches:  flag(13),
	}
	if len(missing) > 0 {
		return Machine{}, fmt.Errorf("grbl: settings: %s missing or unreadable", strings.Join(missing, ", "))
	}
	if m.StepsPerMM[0] <= 0 || m.StepsPerMM[1] <= 0 {
		return Machine{}, fmt.Errorf("grbl: settings: steps per mm $100=%s $101=%s must be positive", fmtSetting(m.StepsPerMM[0]), fmtSetting(m.StepsPerMM[1]))
	}
	if opt != "" {
		// "VZ,15,128": option letters, planner blocks, receive buffer.
		f := strings.Split(opt, ",")
		m.Options = f[0]
		m.ForceOrigin = strings.Contains(f[0], "Z")
		if len(f) >= 3 {
			m.PlannerBlocks, _ = smallUint(f[1], 1000)
			m.RxBuffer, _ = smallUint(f[2], 100000)
		}
	}
	return m, nil
}

// Machine returns what the controller's settings say about the stage, as
// read by Connect; if Connect could not read them (a controller held or
// in a door state answers $$ with error:8), it tries again now. It blocks
// for at most a few replies (see ReplyTimeout).
func (s *Stage) Machine(ctx context.Context) (Machine, error) {
	s.mu.Lock()
	m, ok := s.machine, s.haveMachine
	s.mu.Unlock()
	if ok {
		return m, nil
	}
	if err := s.readMachine(ctx); err != nil {
		return Machine{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.machine, nil
}

// readMachine reads $$ and $I until two reads in a row agree on what
// Machine is made of (a noisy link can garble a setting into another
// valid number), at most four times each, and records the result.
func (s *Stage) readMachine(ctx context.Context) error {
	var set map[int]string
	var err error
	agreed := false
	for range 4 {
		var next map[int]string
		next, _, err = s.command(ctx, lineSpec{line: "$$", collect: true})
		if err != nil {
			if errors.Is(err, ErrReplyLost) {
				continue
			}
			return fmt.Errorf("grbl: reading settings ($$): %w", err)
		}
		if set != nil && sameSettings(set, next) {
			agreed = true
			break
		}
		set = next
	}
	if !agreed {
		return fmt.Errorf("grbl: reading settings ($$): no two reads agree (noise on the link?): %w", cmp.Or(err, motion.ErrTimeout))
	}
	opt, optOK := "", false
	var prev string
	for i := range 4 {
		_, info, err := s.command(ctx, lineSpec{line: "$I", collect: true})
		if err != nil {
			if errors.Is(err, ErrReplyLost) {
				continue
			}
			// Older builds, or a controller not idle: no build options.
			s.logf("grbl: $I: %v; build options unknown", err)
			break
		}
		o := info["OPT"]
		if i > 0 && o == prev {
			opt, optOK = o, true
			break
		}
		prev = o
	}
	if !optOK {
		opt = ""
	}
	m, err := machineFrom(set, opt)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.machine, s.haveMachine = m, true
	s.mu.Unlock()
	return nil
}

// sameSettings reports whether a and b agree on every setting Machine
// uses.
func sameSettings(a, b map[int]string) bool {
	for _, n := range settingsNeeded {
		if a[n] != b[n] {
			return false
		}
	}
	return true
}
