package main

import (
	"cmp"
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"hakit.dev/hatest"
)

//go:embed web
var webFS embed.FS

const (
	pollEvery   = time.Second
	streamEvery = time.Second // the page's updates, at most
	keepSamples = 360         // load samples (6 minutes at 2 s, two apps)
	keepEvents  = 200
	keepRates   = 300 // per-instance request rates (5 minutes at 1 s)
)

// dashboard serves the lab's live page: the topology, the load's numbers,
// a timeline of what happened, and the chaos commands as buttons. It binds
// loopback only, and its POST endpoints refuse cross-origin requests and
// Host names other than loopback ones: it can kill processes.
type dashboard struct {
	lab  *lab
	log  *slog.Logger
	ctx  context.Context // the lab's, from setReady
	URL  string
	srv  *http.Server
	ln   net.Listener
	done chan struct{} // closed by close: the streams end

	pollMu   sync.Mutex // one poll at a time: each compares with the one before
	mu       sync.Mutex
	ready    bool
	state    labState
	events   []event
	samples  []loadSample
	rates    []rateSample
	lastSess map[string]int64
	lastAt   time.Time
	busy     string // the chaos action running, if any
	paused   map[string]bool
	changed  chan struct{} // closed and replaced on every change
	rclients map[string]*redis.Client

	// failover and failure tracking
	pgLostAt, redisLostAt time.Time
	pgLost, redisLost     string               // the leader or master last lost
	failingSince          map[string]time.Time // per app: since when its load fails
	failedDuring          map[string]int
}

// labState is what the page shows, sent as JSON.
type labState struct {
	Phase    string        `json:"phase"` // starting, ready
	Now      time.Time     `json:"now"`
	Postgres []pgNodeState `json:"postgres"`
	Leader   string        `json:"leader"`
	Redis    []redisState  `json:"redis"`
	Master   string        `json:"master"`
	Sentinel []sentinelSay `json:"sentinels"`
	MinIO    bool          `json:"minio"`
	Apps     []appState    `json:"apps"`
	Groups   []groupState  `json:"groups"`         // the example apps, in the order of the page
	Load     *loadState    `json:"load,omitempty"` // nil without the shop and the SSO
	Busy     string        `json:"busy"`
	Actions  []action      `json:"actions"`
	Events   []event       `json:"events"`
	Samples  []loadSample  `json:"samples"`
	Rates    []rateSample  `json:"rates"`
	HAProxy  string        `json:"haproxy"`
	Mailpit  string        `json:"mailpit"`
}

type pgNodeState struct {
	Name     string `json:"name"`
	Addr     string `json:"addr"`
	Up       bool   `json:"up"`
	Role     string `json:"role"` // leader, replica, down, unknown
	State    string `json:"state"`
	Timeline int    `json:"timeline"`
	LagBytes int64  `json:"lag_bytes"`
	Paused   bool   `json:"paused"`
	fresh    bool   // Patroni answered this poll
}

type redisState struct {
	Name string `json:"name"`
	Addr string `json:"addr"`
	Up   bool   `json:"up"`
	Role string `json:"role"` // master, replica, down
}

type sentinelSay struct {
	Name   string `json:"name"`
	Master string `json:"master"` // the node it names as master, or "" when it does not answer
}

type appState struct {
	App     string  `json:"app"` // shop, sso, or "" for a stand-in app
	Name    string  `json:"name"`
	Addr    string  `json:"addr"`
	Status  string  `json:"status"` // as HAProxy reports it: UP, DOWN, DRAIN, MAINT, …
	Running bool    `json:"running"`
	Current int64   `json:"current"`
	Total   int64   `json:"total"`
	Errors  int64   `json:"errors"`
	RPS     float64 `json:"rps"`
}

// groupState is one example app on the page: its instances are the apps
// whose App is ID, its load's samples those whose App is ID.
type groupState struct {
	ID    string `json:"id"`    // shop, sso
	Title string `json:"title"` // Shop, SSO
	URL   string `json:"url"`   // through its HAProxy
	Load  string `json:"load"`  // what its load does
	Unit  string `json:"unit"`  // what its load counts
}

