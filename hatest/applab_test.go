package hatest_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"hakit.dev/hatest"
)

// Bad options are refused, all at once, before anything starts; the
// steps refuse a missing instance and a bad environment entry.
func TestAppLabRefusesBadInput(t *testing.T) {
	ctx := context.Background()
	_, err := hatest.StartAppLab(ctx, hatest.AppLabOptions{Instances: -1, Nice: 20, DrainDelay: -time.Second,
		Postgres: hatest.PatroniOptions{Nodes: -1}, HAProxy: hatest.HAProxyOptions{Backends: []hatest.Backend{{Addr: "127.0.0.1:1"}}}})
	for _, want := range []string{"Bin is empty", "-1 instances", "-1 PostgreSQL nodes", "Backends is set", "drain delay -1s", "niceness 20"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("StartAppLab with bad options: %v; want an error with %q", err, want)
		}
	}
	var l hatest.AppLab
	if err := l.RollingRestart(ctx, "NO_EQUALS_SIGN"); err == nil || !strings.Contains(err.Error(), "want KEY=value") {
		t.Errorf("RollingRestart with a bad environment entry: %v", err)
	}
	for name, step := range map[string]func() error{
		"KillInstance":  func() error { return l.KillInstance(ctx, 0) },
		"StartInstance": func() error { return l.StartInstance(ctx, -1) },
		"StopInstance":  func() error { return l.StopInstance(ctx, 3) },
	} {
		if err := step(); err == nil || !strings.Contains(err.Error(), "no instance") {
			t.Errorf("%s of a missing instance: %v", name, err)
		}
	}
	if err := l.Close(); err != nil {
		t.Errorf("Close of a lab that never started: %v", err)
	}
}

// TestAppLab runs the getting-started app (hakit/internal/fullapp) as two
// instances behind HAProxy on synchronous Patroni, Redis with Sentinels
// and MinIO, with a client writing and reading notes the whole time, and
// runs each chaos step once: a rolling restart fails no request; after
// each step the app answers a login, a write and a read again; the note
// written before the steps is still there; and Close leaves no process
// behind.
func TestAppLab(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("-short: the app lab takes about a minute")
	}
	bin := hatest.Build(t, "hakit.dev/hakit/internal/fullapp")
	var pids []int
	t.Cleanup(func() { // runs after the lab's Close
		for _, pid := range pids {
			if hatest.Alive(pid) {
				t.Errorf("process %d still runs after Close", pid)
			}
		}
	})
	l := hatest.NewAppLab(t, hatest.AppLabOptions{
		Bin: bin, Name: "notes", Instances: 2,
		Postgres: hatest.PatroniOptions{Synchronous: true},
		MinIO:    &hatest.MinIOOptions{Bucket: "notes"},
		Env: func(*hatest.AppLab, *hatest.AppInstance) []string {
			return []string{"NOTES_DEV=true"} // the session cookie over plain http
		},
	})
	if len(l.Instances) != 2 || l.Instances[0].Name != "notes0" || !l.Instances[1].Running() || l.MinIO == nil || l.Mail != nil {
		t.Fatalf("lab: %d instances (%v), MinIO %v, Mailpit %v", len(l.Instances), l.Instances[0].Name, l.MinIO != nil, l.Mail != nil)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c := newNotesClient(t, l.URL)
	first := c.roundTrip(ctx, t, "before the steps")

	// A client writes and reads a note every 50ms through HAProxy.
	load := &noteLoad{c: c, acked: map[int64]string{}}
	loadCtx, stopLoad := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { load.run(loadCtx) })
	defer func() { stopLoad(); wg.Wait() }()

	steps := []struct {
		name string
		run  func() error
	}{
		{"rolling restart", func() error { return l.RollingRestart(ctx) }},
		{"kill -9 of an instance", func() error {
			if err := l.KillInstance(ctx, 1); err != nil {
				return err
			}
			if l.Instances[1].Running() {
				return fmt.Errorf("%s still runs after KillInstance", l.Instances[1].Name)
			}
			return l.StartInstance(ctx, 1)
		}},
		{"PostgreSQL leader failover", func() error { return checkFailover(ctx, t, "PostgreSQL", l.FailoverPostgres) }},
		{"Redis master failover", func() error { return checkFailover(ctx, t, "Redis", l.FailoverRedis) }},
	}
	for _, s := range steps {
		before := load.counts()
		if err := s.run(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		ok, failed, errs := load.since(before)
		t.Logf("%s: %d requests answered, %d failed %v", s.name, ok, failed, errs)
		// A note the app acknowledged is found when read back at once,
		// through every step: the session carries the write's position,
		// and no replica is read that has not replayed it (a replica
		// back from being the primary replays WAL of its own, past the
		// new timeline's start, until it is rewound).
		if missed := load.counts().missed - before.missed; missed > 0 {
			t.Errorf("%s: %d acknowledged notes not found when read back at once", s.name, missed)
		}
		if ok == 0 {
			t.Errorf("%s: no request answered during the step", s.name)
		}
		if s.name == "rolling restart" && failed > 0 {
			t.Errorf("rolling restart: %d requests failed: %v", failed, errs)
		}
		// The app answers again: a login (Redis), a write and a read
		// (PostgreSQL) through HAProxy.
		c.roundTrip(ctx, t, "after the "+s.name)
	}
	stopLoad()
	wg.Wait()
	// Nothing acknowledged is lost: on synchronous Patroni every note
	// the app answered 201 for reads back, the first one included.
	load.acked[first] = "before the steps"
	lost := 0
	for id, text := range load.acked {
		if body, err := c.read(ctx, id); err != nil || body != text {
			if lost++; lost <= 5 {
				t.Errorf("acknowledged note %d reads %q, %v; want %q", id, body, err, text)
			}
		}
	}
	t.Logf("%d acknowledged notes read back, %d lost", len(load.acked), lost)
	for _, in := range l.Instances {
		pids = append(pids, in.Pid())
	}
	pids = append(pids, l.LB.Pid(), l.MinIO.Pid())
	for _, n := range l.Redis.Nodes {
		pids = append(pids, n.Pid())
	}
	for _, n := range l.PG.Nodes {
		pids = append(pids, n.Pids()...)
	}
}

