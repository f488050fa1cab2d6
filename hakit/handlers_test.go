package hakit_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"regexp"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"hakit.dev/dbrouter"
	"hakit.dev/hakit"
	"hakit.dev/hatest"
	"hakit.dev/session"
	"hakit.dev/uploads"
)

var pagesFS = fstest.MapFS{
	"layout.html":     {Data: []byte(`<!doctype html><html><title>{{block "title" .}}notes{{end}}</title><body>{{block "content" .}}{{end}}</body></html>`)},
	"pages/note.html": {Data: []byte(`{{define "title"}}{{.Title}}{{end}}{{define "content"}}<h1>{{.Title}}</h1><p>{{.Body}}</p>{{end}}`)},
	// Fails half-way: the layout and the heading are written before the
	// missing field is reached.
	"pages/broken.html": {Data: []byte(`{{define "content"}}<h1>Start of the page</h1>{{.Missing.Field}}{{end}}`)},
	"pages/404.html":    {Data: []byte(`{{define "title"}}lost{{end}}{{define "content"}}<h1>Nothing at {{.}}</h1>{{end}}`)},
}

type note struct{ Title, Body string }

func TestRenderTemplateErrorIs500WithNothingOfThePage(t *testing.T) {
	t.Parallel()
	pages, err := hakit.ParseTemplates(pagesFS, "layout.html", "pages/*.html")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(pages.Pages(), " "); got != "404.html broken.html note.html" {
		t.Fatalf("pages %q", got)
	}
	r := serve(t, hakit.Config{DrainDelay: -1}, func(a *hakit.App) {
		a.Router().Get("/note", func(w http.ResponseWriter, r *http.Request) {
			pages.Render(w, r, 0, "note.html", note{"<b>Groceries</b>", "milk & eggs"})
		})
		a.Router().Get("/broken", func(w http.ResponseWriter, r *http.Request) {
			pages.Render(w, r, http.StatusOK, "broken.html", note{})
		})
		a.Router().Get("/unknown", func(w http.ResponseWriter, r *http.Request) {
			pages.Render(w, r, http.StatusOK, "nope.html", nil)
		})
	}, true)

	resp, body := do(t, newReq(t, "GET", r.url+"/note", nil))
	want := `<!doctype html><html><title>&lt;b&gt;Groceries&lt;/b&gt;</title><body><h1>&lt;b&gt;Groceries&lt;/b&gt;</h1><p>milk &amp; eggs</p></body></html>`
	if resp.StatusCode != 200 || body != want {
		t.Fatalf("/note: %d %q, want %q", resp.StatusCode, body, want)
	}
	if ct, cl := resp.Header.Get("Content-Type"), resp.Header.Get("Content-Length"); ct != "text/html; charset=utf-8" || cl != fmt.Sprint(len(want)) {
		t.Fatalf("/note: Content-Type %q, Content-Length %q", ct, cl)
	}

	for _, path := range []string{"/broken", "/unknown"} {
		req := newReq(t, "GET", r.url+path, nil)
		req.Header.Set("Accept", "text/html")
		resp, body := do(t, req)
		if resp.StatusCode != 500 {
			t.Fatalf("%s: %d %q", path, resp.StatusCode, body)
		}
		// The error page, and nothing of the page that failed.
		if strings.Contains(body, "Start of the page") || strings.Contains(body, "<title>notes") || !strings.Contains(body, "<h1>Internal Server Error</h1>") {
			t.Fatalf("%s sent part of the page:\n%s", path, body)
		}
		// The detail is logged, not shown.
		if strings.Contains(body, "Missing") || strings.Contains(body, "nope.html") {
			t.Fatalf("%s shows the template error to the client:\n%s", path, body)
		}
	}
	if logs := r.logs.String(); !strings.Contains(logs, "Missing") || !strings.Contains(logs, `no page \"nope.html\"`) {
		t.Fatalf("the template errors are not logged:\n%s", logs)
	}
}

