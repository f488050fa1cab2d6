package hatest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisShardsOptions configures the Redis Cluster started by
// [StartRedisShards] or [NewRedisShards].
type RedisShardsOptions struct {
	// Masters is the number of masters, each serving an equal share of
	// the 16384 hash slots. Defaults to 3, the fewest Redis Cluster
	// accepts.
	Masters int

	// ReplicasPerMaster is the number of replicas of each master.
	// Defaults to 1; negative means none (no failover possible).
	ReplicasPerMaster int

	// NodeTimeout is cluster-node-timeout: how long a master must be
	// unreachable before the others mark it failed and its replica takes
	// over. Defaults to 1s (Redis's own default is 15s).
	NodeTimeout time.Duration

	// Settings are extra redis.conf directives for every node.
	Settings map[string]string

	// StartTimeout bounds the start of the cluster and of each later
	// Start of a node. Defaults to 60s.
	StartTimeout time.Duration
}

// RedisShards is a Redis Cluster on 127.0.0.1: masters that split the hash
// slots between them, each with its replicas, every node a real
// redis-server in cluster mode. Kill a master (see [RedisShards.KillMaster])
// and its replica is promoted by the cluster itself, as in production.
// (RedisCluster is the Sentinel-managed master and replicas.)
type RedisShards struct {
	// Nodes are every node; the first Masters of them start as masters.
	// Roles change with failovers: ask [RedisShards.Masters].
	Nodes []*RedisNode

	dir       string
	timeout   time.Duration
	closeOnce sync.Once
}

// StartRedisShards starts the nodes, joins them into one cluster with
// redis-cli --cluster create, and waits until every node reports the
// cluster ok and every master has its replicas in sync. The caller must
// Close it; tests use [NewRedisShards].
func StartRedisShards(ctx context.Context, opts RedisShardsOptions) (_ *RedisShards, err error) {
	defaultTo(&opts.Masters, 3)
	switch {
	case opts.Masters < 3:
		return nil, fmt.Errorf("hatest: RedisShardsOptions.Masters is %d: Redis Cluster needs at least 3", opts.Masters)
	case opts.ReplicasPerMaster == 0:
		opts.ReplicasPerMaster = 1
	case opts.ReplicasPerMaster < 0:
		opts.ReplicasPerMaster = 0
	}
	if opts.NodeTimeout < 0 {
		return nil, fmt.Errorf("hatest: RedisShardsOptions.NodeTimeout is negative (%s)", opts.NodeTimeout)
	}
	defaultTo(&opts.NodeTimeout, time.Second)
	defaultTo(&opts.StartTimeout, 60*time.Second)
	server, err := binary("redis-server", "redis-server")
	if err != nil {
		return nil, err
	}
	cli, err := binary("redis-cli", "redis-tools")
	if err != nil {
		return nil, err
	}
	dir, err := runDir("rediscluster")
	if err != nil {
		return nil, err
	}
	c := &RedisShards{dir: dir, timeout: opts.StartTimeout}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(ctx, opts.StartTimeout)
	defer cancel()

	total := opts.Masters * (1 + opts.ReplicasPerMaster)
	for i := range total {
		name := "rc" + strconv.Itoa(i)
		nd := filepath.Join(dir, name)
		if err := os.MkdirAll(nd, 0o755); err != nil {
			return nil, fmt.Errorf("hatest: %w", err)
		}
		n := &RedisNode{Name: name, conf: filepath.Join(nd, "redis.conf"), timeout: opts.StartTimeout}
		n.d = &daemon{name: name, path: server, args: []string{n.conf}, dir: nd, logPath: filepath.Join(nd, "redis.log")}
		conf := map[string]string{
			"cluster-enabled":          "yes",
			"cluster-config-file":      "nodes.conf",
			"cluster-node-timeout":     strconv.FormatInt(opts.NodeTimeout.Milliseconds(), 10),
			"save":                     `""`,
			"appendonly":               "no",
			"repl-diskless-sync":       "yes",
			"repl-diskless-sync-delay": "0",
		}
		maps.Copy(conf, opts.Settings)
		c.Nodes = append(c.Nodes, n)
		if err := n.startFresh(ctx, func(port int) string { return redisConf(port, nd, conf) }); err != nil {
			return nil, err
		}
	}
	args := []string{"--cluster", "create"}
	args = append(args, c.Addrs()...)
	args = append(args, "--cluster-replicas", strconv.Itoa(opts.ReplicasPerMaster), "--cluster-yes")
	if out, err := exec.CommandContext(ctx, cli, args...).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("hatest: redis-cli --cluster create: %w\n%s", err, out)
	}
	if err := c.waitHealthy(ctx, opts.Masters, opts.ReplicasPerMaster); err != nil {
		return nil, err
	}
	return c, nil
}

