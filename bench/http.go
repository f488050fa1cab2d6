package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"

	"hakit.dev/hakit"
	"hakit.dev/health"
	"hakit.dev/internal/rolling"
)

// httpSuite measures the drain across a rolling restart behind HAProxy
// against plain Shutdown, the middleware stack against bare chi, and
// /readyz while a check hangs.
func httpSuite(ctx context.Context, r *report) error {
	wrk, err := exec.LookPath("wrk")
	if err != nil {
		return errors.New("wrk not found: install the Debian package wrk (make deps)")
	}
	dir, err := os.MkdirTemp("", "hakit-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "testapp")
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "./hakit/internal/testapp").CombinedOutput(); err != nil {
		return fmt.Errorf("build the test app: %v\n%s", err, out)
	}

	r.row("measurement", "hakit", "baseline", "")
	// Rolling restart: 3 instances, 3s boot, HAProxy inter 1s fall 2
	// rise 2 with its defaults (retries 3, no redispatch), 200 req/s.
	drained, err := rolling.Run(ctx, rolling.Options{Bin: bin, DrainDelay: 3 * time.Second, BootDelay: 3 * time.Second})
	if err != nil {
		return fmt.Errorf("rolling restart with the drain: %w", err)
	}
	naive, err := rolling.Run(ctx, rolling.Options{Bin: bin, DrainDelay: -1, BootDelay: 3 * time.Second})
	if err != nil {
		return fmt.Errorf("rolling restart with plain Shutdown: %w", err)
	}
	r.row("rolling restart of 3 instances at 200 req/s: failed requests",
		fmt.Sprintf("%d of %d", drained.Failed, drained.Requests), fmt.Sprintf("%d of %d", naive.Failed, naive.Requests), "plain http.Server.Shutdown")

	mw, sniffed, err := middlewareOverhead(ctx, wrk)
	if err != nil {
		return err
	}
	for _, o := range []struct {
		name string
		mw   overhead
	}{{"hello world with its Content-Type", mw}, {"hello world, Content-Type left to net/http's sniffing", sniffed}} {
		r.row(o.name+", wrk 1 thread 16 connections each, all three at once (req/s)", fmt.Sprintf("%.0f", o.mw.rps[1]), fmt.Sprintf("%.0f", o.mw.rps[0]),
			"bare chi; hakit: request ID, real IP, JSON access log, metrics, recovery, timeout, body limit, CSRF, headers")
		r.row("  server CPU per request (µs)", fmt.Sprintf("%.1f", o.mw.cpu[1]/1e3), fmt.Sprintf("%.1f", o.mw.cpu[0]/1e3),
			fmt.Sprintf("CPU ratio, median of %d rounds: %.3f (quartiles %.3f–%.3f)", len(o.mw.ratios), median(o.mw.ratios), quantile(o.mw.ratios, 0.25), quantile(o.mw.ratios, 0.75)))
		r.row("  chi RequestID+RealIP+Logger+Recoverer (req/s, CPU µs/request)", "", fmt.Sprintf("%.0f, %.1f", o.mw.rps[2], o.mw.cpu[2]/1e3),
			fmt.Sprintf("DESIGN.md's anchor; CPU ratio %.3f", median(o.mw.chiRatios)))
	}

	// /readyz while a dependency check hangs: latency as a load balancer
	// sees it, one request at a time.
	rz, err := readyzLatency(ctx)
	if err != nil {
		return err
	}
	r.row("/readyz p99 with a hanging check (µs)", fmt.Sprintf("%.0f", rz.p99), "",
		fmt.Sprintf("%d requests, one at a time (%.0f/s); p50 %.0f µs, max %.0f µs", rz.n, rz.rps, rz.p50, rz.max))

	r.metric("rolling_restart_failed_requests", drained.Failed)
	r.metric("rolling_restart_failed_requests_naive", naive.Failed)
	r.metric("rolling_restart_requests", drained.Requests)
	r.metric("middleware_overhead", fmt.Sprintf("%.3f", median(mw.ratios)))
	r.metric("middleware_overhead_chi", fmt.Sprintf("%.3f", median(mw.chiRatios)))
	r.metric("middleware_overhead_sniffed", fmt.Sprintf("%.3f", median(sniffed.ratios)))
	r.metric("middleware_overhead_chi_sniffed", fmt.Sprintf("%.3f", median(sniffed.chiRatios)))
	r.metric("readyz_p99_us", fmt.Sprintf("%.0f", rz.p99))
	return nil
}

