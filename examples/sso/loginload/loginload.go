// Package loginload signs users in to the SSO provider the way relying
// parties and browsers do, many at once, and counts what went wrong: a
// load for chaos tests and benchmarks.
//
// Each virtual user runs the authorization code flow with PKCE (S256)
// through the provider's public URL (HAProxy in front of the instances):
// the first flow registers a new account and gives consent; the
// following ones sign in with the password from a fresh browser (consent
// remembered), redeem the code, verify the ID token against the JWKS
// (signature, issuer, audience, nonce) and refresh once. Every
// Config.SignupEvery flows the user signs up again as a new person, so
// accounts keep being created during the whole run.
//
// An account is acknowledged when the provider answered its
// registration with success (the redirect after the form); Check signs
// every acknowledged account in again after a failure has been
// provoked.
//
//	load, _ := loginload.Start(ctx, loginload.Config{Issuer: url, Client: c, Users: 8, Duration: time.Minute})
//	… break something …
//	stats := load.Stop()
//	res := loginload.Check(ctx, loginload.Config{Issuer: url, Client: c}, load.Accounts())
package loginload

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// Config shapes a load. Issuer and Client are required; the load is
// bounded by Duration and MaxFlows, whichever comes first.
type Config struct {
	// Issuer is the provider's public URL (its SSO_ISSUER).
	Issuer string
	// Client is the relying party the users sign in to.
	Client Client
	// Users is the number of virtual users, each running one flow at a
	// time. Defaults to 4.
	Users int
	// Duration bounds the run. Defaults to 1 minute.
	Duration time.Duration
	// MaxFlows bounds the flows started over the run. Defaults to
	// 10,000.
	MaxFlows int
	// Rate caps the flows started per second over all users; 0 means
	// as fast as the users go.
	Rate float64
	// SignupEvery makes every n-th flow of a user the sign-up of a new
	// account. Defaults to 10; negative: each user signs up once.
	SignupEvery int
	// Password is every account's password. Defaults to a fixed
	// 24-character one.
	Password string
	// RunID makes the accounts' e-mail addresses unique to this run.
	// Defaults to a random one.
	RunID string
	// Timeout bounds each HTTP request. Defaults to 30s: a failover
	// holds requests that long at most.
	Timeout time.Duration
	// ErrorPause is how long a user whose flow failed waits before the
	// next, as a person reading an error page does; without it a user
	// looping as fast as the answers come would count one short outage
	// many times. Defaults to 1s; negative: no pause.
	ErrorPause time.Duration
}

func (c *Config) defaults() error {
	if c.Issuer == "" || c.Client.ID == "" || c.Client.RedirectURI == "" {
		return errors.New("loginload: Config needs Issuer, Client.ID and Client.RedirectURI")
	}
	if _, err := url.Parse(c.Issuer); err != nil {
		return fmt.Errorf("loginload: Issuer: %w", err)
	}
	if c.Users < 0 || c.MaxFlows < 0 || c.Rate < 0 || c.Duration < 0 {
		return errors.New("loginload: Users, MaxFlows, Rate and Duration cannot be negative")
	}
	if c.Users == 0 {
		c.Users = 4
	}
	if c.Duration == 0 {
		c.Duration = time.Minute
	}
	if c.MaxFlows == 0 {
		c.MaxFlows = 10_000
	}
	if c.SignupEvery == 0 {
		c.SignupEvery = 10
	}
	if c.Password == "" {
		c.Password = "load-password-0123456789"
	}
	if c.RunID == "" {
		c.RunID = strings.ToLower(rand.Text()[:8])
	}
	if c.Timeout == 0 {
		c.Timeout = 30 * time.Second
	}
	if c.ErrorPause == 0 {
		c.ErrorPause = time.Second
	}
	return nil
}

// Account is an account whose registration the provider acknowledged.
type Account struct {
	Email, Password string
	// At is when the acknowledgement arrived.
	At time.Time
}

// Load is a running load. Its methods are safe for concurrent use.
type Load struct {
	*runner
	cancel context.CancelFunc
	done   chan struct{}
	start  time.Time

	mu       sync.Mutex
	flows    []flowRecord
	accounts []Account
}

// runner runs flows against one provider.
type runner struct {
	cfg    Config
	rp     *rp
	issuer *url.URL
	tr     *http.Transport
}

// newRunner checks cfg and reads the provider's discovery document.
func newRunner(ctx context.Context, cfg Config, conns int) (*runner, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	issuer, _ := url.Parse(cfg.Issuer)
	tr := newTransport(conns)
	r, err := newRP(ctx, cfg.Issuer, cfg.Client, &http.Client{Transport: tr, Timeout: cfg.Timeout})
	if err != nil {
		tr.CloseIdleConnections()
		return nil, err
	}
	return &runner{cfg: cfg, rp: r, issuer: issuer, tr: tr}, nil
}

