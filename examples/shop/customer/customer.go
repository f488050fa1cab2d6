// Package customer runs a bounded load of scripted customers against the
// shop: each browses the home page, a category and a product, adds to its
// cart, goes through checkout (address, payment, review) and places the
// order with the key the review page gave it, then follows to its order
// page. Every customer has its own cookie jar, so its own session and
// cart.
//
// The load keeps what a shop must not lose: every order acknowledged to a
// customer (its id, idempotency key and the lines the customer believed
// its cart held) and every key a customer submitted. A customer whose
// place request fails retries it with the same key, as a browser reload
// does, so a checkout that is not idempotent shows up as a duplicate
// order. The chaos test and the benchmark compare these records with the
// database and the mail sink.
//
// A load is bounded in customers, requests, rate and time, and stops by
// itself:
//
//	l, err := customer.Start(ctx, customer.Config{BaseURL: url, Customers: 8, Duration: time.Minute})
//	…
//	stats := l.Stop()
//	orders := l.Orders()
package customer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Config bounds and shapes a load. The zero value, with BaseURL set, is
// usable.
type Config struct {
	// BaseURL is the shop, e.g. HAProxy's http://127.0.0.1:port. It must
	// be a loopback address unless AllowRemote is set.
	BaseURL string
	// AllowRemote permits a BaseURL that is not on loopback.
	AllowRemote bool
	// Customers is how many customers shop at once. Defaults to 8; at
	// most 200.
	Customers int
	// Duration bounds the load's run time. Defaults to 1 minute; at most
	// 1 hour.
	Duration time.Duration
	// MaxRequests bounds the requests of the whole load. Defaults to
	// 200,000.
	MaxRequests int
	// Rate bounds the requests per second of the whole load. Defaults to
	// 50; at most 2,000.
	Rate int
	// Window is the span the latency percentiles cover. Defaults to 10s.
	Window time.Duration
	// RequestTimeout bounds each request. Defaults to 30s, hakit's own
	// request deadline (HAKIT_REQUEST_TIMEOUT): a shopper's browser waits
	// at least that long, so an answer that comes later is slow, not lost.
	RequestTimeout time.Duration
	// PlaceAttempts is how often a customer sends its place request (the
	// same key each time) before it gives up. Defaults to 8.
	PlaceAttempts int
	// MaxQty is the largest quantity of one product a customer adds.
	// Defaults to 2.
	MaxQty int
	// Logger receives the failures at debug level. Defaults to discarding.
	Logger *slog.Logger
	// Client makes the requests; each customer gets a copy with its own
	// cookie jar. Defaults to one with keep-alive connections.
	Client *http.Client
}

