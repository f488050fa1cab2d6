package hakit_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/fstest"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/jackc/pgx/v5"

	"hakit.dev/hakit"
	"hakit.dev/hatest"
	"hakit.dev/health"
)

// running is an App serving on a loopback port for a test.
type running struct {
	app  *hakit.App
	url  string
	stop context.CancelFunc
	done chan error
	logs *logBuffer
}

// logBuffer collects log output for assertions.
type logBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// serve builds an App from cfg, lets setup add routes, serves it, and
// waits until it is ready (or, with wait false, returns at once).
func serve(t *testing.T, cfg hakit.Config, setup func(*hakit.App), wait bool) *running {
	t.Helper()
	logs := &logBuffer{}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	cfg.NoSignals = true
	app, err := hakit.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if setup != nil {
		setup(app)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{app: app, url: "http://" + ln.Addr().String(), stop: cancel, done: make(chan error, 1), logs: logs}
	go func() { r.done <- app.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(30 * time.Second):
			t.Error("Serve did not return 30s after its context ended")
		}
	})
	if wait {
		waitStatus(t, r.url+"/readyz", 200)
	}
	return r
}

func waitStatus(t *testing.T, url string, code int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == code {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not answer %d within 30s (last: %v %v)", url, code, resp, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func do(t *testing.T, req *http.Request) (*http.Response, string) {
	t.Helper()
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func newReq(t *testing.T, method, url string, body io.Reader) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

func TestStackBehaviour(t *testing.T) {
	t.Parallel()
	r := serve(t, hakit.Config{MaxBodyBytes: 16}, func(a *hakit.App) {
		a.Router().Get("/panic", func(w http.ResponseWriter, r *http.Request) { panic("handler bug") })
		a.Router().Get("/page", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "<!doctype html><p>hi</p>") })
		a.Router().Get("/widget", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Frame-Options", "SAMEORIGIN")
			io.WriteString(w, "<!doctype html><p>embed me</p>")
		})
		a.Router().Get("/items/{id}", func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "item %s id=%s", chi.URLParam(r, "id"), hakit.RequestID(r.Context()))
		})
		a.Router().Post("/echo", func(w http.ResponseWriter, r *http.Request) {
			b, err := io.ReadAll(r.Body)
			if hakit.IsBodyTooLarge(err) {
				http.Error(w, "too large", http.StatusRequestEntityTooLarge)
				return
			}
			w.Write(b)
		})
		a.Router().With(hakit.BodyLimit(1<<20)).Post("/upload", func(w http.ResponseWriter, r *http.Request) {
			b, err := io.ReadAll(r.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusRequestEntityTooLarge)
				return
			}
			fmt.Fprint(w, len(b))
		})
	}, true)

	// A panicking handler gives 500, is logged with its stack, and the
	// server lives on.
	resp, body := do(t, newReq(t, "GET", r.url+"/panic", nil))
	if resp.StatusCode != 500 || !strings.Contains(body, "internal server error") {
		t.Fatalf("/panic: %d %q", resp.StatusCode, body)
	}
	if logs := r.logs.String(); !strings.Contains(logs, "handler bug") || !strings.Contains(logs, "goroutine") {
		t.Fatalf("the panic is not logged with its stack:\n%s", logs)
	}
	if !strings.Contains(r.logs.String(), "request_id="+resp.Header.Get("X-Request-Id")) || resp.Header.Get("X-Request-Id") == "" {
		t.Fatalf("the error response's request id %q is not the logged one:\n%s", resp.Header.Get("X-Request-Id"), r.logs.String())
	}
	resp, body = do(t, newReq(t, "GET", r.url+"/items/7", nil))
	if resp.StatusCode != 200 || !strings.HasPrefix(body, "item 7 id=") {
		t.Fatalf("after the panic: %d %q", resp.StatusCode, body)
	}
	// Request IDs are made and available to the handler and the log;
	// success responses do not carry them.
	id := strings.TrimPrefix(body, "item 7 id=")
	if id == "" || resp.Header.Get("X-Request-Id") != "" || !strings.Contains(r.logs.String(), "request_id="+id) {
		t.Fatalf("request id %q, header %q", id, resp.Header.Get("X-Request-Id"))
	}
	if got := resp.Header.Get("X-Content-Type-Options"); got != "nosniff" {
		t.Errorf("X-Content-Type-Options = %q", got)
	}
	if resp.Header.Get("X-Frame-Options") != "" || resp.Header.Get("Strict-Transport-Security") != "" {
		t.Error("X-Frame-Options on plain text, or HSTS on plain http")
	}
	// HTML, sniffed or declared, may not be framed.
	resp, _ = do(t, newReq(t, "GET", r.url+"/page", nil))
	if resp.Header.Get("X-Frame-Options") != "DENY" || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Errorf("HTML page: X-Frame-Options %q, Content-Type %q", resp.Header.Get("X-Frame-Options"), resp.Header.Get("Content-Type"))
	}
	// A page meant to be framed keeps the handler's own answer.
	if resp, _ := do(t, newReq(t, "GET", r.url+"/widget", nil)); fmt.Sprint(resp.Header.Values("X-Frame-Options")) != "[SAMEORIGIN]" {
		t.Errorf("a page that sets its own X-Frame-Options: %q", resp.Header.Values("X-Frame-Options"))
	}
	if resp, _ := do(t, newReq(t, "GET", r.url+"/nope", nil)); resp.StatusCode != 404 || resp.Header.Get("X-Request-Id") == "" {
		t.Errorf("unknown path: %d, request id %q", resp.StatusCode, resp.Header.Get("X-Request-Id"))
	}

	// Body limits: by Content-Length at once, by reading for chunked
	// bodies, raised per request.
	if resp, _ := do(t, newReq(t, "POST", r.url+"/echo", strings.NewReader(strings.Repeat("x", 17)))); resp.StatusCode != 413 {
		t.Errorf("17-byte body with a 16-byte limit: %d", resp.StatusCode)
	}
	chunked := newReq(t, "POST", r.url+"/echo", io.MultiReader(strings.NewReader(strings.Repeat("y", 40))))
	chunked.ContentLength = -1
	if resp, _ := do(t, chunked); resp.StatusCode != 413 {
		t.Errorf("chunked 40-byte body: %d", resp.StatusCode)
	}
	if resp, body := do(t, newReq(t, "POST", r.url+"/echo", strings.NewReader("small"))); resp.StatusCode != 200 || body != "small" {
		t.Errorf("small body: %d %q", resp.StatusCode, body)
	}
	if resp, body := do(t, newReq(t, "POST", r.url+"/upload", strings.NewReader(strings.Repeat("z", 1000)))); resp.StatusCode != 200 || body != "1000" {
		t.Errorf("raised limit: %d %q", resp.StatusCode, body)
	}

	// CSRF: a cross-site POST from a browser is refused.
	csrf := newReq(t, "POST", r.url+"/echo", strings.NewReader("x"))
	csrf.Header.Set("Sec-Fetch-Site", "cross-site")
	if resp, _ := do(t, csrf); resp.StatusCode != 403 {
		t.Errorf("cross-site POST: %d, want 403", resp.StatusCode)
	}

	// Metrics by route pattern.
	_, metrics := do(t, newReq(t, "GET", r.url+"/metrics", nil))
	if !strings.Contains(metrics, `hakit_http_request_duration_seconds_count{code="200",method="GET",route="/items/{id}"} 1`) ||
		!strings.Contains(metrics, `code="500",method="GET",route="/panic"`) {
		t.Errorf("metrics lack the request histogram by route:\n%s", grep(metrics, "hakit_http"))
	}
	if !strings.Contains(r.logs.String(), `path=/items/7 status=200`) {
		t.Errorf("access log lacks the request:\n%s", r.logs.String())
	}
}

