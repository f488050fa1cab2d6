package dbrouter

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// A COMMIT whose answer was lost is resolved from what the router read in
// the transaction, with its BEGIN (txnFacts, see writeTx), and what the
// current primary says about its own history (serverFacts).
//
// The danger is a transaction id that means something else on the node
// asked: a node whose history left the transaction's server before the
// transaction's commit record (a replica promoted before receiving it, a
// primary whose crash recovery ended before it) may hand the same id to a
// transaction of its own, and pg_xact_status would then report that one.
// So pg_xact_status is believed only when the node provably has a WAL
// record of the transaction (recovery moves the next transaction id past
// the id of every record it replays), and the transaction is run again
// only when its commit record provably cannot be in the node's history.

// txnFacts are read in the transaction, with its BEGIN (factsSQL).
type txnFacts struct {
	xid uint64
	// before is where a WAL record of the transaction's own ends (the
	// logical message factsSQL writes): a history that holds it has the
	// transaction id, one that ends at or before it cannot hold the
	// commit record, which comes after.
	before   LSN
	timeline int   // the timeline the server was writing on
	started  int64 // pg_postmaster_start_time in µs: identifies the server's run
	// recoveryEnd is where the recovery the server's processes last
	// began with ended (pg_last_wal_replay_lsn; 0 if none). A crash of
	// one backend restarts them all after a crash recovery, with the
	// same postmaster start time: only this tells that run apart.
	recoveryEnd LSN
}

// serverFacts describe the node asked, a primary.
type serverFacts struct {
	timeline    int
	started     int64
	recovered   bool // its current run began with a recovery (crash recovery or a standby's promotion)
	recoveryEnd LSN  // where that recovery ended (pg_last_wal_replay_lsn)
	// promotedInRun: the router saw the node in recovery earlier in its
	// current run, so that recovery ended with a promotion, and the
	// node's recovery end is still the one a probe saw just after it (no
	// crash restart of its backends since, which keeps the start time).
	promotedInRun bool
}

// askSQL reads serverFacts (timeline 0 on a standby).
const askSQL = `SELECT pg_is_in_recovery(),
  CASE WHEN pg_is_in_recovery() THEN 0 ELSE ('x' || substr(pg_walfile_name(pg_current_wal_insert_lsn()), 1, 8))::bit(32)::int END,
  (extract(epoch FROM pg_postmaster_start_time()) * 1000000)::int8,
  pg_last_wal_replay_lsn()::text`

// tlSwitch is one line of a timeline history file: the history followed
// timeline tli up to (not including) switchpoint.
type tlSwitch struct {
	tli         int
	switchpoint LSN
}

// verdict is what can be concluded about a lost COMMIT on one node.
type verdict int

const (
	askStatus   verdict = iota // the node has every record of the transaction before COMMIT: pg_xact_status tells
	rerun                      // the commit record cannot be in the node's history
	needHistory                // the node is on a later timeline: its history file tells
	cannotTell                 // nothing proves either way
)

// decide compares the transaction's facts with the node's. hist is the
// node's timeline history, nil when not read (or not readable).
func decide(t txnFacts, s serverFacts, hist []tlSwitch, histRead bool) (verdict, string) {
	switch {
	case s.timeline == t.timeline && s.started == t.started && s.recoveryEnd == t.recoveryEnd:
		return askStatus, "same server run"
	case s.timeline == t.timeline:
		// The same server restarted, or crash-restarted its backends
		// (a replica promoted would be on a new timeline). A crash
		// recovery that ended at or before the end of the transaction's
		// message did not replay the commit record; otherwise it replayed
		// the message (or the server shut down cleanly, with all of its
		// WAL on disk), unless two restarts came between (see
		// docs/dbrouter.md).
		if s.recovered && s.recoveryEnd <= t.before {
			return rerun, "the server's crash recovery ended before the commit record"
		}
		return askStatus, "the server restarted after the commit record's position"
	case s.timeline < t.timeline:
		return rerun, "the primary is on an earlier timeline than the transaction"
	}
	// A later timeline: the node's history followed the transaction's
	// timeline up to a switch point, if at all. Switch points only grow
	// along a history, so a recovery that ended at or before the position
	// read before COMMIT proves the switch from the transaction's timeline
	// came before it too.
	if s.recovered && s.recoveryEnd <= t.before {
		return rerun, "the primary's history left the transaction's timeline before the commit record"
	}
	if histRead {
		for _, h := range hist {
			if h.tli == t.timeline {
				if h.switchpoint <= t.before {
					return rerun, "the primary's timeline history left the transaction's timeline before the commit record"
				}
				return askStatus, "the primary's history follows the transaction's timeline past the commit record's position"
			}
		}
		return rerun, "the transaction's timeline is not in the primary's history"
	}
	if s.timeline == t.timeline+1 && s.recovered && s.promotedInRun {
		// Promoted from the transaction's timeline during the run the
		// router saw it in recovery: the end of that recovery is the
		// switch point. (A restart since, or a crash restart of its
		// backends, which keeps the start time, shows another recovery
		// end: promotedInRun is then false, and the history decides.)
		return askStatus, "the primary was promoted past the commit record's position"
	}
	return needHistory, ""
}

// parseHistory reads a timeline history file ("1\t0/3000000\treason").
func parseHistory(text string) ([]tlSwitch, error) {
	var out []tlSwitch
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 2 {
			return nil, fmt.Errorf("dbrouter: bad timeline history line %q", line)
		}
		tli, err := strconv.Atoi(f[0])
		if err != nil {
			return nil, fmt.Errorf("dbrouter: bad timeline history line %q", line)
		}
		sp, err := ParseLSN(f[1])
		if err != nil {
			return nil, err
		}
		out = append(out, tlSwitch{tli: tli, switchpoint: sp})
	}
	return out, sc.Err()
}