type loadState struct {
	On bool `json:"on"`
}

// loadSample is one interval of an app's load: the shop's scripted
// customers (shopload -json; Requests are HTTP requests) or the SSO's
// logins (Requests are whole sign-in flows).
type loadSample struct {
	App      string    `json:"app"` // shop, sso
	Time     time.Time `json:"time"`
	Seconds  float64   `json:"seconds"`
	Requests int       `json:"requests"`
	Failed   int       `json:"failed"`
	RPS      float64   `json:"rps"`
	OKPct    float64   `json:"ok_pct"`
	P50Ms    float64   `json:"p50_ms"`
	P99Ms    float64   `json:"p99_ms"`
	Orders   int       `json:"orders"`     // the shop's, since the load started
	Logins   int       `json:"logins"`     // the SSO's successful sign-ins, since the load started
	AllFail  int       `json:"all_failed"` // since the load started
	Error    string    `json:"error,omitempty"`
}

// line is the sample as the prompt shows it.
func (s loadSample) line() string {
	if s.App == "sso" {
		l := fmt.Sprintf("load: sso  %5.1f logins/s  %6.2f%% ok  p50 %.0fms  p99 %.0fms  %d logins (%d failed)",
			s.RPS, s.OKPct, s.P50Ms, s.P99Ms, s.Logins, s.AllFail)
		if s.Error != "" {
			l += "; last error: " + s.Error
		}
		return l
	}
	return fmt.Sprintf("load: %5.1f req/s  %6.2f%% ok  p50 %.0fms  p99 %.0fms  %d orders (%d failed requests)",
		s.RPS, s.OKPct, s.P50Ms, s.P99Ms, s.Orders, s.AllFail)
}

// rateSample is each instance's requests per second as HAProxy counted them.
type rateSample struct {
	Time time.Time          `json:"time"`
	RPS  map[string]float64 `json:"rps"`
}

// event is one line of the timeline.
type event struct {
	Time   time.Time `json:"time"`
	Kind   string    `json:"kind"` // action, confirm, failover, recovered, warn, error, info
	Text   string    `json:"text"`
	Detail string    `json:"detail,omitempty"`
}

// action is one chaos button: the prompt command it runs, and whether it
// can apply now.
type action struct {
	ID      string `json:"id"` // the command line, e.g. "kill-app shop1"
	Label   string `json:"label"`
	Group   string `json:"group"` // postgres, redis, minio, apps, load
	Danger  bool   `json:"danger"`
	Enabled bool   `json:"enabled"`
	Why     string `json:"why,omitempty"` // why it is disabled
}

// defaultDashboard is where make demo serves the dashboard; when that
// port is taken, halab picks a free one.
const defaultDashboard = "127.0.0.1:7070"

// startDashboardOrFree starts the dashboard on addr, or on a free port
// when addr is the default and its port is taken.
func startDashboardOrFree(l *lab, addr string, log *slog.Logger) (*dashboard, error) {
	d, err := startDashboard(l, addr, log)
	if err != nil && addr == defaultDashboard {
		log.Info("the dashboard's default port is taken; picking a free one", "addr", addr)
		return startDashboard(l, "127.0.0.1:0", log)
	}
	return d, err
}

