package main

// "Sign in with hakit SSO": the shop as an OpenID Connect relying party
// (authorization code flow with PKCE S256, state and nonce kept in the
// shop's session, the ID token verified against the provider's keys).

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/oauth2"

	"hakit.dev/hakit"
)

// Session keys of the SSO login: one per flow in progress (the state's
// flow, consumed by the callback) and the ID token of the sign-in, the
// provider's logout hint.
const (
	keySSOFlowPrefix = "sso.flow."
	keySSOIDToken    = "sso.id_token"
)

const (
	// ssoFlowTTL is how long a started sign-in may take at the provider.
	ssoFlowTTL = 15 * time.Minute
	// ssoMaxFlows is the most flows a session keeps (tabs started
	// together); the oldest is dropped beyond.
	ssoMaxFlows = 5
	// ssoDiscoveryTTL is how long the provider's discovery document is
	// used before it is fetched again: also how long the button may still
	// send browsers to a provider that went down (after that, the 503
	// page).
	ssoDiscoveryTTL = time.Minute
	// ssoRetryAfterFailure is how long a failed discovery is remembered:
	// while the provider is down, clicks get the 503 page at once instead
	// of each waiting for a connection.
	ssoRetryAfterFailure = 2 * time.Second
	// ssoDiscoveryTimeout bounds one fetch of the discovery document.
	ssoDiscoveryTimeout = 5 * time.Second
)

// ssoFlow is a sign-in in progress, stored in the session under its
// state.
type ssoFlow struct {
	Nonce    string    `json:"nonce"`
	Verifier string    `json:"verifier"` // the PKCE code verifier
	Next     string    `json:"next"`
	Started  time.Time `json:"started"`
}

// errSSOUnavailable is the provider not answering its discovery document.
var errSSOUnavailable = errors.New("the SSO provider cannot be reached")

// ssoClient is the shop's client of the provider. It does not contact the
// provider until the first sign-in (the provider may be down when the shop
// starts); the discovery document is then cached for ssoDiscoveryTTL.
// The provider's keys (JWKS) are fetched by go-oidc when an ID token names
// a key it does not know yet.
type ssoClient struct {
	cfg    ssoConfig
	http   *http.Client
	log    *slog.Logger
	logins *prometheus.CounterVec // sign-ins by result

	mu         sync.Mutex
	ttl        time.Duration // ssoDiscoveryTTL
	provider   *oidc.Provider
	endSession string
	fetched    time.Time
	failed     time.Time
	failErr    error
}

func newSSOClient(cfg ssoConfig, log *slog.Logger) *ssoClient {
	cfg.BaseURL = strings.TrimRight(cfg.BaseURL, "/")
	return &ssoClient{
		cfg:  cfg,
		http: &http.Client{Timeout: 10 * time.Second},
		log:  log,
		ttl:  ssoDiscoveryTTL,
		logins: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shop_sso_logins_total",
			Help: "Sign-ins with the SSO provider by result: ok, created, linked, or why it failed.",
		}, []string{"result"}),
	}
}

// redirectURL is the shop's registered redirect URI.
func (c *ssoClient) redirectURL() string { return c.cfg.BaseURL + "/login/sso/callback" }

// discover returns the provider and the OAuth 2 configuration, from the
// cache or fetched now.
func (c *ssoClient) discover(ctx context.Context) (*oidc.Provider, *oauth2.Config, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	if c.provider == nil || now.Sub(c.fetched) >= c.ttl {
		if !c.failed.IsZero() && now.Sub(c.failed) < ssoRetryAfterFailure {
			return nil, nil, fmt.Errorf("%w: %v", errSSOUnavailable, c.failErr)
		}
		fctx, cancel := context.WithTimeout(ctx, ssoDiscoveryTimeout)
		p, err := oidc.NewProvider(oidc.ClientContext(fctx, c.http), c.cfg.Issuer)
		cancel()
		if err != nil {
			c.log.Warn("sso: the provider's discovery document cannot be fetched", "issuer", c.cfg.Issuer, "err", err)
			c.provider, c.failed, c.failErr = nil, time.Now(), err
			return nil, nil, fmt.Errorf("%w: %v", errSSOUnavailable, err)
		}
		var meta struct {
			EndSession string `json:"end_session_endpoint"`
		}
		_ = p.Claims(&meta)
		c.provider, c.endSession, c.fetched, c.failed, c.failErr = p, meta.EndSession, time.Now(), time.Time{}, nil
	}
	ep := c.provider.Endpoint()
	ep.AuthStyle = oauth2.AuthStyleInHeader
	return c.provider, &oauth2.Config{
		ClientID: c.cfg.ClientID, ClientSecret: c.cfg.ClientSecret, Endpoint: ep,
		RedirectURL: c.redirectURL(), Scopes: []string{oidc.ScopeOpenID, "email", "profile"},
	}, nil
}

