package jobs_test

import (
	"context"
	"testing"

	"hakit.dev/hatest"
)

// A relay pass over an empty outbox runs no transaction on the primary
// (no transaction id taken, so no WAL written); one with a row does.
func TestIdleRelayPassWritesNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, hatest.PostgresOptions{}, standaloneRedis(t), true)
	pool, err := e.db.Primary()
	if err != nil {
		t.Fatal(err)
	}
	// The next transaction id to be handed out; reading it takes none.
	nextXid := func() int64 {
		var n int64
		if err := pool.QueryRow(ctx, "SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	before := nextXid()
	for range 5 {
		if n, err := e.relay.Pass(ctx); err != nil || n != 0 {
			t.Fatalf("idle pass: %d enqueued, %v", n, err)
		}
	}
	if after := nextXid(); after != before {
		t.Fatalf("5 idle passes took %d transaction ids; want none", after-before)
	}
	if err := enqueue(ctx, e, 1, true); err != nil {
		t.Fatal(err)
	}
	if n, err := e.relay.Pass(ctx); err != nil || n != 1 {
		t.Fatalf("pass over one row: %d enqueued, %v; want 1", n, err)
	}
}
