-- The shop's tables. Prices are in minor units (cents) as bigint.
CREATE TABLE categories (
    id   bigserial PRIMARY KEY,
    slug text NOT NULL UNIQUE,
    name text NOT NULL
);

CREATE TABLE images (
    id         bigserial PRIMARY KEY,
    upload_key text NOT NULL,
    status     text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'ready', 'broken')),
    reason     text,
    small_key  text,
    large_key  text,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE products (
    id          bigserial PRIMARY KEY,
    category_id bigint NOT NULL REFERENCES categories (id),
    slug        text NOT NULL UNIQUE,
    name        text NOT NULL,
    description text NOT NULL DEFAULT '',
    price_cents bigint NOT NULL CHECK (price_cents >= 0),
    -- The last line of defence: a conditional decrement keeps it >= 0,
    -- this refuses any write that would not.
    stock       int NOT NULL CHECK (stock >= 0),
    image_id    bigint REFERENCES images (id),
    active      boolean NOT NULL DEFAULT true,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX products_category_idx ON products (category_id) WHERE active;
-- Full-text search of the catalog (GET /search).
CREATE INDEX products_search_idx ON products USING gin (to_tsvector('english', name || ' ' || description));

CREATE TABLE users (
    id            bigserial PRIMARY KEY,
    email         text NOT NULL UNIQUE CHECK (email = lower(email)),
    name          text NOT NULL DEFAULT '',
    password_hash text,
    sso_subject   text UNIQUE,
    is_admin      boolean NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE orders (
    id            bigserial PRIMARY KEY,
    user_id       bigint REFERENCES users (id),
    session_owner text,
    email         text NOT NULL,
    name          text NOT NULL,
    address       jsonb NOT NULL,
    total_cents   bigint NOT NULL CHECK (total_cents >= 0),
    status        text NOT NULL DEFAULT 'placed',
    created_at    timestamptz NOT NULL DEFAULT now(),
    mailed_at     timestamptz
);
CREATE INDEX orders_user_idx ON orders (user_id, id DESC) WHERE user_id IS NOT NULL;
CREATE INDEX orders_owner_idx ON orders (session_owner, id DESC) WHERE session_owner IS NOT NULL;

CREATE TABLE order_lines (
    order_id   bigint NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    product_id bigint NOT NULL REFERENCES products (id),
    name       text NOT NULL,
    unit_cents bigint NOT NULL CHECK (unit_cents >= 0),
    qty        int NOT NULL CHECK (qty > 0),
    PRIMARY KEY (order_id, product_id)
);

-- One row per placed checkout: the idempotency key of the review form,
-- scoped by user or session owner, and the hash of what was ordered.
CREATE TABLE checkout_keys (
    scope        text NOT NULL,
    key          text NOT NULL,
    request_hash bytea NOT NULL,
    order_id     bigint NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, key)
);
CREATE INDEX checkout_keys_created_idx ON checkout_keys (created_at);
