package dbrouter

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// lazyTx is the transaction a Write hands to fn. It saves the round trips
// a Write would spend beyond a bare pgx transaction:
//
//   - BEGIN goes to the server with fn's first Exec or QueryRow (in one
//     simple query when there are no arguments, else in one pipelined
//     batch), not on its own;
//   - an Exec or QueryRow with arguments carries the pre-COMMIT read of
//     txnFacts in its batch, after the statement. When fn's last
//     statement was one of those, nothing ran on the connection between
//     that read and COMMIT, so it is the read "just before COMMIT" that
//     resolving a lost COMMIT needs, and COMMIT is sent when its answer
//     is in. Otherwise (fn ended with another kind of call, or handed the
//     connection out) the router reads the facts on their own first.
//
// Everything else (Query, SendBatch, CopyFrom, Prepare, savepoints, large
// objects, Conn) sends BEGIN first, as pgx does. Commit and Rollback by fn
// end the transaction; the router then refuses to commit (fn must leave
// that to it).
type lazyTx struct {
	ctx   context.Context // the Write's, for BEGIN sent from methods without one
	conn  *pgx.Conn
	opts  pgx.TxOptions
	begun bool   // BEGIN reached the server and the transaction is open
	ended bool   // fn called Commit or Rollback
	tx    pgx.Tx // pgx's transaction over it, once fn needed one

	// The pre-COMMIT facts read with the latest statement, if fresh: no
	// statement ran after them. opaque: fn got hold of something that
	// runs statements past lazyTx (Conn, a savepoint, large objects), so
	// no read can be known to be the last.
	pre      preCommit
	fresh    bool
	opaque   bool
	factsErr error // the facts read failed after fn's statement succeeded
}

// preCommit is txnFacts as read, before parsing.
type preCommit struct {
	xid      *string
	before   string
	timeline int
	started  int64
	full     bool // timeline and started were read (not known from serverRun)
}

// factsSQL returns the query that reads the pre-COMMIT facts on t's
// connection: all of them on its first write, then without the parts that
// do not change while its server is a primary (see serverRunKey).
func (t *lazyTx) factsSQL() string {
	if _, ok := t.conn.PgConn().CustomData()[serverRunKey].(serverRun); ok {
		return preCommitShortSQL
	}
	return preCommitSQL
}

// readFacts scans the answer to factsSQL.
func (t *lazyTx) readFacts(row pgx.Row) error {
	var p preCommit
	var err error
	if run, ok := t.conn.PgConn().CustomData()[serverRunKey].(serverRun); ok {
		p.timeline, p.started = run.timeline, run.started
		err = row.Scan(&p.xid, &p.before)
	} else {
		p.full = true
		err = row.Scan(&p.xid, &p.before, &p.timeline, &p.started)
	}
	if err != nil {
		t.fresh = false
		return err
	}
	t.pre, t.fresh = p, !t.opaque
	return nil
}

// stale records that a statement may have run after the last facts read.
func (t *lazyTx) stale() { t.fresh = false }

// handOut records that fn got something that runs statements past t.
func (t *lazyTx) handOut() { t.opaque, t.fresh = true, false }

var _ pgx.Tx = (*lazyTx)(nil)

// beginError is what Conn and LargeObjects, which cannot return an error,
// panic with when BEGIN fails; attemptWrite recovers it into an ordinary
// error.
type beginError struct{ err error }

// beginSQL is the BEGIN statement for opts, as pgx would send it.
func beginSQL(opts pgx.TxOptions) string {
	if opts.BeginQuery != "" {
		return opts.BeginQuery
	}
	s := "begin"
	if opts.IsoLevel != "" {
		s += " isolation level " + string(opts.IsoLevel)
	}
	if opts.AccessMode != "" {
		s += " " + string(opts.AccessMode)
	}
	if opts.DeferrableMode != "" {
		s += " " + string(opts.DeferrableMode)
	}
	return s
}

// sync records whether the transaction is open after a statement that
// carried BEGIN (the server says so in its ReadyForQuery status), and
// pgx's transaction object over it if the statement made one.
func (t *lazyTx) sync(tx pgx.Tx) {
	switch t.conn.PgConn().TxStatus() {
	case 'T', 'E':
		t.begun, t.tx = true, tx
	}
}

