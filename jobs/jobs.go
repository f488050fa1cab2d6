package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"hakit.dev/dbrouter"
	"hakit.dev/internal/metricset"
)

// Options adjust one task. The zero value is usable.
type Options struct {
	// Queue is the queue the task goes to, within the Client's
	// Namespace. Defaults to "default".
	Queue string
	// MaxRetry is how often a failing task is retried (with exponential
	// backoff) before it is archived. Zero means asynq's default, 25;
	// negative means never retried: the task runs at most once, even
	// when its run times out or its worker dies, and a worker without
	// its handler archives it at once instead of handing it back (deploy
	// the handler before enqueuing such tasks).
	MaxRetry int
	// Timeout bounds one run of the handler (its context ends then).
	// Zero means asynq's default, 30 minutes.
	Timeout time.Duration
	// ProcessAt delays the task until then. Zero means at once.
	ProcessAt time.Time
}

// asynq returns the asynq options of a task put on the queue named
// queue (already in its namespace). A task that may be retried
// (MaxRetry >= 0) gets one retry more than MaxRetry asks for: the spare
// lets a worker without its handler hand it back (which does not count
// as an attempt) even on its last attempt, where asynq would archive it
// on any error; the handler counts the attempts itself and archives the
// task when MaxRetry is used up (see envelope.Spare). A run that asynq
// counts itself — cut short by its Timeout, or by a worker that died —
// uses the spare: on the last attempt, that is one run more. A task
// never to be retried (MaxRetry < 0) gets no spare, so it never runs
// twice.
func (o Options) asynq(queue string, extra ...asynq.Option) []asynq.Option {
	maxRetry := o.retries() + 1
	if o.MaxRetry < 0 {
		maxRetry = 0
	}
	opts := append(append([]asynq.Option(nil), extra...), asynq.Queue(queue), asynq.MaxRetry(maxRetry))
	if o.Timeout > 0 {
		opts = append(opts, asynq.Timeout(o.Timeout))
	}
	if !o.ProcessAt.IsZero() {
		opts = append(opts, asynq.ProcessAt(o.ProcessAt))
	}
	return opts
}

// retries is how often a failing task is retried: MaxRetry, 25 for 0,
// none for a negative value.
func (o Options) retries() int {
	switch {
	case o.MaxRetry > 0:
		return o.MaxRetry
	case o.MaxRetry < 0:
		return 0
	}
	return defaultMaxRetry
}

// defaultMaxRetry is asynq's default, which Options.MaxRetry 0 means.
const defaultMaxRetry = 25

// envelope is a task's payload as hakit puts it on the queue: the caller's
// payload, and the database position the task must see (the commit LSN of
// the transaction that enqueued it), so its reads through dbrouter find
// what that transaction wrote.
type envelope struct {
	LSN  string          `json:"lsn,omitempty"`
	Data json.RawMessage `json:"data"`
	// Spare says that the task's asynq MaxRetry is one more than its
	// Options asked for when they allowed retries (see Options.asynq):
	// the handler archives it after the last retry it was given, asynq
	// never has to. A task never to be retried has asynq MaxRetry 0 (no
	// spare), which the handler's rule archives after its one run as
	// well. Tasks enqueued by earlier versions lack it.
	Spare bool `json:"spare,omitempty"`
}

// seal encodes payload and puts it in an envelope with lsn (none if 0).
func seal(lsn dbrouter.LSN, payload any) ([]byte, error) {
	data, err := encodePayload(payload)
	if err != nil {
		return nil, err
	}
	var pos string
	if lsn != 0 {
		pos = lsn.String()
	}
	return sealRaw(pos, data)
}

// encodePayload encodes a caller's payload as JSON.
func encodePayload(p any) (json.RawMessage, error) {
	data, err := json.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("jobs: encode payload: %w", err)
	}
	return data, nil
}

// sealRaw puts an encoded payload in an envelope with the position lsn, in
// PostgreSQL's text form ("" for none).
func sealRaw(lsn string, data json.RawMessage) ([]byte, error) {
	return json.Marshal(envelope{LSN: lsn, Data: data, Spare: true})
}

// SkipRetry, returned by a handler (or wrapped in its error), archives
// the task at once instead of retrying it. It wraps asynq.SkipRetry.
//
//lint:ignore ST1012 named as asynq.SkipRetry, which handlers know
var SkipRetry = fmt.Errorf("jobs: skip retry: %w", asynq.SkipRetry)

// nameLabel is the const label that tells two components of one kind
// apart in one Prometheus registry.
func nameLabel(name string) prometheus.Labels { return prometheus.Labels{"name": name} }

// Client enqueues tasks on Redis directly. Prefer [Outbox.EnqueueTx] for a
// task that must exist if and only if a database transaction commits.
//
// A Client is a prometheus.Collector of its metrics.
type Client struct {
	rdb          redis.UniversalClient
	asynq        *asynq.Client
	log          *slog.Logger
	retention    time.Duration
	waitReplicas int
	waitTimeout  time.Duration
	noReplicas   bool
	namespace    string
	nsErr        error // why the Namespace cannot be used
	confirmErr   error // why the confirmation cannot work with this configuration

	metrics  metricset.Set
	enqueued *prometheus.CounterVec
}

