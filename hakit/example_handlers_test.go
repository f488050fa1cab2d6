package hakit_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing/fstest"
	"time"

	"github.com/go-chi/chi/v5"

	"hakit.dev/dbrouter"
	"hakit.dev/hakit"
	"hakit.dev/session"
)

func ExampleTemplates_Render() {
	fsys := fstest.MapFS{
		"layout.html":     {Data: []byte(`<title>{{block "title" .}}Notes{{end}}</title>{{block "content" .}}{{end}}`)},
		"pages/note.html": {Data: []byte(`{{define "title"}}{{.Title}}{{end}}{{define "content"}}<h1>{{.Title}}</h1>{{end}}`)},
		"pages/oops.html": {Data: []byte(`{{define "content"}}<h1>Half a page</h1>{{.NoSuchField}}{{end}}`)},
	}
	pages, err := hakit.ParseTemplates(fsys, "layout.html", "pages/*.html") // at start: syntax errors fail it
	if err != nil {
		fmt.Println(err)
		return
	}
	note := struct{ Title string }{"Milk & <eggs>"}

	rec := httptest.NewRecorder()
	pages.Render(rec, httptest.NewRequest("GET", "/notes/1", nil), http.StatusOK, "note.html", note)
	fmt.Println(rec.Code, rec.Body)

	// A template error: a clean 500, nothing of the page.
	rec = httptest.NewRecorder()
	pages.Render(rec, httptest.NewRequest("GET", "/oops", nil), http.StatusOK, "oops.html", note)
	fmt.Print(rec.Code, " ", rec.Body)
	// Output:
	// 200 <title>Milk &amp; &lt;eggs&gt;</title><h1>Milk &amp; &lt;eggs&gt;</h1>
	// 500 internal server error
}

func ExampleError() {
	loadNote := func(id string) error {
		if id == "7" {
			return &hakit.HTTPError{Status: http.StatusNotFound, Message: "no such note"}
		}
		return fmt.Errorf("loading note %s: %w", id, dbrouter.ErrNoPrimary) // a failover under way
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := loadNote(r.PathValue("id")); err != nil {
			hakit.Error(w, r, err) // the status it calls for; the detail goes to the log
			return
		}
	})
	mux := http.NewServeMux()
	mux.Handle("GET /notes/{id}", h)
	for _, id := range []string{"7", "8"} {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest("GET", "/notes/"+id, nil))
		fmt.Printf("%d Retry-After=%q %s", rec.Code, rec.Header().Get("Retry-After"), rec.Body)
	}
	fmt.Println(hakit.StatusOf(dbrouter.ErrCommitUnknown))
	// Output:
	// 404 Retry-After="" no such note
	// 503 Retry-After="2" temporarily unavailable; try again in a moment
	// 504
}

func ExampleParseForm() {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := hakit.ParseForm(w, r); err != nil {
			hakit.Error(w, r, err) // 413 for a body over its limit, 400 for a malformed one
			return
		}
		fmt.Fprintf(w, "title %q", r.PostForm.Get("title"))
	})
	for _, body := range []string{"title=Groceries", "title=" + strings.Repeat("x", hakit.MaxFormBytes), "title=%zz"} {
		req := httptest.NewRequest("POST", "/notes", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		fmt.Println(rec.Code, strings.TrimSpace(rec.Body.String()))
	}
	// Output:
	// 200 title "Groceries"
	// 413 form too large
	// 400 malformed form
}

