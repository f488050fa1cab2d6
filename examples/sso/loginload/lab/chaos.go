package lab

import (
	"context"
	"fmt"
	"slices"
	"time"

	"hakit.dev/examples/sso/loginload"
)

// Step is one way the lab breaks the provider.
type Step string

// The chaos steps, in the order Chaos runs them by default.
const (
	// RollingRestart SIGTERMs and restarts every instance in turn (each
	// drains: HAProxy takes it out before it stops).
	RollingRestart Step = "rolling-restart"
	// KillInstance kill -9s one instance, then starts it again.
	KillInstance Step = "kill-instance"
	// PGFailover kill -9s the Patroni leader's machine; Patroni promotes
	// the synchronous standby. The old leader is started again and
	// rejoins as a replica.
	PGFailover Step = "pg-failover"
	// RedisFailover kill -9s the Redis master; the Sentinels promote the
	// replica. The old master is started again as a replica.
	RedisFailover Step = "redis-failover"
)

// Steps lists every step in its default order.
func Steps() []Step { return []Step{RollingRestart, KillInstance, PGFailover, RedisFailover} }

// ChaosOptions shape a chaos run.
type ChaosOptions struct {
	// Load is the login load that runs the whole time; Issuer and
	// Client are set to the lab's. Its Duration must cover the run:
	// Chaos stops it when the steps are done.
	Load loginload.Config
	// Steps are run in order. Defaults to Steps().
	Steps []Step
	// Settle is the load seen before the first step and after each.
	// Defaults to 3s.
	Settle time.Duration
	// CheckWorkers is how many accounts are signed in to at once in the
	// checks. Defaults to 4.
	CheckWorkers int
}

// StepResult is what one step did and what was checked after it.
type StepResult struct {
	Step Step
	Took time.Duration
	// Load is the flows that finished from the step's start until its
	// check had signed in every account (the step, Settle, the check):
	// over a run, every flow after the first Settle is in one step.
	Load loginload.Stats
	// Window is the flows that finished from the kill until the service
	// was back (the new leader or master, plus 2 s): PGFailover and
	// RedisFailover only.
	Window loginload.Stats
	// Check is the sign-in of every account acknowledged before the
	// check started (the load runs on meanwhile).
	Check loginload.CheckResult
}

// ChaosResult is a whole chaos run.
type ChaosResult struct {
	Steps []StepResult
	// Load is the whole run's statistics.
	Load loginload.Stats
	// Final is the check of every account acknowledged over the run,
	// after the load stopped.
	Final loginload.CheckResult
	// Accounts are the accounts acknowledged over the run.
	Accounts []loginload.Account
}

// Chaos runs the login load through HAProxy and the steps one after
// another, signing in every account acknowledged so far after each. It
// returns what it measured up to the first error.
func (l *Lab) Chaos(ctx context.Context, opts ChaosOptions) (res ChaosResult, err error) {
	if len(opts.Steps) == 0 {
		opts.Steps = Steps()
	}
	for _, s := range opts.Steps {
		if !slices.Contains(Steps(), s) {
			return res, fmt.Errorf("lab: unknown chaos step %q", s)
		}
	}
	if opts.Settle == 0 {
		opts.Settle = 3 * time.Second
	}
	if opts.CheckWorkers == 0 {
		opts.CheckWorkers = 4
	}
	opts.Load.Issuer, opts.Load.Client = l.URL, l.Client
	load, err := loginload.Start(ctx, opts.Load)
	if err != nil {
		return res, err
	}
	checkCfg := loginload.Config{Issuer: l.URL, Client: l.Client, Password: opts.Load.Password}
	defer func() {
		res.Load = load.Stop()
		res.Accounts = load.Accounts()
		if err != nil {
			return
		}
		res.Final, err = loginload.Check(ctx, checkCfg, res.Accounts, opts.CheckWorkers)
		l.opts.Logf("lab: whole run: %s; final check: %s", res.Load, res.Final)
	}()
	if err := sleep(ctx, opts.Settle); err != nil {
		return res, err
	}
	for _, s := range opts.Steps {
		select {
		case <-load.Done():
			return res, fmt.Errorf("lab: the load ended before step %s: raise Load.Duration or Load.MaxFlows", s)
		default:
		}
		t0 := time.Now()
		mark := load.Mark()
		sr := StepResult{Step: s}
		l.opts.Logf("lab: step %s", s)
		if err := l.step(ctx, s, load, &sr); err != nil {
			res.Steps = append(res.Steps, sr)
			return res, fmt.Errorf("lab: step %s: %w", s, err)
		}
		if err := sleep(ctx, opts.Settle); err != nil {
			return res, err
		}
		sr.Check, err = loginload.Check(ctx, checkCfg, load.Accounts(), opts.CheckWorkers)
		sr.Load = load.Since(mark)
		sr.Took = time.Since(t0)
		res.Steps = append(res.Steps, sr)
		if err != nil {
			return res, err
		}
		l.opts.Logf("lab: after %s (%s): load %s; check: %s", s, sr.Took.Round(100*time.Millisecond), sr.Load, sr.Check)
	}
	return res, nil
}

func (l *Lab) step(ctx context.Context, s Step, load *loginload.Load, sr *StepResult) error {
	switch s {
	case RollingRestart:
		return l.RollingRestart(ctx)
	case KillInstance:
		i := len(l.Instances) / 2
		if err := l.KillInstance(ctx, i); err != nil {
			return err
		}
		return l.StartInstance(ctx, i)
	case PGFailover, RedisFailover:
		// The window: from the kill until the new leader or master has
		// served for 2 s, while the old one is still down.
		mark := load.Mark()
		window := func() error {
			if err := sleep(ctx, 2*time.Second); err != nil {
				return err
			}
			sr.Window = load.Since(mark)
			return nil
		}
		failover := l.FailoverRedis
		if s == PGFailover {
			failover = l.FailoverPostgres
		}
		_, err := failover(ctx, window)
		return err
	}
	return fmt.Errorf("unknown step %q", s)
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
