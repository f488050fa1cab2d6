package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"hakit.dev/hatest"
)

// shopDrainDelay is each shop instance's HAKIT_DRAIN_DELAY: longer than
// the 2 s HAProxy (inter 1s, fall 2) takes to mark a draining instance
// down, so a rolling restart loses no request.
const shopDrainDelay = 3 * time.Second

// shopLab runs the shop example's instances behind the lab's HAProxy, and
// the scripted-customer load (examples/shop/cmd/shopload) on demand.
type shopLab struct {
	lab *lab
	log *slog.Logger

	dir      string // temporary: binaries and instance logs
	bin      string // the shop
	loadBin  string // shopload
	admin    string // the admin account's password
	mu       sync.Mutex
	insts    []*shopInstance
	loadProc *hatest.Process
}

// shopInstance is one shop process.
type shopInstance struct {
	name    string
	addr    string
	logPath string
	proc    *hatest.Process
}

// repoRoot finds the directory of hakit's go.mod, from the working
// directory up.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.HasPrefix(string(b), "module hakit.dev\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("not inside the hakit repository: pass -shop-dir")
		}
		dir = parent
	}
}

// build compiles the shop and shopload with go build into a temporary
// directory, and makes the admin password.
func (s *shopLab) build(ctx context.Context, shopDir string) error {
	if shopDir == "" {
		root, err := repoRoot()
		if err != nil {
			return err
		}
		shopDir = filepath.Join(root, "examples", "shop")
	}
	s.log.Info("building the shop with go build", "dir", shopDir)
	dir, err := os.MkdirTemp("", "halab-shop-")
	if err != nil {
		return err
	}
	s.dir = dir
	s.bin = filepath.Join(dir, "shop")
	s.loadBin = filepath.Join(dir, "shopload")
	for _, b := range [][2]string{{s.bin, "."}, {s.loadBin, "./cmd/shopload"}} {
		cmd := exec.CommandContext(ctx, "go", "build", "-o", b[0], b[1])
		cmd.Dir = shopDir
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build %s in %s: %v\n%s", b[1], shopDir, err, out)
		}
	}
	s.admin = rand.Text()[:16]
	return nil
}

// prepare picks an address for each of n instances and returns them as
// HAProxy's backends.
func (s *shopLab) prepare(n int) ([]hatest.Backend, error) {
	var backends []hatest.Backend
	for i := range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		addr := ln.Addr().String()
		ln.Close()
		name := fmt.Sprintf("shop%d", i)
		s.insts = append(s.insts, &shopInstance{name: name, addr: addr, logPath: filepath.Join(s.dir, name+".log")})
		backends = append(backends, hatest.Backend{Name: name, Addr: addr})
	}
	return backends, nil
}

// env is an instance's environment, pointing at the lab's services.
func (s *shopLab) env(in *shopInstance) []string {
	l := s.lab
	env := []string{
		"HAKIT_ADDR=" + in.addr,
		"HAKIT_DRAIN_DELAY=" + shopDrainDelay.String(),
		"HAKIT_REDIS_SENTINELS=" + strings.Join(l.redis.SentinelAddrs(), ","),
		"HAKIT_REDIS_MASTER=" + l.redis.MasterName,
		"HAKIT_S3_ENDPOINT=" + l.minio.Endpoint,
		"HAKIT_S3_REGION=" + l.minio.Region,
		"HAKIT_S3_BUCKET=" + l.minio.Bucket,
		"HAKIT_S3_ACCESS_KEY_ID=" + l.minio.AccessKey,
		"HAKIT_S3_SECRET_ACCESS_KEY=" + l.minio.SecretKey,
		"HAKIT_S3_PATH_STYLE=true",
		"SHOP_SMTP_ADDR=" + l.mail.SMTPAddr,
		"SHOP_SEED=true",
		"SHOP_DEV=true",
		"SHOP_ADMIN_EMAIL=admin@example.test",
		"SHOP_ADMIN_PASSWORD=" + s.admin,
	}
	for i, dsn := range l.pg.DSNs() {
		env = append(env, fmt.Sprintf("HAKIT_DATABASE_URL_%d=%s", i+1, dsn))
	}
	return env
}

