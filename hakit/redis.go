package hakit

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"hakit.dev/health"
)

// RedisConfig says which Redis the app uses, for sessions and jobs. Set
// one of URL (a single server), SentinelAddrs with MasterName (a master
// with replicas watched by Sentinels: what production wants), or
// ClusterAddrs (Redis Cluster). The zero value is no Redis.
type RedisConfig struct {
	// URL is a single server [HAKIT_REDIS_URL]:
	// redis://[user:password@]host:port[/db], rediss://… for TLS, or
	// unix:///path/to/redis.sock, with go-redis's query options
	// (?dial_timeout=3s). A single server has no replica: set NoReplicas
	// unless it is the master of replicas it reaches itself.
	URL string

	// SentinelAddrs are the Sentinels' host:port addresses
	// [HAKIT_REDIS_SENTINELS, comma-separated]; MasterName is the name
	// they monitor the master under [HAKIT_REDIS_MASTER]. The client
	// asks them for the master and follows a failover.
	SentinelAddrs []string
	MasterName    string

	// ClusterAddrs are some nodes of a Redis Cluster
	// [HAKIT_REDIS_CLUSTER, comma-separated]. Writes are confirmed on the
	// replicas of the shard that took them (sessions) or of every master
	// (jobs); a Cluster without replicas needs NoReplicas.
	ClusterAddrs []string

	// Username and Password authenticate to the Redis servers
	// [HAKIT_REDIS_USERNAME, HAKIT_REDIS_PASSWORD]; with URL, they
	// replace the URL's own. SentinelPassword authenticates to the
	// Sentinels, when they have their own requirepass
	// [HAKIT_REDIS_SENTINEL_PASSWORD]. Default to none.
	Username, Password string
	SentinelPassword   string

	// TLS connects with TLS [HAKIT_REDIS_TLS], verifying the servers'
	// certificates against the system's roots, or with TLSConfig when it
	// is set (a private CA, client certificates). A rediss:// URL turns
	// it on. Defaults to false.
	TLS       bool
	TLSConfig *tls.Config

	// NoReplicas declares a Redis without a replica to wait for
	// [HAKIT_REDIS_NO_REPLICAS]: a single server on a developer's
	// machine, or a Cluster without replicas. It is the one knob for both uses of
	// replicas: durable session changes (logins, logouts) are not
	// confirmed with WAIT (session.RedisOptions.WaitReplicas -1), and the
	// jobs outbox relay and scheduler count a task as enqueued once the
	// master has it (jobs.ClientConfig.NoReplicas). Defaults to false:
	// a replica must confirm them, which needs one (Sentinel, or a
	// replica per Cluster master).
	NoReplicas bool
}

// Configured reports whether c names a Redis.
func (c RedisConfig) Configured() bool {
	return c.URL != "" || len(c.SentinelAddrs) > 0 || len(c.ClusterAddrs) > 0
}

// problems lists what is wrong with c; name turns a field name into the
// name the user gave it (the field, or its environment variable).
func (c RedisConfig) problems(name func(field string) string) []error {
	var errs []error
	n := 0
	for _, set := range []bool{c.URL != "", len(c.SentinelAddrs) > 0, len(c.ClusterAddrs) > 0} {
		if set {
			n++
		}
	}
	if n > 1 {
		errs = append(errs, fmt.Errorf("%s, %s and %s are exclusive: set one", name("URL"), name("SentinelAddrs"), name("ClusterAddrs")))
	}
	if c.URL != "" {
		u, err := url.Parse(c.URL)
		if err == nil {
			_, err = redis.ParseURL(c.URL)
		}
		if err == nil && u.Scheme != "unix" {
			if h := u.Hostname(); h == "" || strings.Contains(h, ":") && !strings.HasPrefix(u.Host, "[") {
				err = errors.New("bad host")
			}
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s=%s: %w (want redis://[user:password@]host:port[/db], rediss://… or unix:///path)",
				name("URL"), redactURL(c.URL), unwrapURLError(err)))
		}
	}
	hostPorts := func(field string, addrs []string) {
		for i, addr := range addrs {
			if _, port, err := net.SplitHostPort(addr); err != nil || port == "" {
				// Not shown: it may be a password, or hold one (user:pw@host:port).
				errs = append(errs, fmt.Errorf("%s: entry %d of %d: want host:port %s", name(field), i+1, len(addrs), valueHidden))
			}
		}
	}
	hostPorts("SentinelAddrs", c.SentinelAddrs)
	hostPorts("ClusterAddrs", c.ClusterAddrs)
	switch {
	case len(c.SentinelAddrs) > 0 && c.MasterName == "":
		errs = append(errs, fmt.Errorf("%s needs %s, the name the Sentinels monitor the master under", name("SentinelAddrs"), name("MasterName")))
	case len(c.SentinelAddrs) == 0 && c.MasterName != "":
		errs = append(errs, fmt.Errorf("%s is set without %s", name("MasterName"), name("SentinelAddrs")))
	}
	if c.SentinelPassword != "" && len(c.SentinelAddrs) == 0 {
		errs = append(errs, fmt.Errorf("%s is set without %s", name("SentinelPassword"), name("SentinelAddrs")))
	}
	if !c.Configured() {
		var set []string
		for _, f := range []struct {
			field string
			set   bool
		}{{"Username", c.Username != ""}, {"Password", c.Password != ""}, {"TLS", c.TLS || c.TLSConfig != nil}, {"NoReplicas", c.NoReplicas}} {
			if f.set {
				set = append(set, name(f.field))
			}
		}
		if len(set) > 0 {
			errs = append(errs, fmt.Errorf("%s set but no Redis: set %s, %s or %s", strings.Join(set, ", "), name("URL"), name("SentinelAddrs"), name("ClusterAddrs")))
		}
	}
	return errs
}

