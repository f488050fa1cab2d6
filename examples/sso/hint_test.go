package main

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	jose "github.com/go-jose/go-jose/v4"
	"golang.org/x/oauth2"

	"hakit.dev/hatest"
)

// TestIDTokenHints sends expired, forged and rotated-out id_token_hints to
// authorize (prompt=none) and end_session, with ID tokens living 2s.
//
//   - An expired but genuine hint naming the signed-in user: authorize
//     answers with a code without a page (the hint only narrows who may be
//     signed in; the session authenticates), and end_session signs the
//     user out and revokes the client's tokens for the user (OpenID
//     RP-Initiated Logout 1.0 §2: accept ID tokens past exp), redirecting
//     to the post_logout_redirect_uri only when it is registered: an
//     unregistered one is a 400 without a redirect, and signs nobody out.
//   - An expired genuine hint naming another user than the session's, or
//     one of another sector: login_required, or the login form without
//     prompt=none, never a silent sign-in as the session's user; at
//     end_session it does not sign the session's user out by itself: a
//     page asks.
//   - sid: ID tokens name their login session, per sector (one value for
//     a1 and a2, another for b), unrelated to the session cookie; a new
//     login session gets a new one, the password entered again on the
//     same session keeps it, a refresh keeps the grant's. At end_session
//     the hint of an earlier session of the signed-in user ends nothing:
//     a page asks, "stay" and "sign out" go on to the registered URI (or
//     stay at the provider without one), a form without the page's ID
//     is an ordinary sign-out, an unanswered question is forgotten by
//     end_session without a hint; the current session's hint ends it at
//     once; a genuine hint without sid (issued before ID tokens had one)
//     ends the session of its user, as before.
//   - A hint signed by an unknown key, by a key posing under the current
//     key's ID, or by a key no longer published (rotated out and past its
//     retention): authorize answers login_required to the registered URI;
//     end_session a 400 without a redirect; the session stays.
func TestIDTokenHints(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 1, false, "SSO_ID_TOKEN_TTL=2s", "SSO_KEY_LEAD=2s")
	a1, bc := c.rp("client-a1"), c.rp("client-b")

	// Alice is signed in in ba, to a1 and b; Bob in bb, to a1.
	ba, bb := c.browser(), c.browser()
	f := newFlow()
	alice := exchangeLate(t, a1, f, ba.login(a1, f, "alice-hint@example.com", "correct horse battery", true))
	f = newFlow()
	aliceB := exchangeLate(t, bc, f, ba.login(bc, f, "", "", false))
	f = newFlow()
	bob := exchangeLate(t, a1, f, bb.login(a1, f, "bob-hint@example.com", "correct horse battery", true))

	// sid: every ID token names its login session, per sector like a
	// pairwise sub: a1 and a2 (one sector) see one value, b another, Bob's
	// session another still. It is not the session cookie's value, nor
	// derived from it.
	a2 := c.rp("client-a2")
	f = newFlow()
	aliceA2 := exchangeLate(t, a2, f, ba.login(a2, f, "", "", false))
	sidAlice := sidOf(t, alice)
	if sidAlice == "" || sidOf(t, aliceA2) != sidAlice || sidOf(t, aliceB) == "" || sidOf(t, aliceB) == sidAlice ||
		sidOf(t, bob) == "" || sidOf(t, bob) == sidAlice || sidOf(t, bob) == sidOf(t, aliceB) {
		t.Errorf("sids: Alice a1 %q, a2 %q, b %q; Bob a1 %q: want Alice's a1 = a2, all others distinct, none empty",
			sidAlice, sidOf(t, aliceA2), sidOf(t, aliceB), sidOf(t, bob))
	}
	cookie := ba.cookie("sso")
	if cookie == "" || strings.Contains(sidAlice, cookie) || strings.Contains(cookie, sidAlice) ||
		sidAlice == sectorSessionID(c.pairwiseSalt(), "app-a.example", cookie) {
		t.Errorf("sid %q and the session cookie %q: want unrelated", sidAlice, cookie)
	}

	// Wait until all three ID tokens are past exp (whole seconds), and
	// check that a standard client does find them expired.
	last := slices.MaxFunc([]*tokens{alice, aliceB, bob}, func(x, y *tokens) int {
		return x.idToken.Expiry.Compare(y.idToken.Expiry)
	}).idToken.Expiry
	hatest.WaitFor(t, 30*time.Second, "the ID tokens to expire", func() bool {
		return time.Now().After(last.Add(time.Second))
	})
	if _, err := a1.verifier.Verify(t.Context(), alice.raw); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("alice's ID token after its exp: %v; want expired", err)
	}

	hinted := func(r *rp, hint string, prompt bool) *flow {
		f := newFlow()
		f.extra = []oauth2.AuthCodeOption{oauth2.SetAuthURLParam("id_token_hint", hint)}
		if prompt {
			f.extra = append(f.extra, oauth2.SetAuthURLParam("prompt", "none"))
		}
		return f
	}
	endSession := func(b *browser, hint, postLogout, state string) pageResp {
		t.Helper()
		q := url.Values{"id_token_hint": {hint}, "state": {state}}
		if postLogout != "" {
			q.Set("post_logout_redirect_uri", postLogout)
		}
		return b.get(c.issuer + "/end_session?" + q.Encode())
	}
	// refused asserts an end_session answered with an error page naming
	// the bad parameter, and no redirect out of the provider.
	refused := func(p pageResp, param, what string) {
		t.Helper()
		if p.status != http.StatusBadRequest || p.location != "" || !strings.Contains(p.body, "invalid_request") ||
			!strings.Contains(p.body, param+" invalid") {
			t.Errorf("end_session with %s: %d, Location %q: %.200s; want 400 invalid_request (%s invalid) without a redirect",
				what, p.status, p.location, p.body, param)
		}
	}

	// Authorize, prompt=none, Alice's own expired hint: a code, for Alice.
	f = hinted(a1, alice.raw, true)
	if again := exchangeLate(t, a1, f, ba.codeFrom(a1, f, ba.authorize(a1, f))); again.idToken.Subject != alice.idToken.Subject {
		t.Errorf("expired hint of the signed-in user: sub %s, want %s", again.idToken.Subject, alice.idToken.Subject)
	}
	// Bob's expired hint in Alice's browser: login_required; without
	// prompt=none the login form, not a code for Alice.
	f = hinted(a1, bob.raw, true)
	errorRedirect(t, a1, f, ba.authorize(a1, f), "login_required")
	f = hinted(a1, bob.raw, false)
	if p := ba.authorize(a1, f); p.location != "" || !strings.Contains(p.body, `name="password"`) {
		t.Errorf("another user's hint, signed in as Alice: %d %s; want the login form", p.status, p.location)
	}
	// Alice's hint from client b (another sector, another sub) sent by a1:
	// it names nobody a1 knows.
	f = hinted(a1, aliceB.raw, true)
	errorRedirect(t, a1, f, ba.authorize(a1, f), "login_required")

	// Forged hints for Alice: an unknown key, and a foreign key under the
	// current key's ID.
	for name, kid := range map[string]string{"an unknown key": "forged-key", "a foreign key under the current kid": kidOf(t, alice.raw)} {
		forged := forgeIDToken(t, kid, map[string]any{"iss": c.issuer, "sub": alice.idToken.Subject,
			"aud": []string{"client-a1"}, "azp": "client-a1", "iat": time.Now().Unix(), "exp": time.Now().Add(time.Hour).Unix()})
		f = hinted(a1, forged, true)
		errorRedirect(t, a1, f, ba.authorize(a1, f), "login_required")
		refused(endSession(ba, forged, "https://app-a.example/bye", "s1"), "id_token_hint", "a hint signed by "+name)
		signedIn(t, a1, ba, true, "after a forged hint at end_session")
	}

	// end_session, Alice's expired hint, unregistered post-logout URIs:
	// refused, and Alice is still signed in.
	for _, bad := range []string{"https://evil.example/bye", "https://app-a.example/bye/", "https://app-a.example/bye?x=1"} {
		refused(endSession(ba, alice.raw, bad, "s2"), "post_logout_redirect_uri", "the unregistered post_logout_redirect_uri "+bad)
	}
	signedIn(t, a1, ba, true, "after end_session with unregistered post-logout URIs")
	// Bob's expired hint in Alice's browser: a page asks (TestLogoutScope
	// has the rest); staying signed in goes on to the registered URI.
	p := endSession(ba, bob.raw, "https://app-a.example/bye", "s3")
	m := logoutIDRe.FindStringSubmatch(p.body)
	if p.status != 200 || m == nil || !strings.Contains(p.body, "not the one signed in") {
		t.Fatalf("end_session with another user's hint: %d %q %.300s; want the question", p.status, p.location, p.body)
	}
	if p := ba.post("/logout", url.Values{"logout": {m[1]}, "decision": {"stay"}}); p.location != "https://app-a.example/bye?state=s3" {
		t.Errorf("staying signed in after another user's hint: %d %q", p.status, p.location)
	}
	signedIn(t, a1, ba, true, "after end_session with Bob's hint")
	// Alice's expired hint, the registered URI: signed out, a1's tokens
	// for Alice revoked (b's not), and redirected with the state.
	if p := endSession(ba, alice.raw, "https://app-a.example/bye", "s4"); p.location != "https://app-a.example/bye?state=s4" {
		t.Fatalf("end_session with an expired genuine hint: %d %q %.200s; want the registered post-logout URI", p.status, p.location, p.body)
	}
	signedIn(t, a1, ba, false, "after end_session with Alice's expired hint")
	if st, body := a1.tokenRequest(t, c.issuer, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {alice.tok.RefreshToken}}); st != 400 || body["error"] != "invalid_grant" {
		t.Errorf("a1's refresh token after the logout: %d %v; want invalid_grant", st, body)
	}
	if st, body := bc.tokenRequest(t, c.issuer, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {aliceB.tok.RefreshToken}}); st != 200 {
		t.Errorf("b's refresh token after a1's logout: %d %v; want 200", st, body)
	}

	// A newer login session of Alice: a new sid. Entering the password
	// again on it (prompt=login) keeps it.
	const bye = "https://app-a.example/bye"
	login := func(extra ...oauth2.AuthCodeOption) *tokens {
		t.Helper()
		f := newFlow()
		f.extra = extra
		return exchangeLate(t, a1, f, ba.login(a1, f, "alice-hint@example.com", "correct horse battery", false))
	}
	alice2 := login()
	if sid := sidOf(t, alice2); sid == "" || sid == sidAlice {
		t.Errorf("sid of Alice's new login session %q, of the old one %q: want a new one", sid, sidAlice)
	}
	if sid := sidOf(t, login(oauth2.SetAuthURLParam("prompt", "login"))); sid != sidOf(t, alice2) {
		t.Errorf("sid after the password again on the same session %q, want %q", sid, sidOf(t, alice2))
	}
	// asked asserts the confirmation page of a sign-out of an earlier
	// login session, and returns the ID its form sends back.
	asked := func(p pageResp, when string) string {
		t.Helper()
		m := logoutIDRe.FindStringSubmatch(p.body)
		if p.status != 200 || p.location != "" || p.url.Path != "/logout" || m == nil ||
			!strings.Contains(p.body, "You are still signed in") || !strings.Contains(p.body, "App A") {
			t.Fatalf("%s: %d at %s, Location %q: %.300s; want the page asking whether to sign out", when, p.status, p.url, p.location, p.body)
		}
		return m[1]
	}
	// The hint of the earlier session (its sid): asked, still signed in,
	// nothing revoked. "Stay signed in": to the registered URI with the
	// state, still signed in.
	id := asked(endSession(ba, alice.raw, bye, "s6"), "end_session with the hint of an earlier session")
	signedIn(t, a1, ba, true, "after end_session with the hint of an earlier session")
	if sub, st := a1.userinfo(t, alice2.tok.AccessToken); st != 200 || sub != alice.idToken.Subject {
		t.Errorf("userinfo with the new session's access token after an old hint: %d %q", st, sub)
	}
	if p := ba.post("/logout", url.Values{"logout": {id}, "decision": {"stay"}}); p.location != bye+"?state=s6" {
		t.Errorf("staying signed in: %d %q; want %s?state=s6", p.status, p.location, bye)
	}
	signedIn(t, a1, ba, true, "after choosing to stay signed in")
	// Asked again, "Sign out": to the registered URI, signed out. The
	// client's tokens of the newer session are not revoked (the hint
	// named another session); a refresh gives an ID token with the sid
	// of the session the grant was made in.
	id = asked(endSession(ba, alice.raw, bye, "s7"), "end_session with the hint of an earlier session, again")
	if p := ba.post("/logout", url.Values{"logout": {id}, "decision": {"signout"}}); p.location != bye+"?state=s7" {
		t.Errorf("signing out on the confirmation page: %d %q; want %s?state=s7", p.status, p.location, bye)
	}
	signedIn(t, a1, ba, false, "after signing out on the confirmation page")
	st, body := a1.tokenRequest(t, c.issuer, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {alice2.tok.RefreshToken}})
	raw, _ := body["id_token"].(string)
	if st != 200 || raw == "" {
		t.Fatalf("refresh of the newer session's token after the confirmed sign-out: %d %v", st, body)
	}
	var refreshed struct {
		Sid string `json:"sid"`
	}
	decodeSegment(t, strings.Split(raw, ".")[1], &refreshed)
	if refreshed.Sid != sidOf(t, alice2) {
		t.Errorf("refreshed ID token: sid %q, want the grant's session's %q", refreshed.Sid, sidOf(t, alice2))
	}
	// Without a post_logout_redirect_uri: the answers stay at the
	// provider. A form that is not the page's (the header's, a wrong ID)
	// is an ordinary sign-out: the provider's signed-out page, not the
	// client's URI.
	login()
	id = asked(endSession(ba, alice2.raw, "", "s8"), "end_session with an old hint, no post-logout URI")
	if p := ba.post("/logout", url.Values{"logout": {id}, "decision": {"stay"}}); p.location != "" || p.url.Path != "/" {
		t.Errorf("staying signed in, no post-logout URI: %d at %s, Location %q; want the provider's home", p.status, p.url, p.location)
	}
	signedIn(t, a1, ba, true, "after staying signed in, no post-logout URI")
	// A question left unanswered does not stay: end_session without a
	// hint asks the plain question.
	asked(endSession(ba, alice2.raw, bye, "s9"), "end_session with an old hint, once more")
	if p := ba.get(c.issuer + "/end_session"); !strings.Contains(p.body, "Sign out?") || strings.Contains(p.body, "still signed in") {
		t.Errorf("end_session without a hint after an unanswered question: %d %.300s; want the plain question", p.status, p.body)
	}
	asked(endSession(ba, alice2.raw, bye, "s9"), "end_session with an old hint, again")
	if p := ba.post("/logout", url.Values{"logout": {"not-the-page-s"}}); p.location != "" || p.url.Path != "/logged-out" {
		t.Errorf("the sign-out form with a wrong ID: %d at %s, Location %q; want /logged-out", p.status, p.url, p.location)
	}
	signedIn(t, a1, ba, false, "after the sign-out form with a wrong ID")
	// The hint of the current session ends it at once, as before.
	alice4 := login()
	if p := endSession(ba, alice4.raw, bye, "s10"); p.location != bye+"?state=s10" {
		t.Errorf("end_session with the current session's hint: %d %q %.200s", p.status, p.location, p.body)
	}
	signedIn(t, a1, ba, false, "after end_session with the current session's hint")
	if st, body := a1.tokenRequest(t, c.issuer, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {alice4.tok.RefreshToken}}); st != 400 || body["error"] != "invalid_grant" {
		t.Errorf("a1's refresh token after the current session's hint: %d %v; want invalid_grant", st, body)
	}
	// A genuine hint without sid (as issued before ID tokens had one):
	// its user signed in here is signed out, whatever the session.
	alice5 := login()
	noSID := c.signIDToken(t, map[string]any{"iss": c.issuer, "sub": alice.idToken.Subject, "aud": []string{"client-a1"},
		"azp": "client-a1", "iat": time.Now().Unix(), "exp": time.Now().Add(time.Hour).Unix()})
	if _, err := a1.verifier.Verify(t.Context(), noSID); err != nil {
		t.Fatalf("the hint without sid does not verify: %v", err)
	}
	if p := endSession(ba, noSID, bye, "s11"); p.location != bye+"?state=s11" {
		t.Errorf("end_session with a genuine hint without sid: %d %q %.200s", p.status, p.location, p.body)
	}
	signedIn(t, a1, ba, false, "after end_session with a genuine hint without sid")
	if st, body := a1.tokenRequest(t, c.issuer, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {alice5.tok.RefreshToken}}); st != 400 || body["error"] != "invalid_grant" {
		t.Errorf("a1's refresh token after a hint without sid: %d %v; want invalid_grant", st, body)
	}

	// Rotate the key that signed Bob's token out: a new key (CLI), which
	// signs after SSO_KEY_LEAD; then the old one past its retention (the
	// expiry a rotation sets, moved into the past).
	oldKid := kidOf(t, bob.raw)
	if out, err := c.cli("keys", "rotate"); err != nil {
		t.Fatalf("keys rotate: %v: %s", err, out)
	}
	hatest.WaitFor(t, 30*time.Second, "the new key to sign", func() bool {
		return c.queryInt(`SELECT count(*) FROM signing_keys WHERE active_from <= now() AND id <> $1`, oldKid) == 1
	})
	c.sql(`UPDATE signing_keys SET expires_at = now() - interval '1 second' WHERE id = $1`, oldKid)
	hatest.WaitFor(t, 30*time.Second, "the old key to leave the JWKS", func() bool {
		kids, err := jwksKids(c.issuer)
		return err == nil && len(kids) > 0 && !slices.Contains(kids, oldKid)
	})
	// Bob is still signed in; his hint signed by the removed key is
	// refused at authorize and end_session, and he stays signed in.
	f = hinted(a1, bob.raw, true)
	errorRedirect(t, a1, f, bb.authorize(a1, f), "login_required")
	refused(endSession(bb, bob.raw, "https://app-a.example/bye", "s5"), "id_token_hint", "a hint signed by a removed key")
	f = newFlow()
	f.extra = []oauth2.AuthCodeOption{oauth2.SetAuthURLParam("prompt", "none")}
	if fresh := exchangeLate(t, a1, f, bb.codeFrom(a1, f, bb.authorize(a1, f))); kidOf(t, fresh.raw) == oldKid || fresh.idToken.Subject != bob.idToken.Subject {
		t.Errorf("Bob after the rotation: kid %s (old %s), sub %s (want %s)", kidOf(t, fresh.raw), oldKid, fresh.idToken.Subject, bob.idToken.Subject)
	}
}

