package main

import (
	"cmp"
	"context"
	"crypto/subtle"
	"errors"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/alexedwards/argon2id"
	"github.com/go-chi/chi/v5"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"

	"hakit.dev/dbrouter"
	"hakit.dev/hakit"
	"hakit.dev/session"
)

// Session keys.
const (
	sessAuthTime = "auth_time" // Unix seconds of the last password check
	sessEpoch    = "epoch"     // the users.session_epoch the login was made under
)

// authRequestMaxAge bounds the time between /authorize and the login.
const authRequestMaxAge = time.Hour

// web is the provider's own pages: registration, login, consent,
// logout, the account page and the admin page for clients.
type web struct {
	st          *storage
	db          *dbrouter.Router
	sessions    *session.Manager
	pages       *hakit.Templates
	provider    *op.Provider
	callback    func(context.Context, string) string
	argon       *argon2id.Params
	admins      []string // e-mail addresses with access to /admin
	checkSector bool
	hc          *http.Client
	log         *slog.Logger
	// dummyHash is checked against when the e-mail is unknown, so that a
	// login takes as long whether or not the account exists.
	dummyHash string
	// mail makes and sends the verification and password-reset links.
	mail *mailer
	// requireVerified: an account whose address is not verified cannot
	// sign in to a client (SSO_REQUIRE_VERIFIED_EMAIL).
	requireVerified bool
	// mailPerAddress, mailPerIP: mails (links) per address and per client
	// address per throttle window.
	mailPerAddress, mailPerIP int64
}

func (wb *web) routes(r chi.Router) {
	r.Group(func(r chi.Router) {
		r.Use(wb.currentSession) // a session from before a password reset is signed out
		r.Get("/", wb.home)
		r.Get("/register", wb.registerForm)
		r.Post("/register", wb.register)
		r.Get("/login", wb.loginForm)
		r.Post("/login", wb.login)
		r.Get("/consent", wb.consentForm)
		r.Post("/consent", wb.consent)
		r.Get("/logout", wb.logoutForm)
		r.Post("/logout", wb.logout)
		r.Get("/logged-out", wb.loggedOut)
		r.Post("/account/apps/{client}/revoke", wb.revokeApp)
		r.Post("/account/verify-email", wb.resendVerification)
		r.Get("/verify", wb.verifyEmail)
		r.Get("/forgot", wb.forgotForm)
		r.Post("/forgot", wb.forgot)
		r.Get("/reset", wb.resetForm)
		r.Post("/reset", wb.reset)
		r.Get("/admin/clients", wb.adminClients)
		r.Post("/admin/clients", wb.adminAddClient)
		r.Post("/admin/clients/{client}/delete", wb.adminDeleteClient)
	})
}

// page is what every page template gets.
type page struct {
	Title   string
	User    *user
	Admin   bool
	Flashes []session.FlashMessage
	Error   string
	Data    any
}

func (wb *web) render(w http.ResponseWriter, r *http.Request, status int, name string, p page) {
	ctx := r.Context()
	if uid := wb.sessions.UserID(ctx); uid != "" && p.User == nil {
		if u, err := wb.st.userByID(ctx, uid); err == nil {
			p.User = u
		}
	}
	p.Admin = p.User != nil && slices.Contains(wb.admins, p.User.Email)
	p.Flashes = wb.sessions.Flashes(ctx)
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'; form-action 'self' https: http:")
	wb.pages.Render(w, r, status, name, p)
}

func (wb *web) fail(w http.ResponseWriter, r *http.Request, status int, msg string) {
	hakit.Error(w, r, &hakit.HTTPError{Status: status, Message: msg})
}

// ---- account

type appRow struct {
	ClientID, Name string
	Scopes         []string
	Granted        time.Time
}

func (wb *web) home(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	uid := wb.sessions.UserID(ctx)
	if uid == "" {
		wb.render(w, r, 200, "home.html", page{Title: "hakit SSO"})
		return
	}
	u, err := wb.st.userByID(ctx, uid)
	if errors.Is(err, pgx.ErrNoRows) { // the account is gone
		_ = wb.sessions.Logout(ctx)
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return
	}
	if err != nil {
		hakit.Error(w, r, err)
		return
	}
	var apps []appRow
	err = wb.db.Read(ctx, func(q dbrouter.Querier) error {
		rows, err := q.Query(ctx, `SELECT c.id, c.name, co.scopes, co.granted_at FROM consents co
			JOIN clients c ON c.id = co.client_id WHERE co.user_id = $1 ORDER BY co.granted_at DESC`, uid)
		if err != nil {
			return err
		}
		apps, err = pgx.CollectRows(rows, pgx.RowToStructByPos[appRow])
		return err
	})
	if err != nil {
		hakit.Error(w, r, err)
		return
	}
	wb.render(w, r, 200, "account.html", page{Title: "Your account", User: u, Data: apps})
}

