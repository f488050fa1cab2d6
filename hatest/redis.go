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
	// 1.5s; less than 1s is an error.
	//
	// Right after a failover each Sentinel reconnects to the promoted
	// master no sooner than one ping period after its last connection
	// attempt to the dead one, so the promoted master's first answer must
	// come within DownAfter less that period. Sentinel's own 1s
	// ping period with a 1s DownAfter left no margin: on a loaded
	// machine a Sentinel took the healthy promoted master for down 1.07s
	// after the switch, and since the other Sentinels' "down" votes on
	// the old master still counted for 5s, that one opinion was a quorum
	// and the Sentinels failed over a second time, back to the old
	// master, which had just restarted empty. With the harness's
	// 500ms ping period and the default, the promoted master has 1s to
	// answer.
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

	mu sync.Mutex
	// known is the master the harness last saw the Sentinels settle on
	// (Nodes[0] at the start, then what WaitFailover returned), and
	// knownSwitches how many master switches the Sentinels had logged by
	// then. A switch beyond those is a failover nobody waited for.
	known         *RedisNode
	knownSwitches int
}

// RedisNode is one redis-server (data node or Sentinel) of a
// [RedisCluster].
type RedisNode struct {
	Name string // redis0, redis1, …, sentinel0, …
	Port int    // TCP port on 127.0.0.1

	conf    string
	d       *daemon
	timeout time.Duration
	// tuning is the SENTINEL DEBUG arguments a Sentinel gets each time
	// it starts; nil for a data node.
	tuning []any

	// For a Sentinel: how far its log has been read for master switches,
	// and the switches found (guarded by the cluster's mu).
	logRead  int64
	switches []masterSwitch
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
	defaultTo(&opts.DownAfter, 1500*time.Millisecond)
	if opts.DownAfter < time.Second {
		return nil, fmt.Errorf("hatest: RedisOptions: DownAfter %s is below 1s: the Sentinels would take a healthy master that is slow to answer on a busy machine for down (and fail over) while they reconnect to it after a failover", opts.DownAfter)
	}
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
		n.tuning = sentinelTuning()
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
	c.known, c.knownSwitches = c.Nodes[0], len(c.switches())
	return c, nil
}

// sentinelTuning returns the Sentinel timings the harness sets (SENTINEL
// DEBUG, Redis 7.0 and later) on every Sentinel it starts. Sentinel's own
// are made for a DownAfter of 30s; with the harness's 1.5s:
//
//   - ping-period 500ms (Sentinel: 1s): a Sentinel reconnects to an
//     instance at most once per ping period, and after a failover the
//     promoted master's first answer must come within DownAfter of the
//     switch. It also bounds how stale a replica's last INFO may be for
//     the replica to be promoted (5 ping periods, while INFO comes every
//     second during a failover): 2.5s leaves room on a busy machine, a
//     250ms period would leave a quarter of a second.
//   - publish-period 500ms (Sentinel: 2s): the hello messages that carry
//     a new master to the other Sentinels, and 4 of them are the wait
//     before a returning old master is made a replica.
//   - info-period 1s (Sentinel: 10s): how soon a Sentinel sees that a
//     returning old master reports itself master (and converts it).
//
// The ask-period (how often a Sentinel that sees the master down asks the
// others) stays Sentinel's 1s: at 200ms the Sentinels
// reached "objectively down" within milliseconds of each other, split
// their votes (a split vote costs two FailoverTimeouts), and 4 of 10
// failovers on a loaded machine took 7 to 11s instead of 2.5 to 3.5s.
func sentinelTuning() []any {
	return []any{"ping-period", 500, "publish-period", 500, "info-period", 1000}
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
	}, func() error { return n.waitUp(ctx) })
}

