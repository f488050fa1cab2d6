package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"hakit.dev/hatest"
)

// TestDashboardServesTheLab runs a small lab (stand-in apps) with its
// dashboard and checks the state it serves, its event stream, that a
// chaos POST from another origin or another Host is refused and one from
// the page's own origin runs and lands on the timeline.
func TestDashboardServesTheLab(t *testing.T) {
	if os.Getenv(hatest.EnvSkipServices) == "1" {
		t.Skip("HAKIT_SKIP_SERVICES=1")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	bin := hatest.Build(t, ".")
	p := hatest.NewProcess(t, hatest.ProcessOptions{Path: bin, Args: []string{"-apps", "1", "-pg", "2", "-no-input", "-dashboard", "127.0.0.1:0"}})
	if err := p.WaitOutput(ctx, "halab: dashboard"); err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`halab: dashboard (http://127\.0\.0\.1:\d+/)`).FindStringSubmatch(p.Output())
	if m == nil {
		t.Fatalf("no dashboard URL in:\n%s", p.Output())
	}
	base := m[1]
	if first, _, _ := strings.Cut(p.Output(), "\n"); !strings.Contains(first, base) {
		t.Errorf("the dashboard's URL is not the first line: %q", first)
	}

	// The page is there while the lab starts.
	page := get(t, base)
	if !strings.Contains(page, "<title>hakit lab</title>") || !strings.Contains(page, "uPlot.iife.min.js") {
		t.Fatalf("dashboard page: %.300q", page)
	}
	for _, asset := range []string{"app.js", "app.css", "uplot/uPlot.iife.min.js", "uplot/LICENSE"} {
		if get(t, base+asset) == "" {
			t.Errorf("%s is empty", asset)
		}
	}
	if err := p.WaitOutput(ctx, "halab: ready"); err != nil {
		t.Fatal(err)
	}

	// The state has the topology.
	var s labState
	waitFor(t, time.Minute, "the dashboard's state to show the settled lab", func() error {
		s = state(t, base)
		if s.Phase != "ready" || s.Leader == "" || s.Master == "" || !s.MinIO || len(s.Apps) != 1 || s.Apps[0].Status != "UP" {
			return fmt.Errorf("state not settled: %+v", s)
		}
		for _, st := range s.Sentinel {
			if st.Master != s.Master {
				return fmt.Errorf("sentinel %s names %q as master, not %s", st.Name, st.Master, s.Master)
			}
		}
		return nil
	})
	if len(s.Postgres) != 2 || len(s.Redis) != 2 || len(s.Sentinel) != 3 {
		t.Fatalf("topology: %d PostgreSQL nodes, %d Redis nodes, %d Sentinels; want 2, 2, 3", len(s.Postgres), len(s.Redis), len(s.Sentinel))
	}
	var replica string
	for _, n := range s.Postgres {
		if n.Role == "replica" {
			replica = n.Name
			if n.Timeline < 1 {
				t.Errorf("replica %s has timeline %d", n.Name, n.Timeline)
			}
		}
	}
	if replica == "" {
		t.Fatalf("no PostgreSQL replica in %+v", s.Postgres)
	}
	ids := map[string]bool{}
	for _, a := range s.Actions {
		ids[a.ID] = a.Enabled
	}
	for _, want := range []string{"kill-primary", "kill-redis-master", "kill-minio", "drain app0", "pause-replay " + replica} {
		if !ids[want] {
			t.Errorf("action %q missing or disabled in %+v", want, s.Actions)
		}
	}

	// The stream sends the same state.
	sreq, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"api/stream", nil)
	resp, err := http.DefaultClient.Do(sreq)
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	var streamed labState
	for sc.Scan() {
		if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
			if err := json.Unmarshal([]byte(data), &streamed); err != nil {
				t.Fatal(err)
			}
			break
		}
	}
	resp.Body.Close()
	if streamed.Leader != s.Leader || len(streamed.Postgres) != 2 {
		t.Errorf("streamed state: leader %q, %d nodes; want %q, 2", streamed.Leader, len(streamed.Postgres), s.Leader)
	}

	// Other origins and other Host names are refused; nothing happens.
	host := strings.TrimSuffix(strings.TrimPrefix(base, "http://"), "/")
	refused := []map[string]string{
		{"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"},
		{"Origin": "http://evil.example"},
		{"Sec-Fetch-Site": "same-site"},
		{"Host": "evil.example", "Origin": "http://evil.example", "Sec-Fetch-Site": "same-origin"},
	}
	for _, h := range refused {
		if code, body := post(t, base, `{"id":"drain app0"}`, h); code != http.StatusForbidden {
			t.Errorf("POST with %v: %d %q; want 403", h, code, body)
		}
	}
	// Bad input is refused with a reason.
	same := map[string]string{"Origin": "http://" + host, "Sec-Fetch-Site": "same-origin"}
	for body, want := range map[string]int{`{"id":"rm -rf /"}`: 404, `not json`: 400, `{"id":"start patroni0"}`: 404} {
		if code, msg := post(t, base, body, same); code != want || !strings.Contains(msg, `"ok":false`) {
			t.Errorf("POST %s: %d %s; want %d", body, code, msg, want)
		}
	}
	for _, e := range state(t, base).Events {
		if strings.Contains(e.Text, "app0") {
			t.Fatalf("a refused POST reached the lab: %+v", e)
		}
	}

	// The page's own origin runs the action; the timeline records it.
	if code, body := post(t, base, `{"id":"drain app0"}`, same); code != http.StatusAccepted || !strings.Contains(body, "started: Drain app0") {
		t.Fatalf("same-origin POST: %d %s", code, body)
	}
	waitFor(t, time.Minute, "the timeline to record the drain", func() error {
		s := state(t, base)
		var text []string
		for _, e := range s.Events {
			text = append(text, e.Kind+": "+e.Text)
		}
		all := strings.Join(text, "\n")
		for _, want := range []string{"action: Drain app0", "info: app0 /readyz now answers 503", "confirm: Drain app0: done", "→ DOWN"} {
			if !strings.Contains(all, want) {
				return fmt.Errorf("timeline lacks %q:\n%s", want, all)
			}
		}
		return nil
	})
	// A replica's replay pauses and resumes.
	if code, body := post(t, base, `{"id":"pause-replay `+replica+`"}`, same); code != http.StatusAccepted {
		t.Fatalf("pause-replay: %d %s", code, body)
	}
	waitFor(t, 30*time.Second, "the replica shown paused", func() error {
		for _, n := range state(t, base).Postgres {
			if n.Name == replica && n.Paused {
				return nil
			}
		}
		return fmt.Errorf("%s not shown paused", replica)
	})
	if code, body := post(t, base, `{"id":"resume-replay `+replica+`"}`, same); code != http.StatusAccepted {
		t.Fatalf("resume-replay: %d %s", code, body)
	}

	if err := p.Terminate(); err != nil {
		t.Fatal(err)
	}
	if code, err := p.Wait(ctx); err != nil || code != 0 {
		t.Fatalf("halab exit code %d, %v; want 0\n%s", code, err, p.Output())
	}
}

