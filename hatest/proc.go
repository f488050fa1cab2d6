package hatest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// daemon is one server process started by the harness: its output goes to a
// log file in its directory, it dies with the harness process (Pdeathsig),
// and it can be signalled, killed and started again with the same command.
type daemon struct {
	name    string
	path    string
	args    []string
	env     []string // added to the harness's environment
	dir     string   // working directory
	logPath string
	cred    *syscall.Credential // nil: run as the current user

	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{} // closed when cmd has been waited for
	waitErr error
	paused  bool
}

// start starts the process. It fails if the process is already running.
func (d *daemon) start() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cmd != nil && !isClosed(d.done) {
		return fmt.Errorf("hatest: %s is already running (pid %d)", d.name, d.cmd.Process.Pid)
	}
	logf, err := os.OpenFile(d.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("hatest: %s: open log: %w", d.name, err)
	}
	if d.cred != nil {
		// The log may be created by the harness user but written by the
		// service user.
		_ = os.Chown(d.logPath, int(d.cred.Uid), int(d.cred.Gid))
	}
	fmt.Fprintf(logf, "---- hatest: %s starting: %s %s\n", time.Now().Format(time.RFC3339Nano), d.path, strings.Join(d.args, " "))
	cmd := exec.Command(d.path, d.args...)
	cmd.Dir = d.dir
	cmd.Env = append(os.Environ(), d.env...)
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// The server dies with the harness, even if the test binary is
		// killed before its cleanups run.
		Pdeathsig: syscall.SIGKILL,
		// Its own process group, so a terminal's Ctrl-C reaches the
		// harness (which stops everything in order) and not the servers
		// directly.
		Setpgid:    true,
		Credential: d.cred,
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("hatest: start %s: %w", d.name, err)
	}
	logf.Close() // the child holds its own copy
	done := make(chan struct{})
	d.cmd, d.done, d.waitErr, d.paused = cmd, done, nil, false
	go func() {
		err := cmd.Wait()
		d.mu.Lock()
		d.waitErr = err
		d.mu.Unlock()
		close(done)
	}()
	return nil
}

// startOnFreePorts starts the daemon on n free ports: setup prepares its
// arguments or config for them, ready waits until it serves. If it fails
// because a port was taken between freePort and the start, it tries again
// with other ports, three times at most.
func (d *daemon) startOnFreePorts(n int, setup func(ports []int) error, ready func() error) error {
	var err error
	for range 3 {
		ports := make([]int, n)
		for i := range ports {
			if ports[i], err = freePort(); err != nil {
				return err
			}
		}
		if err = setup(ports); err != nil {
			return err
		}
		if err = d.start(); err != nil {
			return err
		}
		if err = ready(); err == nil || !addrInUse(d.logTail(20)) {
			return err
		}
		_ = d.kill()
	}
	return err
}

// pid returns the process id, or 0 if the process never started.
func (d *daemon) pid() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cmd == nil {
		return 0
	}
	return d.cmd.Process.Pid
}

// running reports whether the process has been started and not yet exited.
func (d *daemon) running() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cmd != nil && !isClosed(d.done)
}

// exited returns a channel closed when the current process exits; nil if
// it never started.
func (d *daemon) exited() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.done
}

func (d *daemon) exitErr() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.waitErr
}

// signal sends sig to the process (not to its children).
func (d *daemon) signal(sig syscall.Signal) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cmd == nil || isClosed(d.done) {
		return fmt.Errorf("hatest: %s is not running", d.name)
	}
	if err := d.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("hatest: signal %s: %w", d.name, err)
	}
	switch sig {
	case syscall.SIGSTOP:
		d.paused = true
	case syscall.SIGCONT:
		d.paused = false
	}
	return nil
}

// wait waits until the process exits or timeout passes.
func (d *daemon) wait(timeout time.Duration) error {
	done := d.exited()
	if done == nil {
		return nil
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-done:
		return nil
	case <-t.C:
		return fmt.Errorf("hatest: %s (pid %d) did not exit within %s", d.name, d.pid(), timeout)
	}
}

// kill sends SIGKILL to the process and every process descended from it,
// and waits for the process to be reaped. Descendants that changed their
// process group (PostgreSQL backends do) are found through /proc.
func (d *daemon) kill() error {
	if !d.running() {
		return nil
	}
	pid := d.pid()
	victims := append([]int{pid}, descendants(pid)...)
	killPids(victims)
	if err := d.wait(10 * time.Second); err != nil {
		return err
	}
	return waitGone(victims, 10*time.Second)
}

// stop asks the process to exit with sig and kills it (and what it
// started) if it has not exited after grace.
func (d *daemon) stop(sig syscall.Signal, grace time.Duration) error {
	if !d.running() {
		return nil
	}
	pid := d.pid()
	kids := descendants(pid)
	if d.isPaused() {
		_ = d.signal(syscall.SIGCONT)
		signalPids(kids, syscall.SIGCONT)
	}
	if err := d.signal(sig); err != nil && d.running() {
		return err
	}
	if d.wait(grace) != nil {
		return d.kill()
	}
	// Whatever the process left behind (it should have stopped its own
	// children) goes too.
	killPids(kids)
	return waitGone(kids, 10*time.Second)
}

