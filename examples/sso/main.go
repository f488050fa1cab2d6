// Command sso is an OpenID Connect provider built on hakit: any number of
// instances behind a load balancer share their state in PostgreSQL
// (through dbrouter) and their login sessions in Redis, so one can die at
// any moment. Each site gets its own pairwise subject for a user, so sites
// cannot correlate their users. See README.md.
//
// Usage:
//
//	sso                         serve (configuration: HAKIT_* and SSO_*)
//	sso client add [flags]      register a client; prints its ID and secret
//	sso client list             list the clients
//	sso client delete ID        delete a client and what it was issued
//	sso keys rotate             publish the next signing key now
package main

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/mail"
	"net/url"
	"os"
	"slices"
	"time"

	"github.com/alexedwards/argon2id"
	"github.com/jackc/pgx/v5"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
	"golang.org/x/text/language"

	"hakit.dev/dbrouter"
	"hakit.dev/hakit"
	"hakit.dev/jobs"
	"hakit.dev/session"
)

//go:embed migrations/*.sql
var migrations embed.FS

//go:embed templates
var templatesFS embed.FS

//go:embed static
var staticFS embed.FS

// config is the provider's own configuration (SSO_*).
type config struct {
	issuer      string
	secret      string
	dev         bool
	admins      []string
	bootstrap   string
	argon       argon2id.Params
	keys        keyConfig
	life        lifetimes
	checkSector bool

	throttleWindow              time.Duration
	throttleAccount, throttleIP int

	mail                      mailConfig
	requireVerified           bool
	mailPerAddress, mailPerIP int
}

