// Package session provides HTTP sessions kept in a shared store, so any
// instance can serve any request, with secure defaults and without the
// lost updates and error loops of a plain setup.
//
// # Familiar
//
// [Manager] is built on scs and has its API: Get, GetString, Put, Pop,
// Remove, Clear, Exists, Keys, RenewToken, Destroy, Token, Deadline work
// as in scs. Its [Manager.LoadAndSave] is the middleware. scs's
// SessionManager is not exposed: the Manager is configured once, by
// [Config] at [New], and each Manager keeps its sessions under its own
// context key, so two Managers' LoadAndSave can be nested.
//
// # Defaults
//
// The cookie is __Host-session: Secure, HttpOnly, SameSite=Lax, Path=/,
// no Domain (so a sibling subdomain cannot plant one), lasting until the
// session's absolute deadline. Tokens are 32 random bytes (256 bits).
// Sessions end after 24h (Lifetime) or 2h unused (IdleTimeout; the store
// forgets them then). Call RenewToken on every privilege change (login,
// logout, role change) against session fixation.
//
// # What concurrent requests keep
//
// scs saves the whole session at the end of each request, so of two
// concurrent requests of one session (two tabs, parallel fetches) the
// later one overwrites the other's change, and a request that only read
// the session writes its stale copy back. A [Store] here saves only the
// keys whose value the request changed, atomically (a Lua script on a
// Redis hash; a jsonb merge under the row lock in PostgreSQL). A key's
// value counts as changed when it differs, as a value, from the one
// loaded: a map or struct read and left alone (or put back unchanged) is
// not written, whatever order gob encodes its entries in, and a NaN in it
// counts as equal to a NaN. So:
//
//   - a request that only reads a key never overwrites it;
//   - requests that change different keys all keep their change;
//   - of requests that change the same key, the one that saves last wins
//     for that key, including a map's entries (a cart updated by two
//     requests at once keeps one of the two maps: use separate keys, or
//     the database, where that matters);
//   - a change to a session another request destroyed or renewed
//     meanwhile is dropped, never resurrecting it.
//
// A request that changed nothing only extends the session's expiry in
// the store.
//
// # Cookies and logins
//
// The session cookie is sent only when the token changes (a new session,
// RenewToken) or the request destroys its session. A request in flight
// while another request logs the user in (RenewToken) or out therefore
// never answers with a stale or expiring cookie that would undo the
// login in the browser.
//
// [Manager.Login] does a login in one call: it renews the token, puts the
// user's ID ([Manager.UserID]) and makes the change durable; it clears
// the session first if another user was logged in on it.
// [Manager.Logout] destroys the session, [Manager.RequireLogin] guards
// routes, and [Manager.Flash] and [Manager.Flashes] carry messages to the
// next page, shown once (docs/handlers.md).
//
// # Streaming
//
// The session is saved just before the response's headers go out: on the
// first Write, WriteHeader or Flush (http.Flusher or
// http.ResponseController), or when the handler returns. An interim
// response (WriteHeader(103) Early Hints, any 1xx but 101) passes through
// without saving: the session can still change, and its cookie goes out
// with the final response. Changes made after the response started are
// saved when the handler returns, if the browser already has the
// session's cookie; if that save fails, the failure is logged and the
// response is aborted. [Manager.BeforeSave] runs code just before each
// save.
//
// # Outages
//
// When the store cannot be reached, the request does not run (it would
// see an empty session and could save it over the real one): the client
// gets 503 with Retry-After, not a 500. A Redis failover does not come to
// that: while no master is reachable (a Sentinel promoting a replica and
// go-redis following it, a Cluster shard's replica taking over), the
// [RedisStore] holds each load, save and deletion and retries it, with a
// backoff, for up to RedisOptions.FailoverWait (5s) and as long as the
// request's context lasts; the request then goes on, a little late. Only
// a Redis that stays down longer answers 503 (and at once with
// FailoverWait negative). Errors that are no outage (a bad command, a
// script error, all Sentinels gone) are not retried. A session that
// cannot be decoded is dropped and logged, and the user gets a fresh
// one; so does a forged or unknown cookie.
//
// The session is loaded on the request's context, but saved on a context
// of its own, bounded by [Config.SaveTimeout]: a change the handler made
// is kept when the client goes away or the request's deadline passes
// meanwhile (a long upload on a route without hakit's request timeout).
//
// Redis replicates asynchronously: a write the master acknowledged can be
// lost if it dies before a replica has it. Logins, logouts and renewed
// tokens (and changes marked with [Manager.Durable]) wait up to
// RedisOptions.WaitTimeout for a replica to confirm (WAIT). One not
// confirmed in time stands, logged: a failover in that window can sign the
// user out again, or bring a logged-out session back. With
// RedisOptions.RequireConfirm it is an error instead (503). Other changes
// can be lost in that window, as with any Redis setup.
//
// # Stores
//
// [NewRedisStore] (go-redis UniversalClient: single, Sentinel, Cluster),
// [NewPostgresStore] (through dbrouter's primary), [NewMemoryStore]
// (development only). Values are encoded one by one: strings, []byte,
// bools, ints, float64 and time.Time compactly, anything else with gob
// (register the type with gob.Register, as with scs).
//
// # Metrics
//
// A Manager is a prometheus.Collector: hakit_session_saves_total by
// result (changed, touched, dropped) and hakit_session_store_errors_total
// by operation.
package session
