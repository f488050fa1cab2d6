package loginload

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// CheckResult is what Check found.
type CheckResult struct {
	// Checked is the number of accounts signed in to (or tried).
	Checked int
	// Lost are the accounts whose password was still refused after
	// Check's retries: an acknowledged account the provider forgot.
	Lost []string
	// Unknown are the accounts that could not be signed in to for other
	// reasons (errors until the deadline): nothing is known of them.
	Unknown []string
	// Errors are a few of the errors seen, retried ones included.
	Errors []string
	// Took is how long the check ran.
	Took time.Duration
}

// OK reports whether every account signed in.
func (c CheckResult) OK() bool { return len(c.Lost) == 0 && len(c.Unknown) == 0 }

func (c CheckResult) String() string {
	s := fmt.Sprintf("%d accounts checked in %s: %d lost, %d unknown", c.Checked, c.Took.Round(100*time.Millisecond), len(c.Lost), len(c.Unknown))
	if len(c.Lost) > 0 {
		s += fmt.Sprintf(" (lost: %s)", strings.Join(c.Lost[:min(3, len(c.Lost))], ", "))
	}
	if len(c.Errors) > 0 {
		s += "; errors: " + strings.Join(c.Errors, "; ")
	}
	return s
}

// Check signs every account in (a full flow from a fresh browser: login,
// code, verified ID token, refresh), with workers at once. A flow that
// fails for another reason than a refused password is tried again for
// up to a minute; a refused password is asked again, three times over 5 s
// (a replica may lag behind for a moment), before the account counts as
// lost.
func Check(ctx context.Context, cfg Config, accounts []Account, workers int) (CheckResult, error) {
	if workers < 1 {
		workers = 4
	}
	rn, err := newRunner(ctx, cfg, workers)
	if err != nil {
		return CheckResult{}, err
	}
	defer rn.close()
	t0 := time.Now()
	res := CheckResult{Checked: len(accounts)}
	var mu sync.Mutex
	work := make(chan Account)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for a := range work {
				refused, errs := rn.check(ctx, a)
				mu.Lock()
				switch {
				case refused:
					res.Lost = append(res.Lost, a.Email)
				case len(errs) > 0 && errs[len(errs)-1] != nil:
					res.Unknown = append(res.Unknown, a.Email)
				}
				for _, e := range errs {
					if e != nil && len(res.Errors) < 5 {
						res.Errors = append(res.Errors, a.Email+": "+e.Error())
					}
				}
				mu.Unlock()
			}
		})
	}
	for _, a := range accounts {
		select {
		case work <- a:
		case <-ctx.Done():
		}
	}
	close(work)
	wg.Wait()
	res.Took = time.Since(t0)
	return res, ctx.Err()
}

// check signs a in until it works or the retries are used up. refused
// means the password was refused three times over at least 5 s (fewer
// failures than the provider's per-account throttle allows); errs are
// the failed attempts' errors, the last nil when an attempt succeeded.
func (l *runner) check(ctx context.Context, a Account) (refused bool, errs []error) {
	start := time.Now()
	var firstRefusal time.Time
	refusals := 0
	for {
		var rec flowRecord
		l.loginFlow(ctx, &rec, a)
		if !rec.failed() {
			return false, append(errs, nil)
		}
		errs = append(errs, errors.New(rec.err))
		wait := 500 * time.Millisecond
		if rec.refused {
			if refusals == 0 {
				firstRefusal = time.Now()
			}
			refusals++
			if refusals >= 3 && time.Since(firstRefusal) >= 5*time.Second {
				return true, errs
			}
			wait = 2500 * time.Millisecond
		} else {
			refusals = 0
		}
		if time.Since(start) > time.Minute || ctx.Err() != nil {
			return false, errs
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
		}
	}
}

// signIn signs a in with the password from a new browser and returns the
// browser, signed in.
func (l *runner) signIn(ctx context.Context, a Account) (*browser, error) {
	b := newBrowser(l.issuer, l.tr, l.cfg.Timeout)
	f := newFlow()
	p, err := l.authorize(ctx, b, f)
	if err != nil {
		return nil, err
	}
	p, err = b.do(ctx, http.MethodPost, l.cfg.Issuer+"/login", url.Values{"authRequestID": {p.authRequestID()},
		"email": {a.Email}, "password": {a.Password}})
	if err == nil && p.status != http.StatusSeeOther {
		err = statusError(p)
	}
	if err != nil {
		return nil, fmt.Errorf("login: %w", err)
	}
	return b, nil
}

// codeFor runs a flow in a signed-in browser (no password, consent
// given) and returns the code.
func (l *runner) codeFor(ctx context.Context, b *browser, f flow) (string, error) {
	p, err := b.do(ctx, http.MethodGet, l.rp.authorizeURL(f), nil)
	if err == nil {
		p, err = b.follow(ctx, p)
	}
	if err != nil {
		return "", err
	}
	if !p.toClient(l.issuer) {
		return "", fmt.Errorf("no redirect to the client: %w", statusError(p))
	}
	return l.rp.code(p, f)
}

// RaceResult is what ReplayRace saw.
type RaceResult struct {
	Rounds int
	// Successes counts the token answers with status 200, over all
	// rounds; Extra those beyond the first of each round (must be 0).
	Successes, Extra int
	// NoWinner counts rounds where no redemption succeeded.
	NoWinner int
	// Errors counts the redemptions that failed without an answer.
	Errors int
}