// revokeApp withdraws the consent given to a client and revokes every
// token it holds for the user.
func (wb *web) revokeApp(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	uid := wb.sessions.UserID(ctx)
	if uid == "" {
		http.Redirect(w, r, "/login", http.StatusSeeOther)
		return
	}
	cid := chi.URLParam(r, "client")
	err := wb.db.Write(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "DELETE FROM consents WHERE user_id = $1 AND client_id = $2", uid, cid); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, "UPDATE tokens SET revoked_at = now() WHERE user_id = $1 AND client_id = $2 AND revoked_at IS NULL", uid, cid)
		return err
	})
	if err != nil {
		hakit.Error(w, r, err)
		return
	}
	wb.sessions.Flash(ctx, "info", "Access removed. The app must ask again before it can sign you in.")
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

// ---- registration and login

type loginData struct {
	AuthRequestID string
	Client        string
	Email         string
	Name          string
}

// pendingRequest loads the auth request a login page carries, if any, with
// its client; it answers the errors itself and returns ok=false then.
func (wb *web) pendingRequest(w http.ResponseWriter, r *http.Request, id string) (*authRequest, *client, bool) {
	if id == "" {
		return nil, nil, true
	}
	ctx := r.Context()
	a, err := wb.st.authRequest(ctx, id)
	var nf errNotFound
	if errors.As(err, &nf) || (err == nil && (a.done || time.Since(a.createdAt) > authRequestMaxAge)) {
		wb.fail(w, r, http.StatusBadRequest, "This sign-in link has expired or was already used. Go back to the app and sign in again.")
		return nil, nil, false
	}
	if err != nil {
		hakit.Error(w, r, err)
		return nil, nil, false
	}
	c, err := wb.st.client(ctx, a.clientID)
	if err != nil {
		hakit.Error(w, r, err)
		return nil, nil, false
	}
	return a, c, true
}

func (wb *web) registerForm(w http.ResponseWriter, r *http.Request) {
	a, c, ok := wb.pendingRequest(w, r, r.URL.Query().Get("authRequestID"))
	if !ok {
		return
	}
	d := loginData{}
	if a != nil {
		d.AuthRequestID, d.Client = a.id, c.name
	}
	wb.render(w, r, 200, "register.html", page{Title: "Create your account", Data: d})
}

func (wb *web) register(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if err := hakit.ParseForm(w, r); err != nil {
		hakit.Error(w, r, err)
		return
	}
	f := r.PostForm
	a, c, ok := wb.pendingRequest(w, r, f.Get("authRequestID"))
	if !ok {
		return
	}
	d := loginData{Email: normEmail(f.Get("email")), Name: strings.TrimSpace(f.Get("name"))}
	if a != nil {
		d.AuthRequestID, d.Client = a.id, c.name
	}
	pw := f.Get("password")
	var problem string
	switch {
	case !validEmail(d.Email):
		problem = "Enter a valid e-mail address."
	case utf8.RuneCountInString(d.Name) > 100:
		problem = "The name is too long (100 characters at most)."
	default:
		problem = passwordProblem(pw, f.Get("password2"))
	}
	if problem != "" {
		wb.render(w, r, http.StatusUnprocessableEntity, "register.html", page{Title: "Create your account", Error: problem, Data: d})
		return
	}
	hash, err := argon2id.CreateHash(pw, wb.argon)
	if err != nil {
		hakit.Error(w, r, err)
		return
	}
	var uid string
	err = wb.db.Write(ctx, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, "INSERT INTO users (email, name, password_hash) VALUES ($1, $2, $3) RETURNING id",
			d.Email, d.Name, hash).Scan(&uid); err != nil {
			return err
		}
		// The verification mail, in the same transaction (the outbox):
		// an account never misses it, a rolled-back one never gets it.
		return wb.mail.enqueue(ctx, tx, purposeVerify, uid, d.Email)
	})
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "23505" {
		wb.render(w, r, http.StatusConflict, "register.html", page{Title: "Create your account",
			Error: "An account with this e-mail address exists. Sign in instead.", Data: d})
		return
	}
	if err != nil {
		hakit.Error(w, r, err) // ErrCommitUnknown: 504, the user tries again and finds the account or not
		return
	}
	wb.log.InfoContext(ctx, "account created", "user", uid)
	wb.sessions.Flash(ctx, "info", "Welcome! We sent a link to "+d.Email+" to confirm the address.")
	wb.signedIn(w, r, a, c, uid, 0)
}

