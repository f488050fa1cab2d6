package labdash

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"hakit.dev/hatest"
)

// state is the part of the dashboard's /api/state this test reads.
type state struct {
	Phase  string `json:"phase"`
	Leader string `json:"leader"`
	Busy   string `json:"busy"`
	Apps   []struct {
		Name   string `json:"name"`
		Status string `json:"status"`
	} `json:"apps"`
	Events []struct {
		Time time.Time `json:"time"`
		Kind string    `json:"kind"`
		Text string    `json:"text"`
	} `json:"events"`
	Samples []struct {
		Time     time.Time `json:"time"`
		Requests int       `json:"requests"`
		Failed   int       `json:"failed"`
	} `json:"samples"`
}

// TestDashboardFailover runs the lab with two shop instances, opens the
// dashboard in Chromium, starts the load, presses "Kill PostgreSQL
// leader" and "Rolling restart", and checks what the page and the
// timeline show: the leader changes within Patroni's failover time, the
// success rate stays at 99 % or more, every instance leaves HAProxy and
// comes back in turn with no failed request.
func TestDashboardFailover(t *testing.T) {
	shots := os.Getenv("HALAB_SCREENSHOT") == "1"
	if os.Getenv("HALAB_E2E") != "1" && !shots {
		t.Skip("a few minutes long: HALAB_E2E=1 runs it, HALAB_SCREENSHOT=1 also saves docs/images/lab-dashboard.png")
	}
	if _, err := exec.LookPath("chromium"); err != nil {
		t.Fatal("chromium is missing: apt-get install -y chromium (make deps)")
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "halab")
	build := exec.Command("go", "build", "-o", bin, "./cmd/halab")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/halab: %v\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	lab := hatest.NewProcess(t, hatest.ProcessOptions{Path: bin, Args: []string{"-shop", "2", "-pg", "2", "-no-input",
		"-dashboard", "127.0.0.1:0", "-shop-dir", filepath.Join(root, "examples", "shop")}})
	if err := lab.WaitOutput(ctx, "halab: ready"); err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`halab: dashboard (http://127\.0\.0\.1:\d+/)`).FindStringSubmatch(lab.Output())
	if m == nil {
		t.Fatalf("no dashboard URL in:\n%s", lab.Output())
	}
	base := m[1]

	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath("/usr/bin/chromium"),
		chromedp.Flag("disable-gpu", true), chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()))
	actx, cancelA := chromedp.NewExecAllocator(ctx, opts...)
	defer cancelA()
	bctx, cancelB := chromedp.NewContext(actx)
	defer cancelB()
	// The first action on a context starts the browser: do it on bctx, so
	// that the steps' shorter contexts do not take the browser with them.
	if err := chromedp.Do(bctx); err != nil {
		t.Fatal(err)
	}
	css := func(s string) chromedp.CSS { return chromedp.CSS(s) }
	step := func(what string, timeout time.Duration, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		sctx, cancel := context.WithTimeout(bctx, timeout)
		defer cancel()
		if err := chromedp.Do(sctx, actions...); err != nil {
			html, _ := chromedp.Run(bctx, chromedp.OuterHTML(css("main")))
			t.Fatalf("%s: %v\npage: %.3000s", what, err, html)
		}
	}
	text := func(sel string) string {
		t.Helper()
		s, err := chromedp.Run(bctx, chromedp.Text(css(sel)))
		if err != nil {
			t.Fatalf("text of %s: %v", sel, err)
		}
		return s
	}

	step("open the dashboard", 30*time.Second, chromedp.EmulateViewport(1440, 1400),
		chromedp.Navigate(base), chromedp.WaitVisible(css("#topology")),
		chromedp.WaitVisible(css(`#pg-nodes tr[data-role="leader"]`)))
	step("start the load", 30*time.Second, chromedp.WaitEnabled(css(`button[data-action="load on"]`)),
		chromedp.Click(css(`button[data-action="load on"]`)), chromedp.WaitVisible(css("#toast")),
		chromedp.WaitEnabled(css(`button[data-action="load off"]`)))
	waitState(t, base, time.Minute, "three load samples", func(s state) error {
		if len(s.Samples) < 3 {
			return fmt.Errorf("%d samples", len(s.Samples))
		}
		return nil
	})

	// Kill the PostgreSQL leader.
	old := strings.TrimPrefix(text("#pg-leader"), "leader ")
	killedAt := time.Now()
	step("kill the leader", 10*time.Second, chromedp.WaitEnabled(css(`button[data-action="kill-primary"]`)),
		chromedp.Click(css(`button[data-action="kill-primary"]`)), chromedp.WaitVisible(css("#toast")))
	if got := text("#toast"); !strings.Contains(got, "started: Kill PostgreSQL leader") {
		t.Errorf("toast after kill-primary: %q", got)
	}
	// Patroni's ttl is 10 s, loop_wait 1 s: a replica is promoted within
	// about 15 s; 45 s allows for a loaded machine.
	step("see a new leader", 45*time.Second, chromedp.Poll[chromedp.Void](fmt.Sprintf(
		`(() => { const t = document.getElementById("pg-leader").textContent; return t.startsWith("leader ") && t !== "leader %s"; })()`, old), chromedp.WithPollingTimeout(0)))
	took := time.Since(killedAt)
	newLeader := strings.TrimPrefix(text("#pg-leader"), "leader ")
	t.Logf("leader %s → %s seen on the page %.1fs after the click", old, newLeader, took.Seconds())
	step("the timeline records detection and recovery", 30*time.Second,
		chromedp.Poll[chromedp.Void](`(() => { const t = document.getElementById("timeline").textContent;
			return t.includes("PostgreSQL has no leader") && t.includes("PostgreSQL leader `+old+` → `+newLeader+`") && t.includes("Kill PostgreSQL leader: done"); })()`, chromedp.WithPollingTimeout(0)))
	// Two more samples after the failover, then the success rate.
	after := time.Now()
	s := waitState(t, base, time.Minute, "load samples after the failover", func(s state) error {
		if n := samplesSince(s, after); n < 2 {
			return fmt.Errorf("%d samples since the failover", n)
		}
		return nil
	})
	req, failed := 0, 0
	for _, x := range s.Samples {
		if x.Time.After(killedAt) {
			req, failed = req+x.Requests, failed+x.Failed
		}
	}
	ok := 100 * float64(req-failed) / float64(max(req, 1))
	t.Logf("during the failover: %d requests, %d failed (%.2f%% ok)", req, failed, ok)
	if req == 0 || ok < 99 {
		t.Errorf("success rate during the failover %.2f%% (%d of %d failed); want ≥ 99%%", ok, failed, req)
	}
	if shots {
		png, err := chromedp.Run(bctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(root, "docs", "images", "lab-dashboard.png")
		if err := os.WriteFile(path, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("saved %s", path)
	}

	// A rolling restart: each instance leaves HAProxy and comes back, one
	// at a time, with no failed request.
	restartAt := time.Now()
	step("rolling restart", 10*time.Second, chromedp.WaitEnabled(css(`button[data-action="rolling-restart"]`)),
		chromedp.Click(css(`button[data-action="rolling-restart"]`)))
	seen := map[string][]string{}
	done := waitState(t, base, 3*time.Minute, "the rolling restart to finish", func(s state) error {
		down := 0
		for _, a := range s.Apps {
			if h := seen[a.Name]; len(h) == 0 || h[len(h)-1] != a.Status {
				seen[a.Name] = append(seen[a.Name], a.Status)
			}
			if a.Status != "UP" {
				down++
			}
		}
		if down > 1 {
			t.Errorf("%d instances out of HAProxy at once: %+v", down, s.Apps)
		}
		for _, e := range s.Events {
			// Done, and the last instance seen UP by the dashboard too.
			if strings.HasPrefix(e.Text, "Rolling restart: done") && down == 0 {
				return nil
			}
		}
		return fmt.Errorf("not done; statuses so far %v", seen)
	})
	for name, h := range seen {
		joined := strings.Join(h, " → ")
		if !strings.Contains(joined, "DOWN") || h[len(h)-1] != "UP" {
			t.Errorf("%s went %s; want it out of HAProxy (DOWN) and UP again", name, joined)
		}
		t.Logf("%s: %s", name, joined)
	}
	waitState(t, base, time.Minute, "two load samples after the restart", func(s state) error {
		done = s
		if n := samplesSince(s, time.Now().Add(-3*time.Second)); n < 1 {
			return fmt.Errorf("no fresh sample")
		}
		return nil
	})
	if f := failedSince(done, restartAt); f != 0 {
		t.Errorf("%d requests failed during the rolling restart; want none", f)
	}
	step("stop the load", 20*time.Second, chromedp.Click(css(`button[data-action="load off"]`)),
		chromedp.WaitEnabled(css(`button[data-action="load on"]`)))

	if err := lab.Terminate(); err != nil {
		t.Fatal(err)
	}
	if code, err := lab.Wait(ctx); err != nil || code != 0 {
		t.Fatalf("halab exit code %d, %v; want 0", code, err)
	}
}

func samplesSince(s state, t time.Time) int {
	n := 0
	for _, x := range s.Samples {
		if x.Time.After(t) {
			n++
		}
	}
	return n
}

func failedSince(s state, t time.Time) int {
	n := 0
	for _, x := range s.Samples {
		if x.Time.After(t) {
			n += x.Failed
		}
	}
	return n
}

// waitState polls the dashboard's state until cond accepts it.
func waitState(t *testing.T, base string, timeout time.Duration, what string, cond func(state) error) state {
	t.Helper()
	var s state
	var last error
	defer func() {
		if last != nil {
			t.Logf("last: %v", last)
		}
	}()
	hatest.WaitFor(t, timeout, what, func() bool {
		resp, err := http.Get(base + "api/state")
		if err != nil {
			last = err
			return false
		}
		defer resp.Body.Close()
		s = state{}
		if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
			last = err
			return false
		}
		last = cond(s)
		return last == nil
	})
	return s
}
