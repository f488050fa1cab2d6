package hatest

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// sweepSharedMemory removes the System V shared memory segments that
// killed PostgreSQL servers left behind. Every postmaster makes one small
// segment (56 bytes) and removes it when it stops cleanly; a server killed
// with SIGKILL (a chaos test's kill -9, a test binary's timeout) leaves it,
// and when its data directory is gone nothing ever reuses or removes it.
// They add up until shmget fails with ENOSPC once the kernel's SHMMNI
// (4096) is reached, and then no PostgreSQL starts on the machine.
//
// A segment is removed only when nothing is attached to it, the process
// that made it is gone, no data directory the harness still has names it
// in its postmaster.pid, it belongs to the user the harness runs
// PostgreSQL as, and it is small (PostgreSQL's; not some other program's
// data). So it is safe while other servers and test processes run.
func sweepSharedMemory() error {
	uid := os.Geteuid()
	if cred, err := serviceUser(); err == nil && cred != nil {
		uid = int(cred.Uid)
	}
	f, err := os.Open("/proc/sysvipc/shm")
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil // not Linux, or no System V IPC
		}
		return err
	}
	defer f.Close()
	inUse := recordedSegments()
	var errs []error
	sc := bufio.NewScanner(f)
	sc.Scan() // the header
	for sc.Scan() {
		seg, ok := parseShmLine(sc.Text())
		if !ok || seg.nattch != 0 || seg.cuid != uid || seg.size > 4096 || Alive(seg.cpid) || inUse[seg.id] {
			continue
		}
		if _, err := unix.SysvShmCtl(seg.id, unix.IPC_RMID, nil); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.EIDRM) {
			errs = append(errs, fmt.Errorf("hatest: removing shared memory segment %d: %w", seg.id, err))
		}
	}
	return errors.Join(append(errs, sc.Err())...)
}

// recordedSegments returns the segments named in the postmaster.pid of a
// data directory the harness still has: a server killed there and started
// again (a chaos test, Patroni) reads its old segment to clean up what the
// killed run left, so it stays until then.
func recordedSegments() map[int]bool {
	ids := map[int]bool{}
	for _, pattern := range []string{"hatest-*/*/postmaster.pid", "hatest-*/*/*/postmaster.pid", "hatest-*/*/*/*/postmaster.pid"} {
		files, _ := filepath.Glob(filepath.Join(os.TempDir(), pattern))
		for _, file := range files {
			b, err := os.ReadFile(file)
			if err != nil {
				continue
			}
			// The 7th line: "key shmid".
			if lines := strings.Split(string(b), "\n"); len(lines) >= 7 {
				if f := strings.Fields(lines[6]); len(f) == 2 {
					if id, err := strconv.Atoi(f[1]); err == nil {
						ids[id] = true
					}
				}
			}
		}
	}
	return ids
}

// shmSegment is one line of /proc/sysvipc/shm.
type shmSegment struct {
	id, cpid, nattch, cuid int
	size                   int64
}

// parseShmLine reads "key shmid perms size cpid lpid nattch uid gid cuid
// cgid ...".
func parseShmLine(line string) (shmSegment, bool) {
	f := strings.Fields(line)
	if len(f) < 10 {
		return shmSegment{}, false
	}
	var s shmSegment
	var errs [5]error
	s.id, errs[0] = strconv.Atoi(f[1])
	s.size, errs[1] = strconv.ParseInt(f[3], 10, 64)
	s.cpid, errs[2] = strconv.Atoi(f[4])
	s.nattch, errs[3] = strconv.Atoi(f[6])
	s.cuid, errs[4] = strconv.Atoi(f[9])
	return s, errors.Join(errs[:]...) == nil
}
