package hatest_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"hakit.dev/hatest"
)

// shmExists reports whether System V shared memory segment id exists.
func shmExists(t *testing.T, id string) bool {
	t.Helper()
	b, err := os.ReadFile("/proc/sysvipc/shm")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n")[1:] {
		if f := strings.Fields(line); len(f) > 1 && f[1] == id {
			return true
		}
	}
	return false
}

// A PostgreSQL server killed with SIGKILL leaves its shared memory
// segment; once its data directory is gone nothing removes it, and 4096 of
// them stop every PostgreSQL on the machine from starting. SweepOrphans
// removes it then, and leaves a running server's alone, and a killed one's
// while its data directory (which a restart reads it from) is there.
func TestSweepRemovesKilledServersSharedMemory(t *testing.T) {
	t.Parallel()
	c := hatest.NewPostgres(t, hatest.PostgresOptions{Replicas: 1})
	killed, running := c.Nodes[0], c.Nodes[1]
	segment := func(n *hatest.PostgresNode) string {
		t.Helper()
		// The 7th line of postmaster.pid: "key shmid".
		b, err := os.ReadFile(filepath.Join(n.DataDir, "postmaster.pid"))
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(string(b), "\n")
		if len(lines) < 7 || len(strings.Fields(lines[6])) != 2 {
			t.Fatalf("%s: no shared memory line in postmaster.pid: %q", n.Name, b)
		}
		return strings.Fields(lines[6])[1]
	}
	gone, kept := segment(killed), segment(running)
	if err := killed.Kill(); err != nil {
		t.Fatal(err)
	}
	if !shmExists(t, gone) {
		t.Fatalf("segment %s went away with the killed server: the test shows nothing", gone)
	}
	// While the data directory is there, the server may be started again
	// and read its old segment: it stays.
	if err := hatest.SweepOrphans(); err != nil {
		t.Fatal(err)
	}
	if !shmExists(t, gone) {
		t.Fatalf("segment %s was removed while the killed server's data directory still names it", gone)
	}
	if err := os.RemoveAll(killed.DataDir); err != nil {
		t.Fatal(err)
	}
	if err := hatest.SweepOrphans(); err != nil {
		t.Fatal(err)
	}
	if shmExists(t, gone) {
		t.Errorf("segment %s of the killed server is still there after SweepOrphans", gone)
	}
	if !shmExists(t, kept) {
		t.Errorf("segment %s of the running server was removed", kept)
	}
}
