package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"slices"
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
	// Concurrency is how many tasks run at once. Defaults to 10. (While
	// the worker also serves the queues of former namespaces, see
	// FormerNamespaces, those get as many again.)
	Concurrency int
	// Queues and their weights: a queue with weight 6 is served six times
	// as often as one with weight 1. Names are within the Namespace.
	// Defaults to critical 6, default 3, low 1.
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
	// Namespace is the app's namespace, the same as its Clients'
	// (ClientConfig.Namespace): the worker serves the Redis queues
	// "<Namespace>:<queue>" for each of Queues, so apps sharing a Redis
	// do not take each other's tasks. Defaults to "": the queues as
	// named, shared with every app without a namespace on that Redis
	// (hakit.App sets it from Config.JobsNamespace, HAKIT_JOBS_NAMESPACE).
	Namespace string
	// FormerNamespaces, for the deploy that moves an app to another
	// Namespace, are the namespaces its previous version used ("" for the
	// queues without one): the worker serves their queues too, for as
	// long as they hold tasks, completed ones kept for their Retention
	// included (it looks every 5s, and stops after three empty looks in
	// a row), so that what the previous version queued there still runs
	// during and after the deploy. Only the app's own former queues
	// belong here: tasks there that this worker has no handler for are
	// handed back, and another app still using them would have its tasks
	// delayed and, after UnhandledTimeout, archived. Defaults to none.
	FormerNamespaces []string
	// UnhandledTimeout is how long a task whose type this worker has no
	// handler for keeps being handed back before the worker archives it:
	// such a task goes back on its queue (not counted as a failed
	// attempt) for a worker that has the handler — another app's on a
	// shared queue, or a newer version's during a rolling deploy. It
	// counts from the first hand-back of the task. Defaults to 24h;
	// negative: never archived.
	UnhandledTimeout time.Duration
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

// formerCheckInterval is how often a worker looks whether the queues of
// its former namespaces hold tasks; formerIdleChecks is how many looks in
// a row must find them empty before it stops serving them.
const (
	formerCheckInterval = 5 * time.Second
	formerIdleChecks    = 3
)

// leaseRetryDelay is about how long a task whose lease expired waits
// before it runs again (plus up to as much again, as jitter). asynq gives
// such a task up only well after its lease ended (its recoverer looks
// once a minute for leases that expired 30s ago or more), so it has
// waited a minute or two already: asynq's default backoff, 15s to 44s
// for a first retry, would add to that for no use.
const leaseRetryDelay = time.Second

// unhandledLogEvery is how often a worker logs, per task type, that it
// handed back tasks it has no handler for.
const unhandledLogEvery = time.Minute

// Worker runs task handlers: an asynq server with typed JSON handlers
// (see [Handle]), read-your-writes for the tasks' database reads, metrics,
// and a life cycle that fits hakit.App's drain.
//
// A Worker is a prometheus.Collector of its metrics.
type Worker struct {
	rdb    redis.UniversalClient
	cfg    WorkerConfig
	log    *slog.Logger
	ins    *asynq.Inspector
	cfgErr error // why the configuration cannot work

	queues      map[string]int // Redis queues served, with their weights
	formerQs    map[string]int // Redis queues of former namespaces
	formerNames []string       // their names, sorted

	mu        sync.Mutex
	handlers  map[string]asynq.Handler // by task type; fixed once started
	srv       *asynq.Server
	formerSrv *formerServer // serving formerQs, while they hold tasks
	started   bool
	stopping  bool
	watchStop context.CancelFunc
	watchDone chan struct{}
	running   int           // handlers running now
	idle      chan struct{} // closed when running drops to 0, while Stop waits

	warnMu sync.Mutex
	warned map[string]time.Time // task type: last warning about unhandled tasks

	metrics   metricset.Set
	processed *prometheus.CounterVec
	failed    *prometheus.CounterVec
	unhandled *prometheus.CounterVec
	duration  *prometheus.HistogramVec
}

