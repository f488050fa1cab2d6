package dbrouter

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/jackc/pgx/v5"
)

// WriteOptions adjust one Write.
type WriteOptions struct {
	// TxOptions are passed to BEGIN (isolation level, access mode,
	// deferrable).
	TxOptions pgx.TxOptions

	// Idempotent says that running fn twice does no harm (it upserts,
	// or checks an idempotency key). When the connection is lost during
	// COMMIT, the router then simply runs the transaction again instead of
	// finding out whether it committed, and never returns
	// ErrCommitUnknown.
	Idempotent bool
}

// Write runs fn in a transaction on the primary and commits it.
//
// When the primary is lost — before or during fn — Write waits for a new one
// (up to Config.FailoverTimeout, and never past ctx) and runs the whole
// transaction again there. It also runs it again when PostgreSQL asks for
// it (serialization failure, deadlock), up to Config.MaxAttempts. So fn
// may run more than once: it must not have effects outside the
// transaction. Only the last run's transaction commits, and a transaction
// that may have committed is never run again: when the connection is lost
// during COMMIT, the router asks the primary (the new one after a failover)
// whether the transaction committed (pg_xact_status, asked only where the
// node's history provably holds the transaction's records: see
// docs/dbrouter.md) and returns success, runs it again if it did not, or
// returns [ErrCommitUnknown] if nobody can tell. When ctx ends during
// COMMIT, it asks on a short context of its own (2 × ProbeTimeout) and
// returns nil if the transaction committed, ctx's error if it did not
// (without running it again), or ErrCommitUnknown.
//
// fn must not commit or roll back tx itself; returning an error rolls it
// back, and the error is returned as it is (wrapped in a [NodeError]). An
// error fn returns that reads as a lost connection (io.EOF, a net.Error)
// while the transaction's own connection is up came from something else
// fn called (Redis, HTTP): it is returned too, fn is not run again.
// fn must close every pgx.Rows it opens: rows left open end the Write with
// [ErrRowsOpen], without a second run or a commit.
//
// On success the commit LSN is recorded in ctx if it carries a
// read-your-writes position (see [WithMinLSN]).
//
// A Write spends no round trip beyond a bare pgx transaction: BEGIN, and
// the read of what resolving a lost COMMIT needs, go to the server with
// fn's first Exec, Query or QueryRow. That read writes a small WAL record
// of the transaction's own, so every Write that runs a statement commits
// durably (it waits for the WAL flush and synchronous standbys) even when
// fn changed nothing; a fn that runs no statement sends nothing.
func (r *Router) Write(ctx context.Context, fn func(pgx.Tx) error) error {
	return r.WriteOpts(ctx, WriteOptions{}, fn)
}

// WriteOpts is Write with options.
func (r *Router) WriteOpts(ctx context.Context, opts WriteOptions, fn func(pgx.Tx) error) error {
	deadline := time.Now().Add(r.cfg.FailoverTimeout)
	serverRetries := 0
	var last error
	for try := 0; ; try++ {
		if try > 0 {
			if err := r.backoff(ctx, try); err != nil {
				return errors.Join(err, last)
			}
		}
		n, err := r.waitPrimary(ctx, deadline)
		if err != nil {
			if last != nil {
				return fmt.Errorf("%w (last error: %w)", err, last)
			}
			return err
		}
		res := r.attemptWrite(ctx, n, opts, deadline, fn)
		switch res.outcome {
		case committed:
			raiseMinLSN(ctx, res.lsn)
			return nil
		case failed:
			return nodeErr(n, res.err)
		case ambiguous:
			if res.canceled {
				return r.resolveCanceled(ctx, n, res)
			}
			if opts.Idempotent {
				r.metrics.retries["commit_lost"].Inc()
				last = nodeErr(n, res.err)
				continue
			}
			out := r.resolve(ctx, n, res, deadline)
			switch out.outcome {
			case committed:
				raiseMinLSN(ctx, out.lsn)
				return nil
			case retry:
				last = nodeErr(n, res.err)
				continue
			default:
				return out.err
			}
		case retry:
			last = nodeErr(n, res.err)
			if res.reason == "serialization" || res.reason == "deadlock" {
				serverRetries++
				if serverRetries >= r.cfg.MaxAttempts {
					return fmt.Errorf("dbrouter: gave up after %d attempts: %w", serverRetries, last)
				}
			}
			if m := r.metrics.retries[res.reason]; m != nil {
				m.Inc()
			}
		}
	}
}

