package dbrouter

import "testing"

// Which replicas' replay positions a read-your-writes position may be
// compared with.
func TestRYWEligible(t *testing.T) {
	replica := func(tl int) *probe { return &probe{ok: true, lsn: 500, checkpointTimeline: tl} }
	cases := []struct {
		name string
		p    *probe
		tl   int
		want bool
	}{
		{"on the primary's timeline", replica(3), 3, true},
		{"no primary known yet", replica(2), 0, true},
		// The old primary back as a replica, replaying WAL of its own
		// past the switch point, or a replica left on the old timeline
		// by a promotion: not comparable.
		{"on the old timeline", replica(2), 3, false},
		{"down", &probe{}, 3, false},
		{"a primary", &probe{ok: true, primary: true}, 3, false},
		{"no probe", nil, 3, false},
	}
	for _, c := range cases {
		if got := rywEligible(c.p, c.tl); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}
