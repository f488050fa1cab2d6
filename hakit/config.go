package hakit

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"hakit.dev/jobs"
)

// Config configures an [App]. The zero value is usable: a zero field means
// its default, which every field documents; a negative duration or limit
// means none where a field allows none. [ConfigFromEnv] fills the fields
// that have an environment variable (named in brackets), where 0 means
// none; the others are set in code.
type Config struct {
	// Addr is the address to listen on [HAKIT_ADDR]. Defaults to ":8080".
	Addr string

	// AdminAddr, if set, is a second address to listen on, for operators
	// only [HAKIT_ADMIN_ADDR]: it serves /metrics, /livez and /readyz with
	// its verbose form (check names, hosts, error strings); see
	// [App.AdminHandler]. Addr then keeps plain /livez and /readyz for the
	// load balancer and serves neither /metrics (the path goes to the
	// router like any other) nor verbose readiness (?verbose and
	// Accept: application/health+json get the plain answer). Bind it to
	// a private interface. Defaults to "": everything on Addr.
	AdminAddr string

	// DrainDelay is how long the instance keeps serving after /readyz
	// turned 503, so the load balancer stops sending it new connections
	// before it stops accepting them [HAKIT_DRAIN_DELAY]. Set it to at
	// least the time the load balancer takes to mark an instance down.
	// For HAProxy that is fall × inter when the instance answers its
	// checks (a draining one answers 503 at once) and fall × (inter +
	// timeout check) when its checks time out (an overloaded or hung
	// instance): with inter 1s fall 2 and timeout check 1s, 2s and 4s.
	// For Kubernetes, readinessProbe periodSeconds × failureThreshold plus
	// the time endpoints take to propagate. Defaults to 5s, which covers
	// both HAProxy cases of docs/deploy-haproxy.md. Negative: none (plain
	// http.Server.Shutdown), which fails requests behind most load
	// balancers; it exists for measurements.
	DrainDelay time.Duration

	// ShutdownTimeout bounds the rest of the shutdown after the drain
	// delay: in-flight requests, then stopping components (job workers,
	// relays) and closing the database pools [HAKIT_SHUTDOWN_TIMEOUT].
	// Requests still running at its end have their connections closed;
	// components and pools still stopping at its end are abandoned (and
	// logged) after [ShutdownMargin]. So Run returns within DrainDelay +
	// ShutdownTimeout + ShutdownMargin of the signal, whatever handlers
	// and components do. Defaults to 25s; it cannot be none. Keep
	// DrainDelay + ShutdownTimeout + ShutdownMargin under the
	// orchestrator's grace period (Kubernetes terminationGracePeriodSeconds).
	ShutdownTimeout time.Duration

	// RequestTimeout is the deadline put on every request's context
	// [HAKIT_REQUEST_TIMEOUT]. It is only a context deadline: database
	// calls, outgoing HTTP requests and anything else that takes the
	// context fail with context.DeadlineExceeded then, and the handler
	// answers what it chooses. It does not stop a handler that ignores its
	// context, it does not bound reading the request body or writing the
	// response (a slow client; see [Timeout] and the uploads package), and
	// it sends no response by itself. A route can have another one, or
	// none, with [Timeout]. Defaults to 30s; negative: none.
	RequestTimeout time.Duration

	// MaxBodyBytes limits request bodies [HAKIT_MAX_BODY_BYTES]; reading
	// past it fails with *http.MaxBytesError (answer 413;
	// [IsBodyTooLarge]). A route can have another limit with [BodyLimit]
	// (uploads), also when this one is none. Defaults to 1 MiB; negative:
	// none.
	MaxBodyBytes int64

	// MaxHeaderBytes is http.Server's MaxHeaderBytes: the most bytes of
	// request line and header a request may have (net/http allows 4 KiB
	// more); larger ones get 431 [HAKIT_MAX_HEADER_BYTES]. Defaults to
	// 1 MiB (net/http's default); it cannot be none.
	MaxHeaderBytes int

	// TrustedProxies are the addresses (CIDRs or single IPs) of the load
	// balancers and proxies in front of the app
	// [HAKIT_TRUSTED_PROXIES, comma-separated]. X-Forwarded-For,
	// X-Forwarded-Proto and X-Request-Id are honoured only on requests
	// from them; from anyone else they are ignored, so a client cannot
	// spoof its address. Defaults to none.
	TrustedProxies []netip.Prefix

	// TrustedOrigins are origins (scheme://host[:port]) allowed to make
	// cross-origin unsafe requests (POST, …) despite the CSRF protection
	// [HAKIT_TRUSTED_ORIGINS, comma-separated]. Defaults to none.
	TrustedOrigins []string

	// ReadHeaderTimeout is http.Server's ReadHeaderTimeout: how long a
	// client may take to send the request line and header
	// [HAKIT_READ_HEADER_TIMEOUT]. Defaults to 10s; negative: none (slow
	// clients can then hold connections open).
	ReadHeaderTimeout time.Duration

	// IdleTimeout is http.Server's IdleTimeout: how long a kept-alive
	// connection may idle [HAKIT_IDLE_TIMEOUT]. Defaults to 120s (keep it
	// above the load balancer's idle timeout for server connections);
	// negative: none.
	IdleTimeout time.Duration

	// DatabaseURLs are the PostgreSQL nodes' connection strings, in any
	// form dbrouter accepts: URLs, multi-host URLs
	// ("postgres://u@h1:5432,h2:5432/db" is one node per host) and
	// key=value strings [HAKIT_DATABASE_URL_1, HAKIT_DATABASE_URL_2, …:
	// one connection string per variable]. When set, the app makes a
	// dbrouter.Router ([App.DB]), checks it in /readyz, exports its
	// metrics, runs Migrations on the primary and closes it last at
	// shutdown. Defaults to none: no database.
	DatabaseURLs []string

	// Migrations, if set, holds golang-migrate migrations
	// (NNN_name.up.sql, NNN_name.down.sql) at its root, run up on the
	// primary before the instance turns ready. Instances starting
	// together take turns on a PostgreSQL advisory lock, so they migrate
	// once. Needs DatabaseURLs.
	Migrations fs.FS

	// ContractMigrations, if set, holds the contract migrations
	// (NNN_name.up.sql): the second half of expand/contract changes,
	// run only by [App.MigrateContract] (`hakit migrate contract`), never
	// at start. The app refuses to start on a database that carries a
	// contract migration this FS does not hold. Defaults to the directory
	// named "contract" beside the Migrations, if any. See
	// docs/migrations.md.
	ContractMigrations fs.FS

	// MigrationLockTimeout is the longest a migration waits for a lock
	// (PostgreSQL's lock_timeout) [HAKIT_MIGRATION_LOCK_TIMEOUT]: the
	// first attempt waits 50ms, each retry twice as long, up to this (a
	// file holding CONCURRENTLY: this long). Behind a long transaction,
	// the migration gives up, is undone and retried, instead of queueing
	// every query on the table behind its lock. Defaults to 5s.
	MigrationLockTimeout time.Duration

	// MigrationStatementTimeout bounds each migration file (PostgreSQL's
	// statement_timeout) [HAKIT_MIGRATION_STATEMENT_TIMEOUT]. Defaults to
	// 10 minutes; negative: none.
	MigrationStatementTimeout time.Duration

	// MigrationLockRetry is how long a migration that timed out waiting
	// for a lock is retried, with backoff, while /readyz says starting
	// with the reason [HAKIT_MIGRATION_LOCK_RETRY]; then start-up fails.
	// Defaults to 2 minutes; negative: the first lock timeout fails it.
	MigrationLockRetry time.Duration

	// SkipLibraryMigrations, if true, leaves the library's own tables
	// (jobs.Migrations, session.Migrations) alone at start
	// [HAKIT_SKIP_LIBRARY_MIGRATIONS]: the database's administrator
	// applies them, with a role that owns the tables (hakit.Migrate, or
	// the SQL files in psql), before deploying a version that needs them.
	// For an app role that may not create or alter tables. Migrations
	// still run. Defaults to false: the library's migrations run first.
	SkipLibraryMigrations bool

	// Redis is the Redis the app uses for sessions and jobs
	// [HAKIT_REDIS_*]. When set, the app makes one client ([App.Redis]),
	// checks it in /readyz and closes it last at shutdown. Defaults to
	// none: no Redis.
	Redis RedisConfig

	// JobsNamespace is the app's jobs namespace [HAKIT_JOBS_NAMESPACE]:
	// [App.Jobs] and [App.Worker] use it as ClientConfig.Namespace and
	// WorkerConfig.Namespace unless those are set, so the app's tasks go
	// to Redis queues of its own, "<JobsNamespace>:<queue>". Give each
	// app, and each deployment of one app (staging, production), that
	// shares a Redis its own; changing it strands the tasks queued under
	// the old one unless the workers list it in
	// WorkerConfig.FormerNamespaces for the deploy (see docs/jobs.md).
	// Letters, digits and . _ - / ~ only (jobs.CheckNamespace). Defaults
	// to none: the queues as named, shared with every app on that Redis
	// without a namespace.
	JobsNamespace string

	// S3 is the bucket [App.Uploads] keeps files in [HAKIT_S3_*].
	// Defaults to none.
	S3 S3Config

	// LogLevel is the lowest level logged when Logger is nil
	// [HAKIT_LOG_LEVEL: debug, info, warn, error]. Defaults to info.
	LogLevel slog.Level

	// Logger receives the app's logs, access logs included. Defaults to
	// JSON on standard error at LogLevel.
	Logger *slog.Logger

	// Registry is where the app registers its metrics, served at
	// /metrics. Defaults to a new registry with the Go and process
	// collectors.
	Registry *prometheus.Registry

	// NoSignals makes Run ignore SIGTERM and SIGINT: the drain then starts
	// only when Run's context ends. Defaults to false: Run handles them.
	NoSignals bool
}

