package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"hakit.dev/dbrouter"
	"hakit.dev/hatest"
)

// dbrouterSuite measures the router against its baselines: raw pgxpool
// for read overhead, a pgx multi-host DSN with target_session_attrs for
// failover, and read-your-writes across two routers.
func dbrouterSuite(ctx context.Context, r *report) error {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	r.row("measurement", "dbrouter", "baseline", "")

	overhead, routerQPS, rawQPS, err := readOverhead(ctx, quiet)
	if err != nil {
		return fmt.Errorf("read overhead: %w", err)
	}
	r.row("point select on a replica, 8 clients (queries/s)", fmt.Sprintf("%.0f", routerQPS), fmt.Sprintf("%.0f", rawQPS), "raw pgxpool")

	wo, err := writeOverhead(ctx, quiet)
	if err != nil {
		return fmt.Errorf("write overhead: %w", err)
	}
	r.row("one-row insert, 4 clients (µs per write)", us(wo.router), us(wo.bare), "bare pgxpool transaction")
	r.row("  the same with read-your-writes tracking (µs)", us(wo.routerRYW), us(wo.bare), "")
	r.row("  CPU per write, client and server (µs)", us(wo.routerCPU), us(wo.bareCPU), fmt.Sprintf("ratio %.3f", wo.cpuRatio))
	r.row("  round trips per write", fmt.Sprintf("%.1f", wo.routerTrips), fmt.Sprintf("%.1f", wo.bareTrips), "")

	fo, err := failover(ctx, quiet, true)
	if err != nil {
		return fmt.Errorf("failover (dbrouter): %w", err)
	}
	base, err := failover(ctx, quiet, false)
	if err != nil {
		return fmt.Errorf("failover (pgx multi-host): %w", err)
	}
	r.row("failover: first acked write after promotion (ms)", ms(fo.gap), ms(base.gap), "pgx multi-host DSN, retry every 10ms")
	r.row("failover: errors handed to the writers", fmt.Sprint(fo.callerErrors), fmt.Sprint(base.callerErrors), "")
	r.row("failover: acknowledged writes", fmt.Sprint(fo.acked), fmt.Sprint(base.acked), "")
	r.row("failover: acknowledged writes lost / written twice", fmt.Sprintf("%d / %d", fo.lost, fo.dup), fmt.Sprintf("%d / %d", base.lost, base.dup), "")

	ryw, err := readYourWrites(ctx, quiet)
	if err != nil {
		return fmt.Errorf("read-your-writes: %w", err)
	}
	r.row("read-your-writes pairs across two routers, replica 20ms behind", fmt.Sprint(ryw.pairs), "", "")
	r.row("  reads that missed their write, with the token", fmt.Sprint(ryw.violations), fmt.Sprint(ryw.violationsNoToken), "without the token (sample)")
	r.row("  reads served by the replica", fmt.Sprintf("%.0f%%", 100*ryw.replicaShare), "", "")

	r.metric("dbrouter_read_overhead", fmt.Sprintf("%.3f", overhead))
	r.metric("dbrouter_write_overhead", fmt.Sprintf("%.3f", wo.ratio))
	r.metric("dbrouter_write_overhead_ryw", fmt.Sprintf("%.3f", wo.ratioRYW))
	r.metric("dbrouter_write_cpu_ratio", fmt.Sprintf("%.3f", wo.cpuRatio))
	r.metric("dbrouter_write_cpu_ratio_ryw", fmt.Sprintf("%.3f", wo.cpuRatioRYW))
	r.metric("dbrouter_failover_write_gap_ms", ms(fo.gap))
	r.metric("pgx_multihost_failover_write_gap_ms", ms(base.gap))
	r.metric("dbrouter_failover_caller_errors", fo.callerErrors)
	r.metric("pgx_multihost_failover_caller_errors", base.callerErrors)
	r.metric("dbrouter_lost_acked_writes", fo.lost)
	r.metric("dbrouter_duplicate_writes", fo.dup)
	r.metric("pgx_multihost_lost_acked_writes", base.lost)
	r.metric("pgx_multihost_duplicate_writes", base.dup)
	r.metric("dbrouter_ryw_violations", ryw.violations)
	r.metric("dbrouter_ryw_violations_without_token", ryw.violationsNoToken)
	return nil
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f", float64(d)/float64(time.Millisecond)) }

func us(d time.Duration) string { return fmt.Sprintf("%.0f", float64(d)/float64(time.Microsecond)) }

type writeOverheadResult struct {
	ratio, ratioRYW         float64 // median of the rounds' latency ratios
	cpuRatio, cpuRatioRYW   float64 // the same for CPU time per write, client and server
	router, routerRYW, bare time.Duration
	routerCPU, bareCPU      time.Duration
	routerTrips, bareTrips  float64 // client writes to the socket per transaction
}

// writeOverhead compares a one-row insert through Write with the same
// insert in a bare pgxpool transaction (pgx.BeginFunc) on the same
// primary: mean latency at 4 clients each, and CPU time per write (this
// process and the PostgreSQL server's processes), in 21 rounds of three
// ways (bare, Write, Write with a read-your-writes context) whose order
// rotates; the ratios are the medians of the rounds'.
func writeOverhead(ctx context.Context, log *slog.Logger) (writeOverheadResult, error) {
	var res writeOverheadResult
	c, err := hatest.StartPostgres(ctx, hatest.PostgresOptions{})
	if err != nil {
		return res, err
	}
	defer c.Close()
	const clients = 4
	var routerWrites, bareWrites atomic.Int64
	r, err := dbrouter.New(ctx, dbrouter.Config{Nodes: c.DSNs(), Logger: log,
		ConfigurePool: func(_ string, pc *pgxpool.Config) {
			pc.MaxConns = clients
			countWrites(pc, &routerWrites)
		}})
	if err != nil {
		return res, err
	}
	defer r.Close()
	if _, err := r.Exec(ctx, "CREATE TABLE w (id bigserial PRIMARY KEY, v text NOT NULL)"); err != nil {
		return res, err
	}
	pc, err := pgxpool.ParseConfig(c.Nodes[0].DSN())
	if err != nil {
		return res, err
	}
	pc.MaxConns = clients
	countWrites(pc, &bareWrites)
	bare, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return res, err
	}
	defer bare.Close()

	const q = "INSERT INTO w (v) VALUES ($1)"
	viaBare := func(ctx context.Context) error {
		return pgx.BeginFunc(ctx, bare, func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, q, "x")
			return err
		})
	}
	viaRouter := func(ctx context.Context) error {
		return r.Write(ctx, func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, q, "x")
			return err
		})
	}
	viaRouterRYW := func(ctx context.Context) error {
		return viaRouter(dbrouter.WithMinLSN(ctx, 0))
	}
	ways := []func(context.Context) error{viaBare, viaRouter, viaRouterRYW}
	for _, f := range ways {
		if _, _, err := latency(ctx, f, clients, 300*time.Millisecond); err != nil {
			return res, err
		}
	}
	// Round trips: the client's writes to the socket per transaction,
	// one client at a time.
	routerWrites.Store(0)
	bareWrites.Store(0)
	const probe = 200
	for range probe {
		if err := errors.Join(viaBare(ctx), viaRouter(ctx)); err != nil {
			return res, err
		}
	}
	res.routerTrips = float64(routerWrites.Load()) / probe
	res.bareTrips = float64(bareWrites.Load()) / probe

	pids := c.Nodes[0].Pids()
	var lat, cpu [3][]float64
	var rr, rrRYW, rc, rcRYW []float64
	for i := range 21 {
		var got, used [3]float64
		for j := range 3 {
			k := (i + j) % 3 // rotate the order
			c0, s0 := processCPU(), processesCPU(pids)
			d, n, err := latency(ctx, ways[k], clients, 500*time.Millisecond)
			if err != nil {
				return res, err
			}
			c1, s1 := processCPU(), processesCPU(pids)
			got[k] = float64(d)
			used[k] = float64(c1-c0+s1-s0) / float64(n)
			lat[k] = append(lat[k], got[k])
			cpu[k] = append(cpu[k], used[k])
		}
		rr, rrRYW = append(rr, got[1]/got[0]), append(rrRYW, got[2]/got[0])
		rc, rcRYW = append(rc, used[1]/used[0]), append(rcRYW, used[2]/used[0])
	}
	res.ratio, res.ratioRYW = median(rr), median(rrRYW)
	res.cpuRatio, res.cpuRatioRYW = median(rc), median(rcRYW)
	res.bare = time.Duration(median(lat[0]))
	res.router = time.Duration(median(lat[1]))
	res.routerRYW = time.Duration(median(lat[2]))
	res.bareCPU = time.Duration(median(cpu[0]))
	res.routerCPU = time.Duration(median(cpu[1]))
	return res, nil
}

