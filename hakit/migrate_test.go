package hakit_test

import (
	"context"
	"embed"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jackc/pgx/v5"

	"hakit.dev/dbrouter"
	"hakit.dev/hakit"
	"hakit.dev/hatest"
	"hakit.dev/jobs"
)

//go:embed testdata/migrations/*.sql
var nestedMigrations embed.FS

// queryOn runs a one-value query on dsn.
func queryOn[T any](t *testing.T, dsn, sql string, args ...any) T {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var v T
	if err := conn.QueryRow(ctx, sql, args...).Scan(&v); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return v
}

// libraryRecords lists hakit_schema_migrations as "package/version name".
func libraryRecords(t *testing.T, dsn string) []string {
	t.Helper()
	return queryOn[[]string](t, dsn, `SELECT coalesce(array_agg(package || '/' || version || ' ' || name ORDER BY package, version), '{}')
		FROM hakit_schema_migrations`)
}

var wantLibrary = []string{"jobs/1 001_outbox.up.sql", "jobs/2 002_once.up.sql", "session/1 001_sessions.up.sql"}

func newRouter(t *testing.T, nodes []string) *dbrouter.Router {
	t.Helper()
	db, err := dbrouter.New(context.Background(), dbrouter.Config{Nodes: nodes, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	return db
}

// Two instances start together: the library's migrations and then the
// app's run once, the app's after the library's.
func TestLibraryAndAppMigrationsOnceAcrossInstances(t *testing.T) {
	t.Parallel()
	pg := hatest.NewPostgres(t, hatest.PostgresOptions{})
	migrations := fstest.MapFS{
		// The library's tables exist when the app's first migration runs.
		"1_runs.up.sql": {Data: []byte(`CREATE TABLE runs (outbox_columns int NOT NULL);
			INSERT INTO runs SELECT count(*) FROM information_schema.columns WHERE table_name = 'hakit_outbox';
			SELECT 'hakit_jobs_once'::regclass, 'hakit_sessions'::regclass, pg_sleep(1);`)},
		"2_more.up.sql": {Data: []byte(`INSERT INTO runs VALUES (0);`)},
	}
	cfg := hakit.Config{DatabaseURLs: pg.DSNs(), Migrations: migrations}
	a := serve(t, cfg, nil, false)
	b := serve(t, cfg, nil, false)
	waitStatus(t, a.url+"/readyz", 200)
	waitStatus(t, b.url+"/readyz", 200)

	dsn := pg.Nodes[0].DSN()
	if runs := queryOn[[]int32](t, dsn, `SELECT array_agg(outbox_columns ORDER BY outbox_columns DESC) FROM runs`); !slices.Equal(runs, []int32{7, 0}) {
		t.Errorf("runs = %v, want [7 0]: each app migration once, after the outbox table", runs)
	}
	if v := queryOn[int64](t, dsn, `SELECT version FROM schema_migrations`); v != 2 {
		t.Errorf("schema_migrations at %d, want 2", v)
	}
	if got := libraryRecords(t, dsn); !slices.Equal(got, wantLibrary) {
		t.Errorf("hakit_schema_migrations = %q, want %q", got, wantLibrary)
	}
	logs := a.logs.String() + b.logs.String()
	if n := strings.Count(logs, "library migration applied"); n != len(wantLibrary) {
		t.Errorf("%d library migrations applied by the two instances, want %d:\n%s", n, len(wantLibrary), logs)
	}
	if n := strings.Count(logs, "hakit: migrations applied"); n != 1 {
		t.Errorf("app migrations applied %d times, want 1:\n%s", n, logs)
	}
}

// An embed.FS keeps the directories of its patterns: its migrations sit
// two directories down, and are found there.
func TestMigrationsInASubdirectory(t *testing.T) {
	t.Parallel()
	pg := hatest.NewPostgres(t, hatest.PostgresOptions{})
	a := serve(t, hakit.Config{DatabaseURLs: pg.DSNs(), Migrations: nestedMigrations}, nil, true)
	if !strings.Contains(a.logs.String(), "dir=testdata/migrations") {
		t.Errorf("no log of the subdirectory used:\n%s", a.logs)
	}
	if v := queryOn[int64](t, pg.Nodes[0].DSN(), `SELECT version FROM schema_migrations`); v != 1 {
		t.Errorf("schema_migrations at %d, want 1", v)
	}
	if !queryOn[bool](t, pg.Nodes[0].DSN(), `SELECT to_regclass('notes') IS NOT NULL`) {
		t.Error("the subdirectory's migration did not run")
	}
}

// A migrations FS without migrations, or with them in several places, is
// an error saying what to do, before any database work.
func TestMigrationsFSErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		fsys fstest.MapFS
		want []string
	}{
		{"empty", fstest.MapFS{}, []string{"holds no migration files", "NNN_name.up.sql"}},
		{"misnamed", fstest.MapFS{"sql/001_init.sql": {}}, []string{"holds no migration files", `"sql/001_init.sql" is not named so`}},
		{"two directories", fstest.MapFS{"a/1_x.up.sql": {}, "b/c/1_y.up.sql": {}},
			[]string{"several directories", `"a"`, `"b/c"`, `fs.Sub(fsys, "a")`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := hakit.Migrate(context.Background(), nil, tc.fsys, nil)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not say %q:\n%v", w, err)
				}
			}
		})
	}
}

