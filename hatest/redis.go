package hatest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisOptions configures the Redis servers started by [StartRedis] or
// [NewRedis]. The zero value is one standalone master: no replicas, no
// Sentinels. A Sentinel-managed setup is {Replicas: 1, Sentinels: 3}.
type RedisOptions struct {
	// Replicas is the number of replicas of the master. Zero means none.
	Replicas int

	// Sentinels is the number of Sentinels watching the master (quorum:
	// a majority of them). Zero means none; failover needs at least one
	// replica and, to be realistic, three Sentinels.
	Sentinels int

	// MasterName is the name the Sentinels know the master by. Defaults
	// to "hatest".
	MasterName string

	// DownAfter is Sentinel's down-after-milliseconds: how long the
	// master must be unreachable before a failover starts. Defaults to
	// 1s.
	DownAfter time.Duration

	// FailoverTimeout is Sentinel's failover-timeout. Defaults to 4s.
	FailoverTimeout time.Duration

	// Settings are extra redis.conf directives for every data node (not
	// the Sentinels), e.g. {"maxmemory": "64mb"}.
	Settings map[string]string

	// StartTimeout bounds the start of all servers and of each later
	// Start of a node. Defaults to 30s.
	StartTimeout time.Duration
}

// RedisCluster is a Redis master with optional replicas and Sentinels, each
// a real redis-server on 127.0.0.1. Close stops them all and removes their
// data.
type RedisCluster struct {
	// Nodes are the data nodes; Nodes[0] starts as the master. After a
	// failover ask [RedisCluster.Master].
	Nodes []*RedisNode
	// Sentinels are the Sentinel processes, if any.
	Sentinels []*RedisNode
	// MasterName is the name the Sentinels monitor the master under.
	MasterName string

	dir       string
	timeout   time.Duration
	closeOnce sync.Once
}

// RedisNode is one redis-server (data node or Sentinel) of a
// [RedisCluster].
type RedisNode struct {
	Name string // redis0, redis1, …, sentinel0, …
	Port int    // TCP port on 127.0.0.1

	conf    string
	d       *daemon
	timeout time.Duration
}

