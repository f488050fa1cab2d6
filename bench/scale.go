package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"hakit.dev/dbrouter"
	"hakit.dev/hatest"
	"hakit.dev/jobs"
	"hakit.dev/session"
)

// scaleSuite measures the topologies past one machine: sessions and the
// outbox on a Redis Cluster across a master's loss, acknowledged writes
// across a failover behind PgBouncer and behind Patroni's HAProxy, app
// instances per PostgreSQL primary with and without PgBouncer, and Redis
// memory per session.
func scaleSuite(ctx context.Context, r *report) error {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	r.row("measurement", "result", "")

	lostUpdates, lostLogins, logins, err := clusterSessions(ctx, quiet)
	if err != nil {
		return fmt.Errorf("cluster sessions: %w", err)
	}
	r.row("Redis Cluster: distinct-key session writes lost, 20 sessions x 50 concurrent", fmt.Sprintf("%d of 1000", lostUpdates), "")
	r.row("Redis Cluster: confirmed logins lost, a master killed under logins", fmt.Sprintf("%d of %d", lostLogins, logins), "WAIT on the key's shard")

	olost, odups, otasks, err := clusterOutbox(ctx, quiet)
	if err != nil {
		return fmt.Errorf("cluster outbox: %w", err)
	}
	r.row("Redis Cluster: outbox tasks across the queue's master loss: lost / run twice", fmt.Sprintf("%d / %d of %d", olost, odups, otasks), "")

	pgb, err := failoverWrites(ctx, quiet, bouncerTopology)
	if err != nil {
		return fmt.Errorf("pgbouncer failover: %w", err)
	}
	r.row("PgBouncer per node: acknowledged writes lost / duplicated / errors, 6 writers, primary killed", pgb.String(), "")
	pat, err := failoverWrites(ctx, quiet, patroniTopology)
	if err != nil {
		return fmt.Errorf("patroni haproxy failover: %w", err)
	}
	r.row("Patroni behind HAProxy: acknowledged writes lost / duplicated / errors, 6 writers, leader killed", pat.String(), "")

	inst, err := instancesPerPrimary(ctx, quiet)
	if err != nil {
		return fmt.Errorf("instances per primary: %w", err)
	}
	r.row("connections one app instance holds on the primary at default pool size (busy)", fmt.Sprint(inst.perInstance), fmt.Sprintf("pgxpool MaxConns %d + the prober's", inst.poolSize))
	r.row("app instances before max_connections, direct", fmt.Sprint(inst.direct), fmt.Sprintf("max_connections %d, %d reserved", inst.maxConns, inst.reserved))
	r.row("app instances through PgBouncer (transaction pooling, pool 20)", fmt.Sprintf("%d (none refused; capped)", inst.bounced), fmt.Sprintf("server connections used: %d", inst.bouncerServerConns))

	perSession, err := redisBytesPerSession(ctx, quiet)
	if err != nil {
		return fmt.Errorf("redis memory: %w", err)
	}
	r.row("Redis memory per session (user id, cart of 3 items, flash)", fmt.Sprintf("%d bytes", perSession), "used_memory delta / 10,000 sessions")

	r.metric("cluster_session_lost_updates", lostUpdates)
	r.metric("cluster_session_lost_logins", lostLogins)
	r.metric("cluster_outbox_lost", olost)
	r.metric("cluster_outbox_duplicates", odups)
	r.metric("pgbouncer_lost_acked_writes", pgb.lost)
	r.metric("pgbouncer_duplicated_writes", pgb.dups)
	r.metric("patroni_haproxy_lost_acked_writes", pat.lost)
	r.metric("patroni_haproxy_duplicated_writes", pat.dups)
	r.metric("app_instances_per_primary", inst.direct)
	r.metric("app_instances_per_primary_pgbouncer", inst.bounced)
	r.metric("redis_bytes_per_session", perSession)
	return nil
}