// An app without migrations of its own gets the library's tables, and no
// schema_migrations. Once they are recorded, an instance starts without a
// primary: it finds them on a replica.
func TestLibraryMigrationsAlone(t *testing.T) {
	t.Parallel()
	pg := hatest.NewPostgres(t, hatest.PostgresOptions{Replicas: 1})
	a := serve(t, hakit.Config{DatabaseURLs: pg.DSNs()}, nil, true)
	dsn := pg.Nodes[0].DSN()
	if got := libraryRecords(t, dsn); !slices.Equal(got, wantLibrary) {
		t.Errorf("hakit_schema_migrations = %q, want %q", got, wantLibrary)
	}
	for _, table := range []string{"hakit_outbox", "hakit_jobs_once", "hakit_sessions", "-schema_migrations"} {
		want := !strings.HasPrefix(table, "-")
		table = strings.TrimPrefix(table, "-")
		if got := queryOn[bool](t, dsn, `SELECT to_regclass($1) IS NOT NULL`, table); got != want {
			t.Errorf("table %s exists: %v, want %v", table, got, want)
		}
	}
	a.stop()

	ctx := context.Background()
	if err := pg.WaitReplicated(ctx); err != nil {
		t.Fatal(err)
	}
	if err := pg.Nodes[0].Stop(); err != nil {
		t.Fatal(err)
	}
	b := serve(t, hakit.Config{DatabaseURLs: pg.DSNs()}, nil, true)
	if !strings.Contains(b.logs.String(), "migrations: up to date") {
		t.Errorf("second start without a primary:\n%s", b.logs)
	}
}

