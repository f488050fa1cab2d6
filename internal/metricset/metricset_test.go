package metricset_test

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"hakit.dev/internal/metricset"
)

func TestSetCollectsEveryMember(t *testing.T) {
	a := prometheus.NewCounter(prometheus.CounterOpts{Name: "a_total", Help: "a"})
	b := prometheus.NewGauge(prometheus.GaugeOpts{Name: "b", Help: "b"})
	a.Add(2)
	b.Set(3)
	reg := prometheus.NewRegistry()
	reg.MustRegister(metricset.Set{a, b})
	mfs, err := reg.Gather()
	if err != nil || len(mfs) != 2 {
		t.Fatalf("gathered %d families, %v", len(mfs), err)
	}
}
