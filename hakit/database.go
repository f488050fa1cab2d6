package hakit

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"hakit.dev/dbrouter"
	"hakit.dev/health"
)

// dbComponent runs migrations at start (the library's, then the app's),
// reports the primary in /readyz and closes the router at shutdown.
type dbComponent struct {
	db          *dbrouter.Router
	migrations  fs.FS
	skipLibrary bool // Config.SkipLibraryMigrations
	opts        MigrateOptions
	log         *slog.Logger
	waiting     atomic.Pointer[string] // why the migrations wait, for /readyz
}

func (d *dbComponent) Start(ctx context.Context) error {
	opts := d.opts
	opts.Log = d.log
	opts.Status = func(reason string) { d.waiting.Store(&reason) }
	// The library's tables unless skipped; the app's migrations when set.
	if !d.skipLibrary {
		return MigrateWith(ctx, d.db, d.migrations, opts)
	}
	d.log.Info("hakit: library migrations skipped (SkipLibraryMigrations): the database's administrator applies them")
	if d.migrations == nil && opts.Contract == nil {
		return nil
	}
	return migrateDB(ctx, d.db, nil, d.migrations, opts)
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
		// Why the start-up migrations wait, while they do.
		Name:     "migrations",
		Interval: 250 * time.Millisecond,
		Func: func(context.Context) error {
			if r := d.waiting.Load(); r != nil && *r != "" {
				return errors.New(*r)
			}
			return nil
		},
	}, {
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
