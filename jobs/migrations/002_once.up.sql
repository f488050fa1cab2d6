-- The keys jobs.Once records. Idempotent, like every library migration.
CREATE TABLE IF NOT EXISTS hakit_jobs_once (
	key     text PRIMARY KEY,
	done_at timestamptz NOT NULL DEFAULT now()
);
