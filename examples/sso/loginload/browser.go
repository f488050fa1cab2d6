package loginload

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
)

// Client is the relying party the load signs in to: a confidential
// client registered at the provider (SSO_BOOTSTRAP_CLIENTS), with the
// openid, email, profile and offline_access scopes allowed.
type Client struct {
	ID, Secret  string
	RedirectURI string
}

// rp is the relying party's side of the flows: the provider's endpoints
// and the ID token verifier (keys from the provider's JWKS).
type rp struct {
	issuer   string
	client   Client
	http     *http.Client // no cookies, no redirects
	verifier *oidc.IDTokenVerifier
	authURL  string
	tokenURL string
}

// newRP reads the provider's discovery document.
func newRP(ctx context.Context, issuer string, c Client, hc *http.Client) (*rp, error) {
	p, err := oidc.NewProvider(oidc.ClientContext(ctx, hc), issuer)
	if err != nil {
		return nil, fmt.Errorf("loginload: discovery at %s: %w", issuer, err)
	}
	ep := p.Endpoint()
	// The key set fetches the JWKS with the context it was made with:
	// the load's, not the discovery request's.
	keys := oidc.NewRemoteKeySet(oidc.ClientContext(context.WithoutCancel(ctx), hc), jwksURL(p))
	return &rp{
		issuer:   issuer,
		client:   c,
		http:     hc,
		verifier: oidc.NewVerifier(issuer, keys, &oidc.Config{ClientID: c.ID}),
		authURL:  ep.AuthURL,
		tokenURL: ep.TokenURL,
	}, nil
}

func jwksURL(p *oidc.Provider) string {
	var d struct {
		JWKS string `json:"jwks_uri"`
	}
	_ = p.Claims(&d)
	return d.JWKS
}

// flow is one authorization request's secrets.
type flow struct {
	state, nonce, verifier string
}

func newFlow() flow {
	return flow{state: rand.Text(), nonce: rand.Text(), verifier: oauth2.GenerateVerifier()}
}

// authorizeURL is the authorization request of f (code flow, PKCE S256).
func (r *rp) authorizeURL(f flow) string {
	q := url.Values{
		"response_type":         {"code"},
		"client_id":             {r.client.ID},
		"redirect_uri":          {r.client.RedirectURI},
		"scope":                 {"openid email profile offline_access"},
		"state":                 {f.state},
		"nonce":                 {f.nonce},
		"code_challenge":        {oauth2.S256ChallengeFromVerifier(f.verifier)},
		"code_challenge_method": {"S256"},
	}
	sep := "?"
	if strings.Contains(r.authURL, "?") {
		sep = "&"
	}
	return r.authURL + sep + q.Encode()
}

// tokenAnswer is a token endpoint's answer.
type tokenAnswer struct {
	Status       int
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token"`
	IDToken      string `json:"id_token"`
	Error        string `json:"error"`
}

// token posts form to the token endpoint at tokenURL, the client
// authenticating with HTTP Basic.
func (r *rp) token(ctx context.Context, tokenURL string, form url.Values) (tokenAnswer, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, tokenURL, strings.NewReader(form.Encode()))
	if err != nil {
		return tokenAnswer{}, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(r.client.ID), url.QueryEscape(r.client.Secret))
	resp, err := r.http.Do(req)
	if err != nil {
		return tokenAnswer{}, err
	}
	defer resp.Body.Close()
	var a tokenAnswer
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return tokenAnswer{}, err
	}
	a.Status = resp.StatusCode
	if err := json.Unmarshal(body, &a); err != nil {
		return a, fmt.Errorf("status %d, not JSON: %.100q", resp.StatusCode, body)
	}
	return a, nil
}

// exchange redeems code and checks the answer: status 200, an access
// token, a refresh token, an ID token that verifies against the JWKS
// with f's nonce.
func (r *rp) exchange(ctx context.Context, f flow, code string) (tokenAnswer, error) {
	a, err := r.token(ctx, r.tokenURL, url.Values{"grant_type": {"authorization_code"}, "code": {code},
		"code_verifier": {f.verifier}, "redirect_uri": {r.client.RedirectURI}})
	if err != nil {
		return a, err
	}
	if a.Status != http.StatusOK {
		return a, fmt.Errorf("status %d %s", a.Status, a.Error)
	}
	if a.AccessToken == "" || a.RefreshToken == "" || a.IDToken == "" {
		return a, errors.New("an access, refresh or ID token is missing")
	}
	return a, nil
}

