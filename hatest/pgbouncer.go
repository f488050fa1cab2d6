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

	"github.com/jackc/pgx/v5"
)

// PgBouncerOptions configures the PgBouncer started by [StartPgBouncer] or
// [NewPgBouncer].
type PgBouncerOptions struct {
	// Server is the host:port of the PostgreSQL server PgBouncer pools
	// connections to (a PostgresNode's Addr). Required. Every database
	// name a client asks for is forwarded to the database of the same
	// name on it.
	Server string

	// PoolMode is "transaction" (a server connection per transaction:
	// what PgBouncer is used for), "session" or "statement". Defaults to
	// "transaction".
	PoolMode string

	// PoolSize is default_pool_size: the most server connections per
	// database and user. Defaults to 20, PgBouncer's own default.
	PoolSize int

	// MaxClientConn is max_client_conn: the most client connections.
	// Defaults to 1000.
	MaxClientConn int

	// Settings are extra [pgbouncer] settings that override the
	// harness's, e.g. {"query_wait_timeout": "5"}.
	Settings map[string]string

	// StartTimeout bounds the start and each later Start. Defaults to
	// 30s.
	StartTimeout time.Duration
}

// PgBouncer is a PgBouncer (Debian's pgbouncer) on 127.0.0.1 in front of
// one PostgreSQL server, with trust authentication like the harness's
// PostgreSQL. Its admin console (the "pgbouncer" database) answers
// [PgBouncer.Show].
type PgBouncer struct {
	// Port is PgBouncer's TCP port on 127.0.0.1.
	Port int
	// Server is the host:port of the PostgreSQL server behind it.
	Server string

	d         *daemon
	dir       string
	conf      string
	timeout   time.Duration
	closeOnce sync.Once
}

// StartPgBouncer starts PgBouncer in front of opts.Server and waits until
// a query through it reaches the server. As root it runs as the postgres
// user (PgBouncer refuses to run as root). The caller must Close it; tests
// use [NewPgBouncer].
func StartPgBouncer(ctx context.Context, opts PgBouncerOptions) (_ *PgBouncer, err error) {
	if opts.Server == "" {
		return nil, errors.New("hatest: PgBouncerOptions.Server is empty: give the PostgreSQL server's host:port")
	}
	host, port, ok := strings.Cut(opts.Server, ":")
	if _, perr := strconv.Atoi(port); !ok || host == "" || perr != nil {
		return nil, fmt.Errorf("hatest: PgBouncerOptions.Server %q is not host:port", opts.Server)
	}
	defaultTo(&opts.PoolMode, "transaction")
	switch opts.PoolMode {
	case "transaction", "session", "statement":
	default:
		return nil, fmt.Errorf("hatest: PgBouncerOptions.PoolMode %q: want transaction, session or statement", opts.PoolMode)
	}
	if opts.PoolSize < 0 || opts.MaxClientConn < 0 {
		return nil, fmt.Errorf("hatest: PgBouncerOptions: PoolSize (%d) and MaxClientConn (%d) must be >= 0", opts.PoolSize, opts.MaxClientConn)
	}
	defaultTo(&opts.PoolSize, 20)
	defaultTo(&opts.MaxClientConn, 1000)
	defaultTo(&opts.StartTimeout, 30*time.Second)
	bin, err := binary("pgbouncer", "pgbouncer")
	if err != nil {
		return nil, err
	}
	cred, err := serviceUser()
	if err != nil {
		return nil, err
	}
	dir, err := runDir("pgbouncer")
	if err != nil {
		return nil, err
	}
	b := &PgBouncer{Server: opts.Server, dir: dir, conf: filepath.Join(dir, "pgbouncer.ini"), timeout: opts.StartTimeout}
	defer func() {
		if err != nil {
			b.Close()
		}
	}()
	// Trust authentication still wants the user in the auth file.
	users := filepath.Join(dir, "userlist.txt")
	if err := os.WriteFile(users, []byte(`"postgres" ""`+"\n"), 0o644); err != nil {
		return nil, fmt.Errorf("hatest: %w", err)
	}
	settings := map[string]string{
		"listen_addr":       "127.0.0.1",
		"unix_socket_dir":   "",
		"auth_type":         "trust",
		"auth_file":         users,
		"pool_mode":         opts.PoolMode,
		"default_pool_size": strconv.Itoa(opts.PoolSize),
		"max_client_conn":   strconv.Itoa(opts.MaxClientConn),
		"admin_users":       "postgres",
		"stats_users":       "postgres",
		// pgx sends none of these, other drivers do.
		"ignore_startup_parameters": "extra_float_digits",
		// A dead server is noticed within seconds, and a restarted one
		// is tried again after 1s, not PgBouncer's 15s.
		"server_connect_timeout": "2",
		"server_login_retry":     "1",
		"query_wait_timeout":     "10",
		"log_connections":        "0",
		"log_disconnections":     "0",
	}
	maps.Copy(settings, opts.Settings)
	b.d = &daemon{name: "pgbouncer", path: bin, args: []string{b.conf}, dir: dir, logPath: filepath.Join(dir, "pgbouncer.log"), cred: cred}
	ctx, cancel := context.WithTimeout(ctx, opts.StartTimeout)
	defer cancel()
	err = b.d.startOnFreePorts(1, func(ports []int) error {
		b.Port = ports[0]
		var conf strings.Builder
		fmt.Fprintf(&conf, "[databases]\n* = host=%s port=%s\n\n[pgbouncer]\nlisten_port = %d\n", host, port, b.Port)
		for _, k := range slices.Sorted(maps.Keys(settings)) {
			fmt.Fprintf(&conf, "%s = %s\n", k, settings[k])
		}
		if err := os.WriteFile(b.conf, []byte(conf.String()), 0o644); err != nil {
			return fmt.Errorf("hatest: %w", err)
		}
		return nil
	}, func() error { return b.waitReady(ctx) })
	if err != nil {
		return nil, err
	}
	return b, nil
}

