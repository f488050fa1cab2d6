package hakit_test

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"

	"hakit.dev/hakit"
)

// The access log and ClientIP agree on the client's address for every
// form RemoteAddr takes, with and without trusted proxies.
func TestStackClientAddress(t *testing.T) {
	t.Parallel()
	cases := []struct {
		remote, xff string
		trusted     bool
		want        string
	}{
		{remote: "127.0.0.1:5000", want: "127.0.0.1"},
		{remote: "[::1]:5000", want: "::1"},
		{remote: "[::ffff:10.0.0.7]:5000", want: "10.0.0.7"},
		{remote: "[fe80::1%eth0]:5000", want: "fe80::1%eth0"},
		{remote: "127.0.0.1:5000", xff: "1.2.3.4", want: "127.0.0.1"}, // untrusted: ignored
		{remote: "127.0.0.1:5000", xff: "1.2.3.4", trusted: true, want: "1.2.3.4"},
		{remote: "[::ffff:127.0.0.1]:5000", xff: "2001:db8::1", trusted: true, want: "2001:db8::1"},
		{remote: "127.0.0.1:5000", trusted: true, want: "127.0.0.1"},
	}
	for _, c := range cases {
		var logs strings.Builder
		cfg := hakit.StackConfig{Logger: slog.New(slog.NewJSONHandler(&logs, nil))}
		if c.trusted {
			cfg.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
		}
		mw, err := hakit.Stack(cfg)
		if err != nil {
			t.Fatal(err)
		}
		var seen netip.Addr
		h := mw(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			seen = hakit.ClientIP(r.Context())
			_, _ = io.WriteString(w, "ok")
		}))
		req := httptest.NewRequest("GET", "/", nil)
		req.RemoteAddr = c.remote
		if c.xff != "" {
			req.Header.Set("X-Forwarded-For", c.xff)
		}
		h.ServeHTTP(httptest.NewRecorder(), req)
		var line struct{ Client string }
		if err := json.Unmarshal([]byte(logs.String()), &line); err != nil {
			t.Fatalf("%+v: access log %q: %v", c, logs.String(), err)
		}
		if line.Client != c.want || seen.String() != c.want {
			t.Errorf("%+v: logged %q, ClientIP %q", c, line.Client, seen)
		}
	}
}

// Request IDs are unique, and stay as they were after the request, also
// when kept by another goroutine.
func TestStackRequestIDs(t *testing.T) {
	t.Parallel()
	mw, err := hakit.Stack(hakit.StackConfig{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var ids []string
	h := mw(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := hakit.RequestID(r.Context())
		mu.Lock()
		ids = append(ids, id, strings.Clone(id))
		mu.Unlock()
	}))
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 500 {
				h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil))
			}
		})
	}
	wg.Wait()
	seen := map[string]bool{}
	for i := 0; i < len(ids); i += 2 {
		if ids[i] != ids[i+1] || ids[i] == "" {
			t.Fatalf("request id changed after its request: %q, was %q", ids[i], ids[i+1])
		}
		if seen[ids[i]] {
			t.Fatalf("request id %q given twice", ids[i])
		}
		seen[ids[i]] = true
	}
}

// BenchmarkStack measures the stack's own cost in-process, against bare
// chi in BenchmarkBareChi (go test -bench . -run ^$ ./hakit).
func BenchmarkStack(b *testing.B) {
	mw, err := hakit.Stack(hakit.StackConfig{Logger: slog.New(slog.NewJSONHandler(io.Discard, nil)),
		Registerer: prometheus.NewRegistry(), RequestTimeout: 30 * time.Second, MaxBodyBytes: 1 << 20})
	if err != nil {
		b.Fatal(err)
	}
	benchHello(b, mw)
}

// BenchmarkBareChi is BenchmarkStack's baseline.
func BenchmarkBareChi(b *testing.B) { benchHello(b, func(h http.Handler) http.Handler { return h }) }

