package hatest_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"hakit.dev/hatest"
)

func TestRedisShardsFailover(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := hatest.NewRedisShards(t, hatest.RedisShardsOptions{})
	masters, err := c.Masters(ctx)
	if err != nil || len(masters) != 3 || len(c.Nodes) != 6 {
		t.Fatalf("%d masters of %d nodes (%v), want 3 of 6", len(masters), len(c.Nodes), err)
	}
	rdb := c.Client()
	defer rdb.Close()
	// Keys land on every master.
	for i := range 30 {
		if err := rdb.Set(ctx, fmt.Sprint("k", i), i, 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	for _, m := range masters {
		cl := m.Client()
		n, err := cl.DBSize(ctx).Result()
		cl.Close()
		if err != nil || n == 0 {
			t.Fatalf("master %s holds %d keys (%v)", m.Name, n, err)
		}
	}
	// A write confirmed by the shard's replica survives its master.
	owner, err := c.MasterFor(ctx, "k0")
	if err != nil {
		t.Fatal(err)
	}
	// WAIT counts the writes of its own connection: SET and WAIT go in
	// one pipeline to the shard's master.
	cl := owner.Client()
	var wait *redis.IntCmd
	if _, err := cl.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.Set(ctx, "k0", "0", 0)
		wait = redis.NewIntCmd(ctx, "WAIT", 1, 2000)
		_ = p.Process(ctx, wait)
		return nil
	}); err != nil || wait.Val() < 1 {
		t.Fatalf("SET and WAIT on %s: %d replicas, %v", owner.Name, wait.Val(), err)
	}
	cl.Close()
	killed, err := c.KillMaster(ctx, "k0")
	if err != nil || killed != owner {
		t.Fatalf("killed %v (%v), want %s", killed, err, owner.Name)
	}
	start := time.Now()
	now, err := c.WaitPromotion(ctx, killed)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("a replica took over %s's slots %v after the kill", killed.Name, time.Since(start).Round(10*time.Millisecond))
	if slices.Contains(now, killed) || len(now) != 3 {
		t.Fatalf("masters after the failover: %d, killed among them: %v", len(now), slices.Contains(now, killed))
	}
	hatest.WaitFor(t, 20*time.Second, "the client to read k0 from the new master", func() bool {
		v, err := rdb.Get(ctx, "k0").Result()
		return err == nil && v == "0"
	})
	// The old master comes back as a replica.
	if err := killed.Start(ctx); err != nil {
		t.Fatal(err)
	}
	hatest.WaitFor(t, 30*time.Second, "the old master to rejoin as a replica", func() bool {
		role, err := killed.Role(ctx)
		return err == nil && role == "slave"
	})
}

func TestRedisShardsBadOptions(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		opts hatest.RedisShardsOptions
		want string
	}{
		{hatest.RedisShardsOptions{Masters: 2}, "at least 3"},
		{hatest.RedisShardsOptions{NodeTimeout: -time.Second}, "negative"},
	} {
		_, err := hatest.StartRedisShards(context.Background(), tc.opts)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("StartRedisShards(%+v) = %v, want an error containing %q", tc.opts, err, tc.want)
		}
	}
}
