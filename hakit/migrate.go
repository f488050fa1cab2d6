package hakit

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"net"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/golang-migrate/migrate/v4"
	"github.com/golang-migrate/migrate/v4/database"
	migratepgx "github.com/golang-migrate/migrate/v4/database/pgx/v5"
	"github.com/golang-migrate/migrate/v4/source"
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

// ContractMigrationsTable is the table, golang-migrate's format, in which
// [MigrateContract] records the contract migrations it applied. The
// expand migrations keep golang-migrate's schema_migrations.
const ContractMigrationsTable = "hakit_contract_migrations"

// appMigrationsTable is golang-migrate's table of the app's migrations.
const appMigrationsTable = "schema_migrations"

// contractDir is the directory of contract migrations beside the expand
// ones: migrations/ and migrations/contract/.
const contractDir = "contract"

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

// MigrateOptions tune [MigrateWith]. The zero value is usable.
type MigrateOptions struct {
	// LockTimeout is the longest lock_timeout a migration runs with: a
	// migration stuck behind a long transaction gives up instead of
	// stalling every query queued behind the lock it waits for. The first
	// attempt uses FirstLockTimeout, each retry after a lock timeout
	// twice the last, up to LockTimeout. A migration holding
	// CONCURRENTLY (which waits for the table's transactions without
	// queueing them) always uses LockTimeout, as does every migration
	// when LockRetry is negative. Defaults to 5s.
	LockTimeout time.Duration

	// FirstLockTimeout is the lock_timeout of the first attempt: how long
	// the writers of a table queue behind a migration's ACCESS EXCLUSIVE
	// lock while it waits for the transactions in flight. Defaults to
	// 50ms (at most LockTimeout).
	FirstLockTimeout time.Duration

	// StatementTimeout bounds each migration file (PostgreSQL's
	// statement_timeout, set for every migration; a file's statements
	// run as one). Defaults to 10 minutes; negative: none.
	StatementTimeout time.Duration

	// LockRetry is how long a migration that timed out waiting for a lock
	// is retried, with backoff (250ms doubling up to 15s, with jitter),
	// each time with a lock_timeout twice the last (see LockTimeout): the
	// long transaction may end meanwhile. Each attempt releases every lock
	// it took. Defaults to 2 minutes; negative: no retry, the first lock
	// timeout is returned.
	LockRetry time.Duration

	// Log receives the progress and the retries. Defaults to
	// slog.Default().
	Log *slog.Logger

	// Contract holds the contract migrations this release knows
	// (Config.ContractMigrations). MigrateWith refuses to run when the
	// database carries a contract migration it does not know: the release
	// is older than one whose contract step already ran. Defaults to the
	// directory named "contract" beside the app's migrations, if any.
	Contract fs.FS

	// Status, if set, is called with the reason the migrations wait
	// (a lock timeout retried) and with "" once they no longer do:
	// hakit.App shows it in /readyz?verbose while it is starting.
	Status func(reason string)

	undo *undoState // made by withDefaults: what attempts pass on
}

// undoState is what an attempt leaves to the next: the invalid indexes a
// CONCURRENTLY statement cut short left, to drop before running it again,
// and the lock_timeout of the next attempt.
type undoState struct {
	mu          sync.Mutex
	pending     []string
	lockTimeout time.Duration
}

// attemptLockTimeout is the lock_timeout of the current attempt.
func (u *undoState) attemptLockTimeout() time.Duration {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.lockTimeout
}

// raiseLockTimeout doubles the lock_timeout of the next attempt, up to
// limit.
func (u *undoState) raiseLockTimeout(limit time.Duration) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.lockTimeout = min(2*u.lockTimeout, limit)
}

