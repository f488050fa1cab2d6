// Package lab runs the shop as it runs in production, on this machine:
// PostgreSQL under Patroni, Redis with Sentinels, MinIO, Mailpit as the
// SMTP server, and shop instances (the real binary, as subprocesses)
// behind HAProxy. It breaks them the way production breaks (SIGTERM and
// restart, kill -9, a lost database leader, a lost Redis master, S3 gone)
// and checks afterwards what a shop must never do: lose an acknowledged
// order, place one twice, oversell, mail twice.
//
// The shop's chaos test and its benchmark command (cmd/shopbench) share
// it:
//
//	bin, _ := lab.BuildShop(ctx, ".", dir)
//	l, _ := lab.Start(ctx, lab.Options{ShopBin: bin})
//	defer l.Close()
//	load, _ := customer.Start(ctx, customer.Config{BaseURL: l.URL})
//	_ = l.RollingRestart(ctx)
//	load.Stop()
//	report, _ := l.Verify(ctx, lab.Expect{Orders: load.Orders(), Submitted: load.Submitted(), Stock: stock})
package lab

import (
	"context"
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

	"hakit.dev/hatest"
)

// Options configure a lab. Only ShopBin is required.
type Options struct {
	// ShopBin is the shop binary (see BuildShop).
	ShopBin string
	// Instances is how many shop instances run behind HAProxy. Defaults
	// to 3.
	Instances int
	// PGNodes is the size of the Patroni cluster. Defaults to 2.
	PGNodes int
	// DrainDelay is every instance's HAKIT_DRAIN_DELAY: at least the 2 s
	// HAProxy (inter 1s, fall 2) takes to mark a draining instance down.
	// Defaults to 3s.
	DrainDelay time.Duration
	// AdminEmail and AdminPassword are the shop's admin account. Default
	// to admin@example.test and "lab-admin-password".
	AdminEmail, AdminPassword string
	// LogLevel is every instance's HAKIT_LOG_LEVEL. Defaults to "warn":
	// the access log of a load is large.
	LogLevel string
	// Env is added to every instance's environment (KEY=value), after
	// the lab's own.
	Env []string
	// Output receives every instance's output lines, prefixed with its
	// name. Nil discards them.
	Output io.Writer
	// Logf, if set, receives the lab's progress lines.
	Logf func(format string, args ...any)
}

// Lab is a running shop with its services. Its methods are safe for
// concurrent use, but act on one instance at a time.
type Lab struct {
	// URL is the shop's address through HAProxy.
	URL string

	PG    *hatest.PatroniCluster
	Redis *hatest.RedisCluster
	MinIO *hatest.MinIO
	Mail  *hatest.Mailpit
	LB    *hatest.HAProxy
	// Instances are the shop instances, named shop0, shop1, … in
	// HAProxy.
	Instances []*Instance

	opts Options
	mu   sync.Mutex // one instance change at a time
}

// Instance is one shop process behind HAProxy.
type Instance struct {
	Name string
	Addr string // host:port it listens on

	env  []string
	mu   sync.Mutex
	proc *hatest.Process
}

// Running reports whether the instance's process runs.
func (in *Instance) Running() bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.proc != nil && !in.proc.Exited()
}

// Pid returns the process id of the instance, 0 when it is not running.
func (in *Instance) Pid() int {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.proc == nil || in.proc.Exited() {
		return 0
	}
	return in.proc.Pid()
}

// BuildShop compiles the shop's main package in dir (the shop module's
// root) into outDir with go build and returns the binary's path.
func BuildShop(ctx context.Context, dir, outDir string, buildArgs ...string) (string, error) {
	out := filepath.Join(outDir, "shop")
	args := append(append([]string{"build", "-o", out}, buildArgs...), ".")
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = dir
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("lab: go %s in %s: %v\n%s", strings.Join(args, " "), dir, err, b)
	}
	return out, nil
}

