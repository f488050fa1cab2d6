// Command testapp is the small app hakit's end-to-end tests and the http
// benchmark run behind HAProxy: GET /fast answers at once, GET /slow after
// a second, and TESTAPP_BOOT_DELAY makes its start-up take that long.
// With a database, GET /hold borrows a pooled connection and keeps it for
// TESTAPP_HOLD (default 60s) ignoring its context, and GET /leak hands one
// to a goroutine that keeps it as long: the handlers that used to keep a
// draining process alive. Everything else comes from the HAKIT_*
// environment.
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"hakit.dev/hakit"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "testapp:", err)
		os.Exit(1)
	}
}

func run() error {
	cfg, err := hakit.ConfigFromEnv(nil)
	if err != nil {
		return err
	}
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	app, err := hakit.New(context.Background(), cfg)
	if err != nil {
		return err
	}
	name := os.Getenv("TESTAPP_NAME")
	if d, err := time.ParseDuration(os.Getenv("TESTAPP_BOOT_DELAY")); err == nil && d > 0 {
		app.OnStart(func(ctx context.Context) error {
			select {
			case <-time.After(d):
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	}
	r := app.Router()
	r.Get("/fast", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "fast "+name+"\n") })
	r.Get("/slow", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(time.Second):
			io.WriteString(w, "slow "+name+"\n")
		case <-r.Context().Done():
			http.Error(w, "cancelled", http.StatusServiceUnavailable)
		}
	})
	if db := app.DB(); db != nil {
		hold := time.Minute
		if d, err := time.ParseDuration(os.Getenv("TESTAPP_HOLD")); err == nil && d > 0 {
			hold = d
		}
		borrow := func(ctx context.Context) (*pgxpool.Conn, error) {
			pool, err := db.Primary()
			if err != nil {
				return nil, err
			}
			return pool.Acquire(ctx)
		}
		r.Get("/hold", func(w http.ResponseWriter, r *http.Request) {
			c, err := borrow(r.Context())
			if err != nil {
				http.Error(w, err.Error(), http.StatusServiceUnavailable)
				return
			}
			defer c.Release()
			io.WriteString(w, "holding\n")
			http.NewResponseController(w).Flush()
			time.Sleep(hold) // ignores its context, as a buggy handler does
			io.WriteString(w, "released\n")
		})
		r.Get("/leak", func(w http.ResponseWriter, r *http.Request) {
			c, err := borrow(r.Context())
			if err != nil {
				http.Error(w, err.Error(), http.StatusServiceUnavailable)
				return
			}
			go func() {
				time.Sleep(hold)
				c.Release()
			}()
			io.WriteString(w, "leaked\n")
		})
	}
	fmt.Fprintln(os.Stderr, "testapp: starting", name)
	return app.Run(context.Background())
}
