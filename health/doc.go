// Package health serves /livez and /readyz for load balancers and
// orchestrators: liveness without dependency checks, readiness from cached
// results of background checks (so a probe never blocks on a dead
// dependency), the starting and draining states of the drain sequence, and a
// verbose application/health+json view of every check.
//
// This package is being built; see the project README for the roadmap.
package health