// A database whose tables came from the old Schema functions (before
// task_id and sent_to) is upgraded in place, rows kept, and the library
// migrations are recorded; a second run finds nothing to do.
func TestLibraryMigrationsUpgradeExistingTables(t *testing.T) {
	t.Parallel()
	pg := hatest.NewPostgres(t, hatest.PostgresOptions{})
	ctx := context.Background()
	// Outbox.Schema and PostgresSchema("hakit_sessions") as first released.
	old := `CREATE TABLE IF NOT EXISTS "hakit_outbox" (
	id         bigserial PRIMARY KEY,
	task_type  text NOT NULL,
	payload    jsonb NOT NULL,
	opts       jsonb NOT NULL DEFAULT '{}',
	created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS hakit_jobs_once (
	key     text PRIMARY KEY,
	done_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS "hakit_sessions" (
	token    text PRIMARY KEY,
	data     jsonb NOT NULL,
	deadline timestamptz NOT NULL,
	expiry   timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS "hakit_sessions_expiry" ON "hakit_sessions" (expiry);
INSERT INTO hakit_outbox (task_type, payload) VALUES ('old', '{}');
INSERT INTO hakit_jobs_once (key) VALUES ('old');`
	if err := pg.Nodes[0].Exec(ctx, old); err != nil {
		t.Fatal(err)
	}
	db := newRouter(t, pg.DSNs())
	logs := &logBuffer{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	if err := hakit.Migrate(ctx, db, nil, log); err != nil {
		t.Fatal(err)
	}
	dsn := pg.Nodes[0].DSN()
	if got := libraryRecords(t, dsn); !slices.Equal(got, wantLibrary) {
		t.Errorf("hakit_schema_migrations = %q, want %q", got, wantLibrary)
	}
	if n := queryOn[int64](t, dsn, `SELECT count(*) FROM hakit_outbox WHERE task_type = 'old' AND task_id IS NOT NULL AND sent_to IS NULL`); n != 1 {
		t.Errorf("the old outbox row after the upgrade: %d rows with a task_id, want 1", n)
	}
	// The upgraded tables work with today's code.
	err := db.Write(ctx, func(tx pgx.Tx) error {
		if _, err := jobs.NewOutbox("").EnqueueTx(ctx, tx, "new", map[string]int{"n": 1}, jobs.Options{}); err != nil {
			return err
		}
		first, err := jobs.Once(ctx, tx, "old")
		if err == nil && first {
			t.Error("Once forgot a key recorded before the upgrade")
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := hakit.Migrate(ctx, db, nil, log); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(logs.String(), "library migration applied"); n != len(wantLibrary) {
		t.Errorf("%d library migrations applied over two runs, want %d:\n%s", n, len(wantLibrary), logs)
	}
	if !strings.Contains(logs.String(), "migrations: up to date") {
		t.Errorf("second run:\n%s", logs)
	}
}

// Migrate waits for a primary up to its context, and says so.
func TestMigrateWaitsForAPrimaryUpToItsContext(t *testing.T) {
	t.Parallel()
	pg := hatest.NewPostgres(t, hatest.PostgresOptions{Replicas: 1})
	db := newRouter(t, pg.DSNs())
	if err := pg.Nodes[0].Stop(); err != nil {
		t.Fatal(err)
	}
	hatest.WaitFor(t, 10*time.Second, "the router to lose the primary", func() bool {
		_, err := db.Primary()
		return err != nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	err := hakit.Migrate(ctx, db, nil, nil)
	if err == nil || !strings.Contains(err.Error(), "no primary") || !strings.Contains(err.Error(), "deadline exceeded") {
		t.Fatalf("Migrate without a primary: %v", err)
	}
}

// A database user that cannot create tables starts once the tables exist
// (it needs only to read the migration records); a migration it cannot
// run is an error saying so.
func TestMigrateWithoutTheRightToCreateTables(t *testing.T) {
	t.Parallel()
	pg := hatest.NewPostgres(t, hatest.PostgresOptions{})
	ctx := context.Background()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	appMigrations := fstest.MapFS{"1_notes.up.sql": {Data: []byte(`CREATE TABLE notes (n int)`)}}
	readOnly := []string{fmt.Sprintf("host=127.0.0.1 port=%d user=reader dbname=postgres sslmode=disable", pg.Nodes[0].Port)}
	if err := pg.Nodes[0].Exec(ctx, `CREATE ROLE reader LOGIN`); err != nil {
		t.Fatal(err)
	}
	// On an empty database it cannot even record the library's migrations.
	err := hakit.Migrate(ctx, newRouter(t, readOnly), nil, quiet)
	if err == nil || !strings.Contains(err.Error(), "create hakit_schema_migrations") || !strings.Contains(err.Error(), "permission denied") {
		t.Fatalf("read-only user on an empty database: %v", err)
	}
	if err := hakit.Migrate(ctx, newRouter(t, pg.DSNs()), appMigrations, quiet); err != nil {
		t.Fatal(err)
	}
	if err := pg.Nodes[0].Exec(ctx, `GRANT SELECT ON hakit_schema_migrations, schema_migrations TO reader`); err != nil {
		t.Fatal(err)
	}
	db := newRouter(t, readOnly)
	for _, fsys := range []fs.FS{nil, appMigrations} {
		if err := hakit.Migrate(ctx, db, fsys, quiet); err != nil {
			t.Fatalf("read-only user, everything migrated (app migrations %v): %v", fsys != nil, err)
		}
	}
	appMigrations["2_more.up.sql"] = &fstest.MapFile{Data: []byte(`CREATE TABLE more (n int)`)}
	if err := hakit.Migrate(ctx, db, appMigrations, quiet); err == nil || !strings.Contains(err.Error(), "permission denied") {
		t.Fatalf("read-only user, a new migration: %v", err)
	}
}

// A failed app migration is named in the error; so is the dirty state it
// leaves, at the next start, with what to do about it.
func TestAppMigrationFailureNamesItsFile(t *testing.T) {
	t.Parallel()
	pg := hatest.NewPostgres(t, hatest.PostgresOptions{})
	ctx := context.Background()
	db := newRouter(t, pg.DSNs())
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	migrations := fstest.MapFS{
		"1_ok.up.sql":  {Data: []byte(`CREATE TABLE ok (n int)`)},
		"2_bad.up.sql": {Data: []byte(`CREATE TABLE bad (;`)},
	}
	err := hakit.Migrate(ctx, db, migrations, quiet)
	if err == nil || !strings.Contains(err.Error(), "hakit: migrations: 2_bad.up.sql: ") || !strings.Contains(err.Error(), "syntax error") {
		t.Fatalf("failed migration: %v", err)
	}
	err = hakit.Migrate(ctx, db, migrations, quiet)
	for _, want := range []string{"2_bad.up.sql failed in an earlier run", "dirty at version 2", "migrate force"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("next start after a failed migration does not say %q: %v", want, err)
		}
	}
}

// upToDateTables are the library's tables as today's migrations make them,
// made by their owner without hakit_schema_migrations: a database upgraded
// before the library recorded its migrations, or set up by its DBA.
const upToDateTables = `CREATE TABLE hakit_outbox (
	id         bigserial PRIMARY KEY,
	task_id    uuid NOT NULL DEFAULT gen_random_uuid(),
	task_type  text NOT NULL,
	payload    jsonb NOT NULL,
	opts       jsonb NOT NULL DEFAULT '{}',
	created_at timestamptz NOT NULL DEFAULT now(),
	sent_to    text
);
CREATE TABLE hakit_jobs_once (key text PRIMARY KEY, done_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE hakit_sessions (token text PRIMARY KEY, data jsonb NOT NULL, deadline timestamptz NOT NULL, expiry timestamptz NOT NULL);
CREATE INDEX hakit_sessions_expiry ON hakit_sessions (expiry);`

// holdOutbox opens a transaction that writes to hakit_outbox and keeps it
// open (as a long request or a stuck relay would) until the test ends or
// release is called.
func holdOutbox(t *testing.T, dsn string) (release func()) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO hakit_outbox (task_type, payload) VALUES ('held', '{}')`); err != nil {
		t.Fatal(err)
	}
	release = sync.OnceFunc(func() {
		tx.Rollback(ctx)
		conn.Close(ctx)
	})
	t.Cleanup(release)
	return release
}

// An app role that neither owns the library's tables nor may create
// tables starts on a database whose tables are up to date, though
// hakit_schema_migrations is missing: the migrations, run unrecorded,
// find every table and column there and change nothing. (It failed
// creating hakit_schema_migrations, then would have failed on the ALTER
// TABLE, which needs the table's owner.)
func TestLibraryMigrationsAsANonOwnerOfUpToDateTables(t *testing.T) {
	t.Parallel()
	pg := hatest.NewPostgres(t, hatest.PostgresOptions{})
	ctx := context.Background()
	if err := pg.Nodes[0].Exec(ctx, upToDateTables+`
		CREATE ROLE app LOGIN;
		GRANT SELECT, INSERT, UPDATE, DELETE ON hakit_outbox, hakit_jobs_once, hakit_sessions TO app;
		GRANT USAGE ON SEQUENCE hakit_outbox_id_seq TO app;`); err != nil {
		t.Fatal(err)
	}
	appDSN := fmt.Sprintf("host=127.0.0.1 port=%d user=app dbname=postgres sslmode=disable", pg.Nodes[0].Port)
	logs := &logBuffer{}
	a := serve(t, hakit.Config{DatabaseURLs: []string{appDSN}, Logger: slog.New(slog.NewTextHandler(logs, nil))}, nil, true)
	waitStatus(t, a.url+"/readyz", 200)
	if !strings.Contains(logs.String(), "running them unrecorded") {
		t.Errorf("no warning that the library migrations run unrecorded:\n%s", logs)
	}
	if got := queryOn[bool](t, pg.Nodes[0].DSN(), `SELECT to_regclass('hakit_schema_migrations') IS NOT NULL`); got {
		t.Error("hakit_schema_migrations created by a role without the right to")
	}
	// The app role uses the tables.
	err := a.app.DB().Write(ctx, func(tx pgx.Tx) error {
		_, err := jobs.NewOutbox("").EnqueueTx(ctx, tx, "t", map[string]int{"n": 1}, jobs.Options{})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// A long transaction holding hakit_outbox does not stall the start when
// the table is up to date: no ALTER TABLE is issued, so no lock waited
// for. (ALTER TABLE … ADD COLUMN IF NOT EXISTS waited for its ACCESS
// EXCLUSIVE lock for as long as the transaction lasted.)
func TestLibraryMigrationsTakeNoLockOnUpToDateTables(t *testing.T) {
	t.Parallel()
	pg := hatest.NewPostgres(t, hatest.PostgresOptions{})
	ctx := context.Background()
	if err := pg.Nodes[0].Exec(ctx, upToDateTables); err != nil {
		t.Fatal(err)
	}
	dsn := pg.Nodes[0].DSN()
	holdOutbox(t, dsn)
	// Well under the migrations' lock timeout (5s): no lock was waited for.
	mctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	start := time.Now()
	if err := hakit.Migrate(mctx, newRouter(t, pg.DSNs()), nil, slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil {
		t.Fatalf("Migrate with a transaction holding hakit_outbox, after %v: %v", time.Since(start), err)
	}
	if got := libraryRecords(t, dsn); !slices.Equal(got, wantLibrary) {
		t.Errorf("hakit_schema_migrations = %q, want %q", got, wantLibrary)
	}
}

// When a column is missing, the ALTER TABLE that adds it waits for a long
// transaction holding hakit_outbox only up to the lock timeout, then fails
// (LockRetry < 0: not retried) with an error naming the statement and what
// to do; nothing is recorded, and the next start, the transaction over,
// applies it.
func TestLibraryMigrationLockTimeout(t *testing.T) {
	t.Parallel()
	pg := hatest.NewPostgres(t, hatest.PostgresOptions{})
	ctx := context.Background()
	// Outbox.Schema as first released, without task_id and sent_to.
	if err := pg.Nodes[0].Exec(ctx, `CREATE TABLE hakit_outbox (
		id bigserial PRIMARY KEY, task_type text NOT NULL, payload jsonb NOT NULL,
		opts jsonb NOT NULL DEFAULT '{}', created_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		t.Fatal(err)
	}
	dsn := pg.Nodes[0].DSN()
	release := holdOutbox(t, dsn)
	db := newRouter(t, pg.DSNs())
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	mctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	// Not retried (LockRetry < 0): the first lock timeout is the error.
	err := hakit.MigrateWith(mctx, db, nil, hakit.MigrateOptions{Log: quiet, LockRetry: -1})
	for _, want := range []string{"jobs/001_outbox.up.sql", "lock_timeout (5s)", "ALTER TABLE hakit_outbox", "SkipLibraryMigrations", "lock timeout"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Migrate behind a transaction holding hakit_outbox: error without %q: %v", want, err)
		}
	}
	if mctx.Err() != nil {
		t.Fatalf("Migrate waited for its context: %v", err)
	}
	if n := queryOn[int64](t, dsn, `SELECT count(*) FROM hakit_schema_migrations`); n != 0 {
		t.Errorf("%d library migrations recorded after the failure, want 0", n)
	}
	release()
	if err := hakit.Migrate(ctx, db, nil, quiet); err != nil {
		t.Fatal(err)
	}
	if got := libraryRecords(t, dsn); !slices.Equal(got, wantLibrary) {
		t.Errorf("hakit_schema_migrations = %q, want %q", got, wantLibrary)
	}
}

// SkipLibraryMigrations (HAKIT_SKIP_LIBRARY_MIGRATIONS=true) leaves the
// library's tables to the DBA: none is made, nothing recorded; the app's
// migrations still run.
func TestSkipLibraryMigrations(t *testing.T) {
	t.Parallel()
	cfg, err := hakit.ConfigFromEnv(func(name string) string {
		return map[string]string{"HAKIT_SKIP_LIBRARY_MIGRATIONS": "true"}[name]
	})
	if err != nil || !cfg.SkipLibraryMigrations {
		t.Fatalf("HAKIT_SKIP_LIBRARY_MIGRATIONS=true: SkipLibraryMigrations %v, %v", cfg.SkipLibraryMigrations, err)
	}
	pg := hatest.NewPostgres(t, hatest.PostgresOptions{})
	dsn := pg.Nodes[0].DSN()
	for _, migrations := range []fs.FS{nil, fstest.MapFS{"1_notes.up.sql": {Data: []byte(`CREATE TABLE notes (n int)`)}}} {
		a := serve(t, hakit.Config{DatabaseURLs: pg.DSNs(), Migrations: migrations, SkipLibraryMigrations: true}, nil, true)
		waitStatus(t, a.url+"/readyz", 200)
		a.stop()
		if !strings.Contains(a.logs.String(), "library migrations skipped") {
			t.Errorf("start does not say the library migrations are skipped:\n%s", a.logs)
		}
	}
	for _, table := range []string{"hakit_schema_migrations", "hakit_outbox", "hakit_jobs_once", "hakit_sessions", "+notes", "+schema_migrations"} {
		want := strings.HasPrefix(table, "+")
		table = strings.TrimPrefix(table, "+")
		if got := queryOn[bool](t, dsn, `SELECT to_regclass($1) IS NOT NULL`, table); got != want {
			t.Errorf("table %s exists: %v, want %v", table, got, want)
		}
	}
}

// A failover while Migrate waits for the migrations' lock (held here by
// another connection, as by another instance) is retried on the new
// primary, and said in the log. (Start-up failed with the lock
// connection's error.)
func TestMigrateRetriesThroughAFailover(t *testing.T) {
	t.Parallel()
	pg := hatest.NewPostgres(t, hatest.PostgresOptions{Replicas: 1})
	ctx := context.Background()
	primary, replica := pg.Nodes[0], pg.Nodes[1]
	holder, err := pgx.Connect(ctx, primary.DSN())
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close(ctx)
	if _, err := holder.Exec(ctx, `SELECT pg_advisory_lock($1)`, hakit.MigrationLockKey); err != nil {
		t.Fatal(err)
	}
	db := newRouter(t, pg.DSNs())
	logs := &logBuffer{}
	mctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- hakit.Migrate(mctx, db, nil, slog.New(slog.NewTextHandler(logs, nil))) }()
	hatest.WaitFor(t, 20*time.Second, "Migrate to wait for the lock", func() bool {
		return queryOn[int64](t, primary.DSN(), `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted`) > 0
	})
	if err := primary.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := replica.Promote(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Migrate through a failover: %v\n%s", err, logs)
	}
	if !strings.Contains(logs.String(), "retrying") {
		t.Errorf("no retry logged:\n%s", logs)
	}
	if got := libraryRecords(t, replica.DSN()); !slices.Equal(got, wantLibrary) {
		t.Errorf("hakit_schema_migrations on the new primary = %q, want %q", got, wantLibrary)
	}
}

// holdTable opens a transaction that reads table and keeps it open (a long
// report, a stuck request) until release or the end of the test: its
// ACCESS SHARE lock makes any ALTER TABLE wait. With write, it inserts a
// row instead, which CREATE INDEX CONCURRENTLY waits for.
func holdTable(t *testing.T, dsn, table string, write bool) (release func()) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sql := `SELECT count(*) FROM ` + table
	if write {
		sql = `INSERT INTO ` + table + ` (a) VALUES (-1)`
	}
	if _, err := tx.Exec(ctx, sql); err != nil {
		t.Fatal(err)
	}
	release = sync.OnceFunc(func() {
		tx.Rollback(ctx)
		conn.Close(ctx)
	})
	t.Cleanup(release)
	return release
}

// verboseReadyz returns /readyz?verbose's status and body.
func verboseReadyz(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url + "/readyz?verbose")
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// A migration behind a long transaction times out on its lock, is undone
// and retried while the instance is live and not ready (/readyz?verbose
// says why), and is applied once the transaction ends.
func TestMigrationLockTimeoutRetried(t *testing.T) {
	t.Parallel()
	pg := hatest.NewPostgres(t, hatest.PostgresOptions{})
	ctx := context.Background()
	dsn := pg.Nodes[0].DSN()
	if err := pg.Nodes[0].Exec(ctx, `CREATE TABLE items (a int); INSERT INTO items SELECT generate_series(1, 1000)`); err != nil {
		t.Fatal(err)
	}
	release := holdTable(t, dsn, "items", false)
	migrations := fstest.MapFS{
		"1_note.up.sql": {Data: []byte(`ALTER TABLE items ADD COLUMN note text`)},
	}
	a := serve(t, hakit.Config{DatabaseURLs: pg.DSNs(), Migrations: migrations,
		MigrationLockTimeout: 100 * time.Millisecond, MigrationLockRetry: time.Minute}, nil, false)
	hatest.WaitFor(t, 30*time.Second, "/readyz?verbose to say the migrations wait for a lock", func() bool {
		code, body := verboseReadyz(t, a.url)
		return code == 503 && strings.Contains(body, "timed out waiting for a table lock")
	})
	waitStatus(t, a.url+"/livez", 200)
	waitStatus(t, a.url+"/readyz", 503)
	hatest.WaitFor(t, 30*time.Second, "a second retry", func() bool {
		return strings.Count(a.logs.String(), "lock timeout, retrying") >= 2
	})
	// Undone between attempts: schema_migrations is not left dirty.
	if dirty := queryOn[int64](t, dsn, `SELECT count(*) FROM schema_migrations WHERE dirty`); dirty != 0 {
		t.Errorf("schema_migrations dirty while retrying")
	}
	release()
	waitStatus(t, a.url+"/readyz", 200)
	if !queryOn[bool](t, dsn, `SELECT EXISTS (SELECT FROM information_schema.columns WHERE table_name = 'items' AND column_name = 'note')`) {
		t.Error("column note not added after the transaction ended")
	}
	hatest.WaitFor(t, 10*time.Second, "/readyz?verbose to drop the reason once ready", func() bool {
		code, body := verboseReadyz(t, a.url)
		return code == 200 && !strings.Contains(body, "timed out waiting")
	})
}

// Behind a transaction that does not end, the migrations give up after
// LockRetry with an error that names the file and what to do, and leave
// schema_migrations clean at the previous version; the app does not start.
func TestMigrationLockTimeoutGivesUp(t *testing.T) {
	t.Parallel()
	pg := hatest.NewPostgres(t, hatest.PostgresOptions{})
	ctx := context.Background()
	dsn := pg.Nodes[0].DSN()
	if err := pg.Nodes[0].Exec(ctx, `CREATE TABLE items (a int)`); err != nil {
		t.Fatal(err)
	}
	holdTable(t, dsn, "items", false)
	migrations := fstest.MapFS{
		"1_other.up.sql": {Data: []byte(`CREATE TABLE other (n int)`)},
		"2_note.up.sql":  {Data: []byte(`CREATE TABLE more (n int); ALTER TABLE items ADD COLUMN note text`)},
	}
	a := serve(t, hakit.Config{DatabaseURLs: pg.DSNs(), Migrations: migrations,
		MigrationLockTimeout: 100 * time.Millisecond, MigrationLockRetry: 2 * time.Second}, nil, false)
	var err error
	select {
	case err = <-a.done:
		a.done <- err // for serve's cleanup
	case <-time.After(60 * time.Second):
		t.Fatal("start-up did not give up")
	}
	for _, want := range []string{"gave up after retrying lock timeouts", "2_note.up.sql", "lock_timeout (100ms)",
		"nothing of it was applied", "pg_stat_activity", "MigrationLockTimeout"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error without %q: %v", want, err)
		}
	}
	if got := queryOn[string](t, dsn, `SELECT version || ' ' || dirty FROM schema_migrations`); got != "1 false" {
		t.Errorf("schema_migrations = %q, want 1 false (undone, clean)", got)
	}
	if queryOn[bool](t, dsn, `SELECT to_regclass('more') IS NOT NULL`) {
		t.Error("the half of 2_note.up.sql before the lock timeout was kept")
	}
}