// client makes the go-redis client c describes; c is valid.
func (c RedisConfig) client() redis.UniversalClient {
	tlsConfig := c.TLSConfig
	if c.TLS && tlsConfig == nil {
		tlsConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	switch {
	case len(c.SentinelAddrs) > 0:
		return redis.NewFailoverClient(&redis.FailoverOptions{
			MasterName: c.MasterName, SentinelAddrs: c.SentinelAddrs, SentinelPassword: c.SentinelPassword,
			Username: c.Username, Password: c.Password, TLSConfig: tlsConfig,
		})
	case len(c.ClusterAddrs) > 0:
		// A dead master refuses connections rather than answering MOVED,
		// and go-redis reloads the slot map on MOVED only, or every 60s:
		// reload it every second so a promoted replica is used at once.
		return redis.NewClusterClient(&redis.ClusterOptions{
			Addrs: c.ClusterAddrs, Username: c.Username, Password: c.Password, TLSConfig: tlsConfig,
			ClusterStateReloadInterval: time.Second,
		})
	}
	opts, _ := redis.ParseURL(c.URL) // validated
	if c.Username != "" {
		opts.Username = c.Username
	}
	if c.Password != "" {
		opts.Password = c.Password
	}
	// rediss:// made a TLS config already (with its skip_verify): only
	// TLSConfig replaces it. An empty ServerName is the address's host
	// (tls.DialWithDialer).
	if c.TLSConfig != nil || opts.TLSConfig == nil {
		opts.TLSConfig = tlsConfig
	}
	return redis.NewClient(opts)
}

// Redis returns the app's Redis client, made by [New] from Config.Redis,
// or nil without one: a *redis.Client for a URL, a Sentinel failover
// client (also a *redis.Client) for SentinelAddrs, a *redis.ClusterClient
// for ClusterAddrs. Sessions ([App.Sessions]) and jobs ([App.Worker],
// [App.Relay], [App.Scheduler], [App.Jobs]) share it; use it for the
// app's own keys too. The app closes it last, when Run returns, after
// every component stopped and its checks ended: do not close it yourself.
func (a *App) Redis() redis.UniversalClient { return a.rdb }

// newRedis makes the client of cfg.Redis, if any, and its readiness check.
func (a *App) newRedis() {
	if !a.cfg.Redis.Configured() {
		return
	}
	a.rdb = a.cfg.Redis.client()
	var replicasSeen atomic.Bool // the replicas were counted once
	a.checker.Add(health.Check{Name: "redis", Func: func(ctx context.Context) error {
		if err := a.rdb.Ping(ctx).Err(); err != nil {
			return err
		}
		if !a.cfg.Redis.NoReplicas && len(a.cfg.Redis.ClusterAddrs) == 0 && replicasSeen.CompareAndSwap(false, true) {
			if !a.warnNoReplicas(ctx) {
				replicasSeen.Store(false) // not counted: next check
			}
		}
		return nil
	}})
}

// warnNoReplicas logs a warning when the Redis master has no replica
// while Config.Redis.NoReplicas is off: then every durable session change
// waits for a confirmation that times out, and the jobs outbox relay never
// deletes a row. It reports whether it could count the replicas.
func (a *App) warnNoReplicas(ctx context.Context) bool {
	info, err := a.rdb.Info(ctx, "replication").Result()
	if err != nil {
		a.log.Debug("hakit: redis: INFO replication", "err", err)
		return false
	}
	for line := range strings.Lines(info) {
		if n, ok := strings.CutPrefix(strings.TrimSpace(line), "connected_slaves:"); ok {
			if n == "0" {
				a.log.Warn("hakit: the Redis master has no replica, and HAKIT_REDIS_NO_REPLICAS (Config.Redis.NoReplicas) is off: " +
					"durable session changes wait for a replica's confirmation until it times out, and the jobs outbox relay keeps every row; " +
					"set HAKIT_REDIS_NO_REPLICAS=true for a Redis without replicas, or add a replica")
			}
			return true
		}
	}
	return false
}

// closeRedis closes the Redis client, last of all.
func (a *App) closeRedis() {
	if a.rdb == nil {
		return
	}
	if err := a.rdb.Close(); err != nil && !errors.Is(err, redis.ErrClosed) {
		a.log.Warn("hakit: closing redis", "err", err)
	}
	a.log.Debug("hakit: redis client closed")
}

// valueHidden stands for a value an error message does not show: it may
// hold a secret (a password put in the wrong variable, a URL whose
// password could not be found to remove).
const valueHidden = "(value hidden)"

// redactURL returns s for an error message: quoted, with its user
// information and query values replaced by xxxxx, when s is a
// well-formed URL: a scheme, then a host (or a unix:// path); else
// [valueHidden].
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.Scheme == "" || u.Opaque != "" || u.Host == "" && (u.Scheme != "unix" || u.Path == "") {
		return valueHidden
	}
	if u.User != nil {
		u.User = url.User("xxxxx")
	}
	if u.RawQuery != "" {
		q := u.Query()
		for k := range q {
			q[k] = []string{"xxxxx"}
		}
		u.RawQuery = q.Encode()
	}
	u.Fragment, u.RawFragment = "", ""
	return strconv.Quote(u.String())
}

// unwrapURLError drops url.Error's quote of the URL (it may hold a
// password).
func unwrapURLError(err error) error {
	if ue := (*url.Error)(nil); errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
