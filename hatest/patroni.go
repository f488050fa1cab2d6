package hatest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// PatroniOptions configures the Patroni cluster started by [StartPatroni]
// or [NewPatroni]. The zero value is two nodes with timings that promote a
// replica about 10s after the leader's machine dies.
type PatroniOptions struct {
	// Nodes is the number of PostgreSQL nodes, each managed by its own
	// Patroni. Defaults to 2.
	Nodes int
	// TTL is the leader key's time to live in etcd: how long a dead
	// leader keeps the lock. Defaults to 10s (Patroni's minimum).
	TTL time.Duration
	// LoopWait is the pause between Patroni's HA loop runs. Defaults to
	// 1s.
	LoopWait time.Duration
	// RetryTimeout bounds Patroni's retries of etcd and PostgreSQL
	// operations. Defaults to 4s (Patroni wants loop_wait + 2 ×
	// retry_timeout <= ttl).
	RetryTimeout time.Duration
	// Synchronous turns on Patroni's synchronous_mode: commits wait for
	// a synchronous standby, and only that standby may be promoted, so an
	// acknowledged commit survives a failover.
	Synchronous bool
	// Settings are extra PostgreSQL parameters for every node.
	Settings map[string]string
	// StartTimeout bounds the bootstrap of the whole cluster (all nodes
	// running, one leader, every replica streaming). Defaults to 120s.
	StartTimeout time.Duration
}

// PatroniCluster is a PostgreSQL cluster under Patroni with an etcd as its
// consensus store: kill the leader and Patroni promotes a replica by
// itself, as in production.
type PatroniCluster struct {
	// Nodes are the Patroni-managed PostgreSQL nodes.
	Nodes []*PatroniNode
	// EtcdEndpoint is etcd's client URL (http://127.0.0.1:port).
	EtcdEndpoint string
	// Scope is the Patroni cluster name.
	Scope string

	etcd      *daemon
	dir       string
	timeout   time.Duration
	closeOnce sync.Once
}

// PatroniNode is one PostgreSQL server and the Patroni that manages it.
type PatroniNode struct {
	Name    string // patroni0, patroni1, …
	Port    int    // PostgreSQL's TCP port on 127.0.0.1
	APIPort int    // Patroni's REST API port
	DataDir string

	d       *daemon
	timeout time.Duration
}

// StartPatroni starts etcd and opts.Nodes Patroni nodes and waits until
// one is the leader and every other node streams from it. The caller must
// Close the cluster; tests use [NewPatroni].
func StartPatroni(ctx context.Context, opts PatroniOptions) (_ *PatroniCluster, err error) {
	defaultTo(&opts.Nodes, 2)
	if opts.Nodes < 1 {
		return nil, fmt.Errorf("hatest: PatroniOptions.Nodes is %d, want >= 1", opts.Nodes)
	}
	defaultTo(&opts.TTL, 10*time.Second)
	defaultTo(&opts.LoopWait, time.Second)
	defaultTo(&opts.RetryTimeout, 4*time.Second)
	defaultTo(&opts.StartTimeout, 120*time.Second)
	patroni, err := binary("patroni", "patroni")
	if err != nil {
		return nil, err
	}
	etcd, err := binary("etcd", "etcd-server")
	if err != nil {
		return nil, err
	}
	cred, err := postgresPrereqs()
	if err != nil {
		return nil, err
	}
	dir, err := runDir("patroni")
	if err != nil {
		return nil, err
	}
	c := &PatroniCluster{Scope: "hatest", dir: dir, timeout: opts.StartTimeout}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(ctx, opts.StartTimeout)
	defer cancel()

	if err := c.startEtcd(ctx, etcd); err != nil {
		return nil, err
	}
	for i := range opts.Nodes {
		name := "patroni" + strconv.Itoa(i)
		nd := filepath.Join(dir, name)
		if err := mkdirFor(nd, cred); err != nil {
			return nil, err
		}
		pgPort, err1 := freePort()
		apiPort, err2 := freePort()
		if err := errors.Join(err1, err2); err != nil {
			return nil, err
		}
		n := &PatroniNode{Name: name, Port: pgPort, APIPort: apiPort, DataDir: filepath.Join(nd, "data"), timeout: opts.StartTimeout}
		conf := filepath.Join(nd, "patroni.yml")
		if err := os.WriteFile(conf, []byte(c.config(opts, n)), 0o644); err != nil {
			return nil, fmt.Errorf("hatest: %w", err)
		}
		n.d = &daemon{name: name, path: patroni, args: []string{conf}, dir: nd, logPath: filepath.Join(nd, "patroni.log"), cred: cred,
			env: []string{"HOME=" + nd, "PGPASSFILE=" + filepath.Join(nd, "pgpass")}}
		c.Nodes = append(c.Nodes, n)
		if err := n.d.start(); err != nil {
			return nil, err
		}
		// Let the first node bootstrap the cluster alone, so the others
		// do not race it for the initialize key and then wait a TTL.
		if i == 0 {
			if _, err := c.WaitLeader(ctx, nil); err != nil {
				return nil, err
			}
		}
	}
	if err := c.waitHealthy(ctx, opts.Synchronous); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *PatroniCluster) startEtcd(ctx context.Context, bin string) error {
	ed := filepath.Join(c.dir, "etcd")
	if err := os.MkdirAll(ed, 0o700); err != nil {
		return fmt.Errorf("hatest: %w", err)
	}
	c.etcd = &daemon{name: "etcd", path: bin, dir: ed, logPath: filepath.Join(ed, "etcd.log")}
	return c.etcd.startOnFreePorts(2, func(ports []int) error {
		_ = os.RemoveAll(filepath.Join(ed, "data")) // from an attempt that lost its port
		c.EtcdEndpoint = "http://" + hostPort(ports[0])
		peerURL := "http://" + hostPort(ports[1])
		c.etcd.args = []string{"--name", "etcd0", "--data-dir", filepath.Join(ed, "data"),
			"--listen-client-urls", c.EtcdEndpoint, "--advertise-client-urls", c.EtcdEndpoint,
			"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
			"--initial-cluster", "etcd0=" + peerURL, "--initial-cluster-state", "new",
			"--enable-v2=true", "--log-level", "warn", "--logger", "zap"}
		return nil
	}, func() error {
		return c.etcd.waitReady(ctx, c.timeout, func(ctx context.Context) error {
			var h struct{ Health string }
			if err := getJSON(ctx, c.EtcdEndpoint+"/health", &h); err != nil {
				return err
			}
			if h.Health != "true" {
				return fmt.Errorf("etcd health %q", h.Health)
			}
			return nil
		})
	})
}