// readyzLatency serves /readyz from a hakit app in a process of its own,
// with a check that hangs for good, and times it from this process as a
// load balancer's health check would: one connection, one request at a
// time, each timed from sending to the end of the body, for 3 seconds.
// (wrk's latency histogram does not measure this: over one connection its
// recorded latencies added up to 15–40 times the run's length.)
func readyzLatency(ctx context.Context) (latencies, error) {
	var res latencies
	srv, err := startServer(ctx, "readyz")
	if err != nil {
		return res, err
	}
	defer srv.stop()
	if err := waitOK(ctx, srv.url+"/readyz"); err != nil {
		return res, err
	}
	// One keep-alive connection, and the requests written and the
	// responses read on this goroutine, as a load balancer's check does:
	// http.Client would hand each request to two goroutines of its own,
	// waits for the scheduler that belong to the client, not the server.
	addr := strings.TrimPrefix(srv.url, "http://")
	conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return res, err
	}
	defer conn.Close()
	br := bufio.NewReader(conn)
	req := []byte("GET /readyz HTTP/1.1\r\nHost: " + addr + "\r\nUser-Agent: hakit-bench\r\n\r\n")
	var took []float64 // µs
	runtime.GC()       // this process's earlier garbage is not collected while it measures
	start := time.Now()
	for time.Since(start) < 3*time.Second {
		if err := conn.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
			return res, err
		}
		t0 := time.Now()
		if _, err := conn.Write(req); err != nil {
			return res, err
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return res, err
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		d := time.Since(t0)
		if err != nil {
			return res, err
		}
		if resp.StatusCode != http.StatusOK {
			return res, fmt.Errorf("/readyz with a hanging check: %s", resp.Status)
		}
		took = append(took, float64(d.Nanoseconds())/1e3)
	}
	res.n, res.rps = len(took), float64(len(took))/time.Since(start).Seconds()
	res.p50, res.p99, res.max = quantile(took, 0.5), quantile(took, 0.99), quantile(took, 1)
	return res, nil
}

// latencies are readyzLatency's figures, in µs.
type latencies struct {
	n                  int
	rps, p50, p99, max float64
}

// envHTTPServer makes the bench binary one of the http suite's
// hello-world servers: "bare" (chi alone), "chi" (chi's own four
// middlewares), "hakit" (hakit.App) or "readyz" (readyzLatency's), or one of the app suite's pages
// ("app-hakit", "app-hand"; see appChild), each in a process of its own so
// that its CPU time is its own. It prints its address and serves until its
// standard input closes (the suite ends, or dies).
const envHTTPServer = "HAKIT_BENCH_HTTP_SERVER"

