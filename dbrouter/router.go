package dbrouter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Router sends writes to the primary and reads to fresh replicas of one
// PostgreSQL cluster, and keeps doing so through failovers. It is safe for
// concurrent use. Make one per process with [New] and Close it at shutdown.
type Router struct {
	cfg   Config
	log   *slog.Logger
	nodes []*node

	mu       sync.Mutex // serialises view updates
	view     atomic.Pointer[view]
	waiters  atomic.Int64 // callers waiting for a primary: probe fast
	metrics  *metrics
	stop     context.CancelFunc
	wg       sync.WaitGroup
	closed   atomic.Bool
	noPrimAt time.Time // when the primary was lost (guarded by mu)
	// lastTimeline is the timeline of the last primary in a view
	// (guarded by mu).
	lastTimeline int
	// hist samples the current primary's insert position, for the
	// replicas' lag (guarded by mu).
	hist lsnHistory
}

// view is an immutable snapshot of where things go.
type view struct {
	primary  *node
	replicas []*node // fresh enough for reads
	// caughtUp are the replicas whose replay positions can be compared
	// with a read-your-writes position: see rywEligible.
	caughtUp []*node
	fenced   []*node
	changed  chan struct{} // closed when a newer view replaces this one
}

// New makes a router for the nodes in cfg: a connection pool per node
// (made lazily) and a prober per node. It probes every node once before it
// returns, so the first Write knows the primary.
//
// New fails when the configuration is invalid, when a node rejects the
// credentials or the database (a configuration error that no retry
// fixes), or when no node answers at all. A node that merely cannot be
// reached while others answer is logged and probed again: it may be
// rebooting.
func New(ctx context.Context, cfg Config) (*Router, error) {
	cfg = cfg.withDefaults()
	ncs, err := cfg.validate()
	if err != nil {
		return nil, err
	}
	r := &Router{cfg: cfg, log: cfg.Logger}
	r.hist.gap = min(cfg.ProbeInterval/4, maxSampleGap)
	for i, nc := range ncs {
		n := newNode(i, nc.name, nil, connConfigFor(nc.pool))
		// A pooled connection idle for a while is pinged before use; on a
		// hung node the ping must not wait for the caller's deadline.
		nc.pool.PingTimeout = cfg.ProbeTimeout
		if cfg.ConfigurePool != nil {
			cfg.ConfigurePool(nc.name, nc.pool)
		}
		nc.pool.PrepareConn = r.prepareConn(n)
		userClose := nc.pool.BeforeClose
		nc.pool.BeforeClose = func(c *pgx.Conn) {
			n.forget(c)
			if userClose != nil {
				userClose(c)
			}
		}
		pool, err := pgxpool.NewWithConfig(context.Background(), nc.pool)
		if err != nil {
			r.closeNodes()
			return nil, fmt.Errorf("dbrouter: node %s: %w", nc.name, err)
		}
		n.pool = pool
		r.nodes = append(r.nodes, n)
	}
	r.metrics = newMetrics(r)
	r.view.Store(&view{changed: make(chan struct{})})

	// The first probe of every node, in parallel.
	var wg sync.WaitGroup
	for _, n := range r.nodes {
		wg.Go(func() { r.record(n, n.probeOnce(ctx, cfg.ConnectTimeout+cfg.ProbeTimeout)) })
	}
	wg.Wait()
	var authErrs []error
	reachable := 0
	for _, n := range r.nodes {
		p := n.last.Load()
		switch {
		case p.ok:
			reachable++
		case isAuthError(p.err):
			authErrs = append(authErrs, nodeErr(n, p.err))
		default:
			r.log.Warn("dbrouter: node unreachable at start; probing it again", "node", n.name, "err", p.err)
		}
	}
	if len(authErrs) > 0 {
		r.closeNodes()
		return nil, fmt.Errorf("dbrouter: a node refused the connection settings: %w", errors.Join(authErrs...))
	}
	if reachable == 0 {
		err := errorsJoinNodes(r.nodes)
		r.closeNodes()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("dbrouter: no node answered before the context ended: %w", errors.Join(ctx.Err(), err))
		}
		return nil, fmt.Errorf("dbrouter: no node answered: %w", err)
	}

	pctx, stop := context.WithCancel(context.Background())
	r.stop = stop
	for _, n := range r.nodes {
		r.wg.Go(func() { r.probeLoop(pctx, n) })
	}
	return r, nil
}

// Close stops the probers and closes every pool. Work in flight finishes
// first (pgxpool's Close waits for acquired connections to be released).
func (r *Router) Close() {
	if !r.closed.CompareAndSwap(false, true) {
		return
	}
	r.stop()
	r.wg.Wait()
	r.closeNodes()
	// Wake everyone waiting for a primary.
	r.mu.Lock()
	old := r.view.Load()
	r.view.Store(&view{changed: make(chan struct{})})
	close(old.changed)
	r.mu.Unlock()
}

