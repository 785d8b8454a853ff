// Package control is what the daemon's front ends see of the machine: the
// Machine interface that the serial console (and any remote front end)
// drives, and the types it speaks in (a status snapshot, events, capture
// and self-test results). The daemon implements Machine; front ends depend
// on this package, never on the daemon's internals.
package control

import (
	"context"
	"time"

	"github.com/waferd/waferd/camera"
	"github.com/waferd/waferd/inspection"
	"github.com/waferd/waferd/inspection/recipe"
	"github.com/waferd/waferd/inspection/results"
	"github.com/waferd/waferd/machine"
	"github.com/waferd/waferd/motion"
	"github.com/waferd/waferd/stop"
	"github.com/waferd/waferd/watchdog"
)

// Machine is what a front end drives. Every method is safe for concurrent
// use; Stop and Busy never block. Operations that move the stage or switch
// the light (Home, MoveTo, Jog, SetLight on, Capture, SelfTest, runs) hold
// the machine's claim while they run: one at a time, refused while
// another runs or the machine is latched, and stopped by Stop.
type Machine interface {
	// Status is a snapshot; it asks the stage for a report (bounded).
	Status(ctx context.Context) Status
	// Busy names the operation in progress ("run demo", "home", ...; ""
	// when idle) without asking any device.
	Busy() string
	Home(ctx context.Context) error
	// SetOrigin declares where a stage without homing switches stands.
	SetOrigin(ctx context.Context, p motion.Point) error
	MoveTo(ctx context.Context, p motion.Point) error
	Jog(ctx context.Context, delta motion.Point) error
	// SetLight switches the light on at level (0: the console level) or
	// off; SetLightLevel sets the console level.
	SetLight(on bool, level float64) error
	SetLightLevel(level float64) error
	Capture(ctx context.Context, name string) (CaptureResult, error)
	SelfTest(ctx context.Context) ([]TestResult, error)
	// Recipes lists the recipe names RunRecipe accepts and where they
	// come from.
	Recipes() (names []string, from string, err error)
	// LoadRecipe loads and validates the named recipe without running it.
	LoadRecipe(name string) (*recipe.Recipe, error)
	// RunRecipe starts the named recipe in the background.
	RunRecipe(ctx context.Context, name string) (*recipe.Recipe, error)
	// RecipeText returns the stored text of the recipe RunRecipe would run
	// for name.
	RecipeText(name string) ([]byte, error)
	// SaveRecipe validates text completely as a recipe for this machine
	// and stores it under name, replacing it atomically; an invalid recipe
	// is refused with every problem and nothing is written. created: no
	// recipe of that name existed. Text longer than MaxRecipeBytes is
	// refused.
	SaveRecipe(name string, text []byte) (created bool, err error)
	// WaitRun blocks until no run is in progress, or ctx ends.
	WaitRun(ctx context.Context) error
	// Stop is the machine's one cancel path (machine.Machine.Stop).
	Stop(reason stop.Reason, detail string)
	// Reset clears a latch, or soft-resets a stage controller that would
	// not move on an idle machine.
	Reset(ctx context.Context) error
	Runs(n int) ([]results.Run, error)
	LoadRun(id string) (results.Run, error)
	Logs(n int) []string
	Stats() machine.Stats
	// LinkNoise describes the noise seen on the stage's link ("" when not
	// counted).
	LinkNoise() string
	ConfigText() (string, error)
	// Subscribe returns the events from now on and a function that ends
	// the subscription. A subscriber that falls behind loses events.
	Subscribe() (<-chan Event, func())
	// Publishing reports the broker connection and the outbox (nil when
	// publishing is off). It never blocks on I/O.
	Publishing() *PublishStatus
}

