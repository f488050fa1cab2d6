package jobs

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// ErrNotConfirmed says that tasks are on the Redis master but fewer than
// ClientConfig.WaitReplicas replicas confirmed them (none connected, or
// WAIT timed out). The outbox keeps their rows, marked as held by that
// master, and the scheduler retries the tick, until a replica confirms —
// or the master is lost, and they are enqueued again on the next one.
var ErrNotConfirmed = errors.New("jobs: tasks not yet confirmed by enough Redis replicas")

// errMasterChanged says that the Redis master that took tasks is not the
// one that answered later: it restarted (and may be empty), or another
// server was promoted. What it took cannot be confirmed any more.
var errMasterChanged = errors.New("jobs: the Redis master changed")

// connector is what the confirmation needs of a go-redis client: one
// connection to the master for INFO, SET, WAIT and INFO in a row (a
// *redis.Client, plain or Sentinel).
type connector interface{ Conn() *redis.Conn }

// masterConn is a client of one master: a *redis.Client.
type masterConn interface {
	connector
	redis.Cmdable
}

// confirmKey is the key the confirmation writes, so that its connection's
// replication offset covers every write the master took before.
const confirmKey = "hakit:jobs:confirm"

// masterID names a Redis master and its replication history: run_id
// changes when the server restarts (without persistence it comes back
// empty), master_replid when it is promoted or resynchronises from
// another master. A task written on a master with one ID, and a WAIT
// answered by a master with the same ID, happened on one server whose
// replicas WAIT counted — whatever go-redis did in between (retries on a
// new connection, a switch to a new master).
type masterID struct {
	runID, replID string
	replicas      int     // connected replicas when asked
	offset        int64   // master_repl_offset when asked
	acked         []int64 // the offset each replica acknowledged when asked
	// shards, on Redis Cluster, are the IDs of every master by address;
	// runID and replID then join theirs, so that a change of any master
	// is a change of m.
	shards map[string]masterID
}

// String is how the outbox records the master that holds a row's task.
func (m masterID) String() string { return m.runID + "/" + m.replID }

// same reports whether m and o name one server in one replication
// history.
func (m masterID) same(o masterID) bool { return m.runID == o.runID && m.replID == o.replID }

// parseMasterID reads a masterID from the reply to INFO server
// replication; a server that is not a master is an error.
func parseMasterID(info string) (masterID, error) {
	var m masterID
	var role string
	for _, line := range strings.Split(info, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok {
			continue
		}
		switch k {
		case "run_id":
			m.runID = v
		case "master_replid":
			m.replID = v
		case "role":
			role = v
		case "connected_slaves":
			m.replicas, _ = strconv.Atoi(v)
		case "master_repl_offset":
			m.offset, _ = strconv.ParseInt(v, 10, 64)
		default:
			// slave0:ip=…,port=…,state=online,offset=…,lag=…
			if !strings.HasPrefix(k, "slave") || !strings.Contains(v, "state=online") {
				continue
			}
			for _, kv := range strings.Split(v, ",") {
				if off, ok := strings.CutPrefix(kv, "offset="); ok {
					n, _ := strconv.ParseInt(off, 10, 64)
					m.acked = append(m.acked, n)
				}
			}
		}
	}
	switch {
	case role != "master":
		return masterID{}, fmt.Errorf("jobs: the Redis server answers as %q, not as a master", role)
	case m.runID == "" || m.replID == "":
		return masterID{}, errors.New("jobs: the Redis server's INFO lacks run_id or master_replid")
	}
	return m, nil
}

// master asks the Redis master the client talks to now who it is; on
// Redis Cluster, every master.
func (c *Client) master(ctx context.Context) (masterID, error) {
	if cc, ok := c.rdb.(*redis.ClusterClient); ok {
		return clusterMasters(ctx, cc)
	}
	return masterOn(ctx, c.rdb)
}

// masterOn asks the master behind rdb who it is.
func masterOn(ctx context.Context, rdb redis.Cmdable) (masterID, error) {
	info, err := rdb.Info(ctx, "server", "replication").Result()
	if err != nil {
		return masterID{}, fmt.Errorf("jobs: ask the Redis master for its ID: %w", err)
	}
	return parseMasterID(info)
}

// clusterMasters asks every master of a Redis Cluster who it is. A task's
// queue lives on one of them (asynq's keys carry the queue as hash tag),
// and the confirmation covers them all, so it needs no queue.
func clusterMasters(ctx context.Context, cc *redis.ClusterClient) (masterID, error) {
	var mu sync.Mutex
	shards := map[string]masterID{}
	err := cc.ForEachMaster(ctx, func(ctx context.Context, cl *redis.Client) error {
		m, err := masterOn(ctx, cl)
		if err != nil {
			return fmt.Errorf("%s: %w", cl.Options().Addr, err)
		}
		mu.Lock()
		shards[cl.Options().Addr] = m
		mu.Unlock()
		return nil
	})
	if err != nil {
		return masterID{}, err
	}
	addrs := slices.Sorted(maps.Keys(shards))
	run, repl := make([]string, len(addrs)), make([]string, len(addrs))
	for i, a := range addrs {
		run[i], repl[i] = shards[a].runID, shards[a].replID
	}
	return masterID{runID: strings.Join(run, ","), replID: strings.Join(repl, ","), shards: shards}, nil
}

