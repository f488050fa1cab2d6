package jobs_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"hakit.dev/hatest"
	"hakit.dev/jobs"
)

// A task a worker took and lost — the worker lost Redis, or a Redis
// failover lost the reply that handed it the task — stays active until
// asynq's recoverer finds its lease expired (30s or more ago; it looks
// when a worker starts, then once a minute). It then runs again within
// about two seconds, not after asynq's default backoff (15s to 44s for a
// first retry), which would come on top of the minute or two the lease
// has cost already.
func TestLeaseExpiredTaskRunsAgainSoon(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rd := hatest.NewRedis(t, hatest.RedisOptions{})
	rdb := rd.Nodes[0].Client()
	t.Cleanup(func() { rdb.Close() })
	client := jobs.NewClient(rdb, jobs.ClientConfig{Logger: quiet(), NoReplicas: true})
	t.Cleanup(func() { client.Close() })

	// Worker a takes the task, then loses Redis: it can neither extend
	// the task's lease nor put the task back.
	var cut cutoff
	lost := redis.NewClient(&redis.Options{Addr: rd.Addr(), Dialer: cut.dial, MaxRetries: -1})
	a := jobs.NewWorker(lost, jobs.WorkerConfig{Logger: quiet(), ShutdownTimeout: 100 * time.Millisecond})
	taken := make(chan string, 1)
	jobs.Handle(a, "note", func(ctx context.Context, n note) error {
		id, _ := asynq.GetTaskID(ctx)
		taken <- id
		<-ctx.Done()
		return ctx.Err()
	})
	if err := a.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		// asynq's goroutines must be done with the client before it is
		// closed (its subscriber does not survive a closed client).
		if err := a.Stop(sctx); err != nil {
			t.Errorf("stopping worker a: %v", err)
			return
		}
		lost.Close()
	})
	id, err := client.Enqueue(ctx, "note", note{ID: 1}, jobs.Options{})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-taken:
		if got != id {
			t.Fatalf("worker a took task %s; want %s", got, id)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("worker a did not take the task")
	}
	cut.cut()
	// The lease would run out 30s from now, and asynq's recoverer take
	// the task 30s after that: rather than wait a minute, the test dates
	// the lease back (asynq's lease set holds each active task's lease
	// expiry, in Unix seconds).
	lease := "asynq:{default}:lease"
	if n, err := rdb.ZAddXX(ctx, lease, redis.Z{Score: float64(time.Now().Add(-time.Minute).Unix()), Member: id}).Result(); err != nil || n != 0 {
		t.Fatalf("dating the lease back: %d, %v", n, err)
	}
	if score, err := rdb.ZScore(ctx, lease, id).Result(); err != nil || time.Unix(int64(score), 0).After(time.Now().Add(-50*time.Second)) {
		t.Fatalf("the task's lease expires at %v (%v); want a minute ago", time.Unix(int64(score), 0), err)
	}

	// Worker b's recoverer looks when b starts.
	b := jobs.NewWorker(rdb, jobs.WorkerConfig{Logger: quiet()})
	ran := make(chan time.Time, 1)
	jobs.Handle(b, "note", func(ctx context.Context, n note) error {
		select {
		case ran <- time.Now():
		default:
		}
		return nil
	})
	start := time.Now()
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Stop(ctx) })
	// 1-2s of retry delay, up to 1s until the retry is due on its queue,
	// and slack for a busy machine; asynq's default backoff is 15s or more.
	const bound = 10 * time.Second
	select {
	case at := <-ran:
		d := at.Sub(start)
		if d > bound {
			t.Fatalf("the task whose lease expired ran again %.1fs after the recoverer's look; want within %s", d.Seconds(), bound)
		}
		t.Logf("the task whose lease expired ran again %.1fs after the recoverer's look", d.Seconds())
	case <-time.After(90 * time.Second):
		info, err := asynq.NewInspectorFromRedisClient(rdb).GetTaskInfo("default", id)
		t.Fatalf("the task whose lease expired did not run again within 90s: %+v, %v", info, err)
	}
	var info *asynq.TaskInfo
	hatest.WaitFor(t, 10*time.Second, "the task to be recorded as completed", func() bool {
		info, err = asynq.NewInspectorFromRedisClient(rdb).GetTaskInfo("default", id)
		return err == nil && info.State == asynq.TaskStateCompleted
	})
	if !strings.Contains(info.LastErr, asynq.ErrLeaseExpired.Error()) || info.Retried != 1 {
		t.Errorf("the task's record after the run: retried %d, last error %q; want 1 and %q", info.Retried, info.LastErr, asynq.ErrLeaseExpired)
	}
}

// cutoff dials Redis until cut, which closes the connections it made and
// fails those dialled after.
type cutoff struct {
	mu    sync.Mutex
	done  bool
	conns []net.Conn
}

func (c *cutoff) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done {
		return nil, errors.New("cut off from Redis")
	}
	conn, err := (&net.Dialer{}).DialContext(ctx, network, addr)
	if err == nil {
		c.conns = append(c.conns, conn)
	}
	return conn, err
}

func (c *cutoff) cut() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.done = true
	for _, conn := range c.conns {
		conn.Close()
	}
}
