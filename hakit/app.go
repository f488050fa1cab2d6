package hakit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"hakit.dev/dbrouter"
	"hakit.dev/health"
)

// ErrForcedShutdown is returned by Run when a second signal (or the end of
// ShutdownTimeout) cut the drain short: some requests or components did
// not finish.
var ErrForcedShutdown = errors.New("hakit: shutdown forced before the drain finished")

// Component is a part of the app with a life cycle, started during
// start-up (before /readyz turns ready, in the order added) and stopped
// during the drain (after the HTTP server has finished its requests, in
// reverse order). A component may also implement
//
//	interface{ HealthChecks() []health.Check } // added to /readyz
//	prometheus.Collector                         // registered for /metrics
type Component interface {
	Start(ctx context.Context) error
	Stop(ctx context.Context) error
}

// App is an HTTP application server that stays up: chi with hakit's
// middleware [Stack], /livez, /readyz and /metrics, optional database
// routing and migrations, components with a life cycle, and the drain
// sequence that lets a load balancer take an instance out before it stops.
// Make one with [New], add routes to [App.Router], and call [App.Run].
type App struct {
	cfg      Config
	log      *slog.Logger
	router   chi.Router
	handler  http.Handler
	livez    http.Handler
	readyz   http.Handler
	metrics  http.Handler
	checker  *health.Checker
	registry *prometheus.Registry
	db       *dbrouter.Router

	mu         sync.Mutex
	components []namedComponent
	started    bool
}

type namedComponent struct {
	name string
	c    Component
}

// New builds an App from cfg. It validates cfg (listing every problem at
// once) and, when DatabaseURLs are set, connects the database router, so a
// wrong password or an unreachable cluster fails here, at start.
func New(ctx context.Context, cfg Config) (*App, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	a := &App{cfg: cfg, log: cfg.Logger, registry: cfg.Registry}
	if a.registry == nil {
		a.registry = prometheus.NewRegistry()
		a.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	a.checker = health.New(health.Options{Logger: a.log})
	a.livez, a.readyz = a.checker.Livez(), a.checker.Readyz()
	a.metrics = promhttp.HandlerFor(a.registry, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(a.log.Handler(), slog.LevelError)})
	stack, err := Stack(StackConfig{
		Logger:         a.log,
		TrustedProxies: cfg.TrustedProxies,
		TrustedOrigins: cfg.TrustedOrigins,
		RequestTimeout: cfg.RequestTimeout,
		MaxBodyBytes:   cfg.MaxBodyBytes,
		Draining:       func() bool { return a.checker.State() == health.Draining },
		Registerer:     a.registry,
	})
	if err != nil {
		return nil, fmt.Errorf("hakit: bad config: %w", err)
	}
	mux := chi.NewRouter()
	mux.NotFound(func(w http.ResponseWriter, r *http.Request) { deny(w, http.StatusNotFound, "not found") })
	a.router = mux
	a.handler = stack(mux)

	if len(cfg.DatabaseURLs) > 0 {
		db, err := dbrouter.New(ctx, dbrouter.Config{Nodes: cfg.DatabaseURLs, Logger: a.log})
		if err != nil {
			return nil, err
		}
		a.db = db
		a.registry.MustRegister(db)
		a.Add("database", &dbComponent{db: db, migrations: cfg.Migrations, log: a.log})
	}
	return a, nil
}

// Router returns the chi router to add routes and middleware to. The
// hakit Stack runs before it.
func (a *App) Router() chi.Router { return a.router }

// DB returns the database router, or nil without Config.DatabaseURLs.
func (a *App) DB() *dbrouter.Router { return a.db }

// Health returns the app's health checker, to add checks to.
func (a *App) Health() *health.Checker { return a.checker }

// Registry returns the Prometheus registry served at /metrics.
func (a *App) Registry() *prometheus.Registry { return a.registry }

// Logger returns the app's logger.
func (a *App) Logger() *slog.Logger { return a.log }

