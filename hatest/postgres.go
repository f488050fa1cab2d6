package hatest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// PostgresOptions configures a PostgreSQL cluster started by
// [StartPostgres] or [NewPostgres]. The zero value is a single primary
// with no replicas.
type PostgresOptions struct {
	// Replicas is the number of streaming replicas, made with
	// pg_basebackup -R from the primary. Zero means none.
	Replicas int

	// Synchronous makes commits on the primary wait until one replica
	// has flushed them (synchronous_standby_names = 'ANY 1 (…every
	// node…)'). Every node carries the setting, so a promoted replica
	// waits for one of the others too: with a single replica, writes on
	// the promoted node hang until another node follows it. Ignored when
	// Replicas is zero.
	Synchronous bool

	// WALSenderTimeout is wal_sender_timeout and wal_receiver_timeout:
	// how long a replication connection may be silent before either side
	// drops it. Zero means 5s (PostgreSQL's own default is 60s, which
	// keeps a dead primary's replicas waiting a minute).
	WALSenderTimeout time.Duration

	// Password, if set, is the postgres user's password, required
	// (scram-sha-256) on TCP connections, replication included; Unix
	// socket connections stay trust. The DSNs carry it. Empty means
	// trust authentication everywhere.
	Password string

	// Settings are extra postgresql.conf settings for every node; they
	// override the harness's defaults (which include fsync = off: safe
	// for killed processes, since the page cache survives, and much
	// faster).
	Settings map[string]string

	// StartTimeout bounds the start of the whole cluster and of each
	// later Start of a node. Zero means 60s.
	StartTimeout time.Duration
}

// Role is what a PostgreSQL node currently is.
type Role string

// The roles of a node.
const (
	RolePrimary Role = "primary" // accepts writes (not in recovery)
	RoleReplica Role = "replica" // in recovery: a streaming (hot) standby
)

// LSN is a PostgreSQL write-ahead log position.
type LSN uint64

// ParseLSN parses PostgreSQL's text form of an LSN ("16/B374D848").
func ParseLSN(s string) (LSN, error) {
	hi, lo, ok := strings.Cut(s, "/")
	if !ok {
		return 0, fmt.Errorf("hatest: bad LSN %q", s)
	}
	h, err1 := strconv.ParseUint(hi, 16, 32)
	l, err2 := strconv.ParseUint(lo, 16, 32)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("hatest: bad LSN %q", s)
	}
	return LSN(h<<32 | l), nil
}

// String returns the LSN in PostgreSQL's text form.
func (l LSN) String() string { return fmt.Sprintf("%X/%X", uint64(l)>>32, uint64(l)&0xffffffff) }

// PostgresCluster is a PostgreSQL primary with streaming replicas, each a
// real server on 127.0.0.1 running as the postgres user when the harness
// runs as root. Close stops every server and removes the data.
type PostgresCluster struct {
	// Nodes are the servers; Nodes[0] starts as the primary, the others
	// as its replicas. Roles change as a test promotes and rewinds nodes:
	// ask [PostgresCluster.Primary] or [PostgresNode.Role].
	Nodes []*PostgresNode

	dir       string
	closeOnce sync.Once
}

// PostgresNode is one PostgreSQL server of a [PostgresCluster].
type PostgresNode struct {
	Name    string // pg0, pg1, …: also its cluster_name and replication application_name
	Port    int    // TCP port on 127.0.0.1
	DataDir string // PGDATA

	cred     *syscall.Credential
	d        *daemon
	timeout  time.Duration
	password string
}

