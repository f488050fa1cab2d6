package main

import (
	"sync"
	"testing"
	"time"
)

// TestKeyRotationUnderLoad lets the scheduled rotation (a hakit jobs
// schedule) replace the signing key every 4s, published 2s before it
// signs, while logins run through HAProxy to two instances. Every ID
// token verifies (go-oidc against the JWKS), at least three keys sign,
// and every key was in a JWKS fetched well (500ms) before the token
// exchange it first signed in: a relying party that fetched the key set
// a while before knows the key already.
func TestKeyRotationUnderLoad(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 2, true, "SSO_KEY_LEAD=2s", "SSO_KEY_ROTATION=4s")
	a1 := c.rp("client-a1")

	jwks := func() ([]string, error) { return jwksKids(c.issuer) }

	// A poller looks at the key set every 100ms on its own, so when a key
	// first showed up does not depend on how long a login takes.
	var (
		mu        sync.Mutex
		published = map[string]time.Time{} // when a JWKS fetch first showed the key
	)
	stop := make(chan struct{})
	polled := make(chan struct{})
	go func() {
		defer close(polled)
		for {
			fetched := time.Now()
			kids, err := jwks()
			if err != nil {
				t.Errorf("JWKS: %v", err)
				return
			}
			mu.Lock()
			for _, k := range kids {
				if _, ok := published[k]; !ok {
					published[k] = fetched
				}
			}
			mu.Unlock()
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	defer func() { close(stop); <-polled }()

	b := c.browser()
	f := newFlow()
	first := a1.mustExchange(t, f, b.login(a1, f, "gina@example.com", "correct horse battery", true))
	signers := map[string]bool{kidOf(t, first.raw): true}
	logins := 1
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline) && len(signers) < 3; logins++ {
		f := newFlow()
		code := b.codeFrom(a1, f, b.authorize(a1, f))
		exchanged := time.Now()
		tk, err := a1.exchange(t, f, code)
		if err != nil {
			t.Fatalf("login %d during rotation: %v", logins, err)
		}
		k := kidOf(t, tk.raw)
		mu.Lock()
		at, ok := published[k]
		mu.Unlock()
		if !signers[k] && (!ok || exchanged.Sub(at) < 500*time.Millisecond) {
			t.Errorf("key %s first signed in an exchange at %s; a JWKS showed it first at %s (ok=%v): want 500ms or more before",
				k, exchanged.Format(time.StampMilli), at.Format(time.StampMilli), ok)
		}
		signers[k] = true
	}
	if len(signers) < 3 {
		t.Fatalf("%d logins saw %d signing keys; want at least 3 (rotation every 4s)", logins, len(signers))
	}
	t.Logf("%d logins, %d signing keys", logins, len(signers))
}
