// Package demorp is a tiny relying party of the provider, for demos and
// browser tests: a page with a "Sign in with hakit SSO" button, the code
// flow with PKCE, state and nonce, a page showing what the ID token says,
// and RP-initiated logout. It keeps its flows and sign-ins in memory, so it
// runs as one instance; a real relying party keeps them in its session.
package demorp

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
)

// Config configures the relying party.
type Config struct {
	// Issuer is the provider's issuer URL. Required.
	Issuer string
	// ClientID and ClientSecret are the client's registration. Required.
	ClientID, ClientSecret string
	// BaseURL is where the relying party is served; its redirect URI is
	// BaseURL + "/callback" and its post-logout URI BaseURL + "/".
	// Required.
	BaseURL string
	// HTTPClient talks to the provider. Defaults to a client with a 10s
	// timeout.
	HTTPClient *http.Client
}

// RP is the relying party's http.Handler.
type RP struct {
	cfg Config

	mu       sync.Mutex
	provider *oidc.Provider // found on first use, so the RP may start first
	flows    map[string]flow
	users    map[string]signedIn // by cookie
}

type flow struct {
	nonce, verifier string
	started         time.Time
}

type signedIn struct {
	Subject, Email, Name, IDToken string
	Claims                        string
}

// New returns the relying party. It does not contact the provider yet.
func New(cfg Config) (*RP, error) {
	if cfg.Issuer == "" || cfg.ClientID == "" || cfg.ClientSecret == "" || cfg.BaseURL == "" {
		return nil, fmt.Errorf("demorp: Issuer, ClientID, ClientSecret and BaseURL are required")
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	return &RP{cfg: cfg, flows: map[string]flow{}, users: map[string]signedIn{}}, nil
}

func (rp *RP) oauth(ctx context.Context) (*oidc.Provider, *oauth2.Config, error) {
	rp.mu.Lock()
	p := rp.provider
	rp.mu.Unlock()
	if p == nil {
		var err error
		p, err = oidc.NewProvider(oidc.ClientContext(ctx, rp.cfg.HTTPClient), rp.cfg.Issuer)
		if err != nil {
			return nil, nil, err
		}
		rp.mu.Lock()
		rp.provider = p
		rp.mu.Unlock()
	}
	ep := p.Endpoint()
	ep.AuthStyle = oauth2.AuthStyleInHeader
	return p, &oauth2.Config{ClientID: rp.cfg.ClientID, ClientSecret: rp.cfg.ClientSecret, Endpoint: ep,
		RedirectURL: rp.cfg.BaseURL + "/callback", Scopes: []string{oidc.ScopeOpenID, "email", "profile"}}, nil
}

const cookie = "demorp"

// ServeHTTP serves "/" (the page), "/login", "/callback" and "/logout".
func (rp *RP) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/":
		rp.home(w, r)
	case "/login":
		rp.login(w, r)
	case "/callback":
		rp.callback(w, r)
	case "/logout":
		rp.logout(w, r)
	default:
		http.NotFound(w, r)
	}
}

