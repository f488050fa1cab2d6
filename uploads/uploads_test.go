package uploads_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"hakit.dev/hatest"
	"hakit.dev/uploads"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

var pngHeader = []byte("\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")

// pattern is n reproducible bytes starting with a PNG header.
type pattern struct {
	n, off int64
	rnd    *rand.ChaCha8
}

func newPattern(n int64, seed byte) *pattern {
	var s [32]byte
	s[0] = seed
	return &pattern{n: n, rnd: rand.NewChaCha8(s)}
}

func (p *pattern) Read(b []byte) (int, error) {
	if p.off >= p.n {
		return 0, io.EOF
	}
	b = b[:min(int64(len(b)), p.n-p.off)]
	p.rnd.Read(b)
	if p.off < int64(len(pngHeader)) {
		copy(b, pngHeader[p.off:])
	}
	p.off += int64(len(b))
	return len(b), nil
}

type harness struct {
	minio  *hatest.MinIO
	bucket *uploads.S3Bucket
	store  *uploads.Store
	srv    *httptest.Server
	dir    string     // a DiskBucket's
	served chan error // what Serve returned, for each GET
}

func newHarness(t *testing.T, maxSize int64) *harness { return newHarnessWith(t, maxSize, nil, nil) }

// newHarnessWith serves a Store on an S3 bucket in a new MinIO, cfg and srv
// adjusting the Store's config and the http.Server (either may be nil).
func newHarnessWith(t *testing.T, maxSize int64, cfg func(*uploads.Config), srv func(*http.Server)) *harness {
	t.Helper()
	return newHarnessS3(t, maxSize, nil, cfg, srv)
}

// newHarnessS3 is newHarnessWith, s3cfg (if not nil) adjusting the bucket's
// config too.
func newHarnessS3(t *testing.T, maxSize int64, s3cfg func(*uploads.S3Config), cfg func(*uploads.Config), srv func(*http.Server)) *harness {
	t.Helper()
	m := hatest.NewMinIO(t, hatest.MinIOOptions{})
	bc := uploads.S3Config{Endpoint: m.Endpoint, Region: m.Region, Bucket: m.Bucket,
		AccessKey: m.AccessKey, SecretKey: m.SecretKey, PathStyle: true, Logger: quiet(), AbortTimeout: 30 * time.Second}
	if s3cfg != nil {
		s3cfg(&bc)
	}
	b, err := uploads.NewS3Bucket(bc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	c := uploads.Config{Bucket: b, Prefix: "up/", MaxSize: maxSize, Logger: quiet()}
	if cfg != nil {
		cfg(&c)
	}
	st, err := uploads.New(c)
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{minio: m, bucket: b, store: st, served: make(chan error, 16)}
	h.srv = h.serve(t, srv)
	return h
}

// serve starts the test server: POST /upload (?timeout=d puts a deadline
// on the request, ?limit=n a body limit, ?form answers the form fields
// too) and GET
// /files/{key...} (?name=), whose Serve errors go to h.served.
func (h *harness) serve(t *testing.T, srv func(*http.Server)) *httptest.Server {
	mux := http.NewServeMux()
	mux.Handle("POST /upload", receiveHandler(h.store))
	mux.HandleFunc("GET /files/{key...}", func(w http.ResponseWriter, r *http.Request) {
		err := h.store.Serve(w, r, r.PathValue("key"), r.URL.Query().Get("name"))
		select {
		case h.served <- err:
		default:
		}
	})
	return httptestServer(t, mux, srv)
}

// receiveHandler answers with st.Receive's Stored as JSON, or its error
// with the status uploads.Status gives.
func receiveHandler(st *uploads.Store) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if n, err := strconv.ParseInt(r.URL.Query().Get("limit"), 10, 64); err == nil {
			r.Body = http.MaxBytesReader(w, r.Body, n)
		}
		if d, err := time.ParseDuration(r.URL.Query().Get("timeout")); err == nil {
			ctx, cancel := context.WithTimeout(r.Context(), d)
			defer cancel()
			r = r.WithContext(ctx)
		}
		got, err := st.Receive(w, r)
		if err != nil {
			http.Error(w, err.Error(), uploads.Status(err))
			return
		}
		if r.URL.Query().Has("form") {
			json.NewEncoder(w).Encode(struct {
				*uploads.Stored
				Form url.Values `json:"form"`
			}{got, got.Form})
			return
		}
		json.NewEncoder(w).Encode(got)
	}
}

