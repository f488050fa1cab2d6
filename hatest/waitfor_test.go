package hatest_test

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"hakit.dev/hatest"
)

// fatalTB records what WaitFor fails with. Its Fatalf ends the calling
// goroutine, as testing.T's does.
type fatalTB struct {
	testing.TB
	msg    string
	failed bool
}

func (f *fatalTB) Helper() {}

func (f *fatalTB) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	f.failed = true
	runtime.Goexit()
}

// waitFor runs hatest.WaitFor with a fatalTB on its own goroutine, so that
// a failure ends that goroutine and not the test.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) *fatalTB {
	f := &fatalTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		hatest.WaitFor(f, timeout, what, cond)
	}()
	<-done
	return f
}

func TestWaitForPasses(t *testing.T) {
	calls := 0
	f := waitFor(t, time.Minute, "the third call", func() bool {
		calls++
		return calls == 3
	})
	if f.failed || calls != 3 {
		t.Fatalf("failed = %v (%q), cond called %d times; want a pass after 3 calls", f.failed, f.msg, calls)
	}

	// A condition that already holds passes even with no time left.
	calls = 0
	f = waitFor(t, 0, "nothing", func() bool { calls++; return true })
	if f.failed || calls != 1 {
		t.Fatalf("zero timeout: failed = %v (%q), cond called %d times; want a pass after 1 call", f.failed, f.msg, calls)
	}

	// The real testing.T passes too.
	hatest.WaitFor(t, time.Minute, "true", func() bool { return true })
}

func TestWaitForTimesOut(t *testing.T) {
	const timeout = 100 * time.Millisecond
	start := time.Now()
	f := waitFor(t, timeout, "the impossible", func() bool { return false })
	elapsed := time.Since(start)
	if want := "timed out after 100ms waiting for the impossible"; !f.failed || f.msg != want {
		t.Fatalf("failed = %v with %q; want %q", f.failed, f.msg, want)
	}
	if elapsed < timeout {
		t.Errorf("failed after %s; want no sooner than the %s timeout", elapsed, timeout)
	}
}
