package uploads

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"math"
	"mime"
	"mime/multipart"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"

	"hakit.dev/internal/metricset"
)

// DefaultMinRate is Config.MinRate's default, in bytes per second.
const DefaultMinRate = 16 << 10

// Config configures a Store. Bucket is required.
type Config struct {
	// Bucket keeps the files: an *S3Bucket, or a DiskBucket in development.
	Bucket Bucket
	// Prefix is put before every key, e.g. "uploads/". Defaults to none.
	Prefix string
	// Name tells this Store's metrics from other Stores' in one registry
	// (the store label). Defaults to Prefix without its slashes, or
	// "default" if that is empty.
	Name string
	// MaxSize is the largest file accepted (413 above). Defaults to
	// 100 MiB.
	MaxSize int64
	// MaxFormSize bounds the other form fields of an upload request
	// together, names and values (413 above). Defaults to 1 MiB.
	MaxFormSize int64
	// AllowedTypes are the content types accepted, as sniffed from the
	// file's first bytes (never as the client declares them; 415 for
	// others). Defaults to JPEG, PNG, GIF, WebP and PDF.
	AllowedTypes []string
	// Field is the form field the file comes in. Defaults to "file".
	Field string
	// MinRate and Window bound uploads and downloads by progress instead
	// of by time: in every Window of time the server spends waiting on the
	// client (for the request body's next bytes, or for the client to take
	// the response's), at least MinRate × Window bytes must pass, or the
	// transfer is cut with ErrTooSlow (408 for an upload; the upload
	// aborted). A transfer that keeps that pace may take as long as it
	// needs; one that stops is cut within one Window. Time the server
	// spends elsewhere (sending to S3, waiting for a part buffer, which
	// S3Config.BufferWait bounds) does not count. MinRate defaults to
	// 16 KiB/s (128 kbit/s, which a poor mobile uplink still gives) and
	// Window to 30s; a negative MinRate turns the bound off. The minimum
	// rate also bounds how long a slow client holds part memory: at
	// 16 KiB/s it fills a 256 KiB chunk, and so asks for the next (which
	// the pool may refuse), within a Window.
	MinRate int64
	Window  time.Duration
	// ErrorHandler answers the errors the Store answers by itself —
	// Serve's before the response starts: 404 (no such object, or a key
	// no object can have), 416 (with Content-Range), 502 (the bucket
	// failed), 503 (the request's deadline) — and those given to
	// [Store.Error]. It writes the whole answer: the status for err (see
	// [Status]) and a body that does not show err, whose text can carry
	// the bucket's own answers (err is for the log). Headers the answer
	// needs are set before it is called (Content-Range on a 416,
	// Retry-After on ErrBusy). Defaults to [PlainError]; hakit's
	// App.Uploads sets hakit.Error, so these errors get the app's error
	// page (HTML for browsers, problem details for JSON clients) and are
	// logged as the app's other errors are.
	ErrorHandler func(w http.ResponseWriter, r *http.Request, err error)
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Store receives uploads into a Bucket and serves them back safely. It is
// a prometheus.Collector of its metrics (hakit_uploads_*, labelled
// store=Config.Name): register it where the app's metrics go.
type Store struct {
	cfg       Config
	log       *slog.Logger
	unbounded sync.Once // warned that transfers cannot be bounded
	metrics   metricset.Set
	bytes     prometheus.Counter
	uploads   *prometheus.CounterVec
	took      prometheus.Histogram
}

// New returns a Store.
func New(cfg Config) (*Store, error) {
	if cfg.Bucket == nil {
		return nil, errors.New("uploads: Config.Bucket is nil")
	}
	if cfg.MaxSize <= 0 {
		cfg.MaxSize = 100 << 20
	}
	if cfg.MaxFormSize <= 0 {
		cfg.MaxFormSize = 1 << 20
	}
	if len(cfg.AllowedTypes) == 0 {
		cfg.AllowedTypes = []string{"image/jpeg", "image/png", "image/gif", "image/webp", "application/pdf"}
	}
	if cfg.Field == "" {
		cfg.Field = "file"
	}
	if cfg.MinRate == 0 {
		cfg.MinRate = DefaultMinRate
	}
	if cfg.Window <= 0 {
		cfg.Window = 30 * time.Second
	}
	if cfg.Name == "" {
		cfg.Name = strings.Trim(cfg.Prefix, "/")
	}
	if cfg.Name == "" {
		cfg.Name = "default"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.ErrorHandler == nil {
		cfg.ErrorHandler = PlainError
	}
	labels := prometheus.Labels{"store": cfg.Name}
	st := &Store{cfg: cfg, log: cfg.Logger,
		bytes: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "hakit", Subsystem: "uploads", Name: "bytes_total",
			Help: "Bytes of accepted uploads.", ConstLabels: labels}),
		uploads: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "hakit", Subsystem: "uploads", Name: "total",
			Help:        "Uploads by outcome: stored, too_large, unsupported_type, too_slow, busy (no part memory: 503), aborted (client gone, bad request, deadline, store failed).",
			ConstLabels: labels}, []string{"outcome"}),
		took: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "hakit", Subsystem: "uploads", Name: "duration_seconds",
			Help: "Time to receive and store an upload.", ConstLabels: labels, Buckets: []float64{.01, .05, .1, .5, 1, 5, 10, 30, 60, 300}}),
	}
	st.metrics = metricset.Set{st.bytes, st.uploads, st.took}
	return st, nil
}

