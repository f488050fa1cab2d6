package main

import (
	"bytes"
	"context"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"hakit.dev/examples/shop/customer/lab"
	"hakit.dev/hatest"
)

// labOutput keeps the shop instances' output for the log of a failed
// test: at warn level a passing run writes little, a failing one shows
// why.
type labOutput struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (o *labOutput) Write(b []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.buf.Len() > 4<<20 {
		o.buf.Reset()
		o.buf.WriteString("(earlier output dropped)\n")
	}
	return o.buf.Write(b)
}

func (o *labOutput) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.String()
}

// startLab builds the shop (a plain go build, bounded by 3 minutes of its
// own: three race-instrumented instances would outweigh everything else on
// a small machine) and starts the lab with it, within 2 minutes. The lab stops when the test ends; a failed test logs
// the instances' output.
func startLab(t *testing.T, opts lab.Options) *lab.Lab {
	t.Helper()
	if os.Getenv(hatest.EnvSkipServices) == "1" {
		t.Skipf("%s=1: not starting real services", hatest.EnvSkipServices)
	}
	// The build has its own bound: on a busy machine it can take a
	// minute, which is not the lab's time.
	bctx, bcancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer bcancel()
	t0 := time.Now()
	bin, err := lab.BuildShop(bctx, ".", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("lab: shop built in %s", time.Since(t0).Round(100*time.Millisecond))
	out := &labOutput{}
	opts.ShopBin = bin
	opts.Output = out
	opts.Logf = t.Logf
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	l, err := lab.Start(ctx, opts)
	if err != nil {
		t.Fatalf("%v\n--- shop output:\n%s", err, out)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("--- shop output (last lines):\n%s", labTail(out.String(), 200))
		}
		if err := l.Close(); err != nil {
			t.Errorf("lab: close: %v", err)
		}
	})
	return l
}

func labTail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
