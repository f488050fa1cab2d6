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
	checks := 0
	for s := nodeStatus(t, r, pg2); time.Since(committed) < 3*time.Second; checks++ {
		s = nextProbe(t, r, pg2, s.Probed)
		if s.Role == dbrouter.RoleDown {
			t.Fatalf("pg2 is down: %v", s.Err)
		}
		if count(t, ctx, pg2, "SELECT count(*) FROM ticks WHERE note = 'on pg1'") != 0 {
			t.Fatal("pg2 has the commit made on pg1: the case is not set up")
		}
		if stale := s.Probed.Sub(committed); s.Lag < stale {
			t.Fatalf("pg2 (%s) lag %v, but it lacks a commit %v old when probed", s.Role, s.Lag, stale)
		}
		t.Logf("pg2 (%s) lag %v; lacks a commit %v old", s.Role, s.Lag.Round(time.Millisecond), time.Since(committed).Round(time.Millisecond))
	}
	if s := nodeStatus(t, r, pg2); s.Role != dbrouter.RoleReplica || s.Lag <= time.Second {
		t.Fatalf("after %d probes over 3s: pg2 %s, lag %v; want a replica over MaxLag", checks, s.Role, s.Lag)
	}
}