// resolveCanceled finds out, on a short context of its own, whether the
// COMMIT of a caller whose context ended during it went through: nil if it
// did, the context's error if it did not (the transaction is not run
// again), ErrCommitUnknown if that cannot be told in time.
func (r *Router) resolveCanceled(ctx context.Context, n *node, res writeResult) error {
	budget := 2 * r.cfg.ProbeTimeout
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), budget)
	defer cancel()
	out := r.resolve(dctx, n, res, time.Now().Add(budget))
	switch out.outcome {
	case committed:
		raiseMinLSN(ctx, out.lsn)
		return nil
	case retry:
		return nodeErr(n, errors.Join(ctx.Err(), res.err))
	default:
		return fmt.Errorf("%w: %w", out.err, ctx.Err())
	}
}

// backoff sleeps before retry number try: 2ms, 4ms, … up to 100ms, with
// jitter, but returns early when the view changes (a new primary).
func (r *Router) backoff(ctx context.Context, try int) error {
	d := time.Duration(1<<min(try, 6)) * time.Millisecond * 2
	d = min(d, 100*time.Millisecond)
	d = d/2 + rand.N(d/2+1)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-r.view.Load().changed:
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}

type outcome int

const (
	committed outcome = iota // done
	failed                   // return the error
	retry                    // run the transaction again
	ambiguous                // the connection was lost during COMMIT
)

type writeResult struct {
	outcome outcome
	err     error
	reason  string // retryReason(err) (retry from attemptWrite)
	lsn     LSN    // commit LSN (committed)

	// ambiguous: what the lost COMMIT is resolved from, and whether the
	// caller's context ended during it.
	facts    txnFacts
	canceled bool
}

