package uploads_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"hakit.dev/hatest"
	"hakit.dev/uploads"
)

// The tests here send uploads by hand on raw connections, so that each
// decides when every byte goes, and can stop sending altogether.

const rawBoundary = "r4w-b0undary"

var (
	rawHead = "--" + rawBoundary + "\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.png\"\r\nContent-Type: image/png\r\n\r\n"
	rawTail = "\r\n--" + rawBoundary + "--\r\n"
)

// rawUpload is a multipart upload of one file on a raw connection.
type rawUpload struct {
	conn net.Conn
	src  io.Reader
	resp chan rawResponse // the server's answer, once
}

type rawResponse struct {
	code   int
	header http.Header
	body   string
	err    error
}

// startRawUpload sends the request head for a file of size bytes (what
// Content-Length announces; the test may send less) and starts reading the
// answer.
func startRawUpload(t *testing.T, srvURL, path string, size int64, seed byte) *rawUpload {
	t.Helper()
	u, _ := url.Parse(srvURL)
	conn, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ru := &rawUpload{conn: conn, src: newPattern(size, seed), resp: make(chan rawResponse, 1)}
	if _, err := fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: multipart/form-data; boundary=%s\r\nContent-Length: %d\r\n\r\n%s",
		path, u.Host, rawBoundary, int64(len(rawHead))+size+int64(len(rawTail)), rawHead); err != nil {
		t.Fatal(err)
	}
	go func() {
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		r := rawResponse{err: err}
		if err == nil {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			r.code, r.header, r.body = resp.StatusCode, resp.Header, string(b)
		}
		ru.resp <- r
	}()
	return ru
}

// send sends the file's next n bytes.
func (u *rawUpload) send(n int64) error {
	_, err := io.CopyN(u.conn, u.src, n)
	return err
}

// finish sends the rest of the file and the closing boundary.
func (u *rawUpload) finish() error {
	if _, err := io.Copy(u.conn, u.src); err != nil {
		return err
	}
	_, err := io.WriteString(u.conn, rawTail)
	return err
}

// trickle sends the file's next head bytes, then chunk bytes every
// interval, in the background, until stop is called (which closes the
// connection, since a send the server stopped reading may block, and
// waits for the sender to end) or a send fails.
func (u *rawUpload) trickle(head, chunk int64, every time.Duration) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		if head > 0 && u.send(head) != nil {
			return
		}
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				if u.send(chunk) != nil {
					return
				}
			}
		}
	})
	var once sync.Once
	return func() { once.Do(func() { close(done); u.conn.Close(); wg.Wait() }) }
}

// answer waits up to timeout for the server's answer.
func (u *rawUpload) answer(t *testing.T, timeout time.Duration) rawResponse {
	t.Helper()
	select {
	case r := <-u.resp:
		if r.err != nil {
			t.Fatalf("reading the answer: %v", r.err)
		}
		return r
	case <-time.After(timeout):
		t.Fatalf("no answer within %s", timeout)
	}
	return rawResponse{}
}

// answered reports whether the server has answered yet.
func (u *rawUpload) answered() bool {
	select {
	case r := <-u.resp:
		u.resp <- r
		return true
	default:
		return false
	}
}

// newDiskHarness serves a Store on a DiskBucket: POST /upload (with an
// optional ?timeout= request deadline) and GET /files/{key...}, whose
// Serve errors go to h.served.
func newDiskHarness(t *testing.T, cfg func(*uploads.Config), srv func(*http.Server)) *harness {
	t.Helper()
	dir := t.TempDir()
	b, err := uploads.NewDiskBucket(dir)
	if err != nil {
		t.Fatal(err)
	}
	c := uploads.Config{Bucket: b, Logger: quiet()}
	if cfg != nil {
		cfg(&c)
	}
	st, err := uploads.New(c)
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{store: st, dir: dir, served: make(chan error, 16)}
	h.srv = h.serve(t, srv)
	return h
}

// scaled is a test's store config: a tiny minimum rate over a short
// window, so that tests are quick.
func scaled(window time.Duration) func(*uploads.Config) {
	return func(c *uploads.Config) {
		c.MinRate = 1 << 10
		c.Window = window
	}
}