func (c *Config) defaults() error {
	var errs []error
	u, err := url.Parse(c.BaseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		errs = append(errs, fmt.Errorf("BaseURL %q is not an http(s) URL", c.BaseURL))
	} else if !c.AllowRemote && !isLoopback(u.Hostname()) {
		errs = append(errs, fmt.Errorf("BaseURL %q is not on loopback (set AllowRemote to load another host)", c.BaseURL))
	}
	c.BaseURL = strings.TrimSuffix(c.BaseURL, "/")
	def := func(p *int, v, most int, name string) {
		if *p == 0 {
			*p = v
		}
		if *p < 0 || *p > most {
			errs = append(errs, fmt.Errorf("%s %d: want 1 to %d", name, *p, most))
		}
	}
	def(&c.Customers, 8, 200, "Customers")
	def(&c.MaxRequests, 200_000, 10_000_000, "MaxRequests")
	def(&c.Rate, 50, 2000, "Rate")
	def(&c.PlaceAttempts, 8, 100, "PlaceAttempts")
	def(&c.MaxQty, 2, 100, "MaxQty")
	defDur := func(p *time.Duration, v, most time.Duration, name string) {
		if *p == 0 {
			*p = v
		}
		if *p < 0 || *p > most {
			errs = append(errs, fmt.Errorf("%s %s: want more than 0 and at most %s", name, *p, most))
		}
	}
	defDur(&c.Duration, time.Minute, time.Hour, "Duration")
	defDur(&c.Window, 10*time.Second, time.Hour, "Window")
	defDur(&c.RequestTimeout, 30*time.Second, 5*time.Minute, "RequestTimeout")
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Client == nil {
		c.Client = &http.Client{Transport: &http.Transport{
			Proxy:               nil,
			MaxIdleConnsPerHost: 256,
			IdleConnTimeout:     30 * time.Second,
		}}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("customer: %w", err)
	}
	return nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Line is one product in a cart or an order.
type Line struct {
	ProductID int64
	Qty       int
}

// Order is an order the shop acknowledged to a customer: its order page
// showed it.
type Order struct {
	ID       int64
	Key      string // the idempotency key the customer placed it with
	Lines    []Line // what the customer believed its cart held, by product id
	Customer int
	At       time.Time
	Attempts int // place requests sent with this key (1: no retry)
}

// Cart is a cart a customer believes it holds: every cart/add it saw
// succeed since its last order.
type Cart struct {
	Customer int
	Lines    []Line
	At       time.Time
}

// Load is a running load. Its methods are safe for concurrent use.
type Load struct {
	cfg    Config
	rec    *recorder
	tokens chan struct{}
	cancel context.CancelFunc
	done   chan struct{}

	mu        sync.Mutex
	orders    []Order
	submitted map[string]int // key -> place requests sent with it
	carts     map[int]Cart   // customer -> the cart it holds
}

// Start validates cfg and starts the customers. The load stops by itself
// when Duration has passed or MaxRequests were sent, when ctx ends, or
// when Stop is called.
func Start(ctx context.Context, cfg Config) (*Load, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Duration)
	l := &Load{
		cfg: cfg, rec: newRecorder(cfg.Window, time.Now),
		tokens: make(chan struct{}), cancel: cancel, done: make(chan struct{}),
		submitted: map[string]int{}, carts: map[int]Cart{},
	}
	var wg sync.WaitGroup
	wg.Go(func() { l.pace(ctx) })
	for i := range cfg.Customers {
		wg.Go(func() { l.shopper(ctx, i) })
	}
	go func() {
		wg.Wait()
		cancel()
		close(l.done)
	}()
	return l, nil
}

// pace hands out Rate tokens a second until ctx ends or MaxRequests
// tokens went out.
func (l *Load) pace(ctx context.Context) {
	t := time.NewTicker(time.Second / time.Duration(l.cfg.Rate))
	defer t.Stop()
	// One token is on offer from a tick until a customer takes it; an
	// untaken one does not pile up, so the rate is never exceeded.
	offered := false
	for n := 0; n < l.cfg.MaxRequests; {
		if !offered {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				offered = true
			}
		}
		select {
		case <-ctx.Done():
			return
		case l.tokens <- struct{}{}:
			n++
			offered = false
		case <-t.C:
		}
	}
	l.cancel() // MaxRequests reached
}

// Stop ends the load, waits for every customer to finish its request, and
// returns the final counters.
func (l *Load) Stop() Stats {
	l.cancel()
	<-l.done
	return l.Stats()
}

// Done is closed when the load has stopped.
func (l *Load) Done() <-chan struct{} { return l.done }

// Stats returns the counters so far.
func (l *Load) Stats() Stats { return l.rec.snapshot() }

// Orders returns the orders acknowledged so far, in the order they were.
func (l *Load) Orders() []Order {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.orders)
}

// Submitted returns every idempotency key a customer sent a place request
// with, acknowledged or not, and how many requests it sent with each.
// The shop may hold at most one order per key.
func (l *Load) Submitted() map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]int, len(l.submitted))
	for k, v := range l.submitted {
		out[k] = v
	}
	return out
}

// Carts returns the carts the customers believe they hold now.
func (l *Load) Carts() []Cart {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]Cart, 0, len(l.carts))
	for _, c := range l.carts {
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b Cart) int { return a.Customer - b.Customer })
	return out
}

// shopper is one customer: it shops again and again until ctx ends. A
// customer that saw its cart change fail starts over with a fresh session
// (a shopper who gives up on a broken page), so what it believes its cart
// holds is always what it saw succeed.
func (l *Load) shopper(ctx context.Context, n int) {
	rng := rand.New(rand.NewPCG(uint64(n)+1, uint64(time.Now().UnixNano())))
	for ctx.Err() == nil {
		c := l.newSession(n, rng)
		c.visit(ctx)
		l.mu.Lock()
		delete(l.carts, n)
		l.mu.Unlock()
	}
}

