package hatest_test

import (
	"context"
	"errors"
	"strings"
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
	start = time.Now()
	if err := c.WaitReplica(ctx, old); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s was a replica of %s %s after its restart", old.Name, m.Name, time.Since(start).Round(time.Millisecond))
	if role, err := old.Role(ctx); err != nil || role != "slave" {
		t.Fatalf("old master role = %q, %v; want slave", role, err)
	}
	oc := old.Client()
	defer oc.Close()
	if v, err := oc.Get(ctx, "k").Result(); err != nil || v != "after" {
		t.Fatalf("GET k on the resynced old master = %q, %v; want %q", v, err, "after")
	}

	// A failover nobody waits for is reported, not passed over: the
	// Sentinels are told to fail over (as if they had taken m for down),
	// and WaitReplica, expecting m to stay the master, names the switch.
	forceFailover(ctx, t, c)
	for {
		now, err := c.Master(ctx)
		if err == nil && now == old {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("the forced failover did not happen: master %v, %v", now, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	err = c.WaitReplica(ctx, m)
	var uf *hatest.UnplannedFailoverError
	if !errors.As(err, &uf) {
		t.Fatalf("WaitReplica after a failover nobody waited for = %v; want an UnplannedFailoverError", err)
	}
	if want := m.Name + " -> " + old.Name + " at "; len(uf.Switches) != 1 || !strings.HasPrefix(uf.Switches[0], want) || !strings.Contains(uf.Events, "+switch-master") {
		t.Fatalf("UnplannedFailoverError names %q with events\n%s\nwant one switch %q and the +switch-master lines", uf.Switches, uf.Events, want)
	}
	t.Logf("reported: %v", err)
	// Waited for, the same failover is the expected one.
	if m2, err := c.WaitFailover(ctx, m); err != nil || m2 != old {
		t.Fatalf("WaitFailover after the forced failover = %v, %v; want %s", m2, err, old.Name)
	}
	if err := c.WaitReplica(ctx, m); err != nil {
		t.Fatal(err)
	}
}

// forceFailover has a Sentinel fail the master over (SENTINEL FAILOVER),
// asking again while it finds no replica fit to promote yet.
func forceFailover(ctx context.Context, t *testing.T, c *hatest.RedisCluster) {
	t.Helper()
	cl := c.Sentinels[0].Client()
	defer cl.Close()
	for {
		err := cl.Do(ctx, "SENTINEL", "FAILOVER", c.MasterName).Err()
		if err == nil {
			return
		}
		if !strings.Contains(err.Error(), "NOGOODSLAVE") || ctx.Err() != nil {
			t.Fatalf("SENTINEL FAILOVER: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// A DownAfter below 1s is refused before anything starts: on a busy
// machine the Sentinels would fail over from healthy masters.
func TestRedisDownAfterTooShort(t *testing.T) {
	c, err := hatest.StartRedis(context.Background(), hatest.RedisOptions{Replicas: 1, Sentinels: 3, DownAfter: 500 * time.Millisecond})
	if err == nil {
		c.Close()
		t.Fatal("StartRedis with DownAfter 500ms succeeded")
	}
	if !strings.Contains(err.Error(), "DownAfter 500ms is below 1s") {
		t.Fatalf("error %q does not name DownAfter", err)
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
