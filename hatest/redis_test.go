package hatest_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"hakit.dev/hatest"
)

func TestRedisSentinelFailover(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := hatest.NewRedis(t, hatest.RedisOptions{Replicas: 1, Sentinels: 3})
	if len(c.Nodes) != 2 || len(c.Sentinels) != 3 {
		t.Fatalf("got %d nodes and %d Sentinels", len(c.Nodes), len(c.Sentinels))
	}
	if role, err := c.Nodes[1].Role(ctx); err != nil || role != "slave" {
		t.Fatalf("redis1 role = %q, %v; want slave", role, err)
	}

	rdb := redis.NewFailoverClient(&redis.FailoverOptions{
		MasterName:    c.MasterName,
		SentinelAddrs: c.SentinelAddrs(),
		DialTimeout:   500 * time.Millisecond,
		ReadTimeout:   500 * time.Millisecond,
		WriteTimeout:  500 * time.Millisecond,
		MaxRetries:    -1,
	})
	defer rdb.Close()
	if err := rdb.Set(ctx, "k", "before", 0).Err(); err != nil {
		t.Fatal(err)
	}
	// Make sure the replica has the key before the master dies.
	if err := rdb.Do(ctx, "WAIT", 1, 5000).Err(); err != nil {
		t.Fatal(err)
	}

	old, err := c.KillMaster(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if old != c.Nodes[0] {
		t.Fatalf("killed %s, want redis0", old.Name)
	}
	start := time.Now()
	m, err := c.WaitFailover(ctx, old)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Sentinel promoted %s %s after the kill", m.Name, time.Since(start).Round(time.Millisecond))
	if m != c.Nodes[1] {
		t.Fatalf("new master %s, want redis1", m.Name)
	}

	// The failover client follows the new master: reads the old value,
	// writes succeed.
	var got string
	for {
		got, err = rdb.Get(ctx, "k").Result()
		if err == nil {
			if err = rdb.Set(ctx, "k", "after", 0).Err(); err == nil {
				break
			}
		}
		if ctx.Err() != nil {
			t.Fatalf("failover client did not follow the new master: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got != "before" {
		t.Fatalf("value after failover = %q, want %q", got, "before")
	}

	// The old master comes back and the Sentinels make it a replica of
	// the new one.
	if err := old.Start(ctx); err != nil {
		t.Fatal(err)
	}
	for {
		role, err := old.Role(ctx)
		if err == nil && role == "slave" {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("old master did not become a replica: role %q, %v", role, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestRedisStandalonePause(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := hatest.NewRedis(t, hatest.RedisOptions{})
	if len(c.Nodes) != 1 || len(c.Sentinels) != 0 {
		t.Fatalf("got %d nodes and %d Sentinels; want one standalone master", len(c.Nodes), len(c.Sentinels))
	}
	rdb := redis.NewClient(&redis.Options{Addr: c.Addr(), ReadTimeout: 300 * time.Millisecond, MaxRetries: -1})
	defer rdb.Close()
	if err := rdb.Set(ctx, "k", 1, 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.Nodes[0].Pause(); err != nil {
		t.Fatal(err)
	}
	err := rdb.Get(ctx, "k").Err()
	if err == nil {
		t.Fatal("GET on a paused server succeeded")
	}
	if err := c.Nodes[0].Resume(); err != nil {
		t.Fatal(err)
	}
	if v, err := rdb.Get(ctx, "k").Int(); err != nil || v != 1 {
		t.Fatalf("GET after resume = %d, %v", v, err)
	}
	if _, err := c.WaitFailover(ctx, c.Nodes[0]); err == nil {
		t.Fatal("WaitFailover without Sentinels did not fail")
	}
}
