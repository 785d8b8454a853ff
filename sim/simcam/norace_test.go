//go:build !race

package simcam

const raceEnabled = false