func (r *Router) closeNodes() {
	for _, n := range r.nodes {
		n.closeProbeConn()
		if n.pool != nil {
			n.pool.Close()
		}
	}
}

// probeLoop probes n until ctx ends: every ProbeInterval, every
// FastProbeInterval while something is wrong, and at once when kicked.
func (r *Router) probeLoop(ctx context.Context, n *node) {
	t := time.NewTimer(r.interval(n))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			n.closeProbeConn()
			return
		case <-n.kick:
		case <-t.C:
		}
		r.record(n, n.probeOnce(ctx, r.cfg.ProbeTimeout))
		t.Reset(r.interval(n))
	}
}

func (r *Router) interval(n *node) time.Duration {
	v := r.view.Load()
	if v.primary == nil || r.waiters.Load() > 0 || n.isSuspect() {
		return r.cfg.FastProbeInterval
	}
	return r.cfg.ProbeInterval
}

// kickAll makes every prober probe now.
func (r *Router) kickAll() {
	for _, n := range r.nodes {
		select {
		case n.kick <- struct{}{}:
		default:
		}
	}
}

// failed records that work on n failed with a connection error: nothing
// new goes to n until a probe started after now says it is fine, and every
// node is probed at once (a failover may be under way).
func (r *Router) failed(n *node) {
	n.suspect()
	r.kickAll()
}

