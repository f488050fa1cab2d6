package main

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing/fstest"
	"time"

	"github.com/jackc/pgx/v5"

	"hakit.dev/hakit"
	"hakit.dev/hatest"
)

// schemaSuite deploys a schema change — a column with a backfill, an index
// and a NOT NULL — as a rolling deploy of two instances v1 → v2 behind
// HAProxy on a table of 1 M rows, under a load of reads and writes from
// both releases: once the safe way (expand at start, contract after) and
// once naively (plain CREATE INDEX and SET NOT NULL at start).
func schemaSuite(ctx context.Context, r *report) error {
	var trace io.Writer
	if os.Getenv("BENCH_SCHEMA_TRACE") != "" {
		trace = os.Stderr
	}
	safe, err := runSchemaDeploy(ctx, schemaDeploy{Rows: 1_000_000, Trace: trace})
	if err != nil {
		return fmt.Errorf("safe deploy: %w", err)
	}
	naive, err := runSchemaDeploy(ctx, schemaDeploy{Rows: 1_000_000, Naive: true, Trace: trace})
	if err != nil {
		return fmt.Errorf("naive deploy: %w", err)
	}
	r.row("rolling deploy v1 → v2 with a schema change, 1 M rows, 2 instances", "safe (expand/contract)", "naive", "")
	r.row("  failed requests", fmt.Sprintf("%d of %d", safe.Failed, safe.Requests), fmt.Sprintf("%d of %d", naive.Failed, naive.Requests), "")
	r.row("  longest write (ms)", wholeMS(safe.MaxWrite), wholeMS(naive.MaxWrite), "")
	r.row("  longest read (ms)", wholeMS(safe.MaxRead), wholeMS(naive.MaxRead), "")
	r.row("  median write (ms)", wholeMS(safe.MedianWrite), wholeMS(naive.MedianWrite), "")
	r.row("  longest wait of a write for its table lock (ms)", wholeMS(safe.MaxLockWait), wholeMS(naive.MaxLockWait),
		fmt.Sprintf("as PostgreSQL logged them (≥ 50 ms): %d and %d waits", safe.LockWaits, naive.LockWaits))
	r.row("  migrations at start of the first v2 (ms)", wholeMS(safe.Migrate), wholeMS(naive.Migrate), "safe: + batched backfill and contract after the deploy")
	for i, res := range []schemaResult{safe, naive} {
		for _, p := range res.Phases {
			cells := []string{"  longest write, " + p.Name + " (ms)", "", "",
				fmt.Sprintf("phase took %s, %d writes, 99.9th percentile %s ms", p.Took.Round(time.Millisecond), p.Writes, wholeMS(p.P999))}
			cells[1+i] = wholeMS(p.MaxWrite)
			r.row(cells...)
		}
		if res.Failed > 0 {
			cells := []string{"  failed requests, e.g.", "", "", ""}
			cells[1+i] = fmt.Sprintf("%q", res.FailedSamples)
			r.row(cells...)
		}
	}
	r.metric("schema_rolling_deploy_failed_requests", safe.Failed)
	r.metric("schema_rolling_deploy_failed_requests_naive", naive.Failed)
	r.metric("schema_max_write_stall_ms", wholeMS(safe.MaxWrite))
	r.metric("schema_max_write_stall_ms_naive", wholeMS(naive.MaxWrite))
	// The machine's noise: the longest write with v1 alone, before the
	// change, and the raw stall beyond it (the raw number stays the one
	// above).
	// The stall the change's locks caused, whatever the machine's noise.
	r.metric("schema_max_writer_lock_wait_ms", wholeMS(safe.MaxLockWait))
	r.metric("schema_max_writer_lock_wait_ms_naive", wholeMS(naive.MaxLockWait))
	r.metric("schema_max_write_stall_ms_baseline", wholeMS(safe.Phases[0].MaxWrite))
	r.metric("schema_max_write_stall_beyond_baseline_ms", wholeMS(max(0, safe.MaxWrite-safe.Phases[0].MaxWrite)))
	r.metric("schema_max_write_stall_beyond_baseline_ms_naive", wholeMS(max(0, naive.MaxWrite-naive.Phases[0].MaxWrite)))
	return nil
}