func grep(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func TestTrustedProxies(t *testing.T) {
	t.Parallel()
	show := func(a *hakit.App) {
		a.Router().Get("/whoami", func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "%s %s %s", hakit.ClientIP(r.Context()), hakit.Scheme(r.Context()), hakit.RequestID(r.Context()))
		})
	}
	untrusted := serve(t, hakit.Config{}, show, true)
	trusted := serve(t, hakit.Config{TrustedProxies: []netip.Prefix{
		netip.MustParsePrefix("127.0.0.1/32"), netip.MustParsePrefix("10.0.0.0/8")}}, show, true)

	ask := func(base string, hdr map[string]string) (string, http.Header) {
		req := newReq(t, "GET", base+"/whoami", nil)
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, body := do(t, req)
		return body, resp.Header
	}
	spoof := map[string]string{"X-Forwarded-For": "6.6.6.6", "X-Forwarded-Proto": "https", "X-Request-Id": "chosen-by-client"}

	// From an untrusted peer the headers are ignored.
	body, hdr := ask(untrusted.url, spoof)
	if !strings.HasPrefix(body, "127.0.0.1 http ") || strings.Contains(body, "chosen-by-client") || hdr.Get("Strict-Transport-Security") != "" {
		t.Fatalf("untrusted peer: %q", body)
	}
	// From a trusted proxy they count: the client is the first address
	// from the right that is not a trusted proxy.
	body, hdr = ask(trusted.url, map[string]string{"X-Forwarded-For": "6.6.6.6, 1.2.3.4, 10.1.2.3", "X-Forwarded-Proto": "https", "X-Request-Id": "from-the-lb"})
	if body != "1.2.3.4 https from-the-lb" || hdr.Get("Strict-Transport-Security") == "" {
		t.Fatalf("trusted proxy: %q (HSTS %q)", body, hdr.Get("Strict-Transport-Security"))
	}
	// Garbage in the header stops the walk; a malformed request id is
	// replaced.
	body, _ = ask(trusted.url, map[string]string{"X-Forwarded-For": "nonsense, 10.1.2.3", "X-Request-Id": "bad id\twith spaces"})
	if !strings.HasPrefix(body, "10.1.2.3 http ") || strings.Contains(body, "bad id") {
		t.Fatalf("garbage forwarded-for: %q", body)
	}
}

