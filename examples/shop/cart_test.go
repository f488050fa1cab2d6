package main

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// TestTamperedForms: product IDs, quantities, keys and totals a shop's own
// pages never send, and forms posted from another site, each get a 4xx
// page, and nothing is written: no order, no stock change, no cart change.
func TestTamperedForms(t *testing.T) {
	ts := startShop(t, shopOptions{})
	id := ts.addProduct(t, "Tamper-Proof Jar", 1500, 20)
	c := ts.browser(t)
	want(t, "add", c.post("/cart/add", url.Values{"product_id": {itoa(id)}, "qty": {"2"}}), http.StatusSeeOther, "/cart")
	before := ts.orderCounts(t)
	c.get("/cart") // shows (and so drops) the flash message of the add
	cartBefore := c.get("/cart").Body

	cases := []struct {
		name, path string
		form       url.Values
		status     int
	}{
		{"add: id not a number", "/cart/add", url.Values{"product_id": {"abc"}, "qty": {"1"}}, 400},
		{"add: id negative", "/cart/add", url.Values{"product_id": {"-1"}, "qty": {"1"}}, 400},
		{"add: id zero", "/cart/add", url.Values{"product_id": {"0"}}, 400},
		{"add: id unknown", "/cart/add", url.Values{"product_id": {"999999999"}}, 400},
		{"add: id huge", "/cart/add", url.Values{"product_id": {"99999999999999999999999"}}, 400},
		{"add: id missing", "/cart/add", url.Values{"qty": {"1"}}, 400},
		{"add: qty negative", "/cart/add", url.Values{"product_id": {itoa(id)}, "qty": {"-3"}}, 400},
		{"add: qty zero", "/cart/add", url.Values{"product_id": {itoa(id)}, "qty": {"0"}}, 400},
		{"add: qty huge", "/cart/add", url.Values{"product_id": {itoa(id)}, "qty": {"1000000"}}, 400},
		{"add: qty over int64", "/cart/add", url.Values{"product_id": {itoa(id)}, "qty": {"99999999999999999999"}}, 400},
		{"add: qty not a number", "/cart/add", url.Values{"product_id": {itoa(id)}, "qty": {"two"}}, 400},
		{"add: qty fraction", "/cart/add", url.Values{"product_id": {itoa(id)}, "qty": {"1.5"}}, 400},
		{"add: qty empty", "/cart/add", url.Values{"product_id": {itoa(id)}, "qty": {""}}, 400},
		{"update: qty negative", "/cart/update", url.Values{"product_id": {itoa(id)}, "qty": {"-1"}}, 400},
		{"update: qty huge", "/cart/update", url.Values{"product_id": {itoa(id)}, "qty": {"100"}}, 400},
		{"update: qty not a number", "/cart/update", url.Values{"product_id": {itoa(id)}, "qty": {"x"}}, 400},
		{"update: product not in cart", "/cart/update", url.Values{"product_id": {"999999999"}, "qty": {"1"}}, 400},
		{"update: id not a number", "/cart/update", url.Values{"product_id": {"1 OR 1=1"}, "qty": {"1"}}, 400},
		{"place: no key", "/checkout/place", url.Values{}, 400},
		{"place: key not a UUID", "/checkout/place", url.Values{"key": {"12345"}}, 400},
		{"place: key too long", "/checkout/place", url.Values{"key": {strings.Repeat("a", 1000)}}, 400},
		{"place: total not a number", "/checkout/place", url.Values{"key": {"3f0e4bd4-5a35-4c38-9d5c-1b2a3c4d5e6f"}, "total": {"cheap"}}, 400},
		{"place: total negative", "/checkout/place", url.Values{"key": {"3f0e4bd4-5a35-4c38-9d5c-1b2a3c4d5e6f"}, "total": {"-100"}}, 400},
	}
	for _, tc := range cases {
		p := c.post(tc.path, tc.form)
		if p.Status != tc.status || dataPage(p.Body) != "error" {
			t.Errorf("%s: %d (page %q), want %d and the error page\n%s", tc.name, p.Status, dataPage(p.Body), tc.status, excerpt(p.Body))
		}
	}
	// Forms posted from another site (CSRF): 403 before any handler runs.
	for _, h := range []http.Header{{"Sec-Fetch-Site": {"cross-site"}}, {"Origin": {"https://evil.example"}}} {
		for _, path := range []string{"/cart/add", "/cart/update", "/checkout/place", "/logout"} {
			p, err := c.doWith(http.MethodPost, path, url.Values{"product_id": {itoa(id)}, "qty": {"5"}}, h)
			if err != nil {
				t.Fatal(err)
			}
			if p.Status != http.StatusForbidden {
				t.Errorf("cross-origin POST %s (%v): %d, want 403", path, h, p.Status)
			}
		}
	}
	if got := c.get("/cart").Body; !strings.Contains(got, `data-cart-count="2"`) || cartBefore != got {
		t.Errorf("the cart changed:\n%s", excerpt(got))
	}

	// A total the customer did not see (a tampered price): 409, no order.
	form := c.checkoutForm("tamper@example.test")
	form.Set("total", "1")
	form.Set("price_cents", "1") // a field the shop never reads
	p := c.post("/checkout/place", form)
	if p.Status != http.StatusConflict || !strings.Contains(p.Body, "Prices changed") {
		t.Errorf("tampered total: %d\n%s", p.Status, excerpt(p.Body))
	}
	if after := ts.orderCounts(t); after != before {
		t.Fatalf("bad input wrote rows: %+v → %+v", before, after)
	}

	// The price comes from the database, whatever the form says.
	form = c.reviewForm()
	form.Set("price_cents", "1")
	want(t, "place", c.post("/checkout/place", form), http.StatusSeeOther, "")
	if total := ts.count(t, "SELECT total_cents::int FROM orders ORDER BY id DESC LIMIT 1"); total != 3000 {
		t.Fatalf("order total = %d, want 3000 (2 × 1500 from the database)", total)
	}
}

