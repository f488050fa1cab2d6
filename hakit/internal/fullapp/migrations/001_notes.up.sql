CREATE TABLE notes (
	id     bigserial PRIMARY KEY,
	author text NOT NULL,
	body   text NOT NULL,
	words  int -- counted by a job
);
CREATE TABLE attachments (
	id           bigserial PRIMARY KEY,
	note_id      bigint NOT NULL REFERENCES notes ON DELETE CASCADE,
	key          text NOT NULL UNIQUE,
	name         text NOT NULL,
	content_type text NOT NULL,
	size         bigint NOT NULL
);
