package session_test

import (
	"context"
	"encoding/gob"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"hakit.dev/hatest"
	"hakit.dev/session"
)

// returned wraps h and reports on the channel when a POST returned: the
// session has then been saved (or the save has failed).
func returned(h http.Handler, done chan<- string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			defer func() { done <- r.URL.Path }()
		}
		h.ServeHTTP(w, r)
	})
}

// TestSaveOutlivesTheRequestContext: a handler changes the session, then
// its request's context ends before the handler returns — the client went
// away (a browser closing a tab during a slow add-to-cart), or a deadline
// put on the request's context in front of the session middleware passed
// (hakit's RequestTimeout, which hakit.Timeout lifts for the handler
// only). The change is saved all the same, on Redis and PostgreSQL, whose
// clients both refuse to work on an ended context.
func TestSaveOutlivesTheRequestContext(t *testing.T) {
	t.Parallel()
	for _, kind := range storeKinds {
		t.Run(kind.name, func(t *testing.T) {
			t.Parallel()
			m := newManager(t, kind.start(t), nil)
			put := make(chan struct{}, 1)
			mux := http.NewServeMux()
			mux.HandleFunc("POST /put", func(w http.ResponseWriter, r *http.Request) {
				m.Put(r.Context(), r.URL.Query().Get("k"), r.URL.Query().Get("v"))
			})
			mux.HandleFunc("GET /get", func(w http.ResponseWriter, r *http.Request) {
				io.WriteString(w, m.GetString(r.Context(), r.URL.Query().Get("k")))
			})
			// Both change the session, then wait for their context to end.
			waitDone := func(w http.ResponseWriter, r *http.Request) {
				m.Put(r.Context(), "cart", r.URL.Query().Get("v"))
				put <- struct{}{}
				<-r.Context().Done()
			}
			mux.HandleFunc("POST /client-gone", waitDone)
			mux.HandleFunc("POST /deadline", waitDone)
			done := make(chan string, 4)
			h := returned(m.LoadAndSave(mux), done)
			// A deadline on the request's context in front of the session
			// middleware, as hakit's stack puts one, for /deadline.
			withDeadline := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/deadline" {
					ctx, cancel := context.WithTimeout(r.Context(), 200*time.Millisecond)
					defer cancel()
					r = r.WithContext(ctx)
				}
				h.ServeHTTP(w, r)
			})
			in := &instance{srv: httptest.NewServer(withDeadline)}
			t.Cleanup(in.srv.Close)

			u := newUser(t)
			u.must("POST", in, "/put?k=cart&v=empty") // the session exists, the browser has its cookie
			if p := <-done; p != "/put" {
				t.Fatalf("returned: %s", p)
			}

			// The client goes away after the handler's Put.
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, "POST", in.srv.URL+"/client-gone?v=teapot", nil)
			if err != nil {
				t.Fatal(err)
			}
			res := make(chan error, 1)
			go func() {
				resp, err := u.client.Do(req)
				if err == nil {
					resp.Body.Close()
				}
				res <- err
			}()
			<-put
			cancel()
			if err := <-res; err == nil {
				t.Fatal("the cancelled request got a response")
			}
			if p := <-done; p != "/client-gone" {
				t.Fatalf("returned: %s", p)
			}
			if got := u.must("GET", in, "/get?k=cart"); got != "teapot" {
				t.Errorf("%s: the client went away after the handler's Put: the session reads %q, want %q", kind.name, got, "teapot")
			}

			// The request's deadline passes after the handler's Put.
			code, body, _ := u.do("POST", in, "/deadline?v=kettle")
			<-put
			if p := <-done; p != "/deadline" {
				t.Fatalf("returned: %s", p)
			}
			if code != http.StatusOK {
				t.Errorf("%s: the request's deadline passed after the handler's Put: %d %q, want 200", kind.name, code, body)
			}
			if got := u.must("GET", in, "/get?k=cart"); got != "kettle" {
				t.Errorf("%s: the request's deadline passed after the handler's Put: the session reads %q, want %q", kind.name, got, "kettle")
			}
		})
	}
}

