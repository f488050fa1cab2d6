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
	"strconv"
	"strings"
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

	quiet := slog.New(slog.NewJSONHandler(io.Discard, nil))
	bare := chi.NewRouter()
	bare.Get("/hello", hello)
	bareURL, stopBare, err := serveLocal(bare)
	if err != nil {
		return err
	}
	defer stopBare()
	// chi's own RequestID, RealIP, Logger and Recoverer, the anchor of
	// DESIGN.md (1.31x bare chi where it was measured), logging to io.Discard.
	chiStack := chi.NewRouter()
	//lint:ignore SA1019 the anchor is chi's stack as it is, spoofable RealIP included
	realIP := middleware.RealIP
	chiStack.Use(middleware.RequestID, realIP,
		middleware.RequestLogger(&middleware.DefaultLogFormatter{Logger: log.New(io.Discard, "", log.LstdFlags), NoColor: true}),
		middleware.Recoverer)
	chiStack.Get("/hello", hello)
	chiURL, stopChi, err := serveLocal(chiStack)
	if err != nil {
		return err
	}
	defer stopChi()
	app, err := hakit.New(ctx, hakit.Config{Logger: quiet, NoSignals: true})
	if err != nil {
		return err
	}
	app.Router().Get("/hello", hello)
	release := make(chan struct{})
	defer close(release)
	app.Health().Add(health.Check{Name: "hangs", Interval: 100 * time.Millisecond, Timeout: 100 * time.Millisecond,
		Func: func(context.Context) error { <-release; return nil }})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	actx, stopApp := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- app.Serve(actx, ln) }()
	defer func() { stopApp(); <-served }()
	appURL := "http://" + ln.Addr().String()
	if err := waitOK(ctx, appURL+"/readyz"); err != nil {
		return err
	}

	// Middleware: alternating wrk runs against each server. The cost of a
	// request is the server's CPU time per request (this process serves
	// both; wrk is another process): on a shared 2-core machine it varies
	// far less than requests per second, which also depend on how much
	// CPU wrk gets.
	var ratios, chiRatios, rpsRatios, bareRPS, appRPS, chiRPS, bareCPU, appCPU, chiCPU []float64
	for i := range 15 {
		urls := []string{bareURL, appURL, chiURL}
		if i%2 == 1 {
			urls = []string{appURL, chiURL, bareURL}
		}
		res := map[string]wrkResult{}
		for _, u := range urls {
			w, err := runWrk(ctx, wrk, u+"/hello", 2*time.Second, 16)
			if err != nil {
				return err
			}
			res[u] = w
		}
		a, b, c := res[bareURL], res[appURL], res[chiURL]
		bareRPS, appRPS, chiRPS = append(bareRPS, a.rps), append(appRPS, b.rps), append(chiRPS, c.rps)
		bareCPU, appCPU, chiCPU = append(bareCPU, a.cpuPerReq), append(appCPU, b.cpuPerReq), append(chiCPU, c.cpuPerReq)
		ratios, rpsRatios = append(ratios, b.cpuPerReq/a.cpuPerReq), append(rpsRatios, a.rps/b.rps)
		chiRatios = append(chiRatios, c.cpuPerReq/a.cpuPerReq)
	}
	r.row("hello world, wrk 1 thread 16 connections (req/s)", fmt.Sprintf("%.0f", median(appRPS)), fmt.Sprintf("%.0f", median(bareRPS)),
		"bare chi; hakit: request ID, real IP, JSON access log, metrics, recovery, timeout, body limit, CSRF, headers")
	r.row("  server CPU per request (µs)", fmt.Sprintf("%.1f", median(appCPU)/1e3), fmt.Sprintf("%.1f", median(bareCPU)/1e3),
		fmt.Sprintf("ratio of req/s: %.3f", median(rpsRatios)))
	r.row("chi RequestID+RealIP+Logger+Recoverer (req/s, CPU µs/request)", "", fmt.Sprintf("%.0f, %.1f", median(chiRPS), median(chiCPU)/1e3), "DESIGN.md's anchor")

	// /readyz while a dependency check hangs: latency as a load balancer
	// sees it, one connection at a time (more would measure wrk's queue).
	rz, err := runWrk(ctx, wrk, appURL+"/readyz", 3*time.Second, 1)
	if err != nil {
		return err
	}
	r.row("/readyz p99 with a hanging check (µs)", fmt.Sprintf("%.0f", rz.p99.Seconds()*1e6), "", fmt.Sprintf("%.0f req/s", rz.rps))

	r.metric("rolling_restart_failed_requests", drained.Failed)
	r.metric("rolling_restart_failed_requests_naive", naive.Failed)
	r.metric("rolling_restart_requests", drained.Requests)
	r.metric("middleware_overhead", fmt.Sprintf("%.3f", median(ratios)))
	r.metric("middleware_overhead_chi", fmt.Sprintf("%.3f", median(chiRatios)))
	r.metric("readyz_p99_us", fmt.Sprintf("%.0f", rz.p99.Seconds()*1e6))
	return nil
}

func hello(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "hello, world\n") }

func serveLocal(h http.Handler) (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return "http://" + ln.Addr().String(), func() { _ = srv.Close() }, nil
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

// runWrk runs wrk with one thread and conns connections and reads its
// requests per second, 99th percentile latency, and this process's CPU
// time per request.
func runWrk(ctx context.Context, wrk, url string, d time.Duration, conns int) (wrkResult, error) {
	return runWrkArgs(ctx, wrk, url, d, conns)
}

// runWrkArgs is runWrk with more arguments for wrk (-H headers).
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
