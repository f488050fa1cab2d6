package uploads_test

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"hakit.dev/hatest"
	"hakit.dev/uploads"
)

// busyCount is the Store's count of uploads refused as busy.
func busyCount(t *testing.T, st *uploads.Store) float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(st)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "hakit_uploads_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "outcome" && l.GetValue() == "busy" {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// The review's reproduction, with the default pool (8 parts' worth):
// 32 clients each send 1.25 MB and then trickle on, holding most of the
// pool with parts far from complete. A 100 KB upload gets memory at once
// (from the reserve: it never needs more than its first chunk) and is
// stored while they are still going; any the pool refused were answered
// 503 with Retry-After.
func TestSlowUploadsDoNotBlockSmallOnes(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 300<<20)
	var slow []*rawUpload
	for i := range 32 {
		u := startRawUpload(t, h.srv.URL, "/upload", 100<<20, byte(40+i))
		stop := u.trickle(1250000, 2<<10, 100*time.Millisecond) // then 20 KB/s
		defer stop()
		slow = append(slow, u)
	}
	hatest.WaitFor(t, 60*time.Second, "the slow uploads to fill the pool", func() bool {
		return uploads.PartMemoryOf(h.bucket).Full
	})
	t.Logf("pool after the slow uploads: %+v", uploads.PartMemoryOf(h.bucket))

	start := time.Now()
	done := make(chan struct{})
	var (
		code int
		body string
		err  error
	)
	go func() {
		defer close(done)
		code, _, body, err = postFile(h.srv.URL+"/upload", "small.png", newPattern(100<<10, 30))
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second): // below the default BufferWait: no riding on others' refusals
		t.Fatalf("a 100 KB upload did not finish within 20s while 32 others held the pool (%+v)", uploads.PartMemoryOf(h.bucket))
	}
	if err != nil || code != 200 {
		t.Fatalf("small upload: %d %s %v", code, body, err)
	}
	t.Logf("100 KB stored in %s", time.Since(start))

	going, refused := 0, 0
	for i, u := range slow {
		if !u.answered() {
			going++
			continue
		}
		r := <-u.resp
		if r.err != nil || r.code != 503 || !strings.Contains(r.body, "busy") || r.header.Get("Retry-After") == "" {
			t.Fatalf("slow upload %d: %d %v %s %v; want it still going, or 503 busy with Retry-After", i, r.code, r.header, r.body, r.err)
		}
		if s, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || s < 1 {
			t.Fatalf("slow upload %d: Retry-After %q", i, r.header.Get("Retry-After"))
		}
		refused++
	}
	// Those the pool holds go on: a part that cannot grow is refused only
	// after BufferWait (30s), longer than all this took.
	if going < len(slow)/2 {
		t.Fatalf("only %d slow uploads still going (%d refused)", going, refused)
	}
	if n := busyCount(t, h.store); n != float64(refused) {
		t.Fatalf("hakit_uploads_total{outcome=busy} = %v, want %d", n, refused)
	}
	t.Logf("%d slow uploads still going, %d refused as busy", going, refused)
}

// A large upload arriving while two stalled uploads hold most of the pool
// (partial parts the pool must keep until their clients send the rest)
// waits BufferWait for memory and is refused with 503 and Retry-After —
// it does not hang — and nothing of it is left in the bucket.
func TestUploadAtAFullPoolIsRefused(t *testing.T) {
	t.Parallel()
	const wait = 2 * time.Second
	h := newHarnessS3(t, 300<<20, func(c *uploads.S3Config) {
		c.MaxBuffers = 2
		c.BufferWait = wait
	}, func(c *uploads.Config) {
		c.Window = 2 * time.Minute // the stalled ones are not cut during the test
	}, nil)
	const chunk = 256 << 10
	for i := range 2 {
		u := startRawUpload(t, h.srv.URL, "/upload", 20<<20, byte(50+i))
		if err := u.send(14*chunk - 1<<10); err != nil {
			t.Fatal(err)
		}
		hatest.WaitFor(t, 30*time.Second, "the stalled upload's bytes in the pool", func() bool {
			return uploads.PartMemoryOf(h.bucket).InUse >= 14*(i+1)
		})
	}
	t.Logf("pool with the stalled uploads: %+v", uploads.PartMemoryOf(h.bucket))

	start := time.Now()
	large := startRawUpload(t, h.srv.URL, "/upload", 20<<20, 52)
	go large.finish() // fails once the server has answered
	r := large.answer(t, 30*time.Second)
	took := time.Since(start)
	if r.code != 503 || !strings.Contains(r.body, "busy") {
		t.Fatalf("large upload at a full pool: %d %s", r.code, r.body)
	}
	if s, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || s < 1 {
		t.Fatalf("Retry-After %q", r.header.Get("Retry-After"))
	}
	if took < wait/2 {
		t.Fatalf("refused after %s, before the bounded wait (%s)", took, wait)
	}
	t.Logf("refused after %s (BufferWait %s)", took, wait)
	h.nothingLeft(t)
}