// logoutURL is the provider's end_session URL for an ID token, or "" when
// the provider has none or cannot be reached.
func (c *ssoClient) logoutURL(ctx context.Context, idToken string) string {
	if _, _, err := c.discover(ctx); err != nil {
		return ""
	}
	c.mu.Lock()
	end := c.endSession
	c.mu.Unlock()
	if end == "" {
		return ""
	}
	sep := "?"
	if strings.Contains(end, "?") {
		sep = "&"
	}
	return end + sep + url.Values{
		"id_token_hint":            {idToken},
		"client_id":                {c.cfg.ClientID},
		"post_logout_redirect_uri": {c.cfg.BaseURL + "/"},
	}.Encode()
}

// ssoStart begins "Sign in with hakit SSO": a new flow (state, nonce,
// PKCE verifier) in the session, and the browser sent to the provider.
// Without SHOP_SSO_* the route does not exist (404); while the provider
// cannot be reached it answers the login page with a 503 and a note.
func (s *shop) ssoStart(w http.ResponseWriter, r *http.Request) {
	if s.sso == nil {
		http.NotFound(w, r)
		return
	}
	ctx := r.Context()
	next := safeNext(r.URL.Query().Get("next"))
	_, conf, err := s.sso.discover(ctx)
	if err != nil {
		s.sso.logins.WithLabelValues("unreachable").Inc()
		w.Header().Set("Retry-After", "30")
		s.render(w, r, http.StatusServiceUnavailable, "login.html", map[string]any{
			"Next": next,
			"Error": "hakit SSO cannot be reached right now. Try again in a minute, " +
				"or sign in with your e-mail and password.",
		})
		return
	}
	state := rand.Text()
	f := ssoFlow{Nonce: rand.Text(), Verifier: oauth2.GenerateVerifier(), Next: next, Started: time.Now()}
	s.pruneSSOFlows(ctx)
	b, err := json.Marshal(f)
	if err != nil {
		hakit.Error(w, r, err)
		return
	}
	s.sessions.Put(ctx, keySSOFlowPrefix+state, string(b))
	http.Redirect(w, r, conf.AuthCodeURL(state, oauth2.S256ChallengeOption(f.Verifier), oidc.Nonce(f.Nonce)), http.StatusFound)
}

// pruneSSOFlows drops the session's expired flows, and the oldest beyond
// ssoMaxFlows-1 to make room for a new one.
func (s *shop) pruneSSOFlows(ctx context.Context) {
	type kept struct {
		key     string
		started time.Time
	}
	var live []kept
	for _, k := range s.sessions.Keys(ctx) {
		if !strings.HasPrefix(k, keySSOFlowPrefix) {
			continue
		}
		var f ssoFlow
		if json.Unmarshal([]byte(s.sessions.GetString(ctx, k)), &f) != nil || time.Since(f.Started) > ssoFlowTTL {
			s.sessions.Remove(ctx, k)
			continue
		}
		live = append(live, kept{k, f.Started})
	}
	for len(live) >= ssoMaxFlows {
		oldest := 0
		for i, f := range live {
			if f.started.Before(live[oldest].started) {
				oldest = i
			}
		}
		s.sessions.Remove(ctx, live[oldest].key)
		live = append(live[:oldest], live[oldest+1:]...)
	}
}

// ssoError answers a sign-in that failed with a page saying why; nothing
// was changed.
func (s *shop) ssoError(w http.ResponseWriter, r *http.Request, status int, result, msg string) {
	s.sso.logins.WithLabelValues(result).Inc()
	s.render(w, r, status, "sso_error.html", map[string]any{"Status": status, "Message": msg})
}

// errorCode matches an OAuth error code worth showing (RFC 6749 §4.1.2.1
// allows printable ASCII; the page shows only plain codes).
var errorCode = regexp.MustCompile(`^[a-z_]{1,64}$`)

