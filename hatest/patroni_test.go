package hatest_test

import (
	"context"
	"testing"
	"time"

	"hakit.dev/hatest"
)

func TestPatroniPromotesOnLeaderKill(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c := hatest.NewPatroni(t, hatest.PatroniOptions{})
	leader, err := c.Leader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := queryInt(t, ctx, leader.DSN(), "SELECT 1"); err != nil || n != 1 {
		t.Fatal(n, err)
	}
	if err := leader.Exec(ctx, "CREATE TABLE t AS SELECT 1 AS id"); err != nil {
		t.Fatal(err)
	}

	killed, err := c.KillLeader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	next, err := c.WaitLeader(ctx, killed)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Patroni promoted %s %s after the leader was killed", next.Name, time.Since(start).Round(100*time.Millisecond))
	if err := next.Exec(ctx, "INSERT INTO t VALUES (2)"); err != nil {
		t.Fatalf("write on the new leader: %v", err)
	}

	// The old leader comes back as a replica.
	if err := killed.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := killed.WaitStreaming(ctx); err != nil {
		t.Fatal(err)
	}
	if killed.IsLeader(ctx) {
		t.Fatal("the old leader came back as leader")
	}
}
