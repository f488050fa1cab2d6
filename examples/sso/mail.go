package main

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/mail"
	"net/smtp"
	"strings"
	"time"
	"unicode"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"hakit.dev/dbrouter"
	"hakit.dev/jobs"
)

// What a mailed link is for (mail_tokens.purpose).
const (
	purposeVerify = "verify" // confirm the account's e-mail address
	purposeReset  = "reset"  // set a new password
)

// mailTask is the task that sends one mailed link (a mail_tokens row).
const mailTask = "sso:mail"

// mailJob is mailTask's payload: the row's ID, never the token.
type mailJob struct {
	ID string `json:"id"`
}

// resetTask is the task of a "forgot password" request: it mails a reset
// link if the address has an account. The request enqueues it for any
// address, so the request does the same work whether or not an account
// has it.
const resetTask = "sso:reset"

// resetJob is resetTask's payload: the ID the link's row gets (so a task
// that runs again finds its row and sends nothing more) and the address.
type resetJob struct {
	ID    string `json:"id"`
	Email string `json:"email"`
}

// mailClaimFor is how long a run that claimed a mail has to send it
// before another run may take it over: longer than sendMail's timeout.
const mailClaimFor = 2 * time.Minute

// errMailClaimed: another run is sending the mail now.
var errMailClaimed = errors.New("another run is sending the mail")

// Why a mailed link was refused.
var (
	errLinkInvalid = errors.New("this link is not valid")
	errLinkUsed    = errors.New("this link was already used")
	errLinkExpired = errors.New("this link has expired")
)

// mailConfig is the mail part of the configuration (SSO_SMTP_ADDR, …).
type mailConfig struct {
	SMTPAddr  string        // host:port; empty: mail is logged (SSO_DEV only)
	From      string        // sender address
	VerifyTTL time.Duration // how long a verification link works
	ResetTTL  time.Duration // how long a password-reset link works
}

// mailer makes the single-use links of e-mail verification and password
// reset and sends them. A link's token is HMAC-SHA-256(key, row ID): the
// database keeps only its SHA-256, the task's payload only the row's ID,
// and the task computes the token again when it writes the mail.
type mailer struct {
	db     *dbrouter.Router
	outbox *jobs.Outbox
	key    [32]byte // derived from SSO_SECRET
	issuer string
	cfg    mailConfig
	log    *slog.Logger
}

// token is the link token of mail_tokens row id: 43 base64url characters.
func (m *mailer) token(id string) string {
	mac := hmac.New(sha256.New, m.key[:])
	mac.Write([]byte(id))
	return base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

// link is the URL a mail carries: <issuer>/verify?token=… or
// <issuer>/reset?token=….
func (m *mailer) link(purpose, token string) string {
	return strings.TrimSuffix(m.issuer, "/") + "/" + purpose + "?token=" + token
}

// validToken tells whether s has the shape of a link token, so that
// garbage never reaches the database.
func validToken(s string) bool {
	if len(s) != 43 {
		return false
	}
	_, err := base64.RawURLEncoding.DecodeString(s)
	return err == nil
}

// enqueue makes a link for the user's address and puts its mail in the
// outbox, inside tx: the mail exists if and only if tx commits.
func (m *mailer) enqueue(ctx context.Context, tx pgx.Tx, purpose, userID, email string) error {
	ttl := m.cfg.VerifyTTL
	if purpose == purposeReset {
		ttl = m.cfg.ResetTTL
	}
	id := uuid.NewString()
	if _, err := tx.Exec(ctx, `INSERT INTO mail_tokens (id, purpose, user_id, email, token_hash, expires_at)
		VALUES ($1, $2, $3, $4, $5, now() + make_interval(secs => $6))`,
		id, purpose, userID, email, hashToken(m.token(id)), ttl.Seconds()); err != nil {
		return err
	}
	_, err := m.outbox.EnqueueTx(ctx, tx, mailTask, mailJob{ID: id}, jobs.Options{MaxRetry: 10, Timeout: time.Minute})
	return err
}

// enqueueReset puts the task of a "forgot password" request for email in
// the outbox, inside tx, whether or not an account has the address.
func (m *mailer) enqueueReset(ctx context.Context, tx pgx.Tx, email string) error {
	_, err := m.outbox.EnqueueTx(ctx, tx, resetTask, resetJob{ID: uuid.NewString(), Email: email},
		jobs.Options{MaxRetry: 10, Timeout: time.Minute})
	return err
}

// reset is resetTask's handler: for an address with an account, it makes
// the link's row under the task's ID (once: a run again finds it) and
// sends it (send); for another address, nothing. Runs of one task at once
// insert the same row: the token's hash comes from the ID, so the loser
// may collide on either unique index, and ON CONFLICT names neither.
func (m *mailer) reset(ctx context.Context, t resetJob) error {
	if _, err := uuid.Parse(t.ID); err != nil {
		return fmt.Errorf("reset %q: not an ID: %w", t.ID, jobs.SkipRetry)
	}
	found := false
	err := m.db.Write(ctx, func(tx pgx.Tx) error {
		var uid string
		err := tx.QueryRow(ctx, "SELECT id FROM users WHERE email = $1", t.Email).Scan(&uid)
		found = err == nil
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `INSERT INTO mail_tokens (id, purpose, user_id, email, token_hash, expires_at)
			VALUES ($1, $2, $3, $4, $5, now() + make_interval(secs => $6)) ON CONFLICT DO NOTHING`,
			t.ID, purposeReset, uid, t.Email, hashToken(m.token(t.ID)), m.cfg.ResetTTL.Seconds())
		return err
	})
	if err != nil || !found {
		return err
	}
	return m.send(ctx, mailJob{ID: t.ID})
}