// ssoCallback is the redirect URI (SHOP_BASE_URL + "/login/sso/callback"):
// the state must name a flow of this session, which it consumes (a
// replayed callback finds none); the code is redeemed with the PKCE
// verifier, the ID token verified with its nonce, the account found or
// made, and the user signed in (Login renews the session's token).
func (s *shop) ssoCallback(w http.ResponseWriter, r *http.Request) {
	if s.sso == nil {
		http.NotFound(w, r)
		return
	}
	ctx := r.Context()
	q := r.URL.Query()
	state := q.Get("state")
	var f ssoFlow
	raw := ""
	if state != "" && len(state) <= 128 {
		raw = s.sessions.PopString(ctx, keySSOFlowPrefix+state)
	}
	if raw == "" || json.Unmarshal([]byte(raw), &f) != nil || time.Since(f.Started) > ssoFlowTTL {
		s.ssoError(w, r, http.StatusBadRequest, "bad_state",
			"This sign-in link is not valid here: it was used already, it expired, or it was started in another browser. "+
				"Nothing was changed; start again from the sign-in page.")
		return
	}
	if e := q.Get("error"); e != "" {
		if e == "access_denied" {
			s.ssoError(w, r, http.StatusForbidden, "access_denied",
				"You did not allow the shop to use your hakit SSO account, so you are not signed in.")
			return
		}
		if !errorCode.MatchString(e) {
			e = "unknown error"
		}
		s.ssoError(w, r, http.StatusBadGateway, "provider_error",
			"hakit SSO could not sign you in ("+e+"). Nothing was changed; try again.")
		return
	}
	code := q.Get("code")
	if code == "" {
		s.ssoError(w, r, http.StatusBadRequest, "no_code", "The answer from hakit SSO has no code. Start again from the sign-in page.")
		return
	}
	p, conf, err := s.sso.discover(ctx)
	if err != nil {
		w.Header().Set("Retry-After", "30")
		s.ssoError(w, r, http.StatusServiceUnavailable, "unreachable",
			"hakit SSO cannot be reached right now. Try again in a minute, or sign in with your e-mail and password.")
		return
	}
	octx := oidc.ClientContext(ctx, s.sso.http)
	tok, err := conf.Exchange(octx, code, oauth2.VerifierOption(f.Verifier))
	if err != nil {
		var re *oauth2.RetrieveError
		if errors.As(err, &re) {
			s.log.Warn("sso: code refused", "err", err)
			s.ssoError(w, r, http.StatusBadRequest, "code_refused",
				"hakit SSO did not accept this sign-in (it was used already or it expired). Nothing was changed; start again.")
			return
		}
		s.log.Warn("sso: token endpoint", "err", err)
		s.ssoError(w, r, http.StatusServiceUnavailable, "unreachable",
			"hakit SSO cannot be reached right now. Try again in a minute.")
		return
	}
	rawID, _ := tok.Extra("id_token").(string)
	idt, err := p.Verifier(&oidc.Config{ClientID: s.cfg.SSO.ClientID}).Verify(octx, rawID)
	if err == nil && idt.Nonce != f.Nonce {
		err = errors.New("nonce mismatch")
	}
	if err != nil {
		s.log.Warn("sso: ID token refused", "err", err)
		s.ssoError(w, r, http.StatusBadGateway, "bad_id_token",
			"The answer from hakit SSO did not verify, so you are not signed in. Start again.")
		return
	}
	claims := ssoClaims{Subject: idt.Subject}
	_ = idt.Claims(&claims)
	if claims.Email == "" { // the profile from userinfo, whose sub must be the ID token's
		info, err := p.UserInfo(octx, oauth2.StaticTokenSource(tok))
		if err != nil || info.Subject != idt.Subject {
			s.log.Warn("sso: userinfo", "err", err)
			s.ssoError(w, r, http.StatusBadGateway, "userinfo",
				"hakit SSO did not tell the shop your e-mail address, so you are not signed in. Try again.")
			return
		}
		_ = info.Claims(&claims)
		claims.Subject = idt.Subject
	}
	u, result, err := s.ssoAccount(ctx, idt.Issuer, claims)
	switch {
	case errors.Is(err, errSSOEmailTaken):
		s.ssoError(w, r, http.StatusConflict, "email_taken",
			"The shop has an account for "+claims.Email+" already, and hakit SSO has not verified that this address is yours, "+
				"so the two are not joined. Sign in with your e-mail and password, or verify the address at hakit SSO and try again.")
		return
	case errors.Is(err, errSSONoEmail):
		s.ssoError(w, r, http.StatusUnprocessableEntity, "no_email",
			"hakit SSO did not share a usable e-mail address, which the shop needs for order mail. Nothing was changed.")
		return
	case err != nil:
		hakit.Error(w, r, err)
		return
	}
	if err := s.signIn(ctx, u); err != nil {
		hakit.Error(w, r, err)
		return
	}
	s.sessions.Put(ctx, keySSOIDToken, rawID)
	s.sso.logins.WithLabelValues(result).Inc()
	switch result {
	case "created":
		s.sessions.Flash(ctx, "info", "Welcome, "+u.Name+"! Your shop account is ready, signed in with hakit SSO.")
	case "linked":
		s.sessions.Flash(ctx, "info", "hakit SSO now signs you in to your shop account "+u.Email+".")
	}
	http.Redirect(w, r, f.Next, http.StatusSeeOther)
}

