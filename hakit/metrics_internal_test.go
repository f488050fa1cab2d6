package hakit

import (
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
		if h.GetSampleCount() != uint64(len(durs)) || h.GetSampleSum() != sum.Seconds() {
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
