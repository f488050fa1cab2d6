package main

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"

	"hakit.dev/dbrouter"
	"hakit.dev/hakit"
	"hakit.dev/session"
)

// lifetimes of what the provider issues.
type lifetimes struct {
	Code, AccessToken, RefreshToken, IDToken time.Duration
	// LogoutQuestion is how long a pending sign-out can be answered: the
	// question belongs to the client's request, not to a page found again
	// in the browser's history later.
	LogoutQuestion time.Duration
}

// maxParam bounds the free-text parameters of an authorization request
// (state, nonce, code_challenge), which are stored.
const maxParam = 1024

// storage is the provider's state in PostgreSQL, through dbrouter: every
// change on the primary; protocol state that must be current (auth
// requests, codes, tokens) read on the primary too; the rest (clients,
// users) read from a replica that has the caller's writes, falling back to
// the primary for a row the replica does not have yet.
type storage struct {
	db       *dbrouter.Router
	keys     *keyring
	salt     []byte
	life     lifetimes
	sessions *session.Manager
	throttle *throttle
	log      *slog.Logger
}

var (
	_ op.Storage                        = (*storage)(nil)
	_ op.CanSetUserinfoFromRequest      = (*storage)(nil)
	_ op.CanTerminateSessionFromRequest = (*storage)(nil)
)

// errNotFound is a lookup that found nothing; op treats it as such.
type errNotFound string

func (e errNotFound) Error() string { return string(e) }
func (errNotFound) IsNotFound()     {}

func hashToken(s string) []byte { h := sha256.Sum256([]byte(s)); return h[:] }

// read runs fn on a fresh-enough replica and, when it finds no row there
// or fails there, once more on the primary: a row written by another
// user's request, or a table made by a migration, that the replica may not
// have replayed yet.
func (s *storage) read(ctx context.Context, fn func(dbrouter.Querier) error) error {
	err := s.db.Read(ctx, fn)
	if err != nil && ctx.Err() == nil {
		err = s.primary(ctx, fn)
	}
	return err
}

// primary runs fn on the primary.
func (s *storage) primary(ctx context.Context, fn func(dbrouter.Querier) error) error {
	return s.db.Write(ctx, func(tx pgx.Tx) error { return fn(tx) })
}

// ---- clients

const clientColumns = `id, name, secret_hash, app_type, redirect_uris, post_logout_redirect_uris,
	subject_type, sector_identifier_uri, sector`

func (s *storage) scanClient(row pgx.Row) (*client, error) {
	c := &client{idTokenLifetime: s.life.IDToken}
	err := row.Scan(&c.id, &c.name, &c.secretHash, &c.appType, &c.redirectURIs, &c.postLogoutRedirectURIs,
		&c.subjectType, &c.sectorURI, &c.sector)
	return c, err
}

