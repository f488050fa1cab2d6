package hakit_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"hakit.dev/hakit"
	"hakit.dev/hatest"
)

// stopMargin is the margin the docs give on top of DrainDelay +
// ShutdownTimeout for the exit; slack is what a busy 2-core machine adds
// to a process's exit (signal delivery, scheduling, the race detector).
const (
	stopMargin = hakit.ShutdownMargin
	slack      = 2 * time.Second
)

// dbApp starts the test app on a fresh PostgreSQL with the given extra
// environment, and waits until it is ready.
func dbApp(t *testing.T, env ...string) (*hatest.Process, string) {
	t.Helper()
	pg := hatest.NewPostgres(t, hatest.PostgresOptions{})
	bin := hatest.Build(t, "./internal/testapp")
	addr := freeAddr(t)
	env = append([]string{"HAKIT_ADDR=" + addr, "HAKIT_DATABASE_URL_1=" + pg.DSNs()[0]}, env...)
	p := hatest.NewProcess(t, hatest.ProcessOptions{Path: bin, Env: env})
	waitStatus(t, "http://"+addr+"/readyz", 200)
	return p, "http://" + addr
}

// freeAddr returns a loopback address nobody listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startHold sends GET /hold and returns once the handler holds its pooled
// connection (it has flushed its first line). The request stays in flight.
func startHold(t *testing.T, base string) {
	t.Helper()
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Get(base + "/hold")
	if err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || line != "holding\n" {
		t.Fatalf("GET /hold: %q %v", line, err)
	}
	go func() { // the rest ends when the process does
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}()
}

// refused reports whether addr refuses connections: the listener closed.
func refused(base string) bool {
	c, err := net.DialTimeout("tcp", strings.TrimPrefix(base, "http://"), time.Second)
	if err != nil {
		return true
	}
	c.Close()
	return false
}

func waitExit(t *testing.T, p *hatest.Process, within time.Duration) (int, time.Duration) {
	t.Helper()
	t0 := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	code, err := p.Wait(ctx)
	if err != nil {
		t.Fatalf("the process did not exit within %s: %v", within, err)
	}
	return code, time.Since(t0)
}

// A handler that holds a pooled connection and ignores its context used to
// keep the process alive until it let go (the database router's Close waits
// for borrowed connections). DrainDelay + ShutdownTimeout + the margin
// bound the exit whatever handlers do.
func TestDrainBoundWithAHandlerHoldingAConnection(t *testing.T) {
	t.Parallel()
	hatestSkip(t)
	p, base := dbApp(t, "HAKIT_DRAIN_DELAY=1s", "HAKIT_SHUTDOWN_TIMEOUT=3s")
	startHold(t, base)
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	bound := time.Second + 3*time.Second + stopMargin
	code, took := waitExit(t, p, 20*time.Second)
	t.Logf("exit %d %s after SIGTERM (bound %s + %s slack)", code, took.Round(10*time.Millisecond), bound, slack)
	if took > bound+slack {
		t.Fatalf("exit took %s, over DrainDelay + ShutdownTimeout + margin = %s", took, bound)
	}
	if code != 1 {
		t.Errorf("exit code %d, want 1: requests were cut and the database was abandoned", code)
	}
	out := p.Output()
	for _, want := range []string{"did not finish within the shutdown timeout", "borrowed"} {
		if !strings.Contains(out, want) {
			t.Errorf("the log does not say %q:\n%s", want, out)
		}
	}
}

// A second SIGTERM while http.Server.Shutdown waits for a stuck request
// forces the exit at once, although the request still holds a connection
// the database router's Close would wait for.
func TestSecondSignalDuringShutdown(t *testing.T) {
	t.Parallel()
	hatestSkip(t)
	p, base := dbApp(t, "HAKIT_DRAIN_DELAY=300ms", "HAKIT_SHUTDOWN_TIMEOUT=60s")
	startHold(t, base)
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	hatest.WaitFor(t, 10*time.Second, "the listener to close (Shutdown running)", func() bool { return refused(base) })
	if p.Exited() {
		t.Fatal("the process exited with a request in flight")
	}
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	code, took := waitExit(t, p, 20*time.Second)
	t.Logf("exit %d %s after the second SIGTERM", code, took.Round(10*time.Millisecond))
	if code != 1 || took > slack {
		t.Fatalf("after a second SIGTERM during Shutdown: exit %d after %s; want 1, at once", code, took)
	}
}

