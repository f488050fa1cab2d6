package dbrouter

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"hakit.dev/hatest"
)

// The node knows each pooled connection from its first use until the
// pool closes it, and which are in use: what markDown cuts.
func TestConnStatesFollowThePool(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pg := hatest.NewPostgres(t, hatest.PostgresOptions{})
	var closed atomic.Int32
	r, err := New(ctx, Config{Nodes: pg.DSNs(), Logger: slog.New(slog.DiscardHandler),
		ConfigurePool: func(_ string, pc *pgxpool.Config) {
			pc.MaxConns = 4
			pc.BeforeClose = func(*pgx.Conn) { closed.Add(1) } // still called
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	n := r.nodes[0]
	states := func() (total, inUse int) {
		n.connsMu.Lock()
		defer n.connsMu.Unlock()
		for st := range n.conns {
			total++
			if st.inUse.Load() {
				inUse++
			}
		}
		return total, inUse
	}
	// Four reads at once, each holding its connection until all have one,
	// twice: the second time on the same connections.
	for round := 1; round <= 2; round++ {
		var wg sync.WaitGroup
		in := make(chan struct{}, 4)
		release := make(chan struct{})
		var once sync.Once
		free := func() { once.Do(func() { close(release) }); wg.Wait() }
		for range 4 {
			wg.Go(func() {
				err := r.Read(ctx, func(q Querier) error {
					in <- struct{}{}
					<-release
					var one int
					return q.QueryRow(ctx, "SELECT 1").Scan(&one)
				})
				if err != nil {
					t.Error(err)
				}
			})
		}
		for range 4 {
			select {
			case <-in:
			case <-time.After(30 * time.Second):
				free()
				t.Fatalf("round %d: four reads did not all get a connection", round)
			}
		}
		if total, inUse := states(); total != 4 || inUse != 4 {
			free()
			t.Fatalf("round %d: %d connections known, %d in use; want 4 and 4", round, total, inUse)
		}
		free()
		if total, inUse := states(); total != 4 || inUse != 0 {
			t.Fatalf("round %d, after the reads: %d connections known, %d in use; want 4 and 0", round, total, inUse)
		}
	}

	// The pool closes them: the node forgets them, and the BeforeClose
	// given in ConfigurePool runs too.
	n.pool.Reset()
	deadline := time.Now().Add(10 * time.Second)
	for total, _ := states(); total != 0 || closed.Load() != 4; total, _ = states() {
		if time.Now().After(deadline) {
			t.Fatalf("after the pool's reset %d connections are still known, %d closed; want 0 and 4", total, closed.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
	var one int
	if err := r.Read(ctx, func(q Querier) error { return q.QueryRow(ctx, "SELECT 1").Scan(&one) }); err != nil {
		t.Fatal(err)
	}
	if total, inUse := states(); total != 1 || inUse != 0 {
		t.Fatalf("a new connection: %d known, %d in use; want 1 and 0", total, inUse)
	}
}
