package health_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"hakit.dev/health"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func get(t *testing.T, h http.Handler, target string, hdr ...string) (int, string, http.Header) {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, target, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Code, rec.Body.String(), rec.Header()
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestStates(t *testing.T) {
	c := health.New(health.Options{Logger: quiet()})
	for _, tc := range []struct {
		set  func()
		code int
		body string
	}{
		{func() {}, 503, "starting\n"},
		{c.SetReady, 200, "ok\n"},
		{c.SetDraining, 503, "draining\n"},
		{c.SetReady, 503, "draining\n"}, // no way back from draining
	} {
		tc.set()
		if code, body, hdr := get(t, c.Readyz(), "/readyz"); code != tc.code || body != tc.body || hdr.Get("Cache-Control") != "no-store" {
			t.Fatalf("state %s: /readyz = %d %q %v, want %d %q", c.State(), code, body, hdr, tc.code, tc.body)
		}
		if code, body, _ := get(t, c.Livez(), "/livez"); code != 200 || body != "ok\n" {
			t.Fatalf("state %s: /livez = %d %q", c.State(), code, body)
		}
	}
}

func TestHangingCheckDoesNotHoldReadyz(t *testing.T) {
	c := health.New(health.Options{Logger: quiet()})
	release := make(chan struct{})
	defer close(release)
	c.Add(health.Check{Name: "hangs", Interval: 50 * time.Millisecond, Timeout: 50 * time.Millisecond, Func: func(ctx context.Context) error {
		<-release // ignores ctx on purpose
		return nil
	}})
	var ok atomic.Bool
	ok.Store(true)
	c.Add(health.Check{Name: "db", Interval: 20 * time.Millisecond, Func: func(ctx context.Context) error {
		if ok.Load() {
			return nil
		}
		return errors.New("connection refused")
	}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- c.Run(ctx) }()
	defer func() { cancel(); <-done }()
	c.SetReady()

	waitFor(t, "the hanging check to be reported", func() bool {
		for _, r := range c.Results() {
			if r.Name == "hangs" && r.Status == "fail" {
				return true
			}
		}
		return false
	})
	// Non-critical checks, hanging or failing, leave the instance ready,
	// and the probe answers at once.
	ok.Store(false)
	waitFor(t, "the db check to fail", func() bool {
		for _, r := range c.Results() {
			if r.Name == "db" && r.Status == "fail" {
				return true
			}
		}
		return false
	})
	start := time.Now()
	for range 1000 {
		if code, _, _ := get(t, c.Readyz(), "/readyz"); code != 200 {
			t.Fatalf("/readyz = %d with only non-critical checks failing", code)
		}
	}
	if per := time.Since(start) / 1000; per > time.Millisecond {
		t.Fatalf("/readyz took %s per request with a hanging check", per)
	}

	// Verbose: the IETF format, warn, both checks with their errors.
	code, body, hdr := get(t, c.Readyz(), "/readyz?verbose")
	if code != 200 || hdr.Get("Content-Type") != "application/health+json" {
		t.Fatalf("verbose: %d %s", code, hdr.Get("Content-Type"))
	}
	var resp struct {
		Status string `json:"status"`
		Checks map[string][]struct {
			Status       string  `json:"status"`
			Output       string  `json:"output"`
			ObservedUnit string  `json:"observedUnit"`
			Value        float64 `json:"observedValue"`
			Time         string  `json:"time"`
		} `json:"checks"`
	}
	if err := json.Unmarshal([]byte(body), &resp); err != nil {
		t.Fatalf("%v: %s", err, body)
	}
	if resp.Status != "warn" || resp.Checks["db:responseTime"][0].Output != "connection refused" ||
		!strings.Contains(resp.Checks["hangs:responseTime"][0].Output, "timed out") && !strings.Contains(resp.Checks["hangs:responseTime"][0].Output, "still running") {
		t.Fatalf("verbose body:\n%s", body)
	}
	if _, err := time.Parse(time.RFC3339Nano, resp.Checks["db:responseTime"][0].Time); err != nil {
		t.Fatalf("check time: %v", err)
	}
	// The Accept header asks for the same.
	if _, body2, _ := get(t, c.Readyz(), "/readyz", "Accept", "application/health+json"); !strings.Contains(body2, `"status": "warn"`) {
		t.Fatalf("Accept: application/health+json gave %s", body2)
	}
}

func TestCriticalCheck(t *testing.T) {
	c := health.New(health.Options{Logger: quiet()})
	var fail atomic.Bool
	c.Add(health.Check{Name: "disk", Critical: true, Interval: 10 * time.Millisecond, Func: func(ctx context.Context) error {
		if fail.Load() {
			return errors.New("disk full")
		}
		return nil
	}})
	c.SetReady()
	// Not run yet: a critical check counts as failing.
	if code, body, _ := get(t, c.Readyz(), "/readyz"); code != 503 || body != "failing: disk\n" {
		t.Fatalf("before the first run: %d %q", code, body)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- c.Run(ctx) }()
	defer func() { cancel(); <-done }()
	waitFor(t, "ready", c.Ready)
	fail.Store(true)
	waitFor(t, "not ready", func() bool { return !c.Ready() })
	if code, body, _ := get(t, c.Readyz(), "/readyz"); code != 503 || body != "failing: disk\n" {
		t.Fatalf("critical check failing: %d %q", code, body)
	}
	if code, body, _ := get(t, c.Readyz(), "/readyz?verbose"); code != 503 || !strings.Contains(body, `"status": "fail"`) {
		t.Fatalf("verbose with a critical failure: %d %s", code, body)
	}
	fail.Store(false)
	waitFor(t, "ready again", c.Ready)
}

func TestBadChecks(t *testing.T) {
	c := health.New(health.Options{})
	if err := c.TryAdd(health.Check{Name: "x"}); err == nil {
		t.Error("a check without Func was accepted")
	}
	c.Add(health.Check{Name: "x", Func: func(context.Context) error { return nil }})
	if err := c.TryAdd(health.Check{Name: "x", Func: func(context.Context) error { return nil }}); err == nil {
		t.Error("a duplicate name was accepted")
	}
	defer func() {
		if recover() == nil {
			t.Error("Add of a bad check did not panic")
		}
	}()
	c.Add(health.Check{})
}

func TestPanickingCheckIsAFailure(t *testing.T) {
	c := health.New(health.Options{Logger: quiet()})
	c.Add(health.Check{Name: "boom", Interval: 10 * time.Millisecond, Func: func(context.Context) error { panic("oops") }})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- c.Run(ctx) }()
	defer func() { cancel(); <-done }()
	waitFor(t, "the panic to be reported", func() bool {
		r := c.Results()[0]
		return r.Status == "fail" && strings.Contains(r.Err.Error(), "oops")
	})
}
