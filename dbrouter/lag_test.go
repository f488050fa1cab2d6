package dbrouter_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"hakit.dev/dbrouter"
	"hakit.dev/hatest"
)

// lagProbe is the router's probe interval in the lag test: how far the
// lag may overstate, beside the margin for a busy machine.
const (
	lagProbe  = 100 * time.Millisecond
	lagMargin = time.Second
	// lagIdle is how long the primary commits nothing before the commit
	// the paused replica lacks: what the replica's own bound (the age of
	// the last transaction it replayed) would report, far above the
	// truth plus lagProbe and lagMargin.
	lagIdle = 3 * time.Second
	// lagCaughtUp is the most a replica that lacks nothing may read: the
	// router's bound exceeds the truth by about a probe interval.
	lagCaughtUp = lagProbe + lagMargin
)

// A replica's lag is an upper bound of how stale it is, and a close one:
// after the primary was idle, one commit the replica has not replayed
// makes it as old as that commit (plus at most a probe interval), not as
// old as the last commit it replayed; while its replay stays paused and
// commits go on, the lag grows with the age of the first it lacks, never
// below; after it resumes, back within a probe interval (and the margin). Checked with each of three primaries, across
// two failovers (the history of the primary's positions starts again with
// each; the second goes idle at the start of a WAL segment), and the
// figures while the primary changes stay sane.
func TestReplicaLag(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c := hatest.NewPostgres(t, hatest.PostgresOptions{Replicas: 3})
	pg0, pg1, pg2, pg3 := c.Nodes[0], c.Nodes[1], c.Nodes[2], c.Nodes[3]
	r := newRouter(t, dbrouter.Config{Nodes: c.DSNs(), ProbeInterval: lagProbe})
	// No autovacuum: nothing commits but the test.
	if _, err := r.Exec(ctx, "CREATE TABLE ticks (at timestamptz) WITH (autovacuum_enabled = off)"); err != nil {
		t.Fatal(err)
	}

	checkReplicaLag(t, ctx, r, pg0, pg3, false)
	lagFailover(t, ctx, r, pg0, pg1, pg2, pg3)
	checkReplicaLag(t, ctx, r, pg1, pg3, true)
	lagFailover(t, ctx, r, pg1, pg2, pg3)
	checkReplicaLag(t, ctx, r, pg2, pg3, false)
}

// nodeStatus returns the router's status of node.
func nodeStatus(t *testing.T, r *dbrouter.Router, node *hatest.PostgresNode) dbrouter.NodeStatus {
	t.Helper()
	for _, s := range r.Status() {
		if s.Name == node.Addr() {
			return s
		}
	}
	t.Fatalf("no status for %s", node.Addr())
	return dbrouter.NodeStatus{}
}