func TestParseTemplatesErrors(t *testing.T) {
	t.Parallel()
	fsys := fstest.MapFS{
		"layout.html":     {Data: []byte(`{{block "content" .}}{{end}}`)},
		"a/index.html":    {Data: []byte(`{{define "content"}}a{{end}}`)},
		"b/index.html":    {Data: []byte(`{{define "content"}}b{{end}}`)},
		"c/bad.html":      {Data: []byte(`{{define "content"}}{{.X{{end}}`)},
		"c/layout.html":   {Data: []byte(`x`)},
		"bad-layout.html": {Data: []byte(`{{if}}`)},
	}
	_, err := hakit.ParseTemplates(fsys, "layout.html", "a/*.html", "b/*.html", "c/*.html", "none/*.html")
	if err == nil {
		t.Fatal("no error")
	}
	// Every problem in one error.
	for _, want := range []string{"two pages named index.html: a/index.html and b/index.html", "page c/bad.html",
		"page c/layout.html: has the layout's name", `pattern "none/*.html" matches no file`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	if _, err := hakit.ParseTemplates(fsys, "bad-layout.html", "a/*.html"); err == nil || !strings.Contains(err.Error(), "layout") {
		t.Errorf("bad layout: %v", err)
	}
	if _, err := hakit.ParseTemplates(fsys, "missing.html", "a/*.html"); err == nil {
		t.Error("missing layout: no error")
	}
	if _, err := hakit.ParseTemplates(fsys, "layout.html"); err == nil {
		t.Error("no page patterns: no error")
	}
	if _, err := hakit.NewTemplates(nil, fsys, "a/*.html"); err == nil {
		t.Error("nil base: no error")
	}
}

func TestCustomErrorPages(t *testing.T) {
	t.Parallel()
	pages, err := hakit.ParseTemplates(pagesFS, "layout.html", "pages/*.html")
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	r := serve(t, hakit.Config{DrainDelay: -1}, func(a *hakit.App) {
		a.SetErrorPage(func(w http.ResponseWriter, r *http.Request, e *hakit.HTTPError) {
			switch {
			case e.Status == http.StatusNotFound:
				pages.Render(w, r, e.Status, "404.html", r.URL.Path)
			case errors.Is(e, hakit.ErrCrossOrigin):
				w.WriteHeader(e.Status)
				fmt.Fprint(w, "custom csrf page")
			default:
				w.WriteHeader(e.Status)
				fmt.Fprintf(w, "custom %d %s", e.Status, e.Message)
			}
		})
		a.Router().Get("/items", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "items") })
		a.Router().Post("/items", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "added") })
		a.Router().Get("/panic", func(w http.ResponseWriter, r *http.Request) { panic("handler bug") })
		a.Router().Get("/gone", func(w http.ResponseWriter, r *http.Request) {
			hakit.Error(w, r, fmt.Errorf("loading note 7: %w", pgx.ErrNoRows))
		})
		a.OnStart(func(ctx context.Context) error {
			select {
			case <-release:
			case <-ctx.Done():
			}
			return nil
		})
	}, false)

	// Starting: 503 through the custom page, with Retry-After.
	hatest.WaitFor(t, 30*time.Second, "the listener", func() bool {
		resp, err := http.Get(r.url + "/livez")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil
	})
	resp, body := do(t, newReq(t, "GET", r.url+"/items", nil))
	if resp.StatusCode != 503 || body != "custom 503 starting" || resp.Header.Get("Retry-After") != "1" {
		t.Fatalf("while starting: %d %q (Retry-After %q)", resp.StatusCode, body, resp.Header.Get("Retry-After"))
	}
	close(release)
	waitStatus(t, r.url+"/readyz", 200)

	cases := []struct {
		method, path string
		hdr          map[string]string
		status       int
		body         string
		allow        string
	}{
		{"GET", "/nowhere", nil, 404, `<h1>Nothing at /nowhere</h1>`, ""},
		{"DELETE", "/items", nil, 405, "custom 405 method not allowed", "GET, POST"},
		{"POST", "/items", map[string]string{"Sec-Fetch-Site": "cross-site"}, 403, "custom csrf page", ""},
		{"POST", "/items", map[string]string{"Origin": "https://evil.example"}, 403, "custom csrf page", ""},
		{"POST", "/items", map[string]string{"Sec-Fetch-Site": "same-origin"}, 200, "added", ""},
		{"GET", "/panic", nil, 500, "custom 500 internal server error", ""},
		{"GET", "/gone", nil, 404, `<h1>Nothing at /gone</h1>`, ""},
	}
	for _, c := range cases {
		req := newReq(t, c.method, r.url+c.path, nil)
		for k, v := range c.hdr {
			req.Header.Set(k, v)
		}
		resp, body := do(t, req)
		if resp.StatusCode != c.status || !strings.Contains(body, c.body) || resp.Header.Get("Allow") != c.allow {
			t.Errorf("%s %s %v: %d %q (Allow %q), want %d %q (Allow %q)", c.method, c.path, c.hdr,
				resp.StatusCode, body, resp.Header.Get("Allow"), c.status, c.body, c.allow)
		}
		if c.status >= 400 && resp.Header.Get("X-Request-Id") == "" {
			t.Errorf("%s %s: no X-Request-Id on the error", c.method, c.path)
		}
	}

	// Back to the default page: content negotiated.
	r.app.SetErrorPage(nil)
	for _, c := range []struct{ accept, ctype, body string }{
		{"", "text/plain; charset=utf-8", "not found\n"},
		{"text/html,application/xhtml+xml,*/*;q=0.8", "text/html; charset=utf-8", "<h1>Not Found</h1>\n<p>not found</p>"},
		{"application/json", "application/problem+json", `"title":"Not Found","status":404,"detail":"not found","request_id":"`},
	} {
		req := newReq(t, "GET", r.url+"/nowhere", nil)
		if c.accept != "" {
			req.Header.Set("Accept", c.accept)
		}
		resp, body := do(t, req)
		if resp.StatusCode != 404 || resp.Header.Get("Content-Type") != c.ctype || !strings.Contains(body, c.body) {
			t.Errorf("Accept %q: %d %q %q", c.accept, resp.StatusCode, resp.Header.Get("Content-Type"), body)
		}
		if c.ctype != "text/plain; charset=utf-8" && !strings.Contains(body, resp.Header.Get("X-Request-Id")) {
			t.Errorf("Accept %q: the page does not show the request ID %s:\n%s", c.accept, resp.Header.Get("X-Request-Id"), body)
		}
	}
}

