package hakit

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jackc/pgx/v5"

	"hakit.dev/dbrouter"
	"hakit.dev/hatest"
)

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func count(t *testing.T, dsn, sql string) int64 {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int64
	if err := conn.QueryRow(ctx, sql).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

// A library migration with a side effect that repeats if it runs twice:
// four instances migrating at once run it once.
func TestLibraryMigrationOnceAcrossInstances(t *testing.T) {
	t.Parallel()
	pg := hatest.NewPostgres(t, hatest.PostgresOptions{})
	lib := []migrationSource{{pkg: "test", fsys: fstest.MapFS{
		"001_runs.up.sql": {Data: []byte(`CREATE TABLE IF NOT EXISTS lib_runs (at timestamptz DEFAULT now());
			INSERT INTO lib_runs DEFAULT VALUES; SELECT pg_sleep(0.5);`)},
		"002_more.up.sql":   {Data: []byte(`INSERT INTO lib_runs DEFAULT VALUES;`)},
		"002_more.down.sql": {Data: []byte(`not run`)},
	}}}
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		db, err := dbrouter.New(ctx, dbrouter.Config{Nodes: pg.DSNs(), Logger: quietLog()})
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		wg.Go(func() { errs[i] = migrateDB(ctx, db, lib, nil, MigrateOptions{Log: quietLog()}) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("instance %d: %v", i, err)
		}
	}
	dsn := pg.Nodes[0].DSN()
	if n := count(t, dsn, `SELECT count(*) FROM lib_runs`); n != 2 {
		t.Errorf("lib_runs has %d rows, want 2: each migration once", n)
	}
	if n := count(t, dsn, `SELECT count(*) FROM hakit_schema_migrations WHERE package = 'test'`); n != 2 {
		t.Errorf("%d records, want 2", n)
	}
}

// Should two instances run one library migration at once anyway (the
// lock lost with its connection), the record inserted first lets one
// through and turns the other away.
func TestLibraryMigrationRecordGuardsWithoutTheLock(t *testing.T) {
	t.Parallel()
	pg := hatest.NewPostgres(t, hatest.PostgresOptions{})
	ctx := context.Background()
	dsn := pg.Nodes[0].DSN()
	if err := pg.Nodes[0].Exec(ctx, createLibraryTable+`; CREATE TABLE lib_runs (n int)`); err != nil {
		t.Fatal(err)
	}
	f := migrationFile{pkg: "test", version: 1, name: "001_run.up.sql", sql: `INSERT INTO lib_runs VALUES (1); SELECT pg_sleep(0.3)`}
	var wg sync.WaitGroup
	ran := make([]bool, 3)
	errs := make([]error, 3)
	for i := range ran {
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		wg.Go(func() { ran[i], errs[i] = applyOne(ctx, conn, f, true, MigrateOptions{}.withDefaults()) })
	}
	wg.Wait()
	n := 0
	for i := range ran {
		if errs[i] != nil {
			t.Errorf("conn %d: %v", i, errs[i])
		}
		if ran[i] {
			n++
		}
	}
	if n != 1 || count(t, dsn, `SELECT count(*) FROM lib_runs`) != 1 {
		t.Errorf("ran %d times, lib_runs %d rows; want once", n, count(t, dsn, `SELECT count(*) FROM lib_runs`))
	}
}

// A library migration that fails is not recorded, leaves nothing behind,
// and its error names it; the app's migrations do not run.
func TestLibraryMigrationFailure(t *testing.T) {
	t.Parallel()
	pg := hatest.NewPostgres(t, hatest.PostgresOptions{})
	ctx := context.Background()
	db, err := dbrouter.New(ctx, dbrouter.Config{Nodes: pg.DSNs(), Logger: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	lib := []migrationSource{{pkg: "test", fsys: fstest.MapFS{
		"001_bad.up.sql": {Data: []byte(`CREATE TABLE half (n int); CREATE TABLE broken (;`)},
	}}}
	app := fstest.MapFS{"1_app.up.sql": {Data: []byte(`CREATE TABLE app (n int)`)}}
	err = migrateDB(ctx, db, lib, app, MigrateOptions{Log: quietLog()})
	if err == nil || !strings.Contains(err.Error(), "hakit: library migration test/001_bad.up.sql") {
		t.Fatalf("error: %v", err)
	}
	dsn := pg.Nodes[0].DSN()
	if n := count(t, dsn, `SELECT count(*) FROM hakit_schema_migrations`); n != 0 {
		t.Errorf("%d records after a failed migration", n)
	}
	if n := count(t, dsn, `SELECT count(*) FROM pg_tables WHERE tablename IN ('half', 'app', 'schema_migrations')`); n != 0 {
		t.Errorf("%d tables left by the failed migration or the app's", n)
	}
}

// The library's own migration files are well formed: versions parse, none
// repeats, every package has some.
func TestLibraryMigrationFiles(t *testing.T) {
	files, err := readLibrary(libraryMigrations())
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, f := range files {
		got = append(got, key(f)+" "+f.name)
	}
	want := "jobs/1 001_outbox.up.sql,jobs/2 002_once.up.sql,session/1 001_sessions.up.sql"
	if strings.Join(got, ",") != want {
		t.Errorf("library migrations = %q, want %q", got, want)
	}
	dup := []migrationSource{{pkg: "x", fsys: fstest.MapFS{"1_a.up.sql": {}, "01_b.up.sql": {}}}}
	if _, err := readLibrary(dup); err == nil || !strings.Contains(err.Error(), "same version") {
		t.Errorf("duplicate versions: %v", err)
	}
}

// hasKeyword finds CONCURRENTLY as a word of the statement, never inside
// a comment, a string or a quoted identifier.
func TestHasKeyword(t *testing.T) {
	for _, tc := range []struct {
		sql  string
		want bool
	}{
		{"CREATE INDEX CONCURRENTLY items_a ON items (a);", true},
		{"create index concurrently items_a on items (a)", true},
		{"-- alone in its file\nDROP INDEX CONCURRENTLY IF EXISTS items_a", true},
		{"REINDEX INDEX CONCURRENTLY items_a", true},
		{"ALTER TABLE items ADD COLUMN note text", false},
		{"-- not CONCURRENTLY\nCREATE INDEX items_a ON items (a)", false},
		{"/* CONCURRENTLY /* nested */ still a comment CONCURRENTLY */ CREATE INDEX items_a ON items (a)", false},
		{"/* a comment */ CREATE INDEX CONCURRENTLY items_a ON items (a)", true},
		{"INSERT INTO notes VALUES ('CONCURRENTLY')", false},
		{"INSERT INTO notes VALUES ('it''s CONCURRENTLY')", false},
		{`INSERT INTO notes VALUES (E'\' CONCURRENTLY')`, false},
		{`ALTER TABLE items ADD COLUMN "concurrently" int`, false},
		{"DO $$BEGIN RAISE NOTICE 'CONCURRENTLY'; END$$", false},
		{"DO $body$ CONCURRENTLY $body$; CREATE INDEX CONCURRENTLY i ON t (a)", true},
		{"SELECT $1 CONCURRENTLY", true},
		{"SELECT concurrently_done FROM jobs", false},
		{"-- CONCURRENTLY", false},
		{"SELECT 'unterminated CONCURRENTLY", false},
	} {
		if got := hasKeyword(tc.sql, "CONCURRENTLY"); got != tc.want {
			t.Errorf("hasKeyword(%q) = %v, want %v", tc.sql, got, tc.want)
		}
	}
}

func TestPgMillisRoundsUp(t *testing.T) {
	for _, c := range []struct {
		d    time.Duration
		want int64
	}{{0, 0}, {-time.Second, 0}, {time.Microsecond, 1}, {500 * time.Microsecond, 1}, {time.Millisecond, 1}, {1500 * time.Microsecond, 2}, {50 * time.Millisecond, 50}} {
		if got := pgMillis(c.d); got != c.want {
			t.Errorf("pgMillis(%s) = %d, want %d", c.d, got, c.want)
		}
	}
}
