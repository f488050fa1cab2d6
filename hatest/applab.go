package hatest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// AppLabOptions configures the app lab started by [StartAppLab] or
// [NewAppLab]. Only Bin is required.
type AppLabOptions struct {
	// Bin is the app's program, built with [Build] or [BuildModule] (or
	// the test binary itself, for a test that runs its own main).
	// Required.
	Bin string
	// Args are the program's arguments.
	Args []string
	// Name prefixes the instances' names in HAProxy and in their output:
	// shop0, shop1, …. Defaults to the base name of Bin.
	Name string
	// Instances is how many instances of Bin run behind HAProxy.
	// Defaults to 3.
	Instances int

	// Postgres configures the Patroni cluster; its zero value is
	// PatroniOptions's (two nodes). Set Synchronous for a cluster that
	// keeps every acknowledged commit across a failover.
	Postgres PatroniOptions
	// Redis configures Redis. The lab always runs Sentinels: zero
	// Replicas means 1 and zero Sentinels 3.
	Redis RedisOptions
	// MinIO, if set, starts an S3 server whose endpoint, bucket and
	// keys the instances get in HAKIT_S3_*. Nil: no S3.
	MinIO *MinIOOptions
	// Mailpit, if set, starts a mail sink; pass its SMTP address
	// (AppLab.Mail.SMTPAddr) to the app in Env. Nil: none.
	Mailpit *MailpitOptions
	// HAProxy configures the load balancer in front of the instances.
	// Leave Backends empty: the lab fills them in with its instances.
	// The zero value checks GET /readyz every second, as hakit's
	// deployment guide has it.
	HAProxy HAProxyOptions

	// DrainDelay is every instance's HAKIT_DRAIN_DELAY: at least the time
	// HAProxy takes to mark a draining instance down (Inter × Fall, 2s
	// by default). Defaults to 3s.
	DrainDelay time.Duration
	// LogLevel is every instance's HAKIT_LOG_LEVEL. Defaults to "warn":
	// the access log of a load is large.
	LogLevel string
	// Env returns the app's own variables (KEY=value) for an instance,
	// added after the lab's HAKIT_* ones, so a key it repeats wins. It
	// runs once for each instance, after the services and HAProxy are up
	// and before any instance starts: it can name them (l.URL,
	// l.Mail.SMTPAddr). Nil adds nothing.
	Env func(l *AppLab, in *AppInstance) []string
	// Nice is the instances' scheduling niceness (nice(1)), 1 to 19:
	// in production the databases run on machines of their own, here
	// they share a few cores with the app, and a busy app can starve
	// Patroni's and the Sentinels' heartbeats into failovers nobody
	// asked for. Zero runs the instances at the lab's own niceness.
	Nice int

	// InstanceTimeout bounds the start of one instance, until HAProxy
	// has it UP, and its exit after SIGTERM. Defaults to 90s.
	InstanceTimeout time.Duration
	// Output receives every instance's output lines, prefixed with its
	// name. Nil discards them ([AppLab.OutputTail] keeps the last ones
	// either way).
	Output io.Writer
	// Logf, if set, receives the lab's progress lines: what started,
	// each step and how long it took.
	Logf func(format string, args ...any)
}

// validate fills in the defaults and lists every bad option at once.
func (o *AppLabOptions) validate() error {
	var errs []error
	if o.Bin == "" {
		errs = append(errs, errors.New("AppLabOptions.Bin is empty"))
	}
	defaultTo(&o.Name, filepath.Base(o.Bin))
	defaultTo(&o.Instances, 3)
	if o.Instances < 1 {
		errs = append(errs, fmt.Errorf("%d instances: want at least 1", o.Instances))
	}
	if o.Postgres.Nodes < 0 {
		errs = append(errs, fmt.Errorf("%d PostgreSQL nodes: want at least 1", o.Postgres.Nodes))
	}
	defaultTo(&o.Redis.Replicas, 1)
	defaultTo(&o.Redis.Sentinels, 3)
	if o.Redis.Replicas < 1 || o.Redis.Sentinels < 1 {
		errs = append(errs, fmt.Errorf("a Redis with %d replicas and %d Sentinels: want at least 1 of each, for a failover", o.Redis.Replicas, o.Redis.Sentinels))
	}
	if len(o.HAProxy.Backends) > 0 {
		errs = append(errs, errors.New("HAProxy.Backends is set: the lab's instances are the backends"))
	}
	defaultTo(&o.DrainDelay, 3*time.Second)
	if o.DrainDelay < 0 {
		errs = append(errs, fmt.Errorf("drain delay %s: want 0 (3s) or more", o.DrainDelay))
	}
	defaultTo(&o.LogLevel, "warn")
	if o.Nice < 0 || o.Nice > 19 {
		errs = append(errs, fmt.Errorf("niceness %d: want 0 to 19", o.Nice))
	}
	defaultTo(&o.InstanceTimeout, 90*time.Second)
	if o.Output == nil {
		o.Output = io.Discard
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("hatest: app lab: %w", err)
	}
	return nil
}

