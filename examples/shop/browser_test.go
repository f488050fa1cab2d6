package main

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"hakit.dev/hatest"
)

// The browser test's admin account (SHOP_ADMIN_EMAIL, SHOP_ADMIN_PASSWORD).
const (
	browserAdminEmail    = "admin@hakit-goods.test"
	browserAdminPassword = "a browser test's password"
)

// TestBrowser shops through Chromium on a seeded shop with real product
// images (MinIO) and real mail (Mailpit): a customer browses, searches,
// fills a cart, creates an account, checks out and sees the order, in "my
// orders" and in the mail; a double click on "Place order" and a resubmit
// after the back button each give one order; the admin sees the products.
// One Chromium serves every subtest, each customer in a browser context
// of its own. With SHOP_SCREENSHOTS=1 it saves the README's screenshots
// in docs/screenshots; when it fails it saves every open tab's page and
// logs where.
func TestBrowser(t *testing.T) {
	testServices(t) // skips with HAKIT_SKIP_SERVICES=1
	s3 := hatest.NewMinIO(t, hatest.MinIOOptions{Bucket: "shop"})
	ts := startShop(t, shopOptions{Env: map[string]string{
		"HAKIT_S3_ENDPOINT":          s3.Endpoint,
		"HAKIT_S3_REGION":            s3.Region,
		"HAKIT_S3_BUCKET":            s3.Bucket,
		"HAKIT_S3_ACCESS_KEY_ID":     s3.AccessKey,
		"HAKIT_S3_SECRET_ACCESS_KEY": s3.SecretKey,
		"HAKIT_S3_PATH_STYLE":        "true",
		"SHOP_ADMIN_EMAIL":           browserAdminEmail,
		"SHOP_ADMIN_PASSWORD":        browserAdminPassword,
	}})
	browser := startChromium(t)

	// The seed's pictures are drawn and thumbnailed by the shop's worker,
	// which takes a while on a busy machine: the test waits for the
	// pictures it checks, the screenshots for all of them.
	start := time.Now()
	if os.Getenv("SHOP_SCREENSHOTS") == "1" {
		ts.waitImages(t, 8*time.Minute)
	} else {
		ts.waitImages(t, 2*time.Minute, "Cast-Iron Skillet, 26 cm", "Olive Wood Cutting Board")
	}
	t.Logf("product images ready in %v", time.Since(start).Round(time.Millisecond))

	t.Run("shopping", func(t *testing.T) { browserShopping(t, ts, browser) })
	t.Run("double click", func(t *testing.T) { browserDoubleClick(t, ts, browser) })
	t.Run("back and resubmit", func(t *testing.T) { browserBackResubmit(t, ts, browser) })
	t.Run("admin", func(t *testing.T) { browserAdmin(t, ts, browser) })
}

