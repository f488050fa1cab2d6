package hatest

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// failedOverTwice is the log of the Sentinel that led both failovers in a
// run where the promoted master (port 37555) was taken for down 1.07s
// after the switch, and the votes on the dead master still counted.
const failedOverTwice = `14288:X 30 Nov 2026 22:51:03.538 # +sdown master hatest 127.0.0.1 36991
14288:X 30 Nov 2026 22:51:03.853 # +odown master hatest 127.0.0.1 36991 #quorum 2/2
14288:X 30 Nov 2026 22:51:03.853 # +try-failover master hatest 127.0.0.1 36991
14288:X 30 Nov 2026 22:51:04.628 # +elected-leader master hatest 127.0.0.1 36991
14288:X 30 Nov 2026 22:51:07.053 # +promoted-slave slave 127.0.0.1:37555 127.0.0.1 37555 @ hatest 127.0.0.1 36991
14288:X 30 Nov 2026 22:51:07.054 # +switch-master hatest 127.0.0.1 36991 127.0.0.1 37555
14288:X 30 Nov 2026 22:51:07.054 * +slave slave 127.0.0.1:36991 127.0.0.1 36991 @ hatest 127.0.0.1 37555
14288:X 30 Nov 2026 22:51:08.121 # +sdown master hatest 127.0.0.1 37555
14288:X 30 Nov 2026 22:51:08.121 # +odown master hatest 127.0.0.1 37555 #quorum 3/2
14288:X 30 Nov 2026 22:51:08.121 # +try-failover master hatest 127.0.0.1 37555
14288:X 30 Nov 2026 22:51:08.217 # -sdown master hatest 127.0.0.1 37555
14288:X 30 Nov 2026 22:51:08.314 # +elected-leader master hatest 127.0.0.1 37555
14288:X 30 Nov 2026 22:51:09.264 # +promoted-slave slave 127.0.0.1:36991 127.0.0.1 36991 @ hatest 127.0.0.1 37555
14288:X 30 Nov 2026 22:51:09.337 # +switch-master hatest 127.0.0.1 37555 127.0.0.1 36991
`

func TestParseSwitches(t *testing.T) {
	log := failedOverTwice +
		"14288:X 30 Nov 2026 22:51:10.000 # +switch-master other 127.0.0.1 1 127.0.0.1 2\n" + // another master
		"14288:X 30 Nov 2026 22:51:10.001 # +switch-master hatest 127.0.0.1\n" // cut short
	got := parseSwitches(log, "hatest")
	want := []masterSwitch{
		{from: "127.0.0.1:36991", to: "127.0.0.1:37555", at: "22:51:07.054"},
		{from: "127.0.0.1:37555", to: "127.0.0.1:36991", at: "22:51:09.337"},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("parseSwitches = %v; want %v", got, want)
	}
}

// fakeSentinels returns a cluster of two data nodes on the ports of
// failedOverTwice and three Sentinels that are not running, with logs in
// a temporary directory.
func fakeSentinels(t *testing.T) *RedisCluster {
	t.Helper()
	dir := t.TempDir()
	c := &RedisCluster{MasterName: "hatest", dir: dir,
		Nodes: []*RedisNode{{Name: "redis0", Port: 36991}, {Name: "redis1", Port: 37555}}}
	for _, name := range []string{"sentinel0", "sentinel1", "sentinel2"} {
		path := filepath.Join(dir, name+".log")
		if err := os.WriteFile(path, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		c.Sentinels = append(c.Sentinels, &RedisNode{Name: name, d: &daemon{name: name, logPath: path}})
	}
	c.known = c.Nodes[0]
	return c
}

func appendLog(t *testing.T, n *RedisNode, s string) {
	t.Helper()
	f, err := os.OpenFile(n.LogPath(), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(s); err != nil {
		t.Fatal(err)
	}
}

// The logs are read as they grow, a line only once it is complete, and the
// history is the longest any Sentinel has.
func TestSwitchesReadAsLogsGrow(t *testing.T) {
	c := fakeSentinels(t)
	cut := strings.Index(failedOverTwice, "+switch-master hatest 127.0.0.1 37555") + 20
	appendLog(t, c.Sentinels[1], failedOverTwice[:cut])
	appendLog(t, c.Sentinels[2], failedOverTwice[:strings.Index(failedOverTwice, "+slave")])
	if sw := c.switches(); len(sw) != 1 {
		t.Fatalf("after the first switch and half a line: %v; want one switch", sw)
	}
	appendLog(t, c.Sentinels[1], failedOverTwice[cut:])
	if sw := c.switches(); len(sw) != 2 || sw[1].at != "22:51:09.337" {
		t.Fatalf("after the rest of the log: %v; want two switches, the second at 22:51:09.337", sw)
	}
}

// WaitFailover that finds two switches where it expected one fails at
// once, naming both and showing the Sentinels' story; WaitReplica after
// the first failover names the second.
func TestUnplannedFailoverReported(t *testing.T) {
	c := fakeSentinels(t)
	appendLog(t, c.Sentinels[1], failedOverTwice)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	_, err := c.WaitFailover(ctx, c.Nodes[0])
	var uf *UnplannedFailoverError
	if !errors.As(err, &uf) {
		t.Fatalf("WaitFailover = %v; want an UnplannedFailoverError", err)
	}
	want := []string{"redis0 -> redis1 at 22:51:07.054", "redis1 -> redis0 at 22:51:09.337"}
	if !slices.Equal(uf.Switches, want) {
		t.Fatalf("switches %q; want %q", uf.Switches, want)
	}
	for _, line := range []string{"sentinel1: 14288:X 30 Nov 2026 22:51:08.121 # +sdown master hatest 127.0.0.1 37555",
		"+odown master hatest 127.0.0.1 37555 #quorum 3/2"} {
		if !strings.Contains(uf.Events, line) {
			t.Errorf("events lack %q:\n%s", line, uf.Events)
		}
	}
	if msg := err.Error(); !strings.Contains(msg, "expected one failover since redis0 became the master") || !strings.Contains(msg, want[0]+", then "+want[1]) {
		t.Errorf("message: %s", msg)
	}

	c.setKnown(c.Nodes[1], 1)
	err = c.WaitReplica(ctx, c.Nodes[0])
	if !errors.As(err, &uf) || !slices.Equal(uf.Switches, want[1:]) {
		t.Fatalf("WaitReplica after the first failover = %v; want an UnplannedFailoverError naming %q", err, want[1])
	}
	if ctx.Err() != nil {
		t.Fatal("the unplanned failover was reported only when the context ended")
	}
}
