package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
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
		insert: `INSERT INTO ` + t + ` (task_type, payload, opts) VALUES ($1, $2, $3) RETURNING task_id::text`}
}

// Schema returns the SQL that creates the outbox table, or brings one
// made by an earlier version up to date, and the table [Once] uses. It is
// idempotent: it can run at every start.
//
// The default table, hakit_outbox, needs none of this: hakit.App applies
// [Migrations] itself. Schema is for an outbox on another table
// (NewOutbox("orders_outbox")), to put in the app's own migrations, and
// for apps that create tables their own way. When a release changes the
// table, its new migration says so in docs/migrations.md, and Schema
// includes the change in its idempotent form.
//
// Each row has a random task_id (a UUID): its task's ID on the queue is
// "outbox-<task_id>", unique across tables, databases and a sequence that
// restarts, so two outboxes feeding one queue never take each other's
// task for their own. sent_to records the Redis master that holds a
// row's task while no replica has confirmed it.
func (o *Outbox) Schema() string {
	t := pgx.Identifier{o.table}.Sanitize()
	return `CREATE TABLE IF NOT EXISTS ` + t + ` (
	id         bigserial PRIMARY KEY,
	task_id    uuid NOT NULL DEFAULT gen_random_uuid(),
	task_type  text NOT NULL,
	payload    jsonb NOT NULL,
	opts       jsonb NOT NULL DEFAULT '{}',
	created_at timestamptz NOT NULL DEFAULT now(),
	sent_to    text
);
ALTER TABLE ` + t + `
	ADD COLUMN IF NOT EXISTS task_id uuid NOT NULL DEFAULT gen_random_uuid(),
	ADD COLUMN IF NOT EXISTS sent_to text;
` + OnceSchema
}