// browserShopping is a customer's whole visit, from the home page to the
// confirmation mail.
func browserShopping(t *testing.T, ts *testShop, browser *chromium) {
	c := browser.newTab(t, ts.URL, "customer")
	skillet := ts.productID(t, "Cast-Iron Skillet, 26 cm")
	board := ts.productID(t, "Olive Wood Cutting Board")

	// Home: the categories and the new arrivals, with their pictures.
	c.open("/", "home")
	if n := len(value(c, "categories", chromedp.Nodes(chromedp.CSSAll(`ul.categories a`), chromedp.AtLeast(0)))); n != 6 {
		t.Errorf("home shows %d categories, want the 6 seeded", n)
	}
	if n := c.imagesLoaded(); n == 0 {
		t.Error("home shows no product pictures")
	}
	c.screenshot("home")

	// A category, then a search from the header.
	c.do("category", chromedp.Click(chromedp.CSS(`ul.categories a[href="/c/kitchen"]`), chromedp.NodeVisible), waitPage("category"))
	if got := c.text("main"); !strings.Contains(got, "Cast-Iron Skillet") || !strings.Contains(got, "Olive Wood Cutting Board") {
		t.Fatalf("kitchen category without its products: %q", got)
	}
	c.do("search", chromedp.SendKeys(chromedp.CSS(`header input[name="q"]`), "skillet\r", chromedp.NodeVisible), waitPage("search"))
	if got := c.text("main"); !strings.Contains(got, "Cast-Iron Skillet") {
		t.Fatalf("search for skillet did not find it: %q", got)
	}

	// The product page, with its picture: a JPEG thumbnail from S3.
	c.do("product", chromedp.Click(chromedp.CSS(fmt.Sprintf(`a.card-link[href="/products/%d"]`, skillet)), chromedp.NodeVisible), waitPage("product"))
	if got := c.text(".product-info .price"); got != "$45.00" {
		t.Errorf("skillet price %q, want $45.00", got)
	}
	c.imagesLoaded()
	pic := evalJS[map[string]any](c, "product image", `(async () => {
		const img = document.querySelector('.product-pic img');
		if (!img) return {missing: true};
		const r = await fetch(img.src);
		return {width: img.naturalWidth, type: r.headers.get('content-type'), status: r.status};
	})()`)
	if pic["missing"] == true || pic["width"].(float64) <= 0 || pic["type"] != "image/jpeg" || pic["status"].(float64) != 200 {
		t.Fatalf("product image: %v, want a loaded image/jpeg", pic)
	}
	c.screenshot("product")

	// Two skillets and a board in the cart.
	c.do("add skillets",
		chromedp.SetValue(chromedp.CSS(`#qty`), "2", chromedp.NodeVisible),
		chromedp.Click(chromedp.CSS(`form.add-to-cart button[type="submit"]`), chromedp.NodeVisible),
		waitPage("cart"))
	c.open(fmt.Sprintf("/products/%d", board), "product")
	c.do("add board", chromedp.Click(chromedp.CSS(`form.add-to-cart button[type="submit"]`), chromedp.NodeVisible), waitPage("cart"))
	lines := c.text("table.lines tbody")
	if !strings.Contains(lines, "Cast-Iron Skillet, 26 cm") || !strings.Contains(lines, "Olive Wood Cutting Board") || !strings.Contains(lines, "$90.00") {
		t.Fatalf("cart lines: %q", lines)
	}
	if got := c.text(".summary dd.total"); got != "$129.00" {
		t.Fatalf("cart total %q, want $129.00", got)
	}
	if got := c.text(".cart-link .badge"); got != "3" {
		t.Errorf("cart badge %q, want 3", got)
	}
	c.screenshot("cart")

	// An account, made from the header's sign-in link; the cart stays.
	const email = "grace@example.test"
	c.do("sign in page", chromedp.Click(chromedp.CSS(`nav.account a[href="/login"]`), chromedp.NodeVisible), waitPage("login"))
	c.do("register page", chromedp.Click(chromedp.CSS(`a[href^="/register"]`), chromedp.NodeVisible), waitPage("register"))
	c.do("register",
		chromedp.SetValue(chromedp.CSS(`#name`), "Grace Hopper", chromedp.NodeVisible),
		chromedp.SetValue(chromedp.CSS(`#email`), email, chromedp.NodeVisible),
		chromedp.SetValue(chromedp.CSS(`#password`), "cobol and nanoseconds", chromedp.NodeVisible),
		chromedp.Click(chromedp.CSS(`main form button[type="submit"]`), chromedp.NodeVisible),
		chromedp.WaitReady(chromedp.CSS(`nav.account form[action="/logout"]`)),
		chromedp.WaitVisible(chromedp.CSS(`.flash`)))
	if got := c.text(".flash"); !strings.Contains(got, "Welcome, Grace Hopper") {
		t.Errorf("after registering: flash %q", got)
	}
	c.do("cart", chromedp.Click(chromedp.CSS(`a.cart-link`), chromedp.NodeVisible), waitPage("cart"))
	if got := c.text(".summary dd.total"); got != "$129.00" {
		t.Fatalf("cart total after signing up %q, want $129.00", got)
	}

	// Checkout: address (name and e-mail from the account), payment, review.
	c.do("checkout", chromedp.Click(chromedp.CSS(`.summary a[href="/checkout"]`), chromedp.NodeVisible), waitPage("address"))
	if name, mail := value(c, "name", chromedp.Value(chromedp.CSS(`#name`))), value(c, "email", chromedp.Value(chromedp.CSS(`#email`))); name != "Grace Hopper" || mail != email {
		t.Errorf("address form starts with %q <%s>, want the account's", name, mail)
	}
	c.do("address",
		chromedp.SetValue(chromedp.CSS(`#street`), "1 Navy Yard", chromedp.NodeVisible),
		chromedp.SetValue(chromedp.CSS(`#zip`), "20374", chromedp.NodeVisible),
		chromedp.SetValue(chromedp.CSS(`#city`), "Washington", chromedp.NodeVisible),
		chromedp.Click(chromedp.CSS(`main form button[type="submit"]`), chromedp.NodeVisible),
		waitPage("payment"))
	c.do("payment",
		chromedp.SetValue(chromedp.CSS(`#card`), "4242 4242 4242 4242", chromedp.NodeVisible),
		chromedp.SetValue(chromedp.CSS(`#exp`), "12 / 29", chromedp.NodeVisible),
		chromedp.SetValue(chromedp.CSS(`#cvc`), "123", chromedp.NodeVisible),
		chromedp.Click(chromedp.CSS(`main form button[type="submit"]`), chromedp.NodeVisible),
		waitPage("review"))
	if got := c.text(".summary dd.total"); got != "$129.00" {
		t.Fatalf("review total %q, want $129.00", got)
	}
	if got := c.text("address"); !strings.Contains(got, "1 Navy Yard") || !strings.Contains(got, "20374 Washington") {
		t.Errorf("review address %q", got)
	}
	c.screenshot("review")

	// Place the order: its page at once (read-your-writes), then my orders.
	c.do("place order", chromedp.Click(chromedp.CSS(`form[action="/checkout/place"] button`), chromedp.NodeVisible), waitPage("order"))
	id := c.orderID()
	if got := c.text("main"); !strings.Contains(got, "Thank you, Grace Hopper!") || !strings.Contains(got, "#"+id) ||
		!strings.Contains(got, "Cast-Iron Skillet, 26 cm") || !strings.Contains(got, "$129.00") {
		t.Fatalf("order page: %q", got)
	}
	if got := c.text(".cart-link .badge"); got != "0" {
		t.Errorf("cart badge after the order %q, want 0", got)
	}
	c.screenshot("order")
	c.do("my orders", chromedp.Click(chromedp.CSS(`nav.account a[href="/orders"]`), chromedp.NodeVisible), waitPage("orders"),
		chromedp.WaitVisible(chromedp.CSS(`a[href="/orders/`+id+`"]`)))
	if got := c.text("table.orders tbody"); !strings.Contains(got, "#"+id) || !strings.Contains(got, "$129.00") {
		t.Errorf("my orders: %q", got)
	}
	if n := ts.count(t, "SELECT count(*) FROM orders o JOIN users u ON u.id = o.user_id WHERE u.email = $1", email); n != 1 {
		t.Errorf("%d orders for %s, want 1", n, email)
	}

	// The confirmation mail: once, with the lines and the total.
	mail := ts.waitOrderMail(t, email, id)
	for _, re := range []string{`\b2 x Cast-Iron Skillet, 26 cm\s+\$90\.00`, `\b1 x Olive Wood Cutting Board\s+\$39\.00`, `Total\s+\$129\.00`} {
		if !regexp.MustCompile(re).MatchString(mail) {
			t.Errorf("mail without %s:\n%s", re, mail)
		}
	}
}

