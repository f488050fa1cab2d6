package main

import (
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"golang.org/x/oauth2"

	"hakit.dev/hatest"
)

// kidOf returns the key ID in a JWT's header.
func kidOf(t *testing.T, jwt string) string {
	t.Helper()
	var h struct {
		Kid string `json:"kid"`
	}
	decodeSegment(t, strings.Split(jwt, ".")[0], &h)
	return h.Kid
}

// TestPairwiseSubjects signs one user in to four clients: the two of one
// sector see the same sub, the other sector another one, the public
// client the local ID. Then both instances restart and a new signing key
// is published (CLI) and takes over: every sub stays the same, tokens
// signed by the old key still verify, and id_token_hint and end_session
// with a pairwise sub find the user.
func TestPairwiseSubjects(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 2, true, "SSO_KEY_LEAD=2s", "SSO_KEY_ROTATION=1h")
	b := c.browser()
	subs := map[string]string{}
	var firstA1 *tokens
	signIn := func() {
		for i, id := range []string{"client-a1", "client-a2", "client-b", "client-pub"} {
			r := c.rp(id)
			f := newFlow()
			code := b.login(r, f, "erin@example.com", "correct horse battery", i == 0 && subs["client-a1"] == "")
			var tk *tokens
			if r.spec.Public {
				st, body := r.tokenRequest(t, c.issuer, codeForm(code, f.verifier, r.conf.RedirectURL))
				if st != 200 {
					t.Fatalf("public client: %d %v", st, body)
				}
				idt, err := r.verifier.Verify(t.Context(), body["id_token"].(string))
				if err != nil {
					t.Fatal(err)
				}
				tk = &tokens{idToken: idt, raw: body["id_token"].(string)}
				if sub, st := r.userinfo(t, body["access_token"].(string)); sub != idt.Subject {
					t.Errorf("%s: userinfo sub %q (%d), ID token %q", id, sub, st, idt.Subject)
				}
			} else {
				tk = r.mustExchange(t, f, code)
				if sub, st := r.userinfo(t, tk.tok.AccessToken); sub != tk.idToken.Subject {
					t.Errorf("%s: userinfo sub %q (%d), ID token %q", id, sub, st, tk.idToken.Subject)
				}
			}
			if old, ok := subs[id]; ok && old != tk.idToken.Subject {
				t.Errorf("%s: sub changed from %s to %s", id, old, tk.idToken.Subject)
			}
			subs[id] = tk.idToken.Subject
			if id == "client-a1" && firstA1 == nil {
				firstA1 = tk
			}
		}
	}
	signIn()
	if subs["client-a1"] != subs["client-a2"] {
		t.Errorf("one sector, two clients: %s and %s", subs["client-a1"], subs["client-a2"])
	}
	if subs["client-a1"] == subs["client-b"] {
		t.Error("two sectors got the same sub")
	}
	if _, err := uuid.Parse(subs["client-pub"]); err != nil || subs["client-pub"] == subs["client-a1"] {
		t.Errorf("public client's sub %q: want the local user ID", subs["client-pub"])
	}
	oldKid := kidOf(t, firstA1.raw)

	// Restart every instance, publish a new key; once it signs, sign in
	// again everywhere.
	c.restart(0)
	c.restart(1)
	out, err := c.cli("keys", "rotate")
	if err != nil || !strings.Contains(out, "published key") {
		t.Fatalf("sso keys rotate: %v\n%s", err, out)
	}
	a1 := c.rp("client-a1")
	var newKid string
	hatest.WaitFor(t, 20*time.Second, "the new key to sign", func() bool {
		f := newFlow()
		p := b.authorize(a1, f)
		tk := a1.mustExchange(t, f, b.codeFrom(a1, f, p))
		newKid = kidOf(t, tk.raw)
		return newKid != oldKid
	})
	signIn() // checks every sub against the first round
	if _, err := a1.verifier.Verify(t.Context(), firstA1.raw); err != nil {
		t.Errorf("an ID token of the old key no longer verifies: %v", err)
	}
	if n := c.queryInt("SELECT count(*) FROM signing_keys"); n != 2 {
		t.Errorf("%d signing keys; want the old and the new", n)
	}

	// id_token_hint (an old one, from before the restart) maps back to the
	// signed-in user: prompt=none gives a code.
	f := newFlow()
	f.extra = []oauth2.AuthCodeOption{oauth2.SetAuthURLParam("prompt", "none"), oauth2.SetAuthURLParam("id_token_hint", firstA1.raw)}
	a1.mustExchange(t, f, b.codeFrom(a1, f, b.authorize(a1, f)))

	// end_session with the hint: signed out, sent to the registered
	// post-logout URI with the state.
	p := b.get(c.issuer + "/end_session?" + url.Values{"id_token_hint": {firstA1.raw},
		"post_logout_redirect_uri": {"https://app-a.example/bye"}, "state": {"s1"}}.Encode())
	if p.location != "https://app-a.example/bye?state=s1" {
		t.Errorf("end_session: %d Location %q", p.status, p.location)
	}
	f = newFlow()
	f.extra = []oauth2.AuthCodeOption{oauth2.SetAuthURLParam("prompt", "none")}
	errorRedirect(t, a1, f, b.authorize(a1, f), "login_required")
	// ... and a1's tokens for the user are revoked.
	if st, body := a1.tokenRequest(t, c.issuer, url.Values{"grant_type": {"refresh_token"},
		"refresh_token": {firstA1.tok.RefreshToken}}); st == 200 {
		t.Errorf("a refresh token survived the logout: %v", body)
	}
	// An unregistered post-logout URI is refused.
	if p := b.get(c.issuer + "/end_session?" + url.Values{"id_token_hint": {firstA1.raw},
		"post_logout_redirect_uri": {"https://evil.example/"}}.Encode()); p.location != "" && strings.Contains(p.location, "evil") {
		t.Errorf("end_session redirected to an unregistered URI: %s", p.location)
	}
}