// ShutdownMargin is how long, past the end of Config.ShutdownTimeout, the
// drain still waits for a component's Stop (or a start-up step
// interrupted by the shutdown) to return before it abandons it. It is
// the margin on top of DrainDelay + ShutdownTimeout that bounds Run's
// return: a Stop that honours its context returns within it.
const ShutdownMargin = time.Second

// withDefaults returns a copy of c with zero fields set to their defaults.
func (c Config) withDefaults() Config {
	if c.Addr == "" {
		c.Addr = ":8080"
	}
	dur := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	dur(&c.DrainDelay, 5*time.Second)
	dur(&c.ShutdownTimeout, 25*time.Second)
	dur(&c.RequestTimeout, 30*time.Second)
	dur(&c.ReadHeaderTimeout, 10*time.Second)
	dur(&c.IdleTimeout, 120*time.Second)
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = 1 << 20
	}
	if c.MaxHeaderBytes == 0 {
		c.MaxHeaderBytes = http.DefaultMaxHeaderBytes
	}
	if c.Logger == nil {
		c.Logger = slog.New(NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: c.LogLevel}))
	}
	return c
}

// validate lists every problem of c at once.
func (c Config) validate() error {
	var errs []error
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		errs = append(errs, fmt.Errorf("bad Addr %q: %w", c.Addr, err))
	}
	if c.AdminAddr != "" {
		if _, _, err := net.SplitHostPort(c.AdminAddr); err != nil {
			errs = append(errs, fmt.Errorf("bad AdminAddr %q: %w", c.AdminAddr, err))
		} else if c.AdminAddr == c.Addr {
			errs = append(errs, fmt.Errorf("AdminAddr is Addr (%s): the admin listener must be another one", c.Addr))
		}
	}
	if c.ShutdownTimeout < 0 {
		errs = append(errs, fmt.Errorf("negative ShutdownTimeout (%s): the shutdown cannot be unbounded", c.ShutdownTimeout))
	}
	if c.MaxHeaderBytes < 0 {
		errs = append(errs, fmt.Errorf("negative MaxHeaderBytes (%d): the header cannot be unlimited", c.MaxHeaderBytes))
	}
	// The check Stack makes, so a bad origin is in this list with the rest.
	cop := http.NewCrossOriginProtection()
	for _, o := range c.TrustedOrigins {
		if err := cop.AddTrustedOrigin(o); err != nil {
			errs = append(errs, fmt.Errorf("TrustedOrigins: %w", err))
		}
	}
	if c.Migrations != nil && len(c.DatabaseURLs) == 0 {
		errs = append(errs, errors.New("no DatabaseURLs to run the Migrations on"))
	}
	if err := jobs.CheckNamespace(c.JobsNamespace); err != nil {
		errs = append(errs, fmt.Errorf("JobsNamespace: %w", err))
	}
	errs = append(errs, c.Redis.problems(func(f string) string { return "Redis." + f })...)
	errs = append(errs, c.S3.problems(func(f string) string { return "S3." + f })...)
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("hakit: bad config: %w", err)
	}
	return nil
}

