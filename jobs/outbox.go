package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"hakit.dev/dbrouter"
	"hakit.dev/internal/metricset"
)

// Outbox is a transactional outbox: tasks are written to a table inside the
// caller's database transaction, and a [Relay] moves them to the queue
// after the transaction commits. A task exists if and only if its
// transaction committed, and is enqueued once.
type Outbox struct {
	table  string // also the NOTIFY channel
	insert string
}

// NewOutbox returns an outbox on table (defaults to "hakit_outbox").
func NewOutbox(table string) *Outbox {
	if table == "" {
		table = "hakit_outbox"
	}
	t := pgx.Identifier{table}.Sanitize()
	return &Outbox{table: table,
		insert: `INSERT INTO ` + t + ` (task_type, payload, opts) VALUES ($1, $2, $3) RETURNING id`}
}

// Schema returns the SQL that creates the outbox table and the table
// [Once] uses, for an application's own migrations.
func (o *Outbox) Schema() string {
	t := pgx.Identifier{o.table}.Sanitize()
	return `CREATE TABLE IF NOT EXISTS ` + t + ` (
	id         bigserial PRIMARY KEY,
	task_type  text NOT NULL,
	payload    jsonb NOT NULL,
	opts       jsonb NOT NULL DEFAULT '{}',
	created_at timestamptz NOT NULL DEFAULT now()
);
` + OnceSchema
}

// CreateTables creates the outbox table and Once's table if they do not
// exist.
func (o *Outbox) CreateTables(ctx context.Context, db *dbrouter.Router) error {
	_, err := db.Exec(ctx, o.Schema())
	return err
}

// rowOpts are the Options stored with an outbox row.
type rowOpts struct {
	Queue     string        `json:"queue,omitempty"`
	MaxRetry  int           `json:"max_retry,omitempty"`
	Timeout   time.Duration `json:"timeout,omitempty"`
	ProcessAt time.Time     `json:"process_at,omitzero"`
}

// EnqueueTx writes a task into the outbox inside tx. If tx rolls back, the
// task never existed; once it commits, a Relay enqueues it (the relay is
// woken by a NOTIFY the commit delivers) and the task carries the commit's
// database position, so the handler's reads see what tx wrote. It returns
// the outbox row's id (the task's ID on the queue is "outbox-<id>").
func (o *Outbox) EnqueueTx(ctx context.Context, tx pgx.Tx, taskType string, payload any, opts Options) (int64, error) {
	data, err := encodePayload(payload)
	if err != nil {
		return 0, err
	}
	ro, _ := json.Marshal(rowOpts(opts))
	// The insert and the notify in one round trip. data goes as []byte, as
	// before: where pgx does not know a parameter's type (the simple
	// protocol), it sends a json.RawMessage as json, a []byte as bytea.
	var b pgx.Batch
	b.Queue(o.insert, taskType, []byte(data), ro)
	b.Queue("SELECT pg_notify($1, '')", o.table)
	br := tx.SendBatch(ctx, &b)
	defer br.Close()
	var id int64
	if err := br.QueryRow().Scan(&id); err != nil {
		return 0, fmt.Errorf("jobs: outbox insert: %w", err)
	}
	if _, err := br.Exec(); err != nil {
		return 0, fmt.Errorf("jobs: outbox notify: %w", err)
	}
	if err := br.Close(); err != nil {
		return 0, fmt.Errorf("jobs: outbox notify: %w", err)
	}
	return id, nil
}

