-- One row: the per-deployment salt of pairwise subject identifiers. It is
-- made once and never changes: every pairwise sub is derived from it.
CREATE TABLE sso_settings (
    id            int PRIMARY KEY CHECK (id = 1),
    pairwise_salt bytea NOT NULL CHECK (length(pairwise_salt) >= 32)
);
-- The app inserts it at its first start (crypto/rand, ON CONFLICT DO NOTHING).

CREATE TABLE users (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    email         text NOT NULL UNIQUE CHECK (email = lower(email)),
    name          text NOT NULL DEFAULT '',
    password_hash text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE clients (
    id                        text PRIMARY KEY,
    name                      text NOT NULL,
    secret_hash               bytea,          -- SHA-256 of a 256-bit random secret; NULL: public client
    app_type                  text NOT NULL DEFAULT 'web' CHECK (app_type IN ('web', 'native', 'user_agent')),
    redirect_uris             text[] NOT NULL CHECK (cardinality(redirect_uris) > 0),
    post_logout_redirect_uris text[] NOT NULL DEFAULT '{}',
    subject_type              text NOT NULL DEFAULT 'pairwise' CHECK (subject_type IN ('public', 'pairwise')),
    sector_identifier_uri     text NOT NULL DEFAULT '',
    sector                    text NOT NULL,
    created_at                timestamptz NOT NULL DEFAULT now(),
    updated_at                timestamptz NOT NULL DEFAULT now()
);

-- Every subject handed out, so that an id_token_hint or a logout naming a
-- pairwise sub finds its local user again.
CREATE TABLE subjects (
    sector  text NOT NULL,
    subject text NOT NULL,
    user_id uuid NOT NULL REFERENCES users ON DELETE CASCADE,
    PRIMARY KEY (sector, subject)
);
CREATE INDEX subjects_user ON subjects (user_id);

CREATE TABLE auth_requests (
    id                    uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    client_id             text NOT NULL REFERENCES clients ON DELETE CASCADE,
    redirect_uri          text NOT NULL,
    state                 text NOT NULL DEFAULT '',
    nonce                 text NOT NULL DEFAULT '',
    scopes                text[] NOT NULL,
    response_type         text NOT NULL,
    response_mode         text NOT NULL DEFAULT '',
    prompt                text[] NOT NULL DEFAULT '{}',
    max_age               int,
    code_challenge        text NOT NULL,
    code_challenge_method text NOT NULL,
    hint_user_id          uuid,
    user_id               uuid REFERENCES users ON DELETE CASCADE,
    subject               text,
    auth_time             timestamptz,
    done                  boolean NOT NULL DEFAULT false,
    code_hash             bytea UNIQUE,
    code_expires_at       timestamptz,
    code_used_at          timestamptz,
    created_at            timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX auth_requests_created ON auth_requests (created_at);

CREATE TABLE tokens (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    kind            text NOT NULL CHECK (kind IN ('access', 'refresh')),
    client_id       text NOT NULL REFERENCES clients ON DELETE CASCADE,
    user_id         uuid NOT NULL REFERENCES users ON DELETE CASCADE,
    subject         text NOT NULL,
    scopes          text[] NOT NULL,
    audience        text[] NOT NULL,
    amr             text[] NOT NULL DEFAULT '{}',
    auth_time       timestamptz NOT NULL,
    family_id       uuid NOT NULL,
    auth_request_id uuid,
    token_hash      bytea UNIQUE, -- refresh tokens: SHA-256 of the token
    expires_at      timestamptz NOT NULL,
    rotated_at      timestamptz,
    revoked_at      timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tokens_family ON tokens (family_id);
CREATE INDEX tokens_auth_request ON tokens (auth_request_id);
CREATE INDEX tokens_user_client ON tokens (user_id, client_id);

CREATE TABLE consents (
    user_id    uuid NOT NULL REFERENCES users ON DELETE CASCADE,
    client_id  text NOT NULL REFERENCES clients ON DELETE CASCADE,
    scopes     text[] NOT NULL,
    granted_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, client_id)
);

-- Signing keys, shared by every instance. A key is published (JWKS) from
-- created_at, signs from active_from, and is dropped from JWKS after
-- expires_at (set when a newer key takes over, plus the longest token life).
CREATE TABLE signing_keys (
    id          text PRIMARY KEY,
    alg         text NOT NULL,
    public_der  bytea NOT NULL,
    private_enc bytea NOT NULL, -- AES-256-GCM under a key derived from SSO_SECRET
    created_at  timestamptz NOT NULL DEFAULT now(),
    active_from timestamptz NOT NULL,
    expires_at  timestamptz
);
