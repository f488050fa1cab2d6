package hatest

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// ownerFile, in each run dir, names the harness process that made it: its
// pid and start time (so a reused pid is not mistaken for the owner).
const ownerFile = ".hatest-owner"

// processStart returns the start time of pid (in clock ticks since boot,
// field 22 of /proc/pid/stat), or "" if pid does not exist.
func processStart(pid int) string {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return ""
	}
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return ""
	}
	f := strings.Fields(string(b[i+1:]))
	// After "pid (comm)": state is field 3, starttime is field 22.
	if len(f) < 20 {
		return ""
	}
	return f[19]
}

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
	return !Alive(pid) || processStart(pid) != start
}

// SweepOrphans stops what a harness process that died without cleaning up
// (killed by a test timeout or kill -9) left behind, and removes its
// directories. Every server the harness starts dies with it, except
// PostgreSQL under Patroni, which Patroni starts detached. Start functions
// call SweepOrphans themselves; call it directly to clean up a machine.
// It only touches directories whose owning process is gone, so it is safe
// while other test processes run.
func SweepOrphans() error {
	dirs, err := filepath.Glob(filepath.Join(os.TempDir(), "hatest-*"))
	if err != nil {
		return err
	}
	var stale []string
	for _, d := range dirs {
		if ownerGone(d) {
			stale = append(stale, d)
		}
	}
	if len(stale) == 0 {
		return nil
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
	var errs []error
	if len(victims) > 0 {
		for _, v := range slices.Clone(victims) {
			for _, c := range descendants(v) {
				if !slices.Contains(victims, c) {
					victims = append(victims, c)
				}
			}
		}
		killPids(victims)
		errs = append(errs, waitGone(victims, 10*time.Second))
	}
	for _, d := range stale {
		errs = append(errs, os.RemoveAll(d))
	}
	return errors.Join(errs...)
}
