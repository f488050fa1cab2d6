package main

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"net/http"
	"net/url"
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
//     end_session it does not sign the session's user out.
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
	// signedIn asserts that b's session is (or is not) signed in, by
	// prompt=none without a hint.
	signedIn := func(b *browser, want bool, when string) {
		t.Helper()
		f := newFlow()
		f.extra = []oauth2.AuthCodeOption{oauth2.SetAuthURLParam("prompt", "none")}
		p := b.authorize(a1, f)
		if want {
			if p.location == "" || !strings.Contains(p.location, "code=") {
				t.Fatalf("%s: want still signed in (a code), got %d %s", when, p.status, p.location)
			}
			return
		}
		errorRedirect(t, a1, f, p, "login_required")
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
		signedIn(ba, true, "after a forged hint at end_session")
	}

	// end_session, Alice's expired hint, unregistered post-logout URIs:
	// refused, and Alice is still signed in.
	for _, bad := range []string{"https://evil.example/bye", "https://app-a.example/bye/", "https://app-a.example/bye?x=1"} {
		refused(endSession(ba, alice.raw, bad, "s2"), "post_logout_redirect_uri", "the unregistered post_logout_redirect_uri "+bad)
	}
	signedIn(ba, true, "after end_session with unregistered post-logout URIs")
	// Bob's expired hint in Alice's browser: to the registered URI, but
	// Alice stays signed in.
	if p := endSession(ba, bob.raw, "https://app-a.example/bye", "s3"); p.location != "https://app-a.example/bye?state=s3" {
		t.Errorf("end_session with another user's hint: %d %q", p.status, p.location)
	}
	signedIn(ba, true, "after end_session with Bob's hint")
	// Alice's expired hint, the registered URI: signed out, a1's tokens
	// for Alice revoked (b's not), and redirected with the state.
	if p := endSession(ba, alice.raw, "https://app-a.example/bye", "s4"); p.location != "https://app-a.example/bye?state=s4" {
		t.Fatalf("end_session with an expired genuine hint: %d %q %.200s; want the registered post-logout URI", p.status, p.location, p.body)
	}
	signedIn(ba, false, "after end_session with Alice's expired hint")
	if st, body := a1.tokenRequest(t, c.issuer, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {alice.tok.RefreshToken}}); st != 400 || body["error"] != "invalid_grant" {
		t.Errorf("a1's refresh token after the logout: %d %v; want invalid_grant", st, body)
	}
	if st, body := bc.tokenRequest(t, c.issuer, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {aliceB.tok.RefreshToken}}); st != 200 {
		t.Errorf("b's refresh token after a1's logout: %d %v; want 200", st, body)
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