// attemptWrite runs one transaction on n.
func (r *Router) attemptWrite(ctx context.Context, n *node, opts WriteOptions, deadline time.Time, fn func(pgx.Tx) error) writeResult {
	n.inflight.Add(1)
	defer n.inflight.Add(-1)
	downs := n.downs.Load()

	// classify turns an error before COMMIT into retry or failed.
	classify := func(err error) writeResult {
		if ctx.Err() != nil {
			return writeResult{outcome: failed, err: errors.Join(ctx.Err(), err)}
		}
		err = n.downSince(downs, err)
		if reason := retryReason(err); reason != "" {
			if isConnError(err) || reason == "read_only" {
				r.failed(n)
			}
			return writeResult{outcome: retry, err: err, reason: reason}
		}
		return writeResult{outcome: failed, err: err}
	}

	conn, err := r.acquire(ctx, n, deadline)
	if err != nil {
		return classify(err)
	}
	st, downs := n.track(conn.Conn())
	defer func() {
		st.done()
		conn.Release()
	}()
	wt := &writeTx{ctx: ctx, conn: conn.Conn(), opts: opts.TxOptions}
	pc := conn.Conn().PgConn()
	rollback := func() {
		if wt.begun && !pc.IsBusy() && !pc.IsClosed() {
			_, _ = pc.Exec(ctx, "ROLLBACK").ReadAll()
		}
	}
	err = wt.run(fn)
	switch {
	case wt.err != nil:
		// BEGIN ran but the read of the facts failed: nothing of fn ran
		// after it.
		rollback()
		return classify(wt.err)
	case wt.lost != nil:
		// A call that was to send BEGIN failed before BEGIN ran: the
		// connection was lost (nothing ran), or the server refused the
		// statement, which fn may have dropped and gone on without. Either
		// way nothing of this run commits.
		rollback()
		return classify(wt.lost)
	case err != nil:
		if pc.IsBusy() || isConnBusy(err) {
			// Rows left open: the connection cannot roll back; the pool
			// closes it on release, which ends the transaction.
			return writeResult{outcome: failed, err: rowsOpen(err)}
		}
		if !wt.ended {
			rollback()
		}
		if isConnError(err) && !pc.IsClosed() && n.downs.Load() == downs {
			// fn's error reads as a lost connection, but this
			// transaction's connection is up (pgx closes one it lost, and
			// the ROLLBACK went through it) and the node was not seen
			// down: the error came from elsewhere — a call fn made to
			// another service (Redis, HTTP). It is fn's own: returned as
			// it is, fn not run again, the primary not suspected.
			return writeResult{outcome: failed, err: err}
		}
		return classify(err)
	case pc.IsBusy():
		return writeResult{outcome: failed, err: ErrRowsOpen}
	case wt.ended || (wt.begun && pc.TxStatus() == 'I'):
		return writeResult{outcome: failed, err: errors.New("fn ended the transaction itself; leave COMMIT and ROLLBACK to the router")}
	case !wt.begun:
		// fn ran nothing: there is nothing to commit.
		return writeResult{outcome: committed}
	case pc.TxStatus() == 'E':
		rollback()
		if wt.failed != nil {
			return classify(fmt.Errorf("the transaction failed, but fn returned no error (fn dropped: %w)", wt.failed))
		}
		return classify(errors.New("the transaction failed, but fn returned no error"))
	}
	facts := wt.facts
	beforeLSN := facts.before

	// COMMIT, and the commit LSN in the same round trip when ctx carries
	// a read-your-writes position.
	ryw := hasMinLSN(ctx)
	commitSQL := "COMMIT"
	if ryw {
		commitSQL = "COMMIT; SELECT pg_current_wal_insert_lsn()::text"
	}
	results, err := pc.Exec(ctx, commitSQL).ReadAll()
	if len(results) > 0 && results[0].Err == nil {
		if tag := results[0].CommandTag.String(); tag != "COMMIT" {
			return writeResult{outcome: failed, err: fmt.Errorf("COMMIT answered %s", tag)}
		}
		res := writeResult{outcome: committed, lsn: beforeLSN}
		if !ryw {
			return res
		}
		if len(results) > 1 && results[1].Err == nil && len(results[1].Rows) == 1 {
			if l, err := ParseLSN(string(results[1].Rows[0][0])); err == nil {
				res.lsn = l
			}
		} else {
			// Committed, but the position after it is unknown: the
			// primary's position a moment later is past it.
			res.lsn = r.primaryLSN(ctx, beforeLSN)
		}
		return res
	}
	if len(results) > 0 && results[0].Err != nil {
		if !isConnError(results[0].Err) {
			// The server refused the COMMIT (serialization failure, a
			// deferred constraint): the transaction rolled back.
			return classify(results[0].Err)
		}
		// A pooler lost the server during COMMIT (PgBouncer's FATAL
		// "server conn crashed?"): as ambiguous as a lost connection.
		err = results[0].Err
	}
	if err == nil {
		err = errors.New("no answer to COMMIT")
	}
	if ctx.Err() != nil {
		// The caller gave up during COMMIT; the node may be fine.
		return writeResult{outcome: ambiguous, err: err, facts: facts, canceled: true}
	}
	r.failed(n)
	return writeResult{outcome: ambiguous, err: err, facts: facts}
}

// primaryLSN returns the current primary's WAL insert position, or floor
// if it cannot be read.
func (r *Router) primaryLSN(ctx context.Context, floor LSN) LSN {
	v := r.view.Load()
	if v.primary == nil {
		return floor
	}
	ctx, cancel := context.WithTimeout(ctx, r.cfg.ProbeTimeout)
	defer cancel()
	return insertLSN(ctx, v.primary.pool, floor)
}

// insertLSN returns the WAL insert position of the node q is connected to,
// or floor if it cannot be read or is below floor.
func insertLSN(ctx context.Context, q Querier, floor LSN) LSN {
	var s string
	if err := q.QueryRow(ctx, "SELECT pg_current_wal_insert_lsn()::text").Scan(&s); err != nil {
		return floor
	}
	l, err := ParseLSN(s)
	if err != nil || l < floor {
		return floor
	}
	return l
}
