package session_test

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"hakit.dev/hatest"
	"hakit.dev/session"
)

// TestRedisClusterSessions runs sessions on a Redis Cluster (3 masters, 3
// replicas): concurrent changes of distinct keys all stay; a login's WAIT
// counts the replicas of its own shard; and with a master killed under a
// stream of logins, every login that was answered 200 (confirmed by its
// shard's replica) is still logged in after the promotion.
func TestRedisClusterSessions(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	shards := hatest.NewRedisShards(t, hatest.RedisShardsOptions{})
	rdb := shards.Client()
	defer rdb.Close()
	store := session.NewRedisStore(rdb, session.RedisOptions{RequireConfirm: true, WaitTimeout: 2 * time.Second, Logger: quiet()})
	m := newManager(t, store, nil)

	// 50 concurrent distinct-key writes to one session keep all 50.
	if got := concurrentPuts(t, newInstance(t, m, m.LoadAndSave), 50); got != 50 {
		t.Fatalf("%d of 50 concurrent changes kept on the cluster", got)
	}

	// WAIT goes to the session's own master, on the connection of the
	// change: with every replica paused, a login cannot be confirmed. (A
	// WAIT sent to some other connection, with no write of its own to
	// wait for, would return at once.)
	t.Run("WAIT per shard", func(t *testing.T) {
		short := session.NewRedisStore(rdb, session.RedisOptions{RequireConfirm: true, WaitTimeout: 300 * time.Millisecond, Logger: quiet()})
		app := helperApp(t, newManager(t, short, nil), nil)
		masters, err := shards.Masters(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var paused []*hatest.RedisNode
		defer func() {
			for _, n := range paused {
				if err := n.Resume(); err != nil {
					t.Error(err)
				}
			}
		}()
		for _, n := range shards.Nodes {
			if !slices.Contains(masters, n) {
				if err := n.Pause(); err != nil {
					t.Fatal(err)
				}
				paused = append(paused, n)
			}
		}
		for i := range 3 {
			u := newUser(t)
			u.must("POST", app, "/put?k=cart&v=teapot")
			code, body, _ := u.do("POST", app, fmt.Sprintf("/login?user=u%d", i))
			if code != http.StatusServiceUnavailable || !strings.Contains(body, "replicas did not confirm") {
				t.Fatalf("login %d with every replica paused: %d %q; want 503, not confirmed", i, code, body)
			}
		}
	})

	// A master killed under logins: every confirmed login survives.
	a, b := helperApp(t, m, nil), helperApp(t, m, nil)
	type login struct {
		u    *user
		name string
	}
	var (
		mu       sync.Mutex
		acked    []login
		refused  atomic.Int64
		stop     atomic.Bool
		wg       sync.WaitGroup
		attempts atomic.Int64
	)
	for w := range 8 {
		wg.Go(func() {
			for i := 0; !stop.Load() && ctx.Err() == nil; i++ {
				u := newUser(t)
				name := fmt.Sprintf("w%d-%d", w, i)
				attempts.Add(1)
				code, body := request(u, a, "POST", "/login?user="+name)
				if code == http.StatusOK && strings.HasPrefix(body, "token=") {
					mu.Lock()
					acked = append(acked, login{u, name})
					mu.Unlock()
				} else {
					refused.Add(1)
				}
			}
		})
	}
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(acked)
	}
	hatest.WaitFor(t, 30*time.Second, "logins before the kill", func() bool { return count() >= 40 })
	killed, err := shards.KillMaster(ctx, "hakit:session:any")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := shards.WaitPromotion(ctx, killed); err != nil {
		t.Fatal(err)
	}
	promoted := time.Since(start)
	before := count()
	hatest.WaitFor(t, 30*time.Second, "logins after the promotion", func() bool { return count() >= before+40 })
	stop.Store(true)
	wg.Wait()

	// readBack reads a user's session, asking again while the store
	// answers 503: a shard can refuse for a moment after a promotion
	// (the slot map is reloaded every second), which says nothing about
	// what it keeps.
	readBack := func(u *user) string {
		var code int
		var body string
		hatest.WaitFor(t, 20*time.Second, "the session store to answer", func() bool {
			code, body, _ = u.do("GET", b, "/")
			return code != http.StatusServiceUnavailable
		})
		if code != http.StatusOK {
			t.Fatalf("GET /: %d %q", code, body)
		}
		return body
	}
	lost := 0
	for _, l := range acked {
		if got := readBack(l.u); got != "user="+l.name+" flashes=" {
			lost++
			if lost <= 3 {
				t.Errorf("login %s acknowledged, then read back as %q", l.name, got)
			}
		}
	}
	t.Logf("%d logins tried, %d confirmed, %d refused (503 while the shard had no master); promotion %v after the kill; %d confirmed logins lost",
		attempts.Load(), len(acked), refused.Load(), promoted.Round(10*time.Millisecond), lost)
	if lost != 0 {
		t.Fatalf("%d of %d confirmed logins lost in the failover", lost, len(acked))
	}
}
