package jobs_test

import (
	"context"
	"fmt"
	"io/fs"
	"slices"
	"testing"

	"github.com/jackc/pgx/v5"

	"hakit.dev/dbrouter"
	"hakit.dev/hatest"
	"hakit.dev/jobs"
)

// applyFiles runs every NNN_name.up.sql of fsys, in order, on dsn.
func applyFiles(t *testing.T, dsn string, fsys fs.FS) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	names, err := fs.Glob(fsys, "*.up.sql")
	if err != nil || len(names) == 0 {
		t.Fatalf("migrations: %q %v", names, err)
	}
	for _, name := range names { // Glob sorts; versions are zero-padded
		b, err := fs.ReadFile(fsys, name)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Exec(ctx, string(b)); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
}

// The migrations hakit applies and Outbox.Schema make the same tables, so
// an outbox on a table of its own is the default one under another name.
func TestMigrationsMatchSchema(t *testing.T) {
	t.Parallel()
	pg := hatest.NewPostgres(t, hatest.PostgresOptions{})
	ctx := context.Background()
	for _, name := range []string{"migrated", "schema"} {
		if err := pg.CreateDatabase(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
	applyFiles(t, pg.Nodes[0].DSNFor("migrated"), jobs.Migrations())
	// Idempotent: a second run changes nothing.
	applyFiles(t, pg.Nodes[0].DSNFor("migrated"), jobs.Migrations())
	db, err := dbrouter.New(ctx, dbrouter.Config{Nodes: []string{pg.Nodes[0].DSNFor("schema")}, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := jobs.NewOutbox("").CreateTables(ctx, db); err != nil {
		t.Fatal(err)
	}
	migrated, schema := describe(t, pg.Nodes[0], "migrated"), describe(t, pg.Nodes[0], "schema")
	if !slices.Equal(migrated, schema) {
		t.Errorf("migrations and Schema differ:\nmigrations:\n%q\nSchema:\n%q", migrated, schema)
	}
	if len(migrated) != 11 { // 7 + 2 columns, 2 primary keys
		t.Errorf("tables: %q", migrated)
	}
}

// An outbox on a table of its own, made by the first Schema (before
// task_id and sent_to), is upgraded by today's Schema, rows kept.
func TestSchemaUpgradesAnOldTable(t *testing.T) {
	t.Parallel()
	pg := hatest.NewPostgres(t, hatest.PostgresOptions{})
	ctx := context.Background()
	if err := pg.Nodes[0].Exec(ctx, `CREATE TABLE orders_outbox (
	id         bigserial PRIMARY KEY,
	task_type  text NOT NULL,
	payload    jsonb NOT NULL,
	opts       jsonb NOT NULL DEFAULT '{}',
	created_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO orders_outbox (task_type, payload) VALUES ('old', '{}');`); err != nil {
		t.Fatal(err)
	}
	db, err := dbrouter.New(ctx, dbrouter.Config{Nodes: pg.DSNs(), Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	outbox := jobs.NewOutbox("orders_outbox")
	if err := outbox.CreateTables(ctx, db); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := db.QueryRow(ctx, `SELECT count(*) FROM orders_outbox WHERE task_id IS NOT NULL AND sent_to IS NULL`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("old row after the upgrade: %d %v", n, err)
	}
	err = db.Write(ctx, func(tx pgx.Tx) error {
		_, err := outbox.EnqueueTx(ctx, tx, "new", struct{}{}, jobs.Options{})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// The migrations of the package's tables, in golang-migrate's format.
// hakit.App applies them itself; without it, hakit.Migrate does.
func ExampleMigrations() {
	names, _ := fs.Glob(jobs.Migrations(), "*.sql")
	for _, name := range names {
		fmt.Println(name)
	}
	// Output:
	// 001_outbox.up.sql
	// 002_once.up.sql
}

// describe lists the columns and indexes of database on n.
func describe(t *testing.T, n *hatest.PostgresNode, database string) []string {
	t.Helper()
	out, err := n.Describe(context.Background(), database)
	if err != nil {
		t.Fatal(err)
	}
	return out
}
