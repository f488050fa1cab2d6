package hakit

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"path"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/golang-migrate/migrate/v4"
	migratepgx "github.com/golang-migrate/migrate/v4/database/pgx/v5"
	"github.com/golang-migrate/migrate/v4/source/iofs"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"hakit.dev/dbrouter"
	"hakit.dev/jobs"
	"hakit.dev/session"
)

// LibraryMigrationsTable is the table in which [Migrate] records the
// library's own migrations (those of [jobs.Migrations] and
// [session.Migrations]): one row per package and version. The app's
// migrations keep golang-migrate's schema_migrations.
const LibraryMigrationsTable = "hakit_schema_migrations"

// MigrationLockKey is the PostgreSQL advisory lock (pg_advisory_lock) that
// [Migrate] holds, on a connection of its own, while it applies the
// library's migrations and then the app's: instances starting together
// take turns, and each finds the work done by the first. (golang-migrate
// also takes its own lock around the app's migrations, inside this one.)
const MigrationLockKey int64 = 0x68616b69745f6d67 // "hakit_mg"

// libraryMigrations are the migrations of the library's own tables, in the
// order they are applied: each package's by version.
func libraryMigrations() []migrationSource {
	return []migrationSource{
		{pkg: "jobs", fsys: jobs.Migrations()},
		{pkg: "session", fsys: session.Migrations()},
	}
}

// migrationSource is one package's migrations.
type migrationSource struct {
	pkg  string
	fsys fs.FS
}

// migrationFile is one up migration of a package.
type migrationFile struct {
	pkg     string
	version uint64
	name    string // the file name, for logs and errors
	sql     string
}

// Migrate brings the database of db up to date, on its primary: first the
// library's own tables — the outbox and Once's table of package jobs, the
// PostgreSQL session store's table — from [jobs.Migrations] and
// [session.Migrations], recorded in [LibraryMigrationsTable]; then the
// app's golang-migrate migrations in fsys, recorded in schema_migrations.
// fsys may be nil: the library's migrations alone are applied. hakit.App
// calls Migrate at start, with Config.Migrations, whenever it has a
// database.
//
// The migrations in fsys are files named NNN_name.up.sql (golang-migrate's
// format; .down.sql files are allowed and never run). When none sit at the
// root of fsys, the one directory that holds some is used — an embed.FS
// made with //go:embed migrations/*.sql holds them under "migrations/" —
// and several such directories, or none, are an error saying what to do.
//
// It all runs under one PostgreSQL advisory lock ([MigrationLockKey]), so
// instances starting together migrate once. Each library migration runs
// in a transaction with the row that records it, so it is applied once or
// not at all. While no primary is known Migrate waits for one, up to ctx;
// without fsys it first asks any node, and returns at once when every
// library migration is already recorded there. A failover meanwhile (a
// connection error, or 25006: the node is now a replica) is logged and
// retried on the new primary, with backoff, up to ctx. log may be nil
// (slog.Default()).
func Migrate(ctx context.Context, db *dbrouter.Router, fsys fs.FS, log *slog.Logger) error {
	return migrateDB(ctx, db, libraryMigrations(), fsys, log)
}

func migrateDB(ctx context.Context, db *dbrouter.Router, lib []migrationSource, fsys fs.FS, log *slog.Logger) error {
	if log == nil {
		log = slog.Default()
	}
	if fsys != nil {
		root, dir, err := findMigrations(fsys)
		if err != nil {
			return err
		}
		if dir != "." {
			log.Info("hakit: migrations found in a subdirectory", "dir", dir)
		}
		fsys = root
	}
	if db == nil {
		return errors.New("hakit: migrations: no database router")
	}
	files, err := readLibrary(lib)
	if err != nil {
		return err
	}
	// A failover during the migrations (the primary killed or demoted
	// between finding it and running the DDL) is retried on the new
	// primary: nothing half-applied is recorded.
	delay := 100 * time.Millisecond
	for {
		err := migrateOnce(ctx, db, files, fsys, log)
		if err == nil || ctx.Err() != nil || !migrationRetryable(err) {
			return err
		}
		log.Warn("hakit: migrations: the primary was lost or demoted, retrying", "err", err, "in", delay)
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (then %w while retrying)", err, ctx.Err())
		case <-time.After(delay):
		}
		delay = min(2*delay, 2*time.Second)
	}
}

