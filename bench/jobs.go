package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"hakit.dev/dbrouter"
	"hakit.dev/hatest"
	"hakit.dev/jobs"
)

// jobsSuite measures the outbox across a relay kill and a Redis failover,
// its latency and throughput against direct enqueues, and periodic jobs on
// three instances against asynq's own Scheduler.
func jobsSuite(ctx context.Context, r *report) error {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	r.row("measurement", "hakit", "baseline", "")

	lost, dups, total, err := outboxChaos(ctx, quiet)
	if err != nil {
		return fmt.Errorf("outbox chaos: %w", err)
	}
	r.row("outbox tasks across a relay kill and a Redis failover: lost / run twice", fmt.Sprintf("%d / %d of %d", lost, dups, total), "", "")

	p99, ratio, outboxRate, directRate, err := outboxSpeed(ctx, quiet)
	if err != nil {
		return fmt.Errorf("outbox speed: %w", err)
	}
	r.row("commit to handler start, p99 (ms)", fmt.Sprintf("%.1f", p99), "", "")
	r.row("tasks/s, business transaction + task, 4 producers", fmt.Sprintf("%.0f", outboxRate), fmt.Sprintf("%.0f", directRate), "enqueue after commit (no outbox)")

	ours, theirs, ticks, err := periodicDuplicates(ctx, quiet)
	if err != nil {
		return fmt.Errorf("periodic: %w", err)
	}
	r.row(fmt.Sprintf("@every 1s on 3 instances for %d ticks: extra runs", ticks), fmt.Sprint(ours), fmt.Sprint(theirs), "asynq.Scheduler on each instance")

	r.metric("outbox_lost", lost)
	r.metric("outbox_duplicates", dups)
	r.metric("outbox_tasks", total)
	r.metric("outbox_latency_p99_ms", fmt.Sprintf("%.1f", p99))
	r.metric("jobs_throughput_ratio", fmt.Sprintf("%.3f", ratio))
	r.metric("periodic_duplicate_runs", ours)
	r.metric("periodic_duplicate_runs_asynq", theirs)
	return nil
}

type outboxEnv struct {
	pg     *hatest.PostgresCluster
	db     *dbrouter.Router
	outbox *jobs.Outbox
}

// writeOrders inserts orders 1..n from 4 writers, each with its outbox
// task in the same Write, and returns at once: next counts the ids taken,
// wait waits for the writers. done gets each id's result; a writer stops
// when it returns false.
func writeOrders(ctx context.Context, e *outboxEnv, n int64, done func(id int64, err error) bool) (next *atomic.Int64, wait func()) {
	next = new(atomic.Int64)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				id := next.Add(1)
				if id > n {
					return
				}
				err := e.db.Write(ctx, func(tx pgx.Tx) error {
					if _, err := tx.Exec(ctx, "INSERT INTO orders VALUES ($1)", id); err != nil {
						return err
					}
					_, err := e.outbox.EnqueueTx(ctx, tx, "order", order{ID: id}, jobs.Options{})
					return err
				})
				if !done(id, err) {
					return
				}
			}
		})
	}
	return next, wg.Wait
}

func newOutboxEnv(ctx context.Context, log *slog.Logger) (*outboxEnv, func(), error) {
	pg, err := hatest.StartPostgres(ctx, hatest.PostgresOptions{})
	if err != nil {
		return nil, nil, err
	}
	db, err := dbrouter.New(ctx, dbrouter.Config{Nodes: pg.DSNs(), Logger: log})
	if err != nil {
		pg.Close()
		return nil, nil, err
	}
	e := &outboxEnv{pg: pg, db: db, outbox: jobs.NewOutbox("")}
	cleanup := func() { db.Close(); pg.Close() }
	if err := e.outbox.CreateTables(ctx, db); err != nil {
		cleanup()
		return nil, nil, err
	}
	if _, err := db.Exec(ctx, "CREATE TABLE orders (id bigint PRIMARY KEY)"); err != nil {
		cleanup()
		return nil, nil, err
	}
	return e, cleanup, nil
}

// counter records task runs by id, and when each started.
type counter struct {
	mu      sync.Mutex
	runs    map[int64]int
	started map[int64]time.Time
}

