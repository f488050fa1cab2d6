package session

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/alexedwards/scs/v2"
)

// Config configures a Manager. Only Store is required; every other field
// documents its default.
type Config struct {
	// Store keeps the sessions: NewRedisStore, NewPostgresStore, or
	// NewMemoryStore (development only). Required.
	Store Store

	// Lifetime is the absolute lifetime of a session, renewed by
	// RenewToken. Defaults to 24h.
	Lifetime time.Duration

	// IdleTimeout ends a session not used for this long. Defaults to 2h;
	// negative means none.
	IdleTimeout time.Duration

	// CookieName names the session cookie. Defaults to "session", with
	// the __Host- prefix when the cookie is Secure (the browser then
	// refuses it unless it is Secure, host-only and for path /, so a
	// sibling subdomain cannot plant one).
	CookieName string

	// Insecure drops the Secure attribute (and the __Host- prefix), so the
	// cookie travels over plain http. For local development only.
	Insecure bool

	// Unavailable answers requests when the store cannot be reached (load
	// or save). Defaults to 503 Service Unavailable with Retry-After:
	// RetryAfter, plain text.
	Unavailable http.Handler

	// RetryAfter is the Retry-After of the default Unavailable answer.
	// Defaults to 1s.
	RetryAfter time.Duration

	// Logger receives store failures and dropped corrupt sessions.
	// Defaults to slog.Default().
	Logger *slog.Logger
}

// Manager is scs's SessionManager — Get, Put, Pop, Remove, RenewToken,
// Destroy and the rest work as in scs — with hakit's defaults, key-by-key
// saving (two concurrent requests of one session that change different keys
// both keep their change; for the same key the request that saves last
// wins), and a LoadAndSave that answers 503 instead of running a request
// without its session when the store is down.
type Manager struct {
	*scs.SessionManager
	store       Store
	log         *slog.Logger
	unavailable http.Handler
}

// New returns a Manager.
func New(cfg Config) (*Manager, error) {
	if cfg.Store == nil {
		return nil, errors.New("session: Config.Store is nil")
	}
	if cfg.Lifetime == 0 {
		cfg.Lifetime = 24 * time.Hour
	}
	if cfg.Lifetime < 0 {
		return nil, fmt.Errorf("session: negative Config.Lifetime (%s)", cfg.Lifetime)
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = 2 * time.Hour
	}
	if cfg.RetryAfter <= 0 {
		cfg.RetryAfter = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	// Not scs.New: it starts a cleanup goroutine for a memory store the
	// Manager never uses, which cannot be stopped without a data race.
	// The price: the scs context key is the same for every Manager, so do
	// not nest two Managers' LoadAndSave around one handler.
	sm := &scs.SessionManager{}
	sm.Store = bridge{store: cfg.Store}
	sm.Codec = codec{}
	sm.Lifetime = cfg.Lifetime
	if cfg.IdleTimeout > 0 {
		sm.IdleTimeout = cfg.IdleTimeout
	}
	sm.Cookie.HttpOnly = true
	sm.Cookie.SameSite = http.SameSiteLaxMode
	sm.Cookie.Path = "/"
	sm.Cookie.Domain = ""
	sm.Cookie.Secure = !cfg.Insecure
	sm.Cookie.Persist = true
	name := cfg.CookieName
	if name == "" {
		name = "session"
	}
	if sm.Cookie.Secure {
		name = "__Host-" + name
	}
	sm.Cookie.Name = name
	m := &Manager{SessionManager: sm, store: cfg.Store, log: cfg.Logger, unavailable: cfg.Unavailable}
	if m.unavailable == nil {
		retry := strconv.Itoa(int((cfg.RetryAfter + time.Second - 1) / time.Second))
		m.unavailable = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Retry-After", retry)
			http.Error(w, "the session store is unavailable; try again in a moment", http.StatusServiceUnavailable)
		})
	}
	sm.ErrorFunc = func(w http.ResponseWriter, r *http.Request, err error) {
		m.log.Error("session: store unavailable", "err", err)
		m.unavailable.ServeHTTP(w, r)
	}
	return m, nil
}