// upload streams a multipart body with one file from r.
func (h *harness) upload(t *testing.T, name string, r io.Reader) (int, *uploads.Stored, string) {
	t.Helper()
	code, st, body, err := postFile(h.srv.URL+"/upload", name, r)
	if err != nil {
		t.Fatal(err)
	}
	return code, st, body
}

// postFile streams a multipart body with one file from r to url.
func postFile(url, name string, r io.Reader) (int, *uploads.Stored, string, error) {
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	go func() {
		fw, err := mw.CreateFormFile("file", name)
		if err == nil {
			_, err = io.Copy(fw, r)
		}
		if err == nil {
			err = mw.Close()
		}
		pw.CloseWithError(err)
	}()
	resp, err := http.Post(url, mw.FormDataContentType(), pr)
	if err != nil {
		return 0, nil, "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var st uploads.Stored
	if resp.StatusCode == 200 {
		if err := json.Unmarshal(body, &st); err != nil {
			return 0, nil, "", err
		}
	}
	return resp.StatusCode, &st, string(body), nil
}

// nothingLeft waits until the bucket holds no object and no incomplete
// multipart upload under the uploads' prefix.
func (h *harness) nothingLeft(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(45 * time.Second)
	for {
		n, err := h.bucket.Incomplete(ctx, "up/")
		out, lerr := h.minio.S3Client().ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: &h.minio.Bucket, Prefix: aws.String("up/")})
		objects := -1
		if lerr == nil {
			objects = len(out.Contents)
		}
		if err == nil && n == 0 && objects == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("left behind: %d incomplete uploads (%v), %d objects (%v)", n, err, objects, lerr)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func sha(r io.Reader) string {
	h := sha256.New()
	io.Copy(h, r)
	return hex.EncodeToString(h.Sum(nil))
}

func TestRoundTripSmallAndLarge(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 300<<20)
	for _, size := range []int64{4 << 10, 200 << 20} {
		code, st, body := h.upload(t, "holiday photo.png", newPattern(size, 1))
		if code != 200 {
			t.Fatalf("%d-byte upload: %d %s", size, code, body)
		}
		want := sha(newPattern(size, 1))
		if st.Size != size || st.SHA256 != want || st.ContentType != "image/png" || st.Name != "holiday photo.png" || !strings.HasPrefix(st.Key, "up/") {
			t.Fatalf("stored %+v; want %d bytes, sha %s", st, size, want)
		}
		resp, err := http.Get(h.srv.URL + "/files/" + st.Key + "?name=" + url.QueryEscape(st.Name))
		if err != nil {
			t.Fatal(err)
		}
		got := sha(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || got != want || resp.Header.Get("Content-Type") != "image/png" ||
			resp.Header.Get("X-Content-Type-Options") != "nosniff" || !strings.HasPrefix(resp.Header.Get("Content-Disposition"), "inline") {
			t.Fatalf("download of %d bytes: %d sha %s %v", size, resp.StatusCode, got, resp.Header)
		}
	}
	if n, _ := h.bucket.Incomplete(context.Background(), "up/"); n != 0 {
		t.Fatalf("%d incomplete multipart uploads after successful ones", n)
	}
}

func TestRejectedUploadsLeaveNothing(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 10<<20)
	// Over the limit: 413, after streaming part of it.
	if code, _, body := h.upload(t, "big.png", newPattern(20<<20, 2)); code != 413 {
		t.Fatalf("20 MB with a 10 MB limit: %d %s", code, body)
	}
	// HTML named .png: 415.
	html := strings.NewReader("<!DOCTYPE html><html><script>alert(document.cookie)</script></html>")
	if code, _, body := h.upload(t, "cat.png", html); code != 415 || !strings.Contains(body, "text/html") {
		t.Fatalf("HTML as .png: %d %s", code, body)
	}
	// No file at all: 400.
	resp, err := http.Post(h.srv.URL+"/upload", "multipart/form-data; boundary=x", strings.NewReader("--x--\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Fatalf("no file: %d", resp.StatusCode)
	}
	h.nothingLeft(t)
}

func TestClientGoneHalfWay(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 300<<20)
	// A raw connection: declare 100 MB, send 40, hang up.
	u, _ := url.Parse(h.srv.URL)
	conn, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	const boundary = "b0undary"
	head := "--" + boundary + "\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.png\"\r\nContent-Type: image/png\r\n\r\n"
	fmt.Fprintf(conn, "POST /upload HTTP/1.1\r\nHost: %s\r\nContent-Type: multipart/form-data; boundary=%s\r\nContent-Length: %d\r\n\r\n%s",
		u.Host, boundary, 100<<20, head)
	if _, err := io.Copy(conn, newPattern(40<<20, 3)); err != nil {
		t.Fatal(err)
	}
	conn.Close()
	h.nothingLeft(t)
}

