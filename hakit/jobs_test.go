package hakit_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
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

// An app with Config.JobsNamespace has queues of its own on a shared
// Redis, whichever of Worker and Jobs comes first: another app on that
// Redis (a worker and client with their own namespace), with a task type
// of the same name, runs only its own tasks, and neither hands back nor
// archives the other's.
func TestJobsNamespaceKeepsAppsApart(t *testing.T) {
	t.Parallel()
	hatestSkip(t)
	ctx := context.Background()
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

	var client *jobs.Client
	var worker *jobs.Worker
	r := serve(t, hakit.Config{DrainDelay: -1, JobsNamespace: "shop",
		Redis: hakit.RedisConfig{URL: "redis://" + rd.Addr(), NoReplicas: true}}, func(a *hakit.App) {
		var err error
		if worker, err = a.Worker(jobs.WorkerConfig{}); err != nil { // before Jobs
			t.Fatal(err)
		}
		if client, err = a.Jobs(jobs.ClientConfig{}); err != nil {
			t.Fatal(err)
		}
		jobs.Handle(worker, "mail", func(_ context.Context, to string) error { count(mine, to); return nil })
	}, true)
	if client.Namespace() != "shop" || worker.Namespace() != "shop" {
		t.Fatalf("namespaces: client %q, worker %q; want Config.JobsNamespace, shop", client.Namespace(), worker.Namespace())
	}

	other := jobs.NewClient(rdb, jobs.ClientConfig{Namespace: "example.com/other", NoReplicas: true})
	otherWorker := jobs.NewWorker(rdb, jobs.WorkerConfig{Namespace: "example.com/other", ShutdownTimeout: time.Second})
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
		return len(snapshot(mine)) == n && len(snapshot(theirs)) == 2*n
	})
	for who, got := range map[string]map[string]int{"the app": snapshot(mine), "the other app": snapshot(theirs)} {
		for k, c := range got {
			own := strings.HasPrefix(k, "mine-")
			if who == "the other app" {
				own = strings.HasPrefix(k, "theirs-") || strings.HasPrefix(k, "report-")
			}
			if !own || c != 1 {
				t.Errorf("%s ran %s %d times; want its own tasks once each", who, k, c)
			}
		}
	}
	ins := asynq.NewInspectorFromRedisClient(rdb)
	for q, want := range map[string]int{"shop:default": n, "example.com/other:default": 2 * n} {
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

// The app's jobs namespace is opt-in: without Config.JobsNamespace the
// client and the workers use none; with it, both default to it in either
// order; a client namespace set in code reaches the workers made after
// it, and one that differs from the namespace a Worker already took is
// an error, not queues that no worker serves. A bad JobsNamespace is
// refused by New.
func TestJobsNamespaceDefaults(t *testing.T) {
	t.Parallel()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	newApp := func(ns string) *hakit.App {
		t.Helper()
		// A Redis client is lazy: no server is needed to wire.
		app, err := hakit.New(context.Background(), hakit.Config{Logger: quiet, JobsNamespace: ns,
			Redis: hakit.RedisConfig{URL: "redis://127.0.0.1:1", NoReplicas: true}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { app.Redis().Close() })
		return app
	}
	namespaces := func(app *hakit.App, workerFirst bool, clientCfg jobs.ClientConfig) (string, string, error) {
		t.Helper()
		var c *jobs.Client
		var w *jobs.Worker
		var err error
		if workerFirst {
			if w, err = app.Worker(jobs.WorkerConfig{}); err != nil {
				t.Fatal(err)
			}
			if c, err = app.Jobs(clientCfg); err != nil {
				return "", w.Namespace(), err
			}
		} else {
			if c, err = app.Jobs(clientCfg); err != nil {
				t.Fatal(err)
			}
			if w, err = app.Worker(jobs.WorkerConfig{}); err != nil {
				t.Fatal(err)
			}
		}
		return c.Namespace(), w.Namespace(), nil
	}
	for _, tc := range []struct {
		configNS    string
		workerFirst bool
		clientCfg   jobs.ClientConfig
		want        string
	}{
		{"", true, jobs.ClientConfig{}, ""},
		{"", false, jobs.ClientConfig{}, ""},
		{"shop", true, jobs.ClientConfig{}, "shop"},
		{"shop", false, jobs.ClientConfig{}, "shop"},
		{"shop", false, jobs.ClientConfig{Namespace: "shop.staging"}, "shop.staging"},
		{"shop", true, jobs.ClientConfig{Namespace: "shop"}, "shop"},
	} {
		c, w, err := namespaces(newApp(tc.configNS), tc.workerFirst, tc.clientCfg)
		if err != nil || c != tc.want || w != tc.want {
			t.Errorf("JobsNamespace %q, worker first %v, client config %+v: client %q, worker %q, %v; want %q for both",
				tc.configNS, tc.workerFirst, tc.clientCfg, c, w, err, tc.want)
		}
	}
	// The worker took "shop"; a client in another namespace would enqueue
	// where it never looks.
	_, _, err := namespaces(newApp("shop"), true, jobs.ClientConfig{Namespace: "shop.staging"})
	if err == nil || !strings.Contains(err.Error(), "call Jobs before Worker") || !strings.Contains(err.Error(), `"shop.staging"`) {
		t.Errorf("Jobs with another namespace after Worker took the app's: %v; want an error saying to call Jobs first", err)
	}
	// A bad namespace is refused at New, naming the field.
	for _, ns := range []string{"shop:staging", "my shop"} {
		_, err := hakit.New(context.Background(), hakit.Config{Logger: quiet, JobsNamespace: ns})
		if err == nil || !strings.Contains(err.Error(), "JobsNamespace") {
			t.Errorf("New with JobsNamespace %q: %v; want an error naming JobsNamespace", ns, err)
		}
	}
}
