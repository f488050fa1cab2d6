package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"golang.org/x/oauth2"

	"hakit.dev/dbrouter"
	"hakit.dev/hakit"
	"hakit.dev/hatest"
)

// mailTimeout bounds the wait for a mail: outbox, relay, queue, worker,
// SMTP, on a loaded machine.
const mailTimeout = 60 * time.Second

// mailCluster is one instance sending its mail to a Mailpit of its own.
func mailCluster(t *testing.T, extraEnv ...string) (*cluster, *hatest.Mailpit) {
	t.Helper()
	services(t)
	mp := hatest.NewMailpit(t, hatest.MailpitOptions{})
	env := append([]string{"SSO_SMTP_ADDR=" + mp.SMTPAddr, "SSO_MAIL_FROM=sso@example.test"}, extraEnv...)
	return newCluster(t, 1, false, env...), mp
}

// mailsTo returns the messages Mailpit has for addr, oldest first.
func mailsTo(t *testing.T, mp *hatest.Mailpit, addr string) []hatest.MailSummary {
	t.Helper()
	all, err := mp.Messages(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var out []hatest.MailSummary
	for _, m := range all {
		if slices.ContainsFunc(m.To, func(a hatest.MailAddress) bool { return strings.EqualFold(a.Address, addr) }) {
			out = append(out, m)
		}
	}
	slices.SortFunc(out, func(a, b hatest.MailSummary) int { return a.Created.Compare(b.Created) })
	return out
}

// waitMail waits for the n-th mail to addr and returns it, whole.
func waitMail(t *testing.T, mp *hatest.Mailpit, addr string, n int) hatest.Mail {
	t.Helper()
	var got []hatest.MailSummary
	hatest.WaitFor(t, mailTimeout, "mail to "+addr, func() bool {
		got = mailsTo(t, mp, addr)
		return len(got) >= n
	})
	m, err := mp.Message(context.Background(), got[n-1].ID)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

var leadRe = regexp.MustCompile(`(?s)<p class="lead">(.*?)</p>`)

// lead is a page's message (its lead paragraph), for failure reports.
func lead(body string) string {
	if m := leadRe.FindStringSubmatch(body); m != nil {
		return m[1]
	}
	if len(body) > 300 {
		return body[:300]
	}
	return body
}

var mailLinkRe = regexp.MustCompile(`https?://\S+/(verify|reset)\?token=([A-Za-z0-9_-]{43})\b`)

// mailLink returns the link in a mail and its token, and checks its form:
// <issuer>/<purpose>?token=<43 characters>.
func mailLink(t *testing.T, c *cluster, m hatest.Mail, purpose string) (link, token string) {
	t.Helper()
	sm := mailLinkRe.FindStringSubmatch(m.Text)
	if sm == nil {
		t.Fatalf("no link in the mail %q:\n%s", m.Subject, m.Text)
	}
	if want := c.issuer + "/" + purpose + "?token="; !strings.HasPrefix(sm[0], want) {
		t.Fatalf("link %s, want %s…", sm[0], want)
	}
	return sm[0], sm[2]
}

// emailVerified returns the email_verified claim of an ID token (nil when
// absent).
func emailVerified(t *testing.T, tk *tokens) *bool {
	t.Helper()
	var cl struct {
		EmailVerified *bool `json:"email_verified"`
	}
	if err := tk.idToken.Claims(&cl); err != nil {
		t.Fatal(err)
	}
	return cl.EmailVerified
}

// userinfoClaims returns the userinfo answer for an access token.
func userinfoClaims(t *testing.T, r *rp, access string) map[string]any {
	t.Helper()
	req, _ := http.NewRequest("GET", r.provider.UserInfoEndpoint(), nil)
	req.Header.Set("Authorization", "Bearer "+access)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("userinfo: %d", resp.StatusCode)
	}
	var m map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		t.Fatal(err)
	}
	return m
}

