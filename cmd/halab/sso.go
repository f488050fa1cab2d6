package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"

	"hakit.dev/hatest"
)

const (
	// ssoDatabase is the SSO provider's database on the lab's PostgreSQL.
	ssoDatabase = "sso"
	// shopClientID and demoClientID are the clients registered at the
	// provider's start (SSO_BOOTSTRAP_CLIENTS): the shop's "Sign in with
	// hakit SSO", and the demo relying party (examples/sso/cmd/demo-rp),
	// which the login load uses too.
	shopClientID = "shop"
	demoClientID = "demo"
	// demoRPURL is where examples/sso/cmd/demo-rp serves by default.
	demoRPURL = "http://127.0.0.1:8090"
)

// ssoLab runs the SSO provider's instances (examples/sso) behind their
// own HAProxy, on the lab's PostgreSQL (database sso) and a Redis of its
// own, and the login load on demand.
type ssoLab struct {
	*appGroup
	// redis is the provider's Redis (a master, a replica, three
	// Sentinels). Two apps on one Redis lose no task (a worker hands back
	// a type it has no handler for) and HAKIT_JOBS_NAMESPACE keeps their
	// queues apart; a Redis each keeps their failure domains apart, so a
	// Redis failover in the dashboard hits one app at a time.
	redis      *hatest.RedisCluster
	secret     string // SSO_SECRET
	shopSecret string
	demoSecret string
	load       *loginLoad
}

// build compiles the provider and makes its secrets.
func (s *ssoLab) build(ctx context.Context, ssoDir string) error {
	dir, err := moduleDir(ssoDir, "sso")
	if err != nil {
		return err
	}
	if err := s.appGroup.build(ctx, dir, [2]string{"sso", "."}); err != nil {
		return err
	}
	s.secret = rand.Text() + rand.Text()
	s.shopSecret = rand.Text() + rand.Text()
	s.demoSecret = rand.Text() + rand.Text()
	return nil
}

// issuer is the provider's public URL: its HAProxy.
func (s *ssoLab) issuer() string { return s.lb.URL }