// exchangeLate is rp.exchange without the expiry check of the ID token:
// with ID tokens living 2s, a busy machine could otherwise see one
// expire between the exchange and the check. Signature, issuer, audience
// and nonce are checked.
func exchangeLate(t *testing.T, r *rp, f *flow, code string) *tokens {
	t.Helper()
	ctx := oidc.ClientContext(t.Context(), &http.Client{Timeout: 10 * time.Second})
	tok, err := r.conf.Exchange(ctx, code, oauth2.VerifierOption(f.verifier))
	if err != nil {
		t.Fatalf("exchange: %v", err)
	}
	raw, _ := tok.Extra("id_token").(string)
	idt, err := r.provider.Verifier(&oidc.Config{ClientID: r.spec.ID, SkipExpiryCheck: true}).Verify(ctx, raw)
	if err != nil {
		t.Fatalf("ID token does not verify: %v", err)
	}
	if idt.Nonce != f.nonce {
		t.Fatalf("nonce %q, want %q", idt.Nonce, f.nonce)
	}
	return &tokens{tok: tok, idToken: idt, raw: raw}
}

// forgeIDToken signs claims with a new RSA key under key ID kid.
func forgeIDToken(t *testing.T, kid string, claims map[string]any) string {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return signJWT(t, key, kid, claims)
}

