package dbrouter_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"hakit.dev/dbrouter"
	"hakit.dev/hatest"
)

func TestRouting(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := hatest.NewPostgres(t, hatest.PostgresOptions{Replicas: 2})
	r := newRouter(t, dbrouter.Config{Nodes: c.DSNs()})
	primary := c.Nodes[0]

	roles := map[string]dbrouter.Role{}
	for _, s := range r.Status() {
		roles[s.Name] = s.Role
	}
	want := map[string]dbrouter.Role{primary.Addr(): dbrouter.RolePrimary, c.Nodes[1].Addr(): dbrouter.RoleReplica, c.Nodes[2].Addr(): dbrouter.RoleReplica}
	if fmt.Sprint(roles) != fmt.Sprint(want) {
		t.Fatalf("roles %v, want %v", roles, want)
	}

	// Writes run on the primary.
	ctx = dbrouter.WithMinLSN(ctx, 0)
	err := r.Write(ctx, func(tx pgx.Tx) error {
		if p, err := port(ctx, tx); err != nil || p != primary.Port {
			return fmt.Errorf("write on port %d (%v), want the primary's %d", p, err, primary.Port)
		}
		_, err := tx.Exec(ctx, "CREATE TABLE items (id int PRIMARY KEY, name text)")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Exec(ctx, "INSERT INTO items VALUES (1, 'one')"); err != nil {
		t.Fatal(err)
	}
	if dbrouter.MinLSN(ctx) == 0 {
		t.Fatal("writes did not record their commit LSN in the context")
	}

	// Reads run on the replicas, both of them, and see the writes made
	// with the same context (the others once replicated).
	if err := c.WaitReplicated(ctx); err != nil {
		t.Fatal(err)
	}
	seen := map[int]int{}
	for i := range 60 {
		rctx := ctx
		if i%2 == 0 {
			rctx = context.Background() // no read-your-writes position
		}
		var name string
		err := r.Read(rctx, func(q dbrouter.Querier) error {
			p, err := port(ctx, q)
			seen[p]++
			if err != nil {
				return err
			}
			return q.QueryRow(ctx, "SELECT name FROM items WHERE id = 1").Scan(&name)
		})
		if err != nil || name != "one" {
			t.Fatalf("read: %q, %v", name, err)
		}
	}
	if seen[c.Nodes[1].Port] == 0 || seen[c.Nodes[2].Port] == 0 || seen[primary.Port] != 0 {
		t.Fatalf("reads by port %v: want both replicas and not the primary; status %v", seen, r.Status())
	}

	// The conveniences route by intent.
	var name string
	if err := r.QueryRow(ctx, "SELECT name FROM items WHERE id = $1", 1).Scan(&name); err != nil || name != "one" {
		t.Fatalf("QueryRow: %q, %v", name, err)
	}
	rows, err := r.Query(ctx, "SELECT inet_server_port() FROM generate_series(1, 3)")
	if err != nil {
		t.Fatal(err)
	}
	ports, err := pgx.CollectRows(rows, pgx.RowTo[int])
	if err != nil || len(ports) != 3 || ports[0] == primary.Port {
		t.Fatalf("Query: ports %v, %v; want 3 rows from a replica", ports, err)
	}
	if err := r.QueryRow(ctx, "SELECT name FROM items WHERE id = 2").Scan(&name); !errors.Is(err, pgx.ErrNoRows) {
		t.Fatalf("QueryRow of a missing row: %v, want pgx.ErrNoRows", err)
	}

	// Raw pools.
	pp, err := r.Primary()
	if err != nil {
		t.Fatal(err)
	}
	var p int
	if err := pp.QueryRow(ctx, "SELECT inet_server_port()").Scan(&p); err != nil || p != primary.Port {
		t.Fatalf("Primary() pool on port %d, %v", p, err)
	}
	rp, err := r.Replica()
	if err != nil {
		t.Fatal(err)
	}
	if err := rp.QueryRow(ctx, "SELECT inet_server_port()").Scan(&p); err != nil || p == primary.Port {
		t.Fatalf("Replica() pool on port %d, %v", p, err)
	}

	// An application error comes back as it is, wrapped with the node.
	_, err = r.Exec(ctx, "INSERT INTO items VALUES (1, 'again')")
	var pgErr *pgconn.PgError
	var nodeErr *dbrouter.NodeError
	if !errors.As(err, &pgErr) || pgErr.Code != "23505" || !errors.As(err, &nodeErr) || nodeErr.Node != primary.Addr() {
		t.Fatalf("duplicate insert: %v; want a unique violation from node %s", err, primary.Addr())
	}
	if n := count(t, ctx, primary, "SELECT count(*) FROM items"); n != 1 {
		t.Fatalf("%d items, want 1 (a failed write must not be retried)", n)
	}
	// fn must not end the transaction itself.
	err = r.Write(ctx, func(tx pgx.Tx) error { return tx.Commit(ctx) })
	if err == nil || !strings.Contains(err.Error(), "leave COMMIT") {
		t.Fatalf("Write whose fn committed: %v", err)
	}

	// Metrics. node and role are all of node_role's labels, so they pick
	// one metric (the registry refuses duplicates).
	if v := metricValue(t, r, "hakit_dbrouter_node_role", map[string]string{"node": primary.Addr(), "role": "primary"}); v != 1 {
		t.Fatal("no hakit_dbrouter_node_role{role=primary} = 1 for the primary")
	}
}

func TestLaggingReplicaIsSkipped(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := hatest.NewPostgres(t, hatest.PostgresOptions{Replicas: 2})
	fresh, lagging := c.Nodes[1], c.Nodes[2]
	r := newRouter(t, dbrouter.Config{Nodes: c.DSNs(), MaxLag: 300 * time.Millisecond})
	if _, err := r.Exec(ctx, "CREATE TABLE ticks (at timestamptz)"); err != nil {
		t.Fatal(err)
	}
	if err := lagging.SetApplyDelay(ctx, 3*time.Second); err != nil {
		t.Fatal(err)
	}
	// Keep writing, so the delayed replica falls behind.
	wctx, stopWriting := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		for wctx.Err() == nil {
			_, _ = r.Exec(wctx, "INSERT INTO ticks VALUES (now())")
			time.Sleep(20 * time.Millisecond)
		}
	})
	defer func() { stopWriting(); wg.Wait() }()

	hatest.WaitFor(t, 20*time.Second, "the router to see the lag", func() bool {
		for _, s := range r.Status() {
			if s.Name == lagging.Addr() && s.Lag > time.Second {
				return true
			}
		}
		return false
	})
	for range 40 {
		err := r.Read(ctx, func(q dbrouter.Querier) error {
			p, err := port(ctx, q)
			if err == nil && p != fresh.Port {
				return fmt.Errorf("read served by port %d, want only the fresh replica %d", p, fresh.Port)
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}

	// Without the delay it catches up and serves reads again.
	if err := lagging.SetApplyDelay(ctx, 0); err != nil {
		t.Fatal(err)
	}
	hatest.WaitFor(t, 30*time.Second, "the caught-up replica to serve reads", func() bool {
		var p int
		err := r.Read(ctx, func(q dbrouter.Querier) error {
			var err error
			p, err = port(ctx, q)
			return err
		})
		return err == nil && p == lagging.Port
	})
}

func TestReadYourWritesAcrossRouters(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := hatest.NewPostgres(t, hatest.PostgresOptions{Replicas: 1})
	replica := c.Nodes[1]
	// Two app instances: one writes, the other serves the next page.
	a := newRouter(t, dbrouter.Config{Nodes: c.DSNs()})
	b := newRouter(t, dbrouter.Config{Nodes: c.DSNs()})
	if _, err := a.Exec(ctx, "CREATE TABLE orders (id int PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitReplicated(ctx); err != nil {
		t.Fatal(err)
	}

	run := func(pairs int, withToken bool) (violations int) {
		for i := range pairs {
			id := int(time.Now().UnixNano()%1e9) + i
			wctx := dbrouter.WithMinLSN(ctx, 0)
			if _, err := a.Exec(wctx, "INSERT INTO orders VALUES ($1)", id); err != nil {
				t.Fatal(err)
			}
			token := dbrouter.MinLSN(wctx).String() // what a cookie or session carries
			rctx := ctx
			if withToken {
				lsn, err := dbrouter.ParseLSN(token)
				if err != nil {
					t.Fatal(err)
				}
				rctx = dbrouter.WithMinLSN(ctx, lsn)
			}
			var n int
			if err := b.QueryRow(rctx, "SELECT count(*) FROM orders WHERE id = $1", id).Scan(&n); err != nil {
				t.Fatal(err)
			}
			if n != 1 {
				violations++
			}
		}
		return violations
	}

	// A replica 200ms behind: without the token the other instance
	// misses the write; with it, never.
	if err := replica.SetApplyDelay(ctx, 200*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if v := run(20, false); v == 0 {
		t.Fatal("without the token every read saw its write: the replica does not lag, the test proves nothing")
	}
	if v := run(100, true); v != 0 {
		t.Fatalf("%d of 100 reads with the token missed their write", v)
	}
	// A replica that keeps up serves the reads that carry a token.
	if err := replica.SetApplyDelay(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if v := run(200, true); v != 0 {
		t.Fatalf("%d of 200 reads with the token missed their write", v)
	}
	replicaReads := 0
	for range 50 {
		wctx := dbrouter.WithMinLSN(ctx, 0)
		if _, err := a.Exec(wctx, "INSERT INTO orders VALUES ($1)", int(time.Now().UnixNano()%1e9)+1e9); err != nil {
			t.Fatal(err)
		}
		err := b.Read(dbrouter.WithMinLSN(ctx, dbrouter.MinLSN(wctx)), func(q dbrouter.Querier) error {
			p, err := port(ctx, q)
			if p == replica.Port {
				replicaReads++
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if replicaReads == 0 {
		t.Fatal("no read with a token was served by the caught-up replica")
	}
}

func TestFailoverUnderWritesLosesNothing(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := hatest.NewPostgres(t, hatest.PostgresOptions{Replicas: 1, Synchronous: true})
	oldPrimary, replica := c.Nodes[0], c.Nodes[1]
	r := newRouter(t, dbrouter.Config{Nodes: c.DSNs()})
	if _, err := r.Exec(ctx, "CREATE TABLE acked (writer int, seq int)"); err != nil { // no unique key: duplicates must show
		t.Fatal(err)
	}

	const writers = 6
	var (
		mu     sync.Mutex
		acked  = map[[2]int]bool{}
		errs   []error
		writes atomic.Int64
	)
	wctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for seq := 0; wctx.Err() == nil; seq++ {
				_, err := r.Exec(wctx, "INSERT INTO acked VALUES ($1, $2)", w, seq)
				mu.Lock()
				switch {
				case err == nil:
					acked[[2]int{w, seq}] = true
					writes.Add(1)
				case wctx.Err() == nil:
					errs = append(errs, err)
				}
				mu.Unlock()
			}
		})
	}
	hatest.WaitFor(t, 30*time.Second, "writes before the failover", func() bool { return writes.Load() > 200 })
	if err := oldPrimary.Kill(); err != nil {
		t.Fatal(err)
	}
	// As an HA manager does: the lone replica will not have a
	// synchronous standby of its own, so it stops waiting for one.
	if err := replica.SetSetting(ctx, "synchronous_standby_names", ""); err != nil {
		t.Fatal(err)
	}
	if err := replica.Promote(ctx); err != nil {
		t.Fatal(err)
	}
	promotedAt := writes.Load()
	hatest.WaitFor(t, 30*time.Second, "writes after the failover", func() bool { return writes.Load() > promotedAt+200 })
	stop()
	wg.Wait()

	if len(errs) > 0 {
		t.Errorf("%d writes failed during the failover; first: %v", len(errs), errs[0])
	}
	if got := roleOf(r, replica.Addr()); got != dbrouter.RolePrimary {
		t.Fatalf("router sees the promoted replica as %s", got)
	}
	conn, err := pgx.Connect(ctx, replica.DSN())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, "SELECT writer, seq, count(*) FROM acked GROUP BY writer, seq")
	if err != nil {
		t.Fatal(err)
	}
	present := map[[2]int]int{}
	for rows.Next() {
		var w, s, n int
		if err := rows.Scan(&w, &s, &n); err != nil {
			t.Fatal(err)
		}
		present[[2]int{w, s}] = n
	}
	if rows.Err() != nil {
		t.Fatal(rows.Err())
	}
	lost, dup := 0, 0
	for k := range acked {
		if present[k] == 0 {
			lost++
		}
	}
	for _, n := range present {
		if n > 1 {
			dup++
		}
	}
	t.Logf("%d acknowledged writes, %d rows on the new primary", len(acked), len(present))
	if lost != 0 || dup != 0 {
		t.Fatalf("%d acknowledged writes lost, %d written twice", lost, dup)
	}
}

func TestReplicaKilledMidReadIsRetried(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := hatest.NewPostgres(t, hatest.PostgresOptions{Replicas: 1})
	primary, replica := c.Nodes[0], c.Nodes[1]
	r := newRouter(t, dbrouter.Config{Nodes: c.DSNs()})
	calls := 0
	var got int
	err := r.Read(ctx, func(q dbrouter.Querier) error {
		calls++
		if calls == 1 {
			go func() {
				time.Sleep(300 * time.Millisecond)
				_ = replica.Kill()
			}()
		}
		return q.QueryRow(ctx, "SELECT inet_server_port() FROM pg_sleep(1)").Scan(&got)
	})
	if err != nil {
		t.Fatalf("read across a replica kill: %v", err)
	}
	if calls != 2 || got != primary.Port {
		t.Fatalf("fn ran %d times, last on port %d; want 2, the primary's %d", calls, got, primary.Port)
	}
}

func TestPausedPrimaryDoesNotHoldCallers(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := hatest.NewPostgres(t, hatest.PostgresOptions{Replicas: 1})
	primary, replica := c.Nodes[0], c.Nodes[1]
	r := newRouter(t, dbrouter.Config{Nodes: c.DSNs(), ProbeTimeout: 500 * time.Millisecond})
	if _, err := r.Exec(ctx, "CREATE TABLE t (id int)"); err != nil {
		t.Fatal(err)
	}
	// Fill the pool with a connection that will be in use when the node
	// hangs.
	if err := primary.Pause(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = primary.Resume() }()

	// The prober finds the node down within ProbeInterval + ProbeTimeout
	// (1s); the write's 4s leave room for a busy machine (2.1s seen).
	wctx, wcancel := context.WithTimeout(ctx, 4*time.Second)
	start := time.Now()
	_, err := r.Exec(wctx, "INSERT INTO t VALUES (1)")
	wcancel()
	took := time.Since(start)
	if err == nil {
		t.Fatal("write to a hung primary succeeded")
	}
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, dbrouter.ErrNoPrimary) {
		t.Errorf("write error %v; want ErrNoPrimary and the context's deadline", err)
	}
	if took > 5*time.Second {
		t.Fatalf("write held the caller %s past its 4s context", took)
	}
	// Reads go on from the replica meanwhile.
	rctx, rcancel := context.WithTimeout(ctx, 2*time.Second)
	defer rcancel()
	err = r.Read(rctx, func(q dbrouter.Querier) error {
		p, err := port(rctx, q)
		if err == nil && p != replica.Port {
			return fmt.Errorf("read on port %d", p)
		}
		return err
	})
	if err != nil {
		t.Fatalf("read while the primary hangs: %v", err)
	}
	// Back to normal after Resume.
	if err := primary.Resume(); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Exec(ctx, "INSERT INTO t VALUES (2)"); err != nil {
		t.Fatalf("write after resume: %v", err)
	}
}

func TestSplitBrainFencesTheOldPrimary(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := hatest.NewPostgres(t, hatest.PostgresOptions{Replicas: 1})
	old, promoted := c.Nodes[0], c.Nodes[1]
	r := newRouter(t, dbrouter.Config{Nodes: c.DSNs()})
	if _, err := r.Exec(ctx, "CREATE TABLE t (id int)"); err != nil {
		t.Fatal(err)
	}
	// The replica is promoted while the old primary is away, then the old
	// primary comes back as it was: two writable nodes.
	if err := old.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := promoted.Promote(ctx); err != nil {
		t.Fatal(err)
	}
	if err := old.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if role, _ := old.Role(ctx); role != hatest.RolePrimary {
		t.Fatalf("the old primary came back as %s; the test needs it writable", role)
	}
	hatest.WaitFor(t, 10*time.Second, "the old primary to be fenced", func() bool {
		return roleOf(r, old.Addr()) == dbrouter.RoleFenced && roleOf(r, promoted.Addr()) == dbrouter.RolePrimary
	})
	for range 20 {
		err := r.Write(ctx, func(tx pgx.Tx) error {
			if p, err := port(ctx, tx); err != nil || p != promoted.Port {
				return fmt.Errorf("write on port %d (%v), want the promoted node's %d", p, err, promoted.Port)
			}
			_, err := tx.Exec(ctx, "INSERT INTO t VALUES (1)")
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		err = r.Read(ctx, func(q dbrouter.Querier) error {
			if p, err := port(ctx, q); err != nil || p == old.Port {
				return fmt.Errorf("read on port %d (%v): the fenced node", p, err)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := count(t, ctx, old, "SELECT count(*) FROM t"); n != 0 {
		t.Fatalf("the fenced node got %d writes", n)
	}
}

func TestLostCommitIsResolved(t *testing.T) {
	t.Parallel()

	t.Run("committed, node alive", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		c := hatest.NewPostgres(t, hatest.PostgresOptions{})
		pg := c.Nodes[0]
		px, dsn := proxied(t, pg)
		r := newRouter(t, dbrouter.Config{Nodes: []string{dsn}})
		if _, err := r.Exec(ctx, "CREATE TABLE t (id int)"); err != nil {
			t.Fatal(err)
		}
		// COMMIT reaches the server; the answer never reaches the router.
		px.arm(func(client, server net.Conn) {
			forward(server)
			eventually(10*time.Second, func() bool { return countOn(ctx, pg, "SELECT count(*) FROM t") == 1 })
		})
		insertCommittedOnce(t, ctx, r, pg, "write whose COMMIT answer was lost")
	})

	t.Run("not committed, failover", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		c := hatest.NewPostgres(t, hatest.PostgresOptions{Replicas: 1})
		old, replica := c.Nodes[0], c.Nodes[1]
		r := newRouter(t, dbrouter.Config{Nodes: c.DSNs()})
		// A deferred trigger that sleeps at COMMIT, the first time only:
		// the primary dies while COMMIT runs.
		_, err := r.Exec(ctx, `CREATE TABLE t (id int);
			CREATE TABLE slept (n int);
			CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS $$
			BEGIN
				IF NOT EXISTS (SELECT FROM slept) THEN PERFORM pg_sleep(3); END IF;
				RETURN NULL;
			END $$;
			CREATE CONSTRAINT TRIGGER slow AFTER INSERT ON t DEFERRABLE INITIALLY DEFERRED
				FOR EACH ROW EXECUTE FUNCTION slow_commit()`)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.WaitReplicated(ctx); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		calls := atomic.Int32{}
		go func() {
			done <- r.Write(ctx, func(tx pgx.Tx) error {
				if calls.Add(1) > 1 {
					if _, err := tx.Exec(ctx, "INSERT INTO slept VALUES (1)"); err != nil {
						return err
					}
				}
				_, err := tx.Exec(ctx, "INSERT INTO t VALUES (1)")
				return err
			})
		}()
		// Kill the primary while the COMMIT sleeps, and promote.
		hatest.WaitFor(t, 10*time.Second, "the COMMIT to start sleeping", func() bool {
			return count(t, ctx, old, "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep'") == 1
		})
		if err := old.Kill(); err != nil {
			t.Fatal(err)
		}
		if err := replica.Promote(ctx); err != nil {
			t.Fatal(err)
		}
		if err := <-done; err != nil {
			t.Fatalf("write across the failover: %v", err)
		}
		wantResolutions(t, r, "aborted", 1)
		if n := count(t, ctx, replica, "SELECT count(*) FROM t"); n != 1 || calls.Load() != 2 {
			t.Fatalf("%d rows after %d runs; want 1 row, 2 runs", n, calls.Load())
		}
	})

	t.Run("committed, failover", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		c := hatest.NewPostgres(t, hatest.PostgresOptions{Replicas: 1, Synchronous: true})
		old, replica := c.Nodes[0], c.Nodes[1]
		px, dsn := proxied(t, old)
		r := newRouter(t, dbrouter.Config{Nodes: []string{dsn, replica.DSN()}})
		if _, err := r.Exec(ctx, "CREATE TABLE t (id int)"); err != nil {
			t.Fatal(err)
		}
		// COMMIT reaches the server and is replicated synchronously; then
		// the primary dies before the router hears back.
		px.arm(func(client, server net.Conn) {
			forward(server)
			eventually(10*time.Second, func() bool { return countOn(ctx, replica, "SELECT count(*) FROM t") == 1 })
			_ = old.Kill()
			_ = replica.SetSetting(ctx, "synchronous_standby_names", "")
			_ = replica.Promote(ctx)
		})
		insertCommittedOnce(t, ctx, r, replica, "write whose COMMIT answer was lost in a failover")
	})

	t.Run("unknown", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		c := hatest.NewPostgres(t, hatest.PostgresOptions{})
		pg := c.Nodes[0]
		px, dsn := proxied(t, pg)
		r := newRouter(t, dbrouter.Config{Nodes: []string{dsn}, FailoverTimeout: 2 * time.Second})
		if _, err := r.Exec(ctx, "CREATE TABLE t (id int)"); err != nil {
			t.Fatal(err)
		}
		// The only node dies with the COMMIT under way and stays dead:
		// nobody can tell.
		px.arm(func(client, server net.Conn) {
			forward(server)
			_ = pg.Kill()
		})
		calls, err := insertOne(ctx, r)
		if !errors.Is(err, dbrouter.ErrCommitUnknown) || calls != 1 {
			t.Fatalf("err = %v after %d runs; want ErrCommitUnknown after 1", err, calls)
		}
	})
}

// insertOne writes one row into t and returns how often its function ran.
func insertOne(ctx context.Context, r *dbrouter.Router) (int, error) {
	calls := 0
	err := r.Write(ctx, func(tx pgx.Tx) error {
		calls++
		_, err := tx.Exec(ctx, "INSERT INTO t VALUES (1)")
		return err
	})
	return calls, err
}

// proxied puts a commitProxy in front of n and returns it with the DSN of n
// through it.
func proxied(t *testing.T, n *hatest.PostgresNode) (*commitProxy, string) {
	px := newCommitProxy(t, n.Addr())
	return px, strings.Replace(n.DSN(), n.Addr(), px.Addr(), 1)
}

// insertCommittedOnce runs insertOne through a lost COMMIT and checks that
// it succeeded (what names the write in the failure), that node has 1 row
// after 1 run, and that one lost COMMIT was resolved as committed.
func insertCommittedOnce(t *testing.T, ctx context.Context, r *dbrouter.Router, node *hatest.PostgresNode, what string) {
	t.Helper()
	calls, err := insertOne(ctx, r)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if n := count(t, ctx, node, "SELECT count(*) FROM t"); n != 1 || calls != 1 {
		t.Fatalf("%d rows after %d runs; want 1 row, 1 run", n, calls)
	}
	wantResolutions(t, r, "committed", 1)
}

// wantResolutions checks the count of lost COMMITs resolved as outcome.
func wantResolutions(t *testing.T, r *dbrouter.Router, outcome string, want float64) {
	t.Helper()
	if v := metricValue(t, r, "hakit_dbrouter_commit_resolutions_total", map[string]string{"outcome": outcome}); v != want {
		t.Fatalf("commit resolutions (%s) = %v, want %v", outcome, v, want)
	}
}

func TestBadConfig(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := hatest.NewPostgres(t, hatest.PostgresOptions{Password: "right-password"})
	pg := c.Nodes[0]
	free, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := free.Addr().String()
	free.Close()

	cases := []struct {
		name string
		cfg  dbrouter.Config
		want []string
	}{
		{"no nodes", dbrouter.Config{}, []string{"Config.Nodes is empty"}},
		{"unparsable", dbrouter.Config{Nodes: []string{"postgres://x:y@host:notaport/db"}}, []string{"Config.Nodes[0]"}},
		{"several problems at once", dbrouter.Config{Nodes: []string{pg.DSN(), pg.DSN()}, MaxLag: -time.Second},
			[]string{"negative Config.MaxLag", "already given by Config.Nodes[0]"}},
		{"unreachable", dbrouter.Config{Nodes: []string{"postgres://postgres@" + deadAddr + "/postgres"}}, []string{"no node answered", deadAddr}},
		{"wrong password", dbrouter.Config{Nodes: []string{strings.Replace(pg.DSN(), "right-password", "wrong", 1)}},
			[]string{"refused the connection settings", pg.Addr(), "password authentication failed"}},
		{"missing database", dbrouter.Config{Nodes: []string{pg.DSNFor("nosuchdb")}}, []string{"nosuchdb", "does not exist"}},
	}
	for _, tc := range cases {
		r, err := dbrouter.New(ctx, tc.cfg)
		if err == nil {
			r.Close()
			t.Errorf("%s: New succeeded", tc.name)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q does not mention %q", tc.name, err, w)
			}
		}
		if strings.Contains(err.Error(), "wrong@") {
			t.Errorf("%s: error shows the password: %v", tc.name, err)
		}
	}
	// One node down while another answers is not an error: it is probed
	// again.
	r := newRouter(t, dbrouter.Config{Nodes: []string{pg.DSN(), "postgres://postgres@" + deadAddr + "/postgres"}})
	if got := roleOf(r, deadAddr); got != dbrouter.RoleDown {
		t.Fatalf("dead node is %s, want down", got)
	}
}

func TestHungReplicaMidReadIsCut(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := hatest.NewPostgres(t, hatest.PostgresOptions{Replicas: 1})
	primary, replica := c.Nodes[0], c.Nodes[1]
	r := newRouter(t, dbrouter.Config{Nodes: c.DSNs(), ProbeTimeout: 300 * time.Millisecond})
	defer func() { _ = replica.Resume() }()
	// Twice: the second hang meets connections the pool opened after the
	// first one dropped the node's pooled connections.
	for round := 1; round <= 2; round++ {
		if round == 2 {
			if err := replica.Resume(); err != nil {
				t.Fatal(err)
			}
			// Back, and within MaxLag: reads go to it again.
			port := 0
			if !eventually(30*time.Second, func() bool {
				return r.Read(ctx, func(q dbrouter.Querier) error {
					return q.QueryRow(ctx, "SELECT inet_server_port()").Scan(&port)
				}) == nil && port == replica.Port
			}) {
				t.Fatalf("the resumed replica is %s and reads went to port %d, want the replica's %d", roleOf(r, replica.Addr()), port, replica.Port)
			}
		}
		calls := 0
		var got int
		start := time.Now()
		err := r.Read(ctx, func(q dbrouter.Querier) error {
			calls++
			if calls == 1 {
				go func() {
					time.Sleep(200 * time.Millisecond)
					_ = replica.Pause()
				}()
				// Would take 5s, and forever once the node hangs.
				return q.QueryRow(ctx, "SELECT inet_server_port() FROM pg_sleep(5)").Scan(&got)
			}
			return q.QueryRow(ctx, "SELECT inet_server_port()").Scan(&got)
		})
		took := time.Since(start)
		if err != nil {
			t.Fatalf("round %d: read across a hung replica: %v", round, err)
		}
		if calls != 2 || got != primary.Port {
			t.Fatalf("round %d: fn ran %d times, last on port %d; want 2, the primary's %d", round, calls, got, primary.Port)
		}
		if took > 3*time.Second {
			t.Fatalf("round %d: the read took %s: the hung node held it", round, took)
		}
	}
}