func readConfig(env *hakit.Env) config {
	c := config{
		issuer: env.Required("SSO_ISSUER", "the issuer: the provider's public URL, e.g. https://login.example.com"),
		secret: env.Required("SSO_SECRET", "at least 32 characters, the same on every instance: encrypts the signing keys and the opaque tokens"),
		dev:    env.Bool("SSO_DEV", false, "development: http issuer, session cookie over plain http"),
		admins: env.List("SSO_ADMIN_EMAILS", nil, "e-mail addresses of the accounts that may use /admin/clients"),
		bootstrap: env.String("SSO_BOOTSTRAP_CLIENTS", "", `clients registered (or updated) at start, JSON: `+
			`[{"id":"shop","secret":"…","redirect_uris":["https://shop.example/login/sso/callback"]}]`),
		checkSector: env.Bool("SSO_CHECK_SECTOR_URI", true, "fetch a client's sector_identifier_uri at registration and check it lists the redirect URIs"),
	}
	c.throttleWindow = env.Duration("SSO_THROTTLE_WINDOW", 15*time.Minute, "window of the failed-attempt counters")
	c.throttleAccount = env.Int("SSO_THROTTLE_ACCOUNT", 10, "failed logins per account (or client authentications per client) per window before 429")
	c.throttleIP = env.Int("SSO_THROTTLE_IP", 100, "failed logins and client authentications per client address per window before 429")
	c.argon = argon2id.Params{
		Memory:      uint32(env.Int("SSO_ARGON2_MEMORY_KIB", 64*1024, "argon2id memory per password hash, KiB (RFC 9106: 65536)")),
		Iterations:  uint32(env.Int("SSO_ARGON2_TIME", 3, "argon2id passes")),
		Parallelism: uint8(env.Int("SSO_ARGON2_THREADS", 2, "argon2id lanes")),
		SaltLength:  16,
		KeyLength:   32,
	}
	c.keys = keyConfig{
		Period: env.Duration("SSO_KEY_ROTATION", 24*time.Hour, "how long a signing key signs before the next takes over"),
		Lead:   env.Duration("SSO_KEY_LEAD", time.Hour, "how long a new signing key is published before it signs"),
	}
	c.life = lifetimes{
		Code:         env.Duration("SSO_CODE_TTL", time.Minute, "lifetime of an authorization code"),
		AccessToken:  env.Duration("SSO_ACCESS_TOKEN_TTL", 15*time.Minute, "lifetime of an access token"),
		RefreshToken: env.Duration("SSO_REFRESH_TOKEN_TTL", 30*24*time.Hour, "lifetime of a refresh token"),
		IDToken:      env.Duration("SSO_ID_TOKEN_TTL", time.Hour, "lifetime of an ID token"),
		LogoutQuestion: env.Duration("SSO_LOGOUT_QUESTION_TTL", 5*time.Minute,
			"how long the question a client's sign-out may lead to (another account's, or an earlier sign-in's) can be answered"),
	}
	c.keys.Retain = max(c.life.IDToken, c.life.AccessToken) + time.Minute
	c.mail = mailConfig{
		SMTPAddr:  env.String("SSO_SMTP_ADDR", "", "SMTP server for verification and password-reset mail, host:port (no TLS, no authentication: a local relay); required unless SSO_DEV, where without it mail is logged"),
		From:      env.String("SSO_MAIL_FROM", "", "sender address of the provider's mail; default no-reply@<the issuer's host>"),
		VerifyTTL: env.Duration("SSO_VERIFY_TTL", 48*time.Hour, "how long an e-mail verification link works"),
		ResetTTL:  env.Duration("SSO_RESET_TTL", time.Hour, "how long a password-reset link works"),
	}
	c.requireVerified = env.Bool("SSO_REQUIRE_VERIFIED_EMAIL", false, "an account must verify its e-mail address before it can sign in to a client")
	c.mailPerAddress = env.Int("SSO_MAIL_THROTTLE_ADDRESS", 5, "mails (verification again, password reset) per e-mail address per SSO_THROTTLE_WINDOW before 429")
	c.mailPerIP = env.Int("SSO_MAIL_THROTTLE_IP", 30, "mails asked for per client address per SSO_THROTTLE_WINDOW before 429")
	if c.mail.From == "" {
		c.mail.From = "no-reply@localhost"
		if u, err := url.Parse(c.issuer); err == nil && u.Hostname() != "" {
			c.mail.From = "no-reply@" + u.Hostname()
		}
	}
	if c.mail.SMTPAddr == "" && !c.dev {
		env.Invalid("SSO_SMTP_ADDR", errors.New("required (verification and password-reset mail); only SSO_DEV logs mail instead"))
	} else if c.mail.SMTPAddr != "" {
		if _, _, err := net.SplitHostPort(c.mail.SMTPAddr); err != nil {
			env.Invalid("SSO_SMTP_ADDR", fmt.Errorf("want host:port: %w", err))
		}
	}
	if _, err := mail.ParseAddress(c.mail.From); err != nil {
		env.Invalid("SSO_MAIL_FROM", err)
	}
	if c.mail.VerifyTTL <= 0 || c.mail.ResetTTL <= 0 {
		env.Invalid("SSO_RESET_TTL", errors.New("SSO_VERIFY_TTL and SSO_RESET_TTL must be positive"))
	}
	if c.mailPerAddress < 1 || c.mailPerIP < 1 {
		env.Invalid("SSO_MAIL_THROTTLE_ADDRESS", errors.New("SSO_MAIL_THROTTLE_ADDRESS and SSO_MAIL_THROTTLE_IP must be at least 1"))
	}
	if len(c.secret) > 0 && len(c.secret) < 32 {
		env.Invalid("SSO_SECRET", errors.New("needs at least 32 characters"))
	}
	if c.argon.Memory < 8*1024 && !c.dev {
		env.Invalid("SSO_ARGON2_MEMORY_KIB", errors.New("below 8192 KiB is for tests and development only (set SSO_DEV)"))
	}
	if c.life.LogoutQuestion <= 0 {
		env.Invalid("SSO_LOGOUT_QUESTION_TTL", errors.New("must be positive"))
	}
	if c.keys.Lead <= 0 || c.keys.Period <= c.keys.Lead {
		env.Invalid("SSO_KEY_ROTATION", errors.New("must be longer than SSO_KEY_LEAD, which must be positive"))
	}
	return c
}

// derive makes a 32-byte key for one purpose from SSO_SECRET.
func derive(secret, purpose string) [32]byte {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(purpose))
	var k [32]byte
	copy(k[:], m.Sum(nil))
	return k
}

func main() {
	ctx := context.Background()
	env := hakit.NewEnv(nil)
	hcfg := env.Config()
	cfg := readConfig(env)
	if err := env.Err(); err != nil {
		log.Fatal(err) // every bad variable, HAKIT_* and SSO_*, at once
	}
	if len(os.Args) > 1 {
		if err := command(ctx, hcfg, cfg, os.Args[1:], os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "sso:", err)
			os.Exit(2)
		}
		return
	}
	if err := serve(ctx, hcfg, cfg); err != nil {
		os.Exit(1) // the log says why
	}
}

