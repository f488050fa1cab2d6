package jobs_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"hakit.dev/dbrouter"
	"hakit.dev/hatest"
	"hakit.dev/jobs"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// runs counts task runs by key.
type runs struct {
	mu sync.Mutex
	n  map[string]int
}

func (r *runs) add(k string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.n == nil {
		r.n = map[string]int{}
	}
	r.n[k]++
}

func (r *runs) get(k string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n[k]
}

func (r *runs) snapshot() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]int{}
	for k, v := range r.n {
		out[k] = v
	}
	return out
}

type note struct {
	ID int `json:"id"`
}

// env is a database, a Redis, a client, a worker with a "note" handler,
// and a relay.
type env struct {
	pg     *hatest.PostgresCluster
	db     *dbrouter.Router
	rdb    redis.UniversalClient
	client *jobs.Client
	worker *jobs.Worker
	relay  *jobs.Relay
	outbox *jobs.Outbox
	runs   *runs
}

// newEnv: noReplicas for a Redis without replicas (ClientConfig.NoReplicas).
func newEnv(t *testing.T, pgOpts hatest.PostgresOptions, rdb redis.UniversalClient, noReplicas bool) *env {
	t.Helper()
	ctx := context.Background()
	e := &env{pg: hatest.NewPostgres(t, pgOpts), rdb: rdb, runs: &runs{}, outbox: jobs.NewOutbox("")}
	db, err := dbrouter.New(ctx, dbrouter.Config{Nodes: e.pg.DSNs(), Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	e.db = db
	if err := e.outbox.CreateTables(ctx, db); err != nil {
		t.Fatal(err)
	}
	e.client = jobs.NewClient(rdb, jobs.ClientConfig{Logger: quiet(), NoReplicas: noReplicas})
	t.Cleanup(func() { e.client.Close() })
	e.worker = jobs.NewWorker(rdb, jobs.WorkerConfig{Logger: quiet(), ShutdownTimeout: 2 * time.Second})
	jobs.Handle(e.worker, "note", func(ctx context.Context, n note) error {
		e.runs.add(fmt.Sprint(n.ID))
		return nil
	})
	e.relay, err = jobs.NewRelay(jobs.RelayConfig{DB: db, Client: e.client, Outbox: e.outbox, Logger: quiet(), BatchSize: 50})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *env) start(t *testing.T) {
	t.Helper()
	if err := e.worker.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.worker.Stop(context.Background()) })
	if err := e.relay.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.relay.Stop(context.Background()) })
}

func standaloneRedis(t *testing.T) redis.UniversalClient {
	rd := hatest.NewRedis(t, hatest.RedisOptions{})
	rdb := redis.NewClient(&redis.Options{Addr: rd.Addr()})
	t.Cleanup(func() { rdb.Close() })
	return rdb
}

func enqueue(ctx context.Context, e *env, id int, commit bool) error {
	_, err := enqueueTask(ctx, e, id, commit)
	return err
}

// enqueueTask is enqueue, returning the task's ID on the queue.
func enqueueTask(ctx context.Context, e *env, id int, commit bool) (string, error) {
	tx, err := e.db.Primary()
	if err != nil {
		return "", err
	}
	conn, err := tx.Begin(ctx)
	if err != nil {
		return "", err
	}
	taskID, err := e.outbox.EnqueueTx(ctx, conn, "note", note{ID: id}, jobs.Options{})
	if err != nil {
		conn.Rollback(ctx)
		return "", err
	}
	if commit {
		return taskID, conn.Commit(ctx)
	}
	return taskID, conn.Rollback(ctx)
}

