package main

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// TestAppCommandArguments checks how kill-app, start-app and
// rolling-restart read their arguments, old forms included, and that bad
// ones get an error naming what would do.
func TestAppCommandArguments(t *testing.T) {
	l := &lab{}
	l.shop = &shopLab{appGroup: &appGroup{lab: l, id: "shop", title: "Shop",
		insts: []*appInstance{{name: "shop0"}, {name: "shop1"}}}}
	l.sso = &ssoLab{appGroup: &appGroup{lab: l, id: "sso", title: "SSO",
		insts: []*appInstance{{name: "sso0"}, {name: "sso1"}}}}
	for _, c := range []struct {
		cmd  string
		args []string
		app  string
		inst string
		err  string
	}{
		{"kill-app", []string{"shop1"}, "", "", "shop1 is not running"}, // the old form
		{"kill-app", []string{"sso", "sso1"}, "", "", "sso1 is not running"},
		{"kill-app", []string{"sso"}, "", "", "no sso instance is running"},
		{"start-app", []string{"sso"}, "sso", "sso0", ""},
		{"start-app", []string{"shop1"}, "shop", "shop1", ""},
		{"start-app", []string{"shop", "shop0"}, "shop", "shop0", ""},
		{"kill-app", []string{"nosuch"}, "", "", `no app instance "nosuch" (instances: shop0, shop1, sso0, sso1)`},
		{"kill-app", []string{"shop", "sso0"}, "", "", `no shop instance "sso0"`},
		{"kill-app", []string{"mail", "sso0"}, "", "", "kill-app needs an instance (shop0, shop1, sso0, sso1), or an app and an instance"},
		{"kill-app", nil, "", "", "kill-app needs an instance"},
		{"start-app", []string{"a", "b", "c"}, "", "", "start-app needs an instance"},
	} {
		if c.err == "" {
			g, in, err := l.target(c.cmd, c.args)
			if err != nil || g.id != c.app || in.name != c.inst {
				t.Errorf("%s %v: %v, %v; want %s %s", c.cmd, c.args, in, err, c.app, c.inst)
			}
			continue
		}
		err := l.appCommand(context.Background(), c.cmd, c.args)
		if err == nil || !strings.Contains(err.Error(), c.err) {
			t.Errorf("%s %v: %v; want an error with %q", c.cmd, c.args, err, c.err)
		}
	}
	for args, want := range map[string]string{
		"nosuch":  `rolling-restart [shop|sso]: no app "nosuch"`,
		"sso sso": "rolling-restart takes at most one argument, the app (shop|sso)",
	} {
		if err := l.appCommand(context.Background(), "rolling-restart", strings.Fields(args)); err == nil || err.Error() != want {
			t.Errorf("rolling-restart %s: %v; want %q", args, err, want)
		}
	}
	for _, args := range [][]string{nil, {"maybe"}, {"on", "off"}} {
		if err := l.appCommand(context.Background(), "load", args); err == nil || err.Error() != "load needs on or off" {
			t.Errorf("load %v: %v", args, err)
		}
	}
}

// TestIDTokenChecks signs ID tokens with a key of the JWKS and checks the
// login load's verification takes the good one and refuses each bad one
// with its reason.
func TestIDTokenChecks(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	other, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	j := &jwks{url: "http://127.0.0.1:1/keys", keys: map[string]*rsa.PublicKey{"k1": &key.PublicKey}}
	const iss, client, nonce = "http://127.0.0.1:9000", "demo", "n0nce"
	b64 := func(v any) string {
		b, _ := json.Marshal(v)
		return base64.RawURLEncoding.EncodeToString(b)
	}
	sign := func(hdr, claims map[string]any, k *rsa.PrivateKey) string {
		in := b64(hdr) + "." + b64(claims)
		h := sha256.Sum256([]byte(in))
		sig, err := rsa.SignPKCS1v15(rand.Reader, k, crypto.SHA256, h[:])
		if err != nil {
			t.Fatal(err)
		}
		return in + "." + base64.RawURLEncoding.EncodeToString(sig)
	}
	good := func() map[string]any {
		return map[string]any{"iss": iss, "sub": "pairwise-1", "aud": []string{client}, "nonce": nonce,
			"exp": time.Now().Add(time.Hour).Unix()}
	}
	hdr := map[string]any{"alg": "RS256", "kid": "k1"}
	ctx := context.Background()
	if sub, err := j.verify(ctx, sign(hdr, good(), key), iss, client, nonce); err != nil || sub != "pairwise-1" {
		t.Fatalf("good token: %q, %v", sub, err)
	}
	one := good()
	one["aud"] = client // a single audience as a string
	if _, err := j.verify(ctx, sign(hdr, one, key), iss, client, nonce); err != nil {
		t.Errorf("aud as a string: %v", err)
	}
	with := func(k string, v any) map[string]any {
		c := good()
		c[k] = v
		return c
	}
	tampered := sign(hdr, good(), key)
	parts := strings.Split(tampered, ".")
	parts[1] = b64(with("sub", "someone-else"))
	for name, c := range map[string]struct {
		raw, want string
	}{
		"other key":     {sign(hdr, good(), other), "bad signature"},
		"tampered":      {strings.Join(parts, "."), "bad signature"},
		"alg none":      {sign(map[string]any{"alg": "none", "kid": "k1"}, good(), key), `alg "none"`},
		"issuer":        {sign(hdr, with("iss", "http://evil.example"), key), `issuer "http://evil.example"`},
		"audience":      {sign(hdr, with("aud", []string{"shop"}), key), "audience [shop]"},
		"nonce":         {sign(hdr, with("nonce", "replayed"), key), "nonce differs"},
		"expired":       {sign(hdr, with("exp", time.Now().Add(-time.Minute).Unix()), key), "expired"},
		"no subject":    {sign(hdr, with("sub", ""), key), "no subject"},
		"not a JWS":     {"abc.def", "not a JWS"},
		"bad base64":    {"a.b.c", "illegal base64"},
		"unknown key":   {sign(map[string]any{"alg": "RS256", "kid": "k9"}, good(), key), "JWKS"},
		"bad signature": {parts[0] + "." + parts[1] + ".!!", "illegal base64"},
	} {
		if _, err := j.verify(ctx, c.raw, iss, client, nonce); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v; want an error with %q", name, err, c.want)
		}
	}
}

func TestQuantile(t *testing.T) {
	xs := []float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	for q, want := range map[float64]float64{0.5: 5, 0.99: 10, 0.1: 1, 0: 1} {
		if got := quantile(xs, q); got != want {
			t.Errorf("quantile(%v) = %v; want %v", q, got, want)
		}
	}
	if got := quantile(nil, 0.5); got != 0 {
		t.Errorf("quantile of none = %v; want 0", got)
	}
}
