package session_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"hakit.dev/hatest"
	"hakit.dev/session"
)

// recordingStore passes everything to a real store and keeps the changes
// the Manager asked for.
type recordingStore struct {
	session.Store
	mu      sync.Mutex
	changes []session.Change
}

func (s *recordingStore) Apply(ctx context.Context, token string, c session.Change) (bool, error) {
	s.mu.Lock()
	s.changes = append(s.changes, c)
	s.mu.Unlock()
	return s.Store.Apply(ctx, token, c)
}

// take returns the changes recorded since the last call.
func (s *recordingStore) take() []session.Change {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.changes
	s.changes = nil
	return c
}

// keys lists the keys a change writes, sorted.
func keys(c session.Change) []string {
	var k []string
	for key := range c.Set {
		k = append(k, key)
	}
	slices.Sort(k)
	return k
}

// TestOnlyWhatTheHandlerChangedIsWritten: with the default idle timeout
// (2h), a request that only reads map-valued keys extends the session's
// expiry and writes no value; a request that changes one key writes that
// key only.
func TestOnlyWhatTheHandlerChangedIsWritten(t *testing.T) {
	t.Parallel()
	registerShapes()
	rd := hatest.NewRedis(t, hatest.RedisOptions{})
	rdb := redis.NewClient(&redis.Options{Addr: rd.Addr()})
	defer rdb.Close()
	store := &recordingStore{Store: redisStore(t, rdb)}
	m := newManager(t, store, nil) // IdleTimeout: the default
	mux := http.NewServeMux()
	mux.HandleFunc("POST /fill", func(w http.ResponseWriter, r *http.Request) {
		cart := map[string]int{}
		nested := map[string]map[string]int{}
		for i := range 50 {
			cart[string(rune('a'+i%26))+string(rune('a'+i/26))] = i
			nested[string(rune('a'+i%26))] = map[string]int{"n": i, "m": -i}
		}
		m.Put(r.Context(), "cart", cart)
		m.Put(r.Context(), "nested", nested)
		m.Put(r.Context(), "profile", profile{Name: "ann", Tags: map[string]bool{"x": true, "y": true, "z": true}})
	})
	mux.HandleFunc("GET /read", func(w http.ResponseWriter, r *http.Request) {
		cart, _ := m.Get(r.Context(), "cart").(map[string]int)
		nested, _ := m.Get(r.Context(), "nested").(map[string]map[string]int)
		p, _ := m.Get(r.Context(), "profile").(profile)
		if len(cart) != 50 || len(nested) != 26 || len(p.Tags) != 3 {
			http.Error(w, "session not filled", http.StatusInternalServerError)
			return
		}
		io.WriteString(w, "ok")
	})
	mux.HandleFunc("POST /add", func(w http.ResponseWriter, r *http.Request) {
		cart, _ := m.Get(r.Context(), "cart").(map[string]int)
		_ = m.Get(r.Context(), "nested")
		cart["new"]++
		m.Put(r.Context(), "cart", cart)
	})
	in := &instance{srv: httptest.NewServer(m.LoadAndSave(mux))}
	defer in.srv.Close()

	u := newUser(t)
	u.must("POST", in, "/fill")
	store.take()
	for range 20 {
		if got := u.must("GET", in, "/read"); got != "ok" {
			t.Fatalf("GET /read: %q", got)
		}
	}
	reads := store.take()
	rewrites := 0
	for _, c := range reads {
		if c.Replace || len(c.Set) > 0 || len(c.Unset) > 0 {
			rewrites++
			t.Logf("a read wrote: replace=%v set=%v unset=%v", c.Replace, keys(c), c.Unset)
		}
	}
	if len(reads) != 20 || rewrites != 0 {
		t.Fatalf("20 requests that only read the session made %d store changes, %d of them writing values; want 20 changes that only extend the expiry", len(reads), rewrites)
	}
	for _, c := range reads {
		if left := time.Until(c.Expiry); left < time.Hour {
			t.Fatalf("a read extended the expiry by %s; want the 2h idle timeout", left)
		}
	}
	u.must("POST", in, "/add")
	adds := store.take()
	if len(adds) != 1 || adds[0].Replace || !slices.Equal(keys(adds[0]), []string{"cart"}) || len(adds[0].Unset) != 0 {
		t.Fatalf("a request that changed the cart made changes %+v; want one writing the cart only", adds)
	}
}
