package hakit

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"strings"
	"time"

	"github.com/golang-migrate/migrate/v4"
	migratepgx "github.com/golang-migrate/migrate/v4/database/pgx/v5"
	"github.com/golang-migrate/migrate/v4/source/iofs"
	"github.com/jackc/pgx/v5/stdlib"

	"hakit.dev/dbrouter"
	"hakit.dev/health"
)

// dbComponent runs migrations at start, reports the primary in /readyz and
// closes the router at shutdown.
type dbComponent struct {
	db         *dbrouter.Router
	migrations fs.FS
	log        *slog.Logger
}

func (d *dbComponent) Start(ctx context.Context) error {
	if d.migrations == nil {
		return nil
	}
	return Migrate(ctx, d.db, d.migrations, d.log)
}

// Stop closes the router. Its Close waits for every borrowed connection to
// be released (pgxpool's Close does), which a handler or goroutine that
// ignores its context can put off for ever: Stop waits only until ctx
// ends, then leaves Close running and says what it still waits for.
func (d *dbComponent) Stop(ctx context.Context) error {
	// Counted before Close begins: it takes the pools away.
	b := d.borrowed()
	if b != "" {
		d.log.Warn("hakit: closing the database waits for borrowed connections", "borrowed", b)
	}
	done := make(chan struct{})
	go func() {
		d.db.Close()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("close abandoned, waiting for borrowed connections (%s): %w", b, ctx.Err())
	}
}

// borrowed describes the connections still out: those of the primary's
// pool, and the reads and writes running on each node; "" when none.
func (d *dbComponent) borrowed() string {
	var parts []string
	if pool, err := d.db.Primary(); err == nil {
		if n := pool.Stat().AcquiredConns(); n > 0 {
			parts = append(parts, fmt.Sprintf("%d on the primary's pool", n))
		}
	}
	for _, s := range d.db.Status() {
		if s.InFlight > 0 {
			parts = append(parts, fmt.Sprintf("%d reads or writes on %s", s.InFlight, s.Name))
		}
	}
	return strings.Join(parts, ", ")
}

// HealthChecks reports whether a primary is known. Not critical: a
// database down for every instance is no reason to take them all out of
// the load balancer.
func (d *dbComponent) HealthChecks() []health.Check {
	return []health.Check{{
		Name: "postgres:primary",
		Func: func(ctx context.Context) error {
			pool, err := d.db.Primary()
			if err != nil {
				return err
			}
			return pool.Ping(ctx)
		},
	}}
}

// Migrate runs the golang-migrate migrations in fsys (NNN_name.up.sql at
// its root) up on the primary of db. golang-migrate holds a PostgreSQL
// advisory lock while it migrates, so instances starting together take
// turns and the migrations run once. While no primary is known Migrate
// waits for one, up to ctx.
func Migrate(ctx context.Context, db *dbrouter.Router, fsys fs.FS, log *slog.Logger) error {
	pool, err := db.Primary()
	for err != nil {
		select {
		case <-ctx.Done():
			return fmt.Errorf("hakit: migrations: %w (%w)", err, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
		pool, err = db.Primary()
	}
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
	start := time.Now()
	err = m.Up()
	switch {
	case errors.Is(err, migrate.ErrNoChange):
		log.Info("hakit: migrations: up to date")
		return nil
	case err != nil:
		return fmt.Errorf("hakit: migrations: %w", err)
	}
	v, _, _ := m.Version()
	log.Info("hakit: migrations applied", "version", v, "took", time.Since(start).Round(time.Millisecond))
	return nil
}
