package dbrouter

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Role is what a node is, as the router sees it.
type Role string

// The roles a node can have.
const (
	RoleUnknown Role = "unknown" // not probed yet
	RoleDown    Role = "down"    // the last probe failed
	RolePrimary Role = "primary" // writable, and the one writes go to
	RoleReplica Role = "replica" // in recovery: streams from a primary
	RoleFenced  Role = "fenced"  // writable, but another primary is on a higher timeline: nothing goes to it
)

// probe is what one probe of a node found.
type probe struct {
	ok       bool
	primary  bool // not in recovery
	timeline int  // primaries only
	lsn      LSN  // primary: insert position; replica: replay position
	// lag is what the router reports: see Router.replayLag, which sets it
	// before the probe is stored.
	lag time.Duration
	run int64 // pg_postmaster_start_time in µs: tells one run of the server from the next
	// behind: a replica that has received WAL it has not replayed.
	behind bool
	// age: a replica's now() - pg_last_xact_replay_timestamp(), the age of
	// the last transaction it replayed; ageKnown is false when it replayed
	// none since it started, or when the figure is negative (its clock is
	// behind the primary's).
	age      time.Duration
	ageKnown bool
	// recoveryEnd: a primary's pg_last_wal_replay_lsn (0 if its
	// processes began without a recovery).
	recoveryEnd LSN
	// checkpointTimeline: a replica's timeline of its last restartpoint
	// (pg_control_checkpoint, which any role may read): its replay has
	// followed that timeline.
	checkpointTimeline int
	walBlockSize       int // WAL page size (wal_block_size): see lsnHistory.bound
	err                error
	startedAt          time.Time
	took               time.Duration
}

// probeSQL reads everything the router needs in one round trip. The
// timeline of a primary comes from the name of its current WAL file
// (pg_walfile_name is not allowed during recovery, hence the CASE).
const probeSQL = `SELECT pg_is_in_recovery(),
  CASE WHEN pg_is_in_recovery() THEN coalesce(pg_last_wal_replay_lsn(), '0/0') ELSE pg_current_wal_insert_lsn() END::text,
  CASE WHEN pg_is_in_recovery() THEN 0 ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END,
  coalesce(pg_is_in_recovery() AND pg_last_wal_receive_lsn() > pg_last_wal_replay_lsn(), false),
  CASE WHEN pg_is_in_recovery() THEN extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8 END,
  (extract(epoch FROM pg_postmaster_start_time()) * 1000000)::int8,
  CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_last_wal_replay_lsn()::text END,
  CASE WHEN pg_is_in_recovery() THEN (SELECT timeline_id FROM pg_control_checkpoint()) ELSE 0 END,
  current_setting('wal_block_size')::int`