// startDashboard listens on addr, which must be a loopback address, and
// serves the page until close. An empty port or ":0" picks a free one.
func startDashboard(l *lab, addr string, log *slog.Logger) (*dashboard, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("-dashboard %q: %v", addr, err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return nil, fmt.Errorf("-dashboard %q: the dashboard can kill processes, so it listens on a loopback address only (127.0.0.1:PORT)", addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("-dashboard %q: %w", addr, err)
	}
	d := &dashboard{lab: l, log: log, ln: ln, URL: "http://" + ln.Addr().String() + "/",
		changed: make(chan struct{}), done: make(chan struct{}), paused: map[string]bool{}, lastSess: map[string]int64{},
		rclients: map[string]*redis.Client{}, failingSince: map[string]time.Time{}, failedDuring: map[string]int{}}
	d.state.Phase = "starting"
	d.srv = &http.Server{Handler: d.handler(), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = d.srv.Serve(ln) }()
	return d, nil
}

// handler is the dashboard's routes behind its origin checks.
func (d *dashboard) handler() http.Handler {
	static, _ := fs.Sub(webFS, "web")
	mux := http.NewServeMux()
	mux.Handle("GET /", http.FileServerFS(static))
	mux.HandleFunc("GET /api/state", d.serveState)
	mux.HandleFunc("GET /api/stream", d.serveStream)
	mux.HandleFunc("POST /api/action", d.serveAction)
	cop := http.NewCrossOriginProtection()
	return loopbackHostOnly(cop.Handler(mux))
}

// loopbackHostOnly refuses requests whose Host is not a loopback name: a
// page on another site whose name resolves to 127.0.0.1 (DNS rebinding)
// is same-origin to itself, not to this dashboard.
func loopbackHostOnly(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, err := net.SplitHostPort(r.Host)
		if err != nil {
			host = r.Host
		}
		if ip := net.ParseIP(strings.Trim(host, "[]")); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
			http.Error(w, "the lab dashboard answers on loopback names only", http.StatusForbidden)
			return
		}
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("X-Frame-Options", "DENY")
		next.ServeHTTP(w, r)
	})
}

func (d *dashboard) snapshot() (labState, chan struct{}) {
	d.mu.Lock()
	defer d.mu.Unlock()
	s := d.state
	s.Busy = d.busy
	s.Events = slices.Clone(d.events)
	s.Samples = slices.Clone(d.samples)
	s.Rates = slices.Clone(d.rates)
	s.Now = time.Now().UTC()
	if s.Phase == "ready" {
		s.Actions = d.actions(s)
	}
	return s, d.changed
}

func (d *dashboard) serveState(w http.ResponseWriter, r *http.Request) {
	s, _ := d.snapshot()
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(s)
}

// serveStream sends the state as server-sent events on every change (at
// most one a second), and at least every few seconds.
func (d *dashboard) serveStream(w http.ResponseWriter, r *http.Request) {
	fl, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming unsupported", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	rc := http.NewResponseController(w)
	for {
		s, changed := d.snapshot()
		b, err := json.Marshal(s)
		if err != nil {
			return
		}
		_ = rc.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if _, err := fmt.Fprintf(w, "event: state\ndata: %s\n\n", b); err != nil {
			return
		}
		fl.Flush()
		// At most one state per streamEvery, however often it changes
		// (a rolling restart changes it many times a second): a page on
		// a busy machine re-renders each one, and must keep up.
		select {
		case <-r.Context().Done():
			return
		case <-d.done:
			return
		case <-time.After(streamEvery):
		}
		select {
		case <-r.Context().Done():
			return
		case <-d.done:
			return
		case <-changed:
		case <-time.After(5 * time.Second):
		}
	}
}

// serveAction runs one chaos command: {"id": "kill-app shop1"}. It answers
// 202 with what it started; the outcome goes to the timeline.
func (d *dashboard) serveAction(w http.ResponseWriter, r *http.Request) {
	var req struct {
		ID string `json:"id"`
	}
	reply := func(code int, ok bool, msg string) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(map[string]any{"ok": ok, "message": msg})
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096)).Decode(&req); err != nil {
		reply(http.StatusBadRequest, false, "want a JSON body {\"id\": \"COMMAND\"}")
		return
	}
	s, _ := d.snapshot()
	if s.Phase != "ready" {
		reply(http.StatusConflict, false, "the lab is still starting")
		return
	}
	i := slices.IndexFunc(s.Actions, func(a action) bool { return a.ID == req.ID })
	if i < 0 {
		reply(http.StatusNotFound, false, fmt.Sprintf("no action %q", req.ID))
		return
	}
	a := s.Actions[i]
	if !a.Enabled {
		reply(http.StatusConflict, false, a.Label+": "+a.Why)
		return
	}
	f := strings.Fields(a.ID)
	if f[0] == "load" { // quick, and allowed during another action
		if err := d.lab.command(context.WithoutCancel(r.Context()), f[0], f[1:]); err != nil {
			d.add(event{Kind: "error", Text: a.Label + " failed", Detail: err.Error()})
			reply(http.StatusConflict, false, err.Error())
			return
		}
		d.add(event{Kind: "action", Text: a.Label})
		reply(http.StatusAccepted, true, a.Label+": done")
		return
	}
	d.mu.Lock()
	if d.busy != "" {
		d.mu.Unlock()
		reply(http.StatusConflict, false, "wait: "+d.busy+" is running")
		return
	}
	d.busy = a.Label
	d.mu.Unlock()
	d.add(event{Kind: "action", Text: a.Label})
	go d.run(a, f)
	reply(http.StatusAccepted, true, "started: "+a.Label)
}