func TestDownloadsAreSafe(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := newHarness(t, 10<<20)
	c := h.minio.S3Client()
	// Files that got into the bucket some other way.
	for key, ct := range map[string]string{"up/evil.svg": "image/svg+xml", "up/evil.html": "text/html", "up/x.bin": ""} {
		in := &s3.PutObjectInput{Bucket: &h.minio.Bucket, Key: aws.String(key), Body: strings.NewReader("<svg onload=alert(1)>")}
		if ct != "" {
			in.ContentType = aws.String(ct)
		}
		if _, err := c.PutObject(ctx, in); err != nil {
			t.Fatal(err)
		}
	}
	for _, key := range []string{"up/evil.svg", "up/evil.html", "up/x.bin"} {
		resp, err := http.Get(h.srv.URL + "/files/" + key + "?name=../../etc/passwd")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		cd := resp.Header.Get("Content-Disposition")
		if resp.StatusCode != 200 || !strings.HasPrefix(cd, "attachment") || strings.Contains(cd, "..") ||
			resp.Header.Get("X-Content-Type-Options") != "nosniff" || !strings.Contains(resp.Header.Get("Content-Security-Policy"), "sandbox") {
			t.Errorf("%s: %d %v", key, resp.StatusCode, resp.Header)
		}
	}
	// Ranges and conditional requests.
	code, st, _ := h.upload(t, "p.png", newPattern(1000, 4))
	if code != 200 {
		t.Fatal(code)
	}
	req, _ := http.NewRequest("GET", h.srv.URL+"/files/"+st.Key, nil)
	req.Header.Set("Range", "bytes=10-19")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	part, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	full, _ := io.ReadAll(newPattern(1000, 4))
	if resp.StatusCode != 206 || !bytes.Equal(part, full[10:20]) || resp.Header.Get("Content-Range") != "bytes 10-19/1000" {
		t.Fatalf("range: %d %q %v", resp.StatusCode, part, resp.Header)
	}
	req.Header.Del("Range")
	req.Header.Set("If-None-Match", resp.Header.Get("ETag"))
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 304 {
		t.Fatalf("If-None-Match with the ETag: %d", resp.StatusCode)
	}
	req.Header.Del("If-None-Match")
	req.Header.Set("Range", "bytes=5000-")
	if resp, err = http.DefaultClient.Do(req); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 416 {
		t.Fatalf("range past the end: %d", resp.StatusCode)
	}
	if resp, err = http.Get(h.srv.URL + "/files/up/nope"); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Fatalf("missing file: %d", resp.StatusCode)
	}
	// A presigned download carries the same disposition.
	link, err := h.store.PresignDownload(ctx, "up/evil.html", "evil.html", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if resp, err = http.Get(link); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Disposition"), "attachment") {
		t.Fatalf("presigned download: %d %v", resp.StatusCode, resp.Header)
	}
}

