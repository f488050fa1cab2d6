package hakit_test

import (
	"context"
	"testing"
	"time"

	"hakit.dev/hatest"
	"hakit.dev/internal/rolling"
)

// testLog sends output lines to the test log while the test runs.
type testLog struct{ t *testing.T }

func (w testLog) Write(b []byte) (int, error) {
	w.t.Log(string(b[:max(0, len(b)-1)]))
	return len(b), nil
}

// TestRollingRestart restarts each of three instances behind HAProxy
// (inter 1s fall 2 rise 2, retries 3, no redispatch) under 200 requests/s
// of keep-alive traffic, a tenth of it 1-second requests. With the drain
// no request fails; with plain Shutdown (no drain delay) some do, which
// shows the drain is what makes the difference.
func TestRollingRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("a minute of rolling restarts")
	}
	hatestSkip(t)
	bin := hatest.Build(t, "./internal/testapp")
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	drained, err := rolling.Run(ctx, rolling.Options{Bin: bin, DrainDelay: 3 * time.Second, BootDelay: time.Second, Log: testLog{t}})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("with the drain: %s", drained)
	// The load must be real for the result to mean anything: at least
	// half the offered 200/s over the restarts' 15 s or more (a busy
	// machine's generator falls behind the offered rate; the plain
	// Shutdown run below must still fail requests under the same load).
	if drained.Requests < 100*15 {
		t.Fatalf("only %d requests: the load generator did not keep up", drained.Requests)
	}
	if drained.Failed != 0 {
		t.Errorf("with the drain, %d of %d requests failed: %v", drained.Failed, drained.Requests, drained.Kinds)
	}

	naive, err := rolling.Run(ctx, rolling.Options{Bin: bin, DrainDelay: -1, BootDelay: time.Second, Log: testLog{t}})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("plain Shutdown: %s", naive)
	if naive.Failed == 0 {
		t.Errorf("plain Shutdown failed no request either: the test does not show what the drain does")
	}
}