func TestDrainSequence(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var events []string
	note := func(s string) {
		mu.Lock()
		events = append(events, s)
		mu.Unlock()
	}
	slowStarted := make(chan struct{})
	r := serve(t, hakit.Config{DrainDelay: 1500 * time.Millisecond}, func(a *hakit.App) {
		a.Router().Get("/slow", func(w http.ResponseWriter, r *http.Request) {
			close(slowStarted)
			time.Sleep(time.Second)
			note("slow request done")
			io.WriteString(w, "slow")
		})
		a.Router().Get("/fast", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "fast") })
		a.OnStart(func(context.Context) error { note("start 1"); return nil })
		a.OnStop(func(context.Context) error { note("stop 1"); return nil })
		a.OnStop(func(context.Context) error { note("stop 2"); return nil })
	}, true)

	// A kept-alive client.
	client := &http.Client{Transport: &http.Transport{}}
	if resp, err := client.Get(r.url + "/fast"); err != nil || resp.Close {
		t.Fatalf("before the drain: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}

	r.stop() // as SIGTERM does
	drainAt := time.Now()
	waitStatus(t, r.url+"/readyz", 503)
	if time.Since(drainAt) > 500*time.Millisecond {
		t.Fatalf("/readyz turned 503 %s after the drain began", time.Since(drainAt))
	}
	_, body := do(t, newReq(t, "GET", r.url+"/readyz", nil))
	if body != "draining\n" {
		t.Fatalf("/readyz while draining: %q", body)
	}
	// Still serving during the delay, but asking clients to reconnect.
	resp, err := client.Get(r.url + "/fast")
	if err != nil || resp.StatusCode != 200 || !resp.Close { // Connection: close
		t.Fatalf("during the drain delay: %v %v", resp, err)
	}
	resp.Body.Close()
	// A slow request started in the delay finishes after the listener
	// closed.
	slowDone := make(chan string, 1)
	go func() {
		resp, err := http.Get(r.url + "/slow")
		if err != nil {
			slowDone <- err.Error()
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		slowDone <- string(b)
	}()
	<-slowStarted
	if got := <-slowDone; got != "slow" {
		t.Fatalf("slow request across the shutdown: %q", got)
	}
	if err := <-r.done; err != nil {
		t.Fatalf("Serve after a clean drain: %v", err)
	}
	r.done <- nil // for the cleanup
	if took := time.Since(drainAt); took < 1500*time.Millisecond {
		t.Fatalf("Serve returned %s after the drain began, before DrainDelay", took)
	}
	mu.Lock()
	got := strings.Join(events, ", ")
	mu.Unlock()
	if got != "start 1, slow request done, stop 2, stop 1" {
		t.Fatalf("order: %s", got)
	}
	if _, err := http.Get(r.url + "/fast"); err == nil {
		t.Fatal("the server still accepts connections after Serve returned")
	}
}

func TestReadyzStaysFastWithAHangingCheck(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	defer close(release)
	r := serve(t, hakit.Config{}, func(a *hakit.App) {
		// One check never ends (its timeout is an hour): a probe that
		// waited for it would never be answered. Another times out.
		a.Health().Add(health.Check{Name: "never", Timeout: time.Hour, Interval: 100 * time.Millisecond,
			Func: func(context.Context) error { <-release; return nil }})
		a.Health().Add(health.Check{Name: "hangs", Timeout: 100 * time.Millisecond, Interval: 100 * time.Millisecond,
			Func: func(context.Context) error { <-release; return nil }})
	}, true)
	// No timing threshold (the machine may be busy): every probe must be
	// answered, and none can be if one waits for the check that never ends.
	client := &http.Client{Timeout: 20 * time.Second}
	for range 200 {
		resp, err := client.Get(r.url + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("/readyz = %d with hanging non-critical checks", resp.StatusCode)
		}
	}
	hatest.WaitFor(t, 10*time.Second, "the timed-out check in the verbose view", func() bool {
		_, body := do(t, newReq(t, "GET", r.url+"/readyz?verbose", nil))
		return strings.Contains(body, `"hangs:responseTime"`) && strings.Contains(body, `"status": "warn"`)
	})
}

func TestStartupFailure(t *testing.T) {
	t.Parallel()
	cfg := hakit.Config{NoSignals: true, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	app, err := hakit.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	app.OnStop(func(context.Context) error { stopped = true; return nil })
	app.OnStart(func(context.Context) error { return errors.New("cache warm-up failed") })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	err = app.Serve(context.Background(), ln)
	if err == nil || !strings.Contains(err.Error(), "cache warm-up failed") {
		t.Fatalf("Serve = %v", err)
	}
	if time.Since(t0) > 3*time.Second {
		t.Fatalf("a failed start took %s: it must not wait for the drain delay", time.Since(t0))
	}
	if !stopped {
		t.Fatal("components started before the failure were not stopped")
	}
}

func TestBadConfigListsEveryError(t *testing.T) {
	t.Parallel()
	env := map[string]string{
		"HAKIT_DRAIN_DELAY":     "soon",
		"HAKIT_MAX_BODY_BYTES":  "lots",
		"HAKIT_TRUSTED_PROXIES": "10.0.0.0/8, not-an-ip",
		"HAKIT_LOG_LEVEL":       "chatty",
	}
	_, err := hakit.ConfigFromEnv(func(k string) string { return env[k] })
	if err == nil {
		t.Fatal("bad environment accepted")
	}
	for _, want := range []string{"HAKIT_DRAIN_DELAY", "HAKIT_MAX_BODY_BYTES", "not-an-ip", "HAKIT_LOG_LEVEL"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %s:\n%v", want, err)
		}
	}
	good := map[string]string{"HAKIT_ADDR": "127.0.0.1:9999", "HAKIT_DRAIN_DELAY": "0s", "HAKIT_TRUSTED_PROXIES": "10.0.0.0/8,192.168.1.1",
		"HAKIT_DATABASE_URL_1": "postgres://a/db", "HAKIT_DATABASE_URL_2": "postgres://b/db"}
	cfg, err := hakit.ConfigFromEnv(func(k string) string { return good[k] })
	if err != nil || cfg.Addr != "127.0.0.1:9999" || cfg.DrainDelay >= 0 || len(cfg.TrustedProxies) != 2 || len(cfg.DatabaseURLs) != 2 {
		t.Fatalf("good environment: %+v, %v", cfg, err)
	}

	_, err = hakit.New(context.Background(), hakit.Config{
		Addr:           "no-port",
		TrustedOrigins: []string{"example.com"},
		Migrations:     fstest.MapFS{},
	})
	if err == nil {
		t.Fatal("bad config accepted")
	}
	for _, want := range []string{"Addr", "TrustedOrigins", "Migrations"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %s:\n%v", want, err)
		}
	}
}

func TestMigrationsBeforeReadyAndOnce(t *testing.T) {
	t.Parallel()
	hatestSkip(t)
	pg := hatest.NewPostgres(t, hatest.PostgresOptions{Replicas: 1})
	migrations := fstest.MapFS{
		"1_create.up.sql":   {Data: []byte("CREATE TABLE runs (at timestamptz DEFAULT now()); SELECT pg_sleep(1.5);")},
		"1_create.down.sql": {Data: []byte("DROP TABLE runs;")},
		"2_insert.up.sql":   {Data: []byte("INSERT INTO runs DEFAULT VALUES;")},
		"2_insert.down.sql": {Data: []byte("DELETE FROM runs;")},
	}
	cfg := hakit.Config{DatabaseURLs: pg.DSNs(), Migrations: migrations}
	route := func(a *hakit.App) {
		a.Router().Get("/runs", func(w http.ResponseWriter, r *http.Request) {
			var n int
			if err := a.DB().QueryRow(r.Context(), "SELECT count(*) FROM runs").Scan(&n); err != nil {
				http.Error(w, err.Error(), 500)
				return
			}
			fmt.Fprint(w, n)
		})
	}
	// Two instances start together.
	a := serve(t, cfg, route, false)
	b := serve(t, cfg, route, false)
	// While migrating: not ready, and app routes are refused.
	resp, body := do(t, newReq(t, "GET", a.url+"/readyz", nil))
	if resp.StatusCode != 503 || body != "starting\n" {
		t.Fatalf("/readyz while migrating: %d %q", resp.StatusCode, body)
	}
	if resp, _ := do(t, newReq(t, "GET", a.url+"/runs", nil)); resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("app route while starting: %d", resp.StatusCode)
	}
	waitStatus(t, a.url+"/readyz", 200)
	waitStatus(t, b.url+"/readyz", 200)
	for _, r := range []*running{a, b} {
		resp, body := do(t, newReq(t, "GET", r.url+"/runs", nil))
		if resp.StatusCode != 200 || body != "1" {
			t.Fatalf("runs after two instances migrated: %d %q (want 1: migrated once)", resp.StatusCode, body)
		}
	}
	conn, err := pgx.Connect(context.Background(), pg.Nodes[0].DSN())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var version int
	var dirty bool
	if err := conn.QueryRow(context.Background(), "SELECT version, dirty FROM schema_migrations").Scan(&version, &dirty); err != nil || version != 2 || dirty {
		t.Fatalf("schema_migrations: %d %v %v", version, dirty, err)
	}
}