// TestSaveTimeoutBoundsTheSave: the store hangs (Redis stopped with
// SIGSTOP) while a request that changed its session is saved. The save
// ends after Config.SaveTimeout with the Unavailable answer; without that
// bound it would wait for the client's 30 s read timeout (the request's
// own context has no deadline here).
func TestSaveTimeoutBoundsTheSave(t *testing.T) {
	t.Parallel()
	rd := hatest.NewRedis(t, hatest.RedisOptions{})
	// ContextTimeoutEnabled: go-redis then ends a command at its context's
	// deadline; without it only ReadTimeout does.
	rdb := redis.NewClient(&redis.Options{Addr: rd.Addr(), MaxRetries: -1, ReadTimeout: 30 * time.Second,
		WriteTimeout: 30 * time.Second, ContextTimeoutEnabled: true})
	defer rdb.Close()
	const saveTimeout = 300 * time.Millisecond
	m := newManager(t, redisStore(t, rdb), func(c *session.Config) { c.SaveTimeout = saveTimeout })
	entered, release := make(chan struct{}), make(chan struct{})
	mux := http.NewServeMux()
	mux.HandleFunc("POST /put", func(w http.ResponseWriter, r *http.Request) {
		m.Put(r.Context(), "k", "v")
	})
	mux.HandleFunc("POST /slow", func(w http.ResponseWriter, r *http.Request) {
		m.Put(r.Context(), "k", "w")
		entered <- struct{}{}
		<-release // the store hangs now
	})
	in := &instance{srv: httptest.NewServer(m.LoadAndSave(mux))}
	defer in.srv.Close()
	u := newUser(t)
	u.must("POST", in, "/put")

	res := make(chan int, 1)
	go func() {
		req, _ := http.NewRequest("POST", in.srv.URL+"/slow", nil)
		resp, err := u.client.Do(req)
		if err != nil {
			res <- -1
			return
		}
		resp.Body.Close()
		res <- resp.StatusCode
	}()
	<-entered
	if err := rd.Nodes[0].Pause(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := rd.Nodes[0].Resume(); err != nil {
			t.Error(err)
		}
	}()
	t0 := time.Now()
	close(release)
	code := <-res
	took := time.Since(t0)
	t.Logf("the save on a hung store ended after %s with %d (SaveTimeout %s)", took, code, saveTimeout)
	if code != http.StatusServiceUnavailable {
		t.Errorf("save on a hung store: status %d, want 503", code)
	}
	// Never early; late by at most a busy machine's scheduling.
	if took < saveTimeout || took > saveTimeout+5*time.Second {
		t.Errorf("the save on a hung store took %s, want SaveTimeout (%s)", took, saveTimeout)
	}
}

// TestEarlyHintsDoNotStartTheSave: a handler that sends 103 Early Hints,
// then starts a session (or logs in: a new token) and answers, sends the
// session's cookie with its final response and keeps the change; the 103
// reaches the client.
func TestEarlyHintsDoNotStartTheSave(t *testing.T) {
	t.Parallel()
	m := newManager(t, session.NewMemoryStore(), nil)
	hint := func(w http.ResponseWriter) {
		w.Header().Set("Link", "</app.css>; rel=preload; as=style")
		w.WriteHeader(http.StatusEarlyHints)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /put", func(w http.ResponseWriter, r *http.Request) {
		hint(w)
		m.Put(r.Context(), r.URL.Query().Get("k"), r.URL.Query().Get("v"))
		io.WriteString(w, "ok")
	})
	mux.HandleFunc("POST /login", func(w http.ResponseWriter, r *http.Request) {
		hint(w)
		if err := m.RenewToken(r.Context()); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		m.Put(r.Context(), "user", r.URL.Query().Get("user"))
		io.WriteString(w, "ok")
	})
	mux.HandleFunc("POST /plain-put", func(w http.ResponseWriter, r *http.Request) {
		m.Put(r.Context(), r.URL.Query().Get("k"), r.URL.Query().Get("v"))
	})
	mux.HandleFunc("GET /get", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, m.GetString(r.Context(), r.URL.Query().Get("k")))
	})
	in := &instance{srv: httptest.NewServer(m.LoadAndSave(mux))}
	defer in.srv.Close()

	post := func(u *user, path string) (hints int) {
		t.Helper()
		trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, _ textproto.MIMEHeader) error {
			if code == http.StatusEarlyHints {
				hints++
			}
			return nil
		}}
		req, err := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), "POST", in.srv.URL+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := u.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if b, _ := io.ReadAll(resp.Body); resp.StatusCode != 200 || string(b) != "ok" {
			t.Fatalf("POST %s: %d %q", path, resp.StatusCode, b)
		}
		return hints
	}

	// A new session, started after the hints.
	u := newUser(t)
	if n := post(u, "/put?k=cart&v=teapot"); n != 1 {
		t.Errorf("the client got %d 103 responses, want 1", n)
	}
	if u.cookie(in, "session") == "" {
		t.Error("a new session started after 103 Early Hints sent no cookie")
	} else if got := u.must("GET", in, "/get?k=cart"); got != "teapot" {
		t.Errorf("a new session started after 103 Early Hints reads %q", got)
	}

	// A login (a new token) after the hints, in a session the browser has.
	u = newUser(t)
	u.must("POST", in, "/plain-put?k=cart&v=kettle")
	first := u.cookie(in, "session")
	if n := post(u, "/login?user=ann"); n != 1 {
		t.Errorf("the client got %d 103 responses, want 1", n)
	}
	if c := u.cookie(in, "session"); c == first || c == "" {
		t.Fatalf("a login after 103 Early Hints: cookie %q (before %q), want the new token", c, first)
	}
	if got := u.must("GET", in, "/get?k=user"); got != "ann" {
		t.Fatalf("a login after 103 Early Hints: the session reads user %q", got)
	}
	if got := u.must("GET", in, "/get?k=cart"); got != "kettle" {
		t.Fatalf("a login after 103 Early Hints lost the cart: %q", got)
	}
}