// EnvVar documents one environment variable ConfigFromEnv reads.
type EnvVar struct {
	Name, Field, Default, Help string
}

// EnvVars lists the environment variables ConfigFromEnv reads, for docs
// and --help output.
func EnvVars() []EnvVar {
	return []EnvVar{
		{"HAKIT_ADDR", "Addr", ":8080", "address to listen on"},
		{"HAKIT_ADMIN_ADDR", "AdminAddr", "", "second address for /metrics and verbose /readyz; when set, Addr serves neither"},
		{"HAKIT_DRAIN_DELAY", "DrainDelay", "5s", "time between /readyz turning 503 and the listener closing; >= the LB's time to mark an instance down; 0: none"},
		{"HAKIT_SHUTDOWN_TIMEOUT", "ShutdownTimeout", "25s", "bound on finishing in-flight requests and stopping components; > 0"},
		{"HAKIT_REQUEST_TIMEOUT", "RequestTimeout", "30s", "deadline on each request's context; 0: none"},
		{"HAKIT_MAX_BODY_BYTES", "MaxBodyBytes", "1048576", "request body limit (413 above); 0: none"},
		{"HAKIT_MAX_HEADER_BYTES", "MaxHeaderBytes", "1048576", "request line and header limit (431 above); > 0"},
		{"HAKIT_TRUSTED_PROXIES", "TrustedProxies", "", "comma-separated CIDRs/IPs whose X-Forwarded-* headers are honoured"},
		{"HAKIT_TRUSTED_ORIGINS", "TrustedOrigins", "", "comma-separated origins allowed past the CSRF protection"},
		{"HAKIT_READ_HEADER_TIMEOUT", "ReadHeaderTimeout", "10s", "http.Server ReadHeaderTimeout; 0: none"},
		{"HAKIT_IDLE_TIMEOUT", "IdleTimeout", "120s", "http.Server IdleTimeout; 0: none"},
		{"HAKIT_DATABASE_URL_n", "DatabaseURLs", "", "PostgreSQL connection strings, one per variable: HAKIT_DATABASE_URL_1, _2, … without gaps"},
		{"HAKIT_MIGRATION_LOCK_TIMEOUT", "MigrationLockTimeout", "5s", "the longest lock_timeout of a migration (the first attempt: 50ms, doubling per retry); a timed-out migration is undone and retried"},
		{"HAKIT_MIGRATION_STATEMENT_TIMEOUT", "MigrationStatementTimeout", "10m", "statement_timeout of each migration file; 0: none"},
		{"HAKIT_MIGRATION_LOCK_RETRY", "MigrationLockRetry", "2m", "how long lock timeouts of the start-up migrations are retried; 0: not retried"},
		{"HAKIT_SKIP_LIBRARY_MIGRATIONS", "SkipLibraryMigrations", "false", "do not run the library's own migrations at start (the DBA applies them)"},
		{"HAKIT_LOG_LEVEL", "LogLevel", "info", "debug, info, warn or error"},
		{"HAKIT_REDIS_URL", "Redis.URL", "", "a single Redis server: redis://[user:password@]host:port[/db], rediss://… (TLS) or unix:///path"},
		{"HAKIT_REDIS_SENTINELS", "Redis.SentinelAddrs", "", "comma-separated host:port of the Redis Sentinels; needs HAKIT_REDIS_MASTER"},
		{"HAKIT_REDIS_MASTER", "Redis.MasterName", "", "the name the Sentinels monitor the master under"},
		{"HAKIT_REDIS_CLUSTER", "Redis.ClusterAddrs", "", "comma-separated host:port of Redis Cluster nodes (writes confirmed per shard; without replicas set HAKIT_REDIS_NO_REPLICAS=true)"},
		{"HAKIT_REDIS_USERNAME", "Redis.Username", "", "Redis ACL user (replaces the URL's)"},
		{"HAKIT_REDIS_PASSWORD", "Redis.Password", "", "Redis password (replaces the URL's)"},
		{"HAKIT_REDIS_SENTINEL_PASSWORD", "Redis.SentinelPassword", "", "the Sentinels' own password, if they have one"},
		{"HAKIT_REDIS_TLS", "Redis.TLS", "false", "connect to Redis with TLS (rediss:// does too)"},
		{"HAKIT_REDIS_NO_REPLICAS", "Redis.NoReplicas", "false", "Redis has no replica to confirm writes (a dev box, a Cluster without replicas): sessions and jobs do not wait for one"},
		{"HAKIT_JOBS_NAMESPACE", "JobsNamespace", "", "the app's jobs namespace: its tasks go to the Redis queues <namespace>:<queue>; letters, digits and . _ - / ~"},
		{"HAKIT_S3_ENDPOINT", "S3.Endpoint", "", "S3 endpoint URL (http://127.0.0.1:9000 for MinIO); empty: AWS's for the region"},
		{"HAKIT_S3_REGION", "S3.Region", "us-east-1", "S3 region"},
		{"HAKIT_S3_BUCKET", "S3.Bucket", "", "the bucket uploads are kept in; enables App.Uploads"},
		{"HAKIT_S3_ACCESS_KEY_ID", "S3.AccessKeyID", "", "S3 access key id; needs HAKIT_S3_SECRET_ACCESS_KEY"},
		{"HAKIT_S3_SECRET_ACCESS_KEY", "S3.SecretAccessKey", "", "S3 secret access key"},
		{"HAKIT_S3_PATH_STYLE", "S3.PathStyle", "false", "address the bucket in the path (MinIO, Ceph, most S3-compatible servers)"},
		{"HAKIT_S3_PREFIX", "S3.Prefix", "", "put before every key the app's uploads store writes, e.g. uploads/"},
	}
}