// node is one PostgreSQL server: its pool, what the prober last saw of it,
// and the bookkeeping for load balancing and fault handling.
type node struct {
	idx  int
	name string
	pool *pgxpool.Pool
	conn *pgx.ConnConfig // for the prober's own connection

	last atomic.Pointer[probe]
	role atomic.Value // Role, as of the last view
	// replayed is the highest replay LSN seen while a replica (probes and
	// read checks) in the run replicaRun names: a restarted node
	// (rewound, or replaying WAL of its own that the primary never had)
	// starts again from 0.
	replayed atomic.Uint64
	// replicaRun is the server run (postmaster start, µs) in which a probe
	// last found the node in recovery: if the node is a primary in that
	// same run, it was promoted during it, and the end of its recovery is
	// where it left its old timeline.
	replicaRun atomic.Int64
	// promotionEnd is the recovery end a probe first saw on the node as
	// a primary in the run replicaRun names: where its promotion left
	// the old timeline, unless its backends crash-restarted before that
	// probe (within one probe interval of the promotion). A backend
	// crash later in the run changes the node's recovery end, not its
	// start time, so resolve.go compares the two.
	promotionEnd atomic.Uint64
	promotionRun atomic.Int64
	inflight     atomic.Int64
	// suspectAt is when work on the node last failed with a connection
	// error (UnixNano; 0: not suspect). A probe started after it clears
	// it; until then nothing new is sent to the node.
	suspectAt atomic.Int64
	// cachedParams: a connection reported in_hot_standby on while
	// pg_is_in_recovery() on it said otherwise, as through a pooler that
	// replays the parameters of its first server connection (PgBouncer
	// before 1.20): prepareConn no longer trusts the parameter on this
	// node and leaves role changes to the probes.
	cachedParams atomic.Bool

	kick chan struct{} // probe now

	// conns are the states of the node's pooled connections (connState).
	// When the node is found down the sockets of those in use get a
	// deadline in the past, which ends the work in flight at once (a hung
	// node must not hold callers); downs counts those events. This costs
	// far less per query than binding every query to a cancellable
	// context: a query marks its connection in use and not, two atomic
	// stores; the set changes only when the pool opens or closes one.
	connsMu sync.Mutex
	conns   map[*connState]struct{}
	downs   atomic.Uint64

	probeConn *pgx.Conn // owned by the prober goroutine
}

func newNode(idx int, name string, pool *pgxpool.Pool, conn *pgx.ConnConfig) *node {
	n := &node{idx: idx, name: name, pool: pool, conn: conn, kick: make(chan struct{}, 1), conns: map[*connState]struct{}{}}
	n.role.Store(RoleUnknown)
	return n
}

func (n *node) currentRole() Role { return n.role.Load().(Role) }

// connState is what markDown needs to know of a pooled connection: whether
// it is in use. It is made on the connection's first use, kept in the
// connection's CustomData and in its node's set, and dropped from the set
// when the pool closes the connection (forget).
type connState struct {
	conn  *pgx.Conn
	inUse atomic.Bool
}

// connStateKey is the key of a connection's connState in its CustomData.
const connStateKey = "hakit.dev/dbrouter.connState"

// markDown ends the work in flight on the node.
func (n *node) markDown() {
	n.downs.Add(1)
	n.connsMu.Lock()
	defer n.connsMu.Unlock()
	for st := range n.conns {
		if st.inUse.Load() {
			_ = st.conn.PgConn().Conn().SetDeadline(time.Unix(1, 0))
		}
	}
}

// track marks a connection acquired from the node's pool in use, and
// returns its state (done marks it free again) and the count of downs, to
// tell later whether the node was found down meanwhile. A markDown that
// does not see the connection in use ran after its probe was recorded
// (record stores n.last before it calls markDown), and the atomics are
// sequentially consistent: track then sees that failed probe (or a newer
// one) and cuts the connection itself.
func (n *node) track(c *pgx.Conn) (*connState, uint64) {
	cd := c.PgConn().CustomData()
	st, _ := cd[connStateKey].(*connState)
	if st == nil {
		st = &connState{conn: c}
		cd[connStateKey] = st
		n.connsMu.Lock()
		n.conns[st] = struct{}{}
		n.connsMu.Unlock()
	}
	st.inUse.Store(true)
	downs := n.downs.Load()
	if p := n.last.Load(); p != nil && !p.ok {
		// Found down between the pick and now.
		_ = c.PgConn().Conn().SetDeadline(time.Unix(1, 0))
	}
	return st, downs
}

// done marks the connection free: a later markDown leaves it alone.
func (st *connState) done() { st.inUse.Store(false) }

// forget drops a connection the pool closes from the node's set (the
// pool's BeforeClose).
func (n *node) forget(c *pgx.Conn) {
	if st, ok := c.PgConn().CustomData()[connStateKey].(*connState); ok {
		n.connsMu.Lock()
		delete(n.conns, st)
		n.connsMu.Unlock()
	}
}

