package main

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"golang.org/x/oauth2"
)

// errorRedirect checks that p redirects to the client's registered URI
// with error want and the state unchanged.
func errorRedirect(t *testing.T, r *rp, f *flow, p pageResp, want string) {
	t.Helper()
	if p.location == "" {
		t.Fatalf("want a redirect with error %s, got %d %s: %.300s", want, p.status, p.url, p.body)
	}
	u, err := url.Parse(p.location)
	if err != nil {
		t.Fatal(err)
	}
	if got := u.Scheme + "://" + u.Host + u.Path; got != r.conf.RedirectURL {
		t.Fatalf("error sent to %s, not the registered %s", p.location, r.conf.RedirectURL)
	}
	if q := u.Query(); q.Get("error") != want || q.Get("state") != f.state || q.Get("code") != "" {
		t.Errorf("redirect %s: want error=%s with the state and no code", p.location, want)
	}
}

// signedIn asserts that b's session with the provider is (or is not)
// signed in, by an authorization request of r with prompt=none and no
// hint: a code, or the error login_required.
func signedIn(t *testing.T, r *rp, b *browser, want bool, when string) {
	t.Helper()
	f := newFlow()
	f.extra = []oauth2.AuthCodeOption{oauth2.SetAuthURLParam("prompt", "none")}
	p := b.authorize(r, f)
	if want {
		if p.location == "" || !strings.Contains(p.location, "code=") {
			t.Fatalf("%s: want still signed in (a code), got %d %s", when, p.status, p.location)
		}
		return
	}
	errorRedirect(t, r, f, p, "login_required")
}