// AppLab is an app as it runs in production, on this machine: N instances
// of its binary behind HAProxy, on PostgreSQL under Patroni, Redis with
// Sentinels and, if asked for, MinIO and Mailpit. Its methods break it the
// way production breaks — a rolling restart, kill -9 of an instance, the
// loss of the PostgreSQL leader or of the Redis master — and return once
// the lab is whole again, each within a deadline. They act on one thing at
// a time and are safe for concurrent use. What the app must survive them
// with (its orders, its accounts) is the test's to check.
type AppLab struct {
	// URL is the app's address through HAProxy.
	URL string

	PG    *PatroniCluster
	Redis *RedisCluster
	MinIO *MinIO   // nil unless AppLabOptions.MinIO was set
	Mail  *Mailpit // nil unless AppLabOptions.Mailpit was set
	LB    *HAProxy // in front of the instances
	// Instances are the app's instances, named Name0, Name1, … in
	// HAProxy.
	Instances []*AppInstance

	opts AppLabOptions
	out  *tailBuffer
	mu   sync.Mutex // one chaos step at a time
}

// AppInstance is one process of the app behind HAProxy.
type AppInstance struct {
	Name string
	Addr string // host:port it listens on (HAKIT_ADDR)

	mu   sync.Mutex
	env  []string
	proc *Process
}

// URL is the instance's own address, past HAProxy.
func (in *AppInstance) URL() string { return "http://" + in.Addr }

// Process returns the instance's current process: nil before its first
// start, an exited one after a kill.
func (in *AppInstance) Process() *Process {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.proc
}

// Running reports whether the instance's process runs.
func (in *AppInstance) Running() bool {
	p := in.Process()
	return p != nil && !p.Exited()
}

// Pid returns the instance's process id, 0 when it is not running.
func (in *AppInstance) Pid() int {
	if p := in.Process(); p != nil && !p.Exited() {
		return p.Pid()
	}
	return 0
}

// Failover is what a failover step did.
type Failover struct {
	Old, New string // the node killed and the node promoted in its place
	// Promoted is the time from the kill until the new node took writes.
	Promoted time.Duration
	// Rejoined is the time from the kill until the old node was back, a
	// replica of the new one.
	Rejoined time.Duration
}

