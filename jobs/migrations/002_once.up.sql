-- The keys jobs.Once records. Idempotent, like every library migration,
-- and checked in the catalog first: an existing table is left alone, with
-- no right to create tables needed.
DO $$
BEGIN
	IF to_regclass('hakit_jobs_once') IS NULL THEN
		CREATE TABLE hakit_jobs_once (
			key     text PRIMARY KEY,
			done_at timestamptz NOT NULL DEFAULT now()
		);
	END IF;
END
$$;
