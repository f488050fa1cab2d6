package main

import (
	"context"
	"os"
	"testing"
	"time"

	"hakit.dev/examples/sso/loginload"
	"hakit.dev/examples/sso/loginload/lab"
	"hakit.dev/hatest"
)

// TestChaos runs three provider instances behind HAProxy on Patroni
// (synchronous mode) and Redis with Sentinels, with virtual users signing
// up and signing in the whole time (code flow with PKCE, ID token
// verified against the JWKS, a refresh), and breaks one thing after
// another: a rolling restart, kill -9 of an instance, the PostgreSQL
// leader, the Redis master. After each, every account acknowledged so
// far signs in; no token answer given with success is unknown right
// after; the failed login flows are counted per step, at most 1 % over
// the run.
func TestChaos(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: the chaos run takes about 3 minutes")
	}
	if os.Getenv(hatest.EnvSkipServices) == "1" {
		t.Skipf("%s=1: not starting real services", hatest.EnvSkipServices)
	}
	// The whole test, build and services included, stays within 5
	// minutes.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	l := startChaosLab(ctx, t)

	res, err := l.Chaos(ctx, lab.ChaosOptions{
		Load: loginload.Config{Users: 6, Rate: 12, Duration: 3 * time.Minute, MaxFlows: 3000, SignupEvery: 8},
	})
	for _, s := range res.Steps {
		t.Logf("%s (%s): %s", s.Step, s.Took.Round(100*time.Millisecond), s.Load)
		if s.Window.Flows > 0 {
			t.Logf("%s window: %s", s.Step, s.Window)
		}
		t.Logf("%s check: %s", s.Step, s.Check)
		if !s.Check.OK() {
			t.Errorf("after %s: %s", s.Step, s.Check)
		}
		if s.Load.Refused > 0 || s.Load.LostGrants > 0 {
			t.Errorf("%s: %d acknowledged accounts refused, %d token answers lost", s.Step, s.Load.Refused, s.Load.LostGrants)
		}
		if s.Step == lab.RollingRestart && s.Load.Failed > 0 {
			// Each instance drains before it stops: a deploy fails nobody.
			t.Errorf("rolling restart: %d of %d login flows failed: %v", s.Load.Failed, s.Load.Flows, s.Load.Errors)
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("whole run: %s", res.Load)
	t.Logf("final check: %s", res.Final)
	if !res.Final.OK() {
		t.Errorf("final check: %s", res.Final)
	}
	if res.Load.Refused > 0 || res.Load.LostGrants > 0 {
		t.Errorf("whole run: %d acknowledged accounts refused, %d token answers lost", res.Load.Refused, res.Load.LostGrants)
	}
	if len(res.Accounts) < 2*len(res.Steps) {
		t.Errorf("only %d accounts acknowledged over %d steps: the load did not sign up", len(res.Accounts), len(res.Steps))
	}
	if res.Load.Flows-res.Load.Signups < 10*len(res.Steps) {
		t.Errorf("only %d sign-in flows over %d steps: the load did not sign in", res.Load.Flows-res.Load.Signups, len(res.Steps))
	}
	if pct := res.Load.FailedPct(); pct > 1 {
		t.Errorf("%.2f%% of login flows failed over the run (%d of %d), want at most 1%%", pct, res.Load.Failed, res.Load.Flows)
	}
}

// startChaosLab starts the lab with the test binary as the provider
// (it runs the app's main with asApp=1, under the race detector when the
// tests are: no second build) and the cheap argon2id parameters of the
// other tests. The lab stops when the test ends; a failed test logs the
// instances' last output lines.
func startChaosLab(ctx context.Context, t *testing.T) *lab.Lab {
	t.Helper()
	bin, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	l, err := lab.Start(ctx, lab.Options{Bin: bin, Logf: t.Logf,
		Env: []string{asApp + "=1", "SSO_ARGON2_MEMORY_KIB=1024", "SSO_ARGON2_TIME=1", "SSO_ARGON2_THREADS=1"}})
	if err != nil {
		t.Fatal(err) // with the last output lines of the instance that did not start
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("--- provider output (last lines):\n%s", l.OutputTail(200))
		}
		if err := l.Close(); err != nil {
			t.Errorf("lab: close: %v", err)
		}
	})
	return l
}

