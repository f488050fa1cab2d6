package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"hakit.dev/dbrouter"
	"hakit.dev/hakit"
	"hakit.dev/jobs"
)

// Session keys of the checkout in progress.
const (
	keyAddress = "checkout.address" // the address, as JSON
	keyCard    = "checkout.card"    // the last four digits of an accepted card
	keyOwner   = "owner"            // a random ID: whose orders an anonymous session placed
	// keyReviewed is the review page last shown: its key and the hex hash
	// of the cart lines and address it showed ("<key> <hash>").
	keyReviewed = "checkout.reviewed"
)

// address is where an order goes.
type address struct {
	Name    string `json:"name"`
	Email   string `json:"email"`
	Street  string `json:"street"`
	City    string `json:"city"`
	Zip     string `json:"zip"`
	Country string `json:"country"`
}

// checkoutAddress returns the address given in this checkout, or nil.
func (s *shop) checkoutAddress(ctx context.Context) *address {
	var a address
	if err := json.Unmarshal([]byte(s.sessions.GetString(ctx, keyAddress)), &a); err != nil {
		return nil
	}
	return &a
}

// owner returns the session's owner ID, making one if it has none: the
// orders an anonymous customer placed are theirs through it.
func (s *shop) owner(ctx context.Context) string {
	o := s.sessions.GetString(ctx, keyOwner)
	if o == "" {
		var b [16]byte
		_, _ = rand.Read(b[:])
		o = base64.RawURLEncoding.EncodeToString(b[:])
		s.sessions.Put(ctx, keyOwner, o)
		s.sessions.Durable(ctx) // the orders placed by this session hang on it
	}
	return o
}

// checkoutScope is the scope of idempotency keys: the session's owner,
// signed in or not. It must not change while a form is out: signing in
// keeps the owner (signIn), so a form reviewed as a guest and submitted
// again after signing in finds the order it placed.
func (s *shop) checkoutScope(ctx context.Context) string {
	return "s:" + s.owner(ctx)
}

// checkout sends the customer to the first step not done yet.
func (s *shop) checkout(w http.ResponseWriter, r *http.Request) {
	http.Redirect(w, r, s.nextStep(r.Context()), http.StatusSeeOther)
}

// nextStep is the first checkout step the session has not done.
func (s *shop) nextStep(ctx context.Context) string {
	switch {
	case len(s.cartItems(ctx)) == 0:
		return "/cart"
	case s.checkoutAddress(ctx) == nil:
		return "/checkout/address"
	case s.sessions.GetString(ctx, keyCard) == "":
		return "/checkout/payment"
	}
	return "/checkout/review"
}

func (s *shop) addressForm(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if len(s.cartItems(ctx)) == 0 {
		http.Redirect(w, r, "/cart", http.StatusSeeOther)
		return
	}
	a := s.checkoutAddress(ctx)
	if a == nil {
		a = &address{Country: "United States"}
		if u := s.currentUser(ctx); u != nil {
			if full, err := s.loadUser(ctx, u.ID); err == nil {
				a.Name, a.Email = full.Name, full.Email
			}
		}
	}
	s.render(w, r, http.StatusOK, "address.html", map[string]any{"Address": a, "Step": 1})
}

// addressSave checks the address and keeps it for the order.
func (s *shop) addressSave(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if err := parseForm(w, r); err != nil {
		return
	}
	f := r.PostForm
	a := address{
		Name: strings.TrimSpace(f.Get("name")), Email: strings.ToLower(strings.TrimSpace(f.Get("email"))),
		Street: strings.TrimSpace(f.Get("street")), City: strings.TrimSpace(f.Get("city")),
		Zip: strings.TrimSpace(f.Get("zip")), Country: strings.TrimSpace(f.Get("country")),
	}
	errs := map[string]string{}
	for field, v := range map[string]string{"name": a.Name, "street": a.Street, "city": a.City, "zip": a.Zip, "country": a.Country} {
		switch {
		case v == "":
			errs[field] = "Required."
		case len(v) > 200:
			errs[field] = "Too long (200 characters at most)."
		case strings.ContainsFunc(v, unicode.IsControl):
			errs[field] = "Only letters, digits, spaces and punctuation, please."
		}
	}
	if !validEmail(a.Email) {
		errs["email"] = "Enter a valid e-mail address: the confirmation goes there."
	}
	if len(errs) > 0 {
		s.render(w, r, http.StatusUnprocessableEntity, "address.html", map[string]any{"Address": a, "Errors": errs, "Step": 1})
		return
	}
	b, _ := json.Marshal(a)
	s.sessions.Put(ctx, keyAddress, string(b))
	s.sessions.Durable(ctx)
	http.Redirect(w, r, "/checkout/payment", http.StatusSeeOther)
}

