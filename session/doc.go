// Package session provides HTTP sessions kept in a shared store, so any
// instance can serve any request, with secure defaults and without the
// lost updates and error loops of a plain setup.
//
// # Familiar
//
// [Manager] embeds scs's SessionManager: Get, GetString, Put, Pop, Remove,
// Exists, Keys, RenewToken, Destroy, RememberMe work as in scs. Its
// [Manager.LoadAndSave] is the middleware.
//
// # Defaults
//
// The cookie is __Host-session: Secure, HttpOnly, SameSite=Lax, Path=/,
// no Domain (so a sibling subdomain cannot plant one). Tokens are 32
// random bytes (256 bits). Sessions end after 24h (Lifetime) or 2h unused
// (IdleTimeout), and the store forgets them then too. Call RenewToken on
// every privilege change (login, logout, role change) against session
// fixation.
//
// # No lost updates
//
// scs saves the whole session at the end of each request, so of two
// concurrent requests of one session (two tabs, parallel fetches) the
// later one overwrites the other's change. A [Store] here saves only the
// keys a request changed, atomically (a Lua script on a Redis hash; a jsonb
// merge under the row lock in PostgreSQL). Two requests that change
// different keys both keep their change; for the same key, the request
// that saves last wins. A change to a session another request destroyed
// or renewed meanwhile is dropped, never resurrecting it.
//
// # Outages
//
// When the store cannot be reached, the request does not run (it would
// see an empty session and could save it over the real one): the client
// gets 503 with Retry-After, not a 500. During a Redis Sentinel failover
// requests get that until go-redis finds the new master, then recover by
// themselves. A session that cannot be decoded is dropped and logged, and
// the user gets a fresh one; so does a forged or unknown cookie.
//
// Redis replicates asynchronously: a write the master acknowledged can be
// lost if it dies before a replica has it. Logins, logouts and renewed
// tokens (and changes marked with [Manager.Durable]) wait for a replica to
// confirm (WAIT; see [RedisOptions]). Other changes can be lost in that
// window, as with any Redis setup.
//
// # Stores
//
// [NewRedisStore] (go-redis UniversalClient: single, Sentinel, Cluster),
// [NewPostgresStore] (through dbrouter's primary), [NewMemoryStore]
// (development only). Values are encoded one by one: strings, []byte,
// bools, ints, float64 and time.Time compactly, anything else with gob
// (register the type with gob.Register, as with scs).
package session
