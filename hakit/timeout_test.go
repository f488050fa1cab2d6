package hakit_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"

	"hakit.dev/hakit"
)

type ctxKey struct{}

// A route's Timeout replaces the app's RequestTimeout: longer, shorter or
// none, also when middleware before it already waited on the context; the
// request keeps its values, and the client going away still ends it.
func TestTimeoutPerRoute(t *testing.T) {
	t.Parallel()
	gone := make(chan error, 1)
	r := serve(t, hakit.Config{RequestTimeout: 200 * time.Millisecond}, func(a *hakit.App) {
		// waitDone answers how long the context lasted (up to 2s) and why
		// it ended, with the values the handler sees.
		waitDone := func(w http.ResponseWriter, r *http.Request) {
			t0 := time.Now()
			ctx := r.Context()
			_, hasDeadline := ctx.Deadline()
			select {
			case <-ctx.Done():
			case <-time.After(2 * time.Second):
			}
			fmt.Fprintf(w, "%d %v|deadline=%v id=%t value=%v param=%s", time.Since(t0).Milliseconds(), ctx.Err(), hasDeadline,
				hakit.RequestID(ctx) != "", ctx.Value(ctxKey{}), chi.URLParam(r, "p"))
		}
		a.Router().Use(func(next http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				ctx := context.WithValue(r.Context(), ctxKey{}, "kept")
				if r.URL.Query().Has("wait") {
					_ = ctx.Done() // as a session store's query does
				}
				next.ServeHTTP(w, r.WithContext(ctx))
			})
		})
		a.Router().Get("/default/{p}", waitDone)
		a.Router().With(hakit.Timeout(time.Second)).Get("/longer/{p}", waitDone)
		a.Router().With(hakit.Timeout(50*time.Millisecond)).Get("/shorter/{p}", waitDone)
		a.Router().With(hakit.Timeout(-1)).Get("/none/{p}", waitDone)
		a.Router().With(hakit.Timeout(-1)).Get("/gone", func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-r.Context().Done():
				gone <- r.Context().Err()
			case <-time.After(10 * time.Second):
				gone <- errors.New("still running 10s later")
			}
		})
	}, true)
	const all = "deadline=true id=true value=kept param=x"
	for _, c := range []struct {
		path   string
		lasted time.Duration
		err    string
		rest   string
	}{
		{"/default/x", 200 * time.Millisecond, "context deadline exceeded", all},
		{"/longer/x", time.Second, "context deadline exceeded", all},
		{"/longer/x?wait", time.Second, "context deadline exceeded", all},
		{"/shorter/x?wait", 50 * time.Millisecond, "context deadline exceeded", all},
		{"/none/x?wait", 2 * time.Second, "<nil>", "deadline=false id=true value=kept param=x"},
	} {
		_, body := do(t, newReq(t, "GET", r.url+c.path, nil))
		var ms int64
		var why, rest string
		if i := strings.IndexByte(body, '|'); i > 0 {
			rest = body[i+1:]
			fmt.Sscan(body[:i], &ms)
			why = strings.TrimSpace(strings.TrimLeft(body[:i], "0123456789"))
		}
		// The context may end late on a busy machine, never early.
		lasted := time.Duration(ms) * time.Millisecond
		if lasted < c.lasted-10*time.Millisecond || lasted > c.lasted+time.Second || why != c.err || rest != c.rest {
			t.Errorf("GET %s: %q; want its context to end after %s with %s, and %s", c.path, body, c.lasted, c.err, c.rest)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	req := newReq(t, "GET", r.url+"/gone", nil).WithContext(ctx)
	if _, err := http.DefaultClient.Do(req); err == nil {
		t.Fatal("the client's request did not time out")
	}
	if err := <-gone; !errors.Is(err, context.Canceled) {
		t.Errorf("a route without a timeout, client gone: %v, want context.Canceled", err)
	}
}
