package jobs_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"hakit.dev/dbrouter"
	"hakit.dev/hatest"
	"hakit.dev/jobs"
)

// failoverClient is a Sentinel client for rd. retries > 0 lets go-redis
// retry a failed command that many times, slowly enough to reach a
// restarted server.
func failoverClient(t *testing.T, rd *hatest.RedisCluster, retries int) *redis.Client {
	opts := &redis.FailoverOptions{MasterName: rd.MasterName, SentinelAddrs: rd.SentinelAddrs(),
		DialTimeout: 500 * time.Millisecond, ReadTimeout: 15 * time.Second, WriteTimeout: time.Second}
	if retries > 0 {
		opts.MaxRetries, opts.MinRetryBackoff, opts.MaxRetryBackoff = retries, 100*time.Millisecond, time.Second
	}
	rdb := redis.NewFailoverClient(opts)
	t.Cleanup(func() { rdb.Close() })
	return rdb
}

// nodeInfo returns one field of INFO on a node ("" if it does not answer).
func nodeInfo(n *hatest.RedisNode, section, field string) string {
	cl := n.Client()
	defer cl.Close()
	info, err := cl.Info(context.Background(), section).Result()
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			return v
		}
	}
	return ""
}

// queued counts the tasks of the default queue in Redis, in any state
// (asynq's Size includes the completed ones).
func queued(rdb redis.UniversalClient) int {
	ins := asynq.NewInspectorFromRedisClient(rdb)
	q, err := ins.GetQueueInfo("default")
	if err != nil {
		return 0
	}
	return q.Size
}