// lsnOn reads an LSN function on node.
func lsnOn(t *testing.T, ctx context.Context, node *hatest.PostgresNode, fn string) dbrouter.LSN {
	t.Helper()
	conn, err := pgx.Connect(ctx, node.DSN())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var s string
	if err := conn.QueryRow(ctx, "SELECT "+fn+"::text").Scan(&s); err != nil {
		t.Fatal(err)
	}
	l, err := dbrouter.ParseLSN(s)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// tick commits a row through the router and returns when it was sent and
// when its commit was acknowledged.
func tick(t *testing.T, ctx context.Context, r *dbrouter.Router) (sent, done time.Time) {
	t.Helper()
	sent = time.Now()
	if _, err := r.Exec(ctx, "INSERT INTO ticks VALUES (now())"); err != nil {
		t.Fatal(err)
	}
	return sent, time.Now()
}

// checkReplicaLag runs the idle primary, paused replica scenario on
// primary and replica. With switchWAL the primary goes idle at the start
// of a WAL segment: its insert position then reads past the segment's
// page header, the replica's replay position the segment's start.
func checkReplicaLag(t *testing.T, ctx context.Context, r *dbrouter.Router, primary, replica *hatest.PostgresNode, switchWAL bool) {
	t.Helper()
	for attempt := 1; ; attempt++ {
		// Caught up, and the router says so.
		_, last := tick(t, ctx, r)
		if switchWAL {
			if err := primary.Exec(ctx, "SELECT pg_switch_wal()"); err != nil {
				t.Fatal(err)
			}
		}
		waitCaughtUp(t, ctx, primary, replica)
		caughtUp := time.Now()
		hatest.WaitFor(t, 20*time.Second, "the router to see "+replica.Name+" caught up", func() bool {
			s := nodeStatus(t, r, replica)
			return s.Role == dbrouter.RoleReplica && s.Probed.After(caughtUp) && s.Lag <= lagCaughtUp
		})

		// The scenario: the primary commits nothing for lagIdle.
		time.Sleep(time.Until(last.Add(lagIdle)))

		// Replay paused; then one commit, which the replica receives and
		// lacks.
		if err := replica.Exec(ctx, "SELECT pg_wal_replay_pause()"); err != nil {
			t.Fatal(err)
		}
		hatest.WaitFor(t, 20*time.Second, "replay paused on "+replica.Name, func() bool {
			return countOn(ctx, replica, "SELECT (pg_get_wal_replay_pause_state() = 'paused')::int") == 1
		})
		if !switchWAL {
			break
		}
		// The server writes a record of its own now and then (a
		// snapshot of running transactions, every 15s at most): if one
		// came after the switch, the primary is no longer idle at the
		// segment's start. Then again.
		inserted, replayed := lsnOn(t, ctx, primary, "pg_current_wal_insert_lsn()"), lsnOn(t, ctx, replica, "pg_last_wal_replay_lsn()")
		if replayed%8192 == 0 && inserted > replayed && inserted-replayed <= 40 {
			t.Logf("idle at a segment's start: the primary's insert position %s, %s's replay position %s", inserted, replica.Name, replayed)
			break
		}
		if attempt == 4 {
			t.Fatalf("after %d WAL switches, the primary never stayed idle at a segment's start for %v (insert position %s, replayed %s)",
				attempt, lagIdle, inserted, replayed)
		}
		t.Logf("the primary wrote after the WAL switch (insert position %s, replayed %s): again", inserted, replayed)
		if err := replica.Exec(ctx, "SELECT pg_wal_replay_resume()"); err != nil {
			t.Fatal(err)
		}
	}
	firstSent, firstDone := tick(t, ctx, r)
	// check asserts the lag of a probe that started after the commit
	// was acknowledged: no less than the commit's age when the probe
	// started, no more than its age now plus a probe interval (and the
	// margin).
	var s dbrouter.NodeStatus
	check := func(what string) {
		t.Helper()
		now := time.Now()
		low, high := s.Probed.Sub(firstDone), now.Sub(firstSent)+lagProbe+lagMargin
		if s.Lag < low || s.Lag > high {
			t.Fatalf("%s: %s lag %v, want the age of the first commit it lacks: %v to %v (the old bound, since the last replayed commit, is over %v)",
				what, replica.Name, s.Lag, low, high, lagIdle)
		}
		t.Logf("%s: %s lag %v; the first commit it lacks is %v to %v old", what, replica.Name, s.Lag.Round(time.Millisecond),
			low.Round(time.Millisecond), now.Sub(firstSent).Round(time.Millisecond))
	}
	hatest.WaitFor(t, 20*time.Second, "a probe of "+replica.Name+" after the commit", func() bool {
		s = nodeStatus(t, r, replica)
		return s.Probed.After(firstDone)
	})
	check("one commit after an idle primary")

	// Commits go on, replay stays paused: the lag follows the age of the
	// first commit it lacks.
	checks := 0
	for prev := s.Probed; time.Since(firstDone) < 2*time.Second; prev = s.Probed {
		tick(t, ctx, r)
		hatest.WaitFor(t, 20*time.Second, "a new probe of "+replica.Name, func() bool {
			s = nodeStatus(t, r, replica)
			return s.Probed.After(prev)
		})
		check("commits going on")
		checks++
	}
	if s.Lag < time.Second {
		t.Fatalf("after %d probes over 2s of paused replay, %s lag %v, want over 1s", checks, replica.Name, s.Lag)
	}
	if s.Role != dbrouter.RoleReplica {
		t.Fatalf("%s is %s, want replica", replica.Name, s.Role)
	}
	if roles := roleOf(r, primary.Addr()); roles != dbrouter.RolePrimary {
		t.Fatalf("%s is %s, want primary", primary.Name, roles)
	}

	// Resumed: it replays what it lacked, and the lag is back within a
	// probe interval (and the margin).
	if err := replica.Exec(ctx, "SELECT pg_wal_replay_resume()"); err != nil {
		t.Fatal(err)
	}
	resumed := time.Now()
	hatest.WaitFor(t, 20*time.Second, "the router to see "+replica.Name+" caught up after resuming", func() bool {
		s = nodeStatus(t, r, replica)
		return s.Probed.After(resumed) && s.Lag <= lagCaughtUp
	})
}

// lagFailover kills old, promotes next and points the others at it,
// checking every replica's lag figure meanwhile and until the router has
// next as its primary: never negative, never more than the time since the
// last commit before the failover (every replica had replayed it), give
// or take a probe interval and the margin.
func lagFailover(t *testing.T, ctx context.Context, r *dbrouter.Router, old, next *hatest.PostgresNode, others ...*hatest.PostgresNode) {
	t.Helper()
	lastSent, _ := tick(t, ctx, r)
	for _, n := range append([]*hatest.PostgresNode{next}, others...) {
		waitCaughtUp(t, ctx, old, n)
	}
	checkSane := func() {
		t.Helper()
		most := time.Since(lastSent) + lagProbe + lagMargin
		for _, s := range r.Status() {
			if s.Lag < 0 || s.Lag > most {
				t.Fatalf("during the failover to %s: %s (%s) lag %v, want 0 to %v", next.Name, s.Name, s.Role, s.Lag, most)
			}
		}
	}
	if err := old.Kill(); err != nil {
		t.Fatal(err)
	}
	checkSane()
	if err := next.Promote(ctx); err != nil {
		t.Fatal(err)
	}
	checkSane()
	for _, n := range others {
		if err := n.Follow(ctx, next); err != nil {
			t.Fatal(err)
		}
		checkSane()
	}
	hatest.WaitFor(t, 30*time.Second, "the router to use "+next.Name+" as primary", func() bool {
		checkSane()
		return roleOf(r, next.Addr()) == dbrouter.RolePrimary
	})
	// The router's history bounds a replica's lag only once the replica
	// is known to replay the new timeline: its last restartpoint is on
	// it. A checkpoint on the new primary, then a restartpoint on each
	// replica once it has replayed that, instead of waiting up to
	// checkpoint_timeout.
	if err := next.Exec(ctx, "CHECKPOINT"); err != nil {
		t.Fatal(err)
	}
	tl, err := next.Timeline(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range others {
		waitCaughtUp(t, ctx, next, n)
		if err := n.Exec(ctx, "CHECKPOINT"); err != nil {
			t.Fatal(err)
		}
		hatest.WaitFor(t, 20*time.Second, "a restartpoint of "+n.Name+" on timeline "+strconv.Itoa(tl), func() bool {
			return countOn(ctx, n, "SELECT timeline_id FROM pg_control_checkpoint()") == tl
		})
	}
	// A few probes more with the new primary's history.
	known := time.Now()
	hatest.WaitFor(t, 20*time.Second, "every replica probed with the new primary known", func() bool {
		checkSane()
		for _, n := range others {
			if s := nodeStatus(t, r, n); s.Role != dbrouter.RoleReplica || !s.Probed.After(known.Add(3*lagProbe)) {
				return false
			}
		}
		return true
	})
}
