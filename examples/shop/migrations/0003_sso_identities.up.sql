-- Accounts signed in with an OpenID Connect provider ("Sign in with hakit
-- SSO"): the provider's (issuer, sub) pair names the shop's user. The sub
-- is pairwise (the provider gives the shop its own identifier for the
-- person), so it is only meaningful together with its issuer.
CREATE TABLE sso_identities (
    issuer     text NOT NULL,
    subject    text NOT NULL,
    user_id    bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (issuer, subject)
);
CREATE INDEX sso_identities_user_idx ON sso_identities (user_id);