func serve(ctx context.Context, hcfg hakit.Config, cfg config) error {
	hcfg.Migrations = migrations
	app, err := hakit.New(ctx, hcfg)
	if err != nil {
		log.Println(err)
		return err
	}
	lg := app.Logger()
	slog.SetDefault(lg) // zitadel's op logs through the default logger
	fail := func(err error) error { lg.Error("start", "err", err); return err }
	if app.DB() == nil {
		return fail(errors.New("a database is required (HAKIT_DATABASE_URL_1, …)"))
	}
	sessions, err := app.Sessions(session.Config{Insecure: cfg.dev, CookieName: "sso"})
	if err != nil {
		return fail(err)
	}
	worker, err1 := app.Worker(jobs.WorkerConfig{})
	sched, err2 := app.Scheduler(jobs.SchedulerConfig{})
	_, err3 := app.Relay(jobs.RelayConfig{}) // the outbox: mail asked for in a transaction
	if err := errors.Join(err1, err2, err3); err != nil {
		return fail(fmt.Errorf("jobs need Redis (HAKIT_REDIS_*): %w", err))
	}
	kek := derive(cfg.secret, "sso signing keys")
	keys := newKeyring(app.DB(), kek[:], cfg.keys, lg)
	th := &throttle{rdb: app.Redis(), window: cfg.throttleWindow, perKey: int64(cfg.throttleAccount),
		perIP: int64(cfg.throttleIP), log: lg}
	st := &storage{db: app.DB(), keys: keys, life: cfg.life, sessions: sessions, throttle: th, log: lg}

	app.OnStart(func(ctx context.Context) error { // after the migrations
		salt, err := pairwiseSalt(ctx, app.DB())
		if err != nil {
			return err
		}
		st.salt = salt
		if _, err := keys.rotate(ctx, false); err != nil {
			return err
		}
		return bootstrapClients(ctx, app.DB(), cfg.bootstrap, lg)
	})
	jobs.Handle(worker, "sso:rotate-keys", func(ctx context.Context, _ struct{}) error {
		_, err := keys.rotate(ctx, false)
		return err
	})
	jobs.Handle(worker, "sso:cleanup", func(ctx context.Context, _ struct{}) error { return cleanup(ctx, app.DB()) })
	ml := &mailer{db: app.DB(), outbox: jobs.NewOutbox(""), key: derive(cfg.secret, "sso mail links"),
		issuer: cfg.issuer, cfg: cfg.mail, log: lg}
	jobs.Handle(worker, mailTask, ml.send)
	jobs.Handle(worker, resetTask, ml.reset)
	if cfg.mail.SMTPAddr == "" {
		lg.Warn("SSO_SMTP_ADDR unset (SSO_DEV): verification and password-reset mail is logged, links included, not sent")
	}
	every := max(min(cfg.keys.Lead/4, time.Hour), time.Second)
	err1 = sched.Add("sso-rotate-keys", "@every "+every.String(), "sso:rotate-keys", nil, jobs.Options{})
	err2 = sched.Add("sso-cleanup", "@every 1h", "sso:cleanup", nil, jobs.Options{})
	if err := errors.Join(err1, err2); err != nil {
		return fail(err)
	}

	provider, err := newProvider(cfg, st)
	if err != nil {
		return fail(err)
	}
	pages, err := parsePages()
	if err != nil {
		return fail(err)
	}
	dummy, err := argon2id.CreateHash("no such account", &cfg.argon)
	if err != nil {
		return fail(err)
	}
	wb := &web{st: st, db: app.DB(), sessions: sessions, pages: pages, provider: provider,
		callback: op.AuthCallbackURL(provider), argon: &cfg.argon, admins: cfg.admins,
		checkSector: cfg.checkSector, hc: &http.Client{Timeout: 10 * time.Second}, log: lg, dummyHash: dummy,
		mail: ml, requireVerified: cfg.requireVerified, mailPerAddress: int64(cfg.mailPerAddress), mailPerIP: int64(cfg.mailPerIP)}
	app.SetErrorPage(func(w http.ResponseWriter, r *http.Request, e *hakit.HTTPError) {
		pages.Render(w, r, e.Status, "error.html", page{Title: http.StatusText(e.Status), Data: e})
	})

	r := app.Router()
	static, _ := fs.Sub(staticFS, "static")
	r.Handle("/static/*", http.StripPrefix("/static/", staticHandler(static)))
	r.Get("/.well-known/openid-configuration", discovery(provider, st))
	wb.routes(r)
	for _, path := range []string{"/oauth/token", "/oauth/introspect", "/revoke"} {
		r.With(th.tokenThrottle).Post(path, provider.ServeHTTP)
	}
	r.Mount("/", provider) // /authorize, /oauth/token, /userinfo, /keys, /end_session, …
	return app.Run(ctx)
}

func staticHandler(fsys fs.FS) http.Handler {
	h := http.FileServerFS(fsys)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=3600")
		h.ServeHTTP(w, r)
	})
}