// ClientConfig configures a Client. The zero value is usable with a Redis
// that has a replica (Sentinel); a single Redis server needs NoReplicas.
type ClientConfig struct {
	// Retention is how long a completed task stays in Redis. Task IDs are
	// unique only while the task exists: the outbox relay and the
	// scheduler rely on that to enqueue a task once (see the package
	// documentation for the rules). Defaults to 1h.
	Retention time.Duration

	// WaitReplicas is how many Redis replicas must have a task before
	// the outbox relay forgets its row and the scheduler counts its tick
	// as enqueued. Redis acknowledges a write before any replica has it,
	// and a failover loses what no replica had; so both confirm with WAIT
	// on the very master that took the task (same process, same
	// replication history) and, until that succeeds, keep the row or
	// retry the tick. Defaults to 1. Negative values are an error (see
	// NoReplicas).
	WaitReplicas int

	// WaitTimeout bounds one WAIT. Defaults to 2s.
	WaitTimeout time.Duration

	// NoReplicas declares a Redis without replicas to wait for: a single
	// server (development, or a deployment that accepts losing the queue
	// with its server), or a Cluster without replicas. (On a Cluster with
	// replicas the confirmation runs on every master: the one that took a
	// task is among them.) The relay then forgets a row,
	// and the scheduler a tick, as soon as the master acknowledged the
	// task; losing that Redis loses those tasks with everything else it
	// held. Defaults to false: with a single server and NoReplicas unset,
	// tasks are still delivered but no outbox row is ever deleted (see
	// hakit_jobs_relay_unconfirmed_total).
	NoReplicas bool

	// Namespace keeps this app's tasks apart from other apps' on the same
	// Redis: a task for queue q goes to the Redis queue
	// "<Namespace>:<q>", which only workers with the same
	// WorkerConfig.Namespace serve. Give every Client and Worker of one
	// app the same Namespace, and each app (and each deployment of one
	// app, such as staging and production) its own. Letters, digits and
	// . _ - / ~ only (see [CheckNamespace]). Defaults to "": the queues
	// as named, shared with every app without a namespace on that Redis
	// (hakit.App sets it from Config.JobsNamespace, HAKIT_JOBS_NAMESPACE).
	Namespace string

	// Name tells this Client's metrics from another's in one Prometheus
	// registry: the const label name. Defaults to "default".
	Name string

	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// NewClient returns a Client on rdb (a *redis.Client, a Sentinel failover
// client, or a cluster client). Closing the Client does not close rdb.
// A configuration the confirmation cannot work with (a negative
// WaitReplicas, another client without NoReplicas) is reported by
// [NewRelay] and [Scheduler.Start]; a Namespace that cannot be used by
// them and by every Enqueue.
func NewClient(rdb redis.UniversalClient, cfg ClientConfig) *Client {
	if cfg.Retention <= 0 {
		cfg.Retention = time.Hour
	}
	if cfg.WaitReplicas == 0 {
		cfg.WaitReplicas = 1
	}
	if cfg.WaitTimeout <= 0 {
		cfg.WaitTimeout = 2 * time.Second
	}
	if cfg.Name == "" {
		cfg.Name = "default"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	c := &Client{rdb: rdb, asynq: asynq.NewClientFromRedisClient(rdb), log: cfg.Logger, retention: cfg.Retention,
		waitReplicas: cfg.WaitReplicas, waitTimeout: cfg.WaitTimeout, noReplicas: cfg.NoReplicas,
		namespace: cfg.Namespace, nsErr: checkNamespace("ClientConfig.Namespace", cfg.Namespace),
		enqueued: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "hakit", Subsystem: "jobs", Name: "enqueued_total",
			Help: "Tasks put on a queue, by type.", ConstLabels: nameLabel(cfg.Name)}, []string{"type"})}
	c.metrics = metricset.Set{c.enqueued}
	if !cfg.NoReplicas {
		_, ok := rdb.(masterConn)
		_, cluster := rdb.(*redis.ClusterClient)
		switch {
		case cfg.WaitReplicas < 0:
			c.confirmErr = fmt.Errorf("jobs: ClientConfig.WaitReplicas is %d; set NoReplicas to turn the confirmation off", cfg.WaitReplicas)
		case !ok && !cluster:
			c.confirmErr = fmt.Errorf("jobs: confirming tasks on Redis replicas needs a *redis.Client (plain or Sentinel) or a *redis.ClusterClient, not a %T; set ClientConfig.NoReplicas", rdb)
		}
	}
	return c
}

// Namespace returns the Client's ClientConfig.Namespace.
func (c *Client) Namespace() string { return c.namespace }

