package jobs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/robfig/cron/v3"

	"hakit.dev/internal/metricset"
)

// Scheduler enqueues periodic tasks so that each period's task is enqueued
// once across all instances, whichever of them are running: every
// instance runs a Scheduler with the same schedules, and each tick's task
// has the ID "<name>-<tick time>", which the queue accepts only once. No
// leader, no election, no hand-over: when an instance dies the others'
// next tick simply goes through. (asynq's own Scheduler enqueues from every
// instance, so with three instances every task runs three times.)
//
// Ticks are computed from the wall clock, identically on every instance:
// "@every 1m" ticks at whole minutes since the Unix epoch, not a minute
// after the process started; cron expressions tick at their times.
// Clocks must agree to well within a period, and within a minute. A tick
// with no instance up is skipped, as cron does.
//
// A tick counts as enqueued once a Redis replica confirmed it (see
// ClientConfig.WaitReplicas). While enqueuing fails (a Sentinel failover
// takes 2–3 s), the tick is retried, and the ticks that come due
// meanwhile follow in order, until the tick is SchedulerConfig.MaxDelay
// late; a tick that is on the master but not confirmed is retried until
// MaxDelay, alongside the ticks that come due meanwhile: a master that
// took a tick without replicas may be an old master that restarted empty,
// which the Sentinels turn into a replica of the real one, wiping what it
// took. The queue remembers a tick's ID for the
// Client's Retention after its task completed, and Start refuses a
// MaxDelay that is not at least a minute shorter: so no instance can
// enqueue a tick again after the queue forgot it, whatever the period.
//
// A Scheduler is a prometheus.Collector of its metrics.
type Scheduler struct {
	client   *Client
	log      *slog.Logger
	maxDelay time.Duration

	mu      sync.Mutex
	entries []*entry
	stop    context.CancelFunc
	done    chan struct{}

	metrics     metricset.Set
	skipped     *prometheus.CounterVec
	unconfirmed *prometheus.CounterVec
	lastWarn    atomic.Int64
}

// SchedulerConfig configures a Scheduler. The zero value is usable.
type SchedulerConfig struct {
	// MaxDelay is how late a tick may still be enqueued: a tick that
	// could not be enqueued (and confirmed) at its time is retried until
	// then; later, it is given up, logged and counted. Defaults to 30s;
	// must be at least a minute shorter than the Client's Retention.
	MaxDelay time.Duration
	// Name tells this Scheduler's metrics from another's in one
	// Prometheus registry: the const label name. Defaults to "default".
	Name string
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

type entry struct {
	name, taskType string
	sched          cron.Schedule
	sealed         []byte
	opts           Options
}

// everySchedule ticks at multiples of d since the Unix epoch.
type everySchedule struct{ d time.Duration }

func (e everySchedule) Next(t time.Time) time.Time {
	return time.Unix(0, (t.UnixNano()/int64(e.d)+1)*int64(e.d))
}

// skewMargin is how much shorter than the Client's Retention MaxDelay
// must be: the clocks of instances, workers and Redis may disagree by
// that much.
const skewMargin = time.Minute

// NewScheduler returns a Scheduler that enqueues with client.
func NewScheduler(client *Client, cfg SchedulerConfig) *Scheduler {
	if cfg.MaxDelay <= 0 {
		cfg.MaxDelay = 30 * time.Second
	}
	if cfg.Name == "" {
		cfg.Name = "default"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	labels := nameLabel(cfg.Name)
	s := &Scheduler{client: client, log: cfg.Logger, maxDelay: cfg.MaxDelay,
		skipped: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "hakit", Subsystem: "jobs", Name: "ticks_skipped_total",
			Help: "Ticks this instance gave up because it could not enqueue them within MaxDelay, by schedule (another instance may have).", ConstLabels: labels}, []string{"schedule"}),
		unconfirmed: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "hakit", Subsystem: "jobs", Name: "ticks_unconfirmed_total",
			Help: "Ticks enqueued on the Redis master but not confirmed by its replicas within MaxDelay, by schedule.", ConstLabels: labels}, []string{"schedule"}),
	}
	s.metrics = metricset.Set{s.skipped, s.unconfirmed}
	return s
}