// passwordProblem says what is wrong with a new password (pw, typed twice),
// or "".
func passwordProblem(pw, again string) string {
	switch {
	case utf8.RuneCountInString(pw) < 10:
		return "The password needs at least 10 characters."
	case len(pw) > 1024:
		return "The password is too long."
	case pw != again:
		return "The two passwords differ."
	}
	return ""
}

func validEmail(s string) bool {
	at := strings.LastIndexByte(s, '@')
	return at > 0 && at < len(s)-3 && strings.Contains(s[at:], ".") && len(s) <= 254 && !strings.ContainsAny(s, " \t\r\n<>\"")
}

func (wb *web) loginForm(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	a, c, ok := wb.pendingRequest(w, r, r.URL.Query().Get("authRequestID"))
	if !ok {
		return
	}
	uid := wb.sessions.UserID(ctx)
	if a == nil {
		if uid != "" {
			http.Redirect(w, r, "/", http.StatusSeeOther)
			return
		}
		wb.render(w, r, 200, "login.html", page{Title: "Sign in", Data: loginData{}})
		return
	}
	if uid != "" && !wb.needsLogin(ctx, a, uid) {
		wb.afterLogin(w, r, a, c, uid)
		return
	}
	if a.hasPrompt(oidc.PromptNone) {
		op.AuthRequestError(w, r, a, oidc.ErrLoginRequired(), wb.provider)
		return
	}
	wb.render(w, r, 200, "login.html", page{Title: "Sign in", Data: loginData{AuthRequestID: a.id, Client: c.name}})
}

// needsLogin tells whether the signed-in user must enter the password
// again for this request: prompt=login, max_age passed, or an
// id_token_hint naming someone else.
func (wb *web) needsLogin(ctx context.Context, a *authRequest, uid string) bool {
	if a.hasPrompt(oidc.PromptLogin) || (a.hintUserID != "" && a.hintUserID != uid) {
		return true
	}
	if a.maxAge != nil {
		at := time.Unix(wb.sessions.GetInt64(ctx, sessAuthTime), 0)
		return time.Since(at) > time.Duration(*a.maxAge)*time.Second
	}
	return false
}

func (wb *web) login(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if err := hakit.ParseForm(w, r); err != nil {
		hakit.Error(w, r, err)
		return
	}
	f := r.PostForm
	a, c, ok := wb.pendingRequest(w, r, f.Get("authRequestID"))
	if !ok {
		return
	}
	d := loginData{Email: normEmail(f.Get("email"))}
	if a != nil {
		d.AuthRequestID, d.Client = a.id, c.name
	}
	pw := f.Get("password")
	if len(pw) > 1024 {
		pw = "" // never hash megabytes; it cannot match
	}
	if wait := wb.st.throttle.blocked(ctx, "acct", d.Email, clientIP(r)); wait > 0 {
		tooMany(w, r, wait)
		return
	}
	var uid, hash string
	var epoch int64
	err := wb.st.read(ctx, func(q dbrouter.Querier) error {
		return q.QueryRow(ctx, "SELECT id, password_hash, session_epoch FROM users WHERE email = $1", d.Email).Scan(&uid, &hash, &epoch)
	})
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		hakit.Error(w, r, err)
		return
	}
	if hash == "" {
		hash = wb.dummyHash
	}
	match, err := argon2id.ComparePasswordAndHash(pw, hash)
	if err == nil && uid != "" {
		// The replica may not have replayed a password reset yet: the
		// answer is the primary's (the old password must stop working at
		// once, the new one must work at once), with the primary's hash if
		// it is another.
		match, epoch, err = wb.confirmPassword(ctx, uid, pw, hash, match)
		if err != nil {
			hakit.Error(w, r, err)
			return
		}
	}
	if err != nil || !match || uid == "" || pw == "" {
		wb.log.InfoContext(ctx, "login failed", "ip", clientIP(r))
		wb.st.throttle.failed(ctx, "acct", d.Email, clientIP(r))
		wb.render(w, r, http.StatusUnauthorized, "login.html", page{Title: "Sign in", Error: "Wrong e-mail address or password.", Data: d})
		return
	}
	wb.signedIn(w, r, a, c, uid, epoch)
}