// A CrossOriginProtection of the app's own answers through the same
// mapping with SetDenyHandler.
func TestErrorHandlerAsDenyHandler(t *testing.T) {
	t.Parallel()
	cop := http.NewCrossOriginProtection()
	cop.SetDenyHandler(hakit.ErrorHandler(hakit.ErrCrossOrigin))
	h := cop.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	req := httptest.NewRequest("POST", "/", nil)
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	req.Header.Set("Accept", "application/json")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	var p struct {
		Status int
		Detail string
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil || rec.Code != 403 || p.Status != 403 || p.Detail != "cross-origin request refused" {
		t.Fatalf("%d %q %v", rec.Code, rec.Body, err)
	}
}

// closedAddr returns a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func TestErrorMapping(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	// Real failures, not made-up values, where they cost little: a
	// connection refused, an S3 bucket that is not there, an S3 answering
	// 500.
	_, refused := net.Dial("tcp", closedAddr(t))
	if refused == nil {
		t.Fatal("dial to a closed port worked")
	}
	s3Err := func(endpoint string) error {
		b, err := uploads.NewS3Bucket(uploads.S3Config{Endpoint: endpoint, Bucket: "b", AccessKey: "k", SecretKey: "s", PathStyle: true})
		if err != nil {
			t.Fatal(err)
		}
		_, err = b.Stat(ctx, "key")
		if err == nil {
			t.Fatal("Stat worked")
		}
		return err
	}
	s3Down := s3Err("http://" + closedAddr(t))
	failing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusInternalServerError)
	}))
	defer failing.Close()
	s3Failing := s3Err(failing.URL)
	deadline, cancel := context.WithTimeout(ctx, time.Nanosecond)
	defer cancel()
	<-deadline.Done()
	// Login where there is no session (outside LoadAndSave): a bug, not
	// an outage, though Login wraps it in ErrStoreUnavailable too.
	sm, err := session.New(session.Config{Store: session.NewMemoryStore()})
	if err != nil {
		t.Fatal(err)
	}
	noSession := sm.Login(ctx, "ann")
	pgErr := func(code string) error {
		return &dbrouter.NodeError{Node: "db1:5432", Err: &pgconn.PgError{Severity: "FATAL", Code: code, Message: "secret detail"}}
	}

	cases := []struct {
		name   string
		err    error
		status int
		retry  string
	}{
		{"http error", &hakit.HTTPError{Status: 409, Message: "title taken", Err: errors.New("secret detail")}, 409, ""},
		{"wrapped http error", fmt.Errorf("saving: %w", &hakit.HTTPError{Status: 429, RetryAfter: 1500 * time.Millisecond}), 429, "2"},
		{"not found", hakit.ErrNotFound, 404, ""},
		{"method", hakit.ErrMethodNotAllowed, 405, ""},
		{"csrf", hakit.ErrCrossOrigin, 403, ""},
		{"panic", hakit.ErrPanic, 500, ""},
		{"starting", hakit.ErrStarting, 503, "1"},
		{"commit unknown", fmt.Errorf("saving the order: %w", dbrouter.ErrCommitUnknown), 504, ""},
		{"commit unknown and ctx", errors.Join(dbrouter.ErrCommitUnknown, context.Canceled), 504, ""},
		{"no primary", fmt.Errorf("x: %w", dbrouter.ErrNoPrimary), 503, "2"},
		{"no node", dbrouter.ErrNoNode, 503, "2"},
		{"router closed", dbrouter.ErrClosed, 503, "1"},
		{"session store", fmt.Errorf("session: login: %w: %w", session.ErrStoreUnavailable, refused), 503, "1"},
		{"no session", noSession, 500, ""},
		{"upload too large", fmt.Errorf("%w: more than 10 bytes", uploads.ErrTooLarge), 413, ""},
		{"upload type", uploads.ErrUnsupportedType, 415, ""},
		{"upload no file", uploads.ErrNoFile, 400, ""},
		{"upload bad", uploads.ErrBadRequest, 400, ""},
		{"upload missing", uploads.ErrNotFound, 404, ""},
		{"upload range", uploads.ErrRangeNotSatisfiable, 416, ""},
		{"upload slow", uploads.ErrTooSlow, 408, ""},
		{"upload busy", fmt.Errorf("part 2: %w", uploads.ErrBusy), 503, "1"},
		{"S3 down", s3Down, 503, "1"},
		{"S3 failing", s3Failing, 502, ""},
		{"body too large", &http.MaxBytesError{Limit: 10}, 413, ""},
		{"form", &hakit.HTTPError{Status: 400, Message: "malformed form"}, 400, ""},
		{"no rows", fmt.Errorf("note 7: %w", pgx.ErrNoRows), 404, ""},
		{"pg shutting down", pgErr("57P01"), 503, "1"},
		{"pg too many connections", pgErr("53300"), 503, "1"},
		{"pg read only", pgErr("25006"), 503, "1"},
		{"pg serialization", pgErr("40001"), 503, "1"},
		{"pg syntax", pgErr("42601"), 500, ""},
		{"pg unique", pgErr("23505"), 500, ""},
		{"deadline", deadline.Err(), 503, "1"},
		{"canceled, client still there", context.Canceled, 503, "1"},
		{"connection refused", fmt.Errorf("redis: %w", refused), 503, "1"},
		{"anything else", errors.New("secret detail"), 500, ""},
	}
	for _, c := range cases {
		if got := hakit.StatusOf(c.err); got != c.status {
			t.Errorf("%s: StatusOf %d, want %d (%v)", c.name, got, c.status, c.err)
		}
		rec := httptest.NewRecorder()
		hakit.Error(rec, httptest.NewRequest("GET", "/", nil), c.err)
		if rec.Code != c.status || rec.Header().Get("Retry-After") != c.retry {
			t.Errorf("%s: Error answered %d (Retry-After %q), want %d (Retry-After %q)", c.name, rec.Code, rec.Header().Get("Retry-After"), c.status, c.retry)
		}
		if strings.Contains(rec.Body.String(), "secret detail") || strings.Contains(rec.Body.String(), "127.0.0.1") {
			t.Errorf("%s: the client sees the detail: %q", c.name, rec.Body)
		}
	}
	if hakit.StatusOf(nil) != 200 || hakit.HTTPErrorOf(nil) != nil {
		t.Error("nil error not 200 / nil")
	}
	rec := httptest.NewRecorder()
	hakit.Error(rec, httptest.NewRequest("GET", "/", nil), &hakit.HTTPError{Status: 409, Message: "title taken"})
	if rec.Body.String() != "title taken\n" {
		t.Errorf("HTTPError's message: %q", rec.Body)
	}
	rec = httptest.NewRecorder()
	hakit.Error(rec, httptest.NewRequest("GET", "/", nil), dbrouter.ErrCommitUnknown)
	if !strings.Contains(rec.Body.String(), "check before you submit it again") {
		t.Errorf("ErrCommitUnknown's message: %q", rec.Body)
	}
	rec = httptest.NewRecorder()
	hakit.Error(rec, httptest.NewRequest("GET", "/", nil), nil)
	if rec.Code != 500 {
		t.Errorf("Error(nil): %d", rec.Code)
	}
}

