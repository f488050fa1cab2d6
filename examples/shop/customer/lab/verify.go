package lab

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"hakit.dev/examples/shop/customer"
)

// Expect is what the customers saw: the lab checks the shop's database
// and mail against it.
type Expect struct {
	// Orders are the orders acknowledged to a customer.
	Orders []customer.Order
	// Submitted are the idempotency keys customers sent place requests
	// with, acknowledged or not.
	Submitted map[string]int
	// Stock is every product's stock before the load (see Lab.Stock).
	Stock map[int64]int
	// MailWait bounds the wait for the outbox to deliver a mail for every
	// order. Defaults to 60s.
	MailWait time.Duration
	// Final says the load has stopped: a mail for an order the database
	// does not hold is then a finding (while the load runs it may be for
	// an order placed after Verify read the database).
	Final bool
}

// Report is what Verify found. Every count but Orders, Acknowledged and
// Mails should be 0.
type Report struct {
	Orders       int // orders in the database
	Acknowledged int // orders acknowledged to customers
	Mails        int // order mails in Mailpit for the orders in the database

	Lost            int // acknowledged orders missing from the database, or held under another key
	Duplicates      int // orders beyond one per idempotency key, or without a key
	LinesMismatch   int // acknowledged orders whose lines differ from the cart the customer held
	Oversold        int // units sold beyond a product's stock
	NegativeStock   int // products with stock below 0
	StockDrift      int // products whose stock fell by other than the units sold
	MissingMails    int // orders without a mail after MailWait
	DuplicateMails  int // mails beyond one per order
	UnexpectedMails int // order mails for orders not in the database (Final only)

	Problems []string // the first few findings, for the log
}

// OK reports whether nothing a shop must never do happened.
func (r Report) OK() bool {
	return r.Lost == 0 && r.Duplicates == 0 && r.LinesMismatch == 0 && r.Oversold == 0 && r.NegativeStock == 0 &&
		r.StockDrift == 0 && r.MissingMails == 0 && r.DuplicateMails == 0 && r.UnexpectedMails == 0
}

func (r Report) String() string {
	s := fmt.Sprintf("%d orders (%d acknowledged), %d mails: %d lost, %d duplicate, %d lines mismatched, %d units oversold, %d negative stock, %d stock drift, %d mails missing, %d duplicate mails, %d unexpected mails",
		r.Orders, r.Acknowledged, r.Mails, r.Lost, r.Duplicates, r.LinesMismatch, r.Oversold, r.NegativeStock, r.StockDrift, r.MissingMails, r.DuplicateMails, r.UnexpectedMails)
	if len(r.Problems) > 0 {
		s += "\n  " + strings.Join(r.Problems, "\n  ")
	}
	return s
}

func (r *Report) problem(format string, args ...any) {
	if len(r.Problems) < 20 {
		r.Problems = append(r.Problems, fmt.Sprintf(format, args...))
	}
}

// connect opens a connection to the Patroni leader.
func (l *Lab) connect(ctx context.Context) (*pgx.Conn, error) {
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	leader, err := l.PG.WaitLeader(wctx, nil)
	if err != nil {
		return nil, err
	}
	return pgx.Connect(ctx, leader.DSN())
}

// Stock returns every product's stock, read on the leader.
func (l *Lab) Stock(ctx context.Context) (map[int64]int, error) {
	c, err := l.connect(ctx)
	if err != nil {
		return nil, err
	}
	defer c.Close(ctx)
	return stock(ctx, c)
}

func stock(ctx context.Context, c interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
}) (map[int64]int, error) {
	rows, _ := c.Query(ctx, `SELECT id, stock FROM products`)
	out := map[int64]int{}
	var id int64
	var n int
	_, err := pgx.ForEachRow(rows, []any{&id, &n}, func() error { out[id] = n; return nil })
	if err != nil {
		return nil, fmt.Errorf("lab: read stock: %w", err)
	}
	return out, nil
}

// ProductIDs returns the ids of the active products.
func (l *Lab) ProductIDs(ctx context.Context) ([]int64, error) {
	c, err := l.connect(ctx)
	if err != nil {
		return nil, err
	}
	defer c.Close(ctx)
	rows, _ := c.Query(ctx, `SELECT id FROM products WHERE active ORDER BY id`)
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return nil, fmt.Errorf("lab: read products: %w", err)
	}
	return ids, nil
}

