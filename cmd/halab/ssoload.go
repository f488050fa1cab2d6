package main

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"
)

const loadIntervalSecond = time.Second

var (
	errStillOn  = errors.New("the load is already on (load off stops it)")
	errStillOff = errors.New("the load is off (load on starts it)")
)

// loginLoadConfig shapes the SSO's login load.
type loginLoadConfig struct {
	Issuer       string // the provider's public URL
	ClientID     string // a confidential client registered there
	ClientSecret string
	RedirectURI  string // registered for it; never fetched
	Users        int    // accounts, each signing in again and again
	Rate         float64
	Interval     time.Duration // between samples
	Sample       func(loadSample)
}

// loginLoad signs users in to the provider as a relying party and a
// browser do, in full: the authorization code flow with PKCE (S256),
// the password form, consent when asked, the code redeemed at the token
// endpoint, the ID token checked (RS256 signature against the JWKS,
// issuer, audience, nonce, expiry), and the userinfo's subject compared
// with the ID token's. Each user's first flow creates its account. A
// flow that fails at any step counts as failed.
type loginLoad struct {
	cfg    loginLoadConfig
	cancel context.CancelFunc
	done   chan struct{}
	keys   *jwks
	pw     string

	mu       sync.Mutex
	lat      []float64 // ms, this interval's successful flows
	flows    int
	failed   int
	ok       int // since the start
	allFail  int
	lastErr  string
	intStart time.Time
}

// startLoginLoad starts the load; stop ends it.
func startLoginLoad(cfg loginLoadConfig) *loginLoad {
	ctx, cancel := context.WithCancel(context.Background())
	ld := &loginLoad{cfg: cfg, cancel: cancel, done: make(chan struct{}), pw: rand.Text(), intStart: time.Now(),
		keys: &jwks{url: cfg.Issuer + "/keys"}}
	tick := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { // the pace: Rate flows a second at most
		t := time.NewTicker(time.Duration(float64(time.Second) / cfg.Rate))
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				select {
				case tick <- struct{}{}:
				default: // every user is busy: the load stays bounded
				}
			}
		}
	})
	run := time.Now().Format("150405")
	for i := range cfg.Users {
		email := fmt.Sprintf("load%d-%s@lab.example.test", i, run)
		wg.Go(func() {
			registered := false
			for {
				select {
				case <-ctx.Done():
					return
				case <-tick:
				}
				t0 := time.Now()
				err := ld.flow(ctx, email, !registered)
				if ctx.Err() != nil {
					return
				}
				if err == nil {
					registered = true
				}
				ld.record(time.Since(t0), err)
			}
		})
	}
	wg.Go(func() {
		t := time.NewTicker(cfg.Interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				cfg.Sample(ld.sample())
			}
		}
	})
	go func() {
		wg.Wait()
		close(ld.done)
	}()
	return ld
}

func (ld *loginLoad) stop() {
	ld.cancel()
	<-ld.done
}

func (ld *loginLoad) record(d time.Duration, err error) {
	ld.mu.Lock()
	defer ld.mu.Unlock()
	ld.flows++
	if err != nil {
		ld.failed++
		ld.allFail++
		ld.lastErr = err.Error()
		return
	}
	ld.ok++
	ld.lat = append(ld.lat, float64(d.Microseconds())/1000)
}

// sample ends an interval.
func (ld *loginLoad) sample() loadSample {
	ld.mu.Lock()
	defer ld.mu.Unlock()
	now := time.Now()
	secs := now.Sub(ld.intStart).Seconds()
	s := loadSample{App: "sso", Time: now.UTC(), Seconds: secs, Requests: ld.flows, Failed: ld.failed,
		RPS: float64(ld.flows) / secs, OKPct: 100, Logins: ld.ok, AllFail: ld.allFail, Error: ld.lastErr}
	if ld.flows > 0 {
		s.OKPct = 100 * float64(ld.flows-ld.failed) / float64(ld.flows)
	}
	slices.Sort(ld.lat)
	s.P50Ms, s.P99Ms = quantile(ld.lat, 0.5), quantile(ld.lat, 0.99)
	ld.lat, ld.flows, ld.failed, ld.lastErr, ld.intStart = ld.lat[:0], 0, 0, "", now
	return s
}

// quantile of sorted xs, nearest rank; 0 for none.
func quantile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	i := int(q*float64(len(xs))+0.999999) - 1
	return xs[min(max(i, 0), len(xs)-1)]
}

