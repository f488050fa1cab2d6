package jobs_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"hakit.dev/hatest"
	"hakit.dev/jobs"
)

// logBuffer collects a logger's output, safe for concurrent use.
type logBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// metricSum is the sum of the samples of the metric name that c collects.
func metricSum(t *testing.T, c prometheus.Collector, name string) float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
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
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}

// settled waits until the Redis queue q holds only completed tasks, want
// of them: none pending, scheduled, retrying, running or archived, so no
// task can run again.
func settled(t *testing.T, rdb redis.UniversalClient, q string, want int) {
	t.Helper()
	ins := asynq.NewInspectorFromRedisClient(rdb)
	var info *asynq.QueueInfo
	hatest.WaitFor(t, 30*time.Second, "queue "+q+" to hold only completed tasks", func() bool {
		var err error
		info, err = ins.GetQueueInfo(q)
		return err == nil && info.Pending+info.Scheduled+info.Retry+info.Active+info.Aggregating == 0
	})
	if info.Archived != 0 || info.Completed != want {
		archived, _ := ins.ListArchivedTasks(q)
		var why []string
		for _, a := range archived {
			why = append(why, a.Type+": "+a.LastErr)
		}
		t.Fatalf("queue %s: %d completed, %d archived (%s); want %d completed, none archived", q, info.Completed, info.Archived, strings.Join(why, "; "), want)
	}
}

// Two apps on one Redis, each with its namespace, both with a task type
// named "mail" and a schedule named "beat": each runs only its own tasks
// and ticks, once, and neither hands back or archives the other's.
func TestNamespacesKeepAppsApart(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb := standaloneRedis(t)
	type app struct {
		client *jobs.Client
		worker *jobs.Worker
		runs   runs
	}
	apps := map[string]*app{}
	for _, name := range []string{"shop", "sso"} {
		a := &app{client: jobs.NewClient(rdb, jobs.ClientConfig{Namespace: name, NoReplicas: true, Logger: quiet()}),
			worker: jobs.NewWorker(rdb, jobs.WorkerConfig{Namespace: name, Logger: quiet(), ShutdownTimeout: time.Second})}
		jobs.Handle(a.worker, "mail", func(ctx context.Context, n note) error {
			a.runs.add(fmt.Sprint("mail-", n.ID))
			return nil
		})
		jobs.Handle(a.worker, name+":only", func(ctx context.Context, n note) error {
			a.runs.add(fmt.Sprint("only-", n.ID))
			return nil
		})
		// Both apps have a schedule of the same name and type: each
		// app's ticks go to its own queues.
		jobs.Handle(a.worker, "beat", func(ctx context.Context, from string) error {
			a.runs.add("beat-from-" + from)
			return nil
		})
		sched := jobs.NewScheduler(a.client, jobs.SchedulerConfig{Logger: quiet()})
		if err := sched.Add("beat", "@every 1s", "beat", name, jobs.Options{}); err != nil {
			t.Fatal(err)
		}
		if err := a.worker.Start(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { a.worker.Stop(context.Background()) })
		if err := sched.Start(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { sched.Stop(context.Background()) })
		apps[name] = a
	}
	const n = 20
	for name, a := range apps {
		base := map[string]int{"shop": 0, "sso": 1000}[name]
		for i := range n {
			if _, err := a.client.Enqueue(ctx, "mail", note{ID: base + i}, jobs.Options{}); err != nil {
				t.Fatal(err)
			}
			if _, err := a.client.Enqueue(ctx, name+":only", note{ID: base + i}, jobs.Options{Queue: "low"}); err != nil {
				t.Fatal(err)
			}
		}
	}
	for name, a := range apps {
		hatest.WaitFor(t, 30*time.Second, name+"'s tasks and a tick", func() bool {
			return len(a.runs.snapshot()) == 2*n+1 && a.runs.get("beat-from-"+name) > 0
		})
		settled(t, rdb, name+":low", n)
		if archived, err := a.client.Archived("default", 10); err != nil || len(archived) != 0 {
			t.Errorf("%s's archive: %v, %v; want it empty", name, archived, err)
		}
	}
	for name, a := range apps {
		base := map[string]int{"shop": 0, "sso": 1000}[name]
		for k, c := range a.runs.snapshot() {
			if k == "beat-from-"+name {
				continue
			}
			var kind string
			var id int
			if _, err := fmt.Sscanf(strings.Replace(k, "-", " ", 1), "%s %d", &kind, &id); err != nil || id < base || id >= base+n || c != 1 {
				t.Errorf("%s ran %s %d times; want its own tasks once each", name, k, c)
			}
		}
		if got := metricSum(t, a.worker, "hakit_jobs_unhandled_total"); got != 0 {
			t.Errorf("%s's worker handed back %v tasks; want none (the other app's are not in its queues)", name, got)
		}
	}
	// Nothing went to the queues without a namespace.
	if keys, err := rdb.Keys(ctx, "asynq:{default}:*").Result(); err != nil || len(keys) != 0 {
		t.Errorf("keys of the queue without namespace: %v, %v; want none", keys, err)
	}
}