// latency runs f from clients goroutines for d and returns the mean time
// per call and the number of calls.
func latency(ctx context.Context, f func(context.Context) error, clients int, d time.Duration) (time.Duration, int64, error) {
	var n, total atomic.Int64
	var firstErr atomic.Value
	stop := time.Now().Add(d)
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			for time.Now().Before(stop) {
				t0 := time.Now()
				if err := f(ctx); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				total.Add(int64(time.Since(t0)))
				n.Add(1)
			}
		})
	}
	wg.Wait()
	if err, _ := firstErr.Load().(error); err != nil {
		return 0, 0, err
	}
	return time.Duration(total.Load() / max(n.Load(), 1)), max(n.Load(), 1), nil
}

// processesCPU returns the CPU time the processes pids have used (those
// still running), from /proc.
func processesCPU(pids []int) time.Duration {
	var total time.Duration
	for _, p := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
		if err != nil {
			continue
		}
		// Fields after the command name (which may hold spaces): state is
		// the first, utime and stime the 12th and 13th, in clock ticks
		// (100 per second on Linux).
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) < 13 {
			continue
		}
		u, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		total += time.Duration(u+st) * 10 * time.Millisecond
	}
	return total
}

// countingConn counts the writes to a connection: with a protocol whose
// client writes once per request, its round trips.
type countingConn struct {
	net.Conn
	n *atomic.Int64
}

