package dbrouter

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
)

// writeTx is the pgx.Tx a Write hands to fn.
//
// It spends no round trip beyond what a bare pgx transaction spends, while
// still knowing, before COMMIT is sent, what resolving a lost COMMIT
// needs (txnFacts): BEGIN, the read of the facts (factsSQL) and fn's first
// Exec, Query or QueryRow go to the server together, as one pgx batch (one
// round trip in every query exec mode; one simple query in the simple
// protocol), and the answers to BEGIN and to the read are taken before fn
// sees its statement's.
//
// The facts are read at BEGIN, not before COMMIT, because the read writes
// a WAL record of the transaction's own (a transactional logical message)
// and returns where it ends: a node whose history holds that position has
// replayed a record carrying the transaction id, so it never hands the id
// out again, and the commit record comes after it. resolve.go decides on
// that position.
//
// Every other first call (SendBatch, CopyFrom, Begin, LargeObjects, Conn,
// an Exec without arguments, a statement with several commands or with a
// query exec mode or result formats among its arguments) first sends
// BEGIN and the read in one round trip of their own, as pgx sends BEGIN on
// its own. A fn that runs nothing sends nothing.
type writeTx struct {
	ctx  context.Context // the Write's: for BEGIN sent from Conn and LargeObjects, which take none
	conn *pgx.Conn
	opts pgx.TxOptions

	begun bool     // BEGIN ran: the server is in the transaction
	tx    pgx.Tx   // pgx's transaction, begun in the batch (Batch.BeginTx)
	ended bool     // fn called Commit or Rollback
	facts txnFacts // read with BEGIN

	// err: the read of the facts failed after BEGIN ran (the transaction
	// is aborted); every later call returns it and the Write fails with
	// it. lost: a call that was to carry BEGIN failed before BEGIN ran (a
	// lost connection, a statement the server could not parse or prepare:
	// pgx prepares a new statement before it sends the batch); the Write
	// fails with it even if fn drops it and runs more.
	err  error
	lost error
	// failed is the first error an Exec or Query of fn returned: named
	// when fn drops it and the transaction cannot commit.
	failed error
}

// note records the first error fn's statements returned.
func (t *writeTx) note(err error) error {
	if err != nil && t.failed == nil {
		t.failed = err
	}
	return err
}

var _ pgx.Tx = (*writeTx)(nil)

// factsSQL reads txnFacts at BEGIN: the transaction id (taken first: on a
// standby it fails with read_only_sql_transaction, which sends the Write
// to the primary), the end of a logical message the transaction writes
// (an empty one, prefix "hakit.dbrouter"; logical decoding sees one per
// Write, pgoutput only with messages on), the timeline the server writes
// on (the first 8 digits of a WAL file name), the server's run, and where
// the recovery it began with ended (NULL if none: a crash of one backend
// makes the postmaster restart every backend after a crash recovery, with
// the same start time, so the run alone does not tell that WAL was lost).
// A plain target list, left to right: the cheapest form measured.
const factsSQL = `SELECT pg_current_xact_id()::text, pg_logical_emit_message(true, 'hakit.dbrouter', '')::text,
  pg_walfile_name(pg_current_wal_insert_lsn()), pg_postmaster_start_time(), pg_last_wal_replay_lsn()::text`

// batchable reports whether a statement can ride in the batch with BEGIN:
// pgx batches take a QueryRewriter (NamedArgs) but no other option
// arguments, and a batch in the simple protocol cannot tell the answers of
// several commands in one statement apart.
func batchable(sql string, args []any) bool {
	if strings.Contains(strings.TrimRight(sql, " \t\r\n;"), ";") {
		return false
	}
	for _, a := range args {
		switch a.(type) {
		case pgx.QueryExecMode, pgx.QueryResultFormats, pgx.QueryResultFormatsByOID:
			return false
		}
	}
	return true
}

