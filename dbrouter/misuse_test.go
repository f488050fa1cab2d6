package dbrouter_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"hakit.dev/dbrouter"
	"hakit.dev/hatest"
)

// A Write whose only effect is a NOTIFY writes no row, yet the
// notification is sent only if COMMIT ran. When its COMMIT is lost, the
// router must find out as for any other write: a notification that was
// never sent is not reported as sent, and one that was is not sent twice.
func TestNotifyOnlyWriteWithLostCommit(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := hatest.NewPostgres(t, hatest.PostgresOptions{})
	pg := c.Nodes[0]
	px, dsn := proxied(t, pg)
	r := newRouter(t, dbrouter.Config{Nodes: []string{dsn}})

	// Every transaction gets an id before COMMIT: a READ ONLY one too.
	if err := r.WriteOpts(ctx, dbrouter.WriteOptions{TxOptions: pgx.TxOptions{AccessMode: pgx.ReadOnly}}, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, "SELECT 1")
		return err
	}); err != nil {
		t.Fatalf("read-only Write: %v", err)
	}

	listener, err := pgx.Connect(ctx, pg.DSN())
	if err != nil {
		t.Fatal(err)
	}
	defer listener.Close(context.Background())
	if _, err := listener.Exec(ctx, "LISTEN wake"); err != nil {
		t.Fatal(err)
	}
	// received counts the notifications that arrive within a moment.
	received := func(payload string) int {
		n := 0
		for {
			wctx, wcancel := context.WithTimeout(ctx, 500*time.Millisecond)
			note, err := listener.WaitForNotification(wctx)
			wcancel()
			if err != nil {
				return n
			}
			if note.Payload == payload {
				n++
			}
		}
	}
	notify := func(payload string) (int, error) {
		calls := 0
		err := r.Write(ctx, func(tx pgx.Tx) error {
			calls++
			_, err := tx.Exec(ctx, "SELECT pg_notify('wake', $1)", payload)
			return err
		})
		return calls, err
	}

	// The COMMIT never reaches the server: nothing was sent, so the write
	// must run again (or fail), not succeed as it stands.
	px.arm(func(client, server net.Conn) {})
	calls, err := notify("commit lost")
	got := received("commit lost")
	if err == nil && got != 1 {
		t.Fatalf("Write succeeded after %d runs with its COMMIT lost, but %d notifications were sent; want 1", calls, got)
	}
	if err != nil && !errors.Is(err, dbrouter.ErrCommitUnknown) {
		t.Fatalf("Write with its COMMIT lost: %v; want success after a second run, or ErrCommitUnknown", err)
	}
	if err != nil || calls != 2 {
		t.Fatalf("Write with its COMMIT lost: %v after %d runs, %d notifications; want success after 2 runs, 1 notification", err, calls, got)
	}

	// The COMMIT ran, its answer was lost: the notification went out once
	// and must not be sent again.
	px.arm(func(client, server net.Conn) {
		sent := time.Now()
		forward(server)
		// The server's answer, dropped by the proxy, is out once the
		// backend that ran COMMIT is idle again.
		eventually(10*time.Second, func() bool {
			n, err := queryInt(ctx, pg, "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'COMMIT;%' AND state = 'idle' AND state_change >= $1", sent)
			return err == nil && n > 0
		})
	})
	calls, err = notify("answer lost")
	got = received("answer lost")
	if err != nil || calls != 1 || got != 1 {
		t.Fatalf("Write whose COMMIT answer was lost: %v after %d runs, %d notifications; want success after 1 run, 1 notification", err, calls, got)
	}
	wantResolutions(t, r, "committed", 1)
	wantResolutions(t, r, "aborted", 1)
}

// fn that returns with a query's rows still open leaves its connection
// busy: a programming error, reported at once as ErrRowsOpen, never taken
// for a lost connection (no second run, the node not marked, nothing
// committed).
func TestRowsLeftOpen(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := hatest.NewPostgres(t, hatest.PostgresOptions{})
	pg := c.Nodes[0]
	r := newRouter(t, dbrouter.Config{Nodes: []string{pg.DSN()}})
	if _, err := r.Exec(ctx, "CREATE TABLE t (id int)"); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		fn   func(tx pgx.Tx) error
	}{
		{"returns nil", func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, "INSERT INTO t VALUES (1)"); err != nil {
				return err
			}
			_, err := tx.Query(ctx, "SELECT generate_series(1, 10000)")
			return err
		}},
		{"runs another statement", func(tx pgx.Tx) error {
			if _, err := tx.Query(ctx, "SELECT generate_series(1, 10000)"); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, "INSERT INTO t VALUES (1)")
			return err
		}},
	}
	for _, tc := range cases {
		calls := 0
		start := time.Now()
		err := r.Write(ctx, func(tx pgx.Tx) error {
			calls++
			return tc.fn(tx)
		})
		took := time.Since(start)
		if !errors.Is(err, dbrouter.ErrRowsOpen) || calls != 1 {
			t.Fatalf("%s: Write with rows left open: %v after %d runs; want ErrRowsOpen after 1", tc.name, err, calls)
		}
		if !strings.Contains(err.Error(), "Close") {
			t.Errorf("%s: the error does not say to close the rows: %v", tc.name, err)
		}
		if took > 5*time.Second {
			t.Errorf("%s: the error took %v", tc.name, took)
		}
	}
	// A Read that does the same.
	calls := 0
	err := r.Read(ctx, func(q dbrouter.Querier) error {
		calls++
		if _, err := q.Query(ctx, "SELECT generate_series(1, 10000)"); err != nil {
			return err
		}
		var n int
		return q.QueryRow(ctx, "SELECT 1").Scan(&n)
	})
	if !errors.Is(err, dbrouter.ErrRowsOpen) || calls != 1 {
		t.Fatalf("Read with rows left open: %v after %d runs; want ErrRowsOpen after 1", err, calls)
	}

	if n := count(t, ctx, pg, "SELECT count(*) FROM t"); n != 0 {
		t.Errorf("%d rows committed by writes that failed; want 0", n)
	}
	if role := roleOf(r, pg.Addr()); role != dbrouter.RolePrimary {
		t.Errorf("the primary is %q after the misuse; want %q", role, dbrouter.RolePrimary)
	}
	for _, reason := range []string{"connection", "commit_lost"} {
		if v := metricValue(t, r, "hakit_dbrouter_write_retries_total", map[string]string{"reason": reason}); v != 0 {
			t.Errorf("write retries (%s) = %v; want 0", reason, v)
		}
	}
	if v := metricValue(t, r, "hakit_dbrouter_read_retries_total", nil); v != 0 {
		t.Errorf("read retries = %v; want 0", v)
	}
	// The router still works.
	if _, err := r.Exec(ctx, "INSERT INTO t VALUES (2)"); err != nil {
		t.Fatal(err)
	}
}

