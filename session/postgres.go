package session

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// PostgresOptions configure a PostgresStore.
type PostgresOptions struct {
	// Table is the sessions table. Defaults to "hakit_sessions", which
	// hakit.App creates with [Migrations]. Another table is the app's to
	// create: put [PostgresSchema] in its migrations, or call
	// [PostgresStore.CreateTable].
	Table string
}

// PostgresSchema returns the SQL that creates the sessions table named
// table (and its expiry index) if it does not exist. The default table,
// hakit_sessions, needs none of this under hakit.App, which applies
// [Migrations]; PostgresSchema is for a table of another name, in the
// app's own migrations, and for apps that create tables their own way.
func PostgresSchema(table string) string {
	t := pgx.Identifier{table}.Sanitize()
	idx := pgx.Identifier{table + "_expiry"}.Sanitize()
	return `CREATE TABLE IF NOT EXISTS ` + t + ` (
	token    text PRIMARY KEY,
	data     jsonb NOT NULL,
	deadline timestamptz NOT NULL,
	expiry   timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS ` + idx + ` ON ` + t + ` (expiry);`
}

// PostgresStore keeps sessions in a PostgreSQL table, one row per session
// with its values in a jsonb object, so a request's change is merged key by
// key in one UPDATE (data || set - unset) under the row's lock.
//
// Sessions are read and written on the primary: a replica might not have
// the session a login just wrote on another instance.
type PostgresStore struct {
	primary func() (*pgxpool.Pool, error)
	table   string
	sql     struct{ load, merge, touch, replace, del, expired string }
}

// NewPostgresStore returns a store that runs on the pool primary returns
// each time: pass dbrouter's Router.Primary, so sessions follow a failover,
// or a function returning a fixed pool.
func NewPostgresStore(primary func() (*pgxpool.Pool, error), opts PostgresOptions) *PostgresStore {
	if opts.Table == "" {
		opts.Table = "hakit_sessions"
	}
	s := &PostgresStore{primary: primary, table: opts.Table}
	t := pgx.Identifier{opts.Table}.Sanitize()
	s.sql.load = `SELECT data, deadline FROM ` + t + ` WHERE token = $1 AND expiry > now()`
	s.sql.merge = `UPDATE ` + t + ` SET data = (data || $2::jsonb) - $3::text[], deadline = $4, expiry = $5
		WHERE token = $1 AND expiry > now()`
	s.sql.touch = `UPDATE ` + t + ` SET expiry = $2 WHERE token = $1 AND expiry > now()`
	s.sql.replace = `INSERT INTO ` + t + ` (token, data, deadline, expiry) VALUES ($1, $2, $3, $4)
		ON CONFLICT (token) DO UPDATE SET data = EXCLUDED.data, deadline = EXCLUDED.deadline, expiry = EXCLUDED.expiry`
	s.sql.del = `DELETE FROM ` + t + ` WHERE token = $1`
	s.sql.expired = `DELETE FROM ` + t + ` WHERE expiry <= now()`
	return s
}

// CreateTable runs [PostgresSchema] for the store's table: it creates it
// if it does not exist. Under hakit.App the default table needs no call.
func (s *PostgresStore) CreateTable(ctx context.Context) error {
	pool, err := s.primary()
	if err != nil {
		return fmt.Errorf("session: postgres: %w", err)
	}
	_, err = pool.Exec(ctx, PostgresSchema(s.table))
	return err
}

// DeleteExpired removes expired sessions (they are ignored anyway) and
// returns how many; run it from a periodic job.
func (s *PostgresStore) DeleteExpired(ctx context.Context) (int64, error) {
	pool, err := s.primary()
	if err != nil {
		return 0, fmt.Errorf("session: postgres: %w", err)
	}
	tag, err := pool.Exec(ctx, s.sql.expired)
	return tag.RowsAffected(), err
}

// Load implements Store.
func (s *PostgresStore) Load(ctx context.Context, token string) (Record, bool, error) {
	pool, err := s.primary()
	if err != nil {
		return Record{}, false, fmt.Errorf("session: postgres: %w", err)
	}
	var data map[string]string
	var r Record
	err = pool.QueryRow(ctx, s.sql.load, token).Scan(&data, &r.Deadline)
	if errors.Is(err, pgx.ErrNoRows) {
		return Record{}, false, nil
	}
	if err != nil {
		return Record{}, false, fmt.Errorf("session: postgres: %w", err)
	}
	r.Values = make(map[string][]byte, len(data))
	for k, v := range data {
		b, err := base64.StdEncoding.DecodeString(v)
		if err != nil {
			return Record{}, false, fmt.Errorf("%w: key %q", errCorrupt, k)
		}
		r.Values[k] = b
	}
	return r, true, nil
}

// Apply implements Store.
func (s *PostgresStore) Apply(ctx context.Context, token string, c Change) (bool, error) {
	pool, err := s.primary()
	if err != nil {
		return false, fmt.Errorf("session: postgres: %w", err)
	}
	if c.Touch() {
		tag, err := pool.Exec(ctx, s.sql.touch, token, c.Expiry)
		if err != nil {
			return false, fmt.Errorf("session: postgres: %w", err)
		}
		return tag.RowsAffected() == 1, nil
	}
	set := make(map[string]string, len(c.Set))
	for k, v := range c.Set {
		set[k] = base64.StdEncoding.EncodeToString(v)
	}
	data, err := json.Marshal(set)
	if err != nil {
		return false, err
	}
	if c.Replace {
		_, err = pool.Exec(ctx, s.sql.replace, token, data, c.Deadline, c.Expiry)
		if err != nil {
			return false, fmt.Errorf("session: postgres: %w", err)
		}
		return true, nil
	}
	unset := c.Unset
	if unset == nil {
		unset = []string{}
	}
	tag, err := pool.Exec(ctx, s.sql.merge, token, data, unset, c.Deadline, c.Expiry)
	if err != nil {
		return false, fmt.Errorf("session: postgres: %w", err)
	}
	return tag.RowsAffected() == 1, nil
}

// Delete implements Store.
func (s *PostgresStore) Delete(ctx context.Context, token string, _ bool) error {
	pool, err := s.primary()
	if err != nil {
		return fmt.Errorf("session: postgres: %w", err)
	}
	if _, err := pool.Exec(ctx, s.sql.del, token); err != nil {
		return fmt.Errorf("session: postgres: %w", err)
	}
	return nil
}

// Ping checks that the primary answers, for readiness checks.
func (s *PostgresStore) Ping(ctx context.Context) error {
	pool, err := s.primary()
	if err != nil {
		return err
	}
	return pool.Ping(ctx)
}
