// Package lab runs the shop as it runs in production, on this machine:
// PostgreSQL under Patroni, Redis with Sentinels, MinIO, Mailpit as the
// SMTP server, and shop instances (the real binary, as subprocesses)
// behind HAProxy — a hatest.AppLab. It breaks them the way production
// breaks (SIGTERM and restart, kill -9, a lost database leader, a lost
// Redis master, S3 gone) and checks afterwards what a shop must never do: lose an acknowledged
// order, place one twice, oversell, mail twice.
//
// The shop's chaos test and its benchmark command (cmd/shopbench) share
// it:
//
//	bin, _ := hatest.BuildApp(ctx, ".", dir)
//	l, _ := lab.Start(ctx, lab.Options{ShopBin: bin})
//	defer l.Close()
//	load, _ := customer.Start(ctx, customer.Config{BaseURL: l.URL})
//	_ = l.RollingRestart(ctx)
//	load.Stop()
//	report, _ := l.Verify(ctx, lab.Expect{Orders: load.Orders(), Submitted: load.Submitted(), Stock: stock})
package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"hakit.dev/hatest"
)

// Options configure a lab. Only ShopBin is required.
type Options struct {
	// ShopBin is the shop binary (see hatest.BuildApp).
	ShopBin string
	// Instances is how many shop instances run behind HAProxy. Defaults
	// to 3.
	Instances int
	// PGNodes is the size of the Patroni cluster. Defaults to 2.
	PGNodes int
	// DrainDelay is every instance's HAKIT_DRAIN_DELAY: at least the 2 s
	// HAProxy (inter 1s, fall 2) takes to mark a draining instance down.
	// Defaults to 3s.
	DrainDelay time.Duration
	// AdminEmail and AdminPassword are the shop's admin account. Default
	// to admin@example.test and "lab-admin-password".
	AdminEmail, AdminPassword string
	// LogLevel is every instance's HAKIT_LOG_LEVEL. Defaults to "warn":
	// the access log of a load is large.
	LogLevel string
	// Env is added to every instance's environment (KEY=value), after
	// the lab's own.
	Env []string
	// Output receives every instance's output lines, prefixed with its
	// name. Nil discards them.
	Output io.Writer
	// Logf, if set, receives the lab's progress lines.
	Logf func(format string, args ...any)
}

// Lab is a running shop with its services. Its methods are safe for
// concurrent use, but act on one instance at a time.
type Lab struct {
	// AppLab is the services (PG, Redis, MinIO, Mail), the shop
	// instances (shop0, shop1, …) behind HAProxy at URL, and the chaos
	// steps.
	*hatest.AppLab

	opts Options
}

// Start starts the lab (see hatest.StartAppLab: the services, HAProxy,
// the first instance alone, so it runs the migrations and seeds the
// catalog, then the others) and returns when HAProxy has every instance
// up. On error everything started is stopped.
func Start(ctx context.Context, opts Options) (*Lab, error) {
	if opts.ShopBin == "" {
		return nil, errors.New("lab: Options.ShopBin is empty")
	}
	if opts.AdminEmail == "" {
		opts.AdminEmail = "admin@example.test"
	}
	if opts.AdminPassword == "" {
		opts.AdminPassword = "lab-admin-password"
	}
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}
	l := &Lab{opts: opts}
	var err error
	l.AppLab, err = hatest.StartAppLab(ctx, hatest.AppLabOptions{
		Bin:        opts.ShopBin,
		Name:       "shop",
		Instances:  opts.Instances,
		Postgres:   hatest.PatroniOptions{Nodes: opts.PGNodes},
		MinIO:      &hatest.MinIOOptions{Bucket: "shop"},
		Mailpit:    &hatest.MailpitOptions{},
		DrainDelay: opts.DrainDelay,
		LogLevel:   opts.LogLevel,
		Output:     opts.Output,
		Logf:       opts.Logf,
		// The shop's own variables, after hakit's.
		Env: func(app *hatest.AppLab, _ *hatest.AppInstance) []string {
			return append([]string{
				"SHOP_SMTP_ADDR=" + app.Mail.SMTPAddr,
				"SHOP_SEED=true",
				"SHOP_DEV=true",
				"SHOP_ADMIN_EMAIL=" + opts.AdminEmail,
				"SHOP_ADMIN_PASSWORD=" + opts.AdminPassword,
			}, opts.Env...)
		},
	})
	if err != nil {
		return nil, fmt.Errorf("lab: %w", err)
	}
	return l, nil
}

// Admin returns the admin account's e-mail and password.
func (l *Lab) Admin() (email, password string) { return l.opts.AdminEmail, l.opts.AdminPassword }

// Close stops the instances and every service. It is safe to call more
// than once and on a lab that did not finish starting.
func (l *Lab) Close() error {
	if l.AppLab == nil {
		return nil
	}
	return l.AppLab.Close()
}
