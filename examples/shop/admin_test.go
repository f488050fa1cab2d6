package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"image/jpeg"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/alexedwards/argon2id"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/chromedp/chromedp"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"hakit.dev/hatest"
	"hakit.dev/jobs"
	"hakit.dev/uploads"
)

const (
	adminEmail    = "owner@example.test"
	adminPassword = "correct horse battery"
)

// adminShop is a test shop (startShop) with S3 (its own MinIO) and an
// admin account, for the admin and image tests.
type adminShop struct {
	t     *testing.T
	url   string
	shop  *shop
	minio *hatest.MinIO
	jobs  *jobs.Client  // on the shop's Redis database
	db    *pgxpool.Pool // the primary
	pg    *hatest.PostgresCluster
}

// startAdminShop starts MinIO and a shop on it; both stop when the test
// ends.
func startAdminShop(t *testing.T) *adminShop {
	t.Helper()
	svc := testServices(t)
	m := hatest.NewMinIO(t, hatest.MinIOOptions{Bucket: "shop"})
	n := dbSeq.Add(1) // a Redis database of its own, to read its archived tasks
	ts := startShop(t, shopOptions{Env: map[string]string{
		"HAKIT_REDIS_URL":            fmt.Sprintf("redis://%s/%d", svc.redis.Addr(), n),
		"HAKIT_S3_ENDPOINT":          m.Endpoint,
		"HAKIT_S3_REGION":            m.Region,
		"HAKIT_S3_BUCKET":            m.Bucket,
		"HAKIT_S3_ACCESS_KEY_ID":     m.AccessKey,
		"HAKIT_S3_SECRET_ACCESS_KEY": m.SecretKey,
		"HAKIT_S3_PATH_STYLE":        "true",
		"SHOP_ADMIN_EMAIL":           adminEmail,
		"SHOP_ADMIN_PASSWORD":        adminPassword,
		"SHOP_SEED":                  "false", // the seed test calls seedImages itself
	}})
	rdb := redis.NewClient(&redis.Options{Addr: svc.redis.Addr(), DB: int(n)})
	client := jobs.NewClient(rdb, jobs.ClientConfig{NoReplicas: true})
	t.Cleanup(func() {
		_ = client.Close()
		_ = rdb.Close()
	})
	pool, err := ts.shop.db.Primary()
	if err != nil {
		t.Fatal(err)
	}
	return &adminShop{t: t, url: ts.URL, shop: ts.shop, minio: m, jobs: client, db: pool, pg: svc.pg}
}

// sub returns a for a subtest: its failures are the subtest's.
func (a *adminShop) sub(t *testing.T) *adminShop {
	c := *a
	c.t = t
	return &c
}

