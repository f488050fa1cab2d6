package customer

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

const reviewPage = `<!doctype html><html><body class="x" data-page="review">
<a href="/products/7">Tea</a> <a href="/products/7">again</a> <a href="/products/12">Cup</a>
<form method="get" action="/search"><input name="q" value=""></form>
<form method="POST" action="/checkout/place">
  <input type="hidden" name="key" value="0b6f&#43;c1">
  <input type="hidden" name="csrf" value='tok'>
  <input type="checkbox" name="terms" checked>
  <input type="checkbox" name="news">
  <input type=text name=note value=hi>
  <select name="country"><option value="DE">Germany</option><option value="US" selected>USA</option></select>
  <textarea name="msg">a &amp; b</textarea>
  <button type="submit">Place order</button>
</form></body></html>`

func TestPageHooks(t *testing.T) {
	if got := pageName(reviewPage); got != "review" {
		t.Errorf("pageName = %q", got)
	}
	if got := pageName("<html><body>no hook</body></html>"); got != "" {
		t.Errorf("pageName of a page without hook = %q", got)
	}
	if got := orderID(`<main class="order" data-order-id="4711">`); got != 4711 {
		t.Errorf("orderID = %d", got)
	}
	if got := orderID(`<main data-order-id="">`); got != 0 {
		t.Errorf("orderID of an empty hook = %d", got)
	}
	if got := products(reviewPage); !slices.Equal(got, []int64{7, 12}) {
		t.Errorf("products = %v", got)
	}
	if got := categories(`<a href="/c/tea">Tea</a><a href="/c/cups?page=2">Cups</a><a href="/c/tea">x</a>`); !slices.Equal(got, []string{"tea", "cups"}) {
		t.Errorf("categories = %v", got)
	}
}

func TestFindFormAndFill(t *testing.T) {
	f, ok := findForm(reviewPage, "/checkout/place")
	if !ok {
		t.Fatal("no place form found")
	}
	want := map[string]string{"key": "0b6f+c1", "csrf": "tok", "terms": "on", "note": "hi", "country": "US", "msg": "a & b"}
	for k, v := range want {
		if f.Fields[k] != v {
			t.Errorf("field %s = %q, want %q", k, f.Fields[k], v)
		}
	}
	if _, ok := f.Fields["news"]; ok {
		t.Error("an unchecked checkbox is submitted")
	}
	if _, ok := findForm(reviewPage, "/checkout/address"); ok {
		t.Error("found a form that is not on the page")
	}
	if _, ok := findForm(reviewPage, "/search"); ok {
		t.Error("a GET form counts as a POST form")
	}

	addr := `<form method="post" action="/checkout/address"><input name="name" value=""><input name="email" value="kept@example.test"><input name="street"></form>`
	f, _ = findForm(addr, "/checkout/address")
	got := f.fill(map[string]string{"name": "N", "email": "E", "street": "S", "zip": "Z"})
	if got["name"] != "N" || got["email"] != "kept@example.test" || got["street"] != "S" || got["zip"] != "Z" {
		t.Errorf("fill = %v", got)
	}
}

