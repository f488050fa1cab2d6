package hakit_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"hakit.dev/hakit"
	"hakit.dev/hatest"
	"hakit.dev/session"
)

// TestSessionCarriesReadYourWrites: a user writes on instance A; their next
// page, served by instance B from a replica 700ms behind (under MaxLag, so it serves), shows the write,
// because the session carried the commit position.
func TestSessionCarriesReadYourWrites(t *testing.T) {
	t.Parallel()
	hatestSkip(t)
	ctx := context.Background()
	pg := hatest.NewPostgres(t, hatest.PostgresOptions{Replicas: 1})
	rd := hatest.NewRedis(t, hatest.RedisOptions{})
	rdb := redis.NewClient(&redis.Options{Addr: rd.Addr()})
	defer rdb.Close()
	if err := pg.Nodes[0].Exec(ctx, "CREATE TABLE orders (id bigint PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	if err := pg.WaitReplicated(ctx); err != nil {
		t.Fatal(err)
	}
	if err := pg.Nodes[1].SetApplyDelay(ctx, 700*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	setup := func(a *hakit.App) {
		m, err := session.New(session.Config{Store: session.NewRedisStore(rdb, session.RedisOptions{WaitReplicas: -1}),
			Insecure: true, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			t.Fatal(err)
		}
		a.UseSessions(m)
		a.Router().Post("/orders/{id}", func(w http.ResponseWriter, r *http.Request) {
			id, _ := strconv.Atoi(r.PathValue("id"))
			if _, err := a.DB().Exec(r.Context(), "INSERT INTO orders VALUES ($1)", id); err != nil {
				http.Error(w, err.Error(), 500)
				return
			}
			io.WriteString(w, "placed")
		})
		a.Router().Get("/orders/{id}", func(w http.ResponseWriter, r *http.Request) {
			var n int
			if err := a.DB().QueryRow(r.Context(), "SELECT count(*) FROM orders WHERE id = $1", r.PathValue("id")).Scan(&n); err != nil {
				http.Error(w, err.Error(), 500)
				return
			}
			fmt.Fprint(w, n)
		})
		// Streaming handlers: one writes, then flushes, then streams; the
		// other flushes first and writes while it streams.
		a.Router().Post("/stream/{id}", func(w http.ResponseWriter, r *http.Request) {
			if _, err := a.DB().Exec(r.Context(), "INSERT INTO orders VALUES ($1)", r.PathValue("id")); err != nil {
				http.Error(w, err.Error(), 500)
				return
			}
			if err := http.NewResponseController(w).Flush(); err != nil {
				return
			}
			io.WriteString(w, "placed")
		})
		a.Router().Post("/stream-late/{id}", func(w http.ResponseWriter, r *http.Request) {
			if err := http.NewResponseController(w).Flush(); err != nil {
				return
			}
			io.WriteString(w, "placing… ")
			if _, err := a.DB().Exec(r.Context(), "INSERT INTO orders VALUES ($1)", r.PathValue("id")); err != nil {
				io.WriteString(w, err.Error())
				return
			}
			io.WriteString(w, "placed")
		})
	}
	a := serve(t, hakit.Config{DatabaseURLs: pg.DSNs()}, setup, true)
	b := serve(t, hakit.Config{DatabaseURLs: pg.DSNs()}, setup, true)

	jar, _ := cookiejar.New(nil)
	user := &http.Client{Jar: jar}
	stranger := &http.Client{}
	get := func(c *http.Client, method, url string) string {
		t.Helper()
		req, _ := http.NewRequest(method, url, nil)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("%s %s: %d %s", method, url, resp.StatusCode, body)
		}
		return string(body)
	}
	misses := 0
	for i := range 10 {
		get(user, "POST", fmt.Sprintf("%s/orders/%d", a.url, i))
		if got := get(user, "GET", fmt.Sprintf("%s/orders/%d", b.url, i)); got != "1" {
			t.Fatalf("order %d: the user's next page on the other instance shows %s orders", i, got)
		}
		// Someone without the user's session reads the lagging replica.
		get(user, "POST", fmt.Sprintf("%s/orders/%d", a.url, 100+i))
		if get(stranger, "GET", fmt.Sprintf("%s/orders/%d", b.url, 100+i)) != "1" {
			misses++
		}
	}
	if misses == 0 {
		t.Fatal("reads without the session never missed: the replica does not lag, the test proves nothing")
	}

	// A streaming handler that flushes the headers still stores the
	// position: for a new session (the cookie goes out with the flush) and
	// for a write made after the flush (saved when the handler returns).
	for i := range 5 {
		jar, _ := cookiejar.New(nil)
		fresh := &http.Client{Jar: jar}
		get(fresh, "POST", fmt.Sprintf("%s/stream/%d", a.url, 200+i))
		if got := get(fresh, "GET", fmt.Sprintf("%s/orders/%d", b.url, 200+i)); got != "1" {
			t.Fatalf("order %d, placed by a streaming handler in a new session: the next page shows %s orders", 200+i, got)
		}
		get(user, "POST", fmt.Sprintf("%s/stream-late/%d", a.url, 300+i))
		if got := get(user, "GET", fmt.Sprintf("%s/orders/%d", b.url, 300+i)); got != "1" {
			t.Fatalf("order %d, written after the flush: the next page shows %s orders", 300+i, got)
		}
	}
}

// stackCtxKey carries the request's context as the stack made it, with the
// app's RequestTimeout, past hakit.Timeout.
type stackCtxKey struct{}

// TestLongRequestKeepsItsSession: a route without a timeout
// (hakit.Timeout(-1), as uploads use) runs past the app's RequestTimeout;
// its handler writes to the database (so the read-your-writes position
// goes into the session) and puts a key. The response is the handler's
// 200, not a 503 for a save attempted on the expired request context, and
// the session keeps both.
func TestLongRequestKeepsItsSession(t *testing.T) {
	t.Parallel()
	hatestSkip(t)
	ctx := context.Background()
	pg := hatest.NewPostgres(t, hatest.PostgresOptions{})
	rd := hatest.NewRedis(t, hatest.RedisOptions{})
	rdb := redis.NewClient(&redis.Options{Addr: rd.Addr()})
	defer rdb.Close()
	if err := pg.Nodes[0].Exec(ctx, "CREATE TABLE images (id bigint PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	const requestTimeout = 200 * time.Millisecond
	r := serve(t, hakit.Config{DatabaseURLs: pg.DSNs(), RequestTimeout: requestTimeout}, func(a *hakit.App) {
		m, err := session.New(session.Config{Store: session.NewRedisStore(rdb, session.RedisOptions{WaitReplicas: -1}),
			Insecure: true, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			t.Fatal(err)
		}
		a.UseSessions(m)
		keepStackCtx := func(next http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), stackCtxKey{}, r.Context())))
			})
		}
		a.Router().With(keepStackCtx, hakit.Timeout(-1)).Post("/admin/images/{id}", func(w http.ResponseWriter, r *http.Request) {
			// The upload lasts until the app's RequestTimeout has passed.
			stackCtx := r.Context().Value(stackCtxKey{}).(context.Context)
			<-stackCtx.Done()
			if _, err := a.DB().Exec(r.Context(), "INSERT INTO images VALUES ($1)", r.PathValue("id")); err != nil {
				http.Error(w, err.Error(), 500)
				return
			}
			m.Put(r.Context(), "last_image", r.PathValue("id"))
			io.WriteString(w, "stored")
		})
		// Reading the session back is not under test: its own timeout,
		// so a slow store on a busy machine does not answer 503.
		a.Router().With(hakit.Timeout(30*time.Second)).Get("/session", func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "%s|%t", m.GetString(r.Context(), "last_image"), m.GetString(r.Context(), "_hakit_db_lsn") != "")
		})
	}, true)

	jar, _ := cookiejar.New(nil)
	admin := &http.Client{Jar: jar, Timeout: 30 * time.Second}
	call := func(method, url string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, url, nil)
		resp, err := admin.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	for i, id := range []string{"1", "2"} { // a new session, then an existing one
		if code, body := call("POST", r.url+"/admin/images/"+id); code != 200 || body != "stored" {
			t.Fatalf("upload %d, longer than RequestTimeout (%s) on a Timeout(-1) route: %d %q, want 200 \"stored\"", i+1, requestTimeout, code, body)
		}
		if code, body := call("GET", r.url+"/session"); code != 200 || body != id+"|true" {
			t.Fatalf("after upload %d the session reads %d %q, want %q (the image and a read-your-writes position)", i+1, code, body, id+"|true")
		}
	}
}