func (s *shop) paymentForm(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if s.checkoutAddress(ctx) == nil || len(s.cartItems(ctx)) == 0 {
		http.Redirect(w, r, s.nextStep(ctx), http.StatusSeeOther)
		return
	}
	s.render(w, r, http.StatusOK, "payment.html", map[string]any{"Step": 2})
}

// declinedCard is the test card number the fake payment declines.
const declinedCard = "4000000000000002"

// paymentSave is the fake payment step: any 16 digits are accepted except
// declinedCard. Only the last four digits are kept.
func (s *shop) paymentSave(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if err := parseForm(w, r); err != nil {
		return
	}
	card := strings.Map(func(r rune) rune {
		if r == ' ' || r == '-' {
			return -1
		}
		return r
	}, r.PostForm.Get("card"))
	digits := len(card) == 16 && strings.Trim(card, "0123456789") == ""
	switch {
	case !digits:
		s.render(w, r, http.StatusUnprocessableEntity, "payment.html", map[string]any{"Step": 2,
			"Error": "Enter the 16 digits of your card number."})
		return
	case card == declinedCard:
		s.render(w, r, http.StatusPaymentRequired, "payment.html", map[string]any{"Step": 2, "Declined": true,
			"Error": "Your card was declined. Nothing was charged: try another card."})
		return
	}
	s.sessions.Put(ctx, keyCard, card[12:])
	s.sessions.Durable(ctx)
	http.Redirect(w, r, "/checkout/review", http.StatusSeeOther)
}

// review shows what will be ordered, and the form that places the order
// with a fresh idempotency key.
func (s *shop) review(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if next := s.nextStep(ctx); next != "/checkout/review" {
		http.Redirect(w, r, next, http.StatusSeeOther)
		return
	}
	v, err := s.viewCart(ctx)
	if err != nil {
		hakit.Error(w, r, err)
		return
	}
	if len(v.Lines) == 0 || v.Problems {
		if v.Problems {
			s.sessions.Flash(ctx, "error", "Some items are not available in the quantity you chose.")
		}
		http.Redirect(w, r, "/cart", http.StatusSeeOther)
		return
	}
	s.owner(ctx) // the scope of the key, made now rather than while placing
	a := s.checkoutAddress(ctx)
	key := uuid.NewString()
	// Placing the order checks that the cart and address are still the
	// ones shown here.
	s.sessions.Put(ctx, keyReviewed, key+" "+hex.EncodeToString(requestHash(s.cartItems(ctx), *a)))
	s.sessions.Durable(ctx)
	s.render(w, r, http.StatusOK, "review.html", map[string]any{
		"Cart": v, "Address": a, "Card": s.sessions.GetString(ctx, keyCard),
		"Key": key, "Step": 3,
	})
}

// reviewed returns the key and hash of the review page last shown, or "".
func (s *shop) reviewed(ctx context.Context) (key string, hash []byte) {
	k, h, _ := strings.Cut(s.sessions.GetString(ctx, keyReviewed), " ")
	hash, err := hex.DecodeString(h)
	if err != nil {
		return "", nil
	}
	return k, hash
}

