package session_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alexedwards/scs/goredisstore"
	"github.com/alexedwards/scs/v2"
	"github.com/redis/go-redis/v9"

	"hakit.dev/hatest"
	"hakit.dev/session"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// sessionAPI is what the test app needs from a session manager: ours, or
// plain scs for comparison.
type sessionAPI interface {
	Put(ctx context.Context, key string, val any)
	GetString(ctx context.Context, key string) string
	Keys(ctx context.Context) []string
	RenewToken(ctx context.Context) error
	Destroy(ctx context.Context) error
}

// instance is one app instance: a small handler set behind the session
// middleware.
type instance struct {
	srv  *httptest.Server
	runs atomic.Int64 // handler runs
}

func newInstance(t *testing.T, sm sessionAPI, loadAndSave func(http.Handler) http.Handler) *instance {
	in := &instance{}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /get", func(w http.ResponseWriter, r *http.Request) {
		in.runs.Add(1)
		io.WriteString(w, sm.GetString(r.Context(), r.URL.Query().Get("k")))
	})
	mux.HandleFunc("GET /keys", func(w http.ResponseWriter, r *http.Request) {
		in.runs.Add(1)
		fmt.Fprint(w, len(sm.Keys(r.Context())))
	})
	mux.HandleFunc("POST /put", func(w http.ResponseWriter, r *http.Request) {
		in.runs.Add(1)
		time.Sleep(20 * time.Millisecond) // so concurrent requests overlap
		sm.Put(r.Context(), r.URL.Query().Get("k"), r.URL.Query().Get("v"))
		io.WriteString(w, "ok")
	})
	mux.HandleFunc("POST /login", func(w http.ResponseWriter, r *http.Request) {
		in.runs.Add(1)
		if err := sm.RenewToken(r.Context()); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		sm.Put(r.Context(), "user", r.URL.Query().Get("user"))
		io.WriteString(w, "ok")
	})
	mux.HandleFunc("POST /logout", func(w http.ResponseWriter, r *http.Request) {
		in.runs.Add(1)
		if err := sm.Destroy(r.Context()); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ok")
	})
	in.srv = httptest.NewServer(loadAndSave(mux))
	t.Cleanup(in.srv.Close)
	return in
}

// user is a browser: a cookie jar.
type user struct {
	t      *testing.T
	client *http.Client
}

func newUser(t *testing.T) *user {
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &user{t: t, client: &http.Client{Jar: jar, Timeout: 30 * time.Second}}
}

