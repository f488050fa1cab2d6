package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"hakit.dev/dbrouter"
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
	// The task delivered again (at least once): no second mail.
	n, _ := strconv.ParseInt(oid, 10, 64)
	if err := ts.shop.sendOrderMail(t.Context(), orderMail{OrderID: n}); err != nil {
		t.Fatal(err)
	}
	if mails := ts.mailsTo(t, "ada@example.test"); len(mails) != 1 {
		t.Fatalf("%d mails after the task ran again, want 1", len(mails))
	}
}

// orderCounts are the rows an order writes, to check that nothing was.
type orderCounts struct{ orders, lines, keys, stock int }

func (ts *testShop) orderCounts(t testing.TB) orderCounts {
	t.Helper()
	return orderCounts{
		orders: ts.count(t, "SELECT count(*) FROM orders"),
		lines:  ts.count(t, "SELECT count(*) FROM order_lines"),
		keys:   ts.count(t, "SELECT count(*) FROM checkout_keys"),
		stock:  ts.count(t, "SELECT sum(stock)::int FROM products"),
	}
}

// TestCheckoutOnce: a double submit, a reload after placing, a replayed
// key with another cart and a lost COMMIT answer each give one order or
// none, never two.
func TestCheckoutOnce(t *testing.T) {
	var loseCommit atomic.Int32 // 1: the COMMIT's answer is lost after it committed; 2: before
	ts := startShop(t, shopOptions{WrapWriteOrder: func(write func(context.Context, func(pgx.Tx) error) error) func(context.Context, func(pgx.Tx) error) error {
		return func(ctx context.Context, fn func(pgx.Tx) error) error {
			switch loseCommit.Load() {
			case 1:
				if err := write(ctx, fn); err != nil {
					return err
				}
				return dbrouter.ErrCommitUnknown
			case 2:
				return dbrouter.ErrCommitUnknown
			}
			return write(ctx, fn)
		}
	}})
	id := ts.addProduct(t, "Idempotent Mug", 1200, 100)

	t.Run("double submit", func(t *testing.T) {
		c := ts.browser(t)
		form := c.fillCheckout(id, 1, "double@example.test")
		before := ts.orderCounts(t)
		var wg sync.WaitGroup
		pages := make([]page, 2)
		errs := make([]error, 2)
		for i := range pages {
			wg.Go(func() { pages[i], errs[i] = c.do(http.MethodPost, "/checkout/place", form) })
		}
		wg.Wait()
		for i := range pages {
			if errs[i] != nil {
				t.Fatal(errs[i])
			}
			want(t, "place", pages[i], http.StatusSeeOther, "")
		}
		if pages[0].Location != pages[1].Location {
			t.Fatalf("two submits went to %s and %s, want one order", pages[0].Location, pages[1].Location)
		}
		after := ts.orderCounts(t)
		if after.orders != before.orders+1 || after.keys != before.keys+1 {
			t.Fatalf("orders %d → %d, keys %d → %d: want one more of each", before.orders, after.orders, before.keys, after.keys)
		}
	})

	t.Run("reload after place", func(t *testing.T) {
		c := ts.browser(t)
		form := c.fillCheckout(id, 2, "reload@example.test")
		first := c.post("/checkout/place", form)
		want(t, "place", first, http.StatusSeeOther, "")
		before := ts.orderCounts(t)
		again := c.post("/checkout/place", form) // the browser's reload: the cart is empty now
		want(t, "reload", again, http.StatusSeeOther, first.Location)
		if after := ts.orderCounts(t); after != before {
			t.Fatalf("a reload wrote rows: %+v → %+v", before, after)
		}
		if op := c.get(first.Location); orderID(t, op) != strings.TrimPrefix(first.Location, "/orders/") {
			t.Fatalf("order page of %s shows another order", first.Location)
		}
	})

	t.Run("same key, other cart", func(t *testing.T) {
		c := ts.browser(t)
		form := c.fillCheckout(id, 1, "replay@example.test")
		want(t, "place", c.post("/checkout/place", form), http.StatusSeeOther, "")
		c.checkoutFormWith(t, id, 3) // a new cart, through address and payment again
		before := ts.orderCounts(t)
		replay := c.post("/checkout/place", url.Values{"key": form["key"]})
		want(t, "replayed key", replay, http.StatusUnprocessableEntity, "")
		if dataPage(replay.Body) != "error" || !strings.Contains(replay.Body, "already used") {
			t.Fatalf("422 page:\n%s", excerpt(replay.Body))
		}
		if after := ts.orderCounts(t); after != before {
			t.Fatalf("a replayed key wrote rows: %+v → %+v", before, after)
		}
	})

	t.Run("commit unknown, committed", func(t *testing.T) {
		c := ts.browser(t)
		form := c.fillCheckout(id, 1, "lost@example.test")
		before := ts.orderCounts(t)
		loseCommit.Store(1)
		p := c.post("/checkout/place", form)
		loseCommit.Store(0)
		want(t, "place", p, http.StatusSeeOther, "")
		if after := ts.orderCounts(t); after.orders != before.orders+1 {
			t.Fatalf("orders %d → %d, want one more", before.orders, after.orders)
		}
		op := c.get(p.Location)
		want(t, "order page", op, http.StatusOK, "")
		if cart := c.get("/cart"); !strings.Contains(cart.Body, `data-cart-count="0"`) {
			t.Fatal("cart not emptied after the order found by its key")
		}
	})

	t.Run("commit unknown, not committed", func(t *testing.T) {
		c := ts.browser(t)
		form := c.fillCheckout(id, 1, "notplaced@example.test")
		before := ts.orderCounts(t)
		loseCommit.Store(2)
		p := c.post("/checkout/place", form)
		loseCommit.Store(0)
		want(t, "place", p, http.StatusServiceUnavailable, "")
		if !strings.Contains(p.Body, "not placed") || p.Location != "" {
			t.Fatalf("503 page:\n%s", excerpt(p.Body))
		}
		if after := ts.orderCounts(t); after != before {
			t.Fatalf("rows written: %+v → %+v", before, after)
		}
		// The cart is still there, and the same form places the order now.
		retry := c.post("/checkout/place", form)
		want(t, "retry", retry, http.StatusSeeOther, "")
		if after := ts.orderCounts(t); after.orders != before.orders+1 {
			t.Fatalf("orders %d → %d after the retry, want one more", before.orders, after.orders)
		}
	})
}

