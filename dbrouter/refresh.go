package dbrouter

import (
	"context"
	"time"
)

// Refresh probes every node now, rather than at its next ProbeInterval,
// and returns [Router.Status] once each node's probe has finished: the
// replicas' lag and replay positions as they are after the call, not as
// they were up to a ProbeInterval ago, for a caller that paces itself on
// them (a backfill that waits for the replicas after each batch). Each
// call costs one probe query per node.
//
// It returns early, with what is known then, when ctx ends or after
// twice Config.ProbeTimeout (a probe under way when it was called, then
// its own); a node whose probe had not finished keeps its older status,
// which its Probed time tells. A node that was down when it was called is
// not waited for. A closed Router returns Status at once.
func (r *Router) Refresh(ctx context.Context) []NodeStatus {
	since := time.Now()
	if r.closed.Load() {
		return r.Status()
	}
	// A node that was down at the call is not waited for: its probe can
	// hang for a whole ProbeTimeout (a host that takes connections and
	// never answers), and its status is an error either way.
	var wait []*node
	for _, n := range r.nodes {
		if p := n.last.Load(); p != nil && p.ok {
			wait = append(wait, n)
		}
	}
	r.kickAll()
	limit := time.NewTimer(2 * r.cfg.ProbeTimeout)
	defer limit.Stop()
	for {
		// Every recorded probe makes a new view: wait for the next.
		v := r.view.Load()
		if probedSince(wait, since) {
			return r.Status()
		}
		select {
		case <-ctx.Done():
			return r.Status()
		case <-limit.C:
			return r.Status()
		case <-v.changed:
		}
	}
}

// probedSince reports whether each node's last recorded probe started at
// or after t.
func probedSince(nodes []*node, t time.Time) bool {
	for _, n := range nodes {
		p := n.last.Load()
		if p == nil || p.startedAt.Before(t) {
			return false
		}
	}
	return true
}
