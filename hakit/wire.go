package hakit

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"hakit.dev/health"
	"hakit.dev/jobs"
)

// wiring is what the one-call wiring methods ([App.Sessions], [App.Jobs],
// [App.Worker], [App.Relay], [App.Scheduler], [App.Uploads]) made and
// share. It is used before Run only, on the goroutine that sets the app
// up, as the router is.
type wiring struct {
	jobs        *jobs.Client // made by Jobs, or by Relay or Scheduler with defaults
	jobsDefault bool         // jobs was made with defaults, not by Jobs
	// maintenanceEvery is the mean period of the maintenance tasks
	// (uploads cleanup, expired sessions); zero means an hour. Tests set
	// it shorter.
	maintenanceEvery time.Duration
	// maintenanceAge, when set, replaces the ages after which the
	// maintenance tasks take an upload as abandoned. Tests set it.
	maintenanceAge time.Duration
}

// beforeRun returns an error when Run has started: what a wiring method
// would add then is never started (App.Add only logs a warning, having
// no error to return).
func (a *App) beforeRun(what string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.started {
		return fmt.Errorf("hakit: %s: called after Run started, so it would never start: call it before Run", what)
	}
	return nil
}

// periodic is a component that runs a maintenance task about every
// period on this instance, at a random point of each period so instances
// seldom run it at once (the tasks are safe to run anywhere, any number
// of times), and closes what it was given at shutdown.
type periodic struct {
	log    *slog.Logger
	what   string // "uploads maintenance"
	name   string // its store's name, for logs
	every  time.Duration
	run    func(ctx context.Context) error
	close  func()         // at Stop, if set
	checks []health.Check // readiness checks of what it keeps

	cancel context.CancelFunc
	done   chan struct{}
}

func (p *periodic) HealthChecks() []health.Check { return p.checks }

// Start starts the loop; it does not wait for a first run.
func (p *periodic) Start(context.Context) error {
	every := p.every
	if every <= 0 {
		every = time.Hour
	}
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel, p.done = cancel, make(chan struct{})
	go func() {
		defer close(p.done)
		wait := rand.N(every) // the first run: anywhere in the first period
		for {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			rctx, stop := context.WithTimeout(ctx, max(every/2, time.Second))
			if err := p.run(rctx); err != nil && ctx.Err() == nil {
				p.log.Warn("hakit: "+p.what+" failed; retried next period", "name", p.name, "err", err)
			}
			stop()
			wait = every/2 + rand.N(every) // every on average
		}
	}()
	return nil
}

// Stop ends the loop (a run under way is cancelled), then closes what it
// keeps; it returns when that is done or ctx ends.
func (p *periodic) Stop(ctx context.Context) error {
	if p.cancel == nil {
		return nil // never started
	}
	p.cancel()
	done := make(chan struct{})
	go func() {
		<-p.done
		if p.close != nil {
			p.close()
		}
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
