package hakit

import (
	"maps"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
)

// httpMetrics are the stack's request metrics: requests in flight, and a
// histogram of request durations by method, route pattern and status code
// (hakit_http_request_duration_seconds).
//
// The histogram is the stack's own collector, not a prometheus.HistogramVec:
// a request costs a lookup in an immutable map, an atomic add and a
// compare-and-swap, where the HistogramVec's child cache (a sync.Map keyed
// by the label set) and its Observe cost twice that on every request, a
// share of the stack's overhead that shows in the http benchmark. What it
// exposes is the same: the same name, help, labels and buckets, each series
// a classic histogram whose cumulative buckets and _count come from one
// read of its counters, so the +Inf bucket always equals _count.
type httpMetrics struct {
	inFlight atomic.Int64 // read by a GaugeFunc: one atomic add per change
	desc     *prometheus.Desc
	// routes maps a route pattern to its series. Neither the map nor a
	// route's list is written once published: a request reads them
	// without a lock; a new series copies them under mu.
	routes atomic.Pointer[map[string]*routeSeries]
	mu     sync.Mutex
}

// routeSeries are a route's series, one per method and code seen: a
// handful, looked through in order. (A map keyed by the route alone is
// one string lookup, where a key of method, route and code needs a hash
// of all three.)
type routeSeries struct {
	list atomic.Pointer[[]*durationSeries]
}

// durationBuckets are the histogram's upper bounds in seconds, and
// durationBounds the same in nanoseconds, to place a duration without a
// conversion to float.
var (
	durationBuckets = [...]float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}
	durationBounds  = func() (b [len(durationBuckets)]int64) {
		for i, s := range durationBuckets {
			b[i] = int64(s * 1e9)
		}
		return b
	}()
)

// durationSeries is one label set's histogram: counts per bucket (not
// cumulative; the last is above every bound) and the sum in seconds (a
// float64's bits, as client_golang keeps it: a sum of integer nanoseconds
// would wrap after 292 years of request time, weeks for a route of
// thousands of open event streams).
type durationSeries struct {
	method  string
	code    int
	labels  []string // method, route, code
	created time.Time
	counts  [len(durationBuckets) + 1]atomic.Uint64
	sumBits atomic.Uint64
}

func newHTTPMetrics(reg prometheus.Registerer) *httpMetrics {
	m := &httpMetrics{
		desc: prometheus.NewDesc("hakit_http_request_duration_seconds",
			"Time to serve a request, by method, route pattern and status code.", []string{"method", "route", "code"}, nil),
	}
	m.routes.Store(&map[string]*routeSeries{})
	inFlight := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "hakit", Subsystem: "http", Name: "requests_in_flight",
		Help: "Requests being served."}, func() float64 { return float64(m.inFlight.Load()) })
	reg.MustRegister(inFlight, m)
	return m
}

func (m *httpMetrics) observe(method, route string, code int, took time.Duration) {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions, http.MethodConnect, http.MethodTrace:
	default:
		method = "OTHER" // bounded label values
	}
	if route == "" {
		route = "unmatched"
	} else if !utf8.ValidString(route) {
		// A label value must be UTF-8, or the registry fails every
		// scrape (a route pattern of other bytes).
		route = strings.ToValidUTF8(route, "\uFFFD")
	}
	s := m.find(method, route, code)
	ns := took.Nanoseconds()
	i := 0
	for i < len(durationBounds) && ns > durationBounds[i] {
		i++
	}
	s.counts[i].Add(1)
	for {
		old := s.sumBits.Load()
		if s.sumBits.CompareAndSwap(old, math.Float64bits(math.Float64frombits(old)+took.Seconds())) {
			return
		}
	}
}

// find returns the series of method, route and code, made if it is new.
func (m *httpMetrics) find(method, route string, code int) *durationSeries {
	if rs := (*m.routes.Load())[route]; rs != nil {
		if s := seriesIn(*rs.list.Load(), method, code); s != nil {
			return s
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	routes := *m.routes.Load()
	rs := routes[route]
	if rs == nil {
		rs = &routeSeries{}
		rs.list.Store(&[]*durationSeries{})
		next := maps.Clone(routes)
		next[route] = rs
		m.routes.Store(&next)
	}
	list := *rs.list.Load()
	if s := seriesIn(list, method, code); s != nil { // another request's, made since the look above
		return s
	}
	s := &durationSeries{method: method, code: code, labels: []string{method, route, strconv.Itoa(code)}, created: time.Now()}
	next := append(list[:len(list):len(list)], s)
	rs.list.Store(&next)
	return s
}

// seriesIn returns the series of method and code in list, or nil.
func seriesIn(list []*durationSeries, method string, code int) *durationSeries {
	for _, s := range list {
		if s.code == code && s.method == method {
			return s
		}
	}
	return nil
}

// Describe implements prometheus.Collector.
func (m *httpMetrics) Describe(ch chan<- *prometheus.Desc) { ch <- m.desc }

// Collect implements prometheus.Collector.
func (m *httpMetrics) Collect(ch chan<- prometheus.Metric) {
	for _, rs := range *m.routes.Load() {
		for _, s := range *rs.list.Load() {
			m.collect(ch, s)
		}
	}
}

// collect sends s as a histogram: its buckets and count from one read of
// each counter, so they agree; the sum, read after them, may include a
// request the counts do not yet.
func (m *httpMetrics) collect(ch chan<- prometheus.Metric, s *durationSeries) {
	buckets := make(map[float64]uint64, len(durationBuckets))
	var n uint64
	for i, ub := range durationBuckets {
		n += s.counts[i].Load()
		buckets[ub] = n
	}
	n += s.counts[len(durationBuckets)].Load()
	ch <- prometheus.MustNewConstHistogramWithCreatedTimestamp(m.desc, n, math.Float64frombits(s.sumBits.Load()), buckets, s.created, s.labels...)
}
