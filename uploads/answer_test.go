package uploads_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"hakit.dev/uploads"
)

// hookRecorder is a Config.ErrorHandler that answers JSON and keeps the
// errors it was given.
type hookRecorder struct {
	mu   sync.Mutex
	errs []error
}

func (h *hookRecorder) handle(w http.ResponseWriter, r *http.Request, err error) {
	h.mu.Lock()
	h.errs = append(h.errs, err)
	h.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(uploads.Status(err))
	json.NewEncoder(w).Encode(map[string]int{"status": uploads.Status(err)})
}

// last returns the last error handled, and forgets all.
func (h *hookRecorder) last() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.errs) == 0 {
		return nil
	}
	err := h.errs[len(h.errs)-1]
	h.errs = nil
	return err
}

// errorsMux serves store at /plain and hooked at /hooked: GET and HEAD
// ?key= (Serve), POST /upload (Receive; its error answered with Error).
func errorsMux(plain, hooked *uploads.Store) *http.ServeMux {
	mux := http.NewServeMux()
	for name, st := range map[string]*uploads.Store{"plain": plain, "hooked": hooked} {
		mux.HandleFunc("GET /"+name, func(w http.ResponseWriter, r *http.Request) {
			_ = st.Serve(w, r, r.URL.Query().Get("key"), "")
		})
		mux.HandleFunc("POST /"+name+"/upload", func(w http.ResponseWriter, r *http.Request) {
			if _, err := st.Receive(w, r); err != nil {
				st.Error(w, r, err)
				return
			}
			w.WriteHeader(http.StatusCreated)
		})
	}
	return mux
}

// answer is what a request got back.
type answer struct {
	code int
	h    http.Header
	body string
}

func ask(t *testing.T, method, u string, hdr map[string]string, ctype string, body io.Reader) answer {
	t.Helper()
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return answer{resp.StatusCode, resp.Header, string(b)}
}

