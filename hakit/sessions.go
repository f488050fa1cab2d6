package hakit

import (
	"context"
	"errors"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"

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
// one, becomes a (non-critical) readiness check, and m's metrics are
// served at /metrics.
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
	if err := a.registry.Register(m); err != nil && !errors.As(err, new(prometheus.AlreadyRegisteredError)) {
		a.log.Warn("hakit: session metrics not registered", "err", err)
	}
}

// lsnCarrier reads the read-your-writes position from the session into the
// request's context, and puts it back, raised by the request's writes,
// whenever the session is saved: before the response's headers go out
// (whether by a write or a flush) and, for a write made after that, when
// the handler returns.
func lsnCarrier(m *session.Manager) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ctx := r.Context()
			var kept dbrouter.LSN
			if s := m.GetString(ctx, sessionLSNKey); s != "" {
				kept, _ = dbrouter.ParseLSN(s) // a bad value counts as none
			}
			ctx = dbrouter.WithMinLSN(ctx, kept)
			m.BeforeSave(ctx, func() {
				if l := dbrouter.MinLSN(ctx); l > kept {
					kept = l
					m.Put(ctx, sessionLSNKey, l.String())
				}
			})
			next.ServeHTTP(w, r.WithContext(ctx))
		})
	}
}
