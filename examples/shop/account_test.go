package main

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// TestAccounts: register, sign out, sign in (wrong and right password),
// duplicate and invalid registrations, the admin account, SSO hidden.
func TestAccounts(t *testing.T) {
	ts := startShop(t, shopOptions{Env: map[string]string{
		"SHOP_ADMIN_EMAIL": "Owner@Example.test", "SHOP_ADMIN_PASSWORD": "correct horse battery",
	}})
	c := ts.browser(t)
	signedIn := func(p page) bool { return strings.Contains(p.Body, "Sign out") }

	reg := url.Values{"name": {"Grace Hopper"}, "email": {"Grace@Example.test"}, "password": {"cobol-1959"}, "next": {"/orders"}}
	want(t, "register", c.post("/register", reg), http.StatusSeeOther, "/orders")
	if home := c.get("/"); !signedIn(home) {
		t.Fatal("not signed in after registering")
	}
	want(t, "logout", c.post("/logout", nil), http.StatusSeeOther, "/")
	if home := c.get("/"); signedIn(home) {
		t.Fatal("still signed in after signing out")
	}

	bad := c.post("/login", url.Values{"email": {"grace@example.test"}, "password": {"fortran"}})
	if bad.Status != http.StatusUnauthorized || dataPage(bad.Body) != "login" || !strings.Contains(bad.Body, "do not match") {
		t.Fatalf("wrong password: %d\n%s", bad.Status, excerpt(bad.Body))
	}
	unknown := c.post("/login", url.Values{"email": {"nobody@example.test"}, "password": {"cobol-1959"}})
	if unknown.Status != http.StatusUnauthorized {
		t.Fatalf("unknown e-mail: %d", unknown.Status)
	}
	// An e-mail in another case, and a next that leaves the site.
	want(t, "login", c.post("/login", url.Values{"email": {"GRACE@example.test"}, "password": {"cobol-1959"}, "next": {"//evil.example/"}}),
		http.StatusSeeOther, "/")
	if home := c.get("/"); !signedIn(home) || strings.Contains(home.Body, `href="/admin"`) {
		t.Fatal("not signed in as a customer after logging in")
	}

	dup := ts.browser(t).post("/register", reg)
	if dup.Status != http.StatusConflict || !strings.Contains(dup.Body, "exists already") {
		t.Fatalf("duplicate registration: %d\n%s", dup.Status, excerpt(dup.Body))
	}
	invalid := ts.browser(t).post("/register", url.Values{"name": {""}, "email": {"not an address"}, "password": {"short"}})
	if invalid.Status != http.StatusUnprocessableEntity || strings.Count(invalid.Body, `class="field-error"`) != 3 {
		t.Fatalf("invalid registration: %d\n%s", invalid.Status, excerpt(invalid.Body))
	}
	if n := ts.count(t, "SELECT count(*) FROM users"); n != 2 {
		t.Fatalf("%d users, want 2 (the admin and Grace)", n)
	}

	admin := ts.browser(t)
	want(t, "admin login", admin.post("/login", url.Values{"email": {"owner@example.test"}, "password": {"correct horse battery"}}), http.StatusSeeOther, "/")
	if home := admin.get("/"); !strings.Contains(home.Body, `href="/admin"`) {
		t.Fatal("the admin's header has no Admin link")
	}

	// SSO is not configured: no button, no routes.
	if login := c.get("/login"); strings.Contains(login.Body, "/login/sso") {
		t.Fatal("the SSO button shows without SSO configured")
	}
	for _, path := range []string{"/login/sso", "/login/sso/callback?code=x&state=y"} {
		if p := c.get(path); p.Status != http.StatusNotFound {
			t.Fatalf("%s without SSO: %d, want 404", path, p.Status)
		}
	}
}

