package main

import (
	"crypto/rand"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"hakit.dev/examples/sso/demorp"
)

// demoRP serves the demo relying party (package demorp), registered
// with the CLI.
func demoRP(t *testing.T, c *cluster) *httptest.Server {
	srv := httptest.NewUnstartedServer(nil)
	srv.Start()
	t.Cleanup(srv.Close)
	secret := rand.Text() + rand.Text()
	if out, err := c.cli("client", "add", "-id", "demo", "-name", "Demo app", "-redirect-uri", srv.URL+"/callback",
		"-post-logout-uri", srv.URL+"/", "-secret", secret); err != nil {
		t.Fatalf("client add: %v\n%s", err, out)
	}
	rp, err := demorp.New(demorp.Config{Issuer: c.issuer, ClientID: "demo", ClientSecret: secret, BaseURL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	srv.Config.Handler = rp
	return srv
}

// TestBrowser signs up and in through Chromium: the demo app sends the
// browser to the provider, which shows its login page; the user creates
// an account, consents, and lands back in the app signed in; the account
// page lists the app; signing out in the app signs out of the provider
// too. A client's sign-out of another account than the one signed in
// asks first. With SSO_SCREENSHOTS=dir it saves a screenshot of each page there
// (the README's).
func TestBrowser(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("chromium"); err != nil {
		t.Fatal("chromium is missing: apt-get install -y chromium (make deps)")
	}
	c := newCluster(t, 1, false)
	app := demoRP(t, c)

	b := newChrome(t, 3*time.Minute, os.Getenv("SSO_SCREENSHOTS"))
	ctx, step, shot := b.ctx, b.step, b.shot
	css := func(s string) chromedp.CSS { return chromedp.CSS(s) }

	step("home", chromedp.EmulateViewport(1000, 720), chromedp.Navigate(c.issuer+"/"), chromedp.WaitVisible(css(".hero")))
	shot("home.png")
	step("the app", chromedp.Navigate(app.URL+"/"), chromedp.WaitVisible(css("#signin")))
	step("the app's sign-in", chromedp.Click(css("#signin")), chromedp.WaitVisible(css("input[name=email]")))
	shot("login.png")
	step("to registration", chromedp.Click(css("main a[href^='/register']")), chromedp.WaitVisible(css("input[name=password2]")))
	step("fill in",
		chromedp.SendKeys(css("input[name=name]"), "Ada Lovelace"),
		chromedp.SendKeys(css("input[name=email]"), "ada@example.com"),
		chromedp.SendKeys(css("input[name=password]"), "analytical engine"),
		chromedp.SendKeys(css("input[name=password2]"), "analytical engine"))
	shot("register.png")
	step("register", chromedp.Click(css("form button[type=submit]")), chromedp.WaitVisible(css("ul.scopes")))
	shot("consent.png")
	step("allow", chromedp.Click(css("button[value=allow]")), chromedp.WaitVisible(css("#sub")))
	shot("app.png")
	sub, err := chromedp.Run(ctx, chromedp.Text(css("#sub")))
	if err != nil || len(sub) != 43 {
		t.Fatalf("the app shows sub %q (%v); want a pairwise sub", sub, err)
	}
	step("account", chromedp.Navigate(c.issuer+"/"), chromedp.WaitVisible(css("ul.apps")))
	if txt, _ := chromedp.Run(ctx, chromedp.Text(css("ul.apps"))); !strings.Contains(txt, "Demo app") {
		t.Errorf("account page lists %q; want the Demo app", txt)
	}
	shot("account.png")

	// Signed in already: the app's next sign-in needs no page at all.
	step("second sign-in", chromedp.Navigate(app.URL+"/login"), chromedp.WaitVisible(css("#sub")))
	if again, _ := chromedp.Run(ctx, chromedp.Text(css("#sub"))); again != sub {
		t.Errorf("second sign-in: sub %q, first %q", again, sub)
	}

	// Signing out in the app signs out of the provider too.
	step("sign out everywhere", chromedp.Click(css("a[href='/logout']")), chromedp.WaitVisible(css("#signin")))
	step("the provider forgot the session", chromedp.Navigate(c.issuer+"/"), chromedp.WaitVisible(css(".hero")))

	// A wrong password shows the error on the page.
	step("wrong password", chromedp.Navigate(app.URL+"/login"), chromedp.WaitVisible(css("input[name=email]")),
		chromedp.SendKeys(css("input[name=email]"), "ada@example.com"),
		chromedp.SendKeys(css("input[name=password]"), "not my password"),
		chromedp.Click(css("form button[type=submit]")), chromedp.WaitVisible(css(".flash.error")))
	shot("login-error.png")

	// The admin page, for an admin (SSO_ADMIN_EMAILS).
	step("admin registers", chromedp.Navigate(c.issuer+"/register"), chromedp.WaitVisible(css("input[name=password2]")),
		chromedp.SendKeys(css("input[name=email]"), "admin@example.com"),
		chromedp.SendKeys(css("input[name=password]"), "admin password 1"),
		chromedp.SendKeys(css("input[name=password2]"), "admin password 1"),
		chromedp.Click(css("form button[type=submit]")), chromedp.WaitVisible(css("a[href='/admin/clients']")))
	step("admin page", chromedp.Navigate(c.issuer+"/admin/clients"), chromedp.WaitVisible(css("table")))
	if txt, _ := chromedp.Run(ctx, chromedp.Text(css("table"))); !strings.Contains(txt, "demo") || !strings.Contains(txt, "client-a1") {
		t.Errorf("admin page lists %q", txt)
	}
	shot("admin.png")

	// App A signs Ada out with her ID token while the admin is signed in
	// on this browser: the provider asks, naming App A and the admin,
	// never Ada.
	hb := c.browser()
	a1, f := c.rp("client-a1"), newFlow()
	ada := a1.mustExchange(t, f, hb.login(a1, f, "ada@example.com", "analytical engine", false))
	step("another account's sign-out", chromedp.Navigate(c.issuer+"/end_session?"+url.Values{"id_token_hint": {ada.raw},
		"post_logout_redirect_uri": {"https://app-a.example/bye"}}.Encode()), chromedp.WaitVisible(css("#logout button[value=stay]")))
	if txt := b.text("#logout"); !strings.Contains(txt, "App A asked to sign out an account that is not the one signed in") ||
		!strings.Contains(txt, "admin@example.com") || strings.Contains(txt, "ada") {
		t.Errorf("the sign-out question for another account says %q", txt)
	}
	shot("logout-other.png")
}
