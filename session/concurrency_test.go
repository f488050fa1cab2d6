package session_test

import (
	"context"
	"encoding/gob"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"hakit.dev/hatest"
	"hakit.dev/session"
)

// profile is a struct with a map, as apps keep in sessions.
type profile struct {
	Name string
	Tags map[string]bool
}

// The value shapes real apps keep in a session; gob needs them registered.
func registerShapes() {
	gob.Register(map[string]int{})
	gob.Register(map[string]map[string]int{})
	gob.Register(profile{})
}

// storeKind starts a real store for a test.
type storeKind struct {
	name  string
	start func(t *testing.T) session.Store
}

var storeKinds = []storeKind{
	{"redis", func(t *testing.T) session.Store {
		rd := hatest.NewRedis(t, hatest.RedisOptions{})
		rdb := redis.NewClient(&redis.Options{Addr: rd.Addr(), PoolSize: 64})
		t.Cleanup(func() { rdb.Close() })
		return redisStore(t, rdb)
	}},
	{"postgres", func(t *testing.T) session.Store {
		ctx := context.Background()
		pg := hatest.NewPostgres(t, hatest.PostgresOptions{})
		pool, err := pgxpoolNew(ctx, pg.Nodes[0].DSN())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(pool.Close)
		s := session.NewPostgresStore(pool.primary, session.PostgresOptions{})
		if err := s.CreateTable(ctx); err != nil {
			t.Fatal(err)
		}
		return s
	}},
}

// cartServer serves a shop's session use: POST /add?i= adds item i to the
// cart (a map), to the profile's tags (a struct with a map) and to a nested
// map; GET /cart only reads them.
func cartServer(t *testing.T, m *session.Manager) *instance {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /add", func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		i := r.URL.Query().Get("i")
		cart, _ := m.Get(ctx, "cart").(map[string]int)
		if cart == nil {
			cart = map[string]int{}
		}
		cart["sku"+i]++
		m.Put(ctx, "cart", cart)
		p, _ := m.Get(ctx, "profile").(profile)
		if p.Tags == nil {
			p = profile{Name: "ann", Tags: map[string]bool{}}
		}
		p.Tags["t"+i] = true
		m.Put(ctx, "profile", p)
		nested, _ := m.Get(ctx, "nested").(map[string]map[string]int)
		if nested == nil {
			nested = map[string]map[string]int{}
		}
		n, _ := strconv.Atoi(i)
		g := "g" + strconv.Itoa(n%5)
		if nested[g] == nil {
			nested[g] = map[string]int{}
		}
		nested[g][i] = n
		m.Put(ctx, "nested", nested)
		io.WriteString(w, "ok")
	})
	mux.HandleFunc("GET /cart", func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		cart, _ := m.Get(ctx, "cart").(map[string]int)
		p, _ := m.Get(ctx, "profile").(profile)
		nested, _ := m.Get(ctx, "nested").(map[string]map[string]int)
		time.Sleep(3 * time.Millisecond) // a page takes a moment to render: requests overlap
		items := 0
		for _, g := range nested {
			items += len(g)
		}
		fmt.Fprintf(w, "%d %d %d", len(cart), len(p.Tags), items)
	})
	in := &instance{srv: httptest.NewServer(m.LoadAndSave(mux))}
	t.Cleanup(in.srv.Close)
	return in
}

// TestMapValuesNotLostToReaders: 200 cart updates, made one after the
// other, while 8 other requests of the same session only read the cart
// (a browser's other tabs and fetches). No update may be lost: a request
// that only read a map must not write its stale copy back.
func TestMapValuesNotLostToReaders(t *testing.T) {
	t.Parallel()
	registerShapes()
	for _, kind := range storeKinds {
		t.Run(kind.name, func(t *testing.T) {
			t.Parallel()
			m := newManager(t, kind.start(t), nil)
			in := cartServer(t, m)
			u := newUser(t)
			u.must("POST", in, "/add?i=first")
			const updates = 200
			reads := updateWhileReading(u, in, "/cart", "/add", updates)
			var cart, tags, nested int
			if _, err := fmt.Sscanf(u.must("GET", in, "/cart"), "%d %d %d", &cart, &tags, &nested); err != nil {
				t.Fatal(err)
			}
			lostCart, lostTags, lostNested := updates+1-cart, updates+1-tags, updates+1-nested
			t.Logf("%s: lost %d/%d cart updates, %d/%d profile tags, %d/%d nested entries (%d concurrent reads)",
				kind.name, lostCart, updates, lostTags, updates, lostNested, updates, reads)
			if lostCart != 0 || lostTags != 0 || lostNested != 0 {
				t.Fatalf("requests that only read the session lost updates: cart %d, profile %d, nested %d of %d",
					lostCart, lostTags, lostNested, updates)
			}
		})
	}
}

