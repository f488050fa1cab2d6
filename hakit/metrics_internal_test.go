package hakit

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// A duration on a bucket's bound counts in that bucket (prometheus' "le");
// one a nanosecond over counts in the next; the sum is exact.
func TestDurationBuckets(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := newHTTPMetrics(reg)
	durs := []time.Duration{0, time.Millisecond, time.Millisecond + 1, 2500 * time.Microsecond, 10 * time.Second, 10*time.Second + 1, time.Hour}
	var sum time.Duration
	for _, d := range durs {
		m.observe("GET", "/x", 200, d)
		sum += d
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	want := map[float64]uint64{.001: 2, .0025: 4, .005: 4, 10: 5}
	for _, mf := range mfs {
		if mf.GetName() != "hakit_http_request_duration_seconds" {
			continue
		}
		h := mf.GetMetric()[0].GetHistogram()
		if h.GetSampleCount() != uint64(len(durs)) || math.Abs(h.GetSampleSum()-sum.Seconds()) > 1e-9 {
			t.Errorf("count %d sum %v, want %d and %v", h.GetSampleCount(), h.GetSampleSum(), len(durs), sum.Seconds())
		}
		for _, b := range h.GetBucket() {
			if w, ok := want[b.GetUpperBound()]; ok && b.GetCumulativeCount() != w {
				t.Errorf("le %v: %d, want %d", b.GetUpperBound(), b.GetCumulativeCount(), w)
			}
		}
		return
	}
	t.Fatal("no hakit_http_request_duration_seconds")
}

// The sum does not wrap, whatever the requests' total time (a route of
// long-lived event streams); a route pattern that is not UTF-8 still
// scrapes, as a label with U+FFFD in it; and every series says when it
// began.
func TestDurationSeriesEdges(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := newHTTPMetrics(reg)
	for range 10000 {
		m.observe("GET", "/events", 200, 1_000_000*time.Second)
	}
	m.observe("GET", "/caf\xe9", 200, time.Millisecond)
	m.observe("GET", "/caf\xe8", 200, time.Millisecond) // the same label: the same series
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather with a route that is not UTF-8: %v", err)
	}
	seen := 0
	for _, mf := range mfs {
		if mf.GetName() != "hakit_http_request_duration_seconds" {
			continue
		}
		for _, mt := range mf.GetMetric() {
			seen++
			h := mt.GetHistogram()
			if h.GetCreatedTimestamp() == nil {
				t.Errorf("%v: no created timestamp", mt.GetLabel())
			}
			for _, l := range mt.GetLabel() {
				if l.GetName() != "route" {
					continue
				}
				switch l.GetValue() {
				case "/events":
					if h.GetSampleSum() != 1e10 || h.GetSampleCount() != 10000 {
						t.Errorf("/events: sum %v count %d, want 1e10 s over 10000", h.GetSampleSum(), h.GetSampleCount())
					}
				case "/caf\uFFFD":
					if h.GetSampleCount() != 2 {
						t.Errorf("/caf\uFFFD: %d requests, want both routes' 2", h.GetSampleCount())
					}
				default:
					if strings.Contains(l.GetValue(), "caf") {
						t.Errorf("route label %q, want /caf\uFFFD", l.GetValue())
					}
				}
			}
		}
	}
	if seen != 2 {
		t.Errorf("%d series, want 2", seen)
	}
}
