// Package jobs runs background work on asynq (Redis, Sentinel-aware) with
// the guarantees a web app needs: a task exists if and only if the
// transaction that asked for it committed, periodic tasks run once per
// period across all instances, and a deploy neither loses nor runs twice
// what was in flight.
//
// # Handlers
//
// A [Worker] runs typed handlers registered with [Handle]: JSON payloads
// decoded into a Go type; a payload that does not decode is archived at
// once with a readable error (never a retry loop); an error from the
// handler retries with exponential backoff, up to Options.MaxRetry, then
// archives ([Client.Archived] lists them), and [SkipRetry] archives at
// once. Delivery is at least once: make handlers idempotent, for instance
// with [Once].
//
// A task whose type the worker has no handler for is handed back to its
// queue, for a worker that has one (another app's on a shared queue, or
// a newer version's during a rolling deploy): it is due again after a
// short delay, and the hand-back does not count as an attempt. The worker
// counts hand-backs (hakit_jobs_unhandled_total) and warns once a minute
// per type; after WorkerConfig.UnhandledTimeout (24h) of hand-backs it
// archives the task, saying why. A task enqueued never to be retried
// (Options.MaxRetry < 0) cannot be handed back, and is archived at once
// by a worker without its handler: deploy the handler first. Such a task
// runs at most once; any other task whose run times out or whose worker
// dies on its last attempt gets one run more (at least once).
//
// # Namespaces
//
// Apps that share a Redis keep their tasks apart with a namespace:
// ClientConfig.Namespace and WorkerConfig.Namespace "shop" put the queue
// "default" in the Redis queue "shop:default". The Relay and the
// Scheduler enqueue with their Client, in its namespace. Namespaces are
// opt-in: the default is none, the queues as named (hakit.App takes one
// from HAKIT_JOBS_NAMESPACE). Apps sharing the queues without a
// namespace lose nothing — each hands the other's task types back — but
// delay each other's tasks; a namespace each saves those hand-backs. A
// deploy that sets or changes the namespace lists the previous one in
// WorkerConfig.FormerNamespaces ("" for none): the worker serves those
// queues too while they hold tasks, so nothing queued there is stranded.
//
// # The outbox
//
// [Outbox.EnqueueTx] writes the task into a table inside the caller's
// transaction. A [Relay] in every instance moves committed rows to the
// queue — woken by the NOTIFY the commit sends, polling as a fallback,
// sharing the work with SELECT … FOR UPDATE SKIP LOCKED — with the task ID
// "outbox-<uuid>" (the row's random task_id), so a relay that dies
// mid-batch and the one that takes over cannot enqueue a task twice, and
// two outboxes feeding one queue cannot take each other's tasks.
//
// A batch's rows are deleted only once ClientConfig.WaitReplicas Redis
// replicas of the very master that took its tasks have them: the relay
// compares the master's run_id and replication ID before the enqueues and
// after WAIT, and counts the replicas whose acknowledged offset covers the
// tasks. Until then the rows stay, marked with that master; a later pass
// on the same master deletes those it locked before its confirmation read
// the master's replication offset (so never rows another relay marked
// after that, whose tasks the offset may not cover); if the master is
// lost (failover, restart without data), the next pass enqueues them
// again on the new one. [ClientConfig].NoReplicas turns this off for a Redis
// without replicas. The task carries the commit's database position: its
// reads through dbrouter see what the enqueuing transaction wrote.
//
// # Periodic tasks
//
// A [Scheduler] in every instance enqueues each tick's task under the ID
// "<name>-<tick>": the queue takes it once, from whichever instance comes
// first. No leader, no election, no hand-over delay when an instance dies.
// A tick that cannot be enqueued and confirmed is retried, in order, until
// it is SchedulerConfig.MaxDelay late (30s, far longer than a Sentinel
// failover), and MaxDelay must be shorter than the Client's Retention, so
// no tick can be enqueued again after the queue forgot it.
//
// # Life cycle
//
// Worker, Relay and Scheduler have Start and Stop, so hakit.App starts
// them before it turns ready and stops them in its drain. Each Stop
// returns when its context ends, work or no work: the worker takes no new
// tasks, lets running ones finish for up to WorkerConfig.ShutdownTimeout
// or until shortly before the context ends, and puts those still running
// back on their queue (they run again elsewhere).
//
// # Metrics
//
// Client, Worker, Relay and Scheduler are prometheus.Collectors the
// caller registers; each has a Name (a const label), so two of a kind fit
// in one registry.
package jobs
