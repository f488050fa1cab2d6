package main

import (
	"encoding/json"
	"net/http"
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

	jwks := func() []string {
		resp, err := http.Get(c.issuer + "/keys")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var set struct {
			Keys []struct {
				Kid string `json:"kid"`
			} `json:"keys"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&set); err != nil {
			t.Fatal(err)
		}
		var kids []string
		for _, k := range set.Keys {
			kids = append(kids, k.Kid)
		}
		return kids
	}

	b := c.browser()
	f := newFlow()
	first := a1.mustExchange(t, f, b.login(a1, f, "gina@example.com", "correct horse battery", true))
	signers := map[string]bool{kidOf(t, first.raw): true}
	published := map[string]time.Time{} // when a JWKS fetch first showed the key
	logins := 1
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline) && len(signers) < 3; logins++ {
		fetched := time.Now()
		for _, k := range jwks() {
			if _, ok := published[k]; !ok {
				published[k] = fetched
			}
		}
		f := newFlow()
		code := b.codeFrom(a1, f, b.authorize(a1, f))
		exchanged := time.Now()
		tk, err := a1.exchange(t, f, code)
		if err != nil {
			t.Fatalf("login %d during rotation: %v", logins, err)
		}
		k := kidOf(t, tk.raw)
		if at, ok := published[k]; !signers[k] && (!ok || exchanged.Sub(at) < 500*time.Millisecond) {
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