// Describe implements prometheus.Collector.
func (s *Scheduler) Describe(ch chan<- *prometheus.Desc) { s.metrics.Describe(ch) }

// Collect implements prometheus.Collector.
func (s *Scheduler) Collect(ch chan<- prometheus.Metric) { s.metrics.Collect(ch) }

// Add schedules a task: spec is "@every <duration>" (at least 1s) or a
// standard 5-field cron expression (or @hourly, @daily, …). name must be
// unique and the same on every instance; it is part of the task IDs.
func (s *Scheduler) Add(name, spec, taskType string, payload any, opts Options) error {
	if name == "" || strings.ContainsAny(name, " \t") {
		return fmt.Errorf("jobs: schedule name %q: want a non-empty word", name)
	}
	e := &entry{name: name, taskType: taskType, opts: opts}
	if d, ok := strings.CutPrefix(spec, "@every "); ok {
		dur, err := time.ParseDuration(strings.TrimSpace(d))
		if err != nil || dur < time.Second || dur%time.Second != 0 {
			return fmt.Errorf("jobs: schedule %q: %q: want @every with whole seconds, at least 1s", name, spec)
		}
		e.sched = everySchedule{dur}
	} else {
		cs, err := cron.ParseStandard(spec)
		if err != nil {
			return fmt.Errorf("jobs: schedule %q: %w", name, err)
		}
		e.sched = cs
	}
	var err error
	if e.sealed, err = seal(0, payload); err != nil {
		return fmt.Errorf("jobs: schedule %q: %w", name, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, x := range s.entries {
		if x.name == name {
			return fmt.Errorf("jobs: schedule %q added twice", name)
		}
	}
	if s.stop != nil {
		return errors.New("jobs: Scheduler.Add after Start")
	}
	s.entries = append(s.entries, e)
	return nil
}

// Start starts the schedules. It fails if the Client's configuration
// cannot confirm ticks (see NewClient) or MaxDelay is not at least a
// minute shorter than the Client's Retention.
func (s *Scheduler) Start(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := s.client.configErr(); err != nil {
		return err
	}
	if s.maxDelay > s.client.retention-skewMargin {
		return fmt.Errorf("jobs: SchedulerConfig.MaxDelay (%s) must be at least %s shorter than ClientConfig.Retention (%s), or a late tick could be enqueued again after the queue forgot it",
			s.maxDelay, skewMargin, s.client.retention)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stop != nil {
		return errors.New("jobs: Scheduler started twice")
	}
	ctx, stop := context.WithCancel(context.Background())
	s.stop, s.done = stop, make(chan struct{})
	var wg sync.WaitGroup
	for _, e := range s.entries {
		wg.Go(func() { s.run(ctx, e) })
	}
	go func() {
		wg.Wait()
		close(s.done)
	}()
	return nil
}

// Stop stops the schedules (the other instances' go on) and returns when
// they have stopped or ctx has ended, whichever comes first. A tick being
// enqueued is abandoned; another instance enqueues it.
func (s *Scheduler) Stop(ctx context.Context) error {
	s.mu.Lock()
	stop, done := s.stop, s.done
	s.mu.Unlock()
	if stop == nil {
		return nil
	}
	stop()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("jobs: scheduler stop: %w", ctx.Err())
	}
}

func (s *Scheduler) run(ctx context.Context, e *entry) {
	next := e.sched.Next(time.Now())
	// Ticks on a master that no replica confirmed yet. They are tried
	// again (same ID, so harmlessly) every pendingRetry until a replica
	// confirms them or they are MaxDelay late: a master that took a tick
	// without replicas may be one that restarted empty, and a Sentinel
	// turns it into a replica of the real master a few seconds later,
	// wiping what it took.
	var pending []time.Time
	for {
		wake := next
		if len(pending) > 0 {
			if r := time.Now().Add(pendingRetry); r.Before(wake) {
				wake = r
			}
		}
		t := time.NewTimer(time.Until(wake))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		pending = s.retryPending(ctx, e, pending)
		if time.Now().Before(next) {
			continue
		}
		after := e.sched.Next(next)
		if !s.tick(ctx, e, next, after) {
			pending = append(pending, next)
		}
		if ctx.Err() != nil {
			return
		}
		next = after
		// Ticks already past MaxDelay (the process was paused, or a tick
		// took long): give them up at once, in one log line.
		if late := time.Now().Add(-s.maxDelay); next.Before(late) {
			from, n := next, 0
			for ; next.Before(late); next = e.sched.Next(next) {
				n++
			}
			s.skipped.WithLabelValues(e.name).Add(float64(n))
			s.log.Warn("jobs: ticks skipped: more than MaxDelay late", "schedule", e.name, "from", from, "count", n, "max_delay", s.maxDelay)
		}
	}
}

// pendingRetry is how often a tick that is on the master but not
// confirmed by a replica is tried again.
const pendingRetry = time.Second

// retryPending tries each unconfirmed tick once more and returns those
// still unconfirmed; a tick MaxDelay late is given up, logged and counted.
func (s *Scheduler) retryPending(ctx context.Context, e *entry, pending []time.Time) []time.Time {
	kept := pending[:0]
	down := false // Redis failed: try the rest next time, give up only the late
	for _, at := range pending {
		if ctx.Err() != nil {
			return nil
		}
		var err error
		if !down {
			err = s.client.enqueueConfirmed(ctx, tickID(e, at), e.taskType, e.sealed, e.opts)
			down = err != nil && !errors.Is(err, ErrNotConfirmed)
		}
		switch {
		case err == nil && !down:
			continue
		case time.Since(at) < s.maxDelay:
			kept = append(kept, at)
			continue
		}
		s.unconfirmed.WithLabelValues(e.name).Inc()
		now := time.Now().UnixNano()
		if last := s.lastWarn.Load(); now-last > int64(10*time.Second) && s.lastWarn.CompareAndSwap(last, now) {
			s.log.Warn("jobs: tick enqueued but not confirmed by a Redis replica within MaxDelay; a loss of the Redis master would lose it",
				"schedule", e.name, "tick", at, "max_delay", s.maxDelay, "err", err)
		}
	}
	return kept
}

// tickID is the task ID of the tick at: the same on every instance.
func tickID(e *entry, at time.Time) string { return e.name + "-" + strconv.FormatInt(at.Unix(), 10) }

// tick enqueues the tick at, retrying until it is confirmed or MaxDelay
// late, and reports whether it is done with it. A tick that is on the
// master but not confirmed by a replica is retried here only until the
// next tick (after) is due, so as not to hold up the ticks behind it;
// then tick returns false and run keeps trying it alongside.
func (s *Scheduler) tick(ctx context.Context, e *entry, at, after time.Time) bool {
	id := tickID(e, at)
	backoff := 50 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := s.client.enqueueConfirmed(ctx, id, e.taskType, e.sealed, e.opts)
		if err == nil || ctx.Err() != nil {
			return true
		}
		// The tick's ID makes retries, and other instances' attempts,
		// harmless.
		unconfirmed := errors.Is(err, ErrNotConfirmed)
		giveUp := at.Add(s.maxDelay)
		if unconfirmed && after.Before(giveUp) {
			giveUp = after
		}
		wait := min(backoff, time.Until(giveUp))
		switch {
		case wait <= 0 && unconfirmed:
			return false
		case wait <= 0:
			s.skipped.WithLabelValues(e.name).Inc()
			s.log.Error("jobs: tick skipped: not enqueued within MaxDelay", "schedule", e.name, "tick", at, "max_delay", s.maxDelay, "err", err)
			return true
		case attempt == 1 && !unconfirmed:
			s.log.Warn("jobs: scheduled enqueue failed; retrying", "schedule", e.name, "tick", at, "err", err)
		default:
			s.log.Debug("jobs: scheduled enqueue failed; retrying", "schedule", e.name, "tick", at, "attempt", attempt, "err", err)
		}
		select {
		case <-ctx.Done():
			return true
		case <-time.After(wait):
		}
		backoff = min(2*backoff, time.Second)
	}
}
