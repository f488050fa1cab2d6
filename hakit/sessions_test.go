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
// page, served by instance B from a replica 300ms behind, shows the write,
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
	if err := pg.Nodes[1].SetApplyDelay(ctx, 300*time.Millisecond); err != nil {
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