func TestPercentileAndWindow(t *testing.T) {
	if percentile(nil, 99) != 0 {
		t.Error("percentile of nothing is not 0")
	}
	var ds []time.Duration
	for i := 1; i <= 100; i++ {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	if p := percentile(slices.Clone(ds), 50); p != 50*time.Millisecond {
		t.Errorf("p50 = %s", p)
	}
	if p := percentile(slices.Clone(ds), 99); p != 99*time.Millisecond {
		t.Errorf("p99 = %s", p)
	}
	if p := percentile([]time.Duration{3 * time.Millisecond}, 99); p != 3*time.Millisecond {
		t.Errorf("p99 of one = %s", p)
	}

	now := time.Unix(1000, 0)
	r := newRecorder(10*time.Second, func() time.Time { return now })
	r.request("home", time.Second, nil) // slow, and soon out of the window
	now = now.Add(11 * time.Second)
	for range 9 {
		r.request("product", 10*time.Millisecond, nil)
	}
	r.request("place", 20*time.Millisecond, &StatusError{Code: 502})
	r.event(func(s *Stats) { s.Orders++ })
	s := r.snapshot()
	if s.Requests != 11 || s.Failed != 1 || s.Window != 10 || s.P99 != 20*time.Millisecond || s.P50 != 10*time.Millisecond {
		t.Errorf("snapshot = %+v", s)
	}
	if s.Kinds["product"].OK != 9 || s.Kinds["place"].Failed != 1 || s.Errors["place: status 502"] != 1 || s.Orders != 1 {
		t.Errorf("counts = %+v", s)
	}
	before := s
	r.request("place", time.Millisecond, errors.New("dial tcp 127.0.0.1:4242: connect: connection refused"))
	d := r.snapshot().Sub(before)
	if d.Requests != 1 || d.Failed != 1 || d.Orders != 0 || len(d.Kinds) != 1 || d.Errors["place: transport: connection refused"] != 1 {
		t.Errorf("Sub = %+v", d)
	}
	if pct := d.SuccessPct(); pct != 0 {
		t.Errorf("SuccessPct = %v", pct)
	}
	if pct := (Stats{}).SuccessPct(); pct != 100 {
		t.Errorf("SuccessPct of nothing = %v", pct)
	}
	if !strings.Contains(d.String(), "1× place: transport: connection refused") {
		t.Errorf("String = %q", d.String())
	}
}

func TestConfigRefusesBadInput(t *testing.T) {
	cases := []struct {
		cfg  Config
		want string
	}{
		{Config{}, "not an http(s) URL"},
		{Config{BaseURL: "ftp://127.0.0.1"}, "not an http(s) URL"},
		{Config{BaseURL: "http://example.com"}, "not on loopback"},
		{Config{BaseURL: "http://127.0.0.1:1", Customers: -1}, "Customers -1"},
		{Config{BaseURL: "http://127.0.0.1:1", Rate: 1_000_000}, "Rate 1000000"},
		{Config{BaseURL: "http://127.0.0.1:1", Duration: -time.Second}, "Duration -1s"},
		{Config{BaseURL: "http://127.0.0.1:1", Duration: 2 * time.Hour}, "Duration 2h0m0s"},
	}
	for _, c := range cases {
		_, err := Start(context.Background(), c.cfg)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Start(%+v) = %v; want an error with %q", c.cfg, err, c.want)
		}
	}
	if _, err := Start(context.Background(), Config{BaseURL: "http://example.com", AllowRemote: true, Duration: time.Millisecond}); err != nil {
		t.Errorf("AllowRemote: %v", err)
	}
}

// fakeShop is a stand-in with the shop's page hooks and idempotent place,
// for the load's own logic (the load against the real shop is the shop's
// chaos test). failPlace makes the first place request of every key
// answer 502 after the order was made, as a connection lost after
// COMMIT does.
type fakeShop struct {
	mu      sync.Mutex
	orders  map[string]int64 // key -> order id
	next    int64
	keys    int
	failed  map[string]bool
	carts   map[string]map[string]int // cookie -> product id -> qty
	adds    int
	lose    bool // every other cart/add forgets the cart
	soldOut bool
}

