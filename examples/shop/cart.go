package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"

	"hakit.dev/dbrouter"
	"hakit.dev/hakit"
)

// The cart lives in the session, one key per line ("cart.<product id>" →
// quantity), so that two tabs adding different products at once both keep
// theirs (the session store saves only the keys a request changed).
const (
	cartPrefix   = "cart."
	maxQty       = 99 // the most of one product per order line
	maxCartLines = 50
)

// cartItems returns the cart: product ID → quantity.
func (s *shop) cartItems(ctx context.Context) map[int64]int {
	items := map[int64]int{}
	for _, k := range s.sessions.Keys(ctx) {
		id, err := strconv.ParseInt(strings.TrimPrefix(k, cartPrefix), 10, 64)
		if !strings.HasPrefix(k, cartPrefix) || err != nil {
			continue
		}
		if qty := s.sessions.GetInt(ctx, k); qty > 0 {
			items[id] = qty
		}
	}
	return items
}

// cartCount is the number of articles in the cart, for the header.
func (s *shop) cartCount(ctx context.Context) int {
	n := 0
	for _, qty := range s.cartItems(ctx) {
		n += qty
	}
	return n
}

// clearCart empties the cart.
func (s *shop) clearCart(ctx context.Context) {
	for id := range s.cartItems(ctx) {
		s.sessions.Remove(ctx, cartKey(id))
	}
}

func cartKey(id int64) string { return cartPrefix + strconv.FormatInt(id, 10) }

// cartLine is a line of the cart with the product as the database has it
// now.
type cartLine struct {
	Product product
	Qty     int
	Problem string // why the line cannot be ordered as it is, or ""
}

// Total is the line's price.
func (l cartLine) Total() int64 { return l.Product.PriceCents * int64(l.Qty) }

// cartView is the cart priced from the database.
type cartView struct {
	Lines    []cartLine
	Gone     []int64 // product IDs in the cart no longer sold
	Total    int64
	Count    int
	Problems bool // a line asks for more than is in stock
}

