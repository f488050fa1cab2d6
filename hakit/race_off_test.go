//go:build !race

package hakit_test

// raceEnabled: built with -race (see race_on_test.go).
const raceEnabled = false