// RelayConfig configures a Relay.
type RelayConfig struct {
	// DB is the database router the outbox lives in. Required.
	DB *dbrouter.Router
	// Client enqueues the tasks. Required.
	Client *Client
	// Outbox defaults to NewOutbox("").
	Outbox *Outbox
	// BatchSize is how many rows one pass moves. Defaults to 500.
	BatchSize int
	// PollInterval is how often the relay looks even without a
	// notification (one can be missed while the relay reconnects).
	// Defaults to 1s.
	PollInterval time.Duration
	// WaitReplicas is how many Redis replicas must confirm a batch before
	// its rows are deleted: Redis acknowledges writes before replicating
	// them, so a batch could vanish in a failover. Defaults to 1; negative
	// turns the confirmation off (a standalone Redis has no replica).
	// Without it, rows are kept until confirmed and the batch is enqueued
	// again, which the task IDs make harmless.
	WaitReplicas int
	// WaitTimeout bounds that confirmation. Defaults to 2s.
	WaitTimeout time.Duration
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Relay moves committed outbox rows to the queue: every instance runs
// one; they share the work with SELECT … FOR UPDATE SKIP LOCKED. Each row
// is enqueued with the task ID "outbox-<id>", so a relay that dies after
// enqueuing and before deleting its rows, and the one that takes them
// over, cannot enqueue a task twice (within the Client's Retention).
type Relay struct {
	cfg                            RelayConfig
	log                            *slog.Logger
	selectSQL, deleteSQL, countSQL string

	stop          context.CancelFunc
	done          chan struct{}
	metricset.Set // a prometheus.Collector of the metrics below
	backlog       prometheus.Gauge
	lag           prometheus.Histogram
	moved         prometheus.Counter

	lastWarn atomic.Int64

	// afterEnqueue, when set (tests), runs after each row is enqueued; an
	// error aborts the pass as a crash would.
	afterEnqueue func(n int) error
}

// NewRelay returns a Relay. Start it (hakit.App does, when it is added as
// a component).
func NewRelay(cfg RelayConfig) (*Relay, error) {
	if cfg.DB == nil || cfg.Client == nil {
		return nil, errors.New("jobs: RelayConfig needs DB and Client")
	}
	if cfg.Outbox == nil {
		cfg.Outbox = NewOutbox("")
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 500
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = time.Second
	}
	if cfg.WaitReplicas == 0 {
		cfg.WaitReplicas = 1
	}
	if cfg.WaitTimeout <= 0 {
		cfg.WaitTimeout = 2 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	t := pgx.Identifier{cfg.Outbox.table}.Sanitize()
	r := &Relay{cfg: cfg, log: cfg.Logger,
		selectSQL: `SELECT id, task_type, payload, opts, created_at FROM ` + t + ` ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED`,
		deleteSQL: `DELETE FROM ` + t + ` WHERE id = ANY($1)`,
		countSQL:  `SELECT count(*) FROM ` + t,
		backlog: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "hakit", Subsystem: "jobs", Name: "outbox_backlog",
			Help: "Outbox rows waiting for the relay (sampled)."}),
		lag: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "hakit", Subsystem: "jobs", Name: "relay_lag_seconds",
			Help: "Time from an outbox row's insert to its task on the queue.", Buckets: []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 5, 30}}),
		moved: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "hakit", Subsystem: "jobs", Name: "relayed_total",
			Help: "Outbox rows moved to the queue."}),
	}
	r.Set = metricset.Set{r.backlog, r.lag, r.moved}
	return r, nil
}

// Start starts relaying in the background until Stop.
func (r *Relay) Start(context.Context) error {
	ctx, stop := context.WithCancel(context.Background())
	r.stop, r.done = stop, make(chan struct{})
	wake := make(chan struct{}, 1)
	var wg sync.WaitGroup
	wg.Go(func() { r.listen(ctx, wake) })
	go func() {
		defer close(r.done)
		defer wg.Wait()
		r.loop(ctx, wake)
	}()
	return nil
}

