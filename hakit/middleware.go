package hakit

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"
)

// StackConfig configures [Stack]. App builds it from its Config; use it
// directly to put hakit's middleware in front of any handler.
type StackConfig struct {
	Logger         *slog.Logger   // access log (info) and panics (error); required
	TrustedProxies []netip.Prefix // see Config.TrustedProxies
	TrustedOrigins []string       // see Config.TrustedOrigins
	RequestTimeout time.Duration  // <= 0: none; per route: Timeout
	MaxBodyBytes   int64          // <= 0: none; per route: BodyLimit
	// Draining, if set, reports whether the instance is draining:
	// responses then carry Connection: close.
	Draining func() bool
	// Registerer receives the HTTP metrics; nil: no metrics.
	Registerer prometheus.Registerer
	// ErrorPage writes the error responses of the stack (the CSRF
	// protection's 403, a panic's 500) and of [Error] for the requests
	// that come through it. Defaults to [DefaultErrorPage].
	ErrorPage ErrorPage
}

// Stack returns hakit's middleware as one handler wrapper, in this order:
//
//  1. request ID: X-Request-Id from a trusted proxy, else a new one
//     ([RequestID]); in the access log, and in error responses;
//  2. client address and scheme: X-Forwarded-For and X-Forwarded-Proto
//     only from TrustedProxies ([ClientIP], [Scheme]);
//  3. access log (slog, one line per request; a [JSONHandler], the
//     default logger's, writes it without a slog.Record) and Prometheus metrics
//     (hakit_http_requests_in_flight, hakit_http_request_duration_seconds
//     by method, chi route pattern and status code);
//  4. panic recovery: an error log with the stack, and the server lives
//     on; the client gets a 500 (ErrorPage, [ErrPanic]), or, when the response had already
//     started, an aborted response (http.ErrAbortHandler: the connection
//     is closed), never a truncated success;
//  5. Connection: close while draining;
//  6. security headers: X-Content-Type-Options: nosniff always,
//     X-Frame-Options: DENY on HTML unless the handler set its own
//     (SAMEORIGIN for a page meant to be framed), HSTS on https (browsers already
//     default to Referrer-Policy strict-origin-when-cross-origin);
//  7. CSRF protection (http.CrossOriginProtection): 403 for cross-origin
//     unsafe requests (ErrorPage, [ErrCrossOrigin]);
//  8. body limit (413) and request timeout on the context (a deadline
//     only: see Config.RequestTimeout); routes change them with
//     [BodyLimit] and [Timeout].
//
// It is one function, not eight, so a request pays for one allocation:
// its context, the request copy that carries it and the response
// writer's wrapper together. It returns an error for a bad TrustedOrigins
// entry.
func Stack(cfg StackConfig) (func(http.Handler) http.Handler, error) {
	s, err := newStack(cfg)
	if err != nil {
		return nil, err
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { s.serve(w, r, next, false) })
	}, nil
}

func newStack(cfg StackConfig) (*stack, error) {
	if cfg.Logger == nil {
		return nil, errors.New("hakit: StackConfig.Logger is nil")
	}
	cop := http.NewCrossOriginProtection()
	for _, o := range cfg.TrustedOrigins {
		if err := cop.AddTrustedOrigin(o); err != nil {
			return nil, err
		}
	}
	var prefix [8]byte
	_, _ = rand.Read(prefix[:])
	s := &stack{cfg: cfg, cop: cop,
		idPrefix: strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(prefix[:5])) + "-"}
	if cfg.Registerer != nil {
		s.metrics = newHTTPMetrics(cfg.Registerer)
	}
	if jh, ok := cfg.Logger.Handler().(*JSONHandler); ok && jh.fast {
		s.json = jh
	}
	return s, nil
}

type stack struct {
	cfg      StackConfig
	cop      *http.CrossOriginProtection
	idPrefix string
	idSeq    atomic.Uint64
	metrics  *httpMetrics
	// json is the logger's handler when it is a [JSONHandler] that can
	// write the access-log line itself (see JSONHandler.fast); nil
	// otherwise: the line goes through the handler as a slog.Record.
	json *JSONHandler
}