func ExampleApp_SetErrorPage() {
	app, err := hakit.New(context.Background(), hakit.Config{
		DrainDelay: -1, // the example stops through its context
		Logger:     slog.New(slog.NewTextHandler(io.Discard, nil)),
		NoSignals:  true,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	app.SetErrorPage(func(w http.ResponseWriter, r *http.Request, e *hakit.HTTPError) {
		if errors.Is(e, hakit.ErrCrossOrigin) {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.WriteHeader(e.Status)
			fmt.Fprintln(w, "This form must be sent from our own pages.")
			return
		}
		hakit.DefaultErrorPage(w, r, e) // the others as they were
	})
	app.Router().Post("/notes", func(w http.ResponseWriter, r *http.Request) {})

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- app.Serve(ctx, ln) }()
	defer func() { stop(); <-done }()
	for app.Health().State().String() != "ready" {
		time.Sleep(10 * time.Millisecond)
	}
	send := func(method string, hdr ...string) {
		req, _ := http.NewRequest(method, "http://"+ln.Addr().String()+"/notes", nil)
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			fmt.Println(err)
			return
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		fmt.Printf("%d Allow=%q %s", resp.StatusCode, resp.Header.Get("Allow"), body)
	}
	send("POST", "Sec-Fetch-Site", "cross-site") // a form posted from another site
	send("PUT")
	// Output:
	// 403 Allow="" This form must be sent from our own pages.
	// 405 Allow="POST" method not allowed
}

// The handler helpers together, as docs/handlers.md shows them: pages
// with a layout, a form, errors and an error page, login and flash
// messages. The doc's Go blocks are excerpts of this function
// (TestHandlersDocIsExampleCode).
func Example_handlers() {
	templatesFS := fstest.MapFS{
		"layout.html": {Data: []byte(`<title>{{block "title" .}}Notes{{end}}</title>` +
			`{{range .Flashes}}<p class="{{.Kind}}">{{.Text}}</p>{{end}}{{block "content" .}}{{end}}`)},
		"pages/notes.html": {Data: []byte(`{{define "content"}}{{range .Notes}}<li>{{.}}</li>{{end}}{{end}}`)},
		"pages/error.html": {Data: []byte(`{{define "title"}}{{.Status}}{{end}}{{define "content"}}<h1>{{.Message}}</h1>{{end}}`)},
	}
	pages, err := hakit.ParseTemplates(templatesFS, "layout.html", "pages/*.html")
	if err != nil {
		log.Fatal(err) // a syntax error fails the start, not a request
	}

	app, err := hakit.New(context.Background(), hakit.Config{DrainDelay: -1, NoSignals: true, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		log.Fatal(err)
	}
	sessions, err := session.New(session.Config{Store: session.NewMemoryStore(), Insecure: true, Logger: app.Logger()})
	if err != nil {
		log.Fatal(err)
	}
	app.UseSessions(sessions)
	var notes []string

	app.SetErrorPage(func(w http.ResponseWriter, r *http.Request, e *hakit.HTTPError) {
		if strings.Contains(r.Header.Get("Accept"), "text/html") {
			// Status and Message only: e.Err is for the log.
			pages.Render(w, r, e.Status, "error.html", map[string]any{"Status": e.Status, "Message": e.Message})
			return
		}
		hakit.DefaultErrorPage(w, r, e) // JSON or plain text for the others
	})

	app.Router().Post("/login", func(w http.ResponseWriter, r *http.Request) {
		if err := hakit.ParseForm(w, r); err != nil {
			hakit.Error(w, r, err)
			return
		}
		userID := r.PostForm.Get("user") // … once the password is checked
		if err := sessions.Login(r.Context(), userID); err != nil {
			hakit.Error(w, r, err) // the session store is down: 503
			return
		}
		http.Redirect(w, r, "/notes", http.StatusSeeOther)
	})
	app.Router().Post("/logout", func(w http.ResponseWriter, r *http.Request) {
		if err := sessions.Logout(r.Context()); err != nil {
			hakit.Error(w, r, err)
			return
		}
		sessions.Flash(r.Context(), "info", "Signed out.") // in a new, anonymous session
		http.Redirect(w, r, "/", http.StatusSeeOther)
	})

	app.Router().Group(func(r chi.Router) {
		r.Use(sessions.RequireLogin(http.RedirectHandler("/login", http.StatusSeeOther)))
		r.Get("/notes", func(w http.ResponseWriter, r *http.Request) {
			pages.Render(w, r, http.StatusOK, "notes.html", map[string]any{
				"Notes":   notes,
				"Flashes": sessions.Flashes(r.Context()), // shown once
			})
		})
		r.Post("/notes", func(w http.ResponseWriter, r *http.Request) {
			if err := hakit.ParseForm(w, r); err != nil {
				hakit.Error(w, r, err) // 413 over the body limit, 400 malformed
				return
			}
			title := r.PostForm.Get("title")
			if title == "" {
				hakit.Error(w, r, &hakit.HTTPError{Status: http.StatusUnprocessableEntity, Message: "A note needs a title."})
				return
			}
			notes = append(notes, title)
			sessions.Flash(r.Context(), "info", "Note saved.")
			http.Redirect(w, r, "/notes", http.StatusSeeOther) // Post/Redirect/Get
		})
	})

	// Serve it, and be a browser.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- app.Serve(ctx, ln) }()
	defer func() { stop(); <-done }()
	for app.Health().State().String() != "ready" {
		time.Sleep(10 * time.Millisecond)
	}
	jar, _ := cookiejar.New(nil)
	browser := &http.Client{Jar: jar}
	base := "http://" + ln.Addr().String()
	show := func(resp *http.Response, err error) {
		if err != nil {
			fmt.Println(err)
			return
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		fmt.Println(resp.StatusCode, resp.Request.URL.Path, string(body))
	}
	post := func(path string, form url.Values) {
		req, _ := http.NewRequest("POST", base+path, strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Accept", "text/html")
		show(browser.Do(req))
	}
	post("/login", url.Values{"user": {"ann"}})
	post("/notes", url.Values{"title": {"Milk & eggs"}})
	post("/notes", url.Values{"title": {""}})
	show(browser.Get(base + "/notes")) // a reload: the flash is gone
	// Output:
	// 200 /notes <title>Notes</title>
	// 200 /notes <title>Notes</title><p class="info">Note saved.</p><li>Milk &amp; eggs</li>
	// 422 /notes <title>422</title><h1>A note needs a title.</h1>
	// 200 /notes <title>Notes</title><li>Milk &amp; eggs</li>
}