// Error writes nothing for a client that is gone, nor after the
// response started.
func TestErrorWritesNothingWhenItCannot(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	rec := httptest.NewRecorder()
	hakit.Error(rec, httptest.NewRequest("GET", "/", nil).WithContext(ctx), fmt.Errorf("query: %w", context.Canceled))
	if rec.Body.Len() != 0 || len(rec.Header()) != 0 {
		t.Fatalf("answered a client that is gone: %d %q %v", rec.Code, rec.Body, rec.Header())
	}

	r := serve(t, hakit.Config{DrainDelay: -1}, func(a *hakit.App) {
		a.Router().Get("/late", func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "the whole answer")
			hakit.Error(w, r, errors.New("logging after the answer"))
		})
	}, true)
	resp, body := do(t, newReq(t, "GET", r.url+"/late", nil))
	if resp.StatusCode != 200 || body != "the whole answer" {
		t.Fatalf("/late: %d %q", resp.StatusCode, body)
	}
	if logs := r.logs.String(); !strings.Contains(logs, "after the response started") || !strings.Contains(logs, "logging after the answer") {
		t.Fatalf("not logged:\n%s", logs)
	}
	if logs := r.logs.String(); strings.Contains(logs, "superfluous") {
		t.Fatalf("a second WriteHeader:\n%s", logs)
	}
}

