package dbrouter

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Querier is what a Read function gets: a connection to one node. Both
// *pgxpool.Conn and pgx.Tx satisfy it.
type Querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
}

// Read runs fn on a connection to a replica that is fresh enough: one whose
// lag is within Config.MaxLag and, when ctx carries a read-your-writes
// position ([WithMinLSN]), that has replayed it (waiting up to
// Config.ReplicaWait for one). Without such a replica it uses the primary.
// Replicas share the load by the power of two choices on the work in
// flight.
//
// When the node fails under fn (it dies, is found hung, or cancels the
// query for a conflict with recovery), Read runs fn again on another node.
// So fn may run more than once and must only read. fn must close every
// pgx.Rows it opens: rows left open end the Read with [ErrRowsOpen].
func (r *Router) Read(ctx context.Context, fn func(Querier) error) error {
	var exclude uint64
	var last error
	for try := 0; try <= len(r.nodes)+1; try++ {
		h, err := r.acquireRead(ctx, exclude)
		if err != nil {
			if last != nil {
				return fmt.Errorf("%w (last error: %w)", err, last)
			}
			return err
		}
		err = fn(h.conn)
		if h.conn.Conn().PgConn().IsBusy() || isConnBusy(err) {
			h.release() // the pool closes a busy connection
			return nodeErr(h.n, rowsOpen(err))
		}
		err = h.n.downSince(h.downs, err)
		h.release()
		if err == nil {
			return nil
		}
		if !r.retryRead(ctx, h.n, err) {
			return nodeErr(h.n, err)
		}
		exclude |= 1 << h.n.idx
		last = nodeErr(h.n, err)
	}
	return last
}

// retryRead reports whether a read that failed with err on n may run again
// elsewhere, and takes note of a failing node.
func (r *Router) retryRead(ctx context.Context, n *node, err error) bool {
	if ctx.Err() != nil {
		return false
	}
	switch retryReason(err) {
	case "connection", "shutdown":
		r.failed(n)
	case "serialization": // on a replica: canceled for a conflict with recovery
	default:
		return false
	}
	r.metrics.readRetries.Inc()
	return true
}

// Query runs a query on a fresh-enough node (chosen as Read does) and
// returns its rows; the connection goes back to the pool when the rows are
// closed. A query that fails before returning rows is tried once more on
// another node; nothing is retried once rows are returned.
func (r *Router) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	var exclude uint64
	for try := 0; ; try++ {
		h, err := r.acquireRead(ctx, exclude)
		if err != nil {
			return nil, err
		}
		rows, err := h.conn.Query(ctx, sql, args...)
		if err == nil {
			return &handleRows{Rows: rows, h: h}, nil
		}
		h.release()
		if try > 0 || !r.retryRead(ctx, h.n, err) {
			return nil, nodeErr(h.n, err)
		}
		exclude |= 1 << h.n.idx
	}
}

// QueryRow runs a single-row query as Read does (with its retries); the
// query runs when Scan is called.
func (r *Router) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	return &routedRow{r: r, ctx: ctx, sql: sql, args: args}
}

// Exec runs one statement in a transaction on the primary, as Write does
// (with its waits, retries and commit resolution).
func (r *Router) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	var tag pgconn.CommandTag
	err := r.Write(ctx, func(tx pgx.Tx) error {
		var err error
		tag, err = tx.Exec(ctx, sql, args...)
		return err
	})
	return tag, err
}

type routedRow struct {
	r    *Router
	ctx  context.Context
	sql  string
	args []any
}

func (rr *routedRow) Scan(dest ...any) error {
	return rr.r.Read(rr.ctx, func(q Querier) error {
		return q.QueryRow(rr.ctx, rr.sql, rr.args...).Scan(dest...)
	})
}

// readHandle is a connection acquired for a read.
type readHandle struct {
	n     *node
	conn  *pgxpool.Conn
	st    *connState
	downs uint64
}

func (h *readHandle) release() {
	h.st.done()
	h.conn.Release()
	h.n.inflight.Add(-1)
}

// handleRows releases its connection when the rows are closed or read to
// the end.
type handleRows struct {
	pgx.Rows
	h    *readHandle
	once sync.Once
}

func (hr *handleRows) Next() bool {
	if hr.Rows.Next() {
		return true
	}
	hr.Close()
	return false
}

func (hr *handleRows) Close() {
	hr.Rows.Close()
	hr.once.Do(hr.h.release)
}

