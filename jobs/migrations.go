package jobs

import (
	"embed"
	"io/fs"
)

//go:embed migrations/*.up.sql
var migrationFiles embed.FS

// Migrations returns the versioned SQL migrations of the tables this
// package uses under their default names: hakit_outbox (the table of
// NewOutbox("")) and hakit_jobs_once (the table of [Once]). The files sit
// at the root in golang-migrate's format, NNN_name.up.sql (up only), and
// each is idempotent, so the first one also upgrades a table made by an
// earlier [Outbox.Schema] or [Outbox.CreateTables].
//
// hakit.App applies them itself, before the app's own migrations, and
// records them in its hakit_schema_migrations table (see
// docs/migrations.md): an app on hakit.App needs none of this package's
// DDL in its own migrations. Without hakit.App, apply them with
// hakit.Migrate, or with golang-migrate in a migrations table of their own
// (x-migrations-table=hakit_jobs_schema_migrations): they must not share
// the app's table, whose versions they would collide with.
//
// An outbox on another table (NewOutbox("orders_outbox")) is not covered:
// put its [Outbox.Schema] in the app's migrations.
func Migrations() fs.FS {
	sub, err := fs.Sub(migrationFiles, "migrations")
	if err != nil {
		panic(err) // "migrations" is a valid path: cannot happen
	}
	return sub
}