// config renders a node's patroni.yml. JSON is valid YAML, which spares
// the harness a YAML library.
func (c *PatroniCluster) config(opts PatroniOptions, n *PatroniNode) string {
	secs := func(d time.Duration) int { return max(1, int(d.Round(time.Second)/time.Second)) }
	params := map[string]any{
		"wal_level":                    "replica",
		"hot_standby":                  "on",
		"hot_standby_feedback":         "on",
		"wal_log_hints":                "on",
		"max_wal_senders":              16,
		"max_replication_slots":        16,
		"wal_keep_size":                "512MB",
		"fsync":                        "off",
		"shared_buffers":               "32MB",
		"max_connections":              200,
		"wal_sender_timeout":           "5s",
		"wal_receiver_timeout":         "5s",
		"wal_receiver_status_interval": "1s",
		"wal_retrieve_retry_interval":  "500ms",
	}
	for k, v := range opts.Settings {
		params[k] = v
	}
	hba := []string{
		"local all all trust",
		"host all all 127.0.0.1/32 trust",
		"host replication all 127.0.0.1/32 trust",
	}
	auth := map[string]string{"username": "postgres", "password": "postgres"}
	nd := filepath.Dir(n.DataDir)
	cfg := map[string]any{
		"scope":     c.Scope,
		"namespace": "/hatest/",
		"name":      n.Name,
		"log":       map[string]any{"level": "INFO"},
		"restapi": map[string]any{
			"listen":          hostPort(n.APIPort),
			"connect_address": hostPort(n.APIPort),
		},
		"etcd3": map[string]any{"hosts": []string{strings.TrimPrefix(c.EtcdEndpoint, "http://")}},
		"bootstrap": map[string]any{
			"dcs": map[string]any{
				"ttl":                     secs(opts.TTL),
				"loop_wait":               secs(opts.LoopWait),
				"retry_timeout":           secs(opts.RetryTimeout),
				"maximum_lag_on_failover": 16 << 20,
				"synchronous_mode":        opts.Synchronous,
				"postgresql": map[string]any{
					"use_pg_rewind": true,
					"use_slots":     true,
					"parameters":    params,
				},
			},
			"initdb": []any{map[string]string{"encoding": "UTF8"}, map[string]string{"locale": "C"}, map[string]string{"auth": "trust"}, "no-sync"},
			"pg_hba": hba,
		},
		"postgresql": map[string]any{
			"listen":          hostPort(n.Port),
			"connect_address": hostPort(n.Port),
			"data_dir":        n.DataDir,
			"bin_dir":         pgBinDir(),
			"pgpass":          filepath.Join(nd, "pgpass"),
			"authentication": map[string]any{
				"superuser":   auth,
				"replication": auth,
				"rewind":      auth,
			},
			"parameters": map[string]any{
				"unix_socket_directories": nd,
				"cluster_name":            n.Name,
			},
			"pg_hba":         hba,
			"basebackup":     []any{map[string]string{"checkpoint": "fast"}},
			"pg_ctl_timeout": 60,
		},
		"tags": map[string]any{"nofailover": false, "noloadbalance": false, "clonefrom": false, "nosync": false},
	}
	b, _ := json.MarshalIndent(cfg, "", "  ")
	return string(b)
}

