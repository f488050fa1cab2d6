package dbrouter_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"hakit.dev/dbrouter"
	"hakit.dev/hatest"
)

// Refresh probes every node at once: with probes an hour apart, it still
// returns each node's status as probed after the call, and sees a replica
// fall behind the moment it does.
func TestRefreshProbesNow(t *testing.T) {
	t.Parallel()
	pg := hatest.NewPostgres(t, hatest.PostgresOptions{Replicas: 1})
	ctx := context.Background()
	if err := pg.Nodes[0].Exec(ctx, `CREATE TABLE t (id int)`); err != nil {
		t.Fatal(err)
	}
	if err := pg.WaitReplicated(ctx); err != nil {
		t.Fatal(err)
	}
	r, err := dbrouter.New(ctx, dbrouter.Config{Nodes: pg.DSNs(), ProbeInterval: time.Hour, ProbeTimeout: 10 * time.Second,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	hatest.WaitFor(t, 30*time.Second, "a primary and a replica known", func() bool {
		roles := map[dbrouter.Role]int{}
		for _, s := range r.Status() {
			roles[s.Role]++
		}
		return roles[dbrouter.RolePrimary] == 1 && roles[dbrouter.RoleReplica] == 1
	})

	since := time.Now()
	for _, s := range r.Refresh(ctx) {
		if s.Probed.Before(since) || s.Err != nil {
			t.Errorf("after Refresh: %s probed at %s (%v), before the call at %s", s.Name, s.Probed.Format(time.StampMicro), s.Err, since.Format(time.StampMicro))
		}
	}

	// The replica now applies commits 30s late: a write leaves it behind,
	// which only a probe after the write can tell.
	if err := pg.Nodes[1].SetApplyDelay(ctx, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := pg.Nodes[0].Exec(ctx, `INSERT INTO t VALUES (1)`); err != nil {
		t.Fatal(err)
	}
	var lag time.Duration
	hatest.WaitFor(t, 20*time.Second, "Refresh showing the replica behind", func() bool {
		for _, s := range r.Refresh(ctx) {
			if s.Role == dbrouter.RoleReplica {
				lag = s.Lag
			}
		}
		return lag > 0
	})
	for _, s := range r.Status() {
		if s.Role == dbrouter.RoleReplica && s.Lag != lag {
			t.Errorf("Status after Refresh: lag %s, want the refreshed %s", s.Lag, lag)
		}
	}

	// A closed router answers at once.
	r.Close()
	start := time.Now()
	r.Refresh(ctx)
	if took := time.Since(start); took > time.Second {
		t.Errorf("Refresh on a closed router took %s", took)
	}
}

// A node that takes connections and never answers was found down by the
// probe at New: Refresh does not wait out its probe's timeout again.
func TestRefreshDoesNotWaitForADownNode(t *testing.T) {
	t.Parallel()
	pg := hatest.NewPostgres(t, hatest.PostgresOptions{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var held []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c) // never answered
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range held {
			c.Close()
		}
	})
	hung := "postgres://postgres@" + ln.Addr().String() + "/postgres?sslmode=disable&connect_timeout=30"
	ctx := context.Background()
	const probeTimeout = 3 * time.Second
	r, err := dbrouter.New(ctx, dbrouter.Config{Nodes: []string{pg.DSNs()[0], hung}, ProbeInterval: time.Hour, ProbeTimeout: probeTimeout,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	hatest.WaitFor(t, 30*time.Second, "the hung node found down", func() bool {
		for _, s := range r.Status() {
			if s.Name == ln.Addr().String() {
				return s.Role == dbrouter.RoleDown
			}
		}
		return false
	})
	start := time.Now()
	st := r.Refresh(ctx)
	if took := time.Since(start); took >= probeTimeout {
		t.Fatalf("Refresh took %v with one node down; want less than the probe timeout (%v)", took, probeTimeout)
	}
	for _, s := range st {
		if s.Role == dbrouter.RolePrimary && s.Err != nil {
			t.Fatalf("primary after Refresh: %v", s.Err)
		}
	}
}