// postDirect sends a browser-style form POST straight to S3.
func postDirect(t *testing.T, d *uploads.DirectUpload, body []byte) (int, string) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for k, v := range d.Fields {
		mw.WriteField(k, v)
	}
	fw, _ := mw.CreateFormFile("file", "upload")
	fw.Write(body)
	mw.Close()
	resp, err := http.Post(d.URL, mw.FormDataContentType(), &buf)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestDirectUploads(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := newHarness(t, 1<<20)
	small, _ := io.ReadAll(newPattern(2000, 5))

	// Within the rules: uploaded, confirmed, moved out of pending.
	d, err := h.store.PresignUpload(ctx, "image/png", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if code, body := postDirect(t, d, small); code/100 != 2 {
		t.Fatalf("direct upload: %d %s", code, body)
	}
	st, err := h.store.Confirm(ctx, d.Key, int64(len(small)), sha(bytes.NewReader(small)))
	if err != nil || st.Size != 2000 || strings.Contains(st.Key, "pending") {
		t.Fatalf("confirm: %+v, %v", st, err)
	}
	if _, err := h.bucket.Stat(ctx, st.Key); err != nil {
		t.Fatalf("confirmed file: %v", err)
	}
	if _, err := h.bucket.Stat(ctx, d.Key); err == nil {
		t.Fatal("the pending copy stayed")
	}

	// Over the size limit: S3 itself refuses it.
	d, _ = h.store.PresignUpload(ctx, "image/png", time.Minute)
	big, _ := io.ReadAll(newPattern(2<<20, 6))
	if code, body := postDirect(t, d, big); code != 400 || !strings.Contains(body, "EntityTooLarge") {
		t.Fatalf("direct upload over the limit: %d %s", code, body)
	}
	// Another content type than presigned: refused by S3.
	d, _ = h.store.PresignUpload(ctx, "image/png", time.Minute)
	d.Fields["Content-Type"] = "text/html"
	if code, _ := postDirect(t, d, small); code != 403 {
		t.Fatalf("direct upload with another content type: %d", code)
	}
	// HTML declared as PNG: S3 takes it, Confirm rejects and removes it.
	d, _ = h.store.PresignUpload(ctx, "image/png", time.Minute)
	if code, body := postDirect(t, d, []byte("<html><script>alert(1)</script></html>")); code/100 != 2 {
		t.Fatalf("direct upload: %d %s", code, body)
	}
	if _, err := h.store.Confirm(ctx, d.Key, 0, ""); uploads.Status(err) != 415 {
		t.Fatalf("confirm of HTML as PNG: %v", err)
	}
	if _, err := h.bucket.Stat(ctx, d.Key); err == nil {
		t.Fatal("the rejected upload stayed")
	}
	// Wrong size or checksum: rejected and removed.
	for _, bad := range []struct {
		size int64
		sum  string
	}{{999, ""}, {0, strings.Repeat("0", 64)}} {
		d, _ = h.store.PresignUpload(ctx, "image/png", time.Minute)
		postDirect(t, d, small)
		if _, err := h.store.Confirm(ctx, d.Key, bad.size, bad.sum); err == nil {
			t.Fatalf("confirm with size %d sum %q accepted", bad.size, bad.sum)
		}
		if _, err := h.bucket.Stat(ctx, d.Key); err == nil {
			t.Fatal("the rejected upload stayed")
		}
	}
	// Never confirmed: swept.
	d, _ = h.store.PresignUpload(ctx, "image/png", time.Minute)
	postDirect(t, d, small)
	if n, err := h.store.SweepPending(ctx, 0); err != nil || n != 1 {
		t.Fatalf("sweep: %d, %v", n, err)
	}
	if _, err := h.store.PresignUpload(ctx, "text/html", time.Minute); uploads.Status(err) != 415 {
		t.Fatalf("presign of a disallowed type: %v", err)
	}
	if _, err := h.store.Confirm(ctx, "up/elsewhere", 0, ""); uploads.Status(err) != 400 {
		t.Fatalf("confirm of a key outside pending: %v", err)
	}
}

func TestStoreDiesMidUpload(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 300<<20)
	killed := make(chan struct{})
	slow := &killAt{r: newPattern(100<<20, 7), at: 30 << 20, kill: func() {
		if err := h.minio.Kill(); err != nil {
			t.Error(err)
		}
		close(killed)
	}}
	code, _, body := h.upload(t, "x.png", slow)
	<-killed
	if code != 502 {
		t.Fatalf("upload with the store killed: %d %s", code, body)
	}
	if err := h.minio.Restart(context.Background()); err != nil {
		t.Fatal(err)
	}
	// The abort retried in the background got through once it was back.
	h.nothingLeft(t)
}

