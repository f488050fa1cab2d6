package main

// The test harness of the shop: real PostgreSQL (a primary and a
// replica, so read-your-writes is exercised), Redis and Mailpit, started
// once per test binary when a test first needs them and stopped by
// TestMain; each test shop gets its own database and Redis database, and
// runs in-process on a random port.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"hakit.dev/hatest"
)

// maxShops is the most test shops a test binary starts (each has a Redis
// database of its own).
const maxShops = 63

// services are the servers the test binary shares.
type services struct {
	pg    *hatest.PostgresCluster
	redis *hatest.RedisCluster
	mail  *hatest.Mailpit
}

var (
	svcOnce sync.Once
	svc     *services
	svcErr  error
	dbSeq   atomic.Int32 // names databases and picks Redis databases
)

func TestMain(m *testing.M) {
	code := m.Run()
	if svc != nil {
		svc.close()
	}
	os.Exit(code)
}

// testServices starts the shared servers on first use; it skips the test
// when HAKIT_SKIP_SERVICES=1.
func testServices(t testing.TB) *services {
	t.Helper()
	if os.Getenv(hatest.EnvSkipServices) == "1" {
		t.Skipf("%s=1: not starting real services", hatest.EnvSkipServices)
	}
	svcOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		s := &services{}
		if s.pg, svcErr = hatest.StartPostgres(ctx, hatest.PostgresOptions{Replicas: 1}); svcErr != nil {
			return
		}
		svc = s // closed by TestMain from here on, whatever fails next
		// A Redis database per test shop: its own sessions and job queues.
		opts := hatest.RedisOptions{Settings: map[string]string{"databases": strconv.Itoa(maxShops + 1)}}
		if s.redis, svcErr = hatest.StartRedis(ctx, opts); svcErr != nil {
			return
		}
		s.mail, svcErr = hatest.StartMailpit(ctx, hatest.MailpitOptions{})
	})
	if svcErr != nil {
		t.Fatalf("services: %v", svcErr)
	}
	return svc
}

func (s *services) close() {
	if s.mail != nil {
		_ = s.mail.Close()
	}
	if s.redis != nil {
		_ = s.redis.Close()
	}
	_ = s.pg.Close()
}

// testShop is a shop running in-process on a random port.
type testShop struct {
	URL  string
	shop *shop
	svc  *services
	logs *syncBuffer
}

// shopOptions adjust a test shop's environment.
type shopOptions struct {
	Env map[string]string // extra variables (SHOP_*, HAKIT_*)
	// WrapWriteOrder, if set, wraps the order's write (fault injection).
	WrapWriteOrder func(write func(ctx context.Context, fn func(pgx.Tx) error) error) func(ctx context.Context, fn func(pgx.Tx) error) error
	// Listener, if set, is where the shop serves (its URL known before it
	// starts, as SHOP_BASE_URL needs); else a random port of 127.0.0.1.
	Listener net.Listener
}