// open sends BEGIN and the read of the facts, followed by fn's statement
// when withStmt, and reads the answers to the first two. With withStmt it
// returns the batch positioned at fn's statement; the caller closes it.
func (t *writeTx) open(ctx context.Context, withStmt bool, sql string, args []any) (pgx.BatchResults, error) {
	b := &pgx.Batch{QueuedQueries: make([]*pgx.QueuedQuery, 0, 3)}
	b.BeginTx(t.opts)
	b.Queue(factsSQL)
	if withStmt {
		b.Queue(sql, args...)
	}
	br := t.conn.SendBatch(ctx, b)
	if _, err := br.Exec(); err != nil {
		_ = br.Close()
		t.lost = err
		return nil, err
	}
	t.begun, t.tx = true, br.Tx()
	if err := t.readFacts(br); err != nil {
		_ = br.Close()
		return nil, err
	}
	if !withStmt {
		if err := br.Close(); err != nil {
			t.err = err
			return nil, err
		}
		return nil, nil
	}
	return br, nil
}

// openSetTransaction sends BEGIN, fn's first statement (a SET TRANSACTION,
// which must come before any query of the transaction) and the read of
// the facts, and returns the statement's answer once all three are in.
func (t *writeTx) openSetTransaction(ctx context.Context, sql string, args []any) (pgconn.CommandTag, error) {
	b := &pgx.Batch{QueuedQueries: make([]*pgx.QueuedQuery, 0, 3)}
	b.BeginTx(t.opts)
	b.Queue(sql, args...)
	b.Queue(factsSQL)
	br := t.conn.SendBatch(ctx, b)
	defer br.Close()
	if _, err := br.Exec(); err != nil {
		t.lost = err
		return pgconn.CommandTag{}, err
	}
	t.begun, t.tx = true, br.Tx()
	tag, err := br.Exec()
	if err != nil {
		// The transaction is aborted: the facts were not read, and every
		// later statement fails; the Write fails with this error.
		t.err = err
		return tag, err
	}
	if err := t.readFacts(br); err != nil {
		return tag, err
	}
	return tag, br.Close()
}

// readFacts reads factsSQL's answer, the next result of br.
func (t *writeTx) readFacts(br pgx.BatchResults) error {
	var xid, end, walfile string
	var started time.Time
	var recovered *string
	err := br.QueryRow().Scan(&xid, &end, &walfile, &started, &recovered)
	if err == nil {
		err = t.facts.parse(xid, end, walfile, started.UnixMicro(), recovered)
	}
	if err != nil {
		t.err = fmt.Errorf("dbrouter: reading the transaction id and WAL position at BEGIN: %w", err)
		return t.err
	}
	return nil
}

// isSetTransaction reports whether sql is a SET TRANSACTION statement.
func isSetTransaction(sql string) bool {
	f := strings.Fields(sql)
	return len(f) >= 2 && strings.EqualFold(f[0], "set") && strings.EqualFold(f[1], "transaction")
}

// parse fills f from factsSQL's answer.
func (f *txnFacts) parse(xid, end, walfile string, started int64, recovered *string) error {
	var err error
	f.recoveryEnd = 0
	if recovered != nil {
		if f.recoveryEnd, err = ParseLSN(*recovered); err != nil {
			return err
		}
	}
	if f.xid, err = strconv.ParseUint(xid, 10, 64); err != nil {
		return fmt.Errorf("bad transaction id %q", xid)
	}
	if f.before, err = ParseLSN(end); err != nil {
		return err
	}
	if len(walfile) < 8 {
		return fmt.Errorf("bad WAL file name %q", walfile)
	}
	tl, err := strconv.ParseUint(walfile[:8], 16, 32)
	if err != nil {
		return fmt.Errorf("bad WAL file name %q", walfile)
	}
	f.timeline, f.started = int(tl), started
	return nil
}

// start sends BEGIN and the read of the facts unless they were sent.
func (t *writeTx) start(ctx context.Context) error {
	if err := t.usable(); err != nil {
		return err
	}
	if t.begun {
		return nil
	}
	_, err := t.open(ctx, false, "", nil)
	return err
}

// usable returns the error a call must fail with, if any.
func (t *writeTx) usable() error {
	switch {
	case t.ended:
		return pgx.ErrTxClosed
	case t.err != nil:
		return t.err
	}
	return nil
}