var authRequestIDRe = regexp.MustCompile(`name="authRequestID" value="([^"]+)"`)

// flow runs one sign-in from a fresh browser; register creates the
// account (a 409, account exists, falls back to the password form).
func (ld *loginLoad) flow(ctx context.Context, email string, register bool) error {
	cfg := ld.cfg
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	jar, _ := cookiejar.New(nil)
	hc := &http.Client{Jar: jar, CheckRedirect: func(req *http.Request, via []*http.Request) error {
		if !strings.HasPrefix(req.URL.String(), cfg.Issuer+"/") || len(via) > 10 {
			return http.ErrUseLastResponse // the redirect to the client: stop there
		}
		return nil
	}}
	state, nonce, verifier := rand.Text(), rand.Text(), rand.Text()+rand.Text()
	sum := sha256.Sum256([]byte(verifier))
	q := url.Values{"client_id": {cfg.ClientID}, "redirect_uri": {cfg.RedirectURI}, "response_type": {"code"},
		"scope": {"openid email"}, "state": {state}, "nonce": {nonce},
		"code_challenge": {base64.RawURLEncoding.EncodeToString(sum[:])}, "code_challenge_method": {"S256"}}
	p, err := send(ctx, hc, http.MethodGet, cfg.Issuer+"/authorize?"+q.Encode(), nil)
	if err != nil {
		return fmt.Errorf("authorize: %w", err)
	}
	if p.location == "" {
		id, err := p.formID("authorize")
		if err != nil {
			return err
		}
		login := url.Values{"authRequestID": {id}, "email": {email}, "password": {ld.pw}}
		if register {
			reg := url.Values{"authRequestID": {id}, "email": {email}, "name": {"Lab Load"}, "password": {ld.pw}, "password2": {ld.pw}}
			if p, err = send(ctx, hc, http.MethodPost, cfg.Issuer+"/register", reg); err != nil {
				return fmt.Errorf("register: %w", err)
			}
			if p.status == http.StatusConflict { // made by an earlier flow whose answer was lost
				register = false
			}
		}
		if !register {
			if p, err = send(ctx, hc, http.MethodPost, cfg.Issuer+"/login", login); err != nil {
				return fmt.Errorf("login: %w", err)
			}
		}
	}
	if p.location == "" && strings.HasSuffix(p.url.Path, "/consent") {
		id, err := p.formID("consent")
		if err != nil {
			return err
		}
		if p, err = send(ctx, hc, http.MethodPost, cfg.Issuer+"/consent", url.Values{"authRequestID": {id}, "decision": {"allow"}}); err != nil {
			return fmt.Errorf("consent: %w", err)
		}
	}
	if p.location == "" {
		return fmt.Errorf("no redirect to the client: %d at %s", p.status, p.url.Path)
	}
	back, err := url.Parse(p.location)
	if err != nil || back.Scheme+"://"+back.Host+back.Path != cfg.RedirectURI {
		return fmt.Errorf("redirected to %q, not the client", p.location)
	}
	if e := back.Query().Get("error"); e != "" {
		return fmt.Errorf("error redirect: %s: %s", e, back.Query().Get("error_description"))
	}
	if back.Query().Get("state") != state {
		return errors.New("state changed on the way")
	}

	// The relying party's side: the code for tokens, the ID token checked.
	form := url.Values{"grant_type": {"authorization_code"}, "code": {back.Query().Get("code")},
		"code_verifier": {verifier}, "redirect_uri": {cfg.RedirectURI}}
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, cfg.Issuer+"/oauth/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(cfg.ClientID), url.QueryEscape(cfg.ClientSecret))
	var tok struct {
		AccessToken string `json:"access_token"`
		IDToken     string `json:"id_token"`
	}
	if err := doJSON(http.DefaultClient, req, &tok); err != nil {
		return fmt.Errorf("token: %w", err)
	}
	sub, err := ld.keys.verify(ctx, tok.IDToken, cfg.Issuer, cfg.ClientID, nonce)
	if err != nil {
		return fmt.Errorf("ID token: %w", err)
	}
	req, _ = http.NewRequestWithContext(ctx, http.MethodGet, cfg.Issuer+"/userinfo", nil)
	req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
	var ui struct {
		Sub string `json:"sub"`
	}
	if err := doJSON(http.DefaultClient, req, &ui); err != nil {
		return fmt.Errorf("userinfo: %w", err)
	}
	if ui.Sub != sub {
		return fmt.Errorf("userinfo sub %q, ID token sub %q", ui.Sub, sub)
	}
	return nil
}