// downSince wraps err with errNodeDown if the node was found down since
// track returned downs.
func (n *node) downSince(downs uint64, err error) error {
	if err != nil && n.downs.Load() != downs {
		return fmt.Errorf("%w: %w", errNodeDown, err)
	}
	return err
}

// suspect marks the node as failing until a newer probe says otherwise.
func (n *node) suspect() { n.suspectAt.Store(time.Now().UnixNano()) }

func (n *node) isSuspect() bool { return n.suspectAt.Load() != 0 }

// raiseReplayed records that the node has replayed up to l.
func (n *node) raiseReplayed(l LSN) { atomicMax(&n.replayed, uint64(l)) }

// probeOnce asks the node for its state on the prober's own connection,
// (re)connecting when needed.
func (n *node) probeOnce(ctx context.Context, timeout time.Duration) *probe {
	p := &probe{startedAt: time.Now()}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if n.probeConn == nil || n.probeConn.IsClosed() {
		c, err := pgx.ConnectConfig(ctx, n.conn)
		if err != nil {
			p.err = err
			p.took = time.Since(p.startedAt)
			return p
		}
		n.probeConn = c
	}
	var inRecovery bool
	var lsn string
	var ageSeconds *float64
	var recovered *string
	err := n.probeConn.QueryRow(ctx, probeSQL).Scan(&inRecovery, &lsn, &p.timeline, &p.behind, &ageSeconds, &p.run, &recovered,
		&p.checkpointTimeline, &p.walBlockSize)
	p.took = time.Since(p.startedAt)
	if err == nil && recovered != nil {
		p.recoveryEnd, err = ParseLSN(*recovered)
	}
	if err == nil {
		var l LSN
		if l, err = ParseLSN(lsn); err == nil {
			p.ok, p.primary, p.lsn = true, !inRecovery, l
			if ageSeconds != nil && *ageSeconds >= 0 {
				p.age, p.ageKnown = time.Duration(*ageSeconds*float64(time.Second)), true
			}
			return p
		}
	}
	p.err = err
	n.closeProbeConn()
	return p
}

func (n *node) closeProbeConn() {
	if n.probeConn != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		_ = n.probeConn.Close(ctx)
		cancel()
		n.probeConn = nil
	}
}

// NodeStatus is what the router knows about one node.
type NodeStatus struct {
	Name     string        // host:port
	Role     Role          // as the router uses it
	Timeline int           // primaries: the timeline they write on
	LSN      LSN           // primary: insert position; replica: replay position
	Lag      time.Duration // replicas: an upper bound of their staleness, see Config.MaxLag
	InFlight int64         // reads and writes running on it now
	Probed   time.Time     // when the last probe started
	Err      error         // why the last probe failed, if it did
}

func (n *node) status() NodeStatus {
	s := NodeStatus{Name: n.name, Role: n.currentRole(), InFlight: n.inflight.Load()}
	if p := n.last.Load(); p != nil {
		s.Timeline, s.LSN, s.Lag, s.Probed, s.Err = p.timeline, p.lsn, p.lag, p.startedAt, p.err
	}
	return s
}

// String describes the status in one line.
func (s NodeStatus) String() string {
	out := s.Name + " " + string(s.Role)
	switch s.Role {
	case RolePrimary, RoleFenced:
		out += " timeline " + strconv.Itoa(s.Timeline) + " at " + s.LSN.String()
	case RoleReplica:
		out += " replayed " + s.LSN.String() + " lag " + s.Lag.Round(time.Millisecond).String()
	}
	if s.Err != nil {
		out += fmt.Sprintf(" (%v)", s.Err)
	}
	return out
}

// errorsJoinNodes joins the probe errors of nodes for a startup error.
func errorsJoinNodes(nodes []*node) error {
	var errs []error
	for _, n := range nodes {
		if p := n.last.Load(); p != nil && p.err != nil {
			errs = append(errs, nodeErr(n, p.err))
		}
	}
	return errors.Join(errs...)
}
