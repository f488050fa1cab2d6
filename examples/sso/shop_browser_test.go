package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"hakit.dev/hatest"
)

// shopScreenshotDir is where SHOP_SCREENSHOTS=1 saves the shop README's
// pictures of signing in with hakit SSO.
const shopScreenshotDir = "../shop/docs/screenshots"

// startShopRP builds examples/shop and runs it as the provider's relying
// party on http://localhost:<port> (another site than the provider's
// 127.0.0.1, as in production), with its own database, a Redis database and
// mail to mp. The client "shop" is registered with the CLI. It returns
// the shop's URL.
func startShopRP(t *testing.T, c *cluster, mp *hatest.Mailpit) string {
	t.Helper()
	bin := hatest.BuildModule(t, "../shop", 3*time.Minute)

	addr := freeAddr(t)
	_, port, _ := strings.Cut(addr, ":")
	base := "http://localhost:" + port
	secret := rand.Text() + rand.Text()
	if out, err := c.cli("client", "add", "-id", "shop", "-name", "Hakit Goods",
		"-redirect-uri", base+"/login/sso/callback", "-post-logout-uri", base+"/", "-secret", secret); err != nil {
		t.Fatalf("client add: %v\n%s", err, out)
	}
	ctx := context.Background()
	db := fmt.Sprintf("shop_%d", shared.dbs.Add(1))
	if err := c.pg.CreateDatabase(ctx, db); err != nil {
		t.Fatal(err)
	}
	if err := c.pg.WaitReplicated(ctx); err != nil {
		t.Fatal(err)
	}
	hatest.NewProcess(t, hatest.ProcessOptions{Name: "shop", Path: bin, Env: []string{
		"HAKIT_ADDR=" + addr,
		"HAKIT_DATABASE_URL_1=" + c.pg.Nodes[0].DSNFor(db),
		"HAKIT_DATABASE_URL_2=" + c.pg.Nodes[1].DSNFor(db),
		fmt.Sprintf("HAKIT_REDIS_URL=redis://%s/%d", shared.rd.Addr(), shared.redisDB.Add(1)%16),
		"HAKIT_REDIS_NO_REPLICAS=true",
		"HAKIT_DRAIN_DELAY=0",
		"SHOP_DEV=true",
		"SHOP_SEED=true",
		"SHOP_SMTP_ADDR=" + mp.SMTPAddr,
		"SHOP_SSO_ISSUER=" + c.issuer,
		"SHOP_SSO_CLIENT_ID=shop",
		"SHOP_SSO_CLIENT_SECRET=" + secret,
		"SHOP_BASE_URL=" + base,
	}})
	waitReady(t, "http://"+addr)
	return base
}

