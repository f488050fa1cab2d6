package dbrouter

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
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
// whether the transaction committed (pg_xact_status) and returns success,
// runs it again if it did not, or returns [ErrCommitUnknown] if nobody can
// tell.
//
// fn must not commit or roll back tx itself; returning an error rolls it
// back, and the error is returned as it is (wrapped in a [NodeError]).
//
// On success the commit LSN is recorded in ctx if it carries a
// read-your-writes position (see [WithMinLSN]).
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
		res := r.attemptWrite(ctx, n, opts, fn)
		switch res.outcome {
		case committed:
			raiseMinLSN(ctx, res.lsn)
			return nil
		case failed:
			return nodeErr(n, res.err)
		case ambiguous:
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
	xid     string // the transaction's id, if it had one (ambiguous)
	before  LSN    // WAL insert position just before COMMIT (ambiguous)
}

// attemptWrite runs one transaction on n.
func (r *Router) attemptWrite(ctx context.Context, n *node, opts WriteOptions, fn func(pgx.Tx) error) writeResult {
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

	conn, err := n.pool.Acquire(ctx)
	if err != nil {
		return classify(err)
	}
	downs = n.track(conn.Conn())
	defer func() {
		n.untrack(conn.Conn())
		conn.Release()
	}()
	tx, err := conn.BeginTx(ctx, opts.TxOptions)
	if err != nil {
		return classify(err)
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback(ctx)
		return classify(err)
	}
	pc := conn.Conn().PgConn()
	if pc.TxStatus() == 'E' {
		_ = tx.Rollback(ctx)
		return classify(errors.New("the transaction failed, but fn returned no error"))
	}
	if pc.TxStatus() != 'T' {
		return writeResult{outcome: failed, err: errors.New("fn ended the transaction itself; leave COMMIT and ROLLBACK to the router")}
	}

	// What is needed to resolve a lost COMMIT: the transaction id (none
	// if it wrote nothing) and the WAL position before the commit record.
	var xid *string
	var before string
	if err := tx.QueryRow(ctx, "SELECT pg_current_xact_id_if_assigned()::text, pg_current_wal_insert_lsn()::text").Scan(&xid, &before); err != nil {
		_ = tx.Rollback(ctx)
		return classify(err)
	}
	beforeLSN, err := ParseLSN(before)
	if err != nil {
		_ = tx.Rollback(ctx)
		return writeResult{outcome: failed, err: err}
	}

	// COMMIT and the commit LSN in one round trip.
	results, err := pc.Exec(ctx, "COMMIT; SELECT pg_current_wal_insert_lsn()::text").ReadAll()
	if len(results) > 0 && results[0].Err == nil {
		if tag := results[0].CommandTag.String(); tag != "COMMIT" {
			return writeResult{outcome: failed, err: fmt.Errorf("COMMIT answered %s", tag)}
		}
		res := writeResult{outcome: committed, lsn: beforeLSN}
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
		// The server refused the COMMIT (serialization failure, a
		// deferred constraint): the transaction rolled back.
		return classify(results[0].Err)
	}
	if err == nil {
		err = errors.New("no answer to COMMIT")
	}
	if xid == nil {
		// The transaction wrote nothing: whether COMMIT ran does not
		// matter.
		r.failed(n)
		return writeResult{outcome: committed, lsn: beforeLSN}
	}
	if ctx.Err() != nil {
		return writeResult{outcome: failed, err: fmt.Errorf("%w (%w): %w", ErrCommitUnknown, ctx.Err(), err)}
	}
	r.failed(n)
	return writeResult{outcome: ambiguous, err: err, xid: *xid, before: beforeLSN}
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

// resolve finds out whether a transaction whose COMMIT got no answer
// committed. It asks the current primary (the same node if it is still
// the primary, else the one promoted after it):
//
//   - If that node ended a recovery (crash or promotion) before the
//     position where the transaction's commit record would be, the commit is
//     not in its history: run the transaction again.
//   - Otherwise the node has every record of the transaction, so its
//     transaction id cannot have been handed to another transaction there,
//     and pg_xact_status tells: committed, aborted (run it again), or in
//     progress (ask again).
func (r *Router) resolve(ctx context.Context, origin *node, w writeResult, deadline time.Time) writeResult {
	xid, err := strconv.ParseUint(w.xid, 10, 64)
	if err != nil {
		return writeResult{outcome: failed, err: fmt.Errorf("%w: bad transaction id %q", ErrCommitUnknown, w.xid)}
	}
	var last error = w.err
	for try := 0; ; try++ {
		if try > 0 {
			if err := r.backoff(ctx, try); err != nil {
				last = errors.Join(last, err)
				break
			}
			if time.Now().After(deadline) {
				last = errors.Join(last, fmt.Errorf("not resolved within the failover timeout (%s)", r.cfg.FailoverTimeout))
				break
			}
		}
		n, err := r.waitPrimary(ctx, deadline)
		if err != nil {
			last = errors.Join(last, err)
			break
		}
		out, err := r.askCommit(ctx, n, xid, w.before)
		if err != nil {
			last = nodeErr(n, err)
			if ctx.Err() == nil && (isConnError(err) || errors.Is(err, errNotPrimary)) {
				r.failed(n)
				continue
			}
			break
		}
		switch out.outcome {
		case committed:
			r.metrics.resolutions["committed"].Inc()
			r.log.Info("dbrouter: lost COMMIT resolved: committed", "node", origin.name, "asked", n.name, "xid", xid)
			return out
		case retry:
			r.metrics.resolutions["aborted"].Inc()
			r.log.Info("dbrouter: lost COMMIT resolved: not committed, running the transaction again", "node", origin.name, "asked", n.name, "xid", xid)
			return out
		}
		// In progress: the old primary may still be committing.
	}
	r.metrics.resolutions["unknown"].Inc()
	r.log.Error("dbrouter: lost COMMIT could not be resolved", "node", origin.name, "xid", xid, "err", last)
	return writeResult{outcome: failed, err: fmt.Errorf("%w (transaction %d on %s): %w", ErrCommitUnknown, xid, origin.name, last)}
}

var errNotPrimary = errors.New("not a primary any more")

// askCommit asks n about transaction xid; outcome committed, retry, or
// ambiguous for "still in progress".
func (r *Router) askCommit(ctx context.Context, n *node, xid uint64, before LSN) (writeResult, error) {
	actx, cancel := context.WithTimeout(ctx, r.cfg.ProbeTimeout)
	defer cancel()
	conn, err := n.pool.Acquire(actx)
	if err != nil {
		return writeResult{}, err
	}
	n.track(conn.Conn())
	defer func() {
		n.untrack(conn.Conn())
		conn.Release()
	}()
	var recoveredTo *string
	var inRecovery bool
	if err := conn.QueryRow(actx, "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text").Scan(&inRecovery, &recoveredTo); err != nil {
		return writeResult{}, err
	}
	if inRecovery {
		return writeResult{}, errNotPrimary
	}
	if recoveredTo != nil {
		e, err := ParseLSN(*recoveredTo)
		if err != nil {
			return writeResult{}, err
		}
		if e < before {
			// The node's history branched off before the commit record.
			return writeResult{outcome: retry}, nil
		}
	}
	var status *string
	err = conn.QueryRow(actx, "SELECT pg_xact_status($1::text::xid8)", strconv.FormatUint(xid, 10)).Scan(&status)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "22023" && strings.Contains(pgErr.Message, "in the future") {
		// The node never saw this transaction id.
		return writeResult{outcome: retry}, nil
	}
	if err != nil {
		return writeResult{}, err
	}
	switch {
	case status == nil:
		return writeResult{}, fmt.Errorf("%w: transaction %d is too old to look up", ErrCommitUnknown, xid)
	case *status == "committed":
		return writeResult{outcome: committed, lsn: insertLSN(actx, conn, before)}, nil
	case *status == "aborted":
		return writeResult{outcome: retry}, nil
	default: // "in progress"
		return writeResult{outcome: ambiguous}, nil
	}
}