// schemaBaseline is how long the load runs on v1 alone before the deploy,
// to measure the machine's own noise: the longest write without any
// schema change.
const schemaBaseline = 10 * time.Second

// wholeMS formats d in whole milliseconds.
func wholeMS(d time.Duration) string { return strconv.FormatInt(d.Milliseconds(), 10) }

// schemaDeploy configures runSchemaDeploy.
type schemaDeploy struct {
	Rows  int  // rows of the table before the deploy
	Naive bool // the naive migrations instead of expand/contract
	// BackfillBatch and BackfillPause are hakit.BackfillOptions'
	// BatchSize and Pause. Default to 2000 keys and a pause as long as
	// each batch took.
	BackfillBatch int64
	BackfillPause time.Duration
	// Log receives the apps' logs. Defaults to none.
	Log *slog.Logger
	// Trace, if set, receives where the slowest writes spent their time:
	// samples of pg_stat_activity and pg_locks, the bench process's
	// scheduling delays, and PostgreSQL's log of lock waits, slow
	// statements, autovacuum and checkpoints. The sampling is load of
	// its own: off for the numbers reported.
	Trace io.Writer
}

// schemaResult is what runSchemaDeploy measured.
type schemaResult struct {
	Requests, Failed     int
	FailedSamples        []string      // the first few failures
	MaxWrite, MaxRead    time.Duration // the longest write and read, as the load saw them
	MedianWrite, Migrate time.Duration // Migrate: the first v2 instance's start-up migrations
	// MaxLockWait is the longest a write waited for its lock on the table
	// (RowExclusiveLock), as PostgreSQL logged it: only waits of 50 ms or
	// more are logged, so 0 means none that long. LockWaits counts them.
	MaxLockWait time.Duration
	LockWaits   int
	// Phases are the longest write started in each phase of the run, in
	// order: v1 alone (the machine's noise), the rolling deploy with the
	// start-up migrations, the backfill, the contract step, v2 alone.
	Phases []schemaPhase
}

// schemaPhase is the longest write started in one phase of the run.
type schemaPhase struct {
	Name           string
	MaxWrite, P999 time.Duration // the longest write, the 99.9th percentile
	Writes         int
	Took           time.Duration
}

// The releases' migrations. v1 makes the table. v2 adds tag, filled for
// old rows by a backfill, indexed, and NOT NULL.
func schemaMigrations(rows int, v2, naive bool) fstest.MapFS {
	m := fstest.MapFS{
		"1_items.up.sql": {Data: fmt.Appendf(nil, `CREATE TABLE items (id bigserial PRIMARY KEY, n int NOT NULL);
INSERT INTO items (n) SELECT g FROM generate_series(1, %d) g;
`, rows)},
	}
	if !v2 {
		return m
	}
	// Expand: a nullable column, whose default covers the rows v1 still
	// inserts (v1 does not know the column).
	m["2_tag.up.sql"] = &fstest.MapFile{Data: []byte(`ALTER TABLE items ADD COLUMN tag text;
ALTER TABLE items ALTER COLUMN tag SET DEFAULT 'none';
`)}
	if naive {
		m["3_backfill.up.sql"] = &fstest.MapFile{Data: []byte(`UPDATE items SET tag = 't' || (n % 100) WHERE tag IS NULL;`)}
		m["4_tag_idx.up.sql"] = &fstest.MapFile{Data: []byte(`CREATE INDEX items_tag ON items (tag);`)}
		m["5_tag_not_null.up.sql"] = &fstest.MapFile{Data: []byte(`ALTER TABLE items ALTER COLUMN tag SET NOT NULL;`)}
		return m
	}
	m["3_tag_idx.up.sql"] = &fstest.MapFile{Data: []byte(`CREATE INDEX CONCURRENTLY items_tag ON items (tag);`)}
	m["4_tag_check.up.sql"] = &fstest.MapFile{Data: []byte(`ALTER TABLE items ADD CONSTRAINT items_tag_nn CHECK (tag IS NOT NULL) NOT VALID;`)}
	// Contract, once v1 is gone and the backfill done: VALIDATE scans
	// and lets writes through; SET NOT NULL then skips its scan. Two
	// files: a lock timeout of the second does not throw the scan away.
	m["contract/1_tag_validate.up.sql"] = &fstest.MapFile{Data: []byte(`ALTER TABLE items VALIDATE CONSTRAINT items_tag_nn;
`)}
	m["contract/2_tag_not_null.up.sql"] = &fstest.MapFile{Data: []byte(`ALTER TABLE items ALTER COLUMN tag SET NOT NULL;
ALTER TABLE items DROP CONSTRAINT items_tag_nn;
`)}
	return m
}