func (o MigrateOptions) withDefaults() MigrateOptions {
	if o.LockTimeout <= 0 {
		o.LockTimeout = 5 * time.Second
	}
	if o.StatementTimeout == 0 {
		o.StatementTimeout = 10 * time.Minute
	}
	if o.LockRetry == 0 {
		o.LockRetry = 2 * time.Minute
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Status == nil {
		o.Status = func(string) {}
	}
	if o.FirstLockTimeout <= 0 {
		o.FirstLockTimeout = 50 * time.Millisecond
	}
	if o.undo == nil {
		o.undo = &undoState{lockTimeout: min(o.FirstLockTimeout, o.LockTimeout)}
		if o.LockRetry < 0 {
			o.undo.lockTimeout = o.LockTimeout
		}
	}
	return o
}

// Migrate is [MigrateWith] with the default options, logging to log (nil:
// slog.Default()).
func Migrate(ctx context.Context, db *dbrouter.Router, fsys fs.FS, log *slog.Logger) error {
	return MigrateWith(ctx, db, fsys, MigrateOptions{Log: log})
}

// MigrateWith brings the database of db up to date, on its primary: first
// the library's own tables — the outbox and Once's table of package jobs,
// the PostgreSQL session store's table — from [jobs.Migrations] and
// [session.Migrations], recorded in [LibraryMigrationsTable]; then the
// app's golang-migrate migrations in fsys, recorded in schema_migrations.
// fsys may be nil: the library's migrations alone are applied. hakit.App
// calls it at start, with Config.Migrations, whenever it has a database.
//
// The migrations in fsys are files named NNN_name.up.sql (golang-migrate's
// format; .down.sql files are allowed and never run). When none sit at the
// root of fsys, the one directory that holds some is used — an embed.FS
// made with //go:embed migrations/*.sql holds them under "migrations/" —
// and several such directories, or none, are an error saying what to do.
// A directory named "contract" is never run here: see [MigrateContract].
//
// # Locks
//
// Each migration runs with lock_timeout and statement_timeout set: a
// short lock_timeout first (opts.FirstLockTimeout, 50ms), so that the
// writers queued behind an ALTER TABLE waiting for its ACCESS EXCLUSIVE
// lock wait no longer, twice as long at each retry, up to
// opts.LockTimeout; a file holding CONCURRENTLY, which waits for the
// table's transactions without queueing its writers, runs with
// opts.LockTimeout at once. statement_timeout is opts.StatementTimeout.
// A file's statements run as
// one implicit transaction, so a migration that fails leaves nothing
// behind; a CONCURRENTLY statement (CREATE INDEX CONCURRENTLY, DROP INDEX
// CONCURRENTLY, REINDEX CONCURRENTLY) cannot run in one, so it must be
// alone in its file, where it runs outside any transaction. A migration
// that times out waiting for a lock is undone (schema_migrations is set
// back from dirty to the previous version, and an invalid index a
// CONCURRENTLY statement left is dropped) and retried with backoff for
// opts.LockRetry; then MigrateWith gives up with an error that names the
// file, the statement and what to do.
//
// A migration that fails otherwise leaves schema_migrations dirty, as
// golang-migrate defines it, and the next start says what to do.
//
// It all runs under one PostgreSQL advisory lock ([MigrationLockKey]), so
// instances starting together migrate once. Each library migration runs
// in a transaction with the row that records it, so it is applied once or
// not at all. While no primary is known MigrateWith waits for one, up to
// ctx; without fsys it first asks any node, and returns at once when every
// library migration is already recorded there. A failover meanwhile (a
// connection error, or 25006: the node is now a replica) is logged and
// retried on the new primary, with backoff, up to ctx.
func MigrateWith(ctx context.Context, db *dbrouter.Router, fsys fs.FS, opts MigrateOptions) error {
	return migrateDB(ctx, db, libraryMigrations(), fsys, opts)
}

func migrateDB(ctx context.Context, db *dbrouter.Router, lib []migrationSource, fsys fs.FS, opts MigrateOptions) error {
	opts = opts.withDefaults()
	log := opts.Log
	if fsys != nil {
		root, dir, err := findMigrations(fsys, true)
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
	if fsys != nil && opts.Contract == nil {
		// The convention: migrations/ and migrations/contract/.
		if st, err := fs.Stat(fsys, contractDir); err == nil && st.IsDir() {
			if opts.Contract, err = fs.Sub(fsys, contractDir); err != nil {
				return fmt.Errorf("hakit: migrations: %w", err)
			}
		}
	}
	return retryMigrations(ctx, opts, func() error {
		return migrateOnce(ctx, db, files, fsys, opts, appMigrationsTable)
	})
}

// retryMigrations runs attempt until it succeeds, retrying a failover
// (the primary killed or demoted between finding it and running the DDL:
// nothing half-applied is recorded) with backoff up to ctx, and a lock
// timeout with backoff for opts.LockRetry.
func retryMigrations(ctx context.Context, opts MigrateOptions, attempt func() error) error {
	log := opts.Log
	delay := 100 * time.Millisecond
	lockDelay := 250 * time.Millisecond
	var firstLockTimeout time.Time
	defer opts.Status("")
	for {
		err := attempt()
		if err == nil || ctx.Err() != nil {
			return err
		}
		var wait time.Duration
		switch {
		case lockTimedOut(err):
			if firstLockTimeout.IsZero() {
				firstLockTimeout = time.Now()
			}
			waited := time.Since(firstLockTimeout)
			if opts.LockRetry < 0 || waited+lockDelay > opts.LockRetry {
				if left := opts.undo.left(); len(left) > 0 {
					err = fmt.Errorf("%w; the invalid indexes %q it left are still there: drop them (DROP INDEX CONCURRENTLY) before the next start", err, left)
				}
				return fmt.Errorf("hakit: migrations: gave up after retrying lock timeouts for %s: %w", waited.Round(time.Second), err)
			}
			// Jitter, so that instances do not retry in step.
			wait = lockDelay/2 + rand.N(lockDelay)
			lockDelay = min(2*lockDelay, 15*time.Second)
			opts.undo.raiseLockTimeout(opts.LockTimeout)
			reason := fmt.Sprintf("migrations: a migration timed out waiting for a table lock another transaction holds; retrying in %s (for up to %s): %v",
				wait.Round(time.Millisecond), opts.LockRetry, err)
			opts.Status(reason)
			log.Warn("hakit: migrations: lock timeout, retrying", "err", err, "in", wait, "waited", waited.Round(time.Millisecond))
		case migrationRetryable(err):
			wait = delay
			delay = min(2*delay, 2*time.Second)
			log.Warn("hakit: migrations: the primary was lost or demoted, retrying", "err", err, "in", wait)
		default:
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (then %w while retrying)", err, ctx.Err())
		case <-time.After(wait):
		}
	}
}

// lockTimedOut reports whether err is PostgreSQL's lock timeout (55P03,
// lock_not_available), also inside golang-migrate's errors.
func lockTimedOut(err error) bool {
	pgErr := pgErrorOf(err)
	return pgErr != nil && pgErr.Code == "55P03"
}

// pgErrorOf finds the *pgconn.PgError in err, looking inside
// golang-migrate's database.Error (which does not unwrap).
func pgErrorOf(err error) *pgconn.PgError {
	for err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) {
			return pgErr
		}
		var dbErr database.Error
		var dbErrP *database.Error
		switch {
		case errors.As(err, &dbErr):
			err = dbErr.OrigErr
		case errors.As(err, &dbErrP):
			err = dbErrP.OrigErr
		default:
			return nil
		}
	}
	return nil
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
func migrateOnce(ctx context.Context, db *dbrouter.Router, files []migrationFile, fsys fs.FS, opts MigrateOptions, table string) error {
	log := opts.Log
	if fsys == nil {
		// A replica that has every library migration recorded means the
		// primary has too: no need to wait for the primary, or to lock.
		if pool, err := db.Replica(); err == nil {
			if done, _ := libraryApplied(ctx, pool, files); done {
				if err := checkContract(ctx, pool, opts.Contract); err != nil {
					return err
				}
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
	if table == appMigrationsTable {
		if err := checkContract(ctx, conn, opts.Contract); err != nil {
			return err
		}
	}
	applied := 0
	if len(files) > 0 {
		applied, err = applyLibrary(ctx, conn, files, opts)
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
	return migrateApp(ctx, pool, fsys, table, applied, start, opts)
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

// applyLibrary applies the library migrations not recorded yet, each in a
// transaction with its record, and returns how many it applied.
//
// When LibraryMigrationsTable is missing and cannot be created (a role
// without CREATE on the schema, an app role the DBA set up the tables
// for), the migrations are run without records: each checks the catalog
// and does nothing when its tables and columns are there, so a role that
// neither owns nor may create them starts on an up-to-date database.
func applyLibrary(ctx context.Context, conn *pgx.Conn, files []migrationFile, opts MigrateOptions) (int, error) {
	log := opts.Log
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
		ran, err := applyOne(ctx, conn, f, unrecorded == nil, opts)
		if err != nil {
			err = explainLockTimeout(err, opts.undo.attemptLockTimeout())
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
// transaction waits for is bounded by the attempt's lock_timeout.
func applyOne(ctx context.Context, conn *pgx.Conn, f migrationFile, record bool, opts MigrateOptions) (bool, error) {
	ran := false
	err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		// The record waits for another instance running the same
		// migration (up to LockTimeout); the migration's own statements
		// wait for their tables' locks up to the attempt's lock_timeout.
		if _, err := tx.Exec(ctx, fmt.Sprintf(`SET LOCAL lock_timeout = %d`, pgMillis(opts.LockTimeout))); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, fmt.Sprintf(`SET LOCAL statement_timeout = %d`, max(opts.StatementTimeout.Milliseconds(), 0))); err != nil {
			return err
		}
		if record {
			tag, err := tx.Exec(ctx, `INSERT INTO `+LibraryMigrationsTable+` (package, version, name) VALUES ($1, $2, $3)
				ON CONFLICT (package, version) DO NOTHING`, f.pkg, int64(f.version), f.name)
			if err != nil || tag.RowsAffected() == 0 {
				return err
			}
		}
		if _, err := tx.Exec(ctx, fmt.Sprintf(`SET LOCAL lock_timeout = %d`, pgMillis(opts.undo.attemptLockTimeout()))); err != nil {
			return err
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
func explainLockTimeout(err error, timeout time.Duration) error {
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
		timeout, stmt, err)
}

// migrateApp runs the app's golang-migrate migrations in fsys up, one at
// a time, each with statement_timeout and the attempt's lock_timeout set
// (opts.LockTimeout for a migration holding CONCURRENTLY: it waits for the
// table's transactions without queueing its writers). A migration that
// timed out waiting for a lock, or ran out of statement_timeout, is undone
// (see undoFailed) and its error says so; lockTimedOut recognises the
// first.
func migrateApp(ctx context.Context, pool *pgxpool.Pool, fsys fs.FS, table string, libApplied int, start time.Time, opts MigrateOptions) error {
	log := opts.Log
	src, err := iofs.New(fsys, ".")
	if err != nil {
		return fmt.Errorf("hakit: migrations: %w", err)
	}
	r := &appMigrator{pool: pool, src: keepOpen{src}, table: table, opts: opts}
	defer r.close()
	attemptTimeout := opts.undo.attemptLockTimeout()
	if err := r.open(opts.LockTimeout); err != nil {
		return err
	}
	// Invalid indexes an earlier attempt left go first, under the full
	// LockTimeout like every CONCURRENTLY statement (DROP INDEX
	// CONCURRENTLY waits for the writers too, without blocking them).
	if err := opts.undo.drop(ctx, r.db, log); err != nil {
		return fmt.Errorf("hakit: migrations: drop the invalid index a CONCURRENTLY statement cut short left: %w", err)
	}
	invalid, err := invalidIndexes(ctx, pool)
	if err != nil {
		return fmt.Errorf("hakit: migrations: %w", err)
	}
	applied := 0
	for {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("hakit: migrations: %w", err)
		}
		sqlText, more, err := r.next()
		if err != nil {
			return fmt.Errorf("hakit: migrations: %w", err)
		}
		if !more {
			break
		}
		lockTimeout := attemptTimeout
		if hasKeyword(sqlText, "CONCURRENTLY") {
			lockTimeout = opts.LockTimeout
		}
		if lockTimeout != r.lockTimeout {
			if err := r.open(lockTimeout); err != nil {
				return err
			}
		}
		err = r.m.Steps(1)
		if err == nil {
			applied++
			continue
		}
		if errors.Is(err, migrate.ErrNoChange) {
			break
		}
		m := r.m
		var dirty migrate.ErrDirty
		if errors.As(err, &dirty) {
			return fmt.Errorf("hakit: migrations: %s failed in an earlier run and %s is marked dirty at version %d: "+
				"check what it left, fix it, then set %s to the last good version with dirty = false (migrate force N): %w",
				upFile(fsys, uint64(dirty.Version)), table, dirty.Version, table, err)
		}
		v, d, verr := m.Version()
		if verr != nil || !d {
			return fmt.Errorf("hakit: migrations: %w", err)
		}
		file := upFile(fsys, uint64(v))
		pgErr := pgErrorOf(err)
		if pgErr == nil || (pgErr.Code != "55P03" && pgErr.Code != "57014") {
			return fmt.Errorf("hakit: migrations: %s: %w", file, err)
		}
		// Nothing of the migration was applied: its statements ran as
		// one transaction, or it was a single CONCURRENTLY statement,
		// whose invalid index undoFailed drops.
		if uerr := undoFailed(ctx, pool, r.db, m, src, uint(v), invalid, opts.undo, log); uerr != nil {
			return fmt.Errorf("hakit: migrations: %s: %w; and undoing it failed, so %s stays dirty at version %d "+
				"(drop any invalid index it left, then migrate force to the previous version): %w", file, err, table, v, uerr)
		}
		if pgErr.Code == "55P03" {
			return fmt.Errorf("hakit: migrations: %s waited lock_timeout (%s) for a lock another transaction holds%s; "+
				"nothing of it was applied: end the long transactions on that table (pg_stat_activity), "+
				"or raise Config.MigrationLockTimeout: %w", file, lockTimeout, where(pgErr), pgErr)
		}
		return fmt.Errorf("hakit: migrations: %s ran longer than statement_timeout (%s); nothing of it was applied: "+
			"raise Config.MigrationStatementTimeout, or split the migration (a backfill in batches belongs in a job): %w",
			file, opts.StatementTimeout, pgErr)
	}
	if applied == 0 {
		if libApplied == 0 {
			log.Info("hakit: migrations: up to date")
		}
		return nil
	}
	v, _, _ := r.m.Version()
	log.Info("hakit: migrations applied", "version", v, "count", applied, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// appMigrator runs golang-migrate on a connection of its own, whose
// session carries the lock_timeout and statement_timeout of the
// migrations it runs: golang-migrate runs every migration on one
// connection, and a CONCURRENTLY statement cannot be preceded by a SET in
// its file (it would no longer run outside a transaction), so a change of
// lock_timeout is a new connection.
type appMigrator struct {
	pool        *pgxpool.Pool
	src         source.Driver
	table       string
	opts        MigrateOptions
	db          *sql.DB
	m           *migrate.Migrate
	lockTimeout time.Duration // of db's connections
}

// keepOpen is a source that golang-migrate's Close leaves open, for the
// next connection.
type keepOpen struct{ source.Driver }

// Close does nothing.
func (keepOpen) Close() error { return nil }

// pgMillis is d in whole milliseconds for a PostgreSQL timeout setting,
// rounded up: a positive duration under a millisecond must not become 0,
// which PostgreSQL takes for "no limit".
func pgMillis(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return int64((d + time.Millisecond - 1) / time.Millisecond)
}

// open (re)connects golang-migrate with lock_timeout set to lockTimeout.
func (r *appMigrator) open(lockTimeout time.Duration) error {
	r.close()
	cc := r.pool.Config().ConnConfig.Copy()
	cc.RuntimeParams["lock_timeout"] = strconv.FormatInt(pgMillis(lockTimeout), 10)
	cc.RuntimeParams["statement_timeout"] = strconv.FormatInt(max(r.opts.StatementTimeout.Milliseconds(), 0), 10)
	r.db = stdlib.OpenDB(*cc)
	r.lockTimeout = lockTimeout
	drv, err := migratepgx.WithInstance(r.db, &migratepgx.Config{MigrationsTable: r.table})
	if err != nil {
		return fmt.Errorf("hakit: migrations: %w", err)
	}
	if r.m, err = migrate.NewWithInstance("iofs", r.src, "pgx5", drv); err != nil {
		return fmt.Errorf("hakit: migrations: %w", err)
	}
	return nil
}

// unknownVersion tells apart the two ways the database's version v can
// have no next migration in the source: v is the source's last (up to
// date, nil), or v is not in the source at all. A database ahead of every
// file (a newer release migrated it, and this one starts during a rolling
// deploy or after a rollback of the binary) is logged and accepted: expand
// migrations keep the previous release working. A version missing from
// the middle, with later files this release would apply, is an error:
// golang-migrate cannot go on from there, and skipping them would leave
// the schema short.
func (r *appMigrator) unknownVersion(v uint) error {
	var later []uint
	known := false
	w, err := r.src.First()
	for err == nil {
		known = known || w == v
		if w > v {
			later = append(later, w)
		}
		w, err = r.src.Next(w)
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	switch {
	case known:
		return nil
	case len(later) > 0:
		return fmt.Errorf("the database is at version %d, which these migrations do not contain, and they have later ones (%v) that cannot be applied after it: "+
			"restore migration %d's files, or if its changes are gone from the database, set the version with `migrate force` to the last one the files have below it", v, later, v)
	default:
		r.opts.Log.Warn("hakit: migrations: the database is at a version these migrations do not contain, past all of them (a newer release migrated it); nothing to apply",
			"version", v)
		return nil
	}
}

// next returns the SQL of the next up migration to run, and whether there
// is one. A dirty version counts as one (running it reports the dirt); so
// does a version without an up file (its SQL is then empty).
func (r *appMigrator) next() (string, bool, error) {
	v, dirty, err := r.m.Version()
	var nextV uint
	switch {
	case errors.Is(err, migrate.ErrNilVersion):
		nextV, err = r.src.First()
	case err != nil:
		return "", false, err
	case dirty:
		return "", true, nil
	default:
		nextV, err = r.src.Next(v)
		if errors.Is(err, fs.ErrNotExist) {
			return "", false, r.unknownVersion(v)
		}
	}
	if errors.Is(err, fs.ErrNotExist) {
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	rc, _, err := r.src.ReadUp(nextV)
	if errors.Is(err, fs.ErrNotExist) {
		return "", true, nil
	}
	if err != nil {
		return "", false, err
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	return string(b), true, err
}

// close closes golang-migrate's connection.
func (r *appMigrator) close() {
	if r.m != nil {
		r.m.Close() // closes r.db too
		r.m, r.db = nil, nil
	} else if r.db != nil {
		r.db.Close()
		r.db = nil
	}
}

// hasKeyword reports whether sql holds word (ASCII, any case) as a
// keyword or unquoted identifier: outside comments (-- and nested /* */),
// string constants ('…', E'…', $tag$…$tag$) and quoted identifiers.
func hasKeyword(sql, word string) bool {
	isIdent := func(c byte) bool {
		return c == '_' || c == '$' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= 0x80
	}
	for i := 0; i < len(sql); {
		c := sql[i]
		switch {
		case strings.HasPrefix(sql[i:], "--"):
			j := strings.IndexByte(sql[i:], '\n')
			if j < 0 {
				return false
			}
			i += j
		case strings.HasPrefix(sql[i:], "/*"):
			depth := 0
			for i < len(sql) {
				if strings.HasPrefix(sql[i:], "/*") {
					depth++
					i += 2
				} else if strings.HasPrefix(sql[i:], "*/") {
					depth--
					i += 2
					if depth == 0 {
						break
					}
				} else {
					i++
				}
			}
		case c == '\'' || c == '"':
			// E'…' takes backslash escapes; the E was read as a word.
			escapes := c == '\'' && i > 0 && (sql[i-1] == 'E' || sql[i-1] == 'e') && (i < 2 || !isIdent(sql[i-2]))
			i++
			for i < len(sql) {
				switch {
				case escapes && sql[i] == '\\':
					i += 2
					continue
				case sql[i] == c && i+1 < len(sql) && sql[i+1] == c:
					i += 2
					continue
				case sql[i] == c:
					i++
				default:
					i++
					continue
				}
				break
			}
		case c == '$':
			// $tag$…$tag$ (not $1, a parameter).
			j := i + 1
			for j < len(sql) && isIdent(sql[j]) && sql[j] != '$' {
				j++
			}
			if j < len(sql) && sql[j] == '$' && (j == i+1 || sql[i+1] < '0' || sql[i+1] > '9') {
				tag := sql[i : j+1]
				end := strings.Index(sql[j+1:], tag)
				if end < 0 {
					return false
				}
				i = j + 1 + end + len(tag)
			} else {
				i = j
			}
		case isIdent(c):
			j := i
			for j < len(sql) && isIdent(sql[j]) {
				j++
			}
			if strings.EqualFold(sql[i:j], word) {
				return true
			}
			i = j
		default:
			i++
		}
	}
	return false
}

// where says where a statement failed, for errors: ", at …" or "".
func where(pgErr *pgconn.PgError) string {
	if stmt, _, _ := strings.Cut(pgErr.Where, "\n"); stmt != "" {
		return ", at " + stmt
	}
	return ""
}

// left returns the invalid indexes still to drop.
func (u *undoState) left() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return slices.Clone(u.pending)
}

// drop drops the pending invalid indexes on db (whose connections have
// the migrations' lock_timeout), and forgets those dropped.
func (u *undoState) drop(ctx context.Context, db *sql.DB, log *slog.Logger) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	for len(u.pending) > 0 {
		name := u.pending[0]
		if _, err := db.ExecContext(ctx, `DROP INDEX CONCURRENTLY IF EXISTS `+name); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		log.Info("hakit: migrations: dropped the invalid index a CONCURRENTLY statement cut short left", "index", name)
		u.pending = u.pending[1:]
	}
	return nil
}

// invalidIndexes lists the invalid indexes (those a CREATE INDEX
// CONCURRENTLY that failed leaves behind).
func invalidIndexes(ctx context.Context, q querier) (map[string]bool, error) {
	rows, err := q.Query(ctx, `SELECT indexrelid::regclass::text FROM pg_index WHERE NOT indisvalid`)
	if err != nil {
		return nil, fmt.Errorf("list invalid indexes: %w", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("list invalid indexes: %w", err)
	}
	set := map[string]bool{}
	for _, n := range names {
		set[n] = true
	}
	return set, nil
}

// undoFailed undoes a migration of version v that failed without applying
// anything: it drops the invalid indexes that were not there before
// (left by a CREATE INDEX CONCURRENTLY cut short) — now, or, when the drop
// itself times out waiting for the same writers, before the next attempt
// (undo) — and sets the migrations table back from dirty to the previous
// version, so the migration runs again at the next attempt.
func undoFailed(ctx context.Context, pool *pgxpool.Pool, db *sql.DB, m *migrate.Migrate, src source.Driver, v uint,
	before map[string]bool, undo *undoState, log *slog.Logger) error {
	now, err := invalidIndexes(ctx, pool)
	if err != nil {
		return err
	}
	undo.mu.Lock()
	for name := range now {
		if !before[name] && !slices.Contains(undo.pending, name) {
			undo.pending = append(undo.pending, name)
		}
	}
	undo.mu.Unlock()
	// Dropped now if it can be; else (it waits for the same writers,
	// up to lock_timeout) before the next attempt.
	if err := undo.drop(ctx, db, log); err != nil {
		log.Warn("hakit: migrations: the invalid index a CONCURRENTLY statement left is dropped before the next attempt", "err", err)
	}
	prev := database.NilVersion
	if p, err := src.Prev(v); err == nil {
		prev = int(p)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := m.Force(prev); err != nil {
		return fmt.Errorf("set schema_migrations back to version %d: %w", prev, err)
	}
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
func findMigrations(fsys fs.FS, skipContract bool) (fs.FS, string, error) {
	var dirs []string
	var stray string // a .sql file not named as a migration
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if skipContract && p != "." && d.Name() == contractDir {
				return fs.SkipDir
			}
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

// MigrateContract applies the contract migrations in fsys (NNN_name.up.sql,
// golang-migrate's format, recorded in [ContractMigrationsTable]): the
// second half of an expand/contract change — dropping the column the
// previous release used, the old half of a rename — run by `hakit migrate
// contract` or [App.MigrateContract] once every instance runs the release
// that stopped using what they drop. Never at start-up.
//
// fsys holds them at its root or in one directory; given the app's
// migrations FS, with a directory named "contract" beside the expand
// migrations, that directory is used. They run as [MigrateWith] runs the
// expand ones: under [MigrationLockKey], with opts' lock_timeout and
// statement_timeout, a lock timeout undone and retried for opts.LockRetry.
func MigrateContract(ctx context.Context, db *dbrouter.Router, fsys fs.FS, opts MigrateOptions) error {
	opts = opts.withDefaults()
	if fsys == nil {
		return errors.New("hakit: contract migrations: none given (Config.ContractMigrations, or a contract directory beside Config.Migrations)")
	}
	if db == nil {
		return errors.New("hakit: contract migrations: no database router")
	}
	root, _, err := findMigrations(fsys, true)
	if err == nil {
		if st, serr := fs.Stat(root, contractDir); serr == nil && st.IsDir() {
			root, err = fs.Sub(root, contractDir)
		}
	} else {
		root, _, err = findMigrations(fsys, false)
	}
	if err != nil {
		return fmt.Errorf("hakit: contract migrations: %w", err)
	}
	return retryMigrations(ctx, opts, func() error {
		return migrateOnce(ctx, db, nil, root, opts, ContractMigrationsTable)
	})
}

// checkContract returns an error when the database carries a contract
// migration that known (the release's contract migrations; nil: none)
// does not hold.
func checkContract(ctx context.Context, q querier, known fs.FS) error {
	var exists bool
	if err := q.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, ContractMigrationsTable).Scan(&exists); err != nil {
		return fmt.Errorf("hakit: migrations: check %s: %w", ContractMigrationsTable, err)
	}
	if !exists {
		return nil
	}
	var v int64
	var dirty bool
	err := q.QueryRow(ctx, `SELECT version, dirty FROM `+ContractMigrationsTable+` LIMIT 1`).Scan(&v, &dirty)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("hakit: migrations: check %s: %w", ContractMigrationsTable, err)
	}
	var have []uint64
	if known != nil {
		entries, _ := fs.ReadDir(known, ".")
		for _, e := range entries {
			if kv, up, ok := parseMigrationName(e.Name()); ok && up {
				have = append(have, kv)
			}
		}
	}
	if slices.Contains(have, uint64(v)) {
		return nil
	}
	return fmt.Errorf("hakit: migrations: the database carries contract migration %d, which this release does not know: "+
		"it is older than the release whose contract step ran (its expand migrations may expect what that step dropped). "+
		"Deploy a release that includes contract migration %d (Config.ContractMigrations), or, if you mean to run this one, "+
		"restore what the contract step removed and set %s back to the version this release knows", v, v, ContractMigrationsTable)
}

// migrateOptions are the MigrateOptions of c.
func (c Config) migrateOptions() MigrateOptions {
	return MigrateOptions{
		LockTimeout:      c.MigrationLockTimeout,
		StatementTimeout: c.MigrationStatementTimeout,
		LockRetry:        c.MigrationLockRetry,
		Contract:         c.ContractMigrations,
		Log:              c.Logger,
	}
}

// MigrateContract applies the contract migrations (Config.ContractMigrations,
// or the directory named "contract" beside Config.Migrations) with
// [MigrateContract], on the app's database, without starting the app: for
// an app that offers `migrate contract` as a command of its own binary,
// run once every instance runs the release that stopped using what they
// drop.
func (a *App) MigrateContract(ctx context.Context) error {
	if a.db == nil {
		return errors.New("hakit: contract migrations: no database (Config.DatabaseURLs)")
	}
	fsys := a.cfg.ContractMigrations
	if fsys == nil {
		fsys = a.cfg.Migrations
	}
	opts := a.cfg.migrateOptions()
	opts.Log = a.log
	return MigrateContract(ctx, a.db, fsys, opts)
}

// BackfillOptions tune [Backfill]. The zero value is usable.
type BackfillOptions struct {
	// BatchSize is the width of each batch's key range. Defaults to 1000:
	// a batch holds its rows' locks, and competes with the app for the
	// CPU, the disk and the WAL, for a few milliseconds.
	BatchSize int64

	// Pause is the pause between two batches (longer while a replica
	// lags). Defaults to as long as the last batch took, so the backfill
	// keeps at most half of one database connection busy.
	Pause time.Duration

	// MaxLag is how far behind the primary a replica may fall: while one
	// lags more, the next batch waits (up to ctx). The lag is read fresh
	// after each batch (dbrouter.Router.Refresh: one probe query per
	// node), not from the router's last periodic probe, which can be a
	// ProbeInterval (500ms) old and miss the batch just committed.
	// Defaults to 1s. Whatever the limit, each pause lasts at least the
	// worst replica lag, so the replicas keep up.
	MaxLag time.Duration

	// Log receives the progress, about every 10 seconds. Defaults to
	// slog.Default().
	Log *slog.Logger
}

// Backfill runs stmt — an UPDATE or DELETE bounded by a key range, as
// `UPDATE items SET tag = 'none' WHERE id > $1 AND id <= $2 AND tag IS
// NULL` — over the keys from (excluded) to to (included), in batches of
// opts.BatchSize keys, each its own transaction on the primary (with
// dbrouter's retries through a failover), paced: between two batches it
// pauses as long as the last one took, at least as long as the worst
// replica lag, and while a replica lags more than opts.MaxLag (the lag
// read after the batch, by probing the nodes then). It returns
// the rows the batches affected; on an error, those affected so far, and
// the error names the batch: a backfill is idempotent by its WHERE clause
// (tag IS NULL), so running it again from there is safe.
//
// A backfill of a large table belongs after the deploy that added the
// column, outside the start-up migrations (a command or a job): see
// docs/migrations.md.
func Backfill(ctx context.Context, db *dbrouter.Router, stmt string, from, to int64, opts BackfillOptions) (int64, error) {
	if db == nil {
		return 0, errors.New("hakit: backfill: no database router")
	}
	if opts.BatchSize < 0 || opts.Pause < 0 || opts.MaxLag < 0 {
		return 0, fmt.Errorf("hakit: backfill: negative BatchSize (%d), Pause (%s) or MaxLag (%s)", opts.BatchSize, opts.Pause, opts.MaxLag)
	}
	if opts.BatchSize == 0 {
		opts.BatchSize = 1000
	}
	if opts.MaxLag == 0 {
		opts.MaxLag = time.Second
	}
	log := opts.Log
	if log == nil {
		log = slog.Default()
	}
	var total int64
	start, logged := time.Now(), time.Now()
	for lo := from; lo < to; lo += opts.BatchSize {
		hi := to
		if to-lo > opts.BatchSize { // no lo+BatchSize: it could overflow near the top of int64
			hi = lo + opts.BatchSize
		}
		began := time.Now()
		// Idempotent by its WHERE clause: a batch whose COMMIT was lost
		// runs again rather than ending the backfill with
		// dbrouter.ErrCommitUnknown (the rows count then misses what the
		// lost COMMIT did).
		var tag pgconn.CommandTag
		err := db.WriteOpts(ctx, dbrouter.WriteOptions{Idempotent: true}, func(tx pgx.Tx) error {
			var err error
			tag, err = tx.Exec(ctx, stmt, lo, hi)
			return err
		})
		if err != nil {
			return total, fmt.Errorf("hakit: backfill: the batch (%d, %d] failed after %d rows: run it again from %d: %w", lo, hi, total, lo, err)
		}
		total += tag.RowsAffected()
		took := time.Since(began)
		if time.Since(logged) >= 10*time.Second {
			logged = time.Now()
			log.Info("hakit: backfill", "done", hi-from, "of", to-from, "rows", total, "took", time.Since(start).Round(time.Second))
		}
		if hi >= to {
			break
		}
		pause := took
		if opts.Pause > 0 {
			pause = opts.Pause
		}
		for {
			lag := replicaLag(db.Refresh(ctx)) // as they are now, this batch included
			if lag <= opts.MaxLag {
				pause = max(pause, lag)
				break
			}
			log.Info("hakit: backfill: waiting for the replicas", "lag", lag, "max", opts.MaxLag)
			if err := sleepCtx(ctx, min(lag, time.Second)); err != nil {
				return total, fmt.Errorf("hakit: backfill: stopped at %d: %w", hi, err)
			}
		}
		if err := sleepCtx(ctx, pause); err != nil {
			return total, fmt.Errorf("hakit: backfill: stopped at %d: %w", hi, err)
		}
	}
	return total, nil
}

// replicaLag is the worst lag of the replicas in status.
func replicaLag(status []dbrouter.NodeStatus) time.Duration {
	var lag time.Duration
	for _, n := range status {
		if n.Role == dbrouter.RoleReplica && n.Err == nil {
			lag = max(lag, n.Lag)
		}
	}
	return lag
}

// sleepCtx waits d, or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
