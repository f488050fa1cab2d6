package loginload

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Step is one step of a flow.
type Step int

// The steps of a flow, in order. A sign-up flow has Register instead of
// Login.
const (
	StepAuthorize Step = iota // GET /authorize up to the login form
	StepRegister              // POST /register (a new account)
	StepLogin                 // POST /login with the password
	StepConsent               // the consent form (sign-up) or the redirect to the client
	StepToken                 // the code redeemed at the token endpoint
	StepVerify                // the ID token checked against the JWKS
	StepRefresh               // the refresh token used once
	numSteps
)

var stepNames = [numSteps]string{"authorize", "register", "login", "consent", "token", "verify", "refresh"}

func (s Step) String() string {
	if s < 0 || s >= numSteps {
		return fmt.Sprintf("step(%d)", int(s))
	}
	return stepNames[s]
}

// Steps lists every step in order.
func Steps() []Step {
	s := make([]Step, numSteps)
	for i := range s {
		s[i] = Step(i)
	}
	return s
}

// errExists ends a sign-up whose account an earlier attempt created.
var errExists = errors.New("exists")

type stepResult struct {
	attempted, failed bool
	took              time.Duration
}

// flowRecord is what happened in one flow.
type flowRecord struct {
	start     time.Time
	took      time.Duration
	signup    bool
	acked     bool // a sign-up acknowledged
	ackAt     time.Time
	exists    bool // a sign-up that found its account created by an earlier, failed attempt
	refused   bool // a known account's password refused (401)
	lostGrant bool // a refresh token from a 200 answer unknown right after
	steps     [numSteps]stepResult
	failStep  Step
	err       string
}

func (r *flowRecord) failed() bool { return r.err != "" }

// run runs step s, a request whose answer is a page.
func (r *flowRecord) run(s Step, f func() (page, error)) (page, bool) {
	var p page
	ok := r.do(s, func() error {
		var err error
		p, err = f()
		return err
	})
	return p, ok
}

// do runs step s and records it; false ends the flow.
func (r *flowRecord) do(s Step, f func() error) bool {
	t0 := time.Now()
	err := f()
	r.steps[s] = stepResult{attempted: true, took: time.Since(t0)}
	if errors.Is(err, errExists) {
		return false
	}
	if err != nil {
		r.steps[s].failed = true
		r.failStep = s
		r.err = fmt.Sprintf("%s: %v", s, err)
		return false
	}
	return true
}

// StepStats are one step's counters.
type StepStats struct {
	Attempts, Failures int
	P50, P99           time.Duration // of the attempts that succeeded
}

// Stats describe a set of finished flows.
type Stats struct {
	// Flows is the number of flows; Failed of them ended in an error
	// (any step), Exists are sign-ups that found their account created
	// by an earlier attempt whose answer was lost (no failure of their
	// own: that attempt was counted).
	Flows, Failed, Exists int
	// Signups is the number of sign-up flows, Acknowledged of them
	// answered with success.
	Signups, Acknowledged int
	// Refused counts sign-ins of a known account answered "wrong
	// password"; LostGrants refresh tokens of a successful token answer
	// unknown when used right after. Both must stay 0.
	Refused, LostGrants int
	// Steps are the counters per step.
	Steps [numSteps]StepStats
	// P50 and P99 are the whole flow's durations, successful flows only.
	P50, P99 time.Duration
	// Errors counts the failures by step and cause.
	Errors map[string]int
	// Took is from the first flow's start to the last one's end.
	Took time.Duration
}

// FailedPct is the share of flows that failed, in percent (0 without
// flows).
func (s Stats) FailedPct() float64 {
	if s.Flows == 0 {
		return 0
	}
	return 100 * float64(s.Failed) / float64(s.Flows)
}

// PerSecond is the rate of successful flows.
func (s Stats) PerSecond() float64 {
	if s.Took <= 0 {
		return 0
	}
	return float64(s.Flows-s.Failed-s.Exists) / s.Took.Seconds()
}

func (s Stats) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d flows, %d failed (%.2f%%), %d sign-ups (%d acknowledged), p50 %s p99 %s",
		s.Flows, s.Failed, s.FailedPct(), s.Signups, s.Acknowledged, s.P50.Round(time.Millisecond), s.P99.Round(time.Millisecond))
	if s.Exists > 0 {
		fmt.Fprintf(&b, ", %d found their account made", s.Exists)
	}
	if s.Refused > 0 || s.LostGrants > 0 {
		fmt.Fprintf(&b, ", %d PASSWORDS REFUSED, %d GRANTS LOST", s.Refused, s.LostGrants)
	}
	if len(s.Errors) > 0 {
		keys := make([]string, 0, len(s.Errors))
		for k := range s.Errors {
			keys = append(keys, k)
		}
		slices.SortFunc(keys, func(a, b string) int { return s.Errors[b] - s.Errors[a] })
		b.WriteString("; errors:")
		for i, k := range keys {
			if i == 4 {
				fmt.Fprintf(&b, " (%d more kinds)", len(keys)-4)
				break
			}
			fmt.Fprintf(&b, " %dx %s;", s.Errors[k], k)
		}
	}
	return b.String()
}

// statsOf sums up recs.
func statsOf(recs []flowRecord) Stats {
	s := Stats{Errors: map[string]int{}}
	var flowDur []time.Duration
	var stepDur [numSteps][]time.Duration
	var first, last time.Time
	for _, r := range recs {
		s.Flows++
		if first.IsZero() || r.start.Before(first) {
			first = r.start
		}
		if end := r.start.Add(r.took); end.After(last) {
			last = end
		}
		if r.signup {
			s.Signups++
		}
		if r.acked {
			s.Acknowledged++
		}
		if r.exists {
			s.Exists++
		}
		if r.refused {
			s.Refused++
		}
		if r.lostGrant {
			s.LostGrants++
		}
		for i, st := range r.steps {
			if !st.attempted {
				continue
			}
			s.Steps[i].Attempts++
			if st.failed {
				s.Steps[i].Failures++
			} else {
				stepDur[i] = append(stepDur[i], st.took)
			}
		}
		if r.failed() {
			s.Failed++
			s.Errors[shorten(r.err)]++
		} else if !r.exists {
			flowDur = append(flowDur, r.took)
		}
	}
	s.P50, s.P99 = Percentile(flowDur, 50), Percentile(flowDur, 99)
	for i := range stepDur {
		s.Steps[i].P50, s.Steps[i].P99 = Percentile(stepDur[i], 50), Percentile(stepDur[i], 99)
	}
	s.Took = last.Sub(first)
	return s
}

// shorten keeps an error's kind: the step and the cause without the
// request's unique parts.
func shorten(e string) string {
	if i := strings.Index(e, "?"); i >= 0 {
		if j := strings.IndexAny(e[i:], " \""); j >= 0 {
			e = e[:i] + e[i+j:]
		} else {
			e = e[:i]
		}
	}
	if len(e) > 160 {
		e = e[:160]
	}
	return e
}

// Percentile returns the p-th percentile (nearest rank) of ds, 0 when
// empty. It sorts ds.
func Percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	i := int(float64(len(ds))*p/100+0.999999) - 1
	return ds[max(0, min(i, len(ds)-1))]
}
