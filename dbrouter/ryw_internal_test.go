package dbrouter

import "testing"

// Which replicas' replay positions a read-your-writes position may be
// compared with.
func TestRYWEligible(t *testing.T) {
	streaming := func(tl int) *probe { return &probe{ok: true, lsn: 500, streamed: true, streamTimeline: tl} }
	cases := []struct {
		name string
		p    *probe
		tl   int
		want bool
	}{
		{"streaming on the primary's timeline", streaming(3), 3, true},
		{"streaming, timeline not visible to the router's user", streaming(0), 3, true},
		{"streaming, no primary known yet", streaming(2), 0, true},
		// A replica promoted past it made a new timeline: this one is
		// still on the old one, maybe past the switch point.
		{"streaming the old timeline", streaming(2), 3, false},
		// The old primary back as a replica, replaying WAL of its own
		// (past the switch point) before it could stream: not comparable.
		{"never streamed in this run", &probe{ok: true, lsn: 900}, 3, false},
		{"down", &probe{}, 3, false},
		{"a primary", &probe{ok: true, primary: true, streamed: true}, 3, false},
		{"no probe", nil, 3, false},
	}
	for _, c := range cases {
		if got := rywEligible(c.p, c.tl); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}
