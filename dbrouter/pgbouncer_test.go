package dbrouter_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"hakit.dev/dbrouter"
	"hakit.dev/hatest"
)

// execMode is what a connection string through PgBouncer in transaction
// pooling mode needs: no named prepared statements (PgBouncer 1.18, the
// Debian 12 one, cannot carry them from one transaction to the next).
const execMode = "&default_query_exec_mode=exec"

// bounced starts PostgreSQL with replicas replicas and a PgBouncer
// (transaction pooling) in front of each node, and returns the cluster,
// the bouncers in node order and their connection strings.
func bounced(t *testing.T, replicas int, opts hatest.PostgresOptions) (*hatest.PostgresCluster, []*hatest.PgBouncer, []string) {
	t.Helper()
	opts.Replicas = replicas
	c := hatest.NewPostgres(t, opts)
	var bs []*hatest.PgBouncer
	var dsns []string
	for _, n := range c.Nodes {
		b := hatest.NewPgBouncer(t, hatest.PgBouncerOptions{Server: n.Addr(), PoolSize: 5})
		bs = append(bs, b)
		dsns = append(dsns, b.DSN("postgres")+execMode)
	}
	return c, bs, dsns
}

// TestThroughPgBouncer runs the router's routing, read-your-writes and
// prepared-statement cases through PgBouncer in transaction pooling mode,
// on one shared cluster.
func TestThroughPgBouncer(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, bs, dsns := bounced(t, 1, hatest.PostgresOptions{})
	primary, replica := c.Nodes[0], c.Nodes[1]

	t.Run("routing", func(t *testing.T) {
		r := newRouter(t, dbrouter.Config{Nodes: dsns})
		roles := map[string]dbrouter.Role{}
		for _, s := range r.Status() {
			roles[s.Name] = s.Role
		}
		if roles[bs[0].Addr()] != dbrouter.RolePrimary || roles[bs[1].Addr()] != dbrouter.RoleReplica {
			t.Fatalf("roles %v: want %s (in front of the primary) primary, %s replica", roles, bs[0].Addr(), bs[1].Addr())
		}
		wctx := dbrouter.WithMinLSN(ctx, 0)
		err := r.Write(wctx, func(tx pgx.Tx) error {
			if p, err := port(ctx, tx); err != nil || p != primary.Port {
				return errors.Join(err, errors.New("write not on the primary"))
			}
			_, err := tx.Exec(ctx, "CREATE TABLE items (id int PRIMARY KEY, name text)")
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.Exec(wctx, "INSERT INTO items VALUES (1, 'one')"); err != nil {
			t.Fatal(err)
		}
		if err := c.WaitReplicated(ctx); err != nil {
			t.Fatal(err)
		}
		seen := map[int]int{}
		for range 20 {
			var name string
			err := r.Read(wctx, func(q dbrouter.Querier) error {
				p, err := port(ctx, q)
				seen[p]++
				if err != nil {
					return err
				}
				return q.QueryRow(ctx, "SELECT name FROM items WHERE id = $1", 1).Scan(&name)
			})
			if err != nil || name != "one" {
				t.Fatalf("read: %q, %v", name, err)
			}
		}
		if seen[replica.Port] == 0 || seen[primary.Port] != 0 {
			t.Fatalf("reads by port %v: want the replica only", seen)
		}
		// An application error comes back as it is, and is not retried.
		_, err = r.Exec(ctx, "INSERT INTO items VALUES (1, 'again')")
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "23505" {
			t.Fatalf("duplicate insert: %v; want a unique violation", err)
		}
	})

	t.Run("read your writes across routers", func(t *testing.T) {
		a := newRouter(t, dbrouter.Config{Nodes: dsns})
		b := newRouter(t, dbrouter.Config{Nodes: dsns})
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
				rctx := ctx
				if withToken {
					rctx = dbrouter.WithMinLSN(ctx, dbrouter.MinLSN(wctx))
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
		if err := replica.SetApplyDelay(ctx, 200*time.Millisecond); err != nil {
			t.Fatal(err)
		}
		defer func() { _ = replica.SetApplyDelay(context.Background(), 0) }()
		if v := run(10, false); v == 0 {
			t.Fatal("without the token every read saw its write: the replica does not lag, the test proves nothing")
		}
		if v := run(50, true); v != 0 {
			t.Fatalf("%d of 50 reads with the token missed their write", v)
		}
	})

	t.Run("prepared statements", func(t *testing.T) {
		// pgx's default caches a named prepared statement per connection:
		// through transaction pooling the next transaction may run on
		// another server connection, which lacks it or has it already.
		pool, err := pgxpool.New(ctx, bs[0].DSN("postgres")+"&pool_max_conns=10")
		if err != nil {
			t.Fatal(err)
		}
		defer pool.Close()
		var failed atomic.Int64
		var first atomic.Value
		var wg sync.WaitGroup
		for g := range 10 {
			wg.Go(func() {
				for i := range 20 {
					if err := pool.QueryRow(ctx, "SELECT $1::int + $2::int", g, i).Scan(new(int)); err != nil {
						failed.Add(1)
						first.CompareAndSwap(nil, err.Error())
					}
				}
			})
		}
		wg.Wait()
		if failed.Load() == 0 {
			t.Fatal("pgx's statement cache worked through transaction pooling: the test proves nothing")
		}
		if msg, _ := first.Load().(string); !strings.Contains(msg, "prepared statement") {
			t.Fatalf("first error %q, want one about a prepared statement", msg)
		}
		t.Logf("pgx's default exec mode through PgBouncer: %d of 200 queries failed, first: %s", failed.Load(), first.Load())
		// default_query_exec_mode=exec: no error.
		r := newRouter(t, dbrouter.Config{Nodes: dsns})
		if _, err := r.Exec(ctx, "CREATE TABLE execmode (id int)"); err != nil {
			t.Fatal(err)
		}
		if errs := concurrentWrites(ctx, r, "execmode"); len(errs) > 0 {
			t.Fatalf("%d errors with default_query_exec_mode=exec, first: %v", len(errs), errs[0])
		}
	})
}

// concurrentWrites runs 8 writers of 25 inserts each into table tab (id
// int) and returns the errors they got.
func concurrentWrites(ctx context.Context, r *dbrouter.Router, tab string) []error {
	var mu sync.Mutex
	var errs []error
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			wctx := dbrouter.WithMinLSN(ctx, 0)
			for i := range 25 {
				_, err := r.Exec(wctx, "INSERT INTO "+tab+" VALUES ($1)", g*100+i)
				if err == nil {
					err = r.QueryRow(wctx, "SELECT count(*) FROM "+tab+" WHERE id >= $1", 0).Scan(new(int))
				}
				if err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	return errs
}

// TestPgBouncerLostCommit runs the router's lost-COMMIT cases through
// PgBouncer: the answer to a COMMIT that committed is lost between the
// router and PgBouncer; the primary behind PgBouncer dies during a COMMIT
// that did not commit and a replica (behind its own PgBouncer) is promoted.
func TestPgBouncerLostCommit(t *testing.T) {
	t.Parallel()

	t.Run("committed, node alive", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		c, bs, _ := bounced(t, 0, hatest.PostgresOptions{})
		pg := c.Nodes[0]
		px := newCommitProxy(t, bs[0].Addr())
		dsn := strings.Replace(bs[0].DSN("postgres"), bs[0].Addr(), px.Addr(), 1) + execMode
		r := newRouter(t, dbrouter.Config{Nodes: []string{dsn}})
		if _, err := r.Exec(ctx, "CREATE TABLE t (id int)"); err != nil {
			t.Fatal(err)
		}
		px.arm(func(client, server net.Conn) {
			forward(server)
			eventually(10*time.Second, func() bool { return countOn(ctx, pg, "SELECT count(*) FROM t") == 1 })
		})
		insertCommittedOnce(t, ctx, r, pg, "write whose COMMIT answer was lost before PgBouncer")
	})

	t.Run("not committed, failover", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		c, _, dsns := bounced(t, 1, hatest.PostgresOptions{})
		old, replica := c.Nodes[0], c.Nodes[1]
		r := newRouter(t, dbrouter.Config{Nodes: dsns})
		if _, err := r.Exec(ctx, slowCommitDDL("3")); err != nil {
			t.Fatal(err)
		}
		if err := c.WaitReplicated(ctx); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		var calls atomic.Int32
		go func() { done <- slowInsert(ctx, r, &calls) }()
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
		if n := count(t, ctx, replica, "SELECT count(*) FROM t"); n != 1 || calls.Load() != 2 {
			t.Fatalf("%d rows after %d runs; want 1 row, 2 runs", n, calls.Load())
		}
		// The promoted node behind its PgBouncer takes writes from many
		// callers at once.
		if _, err := r.Exec(ctx, "CREATE TABLE after (id int)"); err != nil {
			t.Fatal(err)
		}
		if errs := concurrentWrites(ctx, r, "after"); len(errs) > 0 {
			t.Fatalf("%d errors after the failover, first: %v", len(errs), errs[0])
		}
	})
}