var page = template.Must(template.New("page").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Demo app</title>
<style>
body{font-family:system-ui,sans-serif;background:#fbf7f2;color:#2b2118;margin:0}
header{background:#fff;border-bottom:1px solid #eadfce;padding:.8rem 1.5rem;font-weight:700}
main{max-width:34rem;margin:3rem auto;background:#fff;border:1px solid #eadfce;border-radius:12px;padding:2rem}
a.button{display:inline-block;background:#3d5afe;color:#fff;padding:.6rem 1.1rem;border-radius:8px;text-decoration:none;font-weight:600}
code,pre{font-family:ui-monospace,monospace;font-size:.85rem}pre{background:#f6f3ee;padding:.8rem;border-radius:8px;overflow-x:auto}
.muted{color:#7a6a58}
</style></head><body><header>Demo app</header><main>
{{if .}}
<h1>Signed in</h1>
<p>Hello{{with .Name}} {{.}}{{end}}{{with .Email}} ({{.}}){{end}}. This app knows you as</p>
<p><code id="sub">{{.Subject}}</code></p>
<p class="muted">an identifier for this app only: another site gets another one.</p>
<pre>{{.Claims}}</pre>
<p><a class="button" href="/logout">Sign out</a></p>
{{else}}
<h1>Demo app</h1>
<p>A relying party of hakit SSO.</p>
<p><a class="button" id="signin" href="/login">Sign in with hakit SSO</a></p>
{{end}}
</main></body></html>`))

func (rp *RP) current(r *http.Request) (signedIn, bool) {
	c, err := r.Cookie(cookie)
	if err != nil {
		return signedIn{}, false
	}
	rp.mu.Lock()
	defer rp.mu.Unlock()
	u, ok := rp.users[c.Value]
	return u, ok
}

func (rp *RP) home(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if u, ok := rp.current(r); ok {
		_ = page.Execute(w, &u)
		return
	}
	_ = page.Execute(w, nil)
}

func (rp *RP) login(w http.ResponseWriter, r *http.Request) {
	_, conf, err := rp.oauth(r.Context())
	if err != nil {
		http.Error(w, "the provider cannot be reached: "+err.Error(), http.StatusBadGateway)
		return
	}
	state, f := rand.Text(), flow{nonce: rand.Text(), verifier: oauth2.GenerateVerifier(), started: time.Now()}
	rp.mu.Lock()
	for s, old := range rp.flows { // forget abandoned flows
		if time.Since(old.started) > 10*time.Minute {
			delete(rp.flows, s)
		}
	}
	rp.flows[state] = f
	rp.mu.Unlock()
	http.Redirect(w, r, conf.AuthCodeURL(state, oauth2.S256ChallengeOption(f.verifier), oidc.Nonce(f.nonce)), http.StatusFound)
}

func (rp *RP) callback(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	rp.mu.Lock()
	f, ok := rp.flows[q.Get("state")]
	delete(rp.flows, q.Get("state"))
	rp.mu.Unlock()
	if !ok {
		http.Error(w, "unknown or reused state", http.StatusBadRequest)
		return
	}
	if e := q.Get("error"); e != "" {
		http.Error(w, "the provider said: "+e+": "+q.Get("error_description"), http.StatusForbidden)
		return
	}
	p, conf, err := rp.oauth(r.Context())
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	ctx := oidc.ClientContext(r.Context(), rp.cfg.HTTPClient)
	tok, err := conf.Exchange(ctx, q.Get("code"), oauth2.VerifierOption(f.verifier))
	if err != nil {
		http.Error(w, "token exchange: "+err.Error(), http.StatusBadGateway)
		return
	}
	raw, _ := tok.Extra("id_token").(string)
	idt, err := p.Verifier(&oidc.Config{ClientID: rp.cfg.ClientID}).Verify(ctx, raw)
	if err != nil || idt.Nonce != f.nonce {
		http.Error(w, fmt.Sprint("ID token refused: ", err), http.StatusBadGateway)
		return
	}
	var claims map[string]any
	_ = idt.Claims(&claims)
	pretty, _ := json.MarshalIndent(claims, "", "  ")
	u := signedIn{Subject: idt.Subject, IDToken: raw, Claims: string(pretty)}
	// The profile comes from userinfo, whose sub must be the ID token's.
	if info, err := p.UserInfo(ctx, oauth2.StaticTokenSource(tok)); err == nil && info.Subject == idt.Subject {
		var profile struct {
			Name string `json:"name"`
		}
		_ = info.Claims(&profile)
		u.Email, u.Name = info.Email, profile.Name
	}
	id := rand.Text()
	rp.mu.Lock()
	rp.users[id] = u
	rp.mu.Unlock()
	http.SetCookie(w, &http.Cookie{Name: cookie, Value: id, Path: "/", HttpOnly: true, SameSite: http.SameSiteLaxMode})
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

// logout ends the sign-in here and at the provider (RP-initiated logout
// with the ID token as hint).
func (rp *RP) logout(w http.ResponseWriter, r *http.Request) {
	u, ok := rp.current(r)
	if c, err := r.Cookie(cookie); err == nil {
		rp.mu.Lock()
		delete(rp.users, c.Value)
		rp.mu.Unlock()
	}
	http.SetCookie(w, &http.Cookie{Name: cookie, Value: "", Path: "/", MaxAge: -1})
	if !ok {
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return
	}
	p, _, err := rp.oauth(r.Context())
	var meta struct {
		EndSession string `json:"end_session_endpoint"`
	}
	if err != nil || p.Claims(&meta) != nil || meta.EndSession == "" {
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return
	}
	http.Redirect(w, r, meta.EndSession+"?"+url.Values{"id_token_hint": {u.IDToken},
		"post_logout_redirect_uri": {rp.cfg.BaseURL + "/"}}.Encode(), http.StatusFound)
}
