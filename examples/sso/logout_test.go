package main

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"hakit.dev/hatest"
)

// TestLogoutScope: RP-initiated logout ends what its hint names, and asks
// about anything else.
//
//   - Alice is signed in to App A on three browsers (a laptop, a phone,
//     and one whose grant is made to look as if it predates the sid of
//     tokens), and to App B on the laptop. App A's logout from the laptop,
//     with the laptop's hint, signs the laptop out and revokes App A's
//     tokens of the laptop's login session and those without a sid; the
//     phone stays signed in and its App A refresh token still refreshes,
//     its access token still answers userinfo; App B's tokens and Bob's
//     are untouched.
//   - Bob's genuine hint on the phone, where Alice is signed in: a page
//     asks (naming App A and Alice, never Bob nor his sub); "Stay signed
//     in" goes on to the registered URI with the state, still signed in;
//     asked again, "Sign out" goes there too, signed out, Bob still
//     signed in on his browser with his tokens working. With nobody
//     signed in on the phone, Bob's hint redirects at once.
//   - A genuine hint naming a sub nobody is known by, where Alice is
//     signed in: asked too. A forged hint: a 400 page as before, no
//     question, still signed in.
func TestLogoutScope(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 1, false)
	a1, appB := c.rp("client-a1"), c.rp("client-b")
	const (
		bye      = "https://app-a.example/bye"
		alice    = "alice-scope@example.com"
		bob      = "bob-scope@example.com"
		password = "correct horse battery"
	)
	signIn := func(b *browser, r *rp, email string, register bool) *tokens {
		t.Helper()
		f := newFlow()
		return r.mustExchange(t, f, b.login(r, f, email, password, register))
	}
	laptop, phone, old, bobs := c.browser(), c.browser(), c.browser(), c.browser()
	aliceLaptop := signIn(laptop, a1, alice, true)
	aliceLaptopB := signIn(laptop, appB, "", false)
	alicePhone := signIn(phone, a1, alice, false)
	aliceOld := signIn(old, a1, alice, false)
	bobT := signIn(bobs, a1, bob, true)
	if sidOf(t, aliceLaptop) == sidOf(t, alicePhone) {
		t.Fatalf("two browsers, one sid %q", sidOf(t, alicePhone))
	}
	// The old browser's grant as made before tokens carried a sid.
	c.sql(`UPDATE tokens SET sid = '' WHERE family_id = (SELECT family_id FROM tokens WHERE token_hash = $1)`,
		hashToken(aliceOld.tok.RefreshToken))
	if n := c.queryInt(`SELECT count(*) FROM tokens WHERE sid = ''`); n != 2 {
		t.Fatalf("%d tokens without sid, want the old browser's access and refresh token", n)
	}

	endSession := func(b *browser, hint, state string) pageResp {
		t.Helper()
		return b.get(c.issuer + "/end_session?" + url.Values{"id_token_hint": {hint}, "state": {state},
			"post_logout_redirect_uri": {bye}}.Encode())
	}
	// refresh redeems a refresh token and returns the status and the
	// next refresh token.
	refresh := func(r *rp, token string) (int, string) {
		t.Helper()
		st, body := r.tokenRequest(t, c.issuer, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {token}})
		next, _ := body["refresh_token"].(string)
		if st == 200 && next == "" {
			t.Fatalf("refresh answered 200 without a refresh token: %v", body)
		}
		return st, next
	}

	// App A's logout on the laptop: the laptop's session ends, with App
	// A's tokens of that session and those without sid; nothing else.
	if p := endSession(laptop, aliceLaptop.raw, "s1"); p.location != bye+"?state=s1" {
		t.Fatalf("end_session with the laptop's hint: %d %q %.200s", p.status, p.location, p.body)
	}
	signedIn(t, a1, laptop, false, "the laptop after its logout")
	signedIn(t, a1, phone, true, "the phone after the laptop's logout")
	if st, _ := refresh(a1, aliceLaptop.tok.RefreshToken); st != http.StatusBadRequest {
		t.Errorf("App A's refresh token of the laptop after its logout: %d, want 400", st)
	}
	if st, _ := refresh(a1, aliceOld.tok.RefreshToken); st != http.StatusBadRequest {
		t.Errorf("App A's refresh token without sid after the laptop's logout: %d, want 400 (it could be the laptop's)", st)
	}
	if sub, st := a1.userinfo(t, alicePhone.tok.AccessToken); st != 200 || sub != alicePhone.idToken.Subject {
		t.Errorf("userinfo with the phone's access token after the laptop's logout: %d %q", st, sub)
	}
	st, phoneRefresh := refresh(a1, alicePhone.tok.RefreshToken)
	if st != 200 {
		t.Fatalf("App A's refresh token of the phone after the laptop's logout: %d, want 200", st)
	}
	if st, _ := refresh(appB, aliceLaptopB.tok.RefreshToken); st != 200 {
		t.Errorf("App B's refresh token of the laptop after App A's logout: %d, want 200", st)
	}

	// Bob's hint on the phone, Alice signed in there: asked.
	asked := func(p pageResp, when string) string {
		t.Helper()
		m := logoutIDRe.FindStringSubmatch(p.body)
		if p.status != 200 || p.location != "" || p.url.Path != "/logout" || m == nil ||
			!strings.Contains(p.body, "App A asked to sign out an account that is not the one signed in") ||
			!strings.Contains(p.body, "as "+alice) {
			t.Fatalf("%s: %d at %s, Location %q: %.600s; want the page asking whether to sign out", when, p.status, p.url, p.location, p.body)
		}
		if strings.Contains(p.body, "bob") || strings.Contains(p.body, bobT.idToken.Subject) {
			t.Errorf("%s: the page names the hint's account: %.600s", when, p.body)
		}
		return m[1]
	}
	id := asked(endSession(phone, bobT.raw, "s2"), "Bob's hint on Alice's phone")
	signedIn(t, a1, phone, true, "the phone after Bob's hint")
	if p := phone.post("/logout", url.Values{"logout": {id}, "decision": {"stay"}}); p.location != bye+"?state=s2" {
		t.Errorf("staying signed in: %d %q; want %s?state=s2", p.status, p.location, bye)
	}
	signedIn(t, a1, phone, true, "the phone after staying signed in")
	id = asked(endSession(phone, bobT.raw, "s3"), "Bob's hint on Alice's phone, again")
	if p := phone.post("/logout", url.Values{"logout": {id}, "decision": {"signout"}}); p.location != bye+"?state=s3" {
		t.Errorf("signing out on the question: %d %q; want %s?state=s3", p.status, p.location, bye)
	}
	signedIn(t, a1, phone, false, "the phone after signing out on the question")
	// The answer signs the browser out, as the header's sign-out does: the
	// client's tokens stay.
	if st, _ := refresh(a1, phoneRefresh); st != 200 {
		t.Errorf("App A's refresh token of the phone after the answer: %d, want 200", st)
	}
	signedIn(t, a1, bobs, true, "Bob after his hint was used on Alice's phone")
	if st, _ := refresh(a1, bobT.tok.RefreshToken); st != 200 {
		t.Errorf("Bob's refresh token after his hint was used on Alice's phone: %d, want 200", st)
	}
	// Nobody signed in on the phone now: nothing to end, at once.
	if p := endSession(phone, bobT.raw, "s4"); p.location != bye+"?state=s4" {
		t.Errorf("Bob's hint with nobody signed in: %d %q %.200s; want a redirect at once", p.status, p.location, p.body)
	}

	// A genuine hint naming nobody known, on the old browser (Alice signed
	// in): asked; "stay".
	nobody := c.signIDToken(t, map[string]any{"iss": c.issuer, "sub": "nobody-known-here", "aud": []string{"client-a1"},
		"azp": "client-a1", "iat": time.Now().Unix(), "exp": time.Now().Add(time.Hour).Unix()})
	id = asked(endSession(old, nobody, "s5"), "a hint of nobody known on Alice's old browser")
	if p := old.post("/logout", url.Values{"logout": {id}, "decision": {"stay"}}); p.location != bye+"?state=s5" {
		t.Errorf("staying signed in: %d %q; want %s?state=s5", p.status, p.location, bye)
	}
	// A forged hint: refused as before, no question, still signed in.
	forged := forgeIDToken(t, "forged-key", map[string]any{"iss": c.issuer, "sub": bobT.idToken.Subject,
		"aud": []string{"client-a1"}, "azp": "client-a1", "iat": time.Now().Unix(), "exp": time.Now().Add(time.Hour).Unix()})
	if p := endSession(old, forged, "s6"); p.status != http.StatusBadRequest || p.location != "" ||
		!strings.Contains(p.body, "id_token_hint invalid") || logoutIDRe.MatchString(p.body) {
		t.Errorf("end_session with a forged hint: %d %q %.300s; want a 400 page naming id_token_hint", p.status, p.location, p.body)
	}
	signedIn(t, a1, old, true, "after a forged hint")
	if p := old.get(c.issuer + "/logout"); !strings.Contains(p.body, "Sign out?") || logoutIDRe.MatchString(p.body) {
		t.Errorf("/logout after a forged hint: %d %.300s; want the plain question", p.status, p.body)
	}
}

