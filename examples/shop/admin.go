package main

// The shop owner's area, /admin: products (create, edit, stock, image)
// and orders (ship, cancel). Only admins (users.is_admin, checked in the
// database on every request, not on the session's copy) get in; a visitor
// who is not signed in is sent to the login page and back.
//
// Stock is never set to a number from a form: checkouts decrement it
// concurrently, and a form holding yesterday's count would undo their
// decrements. The admin adjusts it by a difference instead ("+20" when a
// delivery comes in), in one conditional UPDATE that cannot go below zero.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"hakit.dev/dbrouter"
	"hakit.dev/hakit"
	"hakit.dev/uploads"
)

// admin is the admin area's handlers.
type admin struct {
	*shop
	// images receives product images: the form field "image", JPEG,
	// PNG, GIF or WebP (sniffed), at most maxImageBytes, under
	// "products/". Nil without S3.
	images *uploads.Store
}

// imageTypes are the uploads accepted as product images: what the
// thumbnail job decodes.
var imageTypes = []string{"image/jpeg", "image/png", "image/gif", "image/webp"}

// adminRoutes mounts the shop owner's pages under /admin.
func (s *shop) adminRoutes(r chi.Router) {
	a := &admin{shop: s}
	if s.files != nil {
		var err error
		a.images, err = uploads.New(uploads.Config{
			Bucket: s.files.Bucket(), Prefix: "products/", Name: "product_images",
			MaxSize: maxImageBytes, AllowedTypes: imageTypes, Field: "image", Logger: s.log,
		})
		if err != nil { // only a programmer's error in the Config above
			panic(err)
		}
	}
	r.Get("/admin/admin.css", serveAdminCSS)
	r.Route("/admin", func(r chi.Router) {
		r.Use(a.requireAdmin)
		r.Get("/", a.productList)
		r.Get("/products/new", a.newProduct)
		r.Post("/products", a.createProduct)
		r.Get("/products/{id}", a.editProduct)
		r.Post("/products/{id}", a.updateProduct)
		r.Post("/products/{id}/stock", a.adjustStock)
		// No request timeout: the uploads package bounds the upload by
		// progress. The body limit leaves room for the form's other fields.
		r.With(hakit.Timeout(-1), hakit.BodyLimit(maxImageBytes+1<<20)).Post("/products/{id}/image", a.uploadImage)
		r.Get("/orders", a.orderList)
		r.Post("/orders/{id}/ship", a.shipOrder)
		r.Post("/orders/{id}/cancel", a.cancelOrder)
	})
}