// startShop starts a shop with its own database (seeded) and Redis
// database, on the shared services. It stops when the test ends; a failed
// test logs its warnings and errors.
func startShop(t testing.TB, opts shopOptions) *testShop {
	t.Helper()
	svc := testServices(t)
	ctx := context.Background()
	n := dbSeq.Add(1)
	if n > maxShops {
		t.Fatalf("more than %d test shops: raise maxShops", maxShops)
	}
	dbName := fmt.Sprintf("shop%d", n)
	if err := svc.pg.CreateDatabase(ctx, dbName); err != nil {
		t.Fatal(err)
	}
	if err := svc.pg.WaitReplicated(ctx); err != nil { // the replica has the database too
		t.Fatal(err)
	}
	env := map[string]string{
		"HAKIT_REDIS_URL":         fmt.Sprintf("redis://%s/%d", svc.redis.Addr(), n),
		"HAKIT_REDIS_NO_REPLICAS": "true",
		"SHOP_SMTP_ADDR":          svc.mail.SMTPAddr,
		"SHOP_SEED":               "true",
		"SHOP_DEV":                "true",
	}
	for i, node := range svc.pg.Nodes {
		env[fmt.Sprintf("HAKIT_DATABASE_URL_%d", i+1)] = node.DSNFor(dbName)
	}
	for k, v := range opts.Env {
		env[k] = v
	}
	hcfg, cfg, err := loadConfig(func(k string) string { return env[k] }, nil)
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	hcfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	hcfg.NoSignals = true
	hcfg.DrainDelay = -1
	hcfg.ShutdownTimeout = 5 * time.Second
	app, s, err := newShop(ctx, hcfg, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if opts.WrapWriteOrder != nil {
		s.writeOrder = opts.WrapWriteOrder(s.writeOrder)
	}
	ln := opts.Listener
	if ln == nil {
		if ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- app.Serve(runCtx, ln) }()
	ts := &testShop{URL: "http://" + ln.Addr().String(), shop: s, svc: svc, logs: logs}
	t.Cleanup(func() {
		stop()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("shop: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Error("shop did not stop within 15s")
		}
		if t.Failed() {
			t.Logf("shop log (warnings and errors):\n%s", logs.String())
		}
	})
	hatest.WaitFor(t, 60*time.Second, "shop ready", func() bool {
		select {
		case err := <-done:
			t.Fatalf("shop stopped while starting: %v\n%s", err, logs.String())
		default:
		}
		resp, err := http.Get(ts.URL + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	if err := svc.pg.WaitReplicated(ctx); err != nil { // the schema and the seed, for pages that read the replica
		t.Fatal(err)
	}
	return ts
}

// syncBuffer is a bytes.Buffer safe for concurrent writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// browser is a customer's browser: a cookie jar, redirects not followed (tests
// check them), HTML asked for.
type browser struct {
	t    testing.TB
	base string
	http *http.Client
}

func (ts *testShop) browser(t testing.TB) *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{t: t, base: ts.URL, http: &http.Client{
		Jar:           jar,
		Timeout:       60 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

// page is an answer: status, Location, body.
type page struct {
	Status   int
	Location string
	Body     string
}

func (c *browser) do(method, path string, form url.Values) (page, error) {
	return c.doWith(method, path, form, nil)
}

// doWith is do with extra request headers.
func (c *browser) doWith(method, path string, form url.Values, header http.Header) (page, error) {
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, c.base+path, body)
	if err != nil {
		return page{}, err
	}
	req.Header.Set("Accept", "text/html")
	for k, v := range header {
		req.Header[k] = v
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return page{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return page{Status: resp.StatusCode, Location: resp.Header.Get("Location"), Body: string(b)}, err
}

// get fetches path and fails the test on a transport error.
func (c *browser) get(path string) page {
	c.t.Helper()
	p, err := c.do(http.MethodGet, path, nil)
	if err != nil {
		c.t.Fatalf("GET %s: %v", path, err)
	}
	return p
}

// post posts a form and fails the test on a transport error.
func (c *browser) post(path string, form url.Values) page {
	c.t.Helper()
	p, err := c.do(http.MethodPost, path, form)
	if err != nil {
		c.t.Fatalf("POST %s: %v", path, err)
	}
	return p
}

// want fails the test unless p has status (and, for a redirect, location).
func want(t testing.TB, what string, p page, status int, location string) {
	t.Helper()
	if p.Status != status || (location != "" && p.Location != location) {
		t.Fatalf("%s: %d %q, want %d %q\n%s", what, p.Status, p.Location, status, location, excerpt(p.Body))
	}
}

// excerpt is the main part of a page, for failure messages.
func excerpt(body string) string {
	if i := strings.Index(body, "<main"); i >= 0 {
		body = body[i:]
	}
	if len(body) > 1500 {
		body = body[:1500] + "…"
	}
	return body
}

var (
	reKey     = regexp.MustCompile(`name="key" value="([0-9a-f-]{36})"`)
	reTotal   = regexp.MustCompile(`name="total" value="(\d+)"`)
	reOrderID = regexp.MustCompile(`data-order-id="(\d+)"`)
	rePage    = regexp.MustCompile(`<body data-page="([a-z_-]+)"`)
)

// dataPage is the page's data-page hook.
func dataPage(body string) string {
	if m := rePage.FindStringSubmatch(body); m != nil {
		return m[1]
	}
	return ""
}

// fillCheckout puts qty of a product in the cart and goes through address
// and payment; it returns the review form (key and total).
func (c *browser) fillCheckout(productID int64, qty int, email string) url.Values {
	c.t.Helper()
	want(c.t, "add to cart", c.post("/cart/add", url.Values{"product_id": {fmt.Sprint(productID)}, "qty": {fmt.Sprint(qty)}}), http.StatusSeeOther, "/cart")
	return c.checkoutForm(email)
}

// checkoutForm goes through address and payment with what is in the cart
// and returns the review form.
func (c *browser) checkoutForm(email string) url.Values {
	c.t.Helper()
	want(c.t, "address", c.post("/checkout/address", url.Values{
		"name": {"Ada Lovelace"}, "email": {email}, "street": {"12 St James's Square"},
		"city": {"London"}, "zip": {"SW1Y 4JH"}, "country": {"United Kingdom"},
	}), http.StatusSeeOther, "/checkout/payment")
	want(c.t, "payment", c.post("/checkout/payment", url.Values{"card": {"4242 4242 4242 4242"}}), http.StatusSeeOther, "/checkout/review")
	return c.reviewForm()
}

// reviewForm reads the review page's form.
func (c *browser) reviewForm() url.Values {
	c.t.Helper()
	p := c.get("/checkout/review")
	want(c.t, "review", p, http.StatusOK, "")
	key, total := reKey.FindStringSubmatch(p.Body), reTotal.FindStringSubmatch(p.Body)
	if key == nil || total == nil || dataPage(p.Body) != "review" {
		c.t.Fatalf("review page without its form:\n%s", excerpt(p.Body))
	}
	return url.Values{"key": {key[1]}, "total": {total[1]}}
}

// orderID reads the order ID of an order page.
func orderID(t testing.TB, p page) string {
	t.Helper()
	m := reOrderID.FindStringSubmatch(p.Body)
	if m == nil {
		t.Fatalf("no data-order-id in the page (%d):\n%s", p.Status, excerpt(p.Body))
	}
	return m[1]
}

// addProduct adds a product with stock to the shop's database and returns
// its ID.
func (ts *testShop) addProduct(t testing.TB, name string, priceCents int64, stock int) int64 {
	t.Helper()
	var id int64
	pool, err := ts.shop.db.Primary()
	if err != nil {
		t.Fatal(err)
	}
	err = pool.QueryRow(context.Background(), `INSERT INTO products (category_id, slug, name, description, price_cents, stock)
		SELECT min(id), $1, $2, 'A product made by a test.', $3, $4 FROM categories RETURNING id`,
		slugify(name), name, priceCents, stock).Scan(&id)
	if err != nil {
		t.Fatal(err)
	}
	if err := ts.svc.pg.WaitReplicated(context.Background()); err != nil { // pages read the replica
		t.Fatal(err)
	}
	return id
}

// count runs a count query on the primary.
func (ts *testShop) count(t testing.TB, sql string, args ...any) int {
	t.Helper()
	pool, err := ts.shop.db.Primary()
	if err != nil {
		t.Fatal(err)
	}
	var n int
	if err := pool.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// mailsTo returns the messages Mailpit has for an address.
func (ts *testShop) mailsTo(t testing.TB, addr string) []hatest.MailSummary {
	t.Helper()
	msgs, err := ts.svc.mail.Messages(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var mine []hatest.MailSummary
	for _, m := range msgs {
		for _, to := range m.To {
			if strings.EqualFold(to.Address, addr) {
				mine = append(mine, m)
			}
		}
	}
	return mine
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