func newCounter() *counter { return &counter{runs: map[int64]int{}, started: map[int64]time.Time{}} }

func (c *counter) hit(id int64) {
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.runs[id] == 0 {
		c.started[id] = now
	}
	c.runs[id]++
}

func (c *counter) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.runs)
}

type order struct {
	ID int64 `json:"id"`
}

// orderWorker starts a client and a worker that counts "order" tasks;
// noReplicas for a Redis without replicas.
func orderWorker(ctx context.Context, rdb redis.UniversalClient, noReplicas bool, log *slog.Logger) (*jobs.Client, *counter, func(), error) {
	client := jobs.NewClient(rdb, jobs.ClientConfig{NoReplicas: noReplicas, Logger: log})
	c := newCounter()
	w := jobs.NewWorker(rdb, jobs.WorkerConfig{Concurrency: 20, Logger: log})
	jobs.Handle(w, "order", func(ctx context.Context, o order) error { c.hit(o.ID); return nil })
	if err := w.Start(ctx); err != nil {
		client.Close()
		return nil, nil, nil, err
	}
	return client, c, func() { w.Stop(ctx); client.Close() }, nil
}

// outboxChaos enqueues 10,000 tasks through the outbox from 4 producers
// while two relays run; one relay is killed (its pass cut off) and
// restarted, and the Redis master is killed (Sentinel fails over). Every
// committed task must run once.
func outboxChaos(ctx context.Context, log *slog.Logger) (lost, dups, total int, err error) {
	e, cleanup, err := newOutboxEnv(ctx, log)
	if err != nil {
		return 0, 0, 0, err
	}
	defer cleanup()
	rd, err := hatest.StartRedis(ctx, hatest.RedisOptions{Replicas: 1, Sentinels: 3})
	if err != nil {
		return 0, 0, 0, err
	}
	defer rd.Close()
	rdb := redis.NewFailoverClient(&redis.FailoverOptions{MasterName: rd.MasterName, SentinelAddrs: rd.SentinelAddrs(),
		DialTimeout: 500 * time.Millisecond, ReadTimeout: 3 * time.Second, WriteTimeout: time.Second, PoolSize: 64})
	defer rdb.Close()
	client, c, stop, err := orderWorker(ctx, rdb, false, log)
	if err != nil {
		return 0, 0, 0, err
	}
	defer stop()
	newRelay := func() (*jobs.Relay, error) {
		rl, err := jobs.NewRelay(jobs.RelayConfig{DB: e.db, Client: client, Outbox: e.outbox, Logger: log, BatchSize: 200})
		if err != nil {
			return nil, err
		}
		return rl, rl.Start(ctx)
	}
	relayA, err := newRelay()
	if err != nil {
		return 0, 0, 0, err
	}
	relayB, err := newRelay()
	if err != nil {
		return 0, 0, 0, err
	}
	defer func() { relayB.Stop(ctx) }()

	const n = 10000
	var committed sync.Map
	next, wait := writeOrders(ctx, e, n, func(id int64, err error) bool {
		if err == nil {
			committed.Store(id, true)
		}
		return true
	})
	waitN := func(k int64) {
		for next.Load() < k {
			time.Sleep(5 * time.Millisecond)
		}
	}
	waitN(n * 3 / 10)
	// "Kill" relay A: its context ends in the middle of whatever pass it is
	// in, which rolls back; a new relay takes over.
	kctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	_ = relayA.Stop(kctx)
	cancel()
	relayA, err = newRelay()
	if err != nil {
		return 0, 0, 0, err
	}
	defer func() { relayA.Stop(ctx) }()
	waitN(n * 6 / 10)
	old, err := rd.KillMaster(ctx)
	if err != nil {
		return 0, 0, 0, err
	}
	wait()
	fctx, cancel := context.WithTimeout(ctx, time.Minute)
	_, err = rd.WaitFailover(fctx, old)
	cancel()
	if err != nil {
		return 0, 0, 0, err
	}
	committedN := 0
	committed.Range(func(any, any) bool { committedN++; return true })
	deadline := time.Now().Add(2 * time.Minute)
	for c.count() < committedN && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(time.Second) // late duplicates show up
	c.mu.Lock()
	defer c.mu.Unlock()
	committed.Range(func(k, _ any) bool {
		if c.runs[k.(int64)] == 0 {
			lost++
		}
		return true
	})
	for _, runs := range c.runs {
		if runs > 1 {
			dups++
		}
	}
	return lost, dups, committedN, nil
}

