package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/alexedwards/scs/goredisstore"
	"github.com/alexedwards/scs/v2"
	"github.com/redis/go-redis/v9"

	"hakit.dev/hatest"
	"hakit.dev/session"
)

// sessionSuite compares hakit sessions on Redis with plain scs and its
// goredisstore: updates lost by concurrent requests, the cost per request,
// and logins lost across a Sentinel failover.
func sessionSuite(ctx context.Context, r *report) error {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	rd, err := hatest.StartRedis(ctx, hatest.RedisOptions{})
	if err != nil {
		return err
	}
	defer rd.Close()
	rdb := redis.NewClient(&redis.Options{Addr: rd.Addr(), PoolSize: 64})
	defer rdb.Close()

	ours, err := session.New(session.Config{Store: session.NewRedisStore(rdb, session.RedisOptions{WaitReplicas: -1, Logger: quiet}),
		Insecure: true, Logger: quiet})
	if err != nil {
		return err
	}
	plain := scs.New()
	plain.Store = goredisstore.New(rdb)
	plain.IdleTimeout = 2 * time.Hour // as ours: every request saves

	r.row("measurement", "hakit", "plain scs + goredisstore", "")
	const sessions, concurrent = 20, 50
	lostOurs, err := lostUpdates(ours, ours.LoadAndSave, ours.CookieName(), sessions, concurrent)
	if err != nil {
		return err
	}
	lostPlain, err := lostUpdates(plain, plain.LoadAndSave, plain.Cookie.Name, sessions, concurrent)
	if err != nil {
		return err
	}
	r.row(fmt.Sprintf("distinct-key writes lost, %d sessions x %d concurrent requests", sessions, concurrent),
		fmt.Sprintf("%d of %d", lostOurs, sessions*concurrent), fmt.Sprintf("%d of %d", lostPlain, sessions*concurrent), "")

	compare := func(path string, rounds int) (ratio, oursT, plainT float64, err error) {
		var ratios, oursUS, plainUS []float64
		for i := range rounds {
			var a, b time.Duration
			var errA, errB error
			if i%2 == 0 {
				a, errA = perRequest(ours, ours.LoadAndSave, ours.CookieName(), path)
				b, errB = perRequest(plain, plain.LoadAndSave, plain.Cookie.Name, path)
			} else {
				b, errB = perRequest(plain, plain.LoadAndSave, plain.Cookie.Name, path)
				a, errA = perRequest(ours, ours.LoadAndSave, ours.CookieName(), path)
			}
			if errA != nil || errB != nil {
				return 0, 0, 0, fmt.Errorf("per request: %v %v", errA, errB)
			}
			ratios = append(ratios, float64(a)/float64(b))
			oursUS, plainUS = append(oursUS, float64(a.Microseconds())), append(plainUS, float64(b.Microseconds()))
		}
		return median(ratios), median(oursUS), median(plainUS), nil
	}
	ratio, oursT, plainT, err := compare("/bump", 7)
	if err != nil {
		return err
	}
	r.row("load, modify, save per request, 8 clients (µs per request)", fmt.Sprintf("%.0f", oursT), fmt.Sprintf("%.0f", plainT), "")
	_, bigOurs, bigPlain, err := compare("/bump?big", 3)
	if err != nil {
		return err
	}
	r.row("  the same with a 100 KB value in the session", fmt.Sprintf("%.0f", bigOurs), fmt.Sprintf("%.0f", bigPlain), "hakit saves only the changed key")

	lostFailover, logins, err := failoverLogins(ctx, quiet)
	if err != nil {
		return err
	}
	r.row("acknowledged logins lost across a Sentinel failover", fmt.Sprintf("%d of %d", lostFailover, logins), "", "WAIT 1 on logins")

	r.metric("session_lost_updates", lostOurs)
	r.metric("session_lost_updates_scs", lostPlain)
	r.metric("session_overhead", fmt.Sprintf("%.3f", ratio))
	r.metric("session_100kb_request_us", fmt.Sprintf("%.0f", bigOurs))
	r.metric("session_lost_sessions_failover", lostFailover)
	return nil
}

// sessionAPI is the part of a session manager the workloads use.
type sessionAPI interface {
	Put(ctx context.Context, key string, val any)
	GetInt(ctx context.Context, key string) int
	Exists(ctx context.Context, key string) bool
	RenewToken(ctx context.Context) error
}

// sessionServer serves /put?k= (sets k), /has?k=, /bump (increments n),
// /login.
func sessionServer(sm sessionAPI, mw func(http.Handler) http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/put", func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(5 * time.Millisecond) // requests overlap, as real ones do
		sm.Put(r.Context(), r.URL.Query().Get("k"), 1)
	})
	mux.HandleFunc("/has", func(w http.ResponseWriter, r *http.Request) {
		if !sm.Exists(r.Context(), r.URL.Query().Get("k")) {
			w.WriteHeader(http.StatusNotFound)
		}
	})
	mux.HandleFunc("/bump", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Has("big") && !sm.Exists(r.Context(), "big") {
			sm.Put(r.Context(), "big", strings.Repeat("x", 100<<10))
		}
		sm.Put(r.Context(), "n", sm.GetInt(r.Context(), "n")+1)
	})
	mux.HandleFunc("/login", func(w http.ResponseWriter, r *http.Request) {
		if err := sm.RenewToken(r.Context()); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		sm.Put(r.Context(), "user", 1)
	})
	return mw(mux)
}

