package health

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// State is the instance's lifecycle state as /readyz reports it.
type State int32

// The states, in the order an instance goes through them.
const (
	Starting State = iota // not ready yet: migrations, pools, warm-up
	Ready                 // serving
	Draining              // shutting down: the load balancer must take it out
)

func (s State) String() string {
	switch s {
	case Starting:
		return "starting"
	case Ready:
		return "ready"
	case Draining:
		return "draining"
	}
	return fmt.Sprintf("State(%d)", int32(s))
}

// Check is a dependency check run in the background.
type Check struct {
	// Name identifies the check in /readyz?verbose, e.g. "postgres" or
	// "redis:master". Required, unique.
	Name string

	// Func checks the dependency. It must return when ctx ends (a check
	// that does not is reported as failing once Timeout passes, and not
	// started again until it returns).
	Func func(ctx context.Context) error

	// Critical makes /readyz fail while the check fails. Leave it off
	// for shared dependencies (a database every instance uses): when it
	// is down for all, taking every instance out of the load balancer
	// helps nobody, and /readyz reports it as a warning instead.
	Critical bool

	// Interval is the pause between runs. Defaults to 1s.
	Interval time.Duration

	// Timeout bounds one run. Defaults to 1s (at most Interval).
	Timeout time.Duration
}

// Options configure a Checker. The zero value is usable.
type Options struct {
	// Logger receives check failures and recoveries (once per change,
	// not per run). Defaults to slog.Default().
	Logger *slog.Logger

	// Now returns the current time. Defaults to time.Now; tests may
	// inject a clock.
	Now func() time.Time
}

// Checker holds the instance's state and the results of its checks, and
// serves /livez and /readyz from them without ever waiting on a
// dependency. It is safe for concurrent use.
type Checker struct {
	log *slog.Logger
	now func() time.Time

	state atomic.Int32

	mu      sync.Mutex
	checks  []*check
	running bool
	runCtx  context.Context
	wg      sync.WaitGroup

	// critFailing counts critical checks failing now: /readyz reads it
	// without a lock.
	critFailing atomic.Int32
}

type check struct {
	Check
	mu       sync.Mutex
	ran      bool
	err      error
	at       time.Time
	latency  time.Duration
	inFlight bool
	started  time.Time // of the run in flight
}

// New returns a Checker in the Starting state with no checks.
func New(opts Options) *Checker {
	c := &Checker{log: opts.Logger, now: opts.Now}
	if c.log == nil {
		c.log = slog.Default()
	}
	if c.now == nil {
		c.now = time.Now
	}
	return c
}

// Add registers a check. It panics on a programmer error (no name, no
// func, a duplicate name); see [Checker.TryAdd] for the non-panicking
// twin. Checks added while Run is running start at once.
func (c *Checker) Add(ch Check) {
	if err := c.TryAdd(ch); err != nil {
		panic(err)
	}
}

// TryAdd is Add returning an error instead of panicking.
func (c *Checker) TryAdd(ch Check) error {
	if ch.Name == "" || ch.Func == nil {
		return errors.New("health: a check needs a Name and a Func")
	}
	if ch.Interval <= 0 {
		ch.Interval = time.Second
	}
	if ch.Timeout <= 0 {
		ch.Timeout = time.Second
	}
	ch.Timeout = min(ch.Timeout, ch.Interval)
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, x := range c.checks {
		if x.Name == ch.Name {
			return fmt.Errorf("health: duplicate check %q", ch.Name)
		}
	}
	k := &check{Check: ch}
	c.checks = append(c.checks, k)
	if ch.Critical {
		// Not passed yet: a critical check counts as failing until its
		// first run succeeds.
		c.critFailing.Add(1)
	}
	if c.running {
		c.start(k)
	}
	return nil
}

