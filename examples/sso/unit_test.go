package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

func TestSectorOf(t *testing.T) {
	for _, tc := range []struct {
		sectorURI string
		redirects []string
		want      string // "" = an error
	}{
		{"", []string{"https://a.example/cb"}, "a.example"},
		{"", []string{"https://A.example/cb", "https://a.example:8443/other"}, "a.example"},
		{"", []string{"https://a.example/cb", "https://b.example/cb"}, ""},
		{"https://sector.example/uris.json", []string{"https://a.example/cb", "https://b.example/cb"}, "sector.example"},
		{"http://sector.example/uris.json", []string{"https://a.example/cb"}, ""},
		{"", nil, ""},
		{"", []string{"/relative"}, ""},
	} {
		got, err := sectorOf(tc.sectorURI, tc.redirects)
		if tc.want == "" {
			if err == nil || !errors.Is(err, errRegistration) {
				t.Errorf("sectorOf(%q, %v) = %q, %v; want a registration error", tc.sectorURI, tc.redirects, got, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("sectorOf(%q, %v) = %q, %v; want %q", tc.sectorURI, tc.redirects, got, err, tc.want)
		}
	}
}

func TestPairwiseSubject(t *testing.T) {
	salt := []byte("0123456789abcdef0123456789abcdef")
	u := "7a0c2f9e-8d55-4a8e-9d39-0a5a3f1c1b11"
	a := pairwiseSubject(salt, "a.example", u)
	if a != pairwiseSubject(salt, "a.example", u) {
		t.Error("not deterministic")
	}
	for name, other := range map[string]string{
		"other sector": pairwiseSubject(salt, "b.example", u),
		"other user":   pairwiseSubject(salt, "a.example", "7a0c2f9e-8d55-4a8e-9d39-0a5a3f1c1b12"),
		"other salt":   pairwiseSubject([]byte("another salt, another deployment.."), "a.example", u),
		"shifted":      pairwiseSubject(salt, "a.exampl", "e"+u), // the separator keeps fields apart
	} {
		if other == a {
			t.Errorf("%s: same sub", name)
		}
	}
	if len(a) != 43 {
		t.Errorf("sub %q: %d characters, want 43", a, len(a))
	}
	c := &client{subjectType: subjectPublic, sector: "a.example"}
	if subjectFor(salt, c, u) != u {
		t.Error("a public client does not get the user ID")
	}
}

func TestCheckRedirectURI(t *testing.T) {
	for uri, ok := range map[string]bool{
		"https://a.example/cb":        true,
		"http://127.0.0.1:8080/cb":    true,
		"http://localhost/cb":         true,
		"http://shop.localhost:81/cb": true,
		"http://a.example/cb":         false,
		"https://a.example/cb#frag":   false,
		"javascript:alert(1)":         false,
		"/cb":                         false,
		"ftp://a.example/cb":          false,
	} {
		if err := checkRedirectURI(uri); (err == nil) != ok {
			t.Errorf("checkRedirectURI(%q) = %v; want ok=%v", uri, err, ok)
		}
	}
}

// TestSectorDocument fetches sector_identifier_uri documents from a real
// TLS server: one listing every redirect URI passes; one missing a URI, a
// non-array and a 404 are refused.
func TestSectorDocument(t *testing.T) {
	docs := map[string]string{
		"/good":    `["https://a.example/cb", "https://b.example/cb"]`,
		"/missing": `["https://a.example/cb"]`,
		"/bad":     `{"redirect_uris": []}`,
	}
	ts := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d, ok := docs[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		fmt.Fprint(w, d)
	}))
	defer ts.Close()
	redirects := []string{"https://a.example/cb", "https://b.example/cb"}
	ctx := context.Background()
	if err := checkSectorDocument(ctx, ts.Client(), ts.URL+"/good", redirects); err != nil {
		t.Errorf("good document: %v", err)
	}
	for _, path := range []string{"/missing", "/bad", "/none"} {
		if err := checkSectorDocument(ctx, ts.Client(), ts.URL+path, redirects); !errors.Is(err, errRegistration) {
			t.Errorf("%s: %v; want a registration error", path, err)
		}
	}
	// Through validate: two hosts with a checked sector URI register.
	cs := clientSpec{ID: "multi", RedirectURIs: redirects, SectorIdentifierURI: ts.URL + "/good"}
	if sector, err := cs.validate(ctx, ts.Client(), true); err != nil || sector != "127.0.0.1" {
		t.Errorf("validate with a sector document: %q, %v", sector, err)
	}
}

