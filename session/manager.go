package session

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/alexedwards/scs/v2"
	"github.com/prometheus/client_golang/prometheus"
)

// Config configures a Manager. Only Store is required; every other field
// documents its default.
type Config struct {
	// Store keeps the sessions: NewRedisStore, NewPostgresStore, or
	// NewMemoryStore (development only). Required.
	Store Store

	// Lifetime is the absolute lifetime of a session, renewed by
	// RenewToken. The cookie lasts as long. Defaults to 24h.
	Lifetime time.Duration

	// IdleTimeout ends a session not used for this long: every request
	// of the session extends its expiry in the store. Defaults to 2h;
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

	// SaveTimeout bounds each save of a request's session. A save does
	// not run on the request's context: it is kept when the client goes
	// away or the request's deadline (hakit's RequestTimeout) passes
	// after the handler changed the session; SaveTimeout bounds it
	// instead, as far as the store honours its context (pgx does; a
	// go-redis client only with ContextTimeoutEnabled, else its
	// ReadTimeout and WriteTimeout bound each command). Loading the
	// session uses the request's context. Defaults to 5s; negative is an
	// error.
	SaveTimeout time.Duration
}

// Manager manages sessions in a shared store: its LoadAndSave middleware
// loads a request's session and saves what the request changed, and its
// methods (Get, Put, Pop, Remove, RenewToken, Destroy and the rest, as in
// scs) read and change the session of a request's context.
//
// It saves key by key: a key is saved only if the request changed its
// value, so concurrent requests of one session that change different keys
// both keep their change, and a request that only read a key never writes
// it back. For the same key, the request that saves last wins.
//
// Where a context has no session of the Manager's (code outside its
// LoadAndSave, such as an error page answering a request that never
// reached it), the getters return zero values, Put, Flash and BeforeSave
// do nothing and log a warning, and Clear, RenewToken, Destroy, Login and
// Logout return [ErrNoSession]; nothing panics.
//
// A Manager is a prometheus.Collector of its metrics (saves by result,
// store errors); register it to export them (hakit.App.UseSessions does).
type Manager struct {
	sm          *scs.SessionManager // per-request values, tokens, the cookie's format
	store       Store
	idle        time.Duration // 0: no idle timeout
	log         *slog.Logger
	unavailable http.Handler
	saveTimeout time.Duration
	metrics     *metrics
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
	if cfg.SaveTimeout == 0 {
		cfg.SaveTimeout = 5 * time.Second
	}
	if cfg.SaveTimeout < 0 {
		return nil, fmt.Errorf("session: negative Config.SaveTimeout (%s)", cfg.SaveTimeout)
	}
	if cfg.RetryAfter <= 0 {
		cfg.RetryAfter = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	m := &Manager{store: cfg.Store, log: cfg.Logger, unavailable: cfg.Unavailable, saveTimeout: cfg.SaveTimeout, metrics: newMetrics()}
	if cfg.IdleTimeout > 0 {
		m.idle = cfg.IdleTimeout
	}
	// Not scs.New: it starts a cleanup goroutine for a memory store the
	// Manager never uses, which cannot be stopped without a data race.
	// scs's context key is then the same for every Manager, so scs's
	// per-request data is kept in a context of its own for each Manager
	// (request.sctx), never in the request's.
	//
	// scs's IdleTimeout stays 0: with it, scs marks every loaded session
	// modified, and the Manager decides by itself what changed.
	sm := &scs.SessionManager{Store: bridge{m: m}, Codec: codec{}, Lifetime: cfg.Lifetime}
	sm.Cookie.HttpOnly = true
	sm.Cookie.SameSite = http.SameSiteLaxMode
	sm.Cookie.Path = "/"
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
	m.sm = sm
	if m.unavailable == nil {
		retry := strconv.Itoa(int((cfg.RetryAfter + time.Second - 1) / time.Second))
		m.unavailable = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Retry-After", retry)
			http.Error(w, "the session store is unavailable; try again in a moment", http.StatusServiceUnavailable)
		})
	}
	return m, nil
}

// Store returns the Manager's store.
func (m *Manager) Store() Store { return m.store }