// CreateTables runs [Outbox.Schema]: it creates the outbox table and
// Once's table if they do not exist, and upgrades an outbox table made by
// an earlier version. Under hakit.App there is no need: its migrations
// create the default tables.
func (o *Outbox) CreateTables(ctx context.Context, db *dbrouter.Router) error {
	if _, err := db.Exec(ctx, o.Schema()); err != nil {
		return fmt.Errorf("jobs: create the outbox tables: %w", err)
	}
	return nil
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
// the task's ID on the queue, "outbox-<uuid>".
func (o *Outbox) EnqueueTx(ctx context.Context, tx pgx.Tx, taskType string, payload any, opts Options) (string, error) {
	data, err := encodePayload(payload)
	if err != nil {
		return "", err
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
	var id string
	if err := br.QueryRow().Scan(&id); err != nil {
		return "", fmt.Errorf("jobs: outbox insert: %w", err)
	}
	if _, err := br.Exec(); err != nil {
		return "", fmt.Errorf("jobs: outbox notify: %w", err)
	}
	if err := br.Close(); err != nil {
		return "", fmt.Errorf("jobs: outbox notify: %w", err)
	}
	return outboxTaskID(id), nil
}

// outboxTaskID is the queue's ID for the task of the row with task_id id.
func outboxTaskID(id string) string { return "outbox-" + id }

// RelayConfig configures a Relay.
type RelayConfig struct {
	// DB is the database router the outbox lives in. Required.
	DB *dbrouter.Router
	// Client enqueues the tasks; its ClientConfig says whether a Redis
	// replica must confirm them before their rows are deleted, and how
	// long a task ID is remembered. Required.
	Client *Client
	// Outbox defaults to NewOutbox("").
	Outbox *Outbox
	// BatchSize is how many rows one pass moves, and how many rows left
	// held by the current Redis master one pass confirms besides.
	// Defaults to 500.
	BatchSize int
	// PollInterval is how often the relay looks even without a
	// notification (one can be missed while the relay reconnects), and
	// the longest it waits before retrying a failed pass. Defaults to 1s.
	PollInterval time.Duration
	// Name tells this Relay's metrics from another's in one Prometheus
	// registry: the const label name. Defaults to the outbox table's name,
	// so relays of different tables need nothing; two relays of one table
	// in one process need different names.
	Name string
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Relay moves committed outbox rows to the queue: every instance runs
// one; they share the work with SELECT … FOR UPDATE SKIP LOCKED. Each row
// is enqueued with the task ID "outbox-<task_id>", so a relay that dies
// after enqueuing and before deleting its rows, and the one that takes
// them over, cannot enqueue a task twice (within the Client's Retention).
//
// A row is deleted only when its task is on the Redis master and on
// ClientConfig.WaitReplicas of its replicas (unless the Client has
// NoReplicas). Until then the row stays, marked with the master that
// holds its task: a later pass that finds the same master confirms it
// with its own WAIT; one that finds another master (the old one was lost,
// restarted empty, or replaced by a replica that may lack the task)
// enqueues it again there. A pass deletes only the rows its confirmation
// covers: its own batch, and the marked rows it locked before it read the
// master's replication offset. Rows another relay marks meanwhile wait
// for a later pass.
//
// A Relay is a prometheus.Collector of its metrics.
type Relay struct {
	cfg    RelayConfig
	client *Client
	log    *slog.Logger
	// SQL on the outbox table.
	selectSQL, heldSQL, markSQL, deleteSQL, countSQL, emptySQL string
	// staleAfter is the age past which a row's task ID may have been
	// forgotten by the queue: the Client's Retention, less a margin for
	// clock skew.
	staleAfter time.Duration

	stop context.CancelFunc
	done chan struct{}

	metrics     metricset.Set
	backlog     prometheus.Gauge
	lag         prometheus.Histogram
	moved       prometheus.Counter
	unconfirmed prometheus.Counter
	reenqueued  prometheus.Counter
	stale       prometheus.Counter

	lastWarn atomic.Int64

	// afterEnqueue, when set (tests), runs after each row is enqueued; an
	// error aborts the pass as a crash would.
	afterEnqueue func(n int) error
	// afterConfirm, when set (tests), runs after a pass's confirmation
	// succeeded and before it deletes rows.
	afterConfirm func()
}

// NewRelay returns a Relay. Start it (hakit.App does, when it is added as
// a component).
func NewRelay(cfg RelayConfig) (*Relay, error) {
	if cfg.DB == nil || cfg.Client == nil {
		return nil, errors.New("jobs: RelayConfig needs DB and Client")
	}
	if err := cfg.Client.configErr(); err != nil {
		return nil, err
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
	if cfg.Name == "" {
		cfg.Name = cfg.Outbox.table
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	t := pgx.Identifier{cfg.Outbox.table}.Sanitize()
	labels := nameLabel(cfg.Name)
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Namespace: "hakit", Subsystem: "jobs", Name: name, Help: help, ConstLabels: labels})
	}
	r := &Relay{cfg: cfg, client: cfg.Client, log: cfg.Logger,
		// Rows whose task is held by another master than the current
		// one (or by none) are (re-)enqueued; those held by the current
		// one wait for its confirmation.
		selectSQL: `SELECT id, task_id::text, task_type, payload, opts, created_at, sent_to,
	created_at < clock_timestamp() - make_interval(secs => $3)
FROM ` + t + ` WHERE sent_to IS DISTINCT FROM $2 ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED`,
		heldSQL:    `SELECT id FROM ` + t + ` WHERE sent_to = $2 ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED`,
		markSQL:    `UPDATE ` + t + ` SET sent_to = $2 WHERE id = ANY($1)`,
		deleteSQL:  `DELETE FROM ` + t + ` WHERE id = ANY($1)`,
		countSQL:   `SELECT count(*) FROM ` + t,
		emptySQL:   `SELECT NOT EXISTS (SELECT FROM ` + t + `)`,
		staleAfter: cfg.Client.retention - min(cfg.Client.retention/10, time.Minute),
		backlog: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "hakit", Subsystem: "jobs", Name: "outbox_backlog",
			Help: "Outbox rows not deleted yet: waiting for the relay, or for a Redis replica's confirmation (sampled).", ConstLabels: labels}),
		lag: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "hakit", Subsystem: "jobs", Name: "relay_lag_seconds",
			Help: "Time from an outbox row's insert to its task on the queue.", ConstLabels: labels,
			Buckets: []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 5, 30}}),
		moved: counter("relayed_total", "Outbox rows whose task is on the queue (and confirmed by Redis replicas, unless NoReplicas), deleted."),
		unconfirmed: counter("relay_unconfirmed_total",
			"Relay passes that left their rows in the outbox because too few Redis replicas confirmed the tasks; they are retried."),
		reenqueued: counter("relay_reenqueued_total",
			"Outbox tasks enqueued again on a new Redis master because the one that had taken them was lost before a replica confirmed them; a task that had already run runs again. Counted when the enqueue creates the task, even if its pass then fails; not when the new master has it already."),
		stale: counter("relay_stale_total",
			"Outbox rows older than the Client's Retention enqueued as new tasks: the queue may have forgotten an earlier enqueue, so the task may run twice. Counted when the enqueue creates the task, even if its pass then fails."),
	}
	r.metrics = metricset.Set{r.backlog, r.lag, r.moved, r.unconfirmed, r.reenqueued, r.stale}
	return r, nil
}