// client returns a browser-like client (cookies, no redirects followed).
func (a *adminShop) client() *http.Client {
	jar, _ := cookiejar.New(nil)
	return &http.Client{
		Jar:           jar,
		Timeout:       30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// login signs c in and fails the test if that does not work.
func (a *adminShop) login(c *http.Client, email, password string) {
	a.t.Helper()
	resp := a.post(c, "/login", url.Values{"email": {email}, "password": {password}, "next": {"/"}})
	if resp.status != http.StatusSeeOther {
		a.t.Fatalf("login as %s: %d\n%s", email, resp.status, resp.body)
	}
}

type response struct {
	status int
	header http.Header
	body   string
}

func (a *adminShop) do(c *http.Client, req *http.Request) response {
	a.t.Helper()
	req.Header.Set("Accept", "text/html")
	resp, err := c.Do(req)
	if err != nil {
		a.t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		a.t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	return response{resp.StatusCode, resp.Header, string(b)}
}

func (a *adminShop) get(c *http.Client, path string) response {
	a.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, a.url+path, nil)
	return a.do(c, req)
}

func (a *adminShop) post(c *http.Client, path string, form url.Values) response {
	a.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, a.url+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return a.do(c, req)
}

// upload posts data as the "image" field of a multipart form.
func (a *adminShop) upload(c *http.Client, productID int64, name string, data []byte) response {
	a.t.Helper()
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	fw, _ := mw.CreateFormFile("image", name)
	_, _ = fw.Write(data)
	_ = mw.Close()
	req, _ := http.NewRequest(http.MethodPost, fmt.Sprintf("%s/admin/products/%d/image", a.url, productID), &body)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	return a.do(c, req)
}

// count runs a count(*) query.
func (a *adminShop) count(sql string, args ...any) int {
	a.t.Helper()
	var n int
	if err := a.db.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		a.t.Fatal(err)
	}
	return n
}

// objects counts the objects in the bucket.
func (a *adminShop) objects() int {
	a.t.Helper()
	out, err := a.minio.S3Client().ListObjectsV2(context.Background(), &s3.ListObjectsV2Input{Bucket: aws.String(a.minio.Bucket)})
	if err != nil {
		a.t.Fatal(err)
	}
	return len(out.Contents)
}

// replicated waits until the replica has what the test wrote on the
// primary (a browser's own writes are read back through its session's
// position; the test's SQL has none).
func (a *adminShop) replicated() {
	a.t.Helper()
	if err := a.pg.WaitReplicated(context.Background()); err != nil {
		a.t.Fatal(err)
	}
}

// product makes a product (through SQL: the form has its own test).
func (a *adminShop) product(slug string, stock int) int64 {
	a.t.Helper()
	ctx := context.Background()
	var id int64
	err := a.db.QueryRow(ctx, `WITH c AS (INSERT INTO categories (slug, name) VALUES ('test', 'Test')
			ON CONFLICT (slug) DO UPDATE SET name = EXCLUDED.name RETURNING id)
		INSERT INTO products (category_id, slug, name, price_cents, stock) SELECT id, $1, $1, 1000, $2 FROM c RETURNING id`,
		slug, stock).Scan(&id)
	if err != nil {
		a.t.Fatal(err)
	}
	a.replicated()
	return id
}

// waitImage waits for the product's image to leave 'pending', and returns
// its status and reason.
func (a *adminShop) waitImage(productID int64) (imageID int64, status, reason string) {
	a.t.Helper()
	hatest.WaitFor(a.t, 60*time.Second, "the thumbnail job", func() bool {
		var r *string
		err := a.db.QueryRow(context.Background(), `SELECT i.id, i.status, i.reason FROM products p
			JOIN images i ON i.id = p.image_id WHERE p.id = $1`, productID).Scan(&imageID, &status, &r)
		if r != nil {
			reason = *r
		}
		return err == nil && status != "pending"
	})
	return imageID, status, reason
}

// TestAdmin runs the admin area and the product images on one set of
// services: access, the product form, stock, uploads (good, bomb,
// non-image, oversized), thumbnails served, orders, the seed's pictures,
// and last, S3 down.
func TestAdmin(t *testing.T) {
	a := startAdminShop(t)
	admin := a.client()
	a.login(admin, adminEmail, adminPassword)
	ctx := context.Background()

	t.Run("access", func(t *testing.T) {
		a := a.sub(t)
		anon := a.client()
		resp := a.get(anon, "/admin/orders")
		if resp.status != http.StatusSeeOther || resp.header.Get("Location") != "/login?next=%2Fadmin%2Forders" {
			t.Errorf("anonymous: %d to %q, want 303 to the login page and back", resp.status, resp.header.Get("Location"))
		}
		hash, err := argon2id.CreateHash("customer password", hashParams())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := a.db.Exec(ctx, "INSERT INTO users (email, name, password_hash) VALUES ('jo@example.test', 'Jo', $1)", hash); err != nil {
			t.Fatal(err)
		}
		a.replicated()
		customer := a.client()
		a.login(customer, "jo@example.test", "customer password")
		id := a.product("forbidden-fruit", 3)
		images, objects := a.count("SELECT count(*) FROM images"), a.objects()
		for _, resp := range []response{
			a.get(customer, "/admin"),
			a.get(customer, fmt.Sprintf("/admin/products/%d", id)),
			a.post(customer, fmt.Sprintf("/admin/products/%d/stock", id), url.Values{"delta": {"100"}}),
			a.upload(customer, id, "x.png", encodePNG(t, testPicture(20, 20))),
			a.get(customer, "/admin/orders"),
		} {
			if resp.status != http.StatusForbidden || !strings.Contains(resp.body, "for the shop&#39;s staff") {
				t.Errorf("customer: %d, want 403 with the page saying why\n%.300s", resp.status, resp.body)
			}
		}
		if n := a.count("SELECT stock FROM products WHERE id = $1", id); n != 3 {
			t.Errorf("stock %d after a customer's adjustment, want 3", n)
		}
		if a.count("SELECT count(*) FROM images") != images || a.objects() != objects {
			t.Error("a customer's upload was stored")
		}
		if resp := a.get(admin, "/admin"); resp.status != http.StatusOK || !strings.Contains(resp.body, `data-page="admin"`) ||
			!strings.Contains(resp.body, "forbidden-fruit") {
			t.Errorf("admin: %d\n%.500s", resp.status, resp.body)
		}
	})

	t.Run("product form", func(t *testing.T) {
		a := a.sub(t)
		var cat int64
		if err := a.db.QueryRow(ctx, "INSERT INTO categories (slug, name) VALUES ('kitchen', 'Kitchen') RETURNING id").Scan(&cat); err != nil {
			t.Fatal(err)
		}
		form := func(name, price, stock string) url.Values {
			return url.Values{"name": {name}, "category_id": {strconv.FormatInt(cat, 10)}, "price": {price},
				"stock": {stock}, "description": {"Blue."}, "active": {"1"}}
		}
		before := a.count("SELECT count(*) FROM products")
		for _, tc := range []struct{ name, price, stock, want string }{
			{"", "12.50", "3", "Give the product a name"},
			{"Mug", "12.505", "3", "Enter a price in dollars"},
			{"Mug", "-1", "3", "Enter a price in dollars"},
			{"Mug", "abc", "3", "Enter a price in dollars"},
			{"Mug", "99999999", "3", "Enter a price in dollars"},
			{"Mug", "12.50", "-1", "Enter a whole number"},
			{"Mug", "12.50", "lots", "Enter a whole number"},
		} {
			resp := a.post(admin, "/admin/products", form(tc.name, tc.price, tc.stock))
			if resp.status != http.StatusUnprocessableEntity || !strings.Contains(resp.body, tc.want) {
				t.Errorf("%q %q %q: %d, want 422 saying %q", tc.name, tc.price, tc.stock, resp.status, tc.want)
			}
		}
		resp := a.post(admin, "/admin/products", form("Blue Enamel Mug", "$12.5", "7"))
		if resp.status != http.StatusSeeOther {
			t.Fatalf("create: %d\n%.500s", resp.status, resp.body)
		}
		var price int64
		var slug string
		var stock int
		if err := a.db.QueryRow(ctx, "SELECT price_cents, slug, stock FROM products WHERE name = 'Blue Enamel Mug'").Scan(&price, &slug, &stock); err != nil {
			t.Fatal(err)
		}
		if price != 1250 || slug != "blue-enamel-mug" || stock != 7 {
			t.Errorf("stored %d cents, slug %q, stock %d; want 1250, blue-enamel-mug, 7", price, slug, stock)
		}
		if n := a.count("SELECT count(*) FROM products"); n != before+1 {
			t.Errorf("%d products, want %d: a refused form was saved", n, before+1)
		}
		// Same slug again: 422, nothing saved.
		if resp := a.post(admin, "/admin/products", form("Blue enamel mug", "9", "1")); resp.status != http.StatusUnprocessableEntity ||
			!strings.Contains(resp.body, "Another product has this URL name") {
			t.Errorf("duplicate slug: %d", resp.status)
		}
		// Edit shows the price as typed in dollars.
		edit := a.get(admin, resp.header.Get("Location"))
		if !strings.Contains(edit.body, `value="12.50"`) {
			t.Errorf("the edit page does not show the price as 12.50\n%.2000s", edit.body)
		}
	})

	t.Run("stock", func(t *testing.T) {
		a := a.sub(t)
		id := a.product("stocked", 5)
		path := fmt.Sprintf("/admin/products/%d/stock", id)
		if resp := a.post(admin, path, url.Values{"delta": {"+20"}}); resp.status != http.StatusSeeOther {
			t.Fatalf("+20: %d", resp.status)
		}
		for _, tc := range []struct {
			delta  string
			status int
		}{{"-26", http.StatusConflict}, {"0", 422}, {"x", 422}, {"2000000", 422}} {
			if resp := a.post(admin, path, url.Values{"delta": {tc.delta}}); resp.status != tc.status {
				t.Errorf("%s: %d, want %d", tc.delta, resp.status, tc.status)
			}
		}
		if n := a.count("SELECT stock FROM products WHERE id = $1", id); n != 25 {
			t.Errorf("stock %d, want 25", n)
		}
	})

	t.Run("upload and thumbnails", func(t *testing.T) {
		a := a.sub(t)
		id := a.product("pictured", 1)
		resp := a.upload(admin, id, "photo.png", encodePNG(t, testPicture(1000, 700)))
		if resp.status != http.StatusSeeOther {
			t.Fatalf("upload: %d\n%.500s", resp.status, resp.body)
		}
		imageID, status, reason := a.waitImage(id)
		if status != "ready" {
			t.Fatalf("image %s (%s), want ready", status, reason)
		}
		for size, width := range map[string]int{"small": 320, "large": 960} {
			resp := a.get(admin, fmt.Sprintf("/images/%d/%s", imageID, size))
			if resp.status != http.StatusOK || resp.header.Get("Content-Type") != "image/jpeg" ||
				!strings.Contains(resp.header.Get("Cache-Control"), "immutable") || resp.header.Get("ETag") == "" {
				t.Fatalf("%s: %d %v", size, resp.status, resp.header)
			}
			cfg, err := jpegConfig([]byte(resp.body))
			if err != nil || cfg.Width != width {
				t.Errorf("%s: %d wide (%v), want %d", size, cfg.Width, err, width)
			}
			req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("%s/images/%d/%s", a.url, imageID, size), nil)
			req.Header.Set("If-None-Match", resp.header.Get("ETag"))
			if again := a.do(admin, req); again.status != http.StatusNotModified {
				t.Errorf("%s with its ETag: %d, want 304", size, again.status)
			}
		}
		page := a.get(admin, fmt.Sprintf("/admin/products/%d", id))
		if !strings.Contains(page.body, fmt.Sprintf("/images/%d/large", imageID)) {
			t.Error("the edit page does not show the image")
		}
		if list := a.get(admin, "/admin"); list.status != http.StatusOK || !strings.Contains(list.body, fmt.Sprintf("/images/%d/small", imageID)) {
			t.Errorf("the product list: %d, without the image\n%.300s", list.status, list.body)
		}
		// A new picture replaces it: the old one's files and row go.
		var keys [3]string
		if err := a.db.QueryRow(ctx, "SELECT upload_key, small_key, large_key FROM images WHERE id = $1", imageID).Scan(&keys[0], &keys[1], &keys[2]); err != nil {
			t.Fatal(err)
		}
		if resp := a.upload(admin, id, "better.png", encodePNG(t, testPicture(400, 400))); resp.status != http.StatusSeeOther {
			t.Fatalf("second upload: %d", resp.status)
		}
		if newID, status, _ := a.waitImage(id); newID == imageID || status != "ready" {
			t.Fatalf("image %d %s after the second upload", newID, status)
		}
		hatest.WaitFor(t, 30*time.Second, "the replaced image removed", func() bool {
			return a.count("SELECT count(*) FROM images WHERE id = $1", imageID) == 0
		})
		for _, k := range keys {
			if _, err := a.shop.files.Bucket().Stat(ctx, k); !errors.Is(err, uploads.ErrNotFound) {
				t.Errorf("%s of the replaced image: %v, want it deleted", k, err)
			}
		}
		for _, path := range []string{"/images/999999/small", fmt.Sprintf("/images/%d/huge", imageID), "/images/x/small"} {
			if resp := a.get(admin, path); resp.status != http.StatusNotFound || resp.header.Get("Content-Type") != "image/svg+xml" {
				t.Errorf("%s: %d %s, want the placeholder with 404", path, resp.status, resp.header.Get("Content-Type"))
			}
		}
	})

	t.Run("bomb is broken and archived", func(t *testing.T) {
		a := a.sub(t)
		id := a.product("bombed", 1)
		if resp := a.upload(admin, id, "bomb.png", pngDeclaring(t, 100000, 100000)); resp.status != http.StatusSeeOther {
			t.Fatalf("upload: %d", resp.status)
		}
		imageID, status, reason := a.waitImage(id)
		if status != "broken" || !strings.Contains(reason, "declares 100000×100000 pixels") {
			t.Fatalf("image %s (%q), want broken with the declared size", status, reason)
		}
		page := a.get(admin, fmt.Sprintf("/admin/products/%d", id))
		if !strings.Contains(page.body, "declares 100000×100000 pixels") {
			t.Error("the edit page does not say why the image is broken")
		}
		if list := a.get(admin, "/admin"); list.status != http.StatusOK || !strings.Contains(list.body, "Broken") {
			t.Errorf("the product list: %d, without the broken image", list.status)
		}
		if resp := a.get(admin, fmt.Sprintf("/images/%d/small", imageID)); resp.status != http.StatusOK || resp.header.Get("Content-Type") != "image/svg+xml" {
			t.Errorf("broken image: %d %s, want the placeholder", resp.status, resp.header.Get("Content-Type"))
		}
		want := fmt.Sprintf(`"image_id":%d}`, imageID) // in the task's envelope
		hatest.WaitFor(t, 30*time.Second, "the bomb's task archived", func() bool {
			tasks, err := a.jobs.Archived("default", 100)
			if err != nil {
				return false
			}
			for _, task := range tasks {
				if task.Type == thumbnailTask && strings.Contains(string(task.Payload), want) {
					if task.Retried != 0 || !strings.Contains(task.LastErr, "declares 100000×100000") {
						t.Errorf("archived after %d retries with %q", task.Retried, task.LastErr)
					}
					return true
				}
			}
			return false
		})
	})

	t.Run("refused uploads leave nothing", func(t *testing.T) {
		a := a.sub(t)
		id := a.product("refused", 1)
		images, objects := a.count("SELECT count(*) FROM images"), a.objects()
		big := append(encodePNG(t, testPicture(10, 10)), make([]byte, maxImageBytes)...)
		for _, tc := range []struct {
			name   string
			data   []byte
			status int
			says   string
		}{
			{"prices.png", []byte("name,price\nmug,12.50\n"), http.StatusUnsupportedMediaType, "not a JPEG, PNG, GIF or WebP image"},
			{"page.png", []byte(`<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>`), http.StatusUnsupportedMediaType, "not a JPEG"},
			{"big.png", big, http.StatusRequestEntityTooLarge, "larger than 20 MiB"},
			{"empty.png", nil, http.StatusUnsupportedMediaType, "not a JPEG"},
		} {
			resp := a.upload(admin, id, tc.name, tc.data)
			if resp.status != tc.status || !strings.Contains(resp.body, tc.says) {
				t.Errorf("%s: %d, want %d saying %q\n%.300s", tc.name, resp.status, tc.status, tc.says, resp.body)
			}
		}
		// A form without the file field.
		var body bytes.Buffer
		mw := multipart.NewWriter(&body)
		_ = mw.WriteField("note", "no file")
		_ = mw.Close()
		req, _ := http.NewRequest(http.MethodPost, fmt.Sprintf("%s/admin/products/%d/image", a.url, id), &body)
		req.Header.Set("Content-Type", mw.FormDataContentType())
		if resp := a.do(admin, req); resp.status != http.StatusBadRequest || !strings.Contains(resp.body, "Choose an image file") {
			t.Errorf("no file: %d, want 400 asking for one", resp.status)
		}
		if resp := a.upload(admin, 999999, "x.png", encodePNG(t, testPicture(10, 10))); resp.status != http.StatusNotFound {
			t.Errorf("no such product: %d, want 404", resp.status)
		}
		if n := a.count("SELECT count(*) FROM images"); n != images {
			t.Errorf("%d images rows, want %d", n, images)
		}
		if n := a.objects(); n != objects {
			t.Errorf("%d objects in the bucket, want %d", n, objects)
		}
		if n := a.count("SELECT count(*) FROM products WHERE id = $1 AND image_id IS NULL", id); n != 1 {
			t.Error("the product got an image")
		}
	})

	t.Run("orders", func(t *testing.T) {
		a := a.sub(t)
		id := a.product("ordered", 4)
		var order int64
		err := a.db.QueryRow(ctx, `WITH o AS (INSERT INTO orders (email, name, address, total_cents)
				VALUES ('jo@example.test', 'Jo', '{}', 3000) RETURNING id)
			INSERT INTO order_lines (order_id, product_id, name, unit_cents, qty) SELECT id, $1, 'Ordered', 1000, 3 FROM o RETURNING order_id`,
			id).Scan(&order)
		if err != nil {
			t.Fatal(err)
		}
		a.replicated()
		if resp := a.get(admin, "/admin/orders"); resp.status != http.StatusOK || !strings.Contains(resp.body, fmt.Sprintf(`data-order-id="%d"`, order)) {
			t.Fatalf("orders: %d", resp.status)
		}
		path := fmt.Sprintf("/admin/orders/%d/cancel", order)
		if resp := a.post(admin, path, nil); resp.status != http.StatusSeeOther {
			t.Fatalf("cancel: %d", resp.status)
		}
		if resp := a.post(admin, path, nil); resp.status != http.StatusConflict || !strings.Contains(resp.body, "cancelled already") {
			t.Errorf("cancel again: %d, want 409", resp.status)
		}
		if resp := a.post(admin, fmt.Sprintf("/admin/orders/%d/ship", order), nil); resp.status != http.StatusConflict {
			t.Errorf("ship a cancelled order: %d, want 409", resp.status)
		}
		if n := a.count("SELECT stock FROM products WHERE id = $1", id); n != 7 {
			t.Errorf("stock %d after the cancel, want 7 (4 + 3 back, once)", n)
		}
		if resp := a.post(admin, "/admin/orders/999999/cancel", nil); resp.status != http.StatusNotFound {
			t.Errorf("no such order: %d, want 404", resp.status)
		}
	})

	t.Run("seed pictures", func(t *testing.T) {
		a := a.sub(t)
		if _, err := a.db.Exec(ctx, "UPDATE products SET image_id = NULL WHERE slug = 'stocked'"); err != nil {
			t.Fatal(err)
		}
		before := a.count("SELECT count(*) FROM images")
		missing := a.count("SELECT count(*) FROM products WHERE image_id IS NULL")
		if err := a.shop.seedImages(ctx); err != nil {
			t.Fatal(err)
		}
		if err := a.shop.seedImages(ctx); err != nil { // again: nothing more
			t.Fatal(err)
		}
		if n := a.count("SELECT count(*) FROM images"); n != before+missing {
			t.Errorf("%d images, want %d: one per product that had none, once", n, before+missing)
		}
		id := int64(a.count("SELECT id FROM products WHERE slug = 'stocked'"))
		if _, status, reason := a.waitImage(id); status != "ready" {
			t.Errorf("seed picture %s (%s)", status, reason)
		}
	})

	t.Run("job: missing or bad originals", func(t *testing.T) {
		a := a.sub(t)
		var missing int64
		if err := a.db.QueryRow(ctx, "INSERT INTO images (upload_key) VALUES ('products/nowhere') RETURNING id").Scan(&missing); err != nil {
			t.Fatal(err)
		}
		var text int64
		if err := a.db.QueryRow(ctx, "INSERT INTO images (upload_key) VALUES ('products/text') RETURNING id").Scan(&text); err != nil {
			t.Fatal(err)
		}
		if err := a.shop.files.Bucket().Upload(ctx, "products/text", strings.NewReader("hello"), "text/plain", nil); err != nil {
			t.Fatal(err)
		}
		a.replicated()
		for id, want := range map[int64]string{missing: "missing from storage", text: "not a JPEG, PNG, GIF or WebP"} {
			err := a.shop.makeThumbnails(ctx, id, defaultImageLimits())
			if !errors.Is(err, jobs.SkipRetry) || !strings.Contains(err.Error(), want) {
				t.Errorf("image %d: %v, want SkipRetry saying %q", id, err, want)
			}
			// Delivered again (at least once): it stays broken, no error.
			if err := a.shop.makeThumbnails(ctx, id, defaultImageLimits()); err != nil {
				t.Errorf("image %d again: %v", id, err)
			}
			if n := a.count("SELECT count(*) FROM images WHERE id = $1 AND status = 'broken'", id); n != 1 {
				t.Errorf("image %d is not marked broken", id)
			}
		}
		if err := a.shop.makeThumbnails(ctx, 999999, defaultImageLimits()); !errors.Is(err, jobs.SkipRetry) {
			t.Errorf("no such image: %v, want SkipRetry", err)
		}
	})

	// Last: it stops MinIO.
	t.Run("S3 down", func(t *testing.T) {
		a := a.sub(t)
		id := int64(a.count("SELECT id FROM products WHERE slug = 'pictured'"))
		imageID := a.count("SELECT image_id FROM products WHERE id = $1", id)
		if err := a.minio.Kill(); err != nil {
			t.Fatal(err)
		}
		page := a.get(admin, fmt.Sprintf("/products/%d", id))
		if page.status != http.StatusOK || !strings.Contains(page.body, fmt.Sprintf("/images/%d/large", imageID)) {
			t.Errorf("product page: %d, want 200 with its image's URL", page.status)
		}
		start := time.Now()
		img := a.get(admin, fmt.Sprintf("/images/%d/small", imageID))
		if img.status != http.StatusServiceUnavailable || img.header.Get("Content-Type") != "image/svg+xml" ||
			img.header.Get("Cache-Control") != "no-store" {
			t.Errorf("image: %d %v, want the placeholder with 503, not cached", img.status, img.header)
		}
		if d := time.Since(start); d > imageTimeout+time.Second {
			t.Errorf("the image took %v to fail", d)
		}
		images := a.count("SELECT count(*) FROM images")
		resp := a.upload(admin, id, "photo.png", encodePNG(t, testPicture(50, 50)))
		if resp.status != http.StatusServiceUnavailable || !strings.Contains(resp.body, "Image storage is not available") ||
			resp.header.Get("Retry-After") == "" {
			t.Errorf("upload: %d (Retry-After %q), want 503 saying so\n%.300s", resp.status, resp.header.Get("Retry-After"), resp.body)
		}
		if n := a.count("SELECT count(*) FROM images"); n != images {
			t.Error("an upload with S3 down wrote an images row")
		}
		if admin := a.get(admin, fmt.Sprintf("/admin/products/%d", id)); admin.status != http.StatusOK {
			t.Errorf("the admin's product page: %d", admin.status)
		}
		// The job meanwhile: an error that is retried, the image left pending.
		var pending int64
		if err := a.db.QueryRow(ctx, "INSERT INTO images (upload_key) VALUES ('products/later') RETURNING id").Scan(&pending); err != nil {
			t.Fatal(err)
		}
		a.replicated()
		if err := a.shop.makeThumbnails(ctx, pending, defaultImageLimits()); err == nil || errors.Is(err, jobs.SkipRetry) {
			t.Errorf("thumbnails with S3 down: %v, want an error that is retried", err)
		}
		if n := a.count("SELECT count(*) FROM images WHERE id = $1 AND status = 'pending'", pending); n != 1 {
			t.Error("S3 down marked the image")
		}
	})
}