func TestOutboxCommitRunsOnceRollbackNever(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, hatest.PostgresOptions{}, standaloneRedis(t), true)
	e.start(t)
	if err := enqueue(ctx, e, 1, false); err != nil {
		t.Fatal(err)
	}
	if err := enqueue(ctx, e, 2, true); err != nil {
		t.Fatal(err)
	}
	hatest.WaitFor(t, 20*time.Second, "the committed task", func() bool { return e.runs.get("2") == 1 })
	// Another committed task after it: once it ran, the relay has passed
	// the rolled-back one's place.
	if err := enqueue(ctx, e, 3, true); err != nil {
		t.Fatal(err)
	}
	hatest.WaitFor(t, 20*time.Second, "the third task", func() bool { return e.runs.get("3") == 1 })
	if got := e.runs.snapshot(); len(got) != 2 || got["1"] != 0 || got["2"] != 1 {
		t.Fatalf("runs %v; want tasks 2 and 3 once, the rolled-back 1 never", got)
	}
	// The relay deletes a row once a replica confirmed its task, which
	// may be after a worker ran it.
	pool, _ := e.db.Primary()
	var left int
	var err error
	hatest.WaitFor(t, 20*time.Second, "an empty outbox", func() bool {
		err = pool.QueryRow(ctx, "SELECT count(*) FROM hakit_outbox").Scan(&left)
		return err == nil && left == 0
	})
}

func TestRelayCrashMidBatchLosesAndDuplicatesNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, hatest.PostgresOptions{}, standaloneRedis(t), true)
	crashes := atomic.Int32{}
	jobs.SetAfterEnqueue(e.relay, func(n int) error {
		if n == 20 && crashes.Add(1) <= 2 {
			return errors.New("relay crashed")
		}
		return nil
	})
	for i := range 100 {
		if err := enqueue(ctx, e, i, true); err != nil {
			t.Fatal(err)
		}
	}
	// Two passes die after enqueuing 20 of their 50 rows; their rows stay
	// and are enqueued again.
	for range 2 {
		if _, err := e.relay.Pass(ctx); err == nil {
			t.Fatal("the crashing pass succeeded")
		}
	}
	e.start(t)
	hatest.WaitFor(t, 30*time.Second, "all 100 tasks", func() bool { return len(e.runs.snapshot()) == 100 })
	time.Sleep(500 * time.Millisecond) // let any duplicate show up
	for k, n := range e.runs.snapshot() {
		if n != 1 {
			t.Fatalf("task %s ran %d times", k, n)
		}
	}
}

