package main

import (
	"context"
	"errors"
	"net/http"
	"net/mail"
	"net/url"
	"path"
	"strconv"
	"strings"
	"unicode"

	"github.com/alexedwards/argon2id"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"hakit.dev/hakit"
)

// Session keys of the signed-in user, for the header; authorisation reads
// the database (loadUser).
const (
	keyUserName = "user.name"
	keyIsAdmin  = "user.admin"
)

// dummyHash is compared against when no account has the e-mail, so that a
// wrong e-mail takes as long as a wrong password.
const dummyHash = "$argon2id$v=19$m=19456,t=2,p=1$1ZHfJjMYuQiKOp0IkvFD+Q$3GeO36funXRvOYal8sgv25fwHPbHOvTYOQ7LvSAspoQ"

// hashParams are argon2id's parameters for new password hashes: OWASP's
// 19 MiB, 2 iterations, 1 thread, so that a burst of logins does not take
// gigabytes (the library's default is 64 MiB per hash).
func hashParams() *argon2id.Params {
	return &argon2id.Params{Memory: 19 * 1024, Iterations: 2, Parallelism: 1, SaltLength: 16, KeyLength: 32}
}

// user is a customer or an admin.
type user struct {
	ID      int64
	Email   string
	Name    string
	IsAdmin bool
}

// currentUser returns the signed-in user as the session knows them (for
// pages), or nil.
func (s *shop) currentUser(ctx context.Context) *user {
	id, err := strconv.ParseInt(s.sessions.UserID(ctx), 10, 64)
	if err != nil {
		return nil
	}
	return &user{ID: id, Name: s.sessions.GetString(ctx, keyUserName), IsAdmin: s.sessions.GetBool(ctx, keyIsAdmin)}
}

// loadUser reads a user from the database: for decisions that must not
// trust the session's copy (is this user still an admin?).
func (s *shop) loadUser(ctx context.Context, id int64) (*user, error) {
	u := &user{}
	err := s.db.QueryRow(ctx, "SELECT id, email, name, is_admin FROM users WHERE id = $1", id).
		Scan(&u.ID, &u.Email, &u.Name, &u.IsAdmin)
	return u, err
}

// ensureAdmin creates or updates the admin account of SHOP_ADMIN_EMAIL.
// Instances starting together all upsert the same row: the last one's
// password hash stands, and they all hash the same password.
func (s *shop) ensureAdmin(ctx context.Context) error {
	if s.cfg.AdminEmail == "" {
		return nil
	}
	hash, err := argon2id.CreateHash(s.cfg.AdminPassword, hashParams())
	if err != nil {
		return err
	}
	_, err = s.db.Exec(ctx, `INSERT INTO users (email, name, password_hash, is_admin) VALUES ($1, 'Admin', $2, true)
		ON CONFLICT (email) DO UPDATE SET password_hash = EXCLUDED.password_hash, is_admin = true`,
		strings.ToLower(s.cfg.AdminEmail), hash)
	return err
}

func (s *shop) loginForm(w http.ResponseWriter, r *http.Request) {
	s.render(w, r, http.StatusOK, "login.html", map[string]any{"Next": safeNext(r.URL.Query().Get("next"))})
}

// login checks the e-mail and password and signs the user in: new session
// token, durable write (session.Manager.Login).
func (s *shop) login(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if err := parseForm(w, r); err != nil {
		return
	}
	email := strings.ToLower(strings.TrimSpace(r.PostForm.Get("email")))
	password := r.PostForm.Get("password")
	next := safeNext(r.PostForm.Get("next"))
	var u user
	var hash *string
	err := s.db.QueryRow(ctx, "SELECT id, name, is_admin, password_hash FROM users WHERE email = $1", email).
		Scan(&u.ID, &u.Name, &u.IsAdmin, &hash)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		hakit.Error(w, r, err)
		return
	}
	ok := false
	if hash != nil {
		ok, err = argon2id.ComparePasswordAndHash(password, *hash)
	} else {
		_, err = argon2id.ComparePasswordAndHash(password, dummyHash)
	}
	if err != nil {
		s.log.Error("password check", "err", err)
	}
	if !ok {
		s.render(w, r, http.StatusUnauthorized, "login.html", map[string]any{
			"Next": next, "Email": email, "Error": "That e-mail and password do not match an account.",
		})
		return
	}
	if err := s.signIn(ctx, u); err != nil {
		hakit.Error(w, r, err)
		return
	}
	http.Redirect(w, r, next, http.StatusSeeOther)
}

