package session

import (
	"embed"
	"io/fs"
)

//go:embed migrations/*.up.sql
var migrationFiles embed.FS

// Migrations returns the versioned SQL migrations of the table
// [PostgresStore] uses by default, hakit_sessions. The files sit at the
// root in golang-migrate's format, NNN_name.up.sql (up only), and each is
// idempotent, so a table made earlier by [PostgresSchema] or
// [PostgresStore.CreateTable] is kept.
//
// hakit.App applies them itself, before the app's own migrations, and
// records them in its hakit_schema_migrations table (see
// docs/migrations.md): an app on hakit.App needs none of this package's
// DDL in its own migrations. Without hakit.App, apply them with
// hakit.Migrate, or with golang-migrate in a migrations table of their own
// (x-migrations-table=hakit_session_schema_migrations).
//
// A store on another table (PostgresOptions.Table) is not covered: put
// its [PostgresSchema] in the app's migrations.
func Migrations() fs.FS {
	sub, err := fs.Sub(migrationFiles, "migrations")
	if err != nil {
		panic(err) // "migrations" is a valid path: cannot happen
	}
	return sub
}
