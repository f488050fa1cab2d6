// Package jobs runs background work on asynq (Redis, Sentinel-aware) with
// the guarantees a web app needs: a task exists if and only if the
// transaction that asked for it committed, periodic tasks run once per
// period across all instances, and a deploy neither loses nor runs twice
// what was in flight.
//
// # Handlers
//
// A [Worker] runs typed handlers registered with [Handle]: JSON payloads
// decoded into a Go type; a payload that does not decode, or a task type
// nobody handles, is archived at once with a readable error (never a
// retry loop); an error from the handler retries with exponential
// backoff, up to Options.MaxRetry, then archives ([Client.Archived] lists
// them). Delivery is at least once: make handlers idempotent, for
// instance with [Once].
//
// # The outbox
//
// [Outbox.EnqueueTx] writes the task into a table inside the caller's
// transaction. A [Relay] in every instance moves committed rows to the
// queue — woken by the NOTIFY the commit sends, polling as a fallback,
// sharing the work with SELECT … FOR UPDATE SKIP LOCKED — with the task ID
// "outbox-<row id>", so a relay that dies mid-batch and the one that takes
// over cannot enqueue a task twice. A batch's rows are deleted only once a
// Redis replica has it (WAIT), so a Redis failover cannot lose it either.
// The task carries the commit's database position: its reads through
// dbrouter see what the enqueuing transaction wrote.
//
// # Periodic tasks
//
// A [Scheduler] in every instance enqueues each tick's task under the ID
// "<name>-<tick>": the queue takes it once, from whichever instance comes
// first. No leader, no election, no hand-over delay when an instance dies.
//
// # Life cycle
//
// Worker, Relay and Scheduler have Start and Stop, so hakit.App starts
// them before it turns ready and stops them in its drain: Stop takes no
// new tasks and lets running ones finish (WorkerConfig.ShutdownTimeout);
// those still running are put back on their queue.
package jobs