// begin sends BEGIN now unless it was sent.
func (t *lazyTx) begin(ctx context.Context) error {
	if t.ended {
		return pgx.ErrTxClosed
	}
	if t.begun {
		return nil
	}
	tx, err := t.conn.BeginTx(ctx, t.opts)
	if err != nil {
		return err
	}
	t.begun, t.tx = true, tx
	return nil
}

// pgxTx returns pgx's transaction object over the open transaction,
// making one if BEGIN went out in a simple query with a statement (with
// an empty query: the transaction is already open).
func (t *lazyTx) pgxTx(ctx context.Context) (pgx.Tx, error) {
	if err := t.begin(ctx); err != nil {
		return nil, err
	}
	if t.tx == nil {
		tx, err := t.conn.BeginTx(ctx, pgx.TxOptions{BeginQuery: ";", CommitQuery: t.opts.CommitQuery})
		if err != nil {
			return nil, err
		}
		t.tx = tx
	}
	return t.tx, nil
}

// mustBegin is begin for methods that cannot return an error.
func (t *lazyTx) mustBegin() {
	if err := t.begin(t.ctx); err != nil {
		panic(beginError{err})
	}
}

// plainArgs reports whether args can go into a batch: of pgx's option
// arguments, batches take only a QueryRewriter.
func plainArgs(args []any) bool {
	if len(args) > 0 {
		switch args[0].(type) {
		case pgx.QueryExecMode, pgx.QueryResultFormats, pgx.QueryResultFormatsByOID:
			return false
		}
	}
	return true
}

// Exec runs sql in the transaction, sending BEGIN with it if not yet sent
// and, when it has arguments, the pre-COMMIT facts read after it.
func (t *lazyTx) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	if t.ended || !plainArgs(args) || (len(args) == 0 && t.begun) {
		t.stale()
		if err := t.begin(ctx); err != nil {
			return pgconn.CommandTag{}, err
		}
		return t.conn.Exec(ctx, sql, args...)
	}
	if len(args) == 0 {
		// pgx sends a statement without arguments as a simple query,
		// which may hold several statements (and then cannot go into a
		// batch): BEGIN goes first in it.
		t.stale()
		tag, err := t.conn.Exec(ctx, beginSQL(t.opts)+";\n"+sql)
		t.sync(nil)
		return tag, err
	}
	first := !t.begun
	b := &pgx.Batch{}
	if first {
		b.BeginTx(t.opts)
	}
	b.Queue(sql, args...)
	b.Queue(t.factsSQL())
	br := t.conn.SendBatch(ctx, b)
	var err error
	if first {
		_, err = br.Exec()
	}
	var tag pgconn.CommandTag
	if err == nil {
		tag, err = br.Exec()
	}
	err = t.finishBatch(br, err, first)
	return tag, err
}

// finishBatch reads the facts at the end of a batch whose statement
// ended with err, and closes it.
func (t *lazyTx) finishBatch(br pgx.BatchResults, err error, first bool) error {
	t.stale()
	var ferr error
	if err == nil {
		ferr = t.readFacts(br.QueryRow())
	}
	cerr := br.Close()
	if first {
		t.sync(br.Tx())
	}
	switch {
	case err != nil:
		return err
	case ferr != nil:
		// fn's statement went through, the read after it did not: the
		// transaction cannot commit, and the router reports why.
		t.factsErr = ferr
		return nil
	}
	return cerr
}

// QueryRow runs sql in the transaction, sending BEGIN with it if not yet
// sent and the pre-COMMIT facts read after it.
func (t *lazyTx) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	if t.ended || !plainArgs(args) {
		t.stale()
		if err := t.begin(ctx); err != nil {
			return errRow{err}
		}
		return t.conn.QueryRow(ctx, sql, args...)
	}
	return &lazyRow{t: t, ctx: ctx, sql: sql, args: args}
}

// lazyRow sends its query (with BEGIN and the facts read) when scanned, as
// pgx's own rows are read when scanned.
type lazyRow struct {
	t    *lazyTx
	ctx  context.Context
	sql  string
	args []any
}

