package hakit

import (
	"context"
	"encoding/json"
	"errors"
	"html/template"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"hakit.dev/dbrouter"
	"hakit.dev/session"
	"hakit.dev/uploads"
)

// Errors the stack and the App answer with by themselves. An [ErrorPage]
// tells them apart with errors.Is; [ErrorHandler] answers with one of
// them elsewhere (a chi sub-router's NotFound, a CrossOriginProtection's
// SetDenyHandler).
var (
	// ErrNotFound: no route matches the path (404).
	ErrNotFound = errors.New("hakit: no route for the path")
	// ErrMethodNotAllowed: a route matches the path but not the method
	// (405, with an Allow header).
	ErrMethodNotAllowed = errors.New("hakit: method not allowed")
	// ErrCrossOrigin: the CSRF protection refused a cross-origin unsafe
	// request (403).
	ErrCrossOrigin = errors.New("hakit: cross-origin request refused")
	// ErrPanic: a handler panicked before its response started (500).
	ErrPanic = errors.New("hakit: handler panicked")
	// ErrStarting: the instance is still starting (503, Retry-After: 1).
	ErrStarting = errors.New("hakit: starting")
)

// HTTPError is an error with the HTTP answer it calls for. Return one from
// your own code to choose the answer (a handler's helper that finds no such
// note returns &HTTPError{Status: 404, Message: "no such note"}); [Error]
// answers with it, and [HTTPErrorOf] makes one for any error.
type HTTPError struct {
	// Status is the HTTP status code. Zero means 500.
	Status int
	// Message is what the client is shown: short, and never internal
	// detail. Defaults to the status text (http.StatusText).
	Message string
	// RetryAfter, if more than 0, is sent as Retry-After, in whole
	// seconds rounded up.
	RetryAfter time.Duration
	// Err is the cause, for the log only: the client never sees it.
	Err error
}

