package uploads

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"hakit.dev/hatest"
)

// gate gives the first n bytes of r, then blocks until open is closed,
// then gives the rest.
type gate struct {
	r    io.Reader
	n    int64
	open chan struct{}
}

func (g *gate) Read(p []byte) (int, error) {
	if g.n == 0 {
		<-g.open
		return g.r.Read(p)
	}
	k, err := g.r.Read(p[:min(int64(len(p)), g.n)])
	g.n -= int64(k)
	return k, err
}

// zeros is an endless reader of zero bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// An upload whose multipart upload is under way (a part sent) and whose
// next part cannot get memory within BufferWait fails with ErrBusy, and
// its multipart upload is aborted: no incomplete upload, no object.
func TestBusyAbortsTheMultipartUpload(t *testing.T) {
	t.Parallel()
	const wait = time.Second
	m := hatest.NewMinIO(t, hatest.MinIOOptions{})
	b, err := NewS3Bucket(S3Config{Endpoint: m.Endpoint, Region: m.Region, Bucket: m.Bucket, AccessKey: m.AccessKey,
		SecretKey: m.SecretKey, PathStyle: true, MaxBuffers: 2, BufferWait: wait, Concurrency: 1,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	p := b.pool
	ctx := context.Background()

	// The first part and 100 KiB of the second, then the client pauses.
	body := &gate{r: zeros{}, n: 5<<20 + 100<<10, open: make(chan struct{})}
	done := make(chan error, 1)
	go func() { done <- b.Upload(ctx, "up/big", body, "image/png", nil) }()
	hatest.WaitFor(t, 30*time.Second, "the first part sent and the second begun", func() bool {
		p.mu.Lock()
		second := p.sending == 0 && len(p.filling) == 1
		for q := range p.filling {
			second = second && q.held == 1
		}
		p.mu.Unlock()
		if !second { // (or the first part, before the multipart upload)
			return false
		}
		n, err := b.Incomplete(ctx, "up/")
		return err == nil && n == 1
	})

	// Another upload takes a part's worth meanwhile and holds it (its
	// client stalls, say, just before the end of its part).
	other := &part{}
	for range p.perPart {
		if err := p.grow(ctx, other, false); err != nil {
			t.Fatal(err)
		}
	}
	defer p.release(other)

	close(body.open) // the client goes on: its part outgrows what is left
	start := time.Now()
	select {
	case err = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the upload did not end within 30s")
	}
	if !errors.Is(err, ErrBusy) || RetryAfter(err) < time.Second {
		t.Fatalf("upload with its next part short of memory: %v (retry after %s)", err, RetryAfter(err))
	}
	if took := time.Since(start); took < wait {
		t.Fatalf("refused after %s, before BufferWait (%s)", took, wait)
	}
	if n, err := b.Incomplete(ctx, "up/"); err != nil || n != 0 {
		t.Fatalf("incomplete multipart uploads after the refusal: %d, %v", n, err)
	}
	if _, err := b.Stat(ctx, "up/big"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("the refused upload's object: %v", err)
	}
}
