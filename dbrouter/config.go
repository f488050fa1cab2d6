package dbrouter

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Config configures a [Router]. Only Nodes is required; every other field
// documents its default.
type Config struct {
	// Nodes are connection strings for the cluster's nodes, in any form
	// pgx accepts (postgres:// URLs or key=value). A string naming
	// several hosts ("postgres://u@a:5432,b:5432/db" or "host=a,b")
	// stands for one node per host. Order does not matter: the router
	// finds out which node is the primary. target_session_attrs is
	// ignored, since the router routes by itself.
	Nodes []string

	// MaxLag is how far behind the primary a replica may be and still
	// serve reads: as of its last probe, it lacked no transaction
	// committed on the primary more than MaxLag before (until its next
	// probe, up to a ProbeInterval later, it may fall further behind).
	// Defaults to 1s.
	//
	// A replica's lag, as the router measures it, is an upper bound of the
	// age of the oldest transaction it has not replayed, as of its last
	// probe: the lesser of the age of the last transaction it replayed
	// (which overstates a lot after an idle primary: the whole idle time)
	// and the time since the router last saw the primary's insert
	// position at or before the replica's replay position (about one
	// ProbeInterval more than the true lag). While a primary is known, a
	// replica that has replayed all it received is not taken as caught
	// up, since one that receives nothing has too: a healthy replica reads
	// up to about a ProbeInterval (less when the primary commits often),
	// one that stopped receiving grows from when it did. The second bound
	// needs a known primary, the router's short history of its positions
	// to reach back to the replica's position, and a replica whose last
	// restartpoint is on the primary's timeline: after a failover, until
	// the replica's first restartpoint on the new timeline (at most
	// checkpoint_timeout), only the first applies, and while the new
	// primary commits nothing for more than MaxLag its replicas serve no
	// reads.
	//
	// The lag reads less than the truth only in these cases: while no
	// primary is known, a replica that has replayed all it received reads
	// 0, so that reads go on from the replicas during a failover or while
	// the primary hangs (wrong only if the primary is in fact committing
	// behind a partition that cuts the replica off too); the first bound
	// takes the replica's clock to agree with the primary's; a replica
	// that has replayed no transaction since it started has no first
	// bound (0 unless the second applies); and timelines are told apart by
	// number, so two promotions to the same timeline number (without a
	// shared WAL archive) look like one.
	MaxLag time.Duration

	// ReplicaWait is how long a Read that must see a given LSN (see
	// [WithMinLSN]) waits for a replica to replay it before it reads
	// from the primary instead. Defaults to 50ms.
	ReplicaWait time.Duration

	// FailoverTimeout bounds how long a Write waits for a primary when
	// none is known, and how long the outcome of a commit whose
	// connection was lost may take to resolve. Defaults to 30s. The
	// caller's context still applies.
	FailoverTimeout time.Duration

	// ProbeInterval is how often each node is probed when all is well.
	// Defaults to 500ms.
	ProbeInterval time.Duration

	// FastProbeInterval is how often nodes are probed while no primary is
	// known, while callers wait for one, and after work on a node failed,
	// so a promotion is seen within it. Defaults to 10ms.
	FastProbeInterval time.Duration

	// ProbeTimeout is how long a probe may take. A node whose probe fails
	// or times out counts as down: nothing new is sent to it, and work in
	// flight on it is cancelled (a hung node must not hold callers).
	// Defaults to 1s.
	ProbeTimeout time.Duration

	// ConnectTimeout applies to every connection to a node whose
	// connection string sets none. Defaults to 2s.
	ConnectTimeout time.Duration

	// MaxAttempts bounds how often a Write runs its function when the
	// database asks for a retry (serialization failure, deadlock).
	// Attempts that fail because the primary is lost do not count: those
	// are bounded by FailoverTimeout. Defaults to 10.
	MaxAttempts int

	// ConfigurePool, if set, is called with each node's pool
	// configuration before the pool is made: pool sizes, lifetimes,
	// tracers, AfterConnect, BeforeClose. The router sets PrepareConn
	// after it (do not set it here), and calls a BeforeClose set here
	// after its own.
	ConfigurePool func(node string, cfg *pgxpool.Config)

	// Logger receives role changes, failovers and fencing. Defaults to
	// slog.Default().
	Logger *slog.Logger
}