// clusterSessions counts distinct-key writes lost on a Redis Cluster, and
// confirmed logins lost when a master is killed while logins go on.
func clusterSessions(ctx context.Context, log *slog.Logger) (lostWrites, lostLogins, logins int, err error) {
	shards, err := hatest.StartRedisShards(ctx, hatest.RedisShardsOptions{})
	if err != nil {
		return 0, 0, 0, err
	}
	defer shards.Close()
	rdb := shards.Client()
	defer rdb.Close()
	m, err := session.New(session.Config{Store: session.NewRedisStore(rdb, session.RedisOptions{RequireConfirm: true, WaitTimeout: 2 * time.Second, Logger: log}),
		Insecure: true, Logger: log})
	if err != nil {
		return 0, 0, 0, err
	}
	if lostWrites, err = lostUpdates(m, m.LoadAndSave, m.CookieName(), 20, 50); err != nil {
		return 0, 0, 0, err
	}
	h := sessionServer(m, m.LoadAndSave)
	var (
		mu     sync.Mutex
		tokens []string
		stop   atomic.Bool
		wg     sync.WaitGroup
	)
	for range 8 {
		wg.Go(func() {
			for !stop.Load() && ctx.Err() == nil {
				if code, token := call(h, m.CookieName(), "", "/login"); code == 200 && token != "" {
					mu.Lock()
					tokens = append(tokens, token)
					mu.Unlock()
				}
			}
		})
	}
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(tokens) }
	waitCount := func(n int) error {
		for count() < n {
			if err := sleepCtx(ctx, 20*time.Millisecond); err != nil {
				return err
			}
		}
		return nil
	}
	failErr := func() error {
		if err := waitCount(200); err != nil {
			return err
		}
		old, err := shards.KillMaster(ctx, "hakit:session:any")
		if err != nil {
			return err
		}
		wctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		if _, err := shards.WaitPromotion(wctx, old); err != nil {
			return err
		}
		return waitCount(count() + 200)
	}()
	stop.Store(true)
	wg.Wait()
	if failErr != nil {
		return 0, 0, 0, failErr
	}
	for _, token := range tokens {
		req := httptest.NewRequest(http.MethodGet, "/has?k=user", nil)
		req.AddCookie(&http.Cookie{Name: m.CookieName(), Value: token})
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != 200 {
			lostLogins++
		}
	}
	return lostWrites, lostLogins, len(tokens), nil
}

