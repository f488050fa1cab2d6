package dbrouter

import (
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

// PgBouncer answers a FATAL connection exception when it loses the server
// under a client: the router takes it for a lost connection.
func TestPoolerConnLoss(t *testing.T) {
	for _, tc := range []struct {
		err    *pgconn.PgError
		conn   bool
		reason string
	}{
		{&pgconn.PgError{Severity: "FATAL", Code: "08P01", Message: "server conn crashed?"}, true, "connection"},
		{&pgconn.PgError{Severity: "FATAL", Code: "08P01", Message: "server login has been failing, try again later (server_login_retry)"}, true, "connection"},
		{&pgconn.PgError{Severity: "ERROR", Code: "08P01", Message: "protocol violation"}, false, ""},
		{&pgconn.PgError{Severity: "ERROR", Code: "23505", Message: "duplicate key"}, false, ""},
		{&pgconn.PgError{Severity: "FATAL", Code: "57P01", Message: "terminating connection due to administrator command"}, true, "shutdown"},
	} {
		if got := isConnError(tc.err); got != tc.conn {
			t.Errorf("isConnError(%s %s %q) = %v, want %v", tc.err.Severity, tc.err.Code, tc.err.Message, got, tc.conn)
		}
		if got := retryReason(tc.err); got != tc.reason {
			t.Errorf("retryReason(%s %s %q) = %q, want %q", tc.err.Severity, tc.err.Code, tc.err.Message, got, tc.reason)
		}
	}
}

// A statement of pgx's cache lost by transaction pooling is named in the
// error with the setting that avoids it.
func TestStatementCacheHint(t *testing.T) {
	lost := &NodeError{Node: "db1:6432", Err: &pgconn.PgError{Severity: "ERROR", Code: "26000", Message: `prepared statement "stmtcache_0123" does not exist`}}
	if msg := lost.Error(); !strings.Contains(msg, "default_query_exec_mode=exec") {
		t.Errorf("%q: no hint", msg)
	}
	other := &NodeError{Node: "db1:5432", Err: &pgconn.PgError{Severity: "ERROR", Code: "26000", Message: `prepared statement "mine" does not exist`}}
	if msg := other.Error(); strings.Contains(msg, "default_query_exec_mode") {
		t.Errorf("%q: a hint for an application's own statement", msg)
	}
}