// TestInstanceKilledMidFlow runs logins through HAProxy to two instances
// and kills one (SIGKILL) while flows are between their pages: every
// login still ends with a verified ID token, since no instance holds
// state of its own.
func TestInstanceKilledMidFlow(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 2, true)
	a1 := c.rp("client-a1")
	const users = 6
	// Half the flows are at their login page when the instance dies.
	type pending struct {
		b  *browser
		f  *flow
		id string
	}
	var ps []pending
	for i := range users {
		b := c.browser()
		f := newFlow()
		p := b.authorize(a1, f)
		ps = append(ps, pending{b, f, formID(t, p)})
		_ = i
	}
	if err := c.instances[0].proc.Kill(); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i, p := range ps {
		wg.Go(func() {
			email := "user" + string(rune('a'+i)) + "@example.com"
			q := p.b.post("/register", url.Values{"authRequestID": {p.id}, "email": {email},
				"password": {"correct horse battery"}, "password2": {"correct horse battery"}})
			if !strings.Contains(q.url.Path, "/consent") {
				t.Errorf("user %d after register: %d %s", i, q.status, q.url)
				return
			}
			q = p.b.post("/consent", url.Values{"authRequestID": {p.id}, "decision": {"allow"}})
			if q.location == "" {
				t.Errorf("user %d after consent: %d %s", i, q.status, q.url)
				return
			}
			u, _ := url.Parse(q.location)
			tk, err := a1.exchange(t, p.f, u.Query().Get("code"))
			if err != nil {
				t.Errorf("user %d: %v", i, err)
				return
			}
			if tk.idToken.Subject == "" {
				t.Errorf("user %d: no sub", i)
			}
		})
	}
	wg.Wait()
	// And new flows go on, on the surviving instance.
	b := c.browser()
	f := newFlow()
	a1.mustExchange(t, f, b.login(a1, f, "late@example.com", "correct horse battery", true))
}