// A CREATE INDEX CONCURRENTLY alone in its file runs outside a
// transaction; when it times out waiting for a writing transaction, the
// invalid index it left is dropped and it is retried, and once the
// transaction ends the index is built, valid.
func TestMigrationConcurrentIndex(t *testing.T) {
	t.Parallel()
	pg := hatest.NewPostgres(t, hatest.PostgresOptions{})
	ctx := context.Background()
	dsn := pg.Nodes[0].DSN()
	if err := pg.Nodes[0].Exec(ctx, `CREATE TABLE items (a int); INSERT INTO items SELECT generate_series(1, 1000)`); err != nil {
		t.Fatal(err)
	}
	release := holdTable(t, dsn, "items", true)
	migrations := fstest.MapFS{
		"1_index.up.sql": {Data: []byte("-- alone in its file: it cannot run in a transaction\nCREATE INDEX CONCURRENTLY items_a ON items (a);\n")},
	}
	db := newRouter(t, pg.DSNs())
	logs := &logBuffer{}
	done := make(chan error, 1)
	go func() {
		done <- hakit.MigrateWith(ctx, db, migrations, hakit.MigrateOptions{LockTimeout: 100 * time.Millisecond,
			LockRetry: time.Minute, Log: slog.New(slog.NewTextHandler(logs, nil))})
	}()
	hatest.WaitFor(t, 30*time.Second, "the index build to be retried", func() bool {
		return strings.Count(logs.String(), "lock timeout, retrying") >= 2
	})
	release()
	if err := <-done; err != nil {
		t.Fatalf("MigrateWith: %v\n%s", err, logs)
	}
	if !strings.Contains(logs.String(), "dropped the invalid index") {
		t.Errorf("no invalid index dropped:\n%s", logs)
	}
	if got := queryOn[string](t, dsn, `SELECT string_agg(indexrelid::regclass::text || ' ' || indisvalid, ',') FROM pg_index
		WHERE indrelid = 'items'::regclass`); got != "items_a true" {
		t.Errorf("indexes of items: %q, want items_a true", got)
	}
}