// killAt calls kill once r has given at bytes.
type killAt struct {
	r    io.Reader
	at   int64
	n    int64
	kill func()
	done bool
}

func (k *killAt) Read(p []byte) (int, error) {
	n, err := k.r.Read(p)
	k.n += int64(n)
	if !k.done && k.n >= k.at {
		k.done = true
		k.kill()
	}
	return n, err
}

func TestSanitizeName(t *testing.T) {
	for in, want := range map[string]string{
		"../../etc/passwd":          "passwd",
		`..\..\windows\system.ini`:  "system.ini",
		"evil\u202egnp.exe":         "evilgnp.exe",
		"a\x00b\nc.png":             "abc.png",
		"  tabs\tand  spaces .png ": "tabs and  spaces .png",
		"":                          "file",
		"..":                        "file",
		"/":                         "file",
		"фото 🐈.jpg":                "фото 🐈.jpg",
		strings.Repeat("é", 300):    strings.Repeat("é", 127),
	} {
		if got := uploads.SanitizeName(in); got != want {
			t.Errorf("SanitizeName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestDiskBucket(t *testing.T) {
	ctx := context.Background()
	b, err := uploads.NewDiskBucket(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	st, err := uploads.New(uploads.Config{Bucket: b, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{store: st, served: make(chan error, 16)}
	h.srv = h.serve(t, nil)
	srv := h.srv
	code, stored, body := h.upload(t, "a.png", newPattern(3000, 8))
	if code != 200 {
		t.Fatalf("%d %s", code, body)
	}
	req, _ := http.NewRequest("GET", srv.URL+"/files/"+stored.Key, nil)
	req.Header.Set("Range", "bytes=-10")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	full, _ := io.ReadAll(newPattern(3000, 8))
	if resp.StatusCode != 206 || !bytes.Equal(got, full[2990:]) {
		t.Fatalf("disk range: %d %d bytes", resp.StatusCode, len(got))
	}
	if err := b.Delete(ctx, stored.Key); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Stat(ctx, stored.Key); err != uploads.ErrNotFound {
		t.Fatalf("after delete: %v", err)
	}
	if _, err := b.Stat(ctx, "../../etc/passwd"); err == nil {
		t.Fatal("a key outside the directory was accepted")
	}
}

func TestBadConfig(t *testing.T) {
	if _, err := uploads.NewS3Bucket(uploads.S3Config{PartSize: 1 << 20}); err == nil ||
		!strings.Contains(err.Error(), "Bucket") || !strings.Contains(err.Error(), "AccessKey") || !strings.Contains(err.Error(), "5 MiB") {
		t.Fatalf("bad S3 config: %v", err)
	}
	if _, err := uploads.New(uploads.Config{}); err == nil {
		t.Fatal("a Store without a bucket was made")
	}
}
