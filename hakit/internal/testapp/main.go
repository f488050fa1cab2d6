// Command testapp is the small app hakit's end-to-end tests and the http
// benchmark run behind HAProxy: GET /fast answers at once, GET /slow after
// a second, and TESTAPP_BOOT_DELAY makes its start-up take that long.
// Everything else comes from the HAKIT_* environment.
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"time"

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
	fmt.Fprintln(os.Stderr, "testapp: starting", name)
	return app.Run(context.Background())
}
