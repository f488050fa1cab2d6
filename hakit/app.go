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
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"

	"hakit.dev/dbrouter"
	"hakit.dev/health"
)

// ErrForcedShutdown is returned by Run when a second signal cut the drain
// short: some requests or components did not finish. When the end of
// ShutdownTimeout cut it short, Run's error wraps
// context.DeadlineExceeded instead.
var ErrForcedShutdown = errors.New("hakit: shutdown forced before the drain finished")

// Component is a part of the app with a life cycle, started during
// start-up (before /readyz turns ready, in the order added) and stopped
// during the drain (after the HTTP server has finished its requests, in
// reverse order).
//
// Both honour their context, as river's Start and Stop do: Start returns
// soon after its context ends (a signal during start-up), and Stop
// returns when its context ends (the shutdown deadline, or at once on a
// second signal), work finished or not. The drain does not wait for one
// that does not: it abandons it ShutdownMargin after the deadline, logs
// it, and Run returns an error.
//
// A component may also implement
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
	stack    *stack
	mux      http.Handler // router, as the handler the stack calls
	livez    http.Handler
	readyz   http.Handler
	metrics  http.Handler
	checker  *health.Checker
	registry *prometheus.Registry
	db       *dbrouter.Router
	rdb      redis.UniversalClient // Config.Redis; closed last (redis.go)
	wire     wiring                // what the wiring methods made (wire.go)

	// errorPage is the page set by SetErrorPage (errors.go); nil: the default.
	errorPage atomic.Pointer[ErrorPage]

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
	stack, err := newStack(StackConfig{
		Logger:         a.log,
		TrustedProxies: cfg.TrustedProxies,
		TrustedOrigins: cfg.TrustedOrigins,
		RequestTimeout: cfg.RequestTimeout,
		MaxBodyBytes:   cfg.MaxBodyBytes,
		Draining:       func() bool { return a.checker.State() == health.Draining },
		Registerer:     a.registry,
		ErrorPage:      a.showErrorPage,
	})
	if err != nil {
		return nil, fmt.Errorf("hakit: bad config: %w", err)
	}
	mux := chi.NewRouter()
	mux.NotFound(a.notFound)                 // errors.go
	mux.MethodNotAllowed(a.methodNotAllowed) // errors.go
	a.router, a.mux, a.stack = mux, mux, stack

	if len(cfg.DatabaseURLs) > 0 {
		db, err := dbrouter.New(ctx, dbrouter.Config{Nodes: cfg.DatabaseURLs, Logger: a.log})
		if err != nil {
			return nil, err
		}
		a.db = db
		a.registry.MustRegister(db)
		a.Add("database", &dbComponent{db: db, migrations: cfg.Migrations, skipLibrary: cfg.SkipLibraryMigrations, opts: cfg.migrateOptions(), log: a.log})
	}
	a.newRedis() // redis.go
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
// started: Add logs a warning and drops them (the wiring methods, such as
// [App.Worker] and [App.Uploads], return an error instead). It panics on
// a nil component.
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
// cache, check a dependency). An error aborts the start. fn should return
// when its context ends (see [Component]).
func (a *App) OnStart(fn func(ctx context.Context) error) {
	a.Add("on-start", hook{start: fn})
}

// OnStop adds a shutdown step: fn runs during the drain after the HTTP
// server has finished its requests, in reverse order of adding, with a
// context that ends at the shutdown deadline; it should return then (see
// [Component]).
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
// With Config.AdminAddr set, /metrics goes to the router like any other
// path and /readyz gives only its plain answer: both are on the admin
// listener ([App.AdminHandler]). While the app is starting (migrations,
// components) other requests get 503 with Retry-After: a load balancer
// does not send them, and whoever does must not reach a half-started app.
func (a *App) ServeHTTP(w http.ResponseWriter, r *http.Request) { a.serveHTTP(w, r, false) }

