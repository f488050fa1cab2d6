package hatest_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"hakit.dev/hatest"
)

func queryInt(t *testing.T, ctx context.Context, dsn, sql string) (int, error) {
	t.Helper()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return 0, err
	}
	defer conn.Close(context.Background())
	var v int
	err = conn.QueryRow(ctx, sql).Scan(&v)
	return v, err
}

func TestPostgresReplicationFailoverAndRewind(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := hatest.NewPostgres(t, hatest.PostgresOptions{Replicas: 2})
	p, r1, r2 := c.Nodes[0], c.Nodes[1], c.Nodes[2]

	if role, err := p.Role(ctx); err != nil || role != hatest.RolePrimary {
		t.Fatalf("pg0 role = %q, %v; want primary", role, err)
	}
	for _, r := range []*hatest.PostgresNode{r1, r2} {
		if role, err := r.Role(ctx); err != nil || role != hatest.RoleReplica {
			t.Fatalf("%s role = %q, %v; want replica", r.Name, role, err)
		}
	}

	// A row written on the primary appears on the replicas.
	if err := p.Exec(ctx, "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitReplicated(ctx); err != nil {
		t.Fatal(err)
	}
	for _, r := range []*hatest.PostgresNode{r1, r2} {
		if n, err := queryInt(t, ctx, r.DSN(), "SELECT count(*) FROM t"); err != nil || n != 1 {
			t.Fatalf("%s: count = %d, %v; want 1", r.Name, n, err)
		}
	}
	// Replicas refuse writes.
	err := r1.Exec(ctx, "INSERT INTO t VALUES (2)")
	if err == nil {
		t.Fatal("insert on a replica succeeded")
	}

	// Kill the primary: it is gone, with all its processes.
	pids := p.Pids()
	if len(pids) < 2 {
		t.Fatalf("primary has pids %v; want the postmaster and its children", pids)
	}
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	for _, pid := range pids {
		if hatest.Alive(pid) {
			t.Errorf("pid %d of the killed primary is still alive", pid)
		}
	}

	// Promote r1: it takes writes on a new timeline; r2 follows it.
	tl1, err := r1.Timeline(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := r1.Promote(ctx); err != nil {
		t.Fatal(err)
	}
	if err := r1.Exec(ctx, "INSERT INTO t VALUES (2)"); err != nil {
		t.Fatalf("insert on promoted replica: %v", err)
	}
	tl2, err := r1.Timeline(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if tl2 <= tl1 {
		t.Errorf("timeline after promotion = %d, want > %d", tl2, tl1)
	}
	if got, err := c.Primary(ctx); err != nil || got != r1 {
		t.Fatalf("Primary() = %v, %v; want pg1", got, err)
	}
	if err := r2.Follow(ctx, r1); err != nil {
		t.Fatal(err)
	}

	// The old primary rejoins as a replica of r1 with pg_rewind.
	if err := p.Rewind(ctx, r1); err != nil {
		t.Fatal(err)
	}
	if role, err := p.Role(ctx); err != nil || role != hatest.RoleReplica {
		t.Fatalf("rewound pg0 role = %q, %v; want replica", role, err)
	}
	if err := r1.Exec(ctx, "INSERT INTO t VALUES (3)"); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitReplicated(ctx); err != nil {
		t.Fatal(err)
	}
	for _, r := range []*hatest.PostgresNode{p, r2} {
		if n, err := queryInt(t, ctx, r.DSN(), "SELECT count(*) FROM t"); err != nil || n != 3 {
			t.Fatalf("%s after failover: count = %d, %v; want 3", r.Name, n, err)
		}
	}
}

func TestPostgresPauseResumeAndApplyDelay(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := hatest.NewPostgres(t, hatest.PostgresOptions{Replicas: 1})
	p, r := c.Nodes[0], c.Nodes[1]
	if err := p.Exec(ctx, "CREATE TABLE t (id int)"); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitReplicated(ctx); err != nil {
		t.Fatal(err)
	}

	// A paused node hangs: a query with a deadline times out instead of
	// failing fast, and works again after Resume.
	if err := r.Pause(); err != nil {
		t.Fatal(err)
	}
	qctx, qcancel := context.WithTimeout(ctx, 500*time.Millisecond)
	_, err := queryInt(t, qctx, r.DSN(), "SELECT 1")
	qcancel()
	if err == nil || !errors.Is(qctx.Err(), context.DeadlineExceeded) {
		t.Fatalf("query on paused node: err = %v, ctx = %v; want a timeout", err, qctx.Err())
	}
	if err := r.Resume(); err != nil {
		t.Fatal(err)
	}
	if n, err := queryInt(t, ctx, r.DSN(), "SELECT 1"); err != nil || n != 1 {
		t.Fatalf("query after resume = %d, %v", n, err)
	}

	// With an apply delay the replica lags behind the primary by it.
	if err := r.SetApplyDelay(ctx, 2*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := p.Exec(ctx, "INSERT INTO t VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if n, err := queryInt(t, ctx, r.DSN(), "SELECT count(*) FROM t"); err != nil || n != 0 {
		t.Fatalf("delayed replica sees %d rows (%v) at once; want 0", n, err)
	}
	if err := c.WaitReplicated(ctx); err != nil {
		t.Fatal(err)
	}
	if lag := time.Since(start); lag < time.Second {
		t.Errorf("delayed replica caught up after %s; want about 2s", lag)
	}
	if n, err := queryInt(t, ctx, r.DSN(), "SELECT count(*) FROM t"); err != nil || n != 1 {
		t.Fatalf("replica after delay sees %d rows (%v); want 1", n, err)
	}
}

func TestPostgresSynchronous(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := hatest.NewPostgres(t, hatest.PostgresOptions{Replicas: 1, Synchronous: true})
	p, r := c.Nodes[0], c.Nodes[1]
	if n, err := queryInt(t, ctx, p.DSN(), "SELECT count(*) FROM pg_stat_replication WHERE sync_state IN ('sync', 'quorum')"); err != nil || n != 1 {
		t.Fatalf("synchronous standbys = %d, %v; want 1", n, err)
	}
	// With the only standby hung, a commit on the primary waits.
	if err := p.Exec(ctx, "CREATE TABLE t (id int)"); err != nil {
		t.Fatal(err)
	}
	if err := r.Pause(); err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(ctx, time.Second)
	err := p.Exec(wctx, "INSERT INTO t VALUES (1)")
	wcancel()
	if err == nil {
		t.Fatal("commit returned while the synchronous standby was paused")
	}
	if err := r.Resume(); err != nil {
		t.Fatal(err)
	}
	if err := p.Exec(ctx, "INSERT INTO t VALUES (2)"); err != nil {
		t.Fatal(err)
	}
}

func TestPostgresStopStart(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := hatest.NewPostgres(t, hatest.PostgresOptions{})
	p := c.Nodes[0]
	if err := p.Exec(ctx, "CREATE TABLE t (id int); INSERT INTO t VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	if p.Running() {
		t.Fatal("running after Stop")
	}
	if err := p.Exec(ctx, "SELECT 1"); err == nil {
		t.Fatal("query on a stopped node succeeded")
	}
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if n, err := queryInt(t, ctx, p.DSN(), "SELECT count(*) FROM t"); err != nil || n != 1 {
		t.Fatalf("after restart count = %d, %v; want 1", n, err)
	}
	if err := c.CreateDatabase(ctx, "app_test"); err != nil {
		t.Fatal(err)
	}
	if n, err := queryInt(t, ctx, p.DSNFor("app_test"), "SELECT 1"); err != nil || n != 1 {
		t.Fatalf("new database: %d, %v", n, err)
	}
}

// The package example's test body runs as a test too.
func TestReadAfterFailoverExample(t *testing.T) {
	t.Parallel()
	testReadAfterFailover(t)
}

func TestPostgresPassword(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := hatest.NewPostgres(t, hatest.PostgresOptions{Replicas: 1, Password: "s3cret 'quoted'"})
	p, r := c.Nodes[0], c.Nodes[1]
	// The DSNs carry the password; the replica streams with it.
	if err := p.Exec(ctx, "CREATE TABLE t (id int); INSERT INTO t VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitReplicated(ctx); err != nil {
		t.Fatal(err)
	}
	// A wrong or missing password is refused.
	for _, dsn := range []string{
		strings.Replace(p.DSN(), "s3cret", "wrong", 1),
		"postgres://postgres@" + p.Addr() + "/postgres?sslmode=disable",
	} {
		if _, err := queryInt(t, ctx, dsn, "SELECT 1"); err == nil {
			t.Errorf("connected with %s", dsn)
		}
	}
	// Promotion and rewind work with passwords too.
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := r.Promote(ctx); err != nil {
		t.Fatal(err)
	}
	if err := p.Rewind(ctx, r); err != nil {
		t.Fatal(err)
	}
	if n, err := queryInt(t, ctx, p.DSN(), "SELECT count(*) FROM t"); err != nil || n != 1 {
		t.Fatalf("rewound node: %d, %v", n, err)
	}
}