// confirmPassword reads the account's hash and session epoch on the
// primary; if the hash is the one pw was checked against (matched: the
// result), that result stands, else pw is compared with the primary's
// hash.
func (wb *web) confirmPassword(ctx context.Context, uid, pw, checked string, matched bool) (bool, int64, error) {
	var hash string
	var epoch int64
	err := wb.st.primary(ctx, func(q dbrouter.Querier) error {
		return q.QueryRow(ctx, "SELECT password_hash, session_epoch FROM users WHERE id = $1", uid).Scan(&hash, &epoch)
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return false, 0, nil // deleted meanwhile
	}
	if err != nil {
		return false, 0, err
	}
	if hash == checked {
		return matched, epoch, nil
	}
	match, err := argon2id.ComparePasswordAndHash(pw, hash)
	return err == nil && match, epoch, nil
}

// signedIn logs uid in on the session (a new token, durable), under the
// account's session epoch, then goes on with the auth request, if any.
// A new login session gets a new session ID (sid); the same user
// entering the password again on it keeps the one it has.
func (wb *web) signedIn(w http.ResponseWriter, r *http.Request, a *authRequest, c *client, uid string, epoch int64) {
	ctx := r.Context()
	again := wb.sessions.UserID(ctx) == uid
	if err := wb.sessions.Login(ctx, uid); err != nil {
		hakit.Error(w, r, err)
		return
	}
	if !again || wb.sessions.GetString(ctx, sessSID) == "" {
		wb.sessions.Put(ctx, sessSID, newSessionID())
	}
	wb.sessions.Put(ctx, sessAuthTime, time.Now().Unix())
	wb.sessions.Put(ctx, sessEpoch, epoch)
	if a == nil {
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return
	}
	wb.afterLogin(w, r, a, c, uid)
}

// afterLogin asks for consent if the user has not given it for these
// scopes, else finishes the auth request and sends the browser back to
// the provider, which answers the client with a code.
func (wb *web) afterLogin(w http.ResponseWriter, r *http.Request, a *authRequest, c *client, uid string) {
	ctx := r.Context()
	if wb.requireVerified {
		u, err := wb.st.userByID(ctx, uid)
		if err != nil {
			hakit.Error(w, r, err)
			return
		}
		if !u.EmailVerified {
			if a.hasPrompt(oidc.PromptNone) {
				op.AuthRequestError(w, r, a, oidc.ErrInteractionRequired().WithDescription("the e-mail address is not verified"), wb.provider)
				return
			}
			wb.render(w, r, http.StatusForbidden, "unverified.html", page{Title: "Confirm your e-mail address", User: u,
				Data: loginData{AuthRequestID: a.id, Client: c.name, Email: u.Email}})
			return
		}
	}
	ok, err := wb.st.hasConsent(ctx, uid, c.id, a.scopes)
	if err != nil {
		hakit.Error(w, r, err)
		return
	}
	if !ok || a.hasPrompt(oidc.PromptConsent) {
		if a.hasPrompt(oidc.PromptNone) {
			op.AuthRequestError(w, r, a, &oidc.Error{ErrorType: "consent_required"}, wb.provider)
			return
		}
		http.Redirect(w, r, "/consent?authRequestID="+url.QueryEscape(a.id), http.StatusSeeOther)
		return
	}
	wb.finish(w, r, a, c, uid, false)
}

func (wb *web) finish(w http.ResponseWriter, r *http.Request, a *authRequest, c *client, uid string, consent bool) {
	ctx := r.Context()
	at := time.Unix(wb.sessions.GetInt64(ctx, sessAuthTime), 0)
	sid := wb.sessions.GetString(ctx, sessSID)
	if sid == "" { // a login session from before session IDs
		sid = newSessionID()
		wb.sessions.Put(ctx, sessSID, sid)
	}
	if err := wb.st.completeAuthRequest(ctx, a, c, uid, sid, at, consent); err != nil {
		var nf errNotFound
		if errors.As(err, &nf) {
			wb.fail(w, r, http.StatusBadRequest, "This sign-in link was already used. Go back to the app and sign in again.")
			return
		}
		hakit.Error(w, r, err)
		return
	}
	http.Redirect(w, r, wb.callback(op.ContextWithIssuer(ctx, wb.provider.IssuerFromRequest(r)), a.id), http.StatusSeeOther)
}

// ---- consent

type consentData struct {
	AuthRequestID string
	Client        string
	ClientID      string
	Host          string
	Scopes        []string
}

var scopeText = map[string]string{
	oidc.ScopeOpenID:        "Know that it is you (an identifier for this app only)",
	oidc.ScopeEmail:         "Your e-mail address",
	oidc.ScopeProfile:       "Your name",
	oidc.ScopeOfflineAccess: "Stay connected while you are away (refresh tokens)",
}

func (wb *web) consentRequest(w http.ResponseWriter, r *http.Request, id string) (*authRequest, *client, string, bool) {
	uid := wb.sessions.UserID(r.Context())
	a, c, ok := wb.pendingRequest(w, r, id)
	if !ok {
		return nil, nil, "", false
	}
	if a == nil || uid == "" {
		wb.fail(w, r, http.StatusBadRequest, "Nothing to agree to: sign in from the app first.")
		return nil, nil, "", false
	}
	return a, c, uid, true
}

func (wb *web) consentForm(w http.ResponseWriter, r *http.Request) {
	a, c, _, ok := wb.consentRequest(w, r, r.URL.Query().Get("authRequestID"))
	if !ok {
		return
	}
	d := consentData{AuthRequestID: a.id, Client: c.name, ClientID: c.id}
	if u, err := url.Parse(a.redirectURI); err == nil {
		d.Host = u.Host
	}
	for _, s := range a.scopes {
		if t, ok := scopeText[s]; ok {
			d.Scopes = append(d.Scopes, t)
		}
	}
	wb.render(w, r, 200, "consent.html", page{Title: "Allow " + c.name + "?", Data: d})
}

func (wb *web) consent(w http.ResponseWriter, r *http.Request) {
	if err := hakit.ParseForm(w, r); err != nil {
		hakit.Error(w, r, err)
		return
	}
	a, c, uid, ok := wb.consentRequest(w, r, r.PostForm.Get("authRequestID"))
	if !ok {
		return
	}
	if r.PostForm.Get("decision") != "allow" {
		op.AuthRequestError(w, r, a, oidc.ErrAccessDenied().WithDescription("the user declined"), wb.provider)
		return
	}
	wb.finish(w, r, a, c, uid, true)
}

// ---- logout

// logoutData is what the sign-out page shows: a plain "Sign out?", or a
// client's sign-out that asks first: of an earlier login session of the
// user signed in, or of another account (Other).
type logoutData struct {
	Pending bool
	Other   bool
	ID      string // the pending sign-out's, sent back with the answer
	Client  string
}

func (wb *web) logoutForm(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	d := logoutData{}
	title := "Sign out?"
	// A pending sign-out lives in the login session: a sign-out of any
	// kind ends it with the session. A lapsed one is none.
	if p, ok := pendingLogoutOf(ctx, wb.sessions.GetString, time.Now()); ok {
		d = logoutData{Pending: true, Other: p.Other, ID: p.ID, Client: p.Client}
		title = "You are still signed in"
		if p.Other {
			title = "Sign out of hakit SSO?"
		}
	}
	wb.render(w, r, 200, "logout.html", page{Title: title, Data: d})
}

// logout signs the user out (decision=stay: does not). The answer to a
// pending sign-out (the form carries its ID) goes on to the client's
// post-logout URI; any other sign-out (the header's form, or an answer
// after the question lapsed) ends at the provider's pages and drops a
// pending one.
func (wb *web) logout(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if err := hakit.ParseForm(w, r); err != nil {
		hakit.Error(w, r, err)
		return
	}
	p, _ := pendingLogoutOf(ctx, wb.sessions.GetString, time.Now()) // a lapsed one is none: an ordinary sign-out
	if wb.sessions.Exists(ctx, sessLogout) {
		wb.sessions.Remove(ctx, sessLogout)
		if id := r.PostForm.Get("logout"); id == "" || subtle.ConstantTimeCompare([]byte(id), []byte(p.ID)) != 1 {
			p.Return = ""
		}
	}
	if r.PostForm.Get("decision") == "stay" {
		http.Redirect(w, r, cmp.Or(p.Return, "/"), http.StatusSeeOther)
		return
	}
	if uid := wb.sessions.UserID(ctx); uid != "" {
		if err := wb.sessions.Logout(ctx); err != nil {
			hakit.Error(w, r, err)
			return
		}
	}
	http.Redirect(w, r, cmp.Or(p.Return, "/logged-out"), http.StatusSeeOther)
}

func (wb *web) loggedOut(w http.ResponseWriter, r *http.Request) {
	wb.render(w, r, 200, "message.html", page{Title: "Signed out", Data: "You are signed out of hakit SSO."})
}

// ---- admin: clients

type adminData struct {
	Clients []clientRow
	Form    clientForm
	Created *createdClient
}

type clientForm struct {
	ID, Name, RedirectURIs, PostLogoutURIs, SectorURI, SubjectType, AppType string
	Public                                                                  bool
}

type createdClient struct{ ID, Secret string }

// admin answers 404 to anyone but an admin: the page does not exist for
// them.
func (wb *web) admin(w http.ResponseWriter, r *http.Request) bool {
	ctx := r.Context()
	uid := wb.sessions.UserID(ctx)
	if uid != "" {
		if u, err := wb.st.userByID(ctx, uid); err == nil && slices.Contains(wb.admins, u.Email) {
			return true
		}
	}
	wb.fail(w, r, http.StatusNotFound, "Not found")
	return false
}

func (wb *web) adminClients(w http.ResponseWriter, r *http.Request) {
	if !wb.admin(w, r) {
		return
	}
	wb.adminPage(w, r, 200, "", adminData{Form: clientForm{SubjectType: subjectPairwise, AppType: "web"}})
}

func (wb *web) adminPage(w http.ResponseWriter, r *http.Request, status int, problem string, d adminData) {
	cs, err := listClients(r.Context(), wb.db)
	if err != nil {
		hakit.Error(w, r, err)
		return
	}
	d.Clients = cs
	wb.render(w, r, status, "admin.html", page{Title: "Clients", Error: problem, Data: d})
}

func (wb *web) adminAddClient(w http.ResponseWriter, r *http.Request) {
	if !wb.admin(w, r) {
		return
	}
	if err := hakit.ParseForm(w, r); err != nil {
		hakit.Error(w, r, err)
		return
	}
	f := r.PostForm
	form := clientForm{ID: strings.TrimSpace(f.Get("id")), Name: strings.TrimSpace(f.Get("name")),
		RedirectURIs: f.Get("redirect_uris"), PostLogoutURIs: f.Get("post_logout_redirect_uris"),
		SectorURI: strings.TrimSpace(f.Get("sector_identifier_uri")), SubjectType: f.Get("subject_type"),
		AppType: f.Get("app_type"), Public: f.Get("public") == "on"}
	spec := clientSpec{ID: form.ID, Name: form.Name, Public: form.Public, AppType: form.AppType,
		RedirectURIs: strings.Fields(form.RedirectURIs), PostLogoutRedirectURIs: strings.Fields(form.PostLogoutURIs),
		SubjectType: form.SubjectType, SectorIdentifierURI: form.SectorURI}
	sector, err := spec.validate(r.Context(), wb.hc, wb.checkSector)
	var secret string
	if err == nil {
		secret, err = registerClient(r.Context(), wb.db, spec, sector, false)
	}
	if errors.Is(err, errRegistration) || errors.Is(err, errClientExists) {
		wb.adminPage(w, r, http.StatusUnprocessableEntity, err.Error(), adminData{Form: form})
		return
	}
	if err != nil {
		hakit.Error(w, r, err)
		return
	}
	wb.log.InfoContext(r.Context(), "client registered", "client_id", spec.ID, "sector", sector)
	wb.adminPage(w, r, http.StatusCreated, "", adminData{Created: &createdClient{ID: spec.ID, Secret: secret},
		Form: clientForm{SubjectType: subjectPairwise, AppType: "web"}})
}

func (wb *web) adminDeleteClient(w http.ResponseWriter, r *http.Request) {
	if !wb.admin(w, r) {
		return
	}
	id := chi.URLParam(r, "client")
	if err := deleteClient(r.Context(), wb.db, id); err != nil {
		hakit.Error(w, r, err)
		return
	}
	wb.sessions.Flash(r.Context(), "info", "Client "+id+" deleted, with every token issued to it.")
	http.Redirect(w, r, "/admin/clients", http.StatusSeeOther)
}