// Describe implements prometheus.Collector.
func (r *Relay) Describe(ch chan<- *prometheus.Desc) { r.metrics.Describe(ch) }

// Collect implements prometheus.Collector.
func (r *Relay) Collect(ch chan<- prometheus.Metric) { r.metrics.Collect(ch) }

// Start starts relaying in the background until Stop.
func (r *Relay) Start(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
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

// Stop stops relaying and returns when the pass under way has ended or
// ctx has, whichever comes first (the pass is cancelled at once: its
// transaction rolls back). Rows not deleted yet stay for the next relay.
func (r *Relay) Stop(ctx context.Context) error {
	if r.stop == nil {
		return nil
	}
	r.stop()
	select {
	case <-r.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("jobs: relay stop: %w", ctx.Err())
	}
}

func (r *Relay) loop(ctx context.Context, wake <-chan struct{}) {
	t := time.NewTicker(r.cfg.PollInterval)
	defer t.Stop()
	sampled := time.Time{}
	failures := 0
	for {
		// Drain the outbox, a batch at a time.
		for ctx.Err() == nil {
			res, err := r.pass(ctx)
			switch {
			case err == nil:
				failures = 0
			case errors.Is(err, ErrNotConfirmed):
				// The tasks are on the queue; their rows wait for a
				// replica. Go on with new rows meanwhile.
				failures = 0
				now := time.Now().UnixNano()
				if last := r.lastWarn.Load(); now-last > int64(10*time.Second) && r.lastWarn.CompareAndSwap(last, now) {
					r.log.Warn("jobs: the relay keeps outbox rows until a Redis replica confirms their tasks", "err", err)
				}
			default:
				if ctx.Err() != nil {
					return
				}
				failures++
				backoff := min(r.cfg.PollInterval, 50*time.Millisecond<<min(failures, 10))
				r.log.Warn("jobs: relay pass failed; retrying", "err", err, "in", backoff)
				select {
				case <-ctx.Done():
					return
				case <-time.After(backoff):
				}
				continue
			}
			if res.enqueued < r.cfg.BatchSize && !res.moreHeld {
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

// outboxRow is a row a pass locked.
type outboxRow struct {
	id        int64
	taskID    string
	taskType  string
	payload   json.RawMessage
	opts      rowOpts
	createdAt time.Time
	sentTo    *string
	stale     bool
}

// passResult is what a pass did, for the metrics and logs.
type passResult struct {
	enqueued    int         // rows whose task is on the queue now
	first       []time.Time // when the rows enqueued for the first time were inserted
	deleted     int         // rows deleted, confirmed
	unconfirmed error       // why the rows were kept, if they were
	moreHeld    bool        // a full batch of held rows deleted: there may be more
}

// newTasks is what a pass's enqueues put on the queue that it did not
// have: it happened whether or not the pass then commits. A pass that
// fails after its enqueues (its confirmation, its transaction, a later
// enqueue) leaves its rows as they were, and the pass that retries them
// finds those tasks on the queue already (an ID conflict) and creates
// nothing: only the enqueue that created a task counts it, once.
type newTasks struct {
	reenqueued []string // task IDs enqueued again after their master was lost
	stale      []string // task IDs of rows past the Retention enqueued anew
}

// Pass moves one batch of outbox rows to the queue. It returns how many
// rows' tasks it put on the queue and nil once Redis replicas confirmed
// them and their rows are deleted; with too few replicas it keeps the
// rows (marked with the master that holds their tasks) and returns an
// error wrapping [ErrNotConfirmed]. Relays call it themselves; it is
// exported for tests and tools.
//
// Besides its batch, a pass confirms up to BatchSize rows that earlier
// passes left held by the current master, and deletes them with its
// batch: those it locked before its confirmation read the master's
// replication offset, which covers their tasks (a relay marks rows only
// after the master took their tasks, and they are visible only once it
// committed). A row marked after that lock, by another relay, may hold a
// task the offset does not cover: it stays for a later pass.
func (r *Relay) Pass(ctx context.Context) (int, error) {
	res, err := r.pass(ctx)
	return res.enqueued, err
}

// pass is Pass, with what it did.
func (r *Relay) pass(ctx context.Context) (passResult, error) {
	if r.empty(ctx) {
		return passResult{}, nil
	}
	c := r.client
	var m masterID
	var held string // the current master, as rows record it ("" with NoReplicas)
	if !c.noReplicas {
		var err error
		if m, err = c.master(ctx); err != nil {
			return passResult{}, err
		}
		held = m.String()
	}
	var res passResult
	// Not reset when Write runs the function again: what an attempt
	// created stays created.
	var made newTasks
	err := r.cfg.DB.Write(ctx, func(tx pgx.Tx) error {
		res = passResult{}
		batch, err := r.lock(ctx, tx, held)
		if err != nil {
			return err
		}
		// The rows this master holds that wait for its confirmation: only
		// those locked here, before confirm reads the master's offset,
		// are covered by it.
		var heldIDs []int64
		if !c.noReplicas {
			if heldIDs, err = r.lockHeld(ctx, tx, held); err != nil {
				return err
			}
		}
		if len(batch) == 0 && len(heldIDs) == 0 {
			return nil
		}
		if err := r.enqueue(ctx, tx, batch, &res, &made); err != nil {
			return err
		}
		ids := make([]int64, len(batch))
		for i, x := range batch {
			ids[i] = x.id
		}
		if !c.noReplicas {
			switch err := c.confirm(ctx, m); {
			case errors.Is(err, ErrNotConfirmed):
				res.unconfirmed = err
				if len(ids) > 0 {
					if _, err := tx.Exec(ctx, r.markSQL, ids, held); err != nil {
						return err
					}
				}
				return nil
			case err != nil:
				return err
			}
			if r.afterConfirm != nil {
				r.afterConfirm()
			}
			// Confirmed: the batch, and the held rows locked before the
			// confirmation read the offset (not those marked since).
			ids = append(ids, heldIDs...)
			res.moreHeld = len(heldIDs) == r.cfg.BatchSize
		}
		if len(ids) > 0 {
			if _, err := tx.Exec(ctx, r.deleteSQL, ids); err != nil {
				return err
			}
			res.deleted += len(ids)
		}
		return nil
	})
	r.countNew(made)
	if err != nil {
		return passResult{}, err
	}
	now := time.Now()
	for _, t := range res.first {
		r.lag.Observe(now.Sub(t).Seconds())
	}
	r.moved.Add(float64(res.deleted))
	if res.unconfirmed != nil {
		r.unconfirmed.Inc()
		return res, res.unconfirmed
	}
	return res, nil
}

// countNew counts and logs the tasks a pass created on the queue, be the
// pass a success or not.
func (r *Relay) countNew(made newTasks) {
	if n := len(made.reenqueued); n > 0 {
		r.reenqueued.Add(float64(n))
		r.log.Warn("jobs: outbox tasks enqueued again: the Redis master that took them was lost before a replica confirmed them; any that had run will run again",
			"count", n, "task_ids", sample(made.reenqueued))
	}
	if n := len(made.stale); n > 0 {
		r.stale.Add(float64(n))
		r.log.Warn("jobs: outbox rows older than the Client's Retention enqueued as new tasks; the queue may have forgotten an earlier enqueue, so they may run twice",
			"count", n, "retention", r.client.retention, "task_ids", sample(made.stale))
	}
}

// empty reports whether the outbox has no row, asked on the primary's
// pool outside a transaction. An idle pass then runs no Write: a Write
// commits durably, with WAL of its own, and an idle relay polling once a
// second would otherwise write WAL every second (with archive_timeout, a
// whole WAL segment archived per timeout). Any doubt (no primary known, an
// error) answers false, and the pass runs as usual.
func (r *Relay) empty(ctx context.Context) bool {
	pool, err := r.cfg.DB.Primary()
	if err != nil {
		return false
	}
	var empty bool
	if err := pool.QueryRow(ctx, r.emptySQL).Scan(&empty); err != nil {
		return false
	}
	return empty
}

// lock selects and locks a batch: rows whose task no master holds, or
// another master than held does.
func (r *Relay) lock(ctx context.Context, tx pgx.Tx, held string) ([]outboxRow, error) {
	rows, err := tx.Query(ctx, r.selectSQL, r.cfg.BatchSize, held, r.staleAfter.Seconds())
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var batch []outboxRow
	for rows.Next() {
		var x outboxRow
		if err := rows.Scan(&x.id, &x.taskID, &x.taskType, &x.payload, &x.opts, &x.createdAt, &x.sentTo, &x.stale); err != nil {
			return nil, err
		}
		batch = append(batch, x)
	}
	return batch, rows.Err()
}

// lockHeld locks up to BatchSize rows whose task the master held holds,
// waiting for its confirmation, and returns their ids.
func (r *Relay) lockHeld(ctx context.Context, tx pgx.Tx, held string) ([]int64, error) {
	rows, err := tx.Query(ctx, r.heldSQL, r.cfg.BatchSize, held)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[int64])
}

// enqueue puts the batch's tasks on the queue, and records in made each
// task it created as a re-enqueue or a stale row's: at once, so that an
// error later in the batch or the pass loses none.
func (r *Relay) enqueue(ctx context.Context, tx pgx.Tx, batch []outboxRow, res *passResult, made *newTasks) error {
	if len(batch) == 0 {
		return nil
	}
	// A position at or after every row's commit: the tasks' reads see
	// what their transactions wrote.
	var lsnText string
	if err := tx.QueryRow(ctx, "SELECT pg_current_wal_insert_lsn()::text").Scan(&lsnText); err != nil {
		return err
	}
	lsn, _ := dbrouter.ParseLSN(lsnText)
	pos := lsn.String() // "0/0" if it did not parse
	for i, x := range batch {
		sealed, err := sealRaw(pos, x.payload)
		if err != nil {
			return err
		}
		id := outboxTaskID(x.taskID)
		created, err := r.client.enqueueWithID(ctx, id, x.taskType, sealed, Options(x.opts))
		if err != nil {
			return err
		}
		if created && x.sentTo != nil {
			made.reenqueued = append(made.reenqueued, id)
		} else if created && x.stale {
			made.stale = append(made.stale, id)
		}
		if r.afterEnqueue != nil {
			if err := r.afterEnqueue(i + 1); err != nil {
				return err
			}
		}
	}
	res.enqueued = len(batch)
	res.first = nil
	for _, x := range batch {
		if x.sentTo == nil {
			res.first = append(res.first, x.createdAt)
		}
	}
	return nil
}

// sample returns at most the first ten of ids, for a log line.
func sample(ids []string) []string { return ids[:min(len(ids), 10)] }

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
