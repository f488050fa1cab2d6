package hakit

import (
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// httpMetrics are the stack's request metrics. The histogram's children
// are cached per label set, so a request costs a map lookup and an
// observation, not a label hash.
type httpMetrics struct {
	inFlight atomic.Int64 // read by a GaugeFunc: one atomic add per change
	duration *prometheus.HistogramVec
	cache    sync.Map // metricKey -> prometheus.Observer
}

type metricKey struct {
	method, route string
	code          int
}

func newHTTPMetrics(reg prometheus.Registerer) *httpMetrics {
	m := &httpMetrics{
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "hakit", Subsystem: "http", Name: "request_duration_seconds",
			Help:    "Time to serve a request, by method, route pattern and status code.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}}, []string{"method", "route", "code"}),
	}
	inFlight := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "hakit", Subsystem: "http", Name: "requests_in_flight",
		Help: "Requests being served."}, func() float64 { return float64(m.inFlight.Load()) })
	reg.MustRegister(inFlight, m.duration)
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
	}
	k := metricKey{method, route, code}
	o, ok := m.cache.Load(k)
	if !ok {
		o, _ = m.cache.LoadOrStore(k, m.duration.WithLabelValues(method, route, strconv.Itoa(code)))
	}
	o.(prometheus.Observer).Observe(took.Seconds())
}
