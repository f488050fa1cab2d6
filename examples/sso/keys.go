package main

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/jackc/pgx/v5"
	"github.com/zitadel/oidc/v3/pkg/op"

	"hakit.dev/dbrouter"
)

// keyRotationLock serialises rotations of all instances (an advisory
// transaction lock on the primary).
const keyRotationLock int64 = 0x73736f5f6b657973

// keyConfig says how signing keys are rotated.
type keyConfig struct {
	// Period is how long a key signs before the next one takes over.
	Period time.Duration
	// Lead is how long a new key is published in JWKS before it signs,
	// longer than any cache of the key set (ours and the relying parties').
	Lead time.Duration
	// Retain is how long a key that stopped signing stays published: the
	// longest lifetime of a token it signed.
	Retain time.Duration
}

// signingKey is a key of the signing_keys table, decrypted.
type signingKey struct {
	id         string
	private    *rsa.PrivateKey
	activeFrom time.Time
}

func (k *signingKey) SignatureAlgorithm() jose.SignatureAlgorithm { return jose.RS256 }
func (k *signingKey) Key() any                                    { return k.private }
func (k *signingKey) ID() string                                  { return k.id }

// publicKey is a key as JWKS shows it.
type publicKey struct{ k *signingKey }

func (p publicKey) ID() string                         { return p.k.id }
func (p publicKey) Algorithm() jose.SignatureAlgorithm { return jose.RS256 }
func (p publicKey) Use() string                        { return "sig" }
func (p publicKey) Key() any                           { return &p.k.private.PublicKey }

// keyring reads the signing keys from the database, shared by every
// instance, and keeps them for a short while (cacheTTL, well under
// keyConfig.Lead: a key is published that long before it signs, so every
// instance and relying party knows it by then).
type keyring struct {
	db       *dbrouter.Router
	kek      []byte // AES-256 key for the private parts
	cfg      keyConfig
	cacheTTL time.Duration
	log      *slog.Logger
	now      func() time.Time

	mu      sync.Mutex
	keys    []*signingKey // published, oldest active_from first
	fetched time.Time
}

func newKeyring(db *dbrouter.Router, kek []byte, cfg keyConfig, log *slog.Logger) *keyring {
	ttl := min(cfg.Lead/4, 30*time.Second)
	return &keyring{db: db, kek: kek, cfg: cfg, cacheTTL: ttl, log: log, now: time.Now}
}

// published returns the keys in JWKS: every key not yet expired,
// including the next one that does not sign yet.
func (kr *keyring) published(ctx context.Context) ([]*signingKey, error) {
	kr.mu.Lock()
	defer kr.mu.Unlock()
	if kr.keys != nil && kr.now().Sub(kr.fetched) < kr.cacheTTL {
		return kr.keys, nil
	}
	var keys []*signingKey
	// On the primary: the keys are cached, and a replica may not have the
	// very first key yet.
	err := kr.db.Write(ctx, func(q pgx.Tx) error {
		rows, err := q.Query(ctx, `SELECT id, private_enc, active_from FROM signing_keys
			WHERE expires_at IS NULL OR expires_at > now() ORDER BY active_from, id`)
		if err != nil {
			return err
		}
		keys = keys[:0]
		var (
			id   string
			enc  []byte
			from time.Time
		)
		_, err = pgx.ForEachRow(rows, []any{&id, &enc, &from}, func() error {
			priv, err := kr.open(id, enc)
			if err != nil {
				return err
			}
			keys = append(keys, &signingKey{id: id, private: priv, activeFrom: from})
			return nil
		})
		return err
	})
	if err != nil {
		if kr.keys != nil {
			kr.log.Warn("signing keys: keeping the cached set", "err", err)
			return kr.keys, nil
		}
		return nil, err
	}
	kr.keys, kr.fetched = keys, kr.now()
	return keys, nil
}

// current returns the key that signs now: the newest one already active.
func (kr *keyring) current(ctx context.Context) (*signingKey, error) {
	keys, err := kr.published(ctx)
	if err != nil {
		return nil, err
	}
	now := kr.now()
	for i := len(keys) - 1; i >= 0; i-- {
		if !keys[i].activeFrom.After(now) {
			return keys[i], nil
		}
	}
	return nil, errors.New("no active signing key (run the key rotation)")
}

