// Command halab runs hakit's HA lab on this machine, in the foreground: a
// Patroni cluster of PostgreSQL nodes with etcd (synchronous replication),
// Redis with a replica and three Sentinels, MinIO (S3), Mailpit (SMTP with
// a web UI), the shop example (examples/shop) as three instances behind
// HAProxy, and the SSO provider (examples/sso) as three instances behind
// an HAProxy of its own, with the shop registered as its client; both
// apps are built with go build. It serves a live dashboard on loopback
// (its URL is printed first; -dashboard sets the address), prints every
// endpoint and credential, takes chaos commands on standard input and as
// the dashboard's buttons, and stops everything on Ctrl-C or SIGTERM.
//
//	make demo            # or: go run ./cmd/halab
//	go run ./cmd/halab -shop 3 -sso 3 -pg 3
//	go run ./cmd/halab -sso 0    # the shop alone
//	go run ./cmd/halab -apps 2   # small stand-in apps instead of the shop and the SSO
//
// Type help at the prompt for the chaos commands (kill-app sso1,
// rolling-restart shop, kill-primary, kill-redis-master, kill-minio,
// load on, …).
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"hakit.dev/hatest"
)

// config is halab's command line.
type config struct {
	pgNodes int
	apps    int    // stand-in apps instead of the shop
	shops   int    // shop instances
	shopDir string // the shop module's directory
	ssos    int    // SSO provider instances
	ssoDir  string // the SSO module's directory
	noInput bool
	dash    string // the dashboard's loopback address; "" for none
}