// signIn puts u on the session. The cart and the checkout stay: the
// session is renewed, not emptied, unless another user was signed in.
//
// The session's owner is made before the token renewal so that it is
// carried over with the cart: it is the scope of the checkout keys, and a
// form reviewed before signing in must find its order after. A session of
// another user loses it with the rest, and gets a new one.
func (s *shop) signIn(ctx context.Context, u user) error {
	s.owner(ctx)
	if err := s.sessions.Login(ctx, strconv.FormatInt(u.ID, 10)); err != nil {
		return err
	}
	s.owner(ctx)
	s.sessions.Put(ctx, keyUserName, u.Name)
	s.sessions.Put(ctx, keyIsAdmin, u.IsAdmin)
	return nil
}

func (s *shop) registerForm(w http.ResponseWriter, r *http.Request) {
	s.render(w, r, http.StatusOK, "register.html", map[string]any{"Next": safeNext(r.URL.Query().Get("next"))})
}

// minPassword is the shortest password an account may have.
const minPassword = 8

// register creates a local account and signs it in.
func (s *shop) register(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if err := parseForm(w, r); err != nil {
		return
	}
	f := r.PostForm
	name := strings.TrimSpace(f.Get("name"))
	email := strings.ToLower(strings.TrimSpace(f.Get("email")))
	password := f.Get("password")
	next := safeNext(f.Get("next"))
	errs := map[string]string{}
	if name == "" || len(name) > 100 || strings.ContainsFunc(name, unicode.IsControl) {
		errs["name"] = "Enter your name (up to 100 characters)."
	}
	if !validEmail(email) {
		errs["email"] = "Enter a valid e-mail address."
	}
	if len(password) < minPassword || len(password) > 200 {
		errs["password"] = "Choose a password of at least 8 characters."
	}
	data := map[string]any{"Next": next, "Name": name, "Email": email, "Errors": errs}
	if len(errs) > 0 {
		s.render(w, r, http.StatusUnprocessableEntity, "register.html", data)
		return
	}
	hash, err := argon2id.CreateHash(password, hashParams())
	if err != nil {
		hakit.Error(w, r, err)
		return
	}
	u := user{Email: email, Name: name}
	err = s.db.Write(ctx, func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, "INSERT INTO users (email, name, password_hash) VALUES ($1, $2, $3) RETURNING id",
			email, name, hash).Scan(&u.ID)
	})
	if isUniqueViolation(err, "users_email_key") {
		errs["email"] = "An account with this e-mail exists already: sign in instead."
		s.render(w, r, http.StatusConflict, "register.html", data)
		return
	}
	if err != nil {
		hakit.Error(w, r, err)
		return
	}
	if err := s.signIn(ctx, u); err != nil {
		hakit.Error(w, r, err)
		return
	}
	s.sessions.Flash(ctx, "info", "Welcome, "+name+"! Your account is ready.")
	http.Redirect(w, r, next, http.StatusSeeOther)
}

// logout ends the session (and so the cart) and goes home; a user signed
// in with hakit SSO goes through the provider's end_session first, which
// ends the provider's session too and sends the browser back to the shop.
func (s *shop) logout(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	idToken := s.sessions.GetString(ctx, keySSOIDToken)
	if err := s.sessions.Logout(ctx); err != nil {
		hakit.Error(w, r, err)
		return
	}
	if idToken != "" && s.sso != nil {
		if end := s.sso.logoutURL(ctx, idToken); end != "" {
			http.Redirect(w, r, end, http.StatusSeeOther)
			return
		}
		s.log.Warn("sso: signed out of the shop only: the provider's end_session cannot be reached")
	}
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

// validEmail accepts a bare address (no display name) of sensible length.
func validEmail(email string) bool {
	if len(email) > 254 {
		return false
	}
	a, err := mail.ParseAddress(email)
	return err == nil && a.Address == email && a.Name == ""
}

// safeNext returns a local path to go to after login, "/" otherwise: never
// another site (an open redirect). Browsers drop tabs and newlines from a
// URL and read "\\" as "/", so "/\t/evil.example" and "/\\evil.example" lead
// elsewhere: a backslash or a control character anywhere is refused, and
// the path must start with exactly one "/" and be clean (path.Clean).
func safeNext(next string) string {
	bad := func(r rune) bool { return r == '\\' || unicode.IsControl(r) }
	if next == "" || strings.ContainsFunc(next, bad) {
		return "/"
	}
	u, err := url.Parse(next)
	if err != nil || u.Scheme != "" || u.Host != "" || u.User != nil || u.Opaque != "" || strings.ContainsFunc(u.Path, bad) {
		return "/"
	}
	// No "." or ".." segments and no empty ones: what a browser resolves
	// is what was checked.
	clean := path.Clean(u.Path)
	if !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") || !strings.HasPrefix(u.Path, "/") ||
		(u.Path != clean && u.Path != clean+"/") {
		return "/"
	}
	return next
}

// isUniqueViolation reports whether err is PostgreSQL's unique violation
// of the named constraint.
func isUniqueViolation(err error, constraint string) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23505" && pe.ConstraintName == constraint
}