// migrationRetryable reports whether err says the primary went away or
// is no longer the primary (a failover), as opposed to a migration that
// fails on its own: a connection error, a node shutting down, or 25006
// (read_only_sql_transaction: the node is now a replica).
func migrationRetryable(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "25006", "57P01", "57P02", "57P03":
			return true
		}
		return strings.HasPrefix(pgErr.Code, "08") // connection_exception
	}
	var connectErr *pgconn.ConnectError
	var netErr net.Error
	if pgconn.SafeToRetry(err) || errors.As(err, &connectErr) || errors.As(err, &netErr) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
		return true
	}
	// pgx (and golang-migrate, which wraps its errors in words) report
	// some broken connections only in words.
	msg := err.Error()
	return strings.Contains(msg, "conn closed") || strings.Contains(msg, "connection reset") ||
		strings.Contains(msg, "broken pipe") || strings.Contains(msg, "unexpected EOF") ||
		strings.Contains(msg, "read-only transaction")
}

// migrateOnce is one attempt of migrateDB, on the primary known now.
func migrateOnce(ctx context.Context, db *dbrouter.Router, files []migrationFile, fsys fs.FS, log *slog.Logger) error {
	if fsys == nil {
		// A replica that has every library migration recorded means the
		// primary has too: no need to wait for the primary, or to lock.
		if pool, err := db.Replica(); err == nil {
			if done, _ := libraryApplied(ctx, pool, files); done {
				log.Info("hakit: migrations: up to date")
				return nil
			}
		}
	}
	pool, err := db.Primary()
	for err != nil {
		select {
		case <-ctx.Done():
			return fmt.Errorf("hakit: migrations: %w (%w)", err, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
		pool, err = db.Primary()
	}
	start := time.Now()
	// The lock is held by a connection of its own, outside the pool: the
	// app's migrations below use the pool, however small it is.
	conn, err := pgx.ConnectConfig(ctx, pool.Config().ConnConfig)
	if err != nil {
		return fmt.Errorf("hakit: migrations: connect to the primary: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if err := lockMigrations(ctx, conn, log); err != nil {
		return err
	}
	defer func() {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		// Closing the connection releases the lock anyway.
		conn.Exec(uctx, `SELECT pg_advisory_unlock($1)`, MigrationLockKey)
	}()
	applied := 0
	if len(files) > 0 {
		applied, err = applyLibrary(ctx, conn, files, log)
		if err != nil {
			return err
		}
	}
	if fsys == nil {
		if applied == 0 {
			log.Info("hakit: migrations: up to date")
		}
		return nil
	}
	return migrateApp(ctx, pool, fsys, applied, start, log)
}

// lockMigrations takes the migrations' advisory lock on conn, waiting for
// another instance's migrations to end (up to ctx).
func lockMigrations(ctx context.Context, conn *pgx.Conn, log *slog.Logger) error {
	var got bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, MigrationLockKey).Scan(&got); err != nil {
		return fmt.Errorf("hakit: migrations: lock: %w", err)
	}
	if got {
		return nil
	}
	log.Info("hakit: migrations: waiting for another instance's migrations", "lock", MigrationLockKey)
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, MigrationLockKey); err != nil {
		return fmt.Errorf("hakit: migrations: wait for another instance's migrations: %w", err)
	}
	return nil
}

// readLibrary reads the library's migrations, in the order to apply them.
func readLibrary(lib []migrationSource) ([]migrationFile, error) {
	var files []migrationFile
	for _, src := range lib {
		entries, err := fs.ReadDir(src.fsys, ".")
		if err != nil {
			return nil, fmt.Errorf("hakit: library migrations of %s: %w", src.pkg, err)
		}
		var own []migrationFile
		for _, e := range entries {
			v, up, ok := parseMigrationName(e.Name())
			if !ok || !up || e.IsDir() {
				continue
			}
			b, err := fs.ReadFile(src.fsys, e.Name())
			if err != nil {
				return nil, fmt.Errorf("hakit: library migrations of %s: %w", src.pkg, err)
			}
			if i := slices.IndexFunc(own, func(f migrationFile) bool { return f.version == v }); i >= 0 {
				return nil, fmt.Errorf("hakit: library migrations of %s: %s and %s have the same version", src.pkg, own[i].name, e.Name())
			}
			own = append(own, migrationFile{pkg: src.pkg, version: v, name: e.Name(), sql: string(b)})
		}
		slices.SortFunc(own, func(a, b migrationFile) int { return cmpUint(a.version, b.version) })
		files = append(files, own...)
	}
	return files, nil
}

func cmpUint(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

const createLibraryTable = `CREATE TABLE IF NOT EXISTS ` + LibraryMigrationsTable + ` (
	package    text NOT NULL,
	version    bigint NOT NULL,
	name       text NOT NULL,
	applied_at timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (package, version)
)`

// querier is what recorded needs of a pool or a connection.
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// libraryTableExists reports whether LibraryMigrationsTable exists.
func libraryTableExists(ctx context.Context, q querier) (bool, error) {
	var exists bool
	err := q.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, LibraryMigrationsTable).Scan(&exists)
	return exists, err
}

// recorded returns the library migrations recorded on q, as "pkg/version";
// an empty set when the table does not exist yet.
func recorded(ctx context.Context, q querier) (map[string]bool, error) {
	done := map[string]bool{}
	if exists, err := libraryTableExists(ctx, q); err != nil || !exists {
		return done, err
	}
	rows, err := q.Query(ctx, `SELECT package, version FROM `+LibraryMigrationsTable)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var pkg string
		var v int64
		if err := rows.Scan(&pkg, &v); err != nil {
			return nil, err
		}
		done[pkg+"/"+strconv.FormatInt(v, 10)] = true
	}
	return done, rows.Err()
}

