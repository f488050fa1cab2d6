package session_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"hakit.dev/hatest"
	"hakit.dev/session"
)

// TestSentinelFailoverHoldsRequests kills the Redis master under a stream
// of requests (reads, changes, logins) from concurrent users, twice: each
// request is held while Sentinel promotes the replica and go-redis
// follows it, and none answers 503. Every login confirmed by the replica
// before a kill is still there after it.
func TestSentinelFailoverHoldsRequests(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	rd := hatest.NewRedis(t, hatest.RedisOptions{Replicas: 1, Sentinels: 3})
	// The client as hakit.App makes it: go-redis's defaults.
	rdb := redis.NewFailoverClient(&redis.FailoverOptions{MasterName: rd.MasterName, SentinelAddrs: rd.SentinelAddrs()})
	defer rdb.Close()
	logs := &logBuffer{}
	// FailoverWait: a promotion takes 2–3 s here; 15 s holds on a loaded
	// machine too.
	lenient := session.NewRedisStore(rdb, session.RedisOptions{FailoverWait: 15 * time.Second, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	// Logins made before a kill must be confirmed by the replica: with
	// RequireConfirm a 200 says they were.
	strict := session.NewRedisStore(rdb, session.RedisOptions{FailoverWait: 15 * time.Second, RequireConfirm: true, WaitTimeout: 5 * time.Second, Logger: quiet()})
	// During the storm the new master has no replica yet (the old one is
	// dead): its logins stand unconfirmed, with a warning.
	sm := newManager(t, lenient, nil)
	in := newInstance(t, sm, sm.LoadAndSave)
	strictM := newManager(t, strict, nil)
	confirmed := newInstance(t, strictM, strictM.LoadAndSave)

	type login struct {
		u    *user
		name string
	}
	var logins []login
	loginConfirmed := func(n int, round string) {
		for i := range n {
			u := newUser(t)
			name := fmt.Sprintf("%s-%d", round, i)
			if body := u.must("POST", confirmed, "/login?user="+name); body != "ok" {
				t.Fatalf("login %s: %q", name, body)
			}
			logins = append(logins, login{u, name})
		}
	}

	for round := 1; round <= 2; round++ {
		loginConfirmed(10, fmt.Sprint("r", round))
		retriedBefore := lenient.Retried()

		st := startStorm(t, ctx, in, fmt.Sprint("storm", round))
		st.waitRequests(100)
		old, err := rd.KillMaster(ctx)
		if err != nil {
			t.Fatal(err)
		}
		killed := time.Now()
		newMaster, err := rd.WaitFailover(ctx, old)
		if err != nil {
			t.Fatal(err)
		}
		promoted := time.Since(killed)
		st.waitRequests(st.total.Load() + 100)
		st.stop()
		t.Logf("failover %d: %s promoted %v after the kill; %d requests, slowest %v; %d operations retried",
			round, newMaster.Name, promoted.Round(10*time.Millisecond), st.total.Load(), st.slowest.Round(10*time.Millisecond), lenient.Retried()-retriedBefore)
		if len(st.failed) > 0 {
			t.Fatalf("failover %d: %d of %d requests failed, first: %s", round, len(st.failed), st.total.Load(), strings.Join(st.failed[:min(5, len(st.failed))], "; "))
		}
		if lenient.Retried() == retriedBefore {
			t.Fatalf("failover %d: no operation was retried: the kill went unnoticed", round)
		}

		// Every confirmed login, of this round and the one before, is
		// still there.
		for _, l := range logins {
			if got := l.u.must("GET", in, "/get?k=user"); got != l.name {
				t.Fatalf("failover %d: the confirmed login %s reads back as %q", round, l.name, got)
			}
		}

		if round == 1 {
			// The old master comes back; Sentinel makes it a replica of
			// the new one, which can then fail over to it.
			if err := old.Start(ctx); err != nil {
				t.Fatal(err)
			}
			waitReplica(t, ctx, rd, old)
		}
	}
	if !strings.Contains(logs.String(), "no Redis master reachable; retrying") {
		t.Errorf("no warning of the retries:\n%s", logs)
	}
}

// TestClusterPromotionHoldsRequests kills a Redis Cluster master under
// the same stream of requests: while its replica takes over the shard's
// slots, the requests of the sessions on that shard are held (connection
// refused, CLUSTERDOWN, a stale slot map), not refused.
func TestClusterPromotionHoldsRequests(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	shards := hatest.NewRedisShards(t, hatest.RedisShardsOptions{})
	// The client as hakit.App makes it for a cluster.
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: shards.Addrs(), ClusterStateReloadInterval: time.Second})
	defer rdb.Close()
	store := session.NewRedisStore(rdb, session.RedisOptions{FailoverWait: 15 * time.Second, Logger: quiet()})
	m := newManager(t, store, nil)
	in := newInstance(t, m, m.LoadAndSave)
	st := startStorm(t, ctx, in, "cluster")
	st.waitRequests(100)
	killed, err := shards.KillMaster(ctx, "hakit:session:any")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := shards.WaitPromotion(ctx, killed); err != nil {
		t.Fatal(err)
	}
	promoted := time.Since(start)
	st.waitRequests(st.total.Load() + 100)
	st.stop()
	t.Logf("%s killed, its replica promoted %v after; %d requests, slowest %v; %d operations retried",
		killed.Name, promoted.Round(10*time.Millisecond), st.total.Load(), st.slowest.Round(10*time.Millisecond), store.Retried())
	if len(st.failed) > 0 {
		t.Fatalf("%d of %d requests failed, first: %s", len(st.failed), st.total.Load(), strings.Join(st.failed[:min(5, len(st.failed))], "; "))
	}
	if store.Retried() == 0 {
		t.Fatal("no operation was retried: the kill went unnoticed")
	}
}

