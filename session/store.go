package session

import (
	"context"
	"errors"
	"maps"
	"sync"
	"time"
)

// Record is a stored session: its absolute deadline and its values, each
// encoded on its own.
type Record struct {
	Deadline time.Time
	Values   map[string][]byte
}

// Change is what one request does to a session.
type Change struct {
	// Replace writes the whole session: Set holds every value. Used for
	// new sessions and renewed tokens.
	Replace bool
	// Set are the values the request added or changed; Unset the keys it
	// removed. Other keys are left as they are in the store, whatever
	// concurrent requests did to them. A change with neither (and not a
	// Replace) is a touch: it only extends the session's expiry.
	Set   map[string][]byte
	Unset []string
	// Deadline is the session's absolute deadline (Config.Lifetime). It
	// only changes with a Replace.
	Deadline time.Time
	// Expiry is when the store may forget the session (the idle timeout
	// or the deadline, whichever comes first).
	Expiry time.Time
	// Durable asks the store to confirm the change on its replicas before
	// returning (login, logout, privilege change), where it can.
	Durable bool
}

// Touch reports whether c only extends the session's expiry.
func (c Change) Touch() bool { return !c.Replace && len(c.Set) == 0 && len(c.Unset) == 0 }

// Store keeps sessions for a Manager. Unlike a scs store, which writes the
// whole session as one blob (so the last of two concurrent requests wins
// and the other's change is lost), a Store applies each request's change
// key by key, atomically.
//
// The contract, as scs's: a missing or expired session is found=false,
// err=nil; err is for system failures only (the Manager then answers 503).
type Store interface {
	// Load returns the session of token.
	Load(ctx context.Context, token string) (r Record, found bool, err error)
	// Apply applies a change. Unless the change is a Replace, it must not
	// bring back a session that is gone (expired, destroyed, or renewed
	// under another token): it then does nothing and returns
	// applied=false.
	Apply(ctx context.Context, token string, c Change) (applied bool, err error)
	// Delete removes a session; a missing one is not an error.
	Delete(ctx context.Context, token string, durable bool) error
}

// remember records that the store has the request's session under token
// with values. st.mu must be held.
func (st *request) remember(token string, values map[string][]byte) {
	st.token, st.base = token, values
}

// bridge adapts a Store to scs's CtxStore: it loads for scs, and turns
// scs's whole-session commits into the request's change, key by key.
type bridge struct{ m *Manager }

func (b bridge) FindCtx(ctx context.Context, token string) ([]byte, bool, error) {
	r, found, err := b.m.store.Load(ctx, token)
	if err != nil || !found {
		return nil, false, err
	}
	if st, ok := b.m.stateIn(ctx); ok {
		st.mu.Lock()
		st.remember(token, r.Values)
		st.mu.Unlock()
	}
	return encodeRecord(r), true, nil
}

