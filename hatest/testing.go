package hatest

import (
	"context"
	"os"
	"testing"
	"time"
)

// skipUnlessServices skips t when EnvSkipServices is set to 1.
func skipUnlessServices(t testing.TB) {
	t.Helper()
	if os.Getenv(EnvSkipServices) == "1" {
		t.Skipf("%s=1: not starting real services", EnvSkipServices)
	}
}

// WaitFor calls cond every 20ms until it returns true, and fails the test
// with "timed out after <timeout> waiting for <what>" if it still returns
// false once timeout has passed. cond is called at least once, so a
// condition that already holds passes even with a zero timeout. Like
// t.Fatal, WaitFor must be called from the goroutine running the test.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// closer is what every started service set offers.
type closer interface{ Close() error }

// register makes t close s when the test ends, and shows the services' log
// tails when the test failed.
func register[S closer](t testing.TB, s S, err error, logs func() string) S {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() && logs != nil {
			t.Logf("hatest: the test failed; service logs:\n%s", logs())
		}
		if err := s.Close(); err != nil {
			t.Errorf("hatest: close: %v", err)
		}
	})
	return s
}

// NewPostgres starts a PostgreSQL cluster for the test (see
// [StartPostgres]) and stops it when the test and its subtests end, pass or
// fail. It fails the test if the cluster does not come up, and skips it
// only when HAKIT_SKIP_SERVICES=1.
func NewPostgres(t testing.TB, opts PostgresOptions) *PostgresCluster {
	t.Helper()
	skipUnlessServices(t)
	c, err := StartPostgres(context.Background(), opts)
	return register(t, c, err, func() string { return c.logs() })
}

func (c *PostgresCluster) logs() string {
	var s string
	for _, n := range c.Nodes {
		s += "--- " + n.Name + " (" + n.LogPath() + "):\n" + n.d.logTail(20) + "\n"
	}
	return s
}