// files lists the regular files under dir (meta and temporary files too).
func files(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			out = append(out, strings.TrimPrefix(p, dir))
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// A slow but steady upload outlives a fixed whole-request deadline (the
// server's ReadTimeout here, a 30-second request timeout in an app): the
// Store bounds it by progress instead.
func TestSlowSteadyUploadOutlivesReadTimeout(t *testing.T) {
	t.Parallel()
	readTimeout := func(s *http.Server) { s.ReadTimeout = 500 * time.Millisecond }
	for _, tc := range []struct {
		name        string
		h           func(t *testing.T) *harness
		size, chunk int64
	}{
		{"disk", func(t *testing.T) *harness { return newDiskHarness(t, scaled(2*time.Second), readTimeout) }, 200 << 10, 10 << 10},
		// More than a part, so S3 gets a multipart upload.
		{"s3", func(t *testing.T) *harness { return newHarnessWith(t, 300<<20, scaled(2*time.Second), readTimeout) }, 6 << 20, 300 << 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := tc.h(t)
			u := startRawUpload(t, h.srv.URL, "/upload", tc.size, 11)
			// 20 chunks, 100 ms apart: 2 s, four times the ReadTimeout,
			// far above the minimum rate.
			start := time.Now()
			for sent := int64(0); sent < tc.size-tc.chunk; sent += tc.chunk {
				if err := u.send(tc.chunk); err != nil {
					t.Fatalf("cut after %d bytes and %s: %v; the answer: %+v", sent, time.Since(start), err, u.answer(t, 10*time.Second))
				}
				time.Sleep(100 * time.Millisecond) // the client's pace
			}
			if err := u.finish(); err != nil {
				t.Fatalf("cut at the end, after %s: %v; the answer: %+v", time.Since(start), err, u.answer(t, 10*time.Second))
			}
			r := u.answer(t, 60*time.Second)
			if r.code != 200 {
				t.Fatalf("slow upload over %s: %d %s", time.Since(start), r.code, r.body)
			}
			if !strings.Contains(r.body, sha(newPattern(tc.size, 11))) {
				t.Fatalf("stored something else: %s", r.body)
			}
		})
	}
}