// A second SIGTERM while the database router waits for a connection a
// goroutine still holds forces the exit at once.
func TestSecondSignalDuringPoolClose(t *testing.T) {
	t.Parallel()
	hatestSkip(t)
	p, base := dbApp(t, "HAKIT_DRAIN_DELAY=300ms", "HAKIT_SHUTDOWN_TIMEOUT=60s")
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Get(base + "/leak")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET /leak: %d", resp.StatusCode)
	}
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// No request is in flight: Shutdown returns at once, and the database
	// router's Close waits for the leaked connection. The app says so.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.WaitOutput(ctx, "borrowed"); err != nil {
		t.Log(err) // checked below, after the exit
	}
	if p.Exited() {
		t.Fatal("the process exited with a connection borrowed")
	}
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	code, took := waitExit(t, p, 20*time.Second)
	t.Logf("exit %d %s after the second SIGTERM", code, took.Round(10*time.Millisecond))
	if code != 1 || took > slack {
		t.Fatalf("after a second SIGTERM during the pool close: exit %d after %s; want 1, at once", code, took)
	}
	out := p.Output()
	if i, j := strings.Index(out, "borrowed"), strings.Index(out, "second signal"); i < 0 || j < i {
		t.Fatalf("the log does not show the second signal arriving while the pool closed:\n%s", out)
	}
}

// A start-up step that ignores its context does not keep Serve from
// returning: the end of Run's context gives it ShutdownTimeout, and the
// components started before it are still stopped.
func TestStartIgnoringItsContextIsBounded(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	defer close(release)
	app, err := hakit.New(context.Background(), hakit.Config{NoSignals: true, ShutdownTimeout: 500 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	stopped := make(chan struct{})
	entered := make(chan struct{})
	app.OnStop(func(context.Context) error { close(stopped); return nil })
	app.OnStart(func(context.Context) error { close(entered); <-release; return nil })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- app.Serve(ctx, ln) }()
	<-entered
	cancel()
	t0 := time.Now()
	select {
	case err := <-done:
		t.Logf("Serve returned %s after its context ended: %v", time.Since(t0).Round(time.Millisecond), err)
		if err == nil {
			t.Error("Serve = nil with a start-up step abandoned")
		}
	case <-time.After(500*time.Millisecond + stopMargin + slack):
		t.Fatal("Serve still waits for a start-up step that ignores its context")
	}
	select {
	case <-stopped:
	default:
		t.Error("the component started before the stuck one was not stopped")
	}
}

// A component whose Stop ignores its context does not keep Serve from
// returning: ShutdownTimeout plus the margin bound it, and the error names
// the stuck component.
func TestStopIgnoringItsContextIsBounded(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	defer close(release)
	app, err := hakit.New(context.Background(), hakit.Config{NoSignals: true, DrainDelay: -1, ShutdownTimeout: 500 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	app.Add("stuck", stopFunc(func(context.Context) error { <-release; return nil }))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- app.Serve(ctx, ln) }()
	waitStatus(t, "http://"+ln.Addr().String()+"/readyz", 200)
	cancel()
	t0 := time.Now()
	select {
	case err := <-done:
		t.Logf("Serve returned %s after its context ended: %v", time.Since(t0).Round(time.Millisecond), err)
		if err == nil || !strings.Contains(err.Error(), "stuck") {
			t.Errorf("Serve = %v; want an error naming the stuck component", err)
		}
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Serve = %v; want it to wrap context.DeadlineExceeded", err)
		}
	case <-time.After(500*time.Millisecond + stopMargin + slack):
		t.Fatal("Serve still waits for a component whose Stop ignores its context")
	}
}

type stopFunc func(context.Context) error

func (f stopFunc) Start(context.Context) error    { return nil }
func (f stopFunc) Stop(ctx context.Context) error { return f(ctx) }