// Run runs the checks in the background until ctx ends, then waits for
// them to stop. Each check runs at once, then every Interval.
func (c *Checker) Run(ctx context.Context) error {
	c.mu.Lock()
	if c.running {
		c.mu.Unlock()
		return errors.New("health: Run called twice")
	}
	c.running, c.runCtx = true, ctx
	for _, k := range c.checks {
		c.start(k)
	}
	c.mu.Unlock()
	<-ctx.Done()
	c.wg.Wait()
	c.mu.Lock()
	c.running = false
	c.mu.Unlock()
	return nil
}

// start runs k's loop; called with c.mu held.
func (c *Checker) start(k *check) {
	ctx := c.runCtx
	c.wg.Go(func() {
		t := time.NewTimer(0)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			c.runOnce(ctx, k)
			t.Reset(k.Interval)
		}
	})
}

// runOnce runs a check with its timeout. A run that outlives the timeout
// is reported as failing and left to finish on its own; no second run
// starts meanwhile.
func (c *Checker) runOnce(ctx context.Context, k *check) {
	k.mu.Lock()
	if k.inFlight {
		since := k.started
		k.mu.Unlock()
		c.record(k, fmt.Errorf("still running since %s (timeout %s)", since.Format(time.RFC3339), k.Timeout), 0)
		return
	}
	start := c.now()
	k.inFlight, k.started = true, start
	k.mu.Unlock()
	done := make(chan error, 1)
	rctx, cancel := context.WithTimeout(ctx, k.Timeout)
	go func() {
		defer cancel()
		err := safeCall(rctx, k.Func)
		k.mu.Lock()
		k.inFlight = false
		k.mu.Unlock()
		done <- err
	}()
	t := time.NewTimer(k.Timeout)
	defer t.Stop()
	select {
	case err := <-done:
		c.record(k, err, c.now().Sub(start))
	case <-t.C:
		c.record(k, fmt.Errorf("timed out after %s", k.Timeout), k.Timeout)
	case <-ctx.Done():
	}
}

func safeCall(ctx context.Context, f func(context.Context) error) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("check panicked: %v", v)
		}
	}()
	return f(ctx)
}

func (c *Checker) record(k *check, err error, latency time.Duration) {
	k.mu.Lock()
	wasFailing := !k.ran || k.err != nil
	first := !k.ran
	changed := first || (k.err == nil) != (err == nil)
	k.ran, k.err, k.latency, k.at = true, err, latency, c.now()
	k.mu.Unlock()
	if k.Critical {
		switch {
		case wasFailing && err == nil:
			c.critFailing.Add(-1)
		case !wasFailing && err != nil:
			c.critFailing.Add(1)
		}
	}
	if !changed {
		return
	}
	switch {
	case err != nil:
		c.log.Warn("health: check failing", "check", k.Name, "critical", k.Critical, "err", err)
	case !first:
		c.log.Info("health: check passing again", "check", k.Name)
	}
}

// State returns the instance's state.
func (c *Checker) State() State { return State(c.state.Load()) }

// SetReady marks the instance ready (after start-up). It does nothing once
// draining has begun.
func (c *Checker) SetReady() { c.state.CompareAndSwap(int32(Starting), int32(Ready)) }

// SetDraining marks the instance as draining: /readyz answers 503 from now
// on, so load balancers take it out.
func (c *Checker) SetDraining() { c.state.Store(int32(Draining)) }

// Ready reports whether /readyz answers 200: the instance is ready and no
// critical check fails.
func (c *Checker) Ready() bool { return c.State() == Ready && c.critFailing.Load() == 0 }

// Livez returns the /livez handler: 200 "ok" while the process serves
// HTTP. It checks no dependency: a liveness probe that fails when the
// database is down would have every instance restarted for nothing.
func (c *Checker) Livez() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h["Content-Type"] = textPlain
		h["Cache-Control"] = noStore
		_, _ = w.Write(okBody)
	})
}

var (
	textPlain  = []string{"text/plain; charset=utf-8"}
	healthJSON = []string{"application/health+json"}
	noStore    = []string{"no-store"}
	okBody     = []byte("ok\n")
)

