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
)

// Config configures an [App]. The zero value is usable: every field
// documents its default. [ConfigFromEnv] fills the fields that have an
// environment variable (named in brackets); the others are set in code.
type Config struct {
	// Addr is the address to listen on [HAKIT_ADDR]. Defaults to ":8080".
	Addr string

	// DrainDelay is how long the instance keeps serving after /readyz
	// turned 503, so the load balancer stops sending it new connections
	// before it stops accepting them [HAKIT_DRAIN_DELAY]. Set it to at
	// least the load balancer's check interval × fall count (HAProxy
	// inter 1s fall 2: 2s; a Kubernetes readinessProbe periodSeconds ×
	// failureThreshold). Defaults to 5s. A negative value skips the delay
	// (plain http.Server.Shutdown), which fails requests behind most load
	// balancers; it exists for measurements.
	DrainDelay time.Duration

	// ShutdownTimeout bounds the rest of the shutdown: in-flight requests,
	// then stopping components and closing pools [HAKIT_SHUTDOWN_TIMEOUT].
	// Defaults to 25s. DrainDelay + ShutdownTimeout must fit within the
	// orchestrator's grace period (Kubernetes terminationGracePeriodSeconds,
	// 30s by default).
	ShutdownTimeout time.Duration

	// RequestTimeout is the deadline put on every request's context
	// [HAKIT_REQUEST_TIMEOUT]. Handlers that respect their context stop
	// then. Defaults to 30s; negative means none.
	RequestTimeout time.Duration

	// MaxBodyBytes limits request bodies [HAKIT_MAX_BODY_BYTES]; larger
	// ones get 413. A handler can raise it for its request with
	// [SetBodyLimit] (uploads). Defaults to 1 MiB; negative means none.
	MaxBodyBytes int64

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

	// ReadHeaderTimeout is http.Server's ReadHeaderTimeout
	// [HAKIT_READ_HEADER_TIMEOUT]. Defaults to 10s.
	ReadHeaderTimeout time.Duration

	// IdleTimeout is http.Server's IdleTimeout: how long a kept-alive
	// connection may idle [HAKIT_IDLE_TIMEOUT]. Defaults to 120s (keep it
	// above the load balancer's idle timeout for server connections).
	IdleTimeout time.Duration

	// DatabaseURLs are the PostgreSQL nodes' connection strings
	// [HAKIT_DATABASE_URLS, comma- or space-separated]. When set, the app
	// makes a dbrouter.Router ([App.DB]), checks it in /readyz, exports
	// its metrics, runs Migrations on the primary and closes it last at
	// shutdown. Defaults to none: no database.
	DatabaseURLs []string

	// Migrations, if set, holds golang-migrate migrations
	// (NNN_name.up.sql, NNN_name.down.sql) at its root, run up on the
	// primary before the instance turns ready. Instances starting
	// together take turns on a PostgreSQL advisory lock, so they migrate
	// once. Needs DatabaseURLs.
	Migrations fs.FS

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
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: c.LogLevel}))
	}
	return c
}

// validate lists every problem of c at once.
func (c Config) validate() error {
	var errs []error
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		errs = append(errs, fmt.Errorf("bad Addr %q: %w", c.Addr, err))
	}
	if c.ShutdownTimeout < 0 {
		errs = append(errs, fmt.Errorf("negative ShutdownTimeout (%s)", c.ShutdownTimeout))
	}
	if c.ReadHeaderTimeout < 0 || c.IdleTimeout < 0 {
		errs = append(errs, errors.New("negative ReadHeaderTimeout or IdleTimeout"))
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
		{"HAKIT_DRAIN_DELAY", "DrainDelay", "5s", "time between /readyz turning 503 and the listener closing; >= LB check interval x fall; negative: none"},
		{"HAKIT_SHUTDOWN_TIMEOUT", "ShutdownTimeout", "25s", "bound on finishing in-flight requests and stopping components"},
		{"HAKIT_REQUEST_TIMEOUT", "RequestTimeout", "30s", "deadline on each request's context; negative: none"},
		{"HAKIT_MAX_BODY_BYTES", "MaxBodyBytes", "1048576", "request body limit (413 above); negative: none"},
		{"HAKIT_TRUSTED_PROXIES", "TrustedProxies", "", "comma-separated CIDRs/IPs whose X-Forwarded-* headers are honoured"},
		{"HAKIT_TRUSTED_ORIGINS", "TrustedOrigins", "", "comma-separated origins allowed past the CSRF protection"},
		{"HAKIT_READ_HEADER_TIMEOUT", "ReadHeaderTimeout", "10s", "http.Server ReadHeaderTimeout"},
		{"HAKIT_IDLE_TIMEOUT", "IdleTimeout", "120s", "http.Server IdleTimeout"},
		{"HAKIT_DATABASE_URLS", "DatabaseURLs", "", "PostgreSQL node connection strings, comma- or space-separated"},
		{"HAKIT_LOG_LEVEL", "LogLevel", "info", "debug, info, warn or error"},
	}
}

// ConfigFromEnv reads the configuration from environment variables (see
// [EnvVars]) through getenv (os.Getenv when nil). Unset variables leave
// their field at the zero value, so defaults apply. Every malformed
// variable is reported, all in one error.
func ConfigFromEnv(getenv func(string) string) (Config, error) {
	if getenv == nil {
		getenv = os.Getenv
	}
	var c Config
	var errs []error
	bad := func(name, v string, err error) {
		errs = append(errs, fmt.Errorf("%s=%q: %w", name, v, err))
	}
	durations := []struct {
		name string
		dst  *time.Duration
	}{
		{"HAKIT_DRAIN_DELAY", &c.DrainDelay}, {"HAKIT_SHUTDOWN_TIMEOUT", &c.ShutdownTimeout},
		{"HAKIT_REQUEST_TIMEOUT", &c.RequestTimeout}, {"HAKIT_READ_HEADER_TIMEOUT", &c.ReadHeaderTimeout},
		{"HAKIT_IDLE_TIMEOUT", &c.IdleTimeout},
	}
	for _, d := range durations {
		v := getenv(d.name)
		if v == "" {
			continue
		}
		x, err := time.ParseDuration(v)
		if err != nil {
			bad(d.name, v, errors.New("want a duration such as 5s or 500ms"))
			continue
		}
		if x == 0 {
			x = -1 // an explicit 0 means none, not the default
		}
		*d.dst = x
	}
	c.Addr = getenv("HAKIT_ADDR")
	if v := getenv("HAKIT_MAX_BODY_BYTES"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			bad("HAKIT_MAX_BODY_BYTES", v, errors.New("want a number of bytes"))
		} else {
			c.MaxBodyBytes = n
		}
	}
	for _, p := range splitList(getenv("HAKIT_TRUSTED_PROXIES")) {
		pfx, err := parsePrefix(p)
		if err != nil {
			bad("HAKIT_TRUSTED_PROXIES", p, err)
			continue
		}
		c.TrustedProxies = append(c.TrustedProxies, pfx)
	}
	c.TrustedOrigins = splitList(getenv("HAKIT_TRUSTED_ORIGINS"))
	c.DatabaseURLs = strings.Fields(strings.ReplaceAll(getenv("HAKIT_DATABASE_URLS"), ",", " "))
	if v := getenv("HAKIT_LOG_LEVEL"); v != "" {
		if err := c.LogLevel.UnmarshalText([]byte(v)); err != nil {
			bad("HAKIT_LOG_LEVEL", v, errors.New("want debug, info, warn or error"))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return c, fmt.Errorf("hakit: bad environment: %w", err)
	}
	return c, nil
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