func (c countingConn) Write(b []byte) (int, error) {
	c.n.Add(1)
	return c.Conn.Write(b)
}

// countWrites makes pc's connections count their writes in n.
func countWrites(pc *pgxpool.Config, n *atomic.Int64) {
	var d net.Dialer
	pc.ConnConfig.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return countingConn{Conn: c, n: n}, nil
	}
}

// readOverhead compares Read of a point select with the same query on a
// raw pgxpool.Pool on the same replica, 8 clients each, in alternating
// rounds; it returns router time per query over raw time per query.
func readOverhead(ctx context.Context, log *slog.Logger) (ratio, routerQPS, rawQPS float64, err error) {
	c, err := hatest.StartPostgres(ctx, hatest.PostgresOptions{Replicas: 1})
	if err != nil {
		return 0, 0, 0, err
	}
	defer c.Close()
	replica := c.Nodes[1]
	const poolSize = 8
	r, err := dbrouter.New(ctx, dbrouter.Config{Nodes: c.DSNs(), Logger: log,
		ConfigurePool: func(_ string, pc *pgxpool.Config) { pc.MaxConns = poolSize }})
	if err != nil {
		return 0, 0, 0, err
	}
	defer r.Close()
	if _, err := r.Exec(ctx, "CREATE TABLE kv (k int PRIMARY KEY, v text); INSERT INTO kv SELECT g, md5(g::text) FROM generate_series(1, 1000) g"); err != nil {
		return 0, 0, 0, err
	}
	if err := c.WaitReplicated(ctx); err != nil {
		return 0, 0, 0, err
	}
	pc, err := pgxpool.ParseConfig(replica.DSN())
	if err != nil {
		return 0, 0, 0, err
	}
	pc.MaxConns = poolSize
	raw, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return 0, 0, 0, err
	}
	defer raw.Close()

	const q = "SELECT v FROM kv WHERE k = $1"
	viaRaw := func(ctx context.Context, k int) error {
		var v string
		return raw.QueryRow(ctx, q, k).Scan(&v)
	}
	viaRouter := func(ctx context.Context, k int) error {
		var v string
		return r.Read(ctx, func(qr dbrouter.Querier) error { return qr.QueryRow(ctx, q, k).Scan(&v) })
	}
	// Warm both pools, then alternate rounds so drift hits both alike.
	for _, f := range []func(context.Context, int) error{viaRaw, viaRouter} {
		if _, err := throughput(ctx, f, 300*time.Millisecond); err != nil {
			return 0, 0, 0, err
		}
	}
	// Paired rounds, the order swapped every round; the ratio is the
	// median of the rounds' ratios.
	var rawR, routerR, ratios []float64
	for i := range 9 {
		var a, b float64
		var errA, errB error
		if i%2 == 0 {
			a, errA = throughput(ctx, viaRaw, time.Second)
			b, errB = throughput(ctx, viaRouter, time.Second)
		} else {
			b, errB = throughput(ctx, viaRouter, time.Second)
			a, errA = throughput(ctx, viaRaw, time.Second)
		}
		if err := errors.Join(errA, errB); err != nil {
			return 0, 0, 0, err
		}
		rawR, routerR, ratios = append(rawR, a), append(routerR, b), append(ratios, a/b)
	}
	return median(ratios), median(routerR), median(rawR), nil
}