// waitReady waits until a query through PgBouncer reaches the server.
func (b *PgBouncer) waitReady(ctx context.Context) error {
	return b.d.waitReady(ctx, b.timeout, func(ctx context.Context) error {
		conn, err := pgx.Connect(ctx, b.DSN("postgres")+"&default_query_exec_mode=simple_protocol")
		if err != nil {
			return err
		}
		defer conn.Close(context.Background())
		return conn.QueryRow(ctx, "SELECT 1").Scan(new(int))
	})
}

// Addr returns PgBouncer's host:port.
func (b *PgBouncer) Addr() string { return hostPort(b.Port) }

// DSN returns a connection string (a URL, without TLS) for database
// through PgBouncer, as the postgres user. It sets no query execution mode: in transaction pooling
// mode pgx's default (a named prepared statement per query, cached per
// connection) fails, since consecutive transactions may run on different
// server connections; add default_query_exec_mode=exec (or
// cache_describe, or simple_protocol) for that.
func (b *PgBouncer) DSN(database string) string {
	return fmt.Sprintf("postgres://postgres@%s/%s?sslmode=disable", b.Addr(), database)
}

// Show runs SHOW what (POOLS, SERVERS, CLIENTS, STATS, DATABASES, …) on
// PgBouncer's admin console and returns its rows as column → value.
func (b *PgBouncer) Show(ctx context.Context, what string) ([]map[string]string, error) {
	conn, err := pgx.Connect(ctx, b.DSN("pgbouncer")+"&default_query_exec_mode=simple_protocol")
	if err != nil {
		return nil, fmt.Errorf("hatest: pgbouncer admin console: %w", err)
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, "SHOW "+what)
	if err != nil {
		return nil, fmt.Errorf("hatest: pgbouncer SHOW %s: %w", what, err)
	}
	defer rows.Close()
	var out []map[string]string
	for rows.Next() {
		vals, err := rows.Values()
		if err != nil {
			return nil, fmt.Errorf("hatest: pgbouncer SHOW %s: %w", what, err)
		}
		row := map[string]string{}
		for i, f := range rows.FieldDescriptions() {
			if vals[i] != nil {
				row[f.Name] = fmt.Sprint(vals[i])
			}
		}
		out = append(out, row)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("hatest: pgbouncer SHOW %s: %w", what, err)
	}
	return out, nil
}

// ServerConns returns how many connections PgBouncer holds to its server
// (active, idle, used, tested and logging in), from SHOW POOLS.
func (b *PgBouncer) ServerConns(ctx context.Context) (int, error) {
	pools, err := b.Show(ctx, "POOLS")
	if err != nil {
		return 0, err
	}
	n := 0
	for _, p := range pools {
		if p["database"] == "pgbouncer" {
			continue
		}
		for _, col := range []string{"sv_active", "sv_idle", "sv_used", "sv_tested", "sv_login"} {
			v, _ := strconv.Atoi(p[col])
			n += v
		}
	}
	return n, nil
}

// Close stops PgBouncer and removes its directory. It is safe to call more
// than once.
func (b *PgBouncer) Close() error {
	var errs []error
	b.closeOnce.Do(func() {
		if b.d != nil {
			errs = append(errs, b.d.kill())
		}
		errs = append(errs, os.RemoveAll(b.dir))
	})
	return errors.Join(errs...)
}

// Kill SIGKILLs PgBouncer: every client connection drops at once.
func (b *PgBouncer) Kill() error { return b.d.kill() }

// Start starts a killed PgBouncer again on the same port and waits until
// a query through it reaches the server.
func (b *PgBouncer) Start(ctx context.Context) error {
	if err := b.d.start(); err != nil {
		return err
	}
	return b.waitReady(ctx)
}

// Pause stops PgBouncer with SIGSTOP: it hangs with its connections open.
func (b *PgBouncer) Pause() error { return b.d.signal(syscall.SIGSTOP) }

// Resume continues a PgBouncer stopped by Pause.
func (b *PgBouncer) Resume() error { return b.d.signal(syscall.SIGCONT) }

// Pid returns PgBouncer's process id.
func (b *PgBouncer) Pid() int { return b.d.pid() }

// LogPath returns the path of PgBouncer's log.
func (b *PgBouncer) LogPath() string { return b.d.logPath }

// NewPgBouncer starts a PgBouncer for the test (see [StartPgBouncer]) and
// stops it when the test ends, pass or fail.
func NewPgBouncer(t testing.TB, opts PgBouncerOptions) *PgBouncer {
	t.Helper()
	skipUnlessServices(t)
	b, err := StartPgBouncer(context.Background(), opts)
	return register(t, b, err, func() string {
		return "--- pgbouncer (" + b.LogPath() + "):\n" + b.d.logTail(20) + "\n"
	})
}