func main() {
	var cfg config
	flag.IntVar(&cfg.pgNodes, "pg", 2, "PostgreSQL nodes in the Patroni cluster")
	flag.IntVar(&cfg.shops, "shop", 3, "shop instances behind HAProxy")
	flag.IntVar(&cfg.apps, "apps", 0, "run this many small stand-in apps behind HAProxy instead of the shop and the SSO")
	flag.StringVar(&cfg.shopDir, "shop-dir", "", "the shop module's directory (default: examples/shop of the repository)")
	flag.IntVar(&cfg.ssos, "sso", 3, "SSO provider instances behind their own HAProxy (0 for none)")
	flag.StringVar(&cfg.ssoDir, "sso-dir", "", "the SSO module's directory (default: examples/sso of the repository)")
	flag.BoolVar(&cfg.noInput, "no-input", false, "ignore standard input (no chaos prompt)")
	flag.StringVar(&cfg.dash, "dashboard", defaultDashboard, "serve the live dashboard on this loopback address (\"\" for none)")
	flag.Parse()
	if err := cfg.check(); err != nil {
		fmt.Fprintln(os.Stderr, "halab:", err)
		os.Exit(2)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// A second signal while stopping exits at once; the servers die with
	// this process, and the next hatest start sweeps what is left.
	go func() {
		<-ctx.Done()
		stop()
		ch := make(chan os.Signal, 1)
		signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
		<-ch
		fmt.Fprintln(os.Stderr, "halab: second signal, exiting without cleanup")
		os.Exit(1)
	}()

	var in io.Reader = os.Stdin
	if cfg.noInput {
		in = nil
	}
	if err := run(ctx, cfg, in, os.Stdout, log); err != nil {
		fmt.Fprintln(os.Stderr, "halab:", err)
		os.Exit(1)
	}
}

// lab is the running cluster.
type lab struct {
	pg    *hatest.PatroniCluster
	redis *hatest.RedisCluster
	minio *hatest.MinIO
	mail  *hatest.Mailpit
	lb    *hatest.HAProxy // the shop's (or the stand-in apps')
	apps  []*labApp
	shop  *shopLab // nil with -apps
	sso   *ssoLab  // nil with -sso 0
	dash  *dashboard
	out   io.Writer
	outMu sync.Mutex
}

// check refuses a command line that cannot make a lab.
func (c config) check() error {
	switch {
	case c.pgNodes < 1:
		return errors.New("-pg must be at least 1")
	case c.apps < 0 || c.shops < 0 || c.ssos < 0:
		return errors.New("-apps, -shop and -sso cannot be negative")
	case c.apps == 0 && c.shops == 0:
		return errors.New("-shop or -apps must be at least 1")
	}
	return nil
}

// run starts the lab, serves it until ctx ends, and stops it.
func run(ctx context.Context, cfg config, in io.Reader, out io.Writer, log *slog.Logger) (err error) {
	l := &lab{out: out}
	defer func() {
		log.Info("stopping the lab")
		err = errors.Join(err, l.close())
		if err == nil {
			l.say("halab: stopped")
		}
	}()
	start := time.Now()
	if cfg.apps > 0 {
		cfg.shops, cfg.ssos = 0, 0
	}
	if cfg.dash != "" {
		if l.dash, err = startDashboardOrFree(l, cfg.dash, log); err != nil {
			return err
		}
		l.say("halab: dashboard " + l.dash.URL + " (live while the lab starts)")
	}

	// The apps build while the services come up.
	var wg sync.WaitGroup
	var buildErr, ssoBuildErr, ssoRedisErr error
	if cfg.shops > 0 {
		l.shop = &shopLab{appGroup: &appGroup{lab: l, log: log, id: "shop", title: "Shop"}}
		l.shop.env = l.shop.shopEnv
		wg.Go(func() {
			buildErr = l.shop.build(ctx, cfg.shopDir)
		})
	}
	if cfg.ssos > 0 {
		l.sso = &ssoLab{appGroup: &appGroup{lab: l, log: log, id: "sso", title: "SSO"}}
		l.sso.env = l.sso.ssoEnv
		wg.Go(func() {
			ssoBuildErr = l.sso.build(ctx, cfg.ssoDir)
		})
		wg.Go(func() {
			log.Info("starting the SSO's Redis with a replica and 3 Sentinels")
			l.sso.redis, ssoRedisErr = hatest.StartRedis(ctx, hatest.RedisOptions{Replicas: 1, Sentinels: 3, MasterName: "sso"})
		})
	}
	// The services come up in parallel. A Start function that fails
	// returns a nil service, which close skips.
	var pgErr, redisErr, minioErr, mailErr error
	wg.Go(func() {
		// Synchronous mode: a commit is acknowledged once a standby has
		// it, and only that standby may be promoted, so an account the
		// SSO acknowledged survives the leader's loss.
		log.Info("starting PostgreSQL under Patroni with etcd", "nodes", cfg.pgNodes, "synchronous", cfg.pgNodes > 1)
		// A busy machine (builds of the apps, other work) can take
		// minutes over a replica's base backup.
		opts := hatest.PatroniOptions{Nodes: cfg.pgNodes, Synchronous: cfg.pgNodes > 1, StartTimeout: 5 * time.Minute}
		l.pg, pgErr = hatest.StartPatroni(ctx, opts)
		if pgErr != nil && ctx.Err() == nil {
			// Patroni gives up on a bootstrap whose steps time out
			// ("Failed to bootstrap cluster") when the machine is
			// overloaded: one more try, from scratch.
			log.Warn("PostgreSQL under Patroni did not start; trying once more", "err", pgErr)
			l.pg, pgErr = hatest.StartPatroni(ctx, opts)
		}
	})
	wg.Go(func() {
		log.Info("starting Redis with a replica and 3 Sentinels")
		l.redis, redisErr = hatest.StartRedis(ctx, hatest.RedisOptions{Replicas: 1, Sentinels: 3})
	})
	wg.Go(func() {
		log.Info("starting MinIO")
		l.minio, minioErr = hatest.StartMinIO(ctx, hatest.MinIOOptions{Bucket: "hakit"})
	})
	wg.Go(func() {
		log.Info("starting Mailpit")
		l.mail, mailErr = hatest.StartMailpit(ctx, hatest.MailpitOptions{})
	})
	wg.Wait()
	if err := errors.Join(buildErr, ssoBuildErr, ssoRedisErr, pgErr, redisErr, minioErr, mailErr); err != nil {
		return err
	}

	var backends []hatest.Backend
	for i := range cfg.apps {
		a, err := startLabApp(fmt.Sprintf("app%d", i), l)
		if err != nil {
			return err
		}
		l.apps = append(l.apps, a)
		backends = append(backends, hatest.Backend{Name: a.name, Addr: a.addr})
	}
	if l.shop != nil {
		b, err := l.shop.prepare(cfg.shops)
		if err != nil {
			return err
		}
		backends = append(backends, b...)
	}
	lb, err := hatest.StartHAProxy(ctx, hatest.HAProxyOptions{Backends: backends})
	if err != nil {
		return err
	}
	l.lb = lb
	if l.shop != nil {
		l.shop.lb = lb
	}
	if l.sso != nil {
		if err := l.sso.createDatabase(ctx); err != nil {
			return fmt.Errorf("the SSO's database: %w", err)
		}
		b, err := l.sso.prepare(cfg.ssos)
		if err != nil {
			return err
		}
		if l.sso.lb, err = hatest.StartHAProxy(ctx, hatest.HAProxyOptions{Backends: b}); err != nil {
			return err
		}
		// The provider first: the shop reads its discovery document.
		log.Info("starting the SSO instances (the first migrates)", "instances", cfg.ssos)
		if err := l.sso.startAll(ctx); err != nil {
			return err
		}
	}
	for _, a := range l.apps {
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := lb.WaitServerStatus(wctx, a.name, "UP")
		cancel()
		if err != nil {
			return err
		}
	}
	if l.shop != nil {
		log.Info("starting the shop instances (the first migrates and seeds the catalog)", "instances", cfg.shops)
		if err := l.shop.startAll(ctx); err != nil {
			return err
		}
	}

	l.printTable(ctx)
	if l.dash != nil {
		l.dash.setReady(ctx)
		l.say("halab: dashboard " + l.dash.URL)
	}
	l.say(fmt.Sprintf("halab: ready in %.1fs. Type help for chaos commands; Ctrl-C stops the lab.", time.Since(start).Seconds()))
	if in != nil {
		go l.prompt(ctx, in)
	}
	<-ctx.Done()
	return nil
}

func (l *lab) close() error {
	var errs []error
	if l.dash != nil {
		errs = append(errs, l.dash.close())
	}
	// The apps stop together: each instance drains for a few seconds.
	var shopErr, ssoErr error
	var wg sync.WaitGroup
	if l.shop != nil {
		wg.Go(func() { shopErr = l.shop.close() })
	}
	if l.sso != nil {
		wg.Go(func() { ssoErr = l.sso.close() })
	}
	wg.Wait()
	errs = append(errs, shopErr, ssoErr)
	if l.sso != nil && l.sso.lb != nil {
		errs = append(errs, l.sso.lb.Close())
	}
	if l.lb != nil {
		errs = append(errs, l.lb.Close())
	}
	for _, a := range l.apps {
		errs = append(errs, a.srv.Close())
	}
	if l.mail != nil {
		errs = append(errs, l.mail.Close())
	}
	if l.minio != nil {
		errs = append(errs, l.minio.Close())
	}
	if l.redis != nil {
		errs = append(errs, l.redis.Close())
	}
	if l.pg != nil {
		errs = append(errs, l.pg.Close())
	}
	return errors.Join(errs...)
}

func (l *lab) say(s string) {
	l.outMu.Lock()
	fmt.Fprintln(l.out, s)
	l.outMu.Unlock()
	if l.dash != nil {
		l.dash.said(s)
	}
}

// printTable prints every endpoint and credential.
func (l *lab) printTable(ctx context.Context) {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SERVICE\tENDPOINT\tNOTES")
	for _, n := range l.pg.Nodes {
		role := "replica"
		if n.IsLeader(ctx) {
			role = "leader (primary)"
		}
		if !n.Running() {
			role = "down"
		}
		fmt.Fprintf(tw, "postgres %s\t%s\t%s; Patroni API %s\n", n.Name, n.DSN(), role, n.APIURL())
	}
	fmt.Fprintf(tw, "postgres (all nodes)\t%s\tadd target_session_attrs=read-write for the primary\n", l.pg.MultiHostDSN())
	fmt.Fprintf(tw, "etcd\t%s\tPatroni's consensus store\n", l.pg.EtcdEndpoint)
	master, _ := l.redis.Master(ctx)
	for _, n := range l.redis.Nodes {
		role := "replica"
		if n == master {
			role = "master"
		}
		if !n.Running() {
			role = "down"
		}
		fmt.Fprintf(tw, "redis %s\t%s\t%s\n", n.Name, n.Addr(), role)
	}
	fmt.Fprintf(tw, "redis sentinels\t%s\tmaster name %q\n", strings.Join(l.redis.SentinelAddrs(), ","), l.redis.MasterName)
	fmt.Fprintf(tw, "minio (S3)\t%s\tbucket %s, access key %s, secret key %s, region %s, path-style\n",
		l.minio.Endpoint, l.minio.Bucket, l.minio.AccessKey, l.minio.SecretKey, l.minio.Region)
	fmt.Fprintf(tw, "mailpit\t%s\tweb UI and API; SMTP on %s\n", l.mail.URL, l.mail.SMTPAddr)
	fmt.Fprintf(tw, "haproxy\t%s\tstats page %s\n", l.lb.URL, l.lb.StatsURL)
	if l.shop != nil {
		l.shop.table(tw)
	}
	if l.sso != nil {
		l.sso.table(tw)
	}
	for _, a := range l.apps {
		state := "ready"
		if !a.ready.Load() {
			state = "draining (/readyz 503)"
		}
		fmt.Fprintf(tw, "lab %s\thttp://%s\t%s\n", a.name, a.addr, state)
	}
	tw.Flush()
	l.say(b.String())
}

const help = `commands:
  status                 print the endpoint table with current roles
  kill-primary           kill -9 the Patroni leader's Patroni and PostgreSQL (a lost machine) and wait for a new leader
  start NODE             start a killed Patroni node again (it rejoins as a replica)
  kill-redis-master      kill -9 the Redis master and wait for Sentinel's failover
  start-redis NODE       start a killed Redis node again (Sentinel makes it a replica)
  kill-minio             kill -9 MinIO
  start-minio            start MinIO again with its data
  kill-app [APP] NAME    kill -9 an app instance (shop0, sso1, …; APP is shop or sso): its in-flight requests fail
  kill-app APP           kill -9 the app's first running instance
  start-app [APP] NAME   start a killed or stopped instance again (start-app APP: its first stopped one)
  rolling-restart [APP]  each instance of the app (default: the shop) in turn: HAProxy drains it, SIGTERM,
                         it finishes its requests and exits, it starts again
  load on|off            scripted customers shopping and users signing in to the SSO (full code flow),
                         through HAProxy at a bounded rate, a live line every 2 s
  drain APP              make a stand-in app's /readyz answer 503 (HAProxy takes it out; -apps only)
  ready APP              make it answer 200 again
  help                   this text
  quit                   stop the lab (as Ctrl-C does)`

// prompt reads chaos commands until in ends.
func (l *lab) prompt(ctx context.Context, in io.Reader) {
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		if f[0] == "quit" || f[0] == "exit" {
			_ = syscall.Kill(os.Getpid(), syscall.SIGTERM)
			return
		}
		if err := l.command(ctx, f[0], f[1:]); err != nil {
			l.say("error: " + err.Error())
		}
	}
}

