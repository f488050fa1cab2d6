-- The transactional outbox (jobs.NewOutbox("")). Idempotent, so a database
-- whose table came from Outbox.Schema or CreateTables, in any earlier
-- version, is upgraded in place: the table is created if missing, then
-- gains the columns added since (task_id, sent_to).
--
-- Each step runs only when needed, checked in the catalog first: on a table
-- that already has every column nothing is altered, so no lock is taken
-- (an ALTER TABLE, even ADD COLUMN IF NOT EXISTS, needs the table's owner
-- and waits for an ACCESS EXCLUSIVE lock behind every open transaction
-- that touched the table) and a role that does not own it gets through.
DO $$
BEGIN
	IF to_regclass('hakit_outbox') IS NULL THEN
		CREATE TABLE hakit_outbox (
			id         bigserial PRIMARY KEY,
			task_id    uuid NOT NULL DEFAULT gen_random_uuid(),
			task_type  text NOT NULL,
			payload    jsonb NOT NULL,
			opts       jsonb NOT NULL DEFAULT '{}',
			created_at timestamptz NOT NULL DEFAULT now(),
			sent_to    text
		);
	END IF;
	IF NOT EXISTS (SELECT FROM pg_attribute WHERE attrelid = to_regclass('hakit_outbox')
			AND attname = 'task_id' AND NOT attisdropped) THEN
		ALTER TABLE hakit_outbox ADD COLUMN task_id uuid NOT NULL DEFAULT gen_random_uuid();
	END IF;
	IF NOT EXISTS (SELECT FROM pg_attribute WHERE attrelid = to_regclass('hakit_outbox')
			AND attname = 'sent_to' AND NOT attisdropped) THEN
		ALTER TABLE hakit_outbox ADD COLUMN sent_to text;
	END IF;
END
$$;
