package hakit

import (
	"bytes"
	"errors"
	"fmt"
	"html/template"
	"io"
	"io/fs"
	"maps"
	"net/http"
	"path"
	"slices"
	"strconv"
	"sync"
)

// Templates renders html/template pages that share a layout. Each page is
// its own template set — the layout (with its partials and functions)
// plus the page's file — so two pages may both define "title" and
// "content" without clashing. Pages are parsed once, at start, so a
// syntax error fails the start rather than a request.
//
// A Templates is safe for concurrent use.
type Templates struct {
	pages map[string]*template.Template
	bufs  sync.Pool // *bytes.Buffer
}

// ParseTemplates parses the layout file and, for every file the page
// patterns match (fs.Glob patterns, such as "pages/*.html"), a page made
// of the layout and that file. The layout is executed for every page: it
// lays out the page and calls the blocks the page defines
// ({{block "content" .}}{{end}} in the layout, {{define "content"}}…{{end}}
// in the page). Pages are named by their file's base name ("note.html");
// two pages with the same base name are an error, as is a pattern that
// matches nothing.
//
// For template functions or partials shared by all pages, make the base
// yourself and use [NewTemplates].
func ParseTemplates(fsys fs.FS, layout string, pages ...string) (*Templates, error) {
	base, err := template.New(path.Base(layout)).ParseFS(fsys, layout)
	if err != nil {
		return nil, fmt.Errorf("hakit: templates: layout: %w", err)
	}
	return NewTemplates(base, fsys, pages...)
}

// NewTemplates makes a page for every file of fsys the patterns match,
// each parsed into a clone of base: the layout, with the partials and
// functions every page shares. Rendering a page executes base's template
// (base.Name()) in the page's set. Pages are named by their file's base
// name; two pages with the same base name are an error, as is a pattern
// that matches nothing.
//
//	base := template.Must(template.New("layout.html").Funcs(funcs).ParseFS(fsys, "layout.html", "partials/*.html"))
//	pages, err := hakit.NewTemplates(base, fsys, "pages/*.html")
func NewTemplates(base *template.Template, fsys fs.FS, patterns ...string) (*Templates, error) {
	if base == nil {
		return nil, errors.New("hakit: templates: nil base template")
	}
	if len(patterns) == 0 {
		return nil, errors.New("hakit: templates: no page patterns")
	}
	t := &Templates{pages: map[string]*template.Template{}}
	t.bufs.New = func() any { return new(bytes.Buffer) }
	var errs []error
	from := map[string]string{}
	for _, p := range patterns {
		files, err := fs.Glob(fsys, p)
		if err != nil {
			errs = append(errs, fmt.Errorf("pattern %q: %w", p, err))
			continue
		}
		if len(files) == 0 {
			errs = append(errs, fmt.Errorf("pattern %q matches no file", p))
			continue
		}
		for _, f := range files {
			name := path.Base(f)
			if prev, ok := from[name]; ok {
				if prev != f {
					errs = append(errs, fmt.Errorf("two pages named %s: %s and %s", name, prev, f))
				}
				continue
			}
			from[name] = f
			page, err := base.Clone()
			if err == nil {
				_, err = parseInto(page, fsys, f)
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("page %s: %w", f, err))
				continue
			}
			t.pages[name] = page
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("hakit: templates: %w", err)
	}
	return t, nil
}

// parseInto parses file f into the set of t under f's base name, unless
// that is t's own name (a page file named as the layout would replace it).
func parseInto(t *template.Template, fsys fs.FS, f string) (*template.Template, error) {
	b, err := fs.ReadFile(fsys, f)
	if err != nil {
		return nil, err
	}
	name := path.Base(f)
	if name == t.Name() {
		return nil, fmt.Errorf("has the layout's name %s", name)
	}
	return t.New(name).Parse(string(b))
}

// Pages returns the names of the pages, sorted.
func (t *Templates) Pages() []string {
	return slices.Sorted(maps.Keys(t.pages))
}

// Lookup returns the template set of a page (the layout, its partials and
// the page), or nil: to execute one of its templates on its own, such as
// a fragment for a partial page update.
func (t *Templates) Lookup(page string) *template.Template { return t.pages[page] }

// Execute renders page with data to wr: the layout, with the page's
// blocks. It writes nothing on an error only when wr is a buffer of the
// caller's; Render is the safe way to answer a request.
func (t *Templates) Execute(wr io.Writer, page string, data any) error {
	p, ok := t.pages[page]
	if !ok {
		return fmt.Errorf("hakit: templates: no page %q", page)
	}
	if err := p.Execute(wr, data); err != nil {
		return fmt.Errorf("hakit: templates: page %s: %w", page, err)
	}
	return nil
}

// maxPooledBuffer is the largest buffer kept for the next page: a rare
// huge page does not hold its memory for ever.
const maxPooledBuffer = 256 << 10

// Render answers the request with page rendered with data, with status (0
// means 200): the page is rendered into a buffer first, so a template
// error (a missing field, a failing function, an unknown page) answers a
// clean 500 through [Error] (the error page; the error logged) and
// nothing of the page is sent, nor the caching and download headers the
// handler set for it (Cache-Control, ETag, …; the 500 is no-store, see
// [ErrorPage]). The response gets Content-Type
// text/html; charset=utf-8 and a Content-Length. html/template escapes
// data for its context (HTML, attributes, URLs, JavaScript).
//
// An error page that renders with Render (see [ErrorPage]) cannot loop:
// when Render fails on a page whose status is 400 or more, it answers
// with [DefaultErrorPage].
func (t *Templates) Render(w http.ResponseWriter, r *http.Request, status int, page string, data any) {
	if status == 0 {
		status = http.StatusOK
	}
	buf := t.bufs.Get().(*bytes.Buffer)
	defer func() {
		if buf.Cap() <= maxPooledBuffer {
			buf.Reset()
			t.bufs.Put(buf)
		}
	}()
	if err := t.Execute(buf, page, data); err != nil {
		if status >= 400 {
			e := &HTTPError{Status: http.StatusInternalServerError, Message: "internal server error", Err: err}
			logError(r, e)
			DefaultErrorPage(w, r, e)
			return
		}
		Error(w, r, err)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Length", strconv.Itoa(buf.Len()))
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}