// waitHealthy waits until every running node says cluster_state:ok and
// knows the others, and masters masters each have replicas replicas
// online.
func (c *RedisShards) waitHealthy(ctx context.Context, masters, replicas int) error {
	var last error
	for {
		last = c.healthy(ctx, masters, replicas)
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("hatest: Redis Cluster not healthy: %v: %w\n%s", last, ctx.Err(), c.logs())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (c *RedisShards) healthy(ctx context.Context, masters, replicas int) error {
	running := 0
	for _, n := range c.Nodes {
		if !n.Running() {
			continue
		}
		running++
		info, err := nodeCmd(ctx, n, "CLUSTER", "INFO")
		if err != nil {
			return err
		}
		if !strings.Contains(info, "cluster_state:ok") {
			return fmt.Errorf("%s: cluster state not ok", n.Name)
		}
	}
	ms, err := c.masterInfo(ctx)
	if err != nil {
		return err
	}
	if len(ms) != masters {
		return fmt.Errorf("%d masters with slots, want %d", len(ms), masters)
	}
	for _, m := range ms {
		cl := m.node.Client()
		info, err := cl.Info(ctx, "replication").Result()
		cl.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", m.node.Name, err)
		}
		if online := strings.Count(info, "state=online"); online < replicas {
			return fmt.Errorf("master %s has %d of %d replicas online", m.node.Name, online, replicas)
		}
	}
	return nil
}

// nodeCmd runs one command on a node and returns its reply as a string.
func nodeCmd(ctx context.Context, n *RedisNode, args ...any) (string, error) {
	cl := n.Client()
	defer cl.Close()
	v, err := cl.Do(ctx, args...).Text()
	if err != nil {
		return "", fmt.Errorf("hatest: %s: %v: %w", n.Name, args, err)
	}
	return v, nil
}

// shardMaster is a master as CLUSTER NODES lists it.
type shardMaster struct {
	node  *RedisNode
	slots [][2]int
}

// masterInfo asks a running node which healthy masters serve slots.
func (c *RedisShards) masterInfo(ctx context.Context) ([]shardMaster, error) {
	var errs []error
	for _, asked := range c.Nodes {
		if !asked.Running() {
			continue
		}
		out, err := nodeCmd(ctx, asked, "CLUSTER", "NODES")
		if err != nil {
			errs = append(errs, err)
			continue
		}
		var ms []shardMaster
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			f := strings.Fields(line)
			if len(f) < 8 || !strings.Contains(f[2], "master") || strings.Contains(f[2], "fail") {
				continue
			}
			addr, _, _ := strings.Cut(f[1], "@")
			i := slices.IndexFunc(c.Nodes, func(n *RedisNode) bool { return n.Addr() == addr })
			if i < 0 {
				continue
			}
			m := shardMaster{node: c.Nodes[i]}
			for _, s := range f[8:] {
				if strings.HasPrefix(s, "[") {
					continue // a slot being migrated
				}
				lo, hi, ok := strings.Cut(s, "-")
				if !ok {
					hi = lo
				}
				a, err1 := strconv.Atoi(lo)
				b, err2 := strconv.Atoi(hi)
				if err1 == nil && err2 == nil {
					m.slots = append(m.slots, [2]int{a, b})
				}
			}
			if len(m.slots) > 0 {
				ms = append(ms, m)
			}
		}
		return ms, nil
	}
	return nil, fmt.Errorf("hatest: no Redis Cluster node answered: %w", errors.Join(errs...))
}

// Addrs returns every node's address, for go-redis's ClusterOptions.Addrs.
func (c *RedisShards) Addrs() []string {
	out := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		out[i] = n.Addr()
	}
	return out
}