// Describe implements prometheus.Collector.
func (s *Store) Describe(ch chan<- *prometheus.Desc) { s.metrics.Describe(ch) }

// Collect implements prometheus.Collector.
func (s *Store) Collect(ch chan<- prometheus.Metric) { s.metrics.Collect(ch) }

// Bucket returns the Store's bucket.
func (s *Store) Bucket() Bucket { return s.cfg.Bucket }

// Stored is a file the Store accepted.
type Stored struct {
	Key         string `json:"key"`          // generated; never the client's name
	Name        string `json:"name"`         // the client's file name, sanitised
	ContentType string `json:"content_type"` // sniffed
	Size        int64  `json:"size"`
	SHA256      string `json:"sha256"` // hex
	// Form holds the request's other form fields (parts without a file
	// name), from before and after the file, in the order sent. Not
	// encoded in JSON: it is the client's input, not the file's.
	Form url.Values `json:"-"`
}

// Receive streams the file in the request's multipart body (form field
// Config.Field) into the bucket and returns it, with the other form fields.
// Nothing is buffered beyond the bucket's part buffers, whatever the
// file's size. The content type is sniffed from the first 512 bytes and
// must be allowed; the size is counted as it streams; the SHA-256 is
// computed on the way. Form fields may come before or after the file (up
// to Config.MaxFormSize together); other files in the request are read
// past and dropped. On any failure — too large, wrong type, too slow,
// client gone, bucket error, a bad field after the file, no part memory
// (ErrBusy) — nothing is left in the bucket. [Status] maps the error to
// an HTTP status; [Store.Error] answers it through Config.ErrorHandler,
// as Serve answers its own errors.
//
// w is used to set the connection's read deadline, which bounds the
// upload by progress (Config.MinRate) and by the request context's
// deadline, replacing the server's ReadTimeout for this request, and, on
// ErrBusy, its Retry-After header ([RetryAfter]), for the 503 the caller
// answers; nothing is written to it. With a nil w, or one that cannot set deadlines (see
// http.ResponseController), the upload is not bounded while the server
// waits on the client.
//
// Call it before reading r.Body otherwise, and with a body limit above
// MaxSize (hakit.BodyLimit) if the app has a smaller one.
func (s *Store) Receive(w http.ResponseWriter, r *http.Request) (st *Stored, err error) {
	start := time.Now()
	ctx := r.Context()
	bound := s.bound(ctx, w, false)
	defer func() {
		bound.finish(err != nil)
		if d := RetryAfter(err); d > 0 && w != nil {
			w.Header().Set("Retry-After", strconv.FormatInt(int64((d+time.Second-1)/time.Second), 10))
		}
	}()
	body := io.Reader(r.Body)
	if bound != nil {
		body = &progressReader{r: r.Body, p: bound}
	}
	mr, err := multipartReader(r.Header.Get("Content-Type"), body)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadRequest, err)
	}
	form := url.Values{}
	formSize := int64(0)
	for {
		part, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, s.discard(ctx, st, s.readFailure(bound, err))
		}
		switch {
		case part.FileName() == "" && part.FormName() != "":
			v, err := io.ReadAll(io.LimitReader(part, s.cfg.MaxFormSize-formSize+1))
			if err != nil {
				return nil, s.discard(ctx, st, s.readFailure(bound, err))
			}
			formSize += int64(len(part.FormName()) + len(v))
			if formSize > s.cfg.MaxFormSize {
				return nil, s.discard(ctx, st, s.outcome(fmt.Errorf("%w: form fields over %d bytes", ErrTooLarge, s.cfg.MaxFormSize), "too_large"))
			}
			form.Add(part.FormName(), string(v))
		case st == nil && part.FormName() == s.cfg.Field && part.FileName() != "":
			if st, err = s.store(ctx, part, bound, r.ContentLength); err != nil {
				return nil, err
			}
		}
		if _, err := io.Copy(io.Discard, part); err != nil { // what is left of it: a skipped file
			return nil, s.discard(ctx, st, s.readFailure(bound, err))
		}
	}
	if st == nil {
		return nil, ErrNoFile
	}
	st.Form = form
	s.uploads.WithLabelValues("stored").Inc()
	s.bytes.Add(float64(st.Size))
	s.took.Observe(time.Since(start).Seconds())
	return st, nil
}