// testMailer is the app's mailer in this process, on the cluster's
// database and Mailpit, to run its tasks again.
func testMailer(t *testing.T, c *cluster, mp *hatest.Mailpit) *mailer {
	t.Helper()
	db, err := dbrouter.New(context.Background(), dbrouter.Config{Nodes: []string{c.pg.Nodes[0].DSNFor(c.db)}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	return &mailer{db: db, key: derive(testSecret, "sso mail links"), issuer: c.issuer,
		cfg: mailConfig{SMTPAddr: mp.SMTPAddr, From: "sso@example.test", VerifyTTL: time.Hour, ResetTTL: time.Hour},
		log: slog.New(slog.DiscardHandler)}
}

// TestEmailVerification: a registration mails a verification link (the
// outbox, Mailpit); userinfo says email_verified=false until the link is
// opened, true after. A forged, an expired and a
// replayed link get a clear error page and change nothing; "send again"
// mails a new link. The mail task run again sends no second mail, and two
// runs at once send one.
func TestEmailVerification(t *testing.T) {
	t.Parallel()
	c, mp := mailCluster(t)
	const addr = "vera@example.com"
	a1 := c.rp("client-a1")
	b := c.browser()
	f := newFlow()
	tk := a1.mustExchange(t, f, b.login(a1, f, addr, "correct horse battery", true))
	// With an access token, the claims of the email scope are at userinfo
	// (OIDC Core 5.4); an ID token that has one must agree.
	if v := emailVerified(t, tk); v != nil && *v {
		t.Fatalf("ID token email_verified of a new account: %v, want false or absent", *v)
	}
	if v, ok := userinfoClaims(t, a1, tk.tok.AccessToken)["email_verified"]; !ok || v != false {
		t.Errorf("userinfo email_verified of a new account: %v, want false", v)
	}

	first := waitMail(t, mp, addr, 1)
	if first.Subject != "Confirm your e-mail address for hakit SSO" || first.From == nil || first.From.Address != "sso@example.test" {
		t.Errorf("mail: subject %q from %v", first.Subject, first.From)
	}
	link1, token1 := mailLink(t, c, first, "verify")
	if n := c.queryInt("SELECT count(*) FROM mail_tokens WHERE token_hash = $1 AND purpose = 'verify'", hashToken(token1)); n != 1 {
		t.Fatalf("%d rows with the link's hash, want 1", n)
	}
	verified := func() int {
		return c.queryInt("SELECT count(*) FROM users WHERE email = $1 AND email_verified_at IS NOT NULL", addr)
	}

	// The account page offers to send the link again; it sends a new one.
	if p := b.get(c.issuer + "/"); !strings.Contains(p.body, "not verified") || !strings.Contains(p.body, `action="/account/verify-email"`) {
		t.Fatalf("account page of an unverified account: %d %.600s", p.status, p.body)
	}
	if p := b.post("/account/verify-email", url.Values{}); p.status != 200 || !strings.Contains(p.body, "We sent a new link") {
		t.Fatalf("send again: %d %.600s", p.status, p.body)
	}
	_, token2 := mailLink(t, c, waitMail(t, mp, addr, 2), "verify")
	if token2 == token1 {
		t.Fatal("the second link is the first one")
	}

	// The mail task again, from this process, on the mailed row: nothing
	// is sent, three runs at once included. A claim by a run in progress
	// holds another off; an expired claim is taken over and sends (the
	// count below can see a mail).
	ctx := context.Background()
	ml := testMailer(t, c, mp)
	var id2 string
	{
		conn := c.conn()
		if err := conn.QueryRow(ctx, "SELECT id FROM mail_tokens WHERE token_hash = $1", hashToken(token2)).Scan(&id2); err != nil {
			t.Fatal(err)
		}
		conn.Close(ctx)
	}
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			if err := ml.send(ctx, mailJob{ID: id2}); err != nil {
				t.Errorf("mail task run again: %v", err)
			}
		})
	}
	wg.Wait()
	c.sql("UPDATE mail_tokens SET mailed_at = NULL, mail_claimed_at = now() WHERE id = $1", id2)
	if err := ml.send(ctx, mailJob{ID: id2}); !errors.Is(err, errMailClaimed) {
		t.Errorf("mail task while another run holds the claim: %v, want errMailClaimed", err)
	}
	c.sql("UPDATE mail_tokens SET mail_claimed_at = now() - interval '1 hour' WHERE id = $1", id2)
	if err := ml.send(ctx, mailJob{ID: id2}); err != nil {
		t.Fatalf("mail task taking over an expired claim: %v", err)
	}
	if err := ml.send(ctx, mailJob{ID: id2}); err != nil {
		t.Fatalf("mail task after the takeover: %v", err)
	}
	if err := ml.send(ctx, mailJob{ID: "not-a-row"}); err == nil {
		t.Error("a mail task with a bad ID succeeded")
	}
	if got := mailsTo(t, mp, addr); len(got) != 3 {
		t.Errorf("%d mails to %s, want 3 (registration, send again, the takeover)", len(got), addr)
	}

	// Forged, malformed and expired links: an error page, nothing changes.
	forged := base64.RawURLEncoding.EncodeToString(randomBytes(32)) // well formed, never issued
	c.sql("UPDATE mail_tokens SET expires_at = now() - interval '1 second' WHERE token_hash = $1", hashToken(token2))
	for _, tc := range []struct{ name, url, want string }{
		{"forged", c.issuer + "/verify?token=" + string(forged), "not valid"},
		{"malformed", c.issuer + "/verify?token=%27%20OR%201=1--", "not valid"},
		{"missing", c.issuer + "/verify", "not valid"},
		{"expired", c.issuer + "/verify?token=" + token2, "has expired"},
	} {
		if p := b.get(tc.url); p.status != http.StatusBadRequest || !strings.Contains(p.body, tc.want) {
			t.Errorf("%s link: %d %s; want 400 with %q", tc.name, p.status, lead(p.body), tc.want)
		}
	}
	if n := verified(); n != 0 {
		t.Fatal("a refused link verified the address")
	}

	// The link, opened in another browser (no session needed): verified.
	if p := c.browser().get(link1); p.status != 200 || !strings.Contains(p.body, addr+" is verified") {
		t.Fatalf("verification link: %d %.600s", p.status, p.body)
	}
	if verified() != 1 {
		t.Fatal("the link did not verify the address")
	}
	var at1 time.Time
	{
		conn := c.conn()
		_ = conn.QueryRow(ctx, "SELECT email_verified_at FROM users WHERE email = $1", addr).Scan(&at1)
		conn.Close(ctx)
	}
	// The same link again: refused, the verification stays as it was.
	if p := b.get(link1); p.status != http.StatusBadRequest || !strings.Contains(p.body, "already used") {
		t.Errorf("replayed link: %d %s", p.status, lead(p.body))
	}
	if n := c.queryInt("SELECT count(*) FROM users WHERE email = $1 AND email_verified_at = $2", addr, at1); n != 1 {
		t.Error("the replayed link changed email_verified_at")
	}

	// The next sign-in: email_verified=true in the ID token and userinfo.
	f2 := newFlow()
	tk2 := a1.mustExchange(t, f2, b.codeFrom(a1, f2, b.authorize(a1, f2)))
	if v := emailVerified(t, tk2); v != nil && !*v {
		t.Errorf("ID token email_verified after the link: %v, want true or absent", *v)
	}
	if v := userinfoClaims(t, a1, tk2.tok.AccessToken)["email_verified"]; v != true {
		t.Errorf("userinfo email_verified after the link: %v, want true", v)
	}
	if p := b.get(c.issuer + "/"); !strings.Contains(p.body, "E-mail address verified") {
		t.Errorf("account page after verification: %.600s", p.body)
	}
	if p := b.post("/account/verify-email", url.Values{}); p.status != 200 || !strings.Contains(p.body, "already verified") {
		t.Errorf("send again when verified: %d %s", p.status, lead(p.body))
	}
}