// record stores a probe result and recomputes the view.
func (r *Router) record(n *node, p *probe) {
	if r.closed.Load() {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	prev := n.last.Load()
	if prev != nil && prev.startedAt.After(p.startedAt) {
		return // an older probe finishing late
	}
	if p.ok && !p.primary {
		p.lag = r.replayLag(p)
	}
	n.last.Store(p)
	if s := n.suspectAt.Load(); s != 0 && p.ok && p.startedAt.UnixNano() > s {
		n.suspectAt.CompareAndSwap(s, 0)
	}
	if p.ok && !p.primary {
		if n.replicaRun.Swap(p.run) != p.run {
			n.replayed.Store(0)
		}
		n.raiseReplayed(p.lsn)
	}
	if p.ok && p.primary && p.run == n.replicaRun.Load() && n.promotionRun.Load() != p.run {
		// The first probe of the node as a primary in the run it was
		// seen in recovery: it was promoted, and its recovery end is
		// the switch point.
		n.promotionEnd.Store(uint64(p.recoveryEnd))
		n.promotionRun.Store(p.run)
	}
	if !p.ok && (prev == nil || prev.ok) {
		// Down: cancel what runs there, drop its pooled connections.
		n.markDown()
		n.pool.Reset()
	}
	r.recompute()
	if p.ok && p.primary && r.view.Load().primary == n {
		r.hist.add(n, p)
	}
}

// rywEligible reports whether a replica's replay position p.lsn can be
// compared with a read-your-writes position taken on a primary of
// timeline tl (the current primary's, or the last one's while there is
// none; 0 before any). LSNs of different histories cannot be compared:
// the old primary, back as a replica, first replays WAL of its own that
// the new primary never had, past the switch point, until it is rewound;
// a replica left on the old timeline by the promotion of a less advanced
// one has replayed past where the new timeline begins. A replica whose
// last restartpoint is on timeline tl has followed tl; one whose last
// restartpoint is on another timeline is not compared (after a failover
// that lasts until its first restartpoint on the new timeline, at most a
// checkpoint_timeout: reads with a position go to the primary meanwhile).
func rywEligible(p *probe, tl int) bool {
	if p == nil || !p.ok || p.primary {
		return false
	}
	return tl == 0 || p.checkpointTimeline == tl
}

// recompute derives the view from the nodes' last probes, logs and counts
// what changed, and wakes whoever waits for a change. Called with r.mu held.
func (r *Router) recompute() {
	old := r.view.Load()
	nv := &view{changed: make(chan struct{})}
	var primaries []*node
	for _, n := range r.nodes {
		p := n.last.Load()
		if p == nil || !p.ok {
			continue
		}
		if p.primary {
			primaries = append(primaries, n)
		} else if p.lag <= r.cfg.MaxLag {
			nv.replicas = append(nv.replicas, n)
		}
	}
	if len(primaries) > 0 {
		best := primaries[0]
		for _, n := range primaries[1:] {
			bp, np := best.last.Load(), n.last.Load()
			switch {
			case np.timeline > bp.timeline:
				best = n
			case np.timeline < bp.timeline:
			case n == old.primary: // equal timelines: keep the one in use
				best = n
			case best != old.primary && np.lsn > bp.lsn:
				best = n
			}
		}
		nv.primary = best
		for _, n := range primaries {
			if n != best {
				nv.fenced = append(nv.fenced, n)
			}
		}
	}

	// Roles, logs and metrics.
	for _, n := range r.nodes {
		role := RoleDown
		p := n.last.Load()
		switch {
		case p == nil:
			role = RoleUnknown
		case !p.ok:
		case n == nv.primary:
			role = RolePrimary
		case p.primary:
			role = RoleFenced
		default:
			role = RoleReplica
		}
		prev := n.currentRole()
		if role == prev {
			continue
		}
		n.role.Store(role)
		if prev == RoleUnknown && (role == RolePrimary || role == RoleReplica) {
			r.log.Info("dbrouter: node found", "node", n.name, "role", role)
			continue
		}
		if prev == RoleUnknown && role == RoleDown {
			continue // New reports it
		}
		r.metrics.roleChanges[n.idx].Inc()
		attrs := []any{"node", n.name, "from", prev, "to", role}
		if p != nil && p.ok {
			attrs = append(attrs, "timeline", p.timeline, "lsn", p.lsn.String())
		} else if p != nil {
			attrs = append(attrs, "err", p.err)
		}
		switch role {
		case RoleFenced:
			r.log.Error("dbrouter: split brain: node is writable but another primary is on a higher timeline; fenced off (no reads, no writes)",
				append(attrs, "primary", nv.primary.name)...)
		case RoleDown:
			r.log.Warn("dbrouter: node down", attrs...)
		default:
			r.log.Info("dbrouter: node role changed", attrs...)
		}
		if prev == RolePrimary && role != RolePrimary {
			// A demoted or fenced primary's pooled connections must not
			// be handed out again.
			n.pool.Reset()
		}
		if role == RoleReplica && prev != RoleReplica {
			n.replayed.Store(0) // a rewound node's old replay positions mean nothing
			if p != nil {
				n.raiseReplayed(p.lsn)
			}
		}
	}
	switch {
	case old.primary != nil && nv.primary == nil:
		r.noPrimAt = time.Now()
		r.log.Warn("dbrouter: no primary; writes wait for one", "was", old.primary.name, "failover_timeout", r.cfg.FailoverTimeout)
	case nv.primary != nil && nv.primary != old.primary:
		if old.primary != nil || !r.noPrimAt.IsZero() {
			r.metrics.failovers.Inc()
			attrs := []any{"primary", nv.primary.name, "timeline", nv.primary.last.Load().timeline}
			if old.primary != nil {
				attrs = append(attrs, "was", old.primary.name)
			}
			if !r.noPrimAt.IsZero() {
				attrs = append(attrs, "without_primary", time.Since(r.noPrimAt).Round(time.Millisecond))
			}
			r.log.Warn("dbrouter: new primary", attrs...)
		}
		r.noPrimAt = time.Time{}
	}
	if nv.primary != nil {
		r.lastTimeline = nv.primary.last.Load().timeline
	}
	for _, n := range nv.replicas {
		if rywEligible(n.last.Load(), r.lastTimeline) {
			nv.caughtUp = append(nv.caughtUp, n)
		}
	}
	r.view.Store(nv)
	close(old.changed)
}

// waitPrimary returns the primary, waiting for one (probing fast) until
// deadline or the end of ctx.
func (r *Router) waitPrimary(ctx context.Context, deadline time.Time) (*node, error) {
	var t *time.Timer
	defer func() {
		if t != nil {
			t.Stop()
			r.waiters.Add(-1)
		}
	}()
	for {
		if r.closed.Load() {
			return nil, ErrClosed
		}
		v := r.view.Load()
		if v.primary != nil && !v.primary.isSuspect() {
			return v.primary, nil
		}
		if t == nil {
			wait := time.Until(deadline)
			if wait <= 0 {
				return nil, ErrNoPrimary
			}
			t = time.NewTimer(wait)
			r.waiters.Add(1)
			r.kickAll()
		}
		select {
		case <-v.changed:
		case <-t.C:
			return nil, fmt.Errorf("%w within the failover timeout (%s)", ErrNoPrimary, r.cfg.FailoverTimeout)
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: %w", ErrNoPrimary, ctx.Err())
		}
	}
}

// acquire takes a pooled connection on n. A server at max_connections
// refuses new ones (SQLSTATE 53300) while the pool may hold connections
// that are about to come free: then, as long as the pool has connections
// (in use, idle, or being made), it waits for one, with backoff, until ctx ends or deadline
// passes, and the refusal stays in the error. A pool with none in use has
// nothing to wait for: the refusal is returned at once.
func (r *Router) acquire(ctx context.Context, n *node, deadline time.Time) (*pgxpool.Conn, error) {
	var full error
	for try := 0; ; try++ {
		conn, err := n.pool.Acquire(ctx)
		if err == nil {
			return conn, nil
		}
		if !isServerFull(err) {
			if full != nil {
				err = errors.Join(err, full)
			}
			return nil, err
		}
		if n.pool.Stat().TotalConns() == 0 {
			return nil, err // no connection of the pool's own to wait for
		}
		if full == nil {
			r.metrics.fullWaits.Inc()
		}
		full = err
		if !time.Now().Before(deadline) {
			return nil, fmt.Errorf("dbrouter: no connection came free within %s: %w", r.cfg.FailoverTimeout, full)
		}
		d := min(time.Duration(1<<min(try, 5))*time.Millisecond, 50*time.Millisecond, time.Until(deadline))
		t := time.NewTimer(d/2 + rand.N(d/2+1))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("dbrouter: waiting for a connection: %w: %w", ctx.Err(), full)
		}
	}
}