// PublishStatus is the state of publishing to MQTT (package publish).
type PublishStatus struct {
	Brokers []string
	Tool    string
	Prefix  string
	// Connected to a broker since Since, or not since then (LastError
	// says why).
	Connected bool
	Since     time.Time
	LastError string
	// Depth messages of Bytes wait in the outbox, bounded to MaxBytes;
	// FullSince is when it began dropping the oldest (zero: not full).
	Depth     int
	Bytes     int64
	MaxBytes  int64
	FullSince time.Time
	// Since start-up: messages the broker acknowledged, sent again after
	// a failed attempt, and dropped (the outbox full).
	Sent, Retried, Dropped uint64
}

// HostLink is the factory host's interface (SECS/GEM) as a console sees
// it: its state, and the operator's switches of E30's control state.
// Safe for concurrent use; nothing blocks.
type HostLink interface {
	HostStatus() HostStatus
	// SetHostControl is the operator's switch: "online", "offline",
	// "local" or "remote" (the online sub-state). It returns the control
	// state after it, or an error for another word.
	SetHostControl(to string) (string, error)
}

// HostStatus describes the factory host's link.
type HostStatus struct {
	Listen        string // the address the host connects to
	DeviceID      uint16
	Host          string // the connected host's address; "" when none
	Communication string // E30 communication state: "communicating", ...
	Control       string // E30 control state: "online remote", "host offline", ...
	Remote        bool   // the online switch: remote (true) or local
	Selected      string // the recipe the host selected (PP-SELECT)
	AlarmsSet     []uint32
}

// MaxRecipeBytes is the longest recipe text SaveRecipe stores.
const MaxRecipeBytes = 1 << 20

// Status is a snapshot of the machine.
type Status struct {
	Machine     machine.State
	LatchReason string
	// Busy names what holds the machine: "run demo", "home", "move", ...
	// ("" when idle).
	Busy string
	// Stage is the stage's status report (StageErr if it did not answer).
	Stage    motion.Status
	StageErr error
	// Trusted: the stage position is known (homed, or its origin set, and
	// not lost since).
	Trusted bool
	// Homes: the stage has homing switches ([stage] homing); without them
	// the position is trusted once an origin is set (SetOrigin).
	Homes  bool
	Travel motion.Rect
	Light  LightState
	// LightLevel is the level a console's "light on" uses.
	LightLevel float64
	Camera     camera.Info
	Watchdog   []watchdog.HeartbeatInfo
	// Run is the run in progress, nil when none.
	Run *RunInfo
	// Last is the last finished run since start-up (RunID "" if none).
	Last inspection.Result
	// Publish is the broker connection and the outbox; nil when
	// publishing is off.
	Publish *PublishStatus
}

// RunInfo describes the run in progress.
type RunInfo struct {
	Recipe   string
	Sites    int
	Started  time.Time
	Progress inspection.Progress // the last site saved (Done 0 before the first)
}

// LightState is the light as it was last commanded.
type LightState struct {
	On    bool
	Level float64
	Since time.Time // when it was switched on
	Err   error     // the last switching error, nil when healthy
}

// CaptureResult describes a saved frame.
type CaptureResult struct {
	Path          string
	Width, Height int
	Mean          float64 // mean grey level
}

// TestResult is one device's self-test.
type TestResult struct {
	Device string
	Pass   bool
	Detail string
}

// EventKind says what an Event reports.
type EventKind int

const (
	RunStarted    EventKind = iota + 1 // RunID, Recipe, Sites: the run's record exists
	RunProgress                        // Progress: a site was saved
	RunEnded                           // Result, or Err when the run could not start
	StopRequested                      // Text: the stop cause; Reason
	MachineState                       // State entered; Text: the latch reason or what; Reason: the latching stop's (machine.Event.Reason)
	Notice                             // Text: something consoles should show
)

// Event is something that happened, for every front end.
type Event struct {
	Time     time.Time
	Kind     EventKind
	RunID    string // RunStarted
	Recipe   string
	Sites    int
	Progress inspection.Progress
	Result   inspection.Result
	Err      error
	State    machine.State
	Reason   stop.Reason
	Text     string
}