// postFrom posts a form as b from client address ip (X-Forwarded-For: the
// test instances trust 127.0.0.1 as a proxy).
func (b *browser) postFrom(path string, form url.Values, ip string) pageResp {
	b.t.Helper()
	req, _ := http.NewRequest("POST", b.c.issuer+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("X-Forwarded-For", ip)
	return b.do(req)
}

// TestPasswordReset: "forgot password" mails a single-use link; the new
// password works and the old one no longer does; the refresh and access
// tokens of before are revoked and every login session is signed out. An
// unknown address gets the same answer and no mail. A replayed, forged or
// expired link is refused and changes nothing. Requests are throttled per
// address (known or not) and per client address.
func TestPasswordReset(t *testing.T) {
	t.Parallel()
	c, mp := mailCluster(t, "SSO_MAIL_THROTTLE_ADDRESS=3", "SSO_MAIL_THROTTLE_IP=8")
	const addr, oldPW, newPW = "rosa@example.com", "correct horse battery", "new staple battery horse"
	a1 := c.rp("client-a1")
	b := c.browser()
	f := newFlow()
	tk := a1.mustExchange(t, f, b.login(a1, f, addr, oldPW, true))
	if tk.tok.RefreshToken == "" {
		t.Fatal("no refresh token")
	}
	waitMail(t, mp, addr, 1) // the verification mail
	b2 := c.browser()        // signed in on a second browser too
	if p := b2.post("/login", url.Values{"email": {addr}, "password": {oldPW}}); p.status != 200 || !strings.Contains(p.body, "Apps you signed in to") {
		t.Fatalf("login on a second browser: %d %.400s", p.status, p.body)
	}

	// Known and unknown addresses: the same page, a mail only for the known.
	anon := c.browser()
	if p := anon.get(c.issuer + "/forgot"); p.status != 200 || !strings.Contains(p.body, `action="/forgot"`) {
		t.Fatalf("forgot form: %d %.400s", p.status, p.body)
	}
	known := anon.post("/forgot", url.Values{"email": {addr}})
	unknown := anon.post("/forgot", url.Values{"email": {"nobody@example.com"}})
	if known.status != 200 || !strings.Contains(known.body, "Check your mail") {
		t.Fatalf("forgot, known address: %d %.400s", known.status, known.body)
	}
	if unknown.status != known.status || strings.NewReplacer("nobody@example.com", addr, "nobody%40example.com", url.QueryEscape(addr)).Replace(unknown.body) != known.body {
		t.Errorf("forgot answers differently for an unknown address:\n%d %s\n---\n%d %s", known.status, known.body, unknown.status, unknown.body)
	}
	if p := anon.post("/forgot", url.Values{"email": {"not an address"}}); p.status != http.StatusUnprocessableEntity || !strings.Contains(p.body, "valid e-mail") {
		t.Errorf("forgot with a malformed address: %d %s", p.status, lead(p.body))
	}
	m := waitMail(t, mp, addr, 2)
	if m.Subject != "Reset your hakit SSO password" {
		t.Errorf("reset mail subject %q", m.Subject)
	}
	link, token := mailLink(t, c, m, "reset")

	// The link opens the form; a bad form does not spend it.
	p := anon.get(link)
	if p.status != 200 || !strings.Contains(p.body, `name="token" value="`+token+`"`) {
		t.Fatalf("reset form: %d %.400s", p.status, p.body)
	}
	if p := anon.post("/reset", url.Values{"token": {token}, "password": {newPW}, "password2": {newPW + "x"}}); p.status != http.StatusUnprocessableEntity {
		t.Errorf("reset with two different passwords: %d %s", p.status, lead(p.body))
	}
	if p := anon.get(link); p.status != 200 {
		t.Fatalf("the link after a refused form: %d %s", p.status, lead(p.body))
	}
	if p := anon.post("/reset", url.Values{"token": {token}, "password": {newPW}, "password2": {newPW}}); p.status != 200 ||
		p.url.Path != "/login" || !strings.Contains(p.body, "Your password is changed") {
		t.Fatalf("reset: %d %s %.400s", p.status, p.url, p.body)
	}

	// The old password is refused, the new one works.
	if p := c.browser().post("/login", url.Values{"email": {addr}, "password": {oldPW}}); p.status != http.StatusUnauthorized {
		t.Errorf("old password after the reset: %d", p.status)
	}
	if p := c.browser().post("/login", url.Values{"email": {addr}, "password": {newPW}}); p.status != 200 || !strings.Contains(p.body, "Apps you signed in to") {
		t.Errorf("new password: %d %s", p.status, lead(p.body))
	}
	// The tokens of before: refresh refused, access token dead.
	if st, body := a1.tokenRequest(t, c.issuer, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tk.tok.RefreshToken}}); st == 200 {
		t.Errorf("the refresh token of before the reset still works: %v", body)
	}
	if _, st := a1.userinfo(t, tk.tok.AccessToken); st == 200 {
		t.Error("the access token of before the reset still works")
	}
	// Both browsers' sessions are signed out: the account page is gone,
	// and a sign-in to the app asks for the password.
	if p := b2.get(c.issuer + "/"); strings.Contains(p.body, "Apps you signed in to") || !strings.Contains(p.body, "One sign-in for every site") {
		t.Errorf("the second browser is still signed in after the reset: %.400s", p.body)
	}
	f2 := newFlow()
	if p := b.authorize(a1, f2); p.location != "" || !strings.Contains(p.url.Path, "/login") {
		t.Errorf("the first browser signs in to the app without the password after the reset: %d %s %s", p.status, p.url, p.location)
	}

	// The link again, a forged one, an expired one: refused; the password
	// stays the new one.
	var hashAfter string
	{
		conn := c.conn()
		_ = conn.QueryRow(context.Background(), "SELECT password_hash FROM users WHERE email = $1", addr).Scan(&hashAfter)
		conn.Close(context.Background())
	}
	if p := anon.get(link); p.status != http.StatusBadRequest || !strings.Contains(p.body, "already used") {
		t.Errorf("reset link opened again: %d %s", p.status, lead(p.body))
	}
	if p := anon.post("/reset", url.Values{"token": {token}, "password": {oldPW}, "password2": {oldPW}}); p.status != http.StatusBadRequest || !strings.Contains(p.body, "already used") {
		t.Errorf("reset link replayed: %d %s", p.status, lead(p.body))
	}
	forged := base64.RawURLEncoding.EncodeToString(randomBytes(32))
	if p := anon.post("/reset", url.Values{"token": {forged}, "password": {oldPW}, "password2": {oldPW}}); p.status != http.StatusBadRequest || !strings.Contains(p.body, "not valid") {
		t.Errorf("forged reset link: %d %s", p.status, lead(p.body))
	}
	if p := anon.get(c.issuer + "/reset?token=" + forged); p.status != http.StatusBadRequest {
		t.Errorf("forged reset link opened: %d", p.status)
	}
	anon.post("/forgot", url.Values{"email": {addr}})
	_, token3 := mailLink(t, c, waitMail(t, mp, addr, 3), "reset")
	c.sql("UPDATE mail_tokens SET expires_at = now() - interval '1 second' WHERE token_hash = $1", hashToken(token3))
	if p := anon.post("/reset", url.Values{"token": {token3}, "password": {oldPW}, "password2": {oldPW}}); p.status != http.StatusBadRequest || !strings.Contains(p.body, "has expired") {
		t.Errorf("expired reset link: %d %s", p.status, lead(p.body))
	}
	if n := c.queryInt("SELECT count(*) FROM users WHERE email = $1 AND password_hash = $2", addr, hashAfter); n != 1 {
		t.Error("a refused link changed the password")
	}

	// Throttling, from another client address: 3 mails per address in the
	// window, known (2 asked already) or unknown alike; 8 per client
	// address; another client address is not held back.
	const ip1, ip2 = "203.0.113.7", "203.0.113.8"
	for i, tc := range []struct {
		email, ip string
		status    int
	}{
		{addr, ip1, 200}, {addr, ip1, 429}, // the 3rd and 4th for the known address
		{"ghost@example.com", ip1, 200}, {"ghost@example.com", ip1, 200}, {"ghost@example.com", ip1, 200},
		{"ghost@example.com", ip1, 429},
		{"x1@example.com", ip1, 200}, {"x2@example.com", ip1, 200}, // the 7th and 8th from ip1
		{"x3@example.com", ip1, 429}, // the 9th from ip1
		{"x3@example.com", ip2, 200},
	} {
		p := anon.postFrom("/forgot", url.Values{"email": {tc.email}}, tc.ip)
		if p.status != tc.status {
			t.Errorf("forgot #%d (%s from %s): %d, want %d", i, tc.email, tc.ip, p.status, tc.status)
		}
		if tc.status == 429 && !strings.Contains(p.body, "Too many mails") {
			t.Errorf("forgot #%d: 429 page %s", i, lead(p.body))
		}
	}
	waitMail(t, mp, addr, 4) // verification, 3 reset links
	if n := c.queryInt("SELECT count(*) FROM mail_tokens WHERE email = $1 AND purpose = 'reset'", addr); n != 3 {
		t.Errorf("%d reset links for %s, want 3 (the throttled one made none)", n, addr)
	}

	// The reset task run again, three runs at once: one mail. For an
	// unknown address: nothing.
	ml := testMailer(t, c, mp)
	job := resetJob{ID: uuid.NewString(), Email: addr}
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			if err := ml.reset(context.Background(), job); err != nil && !errors.Is(err, errMailClaimed) {
				t.Errorf("reset task: %v", err)
			}
		})
	}
	wg.Wait()
	if err := ml.reset(context.Background(), job); err != nil {
		t.Errorf("reset task run again: %v", err)
	}
	if err := ml.reset(context.Background(), resetJob{ID: uuid.NewString(), Email: "nobody@example.com"}); err != nil {
		t.Errorf("reset task for an unknown address: %v", err)
	}
	if got := mailsTo(t, mp, addr); len(got) != 5 {
		t.Errorf("%d mails to %s, want 5 (the task's, once)", len(got), addr)
	}
	// By now the tasks of the unknown addresses ran long ago: no link, no
	// mail for any of them.
	for _, a := range []string{"nobody@example.com", "ghost@example.com", "x1@example.com", "x2@example.com", "x3@example.com"} {
		if n := c.queryInt("SELECT count(*) FROM mail_tokens WHERE email = $1", a); n != 0 {
			t.Errorf("%d links made for the unknown address %s", n, a)
		}
		if got := mailsTo(t, mp, a); len(got) != 0 {
			t.Errorf("%d mails to the unknown address %s", len(got), a)
		}
	}
}