// Store returns the Manager's store.
func (m *Manager) Store() Store { return m.store }

// Durable marks the request's session change as one that must survive a
// store failover (see RedisOptions.WaitReplicas). RenewToken and Destroy
// are durable anyway.
func (m *Manager) Durable(ctx context.Context) {
	if l := loadedFrom(ctx); l != nil {
		l.mu.Lock()
		l.durable = true
		l.mu.Unlock()
	}
}

// validToken reports whether a cookie value could be a token the Manager
// made (32 random bytes, base64url: 43 characters). Anything else is not
// looked up: it gets a fresh session.
func validToken(t string) bool {
	if len(t) != 43 {
		return false
	}
	for i := 0; i < len(t); i++ {
		c := t[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// LoadAndSave is middleware that loads the request's session before the
// handler runs and saves its changes before the response starts, as
// scs's does, with these differences:
//
//   - when the store cannot be reached, the handler does not run (it would
//     see an empty session and could save it over the real one) and the
//     client gets Config.Unavailable (503 with Retry-After); a save that
//     fails replaces the response the same way, if it has not started;
//   - a forged, malformed or unknown cookie gets a fresh session;
//   - a session that cannot be decoded (corrupt, or from an incompatible
//     version) is dropped and logged, and a fresh one starts;
//   - only the keys the request changed are saved (see Manager).
func (m *Manager) LoadAndSave(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Add("Vary", "Cookie")
		token := ""
		if c, err := r.Cookie(m.Cookie.Name); err == nil && validToken(c.Value) {
			token = c.Value
		}
		base := context.WithValue(r.Context(), loadedKey{}, &loaded{})
		ctx, err := m.Load(base, token)
		if err != nil && errors.Is(err, errCorrupt) {
			m.log.Warn("session: dropping a session that cannot be decoded", "err", err)
			if derr := m.store.Delete(base, token, false); derr != nil {
				m.log.Warn("session: could not delete the corrupt session", "err", derr)
			}
			ctx, err = m.Load(base, "")
		}
		if err != nil {
			m.log.Error("session: store unavailable; not running the request", "err", err, "path", r.URL.Path)
			m.unavailable.ServeHTTP(w, r)
			return
		}
		sr := r.WithContext(ctx)
		sw := &saveWriter{ResponseWriter: w, r: sr, m: m}
		next.ServeHTTP(sw, sr)
		if !sw.started {
			sw.save()
		}
	})
}

// saveWriter saves the session when the response starts, since the cookie
// must go out with the headers.
type saveWriter struct {
	http.ResponseWriter
	r       *http.Request
	m       *Manager
	started bool
	failed  bool // the save failed and the 503 went out instead
}

// save commits the session and writes the cookie, or answers 503.
func (w *saveWriter) save() {
	w.started = true
	ctx := w.r.Context()
	switch w.m.Status(ctx) {
	case scs.Modified:
		token, expiry, err := w.m.Commit(ctx)
		if err != nil {
			w.failed = true
			w.m.log.Error("session: saving failed; answering 503", "err", err, "path", w.r.URL.Path)
			w.m.unavailable.ServeHTTP(w.ResponseWriter, w.r)
			return
		}
		if l := loadedFrom(ctx); l != nil && l.gone {
			// Destroyed or renewed meanwhile by another request: its
			// token means nothing any more.
			w.m.WriteSessionCookie(ctx, w.ResponseWriter, "", time.Time{})
			return
		}
		w.m.WriteSessionCookie(ctx, w.ResponseWriter, token, expiry)
	case scs.Destroyed:
		w.m.WriteSessionCookie(ctx, w.ResponseWriter, "", time.Time{})
	}
}

func (w *saveWriter) WriteHeader(code int) {
	if !w.started {
		w.save()
	}
	if !w.failed {
		w.ResponseWriter.WriteHeader(code)
	}
}

func (w *saveWriter) Write(b []byte) (int, error) {
	if !w.started {
		w.save()
	}
	if w.failed {
		return len(b), nil // the handler's response is dropped: the 503 went out
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the server's writer.
func (w *saveWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