// readFailure is the error for a failed read of the request body: the
// progress bound's, if it cut the read, ErrTooLarge past the app's body
// limit (http.MaxBytesReader), else a bad request.
func (s *Store) readFailure(bound *progress, err error) error {
	if cause := bound.cause(); cause != nil {
		return s.outcome(cause, outcomeOf(cause))
	}
	if mbe := (*http.MaxBytesError)(nil); errors.As(err, &mbe) {
		return s.outcome(fmt.Errorf("%w: the request body is over the limit of %d bytes", ErrTooLarge, mbe.Limit), "too_large")
	}
	return s.outcome(fmt.Errorf("%w: reading the request: %v", ErrBadRequest, err), "aborted")
}

func outcomeOf(err error) string {
	if errors.Is(err, ErrTooSlow) {
		return "too_slow"
	}
	return "aborted"
}

// discard deletes st (stored before the request failed), if any, and
// returns err.
func (s *Store) discard(ctx context.Context, st *Stored, err error) error {
	if st == nil {
		return err
	}
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if derr := s.cfg.Bucket.Delete(dctx, st.Key); derr != nil {
		s.log.Error("uploads: could not delete the file of a failed upload", "key", st.Key, "err", derr)
	}
	return err
}

// multipartReader is r.MultipartReader on body, with a large read
// buffer: the multipart package reads its input 4 KiB at a time, which on
// a raw request body means a system call per 4 KiB.
func multipartReader(contentType string, body io.Reader) (*multipart.Reader, error) {
	mt, params, err := mime.ParseMediaType(contentType)
	if err != nil || (mt != "multipart/form-data" && mt != "multipart/mixed") {
		return nil, errors.New("want a multipart/form-data body")
	}
	boundary := params["boundary"]
	if boundary == "" {
		return nil, errors.New("no multipart boundary")
	}
	return multipart.NewReader(bufio.NewReaderSize(body, 256<<10), boundary), nil
}

func (s *Store) outcome(err error, o string) error {
	s.uploads.WithLabelValues(o).Inc()
	return err
}

// store sniffs, then streams one file part into the bucket. bodyLen is
// the request's Content-Length (-1 if unknown).
func (s *Store) store(ctx context.Context, part *multipart.Part, bound *progress, bodyLen int64) (*Stored, error) {
	head, ct, err := readHead(part)
	if err != nil {
		return nil, s.readFailure(bound, err)
	}
	if !s.allowed(ct) {
		return nil, s.outcome(fmt.Errorf("%w: %s (allowed: %s)", ErrUnsupportedType, ct, strings.Join(s.cfg.AllowedTypes, ", ")), "unsupported_type")
	}
	st := &Stored{Key: s.cfg.Prefix + newKey(), Name: SanitizeName(part.FileName()), ContentType: ct}
	h := sha256.New()
	body := &countingReader{r: io.MultiReader(bytes.NewReader(head), part), h: h, limit: s.cfg.MaxSize, bodyLen: bodyLen}
	meta := map[string]string{"original-name": asciiName(st.Name)}
	if err := s.cfg.Bucket.Upload(ctx, st.Key, body, ct, meta); err != nil {
		switch {
		case errors.Is(err, ErrTooLarge):
			return nil, s.outcome(err, "too_large")
		case errors.Is(err, ErrBusy):
			return nil, s.outcome(fmt.Errorf("%w (after %d bytes of the file)", err, body.n), "busy")
		case bound.cause() != nil, body.readErr != nil:
			return nil, s.readFailure(bound, body.readErr)
		case ctx.Err() != nil && errors.Is(err, context.DeadlineExceeded):
			return nil, s.outcome(fmt.Errorf("uploads: the request's deadline passed after %d bytes of the file, while storing it (an upload route needs a long timeout or none): %w", body.n, err), "aborted")
		}
		return nil, s.outcome(err, "aborted")
	}
	st.Size = body.n
	st.SHA256 = hex.EncodeToString(h.Sum(nil))
	return st, nil
}

