package session_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"hakit.dev/hatest"
	"hakit.dev/session"
)

// helperApp is an app using the flash and login helpers, behind the
// Manager's LoadAndSave.
func helperApp(t *testing.T, m *session.Manager, more func(*http.ServeMux)) *instance {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /notes", func(w http.ResponseWriter, r *http.Request) {
		m.Flash(r.Context(), "info", "Note saved.")
		if r.URL.Query().Has("twice") {
			m.Flash(r.Context(), "error", "Attachment <too> large.")
		}
		http.Redirect(w, r, "/", http.StatusSeeOther)
	})
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		var parts []string
		for _, f := range m.Flashes(r.Context()) {
			parts = append(parts, f.Kind+":"+f.Text)
		}
		io.WriteString(w, "user="+m.UserID(r.Context())+" flashes="+strings.Join(parts, ","))
	})
	mux.HandleFunc("POST /put", func(w http.ResponseWriter, r *http.Request) {
		m.Put(r.Context(), r.URL.Query().Get("k"), r.URL.Query().Get("v"))
	})
	mux.HandleFunc("GET /get", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, m.GetString(r.Context(), r.URL.Query().Get("k")))
	})
	mux.HandleFunc("POST /login", func(w http.ResponseWriter, r *http.Request) {
		if err := m.Login(r.Context(), r.URL.Query().Get("user")); err != nil {
			code := http.StatusBadRequest
			if errors.Is(err, session.ErrStoreUnavailable) {
				code = http.StatusServiceUnavailable
			}
			http.Error(w, err.Error(), code)
			return
		}
		io.WriteString(w, "token="+m.Token(r.Context()))
	})
	mux.HandleFunc("POST /logout", func(w http.ResponseWriter, r *http.Request) {
		if err := m.Logout(r.Context()); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		m.Flash(r.Context(), "info", "Signed out.")
		http.Redirect(w, r, "/", http.StatusSeeOther)
	})
	mux.Handle("GET /private", m.RequireLogin(nil)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "private of "+m.UserID(r.Context()))
	})))
	if more != nil {
		more(mux)
	}
	in := &instance{srv: httptest.NewServer(m.LoadAndSave(mux))}
	t.Cleanup(in.srv.Close)
	return in
}

func TestFlashSurvivesOneRedirectAndIsGoneAfter(t *testing.T) {
	t.Parallel()
	rd := hatest.NewRedis(t, hatest.RedisOptions{})
	rdb := redis.NewClient(&redis.Options{Addr: rd.Addr()})
	defer rdb.Close()
	m := newManager(t, redisStore(t, rdb), nil)
	a, b := helperApp(t, m, nil), helperApp(t, m, nil)
	u := newUser(t) // follows the redirect, as a browser does

	// Posted on A, redirected, shown on the next page (on A).
	if got := u.must("POST", a, "/notes"); got != "user= flashes=info:Note saved." {
		t.Fatalf("after the redirect: %q", got)
	}
	// Gone after: a reload, or another instance, shows nothing.
	if got := u.must("GET", a, "/"); got != "user= flashes=" {
		t.Fatalf("reload: %q", got)
	}
	if got := u.must("GET", b, "/"); got != "user= flashes=" {
		t.Fatalf("other instance: %q", got)
	}

	// Several, in order, posted on A and shown on B (the redirect goes to
	// A's URL: read on B as a balancer would send it).
	noRedirect := *u.client
	noRedirect.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	req, _ := http.NewRequest("POST", a.srv.URL+"/notes?twice", nil)
	resp, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("POST /notes: %d", resp.StatusCode)
	}
	if got := u.must("GET", b, "/"); got != "user= flashes=info:Note saved.,error:Attachment <too> large." {
		t.Fatalf("two flashes on B: %q", got)
	}
	if got := u.must("GET", a, "/"); got != "user= flashes=" {
		t.Fatalf("after they were shown: %q", got)
	}

	// At most 16 wait; the oldest go.
	for i := range 20 {
		u.must("POST", a, "/put?k=x&v="+strconv.Itoa(i)) // other changes meanwhile
		req, _ := http.NewRequest("POST", a.srv.URL+"/notes", nil)
		resp, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	if got := strings.Count(u.must("GET", a, "/"), "Note saved."); got != 16 {
		t.Fatalf("%d flashes kept of 20, want 16", got)
	}
}

// commandCalls returns how many times the Redis server at rdb ran cmd.
func commandCalls(t *testing.T, rdb *redis.Client, cmd string) int {
	t.Helper()
	info, err := rdb.Info(context.Background(), "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(info, "\n") {
		if rest, ok := strings.CutPrefix(line, "cmdstat_"+cmd+":calls="); ok {
			n, _ := strconv.Atoi(strings.SplitN(rest, ",", 2)[0])
			return n
		}
	}
	return 0
}