// StartAppLab starts the services in parallel, then HAProxy and the
// instances — the first alone, since it runs the migrations, then the
// others together — and returns when HAProxy has every instance UP. On
// error everything started is stopped. The caller must Close the lab;
// tests use [NewAppLab].
//
// Each instance gets hakit's variables for the lab's services:
// HAKIT_ADDR, HAKIT_DRAIN_DELAY, HAKIT_LOG_LEVEL, HAKIT_DATABASE_URL_1… (one
// per Patroni node), HAKIT_REDIS_SENTINELS, HAKIT_REDIS_MASTER and, with
// MinIO, HAKIT_S3_* — then whatever AppLabOptions.Env adds.
func StartAppLab(ctx context.Context, opts AppLabOptions) (_ *AppLab, err error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	l := &AppLab{opts: opts, out: &tailBuffer{max: maxOutput}}
	defer func() {
		if err != nil {
			err = errors.Join(err, l.Close())
		}
	}()

	t0 := time.Now()
	var wg sync.WaitGroup
	var pgErr, redisErr, minioErr, mailErr error
	wg.Go(func() { l.PG, pgErr = StartPatroni(ctx, opts.Postgres) })
	wg.Go(func() { l.Redis, redisErr = StartRedis(ctx, opts.Redis) })
	if opts.MinIO != nil {
		wg.Go(func() { l.MinIO, minioErr = StartMinIO(ctx, *opts.MinIO) })
	}
	if opts.Mailpit != nil {
		wg.Go(func() { l.Mail, mailErr = StartMailpit(ctx, *opts.Mailpit) })
	}
	wg.Wait()
	if err := errors.Join(pgErr, redisErr, minioErr, mailErr); err != nil {
		return nil, err
	}
	opts.Logf("hatest: app lab: services up in %s", time.Since(t0).Round(100*time.Millisecond))

	lbOpts := opts.HAProxy
	for i := range opts.Instances {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		in := &AppInstance{Name: opts.Name + strconv.Itoa(i), Addr: hostPort(port)}
		l.Instances = append(l.Instances, in)
		lbOpts.Backends = append(lbOpts.Backends, Backend{Name: in.Name, Addr: in.Addr})
	}
	if l.LB, err = StartHAProxy(ctx, lbOpts); err != nil {
		return nil, err
	}
	l.URL = l.LB.URL
	for _, in := range l.Instances {
		in.env = l.env(in)
		if opts.Env != nil {
			in.env = append(in.env, opts.Env(l, in)...)
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
	opts.Logf("hatest: app lab: %d instances of %s up behind HAProxy %s in %s", len(l.Instances), opts.Name, l.URL, time.Since(t0).Round(100*time.Millisecond))
	return l, nil
}

// NewAppLab starts an app lab for the test (see [StartAppLab]), with the
// lab's progress in the test log, and stops it when the test ends, pass or
// fail. A failed test logs the instances' last 200 output lines.
func NewAppLab(t testing.TB, opts AppLabOptions) *AppLab {
	t.Helper()
	skipUnlessServices(t)
	if opts.Logf == nil {
		opts.Logf = t.Logf
	}
	l, err := StartAppLab(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("hatest: the test failed; the instances' last output lines:\n%s", l.OutputTail(200))
		}
		if err := l.Close(); err != nil {
			t.Errorf("hatest: app lab: close: %v", err)
		}
	})
	return l
}

// BuildApp compiles the main package in dir (the root of the app's
// module, say) with go build into outDir and returns the program's path,
// named after dir. It is for a command that runs an [AppLab] outside a test,
// a benchmark; tests use [Build] or [BuildModule]. buildArgs come before
// the package ("-race", "-tags", "…").
func BuildApp(ctx context.Context, dir, outDir string, buildArgs ...string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("hatest: build %s: %w", dir, err)
	}
	out := filepath.Join(outDir, filepath.Base(abs))
	args := append(append([]string{"build", "-o", out}, buildArgs...), ".")
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = abs
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("hatest: go %s in %s: %v\n%s", strings.Join(args, " "), abs, err, b)
	}
	return out, nil
}

// env is an instance's environment for the lab's services.
func (l *AppLab) env(in *AppInstance) []string {
	env := []string{
		"HAKIT_ADDR=" + in.Addr,
		"HAKIT_DRAIN_DELAY=" + l.opts.DrainDelay.String(),
		"HAKIT_LOG_LEVEL=" + l.opts.LogLevel,
		"HAKIT_REDIS_SENTINELS=" + strings.Join(l.Redis.SentinelAddrs(), ","),
		"HAKIT_REDIS_MASTER=" + l.Redis.MasterName,
	}
	for i, dsn := range l.PG.DSNs() {
		env = append(env, "HAKIT_DATABASE_URL_"+strconv.Itoa(i+1)+"="+dsn)
	}
	if m := l.MinIO; m != nil {
		env = append(env,
			"HAKIT_S3_ENDPOINT="+m.Endpoint,
			"HAKIT_S3_REGION="+m.Region,
			"HAKIT_S3_BUCKET="+m.Bucket,
			"HAKIT_S3_ACCESS_KEY_ID="+m.AccessKey,
			"HAKIT_S3_SECRET_ACCESS_KEY="+m.SecretKey,
			"HAKIT_S3_PATH_STYLE=true",
		)
	}
	return env
}

// OutputTail returns the last n lines the instances wrote, each prefixed
// with its instance's name: what a failed test shows.
func (l *AppLab) OutputTail(n int) string { return tailLines(l.out.String(), n) }

// instance returns instance i, or an error naming what exists.
func (l *AppLab) instance(i int) (*AppInstance, error) {
	if l == nil || i < 0 || i >= len(l.Instances) {
		n := 0
		if l != nil {
			n = len(l.Instances)
		}
		return nil, fmt.Errorf("hatest: app lab: no instance %d (the lab has %d)", i, n)
	}
	return l.Instances[i], nil
}

