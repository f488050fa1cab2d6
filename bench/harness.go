package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"hakit.dev/hatest"
)

// harness measures how long the hatest services take to come up, and how
// long the failovers they offer take, on this machine.
func harness(ctx context.Context, r *report) error {
	const rounds = 3
	var parallel, sequential []time.Duration
	per := map[string][]time.Duration{}
	r.row("measurement", "round", "seconds")
	for i := range rounds {
		total, each, err := startAll(ctx, true)
		if err != nil {
			return err
		}
		parallel = append(parallel, total)
		for k, v := range each {
			per[k] = append(per[k], v)
		}
		r.row("cluster start, services in parallel", fmt.Sprint(i+1), secs(total))
	}
	for i := range rounds {
		total, _, err := startAll(ctx, false)
		if err != nil {
			return err
		}
		sequential = append(sequential, total)
		r.row("cluster start, one service after another", fmt.Sprint(i+1), secs(total))
	}
	for _, k := range []string{"postgres primary+1 replica", "redis master+replica+3 sentinels", "minio"} {
		r.row("  "+k+" (median, in parallel)", "", secs(median(per[k])))
	}

	pgFailover, err := postgresFailover(ctx)
	if err != nil {
		return err
	}
	r.row("postgres: kill primary, promote replica, first write", "", secs(pgFailover))
	redisFailover, err := redisFailover(ctx)
	if err != nil {
		return err
	}
	r.row("redis: kill master until Sentinel's new master answers", "", secs(redisFailover))
	patroniStart, patroniFailover, err := patroni(ctx)
	if err != nil {
		return err
	}
	r.row("patroni: bootstrap 2 nodes + etcd", "", secs(patroniStart))
	r.row("patroni: kill leader machine until the new leader writes", "", secs(patroniFailover))

	// The headline figure is the slower, sequential start: what a test
	// that calls NewPostgres, NewRedis and NewMinIO one after another
	// waits.
	r.metric("harness_cluster_start_s", secs(median(sequential)))
	r.metric("harness_cluster_start_parallel_s", secs(median(parallel)))
	r.metric("harness_pg_promote_s", secs(pgFailover))
	r.metric("harness_redis_failover_s", secs(redisFailover))
	r.metric("harness_patroni_start_s", secs(patroniStart))
	r.metric("harness_patroni_failover_s", secs(patroniFailover))
	return nil
}

// startAll starts PostgreSQL (primary + 1 replica), Redis (master, replica,
// 3 Sentinels) and MinIO, all ready, then stops them. It returns the time
// until all were ready and each one's own start time.
func startAll(ctx context.Context, parallel bool) (time.Duration, map[string]time.Duration, error) {
	type svc struct {
		name  string
		start func(context.Context) (interface{ Close() error }, error)
	}
	svcs := []svc{
		{"postgres primary+1 replica", func(ctx context.Context) (interface{ Close() error }, error) {
			return hatest.StartPostgres(ctx, hatest.PostgresOptions{Replicas: 1})
		}},
		{"redis master+replica+3 sentinels", func(ctx context.Context) (interface{ Close() error }, error) {
			return hatest.StartRedis(ctx, hatest.RedisOptions{Replicas: 1, Sentinels: 3})
		}},
		{"minio", func(ctx context.Context) (interface{ Close() error }, error) {
			return hatest.StartMinIO(ctx, hatest.MinIOOptions{})
		}},
	}
	var (
		mu      sync.Mutex
		each    = map[string]time.Duration{}
		closers []interface{ Close() error }
		errs    []error
	)
	one := func(s svc) {
		t0 := time.Now()
		c, err := s.start(ctx)
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			errs = append(errs, err)
			return
		}
		each[s.name] = time.Since(t0)
		closers = append(closers, c)
	}
	t0 := time.Now()
	var wg sync.WaitGroup
	for _, s := range svcs {
		if parallel {
			wg.Go(func() { one(s) })
		} else {
			one(s)
		}
	}
	wg.Wait()
	total := time.Since(t0)
	for _, c := range closers {
		errs = append(errs, c.Close())
	}
	return total, each, errors.Join(errs...)
}

func postgresFailover(ctx context.Context) (time.Duration, error) {
	c, err := hatest.StartPostgres(ctx, hatest.PostgresOptions{Replicas: 1})
	if err != nil {
		return 0, err
	}
	defer c.Close()
	t0 := time.Now()
	if err := c.Nodes[0].Kill(); err != nil {
		return 0, err
	}
	if err := c.Nodes[1].Promote(ctx); err != nil {
		return 0, err
	}
	if err := c.Nodes[1].Exec(ctx, "CREATE TABLE after_failover (id int)"); err != nil {
		return 0, err
	}
	return time.Since(t0), nil
}

func redisFailover(ctx context.Context) (time.Duration, error) {
	c, err := hatest.StartRedis(ctx, hatest.RedisOptions{Replicas: 1, Sentinels: 3})
	if err != nil {
		return 0, err
	}
	defer c.Close()
	t0 := time.Now()
	old, err := c.KillMaster(ctx)
	if err != nil {
		return 0, err
	}
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if _, err := c.WaitFailover(wctx, old); err != nil {
		return 0, err
	}
	return time.Since(t0), nil
}

func patroni(ctx context.Context) (start, failover time.Duration, err error) {
	t0 := time.Now()
	c, err := hatest.StartPatroni(ctx, hatest.PatroniOptions{})
	if err != nil {
		return 0, 0, err
	}
	defer c.Close()
	start = time.Since(t0)
	t0 = time.Now()
	old, err := c.KillLeader(ctx)
	if err != nil {
		return 0, 0, err
	}
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if _, err := c.WaitLeader(wctx, old); err != nil {
		return 0, 0, err
	}
	return start, time.Since(t0), nil
}

// median returns the middle value of v (the upper one of an even count),
// or the zero value if v is empty.
func median[T cmp.Ordered](v []T) T {
	if len(v) == 0 {
		var zero T
		return zero
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

func secs(d time.Duration) string { return fmt.Sprintf("%.2f", d.Seconds()) }