// SigningKey and KeySet, as op.Storage wants them.
func (kr *keyring) signingKey(ctx context.Context) (op.SigningKey, error) { return kr.current(ctx) }

func (kr *keyring) keySet(ctx context.Context) ([]op.Key, error) {
	keys, err := kr.published(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]op.Key, len(keys))
	for i, k := range keys {
		out[i] = publicKey{k}
	}
	return out, nil
}

// rotate brings the keys up to date, on any instance, any number of
// times (it is idempotent, under an advisory lock): a first key that
// signs at once; the next key, published Lead before the current one has
// signed for Period (or at once with force); expiry for keys that no
// longer sign, Retain after they stopped; expired keys deleted.
// It returns the ID of a key it made, or "".
func (kr *keyring) rotate(ctx context.Context, force bool) (string, error) {
	var made string
	err := kr.db.Write(ctx, func(tx pgx.Tx) error {
		made = ""
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", keyRotationLock); err != nil {
			return err
		}
		var now time.Time
		var current, pending *time.Time
		err := tx.QueryRow(ctx, `SELECT now(),
			(SELECT max(active_from) FROM signing_keys WHERE active_from <= now()),
			(SELECT max(active_from) FROM signing_keys WHERE active_from > now())`).Scan(&now, &current, &pending)
		if err != nil {
			return err
		}
		// lead is how long after its INSERT the new key signs, counted
		// from the statement's clock, not the transaction's start: a
		// rotation slowed down on a busy server still publishes the key
		// Lead before it signs.
		lead := time.Duration(-1)
		switch {
		case current == nil && pending == nil:
			lead = 0 // the very first key: nothing to overlap with
		case pending != nil:
			// the next key is already published
		case force || !current.Add(kr.cfg.Period-kr.cfg.Lead).After(now):
			lead = kr.cfg.Lead
		}
		if lead >= 0 {
			id, priv, enc, err := kr.newKey()
			if err != nil {
				return err
			}
			pub, err := x509.MarshalPKIXPublicKey(&priv.PublicKey)
			if err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `INSERT INTO signing_keys (id, alg, public_der, private_enc, active_from)
				VALUES ($1, 'RS256', $2, $3, clock_timestamp() + $4 * interval '1 microsecond')`, id, pub, enc, lead.Microseconds()); err != nil {
				return err
			}
			made = id
		}
		if current != nil {
			if _, err := tx.Exec(ctx, `UPDATE signing_keys SET expires_at = $1
				WHERE expires_at IS NULL AND active_from < $2`, current.Add(kr.cfg.Retain), *current); err != nil {
				return err
			}
		}
		_, err = tx.Exec(ctx, "DELETE FROM signing_keys WHERE expires_at < now()")
		return err
	})
	if err != nil {
		return "", fmt.Errorf("rotate signing keys: %w", err)
	}
	if made != "" {
		kr.log.Info("signing key published", "kid", made)
		kr.mu.Lock()
		kr.keys = nil // this instance sees it at once
		kr.mu.Unlock()
	}
	return made, nil
}

func (kr *keyring) newKey() (id string, priv *rsa.PrivateKey, enc []byte, err error) {
	priv, err = rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return "", nil, nil, err
	}
	id = base64.RawURLEncoding.EncodeToString(randomBytes(12))
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return "", nil, nil, err
	}
	gcm, err := kr.aead()
	if err != nil {
		return "", nil, nil, err
	}
	nonce := randomBytes(gcm.NonceSize())
	return id, priv, gcm.Seal(nonce, nonce, der, []byte(id)), nil
}

func (kr *keyring) open(id string, enc []byte) (*rsa.PrivateKey, error) {
	gcm, err := kr.aead()
	if err != nil {
		return nil, err
	}
	if len(enc) < gcm.NonceSize() {
		return nil, fmt.Errorf("signing key %s: too short", id)
	}
	der, err := gcm.Open(nil, enc[:gcm.NonceSize()], enc[gcm.NonceSize():], []byte(id))
	if err != nil {
		return nil, fmt.Errorf("signing key %s: cannot decrypt (is SSO_SECRET the one it was made with?): %w", id, err)
	}
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("signing key %s: %w", id, err)
	}
	rk, ok := k.(*rsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("signing key %s: not RSA", id)
	}
	return rk, nil
}

func (kr *keyring) aead() (cipher.AEAD, error) {
	b, err := aes.NewCipher(kr.kek)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	return b
}