// run runs a chaos command in the background; its confirmation lines
// reach the timeline through said.
func (d *dashboard) run(a action, f []string) {
	t0 := time.Now()
	ctx := d.ctx
	var err error
	switch f[0] {
	case "pause-replay", "resume-replay":
		err = d.replay(ctx, f[0] == "pause-replay", f[1])
	default:
		err = d.lab.command(ctx, f[0], f[1:])
	}
	d.mu.Lock()
	d.busy = ""
	d.mu.Unlock()
	if err != nil {
		d.add(event{Kind: "error", Text: a.Label + " failed", Detail: err.Error()})
		return
	}
	d.add(event{Kind: "confirm", Text: fmt.Sprintf("%s: done in %.1fs", a.Label, time.Since(t0).Seconds())})
}

// replay pauses or resumes WAL replay on a replica, which makes its lag
// grow while PostgreSQL still streams to it.
func (d *dashboard) replay(ctx context.Context, pause bool, name string) error {
	for _, n := range d.lab.pg.Nodes {
		if n.Name != name {
			continue
		}
		fn := "pg_wal_replay_resume()"
		if pause {
			fn = "pg_wal_replay_pause()"
		}
		if err := n.Exec(ctx, "SELECT "+fn); err != nil {
			return err
		}
		d.mu.Lock()
		d.paused[name] = pause
		d.mu.Unlock()
		if pause {
			d.lab.say(fmt.Sprintf("%s: WAL replay paused; its lag grows with every write (resume-replay %s)", name, name))
		} else {
			d.lab.say(fmt.Sprintf("%s: WAL replay resumed; it catches up", name))
		}
		return nil
	}
	return fmt.Errorf("no Patroni node %q", name)
}

// said takes a line the lab printed: load lines are left out, the rest
// are confirmations for the timeline.
func (d *dashboard) said(s string) {
	if strings.HasPrefix(s, "load: ") || strings.HasPrefix(s, "SERVICE") || strings.HasPrefix(s, "halab: ") || strings.HasPrefix(s, "commands:") {
		return
	}
	d.add(event{Kind: "info", Text: strings.TrimSpace(s)})
}

// loadSample takes one interval of the load.
func (d *dashboard) loadSample(s loadSample) {
	d.mu.Lock()
	d.samples = append(d.samples, s)
	if len(d.samples) > keepSamples {
		d.samples = d.samples[len(d.samples)-keepSamples:]
	}
	var ev *event
	what, title := "requests", "Shop"
	if s.App == "sso" {
		what, title = "logins", "SSO"
	}
	since := d.failingSince[s.App]
	switch {
	case s.Failed > 0 && since.IsZero():
		d.failingSince[s.App] = s.Time.Add(-time.Duration(s.Seconds * float64(time.Second)))
		d.failedDuring[s.App] = s.Failed
		detail := fmt.Sprintf("%d of %d %s failed in %.0fs", s.Failed, s.Requests, what, s.Seconds)
		if s.Error != "" {
			detail += "; " + s.Error
		}
		ev = &event{Kind: "warn", Text: fmt.Sprintf("%s %s failing: %.1f%% ok", title, what, s.OKPct), Detail: detail}
	case s.Failed > 0:
		d.failedDuring[s.App] += s.Failed
	case !since.IsZero() && s.Requests > 0:
		ev = &event{Kind: "recovered", Text: fmt.Sprintf("%s recovered after %.1fs of errors", title, s.Time.Sub(since).Seconds()),
			Detail: fmt.Sprintf("%d failed %s in all", d.failedDuring[s.App], what)}
		delete(d.failingSince, s.App)
	}
	d.mu.Unlock()
	if ev != nil {
		d.add(*ev)
	}
	d.notify()
}