// confirm returns nil once WaitReplicas replicas of the master m have
// every write m took so far; an error wrapping ErrNotConfirmed if m is
// still the master but fewer replicas confirmed; another error (the
// master changed, Redis failed) if it cannot tell.
//
// On one connection: INFO gives the master's replication offset, which
// covers every write it acknowledged before; SET makes the connection's
// own offset reach it, so that WAIT waits for replicas to acknowledge it;
// INFO again tells which server answered, and how far each replica has
// acknowledged. The answer rests on the offsets INFO reports, not on WAIT
// alone: go-redis may retry a command on a new connection (even a Conn's),
// where WAIT has nothing to wait for, or on a restarted server.
//
// On Redis Cluster it does so on every master of m, each with a key of its
// own slots: the master that took a task is among them.
func (c *Client) confirm(ctx context.Context, m masterID) error {
	if m.shards == nil {
		return c.confirmOn(ctx, c.rdb.(masterConn), confirmKey, m)
	}
	cc := c.rdb.(*redis.ClusterClient)
	for addr, sm := range m.shards {
		cl, key, err := shardKey(ctx, cc, addr)
		if err != nil {
			return err
		}
		if err := c.confirmOn(ctx, cl, key, sm); err != nil {
			return fmt.Errorf("shard %s: %w", addr, err)
		}
	}
	return nil
}

// shardKey returns the client of the cluster's master at addr and a
// confirmation key in its slots; an error wrapping errMasterChanged if no
// master is at addr any more.
func shardKey(ctx context.Context, cc *redis.ClusterClient, addr string) (*redis.Client, string, error) {
	for i := range 4096 {
		key := confirmKey + ":{" + strconv.Itoa(i) + "}"
		cl, err := cc.MasterForKey(ctx, key)
		if err != nil {
			return nil, "", fmt.Errorf("jobs: the master of %s: %w", key, err)
		}
		if cl.Options().Addr == addr {
			return cl, key, nil
		}
	}
	return nil, "", fmt.Errorf("%w (%s serves no slot)", errMasterChanged, addr)
}

// confirmOn is confirm on one master, reached through rdb, with key in its
// slots.
func (c *Client) confirmOn(ctx context.Context, rdb masterConn, key string, m masterID) error {
	if m.replicas < c.waitReplicas {
		// No WAIT can succeed. Still tell whether m holds what it took.
		now, err := masterOn(ctx, rdb)
		if err != nil {
			return err
		}
		if !now.same(m) {
			return fmt.Errorf("%w (from %s to %s)", errMasterChanged, m, now)
		}
		return fmt.Errorf("%w: the master has %d of %d replicas", ErrNotConfirmed, now.replicas, c.waitReplicas)
	}
	conn := rdb.Conn()
	defer conn.Close()
	fail := func(step string, err error) error {
		return fmt.Errorf("jobs: confirm on Redis replicas: %s: %w", step, err)
	}
	var before *redis.StringCmd
	if _, err := conn.Pipelined(ctx, func(p redis.Pipeliner) error {
		before = p.Info(ctx, "server", "replication")
		p.Set(ctx, key, time.Now().UnixNano(), time.Minute)
		return nil
	}); err != nil {
		return fail("INFO, SET", err)
	}
	start, err := parseMasterID(before.Val())
	if err != nil {
		return err
	}
	if !start.same(m) {
		return fmt.Errorf("%w (from %s to %s)", errMasterChanged, m, start)
	}
	if err := conn.Wait(ctx, c.waitReplicas, c.waitTimeout).Err(); err != nil {
		return fail("WAIT", err)
	}
	info, err := conn.Info(ctx, "server", "replication").Result()
	if err != nil {
		return fail("INFO", err)
	}
	end, err := parseMasterID(info)
	if err != nil {
		return err
	}
	if !end.same(m) {
		return fmt.Errorf("%w (from %s to %s)", errMasterChanged, m, end)
	}
	n := 0
	for _, off := range end.acked {
		if off >= start.offset {
			n++
		}
	}
	if n < c.waitReplicas {
		return fmt.Errorf("%w: %d of %d replicas within %s", ErrNotConfirmed, n, c.waitReplicas, c.waitTimeout)
	}
	return nil
}

// enqueueConfirmed enqueues a task under id (a task that has the ID
// already counts) and confirms it as the Client is configured to.
func (c *Client) enqueueConfirmed(ctx context.Context, id, taskType string, sealed []byte, opts Options) error {
	var m masterID
	if !c.noReplicas {
		var err error
		if m, err = c.master(ctx); err != nil {
			return err
		}
	}
	if _, err := c.enqueueWithID(ctx, id, taskType, sealed, opts); err != nil {
		return err
	}
	if c.noReplicas {
		return nil
	}
	return c.confirm(ctx, m)
}
