package dbrouter

import (
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