// clusterOutbox writes 1,000 outbox rows from 4 producers with a relay and
// a worker on a Redis Cluster, kills the master of the default queue's
// slot half way, and counts the rows whose task never ran or ran twice.
func clusterOutbox(ctx context.Context, log *slog.Logger) (lost, dups, total int, err error) {
	shards, err := hatest.StartRedisShards(ctx, hatest.RedisShardsOptions{})
	if err != nil {
		return 0, 0, 0, err
	}
	defer shards.Close()
	rdb := shards.Client()
	defer rdb.Close()
	e, cleanup, err := newOutboxEnv(ctx, log)
	if err != nil {
		return 0, 0, 0, err
	}
	defer cleanup()
	client, c, stopWorker, err := orderWorker(ctx, rdb, false, log)
	if err != nil {
		return 0, 0, 0, err
	}
	defer stopWorker()
	relay, err := jobs.NewRelay(jobs.RelayConfig{DB: e.db, Client: client, Outbox: e.outbox, Logger: log})
	if err != nil {
		return 0, 0, 0, err
	}
	if err := relay.Start(ctx); err != nil {
		return 0, 0, 0, err
	}
	defer relay.Stop(context.Background())

	const n = 1000
	var prodErr atomic.Value
	next, wait := writeOrders(ctx, e, n, func(_ int64, err error) bool {
		if err != nil {
			prodErr.CompareAndSwap(nil, err)
			return false
		}
		return true
	})
	for next.Load() < n/2 {
		if err := sleepCtx(ctx, 5*time.Millisecond); err != nil {
			return 0, 0, 0, err
		}
	}
	old, err := shards.KillMaster(ctx, "asynq:{default}")
	if err != nil {
		return 0, 0, 0, err
	}
	wait()
	if err, _ := prodErr.Load().(error); err != nil {
		return 0, 0, 0, err
	}
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	_, err = shards.WaitPromotion(wctx, old)
	cancel()
	if err != nil {
		return 0, 0, 0, err
	}
	if err := old.Start(ctx); err != nil {
		return 0, 0, 0, err
	}
	deadline := time.Now().Add(2 * time.Minute)
	for c.count() < n && time.Now().Before(deadline) {
		if err := sleepCtx(ctx, 50*time.Millisecond); err != nil {
			return 0, 0, 0, err
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for id := int64(1); id <= n; id++ {
		switch c.runs[id] {
		case 0:
			lost++
		case 1:
		default:
			dups++
		}
	}
	return lost, dups, n, nil
}

// writeOutcome counts what writers saw across a failover.
type writeOutcome struct {
	acked, lost, dups, errs int
	firstErr                error
}

func (w writeOutcome) String() string {
	s := fmt.Sprintf("%d / %d / %d of %d", w.lost, w.dups, w.errs, w.acked)
	if w.firstErr != nil {
		s += " (first error: " + strings.SplitN(w.firstErr.Error(), "\n", 2)[0] + ")"
	}
	return s
}

// topology starts a database topology and returns the router's node DSNs,
// a function that kills the primary and waits for the promotion, a DSN
// of the primary after it (for counting), and a cleanup.
type topology func(ctx context.Context) (nodes []string, fail func() error, after func() string, cleanup func(), err error)

// bouncerTopology: a synchronous primary and replica, each behind its own
// PgBouncer in transaction pooling mode; the failover kills the primary
// and promotes the replica by hand.
func bouncerTopology(ctx context.Context) ([]string, func() error, func() string, func(), error) {
	pg, err := hatest.StartPostgres(ctx, hatest.PostgresOptions{Replicas: 1, Synchronous: true})
	if err != nil {
		return nil, nil, nil, nil, err
	}
	var bs []*hatest.PgBouncer
	cleanup := func() {
		for _, b := range bs {
			b.Close()
		}
		pg.Close()
	}
	var nodes []string
	for _, n := range pg.Nodes {
		b, err := hatest.StartPgBouncer(ctx, hatest.PgBouncerOptions{Server: n.Addr()})
		if err != nil {
			cleanup()
			return nil, nil, nil, nil, err
		}
		bs = append(bs, b)
		nodes = append(nodes, b.DSN("postgres")+"&default_query_exec_mode=exec")
	}
	fail := func() error {
		if err := pg.Nodes[0].Kill(); err != nil {
			return err
		}
		// The promoted node waits for a synchronous standby it no longer
		// has: drop the requirement, as an HA manager does.
		if err := pg.Nodes[1].Promote(ctx); err != nil {
			return err
		}
		return pg.Nodes[1].SetSetting(ctx, "synchronous_standby_names", "")
	}
	return nodes, fail, func() string { return pg.Nodes[1].DSN() }, cleanup, nil
}

// patroniTopology: two Patroni nodes in synchronous mode behind HAProxy's
// write and read ports; the failover kills the leader's machine.
func patroniTopology(ctx context.Context) ([]string, func() error, func() string, func(), error) {
	pc, err := hatest.StartPatroni(ctx, hatest.PatroniOptions{Synchronous: true})
	if err != nil {
		return nil, nil, nil, nil, err
	}
	px, err := hatest.StartPatroniHAProxy(ctx, pc, hatest.PatroniHAProxyOptions{})
	if err != nil {
		pc.Close()
		return nil, nil, nil, nil, err
	}
	cleanup := func() { px.Close(); pc.Close() }
	leader, err := pc.Leader(ctx)
	if err != nil {
		cleanup()
		return nil, nil, nil, nil, err
	}
	for _, n := range pc.Nodes {
		if n != leader {
			wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			err := px.WaitUp(wctx, "replicas", n.Name)
			cancel()
			if err != nil {
				cleanup()
				return nil, nil, nil, nil, err
			}
		}
	}
	var next *hatest.PatroniNode
	fail := func() error {
		killed, err := pc.KillLeader(ctx)
		if err != nil {
			return err
		}
		next, err = pc.WaitLeader(ctx, killed)
		return err
	}
	return []string{px.WriteDSN(), px.ReadDSN()}, fail, func() string { return next.DSN() }, cleanup, nil
}

// failoverWrites runs 6 writers through a router on top's nodes, fails
// the primary over once 300 writes were acknowledged, and counts, once
// 300 more were, the acknowledged writes missing and the rows written
// twice.
func failoverWrites(ctx context.Context, log *slog.Logger, top topology) (writeOutcome, error) {
	nodes, fail, after, cleanup, err := top(ctx)
	if err != nil {
		return writeOutcome{}, err
	}
	defer cleanup()
	r, err := dbrouter.New(ctx, dbrouter.Config{Nodes: nodes, Logger: log})
	if err != nil {
		return writeOutcome{}, err
	}
	defer r.Close()
	if _, err := r.Exec(ctx, "CREATE TABLE w (writer int, seq int)"); err != nil {
		return writeOutcome{}, err
	}
	var (
		mu    sync.Mutex
		acked [][2]int
		out   writeOutcome
		stop  atomic.Bool
		wg    sync.WaitGroup
	)
	for g := range 6 {
		wg.Go(func() {
			for seq := 0; !stop.Load() && ctx.Err() == nil; seq++ {
				err := r.Write(ctx, func(tx pgx.Tx) error {
					_, err := tx.Exec(ctx, "INSERT INTO w VALUES ($1, $2)", g, seq)
					return err
				})
				mu.Lock()
				if err == nil {
					acked = append(acked, [2]int{g, seq})
				} else {
					out.errs++
					if out.firstErr == nil {
						out.firstErr = err
					}
				}
				mu.Unlock()
			}
		})
	}
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(acked) }
	waitAcked := func(n int) error {
		deadline := time.Now().Add(2 * time.Minute)
		for count() < n {
			if time.Now().After(deadline) {
				return fmt.Errorf("%d writes acknowledged, waited for %d", count(), n)
			}
			if err := sleepCtx(ctx, 20*time.Millisecond); err != nil {
				return err
			}
		}
		return nil
	}
	runErr := waitAcked(300)
	if runErr == nil {
		runErr = fail()
	}
	if runErr == nil {
		runErr = waitAcked(count() + 300)
	}
	stop.Store(true)
	wg.Wait()
	if runErr != nil {
		return writeOutcome{}, runErr
	}
	conn, err := pgx.Connect(ctx, after())
	if err != nil {
		return writeOutcome{}, err
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, "SELECT writer, seq, count(*) FROM w GROUP BY writer, seq")
	if err != nil {
		return writeOutcome{}, err
	}
	have := map[[2]int]int{}
	for rows.Next() {
		var w, s, n int
		if err := rows.Scan(&w, &s, &n); err != nil {
			return writeOutcome{}, err
		}
		have[[2]int{w, s}] = n
		if n > 1 {
			out.dups++
		}
	}
	if err := rows.Err(); err != nil {
		return writeOutcome{}, err
	}
	for _, a := range acked {
		if have[a] == 0 {
			out.lost++
		}
	}
	out.acked = len(acked)
	return out, nil
}

// instances is what instancesPerPrimary found.
type instances struct {
	poolSize, perInstance int
	maxConns, reserved    int
	direct, bounced       int
	bouncerServerConns    int
}

// instancesPerPrimary starts app instances (a router each, default pool
// size, every pooled connection in use) against one primary until it
// refuses connections, directly and then through PgBouncer (up to
// bouncedCap instances).
func instancesPerPrimary(ctx context.Context, log *slog.Logger) (instances, error) {
	const bouncedCap = 150
	pg, err := hatest.StartPostgres(ctx, hatest.PostgresOptions{})
	if err != nil {
		return instances{}, err
	}
	defer pg.Close()
	b, err := hatest.StartPgBouncer(ctx, hatest.PgBouncerOptions{Server: pg.Nodes[0].Addr(), MaxClientConn: 5000})
	if err != nil {
		return instances{}, err
	}
	defer b.Close()
	var res instances
	conn, err := pgx.Connect(ctx, pg.Nodes[0].DSN())
	if err != nil {
		return res, err
	}
	err = conn.QueryRow(ctx, "SELECT current_setting('max_connections')::int, current_setting('superuser_reserved_connections')::int").Scan(&res.maxConns, &res.reserved)
	if err != nil {
		conn.Close(ctx)
		return res, err
	}
	conn.Close(ctx)
	cfg, err := pgxpool.ParseConfig(pg.Nodes[0].DSN())
	if err != nil {
		return res, err
	}
	res.poolSize = int(cfg.MaxConns)

	// start makes one instance on dsn with every pooled connection held;
	// the returned release frees them.
	start := func(dsn string) (release func(), err error) {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		r, err := dbrouter.New(cctx, dbrouter.Config{Nodes: []string{dsn}, Logger: log, FailoverTimeout: time.Second, ConnectTimeout: 2 * time.Second})
		if err != nil {
			return nil, err
		}
		p, err := r.Primary()
		if err != nil {
			r.Close()
			return nil, err
		}
		var held []*pgxpool.Conn
		release = func() {
			for _, c := range held {
				c.Release()
			}
			r.Close()
		}
		for range res.poolSize {
			c, err := p.Acquire(cctx)
			if err == nil {
				err = c.QueryRow(cctx, "SELECT 1").Scan(new(int))
			}
			if c != nil {
				held = append(held, c)
			}
			if err != nil {
				release()
				return nil, err
			}
		}
		return release, nil
	}
	countUntilRefused := func(dsn string, limit int) (int, error) {
		var releases []func()
		defer func() {
			for _, f := range releases {
				f()
			}
		}()
		direct := dsn == pg.Nodes[0].DSN()
		for len(releases) < limit {
			rel, err := start(dsn)
			if err != nil {
				if strings.Contains(err.Error(), "53300") || strings.Contains(err.Error(), "too many") || errors.Is(err, context.DeadlineExceeded) {
					if direct && len(releases) > 0 {
						// What the instances hold, each, once the server is full.
						// (The superuser's reserved slots let this one in.)
						if c, err := pgx.Connect(ctx, pg.Nodes[0].DSN()); err == nil {
							var n int
							if c.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()").Scan(&n) == nil {
								res.perInstance = n / len(releases)
							}
							c.Close(ctx)
						}
					}
					return len(releases), nil
				}
				return len(releases), err
			}
			releases = append(releases, rel)
			if dsn != pg.Nodes[0].DSN() && len(releases) == limit {
				n, err := b.ServerConns(ctx)
				if err != nil {
					return 0, err
				}
				res.bouncerServerConns = n
			}
		}
		return len(releases), nil
	}
	if res.direct, err = countUntilRefused(pg.Nodes[0].DSN(), 1000); err != nil {
		return res, err
	}
	if res.bounced, err = countUntilRefused(b.DSN("postgres")+"&default_query_exec_mode=exec", bouncedCap); err != nil {
		return res, err
	}
	return res, nil
}