// TestInFlightRequestsDuringLoginKeepTheUser: 20 GETs of a session are in
// flight when the login POST renews its token; they finish after it. None
// may answer with a Set-Cookie for the session: the browser would apply it
// after the login's and so lose the new session (a logout).
func TestInFlightRequestsDuringLoginKeepTheUser(t *testing.T) {
	t.Parallel()
	for _, kind := range storeKinds {
		t.Run(kind.name, func(t *testing.T) {
			t.Parallel()
			m := newManager(t, kind.start(t), nil)
			var entered atomic.Int64
			release := make(chan struct{})
			mux := http.NewServeMux()
			mux.HandleFunc("GET /page", func(w http.ResponseWriter, r *http.Request) {
				entered.Add(1)
				<-release
				io.WriteString(w, m.GetString(r.Context(), "user"))
			})
			mux.HandleFunc("GET /touch", func(w http.ResponseWriter, r *http.Request) {
				// A request that changes its session as it goes.
				entered.Add(1)
				<-release
				m.Put(r.Context(), "seen", time.Now().String())
			})
			mux.HandleFunc("POST /login", func(w http.ResponseWriter, r *http.Request) {
				if err := m.RenewToken(r.Context()); err != nil {
					http.Error(w, err.Error(), http.StatusServiceUnavailable)
					return
				}
				m.Put(r.Context(), "user", r.URL.Query().Get("user"))
			})
			mux.HandleFunc("GET /get", func(w http.ResponseWriter, r *http.Request) {
				io.WriteString(w, m.GetString(r.Context(), r.URL.Query().Get("k")))
			})
			mux.HandleFunc("POST /put", func(w http.ResponseWriter, r *http.Request) {
				m.Put(r.Context(), r.URL.Query().Get("k"), r.URL.Query().Get("v"))
			})
			in := &instance{srv: httptest.NewServer(m.LoadAndSave(mux))}
			t.Cleanup(in.srv.Close)

			u := newUser(t)
			u.must("POST", in, "/put?k=cart&v=teapot") // an anonymous session, T
			const inflight = 20
			logouts := make(chan string, inflight)
			var wg sync.WaitGroup
			for i := range inflight {
				path := "/page"
				if i%2 == 1 {
					path = "/touch"
				}
				wg.Go(func() {
					code, _, hdr := u.do("GET", in, path)
					if code != 200 {
						logouts <- fmt.Sprintf("%s: status %d", path, code)
						return
					}
					for _, c := range (&http.Response{Header: hdr}).Cookies() {
						if c.Name == "session" {
							logouts <- fmt.Sprintf("%s: Set-Cookie %s", path, c)
						}
					}
				})
			}
			hatest.WaitFor(t, 10*time.Second, "the requests to be in flight", func() bool { return entered.Load() == inflight })
			u.must("POST", in, "/login?user=ann") // renews T to T2
			close(release)
			wg.Wait()
			close(logouts)
			var bad []string
			for l := range logouts {
				bad = append(bad, l)
			}
			t.Logf("%s: %d/%d in-flight requests answered with a session cookie", kind.name, len(bad), inflight)
			if len(bad) > 0 {
				t.Errorf("in-flight requests would log the user out:\n%s", strings.Join(bad, "\n"))
			}
			if got := u.must("GET", in, "/get?k=user"); got != "ann" {
				t.Fatalf("after the login and the in-flight requests the browser's session has user %q", got)
			}
			if got := savesDropped(t, m); got != inflight {
				t.Errorf("hakit_session_saves_total{result=dropped} = %v, want %d", got, inflight)
			}
			if got := u.must("GET", in, "/get?k=cart"); got != "teapot" {
				t.Fatalf("the renewed session lost its cart: %q", got)
			}
		})
	}
}