func TestParseFormOversizeIs413(t *testing.T) {
	t.Parallel()
	echo := func(w http.ResponseWriter, r *http.Request) {
		if err := hakit.ParseForm(w, r); err != nil {
			hakit.Error(w, r, err)
			return
		}
		io.WriteString(w, r.PostForm.Get("title")+"|"+r.Form.Get("q"))
	}
	r := serve(t, hakit.Config{DrainDelay: -1, MaxBodyBytes: 1 << 10}, func(a *hakit.App) {
		a.Router().Post("/notes", echo)
		a.Router().With(hakit.BodyLimit(-1)).Post("/unlimited", echo)
		a.Router().With(hakit.BodyLimit(64<<20)).Post("/big", echo)
	}, true)

	form := func(title string) io.Reader { return strings.NewReader(url.Values{"title": {title}}.Encode()) }
	multi := func(title string) (io.Reader, string) {
		var b strings.Builder
		mw := multipart.NewWriter(&b)
		mw.WriteField("title", title)
		fw, _ := mw.CreateFormFile("file", "a.txt")
		io.WriteString(fw, "attachment")
		mw.Close()
		return strings.NewReader(b.String()), mw.FormDataContentType()
	}
	post := func(path string, body io.Reader, ct string) (int, string) {
		req := newReq(t, "POST", r.url+path, body)
		req.Header.Set("Content-Type", ct)
		resp, b := do(t, req)
		return resp.StatusCode, b
	}
	const urlenc = "application/x-www-form-urlencoded"
	big := strings.Repeat("x", 2<<10)
	huge := strings.Repeat("x", hakit.MaxFormBytes+1)
	mOK, mOKType := multi("shopping")
	mBig, mBigType := multi(big)
	for _, c := range []struct {
		name, path string
		body       io.Reader
		ct         string
		status     int
		resp       string
	}{
		{"small", "/notes?q=1", form("shopping"), urlenc, 200, "shopping|1"},
		{"multipart", "/notes", mOK, mOKType, 200, "shopping|"},
		{"over the app's limit", "/notes", form(big), urlenc, 413, "form too large\n"},
		{"multipart over the app's limit", "/notes", mBig, mBigType, 413, "form too large\n"},
		{"malformed", "/notes", strings.NewReader("title=%zz"), urlenc, 400, "malformed form\n"},
		{"bad content type", "/notes", strings.NewReader("x"), "multipart/form-data; boundary=\"", 400, "malformed Content-Type\n"},
		{"multipart without boundary", "/notes", strings.NewReader("x"), "multipart/form-data", 400, "malformed form\n"},
		{"no limit on the route: MaxFormBytes", "/unlimited", form(huge), urlenc, 413, "form too large\n"},
		{"a raised limit does not lift MaxFormBytes for url-encoded forms", "/big", form(huge), urlenc, 413, "form too large\n"},
		{"other content types are not read", "/notes?q=2", strings.NewReader(big), "text/plain", 200, "|2"},
	} {
		if status, body := post(c.path, c.body, c.ct); status != c.status || body != c.resp {
			t.Errorf("%s: %d %q, want %d %q", c.name, status, body, c.status, c.resp)
		}
	}

	// Outside the Stack: MaxFormBytes.
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("POST", "/", form(huge))
	req.Header.Set("Content-Type", urlenc)
	echo(rec, req)
	if rec.Code != 413 {
		t.Fatalf("outside the stack: %d %q", rec.Code, rec.Body)
	}
}