func (l *runner) close() { l.tr.CloseIdleConnections() }

// Start checks the provider's discovery document and starts the users.
func Start(ctx context.Context, cfg Config) (*Load, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	rn, err := newRunner(ctx, cfg, cfg.Users)
	if err != nil {
		return nil, err
	}
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.Duration)
	l := &Load{runner: rn, cancel: cancel, done: make(chan struct{}), start: time.Now()}
	tickets := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { l.dispense(lctx, tickets) })
	for u := range cfg.Users {
		wg.Go(func() { l.user(lctx, u, tickets) })
	}
	go func() {
		<-ctx.Done() // the caller's context ends the load too
		cancel()
	}()
	go func() {
		wg.Wait()
		cancel()
		rn.close()
		close(l.done)
	}()
	return l, nil
}

func newTransport(conns int) *http.Transport {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 2*conns + 4
	return tr
}

// dispense hands out one ticket per flow: MaxFlows in all, at Rate.
func (l *Load) dispense(ctx context.Context, tickets chan<- struct{}) {
	defer close(tickets)
	var tick <-chan time.Time
	if l.cfg.Rate > 0 {
		t := time.NewTicker(time.Duration(float64(time.Second) / l.cfg.Rate))
		defer t.Stop()
		tick = t.C
	}
	for range l.cfg.MaxFlows {
		if tick != nil {
			select {
			case <-tick:
			case <-ctx.Done():
				return
			}
		}
		select {
		case tickets <- struct{}{}:
		case <-ctx.Done():
			return
		}
	}
}

// user is one virtual user: sign up, then sign in again and again.
func (l *Load) user(ctx context.Context, u int, tickets <-chan struct{}) {
	var acct *Account // the account signed in with, once acknowledged or found to exist
	person := 0
	email := l.email(u, person)
	n := 0
	for range tickets {
		if ctx.Err() != nil {
			return
		}
		if acct != nil && l.cfg.SignupEvery > 0 && n > 0 && n%l.cfg.SignupEvery == 0 {
			person++
			email, acct = l.email(u, person), nil
		}
		n++
		rec := flowRecord{start: time.Now(), signup: acct == nil}
		if acct == nil {
			var known bool
			known, rec.acked = l.signupFlow(ctx, &rec, email)
			if known {
				acct = &Account{Email: email, Password: l.cfg.Password}
			}
		} else {
			l.loginFlow(ctx, &rec, *acct)
		}
		rec.took = time.Since(rec.start)
		cut := ctx.Err() != nil && rec.failed() // cut by the end of the run: not the provider's failure
		l.mu.Lock()
		if !cut {
			l.flows = append(l.flows, rec)
		}
		if rec.acked {
			l.accounts = append(l.accounts, Account{Email: email, Password: l.cfg.Password, At: rec.ackAt})
		}
		l.mu.Unlock()
		if cut {
			return
		}
		if rec.failed() && l.cfg.ErrorPause > 0 {
			select {
			case <-time.After(l.cfg.ErrorPause):
			case <-ctx.Done():
				return
			}
		}
	}
}

func (l *Load) email(u, person int) string {
	return fmt.Sprintf("load-%s-u%d-p%d@example.com", l.cfg.RunID, u, person)
}

// signupFlow registers email in a new flow and finishes it. known
// reports that the account exists (acknowledged now, or found taken by an
// earlier attempt whose answer was lost); acked that this registration
// was acknowledged.
func (l *runner) signupFlow(ctx context.Context, rec *flowRecord, email string) (known, acked bool) {
	b := newBrowser(l.issuer, l.tr, l.cfg.Timeout)
	f := newFlow()
	p, ok := rec.run(StepAuthorize, func() (page, error) { return l.authorize(ctx, b, f) })
	if !ok {
		return false, false
	}
	id := p.authRequestID()
	p, ok = rec.run(StepRegister, func() (page, error) {
		p, err := b.do(ctx, http.MethodPost, l.cfg.Issuer+"/register", url.Values{"authRequestID": {id},
			"email": {email}, "name": {"Load User"}, "password": {l.cfg.Password}, "password2": {l.cfg.Password}})
		if err != nil {
			return p, err
		}
		if p.status == http.StatusConflict {
			known = true // an earlier attempt created it: sign in next time
			return p, errExists
		}
		if p.status != http.StatusSeeOther {
			return p, statusError(p)
		}
		known, acked = true, true
		rec.ackAt = time.Now()
		return b.follow(ctx, p)
	})
	if !ok {
		if known && !acked {
			rec.exists = true
		}
		return known, acked
	}
	l.finishFlow(ctx, rec, b, f, p, true)
	return known, acked
}