// TestMailMessage checks the mail's text without services: headers, the
// link alone on its line, a name with line breaks kept out of the headers
// and the greeting, the lifetimes in words, and the token's form.
func TestMailMessage(t *testing.T) {
	m := &mailer{key: derive(testSecret, "sso mail links"), issuer: "https://login.example.com/",
		cfg: mailConfig{From: "sso@example.com", VerifyTTL: 48 * time.Hour, ResetTTL: time.Hour}}
	id := "0b6c2c1e-4f5a-4c0e-9c43-6e0c2b1a9d11"
	tok := m.token(id)
	if !validToken(tok) || tok != m.token(id) || tok == m.token("0b6c2c1e-4f5a-4c0e-9c43-6e0c2b1a9d12") {
		t.Fatalf("token %q: not a stable 43-character base64url token per row", tok)
	}
	for _, bad := range []string{"", "short", tok + "x", strings.Repeat("!", 43), tok[:42] + "="} {
		if validToken(bad) {
			t.Errorf("validToken(%q) = true", bad)
		}
	}
	link := m.link(purposeReset, tok)
	if link != "https://login.example.com/reset?token="+tok {
		t.Errorf("link %s", link)
	}
	msg := string(m.message(id, purposeReset, "Eve\r\nBcc: victim@example.com", "eve@example.com", link, time.Unix(0, 0)))
	head, body, ok := strings.Cut(msg, "\r\n\r\n")
	if !ok {
		t.Fatalf("no header/body separator:\n%s", msg)
	}
	for _, h := range strings.Split(head, "\r\n") {
		name, _, _ := strings.Cut(h, ":")
		if !slices.Contains([]string{"From", "To", "Subject", "Date", "Message-ID", "MIME-Version", "Content-Type", "Content-Transfer-Encoding"}, name) {
			t.Errorf("unexpected header line %q", h)
		}
	}
	if !strings.Contains(head, "Subject: Reset your hakit SSO password\r\n") {
		t.Errorf("headers:\n%s", head)
	}
	if !strings.Contains(body, "\r\n  "+link+"\r\n") || !strings.Contains(body, "within 1 hour") ||
		!strings.HasPrefix(body, "Hello EveBcc: victim@example.com,\r\n") {
		t.Errorf("body:\n%s", body)
	}
	verify := string(m.message(id, purposeVerify, "", "a@example.com", m.link(purposeVerify, tok), time.Unix(0, 0)))
	if !strings.Contains(verify, "Subject: Confirm your e-mail address for hakit SSO") || !strings.Contains(verify, "within 48 hours") ||
		!strings.Contains(verify, "\r\n\r\nHello,\r\n") {
		t.Errorf("verification mail:\n%s", verify)
	}
	for d, want := range map[time.Duration]string{time.Hour: "1 hour", 48 * time.Hour: "48 hours", 30 * time.Minute: "30 minutes", 90 * time.Minute: "90 minutes"} {
		if got := ttlText(d); got != want {
			t.Errorf("ttlText(%s) = %q, want %q", d, got, want)
		}
	}
}

