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
	"runtime/pprof"
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
// Redis store + pgxpool, and loads both with wrk in alternating rounds.
func appSuite(ctx context.Context, r *report) error {
	wrk, err := exec.LookPath("wrk")
	if err != nil {
		return errors.New("wrk not found: install the Debian package wrk (make deps)")
	}
	pg, err := hatest.StartPostgres(ctx, hatest.PostgresOptions{Replicas: 1})
	if err != nil {
		return err
	}
	defer pg.Close()
	rd, err := hatest.StartRedis(ctx, hatest.RedisOptions{})
	if err != nil {
		return err
	}
	defer rd.Close()
	if err := pg.Nodes[0].Exec(ctx, `CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL, price int8 NOT NULL, visits int8 NOT NULL DEFAULT 0);
		INSERT INTO items (id, name, price) SELECT g, 'item ' || g, g * 100 FROM generate_series(1, 1000) g`); err != nil {
		return err
	}
	if err := pg.WaitReplicated(ctx); err != nil {
		return err
	}

	hakitURL, stopHakit, err := hakitPage(ctx, pg, rd)
	if err != nil {
		return fmt.Errorf("hakit app: %w", err)
	}
	defer stopHakit()
	handURL, stopHand, err := handPage(ctx, pg, rd)
	if err != nil {
		return fmt.Errorf("hand-wired app: %w", err)
	}
	defer stopHand()

	// Log in on each (a write, so the session carries a position), then
	// load the page with that session's cookie.
	hakitCookie, err := loginCookie(ctx, hakitURL)
	if err != nil {
		return fmt.Errorf("hakit app: %w", err)
	}
	handCookie, err := loginCookie(ctx, handURL)
	if err != nil {
		return fmt.Errorf("hand-wired app: %w", err)
	}
	// The services' processes, whose CPU time counts in a page's cost:
	// listed again before each load, as the pools open connections (a
	// backend process each) while they warm up.
	servicePids := func() []int {
		var pids []int
		for _, n := range pg.Nodes {
			pids = append(pids, n.Pids()...)
		}
		if m, err := rd.Master(ctx); err == nil {
			pids = append(pids, m.Pid())
		}
		return pids
	}
	// load runs wrk on the page; cpuPerReq becomes the CPU time per page
	// of this process and of the services together.
	load := func(base, cookie string, d time.Duration) (wrkResult, error) {
		pids := servicePids()
		s0 := processesCPU(pids)
		res, err := runWrkArgs(ctx, wrk, base+"/items/42", d, 16, "-H", "Cookie: "+cookie)
		res.cpuPerReq += float64((processesCPU(pids) - s0).Nanoseconds()) / max(res.requests, 1)
		return res, err
	}
	for _, s := range [][2]string{{hakitURL, hakitCookie}, {handURL, handCookie}} {
		if _, err := load(s[0], s[1], 2*time.Second); err != nil {
			return err
		}
	}
	if path := os.Getenv("BENCH_APP_CPUPROFILE"); path != "" {
		// Profiles of each app under load, for finding where its time goes.
		for _, s := range [][3]string{{hakitURL, hakitCookie, "hakit"}, {handURL, handCookie, "hand"}} {
			f, err := os.Create(path + "." + s[2])
			if err != nil {
				return err
			}
			if err := pprof.StartCPUProfile(f); err != nil {
				return err
			}
			_, err = load(s[0], s[1], 5*time.Second)
			pprof.StopCPUProfile()
			f.Close()
			if err != nil {
				return err
			}
		}
	}
	// Paired rounds, the order turning each round (hakit first, then the
	// hand-wired app first): a round's ratios compare two loads a couple
	// of seconds apart, and the median of the rounds leaves out those the
	// machine's other work upset.
	const rounds = 21
	var rpsRatios, cpuRatios, ours, theirs, oursP99, theirsP99, oursCPU, theirsCPU []float64
	for i := range rounds {
		var a, b wrkResult
		var errA, errB error
		if i%2 == 0 {
			a, errA = load(hakitURL, hakitCookie, 2*time.Second)
			b, errB = load(handURL, handCookie, 2*time.Second)
		} else {
			b, errB = load(handURL, handCookie, 2*time.Second)
			a, errA = load(hakitURL, hakitCookie, 2*time.Second)
		}
		if err := errors.Join(errA, errB); err != nil {
			return err
		}
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
	r.row("  CPU per page: this process, PostgreSQL, Redis (µs)", fmt.Sprintf("%.0f", median(oursCPU)/1e3), fmt.Sprintf("%.0f", median(theirsCPU)/1e3),
		fmt.Sprintf("pages per CPU second, hakit / hand-wired: %.3f (quartiles %.3f–%.3f)",
			median(cpuRatios), quantile(cpuRatios, 0.25), quantile(cpuRatios, 0.75)))
	// The headline is throughput per CPU second: what each app serves when
	// the CPU is what limits it, as it is here (both apps, PostgreSQL,
	// Redis and wrk on 2 cores). Requests per second, printed beside it,
	// also depend on how much of the machine other processes took during
	// each app's seconds.
	r.metric("app_page_ratio", fmt.Sprintf("%.3f", median(cpuRatios)))
	r.metric("app_page_rps_ratio", fmt.Sprintf("%.3f", median(rpsRatios)))
	r.metric("app_page_p99_ms", fmt.Sprintf("%.2f", median(oursP99)))
	r.metric("app_page_p99_ms_hand", fmt.Sprintf("%.2f", median(theirsP99)))
	r.metric("app_page_cpu_ratio", fmt.Sprintf("%.3f", median(cpuRatios)))
	return nil
}

// hakitPage serves the page on hakit.App and returns its URL and a stop
// function.
func hakitPage(ctx context.Context, pg *hatest.PostgresCluster, rd *hatest.RedisCluster) (string, func(), error) {
	app, err := hakit.New(ctx, hakit.Config{
		Logger:       slog.New(slog.NewJSONHandler(io.Discard, nil)),
		DatabaseURLs: pg.DSNs(),
		Redis:        hakit.RedisConfig{URL: "redis://" + rd.Addr(), NoReplicas: true},
		NoSignals:    true,
		DrainDelay:   -1,
	})
	if err != nil {
		return "", nil, err
	}
	sessions, err := app.Sessions(session.Config{Insecure: true})
	if err != nil {
		return "", nil, err
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
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	actx, cancel := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- app.Serve(actx, ln) }()
	u := "http://" + ln.Addr().String()
	stop := func() { cancel(); <-served }
	if err := waitOK(ctx, u+"/readyz"); err != nil {
		stop()
		return "", nil, err
	}
	return u, stop, nil
}

// handPage serves the page as one would wire it by hand: chi and its
// middleware (request ID, real IP, access log, recovery), scs with its
// Redis store, a pgxpool on the primary and one on the replica; read-your-
// writes by the position kept in the session, checked against the
// replica's replay position in the same query, the primary when the
// replica is behind.
func handPage(ctx context.Context, pg *hatest.PostgresCluster, rd *hatest.RedisCluster) (string, func(), error) {
	rdb := redis.NewClient(&redis.Options{Addr: rd.Addr()})
	sm := scs.New()
	sm.Store = goredisstore.New(rdb)
	// The expiry hakit's sessions have by default: every request of a
	// session extends it (for scs, a save of the session each request).
	sm.IdleTimeout = 2 * time.Hour
	primary, err := pgxpool.New(ctx, pg.Nodes[0].DSN())
	if err != nil {
		rdb.Close()
		return "", nil, err
	}
	replica, err := pgxpool.New(ctx, pg.Nodes[1].DSN())
	if err != nil {
		primary.Close()
		rdb.Close()
		return "", nil, err
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
	u, stopServer, err := serveLocal(rt)
	if err != nil {
		replica.Close()
		primary.Close()
		rdb.Close()
		return "", nil, err
	}
	return u, func() { stopServer(); replica.Close(); primary.Close(); rdb.Close() }, nil
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