func TestDashboardRefusesNonLoopback(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", "192.0.2.1:80", ":7070", "nohost"} {
		if _, err := startDashboard(&lab{}, addr, slog.New(slog.DiscardHandler)); err == nil {
			t.Errorf("startDashboard(%q) = nil error; want a refusal", addr)
		}
	}
}

func TestParseLoadLine(t *testing.T) {
	s, text, ok := parseLoadLine(`{"time":"2026-01-02T03:04:05Z","seconds":2,"requests":80,"failed":1,"rps":40,"ok_pct":98.75,"p50_ms":3.2,"p99_ms":41.7,"orders":5,"all_failed":1}`)
	if !ok || s.Requests != 80 || s.P99Ms != 41.7 {
		t.Fatalf("parseLoadLine = %+v, %v", s, ok)
	}
	for _, want := range []string{"40.0 req/s", "98.75% ok", "p99 42ms", "5 orders"} {
		if !strings.Contains(text, want) {
			t.Errorf("live line %q lacks %q", text, want)
		}
	}
	for _, line := range []string{"load: stopped: 5 orders", "{not json"} {
		if _, text, ok := parseLoadLine(line); ok || text != line {
			t.Errorf("parseLoadLine(%q) = %q, %v; want the line back, false", line, text, ok)
		}
	}
}

// waitFor waits until cond returns nil, and logs its last error if it
// never does.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	var last error
	defer func() {
		if last != nil {
			t.Logf("last: %v", last)
		}
	}()
	hatest.WaitFor(t, timeout, what, func() bool { last = cond(); return last == nil })
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %q", url, resp.StatusCode, b)
	}
	return string(b)
}

func state(t *testing.T, base string) labState {
	t.Helper()
	var s labState
	if err := json.Unmarshal([]byte(get(t, base+"api/state")), &s); err != nil {
		t.Fatal(err)
	}
	return s
}

func post(t *testing.T, base, body string, headers map[string]string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, base+"api/action", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	for k, v := range headers {
		if k == "Host" {
			req.Host = v
		} else {
			req.Header.Set(k, v)
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