func benchHello(b *testing.B, mw func(http.Handler) http.Handler) {
	r := chi.NewRouter()
	r.Get("/hello", func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "hello, world\n") })
	h := mw(r)
	req := httptest.NewRequest("GET", "/hello", nil)
	b.ReportAllocs()
	cpu0 := processCPU()
	for b.Loop() {
		h.ServeHTTP(httptest.NewRecorder(), req)
	}
	// CPU time per request, steadier than ns/op on a shared machine,
	// where ns/op also counts the time other processes had the CPU.
	b.ReportMetric(float64((processCPU()-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/op")
}

// processCPU returns the CPU time this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// A route's BodyLimit applies also when the app-wide limit is none.
func TestBodyLimitPerRouteWithoutAGlobalLimit(t *testing.T) {
	t.Parallel()
	r := serve(t, hakit.Config{MaxBodyBytes: -1}, func(a *hakit.App) {
		read := func(w http.ResponseWriter, r *http.Request) {
			n, err := io.Copy(io.Discard, r.Body)
			if hakit.IsBodyTooLarge(err) {
				http.Error(w, "too large", http.StatusRequestEntityTooLarge)
				return
			}
			fmt.Fprint(w, n)
		}
		a.Router().With(hakit.BodyLimit(16)).Post("/small", read)
		a.Router().Post("/any", read)
		a.Router().Post("/set", func(w http.ResponseWriter, r *http.Request) {
			hakit.SetBodyLimit(r, 8)
			read(w, r)
		})
	}, true)
	for _, c := range []struct {
		path string
		n    int
		want int
	}{{"/small", 16, 200}, {"/small", 17, 413}, {"/any", 3 << 20, 200}, {"/set", 8, 200}, {"/set", 9, 413}} {
		resp, body := do(t, newReq(t, "POST", r.url+c.path, strings.NewReader(strings.Repeat("x", c.n))))
		if resp.StatusCode != c.want {
			t.Errorf("POST %s with %d bytes: %d %q, want %d", c.path, c.n, resp.StatusCode, body, c.want)
		}
	}
}

// A panic after the response started cannot turn into a 500 any more: the
// stack aborts the response (http.ErrAbortHandler), so the client sees a
// broken response, never a truncated 200 that ends cleanly.
func TestPanicAfterTheResponseStartedAborts(t *testing.T) {
	t.Parallel()
	r := serve(t, hakit.Config{}, func(a *hakit.App) {
		a.Router().Get("/half", func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "first half\n")
			http.NewResponseController(w).Flush()
			panic("bug halfway")
		})
	}, true)
	resp, err := http.Get(r.url + "/half")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil {
		t.Fatalf("a panic after the response started: status %d, body %q read cleanly; want an aborted response", resp.StatusCode, b)
	}
	if logs := r.logs.String(); !strings.Contains(logs, "bug halfway") || !strings.Contains(logs, "status=500") {
		t.Errorf("the panic is not logged, or the request not accounted as a 500:\n%s", logs)
	}
	// The server lives on.
	if resp, _ := do(t, newReq(t, "GET", r.url+"/readyz", nil)); resp.StatusCode != 200 {
		t.Errorf("after the panic: /readyz %d", resp.StatusCode)
	}
}

// An error page that panics after it started its response cuts the
// response, and the request is still logged as a 500 and counted: the
// in-flight gauge goes back to 0.
func TestErrorPagePanicsHalfway(t *testing.T) {
	t.Parallel()
	page := func(w http.ResponseWriter, r *http.Request, e *hakit.HTTPError) {
		w.WriteHeader(e.Status)
		io.WriteString(w, "the error page begins")
		http.NewResponseController(w).Flush()
		panic("error page bug")
	}
	r := serve(t, hakit.Config{}, func(a *hakit.App) {
		a.SetErrorPage(page)
		a.Router().Get("/boom", func(w http.ResponseWriter, r *http.Request) { panic("handler bug") })
	}, true)
	resp, err := http.Get(r.url + "/boom")
	if err == nil {
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err == nil {
			t.Fatalf("an error page that panics halfway: status %d, body %q read cleanly; want an aborted response", resp.StatusCode, b)
		}
	}
	logs := r.logs.String()
	if !strings.Contains(logs, "error page bug") || !strings.Contains(logs, "path=/boom status=500") {
		t.Errorf("the request is not logged as a 500:\n%s", logs)
	}
	_, metrics := do(t, newReq(t, "GET", r.url+"/metrics", nil))
	if !strings.Contains(metrics, "hakit_http_requests_in_flight 0") ||
		!strings.Contains(metrics, `hakit_http_request_duration_seconds_count{code="500",method="GET",route="/boom"} 1`) {
		t.Errorf("the request is not counted, or still in flight:\n%s", grep(metrics, "hakit_http_request"))
	}
}

// HAKIT_MAX_HEADER_BYTES bounds the request header: larger ones get 431.
func TestMaxHeaderBytes(t *testing.T) {
	t.Parallel()
	cfg, err := hakit.ConfigFromEnv(envOf(map[string]string{"HAKIT_MAX_HEADER_BYTES": "16384"}))
	if err != nil {
		t.Fatal(err)
	}
	r := serve(t, cfg, func(a *hakit.App) {
		a.Router().Get("/", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	}, true)
	for _, c := range []struct{ size, want int }{{8 << 10, 200}, {64 << 10, 431}} {
		req := newReq(t, "GET", r.url+"/", nil)
		req.Header.Set("X-Big", strings.Repeat("b", c.size))
		if resp, _ := do(t, req); resp.StatusCode != c.want {
			t.Errorf("a %d-byte header: %d, want %d", c.size, resp.StatusCode, c.want)
		}
	}
}