// Exec runs a statement in the transaction.
func (t *writeTx) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	tag, err := t.exec(ctx, sql, args)
	return tag, t.note(err)
}

func (t *writeTx) exec(ctx context.Context, sql string, args []any) (pgconn.CommandTag, error) {
	if err := t.usable(); err != nil {
		return pgconn.CommandTag{}, err
	}
	if t.begun {
		return t.tx.Exec(ctx, sql, args...)
	}
	if isSetTransaction(sql) && batchable(sql, args) {
		return t.openSetTransaction(ctx, sql, args)
	}
	if len(args) == 0 || !batchable(sql, args) {
		// pgx sends a statement without arguments in the simple
		// protocol, where it may hold several commands.
		if err := t.start(ctx); err != nil {
			return pgconn.CommandTag{}, err
		}
		return t.tx.Exec(ctx, sql, args...)
	}
	br, err := t.open(ctx, true, sql, args)
	if err != nil {
		return pgconn.CommandTag{}, err
	}
	tag, err := br.Exec()
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	return tag, err
}

// Query runs a query in the transaction.
func (t *writeTx) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	rows, err := t.query(ctx, sql, args)
	return rows, t.note(err)
}

func (t *writeTx) query(ctx context.Context, sql string, args []any) (pgx.Rows, error) {
	if err := t.usable(); err != nil {
		return errRows{err}, err
	}
	if t.begun {
		return t.tx.Query(ctx, sql, args...)
	}
	if !batchable(sql, args) {
		if err := t.start(ctx); err != nil {
			return errRows{err}, err
		}
		return t.tx.Query(ctx, sql, args...)
	}
	br, err := t.open(ctx, true, sql, args)
	if err != nil {
		return errRows{err}, err
	}
	rows, err := br.Query()
	if err != nil {
		_ = br.Close()
		return rows, err
	}
	return &batchRows{Rows: rows, br: br}, nil
}

// QueryRow runs a query in the transaction that returns at most one row.
func (t *writeTx) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	if err := t.usable(); err != nil {
		return errRow{err}
	}
	if t.begun {
		return t.tx.QueryRow(ctx, sql, args...)
	}
	if !batchable(sql, args) {
		if err := t.start(ctx); err != nil {
			return errRow{err}
		}
		return t.tx.QueryRow(ctx, sql, args...)
	}
	br, err := t.open(ctx, true, sql, args)
	if err != nil {
		return errRow{err}
	}
	return &batchRow{row: br.QueryRow(), br: br}
}

// SendBatch sends a batch in the transaction.
func (t *writeTx) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	if err := t.start(ctx); err != nil {
		return errBatch{err}
	}
	return t.tx.SendBatch(ctx, b)
}

// CopyFrom copies rows in the transaction.
func (t *writeTx) CopyFrom(ctx context.Context, table pgx.Identifier, columns []string, src pgx.CopyFromSource) (int64, error) {
	if err := t.start(ctx); err != nil {
		return 0, err
	}
	return t.tx.CopyFrom(ctx, table, columns, src)
}

// Prepare prepares a statement on the transaction's connection.
func (t *writeTx) Prepare(ctx context.Context, name, sql string) (*pgconn.StatementDescription, error) {
	if err := t.usable(); err != nil {
		return nil, err
	}
	return t.conn.Prepare(ctx, name, sql)
}

// Begin starts a pseudo nested transaction (a savepoint).
func (t *writeTx) Begin(ctx context.Context) (pgx.Tx, error) {
	if err := t.start(ctx); err != nil {
		return nil, err
	}
	return t.tx.Begin(ctx)
}

// largeObjectsFailed is what LargeObjects, which cannot return an error,
// panics with when it cannot send BEGIN; the Write recovers it and fails
// with err.
type largeObjectsFailed struct{ err error }

// LargeObjects returns the large objects API of the transaction.
func (t *writeTx) LargeObjects() pgx.LargeObjects {
	if err := t.start(t.ctx); err != nil {
		panic(largeObjectsFailed{err})
	}
	return t.tx.LargeObjects()
}

