package hakit_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"hakit.dev/hakit"
	"hakit.dev/hatest"
	"hakit.dev/uploads"
)

// uploadForm is a multipart body with one file in field "file".
func uploadForm(t *testing.T, name string, data []byte) (string, []byte) {
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

// Through the App, every error an uploads.Store answers by itself
// (Serve's, before the body) and every error of Receive answered with
// Store.Error gets the app's error page: its HTML for browsers, problem
// details for JSON clients, with the status and headers it had; the
// bucket's own words stay in the log.
func TestUploadsErrorsGetTheAppsErrorPage(t *testing.T) {
	t.Parallel()
	hatestSkip(t)
	mio := hatest.NewMinIO(t, hatest.MinIOOptions{Bucket: "files"})
	png := []byte("\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
	object := append(append([]byte{}, png...), make([]byte, 100-len(png))...)
	if _, err := mio.S3Client().PutObject(context.Background(), &s3.PutObjectInput{Bucket: &mio.Bucket, Key: aws.String("up/there.png"),
		Body: bytes.NewReader(object), ContentType: aws.String("image/png")}); err != nil {
		t.Fatal(err)
	}
	cfg := hakit.Config{S3: hakit.S3Config{Endpoint: mio.Endpoint, Region: mio.Region, Bucket: mio.Bucket,
		AccessKeyID: mio.AccessKey, SecretAccessKey: mio.SecretKey, PathStyle: true, Prefix: "up/"}}
	r := serve(t, cfg, func(a *hakit.App) {
		store, err := a.Uploads(uploads.Config{MaxSize: 1 << 20})
		if err != nil {
			t.Fatal(err)
		}
		// The app's own page for browsers; the default (problem details,
		// plain text) for the others.
		a.SetErrorPage(func(w http.ResponseWriter, r *http.Request, e *hakit.HTTPError) {
			if strings.Contains(r.Header.Get("Accept"), "text/html") {
				w.Header().Set("Content-Type", "text/html; charset=utf-8")
				w.WriteHeader(e.Status)
				io.WriteString(w, "<!doctype html><title>notes</title><p class=error>"+e.Message+"</p>")
				return
			}
			hakit.DefaultErrorPage(w, r, e)
		})
		download := func(w http.ResponseWriter, r *http.Request) {
			_ = store.Serve(w, r, r.URL.Query().Get("key"), "")
		}
		a.Router().With(hakit.Timeout(-1)).Get("/files", download)
		a.Router().With(hakit.Timeout(-1)).Head("/files", download) // chi routes HEAD to a Get route only when told

		a.Router().With(hakit.Timeout(-1), hakit.BodyLimit(4<<20)).Post("/upload", func(w http.ResponseWriter, r *http.Request) {
			if _, err := store.Receive(w, r); err != nil {
				store.Error(w, r, err)
				return
			}
			w.WriteHeader(http.StatusCreated)
		})
	}, true)

	type want struct {
		code   int
		msg    string
		header map[string]string // headers the answer keeps
	}
	// check sends req as a browser and as a JSON client, and checks that
	// both got the app's answer.
	check := func(what string, req func() *http.Request, w want) {
		t.Helper()
		head := req().Method == http.MethodHead
		for _, accept := range []string{"text/html,application/xhtml+xml", "application/json"} {
			q := req()
			q.Header.Set("Accept", accept)
			resp, body := do(t, q)
			ct := resp.Header.Get("Content-Type")
			ok := resp.StatusCode == w.code && resp.Header.Get("Content-Security-Policy") == ""
			switch {
			case !ok:
			case strings.HasPrefix(accept, "text/html"):
				ok = ct == "text/html; charset=utf-8" &&
					(head && body == "" || !head && body == "<!doctype html><title>notes</title><p class=error>"+w.msg+"</p>")
			default:
				var p struct {
					Status    int    `json:"status"`
					Detail    string `json:"detail"`
					RequestID string `json:"request_id"`
				}
				ok = ct == "application/problem+json" &&
					(head && body == "" || !head && json.Unmarshal([]byte(body), &p) == nil && p.Status == w.code && p.Detail == w.msg && p.RequestID != "")
			}
			for k, v := range w.header {
				ok = ok && resp.Header.Get(k) == v
			}
			if !ok {
				t.Errorf("%s (Accept %s): %d %s %q %v; want %d with the app's page saying %q, headers %v, no CSP",
					what, accept, resp.StatusCode, ct, body, resp.Header, w.code, w.msg, w.header)
			}
		}
	}
	get := func(method, key string, hdr ...string) func() *http.Request {
		return func() *http.Request {
			q := newReq(t, method, r.url+"/files?key="+url.QueryEscape(key), nil)
			for i := 0; i+1 < len(hdr); i += 2 {
				q.Header.Set(hdr[i], hdr[i+1])
			}
			return q
		}
	}
	post := func(ctype string, body []byte) func() *http.Request {
		return func() *http.Request {
			q := newReq(t, "POST", r.url+"/upload", bytes.NewReader(body))
			q.Header.Set("Content-Type", ctype)
			return q
		}
	}
	notFound := want{code: 404, msg: "not found"}
	check("GET of a missing object", get("GET", "up/missing.png"), notFound)
	check("HEAD of a missing object", get("HEAD", "up/missing.png"), notFound)
	check("Range GET of a missing object", get("GET", "up/missing.png", "Range", "bytes=0-9"), notFound)
	check("an empty key", get("GET", ""), notFound)
	check("a key not UTF-8", get("GET", "up/\xff"), notFound)
	check("a key over 1024 bytes", get("GET", "up/"+strings.Repeat("k", 1024)), notFound)
	check("a key S3 refuses", get("GET", "up//there.png"), notFound)
	check("a range past the end", get("GET", "up/there.png", "Range", "bytes=500-600"),
		want{code: 416, msg: "range not satisfiable", header: map[string]string{"Content-Range": "bytes */100"}})
	check("POST to the download route", func() *http.Request { return newReq(t, "POST", r.url+"/files?key=up/there.png", nil) },
		want{code: 405, msg: "method not allowed", header: map[string]string{"Allow": "GET, HEAD"}})

	ct, big := uploadForm(t, "big.png", append(append([]byte{}, png...), make([]byte, 2<<20)...))
	check("a file over MaxSize", post(ct, big), want{code: 413, msg: "file too large"})
	ct, page := uploadForm(t, "cat.png", []byte("<!doctype html><script>alert(1)</script>"))
	check("an HTML file", post(ct, page), want{code: 415, msg: "file type not allowed"})
	check("a body that is not multipart", post("application/json", []byte(`{}`)), want{code: 400, msg: "malformed upload"})
	check("no file in the form", post("multipart/form-data; boundary=x", []byte("--x--\r\n")), want{code: 400, msg: "no file in the request"})
	ct, whole := uploadForm(t, "x.png", object)
	check("a multipart body cut short", post(ct, whole[:len(whole)/2]), want{code: 400, msg: "malformed upload"})

	// The object itself is served as before, sandboxed.
	resp, body := do(t, get("GET", "up/there.png")())
	if resp.StatusCode != 200 || body != string(object) || !strings.Contains(resp.Header.Get("Content-Security-Policy"), "sandbox") {
		t.Errorf("GET of the object: %d, %d bytes, %v", resp.StatusCode, len(body), resp.Header)
	}
	// A plain client gets the default page's line of text.
	if resp, body := do(t, get("GET", "up/missing.png")()); resp.StatusCode != 404 || body != "not found\n" ||
		!strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Errorf("404 without Accept: %d %q %v", resp.StatusCode, body, resp.Header)
	}

	// S3 down: the app's 503 (an unreachable dependency), Retry-After and
	// no-store, not a word of S3's error to the client, all of it in the log.
	if err := mio.Kill(); err != nil {
		t.Fatal(err)
	}
	check("GET with S3 down", get("GET", "up/there.png"), want{code: 503, msg: "temporarily unavailable; try again in a moment",
		header: map[string]string{"Retry-After": "1", "Cache-Control": "no-store"}})
	if logs := r.logs.String(); !strings.Contains(logs, "connection refused") || !strings.Contains(logs, "status=503") {
		t.Errorf("S3's error not logged with the 503:\n%s", logs)
	}
}
