// Package lab runs the SSO provider as it runs in production, on this
// machine: PostgreSQL under Patroni in synchronous mode (an acknowledged
// commit is on the standby), Redis with a replica and three Sentinels,
// and provider instances (the real program, as subprocesses) behind
// HAProxy. It breaks them the way production breaks — a rolling restart,
// kill -9 of an instance, the loss of the PostgreSQL leader, the loss of
// the Redis master — while a login load runs, and checks after each that
// every account acknowledged so far still signs in.
//
// The provider's chaos test and its benchmark command (cmd/ssobench)
// share it:
//
//	l, _ := lab.Start(ctx, lab.Options{Bin: bin})
//	defer l.Close()
//	res, _ := l.Chaos(ctx, lab.ChaosOptions{Load: loginload.Config{Users: 6, Duration: 3 * time.Minute}})
package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"hakit.dev/examples/sso/loginload"
	"hakit.dev/hatest"
)

// Options configure a lab. Only Bin is required.
type Options struct {
	// Bin is the provider's program (see Build).
	Bin string
	// Env is added to every instance's environment (KEY=value) after
	// the lab's own: e.g. the cheap argon2id parameters of a test, or the
	// variable that makes a test binary run the provider.
	Env []string
	// Instances is how many provider instances run behind HAProxy.
	// Defaults to 3.
	Instances int
	// DrainDelay is every instance's HAKIT_DRAIN_DELAY: at least the 2 s
	// HAProxy (inter 1s, fall 2) takes to mark a draining instance down.
	// Defaults to 3s.
	DrainDelay time.Duration
	// Nice is the instances' scheduling niceness (nice(1)). In
	// production PostgreSQL, etcd and Redis run on machines of their
	// own; here they share a few cores with instances hashing passwords
	// (argon2id, 64 MiB and 3 passes a login), which would otherwise
	// starve Patroni's and the Sentinels' heartbeats into failovers
	// nobody asked for. Defaults to 10; negative: run at the lab's own.
	Nice int
	// LogLevel is every instance's HAKIT_LOG_LEVEL. Defaults to "warn".
	LogLevel string
	// Output receives every instance's output lines, prefixed with its
	// name. Nil discards them.
	Output io.Writer
	// Logf, if set, receives the lab's progress lines.
	Logf func(format string, args ...any)
}

// Lab is a running provider with its services.
type Lab struct {
	// URL is the provider's address through HAProxy: its issuer.
	URL string
	// Client is the confidential client the lab registers for the load.
	Client loginload.Client

	PG    *hatest.PatroniCluster
	Redis *hatest.RedisCluster
	LB    *hatest.HAProxy
	// Instances are the provider instances, named sso0, sso1, … in
	// HAProxy.
	Instances []*Instance

	opts Options
	mu   sync.Mutex // one instance change at a time
}

// Instance is one provider process behind HAProxy.
type Instance struct {
	Name string
	Addr string // host:port it listens on

	env  []string
	mu   sync.Mutex
	proc *hatest.Process
}

// URL is the instance's own address, past HAProxy.
func (in *Instance) URL() string { return "http://" + in.Addr }

func (in *Instance) process() *hatest.Process {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.proc
}

// Build compiles the provider's main package in dir (the sso module's
// root) into outDir and returns the program's path.
func Build(ctx context.Context, dir, outDir string, buildArgs ...string) (string, error) {
	out := filepath.Join(outDir, "sso")
	args := append(append([]string{"build", "-o", out}, buildArgs...), ".")
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = dir
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("lab: go %s in %s: %v\n%s", strings.Join(args, " "), dir, err, b)
	}
	return out, nil
}

// The lab's fixed secrets: a lab is a test bed, never a deployment.
const (
	labSecret    = "lab-secret-0123456789-abcdefghijklmnopq"
	clientSecret = "lab-client-secret-0123456789-0123456789"
)

