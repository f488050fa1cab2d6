package hatest_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"hakit.dev/hatest"
)

// app is a backend whose readiness the test switches.
type app struct {
	ready atomic.Bool
	hits  atomic.Int64
	srv   *httptest.Server
}

func newApp(t *testing.T, name string) *app {
	a := &app{}
	a.ready.Store(true)
	a.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/readyz":
			if !a.ready.Load() {
				http.Error(w, "draining", http.StatusServiceUnavailable)
				return
			}
			io.WriteString(w, "ok")
		case "/fail":
			http.Error(w, "boom", http.StatusInternalServerError)
		default:
			a.hits.Add(1)
			io.WriteString(w, name)
		}
	}))
	t.Cleanup(a.srv.Close)
	return a
}

func TestHAProxyHealthChecksAndStats(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	a, b := newApp(t, "a"), newApp(t, "b")
	h := hatest.NewHAProxy(t, hatest.HAProxyOptions{
		Backends: []hatest.Backend{{Addr: a.srv.Listener.Addr().String()}, {Addr: b.srv.Listener.Addr().String()}},
		Inter:    200 * time.Millisecond,
	})
	for _, name := range []string{"app0", "app1"} {
		if err := h.WaitServerStatus(ctx, name, "UP"); err != nil {
			t.Fatal(err)
		}
	}

	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get(h.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}

	// app0's /readyz turns 503: HAProxy marks it DOWN and sends
	// everything to app1.
	a.ready.Store(false)
	if err := h.WaitServerStatus(ctx, "app0", "DOWN"); err != nil {
		t.Fatal(err)
	}
	for range 10 {
		if code, body := get("/"); code != 200 || body != "b" {
			t.Fatalf("with app0 down: %d %q; want 200 from b", code, body)
		}
	}
	// Back to 200: UP again after Rise checks.
	a.ready.Store(true)
	if err := h.WaitServerStatus(ctx, "app0", "UP"); err != nil {
		t.Fatal(err)
	}
	before := a.hits.Load()
	for range 10 {
		get("/")
	}
	if a.hits.Load() == before {
		t.Fatal("app0 got no requests after coming back UP")
	}

	// 5xx responses are counted.
	for range 3 {
		if code, _ := get("/fail"); code != 500 {
			t.Fatalf("/fail = %d", code)
		}
	}
	// HAProxy counts a request when its stream ends, a moment after the
	// client has the response: wait for the counters.
	var fe hatest.ServerStats
	var stats []hatest.ServerStats
	deadline := time.Now().Add(10 * time.Second)
	for {
		var err error
		if stats, err = h.Stats(ctx); err != nil {
			t.Fatal(err)
		}
		for _, s := range stats {
			if s.Name == "FRONTEND" {
				fe = s
			}
		}
		if fe.Responses5xx >= 3 && fe.Responses2xx >= 20 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if fe.Responses5xx != 3 {
		t.Fatalf("frontend 5xx = %d, want 3 (stats %+v)", fe.Responses5xx, stats)
	}
	if fe.Responses2xx < 20 {
		t.Fatalf("frontend 2xx = %d, want >= 20", fe.Responses2xx)
	}

	// Runtime API: drain takes a server out of rotation.
	if err := h.SetServerState(ctx, "app1", "maint"); err != nil {
		t.Fatal(err)
	}
	if err := h.WaitServerStatus(ctx, "app1", "MAINT"); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		if code, body := get("/"); code != 200 || body != "a" {
			t.Fatalf("with app1 in maintenance: %d %q; want 200 from a", code, body)
		}
	}
	if err := h.SetServerState(ctx, "app1", "bogus"); err == nil {
		t.Fatal("a bogus state was accepted")
	}
}

func TestHAProxyBadOptions(t *testing.T) {
	t.Parallel()
	if _, err := hatest.StartHAProxy(context.Background(), hatest.HAProxyOptions{}); err == nil {
		t.Fatal("no backends accepted")
	}
	if _, err := hatest.StartHAProxy(context.Background(), hatest.HAProxyOptions{Backends: []hatest.Backend{{Addr: "nope"}}}); err == nil {
		t.Fatal("bad backend address accepted")
	}
}