func (d *dashboard) add(e event) {
	if e.Time.IsZero() {
		e.Time = time.Now().UTC()
	}
	d.mu.Lock()
	d.events = append(d.events, e)
	if len(d.events) > keepEvents {
		d.events = d.events[len(d.events)-keepEvents:]
	}
	d.mu.Unlock()
	d.notify()
}

func (d *dashboard) notify() {
	d.mu.Lock()
	close(d.changed)
	d.changed = make(chan struct{})
	d.mu.Unlock()
}

// setReady starts polling the lab, once every service is up.
func (d *dashboard) setReady(ctx context.Context) {
	d.mu.Lock()
	d.ready = true
	d.ctx = ctx
	d.mu.Unlock()
	d.poll(ctx)
	d.add(event{Kind: "info", Text: "Lab ready", Detail: "every service is up"})
	go func() {
		t := time.NewTicker(pollEvery)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				d.poll(ctx)
			}
		}
	}()
}

// look polls now, once the lab is ready: a chaos command calls it when
// HAProxy reports a state the page must show.
func (d *dashboard) look(ctx context.Context) {
	d.mu.Lock()
	ready := d.ready
	d.mu.Unlock()
	if ready {
		d.poll(ctx)
	}
}

// poll reads the lab's state and records what changed.
func (d *dashboard) poll(ctx context.Context) {
	d.pollMu.Lock()
	defer d.pollMu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	l := d.lab
	s := labState{Phase: "ready", HAProxy: l.lb.URL, Mailpit: l.mail.URL}
	d.mu.Lock()
	prevRole := map[string]string{}
	for _, n := range d.state.Postgres {
		prevRole[n.Name] = n.Role
	}
	for _, n := range d.state.Redis {
		prevRole[n.Name] = n.Role
	}
	d.mu.Unlock()

	var wg sync.WaitGroup
	s.Postgres = make([]pgNodeState, len(l.pg.Nodes))
	for i, n := range l.pg.Nodes {
		wg.Go(func() {
			ns := pgNodeState{Name: n.Name, Addr: n.Addr(), Up: n.Running(), Role: "down"}
			if ns.Up {
				// A running node whose API is slow to answer (a busy
				// machine) keeps its last role rather than flapping.
				ns.Role = cmp.Or(prevRole[n.Name], "unknown")
				if ns.Role == "down" {
					ns.Role = "unknown"
				}
				if st, err := n.Status(ctx); err == nil {
					ns.Role, ns.fresh = "unknown", true
					ns.State, ns.Timeline = st.State, st.Timeline
					switch st.Role {
					case "master", "primary":
						ns.Role = "leader"
						ns.LagBytes = int64(st.Xlog.Location)
					case "replica", "standby_leader":
						ns.Role = "replica"
						ns.LagBytes = -int64(st.Xlog.ReplayedLocation) // made relative below
					}
				}
			}
			s.Postgres[i] = ns
		})
	}
	s.Redis = make([]redisState, len(l.redis.Nodes))
	for i, n := range l.redis.Nodes {
		wg.Go(func() {
			rs := redisState{Name: n.Name, Addr: n.Addr(), Up: n.Running(), Role: "down"}
			if rs.Up {
				rs.Role = cmp.Or(prevRole[n.Name], "unknown")
				if rs.Role == "down" {
					rs.Role = "unknown"
				}
				if v, err := d.client(n).Do(ctx, "ROLE").Slice(); err == nil && len(v) > 0 {
					if r, _ := v[0].(string); r == "slave" {
						rs.Role = "replica"
					} else if r != "" {
						rs.Role = r
					}
				}
			}
			s.Redis[i] = rs
		})
	}
	s.Sentinel = make([]sentinelSay, len(l.redis.Sentinels))
	for i, n := range l.redis.Sentinels {
		wg.Go(func() {
			ss := sentinelSay{Name: n.Name}
			if v, err := d.client(n).Do(ctx, "SENTINEL", "get-master-addr-by-name", l.redis.MasterName).StringSlice(); err == nil && len(v) == 2 {
				addr := net.JoinHostPort(v[0], v[1])
				ss.Master = addr
				for _, rn := range l.redis.Nodes {
					if rn.Addr() == addr {
						ss.Master = rn.Name
					}
				}
			}
			s.Sentinel[i] = ss
		})
	}
	wg.Go(func() {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, l.minio.Endpoint+"/minio/health/live", nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			s.MinIO = resp.StatusCode == http.StatusOK
		}
	})
	var stats, ssoStats []hatest.ServerStats
	wg.Go(func() { stats, _ = l.lb.Stats(ctx) })
	if l.sso != nil {
		wg.Go(func() { ssoStats, _ = l.sso.lb.Stats(ctx) })
	}
	wg.Wait()
	stats = append(stats, ssoStats...)

	// Replica lag in bytes: the leader's position minus the replica's replay.
	var leaderLoc int64
	for _, n := range s.Postgres {
		if n.Role == "leader" {
			s.Leader = n.Name
			if n.fresh {
				leaderLoc = n.LagBytes
			}
		}
	}
	d.mu.Lock()
	for i := range s.Postgres {
		n := &s.Postgres[i]
		switch {
		case n.Role == "leader":
			n.LagBytes = 0
		case n.Role == "replica" && n.fresh && leaderLoc > 0:
			n.LagBytes = max(0, leaderLoc+n.LagBytes)
		default:
			n.LagBytes = 0
		}
		if !n.Up {
			d.paused[n.Name] = false
		}
		n.Paused = d.paused[n.Name]
	}
	d.mu.Unlock()
	for _, n := range s.Redis {
		if n.Role == "master" {
			s.Master = n.Name
		}
	}

	// The apps, as HAProxy sees them.
	now := time.Now()
	byName := map[string]hatest.ServerStats{}
	for _, st := range stats {
		byName[st.Name] = st
	}
	running := map[string]bool{}
	var names, addrs, apps []string
	for _, g := range l.groups() {
		gs := groupState{ID: g.id, Title: g.title, URL: g.lb.URL, Load: "scripted customers", Unit: "req/s"}
		if g.id == "sso" {
			gs.Load, gs.Unit = "sign-ins, full code flow", "logins/s"
		}
		s.Groups = append(s.Groups, gs)
		for _, in := range g.insts {
			running[in.name] = g.running(in)
			names, addrs, apps = append(names, in.name), append(addrs, in.addr), append(apps, g.id)
		}
	}
	if len(s.Groups) > 0 {
		s.Load = &loadState{On: l.loadRunning()}
	}
	for _, a := range l.apps {
		running[a.name] = a.ready.Load()
		names, addrs, apps = append(names, a.name), append(addrs, a.addr), append(apps, "")
	}
	d.mu.Lock()
	prev := d.state
	rate := rateSample{Time: now.UTC(), RPS: map[string]float64{}}
	took := now.Sub(d.lastAt).Seconds()
	for i, name := range names {
		st := byName[name]
		a := appState{App: apps[i], Name: name, Addr: addrs[i], Status: st.Status, Running: running[name],
			Current: st.Current, Total: st.Sessions, Errors: st.Responses5xx + st.ConnErrors + st.RespErrors}
		if a.Status == "" {
			a.Status = "unknown"
		}
		if last, ok := d.lastSess[name]; ok && took > 0 && st.Sessions >= last {
			a.RPS = float64(st.Sessions-last) / took
		}
		d.lastSess[name] = st.Sessions
		rate.RPS[name] = a.RPS
		s.Apps = append(s.Apps, a)
	}
	if !d.lastAt.IsZero() {
		d.rates = append(d.rates, rate)
		if len(d.rates) > keepRates {
			d.rates = d.rates[len(d.rates)-keepRates:]
		}
	}
	d.lastAt = now
	d.state = s
	evs := d.changes(prev, s, now)
	d.mu.Unlock()
	for _, e := range evs {
		d.add(e)
	}
	d.notify()
}

