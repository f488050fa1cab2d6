package main

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/jackc/pgx/v5"

	"hakit.dev/dbrouter"
	"hakit.dev/hakit"
)

// order is a placed order.
type order struct {
	ID        int64
	Email     string
	Name      string
	Address   address
	Total     int64
	Status    string
	CreatedAt time.Time
	MailedAt  *time.Time
	Lines     []orderLine
	Count     int // articles
}

// orderLine is a line of an order, with the name and price it was sold at.
type orderLine struct {
	ProductID int64
	Name      string
	UnitCents int64
	Qty       int
}

// Total is the line's price.
func (l orderLine) Total() int64 { return l.UnitCents * int64(l.Qty) }

// buyer says whose orders a request may see: the signed-in user's and the
// ones this session placed.
type buyer struct {
	UserID *int64
	Owner  string // the session's owner ID, "" if it has none
}

// whose returns the request's buyer.
func (s *shop) whose(ctx context.Context) buyer {
	var c buyer
	if u := s.currentUser(ctx); u != nil {
		c.UserID = &u.ID
	}
	c.Owner = s.sessions.GetString(ctx, keyOwner)
	return c
}

// ofBuyer is the SQL condition of a buyer's orders ($1: the user ID, $2:
// the session's owner ID).
const ofBuyer = `((user_id IS NOT NULL AND user_id = $1) OR (session_owner <> '' AND session_owner = $2))`

// readOrder reads an order with its lines: any order when c is nil, else
// only one of c's. It returns pgx.ErrNoRows when there is no such order.
func readOrder(ctx context.Context, q dbrouter.Querier, id int64, c *buyer) (order, error) {
	var o order
	var addr []byte
	sql := "SELECT id, email, name, address, total_cents, status, created_at, mailed_at FROM orders WHERE id = $1"
	args := []any{id}
	if c != nil {
		sql = "SELECT id, email, name, address, total_cents, status, created_at, mailed_at FROM orders WHERE id = $3 AND " + ofBuyer
		args = []any{c.UserID, c.Owner, id}
	}
	err := q.QueryRow(ctx, sql, args...).Scan(&o.ID, &o.Email, &o.Name, &addr, &o.Total, &o.Status, &o.CreatedAt, &o.MailedAt)
	if err != nil {
		return o, err
	}
	if err := json.Unmarshal(addr, &o.Address); err != nil {
		return o, err
	}
	rows, err := q.Query(ctx, "SELECT product_id, name, unit_cents, qty FROM order_lines WHERE order_id = $1 ORDER BY product_id", id)
	if err != nil {
		return o, err
	}
	o.Lines, err = pgx.CollectRows(rows, pgx.RowToStructByPos[orderLine])
	for _, l := range o.Lines {
		o.Count += l.Qty
	}
	return o, err
}

// order shows an order to its customer. The read goes to a replica that
// has replayed the session's own writes (the order just placed), or to the
// primary.
func (s *shop) order(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	id, err := strconv.ParseInt(chi.URLParam(r, "id"), 10, 64)
	if err != nil || id <= 0 {
		fail(w, r, http.StatusNotFound, "There is no such order.")
		return
	}
	if err := s.settlePlaced(ctx); err != nil {
		hakit.Error(w, r, err)
		return
	}
	c := s.whose(ctx)
	var o order
	err = s.db.Read(ctx, func(q dbrouter.Querier) (err error) {
		o, err = readOrder(ctx, q, id, &c)
		return err
	})
	if errors.Is(err, pgx.ErrNoRows) {
		// Someone else's order looks like none at all.
		fail(w, r, http.StatusNotFound, "There is no such order among yours. Signed out? Sign in to see your orders.")
		return
	}
	if err != nil {
		hakit.Error(w, r, err)
		return
	}
	s.render(w, r, http.StatusOK, "order.html", map[string]any{
		"Order": o, "OrderID": o.ID, "Placed": s.sessions.GetInt64(ctx, "last_order") == o.ID,
	})
}

// orderSummary is a row of "my orders".
type orderSummary struct {
	ID        int64
	CreatedAt time.Time
	Total     int64
	Status    string
	Count     int
}

// myOrders lists the signed-in user's orders, or the ones this session
// placed.
func (s *shop) myOrders(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	c := s.whose(ctx)
	var orders []orderSummary
	if c.UserID != nil || c.Owner != "" {
		err := s.db.Read(ctx, func(q dbrouter.Querier) error {
			rows, err := q.Query(ctx, `SELECT o.id, o.created_at, o.total_cents, o.status,
				(SELECT coalesce(sum(qty), 0) FROM order_lines WHERE order_id = o.id)::int
				FROM orders o WHERE `+ofBuyer+`
				ORDER BY o.id DESC LIMIT 100`, c.UserID, c.Owner)
			if err != nil {
				return err
			}
			orders, err = pgx.CollectRows(rows, pgx.RowToStructByPos[orderSummary])
			return err
		})
		if err != nil {
			hakit.Error(w, r, err)
			return
		}
	}
	s.render(w, r, http.StatusOK, "orders.html", map[string]any{"Orders": orders})
}
