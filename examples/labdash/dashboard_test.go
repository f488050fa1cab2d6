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
	"slices"
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
		App    string `json:"app"`
		Name   string `json:"name"`
		Status string `json:"status"`
	} `json:"apps"`
	Events []struct {
		Time time.Time `json:"time"`
		Kind string    `json:"kind"`
		Text string    `json:"text"`
	} `json:"events"`
	Samples []sample `json:"samples"`
}

type sample struct {
	App      string    `json:"app"`
	Time     time.Time `json:"time"`
	Requests int       `json:"requests"`
	Failed   int       `json:"failed"`
	Error    string    `json:"error"`
}

// apps are the lab's example apps: the shop's load counts HTTP requests,
// the SSO's whole sign-in flows.
var apps = []string{"shop", "sso"}

// TestDashboardFailover runs the lab with two shop and two SSO instances,
// opens the dashboard in Chromium, starts the load (customers in the
// shop, sign-ins at the SSO), presses "Kill PostgreSQL leader" and each
// app's "Rolling restart", and checks what the page and the timeline
// show: the leader changes within Patroni's failover time, the timeline
// records the failover's detection and the recovery, each app's success
// rate stays at 99 % or more, and every instance goes DRAIN → DOWN → UP
// in HAProxy, one at a time, with no failed request or sign-in.
// Screenshots go to the test's artifact directory; HALAB_SCREENSHOT=1
// also writes the README's, docs/images/lab-dashboard.png.
func TestDashboardFailover(t *testing.T) {
	if os.Getenv(hatest.EnvSkipServices) == "1" {
		t.Skip("HAKIT_SKIP_SERVICES=1")
	}
	shots := os.Getenv("HALAB_SCREENSHOT") == "1"
	if _, err := exec.LookPath("chromium"); err != nil {
		t.Fatal("chromium is missing: apt-get install -y chromium (make deps)")
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	phase := func(what string) { t.Logf("%5.1fs %s", time.Since(start).Seconds(), what) }
	// halab is built once; it builds the shop and the SSO itself, once,
	// while PostgreSQL, Redis and MinIO start.
	bin := filepath.Join(t.TempDir(), "halab")
	build := exec.Command("go", "build", "-o", bin, "./cmd/halab")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/halab: %v\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	lab := hatest.NewProcess(t, hatest.ProcessOptions{Path: bin, Args: []string{"-shop", "2", "-sso", "2", "-pg", "2", "-no-input",
		"-dashboard", "127.0.0.1:0", "-shop-dir", filepath.Join(root, "examples", "shop"), "-sso-dir", filepath.Join(root, "examples", "sso")}})
	if err := lab.WaitOutput(ctx, "halab: ready"); err != nil {
		t.Fatal(err)
	}
	phase("the lab is ready")
	m := regexp.MustCompile(`halab: dashboard (http://127\.0\.0\.1:\d+/)`).FindStringSubmatch(lab.Output())
	if m == nil {
		t.Fatalf("no dashboard URL in:\n%s", lab.Output())
	}
	base := m[1]
	for _, want := range []string{"sso (OpenID provider)", "sso demo client", "client_id demo", "sso shop client", "mailpit"} {
		if !strings.Contains(lab.Output(), want) {
			t.Errorf("the endpoint table lacks %q", want)
		}
	}

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
			dctx, cancel := context.WithTimeout(bctx, 10*time.Second)
			defer cancel()
			page, _ := chromedp.Run(dctx, chromedp.Text(css("body")))
			t.Fatalf("%s: %v\nthe page's text: %.6000s", what, err, page)
		}
	}
	text := func(sel string) string {
		t.Helper()
		sctx, cancel := context.WithTimeout(bctx, 20*time.Second)
		defer cancel()
		s, err := chromedp.Run(sctx, chromedp.Text(css(sel)))
		if err != nil {
			t.Fatalf("text of %s: %v", sel, err)
		}
		return s
	}
	shot := func(name string) {
		t.Helper()
		sctx, cancel := context.WithTimeout(bctx, time.Minute)
		defer cancel()
		// The viewport holds the whole page: a viewport capture, cheaper
		// for a busy browser than a full-page one.
		png, err := chromedp.Run(sctx, chromedp.CaptureScreenshot())
		if err != nil {
			t.Fatal(err)
		}
		paths := []string{filepath.Join(t.ArtifactDir(), name)}
		if shots && name == "lab-dashboard.png" {
			paths = append(paths, filepath.Join(root, "docs", "images", name))
		}
		for _, p := range paths {
			if err := os.WriteFile(p, png, 0o644); err != nil {
				t.Fatal(err)
			}
			t.Logf("saved %s", p)
		}
	}

	step("open the dashboard", 30*time.Second, chromedp.EmulateViewport(1440, 1840),
		chromedp.Navigate(base), chromedp.WaitVisible(css("#topology")),
		chromedp.WaitVisible(css(`#pg-nodes tr[data-role="leader"]`)),
		chromedp.WaitVisible(css(`#apps tr[data-group="shop"]`)), chromedp.WaitVisible(css(`#apps tr[data-group="sso"]`)),
		chromedp.WaitVisible(css(`button[data-action="rolling-restart sso"]`)), chromedp.WaitVisible(css(`button[data-action="kill-app sso1"]`)))
	step("start the load", 30*time.Second, chromedp.WaitEnabled(css(`button[data-action="load on"]`)),
		chromedp.Click(css(`button[data-action="load on"]`)), chromedp.WaitVisible(css("#toast")),
		chromedp.WaitEnabled(css(`button[data-action="load off"]`)))
	waitState(t, base, time.Minute, "three load samples of each app", func(s state) error {
		for _, app := range apps {
			if n := samplesSince(s, app, time.Time{}); n < 3 {
				return fmt.Errorf("%d samples of the %s", n, app)
			}
		}
		return nil
	})
	phase("the load runs")

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
	phase("failover seen")
	// Two more samples of each app after the failover, then the success
	// rates since the kill.
	after := time.Now()
	s := waitState(t, base, time.Minute, "load samples after the failover", func(s state) error {
		for _, app := range apps {
			if n := samplesSince(s, app, after); n < 2 {
				return fmt.Errorf("%d samples of the %s since the failover", n, app)
			}
		}
		return nil
	})
	for _, app := range apps {
		req, failed, errs := 0, 0, []string{}
		for _, x := range s.Samples {
			if x.App == app && x.Time.After(killedAt) {
				req, failed = req+x.Requests, failed+x.Failed
				if x.Error != "" {
					errs = append(errs, x.Error)
				}
			}
		}
		ok := 100 * float64(req-failed) / float64(max(req, 1))
		t.Logf("%s during the failover: %d, %d failed (%.2f%% ok)", app, req, failed, ok)
		if req == 0 || ok < 99 {
			t.Errorf("%s success rate during the failover %.2f%% (%d of %d failed; %v); want ≥ 99%%", app, ok, failed, req, errs)
		}
	}
	shot("lab-dashboard.png")

	// A rolling restart of each app: each instance leaves HAProxy and
	// comes back, one at a time, with no failed request.
	for _, app := range apps {
		rollingRestart(t, base, app, func() {
			step("rolling restart "+app, 20*time.Second, chromedp.WaitEnabled(css(`button[data-action="rolling-restart `+app+`"]`)),
				chromedp.Click(css(`button[data-action="rolling-restart `+app+`"]`)))
		})
		phase("rolling restart of the " + app + " done")
	}
	step("stop the load", 30*time.Second, chromedp.WaitEnabled(css(`button[data-action="load off"]`)),
		chromedp.Click(css(`button[data-action="load off"]`)),
		chromedp.WaitEnabled(css(`button[data-action="load on"]`)))
	shot("lab-dashboard-after-restarts.png")

	if err := lab.Terminate(); err != nil {
		t.Fatal(err)
	}
	if code, err := lab.Wait(ctx); err != nil || code != 0 {
		t.Fatalf("halab exit code %d, %v; want 0", code, err)
	}
	phase("the lab stopped")
}