// useToken spends a link token of the given purpose, in one transaction
// on the primary: a conditional UPDATE that only one request can win, then
// then(tx, user, address), whose error rolls everything back. A token that
// does not exist, was used or has expired changes nothing and gives
// errLinkInvalid, errLinkUsed or errLinkExpired.
func (m *mailer) useToken(ctx context.Context, purpose, token string, then func(tx pgx.Tx, userID, email string) error) error {
	if !validToken(token) {
		return errLinkInvalid
	}
	h := hashToken(token)
	return m.db.Write(ctx, func(tx pgx.Tx) error {
		var uid, email string
		err := tx.QueryRow(ctx, `UPDATE mail_tokens SET used_at = now()
			WHERE token_hash = $1 AND purpose = $2 AND used_at IS NULL AND expires_at > now()
			RETURNING user_id, email`, h, purpose).Scan(&uid, &email)
		if errors.Is(err, pgx.ErrNoRows) {
			return m.whyRefused(ctx, tx, purpose, h)
		}
		if err != nil {
			return err
		}
		return then(tx, uid, email)
	})
}

// checkToken tells whether a link token could be used now, without
// using it (the form a reset link opens).
func (m *mailer) checkToken(ctx context.Context, purpose, token string) error {
	if !validToken(token) {
		return errLinkInvalid
	}
	return m.db.Write(ctx, func(tx pgx.Tx) error {
		var ok bool
		err := tx.QueryRow(ctx, `SELECT used_at IS NULL AND expires_at > now() FROM mail_tokens
			WHERE token_hash = $1 AND purpose = $2`, hashToken(token), purpose).Scan(&ok)
		if err == nil && ok {
			return nil
		}
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		return m.whyRefused(ctx, tx, purpose, hashToken(token))
	})
}

// whyRefused says why the token with hash h cannot be used.
func (m *mailer) whyRefused(ctx context.Context, tx pgx.Tx, purpose string, h []byte) error {
	var used, expired bool
	err := tx.QueryRow(ctx, "SELECT used_at IS NOT NULL, expires_at <= now() FROM mail_tokens WHERE token_hash = $1 AND purpose = $2",
		h, purpose).Scan(&used, &expired)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return errLinkInvalid
	case err != nil:
		return err
	case used:
		return errLinkUsed
	default:
		return errLinkExpired
	}
}

// send is mailTask's handler: it sends one link, once. Tasks are delivered
// at least once and two runs may overlap (a lease that expired), so each
// run first claims the row on the primary with a conditional UPDATE that
// only one of them wins (mail_claimed_at, unless mailed_at records a
// sending or another claim is younger than mailClaimFor), sends, then
// records the sending in mailed_at. A run that finds mailed_at set sends
// nothing; one that loses to a run in progress fails, and its retry finds
// mailed_at, or takes the claim over once it is older than mailClaimFor.
// A link already used or expired is not sent.
//
// What remains is SMTP's own at-least-once: a server that took the mail
// but whose answer was lost, or a crash between the sending and the
// recording, sends it again on a retry.
func (m *mailer) send(ctx context.Context, t mailJob) error {
	if _, err := uuid.Parse(t.ID); err != nil {
		return fmt.Errorf("mail %q: not a row ID: %w", t.ID, jobs.SkipRetry)
	}
	var purpose, email, name string
	var hash []byte
	var live, claimed bool
	err := m.db.Write(ctx, func(tx pgx.Tx) error {
		claimed = false // fn may run again on a new primary
		err := tx.QueryRow(ctx, `UPDATE mail_tokens t SET mail_claimed_at = now() FROM users u
			WHERE t.id = $1 AND u.id = t.user_id AND t.mailed_at IS NULL
			AND (t.mail_claimed_at IS NULL OR t.mail_claimed_at < now() - make_interval(secs => $2))
			RETURNING t.purpose, t.email, u.name, t.token_hash, t.used_at IS NULL AND t.expires_at > now()`,
			t.ID, mailClaimFor.Seconds()).Scan(&purpose, &email, &name, &hash, &live)
		if errors.Is(err, pgx.ErrNoRows) {
			var mailed bool
			err := tx.QueryRow(ctx, "SELECT mailed_at IS NOT NULL FROM mail_tokens WHERE id = $1", t.ID).Scan(&mailed)
			if errors.Is(err, pgx.ErrNoRows) || (err == nil && mailed) {
				return nil // the account is gone, or an earlier run sent it
			}
			if err != nil {
				return err
			}
			return errMailClaimed
		}
		claimed = err == nil
		return err
	})
	if err != nil || !claimed {
		if err != nil {
			err = fmt.Errorf("mail %s: %w", t.ID, err)
		}
		return err
	}
	token := m.token(t.ID)
	if !hmac.Equal(hashToken(token), hash) {
		// Made under another SSO_SECRET: the link would not work.
		return fmt.Errorf("mail %s: the token was made under another SSO_SECRET: %w", t.ID, jobs.SkipRetry)
	}
	if !live {
		m.log.InfoContext(ctx, "mail not sent: the link was used or expired first", "mail", t.ID, "purpose", purpose)
		return nil
	}
	msg := m.message(t.ID, purpose, name, email, m.link(purpose, token), time.Now())
	if m.cfg.SMTPAddr == "" {
		m.log.InfoContext(ctx, "mail (SSO_SMTP_ADDR unset: logged, not sent)", "mail", t.ID, "purpose", purpose,
			"to", email, "message", string(msg))
	} else if err := sendMail(ctx, m.cfg.SMTPAddr, m.cfg.From, email, msg); err != nil {
		// Release the claim: the retry need not wait for it to expire.
		if _, rerr := m.db.Exec(ctx, "UPDATE mail_tokens SET mail_claimed_at = NULL WHERE id = $1 AND mailed_at IS NULL", t.ID); rerr != nil {
			m.log.WarnContext(ctx, "mail: releasing the claim", "mail", t.ID, "err", rerr)
		}
		return fmt.Errorf("mail %s: %w", t.ID, err)
	}
	_, err = m.db.Exec(ctx, "UPDATE mail_tokens SET mailed_at = now() WHERE id = $1 AND mailed_at IS NULL", t.ID)
	if err == nil {
		m.log.InfoContext(ctx, "mail sent", "mail", t.ID, "purpose", purpose)
	}
	return err
}