// startInstance starts an instance's process and waits until HAProxy has
// it UP; it fails at once if the process exits first.
func (l *AppLab) startInstance(ctx context.Context, in *AppInstance) error {
	in.mu.Lock()
	if in.proc != nil && !in.proc.Exited() {
		in.mu.Unlock()
		return fmt.Errorf("hatest: app lab: %s is running", in.Name)
	}
	po := ProcessOptions{Name: in.Name, Path: l.opts.Bin, Args: l.opts.Args, Env: in.env,
		Output: io.MultiWriter(l.out, l.opts.Output)}
	if l.opts.Nice > 0 {
		// nice execs the program: the process signalled is the instance.
		po.Path = "nice"
		po.Args = append([]string{"-n", strconv.Itoa(l.opts.Nice), l.opts.Bin}, l.opts.Args...)
	}
	p, err := StartProcess(po)
	if err != nil {
		in.mu.Unlock()
		return err
	}
	in.proc = p
	in.mu.Unlock()
	wctx, cancel := context.WithTimeout(ctx, l.opts.InstanceTimeout)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- l.LB.WaitServerStatus(wctx, in.Name, "UP") }()
	select {
	case err := <-errc:
		if err != nil {
			return fmt.Errorf("hatest: app lab: %s not up: %w\n%s", in.Name, err, tailLines(p.Output(), 20))
		}
		return nil
	case <-p.Done():
		cancel()
		<-errc
		return fmt.Errorf("hatest: app lab: %s exited while starting:\n%s", in.Name, tailLines(p.Output(), 30))
	}
}

// stopInstance SIGTERMs an instance and waits until it has exited; an exit
// code other than 0 is an error.
func (l *AppLab) stopInstance(ctx context.Context, in *AppInstance) error {
	p := in.Process()
	if p == nil || p.Exited() {
		return fmt.Errorf("hatest: app lab: %s is not running", in.Name)
	}
	if err := p.Terminate(); err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, l.opts.InstanceTimeout)
	defer cancel()
	code, err := p.Wait(wctx)
	if err != nil {
		_ = p.Kill()
		return fmt.Errorf("hatest: app lab: %s did not exit after SIGTERM: %w", in.Name, err)
	}
	if code != 0 {
		return fmt.Errorf("hatest: app lab: %s exited with code %d after SIGTERM:\n%s", in.Name, code, tailLines(p.Output(), 20))
	}
	return nil
}

// StartInstance starts instance i again after StopInstance or
// KillInstance, and waits until HAProxy has it UP.
func (l *AppLab) StartInstance(ctx context.Context, i int) error {
	in, err := l.instance(i)
	if err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.startInstance(ctx, in)
}

// StopInstance SIGTERMs instance i, as a deploy does, and waits until it
// has drained and exited; an exit code other than 0 is an error.
func (l *AppLab) StopInstance(ctx context.Context, i int) error {
	in, err := l.instance(i)
	if err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.stopInstance(ctx, in)
}

// KillInstance SIGKILLs instance i, as if its machine died (its in-flight
// requests fail), and waits until HAProxy has marked it DOWN. Start it
// again with StartInstance.
func (l *AppLab) KillInstance(ctx context.Context, i int) error {
	in, err := l.instance(i)
	if err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	p := in.Process()
	if p == nil || p.Exited() {
		return fmt.Errorf("hatest: app lab: %s is not running", in.Name)
	}
	if err := p.Kill(); err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := l.LB.WaitServerStatus(wctx, in.Name, "DOWN"); err != nil {
		return fmt.Errorf("hatest: app lab: HAProxy did not mark the killed %s down: %w", in.Name, err)
	}
	l.opts.Logf("hatest: app lab: %s killed, down in HAProxy", in.Name)
	return nil
}

// RollingRestart SIGTERMs and starts every instance in turn, waiting until
// HAProxy has each UP again before the next, as a deploy does. env, if
// any, is added to each instance's environment (KEY=value, overriding an
// earlier value) before it starts again: a deploy of a new configuration.
func (l *AppLab) RollingRestart(ctx context.Context, env ...string) error {
	for _, kv := range env {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			return fmt.Errorf("hatest: app lab: environment entry %q: want KEY=value", kv)
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
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
		l.opts.Logf("hatest: app lab: %s restarted, up again %s after SIGTERM", in.Name, time.Since(t0).Round(100*time.Millisecond))
	}
	return nil
}