// TestOrderOwner: an order is visible to the session that placed it and to
// its signed-in customer from any browser, and to nobody else (404, as if
// there were none).
func TestOrderOwner(t *testing.T) {
	ts := startShop(t, shopOptions{})
	id := ts.addProduct(t, "Private Notebook", 1800, 50)

	anon := ts.browser(t)
	placed := anon.post("/checkout/place", anon.fillCheckout(id, 1, "anon@example.test"))
	want(t, "anonymous order", placed, http.StatusSeeOther, "")
	want(t, "own order", anon.get(placed.Location), http.StatusOK, "")
	if mine := anon.get("/orders"); !strings.Contains(mine.Body, placed.Location) {
		t.Fatal("the anonymous session's orders miss its order")
	}
	stranger := ts.browser(t)
	if p := stranger.get(placed.Location); p.Status != http.StatusNotFound || strings.Contains(p.Body, "data-order-id") {
		t.Fatalf("a stranger sees the order: %d", p.Status)
	}
	if mine := stranger.get("/orders"); strings.Contains(mine.Body, placed.Location) {
		t.Fatal("a stranger's orders list the order")
	}

	user := ts.browser(t)
	want(t, "register", user.post("/register", url.Values{"name": {"Alan Turing"}, "email": {"alan@example.test"}, "password": {"enigma-1941"}}), http.StatusSeeOther, "/")
	mine := user.post("/checkout/place", user.fillCheckout(id, 2, "alan@example.test"))
	want(t, "user's order", mine, http.StatusSeeOther, "")
	want(t, "logout", user.post("/logout", nil), http.StatusSeeOther, "/")
	if p := user.get(mine.Location); p.Status != http.StatusNotFound {
		t.Fatalf("signed out, the order page answers %d, want 404", p.Status)
	}
	other := ts.browser(t) // another device
	want(t, "login", other.post("/login", url.Values{"email": {"alan@example.test"}, "password": {"enigma-1941"}}), http.StatusSeeOther, "/")
	want(t, "order from another device", other.get(mine.Location), http.StatusOK, "")
	list := other.get("/orders")
	if !strings.Contains(list.Body, mine.Location) || strings.Contains(list.Body, placed.Location) {
		t.Fatalf("my orders on another device:\n%s", excerpt(list.Body))
	}
	if p := other.get(placed.Location); p.Status != http.StatusNotFound {
		t.Fatalf("a signed-in customer sees someone else's order: %d", p.Status)
	}
	for _, bad := range []string{"/orders/abc", "/orders/-1", "/orders/99999999999999999999"} {
		if p := other.get(bad); p.Status != http.StatusNotFound {
			t.Fatalf("%s: %d, want 404", bad, p.Status)
		}
	}
}

// TestSafeNextOpenRedirect: the page to go to after login is a path of this site, and
// anything a browser could read as another site is "/".
func TestSafeNextOpenRedirect(t *testing.T) {
	for _, tc := range []struct{ next, want string }{
		{"/", "/"},
		{"/cart", "/cart"},
		{"/checkout/review?step=3#top", "/checkout/review?step=3#top"},
		{"/products/mug-1", "/products/mug-1"},
		{"/orders/", "/orders/"},
		{"/a/../cart", "/"},
		{"", "/"},
		{"cart", "/"},
		{"//evil.example/x", "/"},
		{"///evil.example/x", "/"},
		{"/\\evil.example/x", "/"},
		{"/\t/evil.example/x", "/"},
		{"/\n/evil.example/x", "/"},
		{"/\r\n/evil.example", "/"},
		{"/./\\evil.example/x", "/"},
		{"/.//evil.example/x", "/"},
		{"/%2e/\\evil.example", "/"},
		{"/%5Cevil.example", "/"},
		{"/%09/evil.example", "/"},
		{"/%2F%2Fevil.example", "/"},
		{"https://evil.example/x", "/"},
		{"http:/evil.example", "/"},
		{"javascript:alert(1)", "/"},
		{"\\\\evil.example", "/"},
		{" /cart", "/"},
		{"/cart\x00", "/"},
	} {
		if got := safeNext(tc.next); got != tc.want {
			t.Errorf("safeNext(%q) = %q, want %q", tc.next, got, tc.want)
		}
	}
}
