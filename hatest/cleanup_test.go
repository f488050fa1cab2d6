package hatest_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"hakit.dev/hatest"
)

// The helper test runs in a child test process started by TestNoOrphans:
// it starts one of every service, writes every pid it can see to a file,
// then fails, panics, or waits to be killed.
func TestHelperStartEverything(t *testing.T) {
	mode := os.Getenv("HATEST_HELPER_MODE")
	if mode == "" {
		t.Skip("helper for TestNoOrphans, runs only in its child process")
	}
	pg := hatest.NewPostgres(t, hatest.PostgresOptions{Replicas: 1})
	rd := hatest.NewRedis(t, hatest.RedisOptions{Replicas: 1, Sentinels: 1})
	mn := hatest.NewMinIO(t, hatest.MinIOOptions{})
	hp := hatest.NewHAProxy(t, hatest.HAProxyOptions{Backends: []hatest.Backend{{Addr: "127.0.0.1:1"}}})
	sleeper := hatest.NewProcess(t, hatest.ProcessOptions{Path: "sleep", Args: []string{"600"}})
	var pids []int
	for _, n := range pg.Nodes {
		pids = append(pids, n.Pids()...)
	}
	for _, n := range append(rd.Nodes, rd.Sentinels...) {
		pids = append(pids, n.Pid())
	}
	pids = append(pids, mn.Pid(), hp.Pid(), sleeper.Pid())
	if mode == "killed" {
		pc := hatest.NewPatroni(t, hatest.PatroniOptions{})
		for _, n := range pc.Nodes {
			pids = append(pids, n.Pids()...)
		}
	}
	var b strings.Builder
	for _, p := range pids {
		fmt.Fprintln(&b, p)
	}
	tmp := os.Getenv("HATEST_HELPER_PIDS") + ".tmp"
	if err := os.WriteFile(tmp, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, os.Getenv("HATEST_HELPER_PIDS")); err != nil {
		t.Fatal(err)
	}
	// Wait until the parent has seen the processes alive.
	deadline := time.Now().Add(time.Minute)
	for {
		if _, err := os.Stat(os.Getenv("HATEST_HELPER_PIDS") + ".seen"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the parent test did not look at the pids")
		}
		time.Sleep(20 * time.Millisecond)
	}
	switch mode {
	case "fail":
		t.Fatal("failing on purpose")
	case "panic":
		panic("panicking on purpose")
	case "killed":
		time.Sleep(10 * time.Minute) // until the parent kills this process
	}
}

// TestNoOrphans checks that every process the harness starts is gone when a
// test ends: when it fails, when it panics, and when the test process itself
// is killed (then the servers die with it, and SweepOrphans stops what
// Patroni started detached).
func TestNoOrphans(t *testing.T) {
	if os.Getenv("HATEST_HELPER_MODE") != "" {
		t.Skip("in the helper process")
	}
	for _, mode := range []string{"fail", "panic", "killed"} {
		t.Run(mode, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
			defer cancel()
			pidFile := filepath.Join(t.TempDir(), "pids")
			cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestHelperStartEverything$", "-test.v")
			cmd.Env = append(os.Environ(), "HATEST_HELPER_MODE="+mode, "HATEST_HELPER_PIDS="+pidFile)
			out, err := os.Create(filepath.Join(t.TempDir(), "out"))
			if err != nil {
				t.Fatal(err)
			}
			cmd.Stdout, cmd.Stderr = out, out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()

			var pids []int
			for pids == nil {
				if b, err := os.ReadFile(pidFile); err == nil {
					sc := bufio.NewScanner(strings.NewReader(string(b)))
					for sc.Scan() {
						p, _ := strconv.Atoi(sc.Text())
						pids = append(pids, p)
					}
					break
				}
				select {
				case err := <-done:
					b, _ := os.ReadFile(out.Name())
					t.Fatalf("helper exited (%v) before writing its pids:\n%s", err, b)
				case <-ctx.Done():
					t.Fatal("helper did not write its pids")
				case <-time.After(100 * time.Millisecond):
				}
			}
			// Some pids (short-lived PostgreSQL backends) may be gone
			// already; the servers themselves are not.
			alive := 0
			for _, p := range pids {
				if hatest.Alive(p) {
					alive++
				}
			}
			if alive < 10 {
				t.Fatalf("only %d of the helper's %d pids are alive: %v", alive, len(pids), pids)
			}
			if err := os.WriteFile(pidFile+".seen", nil, 0o644); err != nil {
				t.Fatal(err)
			}
			if mode == "killed" {
				_ = cmd.Process.Kill()
			}
			if err := <-done; err == nil {
				t.Fatal("helper succeeded; it should have failed")
			}
			if mode == "killed" {
				// The direct children die with the test process; Patroni's
				// PostgreSQL is left for the sweep.
				if err := hatest.SweepOrphans(); err != nil {
					t.Fatal(err)
				}
			} else if b, _ := os.ReadFile(out.Name()); !strings.Contains(string(b), "on purpose") {
				t.Fatalf("helper output does not show the failure:\n%s", b)
			}
			deadline := time.Now().Add(15 * time.Second)
			for _, p := range pids {
				for hatest.Alive(p) {
					if time.Now().After(deadline) {
						t.Fatalf("pid %d outlived the %s test", p, mode)
					}
					time.Sleep(50 * time.Millisecond)
				}
			}
		})
	}
}
