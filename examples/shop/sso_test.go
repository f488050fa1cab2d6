package main

// "Sign in with hakit SSO" against the real provider: examples/sso built
// and run as a process on the shared PostgreSQL and Redis, the shop
// in-process, and a cookie-jar HTTP client as the browser.

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"hakit.dev/hatest"
)

// testProvider is examples/sso running as a process.
type testProvider struct {
	Issuer string
	proc   *hatest.Process
	env    []string
	bin    string
	addr   string
}

// ssoClientSecret is the shop's client secret in the tests.
const ssoClientSecret = "shop-secret-0123456789-0123456789-0123456789"

// envProviderBin names a provider binary to use instead of building
// ../sso (a build of another checkout, or a faster rerun).
const envProviderBin = "SHOP_TEST_SSO_BIN"

// buildProvider builds examples/sso (a plain build, bounded by 3 minutes:
// the provider is not what these tests check for races), or returns
// $SHOP_TEST_SSO_BIN.
func buildProvider(t *testing.T) string {
	t.Helper()
	if bin := os.Getenv(envProviderBin); bin != "" {
		return bin
	}
	return hatest.BuildModule(t, "../sso", 3*time.Minute)
}

// newProvider prepares the provider on addr (its own database and Redis
// database on the shared services), with the shop registered as a
// confidential client for shopBase. It does not start it.
func newProvider(t *testing.T, addr, shopBase string, extraEnv ...string) *testProvider {
	t.Helper()
	svc := testServices(t)
	ctx := context.Background()
	n := dbSeq.Add(1) // a Redis database and a database name, as a shop's
	if n > maxShops {
		t.Fatalf("more than %d test databases: raise maxShops", maxShops)
	}
	db := fmt.Sprintf("sso%d", n)
	if err := svc.pg.CreateDatabase(ctx, db); err != nil {
		t.Fatal(err)
	}
	if err := svc.pg.WaitReplicated(ctx); err != nil {
		t.Fatal(err)
	}
	clients, _ := json.Marshal([]map[string]any{{
		"id": "shop", "name": "The Shop", "secret": ssoClientSecret,
		"redirect_uris":             []string{shopBase + "/login/sso/callback"},
		"post_logout_redirect_uris": []string{shopBase + "/"},
	}})
	p := &testProvider{Issuer: "http://" + addr, addr: addr, bin: buildProvider(t)}
	p.env = append([]string{
		"HAKIT_ADDR=" + addr,
		"HAKIT_DATABASE_URL_1=" + svc.pg.Nodes[0].DSNFor(db),
		"HAKIT_DATABASE_URL_2=" + svc.pg.Nodes[1].DSNFor(db),
		fmt.Sprintf("HAKIT_REDIS_URL=redis://%s/%d", svc.redis.Addr(), n),
		"HAKIT_REDIS_NO_REPLICAS=true",
		"HAKIT_DRAIN_DELAY=0",
		"SSO_ISSUER=" + p.Issuer,
		"SSO_SECRET=" + rand.Text() + rand.Text(),
		"SSO_DEV=true",
		"SSO_ARGON2_MEMORY_KIB=1024", "SSO_ARGON2_TIME=1", "SSO_ARGON2_THREADS=1",
		"SSO_SMTP_ADDR=" + svc.mail.SMTPAddr,
		"SSO_BOOTSTRAP_CLIENTS=" + string(clients),
	}, extraEnv...)
	return p
}

