package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
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