// CookieName returns the name of the session cookie (with its __Host-
// prefix when it has one).
func (m *Manager) CookieName() string { return m.sm.Cookie.Name }

// request is the session of one request: scs's data for it and what the
// Manager needs to save it.
type request struct {
	sctx context.Context // holds scs's session data for this request

	mu      sync.Mutex
	token   string            // the token the store has the session under, "" if none
	base    map[string][]byte // its values as loaded or last saved, to tell what changed
	cookie  string            // the token the browser has (sent and found, or set by this response)
	durable bool
	gone    bool     // the store said the session was gone when saving
	hooks   []func() // BeforeSave
	writes  int      // calls that change the session
	saved   int      // writes at the last save
}

// stateKey is the context key of a Manager's request state: one per
// Manager, so two Managers' LoadAndSave can be nested.
type stateKey struct{ m *Manager }

// stateIn returns the request state m's LoadAndSave put in ctx, if any.
func (m *Manager) stateIn(ctx context.Context) (*request, bool) {
	st, ok := ctx.Value(stateKey{m}).(*request)
	return st, ok
}

// ErrNoSession is what the Manager's methods that must change the store
// (Clear, RenewToken, Destroy, and so Login and Logout) return when the
// context has no session: the code runs outside the Manager's LoadAndSave
// (an error page answering the CSRF 403, a panic's 500 or the 503 while
// starting, which run before or after it), or behind another Manager's.
// It is a programmer's error: hakit.Error answers it with 500.
var ErrNoSession = errors.New("session: no session in the context: is the code behind this Manager's LoadAndSave?")

// sctx returns the context holding scs's data of the request's session,
// or nil when ctx has none (outside LoadAndSave, or while it loads).
func (m *Manager) sctx(ctx context.Context) context.Context {
	if st, ok := m.stateIn(ctx); ok && st.sctx != nil {
		return st.sctx
	}
	return nil
}

// changed counts a call that changes the session, for saving changes made
// after the response started, and returns the context holding scs's data
// of the session, or nil when ctx has none.
func (m *Manager) changed(ctx context.Context) context.Context {
	st, ok := m.stateIn(ctx)
	if !ok || st.sctx == nil {
		return nil
	}
	st.mu.Lock()
	st.writes++
	st.mu.Unlock()
	return st.sctx
}

// dropped logs a change made where there is no session.
func (m *Manager) dropped(ctx context.Context, what string) {
	m.log.WarnContext(ctx, "session: "+what+" outside LoadAndSave; ignored (the context has no session)")
}

// Get returns the value of key, or nil. Values come out as they were put
// (a value of a gob-encoded type after the session was stored: the type
// registered with gob.Register). Changing a map or slice got from the
// session changes the session, as with Put, until the response starts.
//
// Outside LoadAndSave (an error page answering a request that never
// reached it, such as hakit's CSRF 403, a panic's 500 or the 503 while
// starting) there is no session: Get and the other getters (GetString,
// Exists, Keys, Token, Deadline, UserID, Flashes, …) return zero values,
// as for an empty session, and never panic.
func (m *Manager) Get(ctx context.Context, key string) any {
	sctx := m.sctx(ctx)
	if sctx == nil {
		return nil
	}
	return m.sm.Get(sctx, key)
}

// Put sets key to val. val must be a string, []byte, bool, int, int64,
// float64, time.Time or a type registered with gob.Register. Outside
// LoadAndSave it does nothing and logs a warning (as does Flash).
func (m *Manager) Put(ctx context.Context, key string, val any) {
	sctx := m.changed(ctx)
	if sctx == nil {
		m.dropped(ctx, "Put of "+strconv.Quote(key))
		return
	}
	m.sm.Put(sctx, key, val)
}

// Pop returns the value of key and removes it, or returns nil (always
// outside LoadAndSave).
func (m *Manager) Pop(ctx context.Context, key string) any {
	sctx := m.changed(ctx)
	if sctx == nil {
		return nil
	}
	return m.sm.Pop(sctx, key)
}