// browserDoubleClick: a guest double-clicks "Place order"; the two
// submits make one order, and the page shows it.
func browserDoubleClick(t *testing.T, ts *testShop, browser *chromium) {
	c := browser.newTab(t, ts.URL, "double-click")
	const email = "double@example.test"
	c.checkoutAsGuest(ts.productID(t, "Brass Desk Lamp"), email)
	c.do("double click", chromedp.DoubleClick(chromedp.CSS(`form[action="/checkout/place"] button`), chromedp.NodeVisible), waitPage("order"))
	id := c.orderID()
	if n := ts.count(t, "SELECT count(*) FROM orders WHERE email = $1", email); n != 1 {
		t.Fatalf("%d orders after a double click, want 1", n)
	}
	if got := strconv.Itoa(ts.count(t, "SELECT id::int FROM orders WHERE email = $1", email)); got != id {
		t.Fatalf("the page shows order %s, the database has %s", id, got)
	}
	ts.waitOrderMail(t, email, id)
}

// browserBackResubmit: after placing an order, the customer goes back to
// the review page and presses "Place order" again: the same order's page,
// no second order.
func browserBackResubmit(t *testing.T, ts *testShop, browser *chromium) {
	c := browser.newTab(t, ts.URL, "back-resubmit")
	const email = "back@example.test"
	c.checkoutAsGuest(ts.productID(t, "Fountain Pen, Medium Nib"), email)
	key := value(c, "review key", chromedp.Value(chromedp.CSS(`input[name="key"]`)))
	c.do("place order", chromedp.Click(chromedp.CSS(`form[action="/checkout/place"] button`), chromedp.NodeVisible), waitPage("order"))
	id := c.orderID()

	// Back, as the browser's button does; the page may come from the
	// back/forward cache (no load event) or from the shop.
	c.do("back", chromedp.Evaluate[chromedp.Void](`history.back()`))
	c.waitJS("back from the order page", `location.pathname !== "/orders/`+id+`" && document.readyState === "complete" && !!document.body`)
	page := c.page()
	t.Logf("back from the order page: %q page", page)
	// The page may be a restored one, whose nodes chromedp has not seen:
	// the rest goes through JavaScript, as the customer's click would.
	if page == "review" {
		// The browser showed the review page as it was (back/forward
		// cache): its form still has the used key.
		if got := evalJS[string](c, "key after back", `document.querySelector('input[name="key"]').value`); got != key {
			t.Fatalf("review page after back has key %s, want the placed form's %s", got, key)
		}
	} else {
		// The browser asked the shop again, which has no review to show
		// for an empty cart: put back the form the customer had, as a
		// stale page would (same key), and send it.
		c.do("stale review form", chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`(() => {
			const f = document.createElement('form');
			f.method = 'post'; f.action = '/checkout/place';
			f.innerHTML = '<input type="hidden" name="key" value="%s"><button type="submit">Place order</button>';
			document.body.append(f);
		})()`, key)))
	}
	c.do("resubmit", chromedp.Evaluate[chromedp.Void](`document.querySelector('form[action="/checkout/place"] button').click()`))
	c.waitJS("the order page after resubmitting", `!!document.querySelector('main[data-order-id]') && document.readyState === "complete"`)
	if got := c.orderID(); got != id {
		t.Fatalf("resubmit after back shows order %s, want %s", got, id)
	}
	if n := ts.count(t, "SELECT count(*) FROM orders WHERE email = $1", email); n != 1 {
		t.Fatalf("%d orders after back and resubmit, want 1", n)
	}
	ts.waitOrderMail(t, email, id)
}