// Close stops every Patroni, PostgreSQL and etcd process and removes the
// cluster's directory. It is safe to call more than once.
func (c *PatroniCluster) Close() error {
	var errs []error
	c.closeOnce.Do(func() {
		for _, n := range c.Nodes {
			errs = append(errs, n.Kill())
		}
		if c.etcd != nil {
			errs = append(errs, c.etcd.kill())
		}
		errs = append(errs, os.RemoveAll(c.dir))
	})
	return errors.Join(errs...)
}

// Leader returns the node whose Patroni holds the leader key and runs a
// writable primary (its REST API answers 200 on /leader).
func (c *PatroniCluster) Leader(ctx context.Context) (*PatroniNode, error) {
	for _, n := range c.Nodes {
		if n.IsLeader(ctx) {
			return n, nil
		}
	}
	return nil, errors.New("hatest: no Patroni leader")
}

// WaitLeader waits until a node other than except (nil: any node) is the
// leader and accepts writes, and returns it.
func (c *PatroniCluster) WaitLeader(ctx context.Context, except *PatroniNode) (*PatroniNode, error) {
	for {
		for _, n := range c.Nodes {
			if n == except || !n.IsLeader(ctx) {
				continue
			}
			if err := n.writable(ctx); err == nil {
				return n, nil
			}
		}
		select {
		case <-ctx.Done():
			var states []string
			for _, n := range c.Nodes {
				st, err := n.Status(ctx)
				states = append(states, fmt.Sprintf("%s: %+v %v", n.Name, st, err))
			}
			return nil, fmt.Errorf("hatest: no Patroni leader (%s): %w\n--- last lines of %s:\n%s",
				strings.Join(states, "; "), ctx.Err(), c.Nodes[0].d.logPath, c.Nodes[0].d.logTail(20))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// KillLeader SIGKILLs the leader's Patroni and PostgreSQL together, as if
// its machine died, and returns it. Patroni promotes a replica once the
// leader key expires (TTL); wait for it with [PatroniCluster.WaitLeader].
func (c *PatroniCluster) KillLeader(ctx context.Context) (*PatroniNode, error) {
	l, err := c.Leader(ctx)
	if err != nil {
		return nil, err
	}
	return l, l.Kill()
}

// DSNs returns a connection string for each node, in node order.
func (c *PatroniCluster) DSNs() []string { return dsns(c.Nodes) }

// MultiHostDSN returns one connection string listing every node.
func (c *PatroniCluster) MultiHostDSN() string { return multiHostDSN(c.Nodes, "") }

// waitHealthy waits until there is a leader and every other running node
// streams from it, and with synchronous_mode until the leader has a
// synchronous standby (Patroni names one a loop after the replica
// streams; commits before that wait for nobody, and a failover then
// loses them).
func (c *PatroniCluster) waitHealthy(ctx context.Context, synchronous bool) error {
	leader, err := c.WaitLeader(ctx, nil)
	if err != nil {
		return err
	}
	others := 0
	for _, n := range c.Nodes {
		if n == leader || !n.d.running() {
			continue
		}
		others++
		if err := n.WaitStreaming(ctx); err != nil {
			return err
		}
	}
	if !synchronous || others == 0 {
		return nil
	}
	for {
		if st, err := leader.Status(ctx); err == nil {
			for _, r := range st.Replication {
				if r.SyncState == "sync" || r.SyncState == "quorum" {
					return nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("hatest: patroni: no synchronous standby named by the leader %s: %w", leader.Name, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// PatroniStatus is what a node's Patroni reports about it (GET /patroni).
type PatroniStatus struct {
	State    string `json:"state"` // running, starting, stopped, …
	Role     string `json:"role"`  // master (Patroni 3.0) / primary, replica
	Timeline int    `json:"timeline"`
	Xlog     struct {
		Location         uint64 `json:"location"`          // on the leader
		ReceivedLocation uint64 `json:"received_location"` // on a replica
		ReplayedLocation uint64 `json:"replayed_location"`
	} `json:"xlog"`
	Replication []struct {
		ApplicationName string `json:"application_name"`
		State           string `json:"state"`
		SyncState       string `json:"sync_state"`
	} `json:"replication"`
}

// Status asks the node's Patroni for its state.
func (n *PatroniNode) Status(ctx context.Context) (PatroniStatus, error) {
	var st PatroniStatus
	err := getJSON(ctx, n.APIURL()+"/patroni", &st)
	return st, err
}

// IsLeader reports whether the node's Patroni answers 200 on /leader.
func (n *PatroniNode) IsLeader(ctx context.Context) bool {
	if !n.d.running() {
		return false
	}
	code, err := httpStatus(ctx, n.APIURL()+"/leader")
	return err == nil && code == http.StatusOK
}

// WaitStreaming waits until the node runs as a replica streaming from the
// leader.
func (n *PatroniNode) WaitStreaming(ctx context.Context) error {
	return n.d.waitReady(ctx, n.timeout, func(ctx context.Context) error {
		return walReceiverStreaming(ctx, n.DSN())
	})
}

// APIURL returns the base URL of the node's Patroni REST API.
func (n *PatroniNode) APIURL() string { return "http://" + hostPort(n.APIPort) }

// Addr returns PostgreSQL's host:port.
func (n *PatroniNode) Addr() string { return hostPort(n.Port) }

// DSN returns a connection string for the postgres database on this node.
func (n *PatroniNode) DSN() string { return pgDSN(n.Port, "postgres", "") }

// LogPath returns the path of the node's Patroni log (PostgreSQL's own log
// goes there too).
func (n *PatroniNode) LogPath() string { return n.d.logPath }

// Running reports whether the node's Patroni runs.
func (n *PatroniNode) Running() bool { return n.d.running() }

// Pids returns the pids of the node's Patroni, its PostgreSQL postmaster
// and all their children.
func (n *PatroniNode) Pids() []int {
	var pids []int
	if p := n.d.pid(); p != 0 && n.d.running() {
		pids = append(pids, p)
	}
	if pm := n.postmasterPid(); pm != 0 && Alive(pm) && !slices.Contains(pids, pm) {
		pids = append(pids, pm)
	}
	if len(pids) == 0 {
		return nil
	}
	return append(pids, descendants(pids...)...)
}

// Kill SIGKILLs the node's Patroni and its PostgreSQL (postmaster and every
// child) at once: a lost machine.
func (n *PatroniNode) Kill() error {
	pids := n.Pids()
	killPids(pids)
	err := n.d.kill()
	return errors.Join(err, waitGone(pids, 10*time.Second))
}

// Start starts the node's Patroni again after Kill. It rejoins the cluster
// (as a replica, rewound with pg_rewind if it had diverged); wait for that
// with [PatroniNode.WaitStreaming].
func (n *PatroniNode) Start(ctx context.Context) error {
	if n.d.running() {
		return fmt.Errorf("hatest: %s is already running", n.Name)
	}
	if err := n.d.start(); err != nil {
		return err
	}
	return n.d.waitReady(ctx, n.timeout, func(ctx context.Context) error {
		_, err := httpStatus(ctx, n.APIURL()+"/health")
		return err
	})
}

// postmasterPid reads the postmaster's pid from postmaster.pid (0 if
// absent). Patroni starts PostgreSQL detached from itself, so the pid is
// not always among Patroni's descendants.
func (n *PatroniNode) postmasterPid() int {
	b, err := os.ReadFile(filepath.Join(n.DataDir, "postmaster.pid"))
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	pid, _ := strconv.Atoi(strings.TrimSpace(line))
	return pid
}

// Exec runs one SQL statement on the node, as the postgres superuser in the
// postgres database.
func (n *PatroniNode) Exec(ctx context.Context, sql string, args ...any) error {
	return pgExec(ctx, n.DSN(), sql, args...)
}

func (n *PatroniNode) writable(ctx context.Context) error {
	return pgConn(ctx, n.DSN(), func(conn *pgx.Conn) error {
		var ro string
		if err := conn.QueryRow(ctx, "SHOW transaction_read_only").Scan(&ro); err != nil {
			return err
		}
		if ro != "off" {
			return errors.New("read-only")
		}
		return nil
	})
}

// NewPatroni starts a Patroni cluster for the test (see [StartPatroni])
// and stops it when the test ends, pass or fail.
func NewPatroni(t testing.TB, opts PatroniOptions) *PatroniCluster {
	t.Helper()
	skipUnlessServices(t)
	c, err := StartPatroni(context.Background(), opts)
	return register(t, c, err, func() string {
		s := "--- etcd:\n" + c.etcd.logTail(10) + "\n"
		for _, n := range c.Nodes {
			s += "--- " + n.Name + " (" + n.LogPath() + "):\n" + n.d.logTail(20) + "\n"
		}
		return s
	})
}
