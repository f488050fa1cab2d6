// Package rolling restarts every instance of an app behind HAProxy, one
// after another, under a steady load, and counts the requests that failed.
// hakit's end-to-end test and its http benchmark share it.
package rolling

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"hakit.dev/hatest"
)

// Options describe a rolling restart.
type Options struct {
	Bin        string        // the app binary (hakit/internal/testapp)
	Instances  int           // defaults to 3
	DrainDelay time.Duration // HAKIT_DRAIN_DELAY; negative: plain Shutdown
	BootDelay  time.Duration // how long each instance takes to start
	Rate       int           // requests per second; defaults to 200
	SlowShare  float64       // share of 1-second requests; defaults to 0.1
	Settle     time.Duration // load before and after the restarts; defaults to 1s
	Env        []string      // more environment for every instance
	Log        io.Writer     // instance output and progress; nil: discarded
}

// Result is what the load generator saw.
type Result struct {
	Requests int
	Failed   int
	Kinds    map[string]int // failure kind -> count
	Took     time.Duration
}

func (r Result) String() string {
	kinds := make([]string, 0, len(r.Kinds))
	for k, n := range r.Kinds {
		kinds = append(kinds, fmt.Sprintf("%d× %s", n, k))
	}
	sort.Strings(kinds)
	return fmt.Sprintf("%d requests, %d failed in %s %v", r.Requests, r.Failed, r.Took.Round(time.Second), kinds)
}

// Run starts the instances and HAProxy (inter 1s fall 2 rise 2, HAProxy's
// defaults otherwise: retries 3, no redispatch), runs the load, SIGTERMs
// and restarts each instance in turn (waiting until HAProxy has it up
// again before the next), and stops everything.
func Run(ctx context.Context, opts Options) (res Result, err error) {
	if opts.Instances == 0 {
		opts.Instances = 3
	}
	if opts.Rate == 0 {
		opts.Rate = 200
	}
	if opts.SlowShare == 0 {
		opts.SlowShare = 0.1
	}
	if opts.Settle == 0 {
		opts.Settle = time.Second
	}
	logw := opts.Log
	if logw == nil {
		logw = io.Discard
	}
	logf := func(format string, args ...any) { fmt.Fprintf(logw, "rolling: "+format+"\n", args...) }

	ports := make([]int, opts.Instances)
	backends := make([]hatest.Backend, opts.Instances)
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return res, err
		}
		ports[i] = l.Addr().(*net.TCPAddr).Port
		l.Close()
		backends[i] = hatest.Backend{Name: "app" + strconv.Itoa(i), Addr: "127.0.0.1:" + strconv.Itoa(ports[i])}
	}
	procs := make([]*hatest.Process, opts.Instances)
	defer func() {
		for _, p := range procs {
			if p != nil {
				_ = p.Kill()
			}
		}
	}()
	start := func(i int) error {
		p, err := hatest.StartProcess(hatest.ProcessOptions{
			Name: backends[i].Name, Path: opts.Bin, Output: logw,
			Env: append([]string{
				"HAKIT_ADDR=" + backends[i].Addr,
				"HAKIT_DRAIN_DELAY=" + opts.DrainDelay.String(),
				"TESTAPP_BOOT_DELAY=" + opts.BootDelay.String(),
				"TESTAPP_NAME=" + backends[i].Name,
			}, opts.Env...),
		})
		procs[i] = p
		return err
	}
	for i := range procs {
		if err := start(i); err != nil {
			return res, err
		}
	}
	lb, err := hatest.StartHAProxy(ctx, hatest.HAProxyOptions{Backends: backends})
	if err != nil {
		return res, err
	}
	defer lb.Close()
	waitUp := func(name string) error {
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		return lb.WaitServerStatus(wctx, name, "UP")
	}
	for _, b := range backends {
		if err := waitUp(b.Name); err != nil {
			return res, err
		}
	}

	load := startLoad(lb.URL, opts.Rate, opts.SlowShare)
	began := time.Now()
	sleep := func(d time.Duration) error {
		select {
		case <-time.After(d):
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	restart := func(i int) error {
		t0 := time.Now()
		if err := procs[i].Terminate(); err != nil {
			return err
		}
		wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		code, err := procs[i].Wait(wctx)
		cancel()
		if err != nil {
			return err
		}
		logf("%s exited with %d after %s", backends[i].Name, code, time.Since(t0).Round(time.Millisecond))
		if code != 0 {
			return fmt.Errorf("%s exited with code %d after SIGTERM", backends[i].Name, code)
		}
		if err := start(i); err != nil {
			return err
		}
		if err := waitUp(backends[i].Name); err != nil {
			return err
		}
		logf("%s back up %s after SIGTERM", backends[i].Name, time.Since(t0).Round(time.Millisecond))
		return nil
	}
	err = sleep(opts.Settle)
	for i := 0; i < len(procs) && err == nil; i++ {
		err = restart(i)
	}
	if err == nil {
		err = sleep(opts.Settle)
	}
	res = load.stop()
	res.Took = time.Since(began)
	logf("%s", res)
	return res, err
}

// load sends requests at a steady rate through keep-alive connections.
type load struct {
	stopped  atomic.Bool
	wg       sync.WaitGroup
	done     chan struct{}
	mu       sync.Mutex
	requests int
	failed   int
	kinds    map[string]int
}

func startLoad(url string, rate int, slowShare float64) *load {
	l := &load{done: make(chan struct{}), kinds: map[string]int{}}
	client := &http.Client{
		Transport: &http.Transport{MaxIdleConnsPerHost: 256, IdleConnTimeout: time.Minute},
		Timeout:   15 * time.Second,
	}
	sem := make(chan struct{}, 256)
	go func() {
		defer close(l.done)
		t := time.NewTicker(time.Second / time.Duration(rate))
		defer t.Stop()
		for range t.C {
			if l.stopped.Load() {
				return
			}
			path := "/fast"
			if rand.Float64() < slowShare {
				path = "/slow"
			}
			sem <- struct{}{}
			l.wg.Go(func() {
				defer func() { <-sem }()
				l.record(get(client, url+path))
			})
		}
	}()
	return l
}

func get(c *http.Client, url string) error {
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("reading body: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d %s", resp.StatusCode, strings.TrimSpace(string(body)))
	}
	return nil
}

func (l *load) record(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.requests++
	if err != nil {
		l.failed++
		kind := err.Error()
		var ne net.Error
		if errors.As(err, &ne) {
			kind = "transport: " + ne.Error()
		}
		if i := strings.Index(kind, "127.0.0.1:"); i >= 0 {
			kind = kind[:i] // ports differ; the kind does not
		}
		l.kinds[kind]++
	}
}

func (l *load) stop() Result {
	l.stopped.Store(true)
	<-l.done
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return Result{Requests: l.requests, Failed: l.failed, Kinds: l.kinds}
}