func (s *storage) client(ctx context.Context, id string) (*client, error) {
	var c *client
	err := s.read(ctx, func(q dbrouter.Querier) error {
		var err error
		c, err = s.scanClient(q.QueryRow(ctx, "SELECT "+clientColumns+" FROM clients WHERE id = $1", id))
		return err
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, errNotFound("unknown client")
	}
	if err != nil {
		return nil, oidc.ErrServerError().WithParent(err)
	}
	return c, nil
}

// GetClientByClientID implements op.OPStorage.
func (s *storage) GetClientByClientID(ctx context.Context, id string) (op.Client, error) {
	c, err := s.client(ctx, id)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// AuthorizeClientIDSecret implements op.OPStorage: the secret's SHA-256
// compared in constant time (secrets are 256 random bits, so a slow hash
// would add nothing but latency).
func (s *storage) AuthorizeClientIDSecret(ctx context.Context, id, secret string) error {
	c, err := s.client(ctx, id)
	if err != nil {
		return err
	}
	if c.secretHash == nil || subtle.ConstantTimeCompare(c.secretHash, hashToken(secret)) != 1 {
		s.throttle.failed(ctx, "client", id, hakit.ClientIP(ctx).String())
		return errors.New("invalid client secret")
	}
	return nil
}

// ---- auth requests and codes

const authRequestColumns = `id, client_id, redirect_uri, state, nonce, scopes, response_type, response_mode,
	prompt, max_age, code_challenge, code_challenge_method, coalesce(hint_user_id::text, ''),
	coalesce(user_id::text, ''), coalesce(subject, ''), sid, coalesce(auth_time, 'epoch'), done,
	code_used_at IS NOT NULL, created_at`

func scanAuthRequest(row pgx.Row) (*authRequest, error) {
	a := &authRequest{}
	err := row.Scan(&a.id, &a.clientID, &a.redirectURI, &a.state, &a.nonce, &a.scopes, &a.responseType,
		&a.responseMode, &a.prompt, &a.maxAge, &a.codeChallenge, &a.codeMethod, &a.hintUserID,
		&a.userID, &a.subject, &a.sid, &a.authTime, &a.done, &a.codeUsed, &a.createdAt)
	return a, err
}

// CreateAuthRequest implements op.AuthStorage. PKCE with S256 is required
// of every client, confidential ones too (op itself requires it only of
// public clients and accepts "plain"). hintSub is the sub of a valid
// id_token_hint, mapped back to the local user here.
func (s *storage) CreateAuthRequest(ctx context.Context, req *oidc.AuthRequest, hintSub string) (op.AuthRequest, error) {
	if req.CodeChallenge == "" {
		return nil, oidc.ErrInvalidRequest().WithDescription("PKCE is required: send code_challenge with code_challenge_method=S256")
	}
	if req.CodeChallengeMethod != oidc.CodeChallengeMethodS256 {
		return nil, oidc.ErrInvalidRequest().WithDescription("code_challenge_method must be S256")
	}
	if req.ResponseType != oidc.ResponseTypeCode {
		return nil, &oidc.Error{ErrorType: "unsupported_response_type", Description: "only response_type=code is supported"}
	}
	if len(req.State) > maxParam || len(req.Nonce) > maxParam || len(req.CodeChallenge) > 128 {
		return nil, oidc.ErrInvalidRequest().WithDescription("state, nonce or code_challenge too long")
	}
	c, err := s.client(ctx, req.ClientID)
	if err != nil {
		return nil, err
	}
	var hint *string
	if hintSub != "" {
		h := uuid.Nil.String() // an unknown sub: nobody's session matches
		if uid, err := s.userBySubject(ctx, c, hintSub); err == nil {
			h = uid
		} else if !errors.Is(err, pgx.ErrNoRows) {
			return nil, err
		}
		hint = &h
	}
	var maxAge *int
	if req.MaxAge != nil {
		m := int(min(*req.MaxAge, 1<<30))
		maxAge = &m
	}
	var a *authRequest
	err = s.db.Write(ctx, func(tx pgx.Tx) error {
		var err error
		a, err = scanAuthRequest(tx.QueryRow(ctx, `INSERT INTO auth_requests (client_id, redirect_uri, state, nonce,
			scopes, response_type, response_mode, prompt, max_age, code_challenge, code_challenge_method, hint_user_id)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING `+authRequestColumns,
			req.ClientID, req.RedirectURI, req.State, req.Nonce, []string(req.Scopes), string(req.ResponseType),
			string(req.ResponseMode), nonNil(req.Prompt), maxAge, req.CodeChallenge, string(req.CodeChallengeMethod), hint))
		return err
	})
	if err != nil {
		return nil, err
	}
	return a, nil
}

// authRequest reads an auth request on the primary.
func (s *storage) authRequest(ctx context.Context, id string) (*authRequest, error) {
	if _, err := uuid.Parse(id); err != nil {
		return nil, errNotFound("unknown auth request")
	}
	var a *authRequest
	err := s.primary(ctx, func(q dbrouter.Querier) error {
		var err error
		a, err = scanAuthRequest(q.QueryRow(ctx, "SELECT "+authRequestColumns+" FROM auth_requests WHERE id = $1", id))
		return err
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, errNotFound("unknown auth request")
	}
	return a, err
}

// AuthRequestByID implements op.AuthStorage. A finished request is
// answered only in the browser session that finished it: whoever learns
// its ID cannot collect the code.
func (s *storage) AuthRequestByID(ctx context.Context, id string) (op.AuthRequest, error) {
	a, err := s.authRequest(ctx, id)
	if err != nil {
		return nil, err
	}
	if a.done && s.sessions.UserID(ctx) != a.userID {
		return nil, errNotFound("auth request of another session")
	}
	if a.codeUsed {
		return nil, errNotFound("auth request already used")
	}
	return a, nil
}

// AuthRequestByCode implements op.AuthStorage. It also returns a request
// whose code was already redeemed: the redemption (consumeCode) is where a
// replay is caught, after op has checked the client and PKCE, so that a
// replay revokes what the code issued.
func (s *storage) AuthRequestByCode(ctx context.Context, code string) (op.AuthRequest, error) {
	var a *authRequest
	err := s.primary(ctx, func(q dbrouter.Querier) error {
		var err error
		a, err = scanAuthRequest(q.QueryRow(ctx, "SELECT "+authRequestColumns+
			" FROM auth_requests WHERE code_hash = $1 AND code_expires_at > now() AND done", hashToken(code)))
		return err
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, errNotFound("unknown or expired code")
	}
	return a, err
}

// SaveAuthCode implements op.AuthStorage: only the hash of the code is
// kept, with its expiry.
func (s *storage) SaveAuthCode(ctx context.Context, id, code string) error {
	return s.db.Write(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE auth_requests SET code_hash = $2, code_expires_at = now() + $3::interval
			WHERE id = $1 AND done AND code_used_at IS NULL`, id, hashToken(code), s.life.Code)
		if err == nil && tag.RowsAffected() != 1 {
			err = oidc.ErrInvalidRequest().WithDescription("auth request already used")
		}
		return err
	})
}

// DeleteAuthRequest implements op.AuthStorage. The row stays, marked as
// redeemed, until the clean-up: a replay of its code must still find it to
// revoke what it issued.
func (s *storage) DeleteAuthRequest(context.Context, string) error { return nil }

// consumeCode marks the code of auth request id redeemed, in the
// transaction that issues its tokens. One conditional UPDATE on the
// primary: of any number of concurrent redemptions, on any instances,
// exactly one finds code_used_at NULL. A loser (a replay) revokes every
// token the code issued, and whatever was refreshed from them (RFC 6749
// §4.1.2), and reports replay.
func consumeCode(ctx context.Context, tx pgx.Tx, id string) (replay bool, err error) {
	tag, err := tx.Exec(ctx, `UPDATE auth_requests SET code_used_at = now()
		WHERE id = $1 AND code_used_at IS NULL AND code_expires_at > now()`, id)
	if err != nil || tag.RowsAffected() == 1 {
		return false, err
	}
	_, err = tx.Exec(ctx, `UPDATE tokens SET revoked_at = now() WHERE revoked_at IS NULL
		AND family_id IN (SELECT family_id FROM tokens WHERE auth_request_id = $1)`, id)
	return true, err
}

// ---- tokens

// issue is the token transaction: a code redeemed (if g is an auth
// request) or a refresh token rotated (if refresh is set), then an access
// token and, with withRefresh, a refresh token in the same family. A code
// replay or a reused refresh token commits the revocation it caused and
// returns invalid_grant.
func (s *storage) issue(ctx context.Context, req op.TokenRequest, refresh string, withRefresh bool) (accessID, newRefresh string, exp time.Time, err error) {
	g, ok := req.(grant)
	if !ok {
		return "", "", time.Time{}, oidc.ErrUnsupportedGrantType()
	}
	var denied string
	err = s.db.Write(ctx, func(tx pgx.Tx) error {
		denied, newRefresh = "", ""
		family := g.tokenFamily()
		if arID := g.authRequestID(); arID != "" {
			replay, err := consumeCode(ctx, tx, arID)
			if err != nil {
				return err
			}
			if replay {
				denied = "code already used: its tokens are revoked"
				return nil
			}
			family = uuid.NewString()
		}
		if refresh != "" {
			err := tx.QueryRow(ctx, `UPDATE tokens SET rotated_at = now() WHERE token_hash = $1 AND kind = 'refresh'
				AND rotated_at IS NULL AND revoked_at IS NULL AND expires_at > now() RETURNING family_id`,
				hashToken(refresh)).Scan(&family)
			if errors.Is(err, pgx.ErrNoRows) {
				if err := revokeFamilyOf(ctx, tx, refresh); err != nil {
					return err
				}
				denied = "refresh token already used: its family is revoked"
				return nil
			}
			if err != nil {
				return err
			}
		}
		var arID *string
		if id := g.authRequestID(); id != "" {
			arID = &id
		}
		ins := `INSERT INTO tokens (kind, client_id, user_id, subject, scopes, audience, amr, auth_time, family_id,
			auth_request_id, token_hash, expires_at, sid) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11,
			now() + $12::interval, $13) RETURNING id, expires_at`
		args := func(kind string, hash []byte, life time.Duration) []any {
			return []any{kind, g.GetClientID(), g.localUserID(), g.GetSubject(), g.GetScopes(), g.GetAudience(),
				nonNil(g.GetAMR()), g.GetAuthTime(), family, arID, hash, life, g.sessionID()}
		}
		if err := tx.QueryRow(ctx, ins, args("access", nil, s.life.AccessToken)...).Scan(&accessID, &exp); err != nil {
			return err
		}
		if withRefresh {
			newRefresh = base64.RawURLEncoding.EncodeToString(randomBytes(32))
			var id string
			var rexp time.Time
			if err := tx.QueryRow(ctx, ins, args("refresh", hashToken(newRefresh), s.life.RefreshToken)...).Scan(&id, &rexp); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return "", "", time.Time{}, err
	}
	if denied != "" {
		s.log.WarnContext(ctx, "token request refused", "client_id", g.GetClientID(), "reason", denied)
		return "", "", time.Time{}, oidc.ErrInvalidGrant().WithDescription("%s", denied)
	}
	return accessID, newRefresh, exp, nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// revokeFamilyOf revokes every token of the refresh token's family.
func revokeFamilyOf(ctx context.Context, tx pgx.Tx, refresh string) error {
	_, err := tx.Exec(ctx, `UPDATE tokens SET revoked_at = now() WHERE revoked_at IS NULL
		AND family_id = (SELECT family_id FROM tokens WHERE token_hash = $1)`, hashToken(refresh))
	return err
}

// CreateAccessToken implements op.AuthStorage.
func (s *storage) CreateAccessToken(ctx context.Context, req op.TokenRequest) (string, time.Time, error) {
	id, _, exp, err := s.issue(ctx, req, "", false)
	return id, exp, err
}

// CreateAccessAndRefreshTokens implements op.AuthStorage: on a code, a
// new family; on a refresh token, its rotation (a reused one revokes the
// family).
func (s *storage) CreateAccessAndRefreshTokens(ctx context.Context, req op.TokenRequest, current string) (string, string, time.Time, error) {
	return s.issue(ctx, req, current, true)
}

// TokenRequestByRefreshToken implements op.AuthStorage. A refresh token
// that was already rotated is a reuse: the family is revoked at once.
func (s *storage) TokenRequestByRefreshToken(ctx context.Context, token string) (op.RefreshTokenRequest, error) {
	r := &refreshRequest{}
	var rotated, revoked, expired bool
	err := s.primary(ctx, func(q dbrouter.Querier) error {
		return q.QueryRow(ctx, `SELECT id, client_id, user_id, subject, scopes, audience, amr, auth_time, family_id,
			sid, rotated_at IS NOT NULL, revoked_at IS NOT NULL, expires_at <= now()
			FROM tokens WHERE token_hash = $1 AND kind = 'refresh'`, hashToken(token)).
			Scan(&r.tokenID, &r.clientID, &r.userID, &r.subject, &r.scopes, &r.audience, &r.amr, &r.authTime, &r.family,
				&r.sid, &rotated, &revoked, &expired)
	})
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return nil, errNotFound("unknown refresh token")
	case err != nil:
		return nil, err
	case rotated && !revoked:
		if err := s.db.Write(ctx, func(tx pgx.Tx) error { return revokeFamilyOf(ctx, tx, token) }); err != nil {
			return nil, err
		}
		s.log.WarnContext(ctx, "refresh token reused: family revoked", "client_id", r.clientID, "family", r.family)
		return nil, errors.New("refresh token reused")
	case rotated || revoked || expired:
		return nil, errors.New("refresh token no longer valid")
	}
	return r, nil
}

// GetRefreshTokenInfo implements op.AuthStorage.
func (s *storage) GetRefreshTokenInfo(ctx context.Context, clientID, token string) (string, string, error) {
	var sub, id string
	err := s.primary(ctx, func(q dbrouter.Querier) error {
		return q.QueryRow(ctx, "SELECT subject, id FROM tokens WHERE token_hash = $1 AND kind = 'refresh' AND client_id = $2",
			hashToken(token), clientID).Scan(&sub, &id)
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return "", "", op.ErrInvalidRefreshToken
	}
	return sub, id, err
}

// RevokeToken implements op.AuthStorage (RFC 7009): an access token by
// its ID, a refresh token with its whole family.
func (s *storage) RevokeToken(ctx context.Context, tokenOrID, userID, clientID string) *oidc.Error {
	err := s.db.Write(ctx, func(tx pgx.Tx) error {
		if userID != "" {
			if _, err := uuid.Parse(tokenOrID); err != nil {
				return nil
			}
			_, err := tx.Exec(ctx, "UPDATE tokens SET revoked_at = now() WHERE id = $1 AND client_id = $2 AND revoked_at IS NULL",
				tokenOrID, clientID)
			return err
		}
		_, err := tx.Exec(ctx, `UPDATE tokens SET revoked_at = now() WHERE revoked_at IS NULL AND family_id =
			(SELECT family_id FROM tokens WHERE token_hash = $1 AND client_id = $2)`, hashToken(tokenOrID), clientID)
		return err
	})
	if err != nil {
		return oidc.ErrServerError().WithParent(err)
	}
	return nil
}

// TerminateSession implements op.AuthStorage; end_session uses
// TerminateSessionFromRequest instead.
func (s *storage) TerminateSession(ctx context.Context, _, _ string) error { return nil }

// TerminateSessionFromRequest implements op.CanTerminateSessionFromRequest.
// With a valid id_token_hint its (pairwise) sub is mapped back to the
// local user. If nobody is signed in here there is nothing to end: it
// redirects at once. If the hint's user is the one signed in here:
//
//   - a hint whose sid is this browser's login session (as the client's
//     sector sees it), or a hint without sid (issued before ID tokens
//     carried one), ends the session and revokes the client's tokens of
//     that login session: those whose sid is the session's, and those
//     without sid (issued before tokens carried one: they cannot be told
//     apart from this browser's, so they go too). The client's tokens of
//     the user's other login sessions (other browsers, other devices)
//     stay;
//   - a hint whose sid names another login session (an earlier one: the
//     user signed out, or was signed out, and signed in again since)
//     ends nothing by itself: the user is asked.
//
// A hint naming another user than the one signed in here (or a sub
// nobody is known by) ends nothing by itself either: the user signed in
// is asked too (OpenID RP-Initiated Logout 1.0 §2), on a page that names
// the client and the account signed in, never the hint's. Questions are
// asked on /logout, with the client's name, and the answer goes on to
// the post-logout URI; a question lapses after
// lifetimes.LogoutQuestion. Without a hint nothing happens yet: the user
// confirms on /logout (a form, so that a cross-site link cannot sign
// anyone out). The post-logout URI is one registered for the hint's
// client, op has checked it.
func (s *storage) TerminateSessionFromRequest(ctx context.Context, req *op.EndSessionRequest) (string, error) {
	if req.IDTokenHintClaims == nil || req.ClientID == "" {
		if s.sessions.Exists(ctx, sessLogout) { // an earlier question left unanswered: this one is plain
			s.sessions.Remove(ctx, sessLogout)
		}
		return "/logout", nil
	}
	c, err := s.client(ctx, req.ClientID)
	if err != nil {
		return "", err
	}
	here := s.sessions.UserID(ctx)
	if here == "" {
		return req.RedirectURI, nil // nobody signed in here: nothing to end
	}
	uid, err := s.userBySubject(ctx, c, req.UserID)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return "", err
	}
	if uid != here {
		s.log.InfoContext(ctx, "end_session for another account than the one signed in: asking", "client_id", c.id, "user", here)
		return s.askLogout(ctx, c, req, true)
	}
	sessionID := s.sessions.GetString(ctx, sessSID)
	if sid := req.IDTokenHintClaims.SessionID; sid != "" && !sameSession(s.salt, c.sector, sessionID, sid) {
		s.log.InfoContext(ctx, "end_session for an earlier login session: asking", "client_id", c.id, "user", uid)
		return s.askLogout(ctx, c, req, false)
	}
	if err := s.db.Write(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `UPDATE tokens SET revoked_at = now() WHERE user_id = $1 AND client_id = $2
			AND sid IN ($3, '') AND revoked_at IS NULL`, uid, c.id, sectorSessionID(s.salt, c.sector, sessionID))
		return err
	}); err != nil {
		return "", err
	}
	if err := s.sessions.Logout(ctx); err != nil {
		return "", err
	}
	return req.RedirectURI, nil
}

// askLogout keeps the client's sign-out as a pending question (other: for
// another account than the one signed in) and sends the browser to the
// page that asks it.
func (s *storage) askLogout(ctx context.Context, c *client, req *op.EndSessionRequest, other bool) (string, error) {
	p := pendingLogout{ID: base64.RawURLEncoding.EncodeToString(randomBytes(16)), Client: c.name, Other: other,
		Expires: time.Now().Add(s.life.LogoutQuestion).Unix()}
	if !strings.HasPrefix(req.RedirectURI, "/") { // not the provider's own page
		p.Return = req.RedirectURI
	}
	if err := s.putPendingLogout(ctx, p); err != nil {
		return "", err
	}
	return "/logout", nil
}

// ---- keys

// SigningKey implements op.AuthStorage.
func (s *storage) SigningKey(ctx context.Context) (op.SigningKey, error) {
	return s.keys.signingKey(ctx)
}

// SignatureAlgorithms implements op.AuthStorage.
func (s *storage) SignatureAlgorithms(context.Context) ([]jose.SignatureAlgorithm, error) {
	return []jose.SignatureAlgorithm{jose.RS256}, nil
}

// KeySet implements op.AuthStorage.
func (s *storage) KeySet(ctx context.Context) ([]op.Key, error) { return s.keys.keySet(ctx) }

// ---- users and claims

// userBySubject maps a sub the client knows back to the local user.
func (s *storage) userBySubject(ctx context.Context, c *client, sub string) (string, error) {
	sector := c.sector
	if c.subjectType == subjectPublic {
		sector = ""
	}
	var uid string
	err := s.read(ctx, func(q dbrouter.Querier) error {
		return q.QueryRow(ctx, "SELECT user_id FROM subjects WHERE sector = $1 AND subject = $2", sector, sub).Scan(&uid)
	})
	return uid, err
}

// user is an account, as pages show it.
type user struct {
	ID, Email, Name string
	EmailVerified   bool
	CreatedAt       time.Time
}

func (s *storage) userByID(ctx context.Context, id string) (*user, error) {
	u := &user{}
	err := s.read(ctx, func(q dbrouter.Querier) error {
		return q.QueryRow(ctx, "SELECT id, email, name, email_verified_at IS NOT NULL, created_at FROM users WHERE id = $1", id).
			Scan(&u.ID, &u.Email, &u.Name, &u.EmailVerified, &u.CreatedAt)
	})
	return u, err
}

func (s *storage) setUserinfo(ctx context.Context, info *oidc.UserInfo, userID, sub string, scopes []string) error {
	// On the primary: a verification (or a new name) counts at once, on
	// every instance, whatever a replica has replayed.
	u := &user{}
	err := s.primary(ctx, func(q dbrouter.Querier) error {
		return q.QueryRow(ctx, "SELECT email, name, email_verified_at IS NOT NULL FROM users WHERE id = $1", userID).
			Scan(&u.Email, &u.Name, &u.EmailVerified)
	})
	if err != nil {
		return err
	}
	info.Subject = sub
	for _, sc := range scopes {
		switch sc {
		case oidc.ScopeEmail:
			info.Email = u.Email
			// oidc.UserInfo omits a false email_verified: say it.
			info.EmailVerified = oidc.Bool(u.EmailVerified)
			if !u.EmailVerified {
				info.AppendClaims("email_verified", false)
			}
		case oidc.ScopeProfile:
			info.Name = u.Name
			info.PreferredUsername = u.Email
		}
	}
	return nil
}

// SetUserinfoFromScopes implements op.OPStorage (deprecated: empty).
func (s *storage) SetUserinfoFromScopes(context.Context, *oidc.UserInfo, string, string, []string) error {
	return nil
}

// SetUserinfoFromRequest implements op.CanSetUserinfoFromRequest: the ID
// token's claims. Its sub is the request's, the one the client knows; its
// sid the login session the grant was made in (none for a grant made
// before ID tokens carried one).
func (s *storage) SetUserinfoFromRequest(ctx context.Context, info *oidc.UserInfo, req op.IDTokenRequest, scopes []string) error {
	g, ok := req.(interface {
		localUserID() string
		sessionID() string
	})
	if !ok {
		return fmt.Errorf("unexpected token request %T", req)
	}
	if err := s.setUserinfo(ctx, info, g.localUserID(), req.GetSubject(), scopes); err != nil {
		return err
	}
	if sid := g.sessionID(); sid != "" {
		info.AppendClaims("sid", sid)
	}
	return nil
}

type accessToken struct {
	clientID, userID, subject string
	scopes, audience          []string
	expires, created          time.Time
}

// activeAccessToken reads an access token that is neither revoked nor
// expired, on the primary (a revocation must count at once everywhere).
func (s *storage) activeAccessToken(ctx context.Context, id, sub string) (*accessToken, error) {
	if _, err := uuid.Parse(id); err != nil {
		return nil, errors.New("invalid token")
	}
	t := &accessToken{}
	err := s.primary(ctx, func(q dbrouter.Querier) error {
		return q.QueryRow(ctx, `SELECT client_id, user_id, subject, scopes, audience, expires_at, created_at FROM tokens
			WHERE id = $1 AND kind = 'access' AND revoked_at IS NULL AND expires_at > now()`, id).
			Scan(&t.clientID, &t.userID, &t.subject, &t.scopes, &t.audience, &t.expires, &t.created)
	})
	if errors.Is(err, pgx.ErrNoRows) || (err == nil && t.subject != sub) {
		return nil, errors.New("token not active")
	}
	return t, err
}

// SetUserinfoFromToken implements op.OPStorage: /userinfo, with the sub
// the token was issued with (the ID token's).
func (s *storage) SetUserinfoFromToken(ctx context.Context, info *oidc.UserInfo, tokenID, sub, _ string) error {
	t, err := s.activeAccessToken(ctx, tokenID, sub)
	if err != nil {
		return err
	}
	return s.setUserinfo(ctx, info, t.userID, t.subject, t.scopes)
}

// SetIntrospectionFromToken implements op.OPStorage: only the client a
// token was issued to may introspect it (another client learns nothing,
// not even the sub its users have elsewhere).
func (s *storage) SetIntrospectionFromToken(ctx context.Context, resp *oidc.IntrospectionResponse, tokenID, sub, clientID string) error {
	t, err := s.activeAccessToken(ctx, tokenID, sub)
	if err != nil {
		return err
	}
	if t.clientID != clientID {
		return errors.New("token of another client")
	}
	info := new(oidc.UserInfo)
	if err := s.setUserinfo(ctx, info, t.userID, t.subject, t.scopes); err != nil {
		return err
	}
	resp.SetUserInfo(info)
	resp.Scope = t.scopes
	resp.ClientID = t.clientID
	resp.Audience = t.audience
	resp.Expiration = oidc.FromTime(t.expires)
	resp.IssuedAt = oidc.FromTime(t.created)
	resp.TokenType = oidc.BearerToken
	return nil
}

// GetPrivateClaimsFromScopes implements op.OPStorage: no private claims.
func (s *storage) GetPrivateClaimsFromScopes(context.Context, string, string, []string) (map[string]any, error) {
	return nil, nil
}

// GetKeyByIDAndClientID implements op.OPStorage: no private_key_jwt.
func (s *storage) GetKeyByIDAndClientID(context.Context, string, string) (*jose.JSONWebKey, error) {
	return nil, errors.New("private_key_jwt is not supported")
}

// ValidateJWTProfileScopes implements op.OPStorage: no JWT profile grant.
func (s *storage) ValidateJWTProfileScopes(context.Context, string, []string) ([]string, error) {
	return nil, errors.New("JWT profile grant is not supported")
}

// Health implements op.Storage.
func (s *storage) Health(ctx context.Context) error {
	_, err := s.db.Exec(ctx, "SELECT 1")
	return err
}

// ---- login completion

// completeAuthRequest marks the auth request done by userID in the login
// session sessionID, records the sub the client gets for the user (for
// id_token_hint and logout to map back), the sid its ID tokens carry,
// and the consent when given.
func (s *storage) completeAuthRequest(ctx context.Context, a *authRequest, c *client, userID, sessionID string, authTime time.Time, consent bool) error {
	sub := subjectFor(s.salt, c, userID)
	sid := sectorSessionID(s.salt, c.sector, sessionID)
	sector := c.sector
	if c.subjectType == subjectPublic {
		sector = ""
	}
	return s.db.Write(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO subjects (sector, subject, user_id) VALUES ($1, $2, $3)
			ON CONFLICT DO NOTHING`, sector, sub, userID); err != nil {
			return err
		}
		if consent {
			if _, err := tx.Exec(ctx, `INSERT INTO consents (user_id, client_id, scopes) VALUES ($1, $2, $3)
				ON CONFLICT (user_id, client_id) DO UPDATE SET scopes = EXCLUDED.scopes, granted_at = now()`,
				userID, c.id, a.scopes); err != nil {
				return err
			}
		}
		tag, err := tx.Exec(ctx, `UPDATE auth_requests SET user_id = $2, subject = $3, auth_time = $4, sid = $5, done = true
			WHERE id = $1 AND NOT done`, a.id, userID, sub, authTime, sid)
		if err == nil && tag.RowsAffected() != 1 {
			err = errNotFound("auth request already finished")
		}
		return err
	})
}

// hasConsent tells whether the user has consented to every scope asked.
func (s *storage) hasConsent(ctx context.Context, userID, clientID string, scopes []string) (bool, error) {
	var granted []string
	err := s.read(ctx, func(q dbrouter.Querier) error {
		return q.QueryRow(ctx, "SELECT scopes FROM consents WHERE user_id = $1 AND client_id = $2", userID, clientID).Scan(&granted)
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	for _, sc := range scopes {
		if !slices.Contains(granted, sc) {
			return false, nil
		}
	}
	return true, nil
}

// normEmail lowercases and trims an e-mail address.
func normEmail(s string) string { return strings.ToLower(strings.TrimSpace(s)) }