// countingReader counts, hashes and limits what passes through it.
type countingReader struct {
	r       io.Reader
	h       hash.Hash
	n       int64
	limit   int64
	bodyLen int64 // the request's Content-Length, -1 if unknown
	readErr error
}

// maxLeft returns at most how many bytes of the file are left to read:
// the file is part of the request body, so no more than its length less
// what was read of the file, and no more than one byte past the limit.
// S3Bucket uses it not to send early a part that cannot be whole.
func (c *countingReader) maxLeft() int64 {
	left := c.limit - c.n
	if left < math.MaxInt64 {
		left++
	}
	if c.bodyLen >= 0 {
		left = min(left, c.bodyLen-c.n)
	}
	return max(left, 0)
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	c.h.Write(p[:n])
	if c.n > c.limit {
		c.readErr = fmt.Errorf("%w: more than %d bytes", ErrTooLarge, c.limit)
		return n, c.readErr
	}
	if err != nil && err != io.EOF {
		c.readErr = err
	}
	return n, err
}

// readHead reads the first 512 bytes of r (all of it if shorter) and
// sniffs their content type.
func readHead(r io.Reader) (head []byte, ct string, err error) {
	head = make([]byte, 512)
	n, err := io.ReadFull(r, head)
	if err != nil && err != io.ErrUnexpectedEOF && err != io.EOF {
		return nil, "", err
	}
	head = head[:n]
	return head, sniff(head), nil
}

// allowed reports whether content type ct is in Config.AllowedTypes.
func (s *Store) allowed(ct string) bool { return slices.Contains(s.cfg.AllowedTypes, ct) }

// sniff returns the content type of a file's first bytes, without
// parameters.
func sniff(head []byte) string {
	ct := http.DetectContentType(head)
	if mt, _, err := mime.ParseMediaType(ct); err == nil {
		return mt
	}
	return ct
}

// newKey returns a random key: 128 bits, hex, in a two-level fan-out.
func newKey() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	h := hex.EncodeToString(b[:])
	return h[:2] + "/" + h
}

// SanitizeName keeps a client's file name as something safe to store and
// show: the last path element only (no ../ escapes, either slash), no
// control or format characters (no bidirectional overrides that disguise
// "evil\u202egnp.exe"), normalised spaces, at most 255 bytes, "file" if
// nothing is left.
func SanitizeName(name string) string {
	name = strings.ReplaceAll(name, "\\", "/")
	name = path.Base("/" + name)
	var b strings.Builder
	for _, r := range name {
		switch {
		case r == '\t' || r == ' ' || unicode.Is(unicode.Zs, r):
			b.WriteRune(' ')
		case r == utf8.RuneError, unicode.IsControl(r), unicode.Is(unicode.Cf, r):
		default:
			b.WriteRune(r)
		}
	}
	out := strings.TrimSpace(b.String())
	for len(out) > 255 {
		_, size := utf8.DecodeLastRuneInString(out)
		out = out[:len(out)-size]
	}
	if out == "" || out == "." || out == ".." || out == "/" {
		return "file"
	}
	return out
}

// asciiName makes a name fit an S3 metadata value (US-ASCII).
func asciiName(name string) string {
	if isASCII(name) {
		return name
	}
	return mime.QEncoding.Encode("utf-8", name)
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 || s[i] < 0x20 {
			return false
		}
	}
	return true
}

// Status maps an error from Receive, Confirm or Serve to the HTTP status to
// answer with: 413 too large, 415 type not allowed, 400 bad request or no
// file, 404, 416, 408 too slow, 503 no part memory (ErrBusy; see
// [RetryAfter]) or the request's deadline or cancellation, 502 the bucket
// failed.
func Status(err error) int {
	switch {
	case err == nil:
		return http.StatusOK
	case errors.Is(err, ErrTooLarge):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, ErrUnsupportedType):
		return http.StatusUnsupportedMediaType
	case errors.Is(err, ErrNoFile), errors.Is(err, ErrBadRequest):
		return http.StatusBadRequest
	case errors.Is(err, ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, ErrRangeNotSatisfiable):
		return http.StatusRequestedRangeNotSatisfiable
	case errors.Is(err, ErrTooSlow):
		return http.StatusRequestTimeout
	case errors.Is(err, ErrBusy):
		return http.StatusServiceUnavailable
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return http.StatusServiceUnavailable
	}
	return http.StatusBadGateway // the bucket failed
}