// session is one customer's visit with its cookie jar.
type session struct {
	l      *Load
	n      int
	rng    *rand.Rand
	client *http.Client
	cart   map[int64]int
}

func (l *Load) newSession(n int, rng *rand.Rand) *session {
	jar, _ := cookiejar.New(nil)
	client := *l.cfg.Client
	client.Jar = jar
	client.Timeout = l.cfg.RequestTimeout
	return &session{l: l, n: n, rng: rng, client: &client, cart: map[int64]int{}}
}

// errStopped ends a visit when the load stops; it is not a failure.
var errStopped = errors.New("customer: load stopped")

// visit runs visits until a step fails in a way the customer cannot
// recover from in the same session, or ctx ends.
func (s *session) visit(ctx context.Context) {
	for ctx.Err() == nil {
		if err := s.once(ctx); err != nil {
			if !errors.Is(err, errStopped) {
				s.l.cfg.Logger.Debug("customer starts over", "customer", s.n, "err", err)
			}
			return
		}
	}
}

// once is one shopping trip: browse, add to cart, check out, place, see
// the order.
func (s *session) once(ctx context.Context) error {
	home, err := s.get(ctx, "home", "/", "home")
	if err != nil {
		return err
	}
	cats := categories(home)
	ids := products(home)
	if len(cats) > 0 {
		page, err := s.get(ctx, "category", "/c/"+cats[s.rng.IntN(len(cats))], "category")
		if err != nil {
			return err
		}
		if p := products(page); len(p) > 0 {
			ids = p
		}
	}
	if len(ids) == 0 {
		return s.fail("home", errors.New("no product linked from the home or category page"))
	}
	for range 1 + s.rng.IntN(2) {
		id := ids[s.rng.IntN(len(ids))]
		if _, err := s.get(ctx, "product", "/products/"+strconv.FormatInt(id, 10), "product"); err != nil {
			return err
		}
		qty := 1 + s.rng.IntN(s.l.cfg.MaxQty)
		page, err := s.post(ctx, "cart_add", "/cart/add", url.Values{"product_id": {strconv.FormatInt(id, 10)}, "qty": {strconv.Itoa(qty)}}, "cart")
		if err != nil {
			return err // the cart is uncertain: start over
		}
		// The shop may hold fewer of the product than asked for (its
		// stock), or none (sold out); every other line must be as it was.
		got := cartLines(page)
		for pid, q := range s.cart {
			if pid != id && got[pid] != q {
				return s.cartLost(got)
			}
		}
		if got[id] > s.cart[id]+qty {
			return s.cartLost(got)
		}
		if got[id] < s.cart[id]+qty {
			s.l.rec.event(func(st *Stats) { st.Clamped++ })
		}
		s.cart = got
		s.l.believe(s.n, s.cart)
	}
	if len(s.cart) == 0 {
		return nil // all sold out: shop again
	}

	body, err := s.retry(ctx, "checkout", func() (string, error) {
		return s.get(ctx, "checkout", "/checkout", "address", "payment", "review", "cart")
	})
	if err != nil {
		return err
	}
	if pageName(body) == "cart" {
		return s.backToCart(body)
	}
	if pageName(body) == "address" {
		f, _ := findForm(body, "/checkout/address")
		fields := f.fill(map[string]string{"name": "Scripted Customer", "email": fmt.Sprintf("customer%d@example.test", s.n),
			"street": "1 Load Street", "city": "Testville", "zip": "12345", "country": "US"})
		if body, err = s.retry(ctx, "address", func() (string, error) {
			return s.post(ctx, "address", "/checkout/address", toValues(fields), "payment", "review", "cart")
		}); err != nil {
			return err
		}
		if pageName(body) == "cart" {
			return s.backToCart(body)
		}
	}
	if pageName(body) == "payment" {
		f, _ := findForm(body, "/checkout/payment")
		fields := f.fill(map[string]string{"card": "4242424242424242", "name": "Scripted Customer", "expiry": "12/30", "exp": "12/30", "cvc": "123"})
		if body, err = s.retry(ctx, "payment", func() (string, error) {
			return s.post(ctx, "payment", "/checkout/payment", toValues(fields), "review", "cart")
		}); err != nil {
			return err
		}
		if pageName(body) == "cart" {
			return s.backToCart(body)
		}
	}
	review, err := s.retry(ctx, "review", func() (string, error) { return s.get(ctx, "review", "/checkout/review", "review", "cart") })
	if err != nil {
		return err
	}
	if pageName(review) != "review" {
		return s.backToCart(review)
	}
	f, ok := findForm(review, "/checkout/place")
	if !ok || f.Fields["key"] == "" {
		return s.fail("review", errors.New("no place form with a key on the review page"))
	}
	return s.place(ctx, f)
}