// serveHTTP is ServeHTTP; top says that the request comes straight from
// the server of App.Serve, so no router above the app has a route context
// for the stack to find (App may be mounted in another router, where one
// does).
func (a *App) serveHTTP(w http.ResponseWriter, r *http.Request, top bool) {
	switch r.URL.Path {
	case "/livez":
		a.livez.ServeHTTP(w, r)
		return
	case "/readyz":
		if a.cfg.AdminAddr != "" {
			r = plainProbe(r)
		}
		a.readyz.ServeHTTP(w, r)
		return
	case "/metrics":
		if a.cfg.AdminAddr == "" {
			a.metrics.ServeHTTP(w, r)
			return
		}
	}
	if a.checker.State() == health.Starting {
		a.starting(w, r) // errors.go
		return
	}
	a.stack.serve(w, r, a.mux, top)
}

// plainProbe returns r without what asks /readyz for its verbose answer
// (?verbose, Accept: application/health+json).
func plainProbe(r *http.Request) *http.Request {
	if r.URL.RawQuery == "" && !strings.Contains(r.Header.Get("Accept"), "health+json") {
		return r
	}
	r2 := new(http.Request)
	*r2 = *r
	u := *r.URL
	u.RawQuery = ""
	r2.URL, r2.Header = &u, http.Header{}
	return r2
}

// AdminHandler returns the handler of the admin listener
// (Config.AdminAddr): /livez, /readyz with its verbose form (?verbose or
// Accept: application/health+json: every check with its last error) and
// /metrics; 404 for anything else. Serve runs it on AdminAddr; mount it
// elsewhere (a Unix socket, another server) to serve it yourself.
func (a *App) AdminHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/livez":
			a.livez.ServeHTTP(w, r)
		case "/readyz":
			a.readyz.ServeHTTP(w, r)
		case "/metrics":
			a.metrics.ServeHTTP(w, r)
		default:
			deny(w, http.StatusNotFound, "not found")
		}
	})
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