// outboxSpeed measures commit-to-handler-start latency at a steady rate,
// and end-to-end throughput of "business transaction + task" through the
// outbox against enqueueing directly after the commit.
func outboxSpeed(ctx context.Context, log *slog.Logger) (p99, ratio, outboxRate, directRate float64, err error) {
	e, cleanup, err := newOutboxEnv(ctx, log)
	if err != nil {
		return 0, 0, 0, 0, err
	}
	defer cleanup()
	rd, err := hatest.StartRedis(ctx, hatest.RedisOptions{})
	if err != nil {
		return 0, 0, 0, 0, err
	}
	defer rd.Close()
	rdb := redis.NewClient(&redis.Options{Addr: rd.Addr(), PoolSize: 64})
	defer rdb.Close()
	client, c, stop, err := orderWorker(ctx, rdb, true, log)
	if err != nil {
		return 0, 0, 0, 0, err
	}
	defer stop()
	relay, err := jobs.NewRelay(jobs.RelayConfig{DB: e.db, Client: client, Outbox: e.outbox, Logger: log})
	if err != nil {
		return 0, 0, 0, 0, err
	}
	if err := relay.Start(ctx); err != nil {
		return 0, 0, 0, 0, err
	}
	defer relay.Stop(ctx)

	var idSeq atomic.Int64
	business := func(tx pgx.Tx, id int64) error {
		_, err := tx.Exec(ctx, "INSERT INTO orders VALUES ($1)", id)
		return err
	}
	viaOutbox := func(id int64) error {
		return e.db.Write(ctx, func(tx pgx.Tx) error {
			if err := business(tx, id); err != nil {
				return err
			}
			_, err := e.outbox.EnqueueTx(ctx, tx, "order", order{ID: id}, jobs.Options{})
			return err
		})
	}
	direct := func(id int64) error {
		if err := e.db.Write(ctx, func(tx pgx.Tx) error { return business(tx, id) }); err != nil {
			return err
		}
		_, err := client.Enqueue(ctx, "order", order{ID: id}, jobs.Options{})
		return err
	}

	// Latency: 1,000 tasks, 200 per second, one at a time.
	committedAt := map[int64]time.Time{}
	for range 1000 {
		id := idSeq.Add(1)
		if err := viaOutbox(id); err != nil {
			return 0, 0, 0, 0, err
		}
		committedAt[id] = time.Now()
		time.Sleep(5 * time.Millisecond)
	}
	deadline := time.Now().Add(time.Minute)
	for c.count() < len(committedAt) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	var lat []float64
	c.mu.Lock()
	for id, at := range committedAt {
		if s, ok := c.started[id]; ok {
			lat = append(lat, float64(s.Sub(at))/float64(time.Millisecond))
		}
	}
	c.mu.Unlock()
	if len(lat) < len(committedAt) {
		return 0, 0, 0, 0, fmt.Errorf("only %d of %d tasks ran", len(lat), len(committedAt))
	}
	slices.Sort(lat)
	p99 = lat[len(lat)*99/100]

	// Throughput: 4 producers, 3,000 tasks each way, until all have run.
	rate := func(produce func(int64) error) (float64, error) {
		start := time.Now()
		base := c.count()
		const total = 3000
		var left atomic.Int64
		left.Store(total)
		var wg sync.WaitGroup
		var firstErr atomic.Value
		for range 4 {
			wg.Go(func() {
				for left.Add(-1) >= 0 {
					if err := produce(idSeq.Add(1)); err != nil {
						firstErr.CompareAndSwap(nil, err)
						return
					}
				}
			})
		}
		wg.Wait()
		if err, _ := firstErr.Load().(error); err != nil {
			return 0, err
		}
		deadline := time.Now().Add(time.Minute)
		for c.count() < base+total {
			if time.Now().After(deadline) {
				return 0, errors.New("tasks did not all run within a minute")
			}
			time.Sleep(2 * time.Millisecond)
		}
		return total / time.Since(start).Seconds(), nil
	}
	if outboxRate, err = rate(viaOutbox); err != nil {
		return 0, 0, 0, 0, err
	}
	if directRate, err = rate(direct); err != nil {
		return 0, 0, 0, 0, err
	}
	return p99, outboxRate / directRate, outboxRate, directRate, nil
}