// Error returns the status, the message and the cause, for logs.
func (e *HTTPError) Error() string {
	s := "hakit: " + strconv.Itoa(e.status()) + " " + e.message()
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns Err.
func (e *HTTPError) Unwrap() error { return e.Err }

func (e *HTTPError) status() int {
	if e.Status == 0 {
		return http.StatusInternalServerError
	}
	return e.Status
}

func (e *HTTPError) message() string {
	if e.Message != "" {
		return e.Message
	}
	if t := http.StatusText(e.status()); t != "" {
		return t
	}
	return "error"
}

// Messages for the answers HTTPErrorOf makes.
const (
	msgUnavailable   = "temporarily unavailable; try again in a moment"
	msgCommitUnknown = "your change may or may not have been saved; check before you submit it again"
)

// HTTPErrorOf returns the answer err calls for, with Err set to err: the
// first *HTTPError in err's chain as it is (Status and Message defaulted),
// else the mapping below, in this order (the first that matches wins).
// It returns nil for a nil err.
//
//	hakit's own: ErrNotFound 404, ErrMethodNotAllowed 405,
//	  ErrCrossOrigin 403, ErrPanic 500, ErrStarting 503 (Retry-After 1)
//	dbrouter.ErrCommitUnknown         504 Gateway Timeout, no Retry-After (see below)
//	dbrouter.ErrNoPrimary, ErrNoNode  503, Retry-After 2 (a failover under way)
//	dbrouter.ErrClosed                503, Retry-After 1 (shutting down)
//	session.ErrNoSession              500 (session code outside LoadAndSave: a bug;
//	                                  checked before ErrStoreUnavailable, which
//	                                  Login and Logout also wrap it in)
//	session.ErrStoreUnavailable       503, Retry-After 1
//	uploads' errors                   uploads.Status: ErrTooLarge 413,
//	  ErrUnsupportedType 415, ErrNoFile and ErrBadRequest 400, ErrNotFound
//	  404, ErrRangeNotSatisfiable 416, ErrTooSlow 408; ErrBusy 503 with
//	  Retry-After uploads.RetryAfter (no part memory came free in time)
//	*http.MaxBytesError               413 (a body over its limit; ParseForm's)
//	pgx.ErrNoRows                     404 (as Rails answers RecordNotFound)
//	*pgconn.PgError of a server that cannot serve now: classes 08
//	  (connection), 53 (out of resources: too many connections), 57P01–03
//	  (shutting down), 25006 (read-only: a demoted primary), 40001 and
//	  40P01 (serialization failure, deadlock, after dbrouter's retries)
//	                                  503, Retry-After 1
//	context.DeadlineExceeded          503, Retry-After 1 (the request's deadline)
//	context.Canceled                  503, Retry-After 1 ([Error] writes nothing
//	                                  when the client is gone)
//	a network failure (connection refused or reset, a net.Error timeout):
//	  Redis, S3 or another service unreachable   503, Retry-After 1
//	an upstream HTTP API's 5xx (an error with HTTPStatusCode() >= 500, such
//	  as the AWS SDK's for S3)        502 Bad Gateway
//	anything else                     500
//
// dbrouter.ErrCommitUnknown is a write whose COMMIT was sent but never
// answered: it may or may not have been applied. It gets 504, the status
// HTTP has for "an upstream server did not answer in time", with which
// proxies and clients already mean "the request may have been
// processed", and no Retry-After: 503 with Retry-After would tell the
// client, and a proxy configured to retry on 503, that sending it again is
// safe, and a non-idempotent form sent again is a second order. The
// message asks the user to check before submitting again. An app whose
// write is idempotent (an idempotency key) can instead retry it, or look
// the row up, before answering.
func HTTPErrorOf(err error) *HTTPError {
	if err == nil {
		return nil
	}
	if he, ok := errors.AsType[*HTTPError](err); ok {
		return &HTTPError{Status: he.status(), Message: he.message(), RetryAfter: he.RetryAfter, Err: err}
	}
	e := &HTTPError{Status: http.StatusInternalServerError, Err: err}
	set := func(status int, msg string, retry time.Duration) *HTTPError {
		e.Status, e.Message, e.RetryAfter = status, msg, retry
		return e
	}
	switch {
	case errors.Is(err, ErrNotFound):
		return set(http.StatusNotFound, "not found", 0)
	case errors.Is(err, ErrMethodNotAllowed):
		return set(http.StatusMethodNotAllowed, "method not allowed", 0)
	case errors.Is(err, ErrCrossOrigin):
		return set(http.StatusForbidden, "cross-origin request refused", 0)
	case errors.Is(err, ErrPanic):
		return set(http.StatusInternalServerError, "internal server error", 0)
	case errors.Is(err, ErrStarting):
		return set(http.StatusServiceUnavailable, "starting", time.Second)
	case errors.Is(err, dbrouter.ErrCommitUnknown):
		return set(http.StatusGatewayTimeout, msgCommitUnknown, 0)
	case errors.Is(err, dbrouter.ErrNoPrimary), errors.Is(err, dbrouter.ErrNoNode):
		return set(http.StatusServiceUnavailable, msgUnavailable, 2*time.Second)
	case errors.Is(err, session.ErrNoSession):
		return set(http.StatusInternalServerError, "internal server error", 0)
	case errors.Is(err, dbrouter.ErrClosed), errors.Is(err, session.ErrStoreUnavailable):
		return set(http.StatusServiceUnavailable, msgUnavailable, time.Second)
	case errors.Is(err, uploads.ErrBusy):
		return set(http.StatusServiceUnavailable, "too many uploads under way; try again shortly", max(uploads.RetryAfter(err), time.Second))
	}
	if status, msg := uploadsStatus(err); status != 0 {
		return set(status, msg, 0)
	}
	if IsBodyTooLarge(err) {
		return set(http.StatusRequestEntityTooLarge, "request body too large", 0)
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return set(http.StatusNotFound, "not found", 0)
	}
	if pgErr, ok := errors.AsType[*pgconn.PgError](err); ok {
		if pgUnavailable(pgErr.Code) {
			return set(http.StatusServiceUnavailable, msgUnavailable, time.Second)
		}
		return set(http.StatusInternalServerError, "internal server error", 0)
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) || networkFailure(err) {
		return set(http.StatusServiceUnavailable, msgUnavailable, time.Second)
	}
	if hs, ok := errors.AsType[interface {
		error
		HTTPStatusCode() int
	}](err); ok && hs.HTTPStatusCode() >= 500 {
		return set(http.StatusBadGateway, "bad gateway", 0)
	}
	return set(http.StatusInternalServerError, "internal server error", 0)
}

// StatusOf returns the HTTP status err calls for (see [HTTPErrorOf]), or
// 200 for a nil err.
func StatusOf(err error) int {
	if err == nil {
		return http.StatusOK
	}
	return HTTPErrorOf(err).Status
}

// uploadsStatus maps uploads' sentinel errors; uploads.Status itself maps
// every other error to 502 (its bucket failed), which is not ours to say.
func uploadsStatus(err error) (int, string) {
	for _, u := range []struct {
		err error
		msg string
	}{
		{uploads.ErrTooLarge, "file too large"},
		{uploads.ErrUnsupportedType, "file type not allowed"},
		{uploads.ErrNoFile, "no file in the request"},
		{uploads.ErrBadRequest, "malformed upload"},
		{uploads.ErrNotFound, "not found"},
		{uploads.ErrRangeNotSatisfiable, "range not satisfiable"},
		{uploads.ErrTooSlow, "transfer too slow"},
	} {
		if errors.Is(err, u.err) {
			return uploads.Status(u.err), u.msg
		}
	}
	return 0, ""
}

// pgUnavailable reports a PostgreSQL error that says the server cannot
// serve now, rather than that the statement is wrong.
func pgUnavailable(code string) bool {
	switch {
	case strings.HasPrefix(code, "08"), strings.HasPrefix(code, "53"):
		return true
	}
	switch code {
	case "57P01", "57P02", "57P03", "25006", "40001", "40P01":
		return true
	}
	return false
}

// networkFailure reports a dependency that could not be reached.
func networkFailure(err error) bool {
	if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EHOSTUNREACH) || errors.Is(err, syscall.ENETUNREACH) {
		return true
	}
	if _, ok := errors.AsType[*net.OpError](err); ok {
		return true
	}
	ne, ok := errors.AsType[net.Error](err)
	return ok && ne.Timeout()
}