// TestCartLimits: quantities above the stock are capped with a message,
// a sold-out product is not added, 0 removes a line.
func TestCartLimits(t *testing.T) {
	ts := startShop(t, shopOptions{})
	few := ts.addProduct(t, "Rare Teacup", 3000, 3)
	none := ts.addProduct(t, "Gone Saucer", 1000, 0)
	c := ts.browser(t)
	want(t, "add", c.post("/cart/add", url.Values{"product_id": {itoa(few)}, "qty": {"5"}}), http.StatusSeeOther, "/cart")
	cart := c.get("/cart")
	if !strings.Contains(cart.Body, `data-cart-count="3"`) || !strings.Contains(cart.Body, "up to 3") {
		t.Fatalf("5 of 3 in stock: cart\n%s", excerpt(cart.Body))
	}
	want(t, "add sold out", c.post("/cart/add", url.Values{"product_id": {itoa(none)}}), http.StatusSeeOther, "/cart")
	cart = c.get("/cart")
	if !strings.Contains(cart.Body, `data-cart-count="3"`) || !strings.Contains(cart.Body, "sold out") {
		t.Fatalf("sold-out product: cart\n%s", excerpt(cart.Body))
	}
	want(t, "remove", c.post("/cart/update", url.Values{"product_id": {itoa(few)}, "qty": {"0"}}), http.StatusSeeOther, "/cart")
	if cart = c.get("/cart"); !strings.Contains(cart.Body, `data-cart-count="0"`) || !strings.Contains(cart.Body, "Your cart is empty") {
		t.Fatalf("after removing: cart\n%s", excerpt(cart.Body))
	}
	if p := c.get("/checkout"); p.Location != "/cart" {
		t.Fatalf("checkout with an empty cart goes to %q, want /cart", p.Location)
	}
}