// Every Go block of docs/handlers.md is an excerpt of the package's
// Examples, which compile and run: the page cannot show code that does
// not compile.
func TestHandlersDocIsExampleCode(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile("../docs/handlers.md")
	if err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile("example_handlers_test.go")
	if err != nil {
		t.Fatal(err)
	}
	// Lines compared without their indentation, which an excerpt loses.
	norm := func(s string) string {
		var out []string
		for _, l := range strings.Split(s, "\n") {
			if l = strings.TrimSpace(l); l != "" {
				out = append(out, l)
			}
		}
		return "\n" + strings.Join(out, "\n") + "\n"
	}
	code := norm(string(src))
	blocks := regexp.MustCompile("(?s)```go\n(.*?)```").FindAllStringSubmatch(string(doc), -1)
	if len(blocks) < 5 {
		t.Fatalf("%d Go blocks in docs/handlers.md", len(blocks))
	}
	for _, b := range blocks {
		if !strings.Contains(code, norm(b[1])) {
			t.Errorf("docs/handlers.md has a Go block that is not in example_handlers_test.go:\n%s", b[1])
		}
	}
}

// An error page that reads the session (a layout's "Signed in as …")
// works for the answers made outside the session's middleware — the CSRF
// 403, a panic's 500, the 503 while starting — where there is no session
// (it shows nobody signed in), and with the session for those made inside
// (a 404, a handler's Error).
func TestErrorPageReadsTheSession(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	var sessions *session.Manager
	r := serve(t, hakit.Config{DrainDelay: -1}, func(a *hakit.App) {
		var err error
		if sessions, err = a.Sessions(session.Config{Insecure: true}); err != nil {
			t.Fatal(err)
		}
		a.SetErrorPage(func(w http.ResponseWriter, r *http.Request, e *hakit.HTTPError) {
			user := sessions.UserID(r.Context())
			flashes := len(sessions.Flashes(r.Context()))
			w.WriteHeader(e.Status)
			fmt.Fprintf(w, "custom %d %s; user %q, %d flashes", e.Status, e.Message, user, flashes)
		})
		a.Router().Post("/login", func(w http.ResponseWriter, r *http.Request) {
			if err := sessions.Login(r.Context(), "ann"); err != nil {
				hakit.Error(w, r, err)
				return
			}
			io.WriteString(w, "signed in")
		})
		a.Router().Post("/items", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "added") })
		a.Router().Get("/panic", func(w http.ResponseWriter, r *http.Request) { panic("handler bug") })
		a.OnStart(func(ctx context.Context) error {
			select {
			case <-release:
			case <-ctx.Done():
			}
			return nil
		})
	}, false)

	hatest.WaitFor(t, 30*time.Second, "the listener", func() bool {
		resp, err := http.Get(r.url + "/livez")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil
	})
	resp, body := do(t, newReq(t, "GET", r.url+"/items", nil))
	if resp.StatusCode != 503 || body != `custom 503 starting; user "", 0 flashes` {
		t.Fatalf("while starting: %d %q", resp.StatusCode, body)
	}
	close(release)
	waitStatus(t, r.url+"/readyz", 200)

	login := newReq(t, "POST", r.url+"/login", nil)
	login.Header.Set("Sec-Fetch-Site", "same-origin")
	resp, body = do(t, login)
	if resp.StatusCode != 200 || len(resp.Cookies()) != 1 {
		t.Fatalf("login: %d %q %v", resp.StatusCode, body, resp.Cookies())
	}
	cookie := resp.Cookies()[0]

	for _, c := range []struct {
		method, path, site string
		status             int
		body               string
	}{
		{"POST", "/items", "cross-site", 403, `custom 403 cross-origin request refused; user "", 0 flashes`},
		{"GET", "/panic", "", 500, `custom 500 internal server error; user "", 0 flashes`},
		{"GET", "/nowhere", "", 404, `custom 404 not found; user "ann", 0 flashes`},
		{"POST", "/items", "same-origin", 200, "added"},
	} {
		req := newReq(t, c.method, r.url+c.path, nil)
		req.AddCookie(cookie)
		if c.site != "" {
			req.Header.Set("Sec-Fetch-Site", c.site)
		}
		resp, body := do(t, req)
		if resp.StatusCode != c.status || body != c.body {
			t.Errorf("%s %s: %d %q, want %d %q", c.method, c.path, resp.StatusCode, body, c.status, c.body)
		}
	}
	if logs := r.logs.String(); strings.Contains(logs, "the error page panicked") {
		t.Errorf("the error page panicked:\n%s", logs)
	}
}