// periodicDuplicates runs an @every 1s schedule on three instances, ours
// and asynq's Scheduler, and counts the runs beyond one per tick.
func periodicDuplicates(ctx context.Context, log *slog.Logger) (ours, theirs, ticks int, err error) {
	rd, err := hatest.StartRedis(ctx, hatest.RedisOptions{})
	if err != nil {
		return 0, 0, 0, err
	}
	defer rd.Close()
	rdb := redis.NewClient(&redis.Options{Addr: rd.Addr()})
	defer rdb.Close()
	// Runs by tick: ours by task ID (one ID per tick), asynq's by the
	// second they ran in.
	var mu sync.Mutex
	oursRuns, theirRuns := map[string]int{}, map[int64]int{}
	w := jobs.NewWorker(rdb, jobs.WorkerConfig{Logger: log})
	jobs.Handle(w, "ours", func(ctx context.Context, _ struct{}) error {
		id, _ := asynq.GetTaskID(ctx)
		mu.Lock()
		oursRuns[id]++
		mu.Unlock()
		return nil
	})
	// asynq's Scheduler enqueues bare payloads; give it a handler of its
	// own on a plain asynq server.
	srv := asynq.NewServerFromRedisClient(rdb, asynq.Config{Concurrency: 4, Queues: map[string]int{"asynq": 1}, Logger: asynqQuiet{}, TaskCheckInterval: 20 * time.Millisecond})
	if err := srv.Start(asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
		mu.Lock()
		theirRuns[time.Now().Unix()]++ // one run per second is what the schedule asks for
		mu.Unlock()
		return nil
	})); err != nil {
		return 0, 0, 0, err
	}
	defer srv.Shutdown()
	if err := w.Start(ctx); err != nil {
		return 0, 0, 0, err
	}
	defer w.Stop(ctx)

	const seconds = 6
	var stops []func()
	for range 3 {
		c := jobs.NewClient(rdb, jobs.ClientConfig{NoReplicas: true, Logger: log})
		s := jobs.NewScheduler(c, jobs.SchedulerConfig{Logger: log})
		if err := s.Add("beat", "@every 1s", "ours", struct{}{}, jobs.Options{}); err != nil {
			return 0, 0, 0, err
		}
		as := asynq.NewSchedulerFromRedisClient(rdb, &asynq.SchedulerOpts{Logger: asynqQuiet{}})
		if _, err := as.Register("@every 1s", asynq.NewTask("theirs", nil, asynq.Queue("asynq"))); err != nil {
			return 0, 0, 0, err
		}
		if err := s.Start(ctx); err != nil {
			return 0, 0, 0, err
		}
		if err := as.Start(); err != nil {
			return 0, 0, 0, err
		}
		stops = append(stops, func() { s.Stop(ctx); as.Shutdown(); c.Close() })
	}
	time.Sleep(seconds * time.Second)
	for _, stop := range stops {
		stop()
	}
	time.Sleep(500 * time.Millisecond) // the last runs
	mu.Lock()
	defer mu.Unlock()
	for _, n := range oursRuns {
		ours += n - 1
	}
	for _, n := range theirRuns {
		theirs += n - 1
	}
	return ours, theirs, len(oursRuns), nil
}

// asynqQuiet silences asynq's own logs in the baseline.
type asynqQuiet struct{}

func (asynqQuiet) Debug(...any) {}
func (asynqQuiet) Info(...any)  {}
func (asynqQuiet) Warn(...any)  {}
func (asynqQuiet) Error(...any) {}
func (asynqQuiet) Fatal(...any) {}