// A namespace is part of Redis key names: one that is not a plain word is
// an error from every entry point, before anything reaches Redis.
func TestBadNamespaceIsAnError(t *testing.T) {
	t.Parallel()
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}) // never dialled
	t.Cleanup(func() { rdb.Close() })
	for _, ns := range []string{"my app", "a{b}", "tab\t", "ü"} {
		c := jobs.NewClient(rdb, jobs.ClientConfig{Namespace: ns, NoReplicas: true, Logger: quiet()})
		if _, err := c.Enqueue(t.Context(), "x", nil, jobs.Options{}); err == nil || !strings.Contains(err.Error(), "ClientConfig.Namespace") {
			t.Errorf("Enqueue with Namespace %q: %v; want an error naming ClientConfig.Namespace", ns, err)
		}
		if err := jobs.NewScheduler(c, jobs.SchedulerConfig{Logger: quiet()}).Start(t.Context()); err == nil || !strings.Contains(err.Error(), "ClientConfig.Namespace") {
			t.Errorf("Scheduler.Start with Namespace %q: %v", ns, err)
		}
		if _, err := c.Archived("", 1); err == nil {
			t.Errorf("Archived with Namespace %q: no error", ns)
		}
		w := jobs.NewWorker(rdb, jobs.WorkerConfig{Namespace: ns, Logger: quiet()})
		if err := w.Start(t.Context()); err == nil || !strings.Contains(err.Error(), "WorkerConfig.Namespace") {
			w.Stop(t.Context())
			t.Errorf("Worker.Start with Namespace %q: %v; want an error naming WorkerConfig.Namespace", ns, err)
		}
		w = jobs.NewWorker(rdb, jobs.WorkerConfig{Namespace: "app", FormerNamespaces: []string{ns}, Logger: quiet()})
		if err := w.Start(t.Context()); err == nil || !strings.Contains(err.Error(), "WorkerConfig.FormerNamespaces") {
			w.Stop(t.Context())
			t.Errorf("Worker.Start with FormerNamespaces %q: %v", ns, err)
		}
	}
	for _, ns := range []string{"", "hakit.dev/examples/shop", "shop:staging", "a_b-c~d"} {
		if err := jobs.NewScheduler(jobs.NewClient(rdb, jobs.ClientConfig{Namespace: ns, NoReplicas: true}), jobs.SchedulerConfig{Logger: quiet()}).Start(t.Context()); err != nil {
			t.Errorf("Namespace %q: %v", ns, err)
		}
	}
}

// A rolling deploy that adds a task type: the new version enqueues it
// while old instances, without its handler, still run. The old workers
// hand it back — also a task that may not be retried, and one on its
// last attempt — the new ones run it: every task once, none archived,
// and a hand-back is no failed attempt.
func TestRollingDeployNewTaskTypeRunsOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb := standaloneRedis(t)
	client := jobs.NewClient(rdb, jobs.ClientConfig{Namespace: "app", NoReplicas: true, Logger: quiet()})
	var ran runs
	start := time.Now()
	type instance struct {
		w    *jobs.Worker
		logs *logBuffer
	}
	newInstance := func(name string, v2 bool) instance {
		logs := &logBuffer{}
		w := jobs.NewWorker(rdb, jobs.WorkerConfig{Namespace: "app", Name: name, ShutdownTimeout: 2 * time.Second,
			Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn}))})
		jobs.Handle(w, "v1", func(ctx context.Context, n note) error { ran.add(fmt.Sprint("v1-", n.ID)); return nil })
		if v2 {
			jobs.Handle(w, "v2", func(ctx context.Context, n note) error { ran.add(fmt.Sprint("v2-", n.ID)); return nil })
		}
		if err := w.Start(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { w.Stop(context.Background()) })
		return instance{w, logs}
	}
	var ids []string
	enqueue := func(from, to int) {
		t.Helper()
		for i := from; i < to; i++ {
			opts := jobs.Options{MaxRetry: []int{0, -1, 1}[i%3]}
			for _, typ := range []string{"v1", "v2"} {
				id, err := client.Enqueue(ctx, typ, note{ID: i}, opts)
				if err != nil {
					t.Fatal(err)
				}
				if typ == "v2" {
					ids = append(ids, id)
				}
			}
		}
	}
	old := []instance{newInstance("old-1", false), newInstance("old-2", false)}
	enqueue(0, 15)
	unhandled := func() float64 {
		return metricSum(t, old[0].w, "hakit_jobs_unhandled_total") + metricSum(t, old[1].w, "hakit_jobs_unhandled_total")
	}
	// Only old instances so far: they hand every v2 task back, again and
	// again, and archive none.
	hatest.WaitFor(t, 30*time.Second, "the old workers to hand back v2 tasks", func() bool { return unhandled() >= 30 })
	if a, err := client.Archived("default", 10); err != nil || len(a) != 0 {
		t.Fatalf("archived while only old workers ran: %v, %v", a, err)
	}
	newInstance("new-1", true)
	newInstance("new-2", true)
	enqueue(15, 30)
	if err := old[0].w.Stop(ctx); err != nil { // the deploy goes on
		t.Fatal(err)
	}
	enqueue(30, 45)
	hatest.WaitFor(t, 60*time.Second, "every task to run", func() bool { return len(ran.snapshot()) == 90 })
	if err := old[1].w.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	settled(t, rdb, "app:default", 90)
	for k, c := range ran.snapshot() {
		if c != 1 {
			t.Errorf("task %s ran %d times; want once", k, c)
		}
	}
	ins := asynq.NewInspectorFromRedisClient(rdb)
	for _, id := range ids {
		info, err := ins.GetTaskInfo("app:default", id)
		if err != nil {
			t.Fatal(err)
		}
		if info.Retried != 0 {
			t.Errorf("task %s: retried %d times; hand-backs must not count as attempts", id, info.Retried)
		}
	}
	// One warning per type and minute, from each old worker.
	minutes := int(time.Since(start)/time.Minute) + 1
	for _, o := range old {
		logs := o.logs.String()
		if n := strings.Count(logs, "has no handler for are handed back"); n < 1 || n > minutes {
			t.Errorf("%d hand-back warnings in %d minute(s); want one a minute:\n%s", n, minutes, logs)
		}
		if !strings.Contains(logs, "type=v2") || strings.Contains(logs, "task failed") {
			t.Errorf("the old worker's log: want the warning about v2 and no task failure:\n%s", logs)
		}
	}
}