// redisBytesPerSession stores 10,000 typical sessions (user id, a cart of
// 3 items, a flash) and returns the growth of Redis's used_memory per
// session.
func redisBytesPerSession(ctx context.Context, log *slog.Logger) (int, error) {
	rd, err := hatest.StartRedis(ctx, hatest.RedisOptions{})
	if err != nil {
		return 0, err
	}
	defer rd.Close()
	rdb := redis.NewClient(&redis.Options{Addr: rd.Addr(), PoolSize: 16})
	defer rdb.Close()
	used := func() (int, error) {
		info, err := rdb.Info(ctx, "memory").Result()
		if err != nil {
			return 0, err
		}
		for _, line := range strings.Split(info, "\n") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), "used_memory:"); ok {
				return strconv.Atoi(v)
			}
		}
		return 0, errors.New("no used_memory in INFO memory")
	}
	m, err := session.New(session.Config{Store: session.NewRedisStore(rdb, session.RedisOptions{WaitReplicas: -1, Logger: log}),
		Insecure: true, Logger: log})
	if err != nil {
		return 0, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		m.Put(r.Context(), "user_id", "u-1234567890")
		m.Put(r.Context(), "cart", "sku-0001:2,sku-0042:1,sku-0777:3")
		m.Flash(r.Context(), "info", "Added to your cart.")
	})
	h := m.LoadAndSave(mux)
	before, err := used()
	if err != nil {
		return 0, err
	}
	const n = 10000
	var wg sync.WaitGroup
	var next atomic.Int64
	for range 8 {
		wg.Go(func() {
			for next.Add(1) <= n {
				call(h, m.CookieName(), "", "/")
			}
		})
	}
	wg.Wait()
	keys, err := rdb.DBSize(ctx).Result()
	if err != nil {
		return 0, err
	}
	if keys < n {
		return 0, fmt.Errorf("%d sessions stored, want %d", keys, n)
	}
	after, err := used()
	if err != nil {
		return 0, err
	}
	return (after - before) / n, nil
}

// sleepCtx waits d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