// TestSectorSessionID: the sid is the same for one session and sector,
// differs by sector, session and salt, is never the session ID itself
// nor the pairwise sub of the same inputs, and an empty session has
// none; sameSession agrees, and a pending sign-out that does not decode,
// or has lapsed (or has no expiry), is none.
func TestSectorSessionID(t *testing.T) {
	salt, salt2 := []byte("0123456789abcdef0123456789abcdef"), []byte("fedcba9876543210fedcba9876543210")
	sess, sess2 := newSessionID(), newSessionID()
	sid := sectorSessionID(salt, "a.example", sess)
	if len(sess) != 22 || sess == sess2 {
		t.Fatalf("session IDs %q, %q: want 22 characters (128 bits), distinct", sess, sess2)
	}
	if sid == "" || sid != sectorSessionID(salt, "a.example", sess) || sid == sess {
		t.Fatalf("sid %q of session %q: want stable and not the session ID", sid, sess)
	}
	for name, other := range map[string]string{
		"another sector":                      sectorSessionID(salt, "b.example", sess),
		"another session":                     sectorSessionID(salt, "a.example", sess2),
		"another salt":                        sectorSessionID(salt2, "a.example", sess),
		"the pairwise sub of the same inputs": pairwiseSubject(salt, "a.example", sess),
	} {
		if other == sid {
			t.Errorf("%s gives the same sid %q", name, sid)
		}
	}
	if got := sectorSessionID(salt, "a.example", ""); got != "" {
		t.Errorf("sid of no session: %q, want none", got)
	}
	if !sameSession(salt, "a.example", sess, sid) || sameSession(salt, "a.example", sess2, sid) ||
		sameSession(salt, "b.example", sess, sid) || sameSession(salt, "a.example", "", "") || sameSession(salt, "a.example", sess, "") {
		t.Error("sameSession: want true only for the session and sector the sid was made for")
	}
	now := time.Unix(1_800_000_000, 0)
	pending := func(raw string, at time.Time) (pendingLogout, bool) {
		return pendingLogoutOf(context.Background(), func(context.Context, string) string { return raw }, at)
	}
	for _, raw := range []string{"", "{", `{"client":"x","return":"https://a.example/bye","expires":1800000300}`, `"a string"`,
		`{"id":"abc","client":"App"}`} { // the last: no expiry, lapsed
		if p, ok := pending(raw, now); ok {
			t.Errorf("pending sign-out from %q: %+v; want none", raw, p)
		}
	}
	good := `{"id":"abc","client":"App","other":true,"return":"https://a.example/bye?state=s","expires":1800000300}`
	want := pendingLogout{ID: "abc", Client: "App", Other: true, Return: "https://a.example/bye?state=s", Expires: 1_800_000_300}
	if p, ok := pending(good, now.Add(5*time.Minute-time.Second)); !ok || p != want {
		t.Errorf("pending sign-out from %s: %+v, %v; want %+v", good, p, ok, want)
	}
	// Lapsed: at its expiry and after, none (a page found again in the
	// history asks nothing).
	for _, at := range []time.Time{now.Add(5 * time.Minute), now.Add(time.Hour)} {
		if p, ok := pending(good, at); ok {
			t.Errorf("pending sign-out at %v, lapsed at %v: %+v; want none", at, time.Unix(want.Expires, 0), p)
		}
	}
}