// TestMailConfig: SSO_SMTP_ADDR is required outside SSO_DEV and must be
// host:port; SSO_MAIL_FROM must be an address and defaults to one at the
// issuer's host; lifetimes and limits must be positive.
func TestMailConfig(t *testing.T) {
	base := map[string]string{"SSO_ISSUER": "https://login.example.com", "SSO_SECRET": testSecret}
	read := func(vars map[string]string) (config, error) {
		all := map[string]string{}
		for k, v := range base {
			all[k] = v
		}
		for k, v := range vars {
			all[k] = v
		}
		env := hakit.NewEnv(func(k string) string { return all[k] })
		c := readConfig(env)
		return c, env.Err()
	}
	c, err := read(map[string]string{"SSO_SMTP_ADDR": "127.0.0.1:25"})
	if err != nil || c.mail.From != "no-reply@login.example.com" || c.mail.ResetTTL != time.Hour || c.requireVerified ||
		c.life.LogoutQuestion != 5*time.Minute {
		t.Errorf("defaults: %+v, %v", c.mail, err)
	}
	if _, err := read(map[string]string{"SSO_DEV": "true"}); err != nil {
		t.Errorf("SSO_DEV without SMTP: %v", err)
	}
	for _, tc := range []struct {
		vars map[string]string
		want string
	}{
		{map[string]string{}, "SSO_SMTP_ADDR"},
		{map[string]string{"SSO_SMTP_ADDR": "mailhost"}, "SSO_SMTP_ADDR"},
		{map[string]string{"SSO_SMTP_ADDR": "127.0.0.1:25", "SSO_MAIL_FROM": "not an address"}, "SSO_MAIL_FROM"},
		{map[string]string{"SSO_SMTP_ADDR": "127.0.0.1:25", "SSO_RESET_TTL": "0s"}, "SSO_RESET_TTL"},
		{map[string]string{"SSO_SMTP_ADDR": "127.0.0.1:25", "SSO_MAIL_THROTTLE_IP": "0"}, "SSO_MAIL_THROTTLE"},
		{map[string]string{"SSO_SMTP_ADDR": "127.0.0.1:25", "SSO_LOGOUT_QUESTION_TTL": "0s"}, "SSO_LOGOUT_QUESTION_TTL"},
	} {
		if _, err := read(tc.vars); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want one naming %s", tc.vars, err, tc.want)
		}
	}
}

