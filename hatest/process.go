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
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// ProcessOptions describes a program to run with [StartProcess] or
// [NewProcess], typically an app binary made with [Build].
type ProcessOptions struct {
	// Name labels the process's output lines. Defaults to the base name
	// of Path.
	Name string
	// Path is the program to run.
	Path string
	// Args are its arguments (without the program name).
	Args []string
	// Env is added to the current process's environment ("KEY=value").
	Env []string
	// Dir is the working directory. Empty means the current one.
	Dir string
	// Stdin, if set, is copied to the process's standard input until it
	// returns EOF (which closes the process's input) or the process
	// exits. Nil means /dev/null. Unlike exec.Cmd, waiting for the
	// process never waits for Stdin.
	Stdin io.Reader
	// Output, if set, receives the process's stdout and stderr lines as
	// they come, each prefixed with "[Name] ".
	Output io.Writer
}

// maxOutput bounds the output a Process keeps for Output and WaitOutput.
const maxOutput = 4 << 20

// Process is a program started by the harness: its output is captured line
// by line, it can be signalled like a real deployment signals it, and it
// dies with the harness.
type Process struct {
	Name string

	cmd  *exec.Cmd
	done chan struct{}
	lw   *lineWriter
}

// StartProcess starts a program. Its stdout and stderr are captured
// (see [Process.Output]) and copied to opts.Output. It is killed if the
// harness process dies; otherwise the caller must stop it
// ([Process.Terminate], [Process.Kill]) and Wait for it. Tests use
// [NewProcess].
func StartProcess(opts ProcessOptions) (*Process, error) {
	if opts.Path == "" {
		return nil, errors.New("hatest: ProcessOptions.Path is empty")
	}
	if opts.Name == "" {
		opts.Name = filepath.Base(opts.Path)
	}
	p := &Process{Name: opts.Name, done: make(chan struct{})}
	p.lw = &lineWriter{prefix: "[" + opts.Name + "] ", out: opts.Output, changed: make(chan struct{})}
	cmd := exec.Command(opts.Path, opts.Args...)
	cmd.Env = append(os.Environ(), opts.Env...)
	cmd.Dir = opts.Dir
	var stdin io.WriteCloser
	if opts.Stdin != nil {
		var err error
		if stdin, err = cmd.StdinPipe(); err != nil {
			return nil, fmt.Errorf("hatest: start %s: %w", opts.Name, err)
		}
	}
	cmd.Stdout = p.lw
	cmd.Stderr = p.lw
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	// A child that leaves the output pipe open in a grandchild must not
	// keep Wait (and the test's cleanup) waiting forever.
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("hatest: start %s: %w", opts.Name, err)
	}
	p.cmd = cmd
	if stdin != nil {
		go func() {
			_, _ = io.Copy(stdin, opts.Stdin)
			stdin.Close()
		}()
	}
	go func() {
		_ = cmd.Wait()
		p.lw.flush()
		close(p.done)
	}()
	return p, nil
}

// NewProcess starts a program for the test (see [StartProcess]), logs
// every output line with t.Log, and when the test ends sends it SIGTERM,
// then SIGKILL if it has not exited 10s later.
func NewProcess(t testing.TB, opts ProcessOptions) *Process {
	t.Helper()
	var mu sync.Mutex
	ended := false
	tlog := writerFunc(func(b []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		if !ended {
			t.Log(strings.TrimSuffix(string(b), "\n"))
		}
		return len(b), nil
	})
	if opts.Output != nil {
		opts.Output = io.MultiWriter(opts.Output, tlog)
	} else {
		opts.Output = tlog
	}
	p, err := StartProcess(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Stop(10 * time.Second); err != nil {
			t.Errorf("hatest: %v", err)
		}
		mu.Lock()
		ended = true
		mu.Unlock()
	})
	return p
}

// Pid returns the process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Signal sends sig to the process.
func (p *Process) Signal(sig os.Signal) error {
	if p.Exited() {
		return fmt.Errorf("hatest: %s has exited", p.Name)
	}
	return p.cmd.Process.Signal(sig)
}

// Terminate sends SIGTERM, as a rolling deploy or Kubernetes does.
func (p *Process) Terminate() error { return p.Signal(syscall.SIGTERM) }

// Kill sends SIGKILL and waits until the process is gone.
func (p *Process) Kill() error {
	if p.Exited() {
		return nil
	}
	_ = p.cmd.Process.Kill()
	<-p.done
	return nil
}

