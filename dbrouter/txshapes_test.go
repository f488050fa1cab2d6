package dbrouter_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"hakit.dev/dbrouter"
	"hakit.dev/hatest"
)

// Every shape of fn (statements with and without arguments, QueryRow,
// Query, batches, CopyFrom, savepoints, errors) runs in one transaction
// that commits exactly when it should, in pgx's default mode and with
// the simple protocol PgBouncer needs.
func TestWriteTransactionShapes(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := hatest.NewPostgres(t, hatest.PostgresOptions{})
	pg := c.Nodes[0]
	if err := pg.Exec(ctx, "CREATE TABLE s (k text PRIMARY KEY, v int NOT NULL)"); err != nil {
		t.Fatal(err)
	}
	for _, mode := range execModes() {
		t.Run(mode.String(), func(t *testing.T) {
			if err := pg.Exec(ctx, "TRUNCATE s"); err != nil {
				t.Fatal(err)
			}
			r := newRouter(t, dbrouter.Config{Nodes: c.DSNs(), ConfigurePool: inExecMode(mode)})
			writeShapes(t, ctx, r, pg)
		})
	}
}

// writeShapes runs fns of every shape through r and checks what each left
// in table s of pg.
func writeShapes(t *testing.T, ctx context.Context, r *dbrouter.Router, pg *hatest.PostgresNode) {
	rows := func(k string) int {
		return count(t, ctx, pg, "SELECT count(*) FROM s WHERE k = $1", k)
	}
	errFn := errors.New("fn failed")

	for _, tc := range []struct {
		name    string
		fn      func(pgx.Tx) error
		wantErr string // "" for success
		rows    map[string]int
	}{
		{name: "exec with arguments", fn: func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, "INSERT INTO s VALUES ($1, 1)", "a")
			return err
		}, rows: map[string]int{"a": 1}},
		{name: "two statements with arguments", fn: func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, "INSERT INTO s VALUES ($1, 1)", "b1"); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, "INSERT INTO s VALUES ($1, 1)", "b2")
			return err
		}, rows: map[string]int{"b1": 1, "b2": 1}},
		{name: "query row returning", fn: func(tx pgx.Tx) error {
			var v int
			if err := tx.QueryRow(ctx, "INSERT INTO s VALUES ($1, 7) RETURNING v", "c").Scan(&v); err != nil {
				return err
			}
			if v != 7 {
				return errors.New("RETURNING gave the wrong value")
			}
			return nil
		}, rows: map[string]int{"c": 1}},
		{name: "no rows, then a write", fn: func(tx pgx.Tx) error {
			var v int
			if err := tx.QueryRow(ctx, "SELECT v FROM s WHERE k = $1", "nobody").Scan(&v); err != pgx.ErrNoRows {
				return errors.Join(errors.New("want pgx.ErrNoRows as it is"), err)
			}
			_, err := tx.Exec(ctx, "INSERT INTO s VALUES ($1, 1)", "d")
			return err
		}, rows: map[string]int{"d": 1}},
		{name: "several statements without arguments", fn: func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, "INSERT INTO s VALUES ('e1', 1); INSERT INTO s VALUES ('e2', 1)")
			return err
		}, rows: map[string]int{"e1": 1, "e2": 1}},
		{name: "write, then a query last", fn: func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, "INSERT INTO s VALUES ($1, 1)", "f1"); err != nil {
				return err
			}
			rs, err := tx.Query(ctx, "INSERT INTO s VALUES ($1, 1) RETURNING k", "f2")
			if err != nil {
				return err
			}
			_, err = pgx.CollectRows(rs, pgx.RowTo[string])
			return err
		}, rows: map[string]int{"f1": 1, "f2": 1}},
		{name: "savepoint rolled back", fn: func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, "INSERT INTO s VALUES ($1, 1)", "g1"); err != nil {
				return err
			}
			sp, err := tx.Begin(ctx)
			if err != nil {
				return err
			}
			if _, err := sp.Exec(ctx, "INSERT INTO s VALUES ($1, 1)", "g2"); err != nil {
				return err
			}
			return sp.Rollback(ctx)
		}, rows: map[string]int{"g1": 1, "g2": 0}},
		{name: "the connection used directly", fn: func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, "INSERT INTO s VALUES ($1, 1)", "h1"); err != nil {
				return err
			}
			_, err := tx.Conn().Exec(ctx, "INSERT INTO s VALUES ($1, 1)", "h2")
			return err
		}, rows: map[string]int{"h1": 1, "h2": 1}},
		{name: "the connection used first", fn: func(tx pgx.Tx) error {
			_, err := tx.Conn().Exec(ctx, "INSERT INTO s VALUES ($1, 1)", "i")
			if err != nil {
				return err
			}
			return errFn // the insert must roll back: it ran in the transaction
		}, wantErr: errFn.Error(), rows: map[string]int{"i": 0}},
		{name: "fn fails after a write", fn: func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, "INSERT INTO s VALUES ($1, 1)", "j"); err != nil {
				return err
			}
			return errFn
		}, wantErr: errFn.Error(), rows: map[string]int{"j": 0}},
		{name: "failed statement swallowed", fn: func(tx pgx.Tx) error {
			_, _ = tx.Exec(ctx, "INSERT INTO s VALUES ($1, 1)", "k")
			_, _ = tx.Exec(ctx, "INSERT INTO s VALUES ($1, 'not a number')", "k2")
			return nil
		}, wantErr: "the transaction failed", rows: map[string]int{"k": 0}},
		{name: "fn commits itself", fn: func(tx pgx.Tx) error {
			return tx.Commit(ctx)
		}, wantErr: "leave COMMIT"},
		{name: "nothing", fn: func(tx pgx.Tx) error { return nil }},
		{name: "unparsable first statement swallowed", fn: func(tx pgx.Tx) error {
			_, _ = tx.Exec(ctx, "INSRT INTO s VALUES ($1, 1)", "m")
			return nil
		}, wantErr: "syntax error"},
		{name: "unknown column first, dropped, then a write", fn: func(tx pgx.Tx) error {
			_, _ = tx.Exec(ctx, "INSERT INTO s (k, nosuchcolumn) VALUES ($1, 1)", "x1")
			_, err := tx.Exec(ctx, "INSERT INTO s VALUES ($1, 1)", "x2")
			_ = err
			return nil
		}, wantErr: "nosuchcolumn", rows: map[string]int{"x1": 0, "x2": 0}},
		{name: "set transaction first", fn: func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE"); err != nil {
				return err
			}
			var level string
			if err := tx.QueryRow(ctx, "SHOW transaction_isolation").Scan(&level); err != nil {
				return err
			}
			if level != "serializable" {
				return errors.New("isolation level " + level + ", want serializable")
			}
			_, err := tx.Exec(ctx, "INSERT INTO s VALUES ($1, 1)", "y")
			return err
		}, rows: map[string]int{"y": 1}},
		{name: "bad set transaction first", fn: func(tx pgx.Tx) error {
			_, _ = tx.Exec(ctx, "SET TRANSACTION ISOLATION LEVEL NOSUCHLEVEL")
			return nil
		}, wantErr: "syntax error"},
		{name: "first statement fails", fn: func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, "INSERT INTO s VALUES ($1, 'x')", "m2")
			return err
		}, wantErr: "invalid input syntax", rows: map[string]int{"m2": 0}},
		{name: "named arguments first", fn: func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, "INSERT INTO s VALUES (@k, 1)", pgx.NamedArgs{"k": "n"})
			return err
		}, rows: map[string]int{"n": 1}},
		{name: "a query exec mode among the arguments", fn: func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, "INSERT INTO s VALUES ($1, 1)", pgx.QueryExecModeExec, "o")
			return err
		}, rows: map[string]int{"o": 1}},
		{name: "savepoint first", fn: func(tx pgx.Tx) error {
			sp, err := tx.Begin(ctx)
			if err != nil {
				return err
			}
			if _, err := sp.Exec(ctx, "INSERT INTO s VALUES ($1, 1)", "p"); err != nil {
				return err
			}
			return sp.Commit(ctx)
		}, rows: map[string]int{"p": 1}},
		{name: "large objects", fn: func(tx pgx.Tx) error {
			lo := tx.LargeObjects()
			oid, err := lo.Create(ctx, 0)
			if err != nil {
				return err
			}
			_, err = tx.Exec(ctx, "INSERT INTO s VALUES ($1, $2::oid::bigint::int)", "q", oid)
			return err
		}, rows: map[string]int{"q": 1}},
		{name: "batch first", fn: func(tx pgx.Tx) error {
			b := &pgx.Batch{}
			b.Queue("INSERT INTO s VALUES ($1, 1)", "r1")
			b.Queue("INSERT INTO s VALUES ($1, 1)", "r2")
			return tx.SendBatch(ctx, b).Close()
		}, rows: map[string]int{"r1": 1, "r2": 1}},
		{name: "query first, closed early", fn: func(tx pgx.Tx) error {
			rs, err := tx.Query(ctx, "SELECT generate_series(1, $1::int)", 10)
			if err != nil {
				return err
			}
			rs.Next()
			rs.Close()
			if err := rs.Err(); err != nil {
				return err
			}
			_, err = tx.Exec(ctx, "INSERT INTO s VALUES ($1, 1)", "u")
			return err
		}, rows: map[string]int{"u": 1}},
		{name: "query first, read to the end without Close", fn: func(tx pgx.Tx) error {
			rs, err := tx.Query(ctx, "SELECT generate_series(1, $1::int)", 3)
			if err != nil {
				return err
			}
			n := 0
			for rs.Next() {
				n++
			}
			if err := rs.Err(); err != nil || n != 3 {
				return errors.Join(errors.New("want 3 rows"), err)
			}
			_, err = tx.Exec(ctx, "INSERT INTO s VALUES ($1, 1)", "v")
			return err
		}, rows: map[string]int{"v": 1}},
		{name: "query first fails", fn: func(tx pgx.Tx) error {
			rs, err := tx.Query(ctx, "SELECT nosuchcolumn FROM s WHERE k = $1", "x")
			if err != nil {
				return err
			}
			defer rs.Close()
			for rs.Next() {
			}
			return rs.Err()
		}, wantErr: "nosuchcolumn"},
		{name: "query row first, scanned twice", fn: func(tx pgx.Tx) error {
			row := tx.QueryRow(ctx, "INSERT INTO s VALUES ($1, 1) RETURNING v", "w")
			var v int
			if err := row.Scan(&v); err != nil {
				return err
			}
			_ = row.Scan(&v) // must not run the statement again
			return nil
		}, rows: map[string]int{"w": 1}},
	} {
		err := r.Write(ctx, tc.fn)
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%s: %v; want an error with %q", tc.name, err, tc.wantErr)
		}
		for k, want := range tc.rows {
			if n := rows(k); n != want {
				t.Errorf("%s: %d rows %q, want %d", tc.name, n, k, want)
			}
		}
	}

	// A read-your-writes context gets the commit LSN: a read with it
	// sees the write.
	before, err := pg.LSN(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rctx := dbrouter.WithMinLSN(ctx, 0)
	if err := r.Write(rctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, "INSERT INTO s VALUES ($1, 1)", "l")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if got := dbrouter.MinLSN(rctx); uint64(got) <= uint64(before) {
		t.Fatalf("MinLSN after a write = %v, want the commit's position (past %v)", got, before)
	}
}

