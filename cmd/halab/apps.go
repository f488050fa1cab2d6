package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"hakit.dev/hatest"
)

// appDrainDelay is each app instance's HAKIT_DRAIN_DELAY: longer than
// the 2 s HAProxy (inter 1s, fall 2) takes to mark a draining instance
// down, so a kill -TERM loses no request even without the rolling
// restart's HAProxy drain.
const appDrainDelay = 3 * time.Second

// drainHold is how long a rolling restart keeps an instance in HAProxy's
// DRAIN state at least before it stops the process: in-flight requests
// finish, and the dashboard (one poll a second) shows the state.
const drainHold = 2 * time.Second

// appGroup is one example app's instances behind their HAProxy: the
// processes, their logs, and the chaos commands that act on them.
type appGroup struct {
	lab   *lab
	log   *slog.Logger
	id    string // shop, sso: the app's name in commands
	title string // Shop, SSO: its name on the page
	dir   string // temporary: binaries and instance logs
	bin   string
	lb    *hatest.HAProxy
	env   func(*appInstance) []string

	mu    sync.Mutex
	insts []*appInstance
}

// appInstance is one app process.
type appInstance struct {
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
			return "", errors.New("not inside the hakit repository: pass -shop-dir and -sso-dir")
		}
		dir = parent
	}
}

// moduleDir is dir, or examples/<name> of the repository when dir is "".
func moduleDir(dir, name string) (string, error) {
	if dir != "" {
		return dir, nil
	}
	root, err := repoRoot()
	if err != nil {
		return "", err
	}
	return filepath.Join(root, "examples", name), nil
}

// build compiles the app's packages with go build into a new temporary
// directory: each pair is the output's file name and the package.
func (g *appGroup) build(ctx context.Context, modDir string, pkgs ...[2]string) error {
	g.log.Info("building with go build", "app", g.id, "dir", modDir)
	dir, err := os.MkdirTemp("", "halab-"+g.id+"-")
	if err != nil {
		return err
	}
	g.dir = dir
	g.bin = filepath.Join(dir, g.id)
	for _, b := range pkgs {
		cmd := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(dir, b[0]), b[1])
		cmd.Dir = modDir
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build %s in %s: %v\n%s", b[1], modDir, err, out)
		}
	}
	return nil
}

// prepare picks an address for each of n instances and returns them as
// HAProxy's backends.
func (g *appGroup) prepare(n int) ([]hatest.Backend, error) {
	var backends []hatest.Backend
	for i := range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		addr := ln.Addr().String()
		ln.Close()
		name := fmt.Sprintf("%s%d", g.id, i)
		g.insts = append(g.insts, &appInstance{name: name, addr: addr, logPath: filepath.Join(g.dir, name+".log")})
		backends = append(backends, hatest.Backend{Name: name, Addr: addr})
	}
	return backends, nil
}