// requestInfo is what the stack learned about a request. It lives in the
// request's context (one allocation per request, see reqState), and the
// request ID it makes points into its own array. It is written before the
// handler runs, and only read from then on (handlers may read it from
// several goroutines), except bodyLimit (SetBodyLimit). Every byte counts:
// the whole reqState is 512 bytes, a size class of the allocator, and the
// bytes a request allocates set how often the garbage collector runs.
type requestInfo struct {
	s         *stack
	sw        *statusWriter // for Error: has the response started?
	id        string
	remote    string     // http.Request.RemoteAddr
	clientIP  netip.Addr // valid if parsed
	parsed    bool
	https     bool
	bodyLimit int64
	idBuf     [24]byte
}

// addr returns the client's address: the forwarded one, or RemoteAddr's.
func (ri *requestInfo) addr() netip.Addr {
	if ri.parsed {
		return ri.clientIP
	}
	peer, _ := netip.ParseAddrPort(ri.remote)
	return peer.Addr().Unmap()
}

// peerHost returns the host part of RemoteAddr, and whether it is the
// client's address as the access log shows it: the peer is the client
// (no trusted proxy parsed it), and it is not IPv4-mapped (ClientIP shows
// those as IPv4).
func (ri *requestInfo) peerHost() (string, bool) {
	if ri.parsed {
		return "", false
	}
	host, _, err := net.SplitHostPort(ri.remote)
	if err != nil {
		host = ri.remote
	}
	return host, !strings.HasPrefix(host, "::ffff:")
}

// clientText returns the client address as text for the access log: the
// host part of RemoteAddr when the address is the peer's (no allocation),
// else the address formatted.
func (ri *requestInfo) clientText() string {
	if host, ok := ri.peerHost(); ok {
		return host
	}
	return ri.addr().String()
}

// appendClient appends the client address as clientText returns it.
func (ri *requestInfo) appendClient(b []byte) []byte {
	if host, ok := ri.peerHost(); ok {
		return append(b, host...)
	}
	return ri.addr().AppendTo(b)
}

type infoKey struct{}

func infoOf(ctx context.Context) *requestInfo {
	ri, _ := ctx.Value(infoKey{}).(*requestInfo)
	return ri
}

// RequestID returns the request's ID (X-Request-Id), or "" outside the
// stack.
func RequestID(ctx context.Context) string {
	if ri := infoOf(ctx); ri != nil {
		return ri.id
	}
	return ""
}

// ClientIP returns the address of the client: the peer, or, when the
// peer is a trusted proxy, the address it forwarded. Invalid outside the
// stack.
func ClientIP(ctx context.Context) netip.Addr {
	if ri := infoOf(ctx); ri != nil {
		return ri.addr()
	}
	return netip.Addr{}
}

// Scheme returns "https" or "http" as the client used it (from
// X-Forwarded-Proto only when a trusted proxy sent it).
func Scheme(ctx context.Context) string {
	if ri := infoOf(ctx); ri != nil {
		if ri.https {
			return "https"
		}
		return "http"
	}
	return ""
}

// SetBodyLimit changes the body limit for r, before the body is read
// (an upload route raises it; n <= 0: none), also when the app-wide
// limit is none: it then limits r.Body itself. It reports whether r came
// through the stack. [BodyLimit] does it for a route.
func SetBodyLimit(r *http.Request, n int64) bool {
	ri := infoOf(r.Context())
	if ri == nil {
		return false
	}
	ri.bodyLimit = n
	// Without an app-wide limit the stack left the body as it was (no
	// allocation for requests that do not need one): limit it here.
	if lb, ok := r.Body.(*limitedBody); (!ok || lb.ri != ri) && n > 0 && r.Body != nil && r.Body != http.NoBody && ri.sw != nil {
		r.Body = &limitedBody{body: r.Body, ri: ri, w: ri.sw.ResponseWriter}
	}
	return true
}

// routeContexts recycles chi route contexts, as chi itself does.
var routeContexts = sync.Pool{New: func() any { return chi.NewRouteContext() }}

var (
	hdrNosniff   = []string{"nosniff"}
	hdrDeny      = []string{"DENY"}
	hdrHSTS      = []string{"max-age=63072000"}
	hdrClose     = []string{"close"}
	hdrTextPlain = []string{"text/plain; charset=utf-8"}
)

