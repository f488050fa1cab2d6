package loginload

import (
	"context"
	"strings"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	if got := Percentile(nil, 99); got != 0 {
		t.Errorf("empty: %s", got)
	}
	ds := make([]time.Duration, 100)
	for i := range ds {
		ds[i] = time.Duration(100-i) * time.Millisecond
	}
	for _, tc := range []struct {
		p    float64
		want time.Duration
	}{{50, 50 * time.Millisecond}, {99, 99 * time.Millisecond}, {100, 100 * time.Millisecond}, {0, time.Millisecond}} {
		if got := Percentile(ds, tc.p); got != tc.want {
			t.Errorf("p%g = %s, want %s", tc.p, got, tc.want)
		}
	}
}

// statsOf counts flows, failures per step, sign-ups and the rest.
func TestStatsOf(t *testing.T) {
	t0 := time.Now()
	ok := func(s Step) stepResult { return stepResult{attempted: true, took: time.Millisecond} }
	recs := []flowRecord{
		{start: t0, took: time.Second, signup: true, acked: true, steps: [numSteps]stepResult{StepAuthorize: ok(0), StepRegister: ok(0), StepConsent: ok(0), StepToken: ok(0), StepVerify: ok(0), StepRefresh: ok(0)}},
		{start: t0.Add(time.Second), took: time.Second, steps: [numSteps]stepResult{StepAuthorize: ok(0), StepLogin: {attempted: true, failed: true}},
			err: `login: Post "http://x/login?a=b": EOF`, refused: true},
		{start: t0.Add(2 * time.Second), took: time.Second, signup: true, exists: true, steps: [numSteps]stepResult{StepAuthorize: ok(0), StepRegister: ok(0)}},
		{start: t0.Add(3 * time.Second), took: time.Second, lostGrant: true, steps: [numSteps]stepResult{StepRefresh: {attempted: true, failed: true}}, err: "refresh: status 400 invalid_grant"},
	}
	s := statsOf(recs)
	if s.Flows != 4 || s.Failed != 2 || s.Signups != 2 || s.Acknowledged != 1 || s.Exists != 1 || s.Refused != 1 || s.LostGrants != 1 {
		t.Errorf("stats %+v", s)
	}
	if s.FailedPct() != 50 || s.Took != 4*time.Second {
		t.Errorf("failed %.1f%%, took %s", s.FailedPct(), s.Took)
	}
	if s.Steps[StepLogin].Attempts != 1 || s.Steps[StepLogin].Failures != 1 || s.Steps[StepAuthorize].Attempts != 3 {
		t.Errorf("steps %+v", s.Steps)
	}
	if s.Errors[`login: Post "http://x/login": EOF`] != 1 {
		t.Errorf("errors %v: the query should be cut", s.Errors)
	}
	if !strings.Contains(s.String(), "1 PASSWORDS REFUSED, 1 GRANTS LOST") {
		t.Errorf("String() = %s", s)
	}
	// Only the flow that ended with tokens has a duration.
	if s.P50 != time.Second || s.P99 != time.Second || s.PerSecond() != 0.25 {
		t.Errorf("p50 %s p99 %s, %.2f/s", s.P50, s.P99, s.PerSecond())
	}
	if (Stats{}).FailedPct() != 0 || (Stats{}).PerSecond() != 0 {
		t.Error("empty stats")
	}
}

// A bad configuration is an error before any request.
func TestConfigErrors(t *testing.T) {
	ctx := context.Background()
	c := Client{ID: "app", Secret: "s", RedirectURI: "https://app.example/cb"}
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Client: c}, "needs Issuer"},
		{Config{Issuer: "http://127.0.0.1:1", Client: Client{ID: "app"}}, "needs Issuer, Client.ID and Client.RedirectURI"},
		{Config{Issuer: "http://127.0.0.1:1", Client: c, Users: -1}, "cannot be negative"},
		{Config{Issuer: "http://127.0.0.1:1", Client: c, Rate: -2}, "cannot be negative"},
		{Config{Issuer: "http://127.0.0.1:1", Client: c}, "discovery"}, // nothing listens there
	} {
		if l, err := Start(ctx, tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			if l != nil {
				l.Stop()
			}
			t.Errorf("Start(%+v) = %v; want an error with %q", tc.cfg, err, tc.want)
		}
	}
	if _, err := Check(ctx, Config{}, nil, 1); err == nil {
		t.Error("Check without a configuration: no error")
	}
}
