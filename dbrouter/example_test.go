package dbrouter_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"github.com/jackc/pgx/v5"

	"hakit.dev/dbrouter"
	"hakit.dev/hatest"
)

// Two app instances share a primary and a replica. The first takes an
// order; its commit position travels with the user (here, as a string)
// and the second instance's read sees the order, from the replica when it
// has caught up, else from the primary.
func Example() {
	ctx := context.Background()
	pg, err := hatest.StartPostgres(ctx, hatest.PostgresOptions{Replicas: 1})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer pg.Close()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))

	instanceA, err := dbrouter.New(ctx, dbrouter.Config{Nodes: pg.DSNs(), Logger: quiet})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer instanceA.Close()
	instanceB, err := dbrouter.New(ctx, dbrouter.Config{Nodes: pg.DSNs(), Logger: quiet})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer instanceB.Close()

	if _, err := instanceA.Exec(ctx, "CREATE TABLE orders (id int PRIMARY KEY, item text)"); err != nil {
		fmt.Println(err)
		return
	}

	// Request 1, on instance A: place the order.
	reqA := dbrouter.WithMinLSN(ctx, 0)
	err = instanceA.Write(reqA, func(tx pgx.Tx) error {
		_, err := tx.Exec(reqA, "INSERT INTO orders VALUES (1, 'teapot')")
		return err
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	token := dbrouter.MinLSN(reqA).String() // into the session

	// Request 2, on instance B: show the order.
	lsn, err := dbrouter.ParseLSN(token)
	if err != nil {
		fmt.Println(err)
		return
	}
	reqB := dbrouter.WithMinLSN(ctx, lsn)
	var item string
	if err := instanceB.QueryRow(reqB, "SELECT item FROM orders WHERE id = 1").Scan(&item); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("order 1:", item)
	// Output: order 1: teapot
}
