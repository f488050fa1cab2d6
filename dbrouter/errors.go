package dbrouter

import (
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"

	"github.com/jackc/pgx/v5/pgconn"
)

// ErrCommitUnknown is returned by Write when the connection to the primary
// was lost while COMMIT was under way and the router could not find out,
// within Config.FailoverTimeout, whether the transaction committed: no
// primary came back to ask, or the caller's context ended first.
//
// The write may or may not have been applied. The router did not retry it,
// so it was not applied twice. A caller that must know checks its own data
// (the row it inserted, an idempotency key) once the database is back, or
// makes the write idempotent and retries it (see WriteOptions.Idempotent).
var ErrCommitUnknown = errors.New("dbrouter: commit outcome unknown: the connection was lost during COMMIT")

// ErrRowsOpen is returned by Write and Read when fn left a query's rows
// open (a pgx.Rows not closed, or not read to the end) on its connection:
// the connection stays busy, and anything run on it after fn returns or
// while the rows are open fails with pgx's "conn busy". It is a
// programming error in fn: the router does not run fn again, does not
// commit, and does not take it for a lost connection (the node stays as
// it is).
var ErrRowsOpen = errors.New("dbrouter: fn left a query's rows open (Close every pgx.Rows, or read it to the end, before running another statement or returning)")

// ErrNoPrimary is returned when no primary was known within
// Config.FailoverTimeout (or before the caller's context ended).
var ErrNoPrimary = errors.New("dbrouter: no primary")

// ErrNoNode is returned by a Read when no node could serve it.
var ErrNoNode = errors.New("dbrouter: no node available")

// ErrClosed is returned after Close.
var ErrClosed = errors.New("dbrouter: router closed")

// NodeError is an error that happened on one node. Every error the router
// returns from a node is wrapped in one, so logs say where it happened;
// errors.As still finds the *pgconn.PgError inside.
type NodeError struct {
	Node string // host:port
	Err  error
}

func (e *NodeError) Error() string {
	msg := "dbrouter: node " + e.Node + ": " + e.Err.Error()
	if isStatementCacheLoss(e.Err) {
		msg += " (pgx's statement cache through a pooler in transaction mode, such as PgBouncer: add default_query_exec_mode=exec to the node's connection string)"
	}
	return msg
}

// isStatementCacheLoss reports a named statement of pgx's cache missing
// (26000) or already there (42P05) on the server: what a pooler in
// transaction mode does to it, handing each transaction another server
// connection.
func isStatementCacheLoss(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (pgErr.Code == "26000" || pgErr.Code == "42P05") && strings.Contains(pgErr.Message, "stmtcache_")
}

// Unwrap returns the underlying error.
func (e *NodeError) Unwrap() error { return e.Err }

func nodeErr(n *node, err error) error {
	if err == nil {
		return nil
	}
	var ne *NodeError
	if errors.As(err, &ne) {
		return err
	}
	return &NodeError{Node: n.name, Err: err}
}

// retryReason classifies an error that happened before COMMIT was sent, so
// the transaction cannot have been applied: "" means do not retry.
func retryReason(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "25006": // read_only_sql_transaction: the node is (now) a replica
			return "read_only"
		case "57P01", "57P02", "57P03": // admin/crash shutdown, cannot connect now
			return "shutdown"
		case "40001": // serialization_failure (also: conflict with recovery on a replica)
			return "serialization"
		case "40P01": // deadlock_detected
			return "deadlock"
		}
		if isPoolerConnLoss(pgErr) {
			return "connection"
		}
		return ""
	}
	if isConnError(err) {
		return "connection"
	}
	return ""
}

// isConnError reports whether err says the connection failed (or could not
// be made), as opposed to the server rejecting a statement.
func isConnError(err error) bool {
	if err == nil || isConnBusy(err) {
		return false
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		// FATAL errors end the session: the node is going away.
		return pgErr.Code == "57P01" || pgErr.Code == "57P02" || pgErr.Code == "57P03" || isPoolerConnLoss(pgErr)
	}
	if pgconn.SafeToRetry(err) || pgconn.Timeout(err) {
		return true
	}
	var connectErr *pgconn.ConnectError
	var netErr net.Error
	switch {
	case errors.As(err, &connectErr), errors.As(err, &netErr),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE),
		errors.Is(err, errNodeDown):
		return true
	}
	// pgx reports some broken connections only in words.
	msg := err.Error()
	return strings.Contains(msg, "conn closed") || strings.Contains(msg, "connection reset") ||
		strings.Contains(msg, "broken pipe") || strings.Contains(msg, "unexpected EOF")
}

// isConnBusy reports pgx's "conn busy": a statement sent on a connection
// whose previous query's rows are still open. pgx reports it only in
// words, and as safe to retry; it is a programming error, not a lost
// connection.
func isConnBusy(err error) bool {
	return err != nil && strings.Contains(err.Error(), "conn busy")
}

// rowsOpen wraps the error fn returned with its connection busy.
func rowsOpen(err error) error {
	if err == nil || errors.Is(err, ErrRowsOpen) {
		return ErrRowsOpen
	}
	return fmt.Errorf("%w (fn returned: %w)", ErrRowsOpen, err)
}

// isPoolerConnLoss reports a FATAL connection exception (class 08): what
// PgBouncer sends, before closing the client's connection, when it lost
// or cannot reach the server ("server conn crashed?", "server login has
// been failing", "query_wait_timeout"). For the client it is a lost
// connection.
func isPoolerConnLoss(pgErr *pgconn.PgError) bool {
	return pgErr.Severity == "FATAL" && strings.HasPrefix(pgErr.Code, "08")
}

// isServerFull reports a server that refused a new connection because it
// has max_connections (or all but its reserved slots) in use.
func isServerFull(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "53300"
}

// isAuthError reports a configuration error a node answered with: wrong
// password or user, missing database. Retrying does not help.
func isAuthError(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return strings.HasPrefix(pgErr.Code, "28") || pgErr.Code == "3D000"
	}
	return false
}

// errNodeDown wraps the error of work in flight on a node the prober found
// down meanwhile: the prober cut it by giving its connection's socket a
// deadline in the past (see node.markDown and node.downSince).
var errNodeDown = errors.New("node found down by the prober")