func (l *lab) command(ctx context.Context, cmd string, args []string) error {
	arg := func() (string, error) {
		if len(args) != 1 {
			return "", fmt.Errorf("%s needs one argument", cmd)
		}
		return args[0], nil
	}
	switch cmd {
	case "help":
		l.say(help)
	case "status":
		l.printTable(ctx)
	case "kill-primary":
		old, err := l.pg.KillLeader(ctx)
		if err != nil {
			return err
		}
		l.say(fmt.Sprintf("killed %s; waiting for Patroni to promote a replica (about ttl = 10s)…", old.Name))
		t0 := time.Now()
		wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		n, err := l.pg.WaitLeader(wctx, old)
		if err != nil {
			return err
		}
		l.say(fmt.Sprintf("%s is the new leader, writable %.1fs after the kill. Bring %s back with: start %s", n.Name, time.Since(t0).Seconds(), old.Name, old.Name))
	case "start":
		name, err := arg()
		if err != nil {
			return err
		}
		for _, n := range l.pg.Nodes {
			if n.Name == name {
				if err := n.Start(ctx); err != nil {
					return err
				}
				l.say(fmt.Sprintf("%s started; it rejoins as a replica (pg_rewind if needed)", name))
				return nil
			}
		}
		return fmt.Errorf("no Patroni node %q", name)
	case "kill-redis-master":
		old, err := l.redis.KillMaster(ctx)
		if err != nil {
			return err
		}
		l.say(fmt.Sprintf("killed %s; waiting for the Sentinels…", old.Name))
		t0 := time.Now()
		wctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		m, err := l.redis.WaitFailover(wctx, old)
		if err != nil {
			return err
		}
		l.say(fmt.Sprintf("%s is the new Redis master after %.1fs. Bring %s back with: start-redis %s", m.Name, time.Since(t0).Seconds(), old.Name, old.Name))
	case "start-redis":
		name, err := arg()
		if err != nil {
			return err
		}
		for _, n := range l.redis.Nodes {
			if n.Name == name {
				if err := n.Start(ctx); err != nil {
					return err
				}
				l.say(name + " started")
				return nil
			}
		}
		return fmt.Errorf("no Redis node %q", name)
	case "kill-minio":
		if err := l.minio.Kill(); err != nil {
			return err
		}
		l.say("MinIO killed; start-minio brings it back with its data")
	case "start-minio":
		if err := l.minio.Restart(ctx); err != nil {
			return err
		}
		l.say("MinIO started")
	case "kill-app", "start-app", "rolling-restart", "load":
		if l.shop == nil && l.sso == nil {
			return fmt.Errorf("%s acts on the shop and the SSO; this lab runs stand-in apps (-apps)", cmd)
		}
		return l.appCommand(ctx, cmd, args)
	case "drain", "ready":
		name, err := arg()
		if err != nil {
			return err
		}
		for _, a := range l.apps {
			if a.name == name {
				a.ready.Store(cmd == "ready")
				l.say(fmt.Sprintf("%s /readyz now answers %s; watch HAProxy's stats page %s", name, map[bool]string{true: "200", false: "503"}[cmd == "ready"], l.lb.StatsURL))
				return nil
			}
		}
		return fmt.Errorf("no lab app %q", name)
	default:
		return fmt.Errorf("unknown command %q (try help)", cmd)
	}
	return nil
}

// labApp is a stand-in app instance behind HAProxy until the example apps
// join the lab: it serves /livez, /readyz (switchable) and a status page.
type labApp struct {
	name  string
	addr  string
	ready atomic.Bool
	srv   *http.Server
}

func startLabApp(name string, l *lab) (*labApp, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	a := &labApp{name: name, addr: ln.Addr().String()}
	a.ready.Store(true)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /livez", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if !a.ready.Load() {
			http.Error(w, "draining", http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintf(w, "hakit lab: served by %s\n\n", a.name)
		leader, err := l.pg.Leader(r.Context())
		if err != nil {
			fmt.Fprintf(w, "postgres leader: none (%v)\n", err)
		} else {
			fmt.Fprintf(w, "postgres leader: %s (%s)\n", leader.Name, leader.Addr())
		}
		if m, err := l.redis.Master(r.Context()); err != nil {
			fmt.Fprintf(w, "redis master:    unknown (%v)\n", err)
		} else {
			fmt.Fprintf(w, "redis master:    %s (%s)\n", m.Name, m.Addr())
		}
		fmt.Fprintf(w, "minio:           %s\n", l.minio.Endpoint)
	})
	a.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = a.srv.Serve(ln) }()
	return a, nil
}
