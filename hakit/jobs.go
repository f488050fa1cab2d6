package hakit

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"hakit.dev/jobs"
)

// Jobs returns the app's jobs client, on [App.Redis], made from cfg on
// the first call: the client the outbox relay ([App.Relay]) and the
// scheduler ([App.Scheduler]) enqueue with, and the one to call
// Client.Enqueue (or Client.Archived) on. cfg.NoReplicas is set when
// Config.Redis.NoReplicas is (the one knob for sessions and jobs) and
// cfg.Logger defaults to the app's. Its metrics are registered in
// [App.Registry]. It holds nothing of its own to close: its connections
// are the Redis client's, closed last.
//
// cfg.Namespace, the app's jobs namespace, defaults to
// Config.JobsNamespace (HAKIT_JOBS_NAMESPACE; none when unset: the
// queues as named, shared with every app on that Redis without a
// namespace, see docs/jobs.md). The app's workers ([App.Worker]) default
// to the same. A Namespace set here that differs from
// Config.JobsNamespace after a Worker took that as its own is an error:
// the worker would not serve the client's queues.
//
// Relay and Scheduler make the client with a zero cfg when Jobs was not
// called: call Jobs first to give it another configuration. Once the
// client exists, Jobs with a zero cfg returns it, and with another cfg
// is an error. Without Config.Redis, Jobs is an error.
func (a *App) Jobs(cfg jobs.ClientConfig) (*jobs.Client, error) {
	if a.wire.jobs != nil {
		if cfg != (jobs.ClientConfig{}) {
			how := "by an earlier Jobs"
			if a.wire.jobsDefault {
				how = "with defaults by Relay or Scheduler: call Jobs before them"
			}
			return nil, fmt.Errorf("hakit: Jobs: the jobs client was made already, %s", how)
		}
		return a.wire.jobs, nil
	}
	if a.rdb == nil {
		return nil, errNoRedis("Jobs")
	}
	cfg.NoReplicas = cfg.NoReplicas || a.cfg.Redis.NoReplicas
	if cfg.Logger == nil {
		cfg.Logger = a.log
	}
	if cfg.Namespace == "" {
		cfg.Namespace = a.cfg.JobsNamespace
	}
	if cfg.Namespace != a.cfg.JobsNamespace && a.workerTookJobsNamespace() {
		return nil, fmt.Errorf("hakit: Jobs: ClientConfig.Namespace %q, but a Worker made before took the app's jobs namespace %q (Config.JobsNamespace, HAKIT_JOBS_NAMESPACE) and would not serve this client's queues: call Jobs before Worker, set WorkerConfig.Namespace too, or set the namespace in HAKIT_JOBS_NAMESPACE",
			cfg.Namespace, a.cfg.JobsNamespace)
	}
	c := jobs.NewClient(a.rdb, cfg)
	if err := a.register(c, "Jobs", "ClientConfig.Name"); err != nil {
		c.Close()
		return nil, err
	}
	a.wire.jobs = c
	return c, nil
}

// jobsClient returns the app's jobs client, made with defaults if Jobs
// was not called.
func (a *App) jobsClient(what string) (*jobs.Client, error) {
	if a.wire.jobs != nil {
		return a.wire.jobs, nil
	}
	if a.rdb == nil {
		return nil, errNoRedis(what)
	}
	c, err := a.Jobs(jobs.ClientConfig{})
	a.wire.jobsDefault = err == nil
	return c, err
}

// Worker returns a jobs worker on [App.Redis], made from cfg, and adds
// it to the app as a component: it starts processing tasks when the app
// starts, and stops in the drain, after the HTTP server finished its
// requests (running tasks get WorkerConfig.ShutdownTimeout, or what is
// left of the shutdown's, to finish; those still running are put back on
// their queue). cfg.Logger defaults to the app's; its metrics are
// registered in [App.Registry]; Redis's readiness is the app's "redis"
// check. Register its handlers with jobs.Handle before Run.
//
// cfg.Namespace defaults to the app's jobs namespace: its jobs client's
// if [App.Jobs] was called, else Config.JobsNamespace (HAKIT_JOBS_NAMESPACE),
// which the client defaults to as well. Worker does not make the jobs
// client: Worker and Jobs may come in either order.
//
// Several workers (other queues, other concurrency) need different
// WorkerConfig.Name. Without Config.Redis, or after Run started, Worker
// is an error.
func (a *App) Worker(cfg jobs.WorkerConfig) (*jobs.Worker, error) {
	if err := a.beforeRun("Worker"); err != nil {
		return nil, err
	}
	if a.rdb == nil {
		return nil, errNoRedis("Worker")
	}
	if cfg.Logger == nil {
		cfg.Logger = a.log
	}
	tookDefault := false
	if cfg.Namespace == "" {
		if a.wire.jobs != nil {
			cfg.Namespace = a.wire.jobs.Namespace()
		} else {
			cfg.Namespace, tookDefault = a.cfg.JobsNamespace, true
		}
	}
	w := jobs.NewWorker(a.rdb, cfg)
	if err := a.register(w, "Worker", "WorkerConfig.Name"); err != nil {
		return nil, err
	}
	a.Add(componentName("jobs:worker", cfg.Name), workerComponent{lifeCycle{w}, tookDefault}) // its Redis check is the app's
	return w, nil
}