func (f *fakeShop) handler() http.Handler {
	page := func(w http.ResponseWriter, status int, name, extra string) {
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(status)
		fmt.Fprintf(w, `<html><body data-page="%s">%s</body></html>`, name, extra)
	}
	cookie := func(w http.ResponseWriter, r *http.Request) string {
		if c, err := r.Cookie("s"); err == nil {
			return c.Value
		}
		f.mu.Lock()
		f.next++
		v := fmt.Sprint("c", f.next)
		f.mu.Unlock()
		http.SetCookie(w, &http.Cookie{Name: "s", Value: v, Path: "/"})
		return v
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		page(w, 200, "home", `<a href="/c/tea">Tea</a><a href="/products/1">x</a>`)
	})
	mux.HandleFunc("GET /c/tea", func(w http.ResponseWriter, r *http.Request) {
		page(w, 200, "category", `<a href="/products/1">a</a><a href="/products/2">b</a>`)
	})
	mux.HandleFunc("GET /products/{id}", func(w http.ResponseWriter, r *http.Request) { page(w, 200, "product", "") })
	mux.HandleFunc("POST /cart/add", func(w http.ResponseWriter, r *http.Request) {
		c := cookie(w, r)
		qty, _ := strconv.Atoi(r.FormValue("qty"))
		f.mu.Lock()
		f.adds++
		if f.carts[c] == nil || (f.lose && f.adds%2 == 0) {
			f.carts[c] = map[string]int{}
		}
		f.carts[c][r.FormValue("product_id")] += qty
		f.mu.Unlock()
		http.Redirect(w, r, "/cart", http.StatusSeeOther)
	})
	mux.HandleFunc("GET /cart", func(w http.ResponseWriter, r *http.Request) {
		c := cookie(w, r)
		f.mu.Lock()
		var b strings.Builder
		n := 0
		for id, q := range f.carts[c] {
			n += q
			fmt.Fprintf(&b, `<form class="qty-form" action="/cart/update" method="post"><input type="hidden" name="product_id" value="%s"><input type="number" name="qty" value="%d"></form>`, id, q)
			fmt.Fprintf(&b, `<form action="/cart/update" method="post"><input type="hidden" name="product_id" value="%s"><input type="hidden" name="qty" value="0"></form>`, id)
		}
		f.mu.Unlock()
		page(w, 200, "cart", fmt.Sprintf(`<span data-cart-count="%d"></span>%s`, n, b.String()))
	})
	mux.HandleFunc("GET /checkout", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/checkout/address", http.StatusSeeOther)
	})
	mux.HandleFunc("GET /checkout/address", func(w http.ResponseWriter, r *http.Request) {
		page(w, 200, "address", `<form method="post" action="/checkout/address"><input name="name"><input name="email"></form>`)
	})
	mux.HandleFunc("POST /checkout/address", func(w http.ResponseWriter, r *http.Request) {
		if r.FormValue("name") == "" || r.FormValue("zip") == "" {
			page(w, 422, "address", "")
			return
		}
		http.Redirect(w, r, "/checkout/payment", http.StatusSeeOther)
	})
	mux.HandleFunc("GET /checkout/payment", func(w http.ResponseWriter, r *http.Request) { page(w, 200, "payment", "") })
	mux.HandleFunc("POST /checkout/payment", func(w http.ResponseWriter, r *http.Request) {
		if len(r.FormValue("card")) != 16 {
			page(w, 422, "payment", "")
			return
		}
		http.Redirect(w, r, "/checkout/review", http.StatusSeeOther)
	})
	mux.HandleFunc("GET /checkout/review", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.keys++
		key := fmt.Sprint("k", f.keys)
		f.mu.Unlock()
		page(w, 200, "review", `<form method="post" action="/checkout/place"><input type="hidden" name="key" value="`+key+`"></form>`)
	})
	mux.HandleFunc("POST /checkout/place", func(w http.ResponseWriter, r *http.Request) {
		key := r.FormValue("key")
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.soldOut {
			page(w, 409, "soldout", "")
			return
		}
		id, ok := f.orders[key]
		if !ok {
			f.next++
			id = f.next
			f.orders[key] = id
		}
		if !f.failed[key] {
			f.failed[key] = true
			http.Error(w, "bad gateway", http.StatusBadGateway)
			return
		}
		if c, err := r.Cookie("s"); err == nil {
			delete(f.carts, c.Value)
		}
		http.Redirect(w, r, fmt.Sprint("/orders/", id), http.StatusSeeOther)
	})
	mux.HandleFunc("GET /orders/{id}", func(w http.ResponseWriter, r *http.Request) {
		page(w, 200, "order", `<main data-order-id="`+r.PathValue("id")+`"></main>`)
	})
	return mux
}