// StartPostgres starts a PostgreSQL cluster and waits until every node
// accepts connections and every replica streams from the primary. The
// caller must Close it. Tests use [NewPostgres], which does that for them.
func StartPostgres(ctx context.Context, opts PostgresOptions) (_ *PostgresCluster, err error) {
	if opts.Replicas < 0 {
		return nil, fmt.Errorf("hatest: PostgresOptions.Replicas is %d, want >= 0", opts.Replicas)
	}
	defaultTo(&opts.WALSenderTimeout, 5*time.Second)
	defaultTo(&opts.StartTimeout, 60*time.Second)
	cred, err := postgresPrereqs()
	if err != nil {
		return nil, err
	}
	dir, err := runDir("pg")
	if err != nil {
		return nil, err
	}
	c := &PostgresCluster{dir: dir}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(ctx, opts.StartTimeout)
	defer cancel()

	for i := 0; i <= opts.Replicas; i++ {
		name := "pg" + strconv.Itoa(i)
		nodeDir := filepath.Join(dir, name)
		if err := mkdirFor(nodeDir, cred); err != nil {
			return nil, err
		}
		n := &PostgresNode{Name: name, DataDir: filepath.Join(nodeDir, "data"), cred: cred, timeout: opts.StartTimeout, password: opts.Password}
		n.d = &daemon{name: "postgres " + name, dir: nodeDir, logPath: filepath.Join(nodeDir, "postgres.log"), cred: cred}
		n.d.path, _ = pgBinary("postgres")
		c.Nodes = append(c.Nodes, n)
	}

	primary := c.Nodes[0]
	if err := primary.initdb(ctx, c.settings(opts)); err != nil {
		return nil, err
	}
	if err := primary.startFresh(ctx); err != nil {
		return nil, err
	}
	for _, n := range c.Nodes[1:] {
		if err := n.basebackup(ctx, primary); err != nil {
			return nil, err
		}
		if err := n.startFresh(ctx); err != nil {
			return nil, err
		}
	}
	for _, n := range c.Nodes[1:] {
		if err := n.waitStreaming(ctx); err != nil {
			return nil, err
		}
	}
	if err := primary.waitSenders(ctx, opts.Replicas, opts.Synchronous); err != nil {
		return nil, err
	}
	return c, nil
}

// settings returns the postgresql.conf lines shared by every node.
func (c *PostgresCluster) settings(opts PostgresOptions) map[string]string {
	ms := strconv.FormatInt(opts.WALSenderTimeout.Milliseconds(), 10) + "ms"
	s := map[string]string{
		"wal_level":                    "replica",
		"max_wal_senders":              "16",
		"max_replication_slots":        "16",
		"wal_keep_size":                "'512MB'",
		"hot_standby":                  "on",
		"hot_standby_feedback":         "on",
		"wal_log_hints":                "on", // pg_rewind needs it
		"full_page_writes":             "on",
		"fsync":                        "off",
		"shared_buffers":               "'32MB'",
		"max_connections":              "200",
		"wal_sender_timeout":           "'" + ms + "'",
		"wal_receiver_timeout":         "'" + ms + "'",
		"wal_receiver_status_interval": "'1s'",
		"wal_retrieve_retry_interval":  "'500ms'",
		"log_line_prefix":              "'%m [%p] %q%u@%d '",
	}
	if opts.Synchronous && opts.Replicas > 0 {
		names := make([]string, len(c.Nodes))
		for i, n := range c.Nodes {
			names[i] = n.Name
		}
		s["synchronous_standby_names"] = "'ANY 1 (" + strings.Join(names, ", ") + ")'"
	}
	maps.Copy(s, opts.Settings)
	return s
}

