package hakit_test

import (
	"context"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"hakit.dev/hakit"
	"hakit.dev/hatest"
)

// The HAProxy configuration of docs/deploy-haproxy.md (and hatest's):
// inter 1s fall 2 rise 2, timeout check 1s.
const (
	hapInter      = time.Second
	hapTimeoutChk = time.Second
	hapFall       = 2
	hapRise       = 2
)

// TestHAProxyDetectionTimes measures how long HAProxy takes to mark a
// server DOWN and UP again, and checks the formulas docs/deploy-haproxy.md
// gives and the default DrainDelay against them: a hung server (SIGSTOP)
// is DOWN within fall × (inter + timeout check), later than fall × inter,
// since every check waits out timeout check; a draining one (503) within
// fall × inter; a server back within rise × inter.
func TestHAProxyDetectionTimes(t *testing.T) {
	t.Parallel()
	hatestSkip(t)
	bin := hatest.Build(t, "./internal/testapp")
	hung, draining := freeAddr(t), freeAddr(t)
	pHung := hatest.NewProcess(t, hatest.ProcessOptions{Path: bin, Env: []string{"HAKIT_ADDR=" + hung}})
	t.Cleanup(func() { _ = pHung.Signal(syscall.SIGCONT) }) // so the cleanup's SIGTERM can work
	pDrain := hatest.NewProcess(t, hatest.ProcessOptions{Path: bin, Env: []string{"HAKIT_ADDR=" + draining, "HAKIT_DRAIN_DELAY=60s"}})
	h := hatest.NewHAProxy(t, hatest.HAProxyOptions{Backends: []hatest.Backend{{Name: "hung", Addr: hung}, {Name: "draining", Addr: draining}}})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, s := range []string{"hung", "draining"} {
		if err := h.WaitServerStatus(ctx, s, "UP"); err != nil {
			t.Fatal(err)
		}
	}
	// Measured from the signal to the first DOWN seen, polling every 20ms.
	measure := func(name, status string, sig os.Signal, p *hatest.Process) time.Duration {
		t.Helper()
		if err := p.Signal(sig); err != nil {
			t.Fatal(err)
		}
		t0 := time.Now()
		hatest.WaitFor(t, 30*time.Second, name+" "+status, func() bool {
			st, err := h.ServerStatus(ctx, name)
			return err == nil && st == status
		})
		return time.Since(t0)
	}
	const poll = 500 * time.Millisecond // polling and scheduling on a busy machine

	hungDown := measure("hung", "DOWN", syscall.SIGSTOP, pHung)
	hungBound := hapFall * (hapInter + hapTimeoutChk)
	t.Logf("hung server (SIGSTOP): DOWN after %s; fall × inter = %s, fall × (inter + timeout check) = %s",
		hungDown.Round(10*time.Millisecond), hapFall*hapInter, hungBound)
	if hungDown <= hapFall*hapInter || hungDown > hungBound+poll {
		t.Errorf("hung server DOWN after %s, not in (fall × inter, fall × (inter + timeout check)] = (%s, %s]", hungDown, hapFall*hapInter, hungBound)
	}
	up := measure("hung", "UP", syscall.SIGCONT, pHung)
	t.Logf("resumed server: UP after %s; rise × inter = %s", up.Round(10*time.Millisecond), hapRise*hapInter)
	if up > hapRise*hapInter+poll {
		t.Errorf("resumed server UP after %s, over rise × inter = %s", up, hapRise*hapInter)
	}
	drainDown := measure("draining", "DOWN", syscall.SIGTERM, pDrain)
	t.Logf("draining server (503): DOWN after %s; fall × inter = %s", drainDown.Round(10*time.Millisecond), hapFall*hapInter)
	if drainDown > hapFall*hapInter+poll {
		t.Errorf("draining server DOWN after %s, over fall × inter = %s", drainDown, hapFall*hapInter)
	}

	// The default DrainDelay covers the hung case, and the docs give the
	// formulas.
	var def time.Duration
	for _, v := range hakit.EnvVars() {
		if v.Name == "HAKIT_DRAIN_DELAY" {
			def, _ = time.ParseDuration(v.Default)
		}
	}
	if def < hungBound {
		t.Errorf("default DrainDelay %s < fall × (inter + timeout check) = %s", def, hungBound)
	}
	doc, err := os.ReadFile("../docs/deploy-haproxy.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"fall × (inter + timeout check)", "fall × inter", "rise × inter"} {
		if !strings.Contains(string(doc), f) {
			t.Errorf("docs/deploy-haproxy.md does not give %q", f)
		}
	}
	if strings.Contains(string(doc), "Within `inter × fall` (2 s)") {
		t.Error("docs/deploy-haproxy.md still says a server is DOWN within inter × fall (2 s)")
	}
}
