package hakit_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"hakit.dev/hakit"
	"hakit.dev/hatest"
)

// A backfill updates every row of its key range, in batches of BatchSize
// keys, each its own transaction, and returns the rows it changed; run
// again, it changes none (its WHERE clause makes it idempotent).
func TestBackfill(t *testing.T) {
	t.Parallel()
	pg := hatest.NewPostgres(t, hatest.PostgresOptions{})
	ctx := context.Background()
	dsn := pg.Nodes[0].DSN()
	if err := pg.Nodes[0].Exec(ctx, `CREATE TABLE items (id bigserial PRIMARY KEY, n int NOT NULL, tag text);
		INSERT INTO items (n) SELECT g FROM generate_series(1, 10500) g`); err != nil {
		t.Fatal(err)
	}
	db := newRouter(t, pg.DSNs())
	const stmt = `UPDATE items SET tag = 't' || (n % 10) WHERE id > $1 AND id <= $2 AND tag IS NULL`
	n, err := hakit.Backfill(ctx, db, stmt, 0, 10500, hakit.BackfillOptions{BatchSize: 1000})
	if err != nil || n != 10500 {
		t.Fatalf("Backfill = %d, %v; want 10500 rows", n, err)
	}
	if left := queryOn[int64](t, dsn, `SELECT count(*) FROM items WHERE tag IS NULL OR tag <> 't' || (n % 10)`); left != 0 {
		t.Errorf("%d rows not backfilled", left)
	}
	// One transaction per batch: 11 distinct xmin.
	if txs := queryOn[int64](t, dsn, `SELECT count(DISTINCT xmin::text) FROM items`); txs != 11 {
		t.Errorf("the backfill ran in %d transactions, want 11 (batches of 1000 keys)", txs)
	}
	if n, err := hakit.Backfill(ctx, db, stmt, 0, 10500, hakit.BackfillOptions{BatchSize: 5000}); err != nil || n != 0 {
		t.Errorf("Backfill again = %d, %v; want 0 rows", n, err)
	}
}

// Bad options and a failing batch give a clear error; the batches before
// the failure stay applied, and the error says where to start again.
func TestBackfillErrors(t *testing.T) {
	t.Parallel()
	pg := hatest.NewPostgres(t, hatest.PostgresOptions{})
	ctx := context.Background()
	dsn := pg.Nodes[0].DSN()
	if err := pg.Nodes[0].Exec(ctx, `CREATE TABLE items (id bigserial PRIMARY KEY, n int NOT NULL, tag text);
		INSERT INTO items (n) SELECT g FROM generate_series(1, 3000) g`); err != nil {
		t.Fatal(err)
	}
	db := newRouter(t, pg.DSNs())
	if _, err := hakit.Backfill(ctx, db, `UPDATE items SET tag = 'x' WHERE id > $1 AND id <= $2`, 0, 3000,
		hakit.BackfillOptions{BatchSize: -1}); err == nil || !strings.Contains(err.Error(), "negative BatchSize") {
		t.Errorf("BatchSize -1: error %v, want one saying so", err)
	}
	if _, err := hakit.Backfill(ctx, nil, `UPDATE items SET tag = 'x'`, 0, 3000, hakit.BackfillOptions{}); err == nil {
		t.Error("no router: no error")
	}
	if n := queryOn[int64](t, dsn, `SELECT count(*) FROM items WHERE tag IS NOT NULL`); n != 0 {
		t.Fatalf("%d rows changed by the refused backfills", n)
	}
	// Row 1500, in the second batch of 1000, divides by zero.
	n, err := hakit.Backfill(ctx, db, `UPDATE items SET tag = 'x', n = CASE WHEN id = 1500 THEN n / (id - 1500) ELSE n END
		WHERE id > $1 AND id <= $2 AND tag IS NULL`, 0, 3000, hakit.BackfillOptions{BatchSize: 1000})
	if err == nil || !strings.Contains(err.Error(), "(1000, 2000]") || !strings.Contains(err.Error(), "run it again from 1000") ||
		!strings.Contains(err.Error(), "division by zero") {
		t.Errorf("failing batch: error %v, want one naming the batch (1000, 2000], where to start again and the cause", err)
	}
	if n != 1000 {
		t.Errorf("failing batch: %d rows reported done, want 1000", n)
	}
	if done := queryOn[int64](t, dsn, `SELECT count(*) FROM items WHERE tag = 'x'`); done != 1000 {
		t.Errorf("%d rows backfilled before the failing batch, want 1000 (the first batch, kept)", done)
	}
}

// While a replica lags more than MaxLag (as the router probes it), the
// next batch waits for it: a replica that applies each commit 1.5 s late
// holds the backfill back until it has applied the batches, and the log
// says so.
func TestBackfillWaitsForReplicas(t *testing.T) {
	t.Parallel()
	pg := hatest.NewPostgres(t, hatest.PostgresOptions{Replicas: 1})
	ctx := context.Background()
	if err := pg.Nodes[0].Exec(ctx, `CREATE TABLE items (id bigserial PRIMARY KEY, n int NOT NULL, tag text);
		INSERT INTO items (n) SELECT g FROM generate_series(1, 300) g`); err != nil {
		t.Fatal(err)
	}
	if err := pg.WaitReplicated(ctx); err != nil {
		t.Fatal(err)
	}
	const delay = 1500 * time.Millisecond
	if err := pg.Nodes[1].SetApplyDelay(ctx, delay); err != nil {
		t.Fatal(err)
	}
	db := newRouter(t, pg.DSNs())
	logs := &logBuffer{}
	start := time.Now()
	const pause = 200 * time.Millisecond
	n, err := hakit.Backfill(ctx, db, `UPDATE items SET tag = 'x' WHERE id > $1 AND id <= $2 AND tag IS NULL`, 0, 300,
		hakit.BackfillOptions{BatchSize: 30, Pause: pause, MaxLag: 300 * time.Millisecond, Log: slog.New(slog.NewTextHandler(logs, nil))})
	took := time.Since(start)
	if err != nil || n != 300 {
		t.Fatalf("Backfill = %d, %v; want 300 rows", n, err)
	}
	// Ten batches, nine pauses, and at least one wait until the replica
	// applied the batches before it (about delay; the router probes every
	// 500ms).
	if took < 9*pause+delay/2 {
		t.Errorf("the backfill took %s: it did not wait for the lagging replica (%s behind)", took, delay)
	}
	if !strings.Contains(logs.String(), "waiting for the replicas") {
		t.Errorf("no wait for the replicas logged:\n%s", logs)
	}
}