// httpServerChild is the process envHTTPServer asks for.
func httpServerChild(kind string) error {
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	go func() { _, _ = io.Copy(io.Discard, os.Stdin); stop() }()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	if strings.HasPrefix(kind, "app-") {
		return appChild(ctx, kind, ln) // the app suite's
	}
	stopProfile, err := cpuProfile("BENCH_HTTP_CPUPROFILE", kind)
	if err != nil {
		return err
	}
	defer stopProfile()
	var h http.Handler
	switch kind {
	case "bare":
		mux := chi.NewRouter()
		helloRoutes(mux)
		h = mux
	case "chi":
		// chi's own RequestID, RealIP, Logger and Recoverer, the anchor of
		// DESIGN.md (1.31x bare chi where it was measured), logging to io.Discard.
		mux := chi.NewRouter()
		//lint:ignore SA1019 the anchor is chi's stack as it is, spoofable RealIP included
		realIP := middleware.RealIP
		mux.Use(middleware.RequestID, realIP,
			middleware.RequestLogger(&middleware.DefaultLogFormatter{Logger: log.New(io.Discard, "", log.LstdFlags), NoColor: true}),
			middleware.Recoverer)
		helloRoutes(mux)
		h = mux
	case "hakit":
		// The access log on, in JSON, to io.Discard, through the handler
		// of hakit's default logger (hakit.NewJSONHandler).
		app, err := hakit.New(ctx, hakit.Config{Logger: slog.New(hakit.NewJSONHandler(io.Discard, nil)), NoSignals: true})
		if err != nil {
			return err
		}
		helloRoutes(app.Router())
		fmt.Println(ln.Addr().String())
		return app.Serve(ctx, ln)
	case "readyz":
		// /readyz while a check hangs for good (readyzLatency).
		app, err := hakit.New(ctx, hakit.Config{Logger: slog.New(hakit.NewJSONHandler(io.Discard, nil)), NoSignals: true})
		if err != nil {
			return err
		}
		release := make(chan struct{})
		defer close(release)
		app.Health().Add(health.Check{Name: "hangs", Interval: 100 * time.Millisecond, Timeout: 100 * time.Millisecond,
			Func: func(context.Context) error { <-release; return nil }})
		fmt.Println(ln.Addr().String())
		return app.Serve(ctx, ln)
	default:
		return fmt.Errorf("unknown server %q", kind)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() { <-ctx.Done(); _ = srv.Close() }()
	fmt.Println(ln.Addr().String())
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// cpuProfile starts a CPU profile of this process to the path in the
// environment variable env, suffixed ".name", if env is set; the returned
// function ends it.
func cpuProfile(env, name string) (func(), error) {
	path := os.Getenv(env)
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(path + "." + name)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

// overhead is what middlewareOverhead measured for one handler: per
// server (bare, hakit, chi), the median requests per second and CPU time
// per request (ns); and the rounds' CPU ratios to bare chi.
type overhead struct {
	rps, cpu          [3]float64
	ratios, chiRatios []float64
}

// middlewareOverhead runs bare chi, hakit.App and chi's own stack in three
// processes and loads all three at once, a wrk each, in rounds of 2
// seconds. A round's ratio is a server's CPU time per request over bare
// chi's in the same seconds: the machine's other load, which moves CPU
// per request by tens of percent from one second to the next, falls on
// all three alike. Each round loads hello (typed), then helloSniffed
// (sniffed), so the two handlers see the same hour of the machine.
func middlewareOverhead(ctx context.Context, wrk string) (typed, sniffed overhead, err error) {
	kinds := [3]string{"bare", "hakit", "chi"}
	var pids [3]int
	var urls [3]string
	for i, k := range kinds {
		// One P each: a Go server with idle Ps wakes threads that spin
		// looking for work, CPU time that follows how often it idles, not
		// its requests, and flatters the slower server.
		srv, err := startServer(ctx, k, "GOMAXPROCS=1")
		if err != nil {
			return typed, sniffed, err
		}
		defer srv.stop()
		pids[i], urls[i] = srv.pid, srv.url
	}
	if err := waitOK(ctx, urls[1]+"/readyz"); err != nil {
		return typed, sniffed, err
	}
	const rounds = 21
	res := [2]*overhead{&typed, &sniffed}
	var rps, cpu [2][3][]float64
	for range rounds {
		for h, path := range []string{"/hello", "/sniffed"} {
			var before [3]time.Duration
			for i, pid := range pids {
				if before[i], err = processCPUOf(pid); err != nil {
					return typed, sniffed, err
				}
			}
			var got [3]wrkResult
			var errs [3]error
			var wg sync.WaitGroup
			for i, u := range urls {
				wg.Go(func() { got[i], errs[i] = runWrkArgs(ctx, wrk, u+path, 2*time.Second, 16) })
			}
			wg.Wait()
			if err := errors.Join(errs[:]...); err != nil {
				return typed, sniffed, err
			}
			var per [3]float64
			for i, pid := range pids {
				after, err := processCPUOf(pid)
				if err != nil {
					return typed, sniffed, err
				}
				per[i] = float64((after - before[i]).Nanoseconds()) / got[i].requests
				rps[h][i], cpu[h][i] = append(rps[h][i], got[i].rps), append(cpu[h][i], per[i])
			}
			o := res[h]
			o.ratios, o.chiRatios = append(o.ratios, per[1]/per[0]), append(o.chiRatios, per[2]/per[0])
		}
	}
	for h, o := range res {
		for i := range kinds {
			o.rps[i], o.cpu[i] = median(rps[h][i]), median(cpu[h][i])
		}
	}
	return typed, sniffed, nil
}

// processCPUOf returns the CPU time process pid has used so far: the sum
// of its threads' run time in /proc (nanoseconds, where /proc/PID/stat
// counts clock ticks of 10 ms).
func processCPUOf(pid int) (time.Duration, error) {
	dir := fmt.Sprintf("/proc/%d/task", pid)
	tasks, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	var sum time.Duration
	for _, t := range tasks {
		b, err := os.ReadFile(filepath.Join(dir, t.Name(), "schedstat"))
		if err != nil {
			continue // the thread ended
		}
		f := strings.Fields(string(b))
		if len(f) == 0 {
			continue
		}
		ns, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%s: %v", dir, err)
		}
		sum += time.Duration(ns)
	}
	return sum, nil
}

// quantile returns the q-quantile of v (nearest rank), 0 for none.
func quantile(v []float64, q float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return s[min(len(s)-1, int(q*float64(len(s))))]
}

// hello answers as a real handler does: it names its Content-Type (a
// page through hakit.Render, a JSON API, a file server all do).
func hello(w http.ResponseWriter, r *http.Request) {
	w.Header()["Content-Type"] = textPlain
	_, _ = io.WriteString(w, "hello, world\n")
}

var textPlain = []string{"text/plain; charset=utf-8"}

// helloSniffed leaves the Content-Type to net/http, which sniffs it from
// the body. Without a header of its own it sends none through the
// response's header map, which makes the first header a middleware sets
// cost the whole map (see docs/benchmarks.md): the bare server's best
// case, printed beside the headline.
func helloSniffed(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "hello, world\n") }

// helloRoutes adds hello at /hello and helloSniffed at /sniffed.
func helloRoutes(r chi.Router) {
	r.Get("/hello", hello)
	r.Get("/sniffed", helloSniffed)
}

func waitOK(ctx context.Context, url string) error {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return fmt.Errorf("%s not ready within 30s", url)
}

type wrkResult struct {
	requests  float64
	rps       float64
	p99       time.Duration
	cpuPerReq float64 // ns of this process's CPU time per request
}

// processCPU returns the CPU time this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// runWrkArgs runs wrk with one thread and conns connections, and more
// arguments for wrk (-H headers), and reads its requests per second, 99th
// percentile latency, and this process's CPU time per request.
func runWrkArgs(ctx context.Context, wrk, url string, d time.Duration, conns int, args ...string) (wrkResult, error) {

	cpu0 := processCPU()
	args = append([]string{"-t1", "-c" + strconv.Itoa(conns), "-d" + strconv.Itoa(int(d.Seconds())) + "s", "--latency"}, args...)
	out, err := exec.CommandContext(ctx, wrk, append(args, url)...).CombinedOutput()
	cpu := processCPU() - cpu0
	if err != nil {
		return wrkResult{}, fmt.Errorf("wrk: %v\n%s", err, out)
	}
	var res wrkResult
	var requests float64
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) == 2 && f[0] == "Requests/sec:":
			res.rps, _ = strconv.ParseFloat(f[1], 64)
		case len(f) >= 2 && f[1] == "requests":
			requests, _ = strconv.ParseFloat(f[0], 64)
		case len(f) == 2 && f[0] == "99%":
			res.p99 = parseWrkDuration(f[1])
		case len(f) >= 4 && f[0] == "Non-2xx":
			return res, fmt.Errorf("wrk saw errors on %s:\n%s", url, out)
		}
	}
	if res.rps == 0 || requests == 0 {
		return res, fmt.Errorf("cannot read wrk's output:\n%s", out)
	}
	res.requests = requests
	res.cpuPerReq = float64(cpu.Nanoseconds()) / requests
	return res, nil
}

