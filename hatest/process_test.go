package hatest_test

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"hakit.dev/hatest"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestProcessSignalsAndOutput(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	bin := hatest.Build(t, "./testdata/sigapp")
	var out syncBuffer
	p := hatest.NewProcess(t, hatest.ProcessOptions{Path: bin, Env: []string{"GREETING=hi"}, Output: &out})
	if err := p.WaitOutput(ctx, "ready"); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(p.Output(), "greeting: hi") {
		t.Fatalf("output %q lacks the environment's greeting", p.Output())
	}
	if err := p.Terminate(); err != nil {
		t.Fatal(err)
	}
	code, err := p.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if code != 3 {
		t.Fatalf("exit code %d, want 3", code)
	}
	// Lines reach Output with the name prefix, the unterminated last
	// line included.
	for _, want := range []string{"[sigapp] greeting: hi\n", "[sigapp] got SIGTERM\n", "[sigapp] ready\n"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("Output writer got %q, missing %q", out.String(), want)
		}
	}
	if err := p.Terminate(); err == nil {
		t.Error("signalling an exited process did not fail")
	}
}

func TestProcessKillAndWaitOutputFailure(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p := hatest.NewProcess(t, hatest.ProcessOptions{Path: "sh", Args: []string{"-c", "echo started; exec sleep 600"}})
	if err := p.WaitOutput(ctx, "started"); err != nil {
		t.Fatal(err)
	}
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	if code, err := p.Wait(ctx); err != nil || code != -1 {
		t.Fatalf("killed process: code %d, %v; want -1", code, err)
	}
	if hatest.Alive(p.Pid()) {
		t.Fatal("killed process is alive")
	}
	err := p.WaitOutput(ctx, "never printed")
	if err == nil || !strings.Contains(err.Error(), "exited") {
		t.Fatalf("WaitOutput on an exited process: %v", err)
	}
	if _, err := hatest.StartProcess(hatest.ProcessOptions{Path: "/nonexistent/app"}); err == nil {
		t.Fatal("starting a missing program did not fail")
	}
}
