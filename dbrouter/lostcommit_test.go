package dbrouter_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"hakit.dev/dbrouter"
	"hakit.dev/hatest"
)

// A lost COMMIT must be resolved right on a primary that has been through
// a recovery: a replica promoted before the write, a primary restarted
// after a crash, a second failover. Each case runs the COMMIT's answer lost
// (the COMMIT reached the server) and the COMMIT itself lost (it never
// did): one row either way.
func TestLostCommitAfterRecovery(t *testing.T) {
	t.Parallel()

	// promoted returns a single node that was a replica and has been
	// promoted (its run began with a recovery), the old primary dead.
	promoted := func(t *testing.T, ctx context.Context) *hatest.PostgresNode {
		c := hatest.NewPostgres(t, hatest.PostgresOptions{Replicas: 1})
		if err := c.Nodes[0].Kill(); err != nil {
			t.Fatal(err)
		}
		if err := c.Nodes[1].Promote(ctx); err != nil {
			t.Fatal(err)
		}
		return c.Nodes[1]
	}
	// crashed returns a single primary that was killed and started again
	// (crash recovery), after some writes.
	crashed := func(t *testing.T, ctx context.Context) *hatest.PostgresNode {
		c := hatest.NewPostgres(t, hatest.PostgresOptions{})
		pg := c.Nodes[0]
		if err := pg.Exec(ctx, "CREATE TABLE before_crash (id int); INSERT INTO before_crash SELECT generate_series(1, 1000)"); err != nil {
			t.Fatal(err)
		}
		if err := pg.Kill(); err != nil {
			t.Fatal(err)
		}
		if err := pg.Start(ctx); err != nil {
			t.Fatal(err)
		}
		return pg
	}
	for _, start := range []struct {
		name string
		node func(*testing.T, context.Context) *hatest.PostgresNode
	}{{"promoted replica", promoted}, {"crash-restarted primary", crashed}} {
		t.Run(start.name+", answer lost", func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			pg := start.node(t, ctx)
			wantRecovered(t, ctx, pg)
			px, dsn := proxied(t, pg)
			r := newRouter(t, dbrouter.Config{Nodes: []string{dsn}})
			if _, err := r.Exec(ctx, "CREATE TABLE t (id int)"); err != nil {
				t.Fatal(err)
			}
			runs := 0
			for i := range 5 {
				px.arm(func(client, server net.Conn) {
					before := countOn(ctx, pg, "SELECT count(*) FROM t")
					forward(server)
					eventually(10*time.Second, func() bool { return countOn(ctx, pg, "SELECT count(*) FROM t") > before })
				})
				calls, err := insertOne(ctx, r)
				if err != nil {
					t.Fatalf("write %d: %v", i+1, err)
				}
				runs += calls
			}
			if n := count(t, ctx, pg, "SELECT count(*) FROM t"); n != 5 || runs != 5 {
				t.Fatalf("5 writes whose COMMIT answer was lost left %d rows after %d runs; want 5 rows, 5 runs", n, runs)
			}
			wantResolutions(t, r, "committed", 5)
		})
		t.Run(start.name+", COMMIT lost", func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			pg := start.node(t, ctx)
			px, dsn := proxied(t, pg)
			r := newRouter(t, dbrouter.Config{Nodes: []string{dsn}})
			if _, err := r.Exec(ctx, "CREATE TABLE t (id int)"); err != nil {
				t.Fatal(err)
			}
			// The COMMIT never reaches the server: the connection closes,
			// the server rolls back, the router runs the write again.
			px.arm(func(client, server net.Conn) {})
			calls, err := insertOne(ctx, r)
			if err != nil || calls != 2 {
				t.Fatalf("%v after %d runs; want success after 2", err, calls)
			}
			if n := count(t, ctx, pg, "SELECT count(*) FROM t"); n != 1 {
				t.Fatalf("%d rows; want 1", n)
			}
			wantResolutions(t, r, "aborted", 1)
		})
	}

	// The second failover: pg0 → pg1 → pg2, with the COMMIT lost on pg1.
	t.Run("second failover, committed", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		first, second, px, r := secondFailoverCluster(t, ctx)
		if err := first.SetSetting(ctx, "synchronous_standby_names", "*"); err != nil {
			t.Fatal(err)
		}
		px.arm(func(client, server net.Conn) {
			forward(server)
			eventually(10*time.Second, func() bool { return countOn(ctx, second, "SELECT count(*) FROM t") == 1 })
			_ = first.Kill()
			_ = second.Promote(ctx)
		})
		insertCommittedOnce(t, ctx, r, second, "write whose COMMIT answer was lost in the second failover")
	})
	t.Run("second failover, not committed", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		first, second, px, r := secondFailoverCluster(t, ctx)
		px.arm(func(client, server net.Conn) {
			_ = first.Kill()
			_ = second.Promote(ctx)
		})
		calls, err := insertOne(ctx, r)
		if err != nil || calls != 2 {
			t.Fatalf("%v after %d runs; want success after 2", err, calls)
		}
		if n := count(t, ctx, second, "SELECT count(*) FROM t"); n != 1 {
			t.Fatalf("%d rows; want 1", n)
		}
		wantResolutions(t, r, "aborted", 1)
	})

	// The new primary never received the transaction, handed its id to a
	// transaction of its own, and crash-restarted before the router asked:
	// its recovery end is now past the position read before COMMIT, and
	// pg_xact_status would say "committed" for the other transaction. The
	// router must not report the write done: with the right to read the
	// timeline history it runs the write again; without, ErrCommitUnknown.
	for _, superuser := range []bool{true, false} {
		name := "promoted, id reused, crash-restarted before the question"
		if !superuser {
			name += ", history unreadable"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			c := hatest.NewPostgres(t, hatest.PostgresOptions{Replicas: 1})
			old, next := c.Nodes[0], c.Nodes[1]
			if err := old.Exec(ctx, "CREATE TABLE t (id int); CREATE TABLE own (id int); CREATE ROLE app LOGIN; GRANT ALL ON t, own TO app"); err != nil {
				t.Fatal(err)
			}
			waitCaughtUp(t, ctx, old, next)
			px, dsn := proxied(t, old)
			// The router reaches the new primary through a proxy that
			// plays dead until its crash restart is over: the question
			// comes after it, whatever the router's timing.
			nextPx, nextDSN := proxied(t, next)
			if !superuser {
				dsn = strings.Replace(dsn, "postgres@", "app@", 1)
				nextDSN = strings.Replace(nextDSN, "postgres@", "app@", 1)
			}
			r := newRouter(t, dbrouter.Config{Nodes: []string{dsn, nextDSN}})
			waitCaughtUp(t, ctx, old, next)
			hatest.WaitFor(t, 10*time.Second, "the router to see the replica", func() bool {
				return roleOf(r, nextPx.Addr()) == dbrouter.RoleReplica
			})
			// The replica stops receiving: the write below never reaches it.
			if err := next.SetSetting(ctx, "primary_conninfo", ""); err != nil {
				t.Fatal(err)
			}
			hatest.WaitFor(t, 10*time.Second, "the replica to stop streaming", func() bool {
				return count(t, ctx, next, "SELECT count(*) FROM pg_stat_wal_receiver") == 0
			})
			armed := make(chan error, 1)
			px.arm(func(client, server net.Conn) {
				forward(server)
				armed <- func() error {
					if !eventually(10*time.Second, func() bool { return countOn(ctx, old, "SELECT count(*) FROM t") == 1 }) {
						return errors.New("the write did not commit on the old primary")
					}
					nextPx.setDown(true)
					defer nextPx.setDown(false)
					if err := old.Kill(); err != nil {
						return err
					}
					if err := next.Promote(ctx); err != nil {
						return err
					}
					// Transactions of its own take the ids the lost write had,
					// and enough WAL goes past its position.
					for range 20 {
						if err := next.Exec(ctx, "INSERT INTO own VALUES (1)"); err != nil {
							return err
						}
					}
					if err := next.Exec(ctx, "INSERT INTO own SELECT generate_series(1, 20000)"); err != nil {
						return err
					}
					if err := next.Kill(); err != nil {
						return err
					}
					return next.Start(ctx)
				}()
			})
			calls, err := insertOne(ctx, r)
			if err := <-armed; err != nil {
				t.Fatal(err)
			}
			rows := count(t, ctx, next, "SELECT count(*) FROM t")
			if superuser {
				if err != nil || rows != 1 || calls != 2 {
					t.Fatalf("write: %v, %d rows on the new primary after %d runs; want success, 1 row after 2 runs", err, rows, calls)
				}
				return
			}
			if !errors.Is(err, dbrouter.ErrCommitUnknown) || !strings.Contains(err.Error(), "pg_read_file") || rows != 0 || calls != 1 {
				t.Fatalf("write: %v, %d rows after %d runs; want ErrCommitUnknown naming pg_read_file, 0 rows, 1 run", err, rows, calls)
			}
		})
	}

	// No proxy: the router itself cuts a COMMIT on a node that hangs (its
	// probe times out), then asks the same node once it is back. The
	// COMMIT waits for a synchronous standby, so the cancel that pgx sends
	// when the connection is cut cannot roll it back.
	t.Run("hung promoted primary cut during COMMIT", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		pg := promoted(t, ctx)
		r := newRouter(t, dbrouter.Config{Nodes: []string{pg.DSN()}, ProbeTimeout: 300 * time.Millisecond, ConfigurePool: oneConn})
		if _, err := r.Exec(ctx, "CREATE TABLE t (id int)"); err != nil {
			t.Fatal(err)
		}
		setSyncStandbys(t, ctx, r, pg, "nobody")
		done := make(chan error, 1)
		calls := 0
		go func() {
			var err error
			calls, err = insertOne(ctx, r)
			done <- err
		}()
		hatest.WaitFor(t, 10*time.Second, "the COMMIT to wait for the standby", func() bool {
			select {
			case err := <-done:
				t.Fatalf("write ended before the test paused the node: %v, %d runs", err, calls)
			default:
			}
			return count(t, ctx, pg, "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep' AND state = 'active' AND query LIKE 'COMMIT%'") == 1
		})
		if err := pg.Pause(); err != nil {
			t.Fatal(err)
		}
		hatest.WaitFor(t, 10*time.Second, "the router to find the node down", func() bool {
			return roleOf(r, pg.Addr()) == dbrouter.RoleDown
		})
		if err := pg.Resume(); err != nil {
			t.Fatal(err)
		}
		// Let any COMMIT that comes now through.
		if err := pg.SetSetting(ctx, "synchronous_standby_names", ""); err != nil {
			t.Fatal(err)
		}
		if err := <-done; err != nil {
			t.Fatalf("write across the hang: %v", err)
		}
		if n := count(t, ctx, pg, "SELECT count(*) FROM t"); n != 1 || calls != 1 {
			t.Fatalf("%d rows after %d runs; want 1 row, 1 run", n, calls)
		}
		wantResolutions(t, r, "committed", 1)
	})
}