func (d *daemon) isPaused() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.paused
}

// logTail returns up to the last n lines of the daemon's log.
func (d *daemon) logTail(n int) string {
	return fileTail(d.logPath, n)
}

// fileTail returns up to the last n lines of the file at path, read from at
// most its last 64 KiB.
func fileTail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	defer f.Close()
	const max = 64 << 10
	if fi, err := f.Stat(); err == nil && fi.Size() > max {
		_, _ = f.Seek(-max, io.SeekEnd)
	}
	b, _ := io.ReadAll(f)
	return lastLines(string(b), n)
}

// failure builds the error returned when a service does not come up: what
// went wrong, and the last lines of its log.
func (d *daemon) failure(what string, cause error) error {
	msg := fmt.Sprintf("hatest: %s %s", d.name, what)
	if cause != nil {
		msg += ": " + cause.Error()
	}
	if err := d.exitErr(); err != nil && !d.running() {
		msg += fmt.Sprintf(" (process exited: %v)", err)
	}
	return fmt.Errorf("%s\n--- last lines of %s:\n%s", msg, d.logPath, d.logTail(30))
}

// waitReady polls check every 50ms until it returns nil, the process exits,
// ctx ends or timeout passes. On failure the error includes the log tail.
func (d *daemon) waitReady(ctx context.Context, timeout time.Duration, check func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		cctx, ccancel := context.WithTimeout(ctx, 2*time.Second)
		last = check(cctx)
		ccancel()
		if last == nil {
			return nil
		}
		select {
		case <-d.exited():
			return d.failure("exited before it was ready", last)
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return d.failure(fmt.Sprintf("was not ready within %s", timeout), last)
			}
			return d.failure("start cancelled", ctx.Err())
		case <-tick.C:
		}
	}
}

func isClosed(ch chan struct{}) bool {
	if ch == nil {
		return true
	}
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// descendants returns the pids of every live process descended from any
// of roots, read from /proc (Linux only), each once and none of roots
// itself: the descendants of each root in turn, breadth first.
func descendants(roots ...int) []int {
	children := map[int][]int{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		ppid, _, ok := procStat(p)
		if ok {
			children[ppid] = append(children[ppid], p)
		}
	}
	seen := make(map[int]bool, len(roots))
	for _, r := range roots {
		seen[r] = true
	}
	var out []int
	for _, r := range roots {
		queue := []int{r}
		for len(queue) > 0 {
			p := queue[0]
			queue = queue[1:]
			for _, c := range children[p] {
				if seen[c] {
					continue
				}
				seen[c] = true
				out = append(out, c)
				queue = append(queue, c)
			}
		}
	}
	return out
}

// statFields reads /proc/pid/stat and returns its fields after
// "pid (comm)": state is f[0], ppid f[1], starttime f[19]. It returns nil
// if pid does not exist.
func statFields(pid int) []string {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return nil
	}
	// comm may contain spaces and parentheses.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return nil
	}
	return strings.Fields(string(b[i+1:]))
}

// procStat reads the parent pid and state letter of pid from
// /proc/pid/stat.
func procStat(pid int) (ppid int, state byte, ok bool) {
	return statPPidState(statFields(pid))
}

// statPPidState returns the parent pid and state letter from the fields
// statFields returned.
func statPPidState(f []string) (ppid int, state byte, ok bool) {
	if len(f) < 2 {
		return 0, 0, false
	}
	ppid, err := strconv.Atoi(f[1])
	if err != nil {
		return 0, 0, false
	}
	return ppid, f[0][0], true
}

// statStart returns the start time (in clock ticks since boot) from the
// fields statFields returned, or "".
func statStart(f []string) string {
	if len(f) < 20 {
		return ""
	}
	return f[19]
}

// statAlive reports, from the fields statFields returned, what Alive
// reports.
func statAlive(f []string) bool {
	_, state, ok := statPPidState(f)
	return ok && state != 'Z' && state != 'X'
}

// Alive reports whether a process with this pid exists and has not exited.
// A zombie (exited, waiting for its parent to collect its status) counts as
// gone. Tests use it to check that the harness leaves no process behind.
func Alive(pid int) bool { return statAlive(statFields(pid)) }

func signalPids(pids []int, sig syscall.Signal) {
	for _, p := range pids {
		_ = syscall.Kill(p, sig)
	}
}

func killPids(pids []int) { signalPids(pids, syscall.SIGKILL) }

// waitGone waits until none of pids is alive.
func waitGone(pids []int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		var alive []int
		for _, p := range pids {
			if Alive(p) {
				alive = append(alive, p)
			}
		}
		if len(alive) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("hatest: processes %v still alive %s after SIGKILL", alive, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