// createDatabase makes the provider's database on the Patroni leader and
// waits until every running node has it: a replica replays the CREATE a
// moment after the leader's commit, and an instance that connects to it
// before then fails to start.
func (s *ssoLab) createDatabase(ctx context.Context) error {
	leader, err := s.lab.pg.Leader(ctx)
	if err != nil {
		return err
	}
	if err := leader.Exec(ctx, "CREATE DATABASE "+ssoDatabase); err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for _, n := range s.lab.pg.Nodes {
		if !n.Running() {
			continue
		}
		for {
			c, err := pgx.Connect(wctx, withDatabase(n.DSN(), ssoDatabase))
			if err == nil {
				c.Close(wctx)
				break
			}
			select {
			case <-wctx.Done():
				return fmt.Errorf("%s has no database %s yet: %w", n.Name, ssoDatabase, err)
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	return nil
}

// clients is SSO_BOOTSTRAP_CLIENTS: the shop (when the lab runs it) and
// the demo relying party.
func (s *ssoLab) clients() string {
	type spec struct {
		ID             string   `json:"id"`
		Name           string   `json:"name"`
		Secret         string   `json:"secret"`
		RedirectURIs   []string `json:"redirect_uris"`
		PostLogoutURIs []string `json:"post_logout_redirect_uris"`
	}
	specs := []spec{{ID: demoClientID, Name: "Demo app", Secret: s.demoSecret,
		RedirectURIs: []string{demoRPURL + "/callback"}, PostLogoutURIs: []string{demoRPURL + "/"}}}
	if sh := s.lab.shop; sh != nil {
		specs = append(specs, spec{ID: shopClientID, Name: "hakit shop", Secret: s.shopSecret,
			RedirectURIs: []string{sh.lb.URL + "/login/sso/callback"}, PostLogoutURIs: []string{sh.lb.URL + "/"}})
	}
	b, _ := json.Marshal(specs)
	return string(b)
}

// ssoEnv is an instance's environment.
func (s *ssoLab) ssoEnv(in *appInstance) []string {
	l := s.lab
	env := []string{
		"HAKIT_ADDR=" + in.addr,
		"HAKIT_DRAIN_DELAY=" + appDrainDelay.String(),
		"HAKIT_REDIS_SENTINELS=" + strings.Join(s.redis.SentinelAddrs(), ","),
		"HAKIT_REDIS_MASTER=" + s.redis.MasterName,
		"SSO_ISSUER=" + s.issuer(),
		"SSO_SECRET=" + s.secret,
		// http issuer and cookies on 127.0.0.1: a lab, not production.
		"SSO_DEV=true",
		"SSO_ADMIN_EMAILS=admin@example.test",
		"SSO_BOOTSTRAP_CLIENTS=" + s.clients(),
		"SSO_SMTP_ADDR=" + l.mail.SMTPAddr,
		"SSO_MAIL_FROM=hakit SSO <sso@example.test>",
		// OWASP's smallest argon2id (19 MiB, 2 passes, 1 lane) rather
		// than RFC 9106's 64 MiB × 3: the login load shares two cores
		// with everything else of the lab.
		"SSO_ARGON2_MEMORY_KIB=19456",
		"SSO_ARGON2_TIME=2",
		"SSO_ARGON2_THREADS=1",
	}
	for i, dsn := range l.pg.DSNs() {
		env = append(env, fmt.Sprintf("HAKIT_DATABASE_URL_%d=%s", i+1, withDatabase(dsn, ssoDatabase)))
	}
	return env
}

// withDatabase is dsn naming database db.
func withDatabase(dsn, db string) string {
	u, err := url.Parse(dsn)
	if err != nil {
		return dsn
	}
	u.Path = "/" + db
	return u.String()
}

// table adds the provider's rows to the endpoint table.
func (s *ssoLab) table(tw *tabwriter.Writer) {
	fmt.Fprintf(tw, "sso (OpenID provider)\t%s\tthrough its HAProxy (stats %s); discovery %s/.well-known/openid-configuration; register admin@example.test for %s/admin/clients\n",
		s.issuer(), s.lb.StatsURL, s.issuer(), s.issuer())
	fmt.Fprintf(tw, "sso demo client\tclient_id %s\tclient_secret %s; redirect %s/callback: DEMO_ISSUER=%s DEMO_CLIENT_ID=%s DEMO_CLIENT_SECRET=%s go run ./cmd/demo-rp (in examples/sso)\n",
		demoClientID, s.demoSecret, demoRPURL, s.issuer(), demoClientID, s.demoSecret)
	if s.lab.shop != nil {
		fmt.Fprintf(tw, "sso shop client\tclient_id %s\tclient_secret %s; the shop's \"Sign in with hakit SSO\"\n", shopClientID, s.shopSecret)
	}
	fmt.Fprintf(tw, "sso database\t%s\tthe lab's PostgreSQL, database %s\n", withDatabase(s.lab.pg.MultiHostDSN(), ssoDatabase), ssoDatabase)
	master, _ := s.redis.Master(context.Background())
	for _, n := range s.redis.Nodes {
		role := "replica"
		if n == master {
			role = "master"
		}
		if !n.Running() {
			role = "down"
		}
		fmt.Fprintf(tw, "sso redis %s\t%s\t%s\n", n.Name, n.Addr(), role)
	}
	fmt.Fprintf(tw, "sso redis sentinels\t%s\tmaster name %q (the SSO's own Redis)\n", strings.Join(s.redis.SentinelAddrs(), ","), s.redis.MasterName)
	instanceRows(tw, s.appGroup)
}

// loadOn starts the login load through the provider's HAProxy.
func (s *ssoLab) loadOn() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.load != nil {
		return errStillOn
	}
	s.load = startLoginLoad(loginLoadConfig{
		Issuer: s.issuer(), ClientID: demoClientID, ClientSecret: s.demoSecret, RedirectURI: demoRPURL + "/callback",
		Users: 4, Rate: 3, Interval: 2 * loadIntervalSecond,
		Sample: func(smp loadSample) {
			s.lab.loadSample(smp)
			s.lab.say(smp.line())
		},
	})
	return nil
}

func (s *ssoLab) loadRunning() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.load != nil
}

func (s *ssoLab) loadOff() error {
	s.mu.Lock()
	ld := s.load
	s.load = nil
	s.mu.Unlock()
	if ld == nil {
		return errStillOff
	}
	ld.stop()
	return nil
}

// close stops the load, the instances and the provider's Redis.
func (s *ssoLab) close() error {
	_ = s.loadOff()
	err := s.stop()
	if s.redis != nil {
		if e := s.redis.Close(); err == nil {
			err = e
		}
	}
	return err
}