// withDefaults returns a copy of c with zero fields set to their defaults.
func (c Config) withDefaults() Config {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.MaxLag, time.Second)
	def(&c.ReplicaWait, 50*time.Millisecond)
	def(&c.FailoverTimeout, 30*time.Second)
	def(&c.ProbeInterval, 500*time.Millisecond)
	def(&c.FastProbeInterval, 10*time.Millisecond)
	def(&c.ProbeTimeout, time.Second)
	def(&c.ConnectTimeout, 2*time.Second)
	if c.MaxAttempts == 0 {
		c.MaxAttempts = 10
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// maxNodes is the most nodes a router handles (reads track the nodes they
// tried in a 64-bit set).
const maxNodes = 64

// nodeConfig is one node parsed from Config.Nodes.
type nodeConfig struct {
	name string
	pool *pgxpool.Config
}

// validate checks c (with defaults applied) and parses its nodes. The error
// lists every problem at once.
func (c Config) validate() ([]nodeConfig, error) {
	var errs []error
	if len(c.Nodes) == 0 {
		errs = append(errs, errors.New("no nodes: Config.Nodes is empty; give the connection string of every node"))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"MaxLag", c.MaxLag}, {"ReplicaWait", c.ReplicaWait}, {"FailoverTimeout", c.FailoverTimeout},
		{"ProbeInterval", c.ProbeInterval}, {"FastProbeInterval", c.FastProbeInterval},
		{"ProbeTimeout", c.ProbeTimeout}, {"ConnectTimeout", c.ConnectTimeout},
	} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("negative Config.%s (%s)", d.name, d.v))
		}
	}
	if c.MaxAttempts < 0 {
		errs = append(errs, fmt.Errorf("negative Config.MaxAttempts (%d)", c.MaxAttempts))
	}
	var nodes []nodeConfig
	seen := map[string]int{}
	for i, dsn := range c.Nodes {
		pc, err := pgxpool.ParseConfig(dsn)
		if err != nil {
			// pgx's parse errors quote the string with its password
			// masked.
			errs = append(errs, fmt.Errorf("Config.Nodes[%d]: %w", i, err))
			continue
		}
		for _, h := range expandHosts(pc) {
			if h.ConnConfig.ConnectTimeout == 0 {
				h.ConnConfig.ConnectTimeout = c.ConnectTimeout
			}
			name := net.JoinHostPort(h.ConnConfig.Host, strconv.Itoa(int(h.ConnConfig.Port)))
			if j, dup := seen[name]; dup {
				errs = append(errs, fmt.Errorf("Config.Nodes[%d]: node %s is already given by Config.Nodes[%d]", i, name, j))
				continue
			}
			seen[name] = i
			nodes = append(nodes, nodeConfig{name: name, pool: h})
		}
	}
	if len(nodes) > maxNodes {
		errs = append(errs, fmt.Errorf("Config.Nodes names %d nodes; at most %d are supported", len(nodes), maxNodes))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("dbrouter: bad config: %w", err)
	}
	return nodes, nil
}

// expandHosts splits a config naming several hosts into one config per
// host, without session-attribute checks. Fallbacks to the same host and
// port (pgx's sslmode=prefer makes a TLS and a plain one) stay together.
func expandHosts(pc *pgxpool.Config) []*pgxpool.Config {
	base := pc.ConnConfig
	all := append([]*pgconn.FallbackConfig{{Host: base.Host, Port: base.Port, TLSConfig: base.TLSConfig}}, base.Fallbacks...)
	var out []*pgxpool.Config
	byAddr := map[string]*pgxpool.Config{}
	for _, f := range all {
		addr := net.JoinHostPort(f.Host, strconv.Itoa(int(f.Port)))
		if c, ok := byAddr[addr]; ok {
			c.ConnConfig.Fallbacks = append(c.ConnConfig.Fallbacks, f)
			continue
		}
		c := pc.Copy()
		c.ConnConfig.Host, c.ConnConfig.Port, c.ConnConfig.TLSConfig = f.Host, f.Port, f.TLSConfig
		c.ConnConfig.Fallbacks = nil
		// The router decides where a session goes; a per-connection
		// check (target_session_attrs) would only turn its choice into
		// connection errors.
		c.ConnConfig.ValidateConnect = nil
		byAddr[addr] = c
		out = append(out, c)
	}
	return out
}

// connConfigFor returns a copy of a node's connection config for the
// prober's own connection.
func connConfigFor(pc *pgxpool.Config) *pgx.ConnConfig { return pc.ConnConfig.Copy() }