// acquireRead picks a node for a read and acquires a connection there,
// skipping the nodes in exclude (a bit per node index). With a
// read-your-writes position in ctx, the node has replayed it.
func (r *Router) acquireRead(ctx context.Context, exclude uint64) (*readHandle, error) {
	minLSN := MinLSN(ctx)
	var deadline time.Time
	// Nodes at max_connections are skipped while others can serve; only
	// when none can does the read wait on one of them for a connection.
	var full uint64
	waitFull := false
	for {
		if r.closed.Load() {
			return nil, ErrClosed
		}
		v := r.view.Load()
		var n *node
		check := false
		if minLSN == 0 {
			n = pick(healthy(v.replicas, exclude))
		} else if cands := healthy(v.caughtUp, exclude); len(cands) > 0 {
			n, check = pickFresh(cands, minLSN)
		}
		if n == nil && v.primary != nil && !v.primary.isSuspect() && exclude&(1<<v.primary.idx) == 0 {
			n = v.primary
			r.metrics.reads[readPrimary].Inc()
		} else if n != nil {
			r.metrics.reads[readReplica].Inc()
		}
		if n != nil {
			h, err := r.acquireOn(ctx, n, waitFull)
			if err != nil {
				if isServerFull(err) && !waitFull && ctx.Err() == nil {
					full |= 1 << n.idx
					exclude |= 1 << n.idx
					continue
				}
				if !r.retryRead(ctx, n, err) {
					return nil, nodeErr(n, err)
				}
				exclude |= 1 << n.idx
				continue
			}
			if !check {
				return h, nil
			}
			ok, err := r.waitReplay(ctx, h, minLSN)
			if ok {
				return h, nil
			}
			h.release()
			if err != nil && !r.retryRead(ctx, n, err) {
				return nil, nodeErr(n, err)
			}
			// No replica caught up in time: the primary has it.
			r.metrics.reads[readFallback].Inc()
			p, err := r.waitPrimary(ctx, time.Now().Add(r.cfg.FailoverTimeout))
			if err != nil {
				return nil, err
			}
			h, err = r.acquireOn(ctx, p, true)
			if err != nil {
				return nil, nodeErr(p, err)
			}
			return h, nil
		}
		if full != 0 && !waitFull {
			exclude &^= full
			waitFull = true
			continue
		}
		// Nothing to read from: wait for the view to change.
		if deadline.IsZero() {
			deadline = time.Now().Add(r.cfg.FailoverTimeout)
			r.waiters.Add(1)
			defer r.waiters.Add(-1)
			r.kickAll()
		}
		wait := time.Until(deadline)
		if wait <= 0 {
			return nil, fmt.Errorf("%w within the failover timeout (%s)", ErrNoNode, r.cfg.FailoverTimeout)
		}
		t := time.NewTimer(wait)
		select {
		case <-v.changed:
			t.Stop()
			exclude = 0
		case <-t.C:
			return nil, fmt.Errorf("%w within the failover timeout (%s)", ErrNoNode, r.cfg.FailoverTimeout)
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("%w: %w", ErrNoNode, ctx.Err())
		}
	}
}

// acquireOn acquires a pooled connection on n, tracked so that it is cut
// if n is found down while in use. With waitFull, a server at
// max_connections is waited on (see acquire); without, it is an error at
// once.
func (r *Router) acquireOn(ctx context.Context, n *node, waitFull bool) (*readHandle, error) {
	n.inflight.Add(1)
	downs := n.downs.Load()
	var conn *pgxpool.Conn
	var err error
	if waitFull {
		conn, err = r.acquire(ctx, n, time.Now().Add(r.cfg.FailoverTimeout))
	} else {
		conn, err = n.pool.Acquire(ctx)
	}
	if err != nil {
		n.inflight.Add(-1)
		return nil, n.downSince(downs, err)
	}
	st, downs := n.track(conn.Conn())
	return &readHandle{n: n, conn: conn, st: st, downs: downs}, nil
}

// pickFresh picks among the replicas known to have replayed minLSN; if
// none is known to, it picks among all of them, and the choice must be
// checked (the prober's positions are up to a probe interval old).
func pickFresh(cands []*node, minLSN LSN) (*node, bool) {
	var fresh []*node
	for _, n := range cands {
		if LSN(n.replayed.Load()) >= minLSN {
			fresh = append(fresh, n)
		}
	}
	if len(fresh) > 0 {
		return pick(fresh), false
	}
	return pick(cands), true
}

// waitReplay checks whether h's replica has replayed minLSN, asking again
// with growing pauses until Config.ReplicaWait has passed.
func (r *Router) waitReplay(ctx context.Context, h *readHandle, minLSN LSN) (bool, error) {
	r.metrics.rywChecks.Inc()
	deadline := time.Now().Add(r.cfg.ReplicaWait)
	pause := 500 * time.Microsecond
	for {
		var s *string
		if err := h.conn.QueryRow(ctx, "SELECT pg_last_wal_replay_lsn()::text").Scan(&s); err != nil {
			return false, err
		}
		if s == nil {
			return false, nil // not a replica (any more)
		}
		l, err := ParseLSN(*s)
		if err != nil {
			return false, err
		}
		h.n.raiseReplayed(l)
		if l >= minLSN {
			return true, nil
		}
		left := time.Until(deadline)
		if left <= 0 {
			return false, nil
		}
		t := time.NewTimer(min(pause, left))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return false, ctx.Err()
		}
		pause = min(2*pause, 8*time.Millisecond)
	}
}