// Add adds a component. Components added after Run started are not
// started. It panics on a nil component.
func (a *App) Add(name string, c Component) {
	if c == nil {
		panic("hakit: Add of a nil component")
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.started {
		a.log.Warn("hakit: component added after Run started; it is not started", "component", name)
		return
	}
	a.components = append(a.components, namedComponent{name, c})
	if hc, ok := c.(interface{ HealthChecks() []health.Check }); ok {
		for _, ch := range hc.HealthChecks() {
			a.checker.Add(ch)
		}
	}
	if col, ok := c.(prometheus.Collector); ok {
		a.registry.MustRegister(col)
	}
}

// OnStart adds a start-up step: fn runs before /readyz turns ready (warm a
// cache, check a dependency). An error aborts the start.
func (a *App) OnStart(fn func(ctx context.Context) error) {
	a.Add("on-start", hook{start: fn})
}

// OnStop adds a shutdown step: fn runs during the drain after the HTTP
// server has finished its requests, in reverse order of adding.
func (a *App) OnStop(fn func(ctx context.Context) error) {
	a.Add("on-stop", hook{stop: fn})
}

type hook struct{ start, stop func(context.Context) error }

func (h hook) Start(ctx context.Context) error {
	if h.start == nil {
		return nil
	}
	return h.start(ctx)
}

func (h hook) Stop(ctx context.Context) error {
	if h.stop == nil {
		return nil
	}
	return h.stop(ctx)
}

// ServeHTTP serves /livez, /readyz and /metrics directly (no access log,
// no middleware) and everything else through the Stack and the router.
// While the app is starting (migrations, components) other requests get
// 503 with Retry-After: a load balancer does not send them, and whoever
// does must not reach a half-started app.
func (a *App) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/livez":
		a.livez.ServeHTTP(w, r)
	case "/readyz":
		a.readyz.ServeHTTP(w, r)
	case "/metrics":
		a.metrics.ServeHTTP(w, r)
	default:
		if a.checker.State() == health.Starting {
			w.Header()["Retry-After"] = retryAfter1
			deny(w, http.StatusServiceUnavailable, "starting")
			return
		}
		a.handler.ServeHTTP(w, r)
	}
}

var retryAfter1 = []string{"1"}

// Run listens on Config.Addr and serves until ctx ends or the process gets
// SIGTERM or SIGINT, then drains. See [App.Serve].
func (a *App) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", a.cfg.Addr)
	if err != nil {
		return fmt.Errorf("hakit: listen: %w", err)
	}
	return a.Serve(ctx, ln)
}