// schemaApp starts release v1 or v2 of the app on addr and returns it with
// a function that stops it (draining) and waits for Serve to return.
func schemaApp(ctx context.Context, addr string, dsns []string, rows int, v2, naive bool, log *slog.Logger) (*hakit.App, func() error, error) {
	app, err := hakit.New(ctx, hakit.Config{
		DatabaseURLs: dsns, Migrations: schemaMigrations(rows, v2, naive), Logger: log, NoSignals: true,
		DrainDelay: time.Second, ShutdownTimeout: 10 * time.Second,
	})
	if err != nil {
		return nil, nil, err
	}
	db := app.DB()
	app.Router().Post("/write", func(w http.ResponseWriter, r *http.Request) {
		var err error
		start := time.Now()
		n := start.Nanosecond()
		if v2 {
			_, err = db.Exec(r.Context(), `INSERT INTO items (n, tag) VALUES ($1, $2)`, n, "t"+strconv.Itoa(n%100))
		} else {
			_, err = db.Exec(r.Context(), `INSERT INTO items (n) VALUES ($1)`, n)
		}
		if err != nil {
			hakit.Error(w, r, err)
			return
		}
		// How long the database took, apart from HTTP, HAProxy and the
		// scheduling of both processes.
		w.Header().Set(dbTimeHeader, strconv.FormatInt(time.Since(start).Microseconds(), 10))
		w.WriteHeader(http.StatusNoContent)
	})
	app.Router().Get("/read", func(w http.ResponseWriter, r *http.Request) {
		id, _ := strconv.Atoi(r.URL.Query().Get("id"))
		var n int
		var err error
		if v2 {
			var tag string
			err = db.QueryRow(r.Context(), `SELECT n, coalesce(tag, '') FROM items WHERE id = $1`, id).Scan(&n, &tag)
		} else {
			err = db.QueryRow(r.Context(), `SELECT n FROM items WHERE id = $1`, id).Scan(&n)
		}
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			hakit.Error(w, r, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	var ln net.Listener
	// The port was just released by the instance this one replaces.
	for i := 0; ; i++ {
		if ln, err = net.Listen("tcp", addr); err == nil || i == 50 {
			break
		}
		select {
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	if err != nil {
		return nil, nil, err
	}
	actx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- app.Serve(actx, ln) }()
	stop := func() error {
		cancel()
		return <-done
	}
	return app, stop, nil
}

// waitReady waits until url answers 200, or fails when the app's Serve
// returns first (a start-up error).
func waitReady(ctx context.Context, url string, d time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready: %w", url, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// loadStats collects the load's results.
type loadStats struct {
	mu            sync.Mutex
	requests      int
	failed        int
	samples       []string
	writes, reads []time.Duration
	writeAt       []time.Time     // when each write started
	writeDB       []time.Duration // the database's part of each write, as the app measured it (0: unknown)
}

func (s *loadStats) add(write bool, at time.Time, d, db time.Duration, failure string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests++
	if failure != "" {
		s.failed++
		if len(s.samples) < 5 {
			s.samples = append(s.samples, failure)
		}
	}
	if write {
		s.writes = append(s.writes, d)
		s.writeAt = append(s.writeAt, at)
		s.writeDB = append(s.writeDB, db)
	} else {
		s.reads = append(s.reads, d)
	}
}

// runLoad sends writes and reads through url until ctx ends: writers and
// readers goroutines, each one request at a time, paced.
func runLoad(ctx context.Context, url string, rows, writers, readers int, s *loadStats) *sync.WaitGroup {
	// A kept-alive connection per client: the default transport keeps
	// 2 per host, so the others would open a connection per request.
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = writers + readers
	client := &http.Client{Timeout: 60 * time.Second, Transport: tr}
	var wg sync.WaitGroup
	var seq atomic.Int64
	began := time.Now()
	one := func(write bool) {
		for ctx.Err() == nil {
			var req *http.Request
			if write {
				req, _ = http.NewRequest(http.MethodPost, url+"/write", nil)
			} else {
				id := 1 + seq.Add(7919)%int64(rows)
				req, _ = http.NewRequest(http.MethodGet, url+"/read?id="+strconv.FormatInt(id, 10), nil)
			}
			start := time.Now()
			resp, err := client.Do(req)
			d := time.Since(start)
			failure := ""
			var db time.Duration
			switch {
			case err != nil:
				failure = err.Error()
			default:
				// The start of the body tells who answered: HAProxy
				// (no server), the app starting, or the app's error.
				body, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusNoContent {
					failure = fmt.Sprintf("%s %s at +%s: %s: %.120q", req.Method, req.URL.Path,
						start.Sub(began).Round(time.Millisecond), resp.Status, body)
				}
				if us, err := strconv.ParseInt(resp.Header.Get(dbTimeHeader), 10, 64); err == nil {
					db = time.Duration(us) * time.Microsecond
				}
			}
			s.add(write, start, d, db, failure)
			select {
			case <-ctx.Done():
			case <-time.After(20 * time.Millisecond): // pacing: a bounded load
			}
		}
	}
	var clients sync.WaitGroup
	for range writers {
		clients.Go(func() { one(true) })
	}
	for range readers {
		clients.Go(func() { one(false) })
	}
	wg.Go(func() {
		clients.Wait()
		tr.CloseIdleConnections()
	})
	return &wg
}

// runSchemaDeploy runs the rolling deploy on a PostgreSQL of its own.
func runSchemaDeploy(ctx context.Context, o schemaDeploy) (res schemaResult, err error) {
	log := o.Log
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	// A database server of 2 cores: an index build (CONCURRENTLY or
	// not) uses no parallel workers, which would take both cores from
	// the app's queries.
	// Every lock wait of 50 ms or more is logged (log_lock_waits after
	// deadlock_timeout, which is also when an autovacuum in the way of a
	// lock request is cancelled: 50 ms, the runner's first lock_timeout,
	// rather than 1 s).
	pgOpts := hatest.PostgresOptions{Settings: map[string]string{
		"max_parallel_maintenance_workers": "0", "log_lock_waits": "on", "deadlock_timeout": "'50ms'",
	}}
	if o.Trace != nil {
		maps.Copy(pgOpts.Settings, map[string]string{
			"log_min_duration_statement": "50", "log_autovacuum_min_duration": "0", "log_checkpoints": "on",
		})
	}
	pg, err := hatest.StartPostgres(ctx, pgOpts)
	if err != nil {
		return res, err
	}
	defer pg.Close()
	// Each instance's pool holds a connection for each of the load's 8
	// clients (HAProxy sends them all to one instance while the other
	// restarts), opened at start: a write waits neither for a pool
	// connection nor for a new backend.
	var dsns []string
	for _, dsn := range pg.DSNs() {
		dsns = append(dsns, dsn+"&pool_max_conns=10&pool_min_conns=8")
	}

	// Two slots, each on its own port: v1, then v2 in its place.
	var addrs []string
	for range 2 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return res, err
		}
		addrs = append(addrs, ln.Addr().String())
		ln.Close()
	}
	stops := make([]func() error, 2)
	defer func() {
		for _, stop := range stops {
			if stop != nil {
				_ = stop()
			}
		}
	}()
	for i, addr := range addrs {
		_, stop, err := schemaApp(ctx, addr, dsns, o.Rows, false, false, log)
		if err != nil {
			return res, err
		}
		stops[i] = stop
		if err := waitReady(ctx, "http://"+addr+"/readyz", 5*time.Minute); err != nil {
			return res, fmt.Errorf("v1: %w", err)
		}
	}
	lb, err := hatest.StartHAProxy(ctx, hatest.HAProxyOptions{
		Backends: []hatest.Backend{{Addr: addrs[0]}, {Addr: addrs[1]}},
		Inter:    200 * time.Millisecond, Fall: 2, Rise: 2,
		// A check may take 2 s on a loaded machine (timeout check is
		// inter otherwise: two slow answers of the one instance serving
		// while the other restarts left no server, 503s from HAProxy); a
		// draining instance answers 503 at once. A connection refused by
		// an instance that stopped goes to the other one.
		BackendLines: []string{"timeout check 2s"}, Redispatch: true,
	})
	if err != nil {
		return res, err
	}
	defer lb.Close()
	for _, b := range lb.Backends {
		if err := lb.WaitServerStatus(ctx, b.Name, "UP"); err != nil {
			return res, err
		}
	}

	stats := &loadStats{}
	lctx, stopLoad := context.WithCancel(ctx)
	tracer := &schemaTracer{}
	stopTrace := func() {}
	if o.Trace != nil {
		if stopTrace, err = tracer.start(lctx, pg.DSNs()[0]); err != nil {
			stopLoad()
			return res, err
		}
	}
	// 4 writers and 2 readers: a bounded load (about 150 writes a
	// second), light enough for a 2-core machine to serve with room.
	wg := runLoad(lctx, lb.URL, o.Rows, 4, 2, stats)
	loadStopped := false
	defer func() {
		if !loadStopped {
			stopLoad()
			wg.Wait()
		}
	}()
	type mark struct {
		name string
		at   time.Time
	}
	marks := []mark{{"v1 alone", time.Now()}}
	// Load on v1 alone first: the machine's noise, the baseline.
	if err := sleepCtx(ctx, schemaBaseline); err != nil {
		return res, err
	}
	marks = append(marks, mark{"rolling deploy, start-up migrations", time.Now()})

	// The rolling deploy: each slot drained (its DrainDelay covers
	// HAProxy's 2 checks at 200ms), then v2 started in its place.
	var first *hakit.App
	for i, addr := range addrs {
		if err := stops[i](); err != nil {
			return res, fmt.Errorf("stop v1 #%d: %w", i, err)
		}
		stops[i] = nil
		start := time.Now()
		app, stop, err := schemaApp(ctx, addr, dsns, o.Rows, true, o.Naive, log)
		if err != nil {
			return res, err
		}
		stops[i] = stop
		if err := waitReady(ctx, "http://"+addr+"/readyz", 5*time.Minute); err != nil {
			return res, fmt.Errorf("v2: %w", err)
		}
		if i == 0 {
			first = app
			res.Migrate = time.Since(start)
		}
		if err := lb.WaitServerStatus(ctx, lb.Backends[i].Name, "UP"); err != nil {
			return res, err
		}
	}

	if !o.Naive {
		marks = append(marks, mark{"backfill in batches", time.Now()})
		// Every instance runs v2: the backfill, paced batches of 2000
		// keys (each its own transaction), then the contract step.
		if o.BackfillBatch == 0 {
			o.BackfillBatch = 2000
		}
		// Up to the last row v1 inserted before the column existed.
		pool, err := first.DB().Primary()
		if err != nil {
			return res, err
		}
		var last int64
		if err := pool.QueryRow(ctx, `SELECT coalesce(max(id), 0) FROM items`).Scan(&last); err != nil {
			return res, err
		}
		if _, err := hakit.Backfill(ctx, first.DB(), `UPDATE items SET tag = 't' || (n % 100) WHERE id > $1 AND id <= $2 AND tag IS NULL`,
			0, last, hakit.BackfillOptions{BatchSize: o.BackfillBatch, Pause: o.BackfillPause, Log: log}); err != nil {
			return res, err
		}
		marks = append(marks, mark{"contract", time.Now()})
		if err := first.MigrateContract(ctx); err != nil {
			return res, err
		}
	}
	marks = append(marks, mark{"v2 alone", time.Now()})
	// Load on v2 alone last.
	if err := sleepCtx(ctx, 3*time.Second); err != nil {
		return res, err
	}
	marks = append(marks, mark{"", time.Now()})
	stopLoad()
	wg.Wait()
	stopTrace()
	loadStopped = true

	// The schema is as v2 wants it, either way.
	pool, err := first.DB().Primary()
	if err != nil {
		return res, err
	}
	var notNull, valid bool
	if err := pool.QueryRow(ctx, `SELECT a.attnotnull, i.indisvalid FROM pg_attribute a, pg_index i
		WHERE a.attrelid = 'items'::regclass AND a.attname = 'tag' AND i.indexrelid = 'items_tag'::regclass`).Scan(&notNull, &valid); err != nil {
		return res, fmt.Errorf("check the schema: %w", err)
	}
	if !notNull || !valid {
		return res, fmt.Errorf("after the deploy: tag NOT NULL %v, index valid %v", notNull, valid)
	}
	var items uint32
	if err := pool.QueryRow(ctx, `SELECT 'items'::regclass::oid`).Scan(&items); err != nil {
		return res, err
	}
	if res.MaxLockWait, res.LockWaits, err = writerLockWaits(pg.Nodes[0].LogPath(), items); err != nil {
		return res, err
	}

	stats.mu.Lock()
	defer stats.mu.Unlock()
	res.Requests, res.Failed, res.FailedSamples = stats.requests, stats.failed, stats.samples
	res.MaxWrite, res.MedianWrite = maxDuration(stats.writes), medianDuration(stats.writes)
	res.MaxRead = maxDuration(stats.reads)
	for i := 0; i+1 < len(marks); i++ {
		p := schemaPhase{Name: marks[i].name, Took: marks[i+1].at.Sub(marks[i].at)}
		var ds []time.Duration
		for j, at := range stats.writeAt {
			if !at.Before(marks[i].at) && at.Before(marks[i+1].at) {
				ds = append(ds, stats.writes[j])
			}
		}
		if len(ds) > 0 {
			slices.Sort(ds)
			p.MaxWrite, p.P999, p.Writes = ds[len(ds)-1], ds[len(ds)*999/1000], len(ds)
		}
		res.Phases = append(res.Phases, p)
	}
	if o.Trace != nil {
		phaseOf := func(at time.Time) string {
			for i := len(marks) - 1; i >= 0; i-- {
				if !at.Before(marks[i].at) {
					return marks[i].name
				}
			}
			return ""
		}
		title := "safe"
		if o.Naive {
			title = "naive"
		}
		tracer.report(o.Trace, title, stats, phaseOf, 12)
		if f, err := os.Open(pg.Nodes[0].LogPath()); err == nil {
			fmt.Fprintf(o.Trace, "-- PostgreSQL's log (%s): lock waits, slow statements, autovacuum, checkpoints\n", title)
			sc := bufio.NewScanner(f)
			for sc.Scan() {
				if l := sc.Text(); strings.Contains(l, "still waiting") || strings.Contains(l, "acquired") ||
					strings.Contains(l, "duration:") || strings.Contains(l, "automatic") || strings.Contains(l, "checkpoint") {
					fmt.Fprintln(o.Trace, l)
				}
			}
			f.Close()
		}
	}
	return res, nil
}

func maxDuration(ds []time.Duration) time.Duration {
	var m time.Duration
	for _, d := range ds {
		m = max(m, d)
	}
	return m
}

func medianDuration(ds []time.Duration) time.Duration { return median(ds) }

// writerLockWaits reads PostgreSQL's log at path for the writers' lock
// waits on the relation of OID rel ("process N acquired RowExclusiveLock
// on relation REL of database D after X ms", logged by log_lock_waits)
// and returns the longest and how many there were. A writer still waiting
// when the log ends counts as long as the last time it was logged.
func writerLockWaits(path string, rel uint32) (time.Duration, int, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, fmt.Errorf("lock waits: %w", err)
	}
	defer f.Close()
	var longest time.Duration
	n := 0
	onRel := fmt.Sprintf(" RowExclusiveLock on relation %d of database ", rel)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		i := strings.Index(line, onRel)
		if i < 0 {
			continue
		}
		acquired := strings.HasSuffix(line[:i], " acquired")
		if !acquired && !strings.HasSuffix(line[:i], " still waiting for") {
			continue
		}
		// "after 50.145 ms", perhaps followed by " at character 13".
		_, after, ok := strings.Cut(line[i+len(onRel):], " after ")
		num, unit, _ := strings.Cut(after, " ")
		ms, err := strconv.ParseFloat(num, 64)
		if !ok || err != nil || !strings.HasPrefix(unit, "ms") {
			return 0, 0, fmt.Errorf("lock waits: cannot read %q", line)
		}
		if acquired {
			n++
		}
		longest = max(longest, time.Duration(ms*float64(time.Millisecond)))
	}
	if err := sc.Err(); err != nil {
		return 0, 0, fmt.Errorf("lock waits: %w", err)
	}
	return longest, n, nil
}

// dbTimeHeader carries the database's part of a write, in microseconds,
// from the app to the load.
const dbTimeHeader = "X-Db-Us"

// schemaTracer samples, while the load runs, what PostgreSQL's backends
// are doing and waiting for (pg_stat_activity, pg_locks) and how late the
// bench process's goroutines are scheduled: the evidence of where a slow
// write spent its time. Only with schemaDeploy.Trace: it is load itself.
type schemaTracer struct {
	mu      sync.Mutex
	samples []pgSample
	lags    []schedLag
}

// pgSample is one look at pg_stat_activity: a line per busy backend.
type pgSample struct {
	at    time.Time
	lines []traceLine
}

// traceLine is a busy backend: its statement and wait, and since when.
type traceLine struct {
	what string
	ms   int
}

// schedLag is a wake-up of a 5 ms timer that came late.
type schedLag struct {
	at   time.Time
	late time.Duration
}

// traceActivity lists the busy backends: client backends not idle, the
// others when not in their main wait, with the locks they wait for.
const traceActivity = `SELECT a.backend_type, coalesce(a.wait_event_type, ''), coalesce(a.wait_event, ''),
	left(regexp_replace(coalesce(a.query, ''), '\s+', ' ', 'g'), 60),
	coalesce(extract(epoch FROM clock_timestamp() - a.query_start) * 1000, 0)::int,
	coalesce((SELECT string_agg(l.mode || ' on ' || coalesce(l.relation::regclass::text, l.locktype), ', ')
		FROM pg_locks l WHERE l.pid = a.pid AND NOT l.granted), '')
FROM pg_stat_activity a
WHERE a.pid <> pg_backend_pid()
	AND CASE WHEN a.backend_type = 'client backend' THEN a.state <> 'idle'
		ELSE coalesce(a.wait_event_type, '') <> 'Activity' END`

// start samples until ctx ends; the returned function waits for the
// samplers to stop.
func (t *schemaTracer) start(ctx context.Context, dsn string) (func(), error) {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return nil, fmt.Errorf("trace: %w", err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		defer conn.Close(context.WithoutCancel(ctx))
		for ctx.Err() == nil {
			at := time.Now()
			rows, err := conn.Query(ctx, traceActivity)
			if err != nil {
				return
			}
			var lines []traceLine
			for rows.Next() {
				var typ, wtype, wevent, query, waiting string
				var ms int
				if rows.Scan(&typ, &wtype, &wevent, &query, &ms, &waiting) != nil {
					continue
				}
				line := typ
				if typ == "client backend" {
					line = strconv.Quote(query)
				}
				if wtype != "" {
					line += " waits " + wtype + "/" + wevent
				}
				if waiting != "" {
					line += " for " + waiting
				}
				lines = append(lines, traceLine{what: line, ms: ms})
			}
			if rows.Err() != nil {
				return
			}
			t.mu.Lock()
			t.samples = append(t.samples, pgSample{at: at, lines: lines})
			t.mu.Unlock()
			select {
			case <-ctx.Done():
			case <-time.After(20 * time.Millisecond):
			}
		}
	})
	wg.Go(func() {
		const tick = 5 * time.Millisecond
		for ctx.Err() == nil {
			before := time.Now()
			select {
			case <-ctx.Done():
				return
			case <-time.After(tick):
			}
			if late := time.Since(before) - tick; late > 10*time.Millisecond {
				t.mu.Lock()
				t.lags = append(t.lags, schedLag{at: before, late: late})
				t.mu.Unlock()
			}
		}
	})
	return wg.Wait, nil
}