// Remove removes key; a missing key is not an error. Outside LoadAndSave
// it does nothing.
func (m *Manager) Remove(ctx context.Context, key string) {
	if sctx := m.changed(ctx); sctx != nil {
		m.sm.Remove(sctx, key)
	}
}

// Clear removes every key; the token and deadline stay. It returns
// [ErrNoSession] outside LoadAndSave.
func (m *Manager) Clear(ctx context.Context) error {
	sctx := m.changed(ctx)
	if sctx == nil {
		return ErrNoSession
	}
	return m.sm.Clear(sctx)
}

// Exists reports whether key is set.
func (m *Manager) Exists(ctx context.Context, key string) bool {
	sctx := m.sctx(ctx)
	return sctx != nil && m.sm.Exists(sctx, key)
}

// Keys returns the session's keys, sorted.
func (m *Manager) Keys(ctx context.Context) []string {
	sctx := m.sctx(ctx)
	if sctx == nil {
		return []string{}
	}
	return m.sm.Keys(sctx)
}

// RenewToken gives the session a new token, keeping its values, and
// deletes the old one from the store (confirmed on a replica where the
// store can). Call it on every privilege change (login, logout, role
// change) against session fixation. The new session gets a new Lifetime.
// It returns the store's error when the old token cannot be deleted:
// answer 503 then; and [ErrNoSession] outside LoadAndSave.
func (m *Manager) RenewToken(ctx context.Context) error {
	sctx := m.changed(ctx)
	if sctx == nil {
		return ErrNoSession
	}
	if err := m.sm.RenewToken(sctx); err != nil {
		return err
	}
	// Durable even when the session is new (a browser's first request is
	// its login): the store cannot tell a renewal from a token it has
	// never seen.
	m.Durable(ctx)
	return nil
}

// Destroy deletes the session from the store and expires the cookie; a
// later Put in the same request starts a new session. It returns the
// store's error when the session cannot be deleted, and [ErrNoSession]
// outside LoadAndSave.
func (m *Manager) Destroy(ctx context.Context) error {
	sctx := m.changed(ctx)
	if sctx == nil {
		return ErrNoSession
	}
	return m.sm.Destroy(sctx)
}

// Token returns the session's token: "" for a session that has not been
// stored yet (and outside LoadAndSave).
func (m *Manager) Token(ctx context.Context) string {
	sctx := m.sctx(ctx)
	if sctx == nil {
		return ""
	}
	return m.sm.Token(sctx)
}

// Deadline returns the session's absolute deadline (Config.Lifetime after
// it was made or its token renewed); the zero time outside LoadAndSave.
func (m *Manager) Deadline(ctx context.Context) time.Time {
	sctx := m.sctx(ctx)
	if sctx == nil {
		return time.Time{}
	}
	return m.sm.Deadline(sctx)
}

func as[T any](v any) T {
	t, _ := v.(T)
	return t
}

// GetString returns the string value of key, or "".
func (m *Manager) GetString(ctx context.Context, key string) string {
	return as[string](m.Get(ctx, key))
}

// GetBool returns the bool value of key, or false.
func (m *Manager) GetBool(ctx context.Context, key string) bool { return as[bool](m.Get(ctx, key)) }

// GetInt returns the int value of key, or 0.
func (m *Manager) GetInt(ctx context.Context, key string) int { return as[int](m.Get(ctx, key)) }

// GetInt64 returns the int64 value of key, or 0.
func (m *Manager) GetInt64(ctx context.Context, key string) int64 { return as[int64](m.Get(ctx, key)) }

// GetFloat returns the float64 value of key, or 0.
func (m *Manager) GetFloat(ctx context.Context, key string) float64 {
	return as[float64](m.Get(ctx, key))
}

// GetBytes returns the []byte value of key, or nil.
func (m *Manager) GetBytes(ctx context.Context, key string) []byte {
	return as[[]byte](m.Get(ctx, key))
}

// GetTime returns the time.Time value of key, or the zero time.
func (m *Manager) GetTime(ctx context.Context, key string) time.Time {
	return as[time.Time](m.Get(ctx, key))
}

// PopString returns the string value of key, or "", and removes the key.
func (m *Manager) PopString(ctx context.Context, key string) string {
	return as[string](m.Pop(ctx, key))
}

