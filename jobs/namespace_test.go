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
// and ticks, once, and neither hands back or archives the other's. A
// third app without a namespace (plain asynq) keeps its task: the
// namespaced workers do not touch the queues without a namespace.
func TestNamespacesKeepAppsApart(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb := standaloneRedis(t)
	bare := asynq.NewClientFromRedisClient(rdb)
	t.Cleanup(func() { bare.Close() })
	if _, err := bare.Enqueue(asynq.NewTask("other:report", []byte("{}")), asynq.MaxRetry(5)); err != nil {
		t.Fatal(err)
	}
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
	// The other app's task is still pending in the queue without a
	// namespace, untouched, and nothing else went there.
	if q, err := asynq.NewInspectorFromRedisClient(rdb).GetQueueInfo("default"); err != nil || q.Size != 1 || q.Pending != 1 {
		t.Errorf("the queue without a namespace: %+v, %v; want the other app's one task, pending", q, err)
	}
}

// A task never to be retried (MaxRetry -1) runs once, even when its run
// hits its Timeout: asynq counts that run itself, and with a spare retry
// the task would run a second time.
func TestNoRetryTaskRunsOnceAfterTimeout(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb := standaloneRedis(t)
	client := jobs.NewClient(rdb, jobs.ClientConfig{Namespace: "app", NoReplicas: true, Logger: quiet()})
	w := jobs.NewWorker(rdb, jobs.WorkerConfig{Namespace: "app", Logger: quiet(), ShutdownTimeout: time.Second})
	var ran runs
	jobs.Handle(w, "charge", func(ctx context.Context, n note) error {
		ran.add("charge")
		<-ctx.Done()
		return ctx.Err()
	})
	if err := w.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Stop(context.Background()) })
	id, err := client.Enqueue(ctx, "charge", note{ID: 1}, jobs.Options{MaxRetry: -1, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ins := asynq.NewInspectorFromRedisClient(rdb)
	var info *asynq.TaskInfo
	hatest.WaitFor(t, 30*time.Second, "the run to end", func() bool {
		info, err = ins.GetTaskInfo("app:default", id)
		return err == nil && (info.State == asynq.TaskStateRetry || info.State == asynq.TaskStateArchived)
	})
	if info.State != asynq.TaskStateArchived || ran.get("charge") != 1 {
		t.Fatalf("after its run timed out: state %v, %d run(s), max_retry %d, last error %q; want archived after one run",
			info.State, ran.get("charge"), info.MaxRetry, info.LastErr)
	}
}

// A namespace is part of Redis key names: one that is not a plain word is
// an error from every entry point, before anything reaches Redis.
func TestBadNamespaceIsAnError(t *testing.T) {
	t.Parallel()
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}) // never dialled
	t.Cleanup(func() { rdb.Close() })
	for _, ns := range []string{"my app", "a{b}", "tab\t", "ü", "shop:staging"} {
		if err := jobs.CheckNamespace(ns); err == nil {
			t.Errorf("CheckNamespace(%q): no error", ns)
		}
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
	// A colon would let two namespaces share a Redis queue: "a" with the
	// queue "b:default" and "a:b" with the queue "default".
	if err := jobs.CheckNamespace("a:b"); err == nil || !strings.Contains(err.Error(), "no colon") {
		t.Errorf("CheckNamespace(\"a:b\"): %v; want an error about the colon", err)
	}
	for _, ns := range []string{"", "hakit.dev/examples/shop", "shop.staging", "a_b-c~d"} {
		if err := jobs.CheckNamespace(ns); err != nil {
			t.Errorf("CheckNamespace(%q): %v", ns, err)
		}
		if err := jobs.NewScheduler(jobs.NewClient(rdb, jobs.ClientConfig{Namespace: ns, NoReplicas: true}), jobs.SchedulerConfig{Logger: quiet()}).Start(t.Context()); err != nil {
			t.Errorf("Namespace %q: %v", ns, err)
		}
	}
}

// A rolling deploy that adds a task type: the new version enqueues it
// while old instances, without its handler, still run. The old workers
// hand it back — also a task allowed a single retry — the new ones run
// it: every task once, none archived, and a hand-back is no failed
// attempt. (A task never to be retried cannot be handed back: see
// TestBadTasksAreArchivedReadably.)
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
			opts := jobs.Options{MaxRetry: []int{0, 3, 1}[i%3]}
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

// The deploy that moves an app to a namespace: the old version queued
// without one — tasks due now, tasks due later, and tasks it still
// enqueues while the new instances run. The new workers list "" in
// FormerNamespaces: they serve the queues without a namespace while
// those hold tasks, as well as their own. Every task runs once, none is
// archived; the completed tasks of the old queue are deleted once their
// Retention is over (asynq's janitor runs only for served queues), and
// only then do the new workers stop serving the old queues; a task
// queued there later still runs.
func TestFormerNamespacesMoveADeployment(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb := standaloneRedis(t)
	var ran runs
	handle := func(w *jobs.Worker, types ...string) {
		for _, typ := range types {
			jobs.Handle(w, typ, func(ctx context.Context, n note) error { ran.add(fmt.Sprint(typ, "-", n.ID)); return nil })
		}
	}
	const retention = 3 * time.Second
	oldClient := jobs.NewClient(rdb, jobs.ClientConfig{NoReplicas: true, Retention: retention, Logger: quiet()})
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
	newWorker := jobs.NewWorker(rdb, jobs.WorkerConfig{Namespace: "app", FormerNamespaces: []string{""}, ShutdownTimeout: 2 * time.Second,
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
	settled(t, rdb, "app:default", 40)
	for k, c := range ran.snapshot() {
		if c != 1 {
			t.Errorf("task %s ran %d times; want once", k, c)
		}
	}
	if !strings.Contains(logs.String(), "serving the queues of former namespaces while they hold tasks") {
		t.Errorf("the new worker did not say it serves the old queues:\n%s", logs)
	}
	hatest.WaitFor(t, 90*time.Second, "the new worker to stop serving the empty old queues", func() bool {
		return strings.Contains(logs.String(), "no longer serving them")
	})
	// Nothing of the old queue is left: its completed tasks were deleted
	// when their Retention was over, before the worker stopped serving it.
	for _, state := range []string{"pending", "active", "scheduled", "retry", "completed", "archived"} {
		k := "asynq:{default}:" + state
		if n, err := rdb.Exists(ctx, k).Result(); err != nil || n != 0 {
			t.Errorf("%s is left (%d, %v)", k, n, err)
		}
	}
	if keys, err := rdb.Keys(ctx, "asynq:{default}:t:*").Result(); err != nil || len(keys) != 0 {
		t.Errorf("%d task hashes of the old queue are left (%v)", len(keys), err)
	}
	// A task the old version queues later still runs: the worker looks
	// again.
	enqueueOld(35, 36, jobs.Options{})
	hatest.WaitFor(t, 30*time.Second, "a late task in the old queue", func() bool { return ran.get("v1-35") == 1 })
}