// serve serves r through the stack and next. top says that r comes
// straight from the server (App.Serve's): no router above has a route
// context in r's context, and none is looked for.
func (s *stack) serve(w http.ResponseWriter, r *http.Request, next http.Handler, top bool) {
	start := time.Now()
	// The context and the request copy that carries it are one
	// allocation (see reqState).
	st := &reqState{}
	rc := &st.ctx
	rc.parent = r.Context()
	ri := &rc.info
	ri.https, ri.bodyLimit = r.TLS != nil, s.cfg.MaxBodyBytes
	ri.remote, ri.s = r.RemoteAddr, s
	// Without trusted proxies the peer is the client, and its address is
	// parsed only if someone asks (ClientIP); the log uses RemoteAddr's text.
	if len(s.cfg.TrustedProxies) > 0 {
		ri.clientIP, ri.parsed = ri.addr(), true
	}
	if ri.parsed && s.trusted(ri.clientIP) {
		if xff := r.Header["X-Forwarded-For"]; len(xff) > 0 {
			ri.clientIP = s.forwardedFor(xff, ri.clientIP)
		}
		switch r.Header.Get("X-Forwarded-Proto") {
		case "https":
			ri.https = true
		case "http":
			ri.https = false
		}
		if id := r.Header.Get("X-Request-Id"); validRequestID(id) {
			ri.id = id
		}
	}
	if ri.id == "" {
		// Prefix (9 bytes) and sequence (at most 13 in base 36) fit idBuf;
		// the string points into it, which no one writes again.
		b := strconv.AppendUint(append(ri.idBuf[:0], s.idPrefix...), s.idSeq.Add(1), 36)
		ri.id = unsafe.String(unsafe.SliceData(b), len(b))
	}

	sw := &st.sw
	sw.ResponseWriter, sw.ri = w, ri
	ri.sw = sw
	h := w.Header()
	h["X-Content-Type-Options"] = hdrNosniff
	if ri.https {
		h["Strict-Transport-Security"] = hdrHSTS
	}
	if s.cfg.Draining != nil && s.cfg.Draining() {
		h["Connection"] = hdrClose
	}

	// A route context of our own, which a chi router below uses instead
	// of its pooled one, so the matched pattern is still there for the
	// metrics and the log once the handler returns.
	var rctx *chi.Context
	if !top {
		rctx = chi.RouteContext(rc.parent)
	}
	if rctx == nil {
		rctx = routeContexts.Get().(*chi.Context)
		rctx.Reset()
		rc.rctx = rctx // back to the pool in finish
	}
	if s.cfg.RequestTimeout > 0 {
		rc.deadline = start.Add(s.cfg.RequestTimeout)
	}
	// WithContext is inlined and its copy does not escape: the request
	// lands in st without an allocation of its own.
	st.req = *r.WithContext(rc)
	r = &st.req
	if s.metrics != nil {
		s.metrics.inFlight.Add(1)
	}
	// One deferred call for everything after the handler.
	defer s.finish(sw, r, rc, rctx, start)

	if err := s.cop.Check(r); err != nil {
		Error(sw, r, ErrCrossOrigin)
		return
	}
	if r.Body != nil && r.Body != http.NoBody && ri.bodyLimit > 0 {
		r.Body = &limitedBody{body: r.Body, ri: ri, w: w}
	}
	next.ServeHTTP(sw, r)
}

// finish recovers a panic, logs the request and records its metrics. A
// panic before the response started becomes a 500; after, the response
// can only be cut: finish panics with http.ErrAbortHandler, and net/http
// closes the connection (HTTP/1) or resets the stream (HTTP/2) without
// ending the response, so the client sees an error, not a truncated
// success. A handler's own http.ErrAbortHandler is passed on unlogged.
// Then it ends the request's deadline context, if one was made, and gives
// the route context back to the pool.
func (s *stack) finish(sw *statusWriter, r *http.Request, rc *reqContext, rctx *chi.Context, start time.Time) {
	ri := &rc.info
	v := recover()
	abort := v == http.ErrAbortHandler
	if v != nil && !abort {
		s.cfg.Logger.LogAttrs(r.Context(), slog.LevelError, "http: panic serving request",
			slog.Any("panic", v), slog.String("request_id", ri.id), slog.String("method", r.Method),
			slog.String("path", r.URL.Path), slog.Bool("response_started", sw.status != 0), slog.String("stack", string(debug.Stack())))
		if sw.status == 0 {
			abort = s.panicPage(sw, r)
		} else {
			sw.status, abort = http.StatusInternalServerError, true
		}
	}
	s.account(sw, r, ri, rctx, start)
	ri.sw = nil // the response is over: Error after the handler returned does not look at it
	sw.ResponseWriter = nil
	rc.release()
	if rc.rctx != nil {
		routeContexts.Put(rc.rctx)
	}
	if abort {
		panic(http.ErrAbortHandler) // net/http's way to abort the response
	}
}

