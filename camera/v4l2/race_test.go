//go:build race

package v4l2

// raceEnabled: the race detector slows the code down several times, so
// latency bounds are not checked.
const raceEnabled = true