// verify checks an ID token's signature (JWKS), issuer, audience, expiry
// and nonce, and returns its subject.
func (r *rp) verify(ctx context.Context, f flow, raw string) (string, error) {
	idt, err := r.verifier.Verify(ctx, raw)
	if err != nil {
		return "", err
	}
	if idt.Nonce != f.nonce {
		return "", fmt.Errorf("nonce %q, want %q", idt.Nonce, f.nonce)
	}
	if idt.Subject == "" {
		return "", errors.New("no sub")
	}
	return idt.Subject, nil
}

// browser is a user agent with its own cookies. It follows no redirect
// by itself: the flow follows them hop by hop, so that it knows which
// answer it got from which request.
type browser struct {
	issuer *url.URL
	http   *http.Client
}

func newBrowser(issuer *url.URL, transport http.RoundTripper, timeout time.Duration) *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{issuer: issuer, http: &http.Client{Jar: jar, Transport: transport, Timeout: timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

// page is one answer.
type page struct {
	status   int
	url      *url.URL
	location string // a redirect's target, resolved
	body     string
}

var authRequestIDRe = regexp.MustCompile(`name="authRequestID" value="([^"]+)"`)

// authRequestID is the hidden field of a login, register or consent form.
func (p page) authRequestID() string {
	if m := authRequestIDRe.FindStringSubmatch(p.body); m != nil {
		return m[1]
	}
	return ""
}

// toClient reports whether p redirects out of the provider.
func (p page) toClient(issuer *url.URL) bool {
	if p.location == "" {
		return false
	}
	u, err := url.Parse(p.location)
	return err == nil && u.Host != issuer.Host
}

func (b *browser) do(ctx context.Context, method, u string, form url.Values) (page, error) {
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return page{}, err
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	req.Header.Set("Accept", "text/html")
	resp, err := b.http.Do(req)
	if err != nil {
		return page{}, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return page{}, fmt.Errorf("%s %s: reading the answer: %w", method, req.URL.Path, err)
	}
	p := page{status: resp.StatusCode, url: req.URL, body: string(raw)}
	if resp.StatusCode/100 == 3 {
		loc, err := req.URL.Parse(resp.Header.Get("Location"))
		if err != nil {
			return p, fmt.Errorf("%s %s: bad Location %q", method, req.URL.Path, resp.Header.Get("Location"))
		}
		p.location = loc.String()
	}
	return p, nil
}

// follow GETs p's redirects while they stay at the provider, at most 10.
func (b *browser) follow(ctx context.Context, p page) (page, error) {
	for range 10 {
		if p.location == "" || p.toClient(b.issuer) {
			return p, nil
		}
		var err error
		if p, err = b.do(ctx, http.MethodGet, p.location, nil); err != nil {
			return p, err
		}
	}
	return p, errors.New("more than 10 redirects")
}

// code checks a redirect to the client and returns its code.
func (r *rp) code(p page, f flow) (string, error) {
	u, err := url.Parse(p.location)
	if err != nil {
		return "", err
	}
	if got := u.Scheme + "://" + u.Host + u.Path; got != r.client.RedirectURI {
		return "", fmt.Errorf("redirected to %s, not the registered %s", got, r.client.RedirectURI)
	}
	q := u.Query()
	if e := q.Get("error"); e != "" {
		return "", fmt.Errorf("error redirect: %s: %s", e, q.Get("error_description"))
	}
	if q.Get("state") != f.state {
		return "", fmt.Errorf("state %q came back as %q", f.state, q.Get("state"))
	}
	if q.Get("code") == "" {
		return "", errors.New("no code in the redirect")
	}
	return q.Get("code"), nil
}

// statusError is a page that is not the one a step expects.
func statusError(p page) error {
	msg := ""
	if m := errorTextRe.FindStringSubmatch(p.body); m != nil {
		msg = ": " + strings.TrimSpace(m[1])
	}
	return fmt.Errorf("status %d at %s%s", p.status, p.url.Path, msg)
}

var errorTextRe = regexp.MustCompile(`(?s)class="[^"]*error[^"]*"[^>]*>([^<]{1,200})<`)