// TestBadRequests sends what an attacker or a broken client would: no or
// weak PKCE, a wrong verifier, redirect URIs that are almost the
// registered one, unknown clients, wrong secrets, a tampered
// id_token_hint, prompt=none without a session, oversized parameters,
// cross-site form posts, and another browser collecting a finished
// request. Each is refused, and none leaks a code.
func TestBadRequests(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 1, false)
	a1 := c.rp("client-a1")
	b := c.browser()

	// prompt=none without a session: login_required, to the client.
	f := newFlow()
	f.extra = []oauth2.AuthCodeOption{oauth2.SetAuthURLParam("prompt", "none")}
	errorRedirect(t, a1, f, b.authorize(a1, f), "login_required")

	// PKCE missing or plain: invalid_request, to the client.
	f = newFlow()
	errorRedirect(t, a1, f, b.get(a1.conf.AuthCodeURL(f.state)), "invalid_request")
	errorRedirect(t, a1, f, b.get(a1.conf.AuthCodeURL(f.state, oauth2.SetAuthURLParam("code_challenge", f.verifier),
		oauth2.SetAuthURLParam("code_challenge_method", "plain"))), "invalid_request")
	// Oversized state.
	big := newFlow()
	big.state = strings.Repeat("s", 5000)
	if p := b.authorize(a1, big); p.location == "" || !strings.Contains(p.location, "error=invalid_request") {
		t.Errorf("oversized state: %d %s", p.status, p.location)
	}

	// Redirect URIs that differ from the registered one in any way: an
	// error page, never a redirect.
	for _, bad := range []string{"https://app-a.example/cb/", "https://APP-A.example/cb", "https://app-a.example/CB",
		"https://app-a.example/cb?x=1", "https://app-a.example:444/cb", "https://app-a.example/cb#f",
		"http://app-a.example/cb", "https://evil.example/cb", ""} {
		f := newFlow()
		u := strings.Replace(a1.authURL(f), url.QueryEscape(a1.conf.RedirectURL), url.QueryEscape(bad), 1)
		if p := b.get(u); p.status != http.StatusBadRequest || p.location != "" {
			t.Errorf("redirect_uri %q: %d, Location %q; want 400 without a redirect", bad, p.status, p.location)
		}
	}
	// An unknown client: an error page.
	if p := b.get(strings.Replace(a1.authURL(newFlow()), "client_id=client-a1", "client_id=nobody", 1)); p.status != 400 || p.location != "" {
		t.Errorf("unknown client: %d %q", p.status, p.location)
	}

	// A real code, then wrong verifier, missing verifier, wrong secret,
	// unknown client, wrong redirect_uri: all refused, and the code still
	// works once after them (none of them consumed it).
	f = newFlow()
	code := b.login(a1, f, "carol@example.com", "correct horse battery", true)
	for name, tc := range map[string]struct {
		form url.Values
		want string
	}{
		"wrong verifier":   {codeForm(code, oauth2.GenerateVerifier(), a1.conf.RedirectURL), "invalid_grant"},
		"missing verifier": {codeForm(code, "", a1.conf.RedirectURL), "invalid_request"},
		"other redirect":   {codeForm(code, f.verifier, "https://app-a.example/other"), "invalid_grant"},
	} {
		if st, body := a1.tokenRequest(t, c.issuer, tc.form); st != 400 || body["error"] != tc.want {
			t.Errorf("%s: %d %v; want 400 %s", name, st, body, tc.want)
		}
	}
	wrong := &rp{spec: a1.spec}
	wrong.spec.Secret = "not-the-secret-0123456789-0123456789"
	if st, body := wrong.tokenRequest(t, c.issuer, codeForm(code, f.verifier, a1.conf.RedirectURL)); st != 401 || body["error"] != "invalid_client" {
		t.Errorf("wrong client secret: %d %v; want 401 invalid_client", st, body)
	}
	unknown := &rp{spec: clientSpec{ID: "nobody", Secret: "whatever-0123456789-0123456789-0123"}}
	if st, body := unknown.tokenRequest(t, c.issuer, codeForm(code, f.verifier, a1.conf.RedirectURL)); st != 401 || body["error"] != "invalid_client" {
		t.Errorf("unknown client: %d %v; want 401 invalid_client", st, body)
	}
	// Another client redeeming a1's code.
	bClient := c.rp("client-b")
	if st, body := bClient.tokenRequest(t, c.issuer, codeForm(code, f.verifier, a1.conf.RedirectURL)); st != 400 || body["error"] != "invalid_grant" {
		t.Errorf("code of another client: %d %v; want 400 invalid_grant", st, body)
	}
	tk := a1.mustExchange(t, f, code)

	// A tampered id_token_hint (one byte of the signature changed).
	raw := tk.raw
	tampered := raw[:len(raw)-4] + flip(raw[len(raw)-4:])
	f = newFlow()
	f.extra = []oauth2.AuthCodeOption{oauth2.SetAuthURLParam("prompt", "none"), oauth2.SetAuthURLParam("id_token_hint", tampered)}
	errorRedirect(t, a1, f, b.authorize(a1, f), "login_required")
	// The genuine hint, signed in: a code without any page.
	f = newFlow()
	f.extra = []oauth2.AuthCodeOption{oauth2.SetAuthURLParam("prompt", "none"), oauth2.SetAuthURLParam("id_token_hint", raw)}
	a1.mustExchange(t, f, b.codeFrom(a1, f, b.authorize(a1, f)))

	// Signed in, yet prompt=login or max_age=0 ask for the password again.
	for _, opt := range []oauth2.AuthCodeOption{oauth2.SetAuthURLParam("prompt", "login"), oauth2.SetAuthURLParam("max_age", "0")} {
		f := newFlow()
		f.extra = []oauth2.AuthCodeOption{opt}
		if p := b.authorize(a1, f); p.location != "" || !strings.Contains(p.body, `name="password"`) {
			t.Errorf("%v while signed in: %d %s; want the login form", opt, p.status, p.location)
		}
	}

	// Cross-site posts of the consent and logout forms are refused.
	for _, path := range []string{"/consent", "/logout"} {
		req, _ := http.NewRequest("POST", c.issuer+path, strings.NewReader("decision=allow"))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Origin", "https://evil.example")
		req.Header.Set("Sec-Fetch-Site", "cross-site")
		if p := b.do(req); p.status != http.StatusForbidden {
			t.Errorf("cross-site POST %s: %d; want 403", path, p.status)
		}
	}

	// A finished request is answered only in the session that finished it.
	bc := c.rp("client-b")
	f = newFlow()
	p := b.authorize(bc, f) // signed in: the consent page for b
	id := formID(t, p)
	p = b.post("/consent", url.Values{"authRequestID": {id}, "decision": {"allow"}})
	other := c.browser()
	if q := other.get(c.issuer + "/authorize/callback?id=" + id); q.location != "" && strings.Contains(q.location, "code=") {
		t.Errorf("another browser collected the code: %s", q.location)
	}
	bc.mustExchange(t, f, b.codeFrom(bc, f, p))

	// A GET of end_session without a hint signs nobody out: it asks.
	if p := b.get(c.issuer + "/end_session"); !strings.Contains(p.body, "Sign out?") {
		t.Errorf("end_session without a hint: %d %.200s", p.status, p.body)
	}
	f = newFlow()
	f.extra = []oauth2.AuthCodeOption{oauth2.SetAuthURLParam("prompt", "none")}
	b.codeFrom(a1, f, b.authorize(a1, f)) // still signed in

	// Declining consent: access_denied to the client.
	f = newFlow()
	p = b.authorize(c.rp("client-a2"), f)
	a2 := c.rp("client-a2")
	errorRedirect(t, a2, f, b.post("/consent", url.Values{"authRequestID": {formID(t, p)}, "decision": {"deny"}}), "access_denied")

	// A wrong password: 401 on the page, and no session.
	nb := c.browser()
	f = newFlow()
	p = nb.authorize(a1, f)
	p = nb.post("/login", url.Values{"authRequestID": {formID(t, p)}, "email": {"carol@example.com"}, "password": {"wrong password!"}})
	if p.status != http.StatusUnauthorized || !strings.Contains(p.body, "Wrong e-mail address or password") {
		t.Errorf("wrong password: %d", p.status)
	}

	// Guessing: after 10 failures (SSO_THROTTLE_ACCOUNT) of one account,
	// 429 with Retry-After, even for the right password; other accounts
	// are not affected.
	for i := 0; i < 9; i++ {
		nb.post("/login", url.Values{"email": {"carol@example.com"}, "password": {"guess " + string(rune('a'+i))}})
	}
	req, _ := http.NewRequest("POST", c.issuer+"/login", strings.NewReader(url.Values{"email": {"carol@example.com"},
		"password": {"correct horse battery"}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Errorf("11th attempt: %d, Retry-After %q; want 429 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if p := c.browser().post("/login", url.Values{"email": {"alice-not-here@example.com"}, "password": {"x"}}); p.status != http.StatusUnauthorized {
		t.Errorf("another account while carol is throttled: %d", p.status)
	}
	// Same for a client secret: 10 wrong ones, then 429 for the right one.
	a2c := c.rp("client-a2")
	bad := &rp{spec: a2c.spec}
	bad.spec.Secret = "guess-0123456789-0123456789-0123456789"
	for i := 0; i < 10; i++ {
		bad.tokenRequest(t, c.issuer, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {"x"}})
	}
	if st, body := a2c.tokenRequest(t, c.issuer, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {"x"}}); st != http.StatusTooManyRequests {
		t.Errorf("client secret after 10 failures: %d %v; want 429", st, body)
	}
}