// settlePlaced finishes the checkout of the review page last shown if its
// key placed an order: the request that placed it may have saved its
// emptied cart to a session token that a login renewed meanwhile.
func (s *shop) settlePlaced(ctx context.Context) error {
	key, _ := s.reviewed(ctx)
	if key == "" {
		return nil
	}
	var orderID int64
	err := s.db.QueryRow(ctx, "SELECT order_id FROM checkout_keys WHERE scope = $1 AND key = $2",
		s.checkoutScope(ctx), key).Scan(&orderID)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return nil
	case err != nil:
		return err
	}
	s.finishCheckout(ctx, orderID)
	return nil
}

// orderRequest is what placing an order needs, read from the session.
type orderRequest struct {
	Scope   string // of the key
	Key     string // the idempotency key of the review form
	Hash    []byte // of the lines and the address
	Items   map[int64]int
	Address address
	UserID  *int64
	Owner   string
	Total   int64 // the total the customer saw; -1: not given
}

// requestHash is a hash of what an order asks for: the cart lines in
// product order and the address.
func requestHash(items map[int64]int, a address) []byte {
	ids := make([]int64, 0, len(items))
	for id := range items {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	h := sha256.New()
	for _, id := range ids {
		fmt.Fprintf(h, "%d:%d\n", id, items[id])
	}
	b, _ := json.Marshal(a)
	h.Write(b)
	return h.Sum(nil)
}

// The outcomes of placeOrder other than success, for place to answer.
type (
	// keyUsed: the key placed an order already.
	keyUsed struct {
		OrderID int64
		Hash    []byte
	}
	// soldOut: a line asks for more than is in stock.
	soldOut struct{ Name string }
	// notSold: a product of the cart is no longer sold.
	notSold struct{ ID int64 }
	// totalChanged: prices changed since the customer reviewed the order.
	totalChanged struct{ Seen, Now int64 }
)

func (e *keyUsed) Error() string      { return fmt.Sprintf("key used by order %d", e.OrderID) }
func (e *soldOut) Error() string      { return e.Name + " is sold out" }
func (e *notSold) Error() string      { return fmt.Sprintf("product %d is not sold", e.ID) }
func (e *totalChanged) Error() string { return fmt.Sprintf("total %d, customer saw %d", e.Now, e.Seen) }

// orderMailTask is the task that mails an order's confirmation.
const orderMailTask = "shop:order-mail"

// orderMail is its payload.
type orderMail struct {
	OrderID int64 `json:"order_id"`
}

// placeOrder writes the order in one transaction on the primary: the
// order, its idempotency key, its lines with the prices of the database,
// the conditional stock decrements, and the confirmation mail's task in
// the outbox. Either all of it commits or none.
//
// The key is inserted before any stock is touched: a second submit of the
// same form waits on the first one's key and then fails with a unique
// violation (answered with the first order), instead of being refused as
// sold out by the first one's decrement.
func (s *shop) placeOrder(ctx context.Context, req orderRequest) (int64, error) {
	ids := make([]int64, 0, len(req.Items))
	for id := range req.Items {
		ids = append(ids, id)
	}
	slices.Sort(ids) // rows are locked in ID order: concurrent orders never deadlock
	addr, _ := json.Marshal(req.Address)
	var orderID int64
	err := s.writeOrder(ctx, func(tx pgx.Tx) error {
		orderID = 0 // fn may run again on a new primary
		used := &keyUsed{}
		err := tx.QueryRow(ctx, "SELECT order_id, request_hash FROM checkout_keys WHERE scope = $1 AND key = $2",
			req.Scope, req.Key).Scan(&used.OrderID, &used.Hash)
		if err == nil {
			return used
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		err = tx.QueryRow(ctx, `INSERT INTO orders (user_id, session_owner, email, name, address, total_cents)
			VALUES ($1, $2, $3, $4, $5, 0) RETURNING id`,
			req.UserID, req.Owner, req.Address.Email, req.Address.Name, addr).Scan(&orderID)
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, "INSERT INTO checkout_keys (scope, key, request_hash, order_id) VALUES ($1, $2, $3, $4)",
			req.Scope, req.Key, req.Hash, orderID)
		if err != nil {
			return err
		}
		var total int64
		for _, id := range ids {
			qty := req.Items[id]
			var name string
			var price int64
			err := tx.QueryRow(ctx, `UPDATE products SET stock = stock - $2 WHERE id = $1 AND active AND stock >= $2
				RETURNING name, price_cents`, id, qty).Scan(&name, &price)
			if errors.Is(err, pgx.ErrNoRows) {
				// Sold out, or no longer sold: tell which.
				if err := tx.QueryRow(ctx, "SELECT name FROM products WHERE id = $1 AND active", id).Scan(&name); err != nil {
					return &notSold{ID: id}
				}
				return &soldOut{Name: name}
			}
			if err != nil {
				return err
			}
			_, err = tx.Exec(ctx, "INSERT INTO order_lines (order_id, product_id, name, unit_cents, qty) VALUES ($1, $2, $3, $4, $5)",
				orderID, id, name, price, qty)
			if err != nil {
				return err
			}
			total += price * int64(qty)
		}
		if req.Total >= 0 && total != req.Total {
			return &totalChanged{Seen: req.Total, Now: total}
		}
		if _, err := tx.Exec(ctx, "UPDATE orders SET total_cents = $2 WHERE id = $1", orderID, total); err != nil {
			return err
		}
		_, err = s.outbox.EnqueueTx(ctx, tx, orderMailTask, orderMail{OrderID: orderID}, jobs.Options{MaxRetry: 10})
		return err
	})
	return orderID, err
}

// lookupCheckout finds the order a key placed, on the primary (a replica
// may not have it yet): through a failover it waits for the new primary,
// as a Write does. It returns pgx.ErrNoRows when the key placed nothing.
func (s *shop) lookupCheckout(ctx context.Context, scope, key string) (orderID int64, hash []byte, err error) {
	err = s.db.WriteOpts(ctx, dbrouter.WriteOptions{
		TxOptions:  pgx.TxOptions{AccessMode: pgx.ReadOnly},
		Idempotent: true, // it only reads: run it again rather than ask about its commit
	}, func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, "SELECT order_id, request_hash FROM checkout_keys WHERE scope = $1 AND key = $2",
			scope, key).Scan(&orderID, &hash)
	})
	return orderID, hash, err
}

