package hakit_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"

	"hakit.dev/hakit"
)

// accessLines serves one request through a stack logging to log and
// returns the lines written to out.
func accessLines(t *testing.T, log *slog.Logger, out *bytes.Buffer) []map[string]any {
	t.Helper()
	mw, err := hakit.Stack(hakit.StackConfig{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	h := mw(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") }))
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/x?q=1", nil))
	var lines []map[string]any
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		lines = append(lines, m)
	}
	return lines
}

// hakit's JSON handler honours its level, and the attributes and groups
// of a logger made from it, as slog's own would.
func TestJSONHandlerAccessLogLevelAndAttrs(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	if lines := accessLines(t, slog.New(hakit.NewJSONHandler(&out, &slog.HandlerOptions{Level: slog.LevelWarn})), &out); len(lines) != 0 {
		t.Errorf("level warn: the access log wrote %v", lines)
	}
	out.Reset()
	lines := accessLines(t, slog.New(hakit.NewJSONHandler(&out, nil)).With("app", "shop").WithGroup("g"), &out)
	if len(lines) != 1 {
		t.Fatalf("lines %v, want one", lines)
	}
	g, _ := lines[0]["g"].(map[string]any)
	if lines[0]["app"] != "shop" || g == nil || g["path"] != "/x" || g["status"] != 200.0 || g["client"] != "192.0.2.1" {
		t.Errorf("a logger With attrs and a group: %v", lines[0])
	}
	out.Reset()
	rename := func(_ []string, a slog.Attr) slog.Attr {
		if a.Key == "path" {
			a.Key = "uri"
		}
		return a
	}
	lines = accessLines(t, slog.New(hakit.NewJSONHandler(&out, &slog.HandlerOptions{ReplaceAttr: rename})), &out)
	if len(lines) != 1 || lines[0]["uri"] != "/x" || lines[0]["path"] != nil {
		t.Errorf("ReplaceAttr is not applied to the access log: %v", lines)
	}
	out.Reset()
	lines = accessLines(t, slog.New(hakit.NewJSONHandler(&out, nil)), &out)
	want := []string{"time", "level", "msg", "method", "path", "status", "took_us", "request_id", "client"}
	if len(lines) != 1 || len(lines[0]) != len(want) || lines[0]["msg"] != "http request" || lines[0]["level"] != "INFO" {
		t.Fatalf("the access line: %v, want the fields %v", lines, want)
	}
	for _, k := range want {
		if _, ok := lines[0][k]; !ok {
			t.Errorf("the access line has no %q: %v", k, lines[0])
		}
	}
}

// unsafeWriter is a writer that is not safe for concurrent use: the race
// detector sees two Writes at once.
type unsafeWriter struct{ lines [][]byte }

func (w *unsafeWriter) Write(p []byte) (int, error) {
	w.lines = append(w.lines, bytes.Clone(p))
	return len(p), nil
}

// The access log's own lines and the app's lines through slog never
// interleave: one Write each, one at a time, also from a logger With
// attrs.
func TestJSONHandlerLinesDoNotInterleave(t *testing.T) {
	t.Parallel()
	w := &unsafeWriter{}
	log := slog.New(hakit.NewJSONHandler(w, nil))
	mw, err := hakit.Stack(hakit.StackConfig{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	h := mw(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		log.Info("in handler", "n", 1)
		log.With("a", "b").Info("with attrs")
	}))
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 50 {
				h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil))
			}
		})
	}
	wg.Wait()
	if len(w.lines) != 4*50*3 {
		t.Fatalf("%d writes, want %d", len(w.lines), 4*50*3)
	}
	for _, l := range w.lines {
		if !json.Valid(l) || bytes.Count(l, []byte("\n")) != 1 {
			t.Fatalf("not one JSON line: %q", l)
		}
	}
}

// reuseWriter is a ResponseWriter that allocates nothing per request.
type reuseWriter struct{ h http.Header }

func (w *reuseWriter) Header() http.Header               { return w.h }
func (w *reuseWriter) Write(b []byte) (int, error)       { return len(b), nil }
func (w *reuseWriter) WriteHeader(int)                   {}
func (w *reuseWriter) WriteString(s string) (int, error) { return len(s), nil }

// The stack allocates once per request (its reqState) with hakit's JSON
// handler, the access log and the metrics on; a change that adds an
// allocation fails here.
func TestStackAllocations(t *testing.T) {
	var out bytes.Buffer
	mw, err := hakit.Stack(hakit.StackConfig{Logger: slog.New(hakit.NewJSONHandler(&out, nil)),
		Registerer: prometheus.NewRegistry(), RequestTimeout: 30 * time.Second, MaxBodyBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	r := chi.NewRouter()
	r.Get("/hello", func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "hello, world\n") })
	h := mw(r)
	req := httptest.NewRequest("GET", "/hello", nil)
	w := &reuseWriter{h: http.Header{}}
	h.ServeHTTP(w, req) // the metrics' child, the pools
	allocs := testing.AllocsPerRun(200, func() {
		clear(w.h)
		out.Reset()
		h.ServeHTTP(w, req)
	})
	want := 1.0
	if raceEnabled {
		want = 2 // the pools' objects sometimes made anew (race_on_test.go)
	}
	if allocs > want {
		t.Errorf("%.1f allocations per request, want %.0f", allocs, want)
	}
	if !strings.Contains(out.String(), `"path":"/hello","status":200`) {
		t.Errorf("no access line: %q", out.String())
	}
}

// BenchmarkStackJSON is BenchmarkStack with hakit's JSON handler (the
// default logger's), whose access-log line skips slog.Record.
func BenchmarkStackJSON(b *testing.B) {
	mw, err := hakit.Stack(hakit.StackConfig{Logger: slog.New(hakit.NewJSONHandler(io.Discard, nil)),
		Registerer: prometheus.NewRegistry(), RequestTimeout: 30 * time.Second, MaxBodyBytes: 1 << 20})
	if err != nil {
		b.Fatal(err)
	}
	benchHello(b, mw)
}