// shopVerifyLink waits for the provider's verification mail to addr in
// Mailpit and returns its link.
func shopVerifyLink(t *testing.T, c *cluster, mp *hatest.Mailpit, addr string) string {
	t.Helper()
	re := regexp.MustCompile(regexp.QuoteMeta(c.issuer) + `/verify\?token=[A-Za-z0-9_-]{43}`)
	var link string
	hatest.WaitFor(t, 60*time.Second, "the verification mail to "+addr, func() bool {
		msgs, err := mp.Messages(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range msgs {
			if len(s.To) != 1 || !strings.EqualFold(s.To[0].Address, addr) {
				continue
			}
			m, err := mp.Message(context.Background(), s.ID)
			if err != nil {
				t.Fatal(err)
			}
			if link = re.FindString(m.Text); link != "" {
				return true
			}
		}
		return false
	})
	return link
}

// TestShopBrowser: the shop and the provider in Chromium, as a customer
// sees them. Ada registers at hakit SSO, follows the verification link of
// the mail in Mailpit, goes to the shop and picks "Sign in with hakit
// SSO", consents, and is back in the shop signed in (an account made for
// her). Signing out of the shop signs her out of the provider too. With
// SHOP_SCREENSHOTS=1 it saves the shop's login page and the consent page
// into the shop's docs/screenshots.
func TestShopBrowser(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("chromium"); err != nil {
		t.Fatal("chromium is missing: apt-get install -y chromium (make deps)")
	}
	mp := hatest.NewMailpit(t, hatest.MailpitOptions{})
	c := newCluster(t, 1, false, "SSO_SMTP_ADDR="+mp.SMTPAddr)
	shop := startShopRP(t, c, mp)

	dir := ""
	if os.Getenv("SHOP_SCREENSHOTS") == "1" {
		dir = shopScreenshotDir
	}
	b := newChrome(t, 5*time.Minute, dir) // two apps and their services
	ctx, step, shot, text := b.ctx, b.step, b.shot, b.text
	css := func(s string) chromedp.CSS { return chromedp.CSS(s) }

	// Ada registers at hakit SSO and verifies her address.
	step("register at the provider", chromedp.EmulateViewport(1280, 800), chromedp.Navigate(c.issuer+"/register"),
		chromedp.WaitVisible(css("input[name=password2]")),
		chromedp.SendKeys(css("input[name=name]"), "Ada Lovelace"),
		chromedp.SendKeys(css("input[name=email]"), "ada@example.com"),
		chromedp.SendKeys(css("input[name=password]"), "analytical engine"),
		chromedp.SendKeys(css("input[name=password2]"), "analytical engine"),
		chromedp.Click(css("form button[type=submit]")), chromedp.WaitVisible(css("#email-status.warn")))
	link := shopVerifyLink(t, c, mp, "ada@example.com")
	step("the mail's link", chromedp.Navigate(link), chromedp.WaitVisible(css("main")))
	if body := text("main"); !strings.Contains(body, "is verified") {
		t.Fatalf("the verification link answered %q", body)
	}
	step("the account says verified", chromedp.Navigate(c.issuer+"/"), chromedp.WaitVisible(css("#email-status.ok")))

	// The shop's login page offers hakit SSO.
	step("the shop's login page", chromedp.Navigate(shop+"/login"), chromedp.WaitVisible(css("a[href='/login/sso']")))
	shot("login-sso.png")
	step("sign in with hakit SSO", chromedp.Click(css("a[href='/login/sso']")), chromedp.WaitVisible(css("ul.scopes")))
	if body := text("main"); !strings.Contains(body, "Hakit Goods") {
		t.Errorf("the consent page does not name the shop: %q", body)
	}
	shot("sso-consent.png")
	step("allow", chromedp.Click(css("button[value=allow]")), chromedp.WaitVisible(css(".user-name")))
	if loc, _ := chromedp.Run(ctx, chromedp.Location()); !strings.HasPrefix(loc, shop+"/") {
		t.Fatalf("after consent at %s, not the shop", loc)
	}
	if name := text(".user-name"); name != "Ada Lovelace" {
		t.Fatalf("the shop's header shows %q, want Ada Lovelace", name)
	}
	if flash := text(".flash"); !strings.Contains(flash, "Welcome, Ada Lovelace") {
		t.Errorf("first sign-in flash %q", flash)
	}

	// Sign out of the shop: the provider's session ends too.
	step("sign out everywhere", chromedp.Click(css("form[action='/logout'] button")),
		chromedp.WaitVisible(css(".account a[href='/login']")))
	if loc, _ := chromedp.Run(ctx, chromedp.Location()); loc != shop+"/" {
		t.Errorf("after signing out at %s, want the shop's home", loc)
	}
	step("the provider forgot the session", chromedp.Navigate(c.issuer+"/"), chromedp.WaitVisible(css(".hero")))
	step("signing in again asks for the password", chromedp.Navigate(shop+"/login/sso"),
		chromedp.WaitVisible(css("input[name=password]")))
	if loc, _ := chromedp.Run(ctx, chromedp.Location()); !strings.HasPrefix(loc, c.issuer+"/") {
		t.Fatalf("the shop's SSO button led to %s, not the provider's login", loc)
	}
}
