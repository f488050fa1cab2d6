package uploads

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"runtime"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"

	"hakit.dev/hatest"
)

// earlyBucket is an S3Bucket on a new MinIO with 5 MiB parts.
func earlyBucket(t *testing.T, cfg func(*S3Config)) (*S3Bucket, *hatest.MinIO) {
	t.Helper()
	m := hatest.NewMinIO(t, hatest.MinIOOptions{})
	c := S3Config{Endpoint: m.Endpoint, Region: m.Region, Bucket: m.Bucket, AccessKey: m.AccessKey,
		SecretKey: m.SecretKey, PathStyle: true, Logger: slog.New(slog.DiscardHandler)}
	if cfg != nil {
		cfg(&c)
	}
	b, err := NewS3Bucket(c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return b, m
}

// seeded is n reproducible random bytes.
func seeded(n int64, seed uint64) io.Reader {
	return io.LimitReader(rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)}), n)
}

func sum(t *testing.T, r io.Reader) [32]byte {
	t.Helper()
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		t.Fatal(err)
	}
	return [32]byte(h.Sum(nil))
}

// stored reads key back from the bucket and checks it is n bytes of
// seeded(n, seed), and that no multipart upload is left.
func stored(t *testing.T, b *S3Bucket, m *hatest.MinIO, key string, n int64, seed uint64) {
	t.Helper()
	ctx := context.Background()
	out, err := m.S3Client().GetObject(ctx, &s3.GetObjectInput{Bucket: &m.Bucket, Key: &key})
	if err != nil {
		t.Fatalf("%s: %v", key, err)
	}
	defer out.Body.Close()
	if out.ContentLength == nil || *out.ContentLength != n {
		t.Fatalf("%s: %v bytes stored, want %d", key, out.ContentLength, n)
	}
	if got, want := sum(t, out.Body), sum(t, seeded(n, seed)); got != want {
		t.Fatalf("%s: the stored bytes differ from those sent", key)
	}
	if k, err := b.Incomplete(ctx, ""); err != nil || k != 0 {
		t.Fatalf("%d incomplete multipart uploads (%v)", k, err)
	}
}

// Each part after the first goes to S3 as it fills; a part that ends short
// (the last) is sent again at its length, and one that gets no byte at
// all is none. Whatever the sizes around the part boundaries, the object
// holds exactly the bytes sent.
func TestEarlyPartsRoundTrip(t *testing.T) {
	t.Parallel()
	b, m := earlyBucket(t, nil)
	const p = 5 << 20
	for i, c := range []struct {
		size            int64
		took, sentAgain int64 // early requests that took their part, and parts sent again
	}{
		{p, 0, 0},             // part 2 gets no byte: no part 2
		{p + 1, 0, 1},         // part 2 is 1 byte: its early request gives up
		{2 * p, 1, 0},         // part 2 whole
		{2*p + 100<<10, 1, 1}, // part 2 whole, part 3 short
		{3*p - 1, 1, 1},       // part 3 one byte short
		{3*p + 300<<10, 2, 1}, // two whole parts early
		{p - 1, 0, 0},         // one PUT
		{4 * p, 3, 0},         // every part after the first early
		{4*p + 1, 3, 1},       // and a 1-byte last part
		{p + chunkSize, 0, 1}, // part 2 is exactly one chunk
		{p + chunkSize + 1, 0, 1},
	} {
		took, again := b.early.took.Load(), b.early.sentAgain.Load()
		key := fmt.Sprintf("early/%d", i)
		if err := b.Upload(context.Background(), key, seeded(c.size, uint64(i)), "application/octet-stream", nil); err != nil {
			t.Fatalf("%d bytes: %v", c.size, err)
		}
		stored(t, b, m, key, c.size, uint64(i))
		if d, a := b.early.took.Load()-took, b.early.sentAgain.Load()-again; d != c.took || a != c.sentAgain {
			t.Errorf("%d bytes: %d parts taken early and %d sent again; want %d and %d", c.size, d, a, c.took, c.sentAgain)
		}
	}
	if s := PartMemoryOf(b); s.InUse != 0 {
		t.Fatalf("%d chunks still in use after the uploads", s.InUse)
	}
}

