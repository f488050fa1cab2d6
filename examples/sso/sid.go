package main

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"time"
)

// Login sessions and their IDs (the sid claim).
//
// Every login session of the provider has a session ID: 128 random bits
// made when a user signs in on a browser (a new user, or after a sign-out),
// kept in the session (in Redis, never in the cookie, and unrelated to the
// cookie's token). A user who enters the password again on the same
// session (prompt=login, max_age) keeps it. ID tokens carry it as sid
// (OpenID Connect Front-Channel and Back-Channel Logout 1.0), per sector
// like a pairwise sub: base64url(HMAC-SHA-256(salt, "sid" ‖ 0 ‖ sector ‖ 0
// ‖ session ID)), so the sites of two sectors cannot link their users by
// the session either. At end_session the sid of an id_token_hint tells
// whether the hint comes from this browser's current session or from an
// earlier one of the same user.

// sessSID is the session key of the login session's ID.
const sessSID = "sid"

// newSessionID makes a login session's ID: 128 random bits.
func newSessionID() string { return base64.RawURLEncoding.EncodeToString(randomBytes(16)) }

// sectorSessionID is the sid that clients of sector see for the login
// session sessionID; "" for none.
func sectorSessionID(salt []byte, sector, sessionID string) string {
	if sessionID == "" {
		return ""
	}
	m := hmac.New(sha256.New, salt)
	m.Write([]byte("sid"))
	m.Write([]byte{0})
	m.Write([]byte(sector))
	m.Write([]byte{0})
	m.Write([]byte(sessionID))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// sameSession tells whether sid, from an ID token of a client of sector,
// names the login session sessionID.
func sameSession(salt []byte, sector, sessionID, sid string) bool {
	want := sectorSessionID(salt, sector, sessionID)
	return want != "" && subtle.ConstantTimeCompare([]byte(want), []byte(sid)) == 1
}

// sessLogout is the session key of a sign-out that waits for the user's
// answer: end_session with a genuine ID token that does not belong to
// this browser's current login session.
const sessLogout = "logout_pending"

// pendingLogout is a sign-out asked for by a client with an ID token that
// is not of this browser's current login session: the confirmation page
// shows it, and its form answers it.
type pendingLogout struct {
	// ID binds the answer to the page that asked: a sign-out form without
	// it (the header's) is an ordinary sign-out.
	ID string `json:"id"`
	// Client is the name of the client that asked.
	Client string `json:"client"`
	// Other is set when the ID token named another account than the one
	// signed in here (or one unknown); unset, it named an earlier login
	// session of the account signed in. The page never names the other
	// account: the browser's holder may not be its owner.
	Other bool `json:"other,omitempty"`
	// Return is where to send the browser after the answer: the
	// post_logout_redirect_uri registered for the client (with its
	// state); "" when the client gave none (the provider's own pages).
	Return string `json:"return,omitempty"`
	// Expires is when the question lapses (Unix seconds); a lapsed one is
	// none.
	Expires int64 `json:"expires"`
}

// putPendingLogout keeps p in the request's session (as JSON: the
// session's values are gob-encoded, and a string needs no registration).
func (s *storage) putPendingLogout(ctx context.Context, p pendingLogout) error {
	b, err := json.Marshal(p)
	if err != nil {
		return err
	}
	s.sessions.Put(ctx, sessLogout, string(b))
	return nil
}

// pendingLogoutOf returns the session's pending sign-out, if any that
// has not lapsed at now.
func pendingLogoutOf(ctx context.Context, get func(context.Context, string) string, now time.Time) (pendingLogout, bool) {
	var p pendingLogout
	raw := get(ctx, sessLogout)
	if raw == "" || json.Unmarshal([]byte(raw), &p) != nil || p.ID == "" || now.Unix() >= p.Expires {
		return pendingLogout{}, false
	}
	return p, true
}