// Close stops every node (SIGKILL: the data is thrown away) and removes
// the cluster's directory. It is safe to call more than once.
func (c *PostgresCluster) Close() error {
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

// Primary returns the running node that is not in recovery. With more than
// one (a split brain a test made), it returns the first of them.
func (c *PostgresCluster) Primary(ctx context.Context) (*PostgresNode, error) {
	var errs []error
	for _, n := range c.Nodes {
		if !n.Running() || n.d.isPaused() {
			continue
		}
		r, err := n.Role(ctx)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if r == RolePrimary {
			return n, nil
		}
	}
	return nil, fmt.Errorf("hatest: no primary among %d nodes: %w", len(c.Nodes), errors.Join(errs...))
}

// DSNs returns a connection string for each node, in node order.
func (c *PostgresCluster) DSNs() []string { return dsns(c.Nodes) }

// MultiHostDSN returns one connection string listing every node, in the
// form libpq and pgx accept ("postgres://postgres@127.0.0.1:p1,127.0.0.1:p2/postgres").
// Add target_session_attrs=read-write to reach the primary.
func (c *PostgresCluster) MultiHostDSN() string {
	return multiHostDSN(c.Nodes, c.Nodes[0].password)
}

// pgServer is a PostgreSQL node of either kind of cluster.
type pgServer interface {
	Addr() string // host:port
	DSN() string  // for the postgres database
}

// dsns returns each node's DSN, in node order.
func dsns[N pgServer](nodes []N) []string {
	out := make([]string, len(nodes))
	for i, n := range nodes {
		out[i] = n.DSN()
	}
	return out
}

// multiHostDSN lists the nodes' servers in one connection string for the
// postgres database, in node order.
func multiHostDSN[N pgServer](nodes []N, password string) string {
	hosts := make([]string, len(nodes))
	for i, n := range nodes {
		hosts[i] = n.Addr()
	}
	return pgURL(strings.Join(hosts, ","), "postgres", password)
}

// pgDSN is the connection string for database on the server at port.
func pgDSN(port int, database, password string) string {
	return pgURL(hostPort(port), database, password)
}

func pgURL(hosts, database, password string) string {
	u := url.URL{Scheme: "postgres", User: url.User("postgres"), Host: hosts, Path: "/" + database, RawQuery: "sslmode=disable"}
	if password != "" {
		u.User = url.UserPassword("postgres", password)
	}
	return u.String()
}

// WaitReplicated waits until every running replica has replayed the WAL the
// primary had written when it was called.
func (c *PostgresCluster) WaitReplicated(ctx context.Context) error {
	p, err := c.Primary(ctx)
	if err != nil {
		return err
	}
	target, err := p.LSN(ctx)
	if err != nil {
		return err
	}
	for _, n := range c.Nodes {
		if n == p || !n.Running() {
			continue
		}
		if err := n.WaitReplay(ctx, target); err != nil {
			return err
		}
	}
	return nil
}

// CreateDatabase creates a database on the current primary, so tests that
// share a cluster can each have their own.
func (c *PostgresCluster) CreateDatabase(ctx context.Context, name string) error {
	p, err := c.Primary(ctx)
	if err != nil {
		return err
	}
	return p.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
}

// Addr returns the node's host:port.
func (n *PostgresNode) Addr() string { return hostPort(n.Port) }

// DSN returns a connection string for the postgres database on this node,
// as the postgres superuser (authentication is trust on loopback).
func (n *PostgresNode) DSN() string { return n.DSNFor("postgres") }

// DSNFor returns a connection string for the named database on this node.
func (n *PostgresNode) DSNFor(database string) string { return pgDSN(n.Port, database, n.password) }

// LogPath returns the path of the node's server log.
func (n *PostgresNode) LogPath() string { return n.d.logPath }

// Running reports whether the node's postmaster is running (paused counts
// as running).
func (n *PostgresNode) Running() bool { return n.d.running() }

// Pids returns the postmaster's pid followed by those of its children
// (backends, WAL sender and receiver, background workers).
func (n *PostgresNode) Pids() []int {
	p := n.d.pid()
	if p == 0 || !n.Running() {
		return nil
	}
	return append([]int{p}, descendants(p)...)
}

// Kill SIGKILLs the postmaster and all its children at once, as if the
// machine died: no shutdown checkpoint, connections drop without a word.
func (n *PostgresNode) Kill() error { return n.d.kill() }

// Stop shuts the node down with PostgreSQL's fast mode (SIGINT: roll back
// open transactions, checkpoint, exit), killing it if that takes longer
// than 30s.
func (n *PostgresNode) Stop() error { return n.d.stop(syscall.SIGINT, 30*time.Second) }

// Start starts a stopped or killed node again with its data (crash
// recovery runs first if it was killed) and waits until it accepts
// connections.
func (n *PostgresNode) Start(ctx context.Context) error {
	if n.Running() {
		return fmt.Errorf("hatest: %s is already running", n.Name)
	}
	if err := n.d.start(); err != nil {
		return err
	}
	return n.waitAccepting(ctx)
}

// Pause stops the postmaster and every child with SIGSTOP: the node hangs
// with its connections open, as a frozen VM or a stalled disk makes it
// look. Clients see timeouts, not errors.
func (n *PostgresNode) Pause() error {
	pids := n.Pids()
	if len(pids) == 0 {
		return fmt.Errorf("hatest: %s is not running", n.Name)
	}
	// The postmaster first, so it forks nothing new that would escape.
	if err := n.d.signal(syscall.SIGSTOP); err != nil {
		return err
	}
	signalPids(descendants(pids[0]), syscall.SIGSTOP)
	return nil
}

// Resume continues a node stopped by Pause.
func (n *PostgresNode) Resume() error {
	pids := n.Pids()
	if len(pids) == 0 {
		return fmt.Errorf("hatest: %s is not running", n.Name)
	}
	signalPids(pids[1:], syscall.SIGCONT)
	return n.d.signal(syscall.SIGCONT)
}

// Promote turns a replica into a primary (pg_promote) and waits until it
// accepts writes.
func (n *PostgresNode) Promote(ctx context.Context) error {
	var ok bool
	err := n.conn(ctx, func(conn *pgx.Conn) error {
		return conn.QueryRow(ctx, "SELECT pg_promote(true, 60)").Scan(&ok)
	})
	if err != nil {
		return fmt.Errorf("hatest: promote %s: %w", n.Name, err)
	}
	if !ok {
		return fmt.Errorf("hatest: promote %s: pg_promote returned false", n.Name)
	}
	return nil
}

// Rewind re-attaches a former primary (or any diverged node) as a replica
// of source: it stops the node if it runs, rewinds its data directory to
// source's timeline with pg_rewind (which first runs crash recovery if the
// node was killed), configures it to stream from source, and starts it.
func (n *PostgresNode) Rewind(ctx context.Context, source *PostgresNode) error {
	if n.Running() {
		if err := n.Stop(); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithTimeout(ctx, n.timeout)
	defer cancel()
	// pg_rewind needs a checkpoint on the source that records its new
	// timeline; a just-promoted node may not have written one yet.
	if err := source.Exec(ctx, "CHECKPOINT"); err != nil {
		return fmt.Errorf("hatest: rewind %s: checkpoint on %s: %w", n.Name, source.Name, err)
	}
	rewind, err := pgBinary("pg_rewind")
	if err != nil {
		return err
	}
	out, err := runAs(ctx, n.cred, nil, rewind, "--target-pgdata="+n.DataDir,
		"--source-server="+source.conninfo(), "--write-recovery-conf", "--no-sync")
	if err != nil {
		return fmt.Errorf("hatest: pg_rewind %s from %s: %w\n%s", n.Name, source.Name, err, out)
	}
	if err := n.d.start(); err != nil {
		return err
	}
	if err := n.waitAccepting(ctx); err != nil {
		return err
	}
	return n.waitStreaming(ctx)
}

// Follow points a running replica at another primary (after a promotion)
// and waits until it streams from it.
func (n *PostgresNode) Follow(ctx context.Context, primary *PostgresNode) error {
	if err := n.SetSetting(ctx, "primary_conninfo", primary.conninfo()); err != nil {
		return err
	}
	return n.waitStreaming(ctx)
}

// SetApplyDelay makes this replica apply each commit only once it is at
// least d old (recovery_min_apply_delay): a replica that lags by d. Zero
// removes the delay.
func (n *PostgresNode) SetApplyDelay(ctx context.Context, d time.Duration) error {
	return n.SetSetting(ctx, "recovery_min_apply_delay", strconv.FormatInt(d.Milliseconds(), 10)+"ms")
}

// SetSetting changes a setting with ALTER SYSTEM and reloads the
// configuration. Settings that need a restart take effect at the next
// Start.
func (n *PostgresNode) SetSetting(ctx context.Context, name, value string) error {
	return n.conn(ctx, func(conn *pgx.Conn) error {
		// ALTER SYSTEM takes no parameters; quote the value as a literal.
		lit := "'" + strings.ReplaceAll(value, "'", "''") + "'"
		if _, err := conn.Exec(ctx, "ALTER SYSTEM SET "+pgx.Identifier{name}.Sanitize()+" = "+lit); err != nil {
			return fmt.Errorf("hatest: %s: set %s: %w", n.Name, name, err)
		}
		_, err := conn.Exec(ctx, "SELECT pg_reload_conf()")
		return err
	})
}

// Role reports whether the node is a primary or a replica.
func (n *PostgresNode) Role(ctx context.Context) (Role, error) {
	var inRecovery bool
	err := n.conn(ctx, func(conn *pgx.Conn) error {
		return conn.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&inRecovery)
	})
	if err != nil {
		return "", fmt.Errorf("hatest: role of %s: %w", n.Name, err)
	}
	if inRecovery {
		return RoleReplica, nil
	}
	return RolePrimary, nil
}

// LSN returns the node's WAL position: the current write position on a
// primary, the last replayed position on a replica.
func (n *PostgresNode) LSN(ctx context.Context) (LSN, error) {
	var s string
	err := n.conn(ctx, func(conn *pgx.Conn) error {
		return conn.QueryRow(ctx, `SELECT CASE WHEN pg_is_in_recovery()
			THEN coalesce(pg_last_wal_replay_lsn(), '0/0') ELSE pg_current_wal_lsn() END::text`).Scan(&s)
	})
	if err != nil {
		return 0, fmt.Errorf("hatest: LSN of %s: %w", n.Name, err)
	}
	return ParseLSN(s)
}

// Timeline returns the node's timeline: the one it writes on as a primary,
// the one it receives as a replica (0 while it receives nothing).
func (n *PostgresNode) Timeline(ctx context.Context) (int, error) {
	var tli int
	err := n.conn(ctx, func(conn *pgx.Conn) error {
		var inRecovery bool
		if err := conn.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&inRecovery); err != nil {
			return err
		}
		if inRecovery {
			err := conn.QueryRow(ctx, "SELECT coalesce(max(received_tli), 0) FROM pg_stat_wal_receiver").Scan(&tli)
			return err
		}
		var hex string
		if err := conn.QueryRow(ctx, "SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)").Scan(&hex); err != nil {
			return err
		}
		v, err := strconv.ParseUint(hex, 16, 32)
		tli = int(v)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("hatest: timeline of %s: %w", n.Name, err)
	}
	return tli, nil
}

// WaitReplay waits until the node has replayed WAL up to lsn.
func (n *PostgresNode) WaitReplay(ctx context.Context, lsn LSN) error {
	for {
		got, err := n.LSN(ctx)
		if err == nil && got >= lsn {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("hatest: %s did not replay up to %s (at %s, last error %v): %w", n.Name, lsn, got, err, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Exec runs one SQL statement on the node, as the postgres superuser in the
// postgres database.
func (n *PostgresNode) Exec(ctx context.Context, sql string, args ...any) error {
	return pgExec(ctx, n.DSN(), sql, args...)
}

// Describe lists the columns and indexes of the public schema of database
// on the node, one line each, sorted: two databases built from different
// DDL (migrations and a Schema function, say) can be compared.
func (n *PostgresNode) Describe(ctx context.Context, database string) ([]string, error) {
	var out []string
	err := pgConn(ctx, n.DSNFor(database), func(conn *pgx.Conn) error {
		rows, err := conn.Query(ctx, `
SELECT table_name || '.' || column_name || ' ' || data_type || ' ' || is_nullable || ' ' || coalesce(column_default, '')
	FROM information_schema.columns WHERE table_schema = 'public'
UNION ALL
SELECT indexdef FROM pg_indexes WHERE schemaname = 'public'
ORDER BY 1`)
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, pgx.RowTo[string])
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("hatest: describe %s on %s: %w", database, n.Name, err)
	}
	return out, nil
}

func (n *PostgresNode) conn(ctx context.Context, fn func(*pgx.Conn) error) error {
	return pgConn(ctx, n.DSN(), fn)
}

// pgConn runs fn on a fresh connection made with dsn. Connecting gives up
// after 5s, so a paused server cannot hang the caller beyond that.
func pgConn(ctx context.Context, dsn string, fn func(*pgx.Conn) error) error {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return err
	}
	cfg.ConnectTimeout = 5 * time.Second
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	return fn(conn)
}

func pgExec(ctx context.Context, dsn string, sql string, args ...any) error {
	return pgConn(ctx, dsn, func(conn *pgx.Conn) error {
		_, err := conn.Exec(ctx, sql, args...)
		return err
	})
}

// walReceiverStreaming returns nil if the server at dsn streams WAL from a
// primary.
func walReceiverStreaming(ctx context.Context, dsn string) error {
	var status string
	err := pgConn(ctx, dsn, func(conn *pgx.Conn) error {
		return conn.QueryRow(ctx, "SELECT coalesce((SELECT status FROM pg_stat_wal_receiver), 'none')").Scan(&status)
	})
	if err != nil {
		return err
	}
	if status != "streaming" {
		return fmt.Errorf("WAL receiver is %q, not streaming", status)
	}
	return nil
}

// conninfo is the libpq key/value connection string replicas and pg_rewind
// use to reach this node.
func (n *PostgresNode) conninfo() string {
	s := fmt.Sprintf("host=127.0.0.1 port=%d user=postgres dbname=postgres", n.Port)
	if n.password != "" {
		s += " password='" + strings.NewReplacer(`\`, `\\`, "'", `\'`).Replace(n.password) + "'"
	}
	return s
}

// args sets the node's own settings on the command line: they win over the
// configuration files, which pg_basebackup and pg_rewind copy from another
// node.
func (n *PostgresNode) args() []string {
	return []string{"-D", n.DataDir,
		"-c", "port=" + strconv.Itoa(n.Port),
		"-c", "listen_addresses=127.0.0.1",
		"-c", "unix_socket_directories=" + filepath.Dir(n.DataDir),
		"-c", "cluster_name=" + n.Name,
	}
}

func (n *PostgresNode) initdb(ctx context.Context, settings map[string]string) error {
	initdb, err := pgBinary("initdb")
	if err != nil {
		return err
	}
	args := []string{"-D", n.DataDir, "-U", "postgres", "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"}
	if n.password == "" {
		args = append(args, "--auth=trust")
	} else {
		pwfile := filepath.Join(filepath.Dir(n.DataDir), "pwfile")
		if err := os.WriteFile(pwfile, []byte(n.password+"\n"), 0o600); err != nil {
			return fmt.Errorf("hatest: %w", err)
		}
		if n.cred != nil {
			_ = os.Chown(pwfile, int(n.cred.Uid), int(n.cred.Gid))
		}
		defer os.Remove(pwfile)
		args = append(args, "--auth-local=trust", "--auth-host=scram-sha-256", "--pwfile="+pwfile)
	}
	out, err := runAs(ctx, n.cred, nil, initdb, args...)
	if err != nil {
		return fmt.Errorf("hatest: initdb %s: %w\n%s", n.Name, err, out)
	}
	var b strings.Builder
	b.WriteString("\n# hatest\n")
	for _, k := range slices.Sorted(maps.Keys(settings)) {
		fmt.Fprintf(&b, "%s = %s\n", k, settings[k])
	}
	f, err := os.OpenFile(filepath.Join(n.DataDir, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("hatest: %w", err)
	}
	defer f.Close()
	if _, err := f.WriteString(b.String()); err != nil {
		return fmt.Errorf("hatest: %w", err)
	}
	return nil
}

func (n *PostgresNode) basebackup(ctx context.Context, from *PostgresNode) error {
	bb, err := pgBinary("pg_basebackup")
	if err != nil {
		return err
	}
	out, err := runAs(ctx, n.cred, []string{"PGPASSWORD=" + n.password}, bb, "-h", "127.0.0.1", "-p", strconv.Itoa(from.Port), "-U", "postgres",
		"-D", n.DataDir, "-R", "-X", "stream", "-c", "fast", "--no-sync")
	if err != nil {
		return fmt.Errorf("hatest: pg_basebackup %s from %s: %w\n%s", n.Name, from.Name, err, out)
	}
	return nil
}

// startFresh starts a node for the first time on a free port, trying other
// ports if the one it got was taken in the meantime.
func (n *PostgresNode) startFresh(ctx context.Context) error {
	return n.d.startOnFreePorts(1, func(ports []int) error {
		n.Port = ports[0]
		n.d.args = n.args()
		return nil
	}, func() error { return n.waitAccepting(ctx) })
}

func (n *PostgresNode) waitAccepting(ctx context.Context) error {
	return n.d.waitReady(ctx, n.timeout, func(ctx context.Context) error {
		return n.conn(ctx, func(conn *pgx.Conn) error { return conn.Ping(ctx) })
	})
}

// waitStreaming waits until the node's WAL receiver streams.
func (n *PostgresNode) waitStreaming(ctx context.Context) error {
	return n.d.waitReady(ctx, n.timeout, func(ctx context.Context) error {
		return walReceiverStreaming(ctx, n.DSN())
	})
}

// waitSenders waits until the node streams to n replicas and, when sync is
// set, counts them as synchronous candidates (which happens only after a
// standby's first reply).
func (n *PostgresNode) waitSenders(ctx context.Context, replicas int, sync bool) error {
	return n.d.waitReady(ctx, n.timeout, func(ctx context.Context) error {
		var streaming, synchronous int
		err := n.conn(ctx, func(conn *pgx.Conn) error {
			return conn.QueryRow(ctx, `SELECT count(*) FILTER (WHERE state = 'streaming'),
				count(*) FILTER (WHERE state = 'streaming' AND sync_state IN ('sync', 'quorum'))
				FROM pg_stat_replication`).Scan(&streaming, &synchronous)
		})
		switch {
		case err != nil:
			return err
		case streaming < replicas:
			return fmt.Errorf("%d of %d replicas streaming", streaming, replicas)
		case sync && replicas > 0 && synchronous == 0:
			return errors.New("no synchronous standby yet")
		}
		return nil
	})
}

// runAs runs a one-shot program as cred's user (or the current user), with
// env added to the environment, and returns its combined output.
func runAs(ctx context.Context, cred *syscall.Credential, env []string, path string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGKILL}
	cmd.Dir = "/"
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	return string(out), err
}