func key(f migrationFile) string { return f.pkg + "/" + strconv.FormatUint(f.version, 10) }

// libraryApplied reports whether every library migration is recorded on
// pool (a replica will do).
func libraryApplied(ctx context.Context, pool *pgxpool.Pool, files []migrationFile) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	done, err := recorded(ctx, pool)
	if err != nil {
		return false, err
	}
	for _, f := range files {
		if !done[key(f)] {
			return false, nil
		}
	}
	return true, nil
}

// libraryLockTimeout bounds each lock a library migration waits for
// (SET LOCAL lock_timeout): a long transaction on a table it must change
// fails the start with an error saying so, instead of stalling it, and
// every query queued behind the migration's lock, for as long as that
// transaction lasts.
const libraryLockTimeout = 5 * time.Second

// applyLibrary applies the library migrations not recorded yet, each in a
// transaction with its record, and returns how many it applied.
//
// When LibraryMigrationsTable is missing and cannot be created (a role
// without CREATE on the schema, an app role the DBA set up the tables
// for), the migrations are run without records: each checks the catalog
// and does nothing when its tables and columns are there, so a role that
// neither owns nor may create them starts on an up-to-date database.
func applyLibrary(ctx context.Context, conn *pgx.Conn, files []migrationFile, log *slog.Logger) (int, error) {
	exists, err := libraryTableExists(ctx, conn)
	if err != nil {
		return 0, fmt.Errorf("hakit: library migrations: %w", err)
	}
	// Created only when missing: a database user without the right to
	// create tables can start once the tables exist.
	var unrecorded error // why the migrations cannot be recorded
	if !exists {
		if _, err := conn.Exec(ctx, createLibraryTable); err != nil {
			var pgErr *pgconn.PgError
			if !errors.As(err, &pgErr) || pgErr.Code != "42501" { // insufficient_privilege
				return 0, fmt.Errorf("hakit: library migrations: create %s: %w", LibraryMigrationsTable, err)
			}
			unrecorded = fmt.Errorf("create %s: %w", LibraryMigrationsTable, err)
			log.Warn("hakit: library migrations: cannot record them, running them unrecorded (each does nothing when its tables are there)",
				"err", err)
		}
	}
	done := map[string]bool{}
	if unrecorded == nil {
		if done, err = recorded(ctx, conn); err != nil {
			return 0, fmt.Errorf("hakit: library migrations: %w", err)
		}
	}
	n := 0
	for _, f := range files {
		if done[key(f)] {
			continue
		}
		start := time.Now()
		ran, err := applyOne(ctx, conn, f, unrecorded == nil)
		if err != nil {
			err = explainLockTimeout(err)
			if unrecorded != nil {
				return n, fmt.Errorf("hakit: library migration %s/%s (run unrecorded, as it could not %v): %w", f.pkg, f.name, unrecorded, err)
			}
			return n, fmt.Errorf("hakit: library migration %s/%s: %w", f.pkg, f.name, err)
		}
		if ran && unrecorded != nil {
			continue // it may well have done nothing: not logged as applied
		}
		if ran {
			n++
			log.Info("hakit: library migration applied", "package", f.pkg, "version", f.version, "name", f.name,
				"took", time.Since(start).Round(time.Millisecond))
		}
	}
	return n, nil
}