// loginFlow signs acct in from a fresh browser and finishes the flow.
func (l *runner) loginFlow(ctx context.Context, rec *flowRecord, acct Account) {
	b := newBrowser(l.issuer, l.tr, l.cfg.Timeout)
	f := newFlow()
	p, ok := rec.run(StepAuthorize, func() (page, error) { return l.authorize(ctx, b, f) })
	if !ok {
		return
	}
	id := p.authRequestID()
	p, ok = rec.run(StepLogin, func() (page, error) {
		p, err := b.do(ctx, http.MethodPost, l.cfg.Issuer+"/login", url.Values{"authRequestID": {id},
			"email": {acct.Email}, "password": {acct.Password}})
		if err != nil {
			return p, err
		}
		if p.status == http.StatusUnauthorized {
			rec.refused = true
		}
		if p.status != http.StatusSeeOther {
			return p, statusError(p)
		}
		return b.follow(ctx, p)
	})
	if !ok {
		return
	}
	l.finishFlow(ctx, rec, b, f, p, false)
}

// authorize sends the authorization request and expects the login form.
func (l *runner) authorize(ctx context.Context, b *browser, f flow) (page, error) {
	p, err := b.do(ctx, http.MethodGet, l.rp.authorizeURL(f), nil)
	if err == nil {
		p, err = b.follow(ctx, p)
	}
	if err != nil {
		return p, err
	}
	if p.status != http.StatusOK || p.authRequestID() == "" {
		return p, statusError(p)
	}
	return p, nil
}

// finishFlow goes from the page after the password (consent or the
// redirect to the client) to verified tokens and one refresh.
func (l *runner) finishFlow(ctx context.Context, rec *flowRecord, b *browser, f flow, p page, consent bool) {
	if consent || !p.toClient(l.issuer) {
		var ok bool
		p, ok = rec.run(StepConsent, func() (page, error) {
			if p.toClient(l.issuer) {
				return p, nil // consent given before, by an earlier attempt of this account
			}
			id := p.authRequestID()
			if p.status != http.StatusOK || id == "" || !strings.HasPrefix(p.url.Path, "/consent") {
				return p, statusError(p)
			}
			p, err := b.do(ctx, http.MethodPost, l.cfg.Issuer+"/consent", url.Values{"authRequestID": {id}, "decision": {"allow"}})
			if err == nil {
				p, err = b.follow(ctx, p)
			}
			if err == nil && !p.toClient(l.issuer) {
				err = statusError(p)
			}
			return p, err
		})
		if !ok {
			return
		}
	}
	var tok tokenAnswer
	if !rec.do(StepToken, func() error {
		code, err := l.rp.code(p, f)
		if err != nil {
			return err
		}
		tok, err = l.rp.exchange(ctx, f, code)
		return err
	}) {
		return
	}
	if !rec.do(StepVerify, func() error {
		_, err := l.rp.verify(ctx, f, tok.IDToken)
		return err
	}) {
		return
	}
	rec.do(StepRefresh, func() error {
		a, err := l.rp.token(ctx, l.rp.tokenURL, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tok.RefreshToken}})
		if err != nil {
			return err
		}
		if a.Status == http.StatusBadRequest && a.Error == "invalid_grant" {
			// The refresh token of a token answer given with 200 just
			// before is unknown: that answer was lost.
			rec.lostGrant = true
		}
		if a.Status != http.StatusOK || a.AccessToken == "" || a.RefreshToken == "" {
			return fmt.Errorf("status %d %s", a.Status, a.Error)
		}
		return nil
	})
}

// Done is closed when the load has ended (Duration, MaxFlows, Stop or
// the context given to Start).
func (l *Load) Done() <-chan struct{} { return l.done }

// Stop ends the load, waits for the flows under way to finish or be cut,
// and returns the whole run's statistics.
func (l *Load) Stop() Stats {
	l.cancel()
	<-l.done
	return l.Stats()
}

// Mark is a point in the load's history (see Since).
type Mark int

// Mark returns the current point: Since(m) later covers the flows that
// finished after it.
func (l *Load) Mark() Mark {
	l.mu.Lock()
	defer l.mu.Unlock()
	return Mark(len(l.flows))
}

// Stats returns the statistics of every flow finished so far.
func (l *Load) Stats() Stats { return l.Since(0) }

// Since returns the statistics of the flows finished since m.
func (l *Load) Since(m Mark) Stats {
	l.mu.Lock()
	recs := append([]flowRecord(nil), l.flows[min(int(m), len(l.flows)):]...)
	l.mu.Unlock()
	return statsOf(recs)
}

// Accounts returns the accounts acknowledged so far, oldest first.
func (l *Load) Accounts() []Account {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]Account(nil), l.accounts...)
}