// storm is concurrent users sending requests to an instance: 8 users
// each log in, then change a key and read their login in turn; 2 more log
// in again and again (durable changes). It records what did not answer
// 200 with the expected body.
type storm struct {
	t       *testing.T
	stopped atomic.Bool
	wg      sync.WaitGroup
	total   atomic.Int64
	mu      sync.Mutex
	failed  []string
	slowest time.Duration
}

func startStorm(t *testing.T, ctx context.Context, in *instance, prefix string) *storm {
	st := &storm{t: t}
	for w := range 10 {
		st.wg.Go(func() {
			u := newUser(t)
			name := fmt.Sprintf("%s-w%d", prefix, w)
			for i := 0; !st.stopped.Load() && ctx.Err() == nil; i++ {
				start := time.Now()
				var path, method, want string
				switch {
				case w >= 8:
					u = newUser(t)
					method, path, want = "POST", fmt.Sprintf("/login?user=%s-%d", name, i), "ok"
				case i == 0:
					method, path, want = "POST", "/login?user="+name, "ok"
				case i%2 == 1:
					method, path, want = "POST", fmt.Sprintf("/put?k=n&v=%d", i), "ok"
				default:
					method, path, want = "GET", "/get?k=user", name
				}
				code, body := request(u, in, method, path)
				if code == http.StatusOK && body != want {
					code, body = -1, "want "+want+", got "+body
				}
				st.record(method+" "+path, code, body, time.Since(start))
			}
		})
	}
	t.Cleanup(st.stop)
	return st
}

func (st *storm) record(what string, code int, body string, took time.Duration) {
	st.total.Add(1)
	st.mu.Lock()
	defer st.mu.Unlock()
	st.slowest = max(st.slowest, took)
	if code != http.StatusOK {
		st.failed = append(st.failed, fmt.Sprintf("%s: %d %q", what, code, body))
	}
}

// waitRequests waits until n requests have been answered.
func (st *storm) waitRequests(n int64) {
	st.t.Helper()
	hatest.WaitFor(st.t, 60*time.Second, fmt.Sprintf("%d requests answered", n), func() bool { return st.total.Load() >= n })
}

// stop stops the users and waits for their last requests.
func (st *storm) stop() {
	st.stopped.Store(true)
	st.wg.Wait()
}

// waitReplica waits until n replicates the master in sync and every
// Sentinel counts it as a healthy replica, so it can be promoted.
func waitReplica(t *testing.T, ctx context.Context, rd *hatest.RedisCluster, n *hatest.RedisNode) {
	t.Helper()
	sentinels := make([]*redis.SentinelClient, len(rd.Sentinels))
	for i, s := range rd.Sentinels {
		sentinels[i] = redis.NewSentinelClient(&redis.Options{Addr: s.Addr()})
		defer sentinels[i].Close()
	}
	hatest.WaitFor(t, time.Minute, n.Name+" a replica in sync, known to every Sentinel", func() bool {
		info, err := n.Client().Info(ctx, "replication").Result()
		if err != nil || !strings.Contains(info, "role:slave") || !strings.Contains(info, "master_link_status:up") ||
			strings.Contains(info, "master_sync_in_progress:1") {
			return false
		}
		for _, s := range sentinels {
			replicas, err := s.Replicas(ctx, rd.MasterName).Result()
			if err != nil {
				return false
			}
			ok := false
			for _, r := range replicas {
				if r["name"] == n.Addr() && r["flags"] == "slave" && r["master-link-status"] == "ok" {
					ok = true
				}
			}
			if !ok {
				return false
			}
		}
		return true
	})
}

// request is user.do for other goroutines than the test's: a transport
// error is a status 0.
func request(u *user, in *instance, method, path string) (int, string) {
	req, err := http.NewRequest(method, in.srv.URL+path, nil)
	if err != nil {
		return 0, err.Error()
	}
	resp, err := u.client.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body) // what arrived, even if the body broke off
	return resp.StatusCode, string(body)
}

