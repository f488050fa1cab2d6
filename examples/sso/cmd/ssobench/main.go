// Command ssobench measures the SSO provider in the lab (Patroni in
// synchronous mode, Redis with Sentinels, three instances behind HAProxy)
// and prints METRIC lines:
//
//   - a chaos run (rolling restart, kill -9 of an instance, PostgreSQL
//     leader and Redis master failovers) under a login load: accounts
//     lost, login flows failed;
//   - 20 redemptions of one code racing over the three instances, several
//     rounds: successes beyond the first;
//   - the token endpoint at a fixed rate through HAProxy: p99;
//   - logins (password, code, verified ID token, refresh) as fast as the
//     provider answers, with the production argon2id parameters: logins
//     a second.
//
// The root module's benchmark runner (go run ./bench sso) runs it and
// passes its METRIC lines through, since the root module cannot import
// this one.
//
//	cd examples/sso && go run ./cmd/ssobench
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/signal"
	"syscall"
	"text/tabwriter"
	"time"

	"hakit.dev/examples/sso/loginload"
	"hakit.dev/examples/sso/loginload/lab"
	"hakit.dev/hatest"
)

// params are the benchmark's knobs.
type params struct {
	dir          string
	tokenRate    float64
	rounds       int
	loginWorkers int
	verbose      bool
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var p params
	flag.StringVar(&p.dir, "sso", ".", "the sso module's directory (its main package is built)")
	flag.Float64Var(&p.tokenRate, "token-rate", 40, "code redemptions per second of the fixed-rate token endpoint run")
	flag.IntVar(&p.rounds, "replay-rounds", 10, "rounds of 20 racing redemptions of one code")
	flag.IntVar(&p.loginWorkers, "login-workers", 4, "concurrent users of the login throughput run")
	flag.BoolVar(&p.verbose, "v", false, "show the lab's progress and the instances' output")
	flag.Parse()
	if err := run(ctx, p, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "ssobench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, p params, out io.Writer) error {
	if p.tokenRate <= 0 || p.tokenRate > 500 {
		return fmt.Errorf("-token-rate %g: want more than 0, at most 500", p.tokenRate)
	}
	if p.rounds < 1 || p.rounds > 100 {
		return fmt.Errorf("-replay-rounds %d: want 1 to 100", p.rounds)
	}
	if p.loginWorkers < 1 || p.loginWorkers > 32 {
		return fmt.Errorf("-login-workers %d: want 1 to 32", p.loginWorkers)
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Minute)
	defer cancel()
	tmp, err := os.MkdirTemp("", "ssobench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	bin, err := hatest.BuildApp(ctx, p.dir, tmp)
	if err != nil {
		return err
	}
	// The chaos run hashes passwords with cheap argon2id parameters, as
	// the tests do: with 64 MiB and 3 passes a login, the instances'
	// hashing takes this machine's few cores from Patroni, etcd and the
	// Sentinels (in production, machines of their own), and the failures
	// counted would be an overload's, not the chaos's. The logins a
	// second are measured after a rolling restart into the production
	// parameters.
	opts := lab.Options{Bin: bin, Env: []string{"SSO_ARGON2_MEMORY_KIB=1024", "SSO_ARGON2_TIME=1", "SSO_ARGON2_THREADS=1"}}
	if p.verbose {
		logger := log.New(os.Stderr, "", log.Ltime)
		opts.Logf = logger.Printf
		opts.Output = os.Stderr
	}
	l, err := lab.Start(ctx, opts)
	if err != nil {
		return err
	}
	defer l.Close()

	res, err := l.Chaos(ctx, lab.ChaosOptions{
		Load: loginload.Config{Users: 6, Rate: 12, Duration: 10 * time.Minute, MaxFlows: 20_000, SignupEvery: 8},
	})
	if err != nil {
		return err
	}
	if len(res.Accounts) == 0 {
		return fmt.Errorf("the chaos run acknowledged no account")
	}
	cfg := loginload.Config{Issuer: l.URL, Client: l.Client}
	bases := make([]string, len(l.Instances))
	for i, in := range l.Instances {
		bases[i] = in.URL()
	}
	race, err := loginload.ReplayRace(ctx, cfg, res.Accounts[0], bases, 20, p.rounds)
	if err != nil {
		return fmt.Errorf("code replay race: %w", err)
	}

	// Production argon2id (RFC 9106: 64 MiB, 3 passes, 2 lanes), and
	// accounts hashed with it: a hash keeps the parameters it was made
	// with.
	if err := l.RollingRestart(ctx, "SSO_ARGON2_MEMORY_KIB=65536", "SSO_ARGON2_TIME=3", "SSO_ARGON2_THREADS=2"); err != nil {
		return fmt.Errorf("restart with the production argon2id parameters: %w", err)
	}
	signup := cfg
	signup.Users, signup.MaxFlows, signup.SignupEvery = p.loginWorkers, p.loginWorkers, -1
	load, err := loginload.Start(ctx, signup)
	if err != nil {
		return err
	}
	<-load.Done()
	if st := load.Stop(); st.Failed > 0 || len(load.Accounts()) == 0 {
		return fmt.Errorf("sign-ups with the production parameters: %s", st)
	}
	prodAccounts := load.Accounts()
	tokens, err := loginload.TokenLatency(ctx, cfg, prodAccounts[0], 8, p.tokenRate, 15*time.Second)
	if err != nil {
		return fmt.Errorf("token endpoint: %w", err)
	}
	logins, err := loginload.LoginRate(ctx, cfg, prodAccounts, p.loginWorkers, 20*time.Second)
	if err != nil {
		return fmt.Errorf("login throughput: %w", err)
	}

	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "step\ttook\tlogin flows\tfailed\tfailed %\tacknowledged accounts\tcheck after")
	for _, s := range res.Steps {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%.2f\t%d\t%s\n", s.Step, s.Took.Round(100*time.Millisecond), s.Load.Flows, s.Load.Failed,
			s.Load.FailedPct(), s.Load.Acknowledged, checkText(s.Check))
	}
	fmt.Fprintf(tw, "whole run\t\t%d\t%d\t%.2f\t%d\t%s\n", res.Load.Flows, res.Load.Failed, res.Load.FailedPct(), len(res.Accounts), checkText(res.Final))
	fmt.Fprintf(tw, "code replay, 20 racers × %d\t\t%d redemptions\t%d errors\t\t\t%d successes, %d extra, %d rounds without a winner\n",
		race.Rounds, 20*race.Rounds, race.Errors, race.Successes, race.Extra, race.NoWinner)
	fmt.Fprintf(tw, "token endpoint, %g/s\t%s\t%d\t%d\t\t\tp50 %s, p99 %s\n", p.tokenRate, tokens.Took.Round(100*time.Millisecond),
		tokens.Requests, tokens.Failed, ms(tokens.P50), ms(tokens.P99))
	fmt.Fprintf(tw, "logins, argon2id 64 MiB t=3, %d users\t%s\t%d\t%d\t\t\t%.1f/s, p50 %s, p99 %s\n", p.loginWorkers, logins.Took.Round(100*time.Millisecond),
		logins.Flows, logins.Failed, logins.PerSecond(), ms(logins.P50), ms(logins.P99))
	tw.Flush()
	for _, s := range res.Steps {
		if s.Load.Failed > 0 {
			fmt.Fprintf(out, "%s: %s\n", s.Step, s.Load)
		}
		if s.Window.Flows > 0 {
			fmt.Fprintf(out, "%s, failover window: %s\n", s.Step, s.Window)
		}
		if !s.Check.OK() {
			fmt.Fprintf(out, "%s, check: %s\n", s.Step, s.Check)
		}
	}
	fmt.Fprintf(out, "final check: %s\n", res.Final)
	if res.Load.Refused > 0 || res.Load.LostGrants > 0 {
		fmt.Fprintf(out, "during the run: %d sign-ins of acknowledged accounts refused, %d refresh tokens of successful answers unknown\n",
			res.Load.Refused, res.Load.LostGrants)
	}

	fmt.Fprintf(out, "METRIC sso_lost_accounts=%d\n", len(res.Final.Lost))
	fmt.Fprintf(out, "METRIC sso_login_failed_pct=%.2f\n", res.Load.FailedPct())
	fmt.Fprintf(out, "METRIC sso_code_replay_successes=%d\n", race.Extra)
	fmt.Fprintf(out, "METRIC sso_token_p99_ms=%.1f\n", float64(tokens.P99.Microseconds())/1000)
	fmt.Fprintf(out, "METRIC sso_logins_per_s=%.1f\n", logins.PerSecond())
	return nil
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }

func checkText(c loginload.CheckResult) string {
	if c.OK() {
		return fmt.Sprintf("ok (%d)", c.Checked)
	}
	return fmt.Sprintf("FAILED: %d lost, %d unknown of %d", len(c.Lost), len(c.Unknown), c.Checked)
}