// A Write that changed nothing (an UPDATE matching no row) commits with a
// transaction id but no WAL to flush, so its commit record waits for the
// WAL writer. Its read-your-writes position must not be that unflushed
// record: no replica could have it, and the next read would wait and go
// to the primary for nothing.
func TestWriteOfNothingKeepsReadsOnReplicas(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := hatest.NewPostgres(t, hatest.PostgresOptions{})
	pg := c.Nodes[0]
	if err := pg.Exec(ctx, "CREATE TABLE t (id int PRIMARY KEY, n int)"); err != nil {
		t.Fatal(err)
	}
	r := newRouter(t, dbrouter.Config{Nodes: []string{pg.DSN()}})
	for i := range 20 {
		wctx := dbrouter.WithMinLSN(ctx, 0)
		if err := r.Write(wctx, func(tx pgx.Tx) error {
			_, err := tx.Exec(wctx, "UPDATE t SET n = n + 1 WHERE id = -1")
			return err
		}); err != nil {
			t.Fatal(err)
		}
		primary, err := r.Primary()
		if err != nil {
			t.Fatal(err)
		}
		var flushed string
		if err := primary.QueryRow(ctx, "SELECT pg_current_wal_flush_lsn()::text").Scan(&flushed); err != nil {
			t.Fatal(err)
		}
		f, err := dbrouter.ParseLSN(flushed)
		if err != nil {
			t.Fatal(err)
		}
		if got := dbrouter.MinLSN(wctx); got > f {
			t.Fatalf("write %d changed nothing, yet its read-your-writes position %s is past the flushed WAL %s", i, got, f)
		}
	}
}

// An error fn returns that reads as a lost connection — io.EOF from a
// Redis client, a reset from an HTTP call — while the transaction's own
// connection is up is fn's own: Write returns it at once, rolls back,
// does not run fn again and does not suspect the primary.
func TestFnsOwnConnectionErrorIsNotRetried(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := hatest.NewPostgres(t, hatest.PostgresOptions{})
	pg := c.Nodes[0]
	if err := pg.Exec(ctx, "CREATE TABLE t (id int PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	r := newRouter(t, dbrouter.Config{Nodes: []string{pg.DSN()}})
	reset := &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}
	for i, c := range []struct {
		name      string
		statement bool // fn runs an INSERT before it fails
		err       error
	}{
		{"io.EOF after an INSERT", true, io.EOF},
		{"a wrapped unexpected EOF after an INSERT", true, fmt.Errorf("redis: %w", io.ErrUnexpectedEOF)},
		{"a connection reset before any statement", false, reset},
		{"a connection reset after an INSERT", true, fmt.Errorf("POST https://payments.example: %w", reset)},
	} {
		before := metricValue(t, r, "hakit_dbrouter_write_retries_total", map[string]string{"reason": "connection"})
		runs := 0
		start := time.Now()
		err := r.Write(ctx, func(tx pgx.Tx) error {
			runs++
			if c.statement {
				if _, err := tx.Exec(ctx, "INSERT INTO t VALUES ($1)", i); err != nil {
					return err
				}
			}
			return c.err
		})
		if !errors.Is(err, c.err) || runs != 1 {
			t.Fatalf("%s: Write returned %v after %d runs of fn (%s); want fn's error after one run", c.name, err, runs, time.Since(start))
		}
		if n := count(t, ctx, pg, "SELECT count(*) FROM t WHERE id = $1", i); n != 0 {
			t.Fatalf("%s: the transaction committed", c.name)
		}
		if after := metricValue(t, r, "hakit_dbrouter_write_retries_total", map[string]string{"reason": "connection"}); after != before {
			t.Fatalf("%s: counted as a lost connection (%v retries)", c.name, after-before)
		}
		if role := roleOf(r, pg.Addr()); role != dbrouter.RolePrimary {
			t.Fatalf("%s: the primary is now %v", c.name, role)
		}
	}
	// The same errors from the transaction's own connection are a lost
	// primary: a killed backend makes fn's statement fail, and the Write
	// runs fn again and commits.
	runs := 0
	if err := r.Write(ctx, func(tx pgx.Tx) error {
		runs++
		if runs == 1 {
			if _, err := tx.Exec(ctx, "SELECT pg_terminate_backend(pg_backend_pid())"); err != nil {
				return err
			}
		}
		_, err := tx.Exec(ctx, "INSERT INTO t VALUES (100)")
		return err
	}); err != nil || runs != 2 {
		t.Fatalf("a Write whose backend was terminated: %v after %d runs; want success after 2", err, runs)
	}
}