// TestRedisDownAfterFailoverWait: with no replica to promote, a Redis
// that stays down still answers 503, once FailoverWait has passed; with
// FailoverWait negative at once. A request's context ends the wait
// sooner, and an error that is no outage is not retried.
func TestRedisDownAfterFailoverWait(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rd := hatest.NewRedis(t, hatest.RedisOptions{})
	rdb := redis.NewClient(&redis.Options{Addr: rd.Addr()})
	defer rdb.Close()
	const wait = 1500 * time.Millisecond
	store := session.NewRedisStore(rdb, session.RedisOptions{FailoverWait: wait, Logger: quiet()})
	noWait := session.NewRedisStore(rdb, session.RedisOptions{FailoverWait: -1, Logger: quiet()})
	m, mNoWait := newManager(t, store, nil), newManager(t, noWait, nil)
	in, inNoWait := newInstance(t, m, m.LoadAndSave), newInstance(t, mNoWait, mNoWait.LoadAndSave)

	// A wrong type is the caller's problem, not an outage: at once.
	if err := rdb.Set(ctx, "hakit:session:not-a-hash", "x", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := store.Load(ctx, "not-a-hash"); err == nil || !strings.Contains(err.Error(), "WRONGTYPE") {
		t.Fatalf("Load of a string: %v; want WRONGTYPE", err)
	}
	if n := store.Retried(); n != 0 {
		t.Fatalf("a WRONGTYPE error was retried (%d)", n)
	}

	u := newUser(t)
	u.must("POST", in, "/put?k=user&v=dan")
	if err := rd.Nodes[0].Kill(); err != nil {
		t.Fatal(err)
	}

	before := in.runs.Load()
	start := time.Now()
	code, body, hdr := u.do("GET", in, "/get?k=user")
	took := time.Since(start)
	if code != http.StatusServiceUnavailable || hdr.Get("Retry-After") != "1" {
		t.Fatalf("Redis down: %d %q (Retry-After %q)", code, body, hdr.Get("Retry-After"))
	}
	// It waited FailoverWait, not much more.
	if took < wait || took > wait+5*time.Second {
		t.Fatalf("Redis down: 503 after %v; want after FailoverWait (%v), within 5s more", took, wait)
	}
	if store.Retried() == 0 {
		t.Fatal("Redis down: nothing retried")
	}
	t.Logf("Redis down: 503 after %v (FailoverWait %v)", took.Round(10*time.Millisecond), wait)
	if in.runs.Load() != before {
		t.Fatal("a handler ran without its session")
	}

	// The old behaviour: 503 without retrying.
	start = time.Now()
	code, _, _ = u.do("GET", inNoWait, "/get?k=user")
	t.Logf("Redis down, FailoverWait -1: %d after %v", code, time.Since(start).Round(10*time.Millisecond))
	if code != http.StatusServiceUnavailable || noWait.Retried() != 0 {
		t.Fatalf("FailoverWait -1, Redis down: %d, %d retried; want 503, none", code, noWait.Retried())
	}

	// The caller's context ends the wait. (A client that dials once and
	// does not retry, so the store's first attempt fails at once.)
	once := redis.NewClient(&redis.Options{Addr: rd.Addr(), MaxRetries: -1, DialerRetries: 1})
	defer once.Close()
	long := session.NewRedisStore(once, session.RedisOptions{FailoverWait: time.Minute, Logger: quiet()})
	cctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	start = time.Now()
	_, _, err := long.Load(cctx, "some-token")
	if took := time.Since(start); !errors.Is(err, context.DeadlineExceeded) || took > 5*time.Second {
		t.Fatalf("Load with a 300ms context on a dead Redis: %v after %v; want the context's deadline, soon", err, took)
	}
	if long.Retried() != 1 {
		t.Errorf("Load with a 300ms context on a dead Redis: %d operations retried; want 1", long.Retried())
	}
	for _, want := range []string{"session: redis: ", "connection refused", "retried for"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Load's error %q lacks %q", err, want)
		}
	}
}

// TestRetryOnReadOnly: a change sent to a replica (a demoted master, as
// go-redis can reach for a moment) is retried, and succeeds once that
// node is master.
func TestRetryOnReadOnly(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rd := hatest.NewRedis(t, hatest.RedisOptions{Replicas: 1})
	replica := redis.NewClient(&redis.Options{Addr: rd.Nodes[1].Addr()})
	defer replica.Close()
	store := session.NewRedisStore(replica, session.RedisOptions{FailoverWait: time.Minute, WaitReplicas: -1, Logger: quiet()})
	c := session.Change{Replace: true, Set: map[string][]byte{"user": []byte("ann")},
		Expiry: time.Now().Add(time.Hour), Deadline: time.Now().Add(2 * time.Hour)}
	done := make(chan error, 1)
	go func() {
		_, err := store.Apply(ctx, "ro-token", c)
		done <- err
	}()
	hatest.WaitFor(t, 30*time.Second, "the change to be retried", func() bool { return store.Retried() > 0 })
	select {
	case err := <-done:
		t.Fatalf("Apply on a replica returned before its promotion: %v", err)
	default:
	}
	if err := replica.ReplicaOf(ctx, "NO", "ONE").Err(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Apply after the promotion: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Apply did not return within 30s of the promotion")
	}
	r, ok, err := store.Load(ctx, "ro-token")
	if err != nil || !ok || string(r.Values["user"]) != "ann" {
		t.Fatalf("after the retried change: %v %v %q", ok, err, r.Values["user"])
	}
}