// pick chooses among candidates by the power of two choices: of two at
// random, the one with less work in flight.
func pick(cands []*node) *node {
	switch len(cands) {
	case 0:
		return nil
	case 1:
		return cands[0]
	}
	i := rand.IntN(len(cands))
	j := rand.IntN(len(cands) - 1)
	if j >= i {
		j++
	}
	a, b := cands[i], cands[j]
	if b.inflight.Load() < a.inflight.Load() {
		return b
	}
	return a
}

// Primary returns the pool of the current primary, for what Write does not
// cover (COPY, LISTEN, long sessions). Nothing is retried on it. It fails
// with ErrNoPrimary when none is known right now.
func (r *Router) Primary() (*pgxpool.Pool, error) {
	if r.closed.Load() {
		return nil, ErrClosed
	}
	if p := r.view.Load().primary; p != nil {
		return p.pool, nil
	}
	return nil, ErrNoPrimary
}

// Replica returns the pool of a replica fresh enough for reads (within
// Config.MaxLag), or the primary's when there is none. It does not wait
// for a read-your-writes position: use Read for that.
func (r *Router) Replica() (*pgxpool.Pool, error) {
	if r.closed.Load() {
		return nil, ErrClosed
	}
	v := r.view.Load()
	if n := pick(healthy(v.replicas, 0)); n != nil {
		return n.pool, nil
	}
	if v.primary != nil {
		return v.primary.pool, nil
	}
	return nil, ErrNoNode
}

// Status returns what the router knows about each node, in the order of
// Config.Nodes.
func (r *Router) Status() []NodeStatus {
	out := make([]NodeStatus, len(r.nodes))
	for i, n := range r.nodes {
		out[i] = n.status()
	}
	return out
}

// healthy filters out suspect nodes and those in the exclude bit set,
// without allocating when nothing is filtered.
func healthy(nodes []*node, exclude uint64) []*node {
	for i, n := range nodes {
		if n.isSuspect() || exclude&(1<<n.idx) != 0 {
			out := append([]*node(nil), nodes[:i]...)
			for _, m := range nodes[i+1:] {
				if !m.isSuspect() && exclude&(1<<m.idx) == 0 {
					out = append(out, m)
				}
			}
			return out
		}
	}
	return nodes
}

// prepareConn runs before a pooled connection is handed out. PostgreSQL 14+
// reports in_hot_standby to clients and pushes the change when a server is
// promoted; a connection that says otherwise than the router's view (as of
// its last use) means the view is stale: probe now, and never hand a
// standby's connection to a write on a node the router takes for the
// primary. A node behind a pooler that replays stale parameters
// (PgBouncer) is found out by asking pg_is_in_recovery() on a mismatch,
// and then left to the probes. (Not AfterRelease: pgxpool runs that hook in a
// goroutine per release, which costs more than the rest of a read.)
func (r *Router) prepareConn(n *node) func(context.Context, *pgx.Conn) (bool, error) {
	return func(ctx context.Context, c *pgx.Conn) (bool, error) {
		if n.cachedParams.Load() {
			return true, nil
		}
		hs := c.PgConn().ParameterStatus("in_hot_standby")
		switch role := n.currentRole(); {
		case hs == "on" && role == RolePrimary:
			// Ask the server itself: a pooler may replay a standby's
			// parameters after the promotion.
			var inRecovery bool
			if err := c.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&inRecovery); err == nil && !inRecovery {
				n.cachedParams.Store(true)
				return true, nil
			}
			r.kickAll()
			return false, nil
		case hs == "off" && role == RoleReplica:
			var inRecovery bool
			if err := c.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&inRecovery); err == nil && inRecovery {
				n.cachedParams.Store(true)
				return true, nil
			}
			r.kickAll()
		}
		return true, nil
	}
}