func TestRedisFailoverWithTasksInFlight(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rd := hatest.NewRedis(t, hatest.RedisOptions{Replicas: 1, Sentinels: 3})
	rdb := redis.NewFailoverClient(&redis.FailoverOptions{MasterName: rd.MasterName, SentinelAddrs: rd.SentinelAddrs(),
		DialTimeout: 500 * time.Millisecond, ReadTimeout: 3 * time.Second, WriteTimeout: time.Second})
	t.Cleanup(func() { rdb.Close() })
	e := newEnv(t, hatest.PostgresOptions{}, rdb, false)
	e.start(t)
	var old *hatest.RedisNode
	var killed time.Time
	taskIDs := make([]string, 300)
	for i := range taskIDs {
		var err error
		if taskIDs[i], err = enqueueTask(ctx, e, i, true); err != nil {
			t.Fatal(err)
		}
		if i == 150 {
			killed = time.Now()
			if old, err = rd.KillMaster(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	// A task a worker was taking as the master died (the master took it
	// off the queue and replicated that, but its reply never reached the
	// worker) stays active on the new master until asynq's recoverer
	// finds its lease expired: docs/jobs.md bounds its run at
	// failoverRunBound after the failover.
	const failoverRunBound = 2*time.Minute + 5*time.Second
	late := killed.Add(20 * time.Second) // when to say which tasks are late
	deadline := killed.Add(failoverRunBound + 55*time.Second)
	for len(e.runs.snapshot()) < 300 && time.Now().Before(deadline) {
		if !late.IsZero() && time.Now().After(late) {
			late = time.Time{}
			if missing := notRun(e, len(taskIDs)); len(missing) > 0 {
				t.Logf("%d tasks have not run 20s after the Redis master's loss; waiting up to %s for them:\n%s",
					len(missing), failoverRunBound+55*time.Second, taskStates(ctx, e, rdb, taskIDs, missing))
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	if missing := notRun(e, len(taskIDs)); len(missing) > 0 {
		t.Fatalf("%d of 300 tasks did not run within %s of the Redis master's loss:\n%s",
			len(missing), time.Since(killed).Round(time.Second), taskStates(ctx, e, rdb, taskIDs, missing))
	}
	t.Logf("all 300 tasks ran %.1fs after the Redis master's loss", time.Since(killed).Seconds())
	// The new master has no replica until the old one comes back as one;
	// till then the rows wait for their confirmation.
	fctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if _, err := rd.WaitFailover(fctx, old); err != nil {
		t.Fatal(err)
	}
	if err := old.Start(ctx); err != nil {
		t.Fatal(err)
	}
	hatest.WaitFor(t, 60*time.Second, "the outbox to empty once the old master replicates", func() bool { return outboxRows(t, e.db) == 0 })
	dups := 0
	for _, n := range e.runs.snapshot() {
		if n > 1 {
			dups++
		}
	}
	t.Logf("300 tasks ran across a Redis failover; %d ran twice (at-least-once delivery)", dups)
}

func TestPostgresFailoverWhileEnqueuing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, hatest.PostgresOptions{Replicas: 1, Synchronous: true}, standaloneRedis(t), true)
	e.start(t)
	var mu sync.Mutex
	var acked []int
	var next atomic.Int64
	wctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for wctx.Err() == nil {
				id := int(next.Add(1))
				err := e.db.Write(wctx, func(tx pgx.Tx) error {
					_, err := e.outbox.EnqueueTx(wctx, tx, "note", note{ID: id}, jobs.Options{})
					return err
				})
				if err == nil {
					mu.Lock()
					acked = append(acked, id)
					mu.Unlock()
				}
			}
		})
	}
	hatest.WaitFor(t, 30*time.Second, "tasks before the failover", func() bool { return len(e.runs.snapshot()) > 100 })
	if err := e.pg.Nodes[0].Kill(); err != nil {
		t.Fatal(err)
	}
	if err := e.pg.Nodes[1].SetSetting(ctx, "synchronous_standby_names", ""); err != nil {
		t.Fatal(err)
	}
	if err := e.pg.Nodes[1].Promote(ctx); err != nil {
		t.Fatal(err)
	}
	before := len(e.runs.snapshot())
	hatest.WaitFor(t, 60*time.Second, "tasks after the failover", func() bool { return len(e.runs.snapshot()) > before+100 })
	stop()
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	hatest.WaitFor(t, 60*time.Second, "every acknowledged task", func() bool {
		for _, id := range acked {
			if e.runs.get(fmt.Sprint(id)) == 0 {
				return false
			}
		}
		return true
	})
	t.Logf("%d acknowledged enqueues across a PostgreSQL failover, all ran", len(acked))
}

func TestPeriodicOncePerTickAcrossInstances(t *testing.T) {
	t.Parallel()
	rdb := standaloneRedis(t)
	var mu sync.Mutex
	ticks := map[string]int{}
	w := jobs.NewWorker(rdb, jobs.WorkerConfig{Logger: quiet()})
	jobs.Handle(w, "tick", func(ctx context.Context, _ struct{}) error {
		id, _ := asynq.GetTaskID(ctx)
		mu.Lock()
		ticks[id]++
		mu.Unlock()
		return nil
	})
	if err := w.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Stop(context.Background()) })
	var scheds []*jobs.Scheduler
	for range 3 { // three instances
		c := jobs.NewClient(rdb, jobs.ClientConfig{Logger: quiet(), NoReplicas: true})
		t.Cleanup(func() { c.Close() })
		s := jobs.NewScheduler(c, jobs.SchedulerConfig{Logger: quiet()})
		if err := s.Add("heartbeat", "@every 1s", "tick", struct{}{}, jobs.Options{}); err != nil {
			t.Fatal(err)
		}
		if err := s.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Stop(context.Background()) })
		scheds = append(scheds, s)
	}
	start := time.Now().Unix()
	time.Sleep(3500 * time.Millisecond)
	scheds[0].Stop(context.Background()) // an instance dies
	time.Sleep(3 * time.Second)
	end := time.Now().Unix() - 1
	hatest.WaitFor(t, 10*time.Second, "the last tick to run", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return ticks[fmt.Sprintf("heartbeat-%d", end)] > 0
	})
	mu.Lock()
	defer mu.Unlock()
	for sec := start + 1; sec <= end; sec++ {
		if n := ticks[fmt.Sprintf("heartbeat-%d", sec)]; n != 1 {
			t.Errorf("tick %d ran %d times; want 1 (ticks %v)", sec, n, ticks)
		}
	}
	if err := scheds[1].Add("late", "@every 1s", "tick", nil, jobs.Options{}); err == nil {
		t.Error("Add after Start was accepted")
	}
	if err := jobs.NewScheduler(nil, jobs.SchedulerConfig{Logger: quiet()}).Add("x", "@every 500ms", "tick", nil, jobs.Options{}); err == nil {
		t.Error("a sub-second schedule was accepted")
	}
	if err := jobs.NewScheduler(nil, jobs.SchedulerConfig{Logger: quiet()}).Add("x", "not cron", "tick", nil, jobs.Options{}); err == nil {
		t.Error("a bad cron spec was accepted")
	}
}

