-- The transactional outbox (jobs.NewOutbox("")). Idempotent, so a database
-- whose table came from Outbox.Schema or CreateTables, in any earlier
-- version, is upgraded in place: the table is created if missing, then
-- gains the columns added since (task_id, sent_to).
CREATE TABLE IF NOT EXISTS hakit_outbox (
	id         bigserial PRIMARY KEY,
	task_id    uuid NOT NULL DEFAULT gen_random_uuid(),
	task_type  text NOT NULL,
	payload    jsonb NOT NULL,
	opts       jsonb NOT NULL DEFAULT '{}',
	created_at timestamptz NOT NULL DEFAULT now(),
	sent_to    text
);
ALTER TABLE hakit_outbox
	ADD COLUMN IF NOT EXISTS task_id uuid NOT NULL DEFAULT gen_random_uuid(),
	ADD COLUMN IF NOT EXISTS sent_to text;