// A client that stops sending is cut within the window: 408, and nothing
// left behind (no object, no file, no incomplete multipart upload).
func TestStalledUploadIsCut(t *testing.T) {
	t.Parallel()
	const window = time.Second
	t.Run("s3", func(t *testing.T) {
		t.Parallel()
		// A longer window: time to see the multipart upload before the cut.
		h := newHarnessWith(t, 300<<20, scaled(3*window), nil)
		u := startRawUpload(t, h.srv.URL, "/upload", 100<<20, 12)
		// More than a part: a multipart upload is under way.
		if err := u.send(6 << 20); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		hatest.WaitFor(t, 10*time.Second, "the multipart upload", func() bool {
			n, err := h.bucket.Incomplete(context.Background(), "up/")
			return err == nil && n == 1
		})
		r := u.answer(t, 30*time.Second)
		if r.code != http.StatusRequestTimeout || !strings.Contains(r.body, "too slow") {
			t.Fatalf("stalled upload: %d %s", r.code, r.body)
		}
		t.Logf("cut %s after the last byte was sent (window %s)", time.Since(start), 3*window)
		h.nothingLeft(t)
	})
	t.Run("disk", func(t *testing.T) {
		t.Parallel()
		h := newDiskHarness(t, scaled(window), nil)
		u := startRawUpload(t, h.srv.URL, "/upload", 10<<20, 13)
		if err := u.send(100 << 10); err != nil {
			t.Fatal(err)
		}
		r := u.answer(t, 30*time.Second)
		if r.code != http.StatusRequestTimeout {
			t.Fatalf("stalled upload: %d %s", r.code, r.body)
		}
		if left := files(t, h.dir); len(left) != 0 {
			t.Fatalf("left behind: %v", left)
		}
	})
	t.Run("http2", func(t *testing.T) {
		t.Parallel()
		b, err := uploads.NewDiskBucket(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		st, err := uploads.New(uploads.Config{Bucket: b, Logger: quiet(), MinRate: 1 << 10, Window: window})
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewUnstartedServer(receiveHandler(st))
		srv.EnableHTTP2 = true
		srv.StartTLS()
		defer srv.Close()
		pr, pw := io.Pipe()
		defer pw.Close()
		go func() { // 100 KiB, then nothing
			io.WriteString(pw, rawHead)
			io.CopyN(pw, newPattern(1<<20, 18), 100<<10)
		}()
		req, _ := http.NewRequest("POST", srv.URL+"/upload", pr)
		req.Header.Set("Content-Type", "multipart/form-data; boundary="+rawBoundary)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		resp, err := srv.Client().Do(req.WithContext(ctx))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.ProtoMajor != 2 || resp.StatusCode != http.StatusRequestTimeout {
			t.Fatalf("stalled HTTP/2 upload: %s %d %s", resp.Proto, resp.StatusCode, body)
		}
	})
}

// The request's deadline (a route timeout) ends an upload the moment it
// passes, while the client is still sending, not after the whole body.
func TestRequestDeadlineEndsUploadAtOnce(t *testing.T) {
	t.Parallel()
	h := newDiskHarness(t, nil, nil)
	u := startRawUpload(t, h.srv.URL, "/upload?timeout=500ms", 1<<30, 14)
	stop := u.trickle(0, 16<<10, 20*time.Millisecond) // 800 KB/s, for as long as it takes
	defer stop()
	r := u.answer(t, 30*time.Second)
	if r.code != http.StatusServiceUnavailable || !strings.Contains(r.body, "deadline") {
		t.Fatalf("upload past the request deadline: %d %s", r.code, r.body)
	}
	stop()
	if left := files(t, h.dir); len(left) != 0 {
		t.Fatalf("left behind: %v", left)
	}
}

// Eight uploads trickling in do not hold the part buffers a fast upload
// needs: it is stored while they are all still going.
func TestTricklingUploadsDoNotStarveOthers(t *testing.T) {
	t.Parallel()
	reading := make(chan struct{}, 16)
	// Default limits (8 part buffers); the bucket signals each upload whose
	// body it has started to read.
	h := newHarnessWith(t, 300<<20, func(c *uploads.Config) {
		c.Bucket = &watchBucket{Bucket: c.Bucket, reading: reading}
	}, nil)
	var trickles []*rawUpload
	for i := range 8 {
		u := startRawUpload(t, h.srv.URL, "/upload", 100<<20, byte(20+i))
		if err := u.send(4 << 10); err != nil {
			t.Fatal(err)
		}
		stop := u.trickle(0, 2<<10, 100*time.Millisecond) // 20 KB/s
		defer stop()
		trickles = append(trickles, u)
	}
	for range trickles {
		select {
		case <-reading:
		case <-time.After(30 * time.Second):
			t.Fatal("the trickling uploads did not all reach the bucket")
		}
	}

	done := make(chan struct{})
	var (
		code int
		body string
		err  error
	)
	go func() {
		defer close(done)
		code, _, body, err = postFile(h.srv.URL+"/upload", "fast.png", newPattern(100<<10, 30))
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("a 100 KB upload did not finish within 30s while 8 others trickled in")
	}
	if err != nil || code != 200 {
		t.Fatalf("fast upload: %d %s %v", code, body, err)
	}
	for i, u := range trickles {
		if u.answered() {
			t.Fatalf("trickling upload %d ended before the fast one was checked: %+v", i, <-u.resp)
		}
	}
}

// watchBucket signals on reading each time an upload's body is first read.
type watchBucket struct {
	uploads.Bucket
	reading chan struct{}
}

func (w *watchBucket) Upload(ctx context.Context, key string, r io.Reader, contentType string, meta map[string]string) error {
	return w.Bucket.Upload(ctx, key, &firstRead{r: r, reading: w.reading}, contentType, meta)
}

type firstRead struct {
	r       io.Reader
	reading chan struct{}
	once    sync.Once
}

func (f *firstRead) Read(p []byte) (int, error) {
	f.once.Do(func() { f.reading <- struct{}{} })
	return f.r.Read(p)
}

// An app's body limit below the file gives 413, like MaxSize.
func TestBodyLimitIsTooLarge(t *testing.T) {
	t.Parallel()
	h := newDiskHarness(t, nil, nil)
	code, _, body, err := postFile(h.srv.URL+"/upload?limit=50000", "big.png", newPattern(100<<10, 17))
	if err != nil || code != http.StatusRequestEntityTooLarge {
		t.Fatalf("100 KB with a 50 KB body limit: %d %s %v", code, body, err)
	}
	if left := files(t, h.dir); len(left) != 0 {
		t.Fatalf("left behind: %v", left)
	}
}

// A download to a client that stops reading is cut within the window.
func TestStalledDownloadIsCut(t *testing.T) {
	t.Parallel()
	h := newDiskHarness(t, scaled(time.Second), nil)
	const key = "big.png"
	if err := h.store.Bucket().Upload(context.Background(), key, newPattern(16<<20, 15), "image/png", nil); err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(h.srv.URL)
	conn, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /files/%s HTTP/1.1\r\nHost: %s\r\n\r\n", key, u.Host) // and never read
	select {
	case err := <-h.served:
		if !errors.Is(err, uploads.ErrTooSlow) {
			t.Fatalf("Serve to a stalled client: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Serve to a client that reads nothing did not end within 30s")
	}
}

// Form fields before and after the file come back with it, within
// MaxFormSize.
func TestReceiveReturnsFormFields(t *testing.T) {
	t.Parallel()
	h := newDiskHarness(t, func(c *uploads.Config) { c.MaxFormSize = 1 << 10 }, nil)
	post := func(before, after map[string]string) (int, string) {
		t.Helper()
		var b strings.Builder
		field := func(k, v string) {
			fmt.Fprintf(&b, "--%s\r\nContent-Disposition: form-data; name=%q\r\n\r\n%s\r\n", rawBoundary, k, v)
		}
		for k, v := range before {
			field(k, v)
		}
		b.WriteString(rawHead)
		io.Copy(&b, newPattern(3000, 16))
		b.WriteString("\r\n")
		for k, v := range after {
			field(k, v)
		}
		fmt.Fprintf(&b, "--%s--\r\n", rawBoundary)
		resp, err := http.Post(h.srv.URL+"/upload?form", "multipart/form-data; boundary="+rawBoundary, strings.NewReader(b.String()))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	code, body := post(map[string]string{"title": "a cat"}, map[string]string{"alt": "the cat, sleeping"})
	if code != 200 || !strings.Contains(body, `"title":["a cat"]`) || !strings.Contains(body, `"alt":["the cat, sleeping"]`) {
		t.Fatalf("fields around the file: %d %s", code, body)
	}
	// Too much form: refused, and the file stored before it removed.
	before := files(t, h.dir)
	code, body = post(nil, map[string]string{"alt": strings.Repeat("x", 2<<10)})
	if code != http.StatusRequestEntityTooLarge {
		t.Fatalf("2 KiB of fields with MaxFormSize 1 KiB: %d %s", code, body)
	}
	if after := files(t, h.dir); !slices.Equal(after, before) {
		t.Fatalf("files before the refused upload %v, after %v", before, after)
	}
}

// A failed removal of the data file is reported, even when the .meta file
// is missing too.
func TestDiskBucketDeleteReportsFailure(t *testing.T) {
	dir := t.TempDir()
	b, err := uploads.NewDiskBucket(dir)
	if err != nil {
		t.Fatal(err)
	}
	// Something at the key that cannot be removed: a directory with a
	// file in it (root can remove any file, but not a non-empty directory).
	if err := os.MkdirAll(filepath.Join(dir, "ab", "cd", "x"), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := b.Delete(context.Background(), "ab/cd"); err == nil {
		t.Fatal("Delete reported success for a key it could not remove")
	}
	// A missing object is still not an error.
	if err := b.Delete(context.Background(), "ab/nothing"); err != nil {
		t.Fatalf("Delete of a missing object: %v", err)
	}
}

// An upload whose final rename fails leaves nothing: no .meta file, no
// temporary file.
func TestDiskBucketFailedRenameLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	b, err := uploads.NewDiskBucket(dir)
	if err != nil {
		t.Fatal(err)
	}
	// A non-empty directory where the file should go: the rename fails.
	if err := os.MkdirAll(filepath.Join(dir, "ab", "cd", "x"), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := b.Upload(context.Background(), "ab/cd", strings.NewReader("data"), "image/png", nil); err == nil {
		t.Fatal("Upload over a directory succeeded")
	}
	var left []string
	for _, f := range files(t, dir) {
		if f != "/ab/cd/x" {
			left = append(left, f)
		}
	}
	if len(left) != 0 {
		t.Fatalf("a failed upload left %v", left)
	}
	if _, err := b.Stat(context.Background(), "ab/cd"); err != uploads.ErrNotFound {
		t.Fatalf("Stat of a directory key: %v", err)
	}
}

// httptestServer is an httptest.Server for handler, after srv has
// adjusted its http.Server.
func httptestServer(t *testing.T, handler http.Handler, srv func(*http.Server)) *httptest.Server {
	s := httptest.NewUnstartedServer(handler)
	if srv != nil {
		srv(s.Config)
	}
	s.Start()
	t.Cleanup(s.Close)
	return s
}
