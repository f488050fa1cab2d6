package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/mail"
	"net/smtp"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"hakit.dev/jobs"
)

// pruneKeysTask deletes idempotency keys too old to be replayed.
const pruneKeysTask = "shop:prune-checkout-keys"

// keyLifetime is how long a checkout key answers a replay with its order.
const keyLifetime = 7 * 24 * time.Hour

// registerJobs registers the shop's task handlers on the worker.
func (s *shop) registerJobs(w *jobs.Worker) {
	jobs.Handle(w, orderMailTask, s.sendOrderMail)
	jobs.Handle(w, pruneKeysTask, s.pruneKeys)
}

// schedule adds the shop's periodic tasks (run once per period across all
// instances).
func (s *shop) schedule(sc *jobs.Scheduler) error {
	return sc.Add("shop-prune-checkout-keys", "@every 1h", pruneKeysTask, nil, jobs.Options{MaxRetry: 1})
}

// pruneKeys deletes the checkout keys older than keyLifetime.
func (s *shop) pruneKeys(ctx context.Context, _ struct{}) error {
	tag, err := s.db.Exec(ctx, "DELETE FROM checkout_keys WHERE created_at < now() - make_interval(secs => $1)", keyLifetime.Seconds())
	if err == nil && tag.RowsAffected() > 0 {
		s.log.Info("pruned checkout keys", "count", tag.RowsAffected())
	}
	return err
}

// mailClaimFor is how long a run that claimed an order's mail has to send
// it before another run may take it over: longer than sendMail's timeout.
const mailClaimFor = 5 * time.Minute

// errMailClaimed: another run is sending the order's mail now.
var errMailClaimed = errors.New("another run is sending the mail")

// sendOrderMail sends an order's confirmation, once. Tasks are delivered at
// least once, and two runs of the same task may overlap (a lease that
// expired): each run first claims the order on the primary, with a
// conditional UPDATE that only one of them wins (orders.mail_claimed_at,
// unless orders.mailed_at records a sending or another claim is younger
// than mailClaimFor), sends, then records the sending in mailed_at. A run
// that loses the claim to a run in progress fails, and its retry finds
// mailed_at, or takes over the claim once it is older than mailClaimFor.
//
// What remains is SMTP's own at-least-once: a server that took the mail
// but whose answer was lost, or a crash between the sending and the
// recording, sends it again on a retry (after mailClaimFor, for a crash).
func (s *shop) sendOrderMail(ctx context.Context, t orderMail) error {
	var o order
	claimed := false
	err := s.db.Write(ctx, func(tx pgx.Tx) error {
		claimed = false // fn may run again on a new primary
		var id int64
		err := tx.QueryRow(ctx, `UPDATE orders SET mail_claimed_at = now() WHERE id = $1 AND mailed_at IS NULL
			AND (mail_claimed_at IS NULL OR mail_claimed_at < now() - make_interval(secs => $2)) RETURNING id`,
			t.OrderID, mailClaimFor.Seconds()).Scan(&id)
		if errors.Is(err, pgx.ErrNoRows) {
			var mailed bool
			if err := tx.QueryRow(ctx, "SELECT mailed_at IS NOT NULL FROM orders WHERE id = $1", t.OrderID).Scan(&mailed); err != nil {
				return err
			}
			if mailed {
				return nil // sent by an earlier run
			}
			return errMailClaimed
		}
		if err != nil {
			return err
		}
		claimed = true
		o, err = readOrder(ctx, tx, t.OrderID, nil)
		return err
	})
	if err != nil || !claimed {
		if err != nil {
			err = fmt.Errorf("order %d: %w", t.OrderID, err)
		}
		return err
	}
	msg := orderMessage(o, s.cfg.MailFrom, time.Now())
	if s.cfg.SMTPAddr == "" {
		s.log.Info("order mail (SHOP_SMTP_ADDR unset: not sent)", "order", o.ID, "to", o.Email, "message", string(msg))
	} else if err := sendMail(ctx, s.cfg.SMTPAddr, s.cfg.MailFrom, o.Email, msg); err != nil {
		// Release the claim: the retry need not wait for it to expire.
		if _, rerr := s.db.Exec(ctx, "UPDATE orders SET mail_claimed_at = NULL WHERE id = $1 AND mailed_at IS NULL", o.ID); rerr != nil {
			s.log.Warn("order mail: releasing the claim", "order", o.ID, "err", rerr)
		}
		return fmt.Errorf("order %d: %w", o.ID, err)
	}
	_, err = s.db.Exec(ctx, "UPDATE orders SET mailed_at = now() WHERE id = $1 AND mailed_at IS NULL", o.ID)
	return err
}

// orderMessage is the confirmation mail of o, headers and plain-text body.
func orderMessage(o order, from string, now time.Time) []byte {
	var b strings.Builder
	to := mail.Address{Name: o.Name, Address: o.Email}
	fmt.Fprintf(&b, "From: %s\r\n", (&mail.Address{Name: "Hakit Goods", Address: from}).String())
	fmt.Fprintf(&b, "To: %s\r\n", to.String())
	fmt.Fprintf(&b, "Subject: Your order #%d\r\n", o.ID)
	fmt.Fprintf(&b, "Date: %s\r\n", now.Format(time.RFC1123Z))
	fmt.Fprintf(&b, "Message-ID: <order-%d@%s>\r\n", o.ID, domainOf(from))
	b.WriteString("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n")

	fmt.Fprintf(&b, "Hello %s,\r\n\r\nthank you for your order #%d. We are packing it now.\r\n\r\n", o.Name, o.ID)
	for _, l := range o.Lines {
		fmt.Fprintf(&b, "  %2d x %-40s %12s\r\n", l.Qty, l.Name, money(l.Total()))
	}
	fmt.Fprintf(&b, "\r\n  %-45s %12s\r\n\r\n", "Total", money(o.Total))
	a := o.Address
	fmt.Fprintf(&b, "It goes to:\r\n  %s\r\n  %s\r\n  %s %s\r\n  %s\r\n\r\n", a.Name, a.Street, a.Zip, a.City, a.Country)
	b.WriteString("Hakit Goods\r\n")
	return []byte(b.String())
}

func domainOf(email string) string {
	if i := strings.LastIndexByte(email, '@'); i >= 0 {
		return email[i+1:]
	}
	return "localhost"
}

// sendMail sends msg by SMTP (no TLS, no authentication: a local relay or
// Mailpit), within ctx's deadline.
func sendMail(ctx context.Context, addr, from, to string, msg []byte) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	deadline, _ := ctx.Deadline()
	if err := conn.SetDeadline(deadline); err != nil {
		return err
	}
	host, _, _ := net.SplitHostPort(addr)
	c, err := smtp.NewClient(conn, host)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Mail(from); err != nil {
		return err
	}
	if err := c.Rcpt(to); err != nil {
		return err
	}
	wc, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := wc.Write(msg); err != nil {
		return err
	}
	if err := wc.Close(); err != nil {
		return err
	}
	return c.Quit()
}