// Conn returns the transaction's connection, in the transaction: BEGIN is
// sent first. If that fails, the connection is closed, so that nothing fn
// runs on it runs outside a transaction, and the Write fails.
func (t *writeTx) Conn() *pgx.Conn {
	if !t.begun && !t.ended && t.err == nil {
		if err := t.start(t.ctx); err != nil {
			_ = t.conn.Close(context.WithoutCancel(t.ctx))
		}
	}
	return t.conn
}

// Commit commits the transaction. fn must leave that to the Write, which
// fails when fn ended the transaction itself.
func (t *writeTx) Commit(ctx context.Context) error {
	return t.end(ctx, true)
}

// Rollback rolls the transaction back; the Write then fails.
func (t *writeTx) Rollback(ctx context.Context) error {
	return t.end(ctx, false)
}

func (t *writeTx) end(ctx context.Context, commit bool) error {
	if t.ended {
		return pgx.ErrTxClosed
	}
	t.ended = true
	switch {
	case !t.begun:
		return nil
	case commit:
		return t.tx.Commit(ctx)
	default:
		return t.tx.Rollback(ctx)
	}
}

// run calls fn with t, turning LargeObjects' panic into its error.
func (t *writeTx) run(fn func(pgx.Tx) error) (err error) {
	defer func() {
		if v := recover(); v != nil {
			lf, ok := v.(largeObjectsFailed)
			if !ok {
				panic(v)
			}
			if !t.begun && t.lost == nil {
				t.lost = lf.err
			}
			err = lf.err
		}
	}()
	return fn(t)
}

// batchRows are the rows of fn's first statement, which came in the batch
// with BEGIN: closing them (or reading past the last) closes the batch.
type batchRows struct {
	pgx.Rows
	br       pgx.BatchResults
	closed   bool
	closeErr error
}

func (r *batchRows) closeBatch() {
	if !r.closed {
		r.closed = true
		r.closeErr = r.br.Close()
	}
}

func (r *batchRows) Next() bool {
	if r.Rows.Next() {
		return true
	}
	r.closeBatch()
	return false
}

func (r *batchRows) Close() {
	r.Rows.Close()
	r.closeBatch()
}

func (r *batchRows) Err() error {
	if err := r.Rows.Err(); err != nil {
		return err
	}
	return r.closeErr
}

// batchRow is the row of fn's first QueryRow, which came in the batch with
// BEGIN: Scan closes the batch.
type batchRow struct {
	row pgx.Row
	br  pgx.BatchResults
}

func (r *batchRow) Scan(dest ...any) error {
	err := r.row.Scan(dest...)
	if cerr := r.br.Close(); err == nil && cerr != nil {
		err = cerr
	}
	return err
}

// errRow, errRows and errBatch carry an error from a call that did not
// reach the server.
type errRow struct{ err error }

func (r errRow) Scan(...any) error { return r.err }

type errRows struct{ err error }

func (errRows) Close()                                       {}
func (r errRows) Err() error                                 { return r.err }
func (errRows) CommandTag() pgconn.CommandTag                { return pgconn.CommandTag{} }
func (errRows) FieldDescriptions() []pgconn.FieldDescription { return nil }
func (errRows) Next() bool                                   { return false }
func (r errRows) Scan(...any) error                          { return r.err }
func (r errRows) Values() ([]any, error)                     { return nil, r.err }
func (errRows) RawValues() [][]byte                          { return nil }
func (errRows) Conn() *pgx.Conn                              { return nil }
func (errRows) TypeMap() *pgtype.Map                         { return nil }

type errBatch struct{ err error }

func (b errBatch) Exec() (pgconn.CommandTag, error) { return pgconn.CommandTag{}, b.err }
func (b errBatch) Query() (pgx.Rows, error)         { return errRows(b), b.err }
func (b errBatch) QueryRow() pgx.Row                { return errRow(b) }
func (b errBatch) Close() error                     { return b.err }
func (errBatch) Tx() pgx.Tx                         { return nil }