// checkoutFormWith replaces the cart with qty of a product and goes
// through the checkout to the review form.
func (c *browser) checkoutFormWith(t testing.TB, productID int64, qty int) url.Values {
	t.Helper()
	want(t, "add", c.post("/cart/add", url.Values{"product_id": {itoa(productID)}, "qty": {fmt.Sprint(qty)}}), http.StatusSeeOther, "/cart")
	return c.checkoutForm("again@example.test")
}

// TestLastUnits: 50 customers buy the last 10 units at once: 10 orders,
// stock 0, 40 sold-out pages, nothing else.
func TestLastUnits(t *testing.T) {
	ts := startShop(t, shopOptions{})
	id := ts.addProduct(t, "Limited Edition Print", 9900, 10)
	const customers = 50
	forms := make([]url.Values, customers)
	browsers := make([]*browser, customers)
	for i := range customers {
		browsers[i] = ts.browser(t)
		forms[i] = browsers[i].fillCheckout(id, 1, fmt.Sprintf("buyer%d@example.test", i))
	}
	before := ts.orderCounts(t)
	statuses := make([]int, customers)
	errs := make([]error, customers)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range customers {
		wg.Go(func() {
			<-start
			var p page
			p, errs[i] = browsers[i].do(http.MethodPost, "/checkout/place", forms[i])
			statuses[i] = p.Status
			if p.Status == http.StatusConflict && !strings.Contains(p.Body, `data-page="soldout"`) {
				errs[i] = fmt.Errorf("409 without the sold-out page:\n%s", excerpt(p.Body))
			}
		})
	}
	close(start)
	wg.Wait()
	placed, soldOut := 0, 0
	for i, st := range statuses {
		if errs[i] != nil {
			t.Fatalf("customer %d: %v", i, errs[i])
		}
		switch st {
		case http.StatusSeeOther:
			placed++
		case http.StatusConflict:
			soldOut++
		default:
			t.Errorf("customer %d: status %d", i, st)
		}
	}
	after := ts.orderCounts(t)
	stock := ts.count(t, "SELECT stock FROM products WHERE id = $1", id)
	sold := ts.count(t, "SELECT coalesce(sum(qty), 0)::int FROM order_lines WHERE product_id = $1", id)
	if placed != 10 || soldOut != 40 || stock != 0 || sold != 10 || after.orders != before.orders+10 {
		t.Fatalf("placed %d, sold out %d, stock %d, units sold %d, new orders %d; want 10, 40, 0, 10, 10",
			placed, soldOut, stock, sold, after.orders-before.orders)
	}
}

