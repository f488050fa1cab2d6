package dbrouter_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"hakit.dev/dbrouter"
	"hakit.dev/hatest"
)

// A Write spends no round trip beyond a bare pgx transaction: BEGIN and
// the read of what resolving a lost COMMIT needs go to the server with
// fn's first statement. Counted at the protocol level, through a proxy,
// in pgx's default mode and in the simple protocol.
func TestWriteRoundTrips(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := hatest.NewPostgres(t, hatest.PostgresOptions{})
	pg := c.Nodes[0]
	if err := pg.Exec(ctx, "CREATE TABLE rt (id int)"); err != nil {
		t.Fatal(err)
	}
	for _, mode := range execModes() {
		t.Run(mode.String(), func(t *testing.T) {
			// The bare transaction.
			bpx, bdsn := proxied(t, pg)
			pcfg, err := pgxpool.ParseConfig(bdsn)
			if err != nil {
				t.Fatal(err)
			}
			pcfg.ConnConfig.DefaultQueryExecMode = mode
			pool, err := pgxpool.NewWithConfig(ctx, pcfg)
			if err != nil {
				t.Fatal(err)
			}
			defer pool.Close()
			for i := range 3 {
				if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
					_, err := tx.Exec(ctx, "INSERT INTO rt VALUES ($1)", i)
					return err
				}); err != nil {
					t.Fatal(err)
				}
			}
			bare := bpx.roundTrips()

			px, dsn := proxied(t, pg)
			r := newRouter(t, dbrouter.Config{Nodes: []string{dsn}, ConfigurePool: inExecMode(mode)})
			for i := range 3 {
				if err := r.Write(ctx, func(tx pgx.Tx) error {
					_, err := tx.Exec(ctx, "INSERT INTO rt VALUES ($1)", i)
					return err
				}); err != nil {
					t.Fatal(err)
				}
			}
			// The first transaction on a connection also prepares its
			// statements (pgx's statement cache); the later ones show
			// the steady state.
			ours := px.roundTrips()
			if len(bare) != 3 || len(ours) != 3 {
				t.Fatalf("committed transactions seen: bare %v, Write %v; want 3 each", bare, ours)
			}
			if ours[2] > bare[2] || ours[2] != 2 {
				t.Fatalf("round trips per transaction: Write %v, bare pgx %v; want 2 for a Write of one statement, and none beyond the bare transaction", ours, bare)
			}
			t.Logf("round trips per transaction: Write %v, bare pgx %v", ours, bare)
		})
	}
}
