package hakit

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"

	"hakit.dev/dbrouter"
	"hakit.dev/health"
	"hakit.dev/session"
)

// sessionLSNKey is where the session keeps the user's read-your-writes
// position.
const sessionLSNKey = "_hakit_db_lsn"

// Sessions makes the app's session manager from cfg and puts it on every
// route ([App.UseSessions]: the read-your-writes carrier, the store's
// readiness check, the metrics). When cfg.Store is nil the store is
// chosen from what the app has:
//
//   - with Config.Redis, a session.RedisStore on [App.Redis]; durable
//     changes (logins, logouts, renewed tokens) wait for a replica to
//     confirm them (WAIT), unless Config.Redis.NoReplicas says there is
//     none;
//   - else, with a database, a session.PostgresStore on the primary, in
//     the table hakit_sessions (made by the app's migrations); expired
//     rows are deleted about every hour, at a random point of the hour on
//     each instance;
//   - else a session.MemoryStore, with a warning in the log: sessions are
//     then lost on restart and not shared between instances, which is
//     for development only.
//
// cfg.Logger defaults to the app's. Call it before adding routes (chi
// wants middleware first), before Run (after, it is an error), and once.
func (a *App) Sessions(cfg session.Config) (*session.Manager, error) {
	if err := a.beforeRun("Sessions"); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = a.log
	}
	var cleanup *periodic
	if cfg.Store == nil {
		switch {
		case a.rdb != nil:
			opts := session.RedisOptions{Logger: cfg.Logger}
			if a.cfg.Redis.NoReplicas {
				opts.WaitReplicas = -1
			}
			cfg.Store = session.NewRedisStore(a.rdb, opts)
		case a.db != nil:
			st := session.NewPostgresStore(a.db.Primary, session.PostgresOptions{})
			cfg.Store = st
			cleanup = &periodic{log: a.log, what: "expired sessions cleanup", name: "sessions", every: a.wire.maintenanceEvery,
				run: func(ctx context.Context) error {
					n, err := st.DeleteExpired(ctx)
					if n > 0 {
						a.log.Debug("hakit: expired sessions deleted", "count", n)
					}
					return err
				}}
		default:
			a.log.Warn("hakit: sessions in memory: lost on restart and not shared between instances; " +
				"set Config.Redis or Config.DatabaseURLs for anything but development")
			cfg.Store = session.NewMemoryStore()
		}
	}
	m, err := session.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("hakit: Sessions: %w", err)
	}
	a.UseSessions(m)
	if cleanup != nil {
		a.Add("sessions:cleanup", cleanup)
	}
	return m, nil
}

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