// rollingRestart presses an app's rolling restart and checks, on the
// dashboard's timeline, that each of its instances went DRAIN → DOWN →
// UP in HAProxy, one after the other, with no failed request of the
// app's load from the press to a sample after the end.
func rollingRestart(t *testing.T, base, app string, press func()) {
	t.Helper()
	restartAt := time.Now()
	press()
	label := "Rolling restart: " + map[string]string{"shop": "Shop", "sso": "SSO"}[app] + ": done"
	s := waitState(t, base, 3*time.Minute, "the "+app+"'s rolling restart to finish", func(s state) error {
		for _, e := range s.Events {
			if e.Time.After(restartAt) && strings.HasPrefix(e.Text, label) {
				return nil
			}
		}
		return fmt.Errorf("not done; busy: %q", s.Busy)
	})
	// The instances' HAProxy statuses, in the timeline's order.
	change := regexp.MustCompile(`^HAProxy: (` + app + `\d+) (.+) → (.+)$`)
	seen := map[string][]string{}
	var order []string // the instances, by their first change
	for _, e := range s.Events {
		m := change.FindStringSubmatch(e.Text)
		if m == nil || !e.Time.After(restartAt) {
			continue
		}
		if len(seen[m[1]]) == 0 {
			seen[m[1]] = []string{m[2]}
			order = append(order, m[1])
		}
		seen[m[1]] = append(seen[m[1]], m[3])
		// In turn: once the next instance moves, the one before is back
		// in rotation: UP, or "UP 1/2" (UP, one failed check: a busy
		// machine's slow /readyz; HAProxy still sends it requests).
		if i := slices.Index(order, m[1]); i > 0 {
			if h := seen[order[i-1]]; !strings.HasPrefix(h[len(h)-1], "UP") {
				t.Errorf("%s left UP (%s) while %s was %s", m[1], e.Text, order[i-1], h[len(h)-1])
			}
		}
	}
	if len(order) != 2 {
		t.Errorf("%s instances that changed in HAProxy: %v; want 2", app, order)
	}
	for _, name := range order {
		h := seen[name]
		joined := strings.Join(h, " → ")
		drain := slices.IndexFunc(h, func(s string) bool { return strings.HasPrefix(s, "DRAIN") })
		down := slices.Index(h, "DOWN")
		if drain < 0 || down < drain || h[len(h)-1] != "UP" {
			t.Errorf("%s went %s; want DRAIN, then DOWN, then UP", name, joined)
		}
		t.Logf("%s: %s", name, joined)
	}
	end := time.Now()
	s = waitState(t, base, time.Minute, "a load sample after the restart", func(s state) error {
		if samplesSince(s, app, end) < 1 {
			return fmt.Errorf("no %s sample since the restart", app)
		}
		return nil
	})
	failed, req := 0, 0
	for _, x := range s.Samples {
		if x.App == app && x.Time.After(restartAt) {
			failed, req = failed+x.Failed, req+x.Requests
			if x.Error != "" {
				t.Logf("%s error at %s: %s", app, x.Time.Format(time.TimeOnly), x.Error)
			}
		}
	}
	t.Logf("%s during its rolling restart: %d, %d failed", app, req, failed)
	if req == 0 || failed != 0 {
		t.Errorf("%d of %d %s requests failed during its rolling restart; want none of some", failed, req, app)
	}
}

func samplesSince(s state, app string, t time.Time) int {
	n := 0
	for _, x := range s.Samples {
		if x.App == app && x.Time.After(t) {
			n++
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