// changes are the timeline's events between two polls: failovers as
// detected, app status changes, MinIO going down or up. d.mu is held.
func (d *dashboard) changes(prev, s labState, now time.Time) []event {
	if prev.Phase != "ready" {
		return nil
	}
	var evs []event
	switch {
	case prev.Leader != "" && s.Leader == "":
		d.pgLostAt, d.pgLost = now, prev.Leader
		evs = append(evs, event{Kind: "failover", Text: "PostgreSQL has no leader", Detail: prev.Leader + " is gone; Patroni waits for its leader key to expire"})
	case s.Leader != "" && s.Leader != prev.Leader:
		detail := "Patroni promoted it"
		if !d.pgLostAt.IsZero() {
			detail = fmt.Sprintf("no leader for %.1fs", now.Sub(d.pgLostAt).Seconds())
		}
		from := prev.Leader
		if from == "" {
			from = cmp.Or(d.pgLost, "none")
		}
		evs = append(evs, event{Kind: "recovered", Text: fmt.Sprintf("PostgreSQL leader %s → %s", from, s.Leader), Detail: detail})
		d.pgLostAt = time.Time{}
	}
	switch {
	case prev.Master != "" && s.Master == "":
		d.redisLostAt, d.redisLost = now, prev.Master
		evs = append(evs, event{Kind: "failover", Text: "Redis has no master", Detail: prev.Master + " is gone; the Sentinels vote"})
	case s.Master != "" && s.Master != prev.Master:
		detail := "the Sentinels promoted it"
		if !d.redisLostAt.IsZero() {
			detail = fmt.Sprintf("no master for %.1fs", now.Sub(d.redisLostAt).Seconds())
		}
		from := prev.Master
		if from == "" {
			from = cmp.Or(d.redisLost, "none")
		}
		evs = append(evs, event{Kind: "recovered", Text: fmt.Sprintf("Redis master %s → %s", from, s.Master), Detail: detail})
		d.redisLostAt = time.Time{}
	}
	if prev.MinIO != s.MinIO {
		if s.MinIO {
			evs = append(evs, event{Kind: "recovered", Text: "MinIO is up"})
		} else {
			evs = append(evs, event{Kind: "failover", Text: "MinIO is down"})
		}
	}
	was := map[string]string{}
	for _, a := range prev.Apps {
		was[a.Name] = a.Status
	}
	for _, a := range s.Apps {
		if w, ok := was[a.Name]; ok && w != a.Status && a.Status != "unknown" {
			kind := "info"
			switch {
			case strings.HasPrefix(a.Status, "UP") && !strings.HasPrefix(w, "UP"):
				kind = "recovered"
			case a.Status == "DOWN":
				kind = "warn"
			}
			evs = append(evs, event{Kind: kind, Text: fmt.Sprintf("HAProxy: %s %s → %s", a.Name, w, a.Status)})
		}
	}
	for i := range evs {
		evs[i].Time = now.UTC()
	}
	return evs
}

