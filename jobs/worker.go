package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"hakit.dev/dbrouter"
	"hakit.dev/health"
	"hakit.dev/internal/metricset"
)

// WorkerConfig configures a Worker. The zero value is usable.
type WorkerConfig struct {
	// Concurrency is how many tasks run at once. Defaults to 10.
	Concurrency int
	// Queues and their weights: a queue with weight 6 is served six times
	// as often as one with weight 1. Defaults to critical 6, default 3,
	// low 1.
	Queues map[string]int
	// ShutdownTimeout is how long Stop lets running tasks finish, at
	// most: Stop's context may cut it short (see [Worker.Stop]). Those
	// still running then are put back on their queue to run again
	// (elsewhere). Defaults to 20s.
	ShutdownTimeout time.Duration
	// TaskCheckInterval is how often an idle worker looks for new tasks.
	// Defaults to 25ms (asynq's own default, 1s, would add up to a second
	// between an enqueue and its run); each look is one Redis script call.
	TaskCheckInterval time.Duration
	// Name tells this Worker's metrics from another's in one Prometheus
	// registry: the const label name. Defaults to "default".
	Name string
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// putBackAfter is asynq's own ShutdownTimeout: how long its Shutdown lets
// tasks run before it puts them back on their queue. Stop has waited for
// them already (ShutdownTimeout, bounded by its context) when it calls
// Shutdown, so this is only the moment a handler that has just returned
// needs to be recorded as done rather than put back.
const putBackAfter = 100 * time.Millisecond

// Worker runs task handlers: an asynq server with typed JSON handlers
// (see [Handle]), read-your-writes for the tasks' database reads, metrics,
// and a life cycle that fits hakit.App's drain.
//
// A Worker is a prometheus.Collector of its metrics.
type Worker struct {
	rdb redis.UniversalClient
	cfg WorkerConfig
	log *slog.Logger

	mu       sync.Mutex
	handlers map[string]asynq.Handler // by task type; fixed once started
	srv      *asynq.Server
	started  bool
	running  int           // handlers running now
	idle     chan struct{} // closed when running drops to 0, while Stop waits

	metrics   metricset.Set
	processed *prometheus.CounterVec
	failed    *prometheus.CounterVec
	duration  *prometheus.HistogramVec
}

// NewWorker returns a Worker on rdb. Register handlers with Handle, then
// Start it (hakit.App does, when the Worker is added as a component).
func NewWorker(rdb redis.UniversalClient, cfg WorkerConfig) *Worker {
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 10
	}
	if len(cfg.Queues) == 0 {
		cfg.Queues = map[string]int{"critical": 6, "default": 3, "low": 1}
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = 20 * time.Second
	}
	if cfg.TaskCheckInterval <= 0 {
		cfg.TaskCheckInterval = 25 * time.Millisecond
	}
	if cfg.Name == "" {
		cfg.Name = "default"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	labels := nameLabel(cfg.Name)
	w := &Worker{rdb: rdb, cfg: cfg, log: cfg.Logger, handlers: map[string]asynq.Handler{},
		processed: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "hakit", Subsystem: "jobs", Name: "processed_total",
			Help: "Task runs that succeeded, by type.", ConstLabels: labels}, []string{"type"}),
		failed: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "hakit", Subsystem: "jobs", Name: "failed_total",
			Help: "Task runs that failed, by type (retried or archived).", ConstLabels: labels}, []string{"type"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "hakit", Subsystem: "jobs", Name: "run_duration_seconds",
			Help: "Time a task run took, by type.", Buckets: prometheus.DefBuckets, ConstLabels: labels}, []string{"type"}),
	}
	w.metrics = metricset.Set{w.processed, w.failed, w.duration}
	return w
}

// Describe implements prometheus.Collector.
func (w *Worker) Describe(ch chan<- *prometheus.Desc) { w.metrics.Describe(ch) }

// Collect implements prometheus.Collector.
func (w *Worker) Collect(ch chan<- prometheus.Metric) { w.metrics.Collect(ch) }

// Handle registers fn for tasks of taskType, whose JSON payload decodes
// into T. A payload that does not decode is archived at once with the
// decoding error; an error fn returns makes the task retry with backoff
// (return [SkipRetry], or an error wrapping it, to archive it at once). A task
// enqueued with a read-your-writes position runs with it in its context,
// so reads through dbrouter see what the enqueuing transaction wrote.
//
// Delivery is at least once: a task whose worker dies mid-run runs again.
// Make fn idempotent, for instance with [Once].
//
// Handle panics on a programmer error (empty or duplicate type, after
// Start).
func Handle[T any](w *Worker, taskType string, fn func(ctx context.Context, payload T) error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case strings.TrimSpace(taskType) == "":
		panic("jobs: Handle with an empty task type")
	case w.handlers[taskType] != nil:
		panic(fmt.Sprintf("jobs: task type %q registered twice", taskType))
	case w.started:
		panic(fmt.Sprintf("jobs: Handle(%q) after Start", taskType))
	}
	w.handlers[taskType] = asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
		var env envelope
		if err := json.Unmarshal(t.Payload(), &env); err != nil || env.Data == nil {
			return w.fail(taskType, fmt.Errorf("jobs: %s: payload is not a hakit task envelope: %v: %w", taskType, err, asynq.SkipRetry))
		}
		var payload T
		if err := json.Unmarshal(env.Data, &payload); err != nil {
			return w.fail(taskType, fmt.Errorf("jobs: %s: decode payload into %T: %v: %w", taskType, payload, err, asynq.SkipRetry))
		}
		if env.LSN != "" {
			if lsn, err := dbrouter.ParseLSN(env.LSN); err == nil {
				ctx = dbrouter.WithMinLSN(ctx, lsn)
			}
		}
		start := time.Now()
		err := fn(ctx, payload)
		w.duration.WithLabelValues(taskType).Observe(time.Since(start).Seconds())
		if err != nil {
			return w.fail(taskType, fmt.Errorf("jobs: %s: %w", taskType, err))
		}
		w.processed.WithLabelValues(taskType).Inc()
		return nil
	})
}

