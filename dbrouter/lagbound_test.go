package dbrouter_test

import (
	"context"
	"testing"
	"time"

	"hakit.dev/dbrouter"
	"hakit.dev/hatest"
)

// stopReceiving cuts replica off from its primary: no primary_conninfo,
// so no WAL receiver (as a network partition or a broken conninfo does).
func stopReceiving(t *testing.T, ctx context.Context, replica *hatest.PostgresNode) {
	t.Helper()
	if err := replica.SetSetting(ctx, "primary_conninfo", ""); err != nil {
		t.Fatal(err)
	}
	hatest.WaitFor(t, 20*time.Second, "no WAL receiver on "+replica.Name, func() bool {
		return countOn(ctx, replica, "SELECT count(*) FROM pg_stat_wal_receiver") == 0
	})
}

// nextProbe waits for a probe of node that started after prev and returns
// its status.
func nextProbe(t *testing.T, r *dbrouter.Router, node *hatest.PostgresNode, prev time.Time) dbrouter.NodeStatus {
	t.Helper()
	var s dbrouter.NodeStatus
	hatest.WaitFor(t, 20*time.Second, "a new probe of "+node.Name, func() bool {
		s = nodeStatus(t, r, node)
		return s.Probed.After(prev)
	})
	return s
}

// A replica left on the old timeline by an asynchronous failover to a
// less advanced node has replayed past where the new timeline begins, so
// the new primary's positions are all "at or before" its own: compared
// with them, it would read caught up while it lacks every commit of the
// new primary. Its lag must grow with the age of the first of those.
func TestLagStrandedReplica(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := hatest.NewPostgres(t, hatest.PostgresOptions{Replicas: 2})
	pg0, pg1, pg2 := c.Nodes[0], c.Nodes[1], c.Nodes[2]
	r := newRouter(t, dbrouter.Config{Nodes: c.DSNs(), ProbeInterval: lagProbe})
	if _, err := r.Exec(ctx, "CREATE TABLE ticks (at timestamptz, note text) WITH (autovacuum_enabled = off)"); err != nil {
		t.Fatal(err)
	}
	waitCaughtUp(t, ctx, pg0, pg1)
	waitCaughtUp(t, ctx, pg0, pg2)
	// pg1 falls behind (asynchronous replication), pg2 gets ~2 MB more.
	stopReceiving(t, ctx, pg1)
	if err := pg0.Exec(ctx, "INSERT INTO ticks SELECT now(), repeat('x', 200) FROM generate_series(1, 8000)"); err != nil {
		t.Fatal(err)
	}
	waitCaughtUp(t, ctx, pg0, pg2)
	// pg2's replay held (a recovery conflict, say) while it receives one
	// more commit.
	if err := pg2.Exec(ctx, "SELECT pg_wal_replay_pause()"); err != nil {
		t.Fatal(err)
	}
	hatest.WaitFor(t, 20*time.Second, "replay paused on pg2", func() bool {
		return countOn(ctx, pg2, "SELECT (pg_get_wal_replay_pause_state() = 'paused')::int") == 1
	})
	if err := pg0.Exec(ctx, "INSERT INTO ticks VALUES (now(), 'last on pg0')"); err != nil {
		t.Fatal(err)
	}
	hatest.WaitFor(t, 20*time.Second, "pg2 to receive past its replay position", func() bool {
		return countOn(ctx, pg2, "SELECT (pg_last_wal_receive_lsn() > pg_last_wal_replay_lsn())::int") == 1
	})
	// pg0 dies, pg1 (behind) is promoted: pg2 is stranded on timeline 1,
	// past the fork.
	if err := pg0.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := pg1.Promote(ctx); err != nil {
		t.Fatal(err)
	}
	hatest.WaitFor(t, 30*time.Second, "the router to use pg1 as primary", func() bool {
		return roleOf(r, pg1.Addr()) == dbrouter.RolePrimary
	})
	// A commit on the new primary that pg2 will never have.
	if _, err := r.Exec(ctx, "INSERT INTO ticks VALUES (now(), 'on pg1')"); err != nil {
		t.Fatal(err)
	}
	committed := time.Now()
	if inserted, replayed := lsnOn(t, ctx, pg1, "pg_current_wal_insert_lsn()"), lsnOn(t, ctx, pg2, "pg_last_wal_replay_lsn()"); inserted >= replayed {
		t.Fatalf("pg1's insert position %s is not behind pg2's replay position %s: the case is not set up", inserted, replayed)
	}
	// Every probe of pg2 from now on: the lag is no less than the age of
	// the commit it lacks when the probe started.
	lagCoversTheLack(t, ctx, r, pg2, "pg2", committed, "SELECT count(*) FROM ticks WHERE note = 'on pg1'", func() {})
}