func (r *lazyRow) Scan(dest ...any) error {
	t := r.t
	if t.ended {
		return pgx.ErrTxClosed
	}
	first := !t.begun
	b := &pgx.Batch{}
	if first {
		b.BeginTx(t.opts)
	}
	b.Queue(r.sql, r.args...)
	b.Queue(t.factsSQL())
	br := t.conn.SendBatch(r.ctx, b)
	var err error
	if first {
		_, err = br.Exec()
	}
	if err == nil {
		err = br.QueryRow().Scan(dest...)
		var pgErr *pgconn.PgError
		if err != nil && !errors.As(err, &pgErr) && !pgconn.SafeToRetry(err) && !t.conn.IsClosed() {
			// No rows, or a value that did not scan: the statement
			// itself went through, so the facts read after it did run.
			// pgx.ErrNoRows comes back as it is, for == alike.
			if ferr := t.finishBatch(br, nil, first); ferr != nil {
				return errors.Join(err, ferr)
			}
			return err
		}
	}
	return t.finishBatch(br, err, first)
}

type errRow struct{ err error }

func (r errRow) Scan(...any) error { return r.err }

// Query runs sql in the transaction after BEGIN.
func (t *lazyTx) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	t.stale()
	if err := t.begin(ctx); err != nil {
		// Rows that carry the error too: pgx lets callers leave the
		// error to the rows.
		return pgx.FailedBatchResults(&pgx.Batch{}, err).Query()
	}
	return t.conn.Query(ctx, sql, args...)
}

// SendBatch sends b in the transaction after BEGIN.
func (t *lazyTx) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	t.stale()
	if err := t.begin(ctx); err != nil {
		return pgx.FailedBatchResults(b, err)
	}
	return t.conn.SendBatch(ctx, b)
}

// CopyFrom copies rows into the table in the transaction after BEGIN.
func (t *lazyTx) CopyFrom(ctx context.Context, table pgx.Identifier, columns []string, src pgx.CopyFromSource) (int64, error) {
	t.stale()
	if err := t.begin(ctx); err != nil {
		return 0, err
	}
	return t.conn.CopyFrom(ctx, table, columns, src)
}

// Prepare prepares a statement on the transaction's connection after
// BEGIN.
func (t *lazyTx) Prepare(ctx context.Context, name, sql string) (*pgconn.StatementDescription, error) {
	t.stale()
	if err := t.begin(ctx); err != nil {
		return nil, err
	}
	return t.conn.Prepare(ctx, name, sql)
}

// Begin starts a pseudo nested transaction (a savepoint).
func (t *lazyTx) Begin(ctx context.Context) (pgx.Tx, error) {
	t.handOut()
	tx, err := t.pgxTx(ctx)
	if err != nil {
		return nil, err
	}
	return tx.Begin(ctx)
}

// LargeObjects returns the large objects API of the transaction, after
// BEGIN.
func (t *lazyTx) LargeObjects() pgx.LargeObjects {
	t.handOut()
	tx, err := t.pgxTx(t.ctx)
	if err != nil {
		panic(beginError{err})
	}
	return tx.LargeObjects()
}

// Conn returns the transaction's connection, after BEGIN.
func (t *lazyTx) Conn() *pgx.Conn {
	t.handOut()
	if !t.ended {
		t.mustBegin()
	}
	return t.conn
}

// Commit ends the transaction: the router refuses to commit after it.
func (t *lazyTx) Commit(ctx context.Context) error {
	return t.end(ctx, "commit")
}

// Rollback ends the transaction: the router refuses to commit after it.
func (t *lazyTx) Rollback(ctx context.Context) error {
	return t.end(ctx, "rollback")
}

func (t *lazyTx) end(ctx context.Context, sql string) error {
	t.stale()
	if t.ended {
		return pgx.ErrTxClosed
	}
	t.ended = true
	if !t.begun {
		return nil
	}
	if t.tx != nil {
		if sql == "commit" {
			return t.tx.Commit(ctx)
		}
		return t.tx.Rollback(ctx)
	}
	_, err := t.conn.Exec(ctx, sql)
	return err
}

// rollback is the router's own rollback after fn failed.
func (t *lazyTx) rollback(ctx context.Context) {
	if t.begun && !t.ended {
		_, _ = t.conn.Exec(ctx, "rollback")
	}
}

// run calls fn with t, turning a failed BEGIN from Conn or LargeObjects
// into an error.
func (t *lazyTx) run(fn func(pgx.Tx) error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			be, ok := p.(beginError)
			if !ok {
				panic(p)
			}
			err = fmt.Errorf("dbrouter: BEGIN: %w", be.err)
		}
	}()
	return fn(t)
}