// TestCheckoutLoginWhilePlacing: a customer signs in (another tab) while
// the order of a guest checkout is being placed. The same form submitted
// again finds that order, not a second one, and the cart is empty after.
func TestCheckoutLoginWhilePlacing(t *testing.T) {
	var mu sync.Mutex
	var gate, entered chan struct{}
	ts := startShop(t, shopOptions{WrapWriteOrder: func(write func(context.Context, func(pgx.Tx) error) error) func(context.Context, func(pgx.Tx) error) error {
		return func(ctx context.Context, fn func(pgx.Tx) error) error {
			mu.Lock()
			g, e := gate, entered
			gate, entered = nil, nil
			mu.Unlock()
			if g != nil {
				close(e)
				<-g // the place request is in flight
			}
			return write(ctx, fn)
		}
	}})
	id := ts.addProduct(t, "Scope Mug", 1200, 100)
	reg := ts.browser(t)
	want(t, "register", reg.post("/register", url.Values{"name": {"Bo"}, "email": {"bo@example.test"}, "password": {"password123"}}), http.StatusSeeOther, "")

	c := ts.browser(t) // a guest
	form := c.fillCheckout(id, 1, "bo@example.test")
	mu.Lock()
	gate, entered = make(chan struct{}), make(chan struct{})
	g, e := gate, entered
	mu.Unlock()
	done := make(chan page)
	go func() { done <- c.post("/checkout/place", form) }()
	<-e
	want(t, "login", c.post("/login", url.Values{"email": {"bo@example.test"}, "password": {"password123"}, "next": {"/"}}), http.StatusSeeOther, "/")
	close(g)
	first := <-done
	want(t, "place", first, http.StatusSeeOther, "")
	if cart := c.get("/cart"); strings.Contains(cart.Body, "Scope Mug") {
		t.Errorf("the cart still holds the ordered mug:\n%s", excerpt(cart.Body))
	}
	again := c.post("/checkout/place", form) // a reload of the same form
	want(t, "same form again", again, http.StatusSeeOther, first.Location)
	if n := ts.count(t, "SELECT count(*) FROM checkout_keys WHERE key = $1", form.Get("key")); n != 1 {
		t.Errorf("the form's key placed %d orders, want 1", n)
	}
}