// safeInline are the types a browser may show in place: images that
// cannot carry script. SVG can, so it is not here.
var safeInline = []string{"image/jpeg", "image/png", "image/gif", "image/webp"}

// dispositionFor returns the Content-Disposition type for content of type
// ct: inline for a safe image type, attachment for anything else (stored
// XSS).
func dispositionFor(ct string) string {
	if mt, _, _ := mime.ParseMediaType(ct); slices.Contains(safeInline, mt) {
		return "inline"
	}
	return "attachment"
}

// Serve streams the object at key to w, with Range and If-None-Match
// support. It always sends X-Content-Type-Options: nosniff and a sandboxing
// Content-Security-Policy, and Content-Disposition: attachment for
// anything but a safe image type, so an uploaded HTML or SVG file is
// downloaded, never rendered on the app's origin (stored XSS). name, if
// given, is the download's file name.
//
// The body is bounded by progress like an upload (Config.MinRate over
// Config.Window of waiting on the client; ErrTooSlow) and by the request
// context's deadline, through the connection's write deadline.
//
// Serve always answers the request itself: an error before the body (no
// such object, a key no object can have, a bad range, a bucket failure)
// is answered through Config.ErrorHandler (by default [PlainError]: the
// status [Status] gives, its status text as plain text); an error in the
// body cuts the response short. The error it returns is for logging:
// write nothing more to w.
func (s *Store) Serve(w http.ResponseWriter, r *http.Request, key, name string) (err error) {
	h := w.Header()
	h.Set("X-Content-Type-Options", "nosniff")
	var o *Object
	if err = checkKey(key); err == nil {
		o, err = s.cfg.Bucket.Open(r.Context(), key, r.Header.Get("Range"), r.Header.Get("If-None-Match"))
	}
	if err != nil {
		if errors.Is(err, ErrRangeNotSatisfiable) {
			if st, serr := s.cfg.Bucket.Stat(r.Context(), key); serr == nil {
				h.Set("Content-Range", "bytes */"+strconv.FormatInt(st.Size, 10))
			}
		}
		s.cfg.ErrorHandler(w, r, err)
		return err
	}
	// The object's own answer: sandboxed, in case it is a page or a
	// script. (An error page is the app's, not the object.)
	h.Set("Content-Security-Policy", "default-src 'none'; sandbox")
	if o.ETag != "" {
		h.Set("ETag", o.ETag)
	}
	if o.NotModified {
		w.WriteHeader(http.StatusNotModified)
		return nil
	}
	defer o.Body.Close()
	ct := o.ContentType
	if ct == "" {
		ct = "application/octet-stream"
	}
	h.Set("Content-Type", ct)
	h.Set("Accept-Ranges", "bytes")
	disposition := dispositionFor(ct)
	if name = SanitizeName(name); name != "file" || disposition == "attachment" {
		h.Set("Content-Disposition", mime.FormatMediaType(disposition, map[string]string{"filename": name}))
	} else {
		h.Set("Content-Disposition", disposition)
	}
	if !o.LastModified.IsZero() {
		h.Set("Last-Modified", o.LastModified.UTC().Format(http.TimeFormat))
	}
	h.Set("Content-Length", strconv.FormatInt(o.Length, 10))
	code := http.StatusOK
	if o.ContentRange != "" {
		h.Set("Content-Range", o.ContentRange)
		code = http.StatusPartialContent
	}
	w.WriteHeader(code)
	if r.Method == http.MethodHead {
		return nil
	}
	bound := s.bound(r.Context(), w, true)
	defer func() { bound.finish(err != nil) }()
	if bound == nil {
		_, err = io.Copy(w, o.Body)
		return wrapServe(key, err)
	}
	pw := &progressWriter{w: w, p: bound}
	if _, err = io.Copy(pw, o.Body); err == nil {
		err = pw.flush() // the last bytes too, within the bound
	}
	return wrapServe(key, err)
}

func wrapServe(key string, err error) error {
	if err != nil {
		return fmt.Errorf("uploads: serving %s: %w", key, err)
	}
	return nil
}
