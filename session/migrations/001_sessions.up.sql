-- The PostgreSQL session store's table (session.NewPostgresStore with the
-- default Table). Idempotent, so a table made by PostgresSchema or
-- CreateTable is kept as it is.
CREATE TABLE IF NOT EXISTS hakit_sessions (
	token    text PRIMARY KEY,
	data     jsonb NOT NULL,
	deadline timestamptz NOT NULL,
	expiry   timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS hakit_sessions_expiry ON hakit_sessions (expiry);