func (s *stack) account(sw *statusWriter, r *http.Request, ri *requestInfo, rctx *chi.Context, start time.Time) {
	// One monotonic clock read (time.Now reads the wall clock too); the
	// record's time is the start's wall time plus the duration.
	took := time.Since(start)
	end := start.Add(took)
	status := sw.status
	if status == 0 {
		status = http.StatusOK
	}
	if s.metrics != nil {
		s.metrics.inFlight.Add(-1)
		s.metrics.observe(r.Method, rctx.RoutePattern(), status, took)
	}
	// Six fields; the route and the size are in the metrics. hakit's own
	// JSON handler (the default logger's) takes the line as it is and
	// writes it without a slog.Record, byte for byte what slog's JSON
	// handler would write.
	if s.json != nil {
		if s.json.Enabled(r.Context(), slog.LevelInfo) {
			_ = s.json.writeAccess(end, r.Method, r.URL.Path, status, took.Microseconds(), ri)
		}
		return
	}
	// Any other handler gets a record, straight: Logger.LogAttrs would
	// also capture the caller's program counter (runtime.Callers), which
	// costs more than formatting the line and says nothing here.
	h := s.cfg.Logger.Handler()
	if h.Enabled(r.Context(), slog.LevelInfo) {
		_ = h.Handle(r.Context(), accessRecord(end, r.Method, r.URL.Path, status, took.Microseconds(), ri))
	}
}

// panicPage answers a panic through the error page; if the page panics
// too, the default page answers, or, once the page's response started,
// panicPage returns true: the response must be cut (after the request is
// logged and counted).
func (s *stack) panicPage(sw *statusWriter, r *http.Request) (abort bool) {
	defer func() {
		if v := recover(); v != nil {
			s.cfg.Logger.LogAttrs(r.Context(), slog.LevelError, "hakit: the error page panicked", slog.Any("panic", v))
			if sw.status == 0 {
				DefaultErrorPage(sw, r, HTTPErrorOf(ErrPanic))
			} else {
				sw.status, abort = http.StatusInternalServerError, true
			}
		}
	}()
	showError(sw, r, HTTPErrorOf(ErrPanic))
	return false
}

func deny(w http.ResponseWriter, code int, msg string) {
	h := w.Header()
	h["Content-Type"] = hdrTextPlain
	h.Del("Content-Length")
	w.WriteHeader(code)
	_, _ = io.WriteString(w, msg+"\n")
}

func (s *stack) trusted(a netip.Addr) bool {
	for _, p := range s.cfg.TrustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// forwardedFor walks X-Forwarded-For from the right, past the trusted
// proxies, to the first address that is not one: the client. Everything
// left of it could have been written by the client itself.
func (s *stack) forwardedFor(values []string, peer netip.Addr) netip.Addr {
	client := peer
	for i := len(values) - 1; i >= 0; i-- {
		v := values[i]
		for v != "" {
			j := strings.LastIndexByte(v, ',')
			part := strings.TrimSpace(v[j+1:])
			v = v[:max(j, 0)]
			a, err := netip.ParseAddr(part)
			if err != nil {
				return client // garbage: stop at the last good hop
			}
			client = a.Unmap()
			if !s.trusted(client) {
				return client
			}
		}
	}
	return client
}

func validRequestID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// BodyLimit returns middleware that sets the body limit of the requests it
// handles (see SetBodyLimit; n <= 0: none), for routes that take larger
// bodies, or smaller ones; it applies whatever the app-wide limit is:
//
//	r.With(hakit.BodyLimit(64<<20)).Post("/images", upload)
func BodyLimit(n int64) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			SetBodyLimit(r, n)
			next.ServeHTTP(w, r)
		})
	}
}