// A client that pauses longer than an early request waits for it makes
// that request give up (it does not hold a request to S3 open); the
// part is sent whole once the client has sent it, and the upload
// completes.
func TestEarlyPartGivesUpOnAPause(t *testing.T) {
	t.Parallel()
	b, m := earlyBucket(t, nil)
	b.earlyStall = 200 * time.Millisecond
	const size = 10 << 20
	body := &gate{r: seeded(size, 7), n: 5<<20 + 300<<10, open: make(chan struct{})}
	done := make(chan error, 1)
	go func() { done <- b.Upload(context.Background(), "paused", body, "application/octet-stream", nil) }()
	p := b.pool
	hatest.WaitFor(t, 30*time.Second, "the early request of part 2 to give up on the paused client", func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		for q := range p.filling {
			if q.stream != nil {
				q.stream.mu.Lock()
				closed := q.stream.closed
				q.stream.mu.Unlock()
				return closed
			}
		}
		return false
	})
	close(body.open)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	stored(t, b, m, "paused", size, 7)
	if took, again := b.early.took.Load(), b.early.sentAgain.Load(); took != 0 || again != 1 {
		t.Fatalf("%d parts taken early, %d sent again; want part 2 sent again", took, again)
	}
}

// failAfter gives n bytes of r, then fails.
type failAfter struct {
	r   io.Reader
	n   int64
	err error
}

func (f *failAfter) Read(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, f.err
	}
	k, err := f.r.Read(p[:min(int64(len(p)), f.n)])
	f.n -= int64(k)
	return k, err
}

// A client gone while a part goes to S3 early fails the upload: the
// multipart upload is aborted, no object is made, and every chunk comes
// back.
func TestEarlyPartClientGone(t *testing.T) {
	t.Parallel()
	b, m := earlyBucket(t, nil)
	gone := errors.New("client gone")
	for i, at := range []int64{5<<20 + 1, 7 << 20, 10<<20 - 1, 12 << 20} {
		key := fmt.Sprintf("gone/%d", i)
		err := b.Upload(context.Background(), key, &failAfter{r: seeded(1<<30, 1), n: at, err: gone}, "application/octet-stream", nil)
		if !errors.Is(err, gone) {
			t.Fatalf("cut at %d: %v, want the client's error", at, err)
		}
		if _, err := m.S3Client().HeadObject(context.Background(), &s3.HeadObjectInput{Bucket: &m.Bucket, Key: &key}); err == nil {
			t.Fatalf("cut at %d: an object was made", at)
		}
	}
	if n, err := b.Incomplete(context.Background(), ""); err != nil || n != 0 {
		t.Fatalf("%d incomplete multipart uploads (%v)", n, err)
	}
	if s := PartMemoryOf(b); s.InUse != 0 {
		t.Fatalf("%d chunks still in use", s.InUse)
	}
}

// With SignPayload the SDK reads a part whole to hash it before sending,
// so nothing is sent early; the upload is as before.
func TestSignedPayloadSendsNoPartEarly(t *testing.T) {
	t.Parallel()
	b, m := earlyBucket(t, func(c *S3Config) { c.SignPayload = true })
	const size = 11 << 20
	if err := b.Upload(context.Background(), "signed", seeded(size, 3), "application/octet-stream", nil); err != nil {
		t.Fatal(err)
	}
	stored(t, b, m, "signed", size, 3)
	if took, again := b.early.took.Load(), b.early.sentAgain.Load(); took != 0 || again != 0 {
		t.Fatalf("%d parts taken early, %d sent again with a signed payload", took, again)
	}
}

