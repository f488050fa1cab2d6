package dbrouter

import (
	"testing"
	"time"
)

// The history of the primary's insert position: which sample bounds a
// replica's lag, what starts it again, and how it stays bounded.
func TestLSNHistory(t *testing.T) {
	t0 := time.Now()
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	a, b := &node{name: "a"}, &node{name: "b"}
	pr := func(ms int, lsn LSN) *probe {
		return &probe{ok: true, primary: true, startedAt: at(ms), lsn: lsn, run: 1, timeline: 1, walBlockSize: 8192}
	}
	newHist := func() *lsnHistory { return &lsnHistory{gap: 25 * time.Millisecond} }
	// wantBound checks the bound for a replica that had received WAL past
	// its replay position; wantCaughtUp for one that had not.
	wantBoundOf := func(t *testing.T, h *lsnHistory, primary *node, replayed LSN, readBy int, received bool, want time.Duration, wantOK bool) {
		t.Helper()
		got, ok := h.bound(primary, replayed, at(readBy), received)
		if ok != wantOK || got != want {
			t.Errorf("bound(replayed %d, read by %dms, received past it %v) = %v, %v; want %v, %v", replayed, readBy, received, got, ok, want, wantOK)
		}
	}
	wantBound := func(t *testing.T, h *lsnHistory, primary *node, replayed LSN, readBy int, want time.Duration, wantOK bool) {
		t.Helper()
		wantBoundOf(t, h, primary, replayed, readBy, true, want, wantOK)
	}
	wantCaughtUp := func(t *testing.T, h *lsnHistory, primary *node, replayed LSN, readBy int, want time.Duration, wantOK bool) {
		t.Helper()
		wantBoundOf(t, h, primary, replayed, readBy, false, want, wantOK)
	}

	t.Run("idle primary, then a commit", func(t *testing.T) {
		h := newHist()
		for ms := 0; ms <= 10000; ms += 500 {
			h.add(a, pr(ms, 100)) // idle: one sample, its time moving on
		}
		h.add(a, pr(10500, 200))
		if h.n != 2 {
			t.Fatalf("%d samples kept, want 2 (the idle run as one, then the commit's)", h.n)
		}
		// Replayed up to the idle position, probed by 10700ms: the WAL it
		// lacks came after 10000ms.
		wantBound(t, h, a, 100, 10700, 700*time.Millisecond, true)
		// Past the newest sample: bounded by the newest.
		wantBound(t, h, a, 250, 10700, 200*time.Millisecond, true)
		// Older than every sample, another primary: no bound.
		wantBound(t, h, a, 99, 10700, 0, false)
		wantBound(t, h, b, 100, 10700, 0, false)
		// No primary known: no bound.
		wantBound(t, h, nil, 100, 10700, 0, false)
		wantCaughtUp(t, h, nil, 100, 10700, 0, false)
		// A sample no earlier than the probe of a replica that had
		// received past its replay position cannot come from the
		// replica's history.
		wantBound(t, h, a, 100, 10000, 0, false)
		// One that had not: the same bound, or none needed when the
		// sample came after its probe (the primary had written nothing
		// past its position).
		wantCaughtUp(t, h, a, 100, 10700, 700*time.Millisecond, true)
		wantCaughtUp(t, h, a, 250, 10700, 200*time.Millisecond, true)
		wantCaughtUp(t, h, a, 100, 10000, 0, true)
		wantCaughtUp(t, h, a, 99, 10700, 0, false)
		wantCaughtUp(t, h, b, 100, 10700, 0, false)
		// An older probe finishing late adds nothing.
		h.add(a, pr(10400, 150))
		if h.n != 2 || h.sample(1).lsn != 200 {
			t.Errorf("an older probe changed the history: %d samples, newest at %v", h.n, h.sample(h.n-1).lsn)
		}
	})

	t.Run("page boundary", func(t *testing.T) {
		// The primary's last record ended on a page boundary: its insert
		// position reads past the next page's header, the replica's replay
		// position the boundary.
		const page = 5 * 8192
		for _, c := range []struct {
			name     string
			primary  LSN
			replayed LSN
			ok       bool
		}{
			{"past a short header", page + 24, page, true},
			{"past a long header", page + 40, page, true},
			{"a record past the header", page + 24 + 24, page, false},
			{"mid-page", page + 8 + 24, page + 8, false},
		} {
			h := newHist()
			h.add(a, pr(0, c.primary))
			if _, ok := h.bound(a, c.replayed, at(100), true); ok != c.ok {
				t.Errorf("%s: primary at %v, replayed %v: bound found %v, want %v", c.name, c.primary, c.replayed, ok, c.ok)
			}
		}
	})

	t.Run("starts again", func(t *testing.T) {
		for _, c := range []struct {
			name string
			n    *node
			p    *probe
		}{
			{"another node", b, pr(1000, 500)},
			{"another run", a, &probe{startedAt: at(1000), lsn: 500, run: 2, timeline: 1}},
			{"another timeline", a, &probe{startedAt: at(1000), lsn: 500, run: 1, timeline: 2}},
			{"a lower position", a, pr(1000, 50)},
		} {
			h := newHist()
			h.add(a, pr(0, 100))
			h.add(a, pr(500, 200))
			h.add(c.n, c.p)
			if h.n != 1 || h.node != c.n {
				t.Errorf("%s: %d samples of %s, want the new one only", c.name, h.n, h.node.name)
			}
		}
	})

	t.Run("bounded", func(t *testing.T) {
		h := newHist()
		for i := range 3 * historyLen {
			h.add(a, pr(100*i, LSN(100*(i+1))))
		}
		if h.n != historyLen {
			t.Fatalf("%d samples kept, want %d", h.n, historyLen)
		}
		oldest := h.sample(0)
		if oldest.lsn != LSN(100*(2*historyLen+1)) {
			t.Errorf("oldest sample at %d, want the last %d", oldest.lsn, historyLen)
		}
		wantBound(t, h, a, oldest.lsn-1, 100000, 0, false)
		wantBound(t, h, a, oldest.lsn, 100000, at(100000).Sub(oldest.at), true)
	})

	t.Run("bursts are thinned", func(t *testing.T) {
		h := newHist()
		for i := range 1000 {
			h.add(a, pr(i, LSN(i+1))) // a sample a millisecond
		}
		if h.n > 1000/24+2 {
			t.Errorf("%d samples kept from a second of 1ms probes, want about one per 25ms", h.n)
		}
		// A dropped sample was less than the gap after a kept one: any
		// position's bound is within the gap of the exact one.
		for i := range 1000 {
			exact := time.Duration(1000-i) * time.Millisecond
			if got, ok := h.bound(a, LSN(i+1), at(1000), true); !ok || got < exact || got >= exact+25*time.Millisecond {
				t.Errorf("bound for position %d (written by %dms) read by 1000ms: %v, %v; want %v up to 25ms more", i+1, i, got, ok, exact)
			}
		}
	})
}