// startAll starts the first instance alone (it migrates and seeds the
// catalog), then the others together, each until HAProxy has it up.
func (s *shopLab) startAll(ctx context.Context) error {
	if err := s.start(ctx, s.insts[0]); err != nil {
		return err
	}
	errs := make([]error, len(s.insts))
	var wg sync.WaitGroup
	for i, in := range s.insts[1:] {
		wg.Go(func() { errs[i+1] = s.start(ctx, in) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// start starts one instance, its output appended to its log file, and
// waits until HAProxy has it up.
func (s *shopLab) start(ctx context.Context, in *shopInstance) error {
	s.mu.Lock()
	if in.proc != nil && !in.proc.Exited() {
		s.mu.Unlock()
		return fmt.Errorf("%s is running (kill-app %s first)", in.name, in.name)
	}
	f, err := os.OpenFile(in.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		s.mu.Unlock()
		return err
	}
	p, err := hatest.StartProcess(hatest.ProcessOptions{Name: in.name, Path: s.bin, Env: s.env(in), Output: f})
	if err != nil {
		f.Close()
		s.mu.Unlock()
		return err
	}
	in.proc = p
	s.mu.Unlock()
	go func() {
		<-p.Done()
		f.Close()
	}()
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	up := make(chan error, 1)
	go func() { up <- s.lab.lb.WaitServerStatus(wctx, in.name, "UP") }()
	select {
	case err := <-up:
		if err != nil {
			return fmt.Errorf("%s did not come up: %w (log: %s)", in.name, err, in.logPath)
		}
		return nil
	case <-p.Done():
		cancel()
		<-up
		return fmt.Errorf("%s exited while starting; its log %s ends:\n%s", in.name, in.logPath, tailLines(p.Output(), 15))
	}
}

func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func (s *shopLab) instance(name string) (*shopInstance, error) {
	for _, in := range s.insts {
		if in.name == name {
			return in, nil
		}
	}
	names := make([]string, len(s.insts))
	for i, in := range s.insts {
		names[i] = in.name
	}
	return nil, fmt.Errorf("no shop instance %q (instances: %s)", name, strings.Join(names, ", "))
}

func (s *shopLab) proc(in *shopInstance) *hatest.Process {
	s.mu.Lock()
	defer s.mu.Unlock()
	return in.proc
}

// table adds the shop's rows to the endpoint table.
func (s *shopLab) table(tw *tabwriter.Writer) {
	fmt.Fprintf(tw, "shop\t%s\tthrough HAProxy; admin login admin@example.test / %s at %s/admin\n", s.lab.lb.URL, s.admin, s.lab.lb.URL)
	for _, in := range s.insts {
		state := "running"
		if p := s.proc(in); p == nil || p.Exited() {
			state = "down"
		}
		fmt.Fprintf(tw, "shop %s\thttp://%s\t%s; log %s\n", in.name, in.addr, state, in.logPath)
	}
}

// command runs a shop chaos command.
func (s *shopLab) command(ctx context.Context, cmd string, args []string) error {
	one := func() (*shopInstance, error) {
		if len(args) != 1 {
			return nil, fmt.Errorf("%s needs one argument, the instance's name (shop0, shop1, …)", cmd)
		}
		return s.instance(args[0])
	}
	say := s.lab.say
	switch cmd {
	case "kill-app":
		in, err := one()
		if err != nil {
			return err
		}
		p := s.proc(in)
		if p == nil || p.Exited() {
			return fmt.Errorf("%s is not running", in.name)
		}
		if err := p.Kill(); err != nil {
			return err
		}
		say(fmt.Sprintf("killed %s (kill -9); HAProxy takes it out after 2 failed checks. Bring it back with: start-app %s", in.name, in.name))
	case "start-app":
		in, err := one()
		if err != nil {
			return err
		}
		t0 := time.Now()
		if err := s.start(ctx, in); err != nil {
			return err
		}
		say(fmt.Sprintf("%s is up behind HAProxy again after %.1fs", in.name, time.Since(t0).Seconds()))
	case "rolling-restart":
		for _, in := range s.insts {
			t0 := time.Now()
			p := s.proc(in)
			if p != nil && !p.Exited() {
				if err := p.Terminate(); err != nil {
					return err
				}
				wctx, cancel := context.WithTimeout(ctx, time.Minute)
				code, err := p.Wait(wctx)
				cancel()
				if err != nil {
					return err
				}
				say(fmt.Sprintf("%s drained and exited with %d after %.1fs", in.name, code, time.Since(t0).Seconds()))
			}
			if err := s.start(ctx, in); err != nil {
				return err
			}
			say(fmt.Sprintf("%s is up again, %.1fs after SIGTERM", in.name, time.Since(t0).Seconds()))
		}
		say("rolling restart done")
	case "load":
		if len(args) != 1 || (args[0] != "on" && args[0] != "off") {
			return errors.New("load needs on or off")
		}
		if args[0] == "on" {
			return s.loadOn()
		}
		return s.loadOff()
	default:
		return fmt.Errorf("unknown shop command %q", cmd)
	}
	return nil
}

// loadOn starts shopload against HAProxy; its live lines go to the lab's
// output.
func (s *shopLab) loadOn() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.loadProc != nil && !s.loadProc.Exited() {
		return errors.New("the load is already on (load off stops it)")
	}
	pr, pw := io.Pipe()
	p, err := hatest.StartProcess(hatest.ProcessOptions{Name: "load", Path: s.loadBin, Output: pw,
		Args: []string{"-url", s.lab.lb.URL, "-customers", "8", "-rate", "40", "-duration", "30m", "-interval", "2s", "-json"}})
	if err != nil {
		pw.Close()
		return err
	}
	s.loadProc = p
	go func() {
		<-p.Done()
		pw.Close()
	}()
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			line := strings.TrimPrefix(sc.Text(), "[load] ")
			if smp, text, ok := parseLoadLine(line); ok {
				s.lab.loadSample(smp)
				line = text
			}
			s.lab.say(line)
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	return nil
}

func (s *shopLab) loadOff() error {
	s.mu.Lock()
	p := s.loadProc
	s.loadProc = nil
	s.mu.Unlock()
	if p == nil || p.Exited() {
		return errors.New("the load is off (load on starts it)")
	}
	return p.Stop(15 * time.Second)
}

// close stops the load and the instances (SIGTERM, so they drain) and
// removes the binaries; the logs go with them.
func (s *shopLab) close() error {
	var errs []error
	s.mu.Lock()
	procs := []*hatest.Process{s.loadProc}
	for _, in := range s.insts {
		procs = append(procs, in.proc)
	}
	s.mu.Unlock()
	var wg sync.WaitGroup
	var mu sync.Mutex
	for _, p := range procs {
		if p == nil {
			continue
		}
		wg.Go(func() {
			if err := p.Stop(15 * time.Second); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if s.dir != "" {
		errs = append(errs, os.RemoveAll(s.dir))
	}
	return errors.Join(errs...)
}