// A lost COMMIT after a statement with arguments: answer lost, one run
// and one row; COMMIT lost, two runs and one row.
func TestLostCommitAfterStatementWithArguments(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := hatest.NewPostgres(t, hatest.PostgresOptions{})
	pg := c.Nodes[0]
	px, dsn := proxied(t, pg)
	r := newRouter(t, dbrouter.Config{Nodes: []string{dsn}})
	if _, err := r.Exec(ctx, "CREATE TABLE t (id int)"); err != nil {
		t.Fatal(err)
	}
	insert := func(id int) (int, error) {
		calls := 0
		err := r.Write(ctx, func(tx pgx.Tx) error {
			calls++
			var got int
			return tx.QueryRow(ctx, "INSERT INTO t VALUES ($1) RETURNING id", id).Scan(&got)
		})
		return calls, err
	}

	px.arm(func(client, server net.Conn) {
		forward(server)
		eventually(10*time.Second, func() bool { return countOn(ctx, pg, "SELECT count(*) FROM t WHERE id = 1") == 1 })
	})
	calls, err := insert(1)
	if n := count(t, ctx, pg, "SELECT count(*) FROM t WHERE id = 1"); err != nil || n != 1 || calls != 1 {
		t.Fatalf("COMMIT answer lost: %v, %d rows after %d runs; want 1 row, 1 run", err, n, calls)
	}
	wantResolutions(t, r, "committed", 1)

	px.arm(func(client, server net.Conn) {})
	calls, err = insert(2)
	if n := count(t, ctx, pg, "SELECT count(*) FROM t WHERE id = 2"); err != nil || n != 1 || calls != 2 {
		t.Fatalf("COMMIT lost: %v, %d rows after %d runs; want 1 row, 2 runs", err, n, calls)
	}
	wantResolutions(t, r, "aborted", 1)
}