// The figure reported for a replica: the lesser of its own bound and the
// history's, whether or not it has replayed all it received; the
// history only for a replica whose last restartpoint is on its timeline.
func TestReplayLag(t *testing.T) {
	t0 := time.Now()
	prim := &node{name: "p"}
	r := &Router{}
	r.hist.gap = 25 * time.Millisecond
	r.view.Store(&view{primary: prim, changed: make(chan struct{})})
	r.hist.add(prim, &probe{ok: true, primary: true, startedAt: t0, lsn: 100, run: 1, timeline: 1})
	replica := func(lsn LSN, behind bool, age time.Duration, known bool) *probe {
		return &probe{ok: true, startedAt: t0.Add(time.Second), took: 10 * time.Millisecond, lsn: lsn, behind: behind, age: age, ageKnown: known, checkpointTimeline: 1}
	}
	onTimeline := func(p *probe, tl int) *probe { p.checkpointTimeline = tl; return p }
	early := func(p *probe) *probe { p.startedAt = t0.Add(-time.Second); return p }
	const hist = 1010 * time.Millisecond // from t0 to the end of the replica's probe
	cases := []struct {
		name string
		p    *probe
		want time.Duration
	}{
		{"own bound smaller", replica(100, true, 300*time.Millisecond, true), 300 * time.Millisecond},
		{"history's smaller", replica(100, true, 10*time.Second, true), hist},
		{"no transaction replayed yet", replica(100, true, 0, false), hist},
		{"older than the history", replica(50, true, 10*time.Second, true), 10 * time.Second},
		{"no bound at all", replica(50, true, 0, false), 0},
		{"sample after the probe of a replica behind", early(replica(100, true, 10*time.Second, true)), 10 * time.Second},
		// Replayed all it received: maybe all there is, maybe it receives
		// nothing.
		{"caught up, history's smaller", replica(100, false, 10*time.Second, true), hist},
		{"caught up, own bound smaller", replica(100, false, 300*time.Millisecond, true), 300 * time.Millisecond},
		{"caught up, sample after its probe", early(replica(100, false, 10*time.Second, true)), 0},
		{"caught up, older than the history", replica(50, false, 10*time.Second, true), 10 * time.Second},
		{"caught up, no bound at all", replica(50, false, 0, false), 0},
		// Last restartpoint on another timeline than the history's (left
		// past the fork by a failover to a less advanced node, or not yet
		// known to follow the new primary): its own bound.
		{"another timeline", onTimeline(replica(100, true, 10*time.Second, true), 2), 10 * time.Second},
		{"another timeline, caught up", onTimeline(replica(100, false, 10*time.Second, true), 2), 10 * time.Second},
		{"another timeline, no own bound", onTimeline(replica(100, false, 0, false), 2), 0},
	}
	for _, c := range cases {
		if got := r.replayLag(c.p); got != c.want {
			t.Errorf("%s: lag %v, want %v", c.name, got, c.want)
		}
	}
	// No primary known: the replica's own bound, or 0 for one that has
	// replayed all it received.
	r.view.Store(&view{changed: make(chan struct{})})
	if got := r.replayLag(replica(100, true, 10*time.Second, true)); got != 10*time.Second {
		t.Errorf("no primary: lag %v, want the replica's own 10s", got)
	}
	if got := r.replayLag(replica(100, false, 10*time.Second, true)); got != 0 {
		t.Errorf("no primary, replayed all it received: lag %v, want 0", got)
	}
	// Another primary known, whose history has no sample yet: its own.
	r.view.Store(&view{primary: &node{name: "q"}, changed: make(chan struct{})})
	if got := r.replayLag(replica(100, false, 10*time.Second, true)); got != 10*time.Second {
		t.Errorf("a new primary: lag %v, want the replica's own 10s", got)
	}
}