// NewWorker returns a Worker on rdb. Register handlers with Handle, then
// Start it (hakit.App does, when the Worker is added as a component). A
// configuration that cannot work (a bad Namespace) is an error from
// Start.
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
	if cfg.UnhandledTimeout == 0 {
		cfg.UnhandledTimeout = 24 * time.Hour
	}
	if cfg.Name == "" {
		cfg.Name = "default"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	labels := nameLabel(cfg.Name)
	w := &Worker{rdb: rdb, cfg: cfg, log: cfg.Logger, ins: asynq.NewInspectorFromRedisClient(rdb),
		handlers: map[string]asynq.Handler{}, warned: map[string]time.Time{},
		queues: map[string]int{}, formerQs: map[string]int{},
		processed: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "hakit", Subsystem: "jobs", Name: "processed_total",
			Help: "Task runs that succeeded, by type.", ConstLabels: labels}, []string{"type"}),
		failed: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "hakit", Subsystem: "jobs", Name: "failed_total",
			Help: "Task runs that failed, by type (retried or archived).", ConstLabels: labels}, []string{"type"}),
		unhandled: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "hakit", Subsystem: "jobs", Name: "unhandled_total",
			Help: "Tasks this worker has no handler for, handed back to their queue for a worker that has one, by type.", ConstLabels: labels}, []string{"type"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "hakit", Subsystem: "jobs", Name: "run_duration_seconds",
			Help: "Time a task run took, by type.", Buckets: prometheus.DefBuckets, ConstLabels: labels}, []string{"type"}),
	}
	w.metrics = metricset.Set{w.processed, w.failed, w.unhandled, w.duration}
	errs := []error{checkNamespace("WorkerConfig.Namespace", cfg.Namespace)}
	for _, ns := range cfg.FormerNamespaces {
		errs = append(errs, checkNamespace("WorkerConfig.FormerNamespaces", ns))
	}
	for q, weight := range cfg.Queues {
		w.queues[qualify(cfg.Namespace, q)] = weight
		for _, ns := range cfg.FormerNamespaces {
			if ns != cfg.Namespace {
				w.formerQs[qualify(ns, q)] = weight
			}
		}
	}
	w.formerNames = slices.Sorted(maps.Keys(w.formerQs))
	w.cfgErr = errors.Join(errs...)
	return w
}

// Namespace returns the Worker's WorkerConfig.Namespace.
func (w *Worker) Namespace() string { return w.cfg.Namespace }

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
			// asynq's MaxRetry has a spare (see Options.asynq): the last
			// retry the task was given is this one.
			retried, _ := asynq.GetRetryCount(ctx)
			maxRetry, _ := asynq.GetMaxRetry(ctx)
			if env.Spare && retried >= maxRetry-1 && !errors.Is(err, asynq.SkipRetry) {
				return w.fail(taskType, fmt.Errorf("jobs: %s: %w (retried %d times: %w)", taskType, err, retried, asynq.SkipRetry))
			}
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

// handBackError is what the worker returns for a task it has no handler
// for: asynq puts the task back on its queue's retry set for delay, not
// counting a failed attempt (see Start). Its message, which asynq keeps
// as the task's last error, records since when the task is unhandled.
type handBackError struct {
	taskType, worker string
	since            time.Time
	delay            time.Duration
}

// unhandledMark precedes the time in a handBackError's message.
const unhandledMark = "; unhandled since "

func (e *handBackError) Error() string {
	return fmt.Sprintf("jobs: no handler for task type %q on worker %q: handed back for a worker that has one%s%s",
		e.taskType, e.worker, unhandledMark, e.since.UTC().Format(time.RFC3339Nano))
}

// unhandledSince reads the time a handBackError's message records.
func unhandledSince(lastErr string) (time.Time, bool) {
	i := strings.LastIndex(lastErr, unhandledMark)
	if i < 0 {
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339Nano, lastErr[i+len(unhandledMark):])
	return t, err == nil
}