func TestDrainFinishesOrRequeues(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb := standaloneRedis(t)
	client := jobs.NewClient(rdb, jobs.ClientConfig{Logger: quiet()})
	t.Cleanup(func() { client.Close() })
	var started, finished runs
	newWorker := func(shutdown time.Duration) *jobs.Worker {
		w := jobs.NewWorker(rdb, jobs.WorkerConfig{Logger: quiet(), ShutdownTimeout: shutdown})
		jobs.Handle(w, "work", func(ctx context.Context, d time.Duration) error {
			started.add(d.String())
			select {
			case <-time.After(d):
				finished.add(d.String())
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
		if err := w.Start(ctx); err != nil {
			t.Fatal(err)
		}
		return w
	}
	// A task shorter than the shutdown timeout finishes during Stop.
	w := newWorker(5 * time.Second)
	if _, err := client.Enqueue(ctx, "work", time.Second, jobs.Options{}); err != nil {
		t.Fatal(err)
	}
	hatest.WaitFor(t, 10*time.Second, "the 1s task to start", func() bool { return started.get("1s") == 1 })
	w.Stop(ctx)
	if finished.get("1s") != 1 {
		t.Fatal("Stop returned before the running task finished")
	}
	// A longer one is put back and runs on the next worker.
	w = newWorker(300 * time.Millisecond)
	if _, err := client.Enqueue(ctx, "work", 3*time.Second, jobs.Options{}); err != nil {
		t.Fatal(err)
	}
	hatest.WaitFor(t, 10*time.Second, "the 3s task to start", func() bool { return started.get("3s") == 1 })
	w.Stop(ctx)
	if finished.get("3s") != 0 {
		t.Fatal("the 3s task finished within a 300ms shutdown")
	}
	w = newWorker(5 * time.Second)
	defer w.Stop(ctx)
	hatest.WaitFor(t, 60*time.Second, "the re-queued task to finish", func() bool { return finished.get("3s") == 1 })
}

func TestBadTasksAreArchivedReadably(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb := standaloneRedis(t)
	client := jobs.NewClient(rdb, jobs.ClientConfig{Logger: quiet()})
	t.Cleanup(func() { client.Close() })
	// A task type nobody handles is handed back until UnhandledTimeout,
	// then archived.
	w := jobs.NewWorker(rdb, jobs.WorkerConfig{Logger: quiet(), UnhandledTimeout: time.Second})
	jobs.Handle(w, "note", func(ctx context.Context, n note) error { return nil })
	jobs.Handle(w, "give-up", func(ctx context.Context, n note) error {
		return fmt.Errorf("note %d cannot be done: %w", n.ID, jobs.SkipRetry)
	})
	jobs.Handle(w, "fails", func(ctx context.Context, n note) error { return errors.New("failed once") })
	if err := w.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Stop(ctx) })
	raw := asynq.NewClientFromRedisClient(rdb)
	defer raw.Close()
	if _, err := raw.Enqueue(asynq.NewTask("note", []byte(`{"data": {"id": "not a number"}}`))); err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Enqueue(asynq.NewTask("note", []byte(`garbage`))); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Enqueue(ctx, "nobody-handles-this", note{ID: 1}, jobs.Options{}); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Enqueue(ctx, "give-up", note{ID: 2}, jobs.Options{}); err != nil {
		t.Fatal(err)
	}
	// Not to be retried: archived after its one run.
	if _, err := client.Enqueue(ctx, "fails", note{ID: 3}, jobs.Options{MaxRetry: -1}); err != nil {
		t.Fatal(err)
	}
	// Not to be retried, and nobody handles it: it cannot be handed back,
	// so it is archived at once, saying why.
	if _, err := client.Enqueue(ctx, "nobody-handles-this-either", note{ID: 4}, jobs.Options{MaxRetry: -1}); err != nil {
		t.Fatal(err)
	}
	var archived []*asynq.TaskInfo
	hatest.WaitFor(t, 20*time.Second, "six archived tasks", func() bool {
		var err error
		archived, err = client.Archived("default", 10)
		return err == nil && len(archived) == 6
	})
	var msgs []string
	for _, a := range archived {
		msgs = append(msgs, a.LastErr)
		if a.Retried != 0 {
			t.Errorf("task %s was retried %d times before it was archived", a.Type, a.Retried)
		}
	}
	all := strings.Join(msgs, "\n")
	for _, want := range []string{"decode payload into jobs_test.note", "not a hakit task envelope", `no handler registered for task type "nobody-handles-this": handed back for 1s`, "note 2 cannot be done", "fails: failed once (retried 0 times",
		`no handler registered for task type "nobody-handles-this-either" on worker "default", and the task may not be retried (Options.MaxRetry < 0), so it cannot be handed back`} {
		if !strings.Contains(all, want) {
			t.Errorf("archive errors lack %q:\n%s", want, all)
		}
	}
}

// Close leaves the app's Redis client open: it is shared with the rest of
// the app, which closes it (hakit.App does, last).
func TestClientCloseLeavesTheRedisClientOpen(t *testing.T) {
	t.Parallel()
	rd := hatest.NewRedis(t, hatest.RedisOptions{})
	rdb := rd.Nodes[0].Client()
	t.Cleanup(func() { rdb.Close() })
	client := jobs.NewClient(rdb, jobs.ClientConfig{NoReplicas: true})
	for range 2 {
		if err := client.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
	}
	if err := rdb.Ping(t.Context()).Err(); err != nil {
		t.Fatalf("the shared Redis client after Client.Close: %v", err)
	}
}

// notRun returns the note IDs below n that have not run.
func notRun(e *env, n int) []int {
	runs := e.runs.snapshot()
	var ids []int
	for i := range n {
		if runs[fmt.Sprint(i)] == 0 {
			ids = append(ids, i)
		}
	}
	return ids
}

// taskStates describes the tasks of notes ids (taskIDs[id] is the task's
// ID on the queue): their state on the Redis master, and their outbox
// rows.
func taskStates(ctx context.Context, e *env, rdb redis.UniversalClient, taskIDs []string, ids []int) string {
	var b strings.Builder
	ins := asynq.NewInspectorFromRedisClient(rdb)
	pool, _ := e.db.Primary()
	for _, id := range ids {
		fmt.Fprintf(&b, "note %d, task %s: ", id, taskIDs[id])
		if info, err := ins.GetTaskInfo("default", taskIDs[id]); err != nil {
			fmt.Fprintf(&b, "on the queue: %v", err)
		} else {
			fmt.Fprintf(&b, "%s, retried %d, last error %q, orphaned %t, next run at %s",
				info.State, info.Retried, info.LastErr, info.IsOrphaned, info.NextProcessAt.Format(time.TimeOnly))
		}
		if pool != nil {
			var sentTo *string
			err := pool.QueryRow(ctx, "SELECT sent_to FROM hakit_outbox WHERE 'outbox-' || task_id = $1", taskIDs[id]).Scan(&sentTo)
			switch {
			case errors.Is(err, pgx.ErrNoRows):
				b.WriteString("; no outbox row")
			case err != nil:
				fmt.Fprintf(&b, "; outbox row: %v", err)
			case sentTo == nil:
				b.WriteString("; outbox row not sent")
			default:
				fmt.Fprintf(&b, "; outbox row sent to %s", *sentTo)
			}
		}
		b.WriteString("\n")
	}
	if q, err := ins.GetQueueInfo("default"); err == nil {
		fmt.Fprintf(&b, "queue: %d pending, %d active, %d retry, %d scheduled, %d archived, %d completed (now %s)\n",
			q.Pending, q.Active, q.Retry, q.Scheduled, q.Archived, q.Completed, time.Now().Format(time.TimeOnly))
	}
	return b.String()
}
