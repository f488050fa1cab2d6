package hakit_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"hakit.dev/hakit"
	"hakit.dev/hatest"
)

func envOf(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

// In the environment 0 means none (no delay, no timeout, no limit) for
// every variable that can be off, and is refused, naming the variable,
// for those that cannot; the struct built from it is accepted by New.
func TestConfigFromEnvZero(t *testing.T) {
	t.Parallel()
	off := map[string]string{
		"HAKIT_DRAIN_DELAY":         "0",
		"HAKIT_REQUEST_TIMEOUT":     "0s",
		"HAKIT_READ_HEADER_TIMEOUT": "0s",
		"HAKIT_IDLE_TIMEOUT":        "0",
		"HAKIT_MAX_BODY_BYTES":      "0",
	}
	cfg, err := hakit.ConfigFromEnv(envOf(off))
	if err != nil {
		t.Fatalf("ConfigFromEnv: %v", err)
	}
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	if _, err := hakit.New(context.Background(), cfg); err != nil {
		t.Fatalf("New refuses what ConfigFromEnv made of 0: %v", err)
	}
	if cfg.DrainDelay >= 0 || cfg.RequestTimeout >= 0 || cfg.ReadHeaderTimeout >= 0 || cfg.IdleTimeout >= 0 || cfg.MaxBodyBytes >= 0 {
		t.Errorf("0 in the environment is not none (negative) in the struct: %+v", cfg)
	}

	// The body limit of 0 is none: a 2 MiB body passes.
	r := serve(t, cfg, func(a *hakit.App) {
		a.Router().Post("/echo", func(w http.ResponseWriter, r *http.Request) {
			n, err := io.Copy(io.Discard, r.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusRequestEntityTooLarge)
				return
			}
			fmt.Fprint(w, n)
		})
	}, true)
	if resp, body := do(t, newReq(t, "POST", r.url+"/echo", strings.NewReader(strings.Repeat("x", 2<<20)))); resp.StatusCode != 200 || body != "2097152" {
		t.Errorf("HAKIT_MAX_BODY_BYTES=0 and a 2 MiB body: %d %q", resp.StatusCode, body)
	}

	// ShutdownTimeout and MaxHeaderBytes cannot be off: 0 is refused at
	// once, with the variable's name and why.
	for _, name := range []string{"HAKIT_SHUTDOWN_TIMEOUT", "HAKIT_MAX_HEADER_BYTES"} {
		_, err := hakit.ConfigFromEnv(envOf(map[string]string{name: "0"}))
		if err == nil || !strings.Contains(err.Error(), name) || strings.Contains(err.Error(), "-1") {
			t.Errorf("%s=0: %v; want an error naming it", name, err)
		}
	}
}

// In the struct a negative value is none where none exists; the
// shutdown and the header size cannot be unbounded.
func TestConfigStructRefusesUnboundedShutdownAndHeader(t *testing.T) {
	t.Parallel()
	_, err := hakit.New(context.Background(), hakit.Config{ShutdownTimeout: -1, MaxHeaderBytes: -1})
	if err == nil || !strings.Contains(err.Error(), "ShutdownTimeout") || !strings.Contains(err.Error(), "MaxHeaderBytes") {
		t.Errorf("negative ShutdownTimeout and MaxHeaderBytes: %v", err)
	}
}