// ReplayRace gets a code for a (signed in once, with the password) and
// redeems it racers times at once, spread over the token endpoints at
// bases (each instance's URL; the issuer when empty), rounds times.
func ReplayRace(ctx context.Context, cfg Config, a Account, bases []string, racers, rounds int) (RaceResult, error) {
	var res RaceResult
	if racers < 2 || rounds < 1 {
		return res, fmt.Errorf("loginload: %d racers, %d rounds: want at least 2 and 1", racers, rounds)
	}
	rn, err := newRunner(ctx, cfg, racers)
	if err != nil {
		return res, err
	}
	defer rn.close()
	if len(bases) == 0 {
		bases = []string{cfg.Issuer}
	}
	b, err := rn.signIn(ctx, a)
	if err != nil {
		return res, err
	}
	for range rounds {
		f := newFlow()
		code, err := rn.codeFor(ctx, b, f)
		if err != nil {
			return res, err
		}
		form := url.Values{"grant_type": {"authorization_code"}, "code": {code},
			"code_verifier": {f.verifier}, "redirect_uri": {cfg.Client.RedirectURI}}
		start := make(chan struct{})
		var wins, fails int
		var mu sync.Mutex
		var wg sync.WaitGroup
		for i := range racers {
			tokenURL := strings.TrimSuffix(bases[i%len(bases)], "/") + strings.TrimPrefix(rn.rp.tokenURL, strings.TrimSuffix(cfg.Issuer, "/"))
			wg.Go(func() {
				<-start
				ans, err := rn.rp.token(ctx, tokenURL, form)
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err != nil && ans.Status == 0:
					fails++
				case ans.Status == http.StatusOK:
					wins++
				}
			})
		}
		close(start)
		wg.Wait()
		res.Rounds++
		res.Successes += wins
		res.Errors += fails
		if wins == 0 {
			res.NoWinner++
		} else {
			res.Extra += wins - 1
		}
	}
	return res, nil
}

// LatencyResult is what a fixed-rate run measured.
type LatencyResult struct {
	Requests, Failed int
	P50, P99, Max    time.Duration
	// Rate is the requests per second achieved.
	Rate float64
	Took time.Duration
}

func (r LatencyResult) String() string {
	return fmt.Sprintf("%d requests (%.1f/s), %d failed, p50 %s, p99 %s, max %s", r.Requests, r.Rate, r.Failed,
		r.P50.Round(100*time.Microsecond), r.P99.Round(100*time.Microsecond), r.Max.Round(100*time.Microsecond))
}

// TokenLatency measures the token endpoint at rate redemptions a second
// for d: workers browsers, each signed in once as a with the password,
// get codes without a password (not timed) and redeem them; only the
// token request is timed. At most rate × d requests are made.
func TokenLatency(ctx context.Context, cfg Config, a Account, workers int, rate float64, d time.Duration) (LatencyResult, error) {
	var res LatencyResult
	if workers < 1 || rate <= 0 || d <= 0 {
		return res, fmt.Errorf("loginload: %d workers at %.1f/s for %s: want positive values", workers, rate, d)
	}
	rn, err := newRunner(ctx, cfg, workers)
	if err != nil {
		return res, err
	}
	defer rn.close()
	browsers := make([]*browser, workers)
	for i := range browsers {
		if browsers[i], err = rn.signIn(ctx, a); err != nil {
			return res, err
		}
	}
	total := int(rate * d.Seconds())
	tickets := make(chan struct{})
	go func() {
		defer close(tickets)
		t := time.NewTicker(time.Duration(float64(time.Second) / rate))
		defer t.Stop()
		for range total {
			select {
			case <-t.C:
			case <-ctx.Done():
				return
			}
			select {
			case tickets <- struct{}{}:
			case <-ctx.Done():
				return
			}
		}
	}()
	var mu sync.Mutex
	var lat []time.Duration
	t0 := time.Now()
	var wg sync.WaitGroup
	for _, b := range browsers {
		wg.Go(func() {
			for range tickets {
				f := newFlow()
				code, err := rn.codeFor(ctx, b, f)
				var took time.Duration
				if err == nil {
					t := time.Now()
					_, err = rn.rp.exchange(ctx, f, code)
					took = time.Since(t)
				}
				mu.Lock()
				res.Requests++
				if err != nil {
					res.Failed++
				} else {
					lat = append(lat, took)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	res.Took = time.Since(t0)
	res.Rate = float64(res.Requests) / res.Took.Seconds()
	res.P50, res.P99, res.Max = Percentile(lat, 50), Percentile(lat, 99), Percentile(lat, 100)
	return res, ctx.Err()
}

// LoginRate signs the accounts in, workers at a time, as fast as the
// provider answers, for d: full flows with the password from fresh
// browsers (code, verified ID token, refresh). The statistics' PerSecond
// is the provider's login throughput.
func LoginRate(ctx context.Context, cfg Config, accounts []Account, workers int, d time.Duration) (Stats, error) {
	if workers < 1 || d <= 0 || len(accounts) == 0 {
		return Stats{}, fmt.Errorf("loginload: %d workers for %s over %d accounts: want positive values", workers, d, len(accounts))
	}
	rn, err := newRunner(ctx, cfg, workers)
	if err != nil {
		return Stats{}, err
	}
	defer rn.close()
	rctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var mu sync.Mutex
	var recs []flowRecord
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := w; rctx.Err() == nil; i += workers {
				rec := flowRecord{start: time.Now()}
				rn.loginFlow(rctx, &rec, accounts[i%len(accounts)])
				rec.took = time.Since(rec.start)
				if rctx.Err() != nil {
					return // cut by the end: neither a success nor a failure
				}
				mu.Lock()
				recs = append(recs, rec)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return statsOf(recs), ctx.Err()
}
