package hatest_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"hakit.dev/hatest"
)

// testReadAfterFailover is how an application's own test uses the harness:
// a primary with one replica, a write, the primary's machine lost, the
// replica promoted, and the write still there.
func testReadAfterFailover(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pg := hatest.NewPostgres(t, hatest.PostgresOptions{Replicas: 1, Synchronous: true})
	primary, replica := pg.Nodes[0], pg.Nodes[1]

	if err := primary.Exec(ctx, "CREATE TABLE orders (id int PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	if err := primary.Exec(ctx, "INSERT INTO orders VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	if err := primary.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := replica.Promote(ctx); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, replica.DSN())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM orders").Scan(&n); err != nil || n != 1 {
		t.Fatalf("after failover: %d orders, %v", n, err)
	}
}

func ExampleNewPostgres() {
	// In a _test.go file:
	//
	//	func TestReadAfterFailover(t *testing.T) { … }
	_ = testReadAfterFailover
}