// call runs one request through h with the session cookie and returns the
// status and the cookie after it.
func call(h http.Handler, cookieName, token, path string) (int, string) {
	req := httptest.NewRequest(http.MethodPost, path, nil)
	if token != "" {
		req.AddCookie(&http.Cookie{Name: cookieName, Value: token})
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	for _, c := range rec.Result().Cookies() {
		if c.Name == cookieName {
			token = c.Value
		}
	}
	return rec.Code, token
}

// lostUpdates makes sessions, each then set a distinct key by concurrent
// requests, and counts the keys missing afterwards.
func lostUpdates(sm sessionAPI, mw func(http.Handler) http.Handler, cookie string, sessions, concurrent int) (int, error) {
	h := sessionServer(sm, mw)
	lost := 0
	for range sessions {
		code, token := call(h, cookie, "", "/put?k=first")
		if code != 200 || token == "" {
			return 0, fmt.Errorf("first request: %d", code)
		}
		var wg sync.WaitGroup
		for i := range concurrent {
			wg.Go(func() { call(h, cookie, token, "/put?k=k"+strconv.Itoa(i)) })
		}
		wg.Wait()
		for i := range concurrent {
			if code, _ := call(h, cookie, token, "/has?k=k"+strconv.Itoa(i)); code != 200 {
				lost++
			}
		}
	}
	return lost, nil
}

// perRequest measures the time per load-modify-save request with 8
// clients, each on its own session, for a second.
func perRequest(sm sessionAPI, mw func(http.Handler) http.Handler, cookie, path string) (time.Duration, error) {
	h := sessionServer(sm, mw)
	var n atomic.Int64
	var firstErr atomic.Value
	stop := time.Now().Add(time.Second)
	start := time.Now()
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			_, token := call(h, cookie, "", path)
			for time.Now().Before(stop) {
				code, t := call(h, cookie, token, path)
				if code != 200 {
					firstErr.CompareAndSwap(nil, fmt.Errorf("status %d", code))
					return
				}
				token = t
				n.Add(1)
			}
		})
	}
	wg.Wait()
	if err, _ := firstErr.Load().(error); err != nil {
		return 0, err
	}
	return time.Since(start) * 8 / time.Duration(max(1, n.Load())), nil
}

// failoverLogins logs users in continuously, kills the Redis master half
// way, and counts the logins that were acknowledged (200) but whose
// session is gone after Sentinel's failover.
func failoverLogins(ctx context.Context, log *slog.Logger) (lost, acked int, err error) {
	rd, err := hatest.StartRedis(ctx, hatest.RedisOptions{Replicas: 1, Sentinels: 3})
	if err != nil {
		return 0, 0, err
	}
	defer rd.Close()
	rdb := redis.NewFailoverClient(&redis.FailoverOptions{MasterName: rd.MasterName, SentinelAddrs: rd.SentinelAddrs(),
		DialTimeout: 300 * time.Millisecond, ReadTimeout: 300 * time.Millisecond, WriteTimeout: 300 * time.Millisecond, MaxRetries: -1})
	defer rdb.Close()
	m, err := session.New(session.Config{Store: session.NewRedisStore(rdb, session.RedisOptions{Logger: log}), Insecure: true, Logger: log})
	if err != nil {
		return 0, 0, err
	}
	h := sessionServer(m, m.LoadAndSave)
	var tokens []string
	loginSome := func(n int) {
		for range n {
			if code, token := call(h, m.CookieName(), "", "/login"); code == 200 && token != "" {
				tokens = append(tokens, token)
			}
		}
	}
	loginSome(200)
	done := make(chan error, 1)
	go func() {
		old, err := rd.KillMaster(ctx)
		if err == nil {
			wctx, cancel := context.WithTimeout(ctx, time.Minute)
			_, err = rd.WaitFailover(wctx, old)
			cancel()
		}
		done <- err
	}()
	loginSome(200) // some during the kill and the failover (503s are not acknowledged)
	if err := <-done; err != nil {
		return 0, 0, err
	}
	loginSome(50)
	for _, token := range tokens {
		req := httptest.NewRequest(http.MethodGet, "/has?k=user", nil)
		req.AddCookie(&http.Cookie{Name: m.CookieName(), Value: token})
		var code int
		for range 50 { // until the failover client has the new master
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if code = rec.Code; code != http.StatusServiceUnavailable {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if code != 200 {
			lost++
		}
	}
	return lost, len(tokens), nil
}