// browserAdmin: the shop owner signs in and sees the product list, every
// product with its thumbnail.
func browserAdmin(t *testing.T, ts *testShop, browser *chromium) {
	c := browser.newTab(t, ts.URL, "admin")
	c.do("admin", chromedp.Navigate(ts.URL+"/admin"), waitPage("login"))
	c.do("sign in",
		chromedp.SetValue(chromedp.CSS(`#email`), browserAdminEmail, chromedp.NodeVisible),
		chromedp.SetValue(chromedp.CSS(`#password`), browserAdminPassword, chromedp.NodeVisible),
		chromedp.Click(chromedp.CSS(`main form button[type="submit"]`), chromedp.NodeVisible),
		chromedp.WaitReady(chromedp.CSS(`body[data-page^="admin"]`)))
	if loc := c.where(); loc != ts.URL+"/admin" {
		t.Errorf("after signing in: %s, want back at /admin", loc)
	}
	got := c.text("main")
	for _, name := range []string{"Cast-Iron Skillet, 26 cm", "Brass Desk Lamp", "Passport Cover"} {
		if !strings.Contains(got, name) {
			t.Errorf("admin product list without %q", name)
		}
	}
	if n := c.imagesLoaded(); n < 36 {
		t.Errorf("admin product list shows %d thumbnails, want at least 36", n)
	}
	c.screenshot("admin")
}

