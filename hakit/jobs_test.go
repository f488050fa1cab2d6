package hakit_test

import (
	"context"
	"fmt"
	"runtime/debug"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"hakit.dev/hakit"
	"hakit.dev/hatest"
	"hakit.dev/jobs"
)

// An app with the default configuration has queues of its own on a
// shared Redis, named after its module: another app on that Redis (here
// a worker set with its own namespace, as an app of another module
// gets), with a task type of the same name, runs only its own tasks, and
// neither hands back nor archives the other's. A task the app's previous
// version queued without a namespace still runs.
func TestJobsDefaultNamespaceKeepsAppsApart(t *testing.T) {
	t.Parallel()
	hatestSkip(t)
	ctx := context.Background()
	info, ok := debug.ReadBuildInfo()
	if !ok || info.Main.Path == "" {
		t.Fatal("the test binary has no build information")
	}
	rd := hatest.NewRedis(t, hatest.RedisOptions{})
	rdb := redis.NewClient(&redis.Options{Addr: rd.Addr()})
	t.Cleanup(func() { rdb.Close() })

	type ran struct {
		mu sync.Mutex
		n  map[string]int
	}
	count := func(r *ran, k string) {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.n[k]++
	}
	snapshot := func(r *ran) map[string]int {
		r.mu.Lock()
		defer r.mu.Unlock()
		out := map[string]int{}
		for k, v := range r.n {
			out[k] = v
		}
		return out
	}
	mine, theirs := &ran{n: map[string]int{}}, &ran{n: map[string]int{}}

	// The previous version of the app queued a task without a namespace.
	legacy := jobs.NewClient(rdb, jobs.ClientConfig{NoReplicas: true})
	if _, err := legacy.Enqueue(ctx, "mail", "legacy", jobs.Options{}); err != nil {
		t.Fatal(err)
	}

	var client *jobs.Client
	var worker *jobs.Worker
	r := serve(t, hakit.Config{DrainDelay: -1, Redis: hakit.RedisConfig{URL: "redis://" + rd.Addr(), NoReplicas: true}}, func(a *hakit.App) {
		var err error
		if worker, err = a.Worker(jobs.WorkerConfig{}); err != nil {
			t.Fatal(err)
		}
		if client, err = a.Jobs(jobs.ClientConfig{}); err != nil {
			t.Fatal(err)
		}
		jobs.Handle(worker, "mail", func(_ context.Context, to string) error { count(mine, to); return nil })
	}, true)
	if client.Namespace() != info.Main.Path || worker.Namespace() != info.Main.Path {
		t.Fatalf("namespaces: client %q, worker %q; want the module path %q", client.Namespace(), worker.Namespace(), info.Main.Path)
	}

	other := jobs.NewClient(rdb, jobs.ClientConfig{Namespace: "example.com/other", NoReplicas: true})
	otherWorker := jobs.NewWorker(rdb, jobs.WorkerConfig{Namespace: "example.com/other", IgnoreUnnamespaced: true, ShutdownTimeout: time.Second})
	jobs.Handle(otherWorker, "mail", func(_ context.Context, to string) error { count(theirs, to); return nil })
	jobs.Handle(otherWorker, "other:report", func(_ context.Context, to string) error { count(theirs, to); return nil })
	if err := otherWorker.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { otherWorker.Stop(context.Background()) })

	const n = 10
	for i := range n {
		if _, err := client.Enqueue(ctx, "mail", fmt.Sprint("mine-", i), jobs.Options{}); err != nil {
			t.Fatal(err)
		}
		if _, err := other.Enqueue(ctx, "mail", fmt.Sprint("theirs-", i), jobs.Options{}); err != nil {
			t.Fatal(err)
		}
		if _, err := other.Enqueue(ctx, "other:report", fmt.Sprint("report-", i), jobs.Options{}); err != nil {
			t.Fatal(err)
		}
	}
	hatest.WaitFor(t, 30*time.Second, "both apps' tasks", func() bool {
		return len(snapshot(mine)) == n+1 && len(snapshot(theirs)) == 2*n
	})
	for who, got := range map[string]map[string]int{"the app": snapshot(mine), "the other app": snapshot(theirs)} {
		for k, c := range got {
			own := strings.HasPrefix(k, "mine-") || k == "legacy"
			if who == "the other app" {
				own = strings.HasPrefix(k, "theirs-") || strings.HasPrefix(k, "report-")
			}
			if !own || c != 1 {
				t.Errorf("%s ran %s %d times; want its own tasks once each", who, k, c)
			}
		}
	}
	ins := asynq.NewInspectorFromRedisClient(rdb)
	for q, want := range map[string]int{info.Main.Path + ":default": n, "example.com/other:default": 2 * n, "default": 1} {
		var qi *asynq.QueueInfo
		hatest.WaitFor(t, 20*time.Second, "queue "+q+" settled", func() bool {
			var err error
			qi, err = ins.GetQueueInfo(q)
			return err == nil && qi.Pending+qi.Scheduled+qi.Retry+qi.Active == 0
		})
		if qi.Completed != want || qi.Archived != 0 {
			t.Errorf("queue %s: %d completed, %d archived; want %d completed, none archived", q, qi.Completed, qi.Archived, want)
		}
	}
	mfs, err := r.app.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "hakit_jobs_unhandled_total" && len(mf.GetMetric()) > 0 {
			t.Errorf("the app handed back tasks: %v", mf.GetMetric())
		}
	}
}