// Start starts the services in parallel, then the shop instances (the
// first alone, so it runs the migrations and seeds the catalog while the
// others wait for nothing) and HAProxy, and returns when HAProxy has every
// instance up. On error everything started is stopped.
func Start(ctx context.Context, opts Options) (_ *Lab, err error) {
	if opts.ShopBin == "" {
		return nil, errors.New("lab: Options.ShopBin is empty")
	}
	if opts.Instances == 0 {
		opts.Instances = 3
	}
	if opts.PGNodes == 0 {
		opts.PGNodes = 2
	}
	if opts.Instances < 1 || opts.PGNodes < 1 {
		return nil, fmt.Errorf("lab: %d instances and %d PostgreSQL nodes: want at least 1 of each", opts.Instances, opts.PGNodes)
	}
	if opts.DrainDelay == 0 {
		opts.DrainDelay = 3 * time.Second
	}
	if opts.AdminEmail == "" {
		opts.AdminEmail = "admin@example.test"
	}
	if opts.AdminPassword == "" {
		opts.AdminPassword = "lab-admin-password"
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
	l := &Lab{opts: opts}
	defer func() {
		if err != nil {
			err = errors.Join(err, l.Close())
		}
	}()

	t0 := time.Now()
	var wg sync.WaitGroup
	var pgErr, redisErr, minioErr, mailErr error
	wg.Go(func() { l.PG, pgErr = hatest.StartPatroni(ctx, hatest.PatroniOptions{Nodes: opts.PGNodes}) })
	wg.Go(func() {
		l.Redis, redisErr = hatest.StartRedis(ctx, hatest.RedisOptions{Replicas: 1, Sentinels: 3})
	})
	wg.Go(func() { l.MinIO, minioErr = hatest.StartMinIO(ctx, hatest.MinIOOptions{Bucket: "shop"}) })
	wg.Go(func() { l.Mail, mailErr = hatest.StartMailpit(ctx, hatest.MailpitOptions{}) })
	wg.Wait()
	if err := errors.Join(pgErr, redisErr, minioErr, mailErr); err != nil {
		return nil, err
	}
	opts.Logf("lab: services up in %s", time.Since(t0).Round(100*time.Millisecond))

	backends := make([]hatest.Backend, opts.Instances)
	for i := range backends {
		addr, err := freeAddr()
		if err != nil {
			return nil, err
		}
		in := &Instance{Name: "shop" + strconv.Itoa(i), Addr: addr}
		in.env = append(l.env(addr), opts.Env...)
		l.Instances = append(l.Instances, in)
		backends[i] = hatest.Backend{Name: in.Name, Addr: addr}
	}
	if l.LB, err = hatest.StartHAProxy(ctx, hatest.HAProxyOptions{Backends: backends}); err != nil {
		return nil, err
	}
	l.URL = l.LB.URL
	// The first instance migrates and seeds alone; the others then start
	// together.
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
	opts.Logf("lab: %d shop instances up behind HAProxy %s in %s", len(l.Instances), l.URL, time.Since(t0).Round(100*time.Millisecond))
	return l, nil
}

// env is an instance's environment: hakit's and the shop's variables
// pointing at the lab's services.
func (l *Lab) env(addr string) []string {
	env := []string{
		"HAKIT_ADDR=" + addr,
		"HAKIT_DRAIN_DELAY=" + l.opts.DrainDelay.String(),
		"HAKIT_LOG_LEVEL=" + l.opts.LogLevel,
		"HAKIT_REDIS_SENTINELS=" + strings.Join(l.Redis.SentinelAddrs(), ","),
		"HAKIT_REDIS_MASTER=" + l.Redis.MasterName,
		"HAKIT_S3_ENDPOINT=" + l.MinIO.Endpoint,
		"HAKIT_S3_REGION=" + l.MinIO.Region,
		"HAKIT_S3_BUCKET=" + l.MinIO.Bucket,
		"HAKIT_S3_ACCESS_KEY_ID=" + l.MinIO.AccessKey,
		"HAKIT_S3_SECRET_ACCESS_KEY=" + l.MinIO.SecretKey,
		"HAKIT_S3_PATH_STYLE=true",
		"SHOP_SMTP_ADDR=" + l.Mail.SMTPAddr,
		"SHOP_SEED=true",
		"SHOP_DEV=true",
		"SHOP_ADMIN_EMAIL=" + l.opts.AdminEmail,
		"SHOP_ADMIN_PASSWORD=" + l.opts.AdminPassword,
	}
	for i, dsn := range l.PG.DSNs() {
		env = append(env, fmt.Sprintf("HAKIT_DATABASE_URL_%d=%s", i+1, dsn))
	}
	return env
}

// Admin returns the admin account's e-mail and password.
func (l *Lab) Admin() (email, password string) { return l.opts.AdminEmail, l.opts.AdminPassword }

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
	p, err := hatest.StartProcess(hatest.ProcessOptions{Name: in.Name, Path: l.opts.ShopBin, Env: in.env, Output: l.opts.Output})
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

// instance returns the instance called name, or numbered i ("1").
func (l *Lab) instance(name string) (*Instance, error) {
	for i, in := range l.Instances {
		if in.Name == name || strconv.Itoa(i) == name {
			return in, nil
		}
	}
	return nil, fmt.Errorf("lab: no shop instance %q", name)
}

// StartInstance starts a stopped or killed instance again and waits until
// HAProxy has it up.
func (l *Lab) StartInstance(ctx context.Context, name string) error {
	in, err := l.instance(name)
	if err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.startInstance(ctx, in)
}

// StopInstance SIGTERMs an instance, as a deploy does, and waits until it
// has drained and exited; an exit code other than 0 is an error.
func (l *Lab) StopInstance(ctx context.Context, name string) error {
	in, err := l.instance(name)
	if err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.stopInstance(ctx, in)
}

func (l *Lab) stopInstance(ctx context.Context, in *Instance) error {
	in.mu.Lock()
	p := in.proc
	in.mu.Unlock()
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

// KillInstance SIGKILLs an instance (a lost machine): its in-flight
// requests fail.
func (l *Lab) KillInstance(name string) error {
	in, err := l.instance(name)
	if err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	in.mu.Lock()
	p := in.proc
	in.mu.Unlock()
	if p == nil || p.Exited() {
		return fmt.Errorf("lab: %s is not running", in.Name)
	}
	return p.Kill()
}

// RollingRestart SIGTERMs and starts every instance in turn, waiting until
// HAProxy has each up again before the next, as a deploy does.
func (l *Lab) RollingRestart(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, in := range l.Instances {
		t0 := time.Now()
		if err := l.stopInstance(ctx, in); err != nil {
			return err
		}
		if err := l.startInstance(ctx, in); err != nil {
			return err
		}
		l.opts.Logf("lab: %s restarted, up again %s after SIGTERM", in.Name, time.Since(t0).Round(100*time.Millisecond))
	}
	return nil
}

// Close stops the instances and every service. It is safe to call more
// than once and on a lab that did not finish starting.
func (l *Lab) Close() error {
	var errs []error
	if l.LB != nil {
		errs = append(errs, l.LB.Close())
	}
	var wg sync.WaitGroup
	for _, in := range l.Instances {
		in.mu.Lock()
		p := in.proc
		in.mu.Unlock()
		if p != nil {
			wg.Go(func() { _ = p.Stop(10 * time.Second) })
		}
	}
	wg.Wait()
	for _, c := range []interface{ Close() error }{l.Mail, l.MinIO, l.Redis, l.PG} {
		if c != nil && !isNil(c) {
			errs = append(errs, c.Close())
		}
	}
	return errors.Join(errs...)
}

// isNil reports whether c holds a nil pointer (a service that did not
// start).
func isNil(c interface{ Close() error }) bool {
	switch v := c.(type) {
	case *hatest.Mailpit:
		return v == nil
	case *hatest.MinIO:
		return v == nil
	case *hatest.RedisCluster:
		return v == nil
	case *hatest.PatroniCluster:
		return v == nil
	}
	return false
}