// client is a kept Redis client for node n.
func (d *dashboard) client(n *hatest.RedisNode) *redis.Client {
	d.mu.Lock()
	defer d.mu.Unlock()
	c, ok := d.rclients[n.Name]
	if !ok {
		c = redis.NewClient(&redis.Options{Addr: n.Addr(), MaxRetries: -1, DialTimeout: 500 * time.Millisecond,
			ReadTimeout: 800 * time.Millisecond, WriteTimeout: 800 * time.Millisecond, PoolSize: 2})
		d.rclients[n.Name] = c
	}
	return c
}

// actions are the chaos buttons for state s, each enabled only when it
// can apply. d.mu is held.
func (d *dashboard) actions(s labState) []action {
	busy := func(a action) action {
		if a.Enabled && d.busy != "" && a.Group != "load" {
			a.Enabled, a.Why = false, d.busy+" is running"
		}
		return a
	}
	var out []action
	add := func(a action, ok bool, why string) {
		a.Enabled = ok
		if !ok {
			a.Why = why
		}
		out = append(out, busy(a))
	}
	replicas := 0
	for _, n := range s.Postgres {
		if n.Role == "replica" {
			replicas++
		}
	}
	add(action{ID: "kill-primary", Label: "Kill PostgreSQL leader", Group: "postgres", Danger: true},
		s.Leader != "" && replicas > 0, map[bool]string{true: "no replica to promote", false: "no leader"}[s.Leader != ""])
	for _, n := range s.Postgres {
		switch {
		case !n.Up:
			add(action{ID: "start " + n.Name, Label: "Start " + n.Name, Group: "postgres"}, true, "")
		case n.Role == "replica" && n.Paused:
			add(action{ID: "resume-replay " + n.Name, Label: "Resume replay on " + n.Name, Group: "postgres"}, true, "")
		case n.Role == "replica":
			add(action{ID: "pause-replay " + n.Name, Label: "Pause replay on " + n.Name, Group: "postgres"}, true, "")
		}
	}
	redisReplicas := 0
	for _, n := range s.Redis {
		if n.Role == "replica" {
			redisReplicas++
		}
	}
	add(action{ID: "kill-redis-master", Label: "Kill Redis master", Group: "redis", Danger: true},
		s.Master != "" && redisReplicas > 0, map[bool]string{true: "no replica to promote", false: "no master"}[s.Master != ""])
	for _, n := range s.Redis {
		if !n.Up {
			add(action{ID: "start-redis " + n.Name, Label: "Start " + n.Name, Group: "redis"}, true, "")
		}
	}
	if s.MinIO {
		add(action{ID: "kill-minio", Label: "Stop MinIO", Group: "minio", Danger: true}, true, "")
	} else {
		add(action{ID: "start-minio", Label: "Start MinIO", Group: "minio"}, true, "")
	}
	for _, g := range s.Groups {
		all := true
		for _, a := range s.Apps {
			if a.App != g.ID {
				continue
			}
			all = all && a.Running
			if a.Running {
				add(action{ID: "kill-app " + a.Name, Label: "Kill " + a.Name, Group: "app:" + g.ID, Danger: true}, true, "")
			} else {
				add(action{ID: "start-app " + a.Name, Label: "Start " + a.Name, Group: "app:" + g.ID}, true, "")
			}
		}
		add(action{ID: "rolling-restart " + g.ID, Label: "Rolling restart: " + g.Title, Group: "app:" + g.ID}, all, "an instance is down")
	}
	if s.Load != nil {
		on := s.Load.On
		add(action{ID: "load on", Label: "Start load", Group: "load"}, !on, "the load is on")
		add(action{ID: "load off", Label: "Stop load", Group: "load"}, on, "the load is off")
	}
	for _, a := range d.lab.apps {
		if a.ready.Load() {
			add(action{ID: "drain " + a.name, Label: "Drain " + a.name, Group: "apps"}, true, "")
		} else {
			add(action{ID: "ready " + a.name, Label: "Ready " + a.name, Group: "apps"}, true, "")
		}
	}
	return out
}

// close stops serving and closes the Redis clients.
func (d *dashboard) close() error {
	close(d.done)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := d.srv.Shutdown(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		err = d.srv.Close()
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, c := range d.rclients {
		_ = c.Close()
	}
	return err
}

// loadSample hands one interval of the load to the dashboard, if any.
func (l *lab) loadSample(s loadSample) {
	if l.dash != nil {
		l.dash.loadSample(s)
	}
}

// parseLoadLine reads a line of shopload -json: a sample and the live
// line for the prompt. ok is false for any other line.
func parseLoadLine(line string) (s loadSample, text string, ok bool) {
	if !strings.HasPrefix(line, "{") || json.Unmarshal([]byte(line), &s) != nil {
		return s, line, false
	}
	s.App = "shop"
	return s, s.line(), true
}