// PopBool returns the bool value of key, or false, and removes the key.
func (m *Manager) PopBool(ctx context.Context, key string) bool { return as[bool](m.Pop(ctx, key)) }

// PopInt returns the int value of key, or 0, and removes the key.
func (m *Manager) PopInt(ctx context.Context, key string) int { return as[int](m.Pop(ctx, key)) }

// PopInt64 returns the int64 value of key, or 0, and removes the key.
func (m *Manager) PopInt64(ctx context.Context, key string) int64 { return as[int64](m.Pop(ctx, key)) }

// PopFloat returns the float64 value of key, or 0, and removes the key.
func (m *Manager) PopFloat(ctx context.Context, key string) float64 {
	return as[float64](m.Pop(ctx, key))
}

// PopBytes returns the []byte value of key, or nil, and removes the key.
func (m *Manager) PopBytes(ctx context.Context, key string) []byte {
	return as[[]byte](m.Pop(ctx, key))
}

// PopTime returns the time.Time value of key, or the zero time, and
// removes the key.
func (m *Manager) PopTime(ctx context.Context, key string) time.Time {
	return as[time.Time](m.Pop(ctx, key))
}

// Durable marks the request's session change as one that must survive a
// store failover (see RedisOptions.WaitReplicas). RenewToken and Destroy
// are durable anyway. Outside LoadAndSave it does nothing.
func (m *Manager) Durable(ctx context.Context) {
	st, ok := m.stateIn(ctx)
	if !ok || st.sctx == nil {
		return
	}
	st.mu.Lock()
	st.durable = true
	st.mu.Unlock()
}

// BeforeSave registers fn to run just before the request's session is
// saved, so fn can put what the request did (hakit keeps the commit
// position of the request's database writes this way). The session is
// saved before the response's headers go out (on the first Write, Flush
// or WriteHeader of a final status, or when the handler returns), and, if
// the response started before the handler returned, once more then: fn
// runs each time. fn runs on the goroutine that writes the response.
// Outside LoadAndSave nothing is saved: fn never runs, and a warning is
// logged.
func (m *Manager) BeforeSave(ctx context.Context, fn func()) {
	st, ok := m.stateIn(ctx)
	if !ok || st.sctx == nil {
		m.dropped(ctx, "BeforeSave")
		return
	}
	st.mu.Lock()
	st.hooks = append(st.hooks, fn)
	st.mu.Unlock()
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
// handler runs and saves its changes before the response's headers go
// out, as scs's does, with these differences:
//
//   - when the store cannot be reached, the handler does not run (it would
//     see an empty session and could save it over the real one) and the
//     client gets Config.Unavailable (503 with Retry-After); a save that
//     fails before the response started replaces the response the same
//     way (the handler's later writes and flushes return an error);
//   - only the keys whose value the request changed are saved; a request
//     that changed nothing only extends the session's expiry in the store,
//     and if that fails the response stands (the failure is logged);
//   - the session cookie is sent only when the token changes (a new
//     session, RenewToken) or the request destroys its session: a request
//     in flight while another renews or destroys the session never sends
//     the browser a stale or expiring cookie;
//   - the session is saved on a context detached from the request's,
//     bounded by Config.SaveTimeout, so a change is kept when the client
//     goes away or the request's deadline passes after the handler made
//     it (the load uses the request's context);
//   - an interim response (WriteHeader with a 1xx status but 101, such
//     as 103 Early Hints) goes out without saving the session, which can
//     still change; its cookie goes with the final response;
//   - a flush (http.Flusher or http.ResponseController) saves the session
//     first, as a Write does; changes made after the response started are
//     saved when the handler returns (of a session whose cookie the
//     browser already has; others are logged and dropped), and if that
//     save fails the failure is logged and the response is aborted
//     (http.ErrAbortHandler), so the client does not take it as complete;
//   - a forged, malformed or unknown cookie gets a fresh session;
//   - a session that cannot be decoded (corrupt, or from an incompatible
//     version) is dropped and logged, and a fresh one starts.
func (m *Manager) LoadAndSave(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Add("Vary", "Cookie")
		token := ""
		if c, err := r.Cookie(m.sm.Cookie.Name); err == nil && validToken(c.Value) {
			token = c.Value
		}
		st := &request{}
		ctx := context.WithValue(r.Context(), stateKey{m}, st)
		sctx, err := m.sm.Load(ctx, token)
		if err != nil && errors.Is(err, errCorrupt) {
			m.log.Warn("session: dropping a session that cannot be decoded", "err", err)
			if derr := m.store.Delete(ctx, token, false); derr != nil {
				m.metrics.deleteErr.Inc()
				m.log.Warn("session: could not delete the corrupt session", "err", derr)
			}
			st.token, st.base = "", nil
			sctx, err = m.sm.Load(ctx, "")
		}
		if err != nil {
			m.metrics.loadErr.Inc()
			m.log.Error("session: store unavailable; not running the request", "err", err, "path", r.URL.Path)
			m.unavailable.ServeHTTP(w, r)
			return
		}
		st.sctx, st.cookie = sctx, st.token
		sr := r.WithContext(ctx)
		sw := &saveWriter{ResponseWriter: w, r: sr, m: m, st: st}
		next.ServeHTTP(sw, sr)
		sw.finish()
	})
}

