package hakit_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"hakit.dev/hakit"
	"hakit.dev/hatest"
	"hakit.dev/health"
)

// With an admin listener, /metrics and verbose readiness (check names,
// hosts, error strings) are served there only; the public listener keeps
// plain /livez and /readyz for the load balancer.
func TestAdminListener(t *testing.T) {
	t.Parallel()
	admin := freeAddr(t)
	cfg, err := hakit.ConfigFromEnv(envOf(map[string]string{"HAKIT_ADMIN_ADDR": admin}))
	if err != nil {
		t.Fatal(err)
	}
	r := serve(t, cfg, func(a *hakit.App) {
		a.Health().Add(health.Check{Name: "secret-db", Func: func(context.Context) error {
			return errors.New("dial tcp 10.1.2.3:5432: connection refused")
		}})
	}, true)
	adminURL := "http://" + admin
	waitStatus(t, adminURL+"/livez", 200)

	// Public: plain probes, no metrics, no details, however asked.
	for _, path := range []string{"/livez", "/readyz"} {
		if resp, _ := do(t, newReq(t, "GET", r.url+path, nil)); resp.StatusCode != 200 {
			t.Errorf("public %s: %d", path, resp.StatusCode)
		}
	}
	if resp, body := do(t, newReq(t, "GET", r.url+"/metrics", nil)); resp.StatusCode != 404 || strings.Contains(body, "go_goroutines") {
		t.Errorf("public /metrics: %d %.80q", resp.StatusCode, body)
	}
	verbose := newReq(t, "GET", r.url+"/readyz?verbose", nil)
	accept := newReq(t, "GET", r.url+"/readyz", nil)
	accept.Header.Set("Accept", "application/health+json")
	for _, req := range []*http.Request{verbose, accept} {
		resp, body := do(t, req)
		if resp.StatusCode != 200 || body != "ok\n" || strings.Contains(body, "10.1.2.3") {
			t.Errorf("public verbose readiness (%s %s): %d %q", req.URL, req.Header.Get("Accept"), resp.StatusCode, body)
		}
	}

	// Admin: all of it.
	if resp, body := do(t, newReq(t, "GET", adminURL+"/metrics", nil)); resp.StatusCode != 200 || !strings.Contains(body, "go_goroutines") {
		t.Errorf("admin /metrics: %d %.80q", resp.StatusCode, body)
	}
	hatest.WaitFor(t, 10*time.Second, "the failing check in the admin's verbose /readyz", func() bool {
		_, body := do(t, newReq(t, "GET", adminURL+"/readyz?verbose", nil))
		return strings.Contains(body, "10.1.2.3") && strings.Contains(body, "secret-db")
	})
	if resp, _ := do(t, newReq(t, "GET", adminURL+"/readyz", nil)); resp.StatusCode != 200 {
		t.Errorf("admin /readyz: %d", resp.StatusCode)
	}
	if resp, _ := do(t, newReq(t, "GET", adminURL+"/anything", nil)); resp.StatusCode != 404 {
		t.Errorf("admin /anything: %d, want 404", resp.StatusCode)
	}
}