// Client returns a go-redis cluster client on the nodes. The caller closes
// it. It reloads the slot map every 500ms: go-redis reloads it at once
// on a MOVED answer, but a dead master refuses connections instead, and
// with go-redis's default (60s) the client keeps dialling it for up to a
// minute after its replica took over.
func (c *RedisShards) Client() *redis.ClusterClient {
	return redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs(), DialTimeout: 2 * time.Second,
		ReadTimeout: 2 * time.Second, WriteTimeout: 2 * time.Second, ClusterStateReloadInterval: 500 * time.Millisecond})
}

// Masters returns the masters that serve slots now, as a running node sees
// them.
func (c *RedisShards) Masters(ctx context.Context) ([]*RedisNode, error) {
	ms, err := c.masterInfo(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]*RedisNode, len(ms))
	for i, m := range ms {
		out[i] = m.node
	}
	return out, nil
}

// MasterFor returns the master that serves key's hash slot now.
func (c *RedisShards) MasterFor(ctx context.Context, key string) (*RedisNode, error) {
	ms, err := c.masterInfo(ctx)
	if err != nil {
		return nil, err
	}
	var slot int
	for _, n := range c.Nodes {
		if !n.Running() {
			continue
		}
		cl := n.Client()
		slot64, err := cl.ClusterKeySlot(ctx, key).Result()
		cl.Close()
		if err != nil {
			return nil, fmt.Errorf("hatest: CLUSTER KEYSLOT: %w", err)
		}
		slot = int(slot64)
		break
	}
	for _, m := range ms {
		for _, r := range m.slots {
			if slot >= r[0] && slot <= r[1] {
				return m.node, nil
			}
		}
	}
	return nil, fmt.Errorf("hatest: no healthy master serves slot %d (key %q)", slot, key)
}

// KillMaster SIGKILLs the master that serves key's hash slot and returns
// it. Its replica takes over once NodeTimeout has passed and it wins the
// election; wait for that with [RedisShards.WaitPromotion].
func (c *RedisShards) KillMaster(ctx context.Context, key string) (*RedisNode, error) {
	m, err := c.MasterFor(ctx, key)
	if err != nil {
		return nil, err
	}
	return m, m.Kill()
}

// WaitPromotion waits until old no longer serves slots, healthy masters
// serve all 16384 of them, and every running node says cluster_state:ok;
// it returns the masters then.
func (c *RedisShards) WaitPromotion(ctx context.Context, old *RedisNode) ([]*RedisNode, error) {
	var last error
	for {
		info, err := c.masterInfo(ctx)
		var ms []*RedisNode
		covered := 0
		for _, m := range info {
			ms = append(ms, m.node)
			for _, r := range m.slots {
				covered += r[1] - r[0] + 1
			}
		}
		switch {
		case err != nil:
			last = err
		case slices.Contains(ms, old):
			last = fmt.Errorf("%s still serves slots", old.Name)
		case covered != 16384:
			last = fmt.Errorf("healthy masters serve %d of 16384 slots", covered)
		default:
			last = nil
			for _, n := range c.Nodes {
				if !n.Running() {
					continue
				}
				info, err := nodeCmd(ctx, n, "CLUSTER", "INFO")
				if err != nil || !strings.Contains(info, "cluster_state:ok") {
					last = fmt.Errorf("%s: cluster state not ok (%v)", n.Name, err)
					break
				}
			}
			if last == nil && len(ms) > 0 {
				return ms, nil
			}
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("hatest: no Redis Cluster promotion: %v: %w", last, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (c *RedisShards) logs() string {
	var s string
	for _, n := range c.Nodes {
		s += "--- " + n.Name + " (" + n.LogPath() + "):\n" + n.d.logTail(10) + "\n"
	}
	return s
}

// Close stops every node and removes their directories. It is safe to
// call more than once.
func (c *RedisShards) Close() error {
	var errs []error
	c.closeOnce.Do(func() {
		for _, n := range c.Nodes {
			if err := n.d.kill(); err != nil {
				errs = append(errs, err)
			}
		}
		if err := os.RemoveAll(c.dir); err != nil {
			errs = append(errs, err)
		}
	})
	return errors.Join(errs...)
}

// NewRedisShards starts a Redis Cluster for the test (see
// [StartRedisShards]) and stops it when the test ends, pass or fail.
func NewRedisShards(t testing.TB, opts RedisShardsOptions) *RedisShards {
	t.Helper()
	skipUnlessServices(t)
	c, err := StartRedisShards(context.Background(), opts)
	return register(t, c, err, func() string { return c.logs() })
}
