package hatest_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"hakit.dev/hatest"
)

func TestPgBouncer(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pg := hatest.NewPostgres(t, hatest.PostgresOptions{})
	b := hatest.NewPgBouncer(t, hatest.PgBouncerOptions{Server: pg.Nodes[0].Addr(), PoolSize: 3})

	// 30 clients, each in its own transaction, share 3 server connections.
	pool, err := pgxpool.New(ctx, b.DSN("postgres")+"&default_query_exec_mode=exec&pool_max_conns=30")
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	var wg sync.WaitGroup
	errs := make(chan error, 30)
	for range 30 {
		wg.Go(func() {
			var port int
			if err := pool.QueryRow(ctx, "SELECT inet_server_port() FROM pg_sleep(0.05)").Scan(&port); err != nil {
				errs <- err
				return
			}
			if port != pg.Nodes[0].Port {
				errs <- fmt.Errorf("query answered on port %d, want %d", port, pg.Nodes[0].Port)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n, err := b.ServerConns(ctx); err != nil || n < 1 || n > 3 {
		t.Fatalf("PgBouncer holds %d server connections (%v); want 1 to 3 for 30 clients", n, err)
	}

	// Killed, clients fail; started again, they work.
	if err := b.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := pool.QueryRow(ctx, "SELECT 1").Scan(new(int)); err == nil {
		t.Fatal("a query through a killed PgBouncer succeeded")
	}
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	hatest.WaitFor(t, 10*time.Second, "queries through the restarted PgBouncer", func() bool {
		return pool.QueryRow(ctx, "SELECT 1").Scan(new(int)) == nil
	})
}

func TestPgBouncerBadOptions(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		opts hatest.PgBouncerOptions
		want string
	}{
		{hatest.PgBouncerOptions{}, "Server is empty"},
		{hatest.PgBouncerOptions{Server: "localhost"}, "is not host:port"},
		{hatest.PgBouncerOptions{Server: "127.0.0.1:5432", PoolMode: "pipeline"}, `PoolMode "pipeline"`},
		{hatest.PgBouncerOptions{Server: "127.0.0.1:5432", PoolSize: -1}, "must be >= 0"},
	} {
		_, err := hatest.StartPgBouncer(context.Background(), tc.opts)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("StartPgBouncer(%+v) = %v, want an error containing %q", tc.opts, err, tc.want)
		}
	}
}