// Serve serves on ln and runs the app's life cycle:
//
//  1. Start-up: /livez answers at once and /readyz says 503 "starting"
//     while migrations run and components start; then /readyz turns 200.
//  2. When ctx ends, or on SIGTERM or SIGINT (unless Config.NoSignals),
//     the drain starts: /readyz answers 503 "draining" at once, the
//     instance keeps serving for DrainDelay with Connection: close on
//     every response, then http.Server.Shutdown waits up to
//     ShutdownTimeout for in-flight requests, then components stop in
//     reverse order, the database router last.
//  3. A second signal during the drain forces it: connections are closed
//     and Serve returns ErrForcedShutdown at once.
//
// Serve returns nil after a clean drain; main should then exit 0. It
// returns an error when start-up fails, the server fails, or the drain was
// forced or timed out; main should then exit 1. It can run once.
func (a *App) Serve(ctx context.Context, ln net.Listener) error {
	a.mu.Lock()
	if a.started {
		a.mu.Unlock()
		return errors.New("hakit: Run called twice")
	}
	a.started = true
	components := a.components // Add refuses once started: no copy needed
	a.mu.Unlock()

	stopSig := make(chan os.Signal, 2)
	if !a.cfg.NoSignals {
		signal.Notify(stopSig, syscall.SIGTERM, syscall.SIGINT)
		defer signal.Stop(stopSig)
	}

	checkCtx, stopChecks := context.WithCancel(context.WithoutCancel(ctx))
	checksDone := make(chan struct{})
	go func() {
		_ = a.checker.Run(checkCtx)
		close(checksDone)
	}()
	defer func() {
		stopChecks()
		<-checksDone
	}()

	srv := &http.Server{
		Handler:           a,
		ReadHeaderTimeout: a.cfg.ReadHeaderTimeout,
		IdleTimeout:       a.cfg.IdleTimeout,
		ErrorLog:          slog.NewLogLogger(a.log.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	a.log.Info("hakit: listening", "addr", ln.Addr().String())

	// Start-up, interruptible by the same signals.
	startCtx, cancelStart := context.WithCancel(ctx)
	startDone := make(chan error, 1)
	var startedN int
	go func() {
		for _, nc := range components {
			if err := nc.c.Start(startCtx); err != nil {
				startDone <- fmt.Errorf("hakit: start %s: %w", nc.name, err)
				return
			}
			startedN++
		}
		startDone <- nil
	}()
	var runErr error
	interrupted := false
	interrupt := func() {
		interrupted = true
		cancelStart()
		if err := <-startDone; err != nil && !errors.Is(err, context.Canceled) {
			runErr = err
		}
	}
	select {
	case err := <-startDone:
		if runErr = err; err == nil {
			a.checker.SetReady()
			a.log.Info("hakit: ready", "addr", ln.Addr().String())
		}
	case <-ctx.Done():
		a.log.Info("hakit: context ended during start-up")
		interrupt()
	case sig := <-stopSig:
		a.log.Info("hakit: signal during start-up", "signal", sig.String())
		interrupt()
	case err := <-serveErr:
		interrupt()
		runErr = errors.Join(fmt.Errorf("hakit: serve: %w", err), runErr)
	}
	cancelStart()

	if runErr == nil && !interrupted {
		select {
		case <-ctx.Done():
			a.log.Info("hakit: context ended; draining", "drain_delay", a.cfg.DrainDelay)
		case sig := <-stopSig:
			a.log.Info("hakit: signal; draining", "signal", sig.String(), "drain_delay", a.cfg.DrainDelay)
		case err := <-serveErr:
			runErr = fmt.Errorf("hakit: serve: %w", err)
		}
	}
	return errors.Join(runErr, a.drain(srv, components[:startedN], stopSig, runErr != nil || interrupted))
}

// drain runs the drain sequence. Without a clean start (failed is true)
// it skips the delay: nobody sent traffic to a starting instance.
func (a *App) drain(srv *http.Server, started []namedComponent, stopSig <-chan os.Signal, failed bool) error {
	a.checker.SetDraining()
	forced := false
	force := func(sig os.Signal) {
		a.log.Warn("hakit: second signal; forcing shutdown", "signal", sig.String())
		forced = true
		_ = srv.Close()
	}
	if a.cfg.DrainDelay > 0 && !failed {
		t := time.NewTimer(a.cfg.DrainDelay)
		select {
		case <-t.C:
		case sig := <-stopSig:
			t.Stop()
			force(sig)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), a.cfg.ShutdownTimeout)
	defer cancel()
	var errs []error
	if !forced {
		shutdownDone := make(chan error, 1)
		go func() { shutdownDone <- srv.Shutdown(ctx) }()
		select {
		case err := <-shutdownDone:
			if err != nil {
				_ = srv.Close()
				a.log.Error("hakit: in-flight requests did not finish within the shutdown timeout", "timeout", a.cfg.ShutdownTimeout)
				errs = append(errs, fmt.Errorf("hakit: shutdown: %w", err))
			}
		case sig := <-stopSig:
			force(sig)
			cancel()
		}
	}
	for i := len(started) - 1; i >= 0; i-- {
		nc := started[i]
		if err := nc.c.Stop(ctx); err != nil {
			a.log.Error("hakit: stop", "component", nc.name, "err", err)
			errs = append(errs, fmt.Errorf("hakit: stop %s: %w", nc.name, err))
		}
	}
	if forced {
		errs = append(errs, ErrForcedShutdown)
	}
	if len(errs) == 0 {
		a.log.Info("hakit: stopped")
	}
	return errors.Join(errs...)
}
