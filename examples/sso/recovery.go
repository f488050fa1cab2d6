package main

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/alexedwards/argon2id"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"hakit.dev/dbrouter"
	"hakit.dev/hakit"
)

// The pages of e-mail verification and password reset. Both send a
// single-use link by mail (mailer); the link's token is spent by a
// conditional UPDATE, so of two requests with one token exactly one does
// anything.

// currentSession signs out a session made under an older session epoch
// than the account's (a password reset since), or whose account is gone,
// before the request sees it. The epoch is read on the primary: a reset
// counts at once on every instance.
func (wb *web) currentSession(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		if uid := wb.sessions.UserID(ctx); uid != "" {
			var epoch int64
			err := wb.st.primary(ctx, func(q dbrouter.Querier) error {
				return q.QueryRow(ctx, "SELECT session_epoch FROM users WHERE id = $1", uid).Scan(&epoch)
			})
			switch {
			case errors.Is(err, pgx.ErrNoRows) || (err == nil && epoch != wb.sessions.GetInt64(ctx, sessEpoch)):
				wb.log.InfoContext(ctx, "stale login session signed out", "user", uid)
				if err := wb.sessions.Logout(ctx); err != nil {
					hakit.Error(w, r, err)
					return
				}
			case err != nil:
				hakit.Error(w, r, err)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// linkError answers a refused mailed link with a page saying why and
// where to get a new one; other errors as errors.
func (wb *web) linkError(w http.ResponseWriter, r *http.Request, err error, purpose string) {
	d := linkErrorData{Again: "/", AgainText: "Your account"}
	if purpose == purposeReset {
		d.Again, d.AgainText = "/forgot", "Ask for a new link"
	}
	switch {
	case errors.Is(err, errLinkInvalid):
		d.Message = "This link is not valid. Copy the whole link from the mail, or ask for a new one."
	case errors.Is(err, errLinkUsed):
		d.Message = "This link was already used: each link works once. If you need another, ask for a new one."
	case errors.Is(err, errLinkExpired):
		d.Message = "This link has expired. Ask for a new one."
	default:
		hakit.Error(w, r, err)
		return
	}
	if purpose == purposeVerify {
		d.Message += " A new one is on your account page, once you are signed in."
	}
	wb.render(w, r, http.StatusBadRequest, "link.html", page{Title: "This link does not work", Data: d})
}

type linkErrorData struct {
	Message, Again, AgainText string
}

// ---- e-mail verification

// verifyEmail is the link of a verification mail: it marks the address
// verified. Verifying an address already verified (with another link)
// changes nothing and says so; the same link again is refused.
func (wb *web) verifyEmail(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	var email string
	var already bool
	err := wb.mail.useToken(ctx, purposeVerify, r.URL.Query().Get("token"), func(tx pgx.Tx, uid, addr string) error {
		email = addr
		var verified bool
		err := tx.QueryRow(ctx, `UPDATE users u SET email_verified_at = coalesce(u.email_verified_at, now())
			FROM users old WHERE u.id = $1 AND u.email = $2 AND old.id = u.id
			RETURNING old.email_verified_at IS NOT NULL`, uid, addr).Scan(&verified)
		if errors.Is(err, pgx.ErrNoRows) {
			return errLinkInvalid // the account's address is another one now
		}
		already = verified
		return err
	})
	if err != nil {
		wb.linkError(w, r, err, purposeVerify)
		return
	}
	msg := email + " is verified. Sites you sign in to with hakit SSO now see a verified address."
	if already {
		msg = email + " was already verified. Nothing more to do."
	}
	wb.log.InfoContext(ctx, "e-mail verified", "already", already)
	wb.render(w, r, http.StatusOK, "message.html", page{Title: "E-mail address verified", Data: msg})
}

// resendVerification sends a new verification link to the signed-in
// account's address, within the mail throttle.
func (wb *web) resendVerification(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	uid := wb.sessions.UserID(ctx)
	if uid == "" {
		http.Redirect(w, r, "/login", http.StatusSeeOther)
		return
	}
	if err := hakit.ParseForm(w, r); err != nil {
		hakit.Error(w, r, err)
		return
	}
	u, err := wb.st.userByID(ctx, uid)
	if err != nil {
		hakit.Error(w, r, err)
		return
	}
	if u.EmailVerified {
		wb.sessions.Flash(ctx, "info", u.Email+" is already verified.")
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return
	}
	if wait := wb.st.throttle.take(ctx, "mail", u.Email, clientIP(r), wb.mailPerAddress, wb.mailPerIP); wait > 0 {
		tooManyMails(w, r, wait)
		return
	}
	if err := wb.db.Write(ctx, func(tx pgx.Tx) error {
		return wb.mail.enqueue(ctx, tx, purposeVerify, u.ID, u.Email)
	}); err != nil {
		hakit.Error(w, r, err)
		return
	}
	wb.sessions.Flash(ctx, "info", "We sent a new link to "+u.Email+". It may take a minute to arrive.")
	back := "/"
	if id := r.PostFormValue("authRequestID"); validUUID(id) { // from the page of a sign-in to an app
		back = "/login?authRequestID=" + id
	}
	http.Redirect(w, r, back, http.StatusSeeOther)
}

func validUUID(s string) bool { _, err := uuid.Parse(s); return err == nil && len(s) == 36 }

// tooManyMails answers 429 with Retry-After to a request for a mail.
func tooManyMails(w http.ResponseWriter, r *http.Request, wait time.Duration) {
	hakit.Error(w, r, &hakit.HTTPError{Status: http.StatusTooManyRequests, RetryAfter: wait,
		Message: fmt.Sprintf("Too many mails asked for. Try again in %d seconds.", int(wait.Seconds()+0.999))})
}

// ---- password reset

type forgotData struct {
	Email string
	Sent  bool
}

func (wb *web) forgotForm(w http.ResponseWriter, r *http.Request) {
	wb.render(w, r, http.StatusOK, "forgot.html", page{Title: "Forgot your password?",
		Data: forgotData{Email: normEmail(r.URL.Query().Get("email"))}})
}

// forgot has a reset link mailed if the address has an account, and
// answers the same, doing the same, whether it has one or not: the page
// does not tell who has an account. Requests are throttled per address and per client address,
// known or not.
func (wb *web) forgot(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if err := hakit.ParseForm(w, r); err != nil {
		hakit.Error(w, r, err)
		return
	}
	d := forgotData{Email: normEmail(r.PostForm.Get("email"))}
	if !validEmail(d.Email) {
		wb.render(w, r, http.StatusUnprocessableEntity, "forgot.html", page{Title: "Forgot your password?",
			Error: "Enter a valid e-mail address.", Data: d})
		return
	}
	if wait := wb.st.throttle.take(ctx, "mail", d.Email, clientIP(r), wb.mailPerAddress, wb.mailPerIP); wait > 0 {
		tooManyMails(w, r, wait)
		return
	}
	// The same work for any address: a task in the outbox, which looks
	// the account up and mails the link only if there is one. So a known
	// and an unknown address get the same page in the same time.
	err := wb.db.Write(ctx, func(tx pgx.Tx) error { return wb.mail.enqueueReset(ctx, tx, d.Email) })
	if err != nil {
		hakit.Error(w, r, err)
		return
	}
	d.Sent = true
	wb.render(w, r, http.StatusOK, "forgot.html", page{Title: "Check your mail", Data: d})
}

type resetData struct {
	Token string
}

// resetForm is the link of a reset mail: the form for the new password.
// It checks the link without spending it.
func (wb *web) resetForm(w http.ResponseWriter, r *http.Request) {
	tok := r.URL.Query().Get("token")
	if err := wb.mail.checkToken(r.Context(), purposeReset, tok); err != nil {
		wb.linkError(w, r, err, purposeReset)
		return
	}
	wb.render(w, r, http.StatusOK, "reset.html", page{Title: "Choose a new password", Data: resetData{Token: tok}})
}

// reset sets the new password, in one transaction with the spending of
// the link: the account's session epoch moves on (every login session
// made before is signed out at its next request), every token issued
// for the account is revoked, its other reset links die, and the address
// counts as verified (the link proved it).
func (wb *web) reset(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if err := hakit.ParseForm(w, r); err != nil {
		hakit.Error(w, r, err)
		return
	}
	f := r.PostForm
	d := resetData{Token: f.Get("token")}
	if problem := passwordProblem(f.Get("password"), f.Get("password2")); problem != "" {
		if err := wb.mail.checkToken(ctx, purposeReset, d.Token); err != nil {
			wb.linkError(w, r, err, purposeReset)
			return
		}
		wb.render(w, r, http.StatusUnprocessableEntity, "reset.html", page{Title: "Choose a new password", Error: problem, Data: d})
		return
	}
	if !validToken(d.Token) { // before the slow hash
		wb.linkError(w, r, errLinkInvalid, purposeReset)
		return
	}
	hash, err := argon2id.CreateHash(f.Get("password"), wb.argon)
	if err != nil {
		hakit.Error(w, r, err)
		return
	}
	var uid string
	err = wb.mail.useToken(ctx, purposeReset, d.Token, func(tx pgx.Tx, id, email string) error {
		uid = id
		tag, err := tx.Exec(ctx, `UPDATE users SET password_hash = $2, session_epoch = session_epoch + 1,
			email_verified_at = coalesce(email_verified_at, now()) WHERE id = $1 AND email = $3`, id, hash, email)
		if err != nil {
			return err
		}
		if tag.RowsAffected() != 1 {
			return errLinkInvalid // the account's address is another one now
		}
		if _, err := tx.Exec(ctx, "UPDATE tokens SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL", id); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, "UPDATE mail_tokens SET used_at = now() WHERE user_id = $1 AND purpose = $2 AND used_at IS NULL",
			id, purposeReset)
		return err
	})
	if err != nil {
		wb.linkError(w, r, err, purposeReset)
		return
	}
	wb.log.InfoContext(ctx, "password reset", "user", uid)
	if wb.sessions.UserID(ctx) != "" {
		if err := wb.sessions.Logout(ctx); err != nil {
			hakit.Error(w, r, err)
			return
		}
	}
	wb.sessions.Flash(ctx, "info", "Your password is changed, and you are signed out everywhere. Sign in with the new password.")
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}