// TestRequireVerifiedEmail: with SSO_REQUIRE_VERIFIED_EMAIL, an account
// whose address is not verified stops at a page saying so instead of
// signing in to the client (prompt=none: interaction_required); after the
// mailed link, the same sign-in goes through.
func TestRequireVerifiedEmail(t *testing.T) {
	t.Parallel()
	c, mp := mailCluster(t, "SSO_REQUIRE_VERIFIED_EMAIL=true")
	const addr = "ursula@example.com"
	a1 := c.rp("client-a1")
	b := c.browser()
	f := newFlow()
	id := formID(t, b.authorize(a1, f))
	p := b.post("/register", url.Values{"authRequestID": {id}, "email": {addr}, "password": {"left hand darkness"},
		"password2": {"left hand darkness"}})
	if p.location != "" || p.status != http.StatusForbidden || !strings.Contains(p.body, "accepts verified addresses only") {
		t.Fatalf("unverified sign-in to a client: %d %s %s", p.status, p.location, lead(p.body))
	}
	fn := newFlow()
	fn.extra = append(fn.extra, oauth2.SetAuthURLParam("prompt", "none"))
	if p := b.authorize(a1, fn); p.location == "" || !strings.Contains(p.location, "error=interaction_required") {
		t.Errorf("prompt=none, unverified: %d %s", p.status, p.location)
	}
	// "Send the link again" from that page comes back to it.
	if p := b.post("/account/verify-email", url.Values{"authRequestID": {id}}); p.url.Path != "/login" ||
		!strings.Contains(p.body, "We sent a new link") {
		t.Errorf("send again from the sign-in: %d %s %s", p.status, p.url, lead(p.body))
	}
	link, _ := mailLink(t, c, waitMail(t, mp, addr, 1), "verify")
	if p := b.get(link); p.status != 200 {
		t.Fatalf("verification link: %d %s", p.status, lead(p.body))
	}
	// The other link (send again), on a verified address: nothing changes.
	link2, _ := mailLink(t, c, waitMail(t, mp, addr, 2), "verify")
	if p := b.get(link2); p.status != 200 || !strings.Contains(p.body, addr+" was already verified") {
		t.Errorf("second link on a verified address: %d %s", p.status, lead(p.body))
	}
	p = b.get(c.issuer + "/login?authRequestID=" + id)
	if p.location == "" && strings.Contains(p.url.Path, "/consent") {
		p = b.post("/consent", url.Values{"authRequestID": {formID(t, p)}, "decision": {"allow"}})
	}
	tk := a1.mustExchange(t, f, b.codeFrom(a1, f, p))
	if v := userinfoClaims(t, a1, tk.tok.AccessToken)["email_verified"]; v != true {
		t.Errorf("email_verified: %v", v)
	}
}