// applyOne runs f in a transaction that first records it (when record):
// should another instance run it at the same time (its lock lost with its
// connection), one of the two finds the record and leaves. Every lock the
// transaction waits for is bounded by libraryLockTimeout.
func applyOne(ctx context.Context, conn *pgx.Conn, f migrationFile, record bool) (bool, error) {
	ran := false
	err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, fmt.Sprintf(`SET LOCAL lock_timeout = %d`, libraryLockTimeout.Milliseconds())); err != nil {
			return err
		}
		if record {
			tag, err := tx.Exec(ctx, `INSERT INTO `+LibraryMigrationsTable+` (package, version, name) VALUES ($1, $2, $3)
				ON CONFLICT (package, version) DO NOTHING`, f.pkg, int64(f.version), f.name)
			if err != nil || tag.RowsAffected() == 0 {
				return err
			}
		}
		if _, err := tx.Exec(ctx, f.sql); err != nil {
			return err
		}
		ran = true
		return nil
	})
	return ran, err
}

// explainLockTimeout turns PostgreSQL's "canceling statement due to lock
// timeout" into an error saying which statement waited, and what to do.
func explainLockTimeout(err error) error {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "55P03" { // lock_not_available
		return err
	}
	stmt, _, _ := strings.Cut(pgErr.Where, "\n")
	if stmt == "" {
		stmt = "a statement"
	}
	return fmt.Errorf("waited lock_timeout (%s) for a table lock another transaction holds, at %s: "+
		"end the long transactions on that table (pg_stat_activity) and start again, "+
		"or apply the library migrations yourself and set Config.SkipLibraryMigrations: %w",
		libraryLockTimeout, stmt, err)
}