// outboxRows counts the rows left in the default outbox table.
func outboxRows(t *testing.T, db *dbrouter.Router) int {
	t.Helper()
	pool, err := db.Primary()
	if err != nil {
		t.Fatal(err)
	}
	var n int
	if err := pool.QueryRow(context.Background(), "SELECT count(*) FROM hakit_outbox").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// ranWithin waits up to d for want distinct tasks to have run and returns
// how many did.
func ranWithin(e *env, want int, d time.Duration) int {
	deadline := time.Now().Add(d)
	for len(e.runs.snapshot()) < want && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	return len(e.runs.snapshot())
}

// The replica is down, so no replica can confirm the relay's batch; then
// the master is lost (killed, back empty). Every acknowledged enqueue must
// still run.
func TestOutboxReplicaDownThenMasterLost(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rd := hatest.NewRedis(t, hatest.RedisOptions{Replicas: 1, Sentinels: 3})
	rdb := failoverClient(t, rd, 0)
	e := newEnv(t, hatest.PostgresOptions{}, rdb, false)
	master, replica := rd.Nodes[0], rd.Nodes[1]
	if err := replica.Kill(); err != nil {
		t.Fatal(err)
	}
	hatest.WaitFor(t, 20*time.Second, "the master to see no replica", func() bool { return nodeInfo(master, "replication", "connected_slaves") == "0" })
	const n = 50
	for i := range n {
		if err := enqueue(ctx, e, i, true); err != nil {
			t.Fatal(err)
		}
	}
	_, err := e.relay.Pass(ctx)
	t.Logf("the pass without a replica: %v; %d tasks in Redis, %d rows left", err, queued(rdb), outboxRows(t, e.db))
	if got := queued(rdb); got != n {
		t.Fatalf("%d of %d tasks reached Redis", got, n)
	}
	if !errors.Is(err, jobs.ErrNotConfirmed) || outboxRows(t, e.db) != n {
		t.Fatalf("without a replica the pass returned %v and left %d of %d rows; want ErrNotConfirmed and every row kept", err, outboxRows(t, e.db), n)
	}
	if err := master.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := master.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := replica.Start(ctx); err != nil {
		t.Fatal(err)
	}
	e.start(t)
	ran := ranWithin(e, n, 60*time.Second)
	if ran != n {
		t.Fatalf("lost %d of %d acknowledged enqueues (%d in Redis, %d rows in the outbox)", n-ran, n, queued(rdb), outboxRows(t, e.db))
	}
	hatest.WaitFor(t, 30*time.Second, "the outbox to empty once the replica confirms", func() bool { return outboxRows(t, e.db) == 0 })
	if got := metricValue(t, e.relay, "hakit_jobs_relay_reenqueued_total"); got != n {
		t.Errorf("relay_reenqueued_total is %v; want %d", got, n)
	}
	t.Logf("all %d ran", n)
}

// Rows held by a master that was lost (killed, back empty) are enqueued
// again; passes that enqueue some or all of them and then fail are
// retried: by the relay, or, when the pass loses its own PostgreSQL
// connection, by dbrouter's Write running the pass's function again.
// relay_reenqueued_total counts each task once, when the enqueue that put
// it on the new master succeeded: not zero because every retried enqueue
// found its task there already, and not once per attempt.
func TestOutboxReenqueueCountedWhenPassFails(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rd := hatest.NewRedis(t, hatest.RedisOptions{})
	rdb := redis.NewClient(&redis.Options{Addr: rd.Addr()})
	t.Cleanup(func() { rdb.Close() })
	// Without a replica nothing is confirmed: rows stay, marked with the
	// master.
	e := newEnv(t, hatest.PostgresOptions{}, rdb, false)
	reenqueued := func() float64 { return metricValue(t, e.relay, "hakit_jobs_relay_reenqueued_total") }
	// The tasks in Redis, by their keys (queued asks asynq's set of
	// queues, which a client fills once per process: a restarted master's
	// stays empty); -1 if Redis does not answer.
	tasks := func() int {
		keys, err := rdb.Keys(ctx, "asynq:{default}:t:*").Result()
		if err != nil {
			return -1
		}
		return len(keys)
	}
	const n = 10
	for i := range n {
		if err := enqueue(ctx, e, i, true); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.relay.Pass(ctx); !errors.Is(err, jobs.ErrNotConfirmed) || tasks() != n {
		t.Fatalf("the first pass: %v, %d of %d tasks in Redis; want ErrNotConfirmed and all of them", err, tasks(), n)
	}
	master := rd.Nodes[0]
	if err := master.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := master.Start(ctx); err != nil {
		t.Fatal(err)
	}
	hatest.WaitFor(t, 20*time.Second, "the restarted master to answer, empty", func() bool {
		return tasks() == 0
	})
	failAt := func(at int) {
		jobs.SetAfterEnqueue(e.relay, func(k int) error {
			if k == at {
				return fmt.Errorf("the pass fails after enqueue %d", k)
			}
			return nil
		})
	}
	// A pass re-enqueues 4 of the tasks and fails.
	failAt(4)
	if _, err := e.relay.Pass(ctx); err == nil || errors.Is(err, jobs.ErrNotConfirmed) {
		t.Fatalf("the pass failing after 4 enqueues returned %v", err)
	}
	if got, q := reenqueued(), tasks(); got != 4 || q != 4 {
		t.Fatalf("after a pass that enqueued 4 tasks again and failed: relay_reenqueued_total %v, %d tasks in Redis; want 4 and 4", got, q)
	}
	// Its retry finds those 4 and enqueues the other 6; then the pass's
	// own PostgreSQL connection is lost, once (its backend terminated while
	// the transaction waits on Redis): Write runs the function again,
	// which finds all 10 tasks on the master and marks the rows. The pass
	// succeeds as far as it can without a replica.
	var attempts atomic.Int32
	jobs.SetAfterEnqueue(e.relay, func(k int) error {
		if k == n && attempts.Add(1) == 1 {
			return e.pg.Nodes[0].Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
				WHERE state = 'idle in transaction' AND pid <> pg_backend_pid()`)
		}
		return nil
	})
	if _, err := e.relay.Pass(ctx); !errors.Is(err, jobs.ErrNotConfirmed) || attempts.Load() != 2 {
		t.Fatalf("the pass whose first attempt lost its connection after %d enqueues: %v after %d attempts; want ErrNotConfirmed after 2", n, err, attempts.Load())
	}
	if got, q := reenqueued(), tasks(); got != n || q != n {
		t.Fatalf("after the retries: relay_reenqueued_total %v, %d tasks in Redis; want %d and %d", got, q, n, n)
	}
	// The next pass only waits for a replica.
	jobs.SetAfterEnqueue(e.relay, nil)
	if _, err := e.relay.Pass(ctx); !errors.Is(err, jobs.ErrNotConfirmed) {
		t.Fatalf("a pass with every row held by the master: %v; want ErrNotConfirmed", err)
	}
	if got, q, rows := reenqueued(), tasks(), outboxRows(t, e.db); got != n || q != n || rows != n {
		t.Fatalf("after the passes: relay_reenqueued_total %v, %d tasks in Redis, %d rows; want %d, %d, %d", got, q, rows, n, n, n)
	}
	// Every task runs once.
	e.start(t)
	if ran := ranWithin(e, n, 30*time.Second); ran != n {
		t.Fatalf("%d of %d tasks ran", ran, n)
	}
	for k, c := range e.runs.snapshot() {
		if c != 1 {
			t.Errorf("task %s ran %d times", k, c)
		}
	}
}

// The relay's confirmation blocks in WAIT (the replica hangs); the master
// dies and comes back empty at once; go-redis retries the confirmation on
// the restarted master, where it succeeds once the replica resynchronised
// — from the empty master. The rows must not be forgotten on the strength
// of that.
func TestOutboxConfirmRetriedOnRestartedMaster(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rd := hatest.NewRedis(t, hatest.RedisOptions{Replicas: 1, Sentinels: 3})
	rdb := failoverClient(t, rd, 10)
	e := newEnv(t, hatest.PostgresOptions{}, rdb, false)
	client := jobs.NewClient(rdb, jobs.ClientConfig{Logger: quiet(), WaitTimeout: 10 * time.Second})
	t.Cleanup(func() { client.Close() })
	relay, err := jobs.NewRelay(jobs.RelayConfig{DB: e.db, Client: client, Outbox: e.outbox, Logger: quiet(), BatchSize: 50})
	if err != nil {
		t.Fatal(err)
	}
	master, replica := rd.Nodes[0], rd.Nodes[1]
	const n = 50
	for i := range n {
		if err := enqueue(ctx, e, i, true); err != nil {
			t.Fatal(err)
		}
	}
	if err := replica.Pause(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { replica.Resume() })
	passErr := make(chan error, 1)
	go func() {
		_, err := relay.Pass(ctx)
		passErr <- err
	}()
	hatest.WaitFor(t, 20*time.Second, "the relay to wait in WAIT", func() bool {
		return queued(rdb) == n && nodeInfo(master, "clients", "blocked_clients") == "1"
	})
	if err := master.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := master.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := replica.Resume(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-passErr:
		t.Logf("the pass across the restart: %v; %d tasks in Redis, %d rows left", err, queued(rdb), outboxRows(t, e.db))
		if err == nil || outboxRows(t, e.db) != n {
			t.Errorf("the pass confirmed on another server than the one that took the tasks: %v, %d of %d rows left", err, outboxRows(t, e.db), n)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the pass did not end")
	}
	e.start(t)
	ran := ranWithin(e, n, 60*time.Second)
	if ran != n {
		t.Fatalf("lost %d of %d acknowledged enqueues (%d in Redis, %d rows in the outbox)", n-ran, n, queued(rdb), outboxRows(t, e.db))
	}
	t.Logf("all %d ran", n)
}

// Two relays on one outbox. Relay A's confirmation succeeds; before A
// deletes its rows, the replica drops out, and relay B enqueues new rows'
// tasks on the master, gets no confirmation and marks the rows as held by
// that master. A's confirmation does not cover B's tasks: A must not delete
// B's rows. Then the master dies and the replica, which never got B's
// tasks, is promoted: every task must still run, and the outbox empty once
// the old master is back as a replica and confirms.
func TestOutboxRelayDeletesOnlyRowsItsConfirmationCovers(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rd := hatest.NewRedis(t, hatest.RedisOptions{Replicas: 1, Sentinels: 3})
	rdb := failoverClient(t, rd, 0)
	e := newEnv(t, hatest.PostgresOptions{}, rdb, false)
	relayA := e.relay
	clientB := jobs.NewClient(rdb, jobs.ClientConfig{Logger: quiet()})
	t.Cleanup(func() { clientB.Close() })
	relayB, err := jobs.NewRelay(jobs.RelayConfig{DB: e.db, Client: clientB, Outbox: e.outbox, Logger: quiet(), BatchSize: 50, Name: "b"})
	if err != nil {
		t.Fatal(err)
	}
	master, replica := rd.Nodes[0], rd.Nodes[1]
	const n = 10
	for i := range n {
		if err := enqueue(ctx, e, i, true); err != nil {
			t.Fatal(err)
		}
	}

	// A: enqueue, confirm, then wait before deleting.
	confirmed, release := make(chan struct{}), make(chan struct{})
	var releaseOnce sync.Once
	releaseA := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(releaseA)
	jobs.SetAfterConfirm(relayA, func() {
		close(confirmed)
		<-release
	})
	type result struct {
		n   int
		err error
	}
	passA := make(chan result, 1)
	go func() {
		n, err := relayA.Pass(ctx)
		passA <- result{n, err}
	}()
	select {
	case <-confirmed:
	case r := <-passA:
		t.Fatalf("relay A's pass ended without a confirmation: %d, %v", r.n, r.err)
	case <-time.After(60 * time.Second):
		t.Fatal("relay A did not confirm its batch")
	}

	// The replica hangs and the master drops it: what the master takes
	// from now on reaches no replica.
	if err := replica.Pause(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { replica.Resume() })
	mc := master.Client()
	defer mc.Close()
	if err := mc.ClientKillByFilter(ctx, "TYPE", "replica").Err(); err != nil {
		t.Fatal(err)
	}
	hatest.WaitFor(t, 20*time.Second, "the master to see no replica", func() bool { return nodeInfo(master, "replication", "connected_slaves") == "0" })

	// B: new rows, their tasks on the master, unconfirmed, marked.
	for i := range n {
		if err := enqueue(ctx, e, 100+i, true); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := relayB.Pass(ctx); got != n || !errors.Is(err, jobs.ErrNotConfirmed) {
		t.Fatalf("relay B's pass without a replica: %d, %v; want %d and ErrNotConfirmed", got, err, n)
	}
	if got := queued(rdb); got != 2*n {
		t.Fatalf("%d of %d tasks on the master", got, 2*n)
	}

	releaseA()
	r := <-passA
	jobs.SetAfterConfirm(relayA, nil)
	left := outboxRows(t, e.db)
	t.Logf("relay A's pass: %d, %v; %d rows left (relay B's %d unconfirmed ones must stay)", r.n, r.err, left, n)
	if r.n != n || r.err != nil {
		t.Fatalf("relay A's pass: %d, %v; want %d, nil", r.n, r.err, n)
	}
	if left != n {
		t.Errorf("relay A deleted %d of relay B's %d rows, which its confirmation did not cover", n-left, n)
	}

	// The master dies before any replica has B's tasks.
	if err := master.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := replica.Resume(); err != nil {
		t.Fatal(err)
	}
	fctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	m, err := rd.WaitFailover(fctx, master)
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	if m != replica {
		t.Fatalf("the Sentinels promoted %s; want %s", m.Name, replica.Name)
	}
	e.start(t)
	ran := ranWithin(e, 2*n, 60*time.Second)
	if ran != 2*n {
		t.Fatalf("lost %d of %d acknowledged enqueues (%d in Redis, %d rows in the outbox)", 2*n-ran, 2*n, queued(rdb), outboxRows(t, e.db))
	}
	if err := master.Start(ctx); err != nil {
		t.Fatal(err)
	}
	hatest.WaitFor(t, 60*time.Second, "the outbox to empty once the old master confirms as a replica", func() bool { return outboxRows(t, e.db) == 0 })
	if got := metricValue(t, relayA, "hakit_jobs_relay_reenqueued_total"); got != n {
		t.Errorf("relay_reenqueued_total is %v; want %d (relay B's tasks, lost with the master)", got, n)
	}
	t.Logf("all %d ran", 2*n)
}

// A pass confirms at most BatchSize held rows; the relay goes on at once
// while it confirms full batches, so a backlog left by a replica outage
// drains without waiting for PollInterval.
func TestOutboxRelayDrainsHeldRowsBeyondBatchSize(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rd := hatest.NewRedis(t, hatest.RedisOptions{Replicas: 1})
	rdb := redis.NewClient(&redis.Options{Addr: rd.Addr()})
	t.Cleanup(func() { rdb.Close() })
	e := newEnv(t, hatest.PostgresOptions{}, rdb, false)
	const n = 120
	for i := range n {
		if err := enqueue(ctx, e, i, true); err != nil {
			t.Fatal(err)
		}
	}
	// A relay that wants two replicas of a master that has one leaves
	// every row held by that master.
	strict := jobs.NewClient(rdb, jobs.ClientConfig{WaitReplicas: 2, Logger: quiet()})
	t.Cleanup(func() { strict.Close() })
	holder, err := jobs.NewRelay(jobs.RelayConfig{DB: e.db, Client: strict, Outbox: e.outbox, Logger: quiet(), BatchSize: 50, Name: "holder"})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i++ {
		got, err := holder.Pass(ctx)
		if !errors.Is(err, jobs.ErrNotConfirmed) {
			t.Fatalf("a pass wanting two replicas: %d, %v; want ErrNotConfirmed", got, err)
		}
		if got == 0 || i > n {
			break
		}
	}
	if got := queued(rdb); got != n || outboxRows(t, e.db) != n {
		t.Fatalf("%d tasks queued, %d rows held; want %d and %d", got, outboxRows(t, e.db), n, n)
	}
	relay, err := jobs.NewRelay(jobs.RelayConfig{DB: e.db, Client: e.client, Outbox: e.outbox, Logger: quiet(),
		BatchSize: 10, PollInterval: time.Hour, Name: "drain"})
	if err != nil {
		t.Fatal(err)
	}
	if err := relay.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopWithin(relay.Stop, 5*time.Second) })
	hatest.WaitFor(t, 30*time.Second, "the held rows to be confirmed and deleted, 10 a pass", func() bool { return outboxRows(t, e.db) == 0 })
	if got := queued(rdb); got != n {
		t.Errorf("%d tasks queued; want %d (none enqueued twice)", got, n)
	}
}

// Two outbox tables (two apps, two databases, …) on one Redis queue: their
// row ids overlap, their tasks must not.
func TestOutboxTaskIDsUniqueAcrossTables(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb := standaloneRedis(t)
	e := newEnv(t, hatest.PostgresOptions{}, rdb, true)
	other := jobs.NewOutbox("other_outbox")
	if err := other.CreateTables(ctx, e.db); err != nil {
		t.Fatal(err)
	}
	relay2, err := jobs.NewRelay(jobs.RelayConfig{DB: e.db, Client: e.client, Outbox: other, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	e.start(t)
	if err := relay2.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { relay2.Stop(ctx) })
	pool, _ := e.db.Primary()
	for i := range 10 {
		for j, o := range []*jobs.Outbox{e.outbox, other} {
			tx, err := pool.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := o.EnqueueTx(ctx, tx, "note", note{ID: 100*j + i}, jobs.Options{}); err != nil {
				t.Fatal(err)
			}
			if err := tx.Commit(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	if ran := ranWithin(e, 20, 30*time.Second); ran != 20 {
		t.Fatalf("%d of 20 tasks from two outbox tables ran", ran)
	}
}

// Two Relays (two outbox tables) and two of every other component in one
// Prometheus registry.
func TestMetricsOfTwoComponentsInOneRegistry(t *testing.T) {
	t.Parallel()
	rdb := standaloneRedis(t)
	e := newEnv(t, hatest.PostgresOptions{}, rdb, true)
	newRelay := func(cfg jobs.RelayConfig) *jobs.Relay {
		cfg.DB, cfg.Client, cfg.Logger = e.db, e.client, quiet()
		r, err := jobs.NewRelay(cfg)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	reg := prometheus.NewRegistry()
	register := func(what string, c prometheus.Collector) {
		t.Helper()
		if err := reg.Register(c); err != nil {
			t.Fatalf("register %s: %v", what, err)
		}
	}
	// Relays of two tables need no name; two of one table do.
	register("a relay", e.relay)
	register("a relay of another table", newRelay(jobs.RelayConfig{Outbox: jobs.NewOutbox("other_outbox")}))
	if err := reg.Register(newRelay(jobs.RelayConfig{})); err == nil {
		t.Error("a second relay of one table under the same name was registered")
	}
	register("a named relay of the same table", newRelay(jobs.RelayConfig{Name: "second"}))
	for _, name := range []string{"", "second"} {
		c := jobs.NewClient(rdb, jobs.ClientConfig{Name: name, NoReplicas: true})
		t.Cleanup(func() { c.Close() })
		register("client "+name, c)
		register("worker "+name, jobs.NewWorker(rdb, jobs.WorkerConfig{Name: name}))
		register("scheduler "+name, jobs.NewScheduler(c, jobs.SchedulerConfig{Name: name}))
	}
	if _, err := reg.Gather(); err != nil {
		t.Fatal(err)
	}
}

// metricValue sums the samples of the metric name that c collects.
func metricValue(t *testing.T, c prometheus.Collector, name string) float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	if err := reg.Register(c); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return sum
}

// stopWithin calls stop with a context ending after d and returns how long
// it took, and its error.
func stopWithin(stop func(context.Context) error, d time.Duration) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	start := time.Now()
	err := stop(ctx)
	return time.Since(start), err
}

// Stop returns when its context ends, whatever the handler does: the
// worker's running task goes back to its queue and runs on the next
// worker.
func TestWorkerStopHonoursContext(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb := standaloneRedis(t)
	client := jobs.NewClient(rdb, jobs.ClientConfig{Logger: quiet()})
	t.Cleanup(func() { client.Close() })
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	var started runs
	newWorker := func() *jobs.Worker {
		w := jobs.NewWorker(rdb, jobs.WorkerConfig{Logger: quiet()}) // ShutdownTimeout: 20s
		jobs.Handle(w, "stubborn", func(_ context.Context, _ struct{}) error {
			started.add("stubborn")
			if started.get("stubborn") == 1 {
				<-release // the first run ignores its context
			}
			return nil
		})
		if err := w.Start(ctx); err != nil {
			t.Fatal(err)
		}
		return w
	}
	w := newWorker()
	if _, err := client.Enqueue(ctx, "stubborn", struct{}{}, jobs.Options{}); err != nil {
		t.Fatal(err)
	}
	hatest.WaitFor(t, 10*time.Second, "the task to start", func() bool { return started.get("stubborn") == 1 })
	const limit = time.Second
	took, err := stopWithin(w.Stop, limit)
	t.Logf("Worker.Stop with a %s context and a handler that ignores its own took %s (%v)", limit, took.Round(time.Millisecond), err)
	if took > limit+500*time.Millisecond {
		t.Fatalf("Worker.Stop took %s with a %s context", took, limit)
	}
	w2 := newWorker()
	t.Cleanup(func() { stopWithin(w2.Stop, time.Second) })
	hatest.WaitFor(t, 15*time.Second, "the put-back task to start again", func() bool { return started.get("stubborn") == 2 })
}

// Scheduler.Stop and Relay.Stop return when their context ends, even with
// Redis hanging under them.
func TestSchedulerAndRelayStopHonourContext(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rd := hatest.NewRedis(t, hatest.RedisOptions{})
	rdb := redis.NewClient(&redis.Options{Addr: rd.Addr(), ReadTimeout: 5 * time.Second})
	t.Cleanup(func() { rdb.Close() })
	e := newEnv(t, hatest.PostgresOptions{}, rdb, true)
	s := jobs.NewScheduler(e.client, jobs.SchedulerConfig{Logger: quiet()})
	if err := s.Add("beat", "@every 1s", "note", note{}, jobs.Options{}); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := e.relay.Start(ctx); err != nil {
		t.Fatal(err)
	}
	hatest.WaitFor(t, 10*time.Second, "a tick", func() bool { return queued(rdb) > 0 })
	if err := rd.Nodes[0].Pause(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rd.Nodes[0].Resume() })
	for i := range 5 {
		if err := enqueue(ctx, e, i, true); err != nil {
			t.Fatal(err)
		}
	}
	// Let the scheduler's next tick and the relay's pass hang on Redis.
	due := time.Now().Unix() + 1
	hatest.WaitFor(t, 10*time.Second, "a tick to come due", func() bool { return time.Now().Unix() > due })
	const limit = 500 * time.Millisecond
	for name, stop := range map[string]func(context.Context) error{"Scheduler": s.Stop, "Relay": e.relay.Stop} {
		took, err := stopWithin(stop, limit)
		t.Logf("%s.Stop with Redis hanging and a %s context took %s (%v)", name, limit, took.Round(time.Millisecond), err)
		if took > limit+500*time.Millisecond {
			t.Errorf("%s.Stop took %s with a %s context", name, took, limit)
		}
	}
}

// Two Schedulers (two instances) with "@every 1s" across two Sentinel
// failovers: every tick is enqueued, and runs once.
func TestSchedulerAcrossTwoFailovers(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rd := hatest.NewRedis(t, hatest.RedisOptions{Replicas: 2, Sentinels: 3})
	rdb := failoverClient(t, rd, 0)
	for range 2 {
		c := jobs.NewClient(rdb, jobs.ClientConfig{Logger: quiet()})
		t.Cleanup(func() { c.Close() })
		s := jobs.NewScheduler(c, jobs.SchedulerConfig{Logger: testLog(t)})
		if err := s.Add("beat", "@every 1s", "tick", struct{}{}, jobs.Options{}); err != nil {
			t.Fatal(err)
		}
		if err := s.Start(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { stopWithin(s.Stop, 5*time.Second) })
	}
	first := time.Now().Unix() + 1
	ins := asynq.NewInspectorFromRedisClient(rdb)
	// has tells whether the tick's task is in the queue; a failing read
	// is asked again rather than taken for a missing tick.
	has := func(tick int64) bool {
		var err error
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
			_, err = ins.GetTaskInfo("default", "beat-"+strconv.FormatInt(tick, 10))
			if err == nil {
				return true
			}
			if errors.Is(err, asynq.ErrTaskNotFound) || errors.Is(err, asynq.ErrQueueNotFound) {
				return false
			}
			time.Sleep(50 * time.Millisecond) // a poll interval, not a synchronisation
		}
		t.Fatalf("reading tick %d: %v", tick, err)
		return false
	}
	waitTick := func(what string) {
		tick := time.Now().Unix() + 2
		hatest.WaitFor(t, 60*time.Second, what, func() bool { return has(tick) })
	}
	waitTick("ticks before the failovers")
	for i := range 2 {
		old, err := rd.KillMaster(ctx)
		if err != nil {
			t.Fatal(err)
		}
		fctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		m, err := rd.WaitFailover(fctx, old)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if err := old.Start(ctx); err != nil {
			t.Fatal(err)
		}
		hatest.WaitFor(t, 60*time.Second, "the old master to resync as a replica", func() bool {
			return nodeInfo(old, "replication", "master_link_status") == "up"
		})
		t.Logf("failover %d: %s -> %s", i+1, old.Name, m.Name)
		waitTick(fmt.Sprintf("ticks after failover %d", i+1))
	}
	last := time.Now().Unix() - 1
	var missing []int64
	for tick := first; tick <= last; tick++ {
		if !has(tick) {
			missing = append(missing, tick)
		}
	}
	if len(missing) > 0 {
		t.Fatalf("%d of %d ticks were never enqueued: %v", len(missing), last-first+1, missing)
	}
	// Run them: each once.
	var mu sync.Mutex
	ran := map[string]int{}
	w := jobs.NewWorker(rdb, jobs.WorkerConfig{Logger: quiet()})
	jobs.Handle(w, "tick", func(ctx context.Context, _ struct{}) error {
		id, _ := asynq.GetTaskID(ctx)
		mu.Lock()
		ran[id]++
		mu.Unlock()
		return nil
	})
	if err := w.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopWithin(w.Stop, 5*time.Second) })
	hatest.WaitFor(t, 60*time.Second, "every tick to run", func() bool {
		mu.Lock()
		defer mu.Unlock()
		for tick := first; tick <= last; tick++ {
			if ran["beat-"+strconv.FormatInt(tick, 10)] == 0 {
				return false
			}
		}
		return true
	})
	mu.Lock()
	defer mu.Unlock()
	for tick := first; tick <= last; tick++ {
		if n := ran["beat-"+strconv.FormatInt(tick, 10)]; n != 1 {
			t.Errorf("tick %d ran %d times", tick, n)
		}
	}
	t.Logf("%d ticks across two failovers, each enqueued and run once", last-first+1)
}

// The default confirmation on a single Redis: tasks are delivered, rows
// kept and counted; NoReplicas deletes them; settings the confirmation
// cannot work with are refused.
func TestConfirmationSettings(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb := standaloneRedis(t)
	e := newEnv(t, hatest.PostgresOptions{}, rdb, false)
	for i := range 5 {
		if err := enqueue(ctx, e, i, true); err != nil {
			t.Fatal(err)
		}
	}
	n, err := e.relay.Pass(ctx)
	if n != 5 || !errors.Is(err, jobs.ErrNotConfirmed) || outboxRows(t, e.db) != 5 || queued(rdb) != 5 {
		t.Fatalf("a pass on a Redis without replica: %d, %v, %d rows left, %d tasks queued; want 5 tasks queued, ErrNotConfirmed, 5 rows kept",
			n, err, outboxRows(t, e.db), queued(rdb))
	}
	// Rows held by the same master are not enqueued again, only confirmed.
	if n, err := e.relay.Pass(ctx); n != 0 || !errors.Is(err, jobs.ErrNotConfirmed) {
		t.Fatalf("a second pass: %d, %v; want 0 and ErrNotConfirmed", n, err)
	}
	if got := metricValue(t, e.relay, "hakit_jobs_relay_unconfirmed_total"); got != 2 {
		t.Errorf("relay_unconfirmed_total is %v; want 2", got)
	}
	// NoReplicas: the rows go.
	nr := jobs.NewClient(rdb, jobs.ClientConfig{NoReplicas: true, Logger: quiet()})
	t.Cleanup(func() { nr.Close() })
	relay, err := jobs.NewRelay(jobs.RelayConfig{DB: e.db, Client: nr, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := relay.Pass(ctx); n != 5 || err != nil || outboxRows(t, e.db) != 0 || queued(rdb) != 5 {
		t.Fatalf("a pass with NoReplicas: %d, %v, %d rows left, %d tasks queued; want 5, nil, 0, 5", n, err, outboxRows(t, e.db), queued(rdb))
	}

	bad := map[string]*jobs.Client{
		"WaitReplicas -1": jobs.NewClient(rdb, jobs.ClientConfig{WaitReplicas: -1}),
		"a Ring client":   jobs.NewClient(redis.NewRing(&redis.RingOptions{Addrs: map[string]string{"a": "127.0.0.1:1"}}), jobs.ClientConfig{}),
	}
	for what, c := range bad {
		if _, err := jobs.NewRelay(jobs.RelayConfig{DB: e.db, Client: c}); err == nil || !strings.Contains(err.Error(), "NoReplicas") {
			t.Errorf("NewRelay with %s: %v; want an error that points to NoReplicas", what, err)
		}
		if err := jobs.NewScheduler(c, jobs.SchedulerConfig{}).Start(ctx); err == nil {
			t.Errorf("Scheduler.Start with %s succeeded", what)
		}
	}
	short := jobs.NewClient(rdb, jobs.ClientConfig{NoReplicas: true, Retention: time.Minute})
	if err := jobs.NewScheduler(short, jobs.SchedulerConfig{}).Start(ctx); err == nil || !strings.Contains(err.Error(), "MaxDelay") {
		t.Errorf("Scheduler.Start with MaxDelay 30s and Retention 1m: %v; want an error about MaxDelay", err)
	}
}

// A row older than the Client's Retention whose task the queue no longer
// knows is enqueued, and counted as a possible second run; one whose task
// it still knows is not.
func TestOutboxStaleRows(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, hatest.PostgresOptions{}, standaloneRedis(t), true)
	pool, err := e.db.Primary()
	if err != nil {
		t.Fatal(err)
	}
	backdate := func() {
		if _, err := pool.Exec(ctx, "UPDATE hakit_outbox SET created_at = now() - interval '2 hours'"); err != nil {
			t.Fatal(err)
		}
	}
	if err := enqueue(ctx, e, 1, true); err != nil {
		t.Fatal(err)
	}
	backdate()
	// Another relay's pass enqueues the task anew and dies; e.relay's
	// pass finds the task on the queue.
	crashed, err := jobs.NewRelay(jobs.RelayConfig{DB: e.db, Client: e.client, Outbox: e.outbox, Logger: quiet(), Name: "crashed"})
	if err != nil {
		t.Fatal(err)
	}
	jobs.SetAfterEnqueue(crashed, func(int) error { return errors.New("relay crashed") })
	if _, err := crashed.Pass(ctx); err == nil {
		t.Fatal("the crashing pass succeeded")
	}
	if got := metricValue(t, crashed, "hakit_jobs_relay_stale_total"); got != 1 {
		t.Fatalf("relay_stale_total is %v after a pass that enqueued a stale row anew and then failed; want 1", got)
	}
	if n, err := e.relay.Pass(ctx); n != 1 || err != nil {
		t.Fatalf("pass: %d, %v", n, err)
	}
	if got := metricValue(t, e.relay, "hakit_jobs_relay_stale_total"); got != 0 {
		t.Fatalf("relay_stale_total is %v after a stale row whose task the queue knew; want 0", got)
	}
	if err := enqueue(ctx, e, 2, true); err != nil {
		t.Fatal(err)
	}
	backdate()
	if n, err := e.relay.Pass(ctx); n != 1 || err != nil {
		t.Fatalf("pass: %d, %v", n, err)
	}
	if got := metricValue(t, e.relay, "hakit_jobs_relay_stale_total"); got != 1 {
		t.Fatalf("relay_stale_total is %v after a stale row enqueued anew; want 1", got)
	}
}

// Ticks that cannot be enqueued within MaxDelay are given up and counted;
// the schedule goes on once Redis is back.
func TestSchedulerGivesUpTicksAfterMaxDelay(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rd := hatest.NewRedis(t, hatest.RedisOptions{})
	rdb := redis.NewClient(&redis.Options{Addr: rd.Addr(), ReadTimeout: 300 * time.Millisecond, WriteTimeout: 300 * time.Millisecond})
	t.Cleanup(func() { rdb.Close() })
	c := jobs.NewClient(rdb, jobs.ClientConfig{NoReplicas: true, Logger: quiet()})
	t.Cleanup(func() { c.Close() })
	s := jobs.NewScheduler(c, jobs.SchedulerConfig{MaxDelay: time.Second, Logger: quiet()})
	if err := s.Add("beat", "@every 1s", "tick", struct{}{}, jobs.Options{}); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopWithin(s.Stop, 5*time.Second) })
	hatest.WaitFor(t, 10*time.Second, "a tick", func() bool { return queued(rdb) > 0 })
	if err := rd.Nodes[0].Pause(); err != nil {
		t.Fatal(err)
	}
	hatest.WaitFor(t, 30*time.Second, "two ticks given up", func() bool {
		return metricValue(t, s, "hakit_jobs_ticks_skipped_total") >= 2
	})
	if err := rd.Nodes[0].Resume(); err != nil {
		t.Fatal(err)
	}
	before := queued(rdb)
	hatest.WaitFor(t, 10*time.Second, "ticks after Redis is back", func() bool { return queued(rdb) > before+1 })
}

func TestParseMasterID(t *testing.T) {
	info := "# Server\r\nredis_version:7.0.15\r\nrun_id:abc\r\n\r\n# Replication\r\nrole:master\r\nconnected_slaves:2\r\n" +
		"slave0:ip=127.0.0.1,port=1,state=online,offset=120,lag=0\r\nslave1:ip=127.0.0.1,port=2,state=wait_bgsave,offset=0,lag=0\r\n" +
		"master_replid:def\r\nmaster_repl_offset:130\r\n"
	m, err := jobs.ParseMasterID(info)
	if err != nil {
		t.Fatal(err)
	}
	if want := "abc/def replicas=2 offset=130 acked=[120]"; m != want {
		t.Errorf("got %q; want %q", m, want)
	}
	if _, err := jobs.ParseMasterID("run_id:abc\r\nrole:slave\r\nmaster_replid:def\r\n"); err == nil {
		t.Error("a replica was taken for a master")
	}
}

// testLog returns a logger that writes to t.Log until the test ends.
func testLog(t *testing.T) *slog.Logger {
	var mu sync.Mutex
	done := false
	t.Cleanup(func() { mu.Lock(); done = true; mu.Unlock() })
	return slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		if !done {
			t.Log(strings.TrimSpace(string(p)))
		}
		return len(p), nil
	}), &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// A tick that a master took without a replica to confirm it is tried
// again until MaxDelay: when that master restarts empty (no persistence),
// the tick is enqueued again on it and confirmed once its replica is back.
func TestSchedulerRetriesUnconfirmedTickAfterMasterLoss(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rd := hatest.NewRedis(t, hatest.RedisOptions{Replicas: 1})
	rdb := redis.NewClient(&redis.Options{Addr: rd.Addr(), DialTimeout: 500 * time.Millisecond,
		ReadTimeout: 3 * time.Second, WriteTimeout: time.Second})
	t.Cleanup(func() { rdb.Close() })
	if err := rd.Nodes[1].Kill(); err != nil {
		t.Fatal(err)
	}
	hatest.WaitFor(t, 10*time.Second, "the master to see no replica", func() bool {
		return nodeInfo(rd.Nodes[0], "replication", "connected_slaves") == "0"
	})
	c := jobs.NewClient(rdb, jobs.ClientConfig{WaitReplicas: 1, WaitTimeout: 200 * time.Millisecond, Logger: testLog(t)})
	t.Cleanup(func() { c.Close() })
	s := jobs.NewScheduler(c, jobs.SchedulerConfig{MaxDelay: 40 * time.Second, Logger: testLog(t)})
	if err := s.Add("beat", "@every 1s", "tick", struct{}{}, jobs.Options{}); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopWithin(s.Stop, 5*time.Second) })
	has := func(n *hatest.RedisNode, tick int64) bool {
		cl := n.Client()
		defer cl.Close()
		k, err := cl.Exists(ctx, "asynq:{default}:t:beat-"+strconv.FormatInt(tick, 10)).Result()
		return err == nil && k == 1
	}
	var tick int64
	hatest.WaitFor(t, 10*time.Second, "an unconfirmed tick on the master", func() bool {
		now := time.Now().Unix()
		if has(rd.Nodes[0], now) {
			tick = now
		}
		return tick != 0
	})
	// Two ticks later the first is no longer the one being enqueued.
	hatest.WaitFor(t, 10*time.Second, "two more ticks", func() bool { return has(rd.Nodes[0], tick+2) })
	// The master restarts empty; its replica comes back and copies it. A
	// key set just before the kill tells that the restart lost everything
	// (the tick itself may already be back: the scheduler keeps trying).
	marker := rd.Nodes[0].Client()
	err := marker.Set(ctx, "before-the-crash", "1", 0).Err()
	marker.Close()
	if err != nil {
		t.Fatal(err)
	}
	if err := rd.Nodes[0].Kill(); err != nil {
		t.Fatal(err)
	}
	if err := rd.Nodes[0].Start(ctx); err != nil {
		t.Fatal(err)
	}
	marker = rd.Nodes[0].Client()
	n, err := marker.Exists(ctx, "before-the-crash").Result()
	marker.Close()
	if err != nil || n != 0 {
		t.Fatalf("the restarted master kept its data (%d, %v): the tick was not lost", n, err)
	}
	if err := rd.Nodes[1].Start(ctx); err != nil {
		t.Fatal(err)
	}
	hatest.WaitFor(t, 30*time.Second, "the lost tick enqueued again and on the replica", func() bool {
		return has(rd.Nodes[0], tick) && has(rd.Nodes[1], tick)
	})
	if got := metricValue(t, s, "hakit_jobs_ticks_unconfirmed_total"); got != 0 {
		t.Errorf("ticks_unconfirmed_total = %v; every tick was confirmed within MaxDelay", got)
	}
}