// Start starts the services in parallel, then HAProxy and the instances
// (the first alone: it migrates, makes the salt and the first signing
// key), and returns when HAProxy has every instance up. On error
// everything started is stopped.
func Start(ctx context.Context, opts Options) (_ *Lab, err error) {
	if opts.Bin == "" {
		return nil, errors.New("lab: Options.Bin is empty")
	}
	if opts.Instances == 0 {
		opts.Instances = 3
	}
	if opts.Instances < 1 {
		return nil, fmt.Errorf("lab: %d instances: want at least 1", opts.Instances)
	}
	if opts.DrainDelay == 0 {
		opts.DrainDelay = 3 * time.Second
	}
	if opts.Nice == 0 {
		opts.Nice = 10
	}
	if opts.Nice > 19 {
		return nil, fmt.Errorf("lab: Nice %d: want at most 19", opts.Nice)
	}
	if opts.LogLevel == "" {
		opts.LogLevel = "warn"
	}
	if opts.Output == nil {
		opts.Output = io.Discard
	}
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}
	l := &Lab{opts: opts, Client: loginload.Client{ID: "lab-app", Secret: clientSecret, RedirectURI: "https://app.lab.example/cb"}}
	defer func() {
		if err != nil {
			err = errors.Join(err, l.Close())
		}
	}()

	t0 := time.Now()
	var wg sync.WaitGroup
	var pgErr, redisErr error
	wg.Go(func() {
		l.PG, pgErr = hatest.StartPatroni(ctx, hatest.PatroniOptions{Nodes: 2, Synchronous: true})
	})
	wg.Go(func() {
		l.Redis, redisErr = hatest.StartRedis(ctx, hatest.RedisOptions{Replicas: 1, Sentinels: 3})
	})
	wg.Wait()
	if err := errors.Join(pgErr, redisErr); err != nil {
		return nil, err
	}
	opts.Logf("lab: services up in %s", time.Since(t0).Round(100*time.Millisecond))

	backends := make([]hatest.Backend, opts.Instances)
	for i := range backends {
		addr, err := freeAddr()
		if err != nil {
			return nil, err
		}
		in := &Instance{Name: "sso" + strconv.Itoa(i), Addr: addr}
		l.Instances = append(l.Instances, in)
		backends[i] = hatest.Backend{Name: in.Name, Addr: addr}
	}
	if l.LB, err = hatest.StartHAProxy(ctx, hatest.HAProxyOptions{Backends: backends, Redispatch: true}); err != nil {
		return nil, err
	}
	l.URL = l.LB.URL
	for _, in := range l.Instances {
		if in.env, err = l.env(in.Addr); err != nil {
			return nil, err
		}
	}
	if err := l.startInstance(ctx, l.Instances[0]); err != nil {
		return nil, err
	}
	errs := make([]error, len(l.Instances))
	for i, in := range l.Instances[1:] {
		wg.Go(func() { errs[i+1] = l.startInstance(ctx, in) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	opts.Logf("lab: %d instances up behind HAProxy %s in %s", len(l.Instances), l.URL, time.Since(t0).Round(100*time.Millisecond))
	return l, nil
}

// env is an instance's environment: hakit's and the provider's variables
// pointing at the lab's services, then Options.Env.
func (l *Lab) env(addr string) ([]string, error) {
	boot, err := json.Marshal([]map[string]any{{
		"id": l.Client.ID, "name": "Lab app", "secret": l.Client.Secret,
		"redirect_uris": []string{l.Client.RedirectURI},
	}})
	if err != nil {
		return nil, err
	}
	env := []string{
		"HAKIT_ADDR=" + addr,
		"HAKIT_DRAIN_DELAY=" + l.opts.DrainDelay.String(),
		"HAKIT_LOG_LEVEL=" + l.opts.LogLevel,
		"HAKIT_TRUSTED_PROXIES=127.0.0.1",
		"HAKIT_REDIS_SENTINELS=" + strings.Join(l.Redis.SentinelAddrs(), ","),
		"HAKIT_REDIS_MASTER=" + l.Redis.MasterName,
		"SSO_ISSUER=" + l.URL,
		"SSO_SECRET=" + labSecret,
		"SSO_DEV=true", // an http issuer on loopback
		"SSO_BOOTSTRAP_CLIENTS=" + string(boot),
	}
	for i, dsn := range l.PG.DSNs() {
		env = append(env, fmt.Sprintf("HAKIT_DATABASE_URL_%d=%s", i+1, dsn))
	}
	return append(env, l.opts.Env...), nil
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("lab: find a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// startInstance starts an instance's process and waits until HAProxy
// has it up.
func (l *Lab) startInstance(ctx context.Context, in *Instance) error {
	in.mu.Lock()
	if in.proc != nil && !in.proc.Exited() {
		in.mu.Unlock()
		return fmt.Errorf("lab: %s is running", in.Name)
	}
	po := hatest.ProcessOptions{Name: in.Name, Path: l.opts.Bin, Env: in.env, Output: l.opts.Output}
	if l.opts.Nice > 0 {
		// nice execs the program: the process signalled is the instance.
		po.Path, po.Args = "nice", []string{"-n", strconv.Itoa(l.opts.Nice), l.opts.Bin}
	}
	p, err := hatest.StartProcess(po)
	if err != nil {
		in.mu.Unlock()
		return err
	}
	in.proc = p
	in.mu.Unlock()
	wctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- l.LB.WaitServerStatus(wctx, in.Name, "UP") }()
	select {
	case err := <-errc:
		if err != nil {
			return fmt.Errorf("lab: %s not up: %w\n%s", in.Name, err, tail(p.Output(), 20))
		}
		return nil
	case <-p.Done():
		cancel()
		<-errc
		return fmt.Errorf("lab: %s exited while starting:\n%s", in.Name, tail(p.Output(), 30))
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// stopInstance SIGTERMs an instance, as a deploy does, and waits until it
// has drained and exited; an exit code other than 0 is an error.
func (l *Lab) stopInstance(ctx context.Context, in *Instance) error {
	p := in.process()
	if p == nil || p.Exited() {
		return fmt.Errorf("lab: %s is not running", in.Name)
	}
	if err := p.Terminate(); err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	code, err := p.Wait(wctx)
	if err != nil {
		_ = p.Kill()
		return err
	}
	if code != 0 {
		return fmt.Errorf("lab: %s exited with code %d after SIGTERM:\n%s", in.Name, code, tail(p.Output(), 20))
	}
	return nil
}

// RollingRestart SIGTERMs and starts every instance in turn, waiting until
// HAProxy has each up again before the next, as a deploy does. env, if
// any, is added to each instance's environment (KEY=value, overriding
// an earlier value) before it starts again: a deploy of a new
// configuration.
func (l *Lab) RollingRestart(ctx context.Context, env ...string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, kv := range env {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			return fmt.Errorf("lab: environment entry %q: want KEY=value", kv)
		}
	}
	for _, in := range l.Instances {
		t0 := time.Now()
		if err := l.stopInstance(ctx, in); err != nil {
			return err
		}
		in.mu.Lock()
		in.env = append(in.env, env...)
		in.mu.Unlock()
		if err := l.startInstance(ctx, in); err != nil {
			return err
		}
		l.opts.Logf("lab: %s restarted, up again %s after SIGTERM", in.Name, time.Since(t0).Round(100*time.Millisecond))
	}
	return nil
}

// KillInstance SIGKILLs instance i (a lost machine), waits until HAProxy
// has marked it down and starts it again.
func (l *Lab) KillInstance(ctx context.Context, i int) error {
	if i < 0 || i >= len(l.Instances) {
		return fmt.Errorf("lab: no instance %d", i)
	}
	in := l.Instances[i]
	l.mu.Lock()
	defer l.mu.Unlock()
	p := in.process()
	if p == nil || p.Exited() {
		return fmt.Errorf("lab: %s is not running", in.Name)
	}
	if err := p.Kill(); err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err := l.LB.WaitServerStatus(wctx, in.Name, "DOWN")
	cancel()
	if err != nil {
		return err
	}
	return l.startInstance(ctx, in)
}

// Close stops the instances and every service. It is safe to call more
// than once and on a lab that did not finish starting.
func (l *Lab) Close() error {
	var errs []error
	if l.LB != nil {
		errs = append(errs, l.LB.Close())
		l.LB = nil
	}
	var wg sync.WaitGroup
	for _, in := range l.Instances {
		if p := in.process(); p != nil {
			wg.Go(func() { _ = p.Stop(10 * time.Second) })
		}
	}
	wg.Wait()
	if l.Redis != nil {
		errs = append(errs, l.Redis.Close())
		l.Redis = nil
	}
	if l.PG != nil {
		errs = append(errs, l.PG.Close())
		l.PG = nil
	}
	return errors.Join(errs...)
}