// Verify compares the database and Mailpit with what the customers saw.
// It waits up to MailWait for the outbox to deliver a mail for every
// order in the database.
func (l *Lab) Verify(ctx context.Context, want Expect) (Report, error) {
	var r Report
	if want.MailWait == 0 {
		want.MailWait = time.Minute
	}
	conn, err := l.connect(ctx)
	if err != nil {
		return r, err
	}
	defer conn.Close(ctx)
	// One snapshot for every read: the load may still be placing orders.
	c, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return r, fmt.Errorf("lab: %w", err)
	}
	defer c.Rollback(ctx)

	// Orders and their keys.
	type dbOrder struct {
		keys  []string
		lines map[int64]int
	}
	orders := map[int64]*dbOrder{}
	rows, _ := c.Query(ctx, `SELECT id FROM orders`)
	var id int64
	if _, err := pgx.ForEachRow(rows, []any{&id}, func() error { orders[id] = &dbOrder{lines: map[int64]int{}}; return nil }); err != nil {
		return r, fmt.Errorf("lab: read orders: %w", err)
	}
	r.Orders = len(orders)
	byKey := map[string][]int64{}
	rows, _ = c.Query(ctx, `SELECT key, order_id FROM checkout_keys`)
	var key string
	if _, err := pgx.ForEachRow(rows, []any{&key, &id}, func() error {
		byKey[key] = append(byKey[key], id)
		if o := orders[id]; o != nil {
			o.keys = append(o.keys, key)
		}
		return nil
	}); err != nil {
		return r, fmt.Errorf("lab: read checkout keys: %w", err)
	}
	sold := map[int64]int{}
	rows, _ = c.Query(ctx, `SELECT order_id, product_id, qty FROM order_lines`)
	var pid int64
	var qty int
	if _, err := pgx.ForEachRow(rows, []any{&id, &pid, &qty}, func() error {
		if o := orders[id]; o != nil {
			o.lines[pid] += qty
		}
		sold[pid] += qty
		return nil
	}); err != nil {
		return r, fmt.Errorf("lab: read order lines: %w", err)
	}

	// Lost: acknowledged and not there, or there under another key.
	r.Acknowledged = len(want.Orders)
	for _, o := range want.Orders {
		got := orders[o.ID]
		if got == nil {
			r.Lost++
			r.problem("order %d (key %s) was acknowledged and is not in the database", o.ID, o.Key)
			continue
		}
		if !slices.Contains(byKey[o.Key], o.ID) {
			r.Lost++
			r.problem("order %d was acknowledged for key %s, which the database ties to %v", o.ID, o.Key, byKey[o.Key])
		}
		if !sameLines(o.Lines, got.lines) {
			r.LinesMismatch++
			r.problem("order %d: the customer's cart held %v, the order has %v", o.ID, o.Lines, got.lines)
		}
	}
	// Duplicates: more than one order for a key, or an order with none.
	for k, ids := range byKey {
		if len(ids) > 1 {
			r.Duplicates += len(ids) - 1
			r.problem("key %s has %d orders %v", k, len(ids), ids)
		}
	}
	for oid, o := range orders {
		if len(o.keys) == 0 {
			r.Duplicates++
			r.problem("order %d has no idempotency key", oid)
		}
	}

	// Stock.
	now, err := stock(ctx, c)
	if err != nil {
		return r, err
	}
	for p, n := range now {
		if n < 0 {
			r.NegativeStock++
			r.problem("product %d has stock %d", p, n)
		}
		before, ok := want.Stock[p]
		if !ok {
			continue
		}
		if sold[p] > before {
			r.Oversold += sold[p] - before
			r.problem("product %d: %d units sold from a stock of %d", p, sold[p], before)
		}
		if before-n != sold[p] {
			r.StockDrift++
			r.problem("product %d: stock went from %d to %d, %d units sold", p, before, n, sold[p])
		}
	}

	// Mails: one per order, waiting for the outbox to drain.
	ids := make([]int64, 0, len(orders))
	for oid := range orders {
		ids = append(ids, oid)
	}
	mails, err := l.waitMails(ctx, ids, want.MailWait)
	if err != nil {
		return r, err
	}
	for oid, n := range mails {
		if orders[oid] != nil {
			r.Mails += n
		}
	}
	for oid := range orders {
		switch n := mails[oid]; {
		case n == 0:
			r.MissingMails++
			r.problem("order %d: no mail after %s", oid, want.MailWait)
		case n > 1:
			r.DuplicateMails += n - 1
			r.problem("order %d: %d mails", oid, n)
		}
	}
	for oid := range mails {
		// While the load runs, a mail may be for an order committed after
		// the snapshot.
		if want.Final && orders[oid] == nil {
			r.UnexpectedMails += mails[oid]
			r.problem("a mail for order %d, which is not in the database", oid)
		}
	}
	return r, nil
}

var subjectRe = regexp.MustCompile(`#(\d+)\b`)

// waitMails counts the order mails per order id until every one of ids
// has one or wait has passed, then once more a moment later, so that a
// second mail sent right after the first is counted too.
func (l *Lab) waitMails(ctx context.Context, ids []int64, wait time.Duration) (map[int64]int, error) {
	deadline := time.Now().Add(wait)
	for {
		mails, err := l.Mails(ctx)
		if err != nil {
			return nil, err
		}
		all := true
		for _, id := range ids {
			if mails[id] == 0 {
				all = false
				break
			}
		}
		if all || time.Now().After(deadline) {
			if !all {
				return mails, nil
			}
			if err := sleep(ctx, 2*time.Second); err != nil {
				return nil, err
			}
			return l.Mails(ctx)
		}
		if err := sleep(ctx, 250*time.Millisecond); err != nil {
			return nil, err
		}
	}
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

// Mails counts Mailpit's order mails ("Your order #ID") per order id.
func (l *Lab) Mails(ctx context.Context) (map[int64]int, error) {
	msgs, err := l.Mail.Messages(ctx)
	if err != nil {
		return nil, err
	}
	out := map[int64]int{}
	for _, m := range msgs {
		if !strings.Contains(m.Subject, "order") {
			continue
		}
		if s := subjectRe.FindStringSubmatch(m.Subject); s != nil {
			id, _ := strconv.ParseInt(s[1], 10, 64)
			out[id]++
		}
	}
	return out, nil
}

func sameLines(believed []customer.Line, got map[int64]int) bool {
	if len(believed) != len(got) {
		return false
	}
	for _, l := range believed {
		if got[l.ProductID] != l.Qty {
			return false
		}
	}
	return true
}