// save saves the request's session. The first save (late=false) happens
// before the response's headers go out and writes the cookie to h when the
// token changed; a late save, after the response started, saves only what
// changed since and cannot send a cookie.
func (m *Manager) save(st *request, h http.Header, late bool) error {
	st.mu.Lock()
	hooks := st.hooks
	st.mu.Unlock()
	for _, fn := range hooks {
		fn()
	}
	ctx := st.sctx
	st.mu.Lock()
	unchanged, cookie := st.writes == st.saved, st.cookie
	st.saved = st.writes
	st.mu.Unlock()
	if late && unchanged {
		return nil // nothing changed since the response started
	}
	status, token := m.sm.Status(ctx), m.sm.Token(ctx)
	switch {
	case status == scs.Destroyed:
		// Deleted from the store by Destroy; tell the browser.
		if !late {
			m.writeCookie(ctx, h, "", time.Time{})
		}
		return nil
	case token == "" && status == scs.Unmodified:
		return nil // no session, and nothing to keep
	case late && (token == "" || token != cookie):
		// A new session, or a token renewed after the headers went out:
		// the browser cannot learn its token.
		m.log.Warn("session: changed after the response started, too late to send its new cookie; the change is not saved")
		return nil
	}
	token, err := m.commit(ctx)
	if err != nil || late {
		return err
	}
	st.mu.Lock()
	set := !st.gone && token != st.cookie
	if set {
		st.cookie = token
	}
	st.mu.Unlock()
	if set {
		m.writeCookie(ctx, h, token, m.sm.Deadline(ctx))
	}
	return nil
}

// commit writes the request's session (held in sctx) to the store. Not on
// the request's context: what the handler did must be kept also when the
// client went away or the request's deadline passed after the handler's
// change (a route that lifted hakit's RequestTimeout for its handler still
// has it on the context LoadAndSave got). Bounded by SaveTimeout instead.
func (m *Manager) commit(sctx context.Context) (string, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(sctx), m.saveTimeout)
	defer cancel()
	token, _, err := m.sm.Commit(ctx)
	return token, err
}

// writeCookie sets the session cookie in h: token until expiry, or, with
// a zero expiry, an expired one that makes the browser forget it.
func (m *Manager) writeCookie(ctx context.Context, h http.Header, token string, expiry time.Time) {
	m.sm.WriteSessionCookie(ctx, headerWriter(h), token, expiry)
}

// headerWriter lends a header to scs's WriteSessionCookie, which only
// touches the header.
type headerWriter http.Header

func (h headerWriter) Header() http.Header       { return http.Header(h) }
func (headerWriter) Write(b []byte) (int, error) { return len(b), nil }
func (headerWriter) WriteHeader(int)             {}

// errReplaced is what a handler's writes and flushes return once a failed
// save has replaced its response.
var errReplaced = errors.New("session: the session could not be saved; the response was replaced by the Unavailable answer")

