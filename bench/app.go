package main

import (
	"context"
	"errors"
	"fmt"
	"html/template"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/alexedwards/scs/goredisstore"
	"github.com/alexedwards/scs/v2"
	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"hakit.dev/dbrouter"
	"hakit.dev/hakit"
	"hakit.dev/hatest"
	"hakit.dev/session"
)

// pageTemplate is the page both apps render.
var pageTemplate = template.Must(template.New("page").Parse(`<!doctype html>
<html><head><title>{{.Item.Name}}</title></head>
<body><p>Hello, {{.User}}.</p>
<h1>{{.Item.Name}}</h1><p>Price: {{.Item.Price}} cents. Visits: {{.Item.Visits}}.</p>
<ul>{{range .Tags}}<li>{{.}}</li>{{end}}</ul>
</body></html>
`))

type pageItem struct {
	Name          string
	Price, Visits int64
}

type pageData struct {
	User string
	Item pageItem
	Tags []string
}

var pageTags = []string{"one", "two", "three", "four", "five"}

const (
	pageQuery  = "SELECT name, price, visits FROM items WHERE id = $1"
	loginWrite = "UPDATE items SET visits = visits + 1 WHERE id = $1"
)

// appSuite serves the same small page twice — load the session, read a
// row from a replica with read-your-writes, render a template — once on
// hakit.App (its stack, sessions on Redis, dbrouter) and once wired by
// hand on chi (its RequestID, RealIP, Logger, Recoverer) + scs with its
// Redis store + pgxpool. Each app runs in a process of its own with
// PostgreSQL (primary and replica) and Redis of its own, so that every CPU
// second a page costs is counted for its app; wrk loads one, then the
// other, in paired rounds whose order turns each round.
func appSuite(ctx context.Context, r *report) error {
	wrk, err := exec.LookPath("wrk")
	if err != nil {
		return errors.New("wrk not found: install the Debian package wrk (make deps)")
	}
	type side struct {
		kind, url, cookie string
		pg                *hatest.PostgresCluster
		rd                *hatest.RedisCluster
		pid               int
	}
	sides := [2]*side{{kind: "app-hakit"}, {kind: "app-hand"}}
	for _, sd := range sides {
		if sd.pg, err = hatest.StartPostgres(ctx, hatest.PostgresOptions{Replicas: 1}); err != nil {
			return err
		}
		defer sd.pg.Close()
		if sd.rd, err = hatest.StartRedis(ctx, hatest.RedisOptions{}); err != nil {
			return err
		}
		defer sd.rd.Close()
		if err := sd.pg.Nodes[0].Exec(ctx, `CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL, price int8 NOT NULL, visits int8 NOT NULL DEFAULT 0);
			INSERT INTO items (id, name, price) SELECT g, 'item ' || g, g * 100 FROM generate_series(1, 1000) g`); err != nil {
			return err
		}
		if err := sd.pg.WaitReplicated(ctx); err != nil {
			return err
		}
		srv, err := startServer(ctx, sd.kind, envAppDSNs+"="+strings.Join(sd.pg.DSNs(), "\n"), envAppRedis+"="+sd.rd.Addr())
		if err != nil {
			return err
		}
		defer srv.stop()
		sd.url, sd.pid = srv.url, srv.pid
		// Log in (a write, so the session carries a position), then load
		// the page with that session's cookie.
		if sd.cookie, err = loginCookie(ctx, sd.url); err != nil {
			return fmt.Errorf("%s: %w", sd.kind, err)
		}
	}
	// An app's processes: its own, its PostgreSQL's (listed again each
	// round, as the pools open connections, a backend process each, while
	// they warm up) and its Redis.
	pidsOf := func(sd *side) []int {
		pids := []int{sd.pid}
		for _, n := range sd.pg.Nodes {
			pids = append(pids, n.Pids()...)
		}
		if m, err := sd.rd.Master(ctx); err == nil {
			pids = append(pids, m.Pid())
		}
		return pids
	}
	// load runs wrk on one app's page for d; cpuPerReq becomes the app's
	// CPU time per page, its services' included.
	load := func(sd *side, d time.Duration) (wrkResult, error) {
		pids := pidsOf(sd)
		cpu0 := processesCPUPrecise(pids)
		res, err := runWrkArgs(ctx, wrk, sd.url+"/items/42", d, 16, "-H", "Cookie: "+sd.cookie)
		res.cpuPerReq = float64((processesCPUPrecise(pids) - cpu0).Nanoseconds()) / max(res.requests, 1)
		return res, err
	}
	// round loads one app after the other, the order turning each round.
	round := func(i int, d time.Duration) ([2]wrkResult, error) {
		var res [2]wrkResult
		var errs [2]error
		for _, j := range [2][2]int{{0, 1}, {1, 0}}[i%2] {
			res[j], errs[j] = load(sides[j], d)
		}
		return res, errors.Join(errs[:]...)
	}
	for i := range 2 { // warm-up
		if _, err := round(i, time.Second); err != nil {
			return err
		}
	}
	const rounds = 21
	var rpsRatios, cpuRatios, ours, theirs, oursP99, theirsP99, oursCPU, theirsCPU []float64
	for i := range rounds {
		res, err := round(i, 2*time.Second)
		if err != nil {
			return err
		}
		a, b := res[0], res[1]
		rpsRatios = append(rpsRatios, a.rps/b.rps)
		cpuRatios = append(cpuRatios, b.cpuPerReq/a.cpuPerReq)
		oursCPU, theirsCPU = append(oursCPU, a.cpuPerReq), append(theirsCPU, b.cpuPerReq)
		ours, theirs = append(ours, a.rps), append(theirs, b.rps)
		oursP99, theirsP99 = append(oursP99, a.p99.Seconds()*1e3), append(theirsP99, b.p99.Seconds()*1e3)
	}
	r.row("measurement", "hakit", "hand-wired", "")
	r.row("page: session + replica read (read-your-writes) + template, wrk 16 connections (req/s)",
		fmt.Sprintf("%.0f", median(ours)), fmt.Sprintf("%.0f", median(theirs)),
		fmt.Sprintf("chi + scs/goredisstore + pgxpool, chi's access log; req/s ratio %.3f (quartiles %.3f–%.3f)",
			median(rpsRatios), quantile(rpsRatios, 0.25), quantile(rpsRatios, 0.75)))
	r.row("  p99 latency (ms)", fmt.Sprintf("%.2f", median(oursP99)), fmt.Sprintf("%.2f", median(theirsP99)), "")
	r.row("  CPU per page: the app's process, its PostgreSQL and Redis (µs)", fmt.Sprintf("%.0f", median(oursCPU)/1e3), fmt.Sprintf("%.0f", median(theirsCPU)/1e3),
		fmt.Sprintf("pages per CPU second, hakit / hand-wired: %.3f (quartiles %.3f–%.3f)",
			median(cpuRatios), quantile(cpuRatios, 0.25), quantile(cpuRatios, 0.75)))
	// The headline is throughput per CPU second: what each app serves when
	// the CPU is what limits it, as it is here. Requests per second,
	// printed beside it, also depend on how much of the two cores other
	// processes took during each app's seconds.
	r.metric("app_page_ratio", fmt.Sprintf("%.3f", median(cpuRatios)))
	r.metric("app_page_rps_ratio", fmt.Sprintf("%.3f", median(rpsRatios)))
	r.metric("app_page_p99_ms", fmt.Sprintf("%.2f", median(oursP99)))
	r.metric("app_page_p99_ms_hand", fmt.Sprintf("%.2f", median(theirsP99)))
	r.metric("app_page_cpu_ratio", fmt.Sprintf("%.3f", median(cpuRatios)))
	return nil
}