// resolve finds out whether a transaction whose COMMIT got no answer
// committed. It asks the current primary (the same server if it is still
// the primary, else the one promoted after it) what decide allows asking.
func (r *Router) resolve(ctx context.Context, origin *node, w writeResult, deadline time.Time) writeResult {
	var last error = w.err
	for try := 0; ; try++ {
		if try > 0 {
			if err := r.backoff(ctx, try); err != nil {
				last = errors.Join(last, err)
				break
			}
			if time.Now().After(deadline) {
				last = errors.Join(last, errors.New("not resolved in time"))
				break
			}
		}
		n, err := r.waitPrimary(ctx, deadline)
		if err != nil {
			last = errors.Join(last, err)
			break
		}
		out, why, err := r.askCommit(ctx, n, w.facts)
		if err != nil {
			last = nodeErr(n, err)
			if errors.Is(err, ErrCommitUnknown) {
				break
			}
			if ctx.Err() == nil && (isConnError(err) || errors.Is(err, errNotPrimary)) {
				r.failed(n)
				continue
			}
			break
		}
		switch out.outcome {
		case committed:
			r.metrics.resolutions["committed"].Inc()
			r.log.Info("dbrouter: lost COMMIT resolved: committed", "node", origin.name, "asked", n.name, "xid", w.facts.xid, "because", why)
			return out
		case retry:
			r.metrics.resolutions["aborted"].Inc()
			r.log.Info("dbrouter: lost COMMIT resolved: not committed, running the transaction again", "node", origin.name, "asked", n.name, "xid", w.facts.xid, "because", why)
			return out
		}
		// In progress: the server may still be committing.
	}
	r.metrics.resolutions["unknown"].Inc()
	r.log.Error("dbrouter: lost COMMIT could not be resolved", "node", origin.name, "xid", w.facts.xid, "err", last)
	return writeResult{outcome: failed, err: fmt.Errorf("%w (transaction %d on %s): %w", ErrCommitUnknown, w.facts.xid, origin.name, last)}
}

var errNotPrimary = errors.New("not a primary any more")

// askCommit asks n about the transaction; outcome committed, retry, or
// ambiguous for "still in progress". An error wrapping ErrCommitUnknown
// means n cannot tell, now or later.
func (r *Router) askCommit(ctx context.Context, n *node, t txnFacts) (writeResult, string, error) {
	actx, cancel := context.WithTimeout(ctx, r.cfg.ProbeTimeout)
	defer cancel()
	conn, err := n.pool.Acquire(actx)
	if err != nil {
		return writeResult{}, "", err
	}
	st, _ := n.track(conn.Conn())
	defer func() {
		st.done()
		conn.Release()
	}()
	var s serverFacts
	var inRecovery bool
	var recoveredTo *string
	if err := conn.QueryRow(actx, askSQL).Scan(&inRecovery, &s.timeline, &s.started, &recoveredTo); err != nil {
		return writeResult{}, "", err
	}
	if inRecovery {
		return writeResult{}, "", errNotPrimary
	}
	if recoveredTo != nil {
		if s.recoveryEnd, err = ParseLSN(*recoveredTo); err != nil {
			return writeResult{}, "", err
		}
		s.recovered = true
	}
	// Promoted in this run, and no crash restart of its backends since:
	// its recovery end is still the one first seen after the promotion.
	s.promotedInRun = s.started != 0 && n.promotionRun.Load() == s.started && LSN(n.promotionEnd.Load()) == s.recoveryEnd
	v, why := decide(t, s, nil, false)
	if v == needHistory {
		// Timeline history files are readable by superusers and members
		// of pg_read_server_files only.
		var text string
		err := conn.QueryRow(actx, "SELECT pg_read_file('pg_wal/' || $1 || '.history')", fmt.Sprintf("%08X", s.timeline)).Scan(&text)
		if err != nil {
			var pgErr *pgconn.PgError
			if errors.As(err, &pgErr) {
				return writeResult{}, "", fmt.Errorf("%w: the primary is on a later timeline than the transaction's, was not seen promoted in its current run, and its timeline history cannot be read (%s: GRANT EXECUTE ON FUNCTION pg_read_file(text) TO the router's user)",
					ErrCommitUnknown, pgErr.Message)
			}
			return writeResult{}, "", err
		}
		hist, err := parseHistory(text)
		if err != nil {
			return writeResult{}, "", fmt.Errorf("%w: %w", ErrCommitUnknown, err)
		}
		v, why = decide(t, s, hist, true)
	}
	switch v {
	case rerun:
		return writeResult{outcome: retry}, why, nil
	case askStatus:
	default:
		return writeResult{}, "", fmt.Errorf("%w: nothing proves whether the primary's history holds the commit record", ErrCommitUnknown)
	}
	var status *string
	err = conn.QueryRow(actx, "SELECT pg_xact_status($1::text::xid8)", strconv.FormatUint(t.xid, 10)).Scan(&status)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "22023" && strings.Contains(pgErr.Message, "in the future") {
		// The node never handed out this transaction id.
		return writeResult{outcome: retry}, "the transaction id was never used there", nil
	}
	if err != nil {
		return writeResult{}, "", err
	}
	switch {
	case status == nil:
		return writeResult{}, "", fmt.Errorf("%w: transaction %d is too old to look up", ErrCommitUnknown, t.xid)
	case *status == "committed":
		return writeResult{outcome: committed, lsn: insertLSN(actx, conn, t.before)}, why, nil
	case *status == "aborted":
		return writeResult{outcome: retry}, why + "; aborted there", nil
	default: // "in progress"
		return writeResult{outcome: ambiguous}, why, nil
	}
}