// saveWriter saves the session before the response's headers go out, since
// the cookie must go with them.
type saveWriter struct {
	http.ResponseWriter
	r       *http.Request
	m       *Manager
	st      *request
	started bool
	failed  bool // the save failed and the Unavailable answer went out instead
}

func (w *saveWriter) start() {
	if w.started {
		return
	}
	w.started = true
	if err := w.m.save(w.st, w.ResponseWriter.Header(), false); err != nil {
		w.failed = true
		w.m.log.Error("session: saving failed; answering 503", "err", err, "path", w.r.URL.Path)
		w.m.unavailable.ServeHTTP(w.ResponseWriter, w.r)
	}
}

// finish runs when the handler returns: it saves the session if the
// response has not started, or what changed since it started.
func (w *saveWriter) finish() {
	if !w.started {
		w.start()
		return
	}
	if w.failed {
		return
	}
	if err := w.m.save(w.st, nil, true); err != nil {
		w.m.log.Error("session: saving a change made after the response started failed; aborting the response",
			"err", err, "path", w.r.URL.Path)
		panic(http.ErrAbortHandler)
	}
}

func (w *saveWriter) WriteHeader(code int) {
	if !w.started && informational(code) {
		// 103 Early Hints and the like: the final response, and with it
		// the session's cookie, comes later, so the session may still
		// change.
		w.ResponseWriter.WriteHeader(code)
		return
	}
	w.start()
	if !w.failed {
		w.ResponseWriter.WriteHeader(code)
	}
}

// informational reports whether code is a 1xx status that net/http sends
// as an interim response (101 Switching Protocols is a final one).
func informational(code int) bool {
	return code >= 100 && code < 200 && code != http.StatusSwitchingProtocols
}

func (w *saveWriter) Write(b []byte) (int, error) {
	w.start()
	if w.failed {
		return 0, errReplaced
	}
	return w.ResponseWriter.Write(b)
}

// FlushError saves the session, then flushes: http.ResponseController
// calls it.
func (w *saveWriter) FlushError() error {
	w.start()
	if w.failed {
		return errReplaced
	}
	return http.NewResponseController(w.ResponseWriter).Flush()
}

// Flush implements http.Flusher, for handlers that assert it.
func (w *saveWriter) Flush() { _ = w.FlushError() }

// Unwrap lets http.ResponseController reach the server's writer for what
// the saveWriter does not do itself (deadlines, hijacking).
func (w *saveWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// metrics are a Manager's counters, their children resolved once.
type metrics struct {
	saves, errs                           *prometheus.CounterVec
	changed, touched, dropped             prometheus.Counter
	loadErr, saveErr, touchErr, deleteErr prometheus.Counter
}

func newMetrics() *metrics {
	m := &metrics{
		saves: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "hakit", Subsystem: "session", Name: "saves_total",
			Help: "Sessions saved at the end of a request, by result: changed (some keys written), touched (only the expiry extended), dropped (the session was destroyed or renewed meanwhile; the request's change was not kept)."},
			[]string{"result"}),
		errs: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "hakit", Subsystem: "session", Name: "store_errors_total",
			Help: "Session store failures, by operation: load, save, touch (extending the expiry), delete."},
			[]string{"op"}),
	}
	m.changed, m.touched, m.dropped = m.saves.WithLabelValues("changed"), m.saves.WithLabelValues("touched"), m.saves.WithLabelValues("dropped")
	m.loadErr, m.saveErr = m.errs.WithLabelValues("load"), m.errs.WithLabelValues("save")
	m.touchErr, m.deleteErr = m.errs.WithLabelValues("touch"), m.errs.WithLabelValues("delete")
	return m
}

// Describe implements prometheus.Collector.
func (m *Manager) Describe(ch chan<- *prometheus.Desc) {
	m.metrics.saves.Describe(ch)
	m.metrics.errs.Describe(ch)
}

// Collect implements prometheus.Collector.
func (m *Manager) Collect(ch chan<- prometheus.Metric) {
	m.metrics.saves.Collect(ch)
	m.metrics.errs.Collect(ch)
}