// validKey accepts the UUID the review page put in the form.
func validKey(key string) bool {
	if len(key) != 36 {
		return false
	}
	_, err := uuid.Parse(key)
	return err == nil
}

// place places the order of the review form once, whatever happens: a
// double click, a reload, a retry after a timeout all get the same order.
func (s *shop) place(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if err := parseForm(w, r); err != nil {
		return
	}
	key := r.PostForm.Get("key")
	if !validKey(key) {
		fail(w, r, http.StatusBadRequest, "This order form is incomplete or damaged. Go back to the review page and place your order from there.")
		return
	}
	total := int64(-1)
	if v := r.PostForm.Get("total"); v != "" {
		var err error
		if total, err = strconv.ParseInt(v, 10, 64); err != nil || total < 0 {
			fail(w, r, http.StatusBadRequest, "This order form is incomplete or damaged. Go back to the review page and place your order from there.")
			return
		}
	}
	scope := s.checkoutScope(ctx)
	items := s.cartItems(ctx)
	a := s.checkoutAddress(ctx)
	if len(items) == 0 || a == nil || s.sessions.GetString(ctx, keyCard) == "" {
		// A reload of the form after the order was placed (which emptied
		// the cart), or a checkout not finished.
		id, _, err := s.lookupCheckout(ctx, scope, key)
		switch {
		case err == nil:
			http.Redirect(w, r, orderURL(id), http.StatusSeeOther)
		case errors.Is(err, pgx.ErrNoRows):
			http.Redirect(w, r, s.nextStep(ctx), http.StatusSeeOther)
		default:
			hakit.Error(w, r, err)
		}
		return
	}
	hash := requestHash(items, *a)
	if rk, rh := s.reviewed(ctx); rk != key || !bytes.Equal(rh, hash) {
		// Not what the review page of this form showed: another tab
		// changed the cart or the address since, or the form is an old
		// one. A form that placed this very content already is answered
		// with its order.
		id, h, err := s.lookupCheckout(ctx, scope, key)
		switch {
		case err == nil && bytes.Equal(h, hash):
			if rk == key {
				s.finishCheckout(ctx, id)
			}
			http.Redirect(w, r, orderURL(id), http.StatusSeeOther)
		case err == nil:
			fail(w, r, http.StatusUnprocessableEntity, "This order form was already used for a different order. "+
				"Review your cart again and place the order from the new page.")
		case errors.Is(err, pgx.ErrNoRows) && rk == key:
			fail(w, r, http.StatusConflict, "Your cart changed since you reviewed it: nothing was ordered. "+
				"Review your order again and place it from there.")
		case errors.Is(err, pgx.ErrNoRows):
			fail(w, r, http.StatusConflict, "This review page is not your latest one: your cart may have changed since. "+
				"Nothing was ordered; review your order again and place it from there.")
		default:
			hakit.Error(w, r, err)
		}
		return
	}
	req := orderRequest{Scope: scope, Key: key, Hash: hash, Items: items, Address: *a,
		Owner: s.owner(ctx), Total: total}
	if u := s.currentUser(ctx); u != nil {
		req.UserID = &u.ID
	}
	id, err := s.placeOrder(ctx, req)
	if isUniqueViolation(err, "checkout_keys_pkey") || errors.Is(err, dbrouter.ErrCommitUnknown) {
		err = s.askKey(ctx, req, err)
	}
	var used *keyUsed
	var sold *soldOut
	var gone *notSold
	var changed *totalChanged
	switch {
	case err == nil:
		s.finishCheckout(ctx, id)
		http.Redirect(w, r, orderURL(id), http.StatusSeeOther)
	case errors.As(err, &used):
		if !slices.Equal(used.Hash, req.Hash) {
			fail(w, r, http.StatusUnprocessableEntity, "This order form was already used for a different order. "+
				"Review your cart again and place the order from the new page.")
			return
		}
		s.finishCheckout(ctx, used.OrderID)
		http.Redirect(w, r, orderURL(used.OrderID), http.StatusSeeOther)
	case errors.As(err, &sold):
		s.render(w, r, http.StatusConflict, "soldout.html", map[string]any{"Name": sold.Name})
	case errors.As(err, &gone):
		s.sessions.Remove(ctx, cartKey(gone.ID))
		fail(w, r, http.StatusConflict, "A product in your cart is no longer sold: it was removed from your cart. "+
			"Nothing was ordered; review your order again.")
	case errors.As(err, &changed):
		fail(w, r, http.StatusConflict, fmt.Sprintf("Prices changed since you reviewed your order (the total is now %s, not %s). "+
			"Nothing was ordered; review your order again.", money(changed.Now), money(changed.Seen)))
	case errors.Is(err, errNotPlaced):
		fail(w, r, http.StatusServiceUnavailable, "We could not confirm your order: it was not placed, "+
			"and it will not be placed twice. Please try again.")
	case errors.Is(err, errUnconfirmed):
		fail(w, r, http.StatusServiceUnavailable, "We could not confirm your order yet, and it may still go through: "+
			"do not place it again now. It will not be placed twice: check My orders in a minute, "+
			"and place it from this page again only if it is not there.")
	default:
		hakit.Error(w, r, err)
	}
}