// savesDropped reads the Manager's count of saves dropped because the
// session was gone.
func savesDropped(t *testing.T, m *session.Manager) float64 {
	reg := prometheus.NewRegistry()
	reg.MustRegister(m)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "hakit_session_saves_total" {
			continue
		}
		for _, mt := range mf.GetMetric() {
			for _, l := range mt.GetLabel() {
				if l.GetName() == "result" && l.GetValue() == "dropped" {
					return mt.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// flushFirst is a streaming handler: it changes the session, flushes the
// headers, then streams.
func flushFirst(m *session.Manager, key string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		m.Put(r.Context(), key, "yes")
		if err := http.NewResponseController(w).Flush(); err != nil {
			return
		}
		for i := range 3 {
			fmt.Fprintf(w, "chunk %d\n", i)
		}
	}
}

// TestStreamingHandlerGetsItsCookie: a handler that flushes before writing
// still sends the session cookie and saves the session.
func TestStreamingHandlerGetsItsCookie(t *testing.T) {
	t.Parallel()
	rd := hatest.NewRedis(t, hatest.RedisOptions{})
	rdb := redis.NewClient(&redis.Options{Addr: rd.Addr()})
	defer rdb.Close()
	m := newManager(t, redisStore(t, rdb), nil)
	mux := http.NewServeMux()
	mux.Handle("POST /stream", flushFirst(m, "streamed"))
	mux.HandleFunc("POST /stream-late", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "streaming\n")
		if err := http.NewResponseController(w).Flush(); err != nil {
			return
		}
		m.Put(r.Context(), "late", "yes")
	})
	mux.HandleFunc("GET /get", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, m.GetString(r.Context(), r.URL.Query().Get("k")))
	})
	in := &instance{srv: httptest.NewServer(m.LoadAndSave(mux))}
	defer in.srv.Close()

	u := newUser(t) // a new session: the cookie must go out with the flushed headers
	if body := u.must("POST", in, "/stream"); body != "chunk 0\nchunk 1\nchunk 2\n" {
		t.Fatalf("stream body %q", body)
	}
	if u.cookie(in, "session") == "" {
		t.Fatal("the streaming response carried no session cookie")
	}
	if got := u.must("GET", in, "/get?k=streamed"); got != "yes" {
		t.Fatalf("the streaming handler's change reads back as %q", got)
	}

	// A change made after the flush, in a session the browser has the
	// cookie of, is saved when the handler returns.
	if body := u.must("POST", in, "/stream-late"); body != "streaming\n" {
		t.Fatalf("stream body %q", body)
	}
	if got := u.must("GET", in, "/get?k=late"); got != "yes" {
		t.Fatalf("the change made after the flush reads back as %q", got)
	}
}

// logBuffer collects a logger's output.
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

