-- The PostgreSQL session store's table (session.NewPostgresStore with the
-- default Table). Idempotent, so a table made by PostgresSchema or
-- CreateTable is kept as it is. Checked in the catalog first: an existing
-- table or index is left alone, with no lock taken (CREATE INDEX IF NOT
-- EXISTS would need the table's owner and a SHARE lock) and no right to
-- create tables needed.
DO $$
BEGIN
	IF to_regclass('hakit_sessions') IS NULL THEN
		CREATE TABLE hakit_sessions (
			token    text PRIMARY KEY,
			data     jsonb NOT NULL,
			deadline timestamptz NOT NULL,
			expiry   timestamptz NOT NULL
		);
	END IF;
	IF to_regclass('hakit_sessions_expiry') IS NULL THEN
		CREATE INDEX hakit_sessions_expiry ON hakit_sessions (expiry);
	END IF;
END
$$;