func jpegConfig(data []byte) (image.Config, error) {
	return jpeg.DecodeConfig(bytes.NewReader(data))
}

// TestAdminBrowser: the owner signs in, creates a product with the form
// and uploads its picture with the file input, in Chromium; the thumbnails
// appear in the admin and on the shop's product page. With
// SHOP_SCREENSHOTS=1 it saves the admin's screenshots for the README.
func TestAdminBrowser(t *testing.T) {
	a := startAdminShop(t)
	ctx := context.Background()
	var cat int64
	if err := a.db.QueryRow(ctx, "INSERT INTO categories (slug, name) VALUES ('kitchen', 'Kitchen') RETURNING id").Scan(&cat); err != nil {
		t.Fatal(err)
	}
	a.replicated()
	photo := filepath.Join(t.TempDir(), "kettle.png")
	if err := os.WriteFile(photo, encodePNG(t, testPicture(1000, 700)), 0o644); err != nil {
		t.Fatal(err)
	}
	tb := startChromium(t).newTab(t, a.url, "admin")
	tb.do("sign in", chromedp.Navigate(a.url+"/admin"), waitPage("login"),
		chromedp.SetValue(`#email`, adminEmail), chromedp.SetValue(`#password`, adminPassword),
		chromedp.Submit(`#password`), waitPage("admin"))
	tb.do("new product", chromedp.Click(`a[href="/admin/products/new"]`), waitPage("admin-product"),
		chromedp.SetValue(`#name`, "Enamel Kettle"), chromedp.SetValue(`#price`, "42.50"),
		chromedp.SetValue(`#stock`, "12"), chromedp.SetValue(`#category_id`, strconv.FormatInt(cat, 10)),
		chromedp.SetValue(`#description`, "A stovetop kettle in cream enamel. 1.7 l."),
		chromedp.Submit(`#name`), chromedp.WaitVisible(`#image`))
	var id int64
	var price int64
	if err := a.db.QueryRow(ctx, "SELECT id, price_cents FROM products WHERE slug = 'enamel-kettle'").Scan(&id, &price); err != nil {
		t.Fatalf("the product was not created: %v", err)
	}
	if price != 4250 {
		t.Errorf("price %d cents, want 4250", price)
	}
	tb.do("upload", chromedp.SetUploadFiles(`#image`, []string{photo}), chromedp.Submit(`#image`), waitPage("admin-product"))
	if _, status, reason := a.waitImage(id); status != "ready" {
		t.Fatalf("image %s (%s)", status, reason)
	}
	a.replicated() // the job's write: the browser's session has no position for it
	tb.open(fmt.Sprintf("/admin/products/%d", id), "admin-product")
	tb.imagesLoaded()
	if w := evalJS[int](tb, "image width", `document.querySelector('img.admin-image').naturalWidth`); w != 960 {
		t.Errorf("the admin shows a %d px wide image, want the 960 px thumbnail", w)
	}
	tb.screenshot("admin-product")
	tb.open("/admin", "admin")
	tb.imagesLoaded()
	tb.screenshot("admin-products")
	tb.open(fmt.Sprintf("/products/%d", id), "product")
	if n := tb.imagesLoaded(); n == 0 {
		t.Error("the shop's product page shows no image")
	}
}

func TestParsePrice(t *testing.T) {
	for in, want := range map[string]int64{
		"12.50": 1250, "12.5": 1250, "12": 1200, "$12.05": 1205, " 1,200.00 ": 120000, "0": 0, "0.99": 99,
		"1000000": 100000000, "1000000.01": -1, "12.505": -1, "12.": -1, ".5": -1, "-1": -1, "1e3": -1,
		"": -1, "abc": -1, "12,50": -1, "1,2345": -1, ",500": -1, "12,345.6": 1234560, "9999999": -1, "١٢": -1,
	} {
		got, ok := parsePrice(in)
		if !ok {
			got = -1
		}
		if got != want {
			t.Errorf("parsePrice(%q) = %d, want %d", in, got, want)
		}
	}
}
