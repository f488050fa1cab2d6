package hakit

import (
	"context"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

// JSONHandler is a slog.Handler that writes exactly what
// slog.NewJSONHandler writes with the same writer and options, one JSON
// object per line, and lets [Stack] write its access-log line itself:
// without a slog.Record, appended to a pooled buffer and written with one
// Write, byte for byte the line slog's handler would write for the same
// record. It is the handler of hakit's default logger (Config.Logger).
//
// The shortcut is taken only where it cannot differ: with no
// HandlerOptions.AddSource and no ReplaceAttr, and only on the handler
// itself. WithAttrs and WithGroup return slog's own handler (writing
// to the same writer, one line at a time), whose records the stack
// formats through slog. Every other record, and every other
// slog.Handler, goes through slog as usual.
type JSONHandler struct {
	inner *slog.JSONHandler
	out   *lockedWriter
	fast  bool      // no AddSource, no ReplaceAttr: writeAccess may write
	bufs  sync.Pool // *[]byte: the access-log lines' buffers
	// second is the last second writeAccess formatted: the lines of one
	// second share its date, time and zone, and differ in the fraction.
	second atomic.Pointer[formattedSecond]
}

// formattedSecond is a second of a location in RFC 3339: before the
// fraction ("2006-01-02T15:04:05") and after it ("Z07:00"). Not changed
// once published.
type formattedSecond struct {
	unix       int64
	loc        *time.Location
	date, zone []byte
}

// appendTime appends t as time.RFC3339Nano formats it; false, and b as it
// was, for a time outside years 0 to 9999, which slog writes as an error.
func (h *JSONHandler) appendTime(b []byte, t time.Time) ([]byte, bool) {
	fs := h.second.Load()
	if fs == nil || fs.unix != t.Unix() || fs.loc != t.Location() {
		// Within one second of one location the zone's offset and name
		// cannot change: zone transitions fall on whole seconds. The year
		// cannot either, and is checked here, once a second.
		if y := t.Year(); y < 0 || y >= 10000 {
			return b, false
		}
		whole := t.Truncate(time.Second)
		fs = &formattedSecond{unix: t.Unix(), loc: t.Location(),
			date: whole.AppendFormat(nil, "2006-01-02T15:04:05"), zone: whole.AppendFormat(nil, "Z07:00")}
		h.second.Store(fs)
	}
	b = append(b, fs.date...)
	if ns := t.Nanosecond(); ns != 0 {
		// ".999999999": nine digits, trailing zeros dropped.
		var d [10]byte
		d[0] = '.'
		for i := 9; i >= 1; i-- {
			d[i] = byte('0' + ns%10)
			ns /= 10
		}
		n := 10
		for d[n-1] == '0' {
			n--
		}
		b = append(b, d[:n]...)
	}
	return append(b, fs.zone...), true
}

// NewJSONHandler returns a [JSONHandler] writing to w with opts (nil:
// slog's defaults), as slog.NewJSONHandler(w, opts) would.
func NewJSONHandler(w io.Writer, opts *slog.HandlerOptions) *JSONHandler {
	if opts == nil {
		opts = &slog.HandlerOptions{}
	}
	out := &lockedWriter{w: w}
	return &JSONHandler{inner: slog.NewJSONHandler(out, opts), out: out,
		fast: !opts.AddSource && opts.ReplaceAttr == nil}
}

// lockedWriter makes the lines of slog's handler and the stack's own one
// Write at a time, so they never interleave.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// Enabled reports whether the handler handles records at level l (the
// options' Level, info by default).
func (h *JSONHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.inner.Enabled(ctx, l)
}

// Handle writes r as one JSON line, as slog's JSON handler does.
func (h *JSONHandler) Handle(ctx context.Context, r slog.Record) error {
	return h.inner.Handle(ctx, r)
}

// WithAttrs returns slog's JSON handler with attrs added, writing to the
// same writer.
func (h *JSONHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	if len(attrs) == 0 {
		return h
	}
	return h.inner.WithAttrs(attrs)
}

// WithGroup returns slog's JSON handler with the group opened, writing
// to the same writer.
func (h *JSONHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	return h.inner.WithGroup(name)
}

// writeAccess writes the access-log line of a request: the record
// {time t, level INFO, message "http request", method, path, status,
// took_us, request_id, client} as slog's JSON handler formats it. The
// caller checked Enabled.
func (h *JSONHandler) writeAccess(t time.Time, method, path string, status int, tookUS int64, ri *requestInfo) error {
	t = t.Round(0) // as slog does: no monotonic reading
	bp, _ := h.bufs.Get().(*[]byte)
	if bp == nil {
		b := make([]byte, 0, 256)
		bp = &b
	}
	b, ok := h.appendTime(append((*bp)[:0], `{"time":"`...), t)
	if !ok {
		// slog writes an error in place of such a time: let it.
		h.bufs.Put(bp)
		return h.inner.Handle(context.Background(), accessRecord(t, method, path, status, tookUS, ri))
	}
	b = append(b, `","level":"INFO","msg":"http request","method":"`...)
	b = appendJSONString(b, method)
	b = append(b, `","path":"`...)
	b = appendJSONString(b, path)
	b = append(b, `","status":`...)
	if status >= 100 && status <= 999 {
		b = append(b, byte('0'+status/100), byte('0'+status/10%10), byte('0'+status%10))
	} else {
		b = strconv.AppendInt(b, int64(status), 10)
	}
	b = append(b, `,"took_us":`...)
	b = strconv.AppendInt(b, tookUS, 10)
	b = append(b, `,"request_id":"`...)
	b = appendJSONString(b, ri.id)
	b = append(b, `","client":"`...)
	n := len(b)
	b = ri.appendClient(b)
	if !jsonSafe(b[n:]) {
		// A zone with odd bytes in it: escape it as slog would.
		b = appendJSONString(b[:n], string(b[n:]))
	}
	b = append(b, "\"}\n"...)
	_, err := h.out.Write(b)
	if cap(b) <= 4<<10 { // a long path's buffer is not kept
		*bp = b
		h.bufs.Put(bp)
	}
	return err
}

// accessRecord is the access-log line as a slog.Record, for handlers
// other than a fast JSONHandler.
func accessRecord(t time.Time, method, path string, status int, tookUS int64, ri *requestInfo) slog.Record {
	rec := slog.NewRecord(t, slog.LevelInfo, "http request", 0)
	rec.AddAttrs(slog.String("method", method), slog.String("path", path), slog.Int("status", status),
		slog.Int64("took_us", tookUS), slog.String("request_id", ri.id), slog.String("client", ri.clientText()))
	return rec
}

// jsonSafe reports whether b needs no escaping in a JSON string.
func jsonSafe(b []byte) bool {
	for _, c := range b {
		if c < 0x20 || c == '"' || c == '\\' || c >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s escaped for a JSON string, without quotes,
// exactly as log/slog's JSON handler escapes strings (encoding/json's
// rules without HTML escaping: control characters, quote and backslash
// escaped, invalid UTF-8 as \ufffd, U+2028 and U+2029 escaped).
func appendJSONString(b []byte, s string) []byte {
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '\\', '"':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	return append(b, s[start:]...)
}