// migrateApp runs the app's golang-migrate migrations in fsys up.
func migrateApp(ctx context.Context, pool *pgxpool.Pool, fsys fs.FS, libApplied int, start time.Time, log *slog.Logger) error {
	src, err := iofs.New(fsys, ".")
	if err != nil {
		return fmt.Errorf("hakit: migrations: %w", err)
	}
	sqlDB := stdlib.OpenDBFromPool(pool)
	defer sqlDB.Close()
	drv, err := migratepgx.WithInstance(sqlDB, &migratepgx.Config{})
	if err != nil {
		return fmt.Errorf("hakit: migrations: %w", err)
	}
	m, err := migrate.NewWithInstance("iofs", src, "pgx5", drv)
	if err != nil {
		return fmt.Errorf("hakit: migrations: %w", err)
	}
	defer m.Close()
	stop := context.AfterFunc(ctx, func() {
		select {
		case m.GracefulStop <- true:
		default:
		}
	})
	defer stop()
	err = m.Up()
	switch {
	case errors.Is(err, migrate.ErrNoChange):
		if libApplied == 0 {
			log.Info("hakit: migrations: up to date")
		}
		return nil
	case err != nil:
		var dirty migrate.ErrDirty
		if errors.As(err, &dirty) {
			return fmt.Errorf("hakit: migrations: %s failed in an earlier run and schema_migrations is marked dirty at version %d: "+
				"check what it left, fix it, then set schema_migrations to the last good version with dirty = false (migrate force N): %w",
				upFile(fsys, uint64(dirty.Version)), dirty.Version, err)
		}
		if v, d, verr := m.Version(); verr == nil && d {
			return fmt.Errorf("hakit: migrations: %s: %w", upFile(fsys, uint64(v)), err)
		}
		return fmt.Errorf("hakit: migrations: %w", err)
	}
	v, _, _ := m.Version()
	log.Info("hakit: migrations applied", "version", v, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// upFile names the up migration of version v in fsys, for errors.
func upFile(fsys fs.FS, v uint64) string {
	entries, _ := fs.ReadDir(fsys, ".")
	for _, e := range entries {
		if ev, up, ok := parseMigrationName(e.Name()); ok && up && ev == v {
			return e.Name()
		}
	}
	return fmt.Sprintf("the migration of version %d", v)
}

// parseMigrationName parses a golang-migrate file name,
// NNN_name.up.ext or NNN_name.down.ext.
func parseMigrationName(name string) (version uint64, up, ok bool) {
	digits, rest, found := strings.Cut(name, "_")
	if !found || digits == "" {
		return 0, false, false
	}
	v, err := strconv.ParseUint(digits, 10, 64)
	if err != nil {
		return 0, false, false
	}
	switch {
	case strings.Contains(rest, ".up."):
		return v, true, true
	case strings.Contains(rest, ".down."):
		return v, false, true
	}
	return 0, false, false
}

// findMigrations returns the directory of fsys holding its migration
// files, and its path: the root when any sit there, else the one
// directory that holds some.
func findMigrations(fsys fs.FS) (fs.FS, string, error) {
	var dirs []string
	var stray string // a .sql file not named as a migration
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		dir, name := path.Split(p)
		dir = strings.TrimSuffix(dir, "/")
		if dir == "" {
			dir = "."
		}
		if _, _, ok := parseMigrationName(name); ok {
			if !slices.Contains(dirs, dir) {
				dirs = append(dirs, dir)
			}
		} else if stray == "" && strings.HasSuffix(name, ".sql") {
			stray = p
		}
		return nil
	})
	if err != nil {
		return nil, "", fmt.Errorf("hakit: migrations: read the migrations FS: %w", err)
	}
	switch {
	case slices.Contains(dirs, "."):
		return fsys, ".", nil
	case len(dirs) == 1:
		sub, err := fs.Sub(fsys, dirs[0])
		if err != nil {
			return nil, "", fmt.Errorf("hakit: migrations: %w", err)
		}
		return sub, dirs[0], nil
	case len(dirs) > 1:
		return nil, "", fmt.Errorf("hakit: migrations: no migration files at the root of the migrations FS (Config.Migrations), "+
			"and several directories hold some (%q): pass the one to run, as fs.Sub(fsys, %q)", dirs, dirs[0])
	}
	msg := "hakit: migrations: the migrations FS (Config.Migrations) holds no migration files: " +
		"name them NNN_name.up.sql (golang-migrate's format), or leave Config.Migrations nil"
	if stray != "" {
		msg += fmt.Sprintf(" (%q is not named so)", stray)
	}
	return nil, "", errors.New(msg)
}