// TestCheckoutCartChangedAfterReview: "Place order" places what the review
// page showed or nothing: a cart or address changed in another tab since
// is refused (409), and reviewing again places the new cart.
func TestCheckoutCartChangedAfterReview(t *testing.T) {
	ts := startShop(t, shopOptions{})
	a := ts.addProduct(t, "Reviewed Mug", 1000, 100)
	b := ts.addProduct(t, "Unreviewed Vase", 2000, 100)
	c := ts.browser(t)
	form := c.fillCheckout(a, 2, "cc@example.test") // tab 1 shows 2 × Reviewed Mug
	before := ts.orderCounts(t)
	// Tab 2 changes the cart; placing tab 1's form is refused.
	want(t, "add", c.post("/cart/add", url.Values{"product_id": {itoa(b)}, "qty": {"1"}}), http.StatusSeeOther, "/cart")
	p := c.post("/checkout/place", form)
	if p.Status != http.StatusConflict || !strings.Contains(p.Body, "cart changed since you reviewed it") {
		t.Fatalf("cart changed: %d, want 409 with its message:\n%s", p.Status, excerpt(p.Body))
	}
	// The address alone changes, after a new review: refused too.
	form = c.reviewForm()
	want(t, "address", c.post("/checkout/address", url.Values{
		"name": {"Someone Else"}, "email": {"other@example.test"}, "street": {"1 Other Rd"},
		"city": {"Elsewhere"}, "zip": {"99999"}, "country": {"Nowhere"},
	}), http.StatusSeeOther, "/checkout/payment")
	if p := c.post("/checkout/place", form); p.Status != http.StatusConflict {
		t.Fatalf("address changed: %d, want 409", p.Status)
	}
	if after := ts.orderCounts(t); after.orders != before.orders {
		t.Fatalf("%d orders placed from outdated review pages", after.orders-before.orders)
	}
	// An older review page of the same session: refused too.
	old := c.reviewForm()
	form = c.reviewForm()
	if p := c.post("/checkout/place", old); p.Status != http.StatusConflict || !strings.Contains(p.Body, "not your latest") {
		t.Fatalf("an older review page: %d, want 409:\n%s", p.Status, excerpt(p.Body))
	}
	// The latest review: placed, and a replay of that form finds its order.
	placed := c.post("/checkout/place", form)
	want(t, "place reviewed", placed, http.StatusSeeOther, "")
	o := c.get(placed.Location)
	if !strings.Contains(o.Body, "Unreviewed Vase") || !strings.Contains(o.Body, "Someone Else") {
		t.Fatalf("the order is not the reviewed one:\n%s", excerpt(o.Body))
	}
	want(t, "replay", c.post("/checkout/place", form), http.StatusSeeOther, placed.Location)
}

