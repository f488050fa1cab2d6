package main

import (
	"encoding/json"
	"net/http"
	"sync"
	"testing"
	"time"
)

// TestKeyRotationUnderLoad lets the scheduled rotation (a hakit jobs
// schedule) replace the signing key every 3s, published 1.5s before it
// signs, while logins run through HAProxy to two instances. Every ID
// token verifies (go-oidc against the JWKS), at least three keys sign,
// and every key was in the JWKS well before (750ms) the first token
// it signed.
func TestKeyRotationUnderLoad(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 2, true, "SSO_KEY_LEAD=1500ms", "SSO_KEY_ROTATION=3s")
	a1 := c.rp("client-a1")

	// Watch the JWKS: when each kid was first published.
	var mu sync.Mutex
	firstSeen := map[string]time.Time{}
	stop := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for {
			resp, err := http.Get(c.issuer + "/keys")
			if err == nil {
				var set struct {
					Keys []struct {
						Kid string `json:"kid"`
					} `json:"keys"`
				}
				_ = json.NewDecoder(resp.Body).Decode(&set)
				resp.Body.Close()
				now := time.Now()
				mu.Lock()
				for _, k := range set.Keys {
					if _, ok := firstSeen[k.Kid]; !ok {
						firstSeen[k.Kid] = now
					}
				}
				mu.Unlock()
			}
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()

	type signed struct {
		kid string
		at  time.Time
	}
	var got []signed
	b := c.browser()
	f := newFlow()
	a1.mustExchange(t, f, b.login(a1, f, "gina@example.com", "correct horse battery", true))
	deadline := time.Now().Add(12 * time.Second)
	kids := map[string]bool{}
	for time.Now().Before(deadline) && len(kids) < 4 {
		f := newFlow()
		p := b.authorize(a1, f)
		before := time.Now()
		tk, err := a1.exchange(t, f, b.codeFrom(a1, f, p))
		if err != nil {
			t.Fatalf("login %d during rotation: %v", len(got), err)
		}
		k := kidOf(t, tk.raw)
		kids[k] = true
		got = append(got, signed{k, before})
	}
	close(stop)
	<-watched
	if len(kids) < 3 {
		t.Fatalf("%d logins saw %d signing keys; want at least 3 (rotation every 3s)", len(got), len(kids))
	}
	mu.Lock()
	defer mu.Unlock()
	first := got[0].kid
	for _, s := range got {
		seen, ok := firstSeen[s.kid]
		if s.kid == first {
			continue // the key of the first login may predate the watcher
		}
		if !ok || s.at.Sub(seen) < 750*time.Millisecond {
			t.Errorf("key %s signed at %s but was published at %s (ok=%v): want 750ms or more before (SSO_KEY_LEAD 1.5s, less the cache)",
				s.kid, s.at.Format(time.StampMilli), seen.Format(time.StampMilli), ok)
		}
	}
	t.Logf("%d logins, %d signing keys", len(got), len(kids))
}