// The app suite's servers (envHTTPServer "app-hakit", "app-hand") find
// their PostgreSQL (primary first, newline-separated) and Redis here.
const (
	envAppDSNs  = "HAKIT_BENCH_APP_DSNS"
	envAppRedis = "HAKIT_BENCH_APP_REDIS"
)

// appChild serves one of the app suite's pages until ctx ends, after
// printing its address. With BENCH_APP_CPUPROFILE=path it writes a CPU
// profile of its whole run to path.hakit or path.hand.
func appChild(ctx context.Context, kind string, ln net.Listener) error {
	dsns := strings.Split(os.Getenv(envAppDSNs), "\n")
	redisAddr := os.Getenv(envAppRedis)
	if len(dsns) < 2 || redisAddr == "" {
		return fmt.Errorf("%s and %s must name a primary, a replica and Redis", envAppDSNs, envAppRedis)
	}
	stopProfile, err := cpuProfile("BENCH_APP_CPUPROFILE", strings.TrimPrefix(kind, "app-"))
	if err != nil {
		return err
	}
	defer stopProfile()
	var (
		h    http.Handler
		stop func()
	)
	if kind == "app-hakit" {
		h, stop, err = hakitPage(ctx, dsns, redisAddr)
	} else {
		h, stop, err = handPage(ctx, dsns[0], dsns[1], redisAddr)
	}
	if err != nil {
		return err
	}
	defer stop()
	if app, ok := h.(*hakit.App); ok {
		served := make(chan error, 1)
		go func() { served <- app.Serve(ctx, ln) }()
		if err := waitOK(ctx, "http://"+ln.Addr().String()+"/readyz"); err != nil {
			return err
		}
		fmt.Println(ln.Addr().String())
		return <-served
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() { <-ctx.Done(); _ = srv.Close() }()
	fmt.Println(ln.Addr().String())
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// processesCPUPrecise returns the CPU time the processes pids have used
// (those still running), in nanoseconds from their threads' schedstat.
func processesCPUPrecise(pids []int) time.Duration {
	var total time.Duration
	for _, p := range pids {
		if d, err := processCPUOf(p); err == nil {
			total += d
		}
	}
	return total
}

// hakitPage wires the page on hakit.App and returns the app (served by
// its own Serve) and a stop function.
func hakitPage(ctx context.Context, dsns []string, redisAddr string) (http.Handler, func(), error) {
	app, err := hakit.New(ctx, hakit.Config{
		Logger:       slog.New(slog.NewJSONHandler(io.Discard, nil)),
		DatabaseURLs: dsns,
		Redis:        hakit.RedisConfig{URL: "redis://" + redisAddr, NoReplicas: true},
		NoSignals:    true,
		DrainDelay:   -1,
	})
	if err != nil {
		return nil, nil, err
	}
	sessions, err := app.Sessions(session.Config{Insecure: true})
	if err != nil {
		return nil, nil, err
	}
	db := app.DB()
	rt := app.Router()
	rt.Get("/login", func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		if _, err := db.Exec(ctx, loginWrite, 42); err != nil {
			hakit.Error(w, r, err)
			return
		}
		if err := sessions.Login(ctx, "ada"); err != nil {
			hakit.Error(w, r, err)
			return
		}
		_, _ = io.WriteString(w, "ok\n")
	})
	rt.Get("/items/{id}", func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		d := pageData{User: sessions.UserID(ctx), Tags: pageTags}
		err := db.Read(ctx, func(q dbrouter.Querier) error {
			return q.QueryRow(ctx, pageQuery, r.PathValue("id")).Scan(&d.Item.Name, &d.Item.Price, &d.Item.Visits)
		})
		if err != nil {
			hakit.Error(w, r, err)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_ = pageTemplate.Execute(w, d)
	})
	return app, func() {}, nil
}

// handPage wires the page as one would by hand: chi and its
// middleware (request ID, real IP, access log, recovery), scs with its
// Redis store, a pgxpool on the primary and one on the replica; read-your-
// writes by the position kept in the session, checked against the
// replica's replay position in the same query, the primary when the
// replica is behind.
func handPage(ctx context.Context, primaryDSN, replicaDSN, redisAddr string) (http.Handler, func(), error) {
	rdb := redis.NewClient(&redis.Options{Addr: redisAddr})
	sm := scs.New()
	sm.Store = goredisstore.New(rdb)
	// The expiry hakit's sessions have by default: every request of a
	// session extends it (for scs, a save of the session each request).
	sm.IdleTimeout = 2 * time.Hour
	primary, err := pgxpool.New(ctx, primaryDSN)
	if err != nil {
		rdb.Close()
		return nil, nil, err
	}
	replica, err := pgxpool.New(ctx, replicaDSN)
	if err != nil {
		primary.Close()
		rdb.Close()
		return nil, nil, err
	}
	rt := chi.NewRouter()
	//lint:ignore SA1019 chi's stack as users have it, RealIP included
	realIP := middleware.RealIP
	rt.Use(middleware.RequestID, realIP,
		middleware.RequestLogger(&middleware.DefaultLogFormatter{Logger: log.New(io.Discard, "", log.LstdFlags), NoColor: true}),
		middleware.Recoverer, sm.LoadAndSave)
	rt.Get("/login", func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		var lsn string
		err := pgx.BeginFunc(ctx, primary, func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, loginWrite, 42)
			return err
		})
		if err == nil {
			err = primary.QueryRow(ctx, "SELECT pg_current_wal_insert_lsn()::text").Scan(&lsn)
		}
		if err == nil {
			err = sm.RenewToken(ctx)
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		sm.Put(ctx, "user", "ada")
		sm.Put(ctx, "lsn", lsn)
		_, _ = io.WriteString(w, "ok\n")
	})
	rt.Get("/items/{id}", func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		d := pageData{User: sm.GetString(ctx, "user"), Tags: pageTags}
		lsn := sm.GetString(ctx, "lsn")
		if lsn == "" {
			lsn = "0/0"
		}
		id := chi.URLParam(r, "id")
		var fresh bool
		err := replica.QueryRow(ctx, "SELECT name, price, visits, pg_last_wal_replay_lsn() >= $2::pg_lsn FROM items WHERE id = $1", id, lsn).
			Scan(&d.Item.Name, &d.Item.Price, &d.Item.Visits, &fresh)
		if err == nil && !fresh {
			err = primary.QueryRow(ctx, pageQuery, id).Scan(&d.Item.Name, &d.Item.Price, &d.Item.Visits)
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_ = pageTemplate.Execute(w, d)
	})
	return rt, func() { replica.Close(); primary.Close(); rdb.Close() }, nil
}

// loginCookie logs in on the app at base and returns its session cookie
// as a Cookie header value.
func loginCookie(ctx context.Context, base string) (string, error) {
	jar, err := cookiejar.New(nil)
	if err != nil {
		return "", err
	}
	c := &http.Client{Jar: jar, Timeout: 10 * time.Second}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/login", nil)
	if err != nil {
		return "", err
	}
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("login: %s", resp.Status)
	}
	u, err := url.Parse(base)
	if err != nil {
		return "", err
	}
	cookies := jar.Cookies(u)
	if len(cookies) == 0 {
		return "", errors.New("login set no cookie")
	}
	// The page must answer 200 with that session before wrk loads it.
	req, err = http.NewRequestWithContext(ctx, http.MethodGet, base+"/items/42", nil)
	if err != nil {
		return "", err
	}
	resp, err = c.Do(req)
	if err != nil {
		return "", err
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "Hello, ada.") {
		return "", fmt.Errorf("page with the session: %s: %s", resp.Status, body)
	}
	return cookies[0].Name + "=" + cookies[0].Value, nil
}