// The outcomes of askKey after a lost COMMIT answer.
var (
	errNotPlaced   = errors.New("commit outcome unknown: the key placed no order")
	errUnconfirmed = errors.New("commit outcome unknown: the key could not be looked up")
)

// errInFlight: the transaction that inserted a key has not finished yet.
var errInFlight = errors.New("the transaction of the key is still in flight")

// errProbeFree rolls back the probe of proveKey once its insert went in.
var errProbeFree = errors.New("key free")

// keyProbeWait is how long proveKey waits for a transaction holding the key.
const keyProbeWait = 2 * time.Second

// proveKey finds out on the primary whether the key's order committed,
// without guessing: a plain SELECT does not see a transaction still in
// flight (a COMMIT waiting for a synchronous standby, say) that may commit
// after the answer. Instead it inserts the key itself, with a placeholder
// order, in a transaction that is always rolled back, waiting at most
// keyProbeWait for a lock:
//   - a unique violation: the key's order committed, and is returned;
//   - the lock wait timing out: a transaction holding the key is still in
//     flight (errInFlight);
//   - the insert going in: no transaction holds the key, and none can
//     commit it later (pgx.ErrNoRows).
//
// The placeholder takes an order ID from the sequence: a gap, nothing else.
func (s *shop) proveKey(ctx context.Context, scope, key string) (orderID int64, hash []byte, err error) {
	err = s.db.WriteOpts(ctx, dbrouter.WriteOptions{Idempotent: true}, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT set_config('lock_timeout', $1, true)",
			strconv.FormatInt(keyProbeWait.Milliseconds(), 10)+"ms"); err != nil {
			return err
		}
		var id int64
		err := tx.QueryRow(ctx, `INSERT INTO orders (session_owner, email, name, address, total_cents)
			VALUES ('', '', '', '{}', 0) RETURNING id`).Scan(&id)
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, "INSERT INTO checkout_keys (scope, key, request_hash, order_id) VALUES ($1, $2, '', $3)",
			scope, key, id)
		if err == nil {
			return errProbeFree // rolled back: the probe leaves nothing
		}
		return err
	})
	var pe *pgconn.PgError
	switch {
	case errors.Is(err, errProbeFree):
		return 0, nil, pgx.ErrNoRows
	case isUniqueViolation(err, "checkout_keys_pkey"):
		return s.lookupCheckout(ctx, scope, key)
	case errors.As(err, &pe) && pe.Code == "55P03": // lock_not_available
		return 0, nil, errInFlight
	}
	return 0, nil, err
}