func TestLoadRetriesPlaceWithTheSameKey(t *testing.T) {
	fs := &fakeShop{orders: map[string]int64{}, failed: map[string]bool{}, carts: map[string]map[string]int{}}
	srv := httptest.NewServer(fs.handler())
	defer srv.Close()
	l, err := Start(context.Background(), Config{BaseURL: srv.URL, Customers: 4, Rate: 400, MaxRequests: 400, Duration: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-l.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("the load did not stop by itself after MaxRequests")
	}
	st := l.Stop()
	orders := l.Orders()
	if len(orders) == 0 || st.Orders != len(orders) {
		t.Fatalf("%d orders acknowledged, stats say %d: %s", len(orders), st.Orders, st)
	}
	fs.mu.Lock()
	defer fs.mu.Unlock()
	for _, o := range orders {
		if fs.orders[o.Key] != o.ID {
			t.Errorf("order %d with key %s: the shop has %d for that key", o.ID, o.Key, fs.orders[o.Key])
		}
		if o.Attempts != 2 {
			t.Errorf("order %d placed in %d attempts; want 2 (the first answered 502)", o.ID, o.Attempts)
		}
		if len(o.Lines) == 0 {
			t.Errorf("order %d has no lines", o.ID)
		}
	}
	if st.Retries < len(orders) || st.Errors["place: status 502"] < len(orders) {
		t.Errorf("retries/502s not counted: %s", st)
	}
	sub := l.Submitted()
	for _, o := range orders {
		if sub[o.Key] != 2 {
			t.Errorf("key %s submitted %d times; want 2", o.Key, sub[o.Key])
		}
	}
	if st.Requests > 400+len(sub) || st.Kinds["home"].OK == 0 || st.Kinds["cart_add"].OK == 0 {
		t.Errorf("requests not bounded or kinds missing: %s %+v", st, st.Kinds)
	}
	if st.CartLost != 0 {
		t.Errorf("carts lost on a shop that keeps them: %s", st)
	}
}

func TestLoadStopsAtDurationAndCountsSoldOut(t *testing.T) {
	fs := &fakeShop{orders: map[string]int64{}, failed: map[string]bool{}, carts: map[string]map[string]int{}, soldOut: true}
	srv := httptest.NewServer(fs.handler())
	defer srv.Close()
	t0 := time.Now()
	l, err := Start(context.Background(), Config{BaseURL: srv.URL, Customers: 2, Rate: 200, Duration: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	<-l.Done()
	if took := time.Since(t0); took > 15*time.Second {
		t.Errorf("a 500ms load took %s", took)
	}
	st := l.Stats()
	if st.SoldOut == 0 || st.Orders != 0 || len(l.Orders()) != 0 || st.Failed != 0 {
		t.Errorf("sold-out shop: %s", st)
	}
}

func TestCartLines(t *testing.T) {
	page := `<body data-page="cart"><span class="badge" data-cart-count="5">5</span>
<form class="qty-form" action="/cart/update" method="post"><input type="hidden" name="product_id" value="3"><input type="number" name="qty" value="2" min="0"></form>
<form class="remove-form" action="/cart/update" method="post"><input type="hidden" name="product_id" value="3"><input type="hidden" name="qty" value="0"></form>
<form class="qty-form" action="/cart/update" method="post"><input type="hidden" name="product_id" value="9"><input type="number" name="qty" value="3"></form>
<form action="/cart/update" method="post"><input type="hidden" name="product_id" value="x"><input name="qty" value="1"></form></body>`
	got := cartLines(page)
	if len(got) != 2 || got[3] != 2 || got[9] != 3 {
		t.Errorf("cartLines = %v", got)
	}
	if n := cartCount(page); n != 5 {
		t.Errorf("cartCount = %d", n)
	}
	if n := cartCount("<body>"); n != -1 {
		t.Errorf("cartCount without the hook = %d", n)
	}
}

func TestLoadCountsLostCarts(t *testing.T) {
	fs := &fakeShop{orders: map[string]int64{}, failed: map[string]bool{}, carts: map[string]map[string]int{}, lose: true}
	srv := httptest.NewServer(fs.handler())
	defer srv.Close()
	l, err := Start(context.Background(), Config{BaseURL: srv.URL, Customers: 4, Rate: 400, MaxRequests: 400, Duration: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	<-l.Done()
	st := l.Stats()
	if st.CartLost == 0 {
		t.Errorf("a shop that forgets carts: no lost cart counted: %s", st)
	}
	for _, o := range l.Orders() {
		if len(o.Lines) == 0 {
			t.Errorf("order %d without lines", o.ID)
		}
	}
}