// start runs the provider and waits until it is ready.
func (p *testProvider) start(t *testing.T) {
	t.Helper()
	p.proc = hatest.NewProcess(t, hatest.ProcessOptions{Name: "sso", Path: p.bin, Env: p.env})
	hatest.WaitFor(t, 90*time.Second, "the provider ready", func() bool {
		if p.proc.Exited() {
			t.Fatalf("the provider exited:\n%s", p.proc.Output())
		}
		resp, err := http.Get(p.Issuer + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

// stop stops the provider (SIGTERM).
func (p *testProvider) stop(t *testing.T) {
	t.Helper()
	if err := p.proc.Stop(15 * time.Second); err != nil {
		t.Fatal(err)
	}
}

// rpBrowser is a browser for both sites: one cookie jar, redirects
// followed by walk (so that a test can stop at the shop's callback).
type rpBrowser struct {
	t    *testing.T
	http *http.Client
}

func newRPBrowser(t *testing.T) *rpBrowser {
	jar, _ := cookiejar.New(nil)
	return &rpBrowser{t: t, http: &http.Client{Jar: jar, Timeout: 60 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

// resp is one answer: its URL, status, Location (absolute) and body.
type resp struct {
	URL      *url.URL
	Status   int
	Location string
	Header   http.Header
	Body     string
}

func (b *rpBrowser) do(method, u string, form url.Values) resp {
	b.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		b.t.Fatal(err)
	}
	req.Header.Set("Accept", "text/html")
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	res, err := b.http.Do(req)
	if err != nil {
		b.t.Fatalf("%s %s: %v", method, u, err)
	}
	defer res.Body.Close()
	data, _ := io.ReadAll(res.Body)
	r := resp{URL: req.URL, Status: res.StatusCode, Header: res.Header, Body: string(data)}
	if loc := res.Header.Get("Location"); loc != "" {
		l, err := req.URL.Parse(loc)
		if err != nil {
			b.t.Fatalf("bad Location %q: %v", loc, err)
		}
		r.Location = l.String()
	}
	return r
}

// walk follows redirects from r until a page, or until a redirect to a
// URL starting with stop (returned unfollowed).
func (b *rpBrowser) walk(r resp, stop string) resp {
	b.t.Helper()
	for i := 0; r.Status/100 == 3 && r.Location != ""; i++ {
		if i == 20 {
			b.t.Fatalf("redirect loop at %s", r.URL)
		}
		if stop != "" && strings.HasPrefix(r.Location, stop) {
			return r
		}
		r = b.do(http.MethodGet, r.Location, nil)
	}
	return r
}

func (b *rpBrowser) get(u, stop string) resp {
	b.t.Helper()
	return b.walk(b.do(http.MethodGet, u, nil), stop)
}

func (b *rpBrowser) post(u string, form url.Values, stop string) resp {
	b.t.Helper()
	return b.walk(b.do(http.MethodPost, u, form), stop)
}

var reAuthRequest = regexp.MustCompile(`name="authRequestID" value="([^"]+)"`)

// authRequestID reads the provider's form's request ID.
func authRequestID(t *testing.T, r resp) string {
	t.Helper()
	m := reAuthRequest.FindStringSubmatch(r.Body)
	if m == nil {
		t.Fatalf("no authRequestID on %s (%d):\n%.1500s", r.URL, r.Status, r.Body)
	}
	return m[1]
}

// ssoLab is a shop with SSO and its provider.
type ssoLab struct {
	shop     *testShop
	base     string // the shop's URL (SHOP_BASE_URL)
	provider *testProvider
	callback string
}

// newSSOLab starts the shop with SSO configured towards a provider that
// is not running yet (start it with lab.provider.start).
func newSSOLab(t *testing.T) *ssoLab {
	t.Helper()
	testServices(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// The shop and the provider on one host, as on a laptop or in the
	// lab: a browser keeps one cookie per name and host, whatever the
	// port, and the two cookies have different names ("session", "sso").
	// The browser test in examples/sso puts them on two sites, as in
	// production.
	base := "http://" + ln.Addr().String()
	paddr := freeAddr(t)
	p := newProvider(t, paddr, base)
	ts := startShop(t, shopOptions{Listener: ln, Env: map[string]string{
		"SHOP_SSO_ISSUER":        p.Issuer,
		"SHOP_SSO_CLIENT_ID":     "shop",
		"SHOP_SSO_CLIENT_SECRET": ssoClientSecret,
		"SHOP_BASE_URL":          base,
	}})
	return &ssoLab{shop: ts, base: base, provider: p, callback: base + "/login/sso/callback"}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// signIn starts "Sign in with hakit SSO" at the shop (path: /login/sso
// with its query) and goes through the provider's pages (register or log
// in, consent with decision) up to the redirect to the shop's callback,
// which it returns unfollowed.
func (l *ssoLab) signIn(b *rpBrowser, path, email, password string, register bool, decision string) resp {
	b.t.Helper()
	r := b.get(l.base+path, l.callback)
	if r.Status/100 != 3 {
		id := authRequestID(b.t, r)
		switch {
		case register:
			r = b.post(l.provider.Issuer+"/register", url.Values{"authRequestID": {id}, "email": {email},
				"name": {"Ada Lovelace"}, "password": {password}, "password2": {password}}, l.callback)
		case strings.HasPrefix(r.URL.Path, "/login"):
			r = b.post(l.provider.Issuer+"/login", url.Values{"authRequestID": {id}, "email": {email},
				"password": {password}}, l.callback)
		}
	}
	if r.Status/100 != 3 && strings.HasPrefix(r.URL.Path, "/consent") {
		r = b.post(l.provider.Issuer+"/consent", url.Values{"authRequestID": {authRequestID(b.t, r)},
			"decision": {decision}}, l.callback)
	}
	if !strings.HasPrefix(r.Location, l.callback+"?") {
		b.t.Fatalf("no redirect to the shop's callback: %d at %s, Location %q:\n%.1500s", r.Status, r.URL, r.Location, r.Body)
	}
	return r
}

// shopUser is who the shop's header says is signed in ("" for nobody).
func (l *ssoLab) shopUser(b *rpBrowser) string {
	b.t.Helper()
	home := b.get(l.base+"/", "")
	if home.Status != http.StatusOK {
		b.t.Fatalf("shop home: %d", home.Status)
	}
	if !strings.Contains(home.Body, "Sign out") {
		return ""
	}
	m := regexp.MustCompile(`data-user="([^"]*)"`).FindStringSubmatch(home.Body)
	if m == nil {
		return "?"
	}
	return m[1]
}

// TestSSO: the whole relying party against the real provider. The shop
// starts while the provider is down (the button answers a 503 page), then
// the provider comes up: a first sign-in creates the account and keeps
// ?next=, a tampered state, a replayed callback and a callback in another
// browser are refused with nothing changed, a declined consent says so, a
// second sign-in finds the same account, an existing local account with
// the same unverified address is not taken over until the provider has
// verified it, signing out of the shop signs out of the provider too, and
// a callback arriving while the provider is down gets a 503 page.
func TestSSO(t *testing.T) {
	l := newSSOLab(t)
	ts := l.shop
	users := func() int { return ts.count(t, "SELECT count(*) FROM users") }
	identities := func() int { return ts.count(t, "SELECT count(*) FROM sso_identities") }

	// The provider is down: the shop started anyway, the button answers.
	b := newRPBrowser(t)
	if login := b.get(l.base+"/login", ""); !strings.Contains(login.Body, `href="/login/sso"`) {
		t.Fatalf("no SSO button on the login page:\n%s", excerpt(login.Body))
	}
	down := b.get(l.base+"/login/sso", "")
	if down.Status != http.StatusServiceUnavailable || dataPage(down.Body) != "login" ||
		!strings.Contains(down.Body, "cannot be reached") || down.Header.Get("Retry-After") == "" {
		t.Fatalf("provider down: %d %v\n%s", down.Status, down.Header, excerpt(down.Body))
	}

	l.provider.start(t)
	hatest.WaitFor(t, 30*time.Second, "the button leads to the provider", func() bool {
		r := b.do(http.MethodGet, l.base+"/login/sso", nil)
		return r.Status == http.StatusFound && strings.HasPrefix(r.Location, l.provider.Issuer+"/")
	})
	before := users()

	// A session keeps the last ssoMaxFlows flows: the oldest of one more
	// is gone (its state unknown), the newest is there (its made-up code
	// reaches the provider, which refuses it).
	tabs := newRPBrowser(t)
	var states []string
	for range ssoMaxFlows + 1 {
		r := tabs.do(http.MethodGet, l.base+"/login/sso", nil)
		u, err := url.Parse(r.Location)
		if err != nil || r.Status != http.StatusFound {
			t.Fatalf("start: %d %q %v", r.Status, r.Location, err)
		}
		states = append(states, u.Query().Get("state"))
	}
	oldest := tabs.get(l.callback+"?"+url.Values{"state": {states[0]}, "code": {"made-up"}}.Encode(), "")
	newest := tabs.get(l.callback+"?"+url.Values{"state": {states[ssoMaxFlows]}, "code": {"made-up"}}.Encode(), "")
	if oldest.Status != http.StatusBadRequest || !strings.Contains(oldest.Body, "not valid here") ||
		newest.Status != http.StatusBadRequest || !strings.Contains(newest.Body, "did not accept") {
		t.Fatalf("flows kept: oldest %d, newest %d\n%s\n%s", oldest.Status, newest.Status, excerpt(oldest.Body), excerpt(newest.Body))
	}

	// First sign-in: registration at the provider, consent, account made.
	cb := l.signIn(b, "/login/sso?next=/cart", "ada@example.test", "analytical engine", true, "allow")
	q, _ := url.Parse(cb.Location)
	authURL := b.do(http.MethodGet, l.base+"/login/sso", nil).Location // a second flow, left open
	au, _ := url.Parse(authURL)
	for _, p := range []string{"code_challenge", "nonce", "state"} {
		if au.Query().Get(p) == "" {
			t.Fatalf("authorization request without %s: %s", p, authURL)
		}
	}
	if m := au.Query().Get("code_challenge_method"); m != "S256" {
		t.Fatalf("code_challenge_method %q, want S256", m)
	}

	// A tampered state: refused, nothing changed, the real one still works.
	tampered := *q
	tq := tampered.Query()
	tq.Set("state", tq.Get("state")+"x")
	tampered.RawQuery = tq.Encode()
	if r := b.get(tampered.String(), ""); r.Status != http.StatusBadRequest || dataPage(r.Body) != "sso_error" ||
		!strings.Contains(r.Body, "not valid") {
		t.Fatalf("tampered state: %d\n%s", r.Status, excerpt(r.Body))
	}
	if l.shopUser(b) != "" || users() != before || identities() != 0 {
		t.Fatal("a tampered state changed something")
	}
	// The callback in another browser (a login CSRF): no flow there.
	other := newRPBrowser(t)
	if r := other.get(cb.Location, ""); r.Status != http.StatusBadRequest {
		t.Fatalf("callback in another browser: %d\n%s", r.Status, excerpt(r.Body))
	}
	if l.shopUser(other) != "" || users() != before {
		t.Fatal("the callback in another browser signed someone in")
	}

	done := b.do(http.MethodGet, cb.Location, nil)
	want(t, "callback", page{Status: done.Status, Location: done.Location}, http.StatusSeeOther, l.base+"/cart")
	if name := l.shopUser(b); name != "Ada Lovelace" {
		t.Fatalf("signed in as %q after SSO, want Ada Lovelace", name)
	}
	if users() != before+1 || identities() != 1 {
		t.Fatalf("%d users (%d before), %d identities: want one new of each", users(), before, identities())
	}
	var email, sub, hash string
	pool, _ := ts.shop.db.Primary()
	if err := pool.QueryRow(context.Background(), `SELECT u.email, i.subject, coalesce(u.password_hash, '')
		FROM sso_identities i JOIN users u ON u.id = i.user_id WHERE i.issuer = $1`, l.provider.Issuer).Scan(&email, &sub, &hash); err != nil {
		t.Fatal(err)
	}
	if email != "ada@example.test" || len(sub) != 43 || hash != "" {
		t.Fatalf("account %q, sub %q (want a pairwise sub), password hash %q (want none)", email, sub, hash)
	}

	// The same callback again: the flow is consumed.
	replay := b.get(cb.Location, "")
	if replay.Status != http.StatusBadRequest || dataPage(replay.Body) != "sso_error" {
		t.Fatalf("replayed callback: %d\n%s", replay.Status, excerpt(replay.Body))
	}
	if l.shopUser(b) != "Ada Lovelace" || users() != before+1 || identities() != 1 {
		t.Fatal("a replayed callback changed the sign-in or the accounts")
	}

	// Signing out of the shop signs out of the provider (end_session with
	// the ID token as hint) and comes back to the shop.
	out := b.do(http.MethodPost, l.base+"/logout", url.Values{})
	if out.Status != http.StatusSeeOther || !strings.HasPrefix(out.Location, l.provider.Issuer+"/") ||
		!strings.Contains(out.Location, "id_token_hint=") {
		t.Fatalf("logout: %d %q, want the provider's end_session", out.Status, out.Location)
	}
	back := b.walk(out, l.base+"/")
	if back.Location != l.base+"/" {
		t.Fatalf("end_session did not send the browser back to the shop: %d at %s, Location %q\n%.1000s", back.Status, back.URL, back.Location, back.Body)
	}
	if l.shopUser(b) != "" {
		t.Fatal("still signed in to the shop after signing out")
	}
	// Signed out of the provider: signing in asks for the password again.
	again := b.get(l.base+"/login/sso", l.callback)
	if again.Status/100 == 3 || !strings.Contains(again.Body, `name="password"`) {
		t.Fatalf("the provider's session survived the shop's logout: %d at %s", again.Status, again.URL)
	}

	// A second sign-in (consent remembered): the same account.
	cb = l.signIn(b, "/login/sso", "ada@example.test", "analytical engine", false, "allow")
	want(t, "second callback", pageOf(b.do(http.MethodGet, cb.Location, nil)), http.StatusSeeOther, l.base+"/")
	if l.shopUser(b) != "Ada Lovelace" || users() != before+1 || identities() != 1 {
		t.Fatalf("second sign-in: %q, %d users, %d identities", l.shopUser(b), users(), identities())
	}

	// Consent declined: a clear page, not signed in, nothing made.
	grace := newRPBrowser(t)
	cb = l.signIn(grace, "/login/sso", "grace@example.test", "cobol-1959-flowmatic", true, "deny")
	denied := grace.get(cb.Location, "")
	if denied.Status != http.StatusForbidden || !strings.Contains(denied.Body, "did not allow") {
		t.Fatalf("declined consent: %d\n%s", denied.Status, excerpt(denied.Body))
	}
	if l.shopUser(grace) != "" || users() != before+1 || identities() != 1 {
		t.Fatal("a declined consent changed something")
	}

	// A local account with the address the provider has not verified: not
	// taken over, not duplicated.
	local := newRPBrowser(t)
	want(t, "local registration", pageOf(local.do(http.MethodPost, l.base+"/register", url.Values{
		"name": {"Local Linus"}, "email": {"linus@example.test"}, "password": {"local password"}})), http.StatusSeeOther, l.base+"/")
	before = users()
	linus := newRPBrowser(t)
	cb = l.signIn(linus, "/login/sso", "linus@example.test", "linus at the provider", true, "allow")
	taken := linus.get(cb.Location, "")
	if taken.Status != http.StatusConflict || !strings.Contains(taken.Body, "not verified") {
		t.Fatalf("unverified address of a local account: %d\n%s", taken.Status, excerpt(taken.Body))
	}
	if l.shopUser(linus) != "" || users() != before || identities() != 1 {
		t.Fatal("an unverified address was linked to the local account")
	}
	if l.shopUser(local) != "Local Linus" {
		t.Fatal("the local account's session is gone")
	}
	// The address verified at the provider (the link of its mail): the
	// next sign-in links the local account, and makes none.
	verify := l.verificationLink(t, "linus@example.test")
	if r := linus.get(verify, ""); r.Status != http.StatusOK || !strings.Contains(r.Body, "is verified") {
		t.Fatalf("verification link: %d\n%.1500s", r.Status, r.Body)
	}
	cb = l.signIn(linus, "/login/sso", "", "", false, "allow")
	want(t, "linking callback", pageOf(linus.do(http.MethodGet, cb.Location, nil)), http.StatusSeeOther, l.base+"/")
	if l.shopUser(linus) != "Local Linus" || users() != before || identities() != 2 {
		t.Fatalf("verified address: signed in as %q, %d users (%d before), %d identities; want the local account linked",
			l.shopUser(linus), users(), before, identities())
	}

	// The provider gone between the authorization and the callback: the
	// code cannot be redeemed, a 503 page, nothing changed.
	late := newRPBrowser(t)
	cb = l.signIn(late, "/login/sso", "late@example.test", "late at the provider", true, "allow")
	before = users()
	l.provider.stop(t)
	gone := late.get(cb.Location, "")
	if gone.Status != http.StatusServiceUnavailable || dataPage(gone.Body) != "sso_error" || !strings.Contains(gone.Body, "cannot be reached") {
		t.Fatalf("callback with the provider down: %d\n%s", gone.Status, excerpt(gone.Body))
	}
	if l.shopUser(late) != "" || users() != before || identities() != 2 {
		t.Fatal("a callback the provider could not complete changed something")
	}
	// Once the cached discovery document is due (a minute; now at once),
	// the button answers the 503 page again.
	ts.shop.sso.mu.Lock()
	ts.shop.sso.ttl = 0
	ts.shop.sso.mu.Unlock()
	if r := late.get(l.base+"/login/sso", ""); r.Status != http.StatusServiceUnavailable || dataPage(r.Body) != "login" {
		t.Fatalf("the button with the provider gone: %d %q\n%s", r.Status, r.Location, excerpt(r.Body))
	}

	// The counts of sign-ins by result, on /metrics.
	metrics := newRPBrowser(t).get(ts.URL+"/metrics", "").Body
	for _, m := range []string{`shop_sso_logins_total{result="created"} 1`, `shop_sso_logins_total{result="ok"} 1`,
		`shop_sso_logins_total{result="bad_state"} 4`, `shop_sso_logins_total{result="code_refused"} 1`, `shop_sso_logins_total{result="email_taken"} 1`,
		`shop_sso_logins_total{result="access_denied"} 1`, `shop_sso_logins_total{result="linked"} 1`, `shop_sso_logins_total{result="unreachable"} `} {
		if !strings.Contains(metrics, m) {
			t.Errorf("/metrics lacks %s", m)
		}
	}
}

// verificationLink waits for the provider's verification mail to addr
// and returns its link (<issuer>/verify?token=…).
func (l *ssoLab) verificationLink(t *testing.T, addr string) string {
	t.Helper()
	re := regexp.MustCompile(regexp.QuoteMeta(l.provider.Issuer) + `/verify\?token=[A-Za-z0-9_-]{43}`)
	var link string
	hatest.WaitFor(t, 60*time.Second, "the verification mail to "+addr, func() bool {
		for _, m := range l.shop.mailsTo(t, addr) {
			full, err := l.shop.svc.mail.Message(context.Background(), m.ID)
			if err != nil {
				t.Fatal(err)
			}
			if found := re.FindString(full.Text); found != "" {
				link = found
				return true
			}
		}
		return false
	})
	return link
}

func pageOf(r resp) page { return page{Status: r.Status, Location: r.Location, Body: r.Body} }

// TestSSOAccountRules: how an identity finds its account, on the real
// database: a verified address links the local account of that address,
// an unverified one does not (and changes nothing), no address is refused,
// a known identity signs in its user whatever its claims say now.
func TestSSOAccountRules(t *testing.T) {
	ts := startShop(t, shopOptions{})
	s := ts.shop
	ctx := context.Background()
	const iss = "https://sso.example.test"
	want(t, "local registration", ts.browser(t).post("/register", url.Values{
		"name": {"Local Linus"}, "email": {"linus@example.test"}, "password": {"local password"}}), http.StatusSeeOther, "/")
	var linus int64
	pool, _ := s.db.Primary()
	if err := pool.QueryRow(ctx, "SELECT id FROM users WHERE email = 'linus@example.test'").Scan(&linus); err != nil {
		t.Fatal(err)
	}
	users := func() int { return ts.count(t, "SELECT count(*) FROM users") }
	before := users()

	for _, c := range []ssoClaims{
		{Subject: "s-unverified", Email: "Linus@Example.test", EmailVerified: false},
		{Subject: "s-missing", Email: "linus@example.test"},
		{Subject: "s-string", Email: "linus@example.test", EmailVerified: "no"},
	} {
		if _, _, err := s.ssoAccount(ctx, iss, c); !errors.Is(err, errSSOEmailTaken) {
			t.Fatalf("%+v: %v, want errSSOEmailTaken", c, err)
		}
	}
	for _, e := range []string{"", "not an address", "Linus <linus@example.test>"} {
		if _, _, err := s.ssoAccount(ctx, iss, ssoClaims{Subject: "s-bad", Email: e, EmailVerified: true}); !errors.Is(err, errSSONoEmail) {
			t.Fatalf("e-mail %q: %v, want errSSONoEmail", e, err)
		}
	}
	if users() != before || ts.count(t, "SELECT count(*) FROM sso_identities") != 0 {
		t.Fatal("a refused identity changed the accounts")
	}

	u, result, err := s.ssoAccount(ctx, iss, ssoClaims{Subject: "s-linus", Email: "LINUS@example.test", EmailVerified: "true"})
	if err != nil || result != "linked" || u.ID != linus {
		t.Fatalf("verified address: %+v %q %v, want linked to %d", u, result, err, linus)
	}
	// Known now: its user, even with another address in the claims.
	u, result, err = s.ssoAccount(ctx, iss, ssoClaims{Subject: "s-linus", Email: "other@example.test"})
	if err != nil || result != "ok" || u.ID != linus {
		t.Fatalf("known identity: %+v %q %v", u, result, err)
	}
	// The same sub from another issuer is another identity.
	u, result, err = s.ssoAccount(ctx, "https://other.example.test", ssoClaims{Subject: "s-linus", Email: "new@example.test",
		Name: "New\x00 Person"})
	if err != nil || result != "created" || u.ID == linus || u.Name != "New Person" {
		t.Fatalf("other issuer: %+v %q %v", u, result, err)
	}
	if users() != before+1 || ts.count(t, "SELECT count(*) FROM sso_identities") != 2 {
		t.Fatal("want one account made and two identities")
	}

	// Eight first sign-ins of one identity at once (a double click, two
	// tabs): one account, one identity, every call signs in that account.
	ids := make(chan int64, 8)
	errs := make(chan error, 8)
	for range 8 {
		go func() {
			u, _, err := s.ssoAccount(ctx, iss, ssoClaims{Subject: "s-racer", Email: "racer@example.test", EmailVerified: true})
			ids <- u.ID
			errs <- err
		}()
	}
	var first int64
	for range 8 {
		id, err := <-ids, <-errs
		if err != nil {
			t.Fatalf("concurrent first sign-in: %v", err)
		}
		if first == 0 {
			first = id
		}
		if id != first || id == 0 {
			t.Fatalf("concurrent first sign-ins got accounts %d and %d", first, id)
		}
	}
	if users() != before+2 || ts.count(t, "SELECT count(*) FROM sso_identities WHERE subject = 's-racer'") != 1 {
		t.Fatal("concurrent first sign-ins made more than one account or identity")
	}
}