// askKey finds out what became of an order whose write failed in a way
// the key can explain:
//   - a unique violation of the key: the same form was submitted twice at
//     once (a double click) and the other submit committed first;
//   - dbrouter.ErrCommitUnknown: the connection was lost during COMMIT and
//     the router could not tell whether it committed.
//
// It asks the primary for the key and returns a *keyUsed when the key has
// an order. After a lost COMMIT it proves the outcome (proveKey): it
// returns errNotPlaced only when no transaction holds the key, and
// errUnconfirmed when one still does (it may commit later) or the primary
// cannot be asked: never a guess, and never a second order.
func (s *shop) askKey(ctx context.Context, req orderRequest, err error) error {
	unknown := errors.Is(err, dbrouter.ErrCommitUnknown)
	if unknown {
		// The request may be near its deadline: the answer matters more.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
	}
	var used keyUsed
	if unknown {
		used.OrderID, used.Hash, err = s.proveKey(ctx, req.Scope, req.Key)
	} else {
		used.OrderID, used.Hash, err = s.lookupCheckout(ctx, req.Scope, req.Key)
	}
	switch {
	case err == nil:
		return &used
	case !unknown:
		return err
	case errors.Is(err, pgx.ErrNoRows):
		s.log.Warn("order not placed: commit outcome unknown, key free", "scope", req.Scope)
		return errNotPlaced
	case errors.Is(err, errInFlight):
		s.log.Warn("order outcome unknown: its transaction is still in flight", "scope", req.Scope)
		return fmt.Errorf("%w: %w", errUnconfirmed, err)
	default:
		s.log.Error("order outcome unknown: key lookup failed", "scope", req.Scope, "err", err)
		return fmt.Errorf("%w: %w", errUnconfirmed, err)
	}
}

// finishCheckout empties the cart and the checkout once the order exists.
func (s *shop) finishCheckout(ctx context.Context, orderID int64) {
	s.clearCart(ctx)
	s.sessions.Remove(ctx, keyAddress)
	s.sessions.Remove(ctx, keyCard)
	s.sessions.Remove(ctx, keyReviewed)
	s.sessions.Put(ctx, "last_order", orderID)
	s.sessions.Durable(ctx)
}

func orderURL(id int64) string { return "/orders/" + strconv.FormatInt(id, 10) }