// Connection strings come one per variable, whole: a multi-host URL and a
// key=value DSN (with its spaces) survive as they are.
func TestDatabaseURLsFromEnv(t *testing.T) {
	t.Parallel()
	multi := "postgres://u:p@h1:1,h2:2/db?sslmode=disable"
	kv := "host=h3 port=3 user=u dbname='my db' sslmode=disable"
	cfg, err := hakit.ConfigFromEnv(envOf(map[string]string{"HAKIT_DATABASE_URL_1": multi, "HAKIT_DATABASE_URL_2": kv}))
	if err != nil || !slices.Equal(cfg.DatabaseURLs, []string{multi, kv}) {
		t.Fatalf("DatabaseURLs = %q, %v", cfg.DatabaseURLs, err)
	}
	// A gap in the numbering, and the old comma-separated variable, are
	// errors rather than a silently smaller cluster.
	if _, err := hakit.ConfigFromEnv(envOf(map[string]string{"HAKIT_DATABASE_URL_1": multi, "HAKIT_DATABASE_URL_3": kv})); err == nil ||
		!strings.Contains(err.Error(), "HAKIT_DATABASE_URL_2") {
		t.Errorf("a gap in the numbering: %v", err)
	}
	if _, err := hakit.ConfigFromEnv(envOf(map[string]string{"HAKIT_DATABASE_URLS": multi})); err == nil ||
		!strings.Contains(err.Error(), "HAKIT_DATABASE_URL_1") {
		t.Errorf("HAKIT_DATABASE_URLS: %v; want an error pointing to HAKIT_DATABASE_URL_1", err)
	}
}

// Against a real cluster: a multi-host URL naming both nodes and a
// key=value DSN of the primary, read from the environment, reach the
// database router whole.
func TestDatabaseURLsFromEnvReachTheRouter(t *testing.T) {
	t.Parallel()
	hatestSkip(t)
	pg := hatest.NewPostgres(t, hatest.PostgresOptions{Replicas: 1})
	u, err := url.Parse(pg.DSNs()[0])
	if err != nil {
		t.Fatal(err)
	}
	pw, _ := u.User.Password()
	kv := "host=" + u.Hostname() + " port=" + u.Port() + " user=" + u.User.Username() + " password='" + pw + "' dbname=postgres sslmode=disable"
	for _, env := range []map[string]string{
		{"HAKIT_DATABASE_URL_1": pg.MultiHostDSN()},
		{"HAKIT_DATABASE_URL_1": kv, "HAKIT_DATABASE_URL_2": pg.DSNs()[1]},
	} {
		cfg, err := hakit.ConfigFromEnv(envOf(env))
		if err != nil {
			t.Fatal(err)
		}
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
		app, err := hakit.New(context.Background(), cfg)
		if err != nil {
			t.Fatalf("%v: %v", env, err)
		}
		if app.DB() == nil {
			t.Fatalf("%v: no database router", env)
		}
		if st := app.DB().Status(); len(st) != 2 {
			t.Errorf("%v: the router has %d nodes (%v), want 2", env, len(st), st)
		}
		hatest.WaitFor(t, 10*time.Second, "a primary", func() bool { _, err := app.DB().Primary(); return err == nil })
		app.DB().Close()
	}
}

// HAKIT_JOBS_NAMESPACE fills Config.JobsNamespace; one that cannot be a
// namespace (a colon would let it name another namespace's queue, a
// space would confuse tools) is an error naming the variable, and leaves
// the field empty.
func TestJobsNamespaceFromEnv(t *testing.T) {
	t.Parallel()
	cfg, err := hakit.ConfigFromEnv(envOf(map[string]string{"HAKIT_JOBS_NAMESPACE": " example.com/shop "}))
	if err != nil || cfg.JobsNamespace != "example.com/shop" {
		t.Errorf("HAKIT_JOBS_NAMESPACE=example.com/shop: %q, %v", cfg.JobsNamespace, err)
	}
	if cfg, err := hakit.ConfigFromEnv(envOf(nil)); err != nil || cfg.JobsNamespace != "" {
		t.Errorf("unset: %q, %v; want none", cfg.JobsNamespace, err)
	}
	for _, v := range []string{"shop:staging", "my shop", "a{b}"} {
		cfg, err := hakit.ConfigFromEnv(envOf(map[string]string{"HAKIT_JOBS_NAMESPACE": v}))
		if err == nil || !strings.Contains(err.Error(), "HAKIT_JOBS_NAMESPACE") || cfg.JobsNamespace != "" {
			t.Errorf("HAKIT_JOBS_NAMESPACE=%q: %q, %v; want an error naming the variable", v, cfg.JobsNamespace, err)
		}
	}
}