// The caller's context ends during COMMIT on a healthy primary: the
// router finds out on a short context of its own instead of answering
// ErrCommitUnknown.
func TestContextEndsDuringCommit(t *testing.T) {
	t.Parallel()
	t.Run("committed", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		// COMMIT waits for a synchronous standby that never comes: pgx
		// cancels the wait when the context ends, and PostgreSQL keeps
		// the commit (it is already in the local WAL).
		c := hatest.NewPostgres(t, hatest.PostgresOptions{})
		pg := c.Nodes[0]
		r := newRouter(t, dbrouter.Config{Nodes: []string{pg.DSN()}, ConfigurePool: oneConn})
		if _, err := r.Exec(ctx, "CREATE TABLE t (id int)"); err != nil {
			t.Fatal(err)
		}
		setSyncStandbys(t, ctx, r, pg, "nobody")
		wctx, wcancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer wcancel()
		calls, err := insertOne(wctx, r)
		if err != nil {
			t.Fatalf("write whose context ended during a COMMIT that went through: %v", err)
		}
		if n := count(t, ctx, pg, "SELECT count(*) FROM t"); n != 1 || calls != 1 {
			t.Fatalf("%d rows after %d runs; want 1 row, 1 run", n, calls)
		}
	})
	t.Run("not committed", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		// COMMIT runs a slow deferred trigger: the cancel rolls it back.
		c := hatest.NewPostgres(t, hatest.PostgresOptions{})
		pg := c.Nodes[0]
		r := newRouter(t, dbrouter.Config{Nodes: []string{pg.DSN()}})
		if _, err := r.Exec(ctx, slowCommitDDL("5")); err != nil {
			t.Fatal(err)
		}
		wctx, wcancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer wcancel()
		var calls atomic.Int32
		err := slowInsert(wctx, r, &calls)
		if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, dbrouter.ErrCommitUnknown) {
			t.Fatalf("err = %v; want the context's deadline, not ErrCommitUnknown", err)
		}
		if n := count(t, ctx, pg, "SELECT count(*) FROM t"); n != 0 || calls.Load() != 1 {
			t.Fatalf("%d rows after %d runs; want 0 rows, 1 run", n, calls.Load())
		}
	})
}