// checkoutAsGuest puts a product in the cart and goes through address and
// payment to the review page, without an account.
func (tb *tab) checkoutAsGuest(productID int64, email string) {
	tb.t.Helper()
	tb.open(fmt.Sprintf("/products/%d", productID), "product")
	tb.do("add to cart", chromedp.Click(chromedp.CSS(`form.add-to-cart button[type="submit"]`), chromedp.NodeVisible), waitPage("cart"))
	tb.do("checkout", chromedp.Click(chromedp.CSS(`.summary a[href="/checkout"]`), chromedp.NodeVisible), waitPage("address"))
	tb.do("address",
		chromedp.SetValue(chromedp.CSS(`#name`), "Alan Turing", chromedp.NodeVisible),
		chromedp.SetValue(chromedp.CSS(`#email`), email, chromedp.NodeVisible),
		chromedp.SetValue(chromedp.CSS(`#street`), "Bletchley Park", chromedp.NodeVisible),
		chromedp.SetValue(chromedp.CSS(`#zip`), "MK3 6EB", chromedp.NodeVisible),
		chromedp.SetValue(chromedp.CSS(`#city`), "Milton Keynes", chromedp.NodeVisible),
		chromedp.Click(chromedp.CSS(`main form button[type="submit"]`), chromedp.NodeVisible),
		waitPage("payment"))
	tb.do("payment",
		chromedp.SetValue(chromedp.CSS(`#card`), "4242424242424242", chromedp.NodeVisible),
		chromedp.Click(chromedp.CSS(`main form button[type="submit"]`), chromedp.NodeVisible),
		waitPage("review"))
}

// orderID is the order page's data-order-id.
func (tb *tab) orderID() string {
	tb.t.Helper()
	id := evalJS[string](tb, "order id", `document.querySelector('main').dataset.orderId || ""`)
	if id == "" {
		tb.t.Fatalf("no data-order-id on %s", tb.where())
	}
	return id
}

// waitImages waits until the images of the named products, or of every
// product if none is named, are ready, and the replica has them; it fails
// the test at once if one is broken.
func (ts *testShop) waitImages(t testing.TB, timeout time.Duration, names ...string) {
	t.Helper()
	if names == nil {
		names = []string{} // not NULL
	}
	hatest.WaitFor(t, timeout, fmt.Sprintf("the product images %q", names), func() bool {
		var broken, waiting int
		pool, err := ts.shop.db.Primary()
		if err != nil { // a busy machine's missed health check: ask again
			t.Logf("waiting for images: %v", err)
			return false
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err = pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE i.status = 'broken'),
			count(*) FILTER (WHERE i.status IS DISTINCT FROM 'ready')
			FROM products p LEFT JOIN images i ON i.id = p.image_id
			WHERE cardinality($1::text[]) = 0 OR p.name = ANY($1)`, names).Scan(&broken, &waiting)
		if err != nil {
			t.Logf("waiting for images: %v", err)
			return false
		}
		if broken > 0 {
			t.Fatalf("%d product images broken", broken)
		}
		return waiting == 0
	})
	if err := ts.svc.pg.WaitReplicated(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// productID is the ID of the product named name.
func (ts *testShop) productID(t testing.TB, name string) int64 {
	t.Helper()
	return int64(ts.count(t, "SELECT id::int FROM products WHERE name = $1", name))
}

// waitOrderMail waits (polling Mailpit's API) for the confirmation mail of
// order id to addr and for the shop to record it sent, checks it is the
// only mail to addr, and returns its text.
func (ts *testShop) waitOrderMail(t testing.TB, addr, id string) string {
	t.Helper()
	hatest.WaitFor(t, 30*time.Second, "the mail of order #"+id, func() bool { return len(ts.mailsTo(t, addr)) > 0 })
	hatest.WaitFor(t, 10*time.Second, "mailed_at of order #"+id, func() bool {
		return ts.count(t, "SELECT count(*) FROM orders WHERE id = $1 AND mailed_at IS NOT NULL", id) == 1
	})
	mails := ts.mailsTo(t, addr)
	if len(mails) != 1 || mails[0].Subject != "Your order #"+id {
		t.Fatalf("mails to %s: %+v, want one with subject %q", addr, mails, "Your order #"+id)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m, err := ts.svc.mail.Message(ctx, mails[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	return m.Text
}