// The deploy that introduces namespaces: the old version queued without
// one — tasks due now, tasks due later, and tasks it still enqueues while
// the new instances run. The new workers serve the queues without a
// namespace while they hold tasks, as well as their own: every task runs
// once, none is archived, and the new workers stop looking at the old
// queues once they are empty.
func TestRollingDeployFromQueuesWithoutNamespace(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb := standaloneRedis(t)
	var ran runs
	handle := func(w *jobs.Worker, types ...string) {
		for _, typ := range types {
			jobs.Handle(w, typ, func(ctx context.Context, n note) error { ran.add(fmt.Sprint(typ, "-", n.ID)); return nil })
		}
	}
	oldClient := jobs.NewClient(rdb, jobs.ClientConfig{NoReplicas: true, Logger: quiet()})
	oldWorker := jobs.NewWorker(rdb, jobs.WorkerConfig{Logger: quiet(), ShutdownTimeout: 2 * time.Second})
	handle(oldWorker, "v1")
	if err := oldWorker.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { oldWorker.Stop(context.Background()) })
	enqueueOld := func(from, to int, opts jobs.Options) {
		t.Helper()
		for i := from; i < to; i++ {
			if _, err := oldClient.Enqueue(ctx, "v1", note{ID: i}, opts); err != nil {
				t.Fatal(err)
			}
		}
	}
	enqueueOld(0, 20, jobs.Options{})
	enqueueOld(20, 25, jobs.Options{ProcessAt: time.Now().Add(3 * time.Second)}) // due after the old workers are gone

	logs := &logBuffer{}
	newClient := jobs.NewClient(rdb, jobs.ClientConfig{Namespace: "app", NoReplicas: true, Logger: quiet()})
	newWorker := jobs.NewWorker(rdb, jobs.WorkerConfig{Namespace: "app", ShutdownTimeout: 2 * time.Second,
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))})
	handle(newWorker, "v1", "v2")
	if err := newWorker.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { newWorker.Stop(context.Background()) })
	for i := range 20 {
		for _, typ := range []string{"v1", "v2"} {
			if _, err := newClient.Enqueue(ctx, typ, note{ID: 100 + i}, jobs.Options{}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := oldWorker.Stop(ctx); err != nil { // the last old worker goes
		t.Fatal(err)
	}
	enqueueOld(25, 35, jobs.Options{}) // an old instance's web server or relay, still draining
	hatest.WaitFor(t, 60*time.Second, "every task to run", func() bool { return len(ran.snapshot()) == 35+40 })
	settled(t, rdb, "default", 35)
	settled(t, rdb, "app:default", 40)
	for k, c := range ran.snapshot() {
		if c != 1 {
			t.Errorf("task %s ran %d times; want once", k, c)
		}
	}
	if !strings.Contains(logs.String(), "serving the queues of former namespaces while they hold tasks") {
		t.Errorf("the new worker did not say it serves the old queues:\n%s", logs)
	}
	hatest.WaitFor(t, 60*time.Second, "the new worker to stop serving the empty old queues", func() bool {
		return strings.Contains(logs.String(), "no longer serving them")
	})
	// A task the old version queues later still runs: the worker looks
	// again.
	enqueueOld(35, 36, jobs.Options{})
	hatest.WaitFor(t, 30*time.Second, "a late task in the old queue", func() bool { return ran.get("v1-35") == 1 })
}