// TestLoginLoad runs the chaos test's instruments on a quiet cluster
// (two instances behind HAProxy): the load signs up and signs in without
// a failure and counts what it did; the check signs every acknowledged
// account in and reports an account that was never created, or whose
// password changed, as lost; the replay race finds exactly one winner per
// round; the token and login measurements count their requests.
func TestLoginLoad(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 2, true)
	a1 := testClients[0]
	cfg := loginload.Config{Issuer: c.issuer, Client: loginload.Client{ID: a1.ID, Secret: a1.Secret, RedirectURI: a1.RedirectURIs[0]}}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	lc := cfg
	lc.Users, lc.MaxFlows, lc.SignupEvery, lc.Duration = 2, 12, 3, 2*time.Minute
	load, err := loginload.Start(ctx, lc)
	if err != nil {
		t.Fatal(err)
	}
	<-load.Done()
	st := load.Stop()
	t.Logf("load: %s", st)
	accounts := load.Accounts()
	// Each user signs up, signs in twice, signs up as someone else…;
	// the 12 flows are shared out as the users ask for them.
	if st.Flows != 12 || st.Failed != 0 || st.Signups < 4 || st.Signups > 6 || st.Acknowledged != st.Signups || len(accounts) != st.Signups {
		t.Fatalf("load: %s; %d accounts; want 12 flows, 4 to 6 sign-ups, all acknowledged, none failed", st, len(accounts))
	}
	for _, s := range []loginload.Step{loginload.StepAuthorize, loginload.StepToken, loginload.StepVerify, loginload.StepRefresh} {
		if n := st.Steps[s].Attempts; n != 12 || st.Steps[s].Failures != 0 {
			t.Errorf("step %s: %d attempts, %d failures; want 12 and 0", s, n, st.Steps[s].Failures)
		}
	}
	if l, r := st.Steps[loginload.StepLogin].Attempts, st.Steps[loginload.StepRegister].Attempts; l != 12-st.Signups || r != st.Signups {
		t.Errorf("login %d, register %d attempts; want %d and %d", l, r, 12-st.Signups, st.Signups)
	}

	// The check finds the accounts, and misses one that does not exist
	// or whose password is not the one acknowledged.
	wrong := accounts[0]
	wrong.Password = "another password, not this one"
	check := append(accounts, loginload.Account{Email: "never-created@example.com", Password: lc.Password}, wrong)
	res, err := loginload.Check(ctx, cfg, check, 2)
	if err != nil {
		t.Fatal(err)
	}
	if res.Checked != 6 || len(res.Lost) != 2 || len(res.Unknown) != 0 || res.OK() {
		t.Errorf("check: %s; want 6 checked, 2 lost", res)
	}

	race, err := loginload.ReplayRace(ctx, cfg, accounts[1], []string{c.instances[0].url(), c.instances[1].url()}, 20, 2)
	if err != nil {
		t.Fatal(err)
	}
	if race.Rounds != 2 || race.Successes != 2 || race.Extra != 0 || race.NoWinner != 0 || race.Errors != 0 {
		t.Errorf("replay race: %+v; want one success in each of 2 rounds", race)
	}

	tok, err := loginload.TokenLatency(ctx, cfg, accounts[1], 2, 10, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if tok.Requests != 10 || tok.Failed != 0 || tok.P99 <= 0 {
		t.Errorf("token latency: %s; want 10 requests, none failed", tok)
	}
	lr, err := loginload.LoginRate(ctx, cfg, accounts, 2, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if lr.Flows == 0 || lr.Failed != 0 || lr.PerSecond() <= 0 {
		t.Errorf("login rate: %s", lr)
	}

	// Bad input is refused before anything runs.
	if _, err := loginload.Start(ctx, loginload.Config{Issuer: c.issuer}); err == nil {
		t.Error("Start without a client: no error")
	}
	if _, err := loginload.ReplayRace(ctx, cfg, accounts[1], nil, 1, 1); err == nil {
		t.Error("ReplayRace with one racer: no error")
	}
	if _, err := loginload.TokenLatency(ctx, cfg, accounts[1], 1, 0, time.Second); err == nil {
		t.Error("TokenLatency at rate 0: no error")
	}
	if _, err := loginload.LoginRate(ctx, cfg, nil, 1, time.Second); err == nil {
		t.Error("LoginRate without accounts: no error")
	}
}
