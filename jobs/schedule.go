package jobs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/robfig/cron/v3"
)

// Scheduler enqueues periodic tasks so that each period's task is enqueued
// once across all instances, whichever of them are running: every
// instance runs a Scheduler with the same schedules, and each tick's task
// has the ID "<name>-<tick time>", which the queue accepts only once. No
// leader, no election, no hand-over: when an instance dies the others'
// next tick simply goes through. (asynq's own Scheduler enqueues from every
// instance, so with three instances every task runs three times.)
//
// Ticks are computed from the wall clock, identically on every instance:
// "@every 1m" ticks at whole minutes since the Unix epoch, not a minute
// after the process started; cron expressions tick at their times.
// Clocks must agree to well within a period. A tick with no instance up is
// skipped, as cron does.
type Scheduler struct {
	client *Client
	log    *slog.Logger

	mu      sync.Mutex
	entries []*entry
	stop    context.CancelFunc
	wg      sync.WaitGroup
}

type entry struct {
	name, taskType string
	sched          cron.Schedule
	sealed         []byte
	opts           Options
}

// everySchedule ticks at multiples of d since the Unix epoch.
type everySchedule struct{ d time.Duration }

func (e everySchedule) Next(t time.Time) time.Time {
	return time.Unix(0, (t.UnixNano()/int64(e.d)+1)*int64(e.d))
}

// NewScheduler returns a Scheduler that enqueues with client.
func NewScheduler(client *Client, log *slog.Logger) *Scheduler {
	if log == nil {
		log = slog.Default()
	}
	return &Scheduler{client: client, log: log}
}

// Add schedules a task: spec is "@every <duration>" (at least 1s) or a
// standard 5-field cron expression (or @hourly, @daily, …). name must be
// unique and the same on every instance; it is part of the task IDs.
func (s *Scheduler) Add(name, spec, taskType string, payload any, opts Options) error {
	if name == "" || strings.ContainsAny(name, " \t") {
		return fmt.Errorf("jobs: schedule name %q: want a non-empty word", name)
	}
	e := &entry{name: name, taskType: taskType, opts: opts}
	if d, ok := strings.CutPrefix(spec, "@every "); ok {
		dur, err := time.ParseDuration(strings.TrimSpace(d))
		if err != nil || dur < time.Second || dur%time.Second != 0 {
			return fmt.Errorf("jobs: schedule %q: %q: want @every with whole seconds, at least 1s", name, spec)
		}
		e.sched = everySchedule{dur}
	} else {
		cs, err := cron.ParseStandard(spec)
		if err != nil {
			return fmt.Errorf("jobs: schedule %q: %w", name, err)
		}
		e.sched = cs
	}
	var err error
	if e.sealed, err = seal(0, payload); err != nil {
		return fmt.Errorf("jobs: schedule %q: %w", name, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, x := range s.entries {
		if x.name == name {
			return fmt.Errorf("jobs: schedule %q added twice", name)
		}
	}
	if s.stop != nil {
		return errors.New("jobs: Scheduler.Add after Start")
	}
	s.entries = append(s.entries, e)
	return nil
}

// Start starts the schedules.
func (s *Scheduler) Start(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stop != nil {
		return errors.New("jobs: Scheduler started twice")
	}
	ctx, stop := context.WithCancel(context.Background())
	s.stop = stop
	for _, e := range s.entries {
		s.wg.Go(func() { s.run(ctx, e) })
	}
	return nil
}

// Stop stops the schedules (the other instances' go on).
func (s *Scheduler) Stop(context.Context) error {
	s.mu.Lock()
	stop := s.stop
	s.mu.Unlock()
	if stop != nil {
		stop()
		s.wg.Wait()
	}
	return nil
}

func (s *Scheduler) run(ctx context.Context, e *entry) {
	next := e.sched.Next(time.Now())
	for {
		t := time.NewTimer(time.Until(next))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		id := e.name + "-" + strconv.FormatInt(next.Unix(), 10)
		// Retry briefly (a Redis failover): the tick's ID makes retries
		// and other instances' attempts harmless.
		for attempt := 0; attempt < 5; attempt++ {
			_, err := s.client.enqueueWithID(ctx, id, e.taskType, e.sealed, e.opts)
			if err == nil || ctx.Err() != nil {
				break
			}
			s.log.Warn("jobs: scheduled enqueue failed", "schedule", e.name, "tick", next, "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(200 * time.Millisecond):
			}
		}
		next = e.sched.Next(next)
		if now := time.Now(); next.Before(now) {
			next = e.sched.Next(now) // late (a pause): skip the missed ticks
		}
	}
}
