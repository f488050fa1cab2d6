// Package health serves /livez and /readyz for load balancers and
// orchestrators, answering from cached state so a probe never waits on a
// dependency.
//
// # States
//
// A [Checker] starts in [Starting]: /readyz answers 503 "starting" until
// the application calls [Checker.SetReady] (after migrations, pool
// warm-up, caches). [Checker.SetDraining] turns /readyz to 503
// "draining" at the first step of a graceful shutdown, so the load
// balancer stops sending new connections while in-flight requests finish.
// /livez answers 200 throughout: it only says the process serves HTTP.
//
// # Checks
//
// [Check]s run in the background ([Checker.Run]), each on its own interval
// and with its own timeout; a check that hangs is reported as failing
// when its timeout passes, and /readyz is never held by it. Checks are
// not critical by default: a database that is down for every instance is
// reported as a warning, because taking every instance out of the load
// balancer helps nobody. A critical check (this instance's own disk, a
// sidecar) fails /readyz while it fails, and until it first passes.
//
// # Output
//
// The plain answer is one word. /readyz?verbose, or a request that
// accepts application/health+json, gets the IETF health check response
// format: overall status pass, warn or fail, and per check its status,
// latency, last run time and last error.
//
// The handlers are plain [net/http.Handler]s; mount them on any router.
package health
