package grbl

import (
	_ "embed"
	"encoding/csv"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/waferd/waferd/motion"
)

// The code tables are gnea/grbl's doc/csv files, copied into codes/.
var (
	//go:embed codes/error_codes_en_US.csv
	errorCSV string
	//go:embed codes/alarm_codes_en_US.csv
	alarmCSV string
	//go:embed codes/setting_codes_en_US.csv
	settingCSV string
)

// codeText is one row of a code table: a short name and a description.
type codeText struct{ name, desc string }

type codeTables struct {
	errors   map[int]codeText
	alarms   map[int]codeText
	settings map[int]SettingInfo
}

// tables parses the embedded CSV files once. Malformed rows are skipped: the
// tables only add meaning to codes, so a gap must never stop the driver.
var tables = sync.OnceValue(func() *codeTables {
	t := &codeTables{
		errors:   map[int]codeText{},
		alarms:   map[int]codeText{},
		settings: map[int]SettingInfo{},
	}
	for _, rec := range readCSV(errorCSV, 3) {
		if n, err := strconv.Atoi(rec[0]); err == nil {
			t.errors[n] = codeText{rec[1], rec[2]}
		}
	}
	for _, rec := range readCSV(alarmCSV, 3) {
		if n, err := strconv.Atoi(rec[0]); err == nil {
			t.alarms[n] = codeText{rec[1], rec[2]}
		}
	}
	for _, rec := range readCSV(settingCSV, 4) {
		if n, err := strconv.Atoi(rec[0]); err == nil {
			t.settings[n] = SettingInfo{Code: n, Name: rec[1], Unit: rec[2], Description: rec[3]}
		}
	}
	return t
})

// readCSV returns the data rows (header skipped) that have at least cols
// fields, with every field trimmed of surrounding spaces.
func readCSV(data string, cols int) [][]string {
	r := csv.NewReader(strings.NewReader(data))
	r.FieldsPerRecord = -1
	recs, _ := r.ReadAll() // rows read before an error are still returned
	var out [][]string
	for i, rec := range recs {
		if i == 0 || len(rec) < cols {
			continue
		}
		for j := range rec {
			rec[j] = strings.TrimSpace(rec[j])
		}
		out = append(out, rec)
	}
	return out
}

// SettingInfo describes a GRBL $-setting, from the firmware's settings table.
type SettingInfo struct {
	Code        int    // the N of $N
	Name        string // e.g. "X-axis maximum rate"
	Unit        string // e.g. "mm/min", "boolean", "mask"
	Description string
}

// Setting returns the description of setting $code, and false for a code the
// table does not know.
func Setting(code int) (SettingInfo, bool) {
	s, ok := tables().settings[code]
	return s, ok
}

// Error is a command the controller rejected with error:N. It matches
// motion.ErrRejected with errors.Is.
type Error struct {
	Code        int    // N of error:N
	Message     string // short name from the firmware table, e.g. "G-code lock"
	Description string // long description from the firmware table
	Line        string // the rejected line, when known
}

// newError builds an *Error with the table's meaning of code.
func newError(code int, line string) *Error {
	t, ok := tables().errors[code]
	if !ok {
		t = codeText{"Unknown error", "Error code not in the GRBL 1.1 table."}
	}
	return &Error{Code: code, Message: t.name, Description: t.desc, Line: line}
}

func (e *Error) Error() string {
	s := "grbl: error:" + strconv.Itoa(e.Code) + " (" + e.Message + ")"
	if e.Line != "" {
		s += " for " + strconv.Quote(e.Line)
	}
	if e.Description != "" {
		s += ": " + e.Description
	}
	return s
}

// Is reports whether target is motion.ErrRejected.
func (e *Error) Is(target error) bool { return target == motion.ErrRejected }

// Alarm is an alarm state of the controller (ALARM:N). It matches
// motion.ErrAlarm with errors.Is. Code 0 stands for an alarm lock whose
// cause the driver did not see (for example the power-up lock announced by
// "[MSG:'$H'|'$X' to unlock]", or a status report saying Alarm).
type Alarm struct {
	Code        int    // N of ALARM:N, or 0 when unknown
	Message     string // short name from the firmware table, e.g. "Soft limit"
	Description string // long description from the firmware table
}

// newAlarm builds an *Alarm with the table's meaning of code.
func newAlarm(code int) *Alarm {
	if code == 0 {
		return &Alarm{Message: "Alarm lock", Description: "The controller is locked in alarm state; home ($H) or unlock ($X)."}
	}
	t, ok := tables().alarms[code]
	if !ok {
		t = codeText{"Unknown alarm", "Alarm code not in the GRBL 1.1 table."}
	}
	return &Alarm{Code: code, Message: t.name, Description: t.desc}
}

func (a *Alarm) Error() string {
	if a.Code == 0 {
		return "grbl: alarm lock (" + a.Message + "): " + a.Description
	}
	return fmt.Sprintf("grbl: ALARM:%d (%s): %s", a.Code, a.Message, a.Description)
}

// Is reports whether target is motion.ErrAlarm.
func (a *Alarm) Is(target error) bool { return target == motion.ErrAlarm }

// ErrClosed is returned by calls made after, or interrupted by, Close. It is
// the normal end of a Stage, not a link failure.
var ErrClosed = errors.New("grbl: stage closed")
