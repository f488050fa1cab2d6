package hakit_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"

	"hakit.dev/hakit"
)

// The request histogram has prometheus' classic form: cumulative buckets
// with "le" upper bounds inclusive, +Inf equal to _count, the sum in
// seconds, one series per method, route pattern and code, unknown methods
// as OTHER and unmatched paths as "unmatched"; and it counts every request
// of many at once.
func TestRequestDurationHistogram(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	mw, err := hakit.Stack(hakit.StackConfig{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	r := chi.NewRouter()
	r.Get("/sleep/{ms}", func(w http.ResponseWriter, r *http.Request) {
		d, _ := time.ParseDuration(chi.URLParam(r, "ms") + "ms")
		time.Sleep(d) // the duration to be measured, not a wait for something
		_, _ = io.WriteString(w, "ok")
	})
	r.HandleFunc("/code/{n}", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(chi.URLParam(r, "n"))
		w.WriteHeader(n)
	})
	h := mw(r)
	serve := func(method, path string) {
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(method, path, nil))
	}
	serve("GET", "/sleep/0")
	serve("GET", "/sleep/3")  // above 2.5 ms: not in the 0.001 or 0.0025 buckets
	serve("GET", "/sleep/30") // above 25 ms
	serve("PURGE", "/nowhere")
	// Series of one route made by requests at once: each method and code
	// its own, none lost.
	const n = 50
	methods, codes := []string{"GET", "POST", "DELETE"}, []string{"200", "201", "418", "503"}
	var wg sync.WaitGroup
	for _, m := range methods {
		for _, c := range codes {
			wg.Go(func() {
				for range n {
					serve(m, "/code/"+c)
				}
			})
		}
	}
	// Scrapes while requests are counted: each must be consistent.
	for range 20 {
		checkHistograms(t, reg)
	}
	wg.Wait()

	got := checkHistograms(t, reg)
	sleep := got[`GET /sleep/{ms} 200`]
	if sleep == nil || sleep.count != 3 {
		t.Fatalf("GET /sleep/{ms} 200: %+v, want 3 requests (series: %v)", sleep, keys(got))
	}
	if sleep.buckets[0.0025] > 1 || sleep.buckets[0.025] != 2 || sleep.buckets[0.05] != 3 {
		t.Errorf("GET /sleep/{ms}: buckets %v, want at most 1 under 2.5 ms, 2 under 25 ms, 3 under 50 ms", sleep.buckets)
	}
	if sleep.sum < 0.033 || sleep.sum > 5 {
		t.Errorf("GET /sleep/{ms}: sum %v s, want the three durations (at least 33 ms)", sleep.sum)
	}
	for _, m := range methods {
		for _, c := range codes {
			if h := got[m+" /code/{n} "+c]; h == nil || h.count != n {
				t.Errorf("%s /code/{n} %s: %+v, want %d requests", m, c, h, n)
			}
		}
	}
	if o := got[`OTHER unmatched 405`]; o == nil || o.count != 1 {
		t.Errorf("PURGE of an unknown path: %+v, want one request as OTHER, unmatched, 405 (series: %v)", o, keys(got))
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	inFlight := -1.0
	for _, mf := range mfs {
		if mf.GetName() == "hakit_http_requests_in_flight" {
			inFlight = mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	if inFlight != 0 {
		t.Errorf("hakit_http_requests_in_flight: %v after every request ended, want 0", inFlight)
	}
}

type histogram struct {
	count   uint64
	sum     float64
	buckets map[float64]uint64
}

func keys(m map[string]*histogram) []string {
	var k []string
	for s := range m {
		k = append(k, s)
	}
	return k
}

// checkHistograms gathers hakit_http_request_duration_seconds and checks
// each series' form: the stack's buckets, cumulative, +Inf = _count.
func checkHistograms(t *testing.T, reg *prometheus.Registry) map[string]*histogram {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	bounds := []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}
	out := map[string]*histogram{}
	for _, mf := range mfs {
		if mf.GetName() != "hakit_http_request_duration_seconds" {
			continue
		}
		if mf.GetHelp() != "Time to serve a request, by method, route pattern and status code." {
			t.Errorf("help: %q", mf.GetHelp())
		}
		for _, m := range mf.GetMetric() {
			l := map[string]string{}
			for _, p := range m.GetLabel() {
				l[p.GetName()] = p.GetValue()
			}
			if len(l) != 3 {
				t.Errorf("labels %v, want method, route and code", l)
			}
			h := m.GetHistogram()
			hist := &histogram{count: h.GetSampleCount(), sum: h.GetSampleSum(), buckets: map[float64]uint64{}}
			if len(h.GetBucket()) != len(bounds) {
				t.Fatalf("%v: %d buckets, want %d", l, len(h.GetBucket()), len(bounds))
			}
			var last uint64
			for i, b := range h.GetBucket() {
				if b.GetUpperBound() != bounds[i] || b.GetCumulativeCount() < last || b.GetCumulativeCount() > hist.count {
					t.Errorf("%v: bucket %d: le %v count %d after %d, of %d", l, i, b.GetUpperBound(), b.GetCumulativeCount(), last, hist.count)
				}
				last = b.GetCumulativeCount()
				hist.buckets[b.GetUpperBound()] = last
			}
			out[l["method"]+" "+l["route"]+" "+l["code"]] = hist
		}
	}
	return out
}

// The stack works under a router that routes to it (chi's Mount), and so
// does an App mounted in another router: the handler gets its URL
// parameters, the metrics and the log name the whole route. An App
// served by its own server ignores a route context in the context it was
// given, and routes on the request's whole path.
func TestStackUnderARouter(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	logs := &logBuffer{}
	app, err := hakit.New(ctx, hakit.Config{Logger: slog.New(slog.NewTextHandler(logs, nil)), NoSignals: true})
	if err != nil {
		t.Fatal(err)
	}
	app.Router().Get("/items/{id}", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "item "+chi.URLParam(r, "id"))
	})
	rctx := chi.NewRouteContext()
	rctx.RoutePath = "/elsewhere"
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- app.Serve(context.WithValue(ctx, chi.RouteCtxKey, rctx), ln) }()
	url := "http://" + ln.Addr().String()
	waitStatus(t, url+"/readyz", 200)
	if resp, body := do(t, newReq(t, "GET", url+"/items/8", nil)); resp.StatusCode != 200 || body != "item 8" {
		t.Errorf("App.Serve: GET /items/8: %d %q", resp.StatusCode, body)
	}

	sub := chi.NewRouter()
	sub.Get("/things/{id}", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "thing "+chi.URLParam(r, "id"))
	})
	reg := prometheus.NewRegistry()
	mw, err := hakit.Stack(hakit.StackConfig{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	parent := chi.NewRouter()
	parent.Mount("/app", app)
	parent.Mount("/api", mw(sub))
	srv := httptest.NewServer(parent)
	defer srv.Close()
	for path, want := range map[string]string{"/app/items/7": "item 7", "/api/things/9": "thing 9"} {
		resp, body := do(t, newReq(t, "GET", srv.URL+path, nil))
		if resp.StatusCode != 200 || body != want {
			t.Errorf("GET %s: %d %q, want %q", path, resp.StatusCode, body, want)
		}
	}
	if got := checkHistograms(t, reg); got[`GET /api/things/{id} 200`] == nil {
		t.Errorf("mounted stack: series %v, want GET /api/things/{id} 200", keys(got))
	}
	if !strings.Contains(logs.String(), "path=/app/items/7 status=200") {
		t.Errorf("mounted app: access log lacks the request:\n%s", logs.String())
	}
	_, metrics := do(t, newReq(t, "GET", url+"/metrics", nil))
	for _, want := range []string{
		`hakit_http_request_duration_seconds_count{code="200",method="GET",route="/items/{id}"} 1`,
		`hakit_http_request_duration_seconds_count{code="200",method="GET",route="/app/items/{id}"} 1`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("app metrics lack %s:\n%s", want, grep(metrics, "hakit_http_request"))
		}
	}
	cancel()
	if err := <-served; err != nil {
		t.Errorf("Serve: %v", err)
	}
}