// Stop stops relaying and waits for the pass under way. Rows not moved
// yet stay for the next relay.
func (r *Relay) Stop(ctx context.Context) error {
	if r.stop == nil {
		return nil
	}
	r.stop()
	select {
	case <-r.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (r *Relay) loop(ctx context.Context, wake <-chan struct{}) {
	t := time.NewTicker(r.cfg.PollInterval)
	defer t.Stop()
	sampled := time.Time{}
	for {
		// Drain the outbox, a batch at a time.
		for ctx.Err() == nil {
			n, err := r.Pass(ctx)
			if err != nil {
				if ctx.Err() == nil {
					r.log.Warn("jobs: relay pass failed; retrying", "err", err)
				}
				break
			}
			if n < r.cfg.BatchSize {
				break
			}
		}
		if time.Since(sampled) > 10*time.Second {
			r.sampleBacklog(ctx)
			sampled = time.Now()
		}
		select {
		case <-ctx.Done():
			return
		case <-wake:
		case <-t.C:
		}
	}
}

// listen holds a LISTEN connection on the primary and turns notifications
// into wake-ups; after a failover it listens on the new primary.
func (r *Relay) listen(ctx context.Context, wake chan<- struct{}) {
	for ctx.Err() == nil {
		err := r.listenOnce(ctx, wake)
		if ctx.Err() != nil {
			return
		}
		r.log.Debug("jobs: relay LISTEN connection lost; reconnecting", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (r *Relay) listenOnce(ctx context.Context, wake chan<- struct{}) error {
	pool, err := r.cfg.DB.Primary()
	if err != nil {
		return err
	}
	pc, err := pool.Acquire(ctx)
	if err != nil {
		return err
	}
	// The connection ends in LISTEN state: it never goes back to the pool.
	conn := pc.Hijack()
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{r.cfg.Outbox.table}.Sanitize()); err != nil {
		return err
	}
	for {
		// Wake the relay: at first because a commit may have come before
		// LISTEN, then for each notification.
		select {
		case wake <- struct{}{}:
		default:
		}
		if _, err := conn.WaitForNotification(ctx); err != nil {
			return err
		}
	}
}

// Pass moves one batch of outbox rows to the queue and returns how many.
// Relays call it themselves; it is exported for tests and tools.
func (r *Relay) Pass(ctx context.Context) (int, error) {
	moved := 0
	err := r.cfg.DB.Write(ctx, func(tx pgx.Tx) error {
		moved = 0
		rows, err := tx.Query(ctx, r.selectSQL, r.cfg.BatchSize)
		if err != nil {
			return err
		}
		type row struct {
			id        int64
			taskType  string
			payload   json.RawMessage
			opts      rowOpts
			createdAt time.Time
		}
		var batch []row
		for rows.Next() {
			var x row
			if err := rows.Scan(&x.id, &x.taskType, &x.payload, &x.opts, &x.createdAt); err != nil {
				rows.Close()
				return err
			}
			batch = append(batch, x)
		}
		if err := rows.Err(); err != nil {
			return err
		}
		if len(batch) == 0 {
			return nil
		}
		// A position at or after every row's commit: the tasks' reads
		// see what their transactions wrote.
		var lsnText string
		if err := tx.QueryRow(ctx, "SELECT pg_current_wal_insert_lsn()::text").Scan(&lsnText); err != nil {
			return err
		}
		lsn, _ := dbrouter.ParseLSN(lsnText)
		pos := lsn.String() // "0/0" if it did not parse
		ids := make([]int64, 0, len(batch))
		for i, x := range batch {
			sealed, err := sealRaw(pos, x.payload)
			if err != nil {
				return err
			}
			if _, err := r.cfg.Client.enqueueWithID(ctx, "outbox-"+strconv.FormatInt(x.id, 10), x.taskType, sealed, Options(x.opts)); err != nil {
				return err
			}
			if r.afterEnqueue != nil {
				if err := r.afterEnqueue(i + 1); err != nil {
					return err
				}
			}
			ids = append(ids, x.id)
		}
		if err := r.confirm(ctx); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, r.deleteSQL, ids); err != nil {
			return err
		}
		now := time.Now()
		for _, x := range batch {
			r.lag.Observe(now.Sub(x.createdAt).Seconds())
		}
		moved = len(batch)
		return nil
	})
	if err == nil {
		r.moved.Add(float64(moved))
	}
	return moved, err
}

// confirm waits until WaitReplicas Redis replicas have every write made so
// far: a write on one connection followed by WAIT there covers all writes
// before it, the replication stream being one.
func (r *Relay) confirm(ctx context.Context) error {
	if r.cfg.WaitReplicas < 0 {
		return nil
	}
	p := r.cfg.Client.rdb.Pipeline()
	p.Set(ctx, "hakit:jobs:relay-confirm", time.Now().UnixNano(), time.Minute)
	wait := p.Do(ctx, "WAIT", r.cfg.WaitReplicas, r.cfg.WaitTimeout.Milliseconds())
	role := p.Do(ctx, "ROLE")
	if _, err := p.Exec(ctx); err != nil {
		return fmt.Errorf("jobs: confirm the batch on Redis replicas: %w", err)
	}
	n, err := wait.Int64()
	if err != nil {
		return fmt.Errorf("jobs: confirm the batch on Redis replicas: %w", err)
	}
	if n >= int64(r.cfg.WaitReplicas) {
		return nil
	}
	// Fewer replicas confirmed. If the master has fewer replicas than that
	// at all (after a failover, until the old master rejoins), no wait can
	// succeed: go on rather than stall every task, and say so.
	if v, err := role.Slice(); err == nil && len(v) >= 3 {
		if replicas, ok := v[2].([]any); ok && len(replicas) < r.cfg.WaitReplicas {
			now := time.Now().UnixNano()
			if last := r.lastWarn.Load(); now-last > int64(time.Minute) && r.lastWarn.CompareAndSwap(last, now) {
				r.log.Warn("jobs: the Redis master has too few replicas to confirm outbox batches; relaying without confirmation",
					"replicas", len(replicas), "want", r.cfg.WaitReplicas)
			}
			return nil
		}
	}
	return fmt.Errorf("jobs: only %d of %d Redis replicas confirmed the batch within %s; keeping the rows", n, r.cfg.WaitReplicas, r.cfg.WaitTimeout)
}

func (r *Relay) sampleBacklog(ctx context.Context) {
	pool, err := r.cfg.DB.Primary()
	if err != nil {
		return
	}
	var n int64
	if err := pool.QueryRow(ctx, r.countSQL).Scan(&n); err == nil {
		r.backlog.Set(float64(n))
	}
}
