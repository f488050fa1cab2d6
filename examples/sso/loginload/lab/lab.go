// Package lab runs the SSO provider as it runs in production, on this
// machine: PostgreSQL under Patroni in synchronous mode (an acknowledged
// commit is on the standby), Redis with a replica and three Sentinels,
// and provider instances (the real program, as subprocesses) behind
// HAProxy — a hatest.AppLab. It breaks them the way production breaks — a
// rolling restart, kill -9 of an instance, the loss of the PostgreSQL
// leader, the loss of the Redis master — while a login load runs, and
// checks after each that every account acknowledged so far still signs in.
//
// The provider's chaos test and its benchmark command (cmd/ssobench)
// share it:
//
//	l, _ := lab.Start(ctx, lab.Options{Bin: bin})
//	defer l.Close()
//	res, _ := l.Chaos(ctx, lab.ChaosOptions{Load: loginload.Config{Users: 6, Duration: 3 * time.Minute}})
package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"hakit.dev/examples/sso/loginload"
	"hakit.dev/hatest"
)

// Options configure a lab. Only Bin is required.
type Options struct {
	// Bin is the provider's program (see hatest.BuildModule).
	Bin string
	// Env is added to every instance's environment (KEY=value) after
	// the lab's own: e.g. the cheap argon2id parameters of a test, or the
	// variable that makes a test binary run the provider.
	Env []string
	// Instances is how many provider instances run behind HAProxy.
	// Defaults to 3.
	Instances int
	// DrainDelay is every instance's HAKIT_DRAIN_DELAY: at least the 2 s
	// HAProxy (inter 1s, fall 2) takes to mark a draining instance down.
	// Defaults to 3s.
	DrainDelay time.Duration
	// Nice is the instances' scheduling niceness (nice(1)). In
	// production PostgreSQL, etcd and Redis run on machines of their
	// own; here they share a few cores with instances hashing passwords
	// (argon2id, 64 MiB and 3 passes a login), which would otherwise
	// starve Patroni's and the Sentinels' heartbeats into failovers
	// nobody asked for. Defaults to 10; negative: run at the lab's own.
	Nice int
	// LogLevel is every instance's HAKIT_LOG_LEVEL. Defaults to "warn".
	LogLevel string
	// Output receives every instance's output lines, prefixed with its
	// name. Nil discards them.
	Output io.Writer
	// Logf, if set, receives the lab's progress lines.
	Logf func(format string, args ...any)
}

// Lab is a running provider with its services.
type Lab struct {
	// AppLab is the services, the provider instances (sso0, sso1, …)
	// behind HAProxy and the chaos steps; its URL is the issuer.
	*hatest.AppLab
	// Client is the confidential client the lab registers for the load.
	Client loginload.Client

	opts Options
}

// The lab's fixed secrets: a lab is a test bed, never a deployment.
const (
	labSecret    = "lab-secret-0123456789-abcdefghijklmnopq"
	clientSecret = "lab-client-secret-0123456789-0123456789"
)

// Start starts the lab (see hatest.StartAppLab: the services, HAProxy,
// the first instance alone to migrate and make the salt and the first
// signing key, then the others) and returns when HAProxy has every
// instance up. On error everything started is stopped.
func Start(ctx context.Context, opts Options) (*Lab, error) {
	if opts.Bin == "" {
		return nil, errors.New("lab: Options.Bin is empty")
	}
	if opts.Nice == 0 {
		opts.Nice = 10
	}
	if opts.Nice > 19 {
		return nil, fmt.Errorf("lab: Nice %d: want at most 19", opts.Nice)
	}
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}
	l := &Lab{opts: opts, Client: loginload.Client{ID: "lab-app", Secret: clientSecret, RedirectURI: "https://app.lab.example/cb"}}
	boot, err := json.Marshal([]map[string]any{{
		"id": l.Client.ID, "name": "Lab app", "secret": l.Client.Secret,
		"redirect_uris": []string{l.Client.RedirectURI},
	}})
	if err != nil {
		return nil, err
	}
	l.AppLab, err = hatest.StartAppLab(ctx, hatest.AppLabOptions{
		Bin:        opts.Bin,
		Name:       "sso",
		Instances:  opts.Instances,
		Postgres:   hatest.PatroniOptions{Nodes: 2, Synchronous: true},
		HAProxy:    hatest.HAProxyOptions{Redispatch: true},
		DrainDelay: opts.DrainDelay,
		LogLevel:   opts.LogLevel,
		Nice:       max(opts.Nice, 0),
		Output:     opts.Output,
		Logf:       opts.Logf,
		// The provider's own variables, after hakit's.
		Env: func(app *hatest.AppLab, _ *hatest.AppInstance) []string {
			return append([]string{
				"HAKIT_TRUSTED_PROXIES=127.0.0.1",
				"SSO_ISSUER=" + app.URL,
				"SSO_SECRET=" + labSecret,
				"SSO_DEV=true", // an http issuer on loopback
				"SSO_BOOTSTRAP_CLIENTS=" + string(boot),
			}, opts.Env...)
		},
	})
	if err != nil {
		return nil, fmt.Errorf("lab: %w", err)
	}
	return l, nil
}

// Close stops the instances and every service. It is safe to call more
// than once and on a lab that did not finish starting.
func (l *Lab) Close() error {
	if l.AppLab == nil {
		return nil
	}
	return l.AppLab.Close()
}
