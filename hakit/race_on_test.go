//go:build race

package hakit_test

// raceEnabled: built with -race, where sync.Pool drops a quarter of what
// is put back, so pooled objects are sometimes made anew.
const raceEnabled = true
