package dbrouter_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"hakit.dev/dbrouter"
	"hakit.dev/hatest"
)

// A client connection through PgBouncer outlives the server's run: after
// PostgreSQL restarts behind it, a lost COMMIT answer must still be
// resolved from facts read on the transaction's connection just before
// COMMIT (a start time remembered from the connection's first write
// would say "crash recovery ended before the commit record" and run the
// committed transaction again).
func TestLostCommitBehindPgBouncerAfterRestart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := hatest.NewPostgres(t, hatest.PostgresOptions{})
	pg := c.Nodes[0]
	b := hatest.NewPgBouncer(t, hatest.PgBouncerOptions{Server: pg.Addr(), PoolSize: 5})
	px := newCommitProxy(t, b.Addr())
	dsn := b.DSN("postgres") + execMode
	dsn = strings.Replace(dsn, b.Addr(), px.Addr(), 1)
	r := newRouter(t, dbrouter.Config{Nodes: []string{dsn}, ProbeInterval: 500 * time.Millisecond,
		ConfigurePool: func(_ string, pc *pgxpool.Config) { pc.MaxConns = 1 }})
	if _, err := r.Exec(ctx, "CREATE TABLE t (id int)"); err != nil {
		t.Fatal(err)
	}
	ins := func(id int) (int, error) {
		calls := 0
		err := r.Write(ctx, func(tx pgx.Tx) error {
			calls++
			_, err := tx.Exec(ctx, "INSERT INTO t VALUES ($1)", id)
			return err
		})
		return calls, err
	}
	if _, err := ins(1); err != nil { // caches serverRun on the pooled conn
		t.Fatal(err)
	}
	if err := pg.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := pg.Start(ctx); err != nil {
		t.Fatal(err)
	}
	px.arm(func(client, server net.Conn) {
		forward(server)
		eventually(10*time.Second, func() bool { return countOn(ctx, pg, "SELECT count(*) FROM t WHERE id = 2") == 1 })
	})
	calls, err := ins(2)
	n := count(t, ctx, pg, "SELECT count(*) FROM t WHERE id = 2")
	t.Logf("write: err=%v calls=%d rows=%d", err, calls, n)
	if n != 1 {
		t.Fatalf("COMMIT answer lost after a server restart behind PgBouncer: %d rows after %d runs; want 1", n, calls)
	}
}