// waitUp waits until the node answers PING, then gives a Sentinel its
// timings.
func (n *RedisNode) waitUp(ctx context.Context) error {
	if err := n.waitPing(ctx); err != nil {
		return err
	}
	if n.tuning == nil {
		return nil
	}
	cl := n.Client()
	defer cl.Close()
	args := append([]any{"SENTINEL", "DEBUG"}, n.tuning...)
	if err := cl.Do(ctx, args...).Err(); err != nil {
		return fmt.Errorf("hatest: %s: SENTINEL DEBUG %v (Redis 7.0 or later needed): %w", n.Name, n.tuning, err)
	}
	return nil
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
//
// It expects one failover since the cluster started or WaitFailover last
// returned. If the Sentinels switched the master more than once — a
// failover nobody asked for, such as the promoted master taken for down
// and the cluster failed over again — it fails at once with an
// [UnplannedFailoverError] naming the switches.
func (c *RedisCluster) WaitFailover(ctx context.Context, old *RedisNode) (*RedisNode, error) {
	if len(c.Sentinels) == 0 {
		return nil, errors.New("hatest: WaitFailover needs Sentinels")
	}
	known, base := c.knownMaster()
	expected := "WaitFailover expected one failover since " + known.Name + " became the master"
	var last error
	for {
		sw := c.switches()
		if len(sw) > base+1 {
			return nil, c.unplanned(sw[base:], expected)
		}
		m, err := c.Master(ctx)
		if err == nil && m != old {
			role, rerr := m.Role(ctx)
			switch {
			case rerr != nil || role != "master":
				err = fmt.Errorf("new master %s has role %q (%v)", m.Name, role, rerr)
			default:
				if err = c.failoverOver(ctx, m); err == nil {
					if sw = c.switches(); len(sw) > base+1 {
						return nil, c.unplanned(sw[base:], expected)
					}
					c.setKnown(m, len(sw))
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

// WaitReplica waits until n is a replica of the master in sync: its role
// is replica, it follows the master the Sentinels settled on last (Nodes[0]
// at the start, then what [RedisCluster.WaitFailover] returned), its
// replication link is up, and every running Sentinel sees it so (a
// replica the Sentinels may promote in the next failover). Use it for a
// returning old master, which the Sentinels make a replica about 3s after
// it is back.
//
// With Sentinels it fails at once with an [UnplannedFailoverError] if
// they have moved the master since: a failover nobody waited for, after
// which n would never follow that master.
func (c *RedisCluster) WaitReplica(ctx context.Context, n *RedisNode) error {
	known, base := c.knownMaster()
	expected := "WaitReplica expected " + known.Name + " to stay the master while " + n.Name + " became its replica"
	for {
		if sw := c.switches(); len(sw) > base {
			return c.unplanned(sw[base:], expected)
		}
		err := c.replicaState(ctx, n, known)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, errIsMaster):
			return fmt.Errorf("hatest: WaitReplica: %s is the master", n.Name)
		case !sleepCtx(ctx, 50*time.Millisecond):
			return fmt.Errorf("hatest: %s did not become a replica of %s: %v: %w", n.Name, known.Name, err, ctx.Err())
		}
	}
}

var errIsMaster = errors.New("the node is the master")

// replicaState reports nil if n is a replica of m in sync, in its own eyes
// and every running Sentinel's.
func (c *RedisCluster) replicaState(ctx context.Context, n, m *RedisNode) error {
	if len(c.Sentinels) > 0 {
		// A Sentinel names the promoted replica while it still fails
		// over, before it logs the switch.
		if cur, err := c.Master(ctx); err == nil && cur != m {
			return fmt.Errorf("the Sentinels are failing over to %s", cur.Name)
		}
	}
	if n == m {
		return errIsMaster
	}
	if err := n.replicaOf(ctx, m); err != nil {
		return err
	}
	for _, s := range c.Sentinels {
		if !s.d.running() {
			continue
		}
		if err := s.seesReplica(ctx, c.MasterName, n, m); err != nil {
			return err
		}
	}
	return nil
}

// sleepCtx waits d, or less if ctx ends first; it reports whether ctx is
// still live.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// replicaOf reports nil if n is a replica of m with its link up.
func (n *RedisNode) replicaOf(ctx context.Context, m *RedisNode) error {
	cl := n.Client()
	defer cl.Close()
	info, err := cl.Info(ctx, "replication").Result()
	if err != nil {
		return fmt.Errorf("INFO on %s: %w", n.Name, err)
	}
	f := infoFields(info)
	switch {
	case f["role"] != "slave":
		return fmt.Errorf("%s has role %q", n.Name, f["role"])
	case f["master_port"] != strconv.Itoa(m.Port):
		return fmt.Errorf("%s follows port %s, not %s (%d)", n.Name, f["master_port"], m.Name, m.Port)
	case f["master_link_status"] != "up":
		return fmt.Errorf("%s's link to %s is %s", n.Name, m.Name, f["master_link_status"])
	}
	return nil
}

// seesReplica reports nil if n, a Sentinel, lists r as a healthy replica
// of m that reports itself a replica.
func (n *RedisNode) seesReplica(ctx context.Context, name string, r, m *RedisNode) error {
	cl := n.sentinelClient()
	defer cl.Close()
	rs, err := cl.Replicas(ctx, name).Result()
	if err != nil {
		return fmt.Errorf("%s: SENTINEL REPLICAS: %w", n.Name, err)
	}
	for _, f := range rs {
		if f["name"] != r.Addr() {
			continue
		}
		if f["flags"] != "slave" || f["role-reported"] != "slave" || f["master-link-status"] != "ok" || f["master-port"] != strconv.Itoa(m.Port) {
			return fmt.Errorf("%s sees %s with flags %s, role %s, link %s to port %s", n.Name, r.Name, f["flags"], f["role-reported"], f["master-link-status"], f["master-port"])
		}
		return nil
	}
	return fmt.Errorf("%s does not list %s among the replicas", n.Name, r.Name)
}

// infoFields splits an INFO reply into its key:value fields.
func infoFields(info string) map[string]string {
	f := map[string]string{}
	for line := range strings.SplitSeq(info, "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok {
			f[k] = v
		}
	}
	return f
}

func (c *RedisCluster) knownMaster() (*RedisNode, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.known, c.knownSwitches
}

func (c *RedisCluster) setKnown(m *RedisNode, switches int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.known, c.knownSwitches = m, switches
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
// replica of the new one (wait for it with [RedisCluster.WaitReplica]).
// Start it only once [RedisCluster.WaitFailover] has returned.
func (n *RedisNode) Start(ctx context.Context) error {
	if err := n.d.start(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, n.timeout)
	defer cancel()
	return n.waitUp(ctx)
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
	return register(t, c, err, func() string { return c.logs() })
}

// logs returns what a failed test shows: the last lines of each data
// node's log, and each Sentinel's log nearly whole, since the Sentinels'
// events (+sdown, +odown, +switch-master, +convert-to-slave, …) are the
// story of every failover.
func (c *RedisCluster) logs() string {
	var b strings.Builder
	for _, n := range c.Nodes {
		fmt.Fprintf(&b, "--- %s (%s):\n%s\n", n.Name, n.LogPath(), n.d.logTail(30))
	}
	for _, n := range c.Sentinels {
		fmt.Fprintf(&b, "--- %s (%s):\n%s\n", n.Name, n.LogPath(), n.d.logTail(200))
	}
	return b.String()
}