// queue returns the Redis queue of the queue named q ("default" if
// empty) in the Client's namespace.
func (c *Client) queue(q string) string { return qualify(c.namespace, q) }

// configErr is why the Client cannot be used, if it cannot.
func (c *Client) configErr() error { return errors.Join(c.nsErr, c.confirmErr) }

// Describe implements prometheus.Collector.
func (c *Client) Describe(ch chan<- *prometheus.Desc) { c.metrics.Describe(ch) }

// Collect implements prometheus.Collector.
func (c *Client) Collect(ch chan<- prometheus.Metric) { c.metrics.Collect(ch) }

// Close releases the Client. It holds nothing of its own: the Redis client
// given to NewClient stays open (it is the caller's to close), so Close
// always returns nil and may be called more than once.
func (c *Client) Close() error { return nil }

// Enqueue puts a task on its queue now. The payload is encoded as JSON. If
// ctx carries a read-your-writes position (dbrouter.WithMinLSN), the task
// carries it too. It returns the task's ID once the Redis master
// acknowledged the task; no replica need have it yet, so a Redis failover
// can lose it (the outbox cannot: use [Outbox.EnqueueTx] where that
// matters).
func (c *Client) Enqueue(ctx context.Context, taskType string, payload any, opts Options) (string, error) {
	if c.nsErr != nil {
		return "", c.nsErr
	}
	b, err := seal(dbrouter.MinLSN(ctx), payload)
	if err != nil {
		return "", err
	}
	info, err := c.asynq.EnqueueContext(ctx, asynq.NewTask(taskType, b), opts.asynq(c.queue(opts.Queue), asynq.Retention(c.retention))...)
	if err != nil {
		return "", fmt.Errorf("jobs: enqueue %s: %w", taskType, err)
	}
	c.enqueued.WithLabelValues(taskType).Inc()
	return info.ID, nil
}

// enqueueWithID enqueues a task under a given ID and reports whether it
// created it: a task that already has the ID (enqueued before, by this or
// another instance) counts as done.
func (c *Client) enqueueWithID(ctx context.Context, id, taskType string, sealed []byte, opts Options) (bool, error) {
	if c.nsErr != nil {
		return false, c.nsErr
	}
	_, err := c.asynq.EnqueueContext(ctx, asynq.NewTask(taskType, sealed), opts.asynq(c.queue(opts.Queue), asynq.TaskID(id), asynq.Retention(c.retention))...)
	switch {
	case err == nil:
		c.enqueued.WithLabelValues(taskType).Inc()
		return true, nil
	case errors.Is(err, asynq.ErrTaskIDConflict):
		return false, nil
	}
	return false, fmt.Errorf("jobs: enqueue %s as %s: %w", taskType, id, err)
}

// Archived lists the tasks of queue (in the Client's namespace;
// "default" if empty) that failed for good (the dead letters), newest
// first, at most limit.
func (c *Client) Archived(queue string, limit int) ([]*asynq.TaskInfo, error) {
	if c.nsErr != nil {
		return nil, c.nsErr
	}
	ins := asynq.NewInspectorFromRedisClient(c.rdb)
	tasks, err := ins.ListArchivedTasks(c.queue(queue), asynq.PageSize(limit))
	if err != nil && errors.Is(err, asynq.ErrQueueNotFound) {
		return nil, nil
	}
	return tasks, err
}

// qualify returns the Redis queue of the queue named q ("default" if
// empty) in namespace ns ("" for none).
func qualify(ns, q string) string {
	if q == "" {
		q = "default"
	}
	if ns == "" {
		return q
	}
	return ns + ":" + q
}

// CheckNamespace reports why ns cannot be a namespace
// (ClientConfig.Namespace, WorkerConfig.Namespace): it is part of Redis
// key names (asynq:{<ns>:<queue>}:…), so it holds letters, digits and
// . _ - / ~ only. Spaces would confuse tools, a brace would break Redis
// Cluster's hash tag, and a colon would let two namespaces share a queue
// (namespace "a" with queue "b:default", namespace "a:b" with queue
// "default"). The empty namespace, none, is valid.
func CheckNamespace(ns string) error {
	if why := namespaceProblem(ns); why != "" {
		return fmt.Errorf("jobs: namespace %q: %s", ns, why)
	}
	return nil
}

// checkNamespace is CheckNamespace for the configuration field field.
func checkNamespace(field, ns string) error {
	if why := namespaceProblem(ns); why != "" {
		return fmt.Errorf("jobs: %s %q: %s", field, ns, why)
	}
	return nil
}

// namespaceProblem says what is wrong with the namespace ns, or "".
func namespaceProblem(ns string) string {
	for _, r := range ns {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', strings.ContainsRune("._-/~", r):
		case r == ':':
			return "no colon (it separates the namespace from the queue name, so a namespace with one could name another namespace's queue): want letters, digits and . _ - / ~ only"
		default:
			return "want letters, digits and . _ - / ~ only"
		}
	}
	return ""
}