// Contract migrations (a contract directory beside the expand ones) do not
// run at start; App.MigrateContract runs them; a release that does not
// know a contract step the database carries refuses to start.
func TestContractMigrations(t *testing.T) {
	t.Parallel()
	pg := hatest.NewPostgres(t, hatest.PostgresOptions{})
	ctx := context.Background()
	dsn := pg.Nodes[0].DSN()
	v1 := fstest.MapFS{
		"migrations/1_items.up.sql": {Data: []byte(`CREATE TABLE items (a int, old text)`)},
	}
	v2 := fstest.MapFS{
		"migrations/1_items.up.sql":           {Data: []byte(`CREATE TABLE items (a int, old text)`)},
		"migrations/2_new.up.sql":             {Data: []byte(`ALTER TABLE items ADD COLUMN new text`)},
		"migrations/contract/1_drop.up.sql":   {Data: []byte(`ALTER TABLE items DROP COLUMN old`)},
		"migrations/contract/1_drop.down.sql": {Data: []byte(`ALTER TABLE items ADD COLUMN old text`)},
	}
	hasColumn := func(col string) bool {
		return queryOn[bool](t, dsn, `SELECT EXISTS (SELECT FROM information_schema.columns WHERE table_name = 'items' AND column_name = $1)`, col)
	}
	a := serve(t, hakit.Config{DatabaseURLs: pg.DSNs(), Migrations: v2}, nil, true)
	if !hasColumn("new") || !hasColumn("old") {
		t.Fatalf("after the start of v2: new %v, old %v; want both (contract not run at start)", hasColumn("new"), hasColumn("old"))
	}
	if err := a.app.MigrateContract(ctx); err != nil {
		t.Fatal(err)
	}
	if hasColumn("old") {
		t.Error("MigrateContract did not drop old")
	}
	if got := queryOn[string](t, dsn, `SELECT version || ' ' || dirty FROM `+hakit.ContractMigrationsTable); got != "1 false" {
		t.Errorf("%s = %q, want 1 false", hakit.ContractMigrationsTable, got)
	}
	// Run again: nothing to do.
	if err := a.app.MigrateContract(ctx); err != nil {
		t.Errorf("MigrateContract up to date: %v", err)
	}
	a.stop()
	// v2 restarts fine; v1 (which knows no contract step) refuses.
	serve(t, hakit.Config{DatabaseURLs: pg.DSNs(), Migrations: v2}, nil, true).stop()
	old := serve(t, hakit.Config{DatabaseURLs: pg.DSNs(), Migrations: v1}, nil, false)
	var err error
	select {
	case err = <-old.done:
		old.done <- err // for serve's cleanup
	case <-time.After(60 * time.Second):
		t.Fatal("v1 started on a database with a contract step it does not know")
	}
	for _, want := range []string{"carries contract migration 1", "does not know", "Deploy a release that includes"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("v1's start-up error without %q: %v", want, err)
		}
	}
}