// TestNaNValuesNotLostToReaders: as TestMapValuesNotLostToReaders, for a
// map[string]float64 that holds a NaN (a score not computed yet, say). NaN
// is not equal to itself, but a map that holds one and was only read is
// still unchanged: readers must not write their stale copy back.
func TestNaNValuesNotLostToReaders(t *testing.T) {
	t.Parallel()
	gob.Register(map[string]float64{})
	for _, kind := range storeKinds {
		t.Run(kind.name, func(t *testing.T) {
			t.Parallel()
			m := newManager(t, kind.start(t), nil)
			mux := http.NewServeMux()
			mux.HandleFunc("POST /score", func(w http.ResponseWriter, r *http.Request) {
				ctx := r.Context()
				scores, _ := m.Get(ctx, "scores").(map[string]float64)
				if scores == nil {
					scores = map[string]float64{"pending": math.NaN()}
				}
				i, _ := strconv.Atoi(r.URL.Query().Get("i"))
				scores["s"+strconv.Itoa(i)] = float64(i) / 2
				m.Put(ctx, "scores", scores)
			})
			mux.HandleFunc("GET /scores", func(w http.ResponseWriter, r *http.Request) {
				scores, _ := m.Get(r.Context(), "scores").(map[string]float64)
				time.Sleep(3 * time.Millisecond) // a page takes a moment to render: requests overlap
				nan := 0
				for _, v := range scores {
					if math.IsNaN(v) {
						nan++
					}
				}
				fmt.Fprintf(w, "%d %d", len(scores)-nan, nan)
			})
			in := &instance{srv: httptest.NewServer(m.LoadAndSave(mux))}
			t.Cleanup(in.srv.Close)
			u := newUser(t)
			u.must("POST", in, "/score?i=-1")
			const updates = 200
			reads := updateWhileReading(u, in, "/scores", "/score", updates)
			var scores, nans int
			if _, err := fmt.Sscanf(u.must("GET", in, "/scores"), "%d %d", &scores, &nans); err != nil {
				t.Fatal(err)
			}
			lost := updates + 1 - scores
			t.Logf("%s: lost %d/%d score updates (%d concurrent reads)", kind.name, lost, updates, reads)
			if lost != 0 || nans != 1 {
				t.Fatalf("requests that only read a map holding a NaN lost %d of %d updates (NaN entries: %d)", lost, updates, nans)
			}
		})
	}
}

// TestSaveTimeoutConfig: a negative SaveTimeout is refused.
func TestSaveTimeoutConfig(t *testing.T) {
	t.Parallel()
	if _, err := session.New(session.Config{Store: session.NewMemoryStore(), SaveTimeout: -time.Second}); err == nil {
		t.Error("a negative SaveTimeout was accepted")
	}
	if _, err := session.New(session.Config{Store: session.NewMemoryStore()}); err != nil {
		t.Errorf("the zero SaveTimeout (the default): %v", err)
	}
}
