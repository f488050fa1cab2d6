package main

import (
	"context"
	"os"
	"testing"
	"time"

	"hakit.dev/examples/shop/customer/lab"
	"hakit.dev/hatest"
)

// startLab builds the shop (a plain go build, bounded by 3 minutes of its
// own: three race-instrumented instances would outweigh everything else on
// a small machine) and starts the lab with it, within 2 minutes. The lab
// stops when the test ends; a failed test logs the instances' output.
func startLab(t *testing.T, opts lab.Options) *lab.Lab {
	t.Helper()
	if os.Getenv(hatest.EnvSkipServices) == "1" {
		t.Skipf("%s=1: not starting real services", hatest.EnvSkipServices)
	}
	// The build has its own bound: on a busy machine it can take a
	// minute, which is not the lab's time.
	t0 := time.Now()
	opts.ShopBin = hatest.BuildModule(t, ".", 3*time.Minute)
	t.Logf("lab: shop built in %s", time.Since(t0).Round(100*time.Millisecond))
	opts.Logf = t.Logf
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	l, err := lab.Start(ctx, opts)
	if err != nil {
		t.Fatal(err) // with the last output lines of the instance that did not start
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("--- shop output (last lines):\n%s", l.OutputTail(200))
		}
		if err := l.Close(); err != nil {
			t.Errorf("lab: close: %v", err)
		}
	})
	return l
}