// An error answer keeps none of the headers the handler set for the page
// it meant to send that would let a cache keep the error or the browser
// save it; a 5xx is no-store.
func TestErrorDropsTheHandlersCachingHeaders(t *testing.T) {
	t.Parallel()
	pages, err := hakit.ParseTemplates(pagesFS, "layout.html", "pages/*.html")
	if err != nil {
		t.Fatal(err)
	}
	cacheable := func(w http.ResponseWriter) {
		h := w.Header()
		h.Set("Cache-Control", "public, max-age=86400")
		h.Set("Expires", "Thu, 01 Dec 2099 16:00:00 GMT")
		h.Set("ETag", `"v1"`)
		h["ETag"] = []string{`"v1"`} // not canonical, as some handlers write it
		h.Set("Last-Modified", "Mon, 30 Nov 2026 10:00:00 GMT")
		h.Set("Content-Disposition", `attachment; filename="report.csv"`)
		h.Set("X-Kept", "yes")
	}
	r := serve(t, hakit.Config{DrainDelay: -1}, func(a *hakit.App) {
		a.Router().Get("/error", func(w http.ResponseWriter, r *http.Request) {
			cacheable(w)
			hakit.Error(w, r, errors.New("boom"))
		})
		a.Router().Get("/unavailable", func(w http.ResponseWriter, r *http.Request) {
			cacheable(w)
			hakit.Error(w, r, dbrouter.ErrNoPrimary)
		})
		a.Router().Get("/missing", func(w http.ResponseWriter, r *http.Request) {
			cacheable(w)
			hakit.Error(w, r, pgx.ErrNoRows)
		})
		a.Router().Get("/render", func(w http.ResponseWriter, r *http.Request) {
			cacheable(w)
			pages.Render(w, r, 200, "broken.html", note{})
		})
		a.Router().Get("/render-error-page", func(w http.ResponseWriter, r *http.Request) {
			cacheable(w)
			pages.Render(w, r, 404, "broken.html", note{}) // an error page that fails: DefaultErrorPage
		})
		a.Router().Get("/default", func(w http.ResponseWriter, r *http.Request) {
			cacheable(w)
			hakit.DefaultErrorPage(w, r, &hakit.HTTPError{Status: 502})
		})
		a.Router().Get("/panic", func(w http.ResponseWriter, r *http.Request) {
			cacheable(w)
			panic("handler bug")
		})
	}, true)
	for _, c := range []struct {
		path   string
		status int
		cache  string
	}{
		{"/error", 500, "no-store"},
		{"/unavailable", 503, "no-store"},
		{"/missing", 404, ""},
		{"/render", 500, "no-store"},
		{"/render-error-page", 500, "no-store"},
		{"/default", 502, "no-store"},
		{"/panic", 500, "no-store"},
	} {
		for _, accept := range []string{"text/html", "application/json", ""} {
			req := newReq(t, "GET", r.url+c.path, nil)
			req.Header.Set("Accept", accept)
			resp, body := do(t, req)
			h := resp.Header
			if resp.StatusCode != c.status || h.Get("Cache-Control") != c.cache {
				t.Errorf("%s (Accept %q): %d, Cache-Control %q; want %d, %q (%q)", c.path, accept, resp.StatusCode,
					h.Get("Cache-Control"), c.status, c.cache, body)
			}
			for _, k := range []string{"Expires", "Etag", "Last-Modified", "Content-Disposition"} {
				if v := h.Values(k); len(v) > 0 {
					t.Errorf("%s (Accept %q): the error answer kept %s: %q", c.path, accept, k, v)
				}
			}
			if h.Get("X-Kept") != "yes" && c.path != "/panic" {
				t.Errorf("%s: other headers were dropped too", c.path)
			}
		}
	}
}
