package session

import (
	"bytes"
	"context"
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
	// concurrent requests did to them.
	Set   map[string][]byte
	Unset []string
	// Deadline is the session's absolute deadline (Config.Lifetime).
	Deadline time.Time
	// Expiry is when the store may forget the session (the idle timeout
	// or the deadline, whichever comes first).
	Expiry time.Time
	// Durable asks the store to confirm the change on its replicas before
	// returning (login, logout, privilege change), where it can.
	Durable bool
}

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

// loaded is what the bridge remembers of the session it loaded for a
// request, to compute the request's change at commit.
type loaded struct {
	mu      sync.Mutex
	token   string
	base    map[string][]byte
	found   bool
	durable bool
	gone    bool // the store said the session was gone at commit
}

// remember records that the request has token's session with values
// stored. l.mu must be held.
func (l *loaded) remember(token string, values map[string][]byte) {
	l.token, l.base, l.found = token, values, true
}

type loadedKey struct{}

func loadedFrom(ctx context.Context) *loaded {
	l, _ := ctx.Value(loadedKey{}).(*loaded)
	return l
}

// bridge adapts a Store to scs's CtxStore, turning scs's whole-session
// commits into key-by-key changes.
type bridge struct{ store Store }

func (b bridge) FindCtx(ctx context.Context, token string) ([]byte, bool, error) {
	r, found, err := b.store.Load(ctx, token)
	if err != nil || !found {
		return nil, false, err
	}
	if l := loadedFrom(ctx); l != nil {
		l.mu.Lock()
		l.remember(token, r.Values)
		l.mu.Unlock()
	}
	return encodeRecord(r), true, nil
}

func (b bridge) CommitCtx(ctx context.Context, token string, data []byte, expiry time.Time) error {
	r, err := decodeRecord(data)
	if err != nil {
		return err
	}
	c := Change{Deadline: r.Deadline, Expiry: expiry}
	l := loadedFrom(ctx)
	var base map[string][]byte
	if l != nil {
		l.mu.Lock()
		if l.found && l.token == token {
			base = l.base
		}
		c.Durable = l.durable
		l.mu.Unlock()
	}
	if base == nil {
		// A new session, or one whose token was renewed: all of it.
		c.Replace, c.Set = true, r.Values
		if l != nil && l.found {
			c.Durable = true // a renewal: a login or a privilege change
		}
	} else {
		for k, v := range r.Values {
			if old, ok := base[k]; !ok || !bytes.Equal(old, v) {
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
	applied, err := b.store.Apply(ctx, token, c)
	if err != nil {
		return err
	}
	if l != nil {
		l.mu.Lock()
		if applied {
			// Later commits in the same request diff against what is
			// stored now.
			l.remember(token, r.Values)
		} else {
			l.gone = true
		}
		l.mu.Unlock()
	}
	return nil
}

func (b bridge) DeleteCtx(ctx context.Context, token string) error {
	// Deleting is destroying a session or renewing its token: both must
	// survive a failover, or the old token comes back.
	return b.store.Delete(ctx, token, true)
}

func (b bridge) Find(token string) ([]byte, bool, error) {
	return b.FindCtx(context.Background(), token)
}
func (b bridge) Commit(token string, data []byte, expiry time.Time) error {
	return b.CommitCtx(context.Background(), token, data, expiry)
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