// place sends the place form, again with the same key after an error (a
// browser reload), until the shop answers with the order page or a
// sold-out page, or PlaceAttempts were sent.
func (s *session) place(ctx context.Context, f form) error {
	key := f.Fields["key"]
	values := toValues(f.Fields)
	backoff := 100 * time.Millisecond
	var last error
	for attempt := 1; attempt <= s.l.cfg.PlaceAttempts; attempt++ {
		if attempt > 1 {
			s.l.rec.event(func(st *Stats) { st.Retries++ })
			if err := sleep(ctx, backoff); err != nil {
				return errStopped
			}
			backoff = min(2*backoff, 2*time.Second)
		}
		s.l.mu.Lock()
		s.l.submitted[key]++
		s.l.mu.Unlock()
		body, err := s.post(ctx, "place", "/checkout/place", values, "order", "soldout")
		if errors.Is(err, errStopped) {
			return err
		}
		if err != nil {
			last = err
			var se *StatusError
			if errors.As(err, &se) && se.Code < 500 && se.Code != http.StatusConflict && se.Code != http.StatusTooManyRequests {
				return err // a 4xx other than a retry-later: the shop refused it
			}
			continue
		}
		if pageName(body) == "soldout" {
			s.l.rec.event(func(st *Stats) { st.SoldOut++ })
			s.reset()
			return nil
		}
		id := orderID(body)
		if id == 0 {
			return s.fail("order", errors.New("order page without data-order-id"))
		}
		s.l.acknowledge(Order{ID: id, Key: key, Lines: lines(s.cart), Customer: s.n, At: time.Now(), Attempts: attempt})
		s.reset()
		return nil
	}
	return fmt.Errorf("place: gave up after %d attempts: %w", s.l.cfg.PlaceAttempts, last)
}

// backToCart handles the shop sending the customer back to its cart
// during checkout: right when a product no longer has the stock the cart
// asks for (the page still shows the lines), a lost cart otherwise.
func (s *session) backToCart(page string) error {
	got := cartLines(page)
	if len(got) > 0 && len(got) == len(s.cart) {
		s.l.rec.event(func(st *Stats) { st.StockShort++ })
		return errors.New("not enough stock for the cart: start over")
	}
	return s.cartLost(got)
}

// cartLost records that the cart the customer held, after every change it
// made succeeded, is gone or changed.
func (s *session) cartLost(got map[int64]int) error {
	s.l.rec.event(func(st *Stats) { st.CartLost++ })
	s.l.cfg.Logger.Warn("cart lost", "customer", s.n, "believed", lines(s.cart), "shop", lines(got))
	return errors.New("cart lost")
}

func (s *session) reset() {
	s.cart = map[int64]int{}
	s.l.believe(s.n, s.cart)
}

