package session

import (
	"context"
	"errors"
	"fmt"
	"net/http"
)

// ErrStoreUnavailable wraps the store's error when [Manager.Login] or
// [Manager.Logout] cannot reach the store: answer 503 with Retry-After
// (hakit.Error does).
var ErrStoreUnavailable = errors.New("session: store unavailable")

// userKey is the session key of the logged-in user's ID.
const userKey = "_hakit_user"

// Login logs the user in on the request's session, in one call:
//
//   - it renews the session's token (against session fixation: the token
//     the browser had before, and whoever else knew it, no longer reads
//     the session), after clearing the session's values if another user
//     was logged in on it — an anonymous session's values (a cart) are
//     kept;
//   - it puts userID ([Manager.UserID]);
//   - it makes the change durable: before the response goes out the new
//     session is confirmed by the store's replicas where the store can
//     (Redis: WAIT, per RedisOptions.WaitReplicas; none when the store is
//     configured to have no replica), as the old token's removal already
//     was. If that save fails, the client gets the Unavailable answer (503)
//     instead of the handler's response, and the user is not logged in.
//
// It returns an error wrapping [ErrStoreUnavailable] when the old token
// cannot be removed from the store; the user is then not logged in.
// An empty userID is refused.
func (m *Manager) Login(ctx context.Context, userID string) error {
	if userID == "" {
		return errors.New("session: Login with an empty user ID")
	}
	if cur := m.GetString(ctx, userKey); cur != "" && cur != userID {
		if err := m.Clear(ctx); err != nil {
			return fmt.Errorf("session: login: %w", err)
		}
	}
	if err := m.RenewToken(ctx); err != nil {
		return fmt.Errorf("session: login: %w: %w", ErrStoreUnavailable, err)
	}
	m.Put(ctx, userKey, userID)
	m.Durable(ctx)
	return nil
}

// Logout logs the user out: it destroys the request's session (its
// values, the user's ID, in the store, confirmed by the store's replicas
// where the store can) and expires the cookie. A later Put or Flash in the
// same request starts a new, anonymous session ("you are signed out").
// It returns an error wrapping [ErrStoreUnavailable] when the store
// cannot be reached; the user is then still logged in.
func (m *Manager) Logout(ctx context.Context) error {
	if err := m.Destroy(ctx); err != nil {
		return fmt.Errorf("session: logout: %w: %w", ErrStoreUnavailable, err)
	}
	return nil
}

// UserID returns the ID of the user logged in on the request's session by
// [Manager.Login], or "" when nobody is.
func (m *Manager) UserID(ctx context.Context) string { return m.GetString(ctx, userKey) }

// RequireLogin returns middleware that lets requests of a logged-in
// session through and answers the others with otherwise (a redirect to
// the login page, typically); a nil otherwise answers 401 Unauthorized.
// It must run behind the Manager's LoadAndSave:
//
//	r.With(sessions.RequireLogin(http.RedirectHandler("/login", http.StatusSeeOther))).Get("/notes", notes)
func (m *Manager) RequireLogin(otherwise http.Handler) func(http.Handler) http.Handler {
	if otherwise == nil {
		otherwise = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "login required", http.StatusUnauthorized)
		})
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if m.UserID(r.Context()) == "" {
				otherwise.ServeHTTP(w, r)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}