// Through a Store, a request with a Content-Length tells how much of the
// file can be left: a last part that cannot be whole is not sent early
// (so not twice). Without one (chunked), it is, and is sent again.
func TestEarlyPartNotForAShortLastPart(t *testing.T) {
	t.Parallel()
	b, m := earlyBucket(t, nil)
	st, err := New(Config{Bucket: b, Prefix: "up/", MaxSize: 64 << 20, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, err := st.Receive(w, r)
		if err != nil {
			http.Error(w, err.Error(), Status(err))
			return
		}
		_ = json.NewEncoder(w).Encode(got)
	}))
	t.Cleanup(srv.Close)
	const size = 2<<20*5 + 700<<10 // two whole parts and a short one
	file := append([]byte("\x89PNG\r\n\x1a\n"), make([]byte, size-8)...)
	if _, err := io.ReadFull(seeded(size-8, 9), file[8:]); err != nil {
		t.Fatal(err)
	}
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	fw, _ := mw.CreateFormFile("file", "a.png")
	fw.Write(file)
	mw.Close()
	for _, c := range []struct {
		name            string
		body            io.Reader
		took, sentAgain int64
	}{
		{"with a Content-Length", bytes.NewReader(body.Bytes()), 1, 0},
		{"chunked", io.MultiReader(bytes.NewReader(body.Bytes())), 1, 1},
	} {
		took, again := b.early.took.Load(), b.early.sentAgain.Load()
		resp, err := http.Post(srv.URL, mw.FormDataContentType(), c.body)
		if err != nil {
			t.Fatal(err)
		}
		var got Stored
		err = json.NewDecoder(resp.Body).Decode(&got)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("%s: %d %v", c.name, resp.StatusCode, err)
		}
		out, err := m.S3Client().GetObject(context.Background(), &s3.GetObjectInput{Bucket: &m.Bucket, Key: &got.Key})
		if err != nil {
			t.Fatal(err)
		}
		if sum(t, out.Body) != sha256.Sum256(file) {
			t.Fatalf("%s: the stored bytes differ from the file", c.name)
		}
		out.Body.Close()
		if d, a := b.early.took.Load()-took, b.early.sentAgain.Load()-again; d != c.took || a != c.sentAgain {
			t.Errorf("%s: %d parts taken early and %d sent again; want %d and %d", c.name, d, a, c.took, c.sentAgain)
		}
	}
}

// A part that waits for pool memory (held by other uploads) is not a
// client that pauses: its early request waits with it, however much
// longer than the stall, and reads on once the part grows. A client that
// sends nothing for the stall makes it give up.
func TestEarlyStreamStallsOnTheClientOnly(t *testing.T) {
	const stall = 20 * time.Millisecond
	p := newPool(2, 5<<20, time.Minute)
	hog := &part{}
	p.wait = time.Millisecond
	for p.grow(context.Background(), hog, false) == nil {
	}
	p.wait = time.Minute

	pt := &part{stream: newStream()}
	read := make(chan error, 1)
	go func() {
		r := &streamReader{ctx: context.Background(), s: pt.stream, want: 2 * chunkSize, stall: stall}
		_, err := io.Copy(io.Discard, r)
		read <- err
	}()
	filled := make(chan error, 1)
	go func() {
		_, err := p.fill(context.Background(), pt, seeded(2*chunkSize, 5), 2*chunkSize, true)
		pt.stream.end()
		filled <- err
	}()
	hatest.WaitFor(t, 10*time.Second, "the part to wait for memory", func() bool {
		pt.stream.mu.Lock()
		defer pt.stream.mu.Unlock()
		return pt.stream.memory
	})
	for start := time.Now(); time.Since(start) < 10*stall; runtime.Gosched() {
		select {
		case err := <-read:
			t.Fatalf("the early request ended while its part waited for memory: %v", err)
		default:
		}
	}
	p.release(hog)
	if err := <-filled; err != nil {
		t.Fatal(err)
	}
	if err := <-read; err != nil {
		t.Fatalf("the early request, once the part was whole: %v", err)
	}
	p.release(pt)

	// The client sends nothing: the request gives up after the stall.
	idle := &streamReader{ctx: context.Background(), s: newStream(), want: chunkSize, stall: stall}
	start := time.Now()
	if _, err := idle.Read(make([]byte, 10)); !errors.Is(err, errStalled) || time.Since(start) < stall {
		t.Fatalf("a client that sends nothing: %v after %s", err, time.Since(start))
	}
}