// An ErrorPage writes an error response: e.Status with e.Message, and
// whatever else the app wants on the page (a layout, a link home,
// e.g. with [Templates.Render]). It must not show e.Err, which is for the
// log. Headers the answer needs (Retry-After, Allow) are set before it is
// called, and the headers the handler set for the response it meant to
// send that would let a cache keep the error or a browser save it as a
// file (Cache-Control, Expires, ETag, Last-Modified, Content-Disposition)
// are removed; a 5xx gets Cache-Control: no-store. A page that wants to
// replace only some answers calls [DefaultErrorPage] for the others:
//
//	app.SetErrorPage(func(w http.ResponseWriter, r *http.Request, e *hakit.HTTPError) {
//		if e.Status == http.StatusNotFound {
//			pages.Render(w, r, e.Status, "404.html", nil)
//			return
//		}
//		hakit.DefaultErrorPage(w, r, e)
//	})
//
// A page that renders with [Templates.Render] must not itself fail with
// an error answered by the same page, or it loops: Render answers its own
// failures with [DefaultErrorPage] when the page it failed on is an error
// page (its status is 400 or more).
//
// Some answers are made outside the app's middleware, so the request has
// no session (nor anything else the app's middleware puts in the
// context): the CSRF protection's 403 (it runs before the router), the
// 500 of a panic (recovered once the handler and its middleware are gone)
// and the 503 while starting (the router is not serving yet). There a
// session.Manager's getters (UserID, Flashes, GetString, …) return zero
// values, as for a visitor who is not signed in, and its changes are
// dropped, so a layout that shows "Signed in as …" renders "not signed
// in". The 404, the 405 and every [Error] of a handler run inside, with
// the session.
type ErrorPage func(w http.ResponseWriter, r *http.Request, e *HTTPError)