// ssoClaims are the claims the shop reads, from the ID token or userinfo.
type ssoClaims struct {
	Subject       string `json:"sub"`
	Email         string `json:"email"`
	EmailVerified any    `json:"email_verified"` // a boolean; some providers send "true"
	Name          string `json:"name"`
}

// verified reports whether the provider says the e-mail is the user's.
func (c ssoClaims) verified() bool {
	switch v := c.EmailVerified.(type) {
	case bool:
		return v
	case string:
		b, err := strconv.ParseBool(v)
		return err == nil && b
	}
	return false
}

var (
	errSSOEmailTaken = errors.New("sso: a local account has the address, which the provider has not verified")
	errSSONoEmail    = errors.New("sso: the provider gave no usable e-mail address")
)

// ssoAccount finds the user of (issuer, sub), or links or creates one:
//   - an identity known already signs in its user ("ok");
//   - else, a local account with the same address is linked only when the
//     provider says the address is verified ("linked"); an unverified
//     address that an account has is errSSOEmailTaken, and nothing changes;
//   - else a new account without a password is made ("created").
//
// Two first sign-ins of one identity racing: the second's insert conflicts
// and the resolution runs again, finding the first's.
func (s *shop) ssoAccount(ctx context.Context, issuer string, c ssoClaims) (user, string, error) {
	email := strings.ToLower(strings.TrimSpace(c.Email))
	name := strings.TrimSpace(strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return -1
		}
		return r
	}, c.Name))
	if name == "" {
		name, _, _ = strings.Cut(email, "@")
	}
	if r := []rune(name); len(r) > 100 {
		name = string(r[:100])
	}
	for attempt := 0; ; attempt++ {
		var u user
		result := "ok"
		err := s.db.Write(ctx, func(tx pgx.Tx) error {
			result = "ok"
			err := tx.QueryRow(ctx, `SELECT u.id, u.email, u.name, u.is_admin FROM sso_identities i JOIN users u ON u.id = i.user_id
				WHERE i.issuer = $1 AND i.subject = $2`, issuer, c.Subject).Scan(&u.ID, &u.Email, &u.Name, &u.IsAdmin)
			if err == nil {
				return nil
			}
			if !errors.Is(err, pgx.ErrNoRows) {
				return err
			}
			if !validEmail(email) {
				return errSSONoEmail
			}
			err = tx.QueryRow(ctx, "SELECT id, email, name, is_admin FROM users WHERE email = $1 FOR UPDATE", email).
				Scan(&u.ID, &u.Email, &u.Name, &u.IsAdmin)
			switch {
			case err == nil && !c.verified():
				return errSSOEmailTaken
			case err == nil:
				result = "linked"
			case errors.Is(err, pgx.ErrNoRows):
				result = "created"
				u = user{Email: email, Name: name}
				if err := tx.QueryRow(ctx, "INSERT INTO users (email, name) VALUES ($1, $2) RETURNING id", email, name).Scan(&u.ID); err != nil {
					return err
				}
			default:
				return err
			}
			_, err = tx.Exec(ctx, "INSERT INTO sso_identities (issuer, subject, user_id) VALUES ($1, $2, $3)", issuer, c.Subject, u.ID)
			return err
		})
		if attempt == 0 && (isUniqueViolation(err, "sso_identities_pkey") || isUniqueViolation(err, "users_email_key")) {
			continue // a concurrent first sign-in won: resolve again
		}
		return u, result, err
	}
}