func TestLoginRenewsDurablyAndLogoutDestroys(t *testing.T) {
	t.Parallel()
	rd := hatest.NewRedis(t, hatest.RedisOptions{Replicas: 1})
	master := redis.NewClient(&redis.Options{Addr: rd.Nodes[0].Addr()})
	defer master.Close()
	replica := redis.NewClient(&redis.Options{Addr: rd.Nodes[1].Addr()})
	defer replica.Close()
	// The store's defaults: durable changes WAIT for 1 replica. Its
	// WaitTimeout (100ms) is raised: past it the change stands unconfirmed
	// (as documented), and on a busy machine the replica can take longer
	// than that, which is not what this test is about.
	m := newManager(t, session.NewRedisStore(master, session.RedisOptions{Logger: quiet(), WaitTimeout: 10 * time.Second}), nil)
	in := helperApp(t, m, nil)
	u := newUser(t)

	// RequireLogin: 401 for an anonymous session.
	if code, body, _ := u.do("GET", in, "/private"); code != 401 {
		t.Fatalf("/private anonymous: %d %q", code, body)
	}
	// An anonymous session with a cart.
	u.must("POST", in, "/put?k=cart&v=teapot")
	anon := u.cookie(in, "session")
	waits := commandCalls(t, master, "wait")
	if got := u.must("POST", in, "/put?k=theme&v=dark"); got != "" {
		t.Fatal(got)
	}
	if commandCalls(t, master, "wait") != waits {
		t.Fatal("an ordinary change waited for a replica")
	}

	// Login: a new token, WAITed for, on the replica when the response
	// comes, with the cart kept.
	body := u.must("POST", in, "/login?user=ann")
	token := u.cookie(in, "session")
	if token == anon || body != "token="+token {
		t.Fatalf("login: %q; cookie %q, before %q", body, token, anon)
	}
	if got := commandCalls(t, master, "wait"); got < waits+2 {
		t.Fatalf("login: %d WAITs, want the old token's removal and the new session's write confirmed", got-waits)
	}
	if v, err := replica.HGet(context.Background(), "hakit:session:"+token, "_hakit_user").Result(); err != nil || !strings.Contains(v, "ann") {
		t.Fatalf("the replica has not the login when the response comes: %q %v", v, err)
	}
	if n, _ := replica.Exists(context.Background(), "hakit:session:"+anon).Result(); n != 0 {
		t.Fatal("the replica still has the old session")
	}
	if got := u.must("GET", in, "/private"); got != "private of ann" {
		t.Fatalf("/private: %q", got)
	}
	if got := u.must("GET", in, "/get?k=cart"); got != "teapot" {
		t.Fatalf("the anonymous cart was not kept: %q", got)
	}
	// The old cookie no longer reads the session.
	thief := newUser(t)
	base, _ := url.Parse(in.srv.URL)
	thief.client.Jar.SetCookies(base, []*http.Cookie{{Name: "session", Value: anon}})
	if got := thief.must("GET", in, "/"); got != "user= flashes=" {
		t.Fatalf("the old token still reads %q", got)
	}

	// Logging in again as ann keeps the session's values; as someone
	// else, they are cleared first.
	u.must("POST", in, "/login?user=ann")
	if got := u.must("GET", in, "/get?k=cart"); got != "teapot" {
		t.Fatalf("relogin as ann lost the cart: %q", got)
	}
	u.must("POST", in, "/login?user=bob")
	if got := u.must("GET", in, "/get?k=cart"); got != "" {
		t.Fatalf("bob sees ann's cart: %q", got)
	}
	if got := u.must("GET", in, "/"); got != "user=bob flashes=" {
		t.Fatalf("after logging in as bob: %q", got)
	}

	// Logout destroys the session, on the replica too, and the next page
	// (a new anonymous session) has the flash.
	loggedIn := u.cookie(in, "session")
	if got := u.must("POST", in, "/logout"); got != "user= flashes=info:Signed out." {
		t.Fatalf("after logout: %q", got)
	}
	if n, _ := replica.Exists(context.Background(), "hakit:session:"+loggedIn).Result(); n != 0 {
		t.Fatal("the replica still has the destroyed session when the response comes")
	}
	thief.client.Jar.SetCookies(base, []*http.Cookie{{Name: "session", Value: loggedIn}})
	if code, _, _ := thief.do("GET", in, "/private"); code != 401 {
		t.Fatalf("the logged-out token still opens /private: %d", code)
	}
	if code, _, _ := u.do("GET", in, "/private"); code != 401 {
		t.Fatalf("/private after logout: %d", code)
	}

	// An empty user ID is refused.
	if code, body, _ := u.do("POST", in, "/login?user="); code != 400 || !strings.Contains(body, "empty user ID") {
		t.Fatalf("empty user: %d %q", code, body)
	}
}

func TestLoginWithTheStoreDown(t *testing.T) {
	t.Parallel()
	rd := hatest.NewRedis(t, hatest.RedisOptions{})
	rdb := redis.NewClient(&redis.Options{Addr: rd.Addr(), MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	defer rdb.Close()
	m := newManager(t, redisStore(t, rdb), nil)
	result := make(chan error, 1)
	in := helperApp(t, m, func(mux *http.ServeMux) {
		// Redis dies while the request runs, after its session loaded.
		mux.HandleFunc("POST /kill-then-login", func(w http.ResponseWriter, r *http.Request) {
			if err := rd.Nodes[0].Kill(); err != nil {
				result <- err
				return
			}
			err := m.Login(r.Context(), "ann")
			result <- err
			if err != nil {
				http.Error(w, "try again", http.StatusServiceUnavailable)
			}
		})
	})
	u := newUser(t)
	u.must("POST", in, "/put?k=cart&v=teapot") // a stored session, with a token to remove
	code, body, _ := u.do("POST", in, "/kill-then-login")
	if err := <-result; !errors.Is(err, session.ErrStoreUnavailable) {
		t.Fatalf("Login with Redis down: %v", err)
	}
	// The handler's 503, or the Manager's Unavailable answer when saving
	// failed first: never a login.
	if code != 503 {
		t.Fatalf("login with Redis down: %d %q", code, body)
	}
}