// The database is at a version the files do not contain. Ahead of every
// file (a newer release migrated it; this one starts during a rolling
// deploy or after a rollback of the binary) it is accepted with a warning.
// Missing from the middle, with later files to apply, it is an error that
// says what to do, not a silent "up to date" that skips those files.
func TestMigrationsAtAnUnknownVersion(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pg := hatest.NewPostgres(t, hatest.PostgresOptions{})
	db := newRouter(t, pg.DSNs())
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	v12 := fstest.MapFS{
		"1_a.up.sql": {Data: []byte(`CREATE TABLE a (n int)`)},
		"2_b.up.sql": {Data: []byte(`CREATE TABLE b (n int)`)},
	}
	if err := hakit.Migrate(ctx, db, v12, quiet); err != nil {
		t.Fatal(err)
	}

	var logs strings.Builder
	older := fstest.MapFS{"1_a.up.sql": v12["1_a.up.sql"]}
	if err := hakit.Migrate(ctx, db, older, slog.New(slog.NewTextHandler(&logs, nil))); err != nil {
		t.Fatalf("a release whose files end before the database's version: %v", err)
	}
	if !strings.Contains(logs.String(), "past all of them") {
		t.Errorf("no warning that the database is ahead of the files:\n%s", logs.String())
	}

	gap := fstest.MapFS{
		"1_a.up.sql": v12["1_a.up.sql"],
		"3_c.up.sql": {Data: []byte(`CREATE TABLE c (n int)`)},
	}
	err := hakit.Migrate(ctx, db, gap, quiet)
	if err == nil || !strings.Contains(err.Error(), "version 2") || !strings.Contains(err.Error(), "restore migration 2") {
		t.Fatalf("files without the database's version 2 but with a later 3: %v; want an error naming version 2 and the fix", err)
	}
	if n := queryOn[int64](t, pg.Nodes[0].DSN(), `SELECT count(*) FROM pg_class WHERE relname = 'c'`); n != 0 {
		t.Errorf("migration 3 ran after an unknown version 2")
	}
}