// flip changes the first character of s.
func flip(s string) string {
	if s[0] == 'A' {
		return "B" + s[1:]
	}
	return "A" + s[1:]
}

// TestRefreshRotation refreshes once (a new refresh token; the old one
// rotated out), then reuses the old one: invalid_grant, and the whole
// family is revoked, the new refresh token and its access token included.
func TestRefreshRotation(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 2, true)
	a1 := c.rp("client-a1")
	b := c.browser()
	f := newFlow()
	tk := a1.mustExchange(t, f, b.login(a1, f, "dave@example.com", "correct horse battery", true))
	rt1 := tk.tok.RefreshToken
	refresh := func(base, rt string) (int, map[string]any) {
		return a1.tokenRequest(t, base, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}})
	}
	st, body := refresh(c.instances[0].url(), rt1)
	if st != 200 {
		t.Fatalf("refresh: %d %v", st, body)
	}
	rt2, _ := body["refresh_token"].(string)
	access2, _ := body["access_token"].(string)
	if rt2 == "" || rt2 == rt1 {
		t.Fatalf("refresh gave refresh token %q (old %q)", rt2, rt1)
	}
	idt, err := a1.verifier.Verify(t.Context(), body["id_token"].(string))
	if err != nil || idt.Subject != tk.idToken.Subject {
		t.Fatalf("refreshed ID token: %v, sub %v; want %s", err, idt, tk.idToken.Subject)
	}
	if _, st := a1.userinfo(t, access2); st != 200 {
		t.Fatalf("userinfo with the refreshed access token: %d", st)
	}
	// Reuse of the rotated token, on the other instance.
	if st, body := refresh(c.instances[1].url(), rt1); st != 400 || body["error"] != "invalid_grant" {
		t.Errorf("reused refresh token: %d %v; want 400 invalid_grant", st, body)
	}
	if st, body := refresh(c.issuer, rt2); st != 400 || body["error"] != "invalid_grant" {
		t.Errorf("the family's newest refresh token after a reuse: %d %v; want invalid_grant", st, body)
	}
	for _, at := range []string{tk.tok.AccessToken, access2} {
		if _, st := a1.userinfo(t, at); st == 200 {
			t.Error("an access token of a revoked family still works")
		}
	}
	// A refresh token of another client, and garbage.
	bc := c.rp("client-b")
	f = newFlow()
	tb := bc.mustExchange(t, f, b.login(bc, f, "", "", false))
	if st, body := a1.tokenRequest(t, c.issuer, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tb.tok.RefreshToken}}); st == 200 {
		t.Errorf("a1 redeemed b's refresh token: %v", body)
	}
	if st, _ := refresh(c.issuer, "garbage"); st != 400 {
		t.Errorf("garbage refresh token: %d", st)
	}
	// b's family is untouched by all that.
	if st, body := bc.tokenRequest(t, c.issuer, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tb.tok.RefreshToken}}); st != 200 {
		t.Errorf("b's own refresh: %d %v", st, body)
	}
}