// TestSaveFailureAroundAFlush: the store dies while a streaming handler
// runs. If the session is saved at the flush, the client gets the 503 (the
// headers have not gone out); a change made after the flush that cannot be
// saved is logged and the response is aborted. Never is a 503 page written
// into a 200 stream.
func TestSaveFailureAroundAFlush(t *testing.T) {
	t.Parallel()
	rd := hatest.NewRedis(t, hatest.RedisOptions{})
	rdb := redis.NewClient(&redis.Options{Addr: rd.Addr(), MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	defer rdb.Close()
	var logs logBuffer
	m := newManager(t, redisStore(t, rdb), func(c *session.Config) {
		c.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	})
	entered, release := make(chan string), make(chan struct{})
	var flushErr atomic.Value
	mux := http.NewServeMux()
	mux.HandleFunc("POST /put", func(w http.ResponseWriter, r *http.Request) {
		m.Put(r.Context(), "k", "v")
	})
	mux.HandleFunc("POST /before", func(w http.ResponseWriter, r *http.Request) {
		m.Put(r.Context(), "before", "yes")
		entered <- "before"
		<-release // the store dies now
		if err := http.NewResponseController(w).Flush(); err != nil {
			flushErr.Store(err)
		}
		io.WriteString(w, "streamed data")
	})
	mux.HandleFunc("POST /after", func(w http.ResponseWriter, r *http.Request) {
		if err := http.NewResponseController(w).Flush(); err != nil {
			flushErr.Store(err)
			return
		}
		io.WriteString(w, "streamed data\n")
		entered <- "after"
		<-release // the store dies now
		m.Put(r.Context(), "after", "yes")
		io.WriteString(w, "more data\n")
	})
	in := &instance{srv: httptest.NewServer(m.LoadAndSave(mux))}
	defer in.srv.Close()

	u := newUser(t)
	u.must("POST", in, "/put")

	type result struct {
		code    int
		body    string
		retry   string
		readErr error
	}
	call := func(path string) chan result {
		ch := make(chan result, 1)
		go func() {
			req, _ := http.NewRequest("POST", in.srv.URL+path, nil)
			resp, err := u.client.Do(req)
			if err != nil {
				ch <- result{readErr: err}
				return
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			ch <- result{code: resp.StatusCode, body: string(b), retry: resp.Header.Get("Retry-After"), readErr: err}
		}()
		return ch
	}

	// The store dies before the flush: the flush saves first, fails, and
	// the client gets 503 with Retry-After instead of a 200.
	res := call("/before")
	<-entered
	if err := rd.Nodes[0].Kill(); err != nil {
		t.Fatal(err)
	}
	close(release)
	r := <-res
	if r.code != http.StatusServiceUnavailable || r.retry == "" || strings.Contains(r.body, "streamed data") {
		t.Fatalf("store down at the flush: %d (Retry-After %q) %q, %v; want the 503", r.code, r.retry, r.body, r.readErr)
	}
	if flushErr.Load() == nil {
		t.Error("the handler's Flush reported no error after the save failed")
	}

	// The store dies after the flush: the change made then cannot be
	// saved; the 503 page must not end up inside the 200 stream, and the
	// client must not see a complete response.
	if err := rd.Nodes[0].Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	u = newUser(t)
	u.must("POST", in, "/put")
	release = make(chan struct{})
	res = call("/after")
	<-entered
	if err := rd.Nodes[0].Kill(); err != nil {
		t.Fatal(err)
	}
	close(release)
	r = <-res
	if strings.Contains(r.body, "unavailable") {
		t.Fatalf("a 503 page was written into the 200 stream: %q", r.body)
	}
	if r.readErr == nil || !errors.Is(r.readErr, io.ErrUnexpectedEOF) {
		t.Errorf("store down after the flush: the client read a complete response (%d %q, %v); want it aborted", r.code, r.body, r.readErr)
	}
	if !strings.Contains(logs.String(), "after the response started") {
		t.Errorf("the lost change was not logged; log:\n%s", logs.String())
	}
}

// TestNestedManagersKeepTheirOwnSessions: two Managers' LoadAndSave around
// one handler (an app session and an admin session, say) each keep their
// own session: the context key is the Manager's, not one shared by all.
func TestNestedManagersKeepTheirOwnSessions(t *testing.T) {
	t.Parallel()
	app := newManager(t, session.NewMemoryStore(), func(c *session.Config) { c.CookieName = "app" })
	admin := newManager(t, session.NewMemoryStore(), func(c *session.Config) { c.CookieName = "admin" })
	mux := http.NewServeMux()
	mux.HandleFunc("POST /put", func(w http.ResponseWriter, r *http.Request) {
		app.Put(r.Context(), "who", "app user")
		admin.Put(r.Context(), "who", "admin user")
	})
	mux.HandleFunc("GET /get", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s|%s", app.GetString(r.Context(), "who"), admin.GetString(r.Context(), "who"))
	})
	in := &instance{srv: httptest.NewServer(app.LoadAndSave(admin.LoadAndSave(mux)))}
	defer in.srv.Close()
	u := newUser(t)
	u.must("POST", in, "/put")
	if u.cookie(in, "app") == "" || u.cookie(in, "admin") == "" || u.cookie(in, "app") == u.cookie(in, "admin") {
		t.Fatalf("cookies app=%q admin=%q: want two sessions", u.cookie(in, "app"), u.cookie(in, "admin"))
	}
	if got := u.must("GET", in, "/get"); got != "app user|admin user" {
		t.Fatalf("nested managers read %q", got)
	}
}

// updateWhileReading makes updates POSTs to addPath?i=N for u while 8
// requests of the same session GET readPath over and over, as a page's
// other requests do; it returns how many reads ran meanwhile.
func updateWhileReading(u *user, in *instance, readPath, addPath string, updates int) int64 {
	var done atomic.Bool
	var reads atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for !done.Load() {
				u.must("GET", in, readPath)
				reads.Add(1)
			}
		})
	}
	for i := range updates {
		u.must("POST", in, fmt.Sprintf("%s?i=%d", addPath, i))
	}
	done.Store(true)
	wg.Wait()
	return reads.Load()
}
