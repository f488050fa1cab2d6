-- E-mail verification and password reset.

-- email_verified_at: when the owner of the address proved it (a
-- verification link, or a password reset through a mailed link).
-- session_epoch: the generation of the account's credentials. A login
-- session records the epoch it was made under; a password reset increments
-- it, and every session of an older epoch is signed out at its next request.
ALTER TABLE users
    ADD COLUMN email_verified_at timestamptz,
    ADD COLUMN session_epoch     bigint NOT NULL DEFAULT 0;

-- Single-use links sent by mail. The token in the link is
-- HMAC-SHA-256(a key derived from SSO_SECRET, id): only its SHA-256 is
-- stored, and the mail task computes the token again from the row's ID, so
-- the token is neither in the database nor in the task's payload.
-- mail_claimed_at / mailed_at: the mail task's claim (a conditional UPDATE
-- on the primary) and its sending, so a task that runs again sends nothing.
CREATE TABLE mail_tokens (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    purpose         text NOT NULL CHECK (purpose IN ('verify', 'reset')),
    user_id         uuid NOT NULL REFERENCES users ON DELETE CASCADE,
    email           text NOT NULL, -- the address the link went to
    token_hash      bytea NOT NULL UNIQUE,
    expires_at      timestamptz NOT NULL,
    used_at         timestamptz,
    mail_claimed_at timestamptz,
    mailed_at       timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX mail_tokens_user ON mail_tokens (user_id, purpose);
CREATE INDEX mail_tokens_created ON mail_tokens (created_at);
