package dbrouter

import (
	"github.com/prometheus/client_golang/prometheus"

	"hakit.dev/internal/metricset"
)

const (
	readReplica  = iota // served by a replica
	readPrimary         // served by the primary: no fresh replica
	readFallback        // no replica replayed the read-your-writes position in time
)

// metrics are the router's Prometheus metrics. Label sets are resolved
// once, so counting costs an atomic add.
type metrics struct {
	roleChanges []prometheus.Counter // per node
	failovers   prometheus.Counter
	retries     map[string]prometheus.Counter // per reason
	resolutions map[string]prometheus.Counter // per outcome
	reads       [3]prometheus.Counter
	readRetries prometheus.Counter
	rywChecks   prometheus.Counter
	fullWaits   prometheus.Counter

	collectors metricset.Set // the counters above, as one prometheus.Collector

	up, role, lag, lsn, inflight, acquired, idle, total *prometheus.Desc
}

func newMetrics(r *Router) *metrics {
	const ns, sub = "hakit", "dbrouter"
	m := &metrics{retries: map[string]prometheus.Counter{}, resolutions: map[string]prometheus.Counter{}}
	roleChanges := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "role_changes_total",
		Help: "Times a node's role (primary, replica, fenced, down) changed."}, []string{"node"})
	for _, n := range r.nodes {
		m.roleChanges = append(m.roleChanges, roleChanges.WithLabelValues(n.name))
	}
	m.failovers = prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "primary_changes_total",
		Help: "Times writes moved to a new primary (failovers)."})
	retries := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "write_retries_total",
		Help: "Write transactions run again, by reason."}, []string{"reason"})
	for _, reason := range []string{"connection", "read_only", "shutdown", "serialization", "deadlock", "commit_lost"} {
		m.retries[reason] = retries.WithLabelValues(reason)
	}
	resolutions := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "commit_resolutions_total",
		Help: "COMMITs whose connection was lost, by what the router found out."}, []string{"outcome"})
	for _, o := range []string{"committed", "aborted", "unknown"} {
		m.resolutions[o] = resolutions.WithLabelValues(o)
	}
	reads := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "reads_total",
		Help: "Reads by where they went: replica, primary (no fresh replica), primary_ryw (no replica had replayed the caller's writes in time)."}, []string{"target"})
	m.reads = [3]prometheus.Counter{reads.WithLabelValues("replica"), reads.WithLabelValues("primary"), reads.WithLabelValues("primary_ryw")}
	m.readRetries = prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "read_retries_total",
		Help: "Reads run again on another node after their node failed."})
	m.rywChecks = prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "ryw_checks_total",
		Help: "Reads that asked a replica whether it had replayed the caller's writes."})
	m.fullWaits = prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "server_full_waits_total",
		Help: "Times a read or write waited for a pooled connection because the server refused a new one (max_connections reached)."})
	m.collectors = metricset.Set{roleChanges, m.failovers, retries, resolutions, reads, m.readRetries, m.rywChecks, m.fullWaits}

	desc := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(ns, sub, name), help, append([]string{"node"}, labels...), nil)
	}
	m.up = desc("node_up", "1 if the node's last probe succeeded.")
	m.role = desc("node_role", "1 for the node's current role.", "role")
	m.lag = desc("node_replay_lag_seconds", "Replicas: an upper bound of the age of the oldest transaction not yet replayed, as of the last probe (about a probe interval above the truth while the router's history of the primary's positions applies, more while only the replica's own bound does; see Config.MaxLag).")
	m.lsn = desc("node_lsn_bytes", "WAL position: insert position on a primary, replay position on a replica.")
	m.inflight = desc("node_inflight", "Reads and writes running on the node.")
	m.acquired = desc("pool_acquired_conns", "Connections of the node's pool in use.")
	m.idle = desc("pool_idle_conns", "Idle connections of the node's pool.")
	m.total = desc("pool_total_conns", "Connections of the node's pool.")
	return m
}

// Describe implements prometheus.Collector, so an app can register the
// router: registry.MustRegister(router).
func (r *Router) Describe(ch chan<- *prometheus.Desc) {
	m := r.metrics
	m.collectors.Describe(ch)
	for _, d := range []*prometheus.Desc{m.up, m.role, m.lag, m.lsn, m.inflight, m.acquired, m.idle, m.total} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (r *Router) Collect(ch chan<- prometheus.Metric) {
	m := r.metrics
	m.collectors.Collect(ch)
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	for _, n := range r.nodes {
		s := n.status()
		up := 0.0
		if s.Role != RoleDown && s.Role != RoleUnknown {
			up = 1
		}
		gauge(m.up, up, n.name)
		for _, role := range []Role{RolePrimary, RoleReplica, RoleFenced, RoleDown} {
			v := 0.0
			if s.Role == role {
				v = 1
			}
			gauge(m.role, v, n.name, string(role))
		}
		gauge(m.lag, s.Lag.Seconds(), n.name)
		gauge(m.lsn, float64(s.LSN), n.name)
		gauge(m.inflight, float64(s.InFlight), n.name)
		st := n.pool.Stat()
		gauge(m.acquired, float64(st.AcquiredConns()), n.name)
		gauge(m.idle, float64(st.IdleConns()), n.name)
		gauge(m.total, float64(st.TotalConns()), n.name)
	}
}