func (w *Worker) fail(taskType string, err error) error {
	w.failed.WithLabelValues(taskType).Inc()
	return err
}

// Start starts processing tasks.
func (w *Worker) Start(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.started {
		return errors.New("jobs: Worker started twice")
	}
	w.started = true
	w.srv = asynq.NewServerFromRedisClient(w.rdb, asynq.Config{
		Concurrency:       w.cfg.Concurrency,
		Queues:            w.cfg.Queues,
		ShutdownTimeout:   putBackAfter,
		TaskCheckInterval: w.cfg.TaskCheckInterval,
		Logger:            asynqLogger{w.log},
		LogLevel:          asynq.WarnLevel,
		ErrorHandler: asynq.ErrorHandlerFunc(func(ctx context.Context, t *asynq.Task, err error) {
			retried, _ := asynq.GetRetryCount(ctx)
			maxRetry, _ := asynq.GetMaxRetry(ctx)
			id, _ := asynq.GetTaskID(ctx)
			w.log.Warn("jobs: task failed", "type", t.Type(), "id", id, "retried", retried, "max_retry", maxRetry, "err", err)
		}),
	})
	// A task nobody handles goes straight to the archive with a clear
	// error instead of failing 25 times.
	dispatch := asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
		h := w.handlers[t.Type()]
		if h == nil {
			return w.fail(t.Type(), fmt.Errorf("jobs: no handler registered for task type %q: %w", t.Type(), asynq.SkipRetry))
		}
		w.enter()
		defer w.leave()
		return h.ProcessTask(ctx, t)
	})
	return w.srv.Start(dispatch)
}

func (w *Worker) enter() {
	w.mu.Lock()
	w.running++
	w.mu.Unlock()
}

func (w *Worker) leave() {
	w.mu.Lock()
	w.running--
	if w.running == 0 && w.idle != nil {
		close(w.idle)
		w.idle = nil
	}
	w.mu.Unlock()
}

// Stop takes no new tasks, lets the running ones finish, and puts back on
// their queues those still running after WorkerConfig.ShutdownTimeout or
// shortly before ctx ends (a tenth of the time ctx has left, at most a
// second, plus 100ms, is kept for putting them back). It returns when
// that is done or when ctx ends, whichever comes first. After an error
// from ctx the shutdown goes on in the background: keep the Redis client
// open a little longer (asynq's goroutines still use it).
//
// A task put back runs again, on this or another instance, with its retry
// count unchanged; its handler's context is cancelled. A handler that
// ignores its context goes on running in this process until it returns
// or the process exits: delivery is at least once. If Redis cannot be
// reached to put a task back, the task stays active until its lease (30s,
// which this worker no longer extends) expires; then the next worker to
// look retries it (that counts as a failed attempt).
func (w *Worker) Stop(ctx context.Context) error {
	w.mu.Lock()
	srv := w.srv
	if srv == nil {
		w.mu.Unlock()
		return nil
	}
	w.srv = nil
	idle := make(chan struct{})
	if w.running == 0 {
		close(idle)
	} else {
		w.idle = idle
	}
	w.mu.Unlock()
	grace := w.cfg.ShutdownTimeout
	if dl, ok := ctx.Deadline(); ok {
		left := time.Until(dl)
		grace = max(0, min(grace, left-putBackAfter-min(left/10, time.Second)))
	}
	putBack := time.Now().Add(grace)
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Stop() // no new tasks
		t := time.NewTimer(time.Until(putBack))
		defer t.Stop()
		select {
		case <-idle:
		case <-t.C:
		case <-ctx.Done():
		}
		srv.Shutdown() // puts back what still runs after putBackAfter
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("jobs: worker stop: %w", ctx.Err())
	}
}

// HealthChecks reports whether Redis answers; not critical (Redis down
// for every instance is no reason to take them all out of the load
// balancer).
func (w *Worker) HealthChecks() []health.Check {
	return []health.Check{{Name: "redis:jobs", Func: func(ctx context.Context) error { return w.rdb.Ping(ctx).Err() }}}
}

// asynqLogger sends asynq's logs to slog. asynq's Fatal is logged as an
// error: a library does not end the process.
type asynqLogger struct{ l *slog.Logger }

func (a asynqLogger) Debug(args ...any) { a.l.Debug("asynq: " + fmt.Sprint(args...)) }
func (a asynqLogger) Info(args ...any)  { a.l.Info("asynq: " + fmt.Sprint(args...)) }
func (a asynqLogger) Warn(args ...any)  { a.l.Warn("asynq: " + fmt.Sprint(args...)) }
func (a asynqLogger) Error(args ...any) { a.l.Error("asynq: " + fmt.Sprint(args...)) }
func (a asynqLogger) Fatal(args ...any) { a.l.Error("asynq (fatal): " + fmt.Sprint(args...)) }