// DefaultErrorPage is the ErrorPage used unless one is set. It answers
// e.Status with e.Message in the form the client asks for: a small HTML
// page for browsers (Accept: text/html), RFC 9457 problem details
// (application/problem+json, with the request ID as "request_id") for
// clients that accept JSON, and a line of plain text otherwise. Like
// every error answer, it drops the handler's caching and download headers
// and marks a 5xx Cache-Control: no-store (see [ErrorPage]).
func DefaultErrorPage(w http.ResponseWriter, r *http.Request, e *HTTPError) {
	status, msg := e.status(), e.message()
	h := w.Header()
	h.Del("Content-Length")
	errorHeaders(h, status)
	id := RequestID(r.Context())
	accept := r.Header.Get("Accept")
	switch {
	case strings.Contains(accept, "text/html"):
		h.Set("Content-Type", "text/html; charset=utf-8")
		w.WriteHeader(status)
		_ = errorHTML.Execute(w, struct {
			Status         int
			Title, Msg, ID string
		}{status, http.StatusText(status), msg, id})
	case strings.Contains(accept, "json"):
		h.Set("Content-Type", "application/problem+json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(problem{Type: "about:blank", Title: http.StatusText(status), Status: status, Detail: msg, RequestID: id})
	default:
		h["Content-Type"] = hdrTextPlain
		w.WriteHeader(status)
		_, _ = io.WriteString(w, msg+"\n")
	}
}

// problem is an RFC 9457 problem details object.
type problem struct {
	Type      string `json:"type"`
	Title     string `json:"title"`
	Status    int    `json:"status"`
	Detail    string `json:"detail,omitempty"`
	RequestID string `json:"request_id,omitempty"`
}

var errorHTML = template.Must(template.New("error").Parse(`<!doctype html>
<html lang="en">
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Status}} {{.Title}}</title>
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:36em;margin:10vh auto;padding:0 1em;color:#222}small{color:#777}</style>
<h1>{{.Title}}</h1>
<p>{{.Msg}}</p>
{{if .ID}}<p><small>Request ID: {{.ID}}</small></p>
{{end}}`))

// Error answers the request with the response err calls for
// ([HTTPErrorOf]), through the error page of the [Stack] the request came
// through ([App.SetErrorPage], StackConfig.ErrorPage), or
// [DefaultErrorPage] outside one, and logs err: at error level for a 5xx
// (with the request ID, method and path), at debug level otherwise. The
// client sees only the short message. A nil err answers 500.
//
// It writes nothing (and logs at debug level) when the client is gone: err
// is context.Canceled and so is the request's context. Inside the Stack it
// also writes nothing when the response has already started (a status
// cannot be changed once sent): it logs err instead, so
// hakit.Error(w, r, err) after a helper that answered by itself (such as
// uploads' Serve) never writes a second status. To cut a started response
// short instead, so the client does not take it as complete, panic with
// http.ErrAbortHandler.
func Error(w http.ResponseWriter, r *http.Request, err error) {
	ctx := r.Context()
	if err == nil {
		err = errors.New("hakit: Error called with a nil error")
	}
	e := HTTPErrorOf(err)
	ri := infoOf(ctx)
	switch {
	case errors.Is(err, context.Canceled) && ctx.Err() != nil:
		logAt(r, slog.LevelDebug, "hakit: client gone; no answer", e)
		return
	case ri != nil && ri.sw != nil && ri.sw.status != 0:
		logAt(r, slog.LevelError, "hakit: error after the response started; nothing more sent", e, slog.Int("sent_status", ri.sw.status))
		return
	}
	logError(r, e)
	if e.Status == http.StatusMethodNotAllowed && w.Header().Get("Allow") == "" {
		if rctx := chi.RouteContext(ctx); rctx != nil && rctx.Routes != nil {
			setAllow(w.Header(), rctx.Routes, r)
		}
	}
	showError(w, r, e)
}

// logError logs e as Error does: a 5xx at error level, others at debug.
func logError(r *http.Request, e *HTTPError) {
	if e.Status >= 500 {
		logAt(r, slog.LevelError, "hakit: request failed", e)
	} else {
		logAt(r, slog.LevelDebug, "hakit: request refused", e)
	}
}

// logAt logs e with the request's ID, method and path, to the logger of
// the Stack the request came through, or slog.Default outside one.
func logAt(r *http.Request, level slog.Level, msg string, e *HTTPError, more ...slog.Attr) {
	ctx := r.Context()
	log := slog.Default()
	if ri := infoOf(ctx); ri != nil && ri.s != nil {
		log = ri.s.cfg.Logger
	}
	if !log.Enabled(ctx, level) {
		return
	}
	cause := ""
	if e.Err != nil {
		cause = e.Err.Error()
	}
	attrs := append([]slog.Attr{slog.Int("status", e.Status), slog.String("err", cause),
		slog.String("request_id", RequestID(ctx)), slog.String("method", r.Method), slog.String("path", r.URL.Path)}, more...)
	log.LogAttrs(ctx, level, msg, attrs...)
}

// errorHeaders removes from h what the handler set for the response it
// meant to send and an error answer must not keep: a 500 sent with the
// page's Cache-Control: public and ETag would be kept by a CDN, and a
// Content-Disposition would make the browser save the error as a file. A
// 5xx is marked no-store.
func errorHeaders(h http.Header, status int) {
	for _, k := range [...]string{"Cache-Control", "Expires", "Etag", "Last-Modified", "Content-Disposition"} {
		h.Del(k)
	}
	delete(h, "ETag") // as set by h["ETag"] = …
	if status >= 500 {
		h["Cache-Control"] = hdrNoStore
	}
}

var hdrNoStore = []string{"no-store"}

// showError writes e through the request's error page, without logging.
func showError(w http.ResponseWriter, r *http.Request, e *HTTPError) {
	errorHeaders(w.Header(), e.status())
	if e.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.FormatInt(int64((e.RetryAfter+time.Second-1)/time.Second), 10))
	}
	if ri := infoOf(r.Context()); ri != nil && ri.s != nil && ri.s.cfg.ErrorPage != nil {
		ri.s.cfg.ErrorPage(w, r, e)
		return
	}
	DefaultErrorPage(w, r, e)
}

