package main

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/zitadel/oidc/v3/pkg/oidc"
)

// TestCodeFlow runs the authorization code flow with PKCE through HAProxy
// to two instances with the standard client (go-oidc + x/oauth2): a new
// account registers, consents and gets a code; the ID token verifies
// against the JWKS with its nonce; userinfo gives the ID token's sub; a
// second login needs no consent; the discovery document is the
// provider's own (pairwise, S256 only).
func TestCodeFlow(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 2, true)

	resp, err := http.Get(c.issuer + "/.well-known/openid-configuration")
	if err != nil {
		t.Fatal(err)
	}
	var raw json.RawMessage
	if err := json.NewDecoder(resp.Body).Decode(&raw); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	var disco oidc.DiscoveryConfiguration
	var logout map[string]any // front-channel logout is not in oidc.DiscoveryConfiguration
	if err := errors.Join(json.Unmarshal(raw, &disco), json.Unmarshal(raw, &logout)); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(disco.SubjectTypesSupported, []string{"public", "pairwise"}) ||
		!slices.Equal(disco.CodeChallengeMethodsSupported, []oidc.CodeChallengeMethod{"S256"}) ||
		!slices.Equal(disco.ResponseTypesSupported, []string{"code"}) || disco.Issuer != c.issuer {
		t.Errorf("discovery: issuer %s, subject types %v, PKCE %v, response types %v", disco.Issuer,
			disco.SubjectTypesSupported, disco.CodeChallengeMethodsSupported, disco.ResponseTypesSupported)
	}
	// sid is in ID tokens; no front- or back-channel logout is offered.
	if !slices.Contains(disco.ClaimsSupported, "sid") || disco.BackChannelLogoutSupported ||
		disco.BackChannelLogoutSessionSupported || logout["frontchannel_logout_supported"] == true ||
		logout["frontchannel_logout_session_supported"] == true {
		t.Errorf("discovery: claims %v, back-channel logout %v (sid %v), front-channel %v (sid %v)", disco.ClaimsSupported,
			disco.BackChannelLogoutSupported, disco.BackChannelLogoutSessionSupported,
			logout["frontchannel_logout_supported"], logout["frontchannel_logout_session_supported"])
	}

	a1 := c.rp("client-a1")
	b := c.browser()
	f := newFlow()
	f.state = "st&ate=/?" + f.state // passed back unchanged, escaped
	code := b.login(a1, f, "alice@example.com", "correct horse battery", true)
	tk := a1.mustExchange(t, f, code)
	sub := tk.idToken.Subject
	if sub == "" || strings.Contains(sub, ":") {
		t.Fatalf("sub %q", sub)
	}
	if tk.tok.RefreshToken == "" {
		t.Error("no refresh token for offline_access")
	}
	var claims struct {
		Email string `json:"email"`
	}
	_ = tk.idToken.Claims(&claims)
	if got, st := a1.userinfo(t, tk.tok.AccessToken); st != 200 || got != sub {
		t.Errorf("userinfo sub %q (status %d), ID token sub %q", got, st, sub)
	}

	// Signed in: the next flow of the same client needs neither password
	// nor consent.
	f2 := newFlow()
	p := b.authorize(a1, f2)
	tk2 := a1.mustExchange(t, f2, b.codeFrom(a1, f2, p))
	if tk2.idToken.Subject != sub {
		t.Errorf("second login: sub %q, first %q", tk2.idToken.Subject, sub)
	}
	if sid := sidOf(t, tk2); sid == "" || sid != sidOf(t, tk) {
		t.Errorf("second login in the same session: sid %q, first %q", sid, sidOf(t, tk))
	}

	// Introspection by the client itself agrees; by another client the
	// token is inactive.
	intro := func(clientID, secret string) map[string]any {
		req, _ := http.NewRequest("POST", disco.IntrospectionEndpoint, strings.NewReader(url.Values{"token": {tk.tok.AccessToken}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth(clientID, secret)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var m map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&m)
		return m
	}
	if m := intro("client-a1", a1.spec.Secret); m["active"] != true || m["sub"] != sub {
		t.Errorf("introspection by the client: %v", m)
	}
	bs := c.rp("client-b").spec
	if m := intro("client-b", bs.Secret); m["active"] == true || m["sub"] != nil {
		t.Errorf("introspection by another client: %v", m)
	}
}

// TestCodeSingleUse redeems codes more than once: on the same instance, on
// the other instance, and 20 times at once across both. Exactly one
// redemption succeeds; a replay gets invalid_grant and revokes the tokens
// the code gave.
func TestCodeSingleUse(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 2, true)
	a1 := c.rp("client-a1")
	b := c.browser()

	// Replay on the other instance, after a success.
	f := newFlow()
	code := b.login(a1, f, "bob@example.com", "correct horse battery", true)
	form := codeForm(code, f.verifier, a1.conf.RedirectURL)
	st, first := a1.tokenRequest(t, c.instances[0].url(), form)
	if st != 200 {
		t.Fatalf("first redemption: %d %v", st, first)
	}
	access := first["access_token"].(string)
	if _, st := a1.userinfo(t, access); st != 200 {
		t.Fatalf("userinfo before the replay: %d", st)
	}
	for _, in := range []*instance{c.instances[1], c.instances[0]} {
		st, body := a1.tokenRequest(t, in.url(), form)
		if st != 400 || body["error"] != "invalid_grant" {
			t.Errorf("replay on %s: %d %v; want 400 invalid_grant", in.addr, st, body)
		}
	}
	if _, st := a1.userinfo(t, access); st == 200 {
		t.Error("the access token of a replayed code still works")
	}
	rt := first["refresh_token"].(string)
	if st, body := a1.tokenRequest(t, c.issuer, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}}); st == 200 {
		t.Errorf("the refresh token of a replayed code still works: %v", body)
	}

	// 20 redemptions at once, alternating between the instances.
	f = newFlow()
	code = b.login(a1, f, "", "", false)
	form = codeForm(code, f.verifier, a1.conf.RedirectURL)
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok, grant := 0, 0
	start := make(chan struct{})
	for i := range 20 {
		wg.Go(func() {
			<-start
			st, body := a1.tokenRequest(t, c.instances[i%2].url(), form)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case st == 200:
				ok++
			case body["error"] == "invalid_grant":
				grant++
			default:
				t.Errorf("racing redemption: %d %v", st, body)
			}
		})
	}
	close(start)
	wg.Wait()
	if ok != 1 || grant != 19 {
		t.Errorf("20 racing redemptions: %d succeeded, %d invalid_grant; want 1 and 19", ok, grant)
	}
	if n := c.queryInt("SELECT count(*) FROM tokens WHERE kind = 'access' AND revoked_at IS NULL"); n != 0 {
		t.Errorf("%d access tokens still active after the replays; want 0 (revoked)", n)
	}

	// An expired code.
	f = newFlow()
	code = b.login(a1, f, "", "", false)
	c.sql("UPDATE auth_requests SET code_expires_at = now() - interval '1 second' WHERE code_hash = $1", hashToken(code))
	if st, body := a1.tokenRequest(t, c.issuer, codeForm(code, f.verifier, a1.conf.RedirectURL)); st != 400 || body["error"] != "invalid_grant" {
		t.Errorf("expired code: %d %v", st, body)
	}
}