// Serve serves on ln (and on Config.AdminAddr, if set) and runs the app's
// life cycle:
//
//  1. Start-up: /livez answers at once and /readyz says 503 "starting"
//     while migrations run and components start; then /readyz turns 200.
//  2. When ctx ends, or on SIGTERM or SIGINT (unless Config.NoSignals),
//     the drain starts: /readyz answers 503 "draining" at once, the
//     instance keeps serving for DrainDelay with Connection: close on
//     every response, then http.Server.Shutdown waits up to
//     ShutdownTimeout for in-flight requests (and closes the connections
//     of those still running), then components stop in reverse order, the
//     database router last, with a context that ends at the same
//     deadline. A component still stopping ShutdownMargin after it is
//     abandoned, as are the components after it, and logged. The Redis
//     client ([App.Redis]) closes when Serve returns, after all of them
//     and after the readiness checks stopped. A start-up
//     cut short by the same signals skips the delay; a start-up step
//     still running ShutdownTimeout later is abandoned, and the components
//     started before it get ShutdownMargin to stop.
//  3. A second signal at any point forces the exit: connections are
//     closed, components not stopped yet are abandoned, and Serve returns
//     ErrForcedShutdown at once.
//
// So Serve returns within DrainDelay + ShutdownTimeout + ShutdownMargin of
// the first signal whatever handlers and components do, and at once after
// a second one. Abandoned work keeps running in its goroutines until the
// process exits: main should return (or exit) when Serve returns.
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
	defer a.closeRedis() // last: after the components' stop and the checks (redis.go)

	var adminLn net.Listener
	if a.cfg.AdminAddr != "" {
		var err error
		if adminLn, err = net.Listen("tcp", a.cfg.AdminAddr); err != nil {
			ln.Close()
			return fmt.Errorf("hakit: listen on AdminAddr: %w", err)
		}
	}

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

	errorLog := slog.NewLogLogger(a.log.Handler(), slog.LevelWarn)
	srv := &http.Server{
		Handler:           http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { a.serveHTTP(w, r, true) }),
		ReadHeaderTimeout: a.cfg.ReadHeaderTimeout,
		IdleTimeout:       a.cfg.IdleTimeout,
		MaxHeaderBytes:    a.cfg.MaxHeaderBytes,
		ErrorLog:          errorLog,
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	a.log.Info("hakit: listening", "addr", ln.Addr().String())
	if adminLn != nil {
		admin := &http.Server{
			Handler:           a.AdminHandler(),
			ReadHeaderTimeout: a.cfg.ReadHeaderTimeout,
			IdleTimeout:       a.cfg.IdleTimeout,
			MaxHeaderBytes:    a.cfg.MaxHeaderBytes,
			ErrorLog:          errorLog,
		}
		adminDone := make(chan struct{})
		go func() {
			defer close(adminDone)
			if err := admin.Serve(adminLn); !errors.Is(err, http.ErrServerClosed) {
				a.log.Error("hakit: admin listener failed", "addr", adminLn.Addr().String(), "err", err)
			}
		}()
		// Metrics and probes answer until the very end of the shutdown.
		defer func() {
			_ = admin.Close()
			<-adminDone
		}()
		a.log.Info("hakit: admin listening", "addr", adminLn.Addr().String())
	}

	// Start-up, interruptible by the same signals.
	startCtx, cancelStart := context.WithCancel(ctx)
	defer cancelStart()
	var (
		startErr      error
		startedN      atomic.Int32
		startFinished = make(chan struct{})
	)
	go func() {
		defer close(startFinished)
		for _, nc := range components {
			if err := startCtx.Err(); err != nil {
				startErr = err
				return
			}
			if err := nc.c.Start(startCtx); err != nil {
				startErr = fmt.Errorf("hakit: start %s: %w", nc.name, err)
				return
			}
			startedN.Add(1)
		}
	}()
	var runErr error
	var st *stopper // made when the shutdown deadline starts
	// interrupt cuts the start-up short and waits for the step running to
	// return until the shutdown's deadline, which leaves ShutdownMargin to
	// stop the components started before it.
	interrupt := func() {
		cancelStart()
		st = a.newStopper(stopSig, srv)
		if !st.waitUntil(startFinished, st.ctx.Done()) {
			name := "start-up"
			if n := int(startedN.Load()); n < len(components) {
				name = components[n].name
			}
			a.log.Error("hakit: a start-up step did not return after the shutdown began; abandoned", "component", name)
			runErr = fmt.Errorf("hakit: start %s: abandoned: %w", name, st.cause())
		} else if startErr != nil && !errors.Is(startErr, context.Canceled) {
			runErr = startErr
		}
	}
	select {
	case <-startFinished:
		if runErr = startErr; runErr == nil {
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

	if runErr == nil && st == nil {
		select {
		case <-ctx.Done():
			a.log.Info("hakit: context ended; draining", "drain_delay", a.cfg.DrainDelay)
		case sig := <-stopSig:
			a.log.Info("hakit: signal; draining", "signal", sig.String(), "drain_delay", a.cfg.DrainDelay)
		case err := <-serveErr:
			runErr = fmt.Errorf("hakit: serve: %w", err)
		}
	}
	// Without a clean start there is no delay: nobody sent traffic to an
	// instance that was not ready.
	delay := runErr == nil && st == nil
	return errors.Join(runErr, a.drain(srv, components[:startedN.Load()], stopSig, st, delay))
}

// drain runs the drain sequence: the delay (when delay is true), then the
// in-flight requests and the components' Stop under st's deadline (a new
// one when st is nil).
func (a *App) drain(srv *http.Server, started []namedComponent, stopSig <-chan os.Signal, st *stopper, delay bool) error {
	a.checker.SetDraining()
	if delay && a.cfg.DrainDelay > 0 {
		t := time.NewTimer(a.cfg.DrainDelay)
		select {
		case <-t.C:
		case sig := <-stopSig:
			t.Stop()
			st = a.newStopper(stopSig, srv)
			st.force(sig)
		}
	}
	if st == nil {
		st = a.newStopper(stopSig, srv)
	}
	defer st.release()

	var errs []error
	if !st.over() {
		shutdownDone := make(chan struct{})
		var shutdownErr error
		go func() {
			shutdownErr = srv.Shutdown(st.ctx)
			close(shutdownDone)
		}()
		// shutdownErr is read only once Shutdown returned.
		if ok := st.wait(shutdownDone); !ok || shutdownErr != nil {
			_ = srv.Close()
			if !st.forced() {
				err := error(context.DeadlineExceeded)
				if ok {
					err = shutdownErr
				}
				a.log.Error("hakit: in-flight requests did not finish within the shutdown timeout; their connections are closed",
					"timeout", a.cfg.ShutdownTimeout)
				errs = append(errs, fmt.Errorf("hakit: shutdown: %w", err))
			}
		}
	}
	var abandoned []string
	for i := len(started) - 1; i >= 0; i-- {
		nc := started[i]
		if st.over() {
			abandoned = append(abandoned, nc.name)
			continue
		}
		done := make(chan struct{})
		var err error
		go func() {
			err = nc.c.Stop(st.ctx)
			close(done)
		}()
		if !st.wait(done) {
			abandoned = append(abandoned, nc.name)
			continue
		}
		if err != nil {
			a.log.Error("hakit: stop", "component", nc.name, "err", err)
			errs = append(errs, fmt.Errorf("hakit: stop %s: %w", nc.name, err))
		} else {
			a.log.Debug("hakit: component stopped", "component", nc.name)
		}
	}
	if len(abandoned) > 0 {
		a.log.Error("hakit: components abandoned: still stopping when the shutdown ended", "components", abandoned, "cause", st.cause())
		errs = append(errs, fmt.Errorf("hakit: stop %s: abandoned: %w", strings.Join(abandoned, ", "), st.cause()))
	}
	if st.forced() && len(abandoned) == 0 {
		errs = append(errs, ErrForcedShutdown)
	}
	if len(errs) == 0 {
		a.log.Info("hakit: stopped")
	}
	return errors.Join(errs...)
}

// stopper holds the shutdown's deadline: its context ends ShutdownTimeout
// after it is made, or at once on a second signal; the drain waits for a
// step (Shutdown, a Stop) until ShutdownMargin past that deadline, then
// abandons it.
type stopper struct {
	log      *slog.Logger
	srv      *http.Server
	sig      <-chan os.Signal
	ctx      context.Context
	cancel   context.CancelFunc
	hard     *time.Timer
	hardDone chan struct{} // closed ShutdownMargin after the deadline
	forceCh  chan struct{} // closed by force
}

func (a *App) newStopper(sig <-chan os.Signal, srv *http.Server) *stopper {
	s := &stopper{log: a.log, srv: srv, sig: sig, hardDone: make(chan struct{}), forceCh: make(chan struct{})}
	s.ctx, s.cancel = context.WithTimeout(context.Background(), a.cfg.ShutdownTimeout)
	s.hard = time.AfterFunc(a.cfg.ShutdownTimeout+ShutdownMargin, func() { close(s.hardDone) })
	return s
}

// wait waits for done until a second signal or the hard deadline, and
// reports whether done came.
func (s *stopper) wait(done <-chan struct{}) bool { return s.waitUntil(done, s.hardDone) }

// waitUntil waits for done until a second signal or until end is closed,
// and reports whether done came.
func (s *stopper) waitUntil(done <-chan struct{}, end <-chan struct{}) bool {
	select {
	case <-done:
		return true
	default:
	}
	select {
	case <-done:
		return true
	case sig := <-s.sig:
		s.force(sig)
	case <-end:
	case <-s.forceCh:
	}
	select {
	case <-done: // it may have ended with the context
		return true
	default:
		return false
	}
}

// force ends the shutdown at once: connections closed, the context
// cancelled, nothing more waited for.
func (s *stopper) force(sig os.Signal) {
	select {
	case <-s.forceCh:
		return
	default:
	}
	s.log.Warn("hakit: second signal; forcing shutdown", "signal", sig.String())
	close(s.forceCh)
	s.cancel()
	_ = s.srv.Close()
}

func (s *stopper) forced() bool { return isClosed(s.forceCh) }

// over reports whether nothing more may be waited for.
func (s *stopper) over() bool { return s.forced() || isClosed(s.hardDone) }

// cause says why the shutdown cut something short.
func (s *stopper) cause() error {
	if s.forced() {
		return ErrForcedShutdown
	}
	return context.DeadlineExceeded
}

func (s *stopper) release() {
	s.cancel()
	s.hard.Stop()
}

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}
