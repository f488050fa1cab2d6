package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/redis/go-redis/v9"

	"hakit.dev/hakit"
)

// throttle counts failed attempts (passwords, client secrets) in Redis,
// per account or client and per client address, in fixed windows, so the
// limit holds across every instance. Past the limit, attempts are refused
// with 429 and Retry-After until the window ends, before any password is
// checked. A Redis outage lets attempts through (logged): the provider
// stays up.
type throttle struct {
	rdb    redis.UniversalClient
	window time.Duration
	perKey int64 // failures per account or client per window
	perIP  int64 // failures per client address per window
	log    *slog.Logger
}

func throttleKey(kind, v string) string {
	h := sha256.Sum256([]byte(v)) // no addresses or e-mails in Redis keys
	return "sso:fail:" + kind + ":" + hex.EncodeToString(h[:12])
}

// blocked returns how long the attempt must wait, or 0.
func (th *throttle) blocked(ctx context.Context, kind, key string, ip string) time.Duration {
	if th == nil || th.rdb == nil {
		return 0
	}
	keys := []string{throttleKey(kind, key), throttleKey("ip", ip)}
	limits := []int64{th.perKey, th.perIP}
	pipe := th.rdb.Pipeline()
	gets := make([]*redis.StringCmd, len(keys))
	ttls := make([]*redis.DurationCmd, len(keys))
	for i, k := range keys {
		gets[i] = pipe.Get(ctx, k)
		ttls[i] = pipe.PTTL(ctx, k)
	}
	if _, err := pipe.Exec(ctx); err != nil && err != redis.Nil {
		th.log.WarnContext(ctx, "throttle: redis unavailable; not throttling", "err", err)
		return 0
	}
	var wait time.Duration
	for i := range keys {
		n, _ := gets[i].Int64()
		if n >= limits[i] {
			wait = max(wait, ttls[i].Val(), time.Second)
		}
	}
	return wait
}

// failed records a failed attempt.
func (th *throttle) failed(ctx context.Context, kind, key, ip string) {
	if th == nil || th.rdb == nil {
		return
	}
	pipe := th.rdb.Pipeline()
	for _, k := range []string{throttleKey(kind, key), throttleKey("ip", ip)} {
		pipe.Incr(ctx, k)
		pipe.ExpireNX(ctx, k, th.window)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		th.log.WarnContext(ctx, "throttle: cannot count a failure", "err", err)
	}
}

// tooMany answers 429 with Retry-After.
func tooMany(w http.ResponseWriter, r *http.Request, wait time.Duration) {
	hakit.Error(w, r, &hakit.HTTPError{Status: http.StatusTooManyRequests, RetryAfter: wait,
		Message: fmt.Sprintf("Too many failed attempts. Try again in %d seconds.", int(wait.Seconds()+0.999))})
}

// clientIP is the client's address as hakit's trusted-proxy handling sees it.
func clientIP(r *http.Request) string { return hakit.ClientIP(r.Context()).String() }

// tokenThrottle refuses token requests of a client (or from an address)
// that failed client authentication too often: a secret cannot be
// guessed at speed.
func (th *throttle) tokenThrottle(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, _, ok := r.BasicAuth()
		if !ok {
			id = r.PostFormValue("client_id")
		}
		if wait := th.blocked(r.Context(), "client", id, clientIP(r)); wait > 0 {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Retry-After", fmt.Sprint(int(wait.Seconds()+0.999)))
			w.WriteHeader(http.StatusTooManyRequests)
			fmt.Fprint(w, `{"error":"slow_down","error_description":"too many failed client authentications"}`)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// take counts one use of something limited per key and per client address
// (mails sent: a verification link again, a password reset) and returns
// how long to wait when either count is past its limit in the window, or
// 0. Every call counts, refused ones included, so hammering keeps the
// window shut. A Redis outage lets the use through (logged).
func (th *throttle) take(ctx context.Context, kind, key, ip string, perKey, perIP int64) time.Duration {
	if th == nil || th.rdb == nil {
		return 0
	}
	keys := []string{throttleKey(kind, key), throttleKey(kind+"-ip", ip)}
	limits := []int64{perKey, perIP}
	pipe := th.rdb.Pipeline()
	incrs := make([]*redis.IntCmd, len(keys))
	ttls := make([]*redis.DurationCmd, len(keys))
	for i, k := range keys {
		incrs[i] = pipe.Incr(ctx, k)
		pipe.ExpireNX(ctx, k, th.window)
		ttls[i] = pipe.PTTL(ctx, k)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		th.log.WarnContext(ctx, "throttle: redis unavailable; not throttling", "kind", kind, "err", err)
		return 0
	}
	var wait time.Duration
	for i := range keys {
		if incrs[i].Val() > limits[i] {
			wait = max(wait, ttls[i].Val(), time.Second)
		}
	}
	return wait
}
