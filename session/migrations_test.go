package session_test

import (
	"context"
	"fmt"
	"io/fs"
	"slices"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"hakit.dev/hatest"
	"hakit.dev/session"
)

// The migrations hakit applies and PostgresSchema make the same table.
func TestMigrationsMatchPostgresSchema(t *testing.T) {
	t.Parallel()
	pg := hatest.NewPostgres(t, hatest.PostgresOptions{})
	ctx := context.Background()
	for _, name := range []string{"migrated", "schema"} {
		if err := pg.CreateDatabase(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
	names, err := fs.Glob(session.Migrations(), "*.up.sql")
	if err != nil || len(names) == 0 {
		t.Fatalf("migrations: %q %v", names, err)
	}
	conn, err := pgx.Connect(ctx, pg.Nodes[0].DSNFor("migrated"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for range 2 { // idempotent: a second run changes nothing
		for _, name := range names {
			b, err := fs.ReadFile(session.Migrations(), name)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := conn.Exec(ctx, string(b)); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
		}
	}
	pool, err := pgxpool.New(ctx, pg.Nodes[0].DSNFor("schema"))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	store := session.NewPostgresStore(func() (*pgxpool.Pool, error) { return pool, nil }, session.PostgresOptions{})
	if err := store.CreateTable(ctx); err != nil {
		t.Fatal(err)
	}
	migrated, schema := describe(t, pg.Nodes[0], "migrated"), describe(t, pg.Nodes[0], "schema")
	if !slices.Equal(migrated, schema) || len(migrated) != 6 { // 4 columns, 2 indexes
		t.Errorf("migrations and PostgresSchema differ:\nmigrations:\n%q\nPostgresSchema:\n%q", migrated, schema)
	}
}

// The migrations of the PostgreSQL store's table, in golang-migrate's
// format. hakit.App applies them itself; without it, hakit.Migrate does.
func ExampleMigrations() {
	names, _ := fs.Glob(session.Migrations(), "*.sql")
	for _, name := range names {
		fmt.Println(name)
	}
	// Output:
	// 001_sessions.up.sql
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