// Readyz returns the /readyz handler. It answers from cached state, in
// microseconds, whatever the dependencies do:
//
//   - 200 "ok" when ready and no critical check fails;
//   - 503 "starting", "draining" or "failing: <checks>" otherwise.
//
// With ?verbose, or when the request accepts application/health+json, the
// answer is the IETF health check response format (draft-inadarei-api-
// health-check): status pass, warn (a non-critical check fails) or fail,
// and every check with its status, latency, time and last error.
func (c *Checker) Readyz() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h["Cache-Control"] = noStore
		if r.URL.RawQuery != "" && r.URL.Query().Has("verbose") || strings.Contains(r.Header.Get("Accept"), "application/health+json") {
			c.serveVerbose(w)
			return
		}
		h["Content-Type"] = textPlain
		switch st := c.State(); {
		case st != Ready:
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte(st.String() + "\n"))
		case c.critFailing.Load() > 0:
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte("failing: " + strings.Join(c.failingCritical(), ", ") + "\n"))
		default:
			_, _ = w.Write(okBody)
		}
	})
}

func (c *Checker) failingCritical() []string {
	var out []string
	for _, r := range c.Results() {
		if r.Critical && r.Status != "pass" {
			out = append(out, r.Name)
		}
	}
	return out
}

// Result is the last outcome of a check.
type Result struct {
	Name     string
	Critical bool
	Status   string // pass, fail, or warn (not run yet)
	Err      error
	Latency  time.Duration
	Time     time.Time // when it last finished
}

// Results returns the last outcome of every check, in the order they
// were added.
func (c *Checker) Results() []Result {
	c.mu.Lock()
	checks := slices.Clone(c.checks)
	c.mu.Unlock()
	out := make([]Result, 0, len(checks))
	for _, k := range checks {
		k.mu.Lock()
		r := Result{Name: k.Name, Critical: k.Critical, Err: k.err, Latency: k.latency, Time: k.at}
		switch {
		case !k.ran:
			r.Status = "warn"
		case k.err != nil:
			r.Status = "fail"
		default:
			r.Status = "pass"
		}
		k.mu.Unlock()
		out = append(out, r)
	}
	return out
}

// healthResponse is the IETF draft's response body.
type healthResponse struct {
	Status      string                      `json:"status"`
	Description string                      `json:"description,omitempty"`
	Output      string                      `json:"output,omitempty"`
	Checks      map[string][]checkResponses `json:"checks,omitempty"`
}

type checkResponses struct {
	ComponentType string  `json:"componentType,omitempty"`
	ObservedValue float64 `json:"observedValue"`
	ObservedUnit  string  `json:"observedUnit"`
	Status        string  `json:"status"`
	Time          string  `json:"time,omitempty"`
	Output        string  `json:"output,omitempty"`
	Critical      bool    `json:"critical"`
}

func (c *Checker) serveVerbose(w http.ResponseWriter) {
	st := c.State()
	resp := healthResponse{Status: "pass", Description: "instance " + st.String(), Checks: map[string][]checkResponses{}}
	code := http.StatusOK
	if st != Ready {
		resp.Status, resp.Output, code = "fail", st.String(), http.StatusServiceUnavailable
	}
	for _, r := range c.Results() {
		cr := checkResponses{ObservedValue: float64(r.Latency.Microseconds()) / 1000, ObservedUnit: "ms", Status: r.Status, Critical: r.Critical}
		if !r.Time.IsZero() {
			cr.Time = r.Time.UTC().Format(time.RFC3339Nano)
		}
		if r.Err != nil {
			cr.Output = r.Err.Error()
		} else if r.Status == "warn" {
			cr.Output = "not run yet"
		}
		resp.Checks[r.Name+":responseTime"] = []checkResponses{cr}
		if r.Status != "pass" {
			switch {
			case r.Critical:
				resp.Status, code = "fail", http.StatusServiceUnavailable
			case resp.Status == "pass":
				resp.Status = "warn"
			}
		}
	}
	w.Header()["Content-Type"] = healthJSON
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(resp)
}