// multipartFile is a multipart body with one file in field "file".
func multipartFile(t *testing.T, name string, data []byte) (string, []byte) {
	t.Helper()
	var b bytes.Buffer
	mw := multipart.NewWriter(&b)
	fw, err := mw.CreateFormFile("file", name)
	if err == nil {
		_, err = fw.Write(data)
	}
	if err == nil {
		err = mw.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	return mw.FormDataContentType(), b.Bytes()
}

// Every error the Store answers — Serve's before the body, and those
// given to Store.Error — goes through Config.ErrorHandler: PlainError by
// default (the status text, never the error's own words), or the hook.
// Status codes and the headers an answer needs stay as they were.
func TestErrorsGoThroughErrorHandler(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 1<<20)
	ctx := context.Background()
	if _, err := h.minio.S3Client().PutObject(ctx, &s3.PutObjectInput{Bucket: &h.minio.Bucket, Key: aws.String("other/there.png"),
		Body: bytes.NewReader(append(append([]byte{}, pngHeader...), make([]byte, 100-len(pngHeader))...)), ContentType: aws.String("image/png")}); err != nil {
		t.Fatal(err)
	}
	hook := &hookRecorder{}
	hooked, err := uploads.New(uploads.Config{Bucket: h.bucket, Prefix: "up/", Name: "hooked", MaxSize: 1 << 20,
		ErrorHandler: hook.handle, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptestServer(t, errorsMux(h.store, hooked), nil)

	// check asks both stores the same and checks both answers.
	check := func(t *testing.T, what string, code int, want error, send func(store string) answer) {
		t.Helper()
		plain, head := send("plain"), strings.Contains(what, "HEAD")
		wantBody := http.StatusText(code) + "\n"
		if head {
			wantBody = ""
		}
		if plain.code != code || plain.h.Get("Content-Type") != "text/plain; charset=utf-8" || plain.body != wantBody ||
			plain.h.Get("X-Content-Type-Options") != "nosniff" || plain.h.Get("Content-Security-Policy") != "" {
			t.Errorf("%s, plain: %d %q %v; want %d %q, text/plain, nosniff, no CSP", what, plain.code, plain.body, plain.h, code, wantBody)
		}
		got := send("hooked")
		wantBody = fmt.Sprintf(`{"status":%d}`+"\n", code)
		if head {
			wantBody = ""
		}
		herr := hook.last()
		if got.code != code || got.h.Get("Content-Type") != "application/json" || got.body != wantBody || !errors.Is(herr, want) {
			t.Errorf("%s, hooked: %d %q %v, hook given %v; want %d %q, the hook given %v", what, got.code, got.body, got.h, herr, code, wantBody, want)
		}
	}
	get := func(method, key string, hdr map[string]string) func(string) answer {
		return func(store string) answer {
			return ask(t, method, srv.URL+"/"+store+"?key="+url.QueryEscape(key), hdr, "", nil)
		}
	}
	for _, c := range []struct {
		what, method, key string
		hdr               map[string]string
		code              int
		want              error
	}{
		{"GET of a missing object", "GET", "other/missing.png", nil, 404, uploads.ErrNotFound},
		{"HEAD of a missing object", "HEAD", "other/missing.png", nil, 404, uploads.ErrNotFound},
		{"Range GET of a missing object", "GET", "other/missing.png", map[string]string{"Range": "bytes=0-9"}, 404, uploads.ErrNotFound},
		{"an empty key", "GET", "", nil, 404, uploads.ErrNotFound},
		{"a key over 1024 bytes", "GET", "up/" + strings.Repeat("k", 1024), nil, 404, uploads.ErrNotFound},
		{"a key not UTF-8", "GET", "up/\xff\xfe", nil, 404, uploads.ErrNotFound},
		{"a key with a NUL", "GET", "up/a\x00b", nil, 404, uploads.ErrNotFound},
		{"a key the bucket refuses (a//b)", "GET", "other//there.png", nil, 404, uploads.ErrNotFound},
		{"a key the bucket refuses (a/../b)", "GET", "up/../other/there.png", nil, 404, uploads.ErrNotFound},
		{"HEAD of a key the bucket refuses", "HEAD", "other//there.png", nil, 404, uploads.ErrNotFound},
		{"a range past the end", "GET", "other/there.png", map[string]string{"Range": "bytes=500-600"}, 416, uploads.ErrRangeNotSatisfiable},
	} {
		check(t, c.what, c.code, c.want, get(c.method, c.key, c.hdr))
	}
	// The 416 says how large the object is, through either handler.
	for _, store := range []string{"plain", "hooked"} {
		if a := get("GET", "other/there.png", map[string]string{"Range": "bytes=500-600"})(store); a.h.Get("Content-Range") != "bytes */100" {
			t.Errorf("416 from %s: Content-Range %q; want bytes */100", store, a.h.Get("Content-Range"))
		}
	}
	hook.last()
	// A 400 that is not about the key is the bucket failing, not a
	// missing object: a bucket name S3 refuses answers 502, GET and HEAD.
	m := h.minio
	badBucket, err := uploads.NewS3Bucket(uploads.S3Config{Endpoint: m.Endpoint, Region: m.Region, Bucket: "Media_Bucket",
		AccessKey: m.AccessKey, SecretKey: m.SecretKey, PathStyle: true, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(badBucket.Close)
	badStore, err := uploads.New(uploads.Config{Bucket: badBucket, Prefix: "up/", MaxSize: 1 << 20, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	badSrv := httptestServer(t, errorsMux(badStore, badStore), nil)
	for _, method := range []string{"GET", "HEAD"} {
		if a := ask(t, method, badSrv.URL+"/plain?key="+url.QueryEscape("other/there.png"), nil, "", nil); a.code != 502 {
			t.Errorf("%s on a bucket whose name S3 refuses: %d; want 502 (the bucket failing, not a missing object)", method, a.code)
		}
	}
	// The object itself is still served, sandboxed.
	if a := get("GET", "other/there.png", nil)("hooked"); a.code != 200 || len(a.body) != 100 || !strings.Contains(a.h.Get("Content-Security-Policy"), "sandbox") {
		t.Errorf("GET of the object: %d, %d bytes, %v", a.code, len(a.body), a.h)
	}
	if err := hook.last(); err != nil {
		t.Errorf("a served object called the hook with %v", err)
	}

	// Receive's errors, answered with Store.Error.
	post := func(ctype string, body []byte) func(string) answer {
		return func(store string) answer {
			return ask(t, "POST", srv.URL+"/"+store+"/upload", nil, ctype, bytes.NewReader(body))
		}
	}
	ct, big := multipartFile(t, "big.png", append(append([]byte{}, pngHeader...), make([]byte, 2<<20)...))
	check(t, "a file over MaxSize", 413, uploads.ErrTooLarge, post(ct, big))
	ct, page := multipartFile(t, "cat.png", []byte("<!doctype html><script>alert(1)</script>"))
	check(t, "an HTML file", 415, uploads.ErrUnsupportedType, post(ct, page))
	check(t, "a body that is not multipart", 400, uploads.ErrBadRequest, post("application/json", []byte(`{"file":"x"}`)))
	check(t, "no file in the form", 400, uploads.ErrNoFile, post("multipart/form-data; boundary=x", []byte("--x--\r\n")))
	ct, whole := multipartFile(t, "x.png", append(append([]byte{}, pngHeader...), make([]byte, 4096)...))
	check(t, "a multipart body cut short", 400, uploads.ErrBadRequest, post(ct, whole[:len(whole)/2]))
	h.nothingLeft(t)

	// S3 down: 502, and not a word of what S3 (or the dialer) said.
	if err := h.minio.Kill(); err != nil {
		t.Fatal(err)
	}
	for _, store := range []string{"plain", "hooked"} {
		a := get("GET", "other/there.png", nil)(store)
		if a.code != 502 || strings.Contains(a.body, "127.0.0.1") || strings.Contains(a.body, "refused") || strings.Contains(a.body, "GetObject") {
			t.Errorf("GET with S3 down, %s: %d %q; want 502 without the bucket's error", store, a.code, a.body)
		}
	}
	if err := hook.last(); err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("the hook was given %v; want the bucket's error, for the log", err)
	}
}

// PlainError sets Retry-After on ErrBusy (unless set already) and never
// shows the error's text.
func TestPlainErrorRetryAfter(t *testing.T) {
	t.Parallel()
	busy := fmt.Errorf("%w: no part memory for 30s (secret detail)", uploads.ErrBusy)
	rec := httptest.NewRecorder()
	uploads.PlainError(rec, httptest.NewRequest("POST", "/", nil), busy)
	if rec.Code != 503 || rec.Header().Get("Retry-After") != "1" || rec.Body.String() != "Service Unavailable\n" {
		t.Errorf("ErrBusy: %d %v %q; want 503, Retry-After 1, the status text", rec.Code, rec.Header(), rec.Body.String())
	}
	rec = httptest.NewRecorder()
	rec.Header().Set("Retry-After", "30")
	uploads.PlainError(rec, httptest.NewRequest("POST", "/", nil), busy)
	if rec.Header().Get("Retry-After") != "30" {
		t.Errorf("Retry-After set by Receive replaced: %q", rec.Header().Get("Retry-After"))
	}
	rec = httptest.NewRecorder()
	uploads.PlainError(rec, httptest.NewRequest("GET", "/", nil), uploads.ErrNotFound)
	if rec.Code != 404 || rec.Header().Get("Retry-After") != "" {
		t.Errorf("ErrNotFound: %d %v", rec.Code, rec.Header())
	}
}

// A DiskBucket answers a key it cannot hold as not found, as S3 does.
func TestDiskBucketBadKeyIsNotFound(t *testing.T) {
	t.Parallel()
	d, err := uploads.NewDiskBucket(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"up/../../etc/passwd", "/"} {
		_, err := d.Open(context.Background(), key, "", "")
		if !errors.Is(err, uploads.ErrNotFound) || uploads.Status(err) != 404 {
			t.Errorf("Open(%q): %v (%d); want ErrNotFound, 404", key, err, uploads.Status(err))
		}
	}
}