// throughput runs f from 8 goroutines for d and returns calls per second.
func throughput(ctx context.Context, f func(context.Context, int) error, d time.Duration) (float64, error) {
	const clients = 8
	var n atomic.Int64
	var firstErr atomic.Value
	stop := time.Now().Add(d)
	var wg sync.WaitGroup
	start := time.Now()
	for range clients {
		wg.Go(func() {
			for time.Now().Before(stop) {
				if err := f(ctx, 1+rand.IntN(1000)); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				n.Add(1)
			}
		})
	}
	wg.Wait()
	if err, _ := firstErr.Load().(error); err != nil {
		return 0, err
	}
	return float64(n.Load()) / time.Since(start).Seconds(), nil
}

type failoverResult struct {
	gap                      time.Duration
	acked, lost, dup         int
	callerErrors             int
	promotedAt, firstAckedAt time.Time
}

// failover kills the primary of a synchronously replicated pair under 4
// continuous writers, promotes the replica, and measures the time from the
// end of the promotion to the first write acknowledged after it, and what
// the writers lost. With useRouter false the writers use a pgx pool on a
// multi-host DSN with target_session_attrs=read-write and retry every
// 10ms, as a careful caller without the router would.
func failover(ctx context.Context, log *slog.Logger, useRouter bool) (failoverResult, error) {
	var res failoverResult
	c, err := hatest.StartPostgres(ctx, hatest.PostgresOptions{Replicas: 1, Synchronous: true})
	if err != nil {
		return res, err
	}
	defer c.Close()
	old, replica := c.Nodes[0], c.Nodes[1]
	if err := old.Exec(ctx, "CREATE TABLE acked (writer int, seq int)"); err != nil {
		return res, err
	}
	if err := c.WaitReplicated(ctx); err != nil {
		return res, err
	}

	var insert func(ctx context.Context, w, seq int) error
	var retried atomic.Int64
	if useRouter {
		r, err := dbrouter.New(ctx, dbrouter.Config{Nodes: c.DSNs(), Logger: log})
		if err != nil {
			return res, err
		}
		defer r.Close()
		insert = func(ctx context.Context, w, seq int) error {
			_, err := r.Exec(ctx, "INSERT INTO acked VALUES ($1, $2)", w, seq)
			return err
		}
	} else {
		pc, err := pgxpool.ParseConfig(c.MultiHostDSN() + "&target_session_attrs=read-write&connect_timeout=2")
		if err != nil {
			return res, err
		}
		pool, err := pgxpool.NewWithConfig(ctx, pc)
		if err != nil {
			return res, err
		}
		defer pool.Close()
		insert = func(ctx context.Context, w, seq int) error {
			for {
				_, err := pool.Exec(ctx, "INSERT INTO acked VALUES ($1, $2)", w, seq)
				if err == nil || ctx.Err() != nil {
					return err
				}
				retried.Add(1) // an error the caller saw and retried
				time.Sleep(10 * time.Millisecond)
			}
		}
	}

	var (
		mu       sync.Mutex
		acked    = map[[2]int]bool{}
		ackTimes []time.Time
		errCount int
	)
	wctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var writes atomic.Int64
	for w := range 4 {
		wg.Go(func() {
			for seq := 0; wctx.Err() == nil; seq++ {
				err := insert(wctx, w, seq)
				now := time.Now()
				mu.Lock()
				if err == nil {
					acked[[2]int{w, seq}] = true
					ackTimes = append(ackTimes, now)
					writes.Add(1)
				} else if wctx.Err() == nil {
					errCount++
				}
				mu.Unlock()
			}
		})
	}
	waitUntil := func(cond func() bool) error {
		deadline := time.Now().Add(time.Minute)
		for !cond() {
			if time.Now().After(deadline) {
				return errors.New("writers made no progress")
			}
			time.Sleep(5 * time.Millisecond)
		}
		return nil
	}
	if err := waitUntil(func() bool { return writes.Load() > 300 }); err != nil {
		stop()
		wg.Wait()
		return res, err
	}
	if err := old.Kill(); err != nil {
		stop()
		wg.Wait()
		return res, err
	}
	// As an HA manager does for a lone new primary: stop waiting for a
	// synchronous standby, then promote. The promotion is over when the
	// node leaves recovery: watch for that closely on a connection of our
	// own (pg_promote's own wait polls only every 100ms).
	err = errors.Join(replica.SetSetting(ctx, "synchronous_standby_names", ""), replica.Exec(ctx, "SELECT pg_promote(false)"))
	if err == nil {
		res.promotedAt, err = promotionDone(ctx, replica.DSN())
	}
	if err == nil {
		before := writes.Load()
		err = waitUntil(func() bool { return writes.Load() > before+300 })
	}
	stop()
	wg.Wait()
	if err != nil {
		return res, err
	}
	for _, at := range ackTimes {
		if at.After(res.promotedAt) {
			res.firstAckedAt = at
			break
		}
	}
	res.gap = max(0, res.firstAckedAt.Sub(res.promotedAt))
	res.acked = len(acked)
	res.callerErrors = errCount + int(retried.Load())

	conn, err := pgx.Connect(ctx, replica.DSN())
	if err != nil {
		return res, err
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, "SELECT writer, seq, count(*) FROM acked GROUP BY 1, 2")
	if err != nil {
		return res, err
	}
	present := map[[2]int]int{}
	for rows.Next() {
		var w, s, n int
		if err := rows.Scan(&w, &s, &n); err != nil {
			return res, err
		}
		present[[2]int{w, s}] = n
		if n > 1 {
			res.dup++
		}
	}
	if err := rows.Err(); err != nil {
		return res, err
	}
	for k := range acked {
		if present[k] == 0 {
			res.lost++
		}
	}
	return res, nil
}