// CommitCtx saves what the request changed: the keys whose value differs
// from the one loaded (compared as values: a map with the same entries is
// unchanged, whatever order gob wrote it in), or, for a new or renewed
// session, all of it. A request that changed nothing extends the expiry.
func (b bridge) CommitCtx(ctx context.Context, token string, data []byte, _ time.Time) error {
	r, err := decodeRecord(data)
	if err != nil {
		return err
	}
	c := Change{Deadline: r.Deadline, Expiry: r.Deadline}
	if b.m.idle > 0 {
		if e := time.Now().Add(b.m.idle).UTC(); e.Before(c.Expiry) {
			c.Expiry = e
		}
	}
	st, _ := b.m.stateIn(ctx) // set by LoadAndSave, the only caller
	st.mu.Lock()
	base := st.base
	c.Durable = st.durable
	renewed := st.token != "" && st.token != token
	if st.token != token {
		base = nil
	}
	st.mu.Unlock()
	if base == nil {
		// A new session, or one whose token was renewed: all of it.
		c.Replace, c.Set = true, r.Values
		if renewed {
			c.Durable = true // a login or a privilege change
		}
	} else {
		for k, v := range r.Values {
			if old, ok := base[k]; !ok || !sameValue(old, v) {
				if c.Set == nil {
					c.Set = map[string][]byte{}
				}
				c.Set[k] = v
			}
		}
		for k := range base {
			if _, ok := r.Values[k]; !ok {
				c.Unset = append(c.Unset, k)
			}
		}
	}
	touch := c.Touch()
	applied, err := b.m.store.Apply(ctx, token, c)
	met := b.m.metrics
	if err != nil {
		if touch {
			// Nothing the request did is lost: the session may only
			// idle out sooner. Not worth failing the response for.
			met.touchErr.Inc()
			b.m.log.Warn("session: could not extend the session's expiry", "err", err)
			return nil
		}
		met.saveErr.Inc()
		return err
	}
	st.mu.Lock()
	if applied {
		// Later saves in the same request diff against what is stored
		// now.
		st.remember(token, r.Values)
	} else {
		st.gone = true
	}
	st.mu.Unlock()
	switch {
	case !applied:
		met.dropped.Inc()
	case touch:
		met.touched.Inc()
	default:
		met.changed.Inc()
	}
	return nil
}

func (b bridge) DeleteCtx(ctx context.Context, token string) error {
	// Deleting is destroying a session or renewing its token: both must
	// survive a failover, or the old token comes back.
	if err := b.m.store.Delete(ctx, token, true); err != nil {
		b.m.metrics.deleteErr.Inc()
		return err
	}
	return nil
}

// The context-free methods of scs's Store are never called: scs calls the
// Ctx ones when a store has them.

func (b bridge) Find(token string) ([]byte, bool, error) {
	return b.FindCtx(context.Background(), token)
}
func (bridge) Commit(string, []byte, time.Time) error {
	return errors.New("session: internal error: commit without a request")
}
func (b bridge) Delete(token string) error { return b.DeleteCtx(context.Background(), token) }

// MemoryStore keeps sessions in this process's memory. For development and
// tests only: sessions are lost on restart and not shared between
// instances, which is the problem this package exists to solve.
type MemoryStore struct {
	mu       sync.Mutex
	sessions map[string]*memSession
	applies  int // changes applied, to forget expired sessions now and then
}

type memSession struct {
	rec    Record
	expiry time.Time
}

// NewMemoryStore returns an empty MemoryStore.
func NewMemoryStore() *MemoryStore {
	return &MemoryStore{sessions: map[string]*memSession{}}
}

// Load implements Store.
func (m *MemoryStore) Load(_ context.Context, token string) (Record, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.live(token)
	if s == nil {
		return Record{}, false, nil
	}
	// Values is never nil (Apply makes it), so the clone is not either.
	return Record{Deadline: s.rec.Deadline, Values: maps.Clone(s.rec.Values)}, true, nil
}

func (m *MemoryStore) live(token string) *memSession {
	s := m.sessions[token]
	if s != nil && !time.Now().Before(s.expiry) {
		delete(m.sessions, token)
		return nil
	}
	return s
}

// Apply implements Store.
func (m *MemoryStore) Apply(_ context.Context, token string, c Change) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.live(token)
	switch {
	case c.Replace:
		s = &memSession{rec: Record{Values: map[string][]byte{}}}
		m.sessions[token] = s
	case s == nil:
		return false, nil
	}
	maps.Copy(s.rec.Values, c.Set)
	for _, k := range c.Unset {
		delete(s.rec.Values, k)
	}
	s.rec.Deadline, s.expiry = c.Deadline, c.Expiry
	// Forget the expired sessions now and then.
	m.applies++
	if m.applies%64 == 0 {
		for t := range m.sessions {
			m.live(t)
		}
	}
	return true, nil
}

// Delete implements Store.
func (m *MemoryStore) Delete(_ context.Context, token string, _ bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.sessions, token)
	return nil
}
