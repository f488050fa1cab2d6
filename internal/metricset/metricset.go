// Package metricset lets a type that owns several Prometheus metrics be a
// prometheus.Collector by embedding a Set of them.
package metricset

import "github.com/prometheus/client_golang/prometheus"

// Set is a list of collectors that is itself a collector.
type Set []prometheus.Collector

// Describe implements prometheus.Collector.
func (s Set) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range s {
		c.Describe(ch)
	}
}

// Collect implements prometheus.Collector.
func (s Set) Collect(ch chan<- prometheus.Metric) {
	for _, c := range s {
		c.Collect(ch)
	}
}
