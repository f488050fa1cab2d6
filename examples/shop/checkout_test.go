package main

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"hakit.dev/hatest"
)

// TestShopping browses, searches, fills a cart and checks out: one order,
// its page, the stock taken, and exactly one mail.
func TestShopping(t *testing.T) {
	ts := startShop(t, shopOptions{})
	c := ts.browser(t)

	home := c.get("/")
	want(t, "home", home, http.StatusOK, "")
	if dataPage(home.Body) != "home" || !strings.Contains(home.Body, "Coffee &amp; Tea") {
		t.Fatalf("home page without the seeded categories:\n%s", excerpt(home.Body))
	}
	cat := c.get("/c/kitchen")
	if want(t, "category", cat, http.StatusOK, ""); !strings.Contains(cat.Body, "Cast-Iron Skillet") {
		t.Fatalf("category page without its products:\n%s", excerpt(cat.Body))
	}
	found := c.get("/search?q=skillets")
	if want(t, "search", found, http.StatusOK, ""); !strings.Contains(found.Body, "Cast-Iron Skillet") {
		t.Fatalf("search for skillets did not find the skillet:\n%s", excerpt(found.Body))
	}

	id := ts.addProduct(t, "Test Teapot", 2500, 5)
	prod := c.get("/products/" + itoa(id))
	if want(t, "product", prod, http.StatusOK, ""); dataPage(prod.Body) != "product" || !strings.Contains(prod.Body, "$25.00") {
		t.Fatalf("product page:\n%s", excerpt(prod.Body))
	}
	form := c.fillCheckout(id, 2, "ada@example.test")
	if form.Get("total") != "5000" {
		t.Fatalf("review total = %s, want 5000", form.Get("total"))
	}
	placed := c.post("/checkout/place", form)
	want(t, "place", placed, http.StatusSeeOther, "")
	op := c.get(placed.Location)
	want(t, "order page", op, http.StatusOK, "")
	oid := orderID(t, op)
	if placed.Location != "/orders/"+oid || !strings.Contains(op.Body, "Thank you") {
		t.Fatalf("order page %s for %s:\n%s", oid, placed.Location, excerpt(op.Body))
	}
	if n := ts.count(t, "SELECT stock FROM products WHERE id = $1", id); n != 3 {
		t.Fatalf("stock = %d, want 3", n)
	}
	if cart := c.get("/cart"); !strings.Contains(cart.Body, `data-cart-count="0"`) {
		t.Fatalf("cart not emptied after the order:\n%s", excerpt(cart.Body))
	}
	if mine := c.get("/orders"); !strings.Contains(mine.Body, "/orders/"+oid) {
		t.Fatalf("my orders without #%s:\n%s", oid, excerpt(mine.Body))
	}

	hatest.WaitFor(t, 30*time.Second, "the order mail", func() bool { return len(ts.mailsTo(t, "ada@example.test")) > 0 })
	hatest.WaitFor(t, 10*time.Second, "mailed_at recorded", func() bool {
		return ts.count(t, "SELECT count(*) FROM orders WHERE id = $1 AND mailed_at IS NOT NULL", oid) == 1
	})
	mails := ts.mailsTo(t, "ada@example.test")
	if len(mails) != 1 || mails[0].Subject != "Your order #"+oid {
		t.Fatalf("mails = %+v, want one with subject %q", mails, "Your order #"+oid)
	}
	m, err := ts.svc.mail.Message(t.Context(), mails[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(m.Text, "2 x Test Teapot") || !strings.Contains(m.Text, "$50.00") {
		t.Fatalf("mail body without its lines and total:\n%s", m.Text)
	}
}