// workerComponent is a Worker added by [App.Worker]; defaultNamespace
// says it took Config.JobsNamespace, before the jobs client existed.
type workerComponent struct {
	lifeCycle
	defaultNamespace bool
}

// workerTookJobsNamespace reports whether a Worker took the app's jobs
// namespace (Config.JobsNamespace) as its own before the jobs client
// was made.
func (a *App) workerTookJobsNamespace() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, nc := range a.components {
		if wc, ok := nc.c.(workerComponent); ok && wc.defaultNamespace {
			return true
		}
	}
	return false
}

// Relay returns an outbox relay and adds it to the app as a component: it
// moves the rows that Outbox.EnqueueTx wrote in committed transactions to
// the queue, from when the app starts until the drain (after the HTTP
// server finished its requests). cfg.DB defaults to [App.DB], cfg.Client
// to the app's jobs client ([App.Jobs]), cfg.Logger to the app's; the
// outbox table (hakit_outbox for jobs.NewOutbox("")) is created by the
// app's migrations. Its metrics are registered in [App.Registry]; the
// database's and Redis's readiness are the app's checks.
//
// Without Config.DatabaseURLs or Config.Redis, or after Run started,
// Relay is an error.
func (a *App) Relay(cfg jobs.RelayConfig) (*jobs.Relay, error) {
	if err := a.beforeRun("Relay"); err != nil {
		return nil, err
	}
	if cfg.DB == nil {
		if a.db == nil {
			return nil, errors.New("hakit: Relay: no database for the outbox: set Config.DatabaseURLs (HAKIT_DATABASE_URL_1, …)")
		}
		cfg.DB = a.db
	}
	if cfg.Client == nil {
		c, err := a.jobsClient("Relay")
		if err != nil {
			return nil, err
		}
		cfg.Client = c
	}
	if cfg.Logger == nil {
		cfg.Logger = a.log
	}
	r, err := jobs.NewRelay(cfg)
	if err != nil {
		return nil, fmt.Errorf("hakit: Relay: %w", err)
	}
	if err := a.register(r, "Relay", "RelayConfig.Name"); err != nil {
		return nil, err
	}
	a.Add(componentName("jobs:relay", cfg.Name), lifeCycle{r})
	return r, nil
}

// Scheduler returns a scheduler of periodic tasks, enqueued with the
// app's jobs client ([App.Jobs]), and adds it to the app as a component:
// every instance runs the same schedules, and each tick's task is
// enqueued once across them (see jobs.Scheduler). Add the schedules
// (Scheduler.Add) before Run. cfg.Logger defaults to the app's; its
// metrics are registered in [App.Registry]. Several schedulers need
// different SchedulerConfig.Name.
//
// Without Config.Redis, or after Run started, Scheduler is an error.
func (a *App) Scheduler(cfg jobs.SchedulerConfig) (*jobs.Scheduler, error) {
	if err := a.beforeRun("Scheduler"); err != nil {
		return nil, err
	}
	c, err := a.jobsClient("Scheduler")
	if err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = a.log
	}
	s := jobs.NewScheduler(c, cfg)
	if err := a.register(s, "Scheduler", "SchedulerConfig.Name"); err != nil {
		return nil, err
	}
	a.Add(componentName("jobs:scheduler", cfg.Name), lifeCycle{s})
	return s, nil
}

// lifeCycle hides every method of a component but Start and Stop (its
// health checks, its collector), for what the app checks and registers
// itself (App.Add would panic on a second collector of the same name; the
// wiring methods say which Name to change instead).
type lifeCycle struct{ Component }

// register registers c's metrics, with an error naming the field that
// tells two of a kind apart.
func (a *App) register(c prometheus.Collector, what, nameField string) error {
	err := a.registry.Register(c)
	switch {
	case err == nil:
		return nil
	case errors.As(err, new(prometheus.AlreadyRegisteredError)):
		return fmt.Errorf("hakit: %s: one exists already with the same name: give this one another %s", what, nameField)
	default:
		return fmt.Errorf("hakit: %s: metrics: %w", what, err)
	}
}

func componentName(kind, name string) string {
	if name == "" {
		return kind
	}
	return kind + ":" + name
}

func errNoRedis(what string) error {
	return fmt.Errorf("hakit: %s: no Redis: set Config.Redis (HAKIT_REDIS_SENTINELS and HAKIT_REDIS_MASTER, HAKIT_REDIS_URL or HAKIT_REDIS_CLUSTER)", what)
}