// oneConn limits a router's pools to one connection, so that what a test
// sees on it is what the next write sees.
func oneConn(_ string, pc *pgxpool.Config) { pc.MaxConns = 1 }

// setSyncStandbys sets synchronous_standby_names on pg and waits until
// a COMMIT there waits for a standby: a reload reaches each backend in
// its own time, and commits wait only once the checkpointer has reloaded
// it too. The router's pooled connection (one: see oneConn) must show it
// as well.
func setSyncStandbys(t *testing.T, ctx context.Context, r *dbrouter.Router, pg *hatest.PostgresNode, names string) {
	t.Helper()
	if err := pg.SetSetting(ctx, "synchronous_standby_names", names); err != nil {
		t.Fatal(err)
	}
	hatest.WaitFor(t, 10*time.Second, "a COMMIT to wait for a synchronous standby", func() bool {
		conn, err := pgx.Connect(ctx, pg.DSN())
		if err != nil {
			return false
		}
		defer conn.Close(context.Background())
		var pid int
		if err := conn.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
			return false
		}
		done := make(chan error, 1)
		go func() {
			_, err := conn.Exec(ctx, "CREATE TEMP TABLE probe ()")
			done <- err
		}()
		for {
			select {
			case <-done:
				return false // committed without waiting: not yet
			default:
			}
			if count(t, ctx, pg, "SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND wait_event = 'SyncRep' AND state = 'active'", pid) == 1 {
				// Waiting: release it (the commit stays, locally).
				_ = pg.Exec(ctx, "SELECT pg_cancel_backend($1)", pid)
				<-done
				return true
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
	// Asked on the primary's pool, not in a Write: a Write writes WAL of
	// its own at BEGIN, so its COMMIT would wait for the standby too.
	hatest.WaitFor(t, 10*time.Second, "the router's connection to reload the setting", func() bool {
		pool, err := r.Primary()
		if err != nil {
			return false
		}
		var got string
		err = pool.QueryRow(ctx, "SHOW synchronous_standby_names").Scan(&got)
		return err == nil && got == names
	})
}

// slowCommitDDL makes table t whose first committed insert sleeps secs
// at COMMIT (a deferred trigger); later ones (with a row in slept) don't.
func slowCommitDDL(secs string) string {
	return `CREATE TABLE t (id int);
		CREATE TABLE slept (n int);
		CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF NOT EXISTS (SELECT FROM slept) THEN PERFORM pg_sleep(` + secs + `); END IF;
			RETURN NULL;
		END $$;
		CREATE CONSTRAINT TRIGGER slow AFTER INSERT ON t DEFERRABLE INITIALLY DEFERRED
			FOR EACH ROW EXECUTE FUNCTION slow_commit()`
}

// slowInsert inserts into a slowCommitDDL table t; runs after the first
// also mark the sleep as done, so only the first COMMIT sleeps.
func slowInsert(ctx context.Context, r *dbrouter.Router, calls *atomic.Int32) error {
	return r.Write(ctx, func(tx pgx.Tx) error {
		if calls.Add(1) > 1 {
			if _, err := tx.Exec(ctx, "INSERT INTO slept VALUES (1)"); err != nil {
				return err
			}
		}
		_, err := tx.Exec(ctx, "INSERT INTO t VALUES (1)")
		return err
	})
}

// secondFailoverCluster starts pg0 with replicas pg1 and pg2, fails over
// to pg1 (pg0 killed, pg2 following pg1), and returns pg1, the primary now
// on timeline 2; pg2, its replica; a commitProxy in front of pg1; and a
// router on both (pg1 through the proxy) with table t made and replayed
// on pg2.
func secondFailoverCluster(t *testing.T, ctx context.Context) (first, second *hatest.PostgresNode, px *commitProxy, r *dbrouter.Router) {
	t.Helper()
	c := hatest.NewPostgres(t, hatest.PostgresOptions{Replicas: 2})
	first, second = c.Nodes[1], c.Nodes[2]
	if err := c.Nodes[0].Kill(); err != nil {
		t.Fatal(err)
	}
	if err := first.Promote(ctx); err != nil {
		t.Fatal(err)
	}
	if err := second.Follow(ctx, first); err != nil {
		t.Fatal(err)
	}
	if tl, err := first.Timeline(ctx); err != nil || tl != 2 {
		t.Fatalf("timeline after the first failover: %d (%v), want 2", tl, err)
	}
	px, dsn := proxied(t, first)
	r = newRouter(t, dbrouter.Config{Nodes: []string{dsn, second.DSN()}})
	if _, err := r.Exec(ctx, "CREATE TABLE t (id int)"); err != nil {
		t.Fatal(err)
	}
	waitCaughtUp(t, ctx, first, second)
	return first, second, px, r
}

// waitCaughtUp waits until replica has replayed all that primary wrote.
func waitCaughtUp(t *testing.T, ctx context.Context, primary, replica *hatest.PostgresNode) {
	t.Helper()
	lsn, err := primary.LSN(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := replica.WaitReplay(ctx, lsn); err != nil {
		t.Fatal(err)
	}
}

// wantRecovered checks that pg's current run began with a recovery, which
// is what the test is about.
func wantRecovered(t *testing.T, ctx context.Context, pg *hatest.PostgresNode) {
	t.Helper()
	if n := count(t, ctx, pg, "SELECT count(*) FROM (SELECT pg_last_wal_replay_lsn() AS l) s WHERE l IS NOT NULL"); n != 1 {
		t.Fatal("pg_last_wal_replay_lsn() is NULL: the node did not recover")
	}
}

// A server at max_connections refuses new connections (SQLSTATE 53300)
// while the router's pool has connections in use that will come free:
// writes wait for one (bounded by their context) instead of failing, and
// a write that waits in vain says why.
func TestServerOutOfConnections(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := hatest.NewPostgres(t, hatest.PostgresOptions{Settings: map[string]string{
		"max_connections": "8", "superuser_reserved_connections": "0",
	}})
	pg := c.Nodes[0]
	if err := pg.Exec(ctx, "CREATE TABLE t (id int)"); err != nil {
		t.Fatal(err)
	}
	// Other clients take all but two slots: one for the router's prober,
	// one for its pool.
	var held []*pgx.Conn
	t.Cleanup(func() {
		for _, c := range held {
			c.Close(context.Background())
		}
	})
	for range 6 {
		conn, err := pgx.Connect(ctx, pg.DSN())
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, conn)
	}
	// count on a held connection: the server has no slot for a new one.
	count := func(t *testing.T, ctx context.Context, _ *hatest.PostgresNode, sql string) int {
		t.Helper()
		var n int
		if err := held[0].QueryRow(ctx, sql).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	r := newRouter(t, dbrouter.Config{Nodes: []string{pg.DSN()}})
	errs := make(chan error, 6)
	for range 6 {
		go func() {
			errs <- r.Write(ctx, func(tx pgx.Tx) error {
				_, err := tx.Exec(ctx, "INSERT INTO t SELECT 1 FROM pg_sleep(0.05)")
				return err
			})
		}()
	}
	failed := 0
	for range 6 {
		if err := <-errs; err != nil {
			failed++
			t.Log(err)
		}
	}
	if n := count(t, ctx, pg, "SELECT count(*) FROM t"); failed != 0 || n != 6 {
		t.Fatalf("%d of 6 concurrent writes failed on a full server, %d rows; want 0 failed, 6 rows", failed, n)
	}

	// The pool's one connection is busy for longer than a write may wait:
	// the write fails with the server's refusal in its error.
	busy := make(chan error, 1)
	go func() {
		busy <- r.Write(ctx, func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, "SELECT pg_sleep(2)")
			return err
		})
	}()
	hatest.WaitFor(t, 10*time.Second, "the long write to start", func() bool {
		return count(t, ctx, pg, "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep'") == 1
	})
	wctx, wcancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer wcancel()
	_, err := insertOne(wctx, r)
	var pgErr *pgconn.PgError
	if !errors.Is(err, context.DeadlineExceeded) || !errors.As(err, &pgErr) || pgErr.Code != "53300" {
		t.Fatalf("write that found no connection: %v; want the context's deadline and SQLSTATE 53300", err)
	}
	if err := <-busy; err != nil {
		t.Fatal(err)
	}
}

// A replica at max_connections is skipped: reads go to a node that takes
// them, at once, instead of failing or waiting.
func TestFullReplicaIsSkipped(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := hatest.NewPostgres(t, hatest.PostgresOptions{Replicas: 1, Settings: map[string]string{
		"max_connections": "8", "superuser_reserved_connections": "0",
	}})
	primary, replica := c.Nodes[0], c.Nodes[1]
	r := newRouter(t, dbrouter.Config{Nodes: c.DSNs()})
	hatest.WaitFor(t, 10*time.Second, "the router to see the replica", func() bool {
		return roleOf(r, replica.Addr()) == dbrouter.RoleReplica
	})
	// Fill the replica: the router's prober holds one slot, others the rest.
	var held []*pgx.Conn
	t.Cleanup(func() {
		for _, c := range held {
			c.Close(context.Background())
		}
	})
	for {
		conn, err := pgx.Connect(ctx, replica.DSN())
		if err != nil {
			var pgErr *pgconn.PgError
			if errors.As(err, &pgErr) && pgErr.Code == "53300" {
				break
			}
			t.Fatal(err)
		}
		held = append(held, conn)
	}
	for i := range 10 {
		rctx, rcancel := context.WithTimeout(ctx, 2*time.Second)
		err := r.Read(rctx, func(q dbrouter.Querier) error {
			p, err := port(rctx, q)
			if err == nil && p != primary.Port {
				return fmt.Errorf("read on port %d, want the primary's %d", p, primary.Port)
			}
			return err
		})
		rcancel()
		if err != nil {
			t.Fatalf("read %d with the replica full: %v", i, err)
		}
	}
}