// lagCoversTheLack follows every probe of node (name) for 3s after a
// commit it lacks, made at since: node must still lack it (lacking counts
// it on node) and report a lag no less than its age when probed; each
// runs before every probe. Then node must be a replica over MaxLag (1s).
func lagCoversTheLack(t *testing.T, ctx context.Context, r *dbrouter.Router, node *hatest.PostgresNode, name string, since time.Time, lacking string, each func()) {
	t.Helper()
	checks := 0
	for s := nodeStatus(t, r, node); time.Since(since) < 3*time.Second; checks++ {
		each()
		s = nextProbe(t, r, node, s.Probed)
		if s.Role == dbrouter.RoleDown {
			t.Fatalf("%s is down: %v", name, s.Err)
		}
		if count(t, ctx, node, lacking) != 0 {
			t.Fatalf("%s has a commit it must lack (%s): the case is not set up", name, lacking)
		}
		if stale := s.Probed.Sub(since); s.Lag < stale {
			t.Fatalf("%s (%s) lag %v, but it lacks a commit %v old when probed", name, s.Role, s.Lag, stale)
		}
		t.Logf("%s (%s) lag %v; lacks a commit %v old", name, s.Role, s.Lag.Round(time.Millisecond), time.Since(since).Round(time.Millisecond))
	}
	if s := nodeStatus(t, r, node); s.Role != dbrouter.RoleReplica || s.Lag <= time.Second {
		t.Fatalf("after %d probes over 3s: %s %s, lag %v; want a replica over MaxLag", checks, name, s.Role, s.Lag)
	}
}

// A replica that no longer receives WAL (a network partition, a broken
// primary_conninfo) replays all it got and so has nothing received and
// not replayed; it lacks every commit since. Its lag must grow with the
// age of the first of those, and reads leave it once that passes MaxLag.
func TestLagNotReceivingReplica(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := hatest.NewPostgres(t, hatest.PostgresOptions{Replicas: 1})
	pg0, pg1 := c.Nodes[0], c.Nodes[1]
	r := newRouter(t, dbrouter.Config{Nodes: c.DSNs(), ProbeInterval: lagProbe})
	if _, err := r.Exec(ctx, "CREATE TABLE ticks (at timestamptz) WITH (autovacuum_enabled = off)"); err != nil {
		t.Fatal(err)
	}
	waitCaughtUp(t, ctx, pg0, pg1)
	stopReceiving(t, ctx, pg1)
	_, first := tick(t, ctx, r)
	lagCoversTheLack(t, ctx, r, pg1, "pg1", first, "SELECT count(*) FROM ticks", func() { tick(t, ctx, r) })
	var got int
	if err := r.Read(ctx, func(q dbrouter.Querier) (err error) { got, err = port(ctx, q); return err }); err != nil {
		t.Fatal(err)
	}
	if got != pg0.Port {
		t.Fatalf("a read went to port %d, want the primary's %d (pg1 is over MaxLag)", got, pg0.Port)
	}
}

// A healthy replica, with the defaults (MaxLag 1s, ProbeInterval 500ms):
// under steady writes and then with the primary idle, every probe finds
// it within MaxLag and reads go to it. Its figure is no longer 0 when it
// has replayed all it received (that says nothing of a replica that
// receives nothing), so this is what keeps it usable.
func TestLagHealthyReplicaEligible(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := hatest.NewPostgres(t, hatest.PostgresOptions{Replicas: 1})
	pg0, pg1 := c.Nodes[0], c.Nodes[1]
	r := newRouter(t, dbrouter.Config{Nodes: c.DSNs()})
	if _, err := r.Exec(ctx, "CREATE TABLE ticks (at timestamptz) WITH (autovacuum_enabled = off)"); err != nil {
		t.Fatal(err)
	}
	waitCaughtUp(t, ctx, pg0, pg1)
	start := time.Now()
	hatest.WaitFor(t, 20*time.Second, "pg1 probed as a replica within MaxLag", func() bool {
		s := nodeStatus(t, r, pg1)
		return s.Probed.After(start) && s.Role == dbrouter.RoleReplica && s.Lag <= time.Second
	})
	var worst time.Duration
	run := func(what string, writes bool, d time.Duration) {
		t.Helper()
		probes, reads := 0, 0
		prev := nodeStatus(t, r, pg1).Probed
		for end := time.Now().Add(d); time.Now().Before(end); {
			if writes {
				if _, err := r.Exec(ctx, "INSERT INTO ticks VALUES (now())"); err != nil {
					t.Fatal(err)
				}
			}
			var got int
			if err := r.Read(ctx, func(q dbrouter.Querier) (err error) { got, err = port(ctx, q); return err }); err != nil {
				t.Fatal(err)
			}
			reads++
			s := nodeStatus(t, r, pg1)
			if s.Role != dbrouter.RoleReplica || s.Lag > time.Second {
				t.Fatalf("%s: pg1 %s, lag %v (probe %v ago); want a replica within MaxLag 1s", what, s.Role, s.Lag, time.Since(s.Probed).Round(time.Millisecond))
			}
			if got != pg1.Port {
				t.Fatalf("%s: a read went to port %d, want the replica's %d (lag %v)", what, got, pg1.Port, s.Lag)
			}
			if s.Probed.After(prev) {
				probes, prev = probes+1, s.Probed
				worst = max(worst, s.Lag)
			}
			if !writes {
				// Nothing to wait on while idle: a read every 20ms.
				time.Sleep(20 * time.Millisecond)
			}
		}
		if probes < int(d/time.Second) {
			t.Fatalf("%s: %d probes of pg1 in %v, want at least one a second", what, probes, d)
		}
		t.Logf("%s for %v: %d reads, all on pg1; %d probes, the largest lag so far %v", what, d, reads, probes, worst.Round(time.Millisecond))
	}
	run("steady writes", true, 4*time.Second)
	run("primary idle", false, 3*time.Second)
}