// retry runs a step that changes no cart up to 3 times (a reload).
func (s *session) retry(ctx context.Context, kind string, step func() (string, error)) (string, error) {
	var last error
	for attempt := range 3 {
		if attempt > 0 {
			if err := sleep(ctx, time.Duration(attempt)*200*time.Millisecond); err != nil {
				return "", errStopped
			}
		}
		body, err := step()
		if err == nil || errors.Is(err, errStopped) {
			return body, err
		}
		last = err
	}
	return "", fmt.Errorf("%s: %w", kind, last)
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// StatusError is an answer with an unexpected status code.
type StatusError struct {
	Code int
	Page string // the body's data-page, if any
}

func (e *StatusError) Error() string {
	if e.Page != "" {
		return fmt.Sprintf("status %d (page %s)", e.Code, e.Page)
	}
	return fmt.Sprintf("status %d", e.Code)
}

// PageError is a 200 answer with another page than the step expects.
type PageError struct {
	Got  string
	Want []string
}

func (e *PageError) Error() string {
	return fmt.Sprintf("page %q, want %s", e.Got, strings.Join(e.Want, " or "))
}

func (s *session) get(ctx context.Context, kind, path string, want ...string) (string, error) {
	return s.do(ctx, kind, http.MethodGet, path, nil, want)
}

func (s *session) post(ctx context.Context, kind, path string, form url.Values, want ...string) (string, error) {
	return s.do(ctx, kind, http.MethodPost, path, form, want)
}

// do waits for a token, sends one request (following redirects), and
// records it. A 409 sold-out page is an answer, not a failure.
func (s *session) do(ctx context.Context, kind, method, path string, form url.Values, want []string) (string, error) {
	if !s.l.take(ctx) {
		return "", errStopped
	}
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequestWithContext(context.WithoutCancel(ctx), method, s.l.cfg.BaseURL+path, body)
	if err != nil {
		return "", err
	}
	req.Header.Set("Accept", "text/html")
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	t0 := time.Now()
	resp, err := s.client.Do(req)
	var page string
	if err == nil {
		var b []byte
		b, err = io.ReadAll(io.LimitReader(resp.Body, 4<<20))
		resp.Body.Close()
		page = string(b)
		name := pageName(page)
		switch {
		case err != nil:
		case resp.StatusCode == http.StatusConflict && name == "soldout" && slices.Contains(want, "soldout"):
		case resp.StatusCode != http.StatusOK:
			err = &StatusError{Code: resp.StatusCode, Page: name}
		case !slices.Contains(want, name):
			err = &PageError{Got: name, Want: want}
		}
	}
	s.l.rec.request(kind, time.Since(t0), err)
	if err != nil {
		s.l.cfg.Logger.Debug("request failed", "customer", s.n, "kind", kind, "path", path, "err", err)
		return "", err
	}
	return page, nil
}

// fail records a failure that is not a request's.
func (s *session) fail(kind string, err error) error {
	s.l.rec.event(func(st *Stats) {
		st.Failed++
		st.Requests++
		st.Errors[kind+": "+errorKind(err)]++
	})
	return err
}

// take waits for a request token; false when the load is over.
func (l *Load) take(ctx context.Context) bool {
	select {
	case <-l.tokens:
		return true
	case <-ctx.Done():
		return false
	}
}

func (l *Load) believe(n int, cart map[int64]int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(cart) == 0 {
		delete(l.carts, n)
		return
	}
	l.carts[n] = Cart{Customer: n, Lines: lines(cart), At: time.Now()}
}

func (l *Load) acknowledge(o Order) {
	l.mu.Lock()
	l.orders = append(l.orders, o)
	l.mu.Unlock()
	l.rec.event(func(st *Stats) { st.Orders++ })
}

// lines returns a cart's lines ordered by product id.
func lines(cart map[int64]int) []Line {
	out := make([]Line, 0, len(cart))
	for id, q := range cart {
		out = append(out, Line{ProductID: id, Qty: q})
	}
	slices.SortFunc(out, func(a, b Line) int { return int(a.ProductID - b.ProductID) })
	return out
}

func toValues(fields map[string]string) url.Values {
	v := url.Values{}
	for k, x := range fields {
		v.Set(k, x)
	}
	return v
}

var portRe = regexp.MustCompile(`127\.0\.0\.1:\d+`)

// errorKind names a failure without what differs between equal ones
// (ports, addresses).
func errorKind(err error) string {
	var se *StatusError
	var pe *PageError
	switch {
	case errors.As(err, &se), errors.As(err, &pe):
		return err.Error()
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "timeout"
	}
	msg := err.Error()
	if i := strings.LastIndex(msg, ": "); i >= 0 && strings.Contains(msg, "127.0.0.1:") {
		msg = msg[i+2:]
	}
	return "transport: " + portRe.ReplaceAllString(msg, "127.0.0.1")
}