// maxDatabaseURLs is how many HAKIT_DATABASE_URL_n ConfigFromEnv reads;
// dbrouter handles at most 64 nodes.
const maxDatabaseURLs = 64

// ConfigFromEnv reads the configuration from environment variables (see
// [EnvVars]) through getenv (os.Getenv when nil) and returns it with every
// malformed variable listed in one error. It is [Env.Config] and
// [Env.Err]: use an [Env] to read the app's own variables into the same
// report.
func ConfigFromEnv(getenv func(string) string) (Config, error) {
	e := NewEnv(getenv)
	c := e.Config()
	return c, e.Err()
}

// Config reads every HAKIT_* variable (see [EnvVars]) into a Config and
// records what is wrong with them for [Env.Err]. Unset or empty variables
// leave their field at the zero value, so defaults apply. A set variable
// means what it says: 0 (or a negative value) is none — no drain delay,
// no timeout, no body limit — and becomes a negative field;
// HAKIT_SHUTDOWN_TIMEOUT and HAKIT_MAX_HEADER_BYTES cannot be none and
// must be more than 0. Database connection strings come one per
// variable, HAKIT_DATABASE_URL_1, HAKIT_DATABASE_URL_2, … (no separator
// can split them safely: multi-host URLs hold commas, key=value strings
// spaces, quoted values anything). Redis and S3 settings that contradict
// each other (two kinds of Redis, Sentinels without a master name, a
// key id without its secret) are reported here too, by variable name.
func (e *Env) Config() Config {
	docs := make(map[string]EnvVar)
	for _, v := range EnvVars() {
		docs[v.Name] = v
	}
	get := func(name string) string {
		if strings.HasPrefix(name, "HAKIT_DATABASE_URL_") {
			e.note(docs["HAKIT_DATABASE_URL_n"]) // one entry documents them all
			return strings.TrimSpace(e.getenv(name))
		}
		return e.read(docs[name])
	}
	boolean := func(name string, dst *bool) {
		if v := get(name); v != "" {
			b, err := strconv.ParseBool(v)
			if err != nil {
				e.bad(name, v, errors.New("want true or false"))
				return
			}
			*dst = b
		}
	}
	var c Config
	c.Addr = get("HAKIT_ADDR")
	c.AdminAddr = get("HAKIT_ADMIN_ADDR")
	durations := []struct {
		name    string
		dst     *time.Duration
		canNone bool
	}{
		{"HAKIT_DRAIN_DELAY", &c.DrainDelay, true}, {"HAKIT_SHUTDOWN_TIMEOUT", &c.ShutdownTimeout, false},
		{"HAKIT_REQUEST_TIMEOUT", &c.RequestTimeout, true},
		{"HAKIT_MIGRATION_LOCK_TIMEOUT", &c.MigrationLockTimeout, false},
		{"HAKIT_MIGRATION_STATEMENT_TIMEOUT", &c.MigrationStatementTimeout, true},
		{"HAKIT_MIGRATION_LOCK_RETRY", &c.MigrationLockRetry, true},
	}
	for _, d := range durations {
		v := get(d.name)
		if v == "" {
			continue
		}
		x, err := time.ParseDuration(v)
		switch {
		case err != nil:
			e.bad(d.name, v, errors.New("want a duration such as 5s or 500ms"))
		case x > 0:
			*d.dst = x
		case !d.canNone:
			e.bad(d.name, v, errors.New("want more than 0: it bounds the exit, and cannot be none"))
		default:
			*d.dst = -1 // none
		}
	}
	if v := get("HAKIT_MAX_BODY_BYTES"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		switch {
		case err != nil:
			e.bad("HAKIT_MAX_BODY_BYTES", v, errors.New("want a number of bytes"))
		case n > 0:
			c.MaxBodyBytes = n
		default:
			c.MaxBodyBytes = -1 // none
		}
	}
	if v := get("HAKIT_MAX_HEADER_BYTES"); v != "" {
		n, err := strconv.Atoi(v)
		switch {
		case err != nil:
			e.bad("HAKIT_MAX_HEADER_BYTES", v, errors.New("want a number of bytes"))
		case n <= 0:
			e.bad("HAKIT_MAX_HEADER_BYTES", v, errors.New("want more than 0: the header cannot be unlimited"))
		default:
			c.MaxHeaderBytes = n
		}
	}
	for _, p := range splitList(get("HAKIT_TRUSTED_PROXIES")) {
		pfx, err := parsePrefix(p)
		if err != nil {
			e.bad("HAKIT_TRUSTED_PROXIES", p, err)
			continue
		}
		c.TrustedProxies = append(c.TrustedProxies, pfx)
	}
	c.TrustedOrigins = splitList(get("HAKIT_TRUSTED_ORIGINS"))
	cop := http.NewCrossOriginProtection() // the check Stack makes
	for _, o := range c.TrustedOrigins {
		if err := cop.AddTrustedOrigin(o); err != nil {
			e.bad("HAKIT_TRUSTED_ORIGINS", o, errors.New("want scheme://host[:port], such as https://admin.example.com"))
		}
	}
	for _, d := range []struct {
		name string
		dst  *time.Duration
	}{{"HAKIT_READ_HEADER_TIMEOUT", &c.ReadHeaderTimeout}, {"HAKIT_IDLE_TIMEOUT", &c.IdleTimeout}} {
		v := get(d.name)
		if v == "" {
			continue
		}
		switch x, err := time.ParseDuration(v); {
		case err != nil:
			e.bad(d.name, v, errors.New("want a duration such as 5s or 500ms"))
		case x > 0:
			*d.dst = x
		default:
			*d.dst = -1 // none
		}
	}
	gap := 0
	for i := 1; i <= maxDatabaseURLs; i++ {
		name := "HAKIT_DATABASE_URL_" + strconv.Itoa(i)
		v := get(name)
		switch {
		case v == "" && gap == 0:
			gap = i
		case v != "" && gap != 0:
			e.problem(fmt.Errorf("%s is set but HAKIT_DATABASE_URL_%d is not: number them from 1 without gaps", name, gap))
		case v != "":
			c.DatabaseURLs = append(c.DatabaseURLs, v)
		}
	}
	boolean("HAKIT_SKIP_LIBRARY_MIGRATIONS", &c.SkipLibraryMigrations)
	if v := e.getenv("HAKIT_DATABASE_URLS"); v != "" {
		e.problem(errors.New("HAKIT_DATABASE_URLS is no longer read (a separator breaks multi-host URLs and key=value strings): " +
			"give one connection string per variable, HAKIT_DATABASE_URL_1, HAKIT_DATABASE_URL_2, …"))
	}
	if v := get("HAKIT_LOG_LEVEL"); v != "" {
		if err := c.LogLevel.UnmarshalText([]byte(v)); err != nil {
			e.bad("HAKIT_LOG_LEVEL", v, errors.New("want debug, info, warn or error"))
		}
	}

	r := &c.Redis
	r.URL = get("HAKIT_REDIS_URL")
	r.SentinelAddrs = splitList(get("HAKIT_REDIS_SENTINELS"))
	r.MasterName = get("HAKIT_REDIS_MASTER")
	r.ClusterAddrs = splitList(get("HAKIT_REDIS_CLUSTER"))
	r.Username = get("HAKIT_REDIS_USERNAME")
	r.Password = get("HAKIT_REDIS_PASSWORD")
	r.SentinelPassword = get("HAKIT_REDIS_SENTINEL_PASSWORD")
	boolean("HAKIT_REDIS_TLS", &r.TLS)
	boolean("HAKIT_REDIS_NO_REPLICAS", &r.NoReplicas)
	for _, err := range r.problems(redisEnvName) {
		e.problem(err)
	}

	if c.JobsNamespace = get("HAKIT_JOBS_NAMESPACE"); c.JobsNamespace != "" {
		if err := jobs.CheckNamespace(c.JobsNamespace); err != nil {
			e.bad("HAKIT_JOBS_NAMESPACE", c.JobsNamespace, errors.New("want letters, digits and . _ - / ~ only (no colon, no space), such as shop or example.com/shop"))
			c.JobsNamespace = ""
		}
	}

	s := &c.S3
	s.Endpoint = get("HAKIT_S3_ENDPOINT")
	s.Region = get("HAKIT_S3_REGION")
	s.Bucket = get("HAKIT_S3_BUCKET")
	s.AccessKeyID = get("HAKIT_S3_ACCESS_KEY_ID")
	s.SecretAccessKey = get("HAKIT_S3_SECRET_ACCESS_KEY")
	boolean("HAKIT_S3_PATH_STYLE", &s.PathStyle)
	s.Prefix = get("HAKIT_S3_PREFIX")
	for _, err := range s.problems(s3EnvName) {
		e.problem(err)
	}
	return c
}

// redisEnvName and s3EnvName name a RedisConfig or S3Config field by its
// environment variable, for errors found in the environment.
func redisEnvName(field string) string { return envName("Redis." + field) }
func s3EnvName(field string) string    { return envName("S3." + field) }

func envName(field string) string {
	for _, v := range EnvVars() {
		if v.Field == field {
			return v.Name
		}
	}
	return field
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// parsePrefix accepts a CIDR or a single address.
func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return p, errors.New("want a CIDR such as 10.0.0.0/8 or an IP address")
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, errors.New("want a CIDR such as 10.0.0.0/8 or an IP address")
	}
	return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
}