func TestDatabaseConfigErrorsAtNew(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	_, err = hakit.New(context.Background(), hakit.Config{DatabaseURLs: []string{"postgres://u@" + dead + "/db?connect_timeout=1"},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err == nil || !strings.Contains(err.Error(), dead) {
		t.Fatalf("unreachable database: %v", err)
	}
}

// TestSignals runs the test app as a deployment does: SIGTERM drains and
// exits 0; a second SIGTERM during the drain exits 1 at once.
func TestSignals(t *testing.T) {
	t.Parallel()
	bin := hatest.Build(t, "./internal/testapp")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	p := hatest.NewProcess(t, hatest.ProcessOptions{Path: bin, Env: []string{"HAKIT_ADDR=" + addr, "HAKIT_DRAIN_DELAY=30s"}})
	waitStatus(t, "http://"+addr+"/readyz", 200)
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, "http://"+addr+"/readyz", 503)
	t0 := time.Now()
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	code, err := p.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if code != 1 || time.Since(t0) > 5*time.Second {
		t.Fatalf("after a second SIGTERM: exit %d after %s; want 1, at once", code, time.Since(t0))
	}
	if !strings.Contains(p.Output(), "forced") {
		t.Fatalf("output does not say the shutdown was forced:\n%s", p.Output())
	}
}

// The documented table names every variable ConfigFromEnv reads.
func TestConfigurationDocListsEveryVariable(t *testing.T) {
	doc, err := os.ReadFile("../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range hakit.EnvVars() {
		if !strings.Contains(string(doc), "`"+v.Name+"` | `"+v.Field+"` |") {
			t.Errorf("docs/configuration.md has no row for %s (%s)", v.Name, v.Field)
		}
	}
}