// promotionDone polls a promoting node until it is out of recovery and
// returns the time it first answered so.
func promotionDone(ctx context.Context, dsn string) (time.Time, error) {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return time.Time{}, err
	}
	defer conn.Close(ctx)
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		var inRecovery bool
		if err := conn.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&inRecovery); err != nil {
			return time.Time{}, err
		}
		if !inRecovery {
			return time.Now(), nil
		}
	}
	return time.Time{}, errors.New("the replica did not finish its promotion within a minute")
}

type rywResult struct {
	pairs, violations, violationsNoToken int
	replicaShare                         float64
}

// readYourWrites runs write-then-read pairs across two routers (two app
// instances) against a replica that applies WAL 20ms late: router A writes
// and hands over the token, router B reads with it.
func readYourWrites(ctx context.Context, log *slog.Logger) (rywResult, error) {
	var res rywResult
	c, err := hatest.StartPostgres(ctx, hatest.PostgresOptions{Replicas: 1})
	if err != nil {
		return res, err
	}
	defer c.Close()
	replica := c.Nodes[1]
	a, err := dbrouter.New(ctx, dbrouter.Config{Nodes: c.DSNs(), Logger: log})
	if err != nil {
		return res, err
	}
	defer a.Close()
	b, err := dbrouter.New(ctx, dbrouter.Config{Nodes: c.DSNs(), Logger: log})
	if err != nil {
		return res, err
	}
	defer b.Close()
	if _, err := a.Exec(ctx, "CREATE TABLE notes (id bigint PRIMARY KEY)"); err != nil {
		return res, err
	}
	if err := c.WaitReplicated(ctx); err != nil {
		return res, err
	}
	if err := replica.SetApplyDelay(ctx, 20*time.Millisecond); err != nil {
		return res, err
	}

	var next atomic.Int64
	pair := func(withToken bool) (missed bool, onReplica bool, err error) {
		id := next.Add(1)
		wctx := dbrouter.WithMinLSN(ctx, 0)
		if _, err := a.Exec(wctx, "INSERT INTO notes VALUES ($1)", id); err != nil {
			return false, false, err
		}
		rctx := ctx
		if withToken {
			lsn, err := dbrouter.ParseLSN(dbrouter.MinLSN(wctx).String())
			if err != nil {
				return false, false, err
			}
			rctx = dbrouter.WithMinLSN(ctx, lsn)
		}
		var n int
		var port int
		err = b.Read(rctx, func(q dbrouter.Querier) error {
			return q.QueryRow(rctx, "SELECT count(*), inet_server_port() FROM notes WHERE id = $1", id).Scan(&n, &port)
		})
		return n != 1, port == replica.Port, err
	}

	// A sample without the token shows what the token prevents.
	for range 500 {
		missed, _, err := pair(false)
		if err != nil {
			return res, err
		}
		if missed {
			res.violationsNoToken++
		}
	}
	const workers, each = 8, 1250
	var mu sync.Mutex
	var firstErr error
	onReplica := 0
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range each {
				missed, rep, err := pair(true)
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = err
				}
				res.pairs++
				if missed {
					res.violations++
				}
				if rep {
					onReplica++
				}
				mu.Unlock()
				if err != nil {
					return
				}
			}
		})
	}
	wg.Wait()
	res.replicaShare = float64(onReplica) / float64(max(1, res.pairs))
	return res, firstErr
}
