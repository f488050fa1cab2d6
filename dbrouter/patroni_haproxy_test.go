package dbrouter_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"hakit.dev/dbrouter"
	"hakit.dev/hatest"
)

// TestPatroniHAProxyFailover configures the router with Patroni's usual
// front door, HAProxy's write port (the node whose Patroni answers 200 on
// /primary) and read port (/replica), and kills the leader's machine under
// 6 writers: no acknowledged write may be lost or written twice.
func TestPatroniHAProxyFailover(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c := hatest.NewPatroni(t, hatest.PatroniOptions{Synchronous: true})
	px := hatest.NewPatroniHAProxy(t, c, hatest.PatroniHAProxyOptions{})
	leader, err := c.Leader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var replicaName string
	for _, n := range c.Nodes {
		if n != leader {
			replicaName = n.Name
		}
	}
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	err = px.WaitUp(wctx, "replicas", replicaName)
	wcancel()
	if err != nil {
		t.Fatal(err)
	}
	r := newRouter(t, dbrouter.Config{Nodes: []string{px.WriteDSN(), px.ReadDSN()}})
	roles := map[string]dbrouter.Role{}
	for _, s := range r.Status() {
		roles[s.Name] = s.Role
	}
	if roles[px.WriteAddr] != dbrouter.RolePrimary || roles[px.ReadAddr] != dbrouter.RoleReplica {
		t.Fatalf("roles %v: want the write port primary and the read port replica", roles)
	}
	if _, err := r.Exec(ctx, "CREATE TABLE w (writer int, seq int)"); err != nil {
		t.Fatal(err)
	}

	res := runWriters(ctx, t, r, 6, func(acked func() int64) {
		hatest.WaitFor(t, 30*time.Second, "writes before the kill", func() bool { return acked() >= 60 })
		killed, err := c.KillLeader(ctx)
		if err != nil {
			t.Error(err)
			return
		}
		start := time.Now()
		next, err := c.WaitLeader(ctx, killed)
		if err != nil {
			t.Error(err)
			return
		}
		promoted := time.Since(start)
		before := acked()
		hatest.WaitFor(t, 60*time.Second, "writes through the new leader", func() bool { return acked() >= before+60 })
		t.Logf("Patroni promoted %s %v after the kill; writes acknowledged again %v after it",
			next.Name, promoted.Round(100*time.Millisecond), time.Since(start).Round(100*time.Millisecond))
	})
	next, err := c.Leader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	lost, dups := checkWrites(t, ctx, next.DSN(), res)
	t.Logf("%d writes acknowledged, %d errors handed to the callers (%v), %d lost, %d duplicated",
		len(res.acked), len(res.errs), firstErr(res.errs), lost, dups)
	if lost != 0 || dups != 0 {
		t.Fatalf("%d acknowledged writes lost, %d rows written twice", lost, dups)
	}
}

// writeResults are what writers saw: the (writer, seq) pairs the router
// acknowledged and the errors it returned.
type writeResults struct {
	acked [][2]int
	errs  []error
}

// runWriters runs n writers inserting (writer, seq) into w through r until
// during (the fault injection, on the test's goroutine) returns, and
// returns what they saw. during gets the count of acknowledged writes.
func runWriters(ctx context.Context, t *testing.T, r *dbrouter.Router, n int, during func(acked func() int64)) writeResults {
	t.Helper()
	var (
		mu    sync.Mutex
		res   writeResults
		count atomic.Int64
		stop  atomic.Bool
		wg    sync.WaitGroup
	)
	for g := range n {
		wg.Go(func() {
			for seq := 0; !stop.Load() && ctx.Err() == nil; seq++ {
				err := r.Write(ctx, func(tx pgx.Tx) error {
					_, err := tx.Exec(ctx, "INSERT INTO w VALUES ($1, $2)", g, seq)
					return err
				})
				mu.Lock()
				if err == nil {
					res.acked = append(res.acked, [2]int{g, seq})
					count.Add(1)
				} else {
					res.errs = append(res.errs, err)
				}
				mu.Unlock()
			}
		})
	}
	during(count.Load)
	stop.Store(true)
	wg.Wait()
	return res
}

// checkWrites counts the acknowledged writes missing from w on the node
// at dsn, and the (writer, seq) pairs written more than once.
func checkWrites(t *testing.T, ctx context.Context, dsn string, res writeResults) (lost, dups int) {
	t.Helper()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, "SELECT writer, seq, count(*) FROM w GROUP BY writer, seq")
	if err != nil {
		t.Fatal(err)
	}
	have := map[[2]int]int{}
	for rows.Next() {
		var w, s, n int
		if err := rows.Scan(&w, &s, &n); err != nil {
			t.Fatal(err)
		}
		have[[2]int{w, s}] = n
		if n > 1 {
			dups++
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	for _, a := range res.acked {
		if have[a] == 0 {
			lost++
		}
	}
	return lost, dups
}

func firstErr(errs []error) string {
	if len(errs) == 0 {
		return "none"
	}
	return fmt.Sprintf("first: %v", errs[0])
}
