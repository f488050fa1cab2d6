package main

import (
	"bytes"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
)

func TestMoney(t *testing.T) {
	for cents, want := range map[int64]string{0: "$0.00", 5: "$0.05", 1999: "$19.99", 123456: "$1,234.56", 100000000: "$1,000,000.00", -250: "-$2.50"} {
		if got := money(cents); got != want {
			t.Errorf("money(%d) = %q, want %q", cents, got, want)
		}
	}
}

func TestSlugifyAndInitials(t *testing.T) {
	for in, want := range map[string]string{"Coffee & Tea": "coffee-tea", "Gooseneck Kettle, 1 Litre": "gooseneck-kettle-1-litre", "  Bags--Travel ": "bags-travel", "Café": "caf"} {
		if got := slugify(in); got != want {
			t.Errorf("slugify(%q) = %q, want %q", in, got, want)
		}
	}
	for in, want := range map[string]string{"Cast-Iron Skillet": "CS", "mug": "M", "Dot-Grid Notebook, A5": "DN", "": ""} {
		if got := initials(in); got != want {
			t.Errorf("initials(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestSeedCatalog(t *testing.T) {
	slugs := map[string]bool{}
	n := 0
	for _, c := range seedCatalog() {
		for _, p := range c.products {
			n++
			if s := slugify(p.name); slugs[s] || s == "" {
				t.Errorf("slug %q of %q is empty or taken", s, p.name)
			} else {
				slugs[s] = true
			}
			if p.price <= 0 || p.stock < 0 || len(p.description) < 40 {
				t.Errorf("%q: price %d, stock %d, description %q", p.name, p.price, p.stock, p.description)
			}
		}
	}
	if n < 30 || len(seedCatalog()) < 5 {
		t.Fatalf("%d products in %d categories: too few for a demo", n, len(seedCatalog()))
	}
}

func TestSafeNext(t *testing.T) {
	for in, want := range map[string]string{"/orders": "/orders", "": "/", "//evil.example": "/", "/\\evil.example": "/",
		"https://evil.example/": "/", "orders": "/", "/c/kitchen?x=1": "/c/kitchen?x=1"} {
		if got := safeNext(in); got != want {
			t.Errorf("safeNext(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestValidKeyAndEmail(t *testing.T) {
	for key, want := range map[string]bool{"3f0e4bd4-5a35-4c38-9d5c-1b2a3c4d5e6f": true, "": false, "x": false,
		"3f0e4bd45a354c389d5c1b2a3c4d5e6f": false, "{3f0e4bd4-5a35-4c38-9d5c-1b2a3c4d5e6f}": false, "urn:uuid:3f0e4bd4-5a35-4c38-9d5c-1b2a": false} {
		if got := validKey(key); got != want {
			t.Errorf("validKey(%q) = %v", key, got)
		}
	}
	for email, want := range map[string]bool{"a@example.test": true, "Ada <a@example.test>": false, "no-at": false,
		"a@b\r\nBcc: x@y": false, strings.Repeat("a", 250) + "@x.io": false} {
		if got := validEmail(email); got != want {
			t.Errorf("validEmail(%q) = %v", email, got)
		}
	}
}

func TestRequestHash(t *testing.T) {
	a := address{Name: "Ada", Email: "a@example.test", Street: "1 Road", City: "London", Zip: "N1", Country: "UK"}
	h := requestHash(map[int64]int{1: 2, 10: 1}, a)
	if !bytes.Equal(h, requestHash(map[int64]int{10: 1, 1: 2}, a)) {
		t.Fatal("the hash depends on map order")
	}
	b := a
	b.Street = "2 Road"
	for name, other := range map[string][]byte{
		"quantity": requestHash(map[int64]int{1: 3, 10: 1}, a),
		"product":  requestHash(map[int64]int{1: 2, 11: 1}, a),
		"address":  requestHash(map[int64]int{1: 2, 10: 1}, b),
		"split":    requestHash(map[int64]int{11: 1}, a), // "1:1" + "1:..." must not collide with "11:1"
	} {
		if bytes.Equal(h, other) {
			t.Errorf("another %s, same hash", name)
		}
	}
}

func TestSSOConfig(t *testing.T) {
	full := ssoConfig{Issuer: "https://sso.example.test", ClientID: "shop", ClientSecret: "s3cret", BaseURL: "http://127.0.0.1:8080"}
	if err := full.validate(); err != nil || !full.enabled() {
		t.Fatalf("full config: %v, enabled %v", err, full.enabled())
	}
	if err := (ssoConfig{}).validate(); err != nil || (ssoConfig{}).enabled() {
		t.Fatal("empty config: want valid and off")
	}
	half := full
	half.ClientSecret = ""
	if err := half.validate(); err == nil {
		t.Fatal("half a config: want an error")
	}
	bad := full
	bad.Issuer = "sso.example.test"
	if err := bad.validate(); err == nil {
		t.Fatal("an issuer that is no URL: want an error")
	}
	_, _, err := loadConfig(func(k string) string {
		return map[string]string{"SHOP_SSO_ISSUER": "https://sso.example.test", "SHOP_ADMIN_EMAIL": "a@example.test"}[k]
	}, nil)
	for _, v := range []string{"SHOP_SSO_ISSUER", "SHOP_ADMIN_PASSWORD", "HAKIT_DATABASE_URL_1"} {
		if err == nil || !strings.Contains(err.Error(), v) {
			t.Errorf("loadConfig: %v, want every problem listed (%s)", err, v)
		}
	}
	hcfg, cfg, err := loadConfig(func(k string) string {
		return map[string]string{"HAKIT_DATABASE_URL_1": "postgres://127.0.0.1/shop"}[k]
	}, []string{"-seed"})
	if err != nil || !cfg.Seed || cfg.MailFrom != "shop@example.test" || len(hcfg.DatabaseURLs) != 1 || cfg.SSO.enabled() {
		t.Fatalf("loadConfig with a database and -seed: %+v, %v", cfg, err)
	}
}

// TestLookupCheckout asks the database for a key's order directly: what
// the place handler does after dbrouter.ErrCommitUnknown.
func TestLookupCheckout(t *testing.T) {
	ts := startShop(t, shopOptions{})
	id := ts.addProduct(t, "Lookup Lamp", 5000, 5)
	c := ts.browser(t)
	form := c.fillCheckout(id, 1, "lookup@example.test")
	placed := c.post("/checkout/place", form)
	want(t, "place", placed, 303, "")
	scope := "s:"
	if o := ts.count(t, "SELECT count(*) FROM checkout_keys WHERE key = $1 AND scope LIKE 's:%'", form.Get("key")); o != 1 {
		t.Fatalf("%d keys of an anonymous session, want 1", o)
	}
	pool, err := ts.shop.db.Primary()
	if err != nil {
		t.Fatal(err)
	}
	if err := pool.QueryRow(t.Context(), "SELECT scope FROM checkout_keys WHERE key = $1", form.Get("key")).Scan(&scope); err != nil {
		t.Fatal(err)
	}
	orderID, hash, err := ts.shop.lookupCheckout(t.Context(), scope, form.Get("key"))
	if err != nil || "/orders/"+itoa(orderID) != placed.Location || len(hash) != 32 {
		t.Fatalf("lookup: order %d, hash %x, %v; want %s", orderID, hash, err, placed.Location)
	}
	if _, _, err := ts.shop.lookupCheckout(t.Context(), scope, "3f0e4bd4-5a35-4c38-9d5c-1b2a3c4d5e6f"); !errors.Is(err, pgx.ErrNoRows) {
		t.Fatalf("unknown key: %v, want pgx.ErrNoRows", err)
	}
	if _, _, err := ts.shop.lookupCheckout(t.Context(), "s:someone-else", form.Get("key")); !errors.Is(err, pgx.ErrNoRows) {
		t.Fatalf("another scope: %v, want pgx.ErrNoRows", err)
	}

	// Keys older than keyLifetime are pruned, newer ones kept.
	if _, err := pool.Exec(t.Context(), "UPDATE checkout_keys SET created_at = now() - interval '8 days' WHERE key = $1", form.Get("key")); err != nil {
		t.Fatal(err)
	}
	other := c.fillCheckout(id, 1, "lookup@example.test")
	want(t, "place", c.post("/checkout/place", other), 303, "")
	if err := ts.shop.pruneKeys(t.Context(), struct{}{}); err != nil {
		t.Fatal(err)
	}
	if n := ts.count(t, "SELECT count(*) FROM checkout_keys WHERE key = ANY($1)", []string{form.Get("key"), other.Get("key")}); n != 1 {
		t.Fatalf("%d of the two keys left after pruning, want the newer one", n)
	}
	if n := ts.count(t, "SELECT count(*) FROM checkout_keys WHERE key = $1", other.Get("key")); n != 1 {
		t.Fatal("the newer key was pruned")
	}
}

// TestSeedTogether: instances starting together on an empty catalog seed
// it once; a catalog with products is left alone.
func TestSeedTogether(t *testing.T) {
	ts := startShop(t, shopOptions{Env: map[string]string{"SHOP_SEED": "false"}})
	if n := ts.count(t, "SELECT count(*) FROM products"); n != 0 {
		t.Fatalf("%d products without SHOP_SEED, want 0", n)
	}
	seeded := 0
	for _, c := range seedCatalog() {
		seeded += len(c.products)
	}
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i := range errs {
		wg.Go(func() { errs[i] = ts.shop.seed(t.Context()) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if err := ts.shop.seed(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n, c := ts.count(t, "SELECT count(*) FROM products"), ts.count(t, "SELECT count(*) FROM categories"); n != seeded || c != len(seedCatalog()) {
		t.Fatalf("%d products in %d categories after seeding 4 times, want %d in %d", n, c, seeded, len(seedCatalog()))
	}
}
