package publish

import (
	"fmt"
	"strings"
	"time"

	"github.com/waferd/waferd/inspection/results"
)

// SchemaVersion is the "v" of every payload. It changes only when a field
// changes meaning or goes away; new fields may appear within a version,
// and consumers ignore fields they do not know.
const SchemaVersion = 1

// The topics under <prefix>/<tool>/ (README "Publishing to MQTT").
const (
	TopicOnline  = "online"      // retained; the last will sets it offline
	TopicState   = "state"       // retained: the machine state, at every change
	TopicStop    = "event/stop"  // a stop request or escalation (alarms: fault, watchdog, estop)
	TopicLatch   = "event/latch" // the machine latched (faulted, estop) or its latch cleared
	TopicStarted = "run/started" // a run started (its record exists)
	TopicSite    = "run/site"    // a site was saved
	TopicEnded   = "run/ended"   // a run ended: outcome, reason, counts
	TopicRecord  = "run/record"  // the run record (run.json) at the end
	TopicLedger  = "ledger"      // retained: the recent finished runs, for collectors to check against
	TopicResend  = "resend"      // from a collector: publish a run again
)

// Topic returns prefix/tool/sub.
func Topic(prefix, tool, sub string) string { return prefix + "/" + tool + "/" + sub }

// Header is in every payload. ID is stable: a message sent twice (at
// least once delivery) has the same ID both times, so a consumer drops
// duplicates by it.
type Header struct {
	V    int       `json:"v"`
	ID   string    `json:"id"`
	Tool string    `json:"tool"`
	Time time.Time `json:"time"` // when it happened on the tool (UTC)
}

// RunHeader is the header of a run's messages. Seq numbers a run's
// messages: 0 started, 1+index for the site with that index, then ended
// (sites_total+1) and record (sites_total+2). ID is "<tool>/<run_id>/<seq>".
type RunHeader struct {
	Header
	RunID string `json:"run_id"`
	Seq   int    `json:"seq"`
}

func runHeader(tool, runID string, seq int, t time.Time) RunHeader {
	return RunHeader{
		Header: Header{V: SchemaVersion, ID: fmt.Sprintf("%s/%s/%d", tool, runID, seq), Tool: tool, Time: t.UTC()},
		RunID:  runID, Seq: seq,
	}
}

// Online is the payload of TopicOnline.
type Online struct {
	V       int       `json:"v"`
	Tool    string    `json:"tool"`
	Online  bool      `json:"online"`
	Version string    `json:"version,omitempty"`
	Since   time.Time `json:"since"` // online: when the connection came up; offline: when it was shut down, or (the last will) when the connection that died was made
}

// State is the payload of TopicState.
type State struct {
	Header
	State       string `json:"state"` // idle, running, stopping, faulted, estop
	Latched     bool   `json:"latched"`
	LatchReason string `json:"latch_reason,omitempty"`
	Detail      string `json:"detail,omitempty"` // the operation ("run demo"), the latch reason or "reset"
}

// Stop is the payload of TopicStop.
type Stop struct {
	Header
	Reason string `json:"reason"` // operator, button, shutdown, fault, watchdog, estop
	Cause  string `json:"cause"`  // "fault: stage: alarm 1 ..."
	Alarm  bool   `json:"alarm"`  // fault, watchdog or estop: something went wrong
	State  string `json:"state"`  // the machine state when it was requested
}

// Latch is the payload of TopicLatch.
type Latch struct {
	Header
	Latched bool   `json:"latched"`
	State   string `json:"state"`  // faulted or estop when latched; idle when cleared
	Reason  string `json:"reason"` // why it latched, or "reset"
}

// Started is the payload of TopicStarted.
type Started struct {
	RunHeader
	Recipe     string    `json:"recipe"`
	SitesTotal int       `json:"sites_total"`
	StartedAt  time.Time `json:"started_at"`
	Dir        string    `json:"dir"` // the run directory on the tool
}

// Site is the payload of TopicSite.
type Site struct {
	RunHeader
	Index   int              `json:"index"`
	Die     [2]int           `json:"die"`
	XMM     float64          `json:"x_mm"`
	YMM     float64          `json:"y_mm"`
	Defects []results.Defect `json:"defects"`
	Result  string           `json:"result"`          // defect list, relative to the run directory
	Image   string           `json:"image,omitempty"` // site image, relative to the run directory
}

// Ended is the payload of TopicEnded.
type Ended struct {
	RunHeader
	State        string `json:"state"` // completed, canceled, failed, aborted, interrupted
	Reason       string `json:"reason"`
	Error        string `json:"error,omitempty"`
	SitesTotal   int    `json:"sites_total"`
	SitesDone    int    `json:"sites_done"`
	SitesFailed  int    `json:"sites_failed"`
	DefectsTotal int    `json:"defects_total"`
	Complete     bool   `json:"complete"`
}

// Record is the payload of TopicRecord: run.json as written on the tool.
type Record struct {
	RunHeader
	Dir    string      `json:"dir"`
	Record results.Run `json:"record"`
}

// LedgerRun is a finished run in the ledger.
type LedgerRun struct {
	RunID     string `json:"run_id"`
	State     string `json:"state"`
	SitesDone int    `json:"sites_done"`
}

// Ledger is the payload of TopicLedger: the tool's recent finished runs
// (up to LedgerSize). It is published after every run record and at every
// connection, after the older messages: a collector that misses a run or
// some of its sites (a broker that crashed before it forwarded them) asks
// for it again on TopicResend.
type Ledger struct {
	V    int         `json:"v"`
	Tool string      `json:"tool"`
	Time time.Time   `json:"time"`
	Runs []LedgerRun `json:"runs"`
}

// Resend is the payload a collector publishes on TopicResend.
type Resend struct {
	V     int    `json:"v"`
	RunID string `json:"run_id"`
}

// ValidName reports whether s may be a tool name or a topic prefix level:
// not empty, and no MQTT wildcard, separator or NUL.
func ValidName(s string) bool {
	return s != "" && !strings.ContainsAny(s, "/+#\x00")
}
