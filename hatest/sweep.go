package hatest

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// ownerFile, in each run dir, names the harness process that made it: its
// pid and start time (so a reused pid is not mistaken for the owner).
const ownerFile = ".hatest-owner"

// processStart returns the start time of pid (in clock ticks since boot,
// field 22 of /proc/pid/stat), or "" if pid does not exist.
func processStart(pid int) string { return statStart(statFields(pid)) }

func writeOwner(dir string) error {
	pid := os.Getpid()
	return os.WriteFile(filepath.Join(dir, ownerFile), []byte(fmt.Sprintf("%d %s\n", pid, processStart(pid))), 0o644)
}

// ownerGone reports whether the harness process that made dir has exited.
// A dir without a readable owner file is left alone: it may be being made
// right now.
func ownerGone(dir string) bool {
	b, err := os.ReadFile(filepath.Join(dir, ownerFile))
	if err != nil {
		return false
	}
	pidS, start, _ := strings.Cut(strings.TrimSpace(string(b)), " ")
	pid, err := strconv.Atoi(pidS)
	if err != nil {
		return false
	}
	// One read of /proc/pid/stat answers both questions: is the process
	// alive (see Alive), and is it the one that wrote the file.
	f := statFields(pid)
	return !statAlive(f) || statStart(f) != start
}

// SweepOrphans stops what a harness process that died without cleaning up
// (killed by a test timeout or kill -9) left behind, and removes its
// directories. Every server the harness starts dies with it, except
// PostgreSQL under Patroni, which Patroni starts detached. Start functions
// call SweepOrphans themselves; call it directly to clean up a machine.
// It only touches directories whose owning process is gone, so it is safe
// while other test processes run. It also removes the shared memory
// segments killed PostgreSQL servers left (see sweepSharedMemory).
func SweepOrphans() error {
	shmErr := sweepSharedMemory()
	dirs, err := filepath.Glob(filepath.Join(os.TempDir(), "hatest-*"))
	if err != nil {
		return errors.Join(shmErr, err)
	}
	var stale []string
	for _, d := range dirs {
		if ownerGone(d) {
			stale = append(stale, d)
		}
	}
	if len(stale) == 0 {
		return shmErr
	}
	// Every server runs with its working directory inside its run dir
	// (PostgreSQL moves into its data directory).
	entries, _ := os.ReadDir("/proc")
	var victims []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cwd, err := os.Readlink(filepath.Join("/proc", e.Name(), "cwd"))
		if err != nil {
			continue
		}
		for _, d := range stale {
			if cwd == d || strings.HasPrefix(cwd, d+"/") {
				victims = append(victims, pid)
			}
		}
	}
	errs := []error{shmErr}
	if len(victims) > 0 {
		victims = append(victims, descendants(victims...)...)
		killPids(victims)
		errs = append(errs, waitGone(victims, 10*time.Second))
	}
	for _, d := range stale {
		errs = append(errs, os.RemoveAll(d))
	}
	return errors.Join(errs...)
}