// FailoverPostgres SIGKILLs the Patroni leader's machine (Patroni and
// PostgreSQL together) and waits until Patroni has promoted another node
// and it takes writes (about the leader key's TTL, 10s by default). Then it
// calls promoted, if not nil — the place to measure what the app's users
// saw — and starts the old node again and waits until it streams from the
// new leader. Each wait is bounded by 2 minutes.
func (l *AppLab) FailoverPostgres(ctx context.Context, promoted func() error) (Failover, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var f Failover
	t0 := time.Now()
	old, err := l.PG.KillLeader(ctx)
	if err != nil {
		return f, err
	}
	f.Old = old.Name
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	leader, err := l.PG.WaitLeader(wctx, old)
	cancel()
	if err != nil {
		return f, err
	}
	f.New, f.Promoted = leader.Name, time.Since(t0)
	l.opts.Logf("hatest: app lab: PostgreSQL leader %s killed, %s leader %s later", old.Name, leader.Name, f.Promoted.Round(100*time.Millisecond))
	if promoted != nil {
		if err := promoted(); err != nil {
			return f, err
		}
	}
	if err := old.Start(ctx); err != nil {
		return f, fmt.Errorf("hatest: app lab: start %s again: %w", old.Name, err)
	}
	wctx, cancel = context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := old.WaitStreaming(wctx); err != nil {
		return f, fmt.Errorf("hatest: app lab: %s back as a replica: %w", old.Name, err)
	}
	f.Rejoined = time.Since(t0)
	return f, nil
}

// FailoverRedis SIGKILLs the Redis master and waits until the Sentinels
// have promoted the replica and the failover is over. Then it calls
// promoted, if not nil, and starts the old master again and waits until
// the Sentinels have made it a replica of the new one in sync
// ([RedisCluster.WaitReplica]). Each wait is bounded by a minute.
func (l *AppLab) FailoverRedis(ctx context.Context, promoted func() error) (Failover, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var f Failover
	t0 := time.Now()
	old, err := l.Redis.KillMaster(ctx)
	if err != nil {
		return f, err
	}
	f.Old = old.Name
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	master, err := l.Redis.WaitFailover(wctx, old)
	cancel()
	if err != nil {
		return f, err
	}
	f.New, f.Promoted = master.Name, time.Since(t0)
	l.opts.Logf("hatest: app lab: Redis master %s killed, %s master %s later", old.Name, master.Name, f.Promoted.Round(100*time.Millisecond))
	if promoted != nil {
		if err := promoted(); err != nil {
			return f, err
		}
	}
	if err := old.Start(ctx); err != nil {
		return f, fmt.Errorf("hatest: app lab: start %s again: %w", old.Name, err)
	}
	wctx, cancel = context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := l.Redis.WaitReplica(wctx, old); err != nil {
		return f, fmt.Errorf("hatest: app lab: %s back as a replica: %w", old.Name, err)
	}
	f.Rejoined = time.Since(t0)
	return f, nil
}

// Close stops HAProxy, the instances (SIGTERM, SIGKILL 10s later) and every
// service, and removes their data. It is safe to call more than once and on
// a lab that did not finish starting.
func (l *AppLab) Close() error {
	var errs []error
	if l.LB != nil {
		errs = append(errs, l.LB.Close())
	}
	var wg sync.WaitGroup
	for _, in := range l.Instances {
		if p := in.Process(); p != nil {
			wg.Go(func() { _ = p.Stop(10 * time.Second) })
		}
	}
	wg.Wait()
	if l.Mail != nil {
		errs = append(errs, l.Mail.Close())
	}
	if l.MinIO != nil {
		errs = append(errs, l.MinIO.Close())
	}
	if l.Redis != nil {
		errs = append(errs, l.Redis.Close())
	}
	if l.PG != nil {
		errs = append(errs, l.PG.Close())
	}
	return errors.Join(errs...)
}

// tailBuffer keeps the last max bytes written to it, whole lines.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if over := len(b.buf) - b.max; over > 0 {
		cut := over
		if i := bytes.IndexByte(b.buf[over:], '\n'); i >= 0 {
			cut += i + 1
		}
		b.buf = append(b.buf[:0], b.buf[cut:]...)
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}

// tailLines returns the last n lines of s.
func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