// parseWrkDuration reads wrk's "812.00us", "1.23ms", "2.00s".
func parseWrkDuration(s string) time.Duration {
	for _, u := range []struct {
		suffix string
		unit   time.Duration
	}{{"us", time.Microsecond}, {"ms", time.Millisecond}, {"s", time.Second}} {
		if v, ok := strings.CutSuffix(s, u.suffix); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err == nil {
				return time.Duration(f * float64(u.unit))
			}
		}
	}
	return 0
}

// childServer is this binary serving one of the suites' servers in a
// process of its own (see envHTTPServer).
type childServer struct {
	url  string // http://host:port
	pid  int
	stop func() // closes its stdin, which ends it, and waits for it
}

// startServer starts this binary as the server kind, with env added to
// its environment, and returns once it printed its address.
func startServer(ctx context.Context, kind string, env ...string) (childServer, error) {
	self, err := os.Executable()
	if err != nil {
		return childServer{}, err
	}
	cmd := exec.CommandContext(ctx, self)
	cmd.Env = append(append(os.Environ(), envHTTPServer+"="+kind), env...)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return childServer{}, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return childServer{}, err
	}
	if err := cmd.Start(); err != nil {
		return childServer{}, err
	}
	stop := func() { _ = stdin.Close(); _ = cmd.Wait() }
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		stop()
		return childServer{}, fmt.Errorf("the %s server did not start: %v", kind, err)
	}
	return childServer{url: "http://" + strings.TrimSpace(line), pid: cmd.Process.Pid, stop: stop}, nil
}
