// Package hakit assembles hakit's packages into an HTTP application server
// that stays up: any instance can be killed or replaced while users keep
// working.
//
// # An app
//
//	env := hakit.NewEnv(nil)
//	cfg := env.Config()                                 // HAKIT_*: database, Redis, S3, drain, …
//	perPage := env.Int("SHOP_PER_PAGE", 20, "per page") // the app's own variables
//	if err := env.Err(); err != nil {
//		log.Fatal(err) // every bad variable, HAKIT_* and SHOP_*, listed at once
//	}
//	cfg.Migrations = migrations // embed.FS with NNN_name.up.sql
//	app, err := hakit.New(ctx, cfg)
//	if err != nil {
//		log.Fatal(err)
//	}
//	sessions, err1 := app.Sessions(session.Config{}) // Redis, else PostgreSQL, else memory
//	worker, err2 := app.Worker(jobs.WorkerConfig{})  // and app.Relay, app.Scheduler, app.Jobs
//	files, err3 := app.Uploads(uploads.Config{})     // the bucket of HAKIT_S3_*
//	if err := errors.Join(err1, err2, err3); err != nil {
//		log.Fatal(err)
//	}
//	app.Router().Get("/orders/{id}", showOrder) // chi: plain net/http handlers
//	if err := app.Run(ctx); err != nil {        // serves, drains on SIGTERM
//		os.Exit(1)
//	}
//
// The complete main of an app on every package — dbrouter, sessions on
// Redis, jobs with the outbox, uploads on S3, health — is in the
// repository's docs/getting-started.md (it is hakit/internal/fullapp,
// which the tests build and run against real servers); every variable is
// in docs/configuration.md. See [NewEnv], [App.Redis], [App.Sessions],
// [App.Jobs], [App.Worker], [App.Relay], [App.Scheduler] and
// [App.Uploads].
//
// An App is an ordinary net/http application: [App.Router] is a chi
// router, handlers are http.Handlers, and [App] itself is an http.Handler.
// Each package it wires in — health, dbrouter, and the session, jobs and
// uploads packages — also works on its own.
//
// # What every request goes through
//
// [Stack], in one function: request ID, client address from trusted proxies
// only, access log, Prometheus metrics, panic recovery (a 500 before the
// response started, an aborted response after), Connection: close while
// draining, security headers, CSRF protection (http.CrossOriginProtection),
// body limit and request deadline. /livez, /readyz and /metrics are
// answered before it; with Config.AdminAddr, /metrics and verbose /readyz
// move to a second listener ([App.AdminHandler]).
//
// Routes that need another body limit or timeout say so with route
// middleware, [BodyLimit] and [Timeout], so other requests pay nothing:
//
//	r.With(hakit.Timeout(-1), hakit.BodyLimit(5<<30)).Post("/uploads", upload)
//
// The request timeout is a deadline on the request's context only: it
// ends database calls and anything else that takes the context, but it
// neither stops a handler that ignores its context nor bounds a slow
// client's body or response (see Config.RequestTimeout).
//
// # Start-up and the drain sequence
//
// [App.Run] listens at once: /livez answers, /readyz says 503 "starting",
// other requests get 503 with Retry-After. Migrations run on the primary
// (under golang-migrate's advisory lock, so instances starting together
// migrate once) and [Component]s start; then /readyz turns 200.
//
// On SIGTERM, SIGINT or the end of Run's context: /readyz turns 503
// "draining" at once; the app keeps serving for Config.DrainDelay with
// Connection: close on every response, so the load balancer takes it out
// and kept-alive clients reconnect elsewhere; then http.Server.Shutdown
// waits up to Config.ShutdownTimeout for in-flight requests; then
// components stop in reverse order and the database router closes. Run
// returns within DrainDelay + ShutdownTimeout + [ShutdownMargin] whatever
// handlers and components do: what is still running then is cut off or
// abandoned, and logged. A second signal forces the exit at any point. Run
// returns nil after a clean drain (exit 0) and an error otherwise (exit 1).
//
// Measured behind HAProxy (inter 1s fall 2 rise 2, its default retries, no
// redispatch) at 200 requests/s while three instances restart in turn: no
// failed request with the drain; plain http.Server.Shutdown failed about 7%
// (see docs/benchmarks.md).
//
// # Configuration
//
// [Config] documents every field and its default; [Env.Config] (or
// [ConfigFromEnv]) reads the variables listed by [EnvVars], and an [Env]
// reads the app's own into the same report; docs/configuration.md has the
// table. In the struct a zero field is its default and a negative one
// none; in the environment 0 is none. Database connection strings come one per variable
// (HAKIT_DATABASE_URL_1, _2, …).
//
// # Handler helpers
//
// Small and optional, for plain net/http handlers (docs/handlers.md):
// [ParseTemplates] and [Templates.Render] render html/template pages with
// a layout into a buffer, so a template error is a clean 500; [ParseForm]
// answers a body over its limit with 413; [Error] answers any error with
// the status it calls for ([HTTPErrorOf]: the library's errors mapped in
// one place — dbrouter's no primary is a 503 with Retry-After, a lost
// COMMIT a 504) and logs the detail; [App.SetErrorPage] replaces the
// pages of 404, 405, the CSRF 403, the panic 500, the starting 503 and
// every Error. Login, logout and flash messages are on the session
// package's Manager.
package hakit