// TestProveKey asks the database what became of a key whose COMMIT's
// answer was lost, with a second connection holding the key's transaction
// open: "in flight" while it is, its order once it committed, "not placed"
// only once it rolled back. The probe itself leaves nothing.
func TestProveKey(t *testing.T) {
	ts := startShop(t, shopOptions{})
	ctx := t.Context()
	pool, err := ts.shop.db.Primary()
	if err != nil {
		t.Fatal(err)
	}
	const scope = "s:prove-key-owner"
	hold := func(key string) (pgx.Tx, int64) {
		t.Helper()
		tx, err := pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = tx.Rollback(context.Background()) })
		var id int64
		if err := tx.QueryRow(ctx, `INSERT INTO orders (session_owner, email, name, address, total_cents)
			VALUES ('prove-key-owner', 'p@example.test', 'P', '{}', 100) RETURNING id`).Scan(&id); err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, "INSERT INTO checkout_keys (scope, key, request_hash, order_id) VALUES ($1, $2, 'h', $3)", scope, key, id); err != nil {
			t.Fatal(err)
		}
		return tx, id
	}
	ask := func(key string) error {
		return ts.shop.askKey(ctx, orderRequest{Scope: scope, Key: key}, dbrouter.ErrCommitUnknown)
	}

	committed := "6a1f3c2e-1b7d-4c55-9a0e-3d2b1c4e5f60"
	tx, id := hold(committed)
	if _, _, err := ts.shop.proveKey(ctx, scope, committed); !errors.Is(err, errInFlight) {
		t.Fatalf("key held by an open transaction: %v, want errInFlight", err)
	}
	if err := ask(committed); !errors.Is(err, errUnconfirmed) {
		t.Fatalf("askKey, key in flight: %v, want errUnconfirmed (a plain SELECT says not placed)", err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	var used *keyUsed
	if err := ask(committed); !errors.As(err, &used) || used.OrderID != id || string(used.Hash) != "h" {
		t.Fatalf("askKey, committed: %v, want order %d", err, id)
	}

	rolledBack := "7b2e4d3f-2c8e-4d66-8b1f-4e3c2d5f6071"
	tx, _ = hold(rolledBack)
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if err := ask(rolledBack); !errors.Is(err, errNotPlaced) {
		t.Fatalf("askKey, rolled back: %v, want errNotPlaced", err)
	}
	if err := ask("8c3f5e40-3d9f-4e77-9c20-5f4d3e607182"); !errors.Is(err, errNotPlaced) {
		t.Fatalf("askKey, unknown key: %v, want errNotPlaced", err)
	}
	if n := ts.count(t, "SELECT count(*) FROM checkout_keys WHERE scope = $1", scope); n != 1 {
		t.Fatalf("%d keys of the scope after the probes, want the committed one", n)
	}
	if n := ts.count(t, "SELECT count(*) FROM orders WHERE session_owner = ''"); n != 0 {
		t.Fatalf("%d placeholder orders left by the probes", n)
	}
}

// TestOrderMailOnce: two runs of the mail task at once (a delivery again
// while the first still runs) send one mail: the one that claimed the
// order sends it, the other fails and its retry finds it sent. A claim
// older than mailClaimFor (its run died) is taken over.
func TestOrderMailOnce(t *testing.T) {
	ts := startShop(t, shopOptions{})
	id := ts.addProduct(t, "Mail Mug", 1200, 100)
	c := ts.browser(t)
	placed := c.post("/checkout/place", c.fillCheckout(id, 1, "twice@example.test"))
	want(t, "place", placed, http.StatusSeeOther, "")
	oid, _ := strconv.ParseInt(orderID(t, c.get(placed.Location)), 10, 64)
	hatest.WaitFor(t, 30*time.Second, "the order mail recorded", func() bool {
		return ts.count(t, "SELECT count(*) FROM orders WHERE id = $1 AND mailed_at IS NOT NULL", oid) == 1
	})
	mails := func() int { return len(ts.mailsTo(t, "twice@example.test")) }
	if n := mails(); n != 1 {
		t.Fatalf("%d mails after the order, want 1", n)
	}
	pool, err := ts.shop.db.Primary()
	if err != nil {
		t.Fatal(err)
	}
	unsend := func(claim string) {
		t.Helper()
		if _, err := pool.Exec(t.Context(), "UPDATE orders SET mailed_at = NULL, mail_claimed_at = "+claim+" WHERE id = $1", oid); err != nil {
			t.Fatal(err)
		}
	}

	unsend("NULL")
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i := range errs {
		wg.Go(func() { errs[i] = ts.shop.sendOrderMail(t.Context(), orderMail{OrderID: oid}) })
	}
	wg.Wait()
	if n := mails(); n != 2 {
		t.Fatalf("two concurrent runs sent %d mails, want 1", n-1)
	}
	if errs[0] != nil && errs[1] != nil {
		t.Fatalf("both runs failed: %v, %v", errs[0], errs[1])
	}
	for _, err := range errs {
		if err != nil && !errors.Is(err, errMailClaimed) {
			t.Fatalf("the losing run: %v, want errMailClaimed", err)
		}
	}
	if err := ts.shop.sendOrderMail(t.Context(), orderMail{OrderID: oid}); err != nil || mails() != 2 {
		t.Fatalf("a retry after the sending: %v, %d mails; want nil, 2", err, mails())
	}

	unsend("now()") // a run is sending it now
	if err := ts.shop.sendOrderMail(t.Context(), orderMail{OrderID: oid}); !errors.Is(err, errMailClaimed) || mails() != 2 {
		t.Fatalf("while claimed: %v, %d mails; want errMailClaimed, 2", err, mails())
	}
	unsend("now() - interval '10 minutes'") // its run died
	if err := ts.shop.sendOrderMail(t.Context(), orderMail{OrderID: oid}); err != nil || mails() != 3 {
		t.Fatalf("an expired claim: %v, %d mails; want nil, 3", err, mails())
	}
	if n := ts.count(t, "SELECT count(*) FROM orders WHERE id = $1 AND mailed_at IS NOT NULL", oid); n != 1 {
		t.Fatal("mailed_at not recorded")
	}
}
