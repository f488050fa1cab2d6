// Command shop is hakit's example e-commerce app: a catalog with images in
// S3, a cart in the session, an idempotent checkout that never oversells,
// order mail through the outbox, and local or SSO accounts. Its
// configuration is the environment (HAKIT_* and SHOP_*, see README.md).
package main

import (
	"context"
	"embed"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"log"
	"os"

	"hakit.dev/hakit"
	"hakit.dev/jobs"
	"hakit.dev/session"
	"hakit.dev/uploads"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

//go:embed templates static
var assets embed.FS

func main() {
	ctx := context.Background()
	hcfg, cfg, err := loadConfig(os.Getenv, os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		return // -h: the flags and the variables are printed
	}
	if err != nil {
		log.Fatal(err) // every bad variable, HAKIT_* and SHOP_*, at once
	}
	app, _, err := newShop(ctx, hcfg, cfg)
	if err != nil {
		log.Fatal(err)
	}
	if err := app.Run(ctx); err != nil {
		os.Exit(1) // the log says why
	}
}

// loadConfig reads hakit's variables and the shop's own, then the flags
// (-h lists both and returns flag.ErrHelp).
func loadConfig(getenv func(string) string, args []string) (hakit.Config, config, error) {
	env := hakit.NewEnv(getenv)
	hcfg := env.Config()
	cfg := config{
		SMTPAddr:      env.String("SHOP_SMTP_ADDR", "", "SMTP server for order mail, host:port; empty: mail is logged, not sent"),
		MailFrom:      env.String("SHOP_MAIL_FROM", "shop@example.test", "sender of order mail"),
		Seed:          env.Bool("SHOP_SEED", false, "seed categories and products on start if the catalog is empty"),
		Dev:           env.Bool("SHOP_DEV", false, "development: session cookie over plain http"),
		AdminEmail:    env.String("SHOP_ADMIN_EMAIL", "", "the admin account's e-mail, created or updated at start"),
		AdminPassword: env.String("SHOP_ADMIN_PASSWORD", "", "the admin account's password"),
		SSO: ssoConfig{
			Issuer:       env.String("SHOP_SSO_ISSUER", "", "OpenID Connect issuer URL for \"Sign in with hakit SSO\"; empty: no SSO"),
			ClientID:     env.String("SHOP_SSO_CLIENT_ID", "", "the shop's client ID at the SSO issuer"),
			ClientSecret: env.String("SHOP_SSO_CLIENT_SECRET", "", "the shop's client secret at the SSO issuer"),
			BaseURL:      env.String("SHOP_BASE_URL", "", "the shop's public URL, for the SSO redirect URI"),
		},
	}

	flags := flag.NewFlagSet("shop", flag.ContinueOnError)
	seed := flags.Bool("seed", false, "seed the catalog on start if it is empty (as SHOP_SEED=true)")
	flags.Usage = func() {
		w := flags.Output()
		fmt.Fprintf(w, "Usage: shop [-seed]\n\nFlags:\n")
		flags.PrintDefaults()
		fmt.Fprintf(w, "\nEnvironment:\n")
		for _, v := range env.Vars() {
			fmt.Fprintf(w, "  %s (default %q)\n    \t%s\n", v.Name, v.Default, v.Help)
		}
	}
	if err := flags.Parse(args); err != nil {
		return hakit.Config{}, config{}, err
	}
	cfg.Seed = cfg.Seed || *seed

	if len(hcfg.DatabaseURLs) == 0 {
		env.Invalid("HAKIT_DATABASE_URL_1", errors.New("the shop keeps its catalog and orders in PostgreSQL: set it"))
	}
	if (cfg.AdminEmail == "") != (cfg.AdminPassword == "") {
		env.Invalid("SHOP_ADMIN_PASSWORD", errors.New("SHOP_ADMIN_EMAIL and SHOP_ADMIN_PASSWORD go together"))
	}
	if err := cfg.SSO.validate(); err != nil {
		env.Invalid("SHOP_SSO_ISSUER", err)
	}
	if err := env.Err(); err != nil {
		return hakit.Config{}, config{}, err
	}
	return hcfg, cfg, nil
}

// newShop wires the shop into a hakit.App: migrations, sessions, the jobs
// worker and outbox relay (with Redis), uploads (with S3), routes.
func newShop(ctx context.Context, hcfg hakit.Config, cfg config) (*hakit.App, *shop, error) {
	sub, err := fs.Sub(migrationFiles, "migrations")
	if err != nil {
		return nil, nil, err
	}
	hcfg.Migrations = sub
	app, err := hakit.New(ctx, hcfg)
	if err != nil {
		return nil, nil, err
	}
	s := &shop{cfg: cfg, db: app.DB(), outbox: jobs.NewOutbox(""), log: app.Logger()}
	s.writeOrder = s.db.Write
	if s.pages, err = s.parseTemplates(); err != nil {
		return nil, nil, fmt.Errorf("templates: %w", err)
	}
	if s.sessions, err = app.Sessions(session.Config{Insecure: cfg.Dev}); err != nil {
		return nil, nil, err
	}
	if cfg.SSO.enabled() {
		s.sso = newSSOClient(cfg.SSO, s.log)
		if err := app.Registry().Register(s.sso.logins); err != nil {
			return nil, nil, err
		}
	}
	if hcfg.S3.Bucket != "" {
		if s.files, err = app.Uploads(uploads.Config{MaxSize: maxImageBytes}); err != nil {
			return nil, nil, err
		}
	}
	if app.Redis() != nil {
		worker, err1 := app.Worker(jobs.WorkerConfig{})
		_, err2 := app.Relay(jobs.RelayConfig{})
		sched, err3 := app.Scheduler(jobs.SchedulerConfig{})
		if err := errors.Join(err1, err2, err3); err != nil {
			return nil, nil, err
		}
		s.registerJobs(worker)
		s.registerImageJobs(worker)
		if err := s.schedule(sched); err != nil {
			return nil, nil, err
		}
	} else {
		s.log.Warn("no Redis (HAKIT_REDIS_*): order mail and image jobs wait in the outbox until a worker runs")
	}
	app.SetErrorPage(s.errorPage)
	app.OnStart(s.start)
	s.routes(app.Router())
	return app, s, nil
}
