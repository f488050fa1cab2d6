// Package jobs runs background work on asynq (Redis, Sentinel-aware): typed
// task handlers, a transactional outbox so a task exists if and only if the
// transaction that enqueued it committed, and periodic jobs that run once per
// period across all instances.
//
// This package is being built; see the project README for the roadmap.
package jobs