// report writes, for the slowest writes of stats, when they ran, how much
// of them the database took, how late the bench process was scheduled
// meanwhile, and what the backends were doing.
func (t *schemaTracer) report(w io.Writer, title string, stats *loadStats, phaseOf func(time.Time) string, n int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	idx := make([]int, len(stats.writes))
	for i := range idx {
		idx[i] = i
	}
	slices.SortFunc(idx, func(a, b int) int { return cmp.Compare(stats.writes[b], stats.writes[a]) })
	var first time.Time
	if len(stats.writeAt) > 0 {
		first = slices.MinFunc(stats.writeAt, func(a, b time.Time) int { return a.Compare(b) })
	}
	var lagMax time.Duration
	for _, l := range t.lags {
		lagMax = max(lagMax, l.late)
	}
	fmt.Fprintf(w, "-- trace %s: %d pg samples, %d late wake-ups of the bench process (> 10 ms late), the latest %s\n",
		title, len(t.samples), len(t.lags), lagMax.Round(time.Millisecond))
	for _, i := range idx[:min(n, len(idx))] {
		at, d := stats.writeAt[i], stats.writes[i]
		end := at.Add(d)
		var late time.Duration
		for _, l := range t.lags {
			if l.at.Before(end) && l.at.Add(l.late).After(at) {
				late = max(late, l.late)
			}
		}
		fmt.Fprintf(w, "write at +%s (%s): %s, database %s, bench process late up to %s\n",
			at.Sub(first).Round(time.Millisecond), phaseOf(at), d.Round(time.Millisecond),
			stats.writeDB[i].Round(time.Millisecond), late.Round(time.Millisecond))
		// One line per statement and wait: how often seen, the oldest.
		seen, oldest := map[string]int{}, map[string]int{}
		var order []string
		for _, s := range t.samples {
			if s.at.Before(at) || s.at.After(end) {
				continue
			}
			for _, l := range s.lines {
				if _, ok := seen[l.what]; !ok {
					order = append(order, l.what)
				}
				seen[l.what]++
				oldest[l.what] = max(oldest[l.what], l.ms)
			}
		}
		for _, k := range order[:min(12, len(order))] {
			fmt.Fprintf(w, "    %2d× %s (up to %d ms)\n", seen[k], k, oldest[k])
		}
	}
}