func (u *user) do(method string, in *instance, path string) (int, string, http.Header) {
	u.t.Helper()
	req, err := http.NewRequest(method, in.srv.URL+path, nil)
	if err != nil {
		u.t.Fatal(err)
	}
	resp, err := u.client.Do(req)
	if err != nil {
		u.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

func (u *user) must(method string, in *instance, path string) string {
	u.t.Helper()
	code, body, _ := u.do(method, in, path)
	if code != 200 {
		u.t.Fatalf("%s %s: %d %q", method, path, code, body)
	}
	return body
}

func (u *user) cookie(in *instance, name string) string {
	url, _ := url.Parse(in.srv.URL)
	for _, c := range u.client.Jar.Cookies(url) {
		if c.Name == name {
			return c.Value
		}
	}
	return ""
}

func newManager(t *testing.T, store session.Store, mod func(*session.Config)) *session.Manager {
	cfg := session.Config{Store: store, Insecure: true, Logger: quiet()}
	if mod != nil {
		mod(&cfg)
	}
	m, err := session.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// concurrentPuts sets n distinct keys in one session with n concurrent
// requests and returns how many are there afterwards.
func concurrentPuts(t *testing.T, in *instance, n int) int {
	u := newUser(t)
	u.must("POST", in, "/put?k=first&v=1") // the session exists
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { u.must("POST", in, fmt.Sprintf("/put?k=k%d&v=%d", i, i)) })
	}
	wg.Wait()
	present := 0
	for i := range n {
		if u.must("GET", in, fmt.Sprintf("/get?k=k%d", i)) == fmt.Sprint(i) {
			present++
		}
	}
	return present
}

func redisStore(t *testing.T, rdb redis.UniversalClient) *session.RedisStore {
	return session.NewRedisStore(rdb, session.RedisOptions{WaitReplicas: -1, Logger: quiet()})
}

func TestRedisSharedConcurrentAndRenewed(t *testing.T) {
	t.Parallel()
	rd := hatest.NewRedis(t, hatest.RedisOptions{})
	rdb := redis.NewClient(&redis.Options{Addr: rd.Addr()})
	defer rdb.Close()
	m := newManager(t, redisStore(t, rdb), nil)
	a, b := newInstance(t, m, m.LoadAndSave), newInstance(t, m, m.LoadAndSave)

	// Made on A, read on B.
	u := newUser(t)
	u.must("POST", a, "/put?k=cart&v=teapot")
	if got := u.must("GET", b, "/get?k=cart"); got != "teapot" {
		t.Fatalf("instance B reads %q", got)
	}

	// A 100 KB value works.
	big := strings.Repeat("0123456789", 10<<10)
	u.must("POST", a, "/put?k=big&v="+big)
	if got := u.must("GET", b, "/get?k=big"); got != big {
		t.Fatalf("100 KB value read back as %d bytes", len(got))
	}

	// 50 concurrent requests each set a key: all 50 stay.
	if got := concurrentPuts(t, a, 50); got != 50 {
		t.Fatalf("%d of 50 concurrent changes kept", got)
	}
	// Plain scs on the same Redis loses most of them.
	sm := scs.New()
	sm.Store = goredisstore.New(rdb)
	plain := newInstance(t, sm, sm.LoadAndSave)
	if got := concurrentPuts(t, plain, 50); got == 50 {
		t.Fatal("plain scs kept every concurrent change: the test shows nothing")
	} else {
		t.Logf("plain scs kept %d of 50 concurrent changes", got)
	}

	// RenewToken: a new token; the old one is gone.
	old := u.cookie(a, "session")
	u.must("POST", a, "/login?user=ann")
	renewed := u.cookie(a, "session")
	if renewed == "" || renewed == old {
		t.Fatalf("token after login %q, before %q", renewed, old)
	}
	if got := u.must("GET", b, "/get?k=user"); got != "ann" {
		t.Fatalf("after login: user %q", got)
	}
	thief := newUser(t)
	url, _ := url.Parse(a.srv.URL)
	thief.client.Jar.SetCookies(url, []*http.Cookie{{Name: "session", Value: old}})
	if got := thief.must("GET", a, "/get?k=user"); got != "" {
		t.Fatalf("the old token still reads user %q", got)
	}
	// Logout destroys it.
	u.must("POST", a, "/logout")
	if got := u.must("GET", a, "/get?k=user"); got != "" {
		t.Fatalf("after logout: user %q", got)
	}
	if n, _ := rdb.Exists(context.Background(), "hakit:session:"+renewed).Result(); n != 0 {
		t.Fatal("the destroyed session is still in Redis")
	}
}

func TestForgedCorruptAndExpired(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rd := hatest.NewRedis(t, hatest.RedisOptions{})
	rdb := redis.NewClient(&redis.Options{Addr: rd.Addr()})
	defer rdb.Close()
	m := newManager(t, redisStore(t, rdb), func(c *session.Config) { c.IdleTimeout = time.Second })
	in := newInstance(t, m, m.LoadAndSave)
	url, _ := url.Parse(in.srv.URL)

	// Forged cookies get a fresh session, not an error.
	for _, forged := range []string{"garbage", strings.Repeat("A", 43), "../../etc/passwd", strings.Repeat("x", 5000)} {
		u := newUser(t)
		u.client.Jar.SetCookies(url, []*http.Cookie{{Name: "session", Value: forged}})
		if code, body, _ := u.do("GET", in, "/get?k=user"); code != 200 || body != "" {
			t.Fatalf("forged cookie %.20q: %d %q", forged, code, body)
		}
		u.must("POST", in, "/put?k=x&v=1")
		if c := u.cookie(in, "session"); c == forged || len(c) != 43 {
			t.Fatalf("forged cookie kept or bad new token: %q", c)
		}
	}

	// A stored session that cannot be decoded is dropped: a fresh one.
	u := newUser(t)
	u.must("POST", in, "/put?k=user&v=bob")
	token := u.cookie(in, "session")
	if err := rdb.HSet(ctx, "hakit:session:"+token, "user", "\xffnot a value").Err(); err != nil {
		t.Fatal(err)
	}
	if code, body, _ := u.do("GET", in, "/get?k=user"); code != 200 || body != "" {
		t.Fatalf("corrupt session: %d %q", code, body)
	}
	if n, _ := rdb.Exists(ctx, "hakit:session:"+token).Result(); n != 0 {
		t.Fatal("the corrupt session was not removed from the store")
	}

	// The store forgets a session after its idle timeout.
	u = newUser(t)
	u.must("POST", in, "/put?k=user&v=cat")
	key := "hakit:session:" + u.cookie(in, "session")
	ttl, err := rdb.PTTL(ctx, key).Result()
	if err != nil || ttl <= 0 || ttl > time.Second {
		t.Fatalf("TTL in Redis %s, %v; want at most the 1s idle timeout", ttl, err)
	}
	hatest.WaitFor(t, 5*time.Second, "the store to drop the session after its idle timeout", func() bool {
		n, _ := rdb.Exists(ctx, key).Result()
		return n == 0
	})
	if got := u.must("GET", in, "/get?k=user"); got != "" {
		t.Fatalf("expired session still reads %q", got)
	}
}

func TestSecureCookieDefaults(t *testing.T) {
	t.Parallel()
	m, err := session.New(session.Config{Store: session.NewMemoryStore(), Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	h := m.LoadAndSave(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { m.Put(r.Context(), "a", 1) }))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	c := rec.Header().Get("Set-Cookie")
	for _, want := range []string{"__Host-session=", "Path=/", "HttpOnly", "Secure", "SameSite=Lax", "Max-Age="} {
		if !strings.Contains(c, want) {
			t.Errorf("Set-Cookie %q lacks %s", c, want)
		}
	}
	if strings.Contains(c, "Domain") {
		t.Errorf("Set-Cookie %q has a Domain", c)
	}
	token := strings.TrimPrefix(strings.SplitN(c, ";", 2)[0], "__Host-session=")
	if len(token) != 43 { // 32 random bytes: 256 bits
		t.Errorf("token %q is not 32 bytes of base64url", token)
	}
	if _, err := session.New(session.Config{}); err == nil {
		t.Error("a Manager without a Store was made")
	}
}

func TestStoreDownAnswers503(t *testing.T) {
	t.Parallel()
	rd := hatest.NewRedis(t, hatest.RedisOptions{})
	rdb := redis.NewClient(&redis.Options{Addr: rd.Addr(), MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	defer rdb.Close()
	m := newManager(t, redisStore(t, rdb), nil)
	in := newInstance(t, m, m.LoadAndSave)
	u := newUser(t)
	u.must("POST", in, "/put?k=user&v=dan")
	if err := rd.Nodes[0].Kill(); err != nil {
		t.Fatal(err)
	}
	before := in.runs.Load()
	for _, path := range []string{"/get?k=user", "/keys"} {
		code, body, hdr := u.do("GET", in, path)
		if code != 503 || hdr.Get("Retry-After") != "1" {
			t.Fatalf("%s with Redis down: %d %q (Retry-After %q)", path, code, body, hdr.Get("Retry-After"))
		}
	}
	if in.runs.Load() != before {
		t.Fatal("a handler ran without its session")
	}
	if err := rd.Nodes[0].Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Redis keeps nothing on disk in the harness: the session is gone, the
	// user gets a fresh one, and everything works again.
	if code, _, _ := u.do("GET", in, "/get?k=user"); code != 200 {
		t.Fatalf("after Redis came back: %d", code)
	}
}

func TestSentinelFailoverKeepsSessions(t *testing.T) {
	t.Parallel()
	rd := hatest.NewRedis(t, hatest.RedisOptions{Replicas: 1, Sentinels: 3})
	rdb := redis.NewFailoverClient(&redis.FailoverOptions{
		MasterName: rd.MasterName, SentinelAddrs: rd.SentinelAddrs(),
		DialTimeout: 300 * time.Millisecond, ReadTimeout: 300 * time.Millisecond, WriteTimeout: 300 * time.Millisecond,
		MaxRetries: -1,
	})
	defer rdb.Close()
	// WAIT 1 for logins, and long enough that a replica starved on a
	// loaded machine still confirms them: the default 100 ms lets a login
	// stand on the master alone (logged), which the kill below then loses
	// (one CI run: the replica had received nothing 0.6 s after the
	// logins). RequireConfirm: a login no replica confirmed fails here.
	m := newManager(t, session.NewRedisStore(rdb, session.RedisOptions{Logger: quiet(),
		WaitTimeout: 10 * time.Second, RequireConfirm: true}), nil)
	in := newInstance(t, m, m.LoadAndSave)

	users := make([]*user, 20)
	for i := range users {
		users[i] = newUser(t)
		users[i].must("POST", in, fmt.Sprintf("/login?user=u%d", i))
	}
	old, err := rd.KillMaster(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// During the failover, requests get 503 with Retry-After, never 500.
	saw503 := false
	deadline := time.Now().Add(60 * time.Second)
	for {
		code, body, hdr := users[0].do("GET", in, "/get?k=user")
		if code == 200 && body == "u0" {
			break
		}
		if code != 503 || hdr.Get("Retry-After") == "" {
			t.Fatalf("during the failover: %d %q", code, body)
		}
		saw503 = true
		if time.Now().After(deadline) {
			t.Fatal("sessions did not come back within a minute")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !saw503 {
		t.Log("the failover was invisible to the first request after the kill")
	}
	if _, err := rd.WaitFailover(context.Background(), old); err != nil {
		t.Fatal(err)
	}
	for i, u := range users {
		if got := u.must("GET", in, "/get?k=user"); got != fmt.Sprintf("u%d", i) {
			t.Fatalf("after the failover user %d reads %q", i, got)
		}
	}
}

func TestPostgresStore(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pg := hatest.NewPostgres(t, hatest.PostgresOptions{})
	pool, err := pgxpoolNew(ctx, pg.Nodes[0].DSN())
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	store := session.NewPostgresStore(pool.primary, session.PostgresOptions{})
	if err := store.CreateTable(ctx); err != nil {
		t.Fatal(err)
	}
	m := newManager(t, store, func(c *session.Config) { c.IdleTimeout = 2 * time.Second })
	a, b := newInstance(t, m, m.LoadAndSave), newInstance(t, m, m.LoadAndSave)
	u := newUser(t)
	u.must("POST", a, "/put?k=cart&v=kettle")
	if got := u.must("GET", b, "/get?k=cart"); got != "kettle" {
		t.Fatalf("instance B reads %q", got)
	}
	if got := concurrentPuts(t, a, 50); got != 50 {
		t.Fatalf("%d of 50 concurrent changes kept", got)
	}
	u.must("POST", a, "/login?user=eve")
	u.must("POST", a, "/logout")
	if got := u.must("GET", b, "/get?k=user"); got != "" {
		t.Fatalf("after logout: %q", got)
	}
	// Expiry in the store: the row's expiry is the idle timeout.
	var left time.Duration
	if err := pool.p.QueryRow(ctx, "SELECT max(expiry) - now() FROM hakit_sessions").Scan(&left); err != nil || left > 2*time.Second || left <= 0 {
		t.Fatalf("expiry in %s, %v; want within the 2s idle timeout", left, err)
	}
	// Database down: 503, the handler does not run.
	u.must("POST", a, "/put?k=cart&v=kettle")
	if err := pg.Nodes[0].Kill(); err != nil {
		t.Fatal(err)
	}
	before := a.runs.Load()
	if code, _, hdr := u.do("GET", a, "/get?k=cart"); code != 503 || hdr.Get("Retry-After") == "" {
		t.Fatalf("database down: %d", code)
	}
	if a.runs.Load() != before {
		t.Fatal("a handler ran without its session")
	}
}

func TestMemoryStore(t *testing.T) {
	t.Parallel()
	m := newManager(t, session.NewMemoryStore(), nil)
	in := newInstance(t, m, m.LoadAndSave)
	if got := concurrentPuts(t, in, 20); got != 20 {
		t.Fatalf("%d of 20 concurrent changes kept", got)
	}
}