// StartRedis starts Redis servers and waits until every replica is in sync
// and every Sentinel knows the master, its replicas and the other
// Sentinels (so a failover can start at once). The caller must Close the
// cluster; tests use [NewRedis].
func StartRedis(ctx context.Context, opts RedisOptions) (_ *RedisCluster, err error) {
	if opts.Replicas < 0 || opts.Sentinels < 0 {
		return nil, fmt.Errorf("hatest: RedisOptions: Replicas (%d) and Sentinels (%d) must be >= 0", opts.Replicas, opts.Sentinels)
	}
	defaultTo(&opts.MasterName, "hatest")
	defaultTo(&opts.DownAfter, time.Second)
	defaultTo(&opts.FailoverTimeout, 4*time.Second)
	defaultTo(&opts.StartTimeout, 30*time.Second)
	server, err := binary("redis-server", "redis-server")
	if err != nil {
		return nil, err
	}
	sentinel := server
	if opts.Sentinels > 0 {
		if sentinel, err = binary("redis-sentinel", "redis-sentinel"); err != nil {
			return nil, err
		}
	}
	dir, err := runDir("redis")
	if err != nil {
		return nil, err
	}
	c := &RedisCluster{MasterName: opts.MasterName, dir: dir, timeout: opts.StartTimeout}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(ctx, opts.StartTimeout)
	defer cancel()

	newNode := func(name, bin string) (*RedisNode, error) {
		nd := filepath.Join(dir, name)
		if err := os.MkdirAll(nd, 0o755); err != nil {
			return nil, fmt.Errorf("hatest: %w", err)
		}
		n := &RedisNode{Name: name, conf: filepath.Join(nd, "redis.conf"), timeout: opts.StartTimeout}
		n.d = &daemon{name: name, path: bin, args: []string{n.conf}, dir: nd, logPath: filepath.Join(nd, "redis.log")}
		return n, nil
	}

	for i := 0; i <= opts.Replicas; i++ {
		n, err := newNode("redis"+strconv.Itoa(i), server)
		if err != nil {
			return nil, err
		}
		c.Nodes = append(c.Nodes, n)
		conf := map[string]string{
			"save":                     `""`,
			"appendonly":               "no",
			"repl-diskless-sync":       "yes",
			"repl-diskless-sync-delay": "0",
			"replica-serve-stale-data": "yes",
		}
		if i > 0 {
			conf["replicaof"] = "127.0.0.1 " + strconv.Itoa(c.Nodes[0].Port)
		}
		maps.Copy(conf, opts.Settings)
		if err := n.startFresh(ctx, func(port int) string { return redisConf(port, n.d.dir, conf) }); err != nil {
			return nil, err
		}
	}
	for _, n := range c.Nodes[1:] {
		if err := n.waitInSync(ctx); err != nil {
			return nil, err
		}
	}

	quorum := opts.Sentinels/2 + 1
	for i := range opts.Sentinels {
		n, err := newNode("sentinel"+strconv.Itoa(i), sentinel)
		if err != nil {
			return nil, err
		}
		c.Sentinels = append(c.Sentinels, n)
		master := c.Nodes[0].Port
		err = n.startFresh(ctx, func(port int) string {
			return redisConf(port, n.d.dir, nil) + fmt.Sprintf(
				"sentinel monitor %[1]s 127.0.0.1 %[2]d %[3]d\n"+
					"sentinel down-after-milliseconds %[1]s %[4]d\n"+
					"sentinel failover-timeout %[1]s %[5]d\n"+
					"sentinel parallel-syncs %[1]s 1\n",
				opts.MasterName, master, quorum, opts.DownAfter.Milliseconds(), opts.FailoverTimeout.Milliseconds())
		})
		if err != nil {
			return nil, err
		}
	}
	for _, s := range c.Sentinels {
		if err := s.waitSentinelReady(ctx, opts.MasterName, len(c.Sentinels)-1, opts.Replicas); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// redisConf renders the directives every server has, then extra.
func redisConf(port int, dir string, extra map[string]string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "port %d\nbind 127.0.0.1\nprotected-mode no\ndaemonize no\ndir %s\nlogfile \"\"\n", port, dir)
	for _, k := range slices.Sorted(maps.Keys(extra)) {
		fmt.Fprintf(&b, "%s %s\n", k, extra[k])
	}
	return b.String()
}

// startFresh writes the node's config for a free port and starts it,
// trying other ports if the one it got was taken in the meantime.
func (n *RedisNode) startFresh(ctx context.Context, conf func(port int) string) error {
	return n.d.startOnFreePorts(1, func(ports []int) error {
		n.Port = ports[0]
		if err := os.WriteFile(n.conf, []byte(conf(n.Port)), 0o644); err != nil {
			return fmt.Errorf("hatest: %w", err)
		}
		return nil
	}, func() error { return n.waitPing(ctx) })
}

// Close stops every server and removes their directories. It is safe to
// call more than once.
func (c *RedisCluster) Close() error {
	var errs []error
	c.closeOnce.Do(func() {
		for _, n := range append(slices.Clone(c.Sentinels), c.Nodes...) {
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

// Addr returns the address of the node that started as the master; use it
// for a plain client when there are no Sentinels.
func (c *RedisCluster) Addr() string { return c.Nodes[0].Addr() }

// SentinelAddrs returns the Sentinels' addresses, for go-redis's
// FailoverOptions.SentinelAddrs.
func (c *RedisCluster) SentinelAddrs() []string {
	out := make([]string, len(c.Sentinels))
	for i, s := range c.Sentinels {
		out[i] = s.Addr()
	}
	return out
}

// Master returns the current master: the one the Sentinels name, or
// Nodes[0] without Sentinels.
func (c *RedisCluster) Master(ctx context.Context) (*RedisNode, error) {
	if len(c.Sentinels) == 0 {
		return c.Nodes[0], nil
	}
	var errs []error
	for _, s := range c.Sentinels {
		if !s.d.running() {
			continue
		}
		addr, err := s.masterAddr(ctx, c.MasterName)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, n := range c.Nodes {
			if n.Addr() == addr {
				return n, nil
			}
		}
		return nil, fmt.Errorf("hatest: Sentinel %s names master %s, which is none of the nodes", s.Name, addr)
	}
	return nil, fmt.Errorf("hatest: no Sentinel answered: %w", errors.Join(errs...))
}

// KillMaster SIGKILLs the current master and returns it. With Sentinels, a
// failover starts once DownAfter has passed; wait for it with
// [RedisCluster.WaitFailover].
func (c *RedisCluster) KillMaster(ctx context.Context) (*RedisNode, error) {
	m, err := c.Master(ctx)
	if err != nil {
		return nil, err
	}
	return m, m.Kill()
}

// WaitFailover waits until the Sentinels have promoted a node other than
// old, that node acts as master, and the failover is over: every running
// Sentinel names that node and none still has a failover in progress.
// Only then is it safe to start old again: an old master that comes back
// (empty: no persistence) while the leading Sentinel is still failing
// over can be taken for the master again, and the promoted replica made
// its replica, wiping its data.
func (c *RedisCluster) WaitFailover(ctx context.Context, old *RedisNode) (*RedisNode, error) {
	if len(c.Sentinels) == 0 {
		return nil, errors.New("hatest: WaitFailover needs Sentinels")
	}
	var last error
	for {
		m, err := c.Master(ctx)
		if err == nil && m != old {
			role, rerr := m.Role(ctx)
			switch {
			case rerr != nil || role != "master":
				err = fmt.Errorf("new master %s has role %q (%v)", m.Name, role, rerr)
			default:
				if err = c.failoverOver(ctx, m); err == nil {
					return m, nil
				}
			}
		} else if err == nil {
			err = fmt.Errorf("the Sentinels still name %s", old.Name)
		}
		last = err
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("hatest: no Redis failover: %v: %w", last, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// failoverOver reports nil once every running Sentinel names m as the
// master and none has a failover of it in progress.
func (c *RedisCluster) failoverOver(ctx context.Context, m *RedisNode) error {
	for _, s := range c.Sentinels {
		if !s.d.running() {
			continue
		}
		addr, err := s.masterAddr(ctx, c.MasterName)
		if err != nil {
			return err
		}
		if addr != m.Addr() {
			return fmt.Errorf("hatest: Sentinel %s still names %s", s.Name, addr)
		}
		cl := s.sentinelClient()
		info, err := cl.Master(ctx, c.MasterName).Result()
		cl.Close()
		if err != nil {
			return fmt.Errorf("hatest: %s: %w", s.Name, err)
		}
		if strings.Contains(info["flags"], "failover") {
			return fmt.Errorf("hatest: Sentinel %s: failover still in progress (flags %s)", s.Name, info["flags"])
		}
	}
	return nil
}

// Addr returns the node's host:port.
func (n *RedisNode) Addr() string { return hostPort(n.Port) }

// LogPath returns the path of the node's log.
func (n *RedisNode) LogPath() string { return n.d.logPath }

// Running reports whether the node's process runs (paused counts).
func (n *RedisNode) Running() bool { return n.d.running() }

// Pid returns the node's process id (0 before it started).
func (n *RedisNode) Pid() int { return n.d.pid() }

// Kill SIGKILLs the node. Data nodes keep no data on disk: a killed node
// comes back empty and resynchronises from the master.
func (n *RedisNode) Kill() error { return n.d.kill() }

// Start starts a killed node again on the same port and waits until it
// answers PING. A Sentinel reconfigures a returning old master as a
// replica of the new one.
func (n *RedisNode) Start(ctx context.Context) error {
	if err := n.d.start(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, n.timeout)
	defer cancel()
	return n.waitPing(ctx)
}

// Pause stops the node with SIGSTOP: it hangs with its connections open.
func (n *RedisNode) Pause() error { return n.d.signal(syscall.SIGSTOP) }

// Resume continues a node stopped by Pause.
func (n *RedisNode) Resume() error { return n.d.signal(syscall.SIGCONT) }

// Client returns a go-redis client connected directly to this node. The
// caller closes it.
func (n *RedisNode) Client() *redis.Client {
	return redis.NewClient(&redis.Options{Addr: n.Addr(), MaxRetries: -1, DialTimeout: 2 * time.Second,
		ReadTimeout: 2 * time.Second, WriteTimeout: 2 * time.Second, PoolSize: 2})
}

// Role returns the node's replication role: "master", "slave" (a replica)
// or "sentinel".
func (n *RedisNode) Role(ctx context.Context) (string, error) {
	cl := n.Client()
	defer cl.Close()
	v, err := cl.Do(ctx, "ROLE").Slice()
	if err != nil {
		return "", fmt.Errorf("hatest: ROLE on %s: %w", n.Name, err)
	}
	if len(v) == 0 {
		return "", fmt.Errorf("hatest: ROLE on %s: empty reply", n.Name)
	}
	role, _ := v[0].(string)
	return role, nil
}

func (n *RedisNode) waitPing(ctx context.Context) error {
	return n.d.waitReady(ctx, n.timeout, func(ctx context.Context) error {
		cl := n.Client()
		defer cl.Close()
		return cl.Ping(ctx).Err()
	})
}

// waitInSync waits until a replica's link to its master is up.
func (n *RedisNode) waitInSync(ctx context.Context) error {
	return n.d.waitReady(ctx, n.timeout, func(ctx context.Context) error {
		cl := n.Client()
		defer cl.Close()
		info, err := cl.Info(ctx, "replication").Result()
		if err != nil {
			return err
		}
		if !strings.Contains(info, "master_link_status:up") {
			return errors.New("replication link is not up")
		}
		return nil
	})
}

// sentinelClient returns a go-redis Sentinel client connected to this
// node (a Sentinel). The caller closes it.
func (n *RedisNode) sentinelClient() *redis.SentinelClient {
	return redis.NewSentinelClient(&redis.Options{Addr: n.Addr(), MaxRetries: -1, DialTimeout: 2 * time.Second, ReadTimeout: 2 * time.Second})
}

func (n *RedisNode) masterAddr(ctx context.Context, name string) (string, error) {
	cl := n.sentinelClient()
	defer cl.Close()
	hp, err := cl.GetMasterAddrByName(ctx, name).Result()
	if err != nil {
		return "", fmt.Errorf("hatest: %s: %w", n.Name, err)
	}
	if len(hp) != 2 {
		return "", fmt.Errorf("hatest: %s: master address reply %v", n.Name, hp)
	}
	return hp[0] + ":" + hp[1], nil
}

// waitSentinelReady waits until a Sentinel sees the other Sentinels and the
// master's replicas, without which it cannot fail over.
func (n *RedisNode) waitSentinelReady(ctx context.Context, name string, others, replicas int) error {
	return n.d.waitReady(ctx, n.timeout, func(ctx context.Context) error {
		cl := n.sentinelClient()
		defer cl.Close()
		ss, err := cl.Sentinels(ctx, name).Result()
		if err != nil {
			return err
		}
		rs, err := cl.Replicas(ctx, name).Result()
		if err != nil {
			return err
		}
		if len(ss) < others || len(rs) < replicas {
			return fmt.Errorf("sees %d of %d other Sentinels and %d of %d replicas", len(ss), others, len(rs), replicas)
		}
		return nil
	})
}

// NewRedis starts Redis servers for the test (see [StartRedis]) and stops
// them when the test ends, pass or fail.
func NewRedis(t testing.TB, opts RedisOptions) *RedisCluster {
	t.Helper()
	skipUnlessServices(t)
	c, err := StartRedis(context.Background(), opts)
	return register(t, c, err, func() string {
		var s string
		for _, n := range append(slices.Clone(c.Nodes), c.Sentinels...) {
			s += "--- " + n.Name + " (" + n.LogPath() + "):\n" + n.d.logTail(15) + "\n"
		}
		return s
	})
}
