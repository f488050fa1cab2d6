package main

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// Subject types a client can choose (OIDC Core §8).
const (
	subjectPublic   = "public"
	subjectPairwise = "pairwise"
)

// pairwiseSubject is the sub one user has in one sector (OIDC Core §8.1):
// base64url(HMAC-SHA-256(salt, sector ‖ 0 ‖ user ID)). The salt is the
// deployment's own, stored in the database, so the value is the same on
// every instance, after every restart and across rotations of the signing
// keys and of SSO_SECRET; without the salt nobody can link the subs of two
// sectors. It never contains ':' (opaque access tokens split on it).
func pairwiseSubject(salt []byte, sector, userID string) string {
	m := hmac.New(sha256.New, salt)
	m.Write([]byte(sector))
	m.Write([]byte{0})
	m.Write([]byte(userID))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// subjectFor is the sub the client's users get: the local user ID for a
// public client, the sector's pairwise value otherwise.
func subjectFor(salt []byte, c *client, userID string) string {
	if c.subjectType == subjectPublic {
		return userID
	}
	return pairwiseSubject(salt, c.sector, userID)
}

// errRegistration marks a client registration that is refused; its text
// says why.
var errRegistration = errors.New("client registration refused")

// sectorOf returns the sector of a client (OIDC Core §8.1): the host of its
// sector_identifier_uri if it has one, else the host shared by all its
// redirect URIs. Several redirect hosts without a sector_identifier_uri are
// an error: the client's users would otherwise get a sub per host, or one
// host could learn another's. Hosts are compared lowercased, without port.
func sectorOf(sectorURI string, redirectURIs []string) (string, error) {
	if sectorURI != "" {
		u, err := url.Parse(sectorURI)
		if err != nil || u.Scheme != "https" || u.Hostname() == "" {
			return "", fmt.Errorf("%w: sector_identifier_uri %q must be an https URL", errRegistration, sectorURI)
		}
		return strings.ToLower(u.Hostname()), nil
	}
	sector := ""
	for _, ru := range redirectURIs {
		u, err := url.Parse(ru)
		if err != nil || u.Hostname() == "" {
			return "", fmt.Errorf("%w: redirect URI %q has no host", errRegistration, ru)
		}
		h := strings.ToLower(u.Hostname())
		if sector != "" && h != sector {
			return "", fmt.Errorf("%w: redirect URIs on several hosts (%s, %s) need a sector_identifier_uri", errRegistration, sector, h)
		}
		sector = h
	}
	if sector == "" {
		return "", fmt.Errorf("%w: at least one redirect URI is required", errRegistration)
	}
	return sector, nil
}

// checkRedirectURI refuses redirect URIs that cannot be matched exactly or
// that would leak the code: relative ones, fragments (RFC 6749 §3.1.2),
// and plain http except to a loopback address.
func checkRedirectURI(s string) error {
	u, err := url.Parse(s)
	if err != nil || !u.IsAbs() || u.Host == "" {
		return fmt.Errorf("%w: redirect URI %q is not an absolute URL", errRegistration, s)
	}
	if u.Fragment != "" || strings.Contains(s, "#") {
		return fmt.Errorf("%w: redirect URI %q has a fragment", errRegistration, s)
	}
	switch u.Scheme {
	case "https":
	case "http":
		h := u.Hostname()
		if h != "localhost" && h != "127.0.0.1" && h != "::1" && !strings.HasSuffix(h, ".localhost") {
			return fmt.Errorf("%w: redirect URI %q: http only to localhost", errRegistration, s)
		}
	default:
		return fmt.Errorf("%w: redirect URI %q: scheme must be https (or http to localhost)", errRegistration, s)
	}
	return nil
}