// Stop sends SIGTERM and waits up to grace for the process to exit, then
// kills it. It returns an error if the process had to be killed.
func (p *Process) Stop(grace time.Duration) error {
	if p.Exited() {
		return nil
	}
	_ = p.Terminate()
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.done:
		return nil
	case <-t.C:
		_ = p.Kill()
		return fmt.Errorf("hatest: %s did not exit within %s of SIGTERM; killed", p.Name, grace)
	}
}

// Done returns a channel that is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has exited.
func (p *Process) Exited() bool { return isClosed(p.done) }

// Wait waits for the process to exit and returns its exit code (-1 if a
// signal killed it), or ctx's error.
func (p *Process) Wait(ctx context.Context) (int, error) {
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode(), nil
	case <-ctx.Done():
		return 0, fmt.Errorf("hatest: waiting for %s: %w", p.Name, ctx.Err())
	}
}

// Output returns what the process has written to stdout and stderr so far
// (the last 4 MiB of it).
func (p *Process) Output() string { return p.lw.String() }

// WaitOutput waits until the process's output contains s. It fails when
// the process exits first or ctx ends, with the output's last lines.
func (p *Process) WaitOutput(ctx context.Context, s string) error {
	for {
		changed := p.lw.changedCh()
		if strings.Contains(p.lw.String(), s) {
			return nil
		}
		select {
		case <-changed:
		case <-p.done:
			if strings.Contains(p.lw.String(), s) {
				return nil
			}
			return fmt.Errorf("hatest: %s exited (%v) before printing %q; output:\n%s", p.Name, p.cmd.ProcessState, s, lastLines(p.lw.String(), 20))
		case <-ctx.Done():
			return fmt.Errorf("hatest: %s did not print %q: %w; output:\n%s", p.Name, s, ctx.Err(), lastLines(p.lw.String(), 20))
		}
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// lineWriter keeps a process's output and hands complete lines to out.
type lineWriter struct {
	prefix string
	out    io.Writer

	mu      sync.Mutex
	all     []byte
	partial []byte
	changed chan struct{} // closed and replaced on every write
}

func (w *lineWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	w.all = append(w.all, b...)
	if len(w.all) > maxOutput {
		w.all = append(w.all[:0], w.all[len(w.all)-maxOutput/2:]...)
	}
	w.partial = append(w.partial, b...)
	var lines [][]byte
	for {
		i := bytes.IndexByte(w.partial, '\n')
		if i < 0 {
			break
		}
		lines = append(lines, append([]byte(w.prefix), w.partial[:i+1]...))
		w.partial = w.partial[i+1:]
	}
	close(w.changed)
	w.changed = make(chan struct{})
	w.mu.Unlock()
	if w.out != nil {
		for _, l := range lines {
			_, _ = w.out.Write(l)
		}
	}
	return len(b), nil
}

// flush writes out a last line that had no newline.
func (w *lineWriter) flush() {
	w.mu.Lock()
	rest := w.partial
	w.partial = nil
	w.mu.Unlock()
	if len(rest) > 0 && w.out != nil {
		_, _ = w.out.Write(append(append([]byte(w.prefix), rest...), '\n'))
	}
}

func (w *lineWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return string(w.all)
}

func (w *lineWriter) changedCh() chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.changed
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }

// Build compiles the main package pkg (an import path, or a directory such
// as "./examples/shop") with go build into a temporary directory and
// returns the binary's path. When the test binary runs with -race, so
// does the build. The binary is removed when the test ends.
func Build(t testing.TB, pkg string, buildArgs ...string) string {
	t.Helper()
	dir := t.TempDir()
	name := filepath.Base(pkg)
	if name == "." || name == ".." || name == "/" {
		abs, _ := filepath.Abs(pkg)
		name = filepath.Base(abs)
	}
	out := filepath.Join(dir, name)
	args := []string{"build", "-o", out}
	if raceEnabled {
		args = append(args, "-race")
	}
	args = append(append(args, buildArgs...), pkg)
	cmd := exec.Command("go", args...)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("hatest: go %s: %v\n%s", strings.Join(args, " "), err, b)
	}
	return out
}

// BuildModule compiles the main package in dir, the root of a Go module of
// its own (another example app than the test's, whose module Build cannot
// reach), with a plain go build bounded by timeout, into a temporary
// directory, and returns the binary's path. It builds without -race: for
// an app the test runs beside the one it checks.
func BuildModule(t testing.TB, dir string, timeout time.Duration) string {
	t.Helper()
	abs, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out := filepath.Join(t.TempDir(), filepath.Base(abs))
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, ".")
	cmd.Dir = abs
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("hatest: go build in %s: %v\n%s", abs, err, b)
	}
	return out
}