// ErrorHandler returns a handler that answers every request with
// Error(w, r, err): for a chi sub-router's NotFound and MethodNotAllowed,
// or an http.CrossOriginProtection of your own:
//
//	cop.SetDenyHandler(hakit.ErrorHandler(hakit.ErrCrossOrigin))
func ErrorHandler(err error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { Error(w, r, err) })
}

// allowMethods are the methods a 405's Allow header may list.
var allowMethods = [...]string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
	http.MethodDelete, http.MethodOptions, http.MethodConnect, http.MethodTrace}

// setAllow sets the Allow header of a 405 to the methods routes has for
// r's path, as chi's own 405 does (RFC 9110 requires it).
func setAllow(h http.Header, routes chi.Routes, r *http.Request) {
	path := r.URL.RawPath
	if path == "" {
		path = r.URL.Path
	}
	rctx := chi.NewRouteContext()
	var allow []string
	for _, m := range allowMethods {
		rctx.Reset()
		if routes.Match(rctx, m, path) {
			allow = append(allow, m)
		}
	}
	if len(allow) > 0 {
		h.Set("Allow", strings.Join(allow, ", "))
	}
}

// SetErrorPage makes p answer the errors the app answers by itself — 404
// (no route), 405 (wrong method), the CSRF protection's 403, the 500 of a
// panic, the 503 while starting — and those handlers pass to [Error]. A
// nil p restores [DefaultErrorPage]. It may be called at any time, also
// while the app serves.
func (a *App) SetErrorPage(p ErrorPage) {
	if p == nil {
		a.errorPage.Store(nil)
		return
	}
	a.errorPage.Store(&p)
}

// showErrorPage is the App's StackConfig.ErrorPage: the page set last.
func (a *App) showErrorPage(w http.ResponseWriter, r *http.Request, e *HTTPError) {
	if p := a.errorPage.Load(); p != nil {
		(*p)(w, r, e)
		return
	}
	DefaultErrorPage(w, r, e)
}

// notFound and methodNotAllowed are the App's router's handlers.
func (a *App) notFound(w http.ResponseWriter, r *http.Request) { Error(w, r, ErrNotFound) }

func (a *App) methodNotAllowed(w http.ResponseWriter, r *http.Request) {
	// The stack's route context has no Routes (chi sets it only in a
	// context of its own): ask the app's router.
	setAllow(w.Header(), a.router, r)
	Error(w, r, ErrMethodNotAllowed)
}

// starting answers a request that came before the app was ready (it has
// not been through the Stack).
func (a *App) starting(w http.ResponseWriter, r *http.Request) {
	errorHeaders(w.Header(), http.StatusServiceUnavailable)
	w.Header()["Retry-After"] = retryAfter1
	a.showErrorPage(w, r, &HTTPError{Status: http.StatusServiceUnavailable, Message: "starting", RetryAfter: time.Second, Err: ErrStarting})
}