// signIDToken signs claims with the provider's current signing key, read
// from the database and opened with the test secret: a genuine ID token
// with exactly these claims.
func (c *cluster) signIDToken(t *testing.T, claims map[string]any) string {
	t.Helper()
	ctx := t.Context()
	conn := c.conn()
	defer conn.Close(ctx)
	var id string
	var enc []byte
	if err := conn.QueryRow(ctx, `SELECT id, private_enc FROM signing_keys WHERE active_from <= now()
		AND (expires_at IS NULL OR expires_at > now()) ORDER BY active_from DESC LIMIT 1`).Scan(&id, &enc); err != nil {
		t.Fatal(err)
	}
	kek := derive(testSecret, "sso signing keys")
	key, err := (&keyring{kek: kek[:]}).open(id, enc)
	if err != nil {
		t.Fatal(err)
	}
	return signJWT(t, key, id, claims)
}

// signJWT signs claims with key under key ID kid (RS256).
func signJWT(t *testing.T, key *rsa.PrivateKey, kid string, claims map[string]any) string {
	t.Helper()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: key, KeyID: kid}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	obj, err := signer.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	s, err := obj.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// sidOf is the sid claim of an ID token.
func sidOf(t *testing.T, tk *tokens) string {
	t.Helper()
	var cl struct {
		Sid string `json:"sid"`
	}
	if err := tk.idToken.Claims(&cl); err != nil {
		t.Fatal(err)
	}
	return cl.Sid
}