// requireAdmin lets admins through. Others get a 403 page; visitors not
// signed in are sent to log in first, and come back here.
func (a *admin) requireAdmin(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		u := a.currentUser(ctx)
		if u == nil {
			back := r.URL.RequestURI()
			if r.Method != http.MethodGet {
				back = "/admin"
			}
			http.Redirect(w, r, "/login?next="+url.QueryEscape(back), http.StatusSeeOther)
			return
		}
		dbu, err := a.loadUser(ctx, u.ID)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			hakit.Error(w, r, err)
			return
		}
		if err != nil || !dbu.IsAdmin {
			fail(w, r, http.StatusForbidden, "This page is for the shop's staff. Sign in with an admin account to see it.")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// adminProduct is a row of the product list.
type adminProduct struct {
	ID          int64
	Name        string
	Slug        string
	Category    string
	PriceCents  int64
	Stock       int
	Active      bool
	ImageID     *int64
	ImageStatus string // pending, ready, broken; "" without an image
}

// productList is the admin's home: every product with its stock.
func (a *admin) productList(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	rows, _ := a.db.Query(ctx, `SELECT p.id, p.name, p.slug, c.name, p.price_cents, p.stock, p.active, p.image_id, coalesce(i.status, '')
		FROM products p JOIN categories c ON c.id = p.category_id LEFT JOIN images i ON i.id = p.image_id
		ORDER BY c.name, p.name LIMIT 1000`)
	products, err := pgx.CollectRows(rows, pgx.RowToStructByPos[adminProduct])
	if err != nil {
		hakit.Error(w, r, err)
		return
	}
	out, low := 0, 0
	for _, p := range products {
		switch {
		case p.Stock == 0:
			out++
		case p.Stock <= 5:
			low++
		}
	}
	a.render(w, r, http.StatusOK, "admin.html", map[string]any{
		"Products": products, "OutOfStock": out, "LowStock": low,
	})
}

// productForm is the product form's fields, as typed, and what is wrong
// with them.
type productForm struct {
	ID          int64 // 0 for a new product
	Name        string
	Slug        string
	CategoryID  int64
	Description string
	Price       string // "12.50"
	Stock       string // for a new product only: then adjusted by difference
	Active      bool
	Errors      map[string]string
}

// productFromForm reads and checks the posted product form.
func productFromForm(r *http.Request, id int64) (f productForm, priceCents int64, stock int) {
	p := r.PostForm
	f = productForm{
		ID: id, Name: strings.TrimSpace(p.Get("name")), Slug: strings.TrimSpace(p.Get("slug")),
		Description: strings.TrimSpace(p.Get("description")), Price: strings.TrimSpace(p.Get("price")),
		Stock: strings.TrimSpace(p.Get("stock")), Active: p.Get("active") != "", Errors: map[string]string{},
	}
	switch n := len([]rune(f.Name)); {
	case n == 0:
		f.Errors["name"] = "Give the product a name."
	case n > 120:
		f.Errors["name"] = "Keep the name under 120 characters."
	}
	if f.Slug == "" {
		f.Slug = slugify(f.Name)
		if len(f.Slug) > 80 {
			f.Slug = strings.TrimRight(f.Slug[:80], "-")
		}
	}
	if !validSlug(f.Slug) {
		f.Errors["slug"] = "Use lowercase letters, digits and dashes (at most 80), e.g. linen-apron."
	}
	var err error
	if f.CategoryID, err = strconv.ParseInt(p.Get("category_id"), 10, 64); err != nil || f.CategoryID <= 0 {
		f.Errors["category_id"] = "Choose a category."
	}
	if len(f.Description) > 5000 {
		f.Errors["description"] = "Keep the description under 5,000 characters."
	}
	var ok bool
	if priceCents, ok = parsePrice(f.Price); !ok {
		f.Errors["price"] = fmt.Sprintf("Enter a price in dollars, like 12.50 (at most %s).", money(maxPriceCents))
	}
	if id == 0 {
		n, err := strconv.Atoi(f.Stock)
		if err != nil || n < 0 || n > maxStock {
			f.Errors["stock"] = fmt.Sprintf("Enter a whole number from 0 to %d.", maxStock)
		}
		stock = n
	}
	return f, priceCents, stock
}

// maxStock bounds the stock of one product, and one adjustment.
const maxStock = 1_000_000

// maxPriceCents is the highest price: $1,000,000.00.
const maxPriceCents = 100_000_000

// parsePrice reads a price in dollars as the admin types it — "12.50",
// "12.5", "$1,200" — into cents, and reports whether it is one (at most
// maxPriceCents).
func parsePrice(s string) (int64, bool) {
	whole, frac, dot := strings.Cut(strings.TrimPrefix(strings.TrimSpace(s), "$"), ".")
	if groups := strings.Split(whole, ","); len(groups) > 1 {
		// Commas only between thousands: "12,50" is not twelve fifty
		// nor twelve hundred and fifty, but a mistake.
		for i, g := range groups {
			if len(g) != 3 && (i > 0 || len(g) == 0 || len(g) > 3) {
				return 0, false
			}
		}
		whole = strings.Join(groups, "")
	}
	if whole == "" || len(whole) > 7 || (dot && (len(frac) == 0 || len(frac) > 2)) {
		return 0, false
	}
	for _, c := range whole + frac {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	for len(frac) < 2 {
		frac += "0"
	}
	dollars, _ := strconv.ParseInt(whole, 10, 64)
	cents, _ := strconv.ParseInt(frac, 10, 64)
	total := dollars*100 + cents
	if total > maxPriceCents {
		return 0, false
	}
	return total, true
}

// formatPrice writes cents as the price field shows them: 1250 → "12.50".
func formatPrice(cents int64) string {
	return fmt.Sprintf("%d.%02d", cents/100, cents%100)
}

func validSlug(s string) bool {
	if s == "" || len(s) > 80 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// categoryOption is a choice of the form's category list.
type categoryOption struct {
	ID   int64
	Name string
}

// productPage renders the product form (new or edit) with status.
// extra adds to the page's data (the image and stock sections).
func (a *admin) productPage(w http.ResponseWriter, r *http.Request, status int, f productForm, extra map[string]any) {
	rows, _ := a.db.Query(r.Context(), "SELECT id, name FROM categories ORDER BY name")
	cats, err := pgx.CollectRows(rows, pgx.RowToStructByPos[categoryOption])
	if err != nil {
		hakit.Error(w, r, err)
		return
	}
	data := map[string]any{"Form": f, "Categories": cats, "Page": "admin-product"}
	for k, v := range extra {
		data[k] = v
	}
	a.render(w, r, status, "admin_product.html", data)
}

// newProduct shows an empty product form.
func (a *admin) newProduct(w http.ResponseWriter, r *http.Request) {
	a.productPage(w, r, http.StatusOK, productForm{Active: true, Stock: "0"}, nil)
}

// createProduct saves a new product, or shows the form again with what
// is wrong (422) and nothing saved.
func (a *admin) createProduct(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if err := hakit.ParseForm(w, r); err != nil {
		hakit.Error(w, r, err)
		return
	}
	f, price, stock := productFromForm(r, 0)
	if len(f.Errors) > 0 {
		a.productPage(w, r, http.StatusUnprocessableEntity, f, nil)
		return
	}
	var id int64
	err := a.db.Write(ctx, func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, `INSERT INTO products (category_id, slug, name, description, price_cents, stock, active)
			VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id`,
			f.CategoryID, f.Slug, f.Name, f.Description, price, stock, f.Active).Scan(&id)
	})
	if a.formConflict(w, r, &f, err) {
		return
	}
	if err != nil {
		hakit.Error(w, r, err)
		return
	}
	a.sessions.Flash(ctx, "info", "Created "+f.Name+". Add a picture below.")
	http.Redirect(w, r, "/admin/products/"+strconv.FormatInt(id, 10), http.StatusSeeOther)
}

// formConflict answers a write refused for the form's values — a slug
// taken, a category gone — with the form and the reason (422), and
// reports whether it did.
func (a *admin) formConflict(w http.ResponseWriter, r *http.Request, f *productForm, err error) bool {
	switch {
	case isUniqueViolation(err, "products_slug_key"):
		f.Errors["slug"] = "Another product has this URL name; choose another."
	case isForeignKeyViolation(err, "products_category_id_fkey"):
		f.Errors["category_id"] = "That category does not exist any more; choose another."
	default:
		return false
	}
	a.productPage(w, r, http.StatusUnprocessableEntity, *f, nil)
	return true
}

// pathID reads the {id} of the path, or answers 404.
func pathID(w http.ResponseWriter, r *http.Request) (int64, bool) {
	id, err := strconv.ParseInt(chi.URLParam(r, "id"), 10, 64)
	if err != nil || id <= 0 {
		fail(w, r, http.StatusNotFound, "There is no such page.")
		return 0, false
	}
	return id, true
}

// productImage is the image section of the edit page.
type productImage struct {
	ID     *int64
	Status string // pending, ready, broken, "" for none
	Reason string // why broken
}

// editProduct shows a product's form, its stock and its image.
func (a *admin) editProduct(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	a.showProduct(w, r, id, http.StatusOK, nil)
}

// showProduct renders the edit page of product id with the given status;
// errs are the stock and image sections' errors.
func (a *admin) showProduct(w http.ResponseWriter, r *http.Request, id int64, status int, errs map[string]string) {
	ctx := r.Context()
	f := productForm{ID: id, Errors: map[string]string{}}
	var price int64
	var stock int
	var img productImage
	var imgStatus, reason *string
	err := a.db.QueryRow(ctx, `SELECT p.name, p.slug, p.category_id, p.description, p.price_cents, p.stock, p.active,
			p.image_id, i.status, i.reason
		FROM products p LEFT JOIN images i ON i.id = p.image_id WHERE p.id = $1`, id).
		Scan(&f.Name, &f.Slug, &f.CategoryID, &f.Description, &price, &stock, &f.Active, &img.ID, &imgStatus, &reason)
	if errors.Is(err, pgx.ErrNoRows) {
		fail(w, r, http.StatusNotFound, "There is no such product.")
		return
	}
	if err != nil {
		hakit.Error(w, r, err)
		return
	}
	f.Price = formatPrice(price)
	if imgStatus != nil {
		img.Status = *imgStatus
	}
	if reason != nil {
		img.Reason = *reason
	}
	a.productPage(w, r, status, f, map[string]any{
		"Stock": stock, "Image": img, "Uploads": a.images != nil, "SectionErrors": errs,
		"MaxImageMiB": maxImageBytes >> 20,
	})
}

// updateProduct saves a product's form (not its stock: adjustStock).
func (a *admin) updateProduct(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	if err := hakit.ParseForm(w, r); err != nil {
		hakit.Error(w, r, err)
		return
	}
	f, price, _ := productFromForm(r, id)
	if len(f.Errors) > 0 {
		a.productPage(w, r, http.StatusUnprocessableEntity, f, nil)
		return
	}
	err := a.db.Write(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE products SET category_id = $2, slug = $3, name = $4, description = $5,
			price_cents = $6, active = $7, updated_at = now() WHERE id = $1`,
			id, f.CategoryID, f.Slug, f.Name, f.Description, price, f.Active)
		if err == nil && tag.RowsAffected() == 0 {
			err = pgx.ErrNoRows
		}
		return err
	})
	if a.formConflict(w, r, &f, err) {
		return
	}
	if err != nil {
		hakit.Error(w, r, err) // pgx.ErrNoRows: 404
		return
	}
	a.sessions.Flash(ctx, "info", "Saved "+f.Name+".")
	http.Redirect(w, r, "/admin/products/"+strconv.FormatInt(id, 10), http.StatusSeeOther)
}

// adjustStock adds the form's "delta" (negative to remove) to a product's
// stock, in one statement that refuses to go below zero: concurrent
// checkouts' decrements are never lost.
func (a *admin) adjustStock(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	if err := hakit.ParseForm(w, r); err != nil {
		hakit.Error(w, r, err)
		return
	}
	delta, err := strconv.Atoi(strings.TrimPrefix(strings.TrimSpace(r.PostForm.Get("delta")), "+"))
	if err != nil || delta == 0 || delta < -maxStock || delta > maxStock {
		a.showProduct(w, r, id, http.StatusUnprocessableEntity, map[string]string{
			"stock": fmt.Sprintf("Enter how many to add (like 20) or remove (like -3), up to %d.", maxStock)})
		return
	}
	var stock int
	err = a.db.Write(ctx, func(tx pgx.Tx) error {
		err := tx.QueryRow(ctx, `UPDATE products SET stock = stock + $2, updated_at = now()
			WHERE id = $1 AND stock + $2 BETWEEN 0 AND $3 RETURNING stock`, id, delta, maxStock).Scan(&stock)
		if errors.Is(err, pgx.ErrNoRows) { // no such product, or out of range
			err = tx.QueryRow(ctx, "SELECT stock FROM products WHERE id = $1", id).Scan(&stock)
			if err == nil {
				err = errStockRange
			}
		}
		return err
	})
	switch {
	case errors.Is(err, errStockRange):
		a.showProduct(w, r, id, http.StatusConflict, map[string]string{
			"stock": fmt.Sprintf("There are %d in stock: adding %d would make it %d, outside 0 to %d. Nothing was changed.", stock, delta, stock+delta, maxStock)})
	case err != nil:
		hakit.Error(w, r, err) // pgx.ErrNoRows: 404
	default:
		a.sessions.Flash(ctx, "info", fmt.Sprintf("Stock is now %d.", stock))
		http.Redirect(w, r, "/admin/products/"+strconv.FormatInt(id, 10), http.StatusSeeOther)
	}
}

// errStockRange rolls back an adjustment that would leave the stock
// outside 0 to maxStock.
var errStockRange = errors.New("stock out of range")

// uploadImage streams the form's "image" to S3, then, in one database
// write, records it (pending), makes it the product's image and enqueues
// its thumbnails (and the removal of the image it replaces). A refused upload (too large, not an image, S3 down)
// leaves nothing behind, in S3 or in the database.
func (a *admin) uploadImage(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	if a.images == nil {
		fail(w, r, http.StatusServiceUnavailable, "Image storage is not configured (HAKIT_S3_BUCKET), so images cannot be uploaded.")
		return
	}
	// The product is checked first, so that no file is streamed for nothing.
	var exists bool
	if err := a.db.QueryRow(ctx, "SELECT true FROM products WHERE id = $1", id).Scan(&exists); err != nil {
		hakit.Error(w, r, err) // pgx.ErrNoRows: 404
		return
	}
	st, err := a.images.Receive(w, r)
	if err != nil {
		a.uploadFailed(w, r, err)
		return
	}
	var imageID int64
	err = a.db.Write(ctx, func(tx pgx.Tx) error {
		var previous *int64
		if err := tx.QueryRow(ctx, "SELECT image_id FROM products WHERE id = $1 FOR UPDATE", id).Scan(&previous); err != nil {
			return err // pgx.ErrNoRows: deleted meanwhile
		}
		if err := tx.QueryRow(ctx, "INSERT INTO images (upload_key) VALUES ($1) RETURNING id", st.Key).Scan(&imageID); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "UPDATE products SET image_id = $2, updated_at = now() WHERE id = $1", id, imageID); err != nil {
			return err
		}
		if _, err := a.outbox.EnqueueTx(ctx, tx, thumbnailTask, thumbnailJob{ImageID: imageID}, thumbnailOptions); err != nil {
			return err
		}
		if previous != nil { // the image replaced: its files go
			_, err := a.outbox.EnqueueTx(ctx, tx, deleteImageTask, thumbnailJob{ImageID: *previous}, thumbnailOptions)
			return err
		}
		return nil
	})
	if err != nil {
		// ErrCommitUnknown: the row may have committed, and would point
		// at nothing if the file went; an orphan file costs only storage.
		if !errors.Is(err, dbrouter.ErrCommitUnknown) {
			if derr := a.files.Bucket().Delete(context.WithoutCancel(ctx), st.Key); derr != nil {
				a.log.Warn("upload: delete after a failed write", "key", st.Key, "err", derr)
			}
		}
		hakit.Error(w, r, err)
		return
	}
	a.log.Info("product image uploaded", "product", id, "image", imageID, "bytes", st.Size, "type", st.ContentType)
	a.sessions.Flash(ctx, "info", "Image uploaded. Its thumbnails are being made; this page shows them in a moment.")
	http.Redirect(w, r, "/admin/products/"+strconv.FormatInt(id, 10), http.StatusSeeOther)
}

// uploadFailed answers a refused upload with a page that says what to do.
func (a *admin) uploadFailed(w http.ResponseWriter, r *http.Request, err error) {
	status := uploads.Status(err)
	msg := ""
	switch status {
	case http.StatusRequestEntityTooLarge:
		msg = fmt.Sprintf("The image is larger than %d MiB. Nothing was saved; upload a smaller one.", maxImageBytes>>20)
	case http.StatusUnsupportedMediaType:
		msg = "That file is not a JPEG, PNG, GIF or WebP image. Nothing was saved."
	case http.StatusBadRequest:
		msg = "Choose an image file to upload."
	case http.StatusRequestTimeout:
		msg = "The upload was too slow and was stopped. Nothing was saved; try again."
	case http.StatusServiceUnavailable, http.StatusBadGateway:
		// S3 down, or no memory for the upload now: the same advice.
		status = http.StatusServiceUnavailable
		msg = "Image storage is not available right now. Nothing was saved; try again in a minute."
		if w.Header().Get("Retry-After") == "" {
			w.Header().Set("Retry-After", "30")
		}
	default:
		hakit.Error(w, r, err)
		return
	}
	a.log.Info("upload refused", "status", status, "err", err)
	fail(w, r, status, msg)
}

// adminOrder is a row of the order list.
type adminOrder struct {
	ID         int64
	CreatedAt  time.Time
	Name       string
	Email      string
	TotalCents int64
	Status     string
	Items      int
}

// orderList shows the latest orders, newest first, with their status.
func (a *admin) orderList(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	status := r.URL.Query().Get("status")
	rows, _ := a.db.Query(ctx, `SELECT o.id, o.created_at, o.name, o.email, o.total_cents, o.status,
			(SELECT coalesce(sum(qty), 0) FROM order_lines l WHERE l.order_id = o.id)::int
		FROM orders o WHERE $1 = '' OR o.status = $1 ORDER BY o.id DESC LIMIT 200`, status)
	orders, err := pgx.CollectRows(rows, pgx.RowToStructByPos[adminOrder])
	if err != nil {
		hakit.Error(w, r, err)
		return
	}
	a.render(w, r, http.StatusOK, "admin_orders.html", map[string]any{
		"Orders": orders, "Status": status, "Page": "admin-orders",
	})
}

// shipOrder marks a placed order shipped.
func (a *admin) shipOrder(w http.ResponseWriter, r *http.Request) {
	a.changeOrder(w, r, "shipped", nil)
}

// cancelOrder cancels a placed order and puts its items back in stock,
// in the same write: a cancelled order's units are never lost or counted
// twice.
func (a *admin) cancelOrder(w http.ResponseWriter, r *http.Request) {
	a.changeOrder(w, r, "cancelled", func(ctx context.Context, tx pgx.Tx, id int64) error {
		_, err := tx.Exec(ctx, `UPDATE products p SET stock = p.stock + l.qty, updated_at = now()
			FROM order_lines l WHERE l.order_id = $1 AND p.id = l.product_id`, id)
		return err
	})
}

// changeOrder moves a placed order to status, with then in the same
// transaction. Only a placed order changes: a second click is a 409.
func (a *admin) changeOrder(w http.ResponseWriter, r *http.Request, status string, then func(context.Context, pgx.Tx, int64) error) {
	ctx := r.Context()
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	var was string
	err := a.db.Write(ctx, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, "SELECT status FROM orders WHERE id = $1 FOR UPDATE", id).Scan(&was); err != nil {
			return err
		}
		if was != "placed" {
			return errOrderClosed
		}
		if _, err := tx.Exec(ctx, "UPDATE orders SET status = $2 WHERE id = $1", id, status); err != nil {
			return err
		}
		if then != nil {
			return then(ctx, tx, id)
		}
		return nil
	})
	switch {
	case errors.Is(err, errOrderClosed):
		fail(w, r, http.StatusConflict, fmt.Sprintf("Order #%d is %s already: nothing was changed.", id, was))
	case err != nil:
		hakit.Error(w, r, err) // pgx.ErrNoRows: 404
	default:
		a.sessions.Flash(ctx, "info", fmt.Sprintf("Order #%d is %s.", id, status))
		http.Redirect(w, r, "/admin/orders", http.StatusSeeOther)
	}
}

// errOrderClosed rolls back a change to an order that is not placed.
var errOrderClosed = errors.New("order not placed")

// isForeignKeyViolation reports whether err is PostgreSQL's foreign key
// violation of the named constraint.
func isForeignKeyViolation(err error, constraint string) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23503" && pe.ConstraintName == constraint
}

// serveAdminCSS serves the admin pages' own styles, on top of the shop's.
func serveAdminCSS(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/css; charset=utf-8")
	w.Header().Set("Cache-Control", "public, max-age=3600")
	_, _ = w.Write([]byte(adminCSS))
}

const adminCSS = `
.admin-head { display: flex; flex-wrap: wrap; align-items: center; justify-content: space-between; gap: .75rem; margin: 1.25rem 0 1rem; }
.admin-head h1 { margin: 0; font-size: 1.6rem; }
.admin-tabs { display: flex; gap: .25rem; margin: 1rem 0 0; border-bottom: 1px solid var(--line, #e5e7eb); }
.admin-tabs a { padding: .5rem .9rem; border-radius: .5rem .5rem 0 0; color: var(--muted, #6b7280); text-decoration: none; }
.admin-tabs a[aria-current] { background: var(--card, #fff); border: 1px solid var(--line, #e5e7eb); border-bottom-color: var(--card, #fff); margin-bottom: -1px; color: var(--ink, #1d2125); font-weight: 600; }
.admin-stats { display: flex; flex-wrap: wrap; gap: .5rem; margin: 0 0 1rem; padding: 0; list-style: none; }
.admin-stats li { background: var(--brand-soft, #e6f0ec); border-radius: .5rem; padding: .4rem .8rem; font-size: .9rem; }
.admin-table-wrap { overflow-x: auto; background: var(--card, #fff); border: 1px solid var(--line, #e5e7eb); border-radius: .75rem; }
.admin-table { width: 100%; border-collapse: collapse; font-size: .95rem; }
.admin-table th, .admin-table td { padding: .55rem .75rem; text-align: left; border-bottom: 1px solid var(--line, #e5e7eb); vertical-align: middle; }
.admin-table th { font-size: .78rem; text-transform: uppercase; letter-spacing: .04em; color: var(--muted, #6b7280); background: var(--bg, #fafaf9); }
.admin-table tr:last-child td { border-bottom: 0; }
.admin-table td.num, .admin-table th.num { text-align: right; font-variant-numeric: tabular-nums; }
.admin-table .thumb { width: 44px; height: 44px; object-fit: cover; border-radius: .4rem; display: block; background: #f3f4f6; }
.admin-table a { font-weight: 600; }
.admin-table .admin-actions { display: flex; gap: .4rem; justify-content: flex-end; align-items: center; }
.admin-table .admin-actions form { margin: 0; }
.pill { display: inline-block; padding: .12rem .55rem; border-radius: 999px; font-size: .78rem; font-weight: 600; background: var(--line, #e5e7eb); color: var(--muted, #6b7280); white-space: nowrap; }
.pill-ok { background: #e3f1e8; color: #1e6b3d; }
.pill-warn { background: #fdf0d8; color: #8a5a00; }
.pill-bad { background: #fbe4e1; color: #a2281b; }
.admin-grid { display: grid; grid-template-columns: minmax(0, 2fr) minmax(260px, 1fr); gap: 1.25rem; align-items: start; }
@media (max-width: 820px) { .admin-grid { grid-template-columns: 1fr; } }
.admin-card { background: var(--card, #fff); border: 1px solid var(--line, #e5e7eb); border-radius: 14px; padding: 1.1rem 1.25rem; box-shadow: var(--shadow, none); margin-bottom: 1.25rem; }
.admin-card h2 { margin: 0 0 .8rem; font-size: 1.1rem; }
.admin-form .field { display: flex; flex-direction: column; gap: .3rem; margin-bottom: .9rem; }
.admin-form .row { display: grid; grid-template-columns: 1fr 1fr; gap: .9rem; }
@media (max-width: 520px) { .admin-form .row { grid-template-columns: 1fr; } }
.admin-form label { font-weight: 600; font-size: .9rem; }
.admin-form input[type=text], .admin-form input[type=number], .admin-form select, .admin-form textarea, .admin-form input[type=file] {
  font: inherit; padding: .5rem .6rem; border: 1px solid #d1d5db; border-radius: .45rem; background: var(--card, #fff); width: 100%; box-sizing: border-box; }
.admin-form textarea { min-height: 7rem; resize: vertical; }
.admin-form .admin-check { flex-direction: row; align-items: center; gap: .5rem; }
.admin-form .admin-check input { width: 1.1rem; height: 1.1rem; margin: 0; }
.admin-form .admin-check label { font-weight: 500; }
.visually-hidden { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); white-space: nowrap; }
.admin-form .hint { color: var(--muted, #6b7280); font-size: .82rem; }
.admin-form .error, .admin-card .error { color: #a2281b; font-size: .88rem; }
.admin-form .invalid input, .admin-form .invalid select, .admin-form .invalid textarea { border-color: #c0392b; }
.admin-form .prefixed { display: flex; align-items: center; gap: .35rem; }
.admin-btn { display: inline-block; font: inherit; font-weight: 600; padding: .5rem 1rem; border-radius: .5rem; border: 1px solid var(--brand, #1f5f4a); background: var(--brand, #1f5f4a); color: #fff; cursor: pointer; text-decoration: none; }
.admin-btn.secondary { background: var(--card, #fff); color: var(--ink, #1d2125); border-color: #d1d5db; }
.admin-btn.small { padding: .25rem .6rem; font-size: .85rem; }
.admin-btn.danger { background: var(--card, #fff); color: #a2281b; border-color: #e2b3ad; }
.admin-stock { display: flex; align-items: baseline; gap: .6rem; margin-bottom: .7rem; }
.admin-stock strong { font-size: 2rem; font-variant-numeric: tabular-nums; }
.admin-inline { display: flex; gap: .5rem; align-items: center; }
.admin-inline input { max-width: 7rem; }
.admin-image { width: 100%; aspect-ratio: 1; object-fit: cover; border-radius: .6rem; background: #f3f4f6; display: block; margin-bottom: .7rem; }
.admin-empty { padding: 2rem; text-align: center; color: var(--muted, #6b7280); }
`