// answer is a page the load's browser got.
type answer struct {
	status   int
	url      *url.URL
	location string // a redirect out of the provider
	body     string
}

func (a answer) formID(step string) (string, error) {
	m := authRequestIDRe.FindStringSubmatch(a.body)
	if m == nil {
		return "", fmt.Errorf("%s: %d at %s without a form", step, a.status, a.url.Path)
	}
	return m[1], nil
}

// send makes a browser request; a 5xx answer is an error.
func send(ctx context.Context, hc *http.Client, method, u string, form url.Values) (answer, error) {
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return answer{}, err
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := hc.Do(req)
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return answer{}, err
	}
	a := answer{status: resp.StatusCode, url: resp.Request.URL, body: string(b)}
	if resp.StatusCode/100 == 3 {
		a.location = resp.Header.Get("Location")
	}
	if resp.StatusCode >= 500 {
		return a, fmt.Errorf("%d at %s", resp.StatusCode, a.url.Path)
	}
	return a, nil
}

func doJSON(hc *http.Client, req *http.Request, v any) error {
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%d: %.200s", resp.StatusCode, b)
	}
	return json.Unmarshal(b, v)
}

// jwks is the provider's signing keys, fetched again for a key ID it
// does not know (a rotation).
type jwks struct {
	url  string
	mu   sync.Mutex
	keys map[string]*rsa.PublicKey
}

func (j *jwks) key(ctx context.Context, kid string) (*rsa.PublicKey, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if k, ok := j.keys[kid]; ok {
		return k, nil
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, j.url, nil)
	var set struct {
		Keys []struct {
			Kid, Kty, N, E string
		} `json:"keys"`
	}
	if err := doJSON(http.DefaultClient, req, &set); err != nil {
		return nil, fmt.Errorf("JWKS: %w", err)
	}
	j.keys = map[string]*rsa.PublicKey{}
	for _, k := range set.Keys {
		n, err1 := base64.RawURLEncoding.DecodeString(k.N)
		e, err2 := base64.RawURLEncoding.DecodeString(k.E)
		if k.Kty != "RSA" || err1 != nil || err2 != nil || len(e) > 4 {
			continue
		}
		j.keys[k.Kid] = &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}
	}
	if k, ok := j.keys[kid]; ok {
		return k, nil
	}
	return nil, fmt.Errorf("no key %q in the JWKS", kid)
}

// verify checks an RS256 ID token and returns its subject.
func (j *jwks) verify(ctx context.Context, raw, issuer, clientID, nonce string) (string, error) {
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return "", errors.New("not a JWS")
	}
	var hdr struct{ Alg, Kid string }
	var claims struct {
		Iss   string          `json:"iss"`
		Sub   string          `json:"sub"`
		Aud   json.RawMessage `json:"aud"`
		Nonce string          `json:"nonce"`
		Exp   int64           `json:"exp"`
	}
	if err := decodePart(parts[0], &hdr); err != nil {
		return "", err
	}
	if err := decodePart(parts[1], &claims); err != nil {
		return "", err
	}
	if hdr.Alg != "RS256" {
		return "", fmt.Errorf("alg %q", hdr.Alg)
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return "", err
	}
	k, err := j.key(ctx, hdr.Kid)
	if err != nil {
		return "", err
	}
	h := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if err := rsa.VerifyPKCS1v15(k, crypto.SHA256, h[:], sig); err != nil {
		return "", errors.New("bad signature")
	}
	var aud []string
	if json.Unmarshal(claims.Aud, &aud) != nil {
		var one string
		_ = json.Unmarshal(claims.Aud, &one)
		aud = []string{one}
	}
	switch {
	case claims.Iss != issuer:
		return "", fmt.Errorf("issuer %q", claims.Iss)
	case !slices.Contains(aud, clientID):
		return "", fmt.Errorf("audience %v", aud)
	case claims.Nonce != nonce:
		return "", errors.New("nonce differs")
	case time.Now().Unix() > claims.Exp:
		return "", errors.New("expired")
	case claims.Sub == "":
		return "", errors.New("no subject")
	}
	return claims.Sub, nil
}

func decodePart(s string, v any) error {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}