// loadCart prices items from the database, in product ID order.
func loadCart(ctx context.Context, q dbrouter.Querier, items map[int64]int) (cartView, error) {
	var v cartView
	if len(items) == 0 {
		return v, nil
	}
	ids := make([]int64, 0, len(items))
	for id := range items {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	products, err := queryProducts(ctx, q, `SELECT `+productColumns+` FROM products p JOIN categories c ON c.id = p.category_id
		WHERE p.active AND p.id = ANY($1) ORDER BY p.id`, ids)
	if err != nil {
		return v, err
	}
	byID := map[int64]product{}
	for _, p := range products {
		byID[p.ID] = p
	}
	for _, id := range ids {
		p, ok := byID[id]
		if !ok {
			v.Gone = append(v.Gone, id)
			continue
		}
		l := cartLine{Product: p, Qty: items[id]}
		switch {
		case p.Stock == 0:
			l.Problem = "Sold out"
		case l.Qty > p.Stock:
			l.Problem = fmt.Sprintf("Only %d left", p.Stock)
		}
		v.Problems = v.Problems || l.Problem != ""
		v.Lines = append(v.Lines, l)
		v.Total += l.Total()
		v.Count += l.Qty
	}
	return v, nil
}

// viewCart loads the cart of the session and drops the lines of products
// no longer sold, telling the user.
func (s *shop) viewCart(ctx context.Context) (cartView, error) {
	var v cartView
	if err := s.settlePlaced(ctx); err != nil {
		return v, err
	}
	items := s.cartItems(ctx)
	err := s.db.Read(ctx, func(q dbrouter.Querier) (err error) {
		v, err = loadCart(ctx, q, items)
		return err
	})
	if err != nil {
		return v, err
	}
	for _, id := range v.Gone {
		s.sessions.Remove(ctx, cartKey(id))
	}
	if len(v.Gone) > 0 {
		s.sessions.Flash(ctx, "error", "Some items in your cart are no longer sold and were removed.")
	}
	return v, nil
}

// cart shows the cart.
func (s *shop) cart(w http.ResponseWriter, r *http.Request) {
	v, err := s.viewCart(r.Context())
	if err != nil {
		hakit.Error(w, r, err)
		return
	}
	s.render(w, r, http.StatusOK, "cart.html", map[string]any{"Cart": v})
}

// errBadProduct is the answer to a product ID that is not one of the
// catalog's: a tampered form.
func errBadProduct() error {
	return &hakit.HTTPError{Status: http.StatusBadRequest, Message: "That product is not in our catalog."}
}

// parseProductID reads a form's product_id.
func parseProductID(v string) (int64, error) {
	id, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
	if err != nil || id <= 0 {
		return 0, errBadProduct()
	}
	return id, nil
}

// parseQty reads a form's quantity: a whole number from lowest to maxQty.
func parseQty(v string, lowest int) (int, error) {
	qty, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || qty < lowest || qty > maxQty {
		return 0, &hakit.HTTPError{Status: http.StatusBadRequest,
			Message: fmt.Sprintf("The quantity must be a whole number from %d to %d.", lowest, maxQty)}
	}
	return qty, nil
}

// activeProduct reads a product that is for sale; errBadProduct() if none.
func (s *shop) activeProduct(ctx context.Context, id int64) (product, error) {
	var p product
	err := s.db.Read(ctx, func(q dbrouter.Querier) error {
		ps, err := queryProducts(ctx, q, `SELECT `+productColumns+` FROM products p JOIN categories c ON c.id = p.category_id
			WHERE p.active AND p.id = $1`, id)
		if err == nil && len(ps) == 0 {
			err = pgx.ErrNoRows
		}
		if err == nil {
			p = ps[0]
		}
		return err
	})
	if errors.Is(err, pgx.ErrNoRows) {
		err = errBadProduct()
	}
	return p, err
}

// cartAdd adds qty (default 1) of a product to the cart, as many as are in
// stock.
func (s *shop) cartAdd(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if err := parseForm(w, r); err != nil {
		return
	}
	id, err := parseProductID(r.PostForm.Get("product_id"))
	qty := 1
	if err == nil && r.PostForm.Has("qty") {
		qty, err = parseQty(r.PostForm.Get("qty"), 1)
	}
	if err != nil {
		hakit.Error(w, r, err)
		return
	}
	p, err := s.activeProduct(ctx, id)
	if err != nil {
		hakit.Error(w, r, err)
		return
	}
	items := s.cartItems(ctx)
	if _, ok := items[id]; !ok && len(items) >= maxCartLines {
		s.sessions.Flash(ctx, "error", fmt.Sprintf("Your cart holds up to %d different products.", maxCartLines))
		http.Redirect(w, r, "/cart", http.StatusSeeOther)
		return
	}
	s.setLine(ctx, p, items[id]+qty)
	http.Redirect(w, r, "/cart", http.StatusSeeOther)
}

// cartUpdate sets a line's quantity; 0 removes it.
func (s *shop) cartUpdate(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if err := parseForm(w, r); err != nil {
		return
	}
	id, err := parseProductID(r.PostForm.Get("product_id"))
	qty := 0
	if err == nil {
		qty, err = parseQty(r.PostForm.Get("qty"), 0)
	}
	if err != nil {
		hakit.Error(w, r, err)
		return
	}
	if qty == 0 {
		s.sessions.Remove(ctx, cartKey(id))
		s.sessions.Durable(ctx)
		http.Redirect(w, r, "/cart", http.StatusSeeOther)
		return
	}
	if _, ok := s.cartItems(ctx)[id]; !ok {
		hakit.Error(w, r, &hakit.HTTPError{Status: http.StatusBadRequest, Message: "That product is not in your cart."})
		return
	}
	p, err := s.activeProduct(ctx, id)
	if err != nil {
		hakit.Error(w, r, err)
		return
	}
	s.setLine(ctx, p, qty)
	http.Redirect(w, r, "/cart", http.StatusSeeOther)
}

// setLine puts qty of p in the cart, capped at maxQty and at the stock,
// and says so in a flash message.
func (s *shop) setLine(ctx context.Context, p product, qty int) {
	// A cart change must outlive a Redis failover: a customer who saw
	// "your cart holds 2" and finds it empty at checkout leaves.
	s.sessions.Durable(ctx)
	switch {
	case p.Stock == 0:
		s.sessions.Remove(ctx, cartKey(p.ID))
		s.sessions.Flash(ctx, "error", p.Name+" is sold out.")
		return
	case qty > p.MaxQty():
		qty = p.MaxQty()
		s.sessions.Flash(ctx, "info", fmt.Sprintf("You can order up to %d of %s; your cart holds %d.", qty, p.Name, qty))
	default:
		s.sessions.Flash(ctx, "info", fmt.Sprintf("Your cart holds %d × %s.", qty, p.Name))
	}
	s.sessions.Put(ctx, cartKey(p.ID), qty)
}
