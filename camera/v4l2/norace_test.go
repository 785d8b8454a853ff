//go:build !race

package v4l2

const raceEnabled = false