// message is the mail of one link, headers and plain-text body.
func (m *mailer) message(id, purpose, name, email, link string, now time.Time) []byte {
	var b strings.Builder
	to := mail.Address{Name: name, Address: email}
	fmt.Fprintf(&b, "From: %s\r\n", (&mail.Address{Name: "hakit SSO", Address: m.cfg.From}).String())
	fmt.Fprintf(&b, "To: %s\r\n", to.String())
	greeting := "Hello,"
	if name = strings.Map(dropControl, name); name != "" {
		greeting = "Hello " + name + ","
	}
	switch purpose {
	case purposeReset:
		fmt.Fprintf(&b, "Subject: Reset your hakit SSO password\r\n")
	default:
		fmt.Fprintf(&b, "Subject: Confirm your e-mail address for hakit SSO\r\n")
	}
	fmt.Fprintf(&b, "Date: %s\r\n", now.Format(time.RFC1123Z))
	fmt.Fprintf(&b, "Message-ID: <%s-%s@%s>\r\n", purpose, id, domainOf(m.cfg.From))
	b.WriteString("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n")
	fmt.Fprintf(&b, "%s\r\n\r\n", greeting)
	switch purpose {
	case purposeReset:
		fmt.Fprintf(&b, "someone, hopefully you, asked to reset the password of the hakit SSO account\r\n%s. "+
			"To choose a new password, open this link within %s:\r\n\r\n  %s\r\n\r\n", email, ttlText(m.cfg.ResetTTL), link)
		b.WriteString("The link works once. Setting a new password signs you out everywhere.\r\n" +
			"If you did not ask for this, ignore this mail: your password stays as it is.\r\n\r\n")
	default:
		fmt.Fprintf(&b, "please confirm that %s is your address by opening this link\r\nwithin %s:\r\n\r\n  %s\r\n\r\n",
			email, ttlText(m.cfg.VerifyTTL), link)
		b.WriteString("If you did not create a hakit SSO account, ignore this mail: nothing\r\nhappens without the link.\r\n\r\n")
	}
	b.WriteString("hakit SSO\r\n")
	return []byte(b.String())
}

// dropControl drops control characters (a name's line breaks) from a body line.
func dropControl(r rune) rune {
	if unicode.IsControl(r) {
		return -1
	}
	return r
}

// ttlText says a link's lifetime in words: "1 hour", "48 hours", "30 minutes".
func ttlText(d time.Duration) string {
	switch {
	case d >= time.Hour && d%time.Hour == 0:
		if d == time.Hour {
			return "1 hour"
		}
		return fmt.Sprintf("%d hours", d/time.Hour)
	case d >= time.Minute:
		return fmt.Sprintf("%d minutes", d/time.Minute)
	}
	return d.String()
}

func domainOf(email string) string {
	if i := strings.LastIndexByte(email, '@'); i >= 0 {
		return email[i+1:]
	}
	return "localhost"
}

// sendMail sends msg by SMTP (no TLS, no authentication: a local relay or
// Mailpit), within ctx's deadline and at most 30 seconds.
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
