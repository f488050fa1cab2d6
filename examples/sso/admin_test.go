package main

import (
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
)

// TestClientRegistration registers clients with the CLI and on the admin
// page, then signs in through them: the secret is shown once and works;
// redirect URIs on two hosts without a sector URI are refused by both;
// the admin page is a 404 for anyone but an admin.
func TestClientRegistration(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 1, false)

	out, err := c.cli("client", "add", "-id", "cli-app", "-name", "CLI app", "-redirect-uri", "https://cli.example/cb")
	if err != nil {
		t.Fatalf("client add: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`client_secret=(\S+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no secret printed: %s", out)
	}
	if out, err := c.cli("client", "add", "-id", "two-hosts", "-redirect-uri", "https://a.example/cb", "-redirect-uri", "https://b.example/cb"); err == nil ||
		!strings.Contains(out, "sector_identifier_uri") {
		t.Errorf("two hosts without a sector URI: %v\n%s", err, out)
	}
	if out, err := c.cli("client", "add", "-id", "cli-app", "-redirect-uri", "https://cli.example/cb"); err == nil || !strings.Contains(out, "exists") {
		t.Errorf("a duplicate ID: %v\n%s", err, out)
	}
	if out, err := c.cli("client", "list"); err != nil || !strings.Contains(out, "cli-app") || !strings.Contains(out, "client-pub") {
		t.Errorf("client list: %v\n%s", err, out)
	}
	r := c.rpFor(clientSpec{ID: "cli-app", Secret: m[1], RedirectURIs: []string{"https://cli.example/cb"}})
	b := c.browser()
	f := newFlow()
	r.mustExchange(t, f, b.login(r, f, "frank@example.com", "correct horse battery", true))
	if n := c.queryInt("SELECT count(*) FROM clients WHERE id = 'cli-app' AND secret_hash IS NOT NULL AND length(secret_hash) = 32"); n != 1 {
		t.Error("the secret is not stored as its SHA-256")
	}

	// The admin page: a 404 for frank, the page for the admin.
	if p := b.get(c.issuer + "/admin/clients"); p.status != http.StatusNotFound {
		t.Errorf("admin page for a user: %d", p.status)
	}
	adm := c.browser()
	p := adm.post("/register", url.Values{"email": {"admin@example.com"}, "password": {"admin password 1"}, "password2": {"admin password 1"}})
	if p.status != 200 {
		t.Fatalf("register admin: %d %.300s", p.status, p.body)
	}
	if p := adm.get(c.issuer + "/admin/clients"); p.status != 200 || !strings.Contains(p.body, "cli-app") {
		t.Fatalf("admin page: %d", p.status)
	}
	p = adm.post("/admin/clients", url.Values{"id": {"web-app"}, "name": {"Web app"}, "redirect_uris": {"https://web.example/cb"},
		"subject_type": {"pairwise"}, "app_type": {"web"}})
	sm := regexp.MustCompile(`<pre class="secret">([^<]+)</pre>`).FindStringSubmatch(p.body)
	if p.status != http.StatusCreated || sm == nil {
		t.Fatalf("admin add: %d %.500s", p.status, p.body)
	}
	p = adm.post("/admin/clients", url.Values{"id": {"bad-app"}, "redirect_uris": {"https://a.example/cb\nhttps://b.example/cb"},
		"subject_type": {"pairwise"}, "app_type": {"web"}})
	if p.status != http.StatusUnprocessableEntity || !strings.Contains(p.body, "sector_identifier_uri") {
		t.Errorf("admin add with two hosts: %d", p.status)
	}
	r2 := c.rpFor(clientSpec{ID: "web-app", Secret: sm[1], RedirectURIs: []string{"https://web.example/cb"}})
	f = newFlow()
	tk2 := r2.mustExchange(t, f, b.login(r2, f, "", "", false))

	// The account page lists both apps; removing one revokes its tokens
	// and asks for consent again.
	if p := b.get(c.issuer + "/"); !strings.Contains(p.body, "CLI app") || !strings.Contains(p.body, "Web app") {
		t.Errorf("account page: %.400s", p.body)
	}
	b.post("/account/apps/web-app/revoke", url.Values{})
	if st, body := r2.tokenRequest(t, c.issuer, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tk2.tok.RefreshToken}}); st == 200 {
		t.Errorf("refresh after removing access: %v", body)
	}
	f = newFlow()
	if p := b.authorize(r2, f); !strings.Contains(p.url.Path, "/consent") {
		t.Errorf("after removing access: %d %s; want the consent page", p.status, p.url)
	}

	// Deleting a client with the CLI: its flows end.
	if out, err := c.cli("client", "delete", "web-app"); err != nil {
		t.Fatalf("client delete: %v\n%s", err, out)
	}
	if p := b.authorize(r2, newFlow()); p.status != http.StatusBadRequest || p.location != "" {
		t.Errorf("a deleted client's flow: %d %q; want a 400 page", p.status, p.location)
	}
}