func newProvider(cfg config, st *storage) (*op.Provider, error) {
	opts := []op.Option{}
	if cfg.dev {
		opts = append(opts, op.WithAllowInsecure())
	}
	return op.NewProvider(&op.Config{
		CryptoKey:                derive(cfg.secret, "sso opaque tokens"),
		DefaultLogoutRedirectURI: "/logged-out",
		CodeMethodS256:           true,
		AuthMethodPost:           true,
		GrantTypeRefreshToken:    true,
		SupportedUILocales:       []language.Tag{language.English},
		SupportedScopes:          []string{oidc.ScopeOpenID, oidc.ScopeProfile, oidc.ScopeEmail, oidc.ScopeOfflineAccess},
	}, st, op.StaticIssuer(cfg.issuer), opts...)
}

// discovery serves the provider's metadata, with what zitadel's own
// document gets wrong for this provider: pairwise subjects, S256 only,
// the code flow only, the sid claim. Neither front- nor back-channel
// logout is offered, so frontchannel_logout_session_supported and
// backchannel_logout_session_supported stay unset (false).
func discovery(p *op.Provider, st *storage) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx := op.ContextWithIssuer(r.Context(), p.IssuerFromRequest(r))
		d := op.CreateDiscoveryConfig(ctx, p, st)
		d.SubjectTypesSupported = []string{subjectPublic, subjectPairwise}
		d.CodeChallengeMethodsSupported = []oidc.CodeChallengeMethod{oidc.CodeChallengeMethodS256}
		d.ResponseTypesSupported = []string{string(oidc.ResponseTypeCode)}
		d.GrantTypesSupported = []oidc.GrantType{oidc.GrantTypeCode, oidc.GrantTypeRefreshToken}
		d.ResponseModesSupported = []string{"query"}
		if !slices.Contains(d.ClaimsSupported, "sid") {
			d.ClaimsSupported = append(d.ClaimsSupported, "sid")
		}
		d.DeviceAuthorizationEndpoint = ""
		d.CheckSessionIframe = ""
		d.RequestParameterSupported = false
		d.RequestObjectSigningAlgValuesSupported = nil
		w.Header().Set("Access-Control-Allow-Origin", "*")
		op.Discover(w, d)
	}
}

// pairwiseSalt returns the deployment's salt, making it on the very first
// start (whichever instance gets there first; the others read it).
func pairwiseSalt(ctx context.Context, db *dbrouter.Router) ([]byte, error) {
	var salt []byte
	err := db.Write(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "INSERT INTO sso_settings (id, pairwise_salt) VALUES (1, $1) ON CONFLICT DO NOTHING",
			randomBytes(32)); err != nil {
			return err
		}
		return tx.QueryRow(ctx, "SELECT pairwise_salt FROM sso_settings WHERE id = 1").Scan(&salt)
	})
	return salt, err
}

// bootstrapClients registers the clients of SSO_BOOTSTRAP_CLIENTS, or
// updates them to what the variable says (their secret included).
func bootstrapClients(ctx context.Context, db *dbrouter.Router, js string, lg *slog.Logger) error {
	if js == "" {
		return nil
	}
	var specs []clientSpec
	if err := json.Unmarshal([]byte(js), &specs); err != nil {
		return fmt.Errorf("SSO_BOOTSTRAP_CLIENTS: %w", err)
	}
	for _, cs := range specs {
		if cs.ID == "" || (!cs.Public && cs.Secret == "") {
			return fmt.Errorf("SSO_BOOTSTRAP_CLIENTS: every client needs an id, and a secret unless public")
		}
		sector, err := cs.validate(ctx, nil, false)
		if err != nil {
			return fmt.Errorf("SSO_BOOTSTRAP_CLIENTS: %w", err)
		}
		if _, err := registerClient(ctx, db, cs, sector, true); err != nil {
			return fmt.Errorf("SSO_BOOTSTRAP_CLIENTS: %s: %w", cs.ID, err)
		}
		lg.Info("bootstrap client", "client_id", cs.ID, "sector", sector)
	}
	return nil
}

// cleanup deletes what can no longer be used: auth requests over a day
// old, tokens expired for a day, mailed links expired for a week.
func cleanup(ctx context.Context, db *dbrouter.Router) error {
	return db.Write(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "DELETE FROM tokens WHERE expires_at < now() - interval '1 day'"); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "DELETE FROM auth_requests WHERE created_at < now() - interval '1 day'"); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, "DELETE FROM mail_tokens WHERE expires_at < now() - interval '7 days'")
		return err
	})
}

// stdoutWriter is where commands print; a parameter for tests.
type stdoutWriter = io.Writer