// logoutIDRe finds the ID of a pending sign-out on the confirmation page.
var logoutIDRe = regexp.MustCompile(`name="logout" value="([^"]+)"`)

// cookie is the value of the browser's cookie name for the provider.
func (b *browser) cookie(name string) string {
	u, _ := url.Parse(b.c.issuer)
	for _, ck := range b.client.Jar.Cookies(u) {
		if ck.Name == name {
			return ck.Value
		}
	}
	return ""
}

// pairwiseSalt is the deployment's salt.
func (c *cluster) pairwiseSalt() []byte {
	c.t.Helper()
	ctx := context.Background()
	conn := c.conn()
	defer conn.Close(ctx)
	var salt []byte
	if err := conn.QueryRow(ctx, "SELECT pairwise_salt FROM sso_settings WHERE id = 1").Scan(&salt); err != nil {
		c.t.Fatal(err)
	}
	return salt
}

// jwksKids returns the key IDs of the provider's JWKS.
func jwksKids(issuer string) ([]string, error) {
	resp, err := http.Get(issuer + "/keys")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var set struct {
		Keys []struct {
			Kid string `json:"kid"`
		} `json:"keys"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&set); err != nil {
		return nil, err
	}
	var kids []string
	for _, k := range set.Keys {
		kids = append(kids, k.Kid)
	}
	return kids, nil
}
