-- An app's migration, embedded as an app does (//go:embed
-- testdata/migrations/*.sql): it sits two directories down.
CREATE TABLE notes (
	id   bigserial PRIMARY KEY,
	body text NOT NULL
);