// checkFailover runs a failover step and checks what it reports: another
// node promoted, promoted called once in between, the old node back later.
func checkFailover(ctx context.Context, t *testing.T, what string, failover func(context.Context, func() error) (hatest.Failover, error)) error {
	calls := 0
	f, err := failover(ctx, func() error { calls++; return nil })
	t.Logf("%s failover: %+v", what, f)
	if err == nil && (calls != 1 || f.New == f.Old || f.New == "" || f.Promoted <= 0 || f.Rejoined < f.Promoted) {
		err = fmt.Errorf("failover %+v, promoted called %d times", f, calls)
	}
	return err
}

// notesClient is a logged-in user of the notes app.
type notesClient struct {
	base string
	c    *http.Client
}

func newNotesClient(t *testing.T, base string) *notesClient {
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &notesClient{base: base, c: &http.Client{Jar: jar, Timeout: 20 * time.Second}}
}

// do sends a request and returns the body of a response with status want.
func (c *notesClient) do(ctx context.Context, method, path string, form url.Values, want int) ([]byte, error) {
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return nil, err
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := c.c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != want {
		return nil, fmt.Errorf("%s %s: %d %.200s; want %d", method, path, resp.StatusCode, b, want)
	}
	return b, nil
}

// write saves a note and reads it back. It returns the note's id once the
// app acknowledged the note, even when the read back failed.
func (c *notesClient) write(ctx context.Context, text string) (int64, error) {
	b, err := c.do(ctx, http.MethodPost, "/notes", url.Values{"body": {text}}, http.StatusCreated)
	if err != nil {
		return 0, err
	}
	var n struct{ ID int64 }
	if err := json.Unmarshal(b, &n); err != nil {
		return 0, err
	}
	if got, err := c.read(ctx, n.ID); err != nil || got != text {
		return n.ID, fmt.Errorf("note %d read back as %q, %v", n.ID, got, err)
	}
	return n.ID, nil
}

func (c *notesClient) read(ctx context.Context, id int64) (string, error) {
	b, err := c.do(ctx, http.MethodGet, fmt.Sprint("/notes/", id), nil, http.StatusOK)
	if err != nil {
		return "", err
	}
	var n struct{ Body string }
	err = json.Unmarshal(b, &n)
	return n.Body, err
}

// roundTrip logs in and writes and reads a note, retrying for up to 30s
// (the app's pools may take a moment to find a new master), and fails the
// test if that never succeeds.
func (c *notesClient) roundTrip(ctx context.Context, t *testing.T, text string) int64 {
	t.Helper()
	var id int64
	var last error
	hatest.WaitFor(t, 30*time.Second, "the app to answer "+text, func() bool {
		if _, last = c.do(ctx, http.MethodPost, "/login", url.Values{"user": {"alice"}}, http.StatusOK); last != nil {
			return false
		}
		id, last = c.write(ctx, text)
		return last == nil
	})
	if last != nil {
		t.Logf("last error before it answered: %v", last)
	}
	return id
}

// noteLoad writes and reads notes until its context ends, counting what
// succeeded and what failed.
type noteLoad struct {
	c      *notesClient
	mu     sync.Mutex
	acked  map[int64]string // the notes the app acknowledged (201)
	ok     int
	failed int
	errs   []string
	// missed counts notes acknowledged (201) and then not found (404)
	// when read back at once: a read-your-writes miss.
	missed int
}

func (l *noteLoad) run(ctx context.Context) {
	for i := 0; ctx.Err() == nil; i++ {
		text := fmt.Sprint("load ", i)
		id, err := l.c.write(ctx, text)
		l.mu.Lock()
		if id != 0 {
			l.acked[id] = text
		}
		switch {
		case ctx.Err() != nil:
		case err != nil:
			l.failed++
			l.errs = append(l.errs, err.Error())
			if id != 0 && strings.Contains(err.Error(), ": 404 ") {
				l.missed++
			}
		default:
			l.ok++
		}
		l.mu.Unlock()
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// loadCounts is a mark in a noteLoad's counts.
type loadCounts struct{ ok, failed, missed int }

func (l *noteLoad) counts() loadCounts {
	l.mu.Lock()
	defer l.mu.Unlock()
	return loadCounts{l.ok, l.failed, l.missed}
}

// since returns what succeeded and failed after mark, and the errors.
func (l *noteLoad) since(mark loadCounts) (ok, failed int, errs []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	errs = l.errs[mark.failed:]
	if len(errs) > 5 {
		errs = errs[:5]
	}
	return l.ok - mark.ok, l.failed - mark.failed, append([]string(nil), errs...)
}