// TestLogoutQuestionLapses: with SSO_LOGOUT_QUESTION_TTL=4s, a question
// left unanswered past it is gone: /logout asks the plain question, and
// the old page's "Sign out" is an ordinary sign-out that ends at the
// provider's signed-out page, not at the client's URI.
func TestLogoutQuestionLapses(t *testing.T) {
	t.Parallel()
	// 10s: long enough that the question is still there when the
	// redirect to it is followed on a busy machine.
	c := newCluster(t, 1, false, "SSO_LOGOUT_QUESTION_TTL=10s")
	a1, b := c.rp("client-a1"), c.browser()
	f := newFlow()
	a1.mustExchange(t, f, b.login(a1, f, "carol-lapse@example.com", "correct horse battery", true))
	hint := c.signIDToken(t, map[string]any{"iss": c.issuer, "sub": "nobody-known-here", "aud": []string{"client-a1"},
		"azp": "client-a1", "iat": time.Now().Unix(), "exp": time.Now().Add(time.Hour).Unix()})
	p := b.get(c.issuer + "/end_session?" + url.Values{"id_token_hint": {hint}, "state": {"s1"},
		"post_logout_redirect_uri": {"https://app-a.example/bye"}}.Encode())
	asked := time.Now()
	m := logoutIDRe.FindStringSubmatch(p.body)
	if p.status != 200 || p.url.Path != "/logout" || m == nil || !strings.Contains(p.body, "not the one signed in") {
		t.Fatalf("end_session with another account's hint: %d at %s %.300s; want the question", p.status, p.url, p.body)
	}
	// The question lapses at most 10s (in whole seconds) after it was put.
	hatest.WaitFor(t, 30*time.Second, "the question to lapse", func() bool { return time.Since(asked) > 11*time.Second })
	if p := b.get(c.issuer + "/logout"); !strings.Contains(p.body, "Sign out?") || logoutIDRe.MatchString(p.body) {
		t.Errorf("/logout after the question lapsed: %d %.300s; want the plain question", p.status, p.body)
	}
	if p := b.post("/logout", url.Values{"logout": {m[1]}, "decision": {"signout"}}); p.location != "" || p.url.Path != "/logged-out" {
		t.Errorf("the lapsed question's sign-out: %d at %s, Location %q; want /logged-out", p.status, p.url, p.location)
	}
	f = newFlow()
	f.extra = []oauth2.AuthCodeOption{oauth2.SetAuthURLParam("prompt", "none")}
	errorRedirect(t, a1, f, b.authorize(a1, f), "login_required")
}