// handBack deals with a task this worker has no handler for: it hands it
// back to its queue, for a worker that has the handler, or archives it
// once it has been handed back for UnhandledTimeout.
func (w *Worker) handBack(ctx context.Context, t *asynq.Task) error {
	typ := t.Type()
	id, _ := asynq.GetTaskID(ctx)
	queue, _ := asynq.GetQueueName(ctx)
	retried, _ := asynq.GetRetryCount(ctx)
	maxRetry, _ := asynq.GetMaxRetry(ctx)
	now := time.Now()
	since := now
	// The task's last error says since when it is unhandled, if it was
	// handed back before (not if a handler failed on it since).
	if info, err := w.ins.GetTaskInfo(queue, id); err == nil {
		if s, ok := unhandledSince(info.LastErr); ok && s.Before(now) {
			since = s
		}
	}
	switch {
	case w.cfg.UnhandledTimeout > 0 && now.Sub(since) >= w.cfg.UnhandledTimeout:
		err := fmt.Errorf("jobs: no handler registered for task type %q: handed back for %s (since %s) without a worker that has one taking it: %w",
			typ, w.cfg.UnhandledTimeout, since.UTC().Format(time.RFC3339), asynq.SkipRetry)
		w.log.Error("jobs: task archived: no worker has a handler for its type", "type", typ, "id", id, "queue", queue,
			"unhandled_since", since, "unhandled_timeout", w.cfg.UnhandledTimeout)
		return w.fail(typ, err)
	case maxRetry == 0:
		// A task never to be retried has no spare: asynq archives it on
		// any error, so it cannot be handed back.
		err := fmt.Errorf("jobs: no handler registered for task type %q on worker %q, and the task may not be retried (Options.MaxRetry < 0), so it cannot be handed back for a worker that has one: deploy the handler to every worker before enqueuing such tasks: %w",
			typ, w.cfg.Name, asynq.SkipRetry)
		w.log.Error("jobs: task archived: no handler for its type, and the task may not be retried, so it cannot be handed back", "type", typ, "id", id, "queue", queue)
		return w.fail(typ, err)
	case retried >= maxRetry:
		// asynq archives a task that fails on its last attempt, whatever
		// the error: tasks enqueued by hakit have a spare retry for this,
		// those of earlier versions do not.
		err := fmt.Errorf("jobs: no handler registered for task type %q on worker %q, and the task, on its last attempt, cannot be handed back: %w",
			typ, w.cfg.Name, asynq.SkipRetry)
		w.log.Error("jobs: task archived: no handler for its type, and no retry left to hand it back with", "type", typ, "id", id, "queue", queue)
		return w.fail(typ, err)
	}
	w.unhandled.WithLabelValues(typ).Inc()
	w.warnUnhandled(typ, queue, now)
	// A task nobody takes for long is handed back less often.
	delay := min(max(time.Second, now.Sub(since)/10), time.Minute)
	return &handBackError{taskType: typ, worker: w.cfg.Name, since: since, delay: delay}
}

// warnUnhandled logs, once a minute per task type, that the worker hands
// back tasks of that type.
func (w *Worker) warnUnhandled(typ, queue string, now time.Time) {
	w.warnMu.Lock()
	last, ok := w.warned[typ]
	if ok && now.Sub(last) < unhandledLogEvery {
		w.warnMu.Unlock()
		return
	}
	w.warned[typ] = now
	w.warnMu.Unlock()
	w.log.Warn("jobs: tasks of a type this worker has no handler for are handed back for a worker that has one (logged once a minute per type)",
		"type", typ, "queue", queue, "worker", w.cfg.Name, "archived_after", w.cfg.UnhandledTimeout)
}

// newServer returns an asynq server on queues.
func (w *Worker) newServer(queues map[string]int) *asynq.Server {
	return asynq.NewServerFromRedisClient(w.rdb, asynq.Config{
		Concurrency:       w.cfg.Concurrency,
		Queues:            queues,
		ShutdownTimeout:   putBackAfter,
		TaskCheckInterval: w.cfg.TaskCheckInterval,
		// Scheduled tasks, retries and hand-backs are due within a
		// second, not asynq's five.
		DelayedTaskCheckInterval: time.Second,
		Logger:                   asynqLogger{w.log},
		LogLevel:                 asynq.WarnLevel,
		// A hand-back is not a failed attempt, and comes back soon.
		IsFailure: func(err error) bool { return !errors.As(err, new(*handBackError)) },
		RetryDelayFunc: func(n int, err error, t *asynq.Task) time.Duration {
			if hb := (*handBackError)(nil); errors.As(err, &hb) {
				return hb.delay + rand.N(hb.delay/2+1)
			}
			// A task left active by a worker that lost it (it died, or a
			// Redis failover lost the reply that handed it the task).
			if errors.Is(err, asynq.ErrLeaseExpired) {
				return leaseRetryDelay + rand.N(leaseRetryDelay)
			}
			return asynq.DefaultRetryDelayFunc(n, err, t)
		},
		ErrorHandler: asynq.ErrorHandlerFunc(func(ctx context.Context, t *asynq.Task, err error) {
			if errors.As(err, new(*handBackError)) {
				return // counted and logged by handBack
			}
			retried, _ := asynq.GetRetryCount(ctx)
			maxRetry, _ := asynq.GetMaxRetry(ctx)
			id, _ := asynq.GetTaskID(ctx)
			w.log.Warn("jobs: task failed", "type", t.Type(), "id", id, "retried", retried, "max_retry", maxRetry, "err", err)
		}),
	})
}

