package hakit

import (
	"context"
	"net/http"

	"hakit.dev/dbrouter"
	"hakit.dev/health"
	"hakit.dev/session"
)

// sessionLSNKey is where the session keeps the user's read-your-writes
// position.
const sessionLSNKey = "_hakit_db_lsn"

// UseSessions puts sessions on every route of the app: m's LoadAndSave
// and, when the app has a database, the read-your-writes carrier — the
// commit position of the user's writes is kept in their session, and their
// next request, on any instance, reads from a replica only once it has
// replayed that far (dbrouter.WithMinLSN). The store's Ping, if it has
// one, becomes a (non-critical) readiness check.
//
// Call it before adding routes (chi wants middleware first).
func (a *App) UseSessions(m *session.Manager) {
	a.router.Use(m.LoadAndSave)
	if a.db != nil {
		a.router.Use(lsnCarrier(m))
	}
	if p, ok := m.Store().(interface{ Ping(context.Context) error }); ok {
		a.checker.Add(health.Check{Name: "sessions", Func: p.Ping})
	}
}

// lsnCarrier reads the read-your-writes position from the session into the
// request's context, and puts it back, raised by the request's writes,
// before the response (and so the session) goes out.
func lsnCarrier(m *session.Manager) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ctx := r.Context()
			var start dbrouter.LSN
			if s := m.GetString(ctx, sessionLSNKey); s != "" {
				start, _ = dbrouter.ParseLSN(s) // a bad value counts as none
			}
			ctx = dbrouter.WithMinLSN(ctx, start)
			lw := &lsnWriter{ResponseWriter: w, save: func() {
				if l := dbrouter.MinLSN(ctx); l > start {
					m.Put(ctx, sessionLSNKey, l.String())
				}
			}}
			next.ServeHTTP(lw, r.WithContext(ctx))
			lw.flush()
		})
	}
}

// lsnWriter saves the position into the session just before the response
// starts: the session middleware around it saves the session then.
type lsnWriter struct {
	http.ResponseWriter
	save  func()
	saved bool
}

func (w *lsnWriter) flush() {
	if !w.saved {
		w.saved = true
		w.save()
	}
}

func (w *lsnWriter) WriteHeader(code int) {
	w.flush()
	w.ResponseWriter.WriteHeader(code)
}

func (w *lsnWriter) Write(b []byte) (int, error) {
	w.flush()
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the server's writer.
func (w *lsnWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