// IsBodyTooLarge reports whether err (from reading a request body) means
// the body exceeded its limit; answer 413 then.
func IsBodyTooLarge(err error) bool {
	var mbe *http.MaxBytesError
	return errors.As(err, &mbe)
}

// limitedBody applies the request's body limit when it is first read, so
// a handler may still change it with SetBodyLimit. Reading past the limit
// (or a declared Content-Length above it) fails with *http.MaxBytesError,
// and the server closes the connection after the response.
type limitedBody struct {
	body io.ReadCloser
	ri   *requestInfo
	w    http.ResponseWriter // the server's, for http.MaxBytesReader
	rc   io.ReadCloser
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.rc == nil {
		if b.ri.bodyLimit > 0 {
			b.rc = http.MaxBytesReader(b.w, b.body, b.ri.bodyLimit)
		} else {
			b.rc = b.body
		}
	}
	return b.rc.Read(p)
}

func (b *limitedBody) Close() error { return b.body.Close() }

// statusWriter records the status of a response, and adds the
// headers that depend on it when the response starts: X-Request-Id on
// errors (4xx, 5xx), where a user needs it to report the problem (every
// request has it in the access log), and X-Frame-Options: DENY on HTML.
// Each response header costs the server measurably, so headers that do
// nothing for a response are left out.
type statusWriter struct {
	http.ResponseWriter
	ri     *requestInfo
	status int // 0 until the response starts
}

// start is called once, before the status line goes out.
func (w *statusWriter) start(code int, body []byte) {
	w.status = code
	h := w.Header()
	if code >= 400 {
		h["X-Request-Id"] = []string{w.ri.id}
	}
	ct, ok := h["Content-Type"]
	if !ok && body != nil && mayBeHTML(body) {
		// Sniff as net/http would, so the HTML check sees the type; net/http
		// then does not sniff again.
		ct = sniffed(http.DetectContentType(body))
		h["Content-Type"] = ct
	}
	if len(ct) > 0 && strings.HasPrefix(ct[0], "text/html") {
		if _, set := h["X-Frame-Options"]; !set { // a page meant to be framed says so
			h["X-Frame-Options"] = hdrDeny
		}
	}
}

// mayBeHTML reports whether http.DetectContentType could call a body that
// starts with b HTML: each of its HTML signatures starts with '<' after
// leading white space. A body that starts otherwise is left to net/http
// to sniff (its type is not HTML), which costs a header less than setting
// it here. All white space (or nothing) could still be followed by HTML:
// sniffed here, from this first write, as before.
func mayBeHTML(b []byte) bool {
	for _, c := range b {
		switch c {
		case '\t', '\n', '\x0c', '\r', ' ':
			continue
		}
		return c == '<'
	}
	return true
}

// sniffedTypes holds one header value per type DetectContentType
// returns (a fixed set), so a sniffed response does not allocate one.
var sniffedTypes sync.Map // string -> []string

func sniffed(ct string) []string {
	if v, ok := sniffedTypes.Load(ct); ok {
		return v.([]string)
	}
	v, _ := sniffedTypes.LoadOrStore(ct, []string{ct})
	return v.([]string)
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 && code >= 200 {
		w.start(code, nil)
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.start(http.StatusOK, b)
	}
	return w.ResponseWriter.Write(b)
}

// WriteString avoids a copy for io.WriteString.
func (w *statusWriter) WriteString(s string) (int, error) {
	if w.status == 0 {
		// DetectContentType reads at most 512 bytes and neither keeps nor
		// writes them: it may see the string's bytes without a copy.
		w.start(http.StatusOK, unsafe.Slice(unsafe.StringData(s), min(len(s), 512)))
	}
	return io.WriteString(w.ResponseWriter, s)
}

// Flush supports streaming handlers.
func (w *statusWriter) Flush() {
	if w.status == 0 {
		w.start(http.StatusOK, nil)
	}
	_ = http.NewResponseController(w.ResponseWriter).Flush()
}

// Unwrap lets http.ResponseController reach the server's writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
