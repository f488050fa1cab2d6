package main

import (
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// TestBrowserMail goes through the mailed links in Chromium: a new account
// sees "not verified" on its account page, opens the link from Mailpit and
// sees the address verified; then, signed out, "Forgot it?" on the login
// page mails a reset link, whose page sets a new password that signs in.
// With SSO_SCREENSHOTS=dir it saves a screenshot of each new page there
// (the README's).
func TestBrowserMail(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("chromium"); err != nil {
		t.Fatal("chromium is missing: apt-get install -y chromium (make deps)")
	}
	c, mp := mailCluster(t)

	b := newChrome(t, 3*time.Minute, os.Getenv("SSO_SCREENSHOTS"))
	step, shot, text := b.step, b.shot, b.text
	css := func(s string) chromedp.CSS { return chromedp.CSS(s) }

	const addr = "grace@example.com"
	step("register", chromedp.EmulateViewport(1000, 720), chromedp.Navigate(c.issuer+"/register"),
		chromedp.WaitVisible(css("input[name=password2]")),
		chromedp.SendKeys(css("input[name=name]"), "Grace Hopper"),
		chromedp.SendKeys(css("input[name=email]"), addr),
		chromedp.SendKeys(css("input[name=password]"), "compiler pioneer"),
		chromedp.SendKeys(css("input[name=password2]"), "compiler pioneer"),
		chromedp.Click(css("form button[type=submit]")), chromedp.WaitVisible(css("#email-status.warn")))
	if s := text("main"); !strings.Contains(s, "not verified") || !strings.Contains(s, "We sent a link to "+addr) {
		t.Errorf("account page of a new account: %q", s)
	}
	shot("account-unverified.png")

	link, _ := mailLink(t, c, waitMail(t, mp, addr, 1), "verify")
	step("verification link", chromedp.Navigate(link), chromedp.WaitVisible(css("#message")))
	if s := text("#message"); !strings.Contains(s, addr+" is verified") {
		t.Errorf("verification page: %q", s)
	}
	shot("verified.png")
	step("account, verified", chromedp.Navigate(c.issuer+"/"), chromedp.WaitVisible(css("#email-status.ok")))

	step("sign out", chromedp.Click(css("header button.link")), chromedp.WaitVisible(css("#message")))
	step("forgot", chromedp.Navigate(c.issuer+"/login"), chromedp.WaitVisible(css("a[href='/forgot']")),
		chromedp.Click(css("a[href='/forgot']")), chromedp.WaitVisible(css("form[action='/forgot']")),
		chromedp.SendKeys(css("input[name=email]"), addr))
	shot("forgot.png")
	step("ask for the link", chromedp.Click(css("form button[type=submit]")), chromedp.WaitVisible(css("a[href='/login'].button")))
	if s := text("main"); !strings.Contains(s, "Check your mail") {
		t.Errorf("after asking for the link: %q", s)
	}
	shot("forgot-sent.png")

	link, _ = mailLink(t, c, waitMail(t, mp, addr, 2), "reset")
	step("reset link", chromedp.Navigate(link), chromedp.WaitVisible(css("input[name=password2]")),
		chromedp.SendKeys(css("input[name=password]"), "nanosecond wire"),
		chromedp.SendKeys(css("input[name=password2]"), "nanosecond wire"))
	shot("reset.png")
	step("set the password", chromedp.Click(css("form button[type=submit]")), chromedp.WaitVisible(css(".flash")))
	if s := text(".flash"); !strings.Contains(s, "Your password is changed") {
		t.Errorf("after the reset: %q", s)
	}
	shot("reset-done.png")
	step("sign in with it", chromedp.SendKeys(css("input[name=email]"), addr),
		chromedp.SendKeys(css("input[name=password]"), "nanosecond wire"),
		chromedp.Click(css("form button[type=submit]")), chromedp.WaitVisible(css("#email-status.ok")))

	step("the link again", chromedp.Navigate(link), chromedp.WaitVisible(css("main .card")))
	if s := text("main"); !strings.Contains(s, "already used") {
		t.Errorf("the reset link opened again: %q", s)
	}
	shot("link-used.png")
}
