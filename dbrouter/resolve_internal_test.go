package dbrouter

import "testing"

func TestDecide(t *testing.T) {
	txn := txnFacts{xid: 900, before: 5000, timeline: 2, started: 111}
	cases := []struct {
		name     string
		s        serverFacts
		hist     []tlSwitch
		histRead bool
		want     verdict
	}{
		{"same run, never recovered", serverFacts{timeline: 2, started: 111}, nil, false, askStatus},
		// The bug this guards against: a promoted or crash-restarted
		// primary keeps reporting its old recovery end, below every later
		// write of the same run.
		{"same run after a promotion", serverFacts{timeline: 2, started: 111, recovered: true, recoveryEnd: 100}, nil, false, askStatus},
		// A backend crashed: the postmaster restarted every backend after
		// a crash recovery, with the same start time. Only the recovery
		// end tells (the transaction's message may be lost and its id
		// handed out again).
		{"backends crash-restarted, recovery ended before", serverFacts{timeline: 2, started: 111, recovered: true, recoveryEnd: 4000}, nil, false, rerun},
		{"backends crash-restarted, recovery ended after", serverFacts{timeline: 2, started: 111, recovered: true, recoveryEnd: 6000}, nil, false, askStatus},
		{"crash-restarted, recovery ended before", serverFacts{timeline: 2, started: 222, recovered: true, recoveryEnd: 4000}, nil, false, rerun},
		{"crash-restarted, recovery ended at the position", serverFacts{timeline: 2, started: 222, recovered: true, recoveryEnd: 5000}, nil, false, rerun},
		{"crash-restarted, recovery ended after", serverFacts{timeline: 2, started: 222, recovered: true, recoveryEnd: 6000}, nil, false, askStatus},
		{"clean restart", serverFacts{timeline: 2, started: 222}, nil, false, askStatus},
		{"earlier timeline", serverFacts{timeline: 1, started: 333}, nil, false, rerun},
		{"promoted before the commit record", serverFacts{timeline: 3, started: 333, recovered: true, recoveryEnd: 4500}, nil, false, rerun},
		{"promoted after the commit record", serverFacts{timeline: 3, started: 333, recovered: true, recoveryEnd: 7000, promotedInRun: true}, nil, false, askStatus},
		// Promoted, then crash-restarted: the recovery end is the crash
		// recovery's, past the switch point; only the history tells.
		{"crash-restarted since its promotion", serverFacts{timeline: 3, started: 444, recovered: true, recoveryEnd: 7000}, nil, false, needHistory},
		{"promoted, restarted cleanly since: history needed", serverFacts{timeline: 3, started: 333}, nil, false, needHistory},
		{"two timelines on: history needed", serverFacts{timeline: 4, started: 333, recovered: true, recoveryEnd: 9000}, nil, false, needHistory},
		{"two timelines on, left ours before", serverFacts{timeline: 4, started: 333, recovered: true, recoveryEnd: 9000},
			[]tlSwitch{{1, 100}, {2, 4800}, {3, 9000}}, true, rerun},
		{"two timelines on, left ours after", serverFacts{timeline: 4, started: 333, recovered: true, recoveryEnd: 9000},
			[]tlSwitch{{1, 100}, {2, 6000}, {3, 9000}}, true, askStatus},
		{"our timeline not in the history", serverFacts{timeline: 4, started: 333, recovered: true, recoveryEnd: 9000},
			[]tlSwitch{{1, 100}, {3, 9000}}, true, rerun},
	}
	for _, c := range cases {
		txn := txn
		if c.name == "same run after a promotion" {
			txn.recoveryEnd = 100 // read at BEGIN in the same run
		}
		if got, why := decide(txn, c.s, c.hist, c.histRead); got != c.want {
			t.Errorf("%s: verdict %d (%s), want %d", c.name, got, why, c.want)
		}
	}
}

func TestParseHistory(t *testing.T) {
	h, err := parseHistory("1\t0/3000158\tno recovery target specified\n\n2\t0/5000000\tno recovery target specified\n")
	if err != nil {
		t.Fatal(err)
	}
	if len(h) != 2 || h[0] != (tlSwitch{1, 0x3000158}) || h[1] != (tlSwitch{2, 0x5000000}) {
		t.Fatalf("parsed %+v", h)
	}
	for _, bad := range []string{"x\t0/1\n", "1\tnope\n", "1\n"} {
		if _, err := parseHistory(bad); err == nil {
			t.Errorf("parseHistory(%q) accepted it", bad)
		}
	}
}
