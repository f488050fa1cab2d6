package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"hakit.dev/dbrouter"
)

// clientSpec is a client to register: from the admin page, the CLI, or
// SSO_BOOTSTRAP_CLIENTS (JSON, with these field names).
type clientSpec struct {
	ID                     string   `json:"id"`
	Name                   string   `json:"name"`
	Secret                 string   `json:"secret,omitempty"` // bootstrap only: a fixed secret; else one is made
	Public                 bool     `json:"public,omitempty"`
	AppType                string   `json:"app_type,omitempty"` // web (default), native, user_agent
	RedirectURIs           []string `json:"redirect_uris"`
	PostLogoutRedirectURIs []string `json:"post_logout_redirect_uris,omitempty"`
	SubjectType            string   `json:"subject_type,omitempty"` // pairwise (default) or public
	SectorIdentifierURI    string   `json:"sector_identifier_uri,omitempty"`
}

var clientIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{2,63}$`)

// validate fills defaults and checks the spec; it returns the client's
// sector. With checkSector, a sector_identifier_uri is fetched and must
// list every redirect URI (OIDC Core §8.1): nobody can claim another
// site's sector and so learn the subs its users have there.
func (cs *clientSpec) validate(ctx context.Context, hc *http.Client, checkSector bool) (string, error) {
	if cs.ID == "" {
		cs.ID = "c-" + base64.RawURLEncoding.EncodeToString(randomBytes(9))
	}
	if !clientIDPattern.MatchString(cs.ID) {
		return "", fmt.Errorf("%w: client ID %q: 3-64 letters, digits, '.', '_' or '-'", errRegistration, cs.ID)
	}
	if cs.Name == "" {
		cs.Name = cs.ID
	}
	if len(cs.Name) > 100 {
		return "", fmt.Errorf("%w: name longer than 100 characters", errRegistration)
	}
	if cs.AppType == "" {
		cs.AppType = "web"
	}
	if !slices.Contains([]string{"web", "native", "user_agent"}, cs.AppType) {
		return "", fmt.Errorf("%w: app type %q: web, native or user_agent", errRegistration, cs.AppType)
	}
	if cs.SubjectType == "" {
		cs.SubjectType = subjectPairwise
	}
	if cs.SubjectType != subjectPairwise && cs.SubjectType != subjectPublic {
		return "", fmt.Errorf("%w: subject type %q: pairwise or public", errRegistration, cs.SubjectType)
	}
	if cs.Public && cs.Secret != "" {
		return "", fmt.Errorf("%w: a public client has no secret", errRegistration)
	}
	if cs.Secret != "" && len(cs.Secret) < 32 {
		return "", fmt.Errorf("%w: a client secret needs at least 32 characters", errRegistration)
	}
	if len(cs.RedirectURIs) == 0 || len(cs.RedirectURIs) > 20 {
		return "", fmt.Errorf("%w: 1 to 20 redirect URIs", errRegistration)
	}
	for _, u := range slices.Concat(cs.RedirectURIs, cs.PostLogoutRedirectURIs) {
		if err := checkRedirectURI(u); err != nil {
			return "", err
		}
	}
	sector, err := sectorOf(cs.SectorIdentifierURI, cs.RedirectURIs)
	if err != nil {
		return "", err
	}
	if cs.SectorIdentifierURI != "" && checkSector {
		if err := checkSectorDocument(ctx, hc, cs.SectorIdentifierURI, cs.RedirectURIs); err != nil {
			return "", err
		}
	}
	return sector, nil
}

// checkSectorDocument fetches a sector_identifier_uri: a JSON array that
// must hold every redirect URI of the client.
func checkSectorDocument(ctx context.Context, hc *http.Client, uri string, redirects []string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, uri, nil)
	if err != nil {
		return fmt.Errorf("%w: sector_identifier_uri: %v", errRegistration, err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("%w: sector_identifier_uri: %v", errRegistration, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%w: sector_identifier_uri answered %s", errRegistration, resp.Status)
	}
	var listed []string
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&listed); err != nil {
		return fmt.Errorf("%w: sector_identifier_uri is not a JSON array of URIs: %v", errRegistration, err)
	}
	for _, r := range redirects {
		if !slices.Contains(listed, r) {
			return fmt.Errorf("%w: sector_identifier_uri does not list redirect URI %s", errRegistration, r)
		}
	}
	return nil
}

// errClientExists is a registration under an ID already taken.
var errClientExists = errors.New("a client with this ID exists")

// registerClient stores a new client and returns its secret (empty for a
// public client). Only the secret's SHA-256 is stored: it is shown once.
// With upsert an existing client of that ID is replaced (bootstrap).
func registerClient(ctx context.Context, db *dbrouter.Router, cs clientSpec, sector string, upsert bool) (string, error) {
	secret := cs.Secret
	var hash []byte
	if !cs.Public {
		if secret == "" {
			secret = base64.RawURLEncoding.EncodeToString(randomBytes(32))
		}
		hash = hashToken(secret)
	}
	q := `INSERT INTO clients (id, name, secret_hash, app_type, redirect_uris, post_logout_redirect_uris,
		subject_type, sector_identifier_uri, sector) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`
	if upsert {
		q += ` ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, secret_hash = EXCLUDED.secret_hash,
			app_type = EXCLUDED.app_type, redirect_uris = EXCLUDED.redirect_uris,
			post_logout_redirect_uris = EXCLUDED.post_logout_redirect_uris, subject_type = EXCLUDED.subject_type,
			sector_identifier_uri = EXCLUDED.sector_identifier_uri, sector = EXCLUDED.sector, updated_at = now()`
	}
	err := db.Write(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, q, cs.ID, cs.Name, hash, cs.AppType, cs.RedirectURIs, nonNil(cs.PostLogoutRedirectURIs),
			cs.SubjectType, cs.SectorIdentifierURI, sector)
		return err
	})
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "23505" {
		return "", fmt.Errorf("%w: %s", errClientExists, cs.ID)
	}
	if err != nil {
		return "", err
	}
	return secret, nil
}

// clientRow is a client as the admin page and `client list` show it.
type clientRow struct {
	ID, Name, AppType, SubjectType, Sector string
	Public                                 bool
	RedirectURIs                           []string
	Created                                time.Time
}

func listClients(ctx context.Context, db *dbrouter.Router) ([]clientRow, error) {
	var out []clientRow
	err := db.Read(ctx, func(q dbrouter.Querier) error {
		rows, err := q.Query(ctx, `SELECT id, name, app_type, subject_type, sector, secret_hash IS NULL, redirect_uris, created_at
			FROM clients ORDER BY created_at, id`)
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, pgx.RowToStructByPos[clientRow])
		return err
	})
	return out, err
}

// deleteClient removes a client with everything issued to it.
func deleteClient(ctx context.Context, db *dbrouter.Router, id string) error {
	return db.Write(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, "DELETE FROM clients WHERE id = $1", id)
		return err
	})
}
