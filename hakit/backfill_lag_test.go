package hakit_test

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"hakit.dev/dbrouter"
	"hakit.dev/hakit"
	"hakit.dev/hatest"
)

// Backfill reads the replicas' lag fresh after each batch, not from the
// router's last periodic probe. Here the router probes once an hour, so a
// periodic reading would never see the replica fall behind; it applies
// each commit 1.5s late, and the batches commit 400ms apart (Pause), so
// after the second batch the replica has the first unapplied, for longer
// than MaxLag (300ms): the backfill must wait until it has applied what
// came before (the log says so), at least the delay.
func TestBackfillReadsFreshLag(t *testing.T) {
	t.Parallel()
	pg := hatest.NewPostgres(t, hatest.PostgresOptions{Replicas: 1})
	ctx := context.Background()
	if err := pg.Nodes[0].Exec(ctx, `CREATE TABLE items (id bigserial PRIMARY KEY, n int NOT NULL, tag text);
		INSERT INTO items (n) SELECT g FROM generate_series(1, 120) g`); err != nil {
		t.Fatal(err)
	}
	if err := pg.WaitReplicated(ctx); err != nil {
		t.Fatal(err)
	}
	const delay = 1500 * time.Millisecond
	if err := pg.Nodes[1].SetApplyDelay(ctx, delay); err != nil {
		t.Fatal(err)
	}
	db, err := dbrouter.New(ctx, dbrouter.Config{Nodes: pg.DSNs(), ProbeInterval: time.Hour,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	hatest.WaitFor(t, 30*time.Second, "the replica known", func() bool {
		for _, s := range db.Status() {
			if s.Role == dbrouter.RoleReplica {
				return true
			}
		}
		return false
	})
	logs := &logBuffer{}
	const pause = 400 * time.Millisecond
	start := time.Now()
	n, err := hakit.Backfill(ctx, db, `UPDATE items SET tag = 'x' WHERE id > $1 AND id <= $2 AND tag IS NULL`, 0, 120,
		hakit.BackfillOptions{BatchSize: 30, Pause: pause, MaxLag: 300 * time.Millisecond, Log: slog.New(slog.NewTextHandler(logs, nil))})
	took := time.Since(start)
	if err != nil || n != 120 {
		t.Fatalf("Backfill = %d, %v; want 120 rows", n, err)
	}
	if !strings.Contains(logs.String(), "waiting for the replicas") || took < 2*pause+delay {
		t.Errorf("four batches took %s and logged:\n%s\nwant a wait for the replica (it applies commits %s late), %s at least",
			took, logs, delay, 2*pause+delay)
	}
}