// Start starts processing tasks.
func (w *Worker) Start(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if w.cfgErr != nil {
		return w.cfgErr
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.started {
		return errors.New("jobs: Worker started twice")
	}
	w.started = true
	w.srv = w.newServer(w.queues)
	if err := w.srv.Start(asynq.HandlerFunc(w.dispatch)); err != nil {
		return err
	}
	if len(w.formerQs) > 0 {
		wctx, stop := context.WithCancel(context.Background())
		w.watchStop, w.watchDone = stop, make(chan struct{})
		go w.watchFormer(wctx)
	}
	return nil
}

// formerServer is the asynq server of the former namespaces' queues.
// Its fields are guarded by the Worker's mu.
type formerServer struct {
	srv     *asynq.Server
	closing bool          // stopFormer stops it: what it takes from now on does not run
	running int           // tasks it runs now
	idle    chan struct{} // closed when running drops to 0, while stopFormer waits
}

// formerHandler is dispatch for the former server fs, counting what it
// runs, so that stopFormer can let that finish before it shuts fs down.
// A task fs takes once it is closing (asynq's Stop returns while a task
// it has just taken is on its way to the handler) is not run: the
// handler waits for asynq's Shutdown, which puts the task back on its
// queue as it was.
func (w *Worker) formerHandler(fs *formerServer) asynq.HandlerFunc {
	return func(ctx context.Context, t *asynq.Task) error {
		w.mu.Lock()
		if fs.closing {
			w.mu.Unlock()
			<-ctx.Done()
			return ctx.Err()
		}
		fs.running++
		w.mu.Unlock()
		defer func() {
			w.mu.Lock()
			fs.running--
			if fs.running == 0 && fs.idle != nil {
				close(fs.idle)
				fs.idle = nil
			}
			w.mu.Unlock()
		}()
		return w.dispatch(ctx, t)
	}
}

// dispatch runs a task's handler. A task nobody here handles is handed
// back (see handBack).
func (w *Worker) dispatch(ctx context.Context, t *asynq.Task) error {
	h := w.handlers[t.Type()]
	if h == nil {
		return w.handBack(ctx, t)
	}
	w.enter()
	defer w.leave()
	return h.ProcessTask(ctx, t)
}

// watchFormer serves the queues of former namespaces while they hold
// tasks, until ctx ends.
func (w *Worker) watchFormer(ctx context.Context) {
	defer close(w.watchDone)
	t := time.NewTicker(formerCheckInterval)
	defer t.Stop()
	empty := 0
	for {
		busy, err := w.formerBusy(ctx)
		switch {
		case err != nil:
			if ctx.Err() == nil {
				w.log.Debug("jobs: looking at the queues of former namespaces failed", "err", err)
			}
		case busy:
			empty = 0
			w.mu.Lock()
			if !w.stopping && w.formerSrv == nil {
				fs := &formerServer{srv: w.newServer(w.formerQs)}
				if err := fs.srv.Start(w.formerHandler(fs)); err != nil {
					w.log.Error("jobs: serving the queues of former namespaces", "err", err)
				} else {
					w.formerSrv = fs
					w.log.Info("jobs: serving the queues of former namespaces while they hold tasks", "queues", w.formerNames)
				}
			}
			w.mu.Unlock()
		default:
			empty++
			if empty >= formerIdleChecks && !w.stopFormer(ctx) {
				return // Stop took the server over
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// stopFormer stops serving the queues of former namespaces, if they are
// served. The queues were found empty, but a task may have come since:
// the server takes no new task, the watcher waits for those it runs
// (WorkerConfig.ShutdownTimeout at most) and shuts it down only then —
// asynq's Shutdown puts back what still runs, and a task put back while
// its handler goes on here would run twice (see also formerHandler). It
// returns false if the Worker is stopping: Stop then shuts the server
// down, after its own wait.
func (w *Worker) stopFormer(ctx context.Context) bool {
	w.mu.Lock()
	fs, stopping := w.formerSrv, w.stopping
	w.mu.Unlock()
	if stopping || fs == nil {
		return !stopping
	}
	fs.srv.Stop() // no new tasks
	w.mu.Lock()
	fs.closing = true
	idle := make(chan struct{})
	if fs.running == 0 {
		close(idle)
	} else {
		fs.idle = idle
	}
	w.mu.Unlock()
	t := time.NewTimer(w.cfg.ShutdownTimeout)
	defer t.Stop()
	select {
	case <-idle:
	case <-t.C:
	case <-ctx.Done():
	}
	w.mu.Lock()
	if w.stopping {
		w.mu.Unlock()
		return false
	}
	w.formerSrv, fs.idle = nil, nil
	w.mu.Unlock()
	fs.srv.Shutdown()
	w.log.Info("jobs: the queues of former namespaces are empty; no longer serving them", "queues", w.formerNames)
	return true
}

// formerBusy reports whether a queue of a former namespace holds a
// task: pending, active, scheduled, retrying, or completed and kept for
// its Retention (asynq's janitor deletes those once expired, but only in
// the queues a server serves). It reads asynq's keys,
// asynq:{<queue>}:<state>.
func (w *Worker) formerBusy(ctx context.Context) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, formerCheckInterval)
	defer cancel()
	pipe := w.rdb.Pipeline()
	var counts []*redis.IntCmd
	for _, q := range w.formerNames {
		k := "asynq:{" + q + "}:"
		counts = append(counts, pipe.LLen(ctx, k+"pending"), pipe.LLen(ctx, k+"active"),
			pipe.ZCard(ctx, k+"scheduled"), pipe.ZCard(ctx, k+"retry"), pipe.ZCard(ctx, k+"completed"))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return false, err
	}
	for _, c := range counts {
		if c.Val() > 0 {
			return true, nil
		}
	}
	return false, nil
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
// look retries it (that counts as a failed attempt): asynq's recoverer
// takes leases expired 30s ago or more, and looks when a worker starts
// and then once a minute, and the task runs 1-2s after, so within about
// 2 min 5 s of its worker's loss.
func (w *Worker) Stop(ctx context.Context) error {
	w.mu.Lock()
	srv, former := w.srv, w.formerSrv
	if srv == nil {
		w.mu.Unlock()
		return nil
	}
	w.srv, w.formerSrv, w.stopping = nil, nil, true
	watchStop, watchDone := w.watchStop, w.watchDone
	idle := make(chan struct{})
	if w.running == 0 {
		close(idle)
	} else {
		w.idle = idle
	}
	w.mu.Unlock()
	if watchStop != nil {
		watchStop()
	}
	servers := []*asynq.Server{srv}
	if former != nil {
		servers = append(servers, former.srv)
	}
	grace := w.cfg.ShutdownTimeout
	if dl, ok := ctx.Deadline(); ok {
		left := time.Until(dl)
		grace = max(0, min(grace, left-putBackAfter-min(left/10, time.Second)))
	}
	putBack := time.Now().Add(grace)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for _, s := range servers {
			s.Stop() // no new tasks
		}
		t := time.NewTimer(time.Until(putBack))
		defer t.Stop()
		select {
		case <-idle:
		case <-t.C:
		case <-ctx.Done():
		}
		// Each puts back what still runs after putBackAfter.
		var wg sync.WaitGroup
		for _, s := range servers {
			wg.Go(s.Shutdown)
		}
		wg.Wait()
		if watchDone != nil {
			<-watchDone
		}
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