// startAll starts the first instance alone (it migrates the database),
// then the others together, each until HAProxy has it up.
func (g *appGroup) startAll(ctx context.Context) error {
	if err := g.start(ctx, g.insts[0]); err != nil {
		return err
	}
	errs := make([]error, len(g.insts))
	var wg sync.WaitGroup
	for i, in := range g.insts[1:] {
		wg.Go(func() { errs[i+1] = g.start(ctx, in) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// start starts one instance, its output appended to its log file, and
// waits until HAProxy has it up.
func (g *appGroup) start(ctx context.Context, in *appInstance) error {
	g.mu.Lock()
	if in.proc != nil && !in.proc.Exited() {
		g.mu.Unlock()
		return fmt.Errorf("%s is running (kill-app %s first)", in.name, in.name)
	}
	f, err := os.OpenFile(in.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		g.mu.Unlock()
		return err
	}
	p, err := hatest.StartProcess(hatest.ProcessOptions{Name: in.name, Path: g.bin, Env: g.env(in), Output: f})
	if err != nil {
		f.Close()
		g.mu.Unlock()
		return err
	}
	in.proc = p
	g.mu.Unlock()
	go func() {
		<-p.Done()
		f.Close()
	}()
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	up := make(chan error, 1)
	go func() { up <- g.lb.WaitServerStatus(wctx, in.name, "UP") }()
	select {
	case err := <-up:
		if err != nil {
			return fmt.Errorf("%s did not come up: %w (log: %s)", in.name, err, in.logPath)
		}
		g.lab.look(ctx)
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

// instance finds an instance by name.
func (g *appGroup) instance(name string) (*appInstance, error) {
	for _, in := range g.insts {
		if in.name == name {
			return in, nil
		}
	}
	return nil, fmt.Errorf("no %s instance %q (instances: %s)", g.id, name, strings.Join(g.names(), ", "))
}

func (g *appGroup) names() []string {
	names := make([]string, len(g.insts))
	for i, in := range g.insts {
		names[i] = in.name
	}
	return names
}

func (g *appGroup) proc(in *appInstance) *hatest.Process {
	g.mu.Lock()
	defer g.mu.Unlock()
	return in.proc
}

func (g *appGroup) running(in *appInstance) bool {
	p := g.proc(in)
	return p != nil && !p.Exited()
}

// kill kills an instance with SIGKILL: its in-flight requests fail.
func (g *appGroup) kill(in *appInstance) error {
	p := g.proc(in)
	if p == nil || p.Exited() {
		return fmt.Errorf("%s is not running", in.name)
	}
	if err := p.Kill(); err != nil {
		return err
	}
	g.lab.say(fmt.Sprintf("killed %s (kill -9); HAProxy takes it out after 2 failed checks. Bring it back with: start-app %s", in.name, in.name))
	return nil
}

// startAgain starts a killed or stopped instance.
func (g *appGroup) startAgain(ctx context.Context, in *appInstance) error {
	t0 := time.Now()
	if err := g.start(ctx, in); err != nil {
		return err
	}
	g.lab.say(fmt.Sprintf("%s is up behind HAProxy again after %.1fs", in.name, time.Since(t0).Seconds()))
	return nil
}

// rollingRestart restarts each instance in turn as a deployment does:
// HAProxy drains it (no new requests; DRAIN), then SIGTERM, the
// instance finishes what it has and exits (DOWN), and it starts again
// (UP) before the next one's turn.
func (g *appGroup) rollingRestart(ctx context.Context) error {
	say := g.lab.say
	for _, in := range g.insts {
		t0 := time.Now()
		if p := g.proc(in); p != nil && !p.Exited() {
			if err := g.drain(ctx, in); err != nil {
				return err
			}
			say(fmt.Sprintf("%s drained in HAProxy (no new requests) after %.1fs; SIGTERM", in.name, time.Since(t0).Seconds()))
			if err := p.Terminate(); err != nil {
				return err
			}
			wctx, cancel := context.WithTimeout(ctx, time.Minute)
			code, err := p.Wait(wctx)
			cancel()
			if err != nil {
				return err
			}
			say(fmt.Sprintf("%s finished its requests and exited with %d after %.1fs", in.name, code, time.Since(t0).Seconds()))
			if err := g.waitStatus(ctx, in, "DOWN"); err != nil {
				return err
			}
		}
		// Ready again in HAProxy's eyes: it takes the instance back once
		// the new process passes its checks.
		if err := g.lb.SetServerState(ctx, in.name, "ready"); err != nil {
			return err
		}
		if err := g.start(ctx, in); err != nil {
			return err
		}
		say(fmt.Sprintf("%s is up again, %.1fs after its drain began", in.name, time.Since(t0).Seconds()))
	}
	say(fmt.Sprintf("rolling restart of the %s done", g.id))
	return nil
}

// drain puts an instance in HAProxy's DRAIN state and waits until it
// holds no connection (at most 15 s) and drainHold has passed.
func (g *appGroup) drain(ctx context.Context, in *appInstance) error {
	t0 := time.Now()
	if err := g.lb.SetServerState(ctx, in.name, "drain"); err != nil {
		return err
	}
	if err := g.waitStatus(ctx, in, "DRAIN"); err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		stats, err := g.lb.Stats(wctx)
		if err == nil && time.Since(t0) >= drainHold {
			idle := true
			for _, st := range stats {
				if st.Name == in.name && st.Current > 0 {
					idle = false
				}
			}
			if idle {
				return nil
			}
		}
		select {
		case <-wctx.Done():
			// Still busy after 15 s: the SIGTERM's own drain handles
			// the rest.
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// waitStatus waits until HAProxy reports the instance in status, and has
// the dashboard, if any, look at once: each step of a rolling restart is
// on the page and its timeline even on a machine too busy for its
// once-a-second poll.
func (g *appGroup) waitStatus(ctx context.Context, in *appInstance, status string) error {
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := g.lb.WaitServerStatus(wctx, in.name, status); err != nil {
		return fmt.Errorf("%s not %s in HAProxy: %w", in.name, status, err)
	}
	g.lab.look(ctx)
	return nil
}

// look has the dashboard, if any, read the lab's state now.
func (l *lab) look(ctx context.Context) {
	if l.dash != nil {
		l.dash.look(ctx)
	}
}

// stop stops every instance (SIGTERM, so they drain) and the extra
// processes, then removes the binaries; the logs go with them.
func (g *appGroup) stop(extra ...*hatest.Process) error {
	g.mu.Lock()
	procs := extra
	for _, in := range g.insts {
		procs = append(procs, in.proc)
	}
	g.mu.Unlock()
	var errs []error
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
	if g.dir != "" {
		errs = append(errs, os.RemoveAll(g.dir))
	}
	return errors.Join(errs...)
}

// groups are the lab's example apps: the shop, the SSO provider.
func (l *lab) groups() []*appGroup {
	var gs []*appGroup
	if l.shop != nil {
		gs = append(gs, l.shop.appGroup)
	}
	if l.sso != nil {
		gs = append(gs, l.sso.appGroup)
	}
	return gs
}

// findApp returns the app named id (shop, sso).
func (l *lab) findApp(id string) *appGroup {
	for _, g := range l.groups() {
		if g.id == id {
			return g
		}
	}
	return nil
}

// appCommand runs a chaos command on the apps: kill-app and start-app
// take [APP] NAME or APP, rolling-restart takes [APP]; load on|off acts
// on every app's load.
func (l *lab) appCommand(ctx context.Context, cmd string, args []string) error {
	var ids []string
	for _, g := range l.groups() {
		ids = append(ids, g.id)
	}
	apps := strings.Join(ids, "|")
	switch cmd {
	case "kill-app", "start-app":
		g, in, err := l.target(cmd, args)
		if err != nil {
			return err
		}
		if cmd == "kill-app" {
			return g.kill(in)
		}
		return g.startAgain(ctx, in)
	case "rolling-restart":
		var g *appGroup
		switch len(args) {
		case 0:
			g = l.groups()[0]
		case 1:
			if g = l.findApp(args[0]); g == nil {
				return fmt.Errorf("rolling-restart [%s]: no app %q", apps, args[0])
			}
		default:
			return fmt.Errorf("rolling-restart takes at most one argument, the app (%s)", apps)
		}
		return g.rollingRestart(ctx)
	case "load":
		if len(args) != 1 || (args[0] != "on" && args[0] != "off") {
			return errors.New("load needs on or off")
		}
		return l.loadSwitch(args[0] == "on")
	}
	return fmt.Errorf("unknown app command %q", cmd)
}

// target reads kill-app's and start-app's arguments: [APP] NAME, or APP
// alone for its first instance that is running (kill-app) or not
// (start-app).
func (l *lab) target(cmd string, args []string) (*appGroup, *appInstance, error) {
	var all []string
	for _, g := range l.groups() {
		all = append(all, g.names()...)
	}
	usage := fmt.Errorf("%s needs an instance (%s), or an app and an instance", cmd, strings.Join(all, ", "))
	switch len(args) {
	case 1:
		if g := l.findApp(args[0]); g != nil {
			for _, in := range g.insts {
				if g.running(in) == (cmd == "kill-app") {
					return g, in, nil
				}
			}
			if cmd == "kill-app" {
				return nil, nil, fmt.Errorf("no %s instance is running", g.id)
			}
			return nil, nil, fmt.Errorf("every %s instance is running", g.id)
		}
		for _, g := range l.groups() {
			if in, err := g.instance(args[0]); err == nil {
				return g, in, nil
			}
		}
		return nil, nil, fmt.Errorf("no app instance %q (instances: %s)", args[0], strings.Join(all, ", "))
	case 2:
		g := l.findApp(args[0])
		if g == nil {
			return nil, nil, usage
		}
		in, err := g.instance(args[1])
		return g, in, err
	}
	return nil, nil, usage
}

// loadSwitch turns every app's load on or off.
func (l *lab) loadSwitch(on bool) error {
	var errs []error
	switched := false
	if l.shop != nil && l.shop.loadRunning() != on {
		switched = true
		if on {
			errs = append(errs, l.shop.loadOn())
		} else {
			errs = append(errs, l.shop.loadOff())
		}
	}
	if l.sso != nil && l.sso.loadRunning() != on {
		switched = true
		if on {
			errs = append(errs, l.sso.loadOn())
		} else if err := l.sso.loadOff(); err != nil {
			errs = append(errs, err)
		} else {
			l.say("load: sso stopped")
		}
	}
	switch {
	case !switched && on:
		return errStillOn
	case !switched:
		return errStillOff
	}
	return errors.Join(errs...)
}

// loadRunning reports whether a load runs.
func (l *lab) loadRunning() bool {
	return (l.shop != nil && l.shop.loadRunning()) || (l.sso != nil && l.sso.loadRunning())
}
