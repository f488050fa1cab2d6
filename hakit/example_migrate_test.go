package hakit_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing/fstest"
	"time"

	"hakit.dev/dbrouter"
	"hakit.dev/hakit"
	"hakit.dev/hatest"
)

// Migrate applies the library's own migrations (the outbox, Once's table,
// the PostgreSQL session store's table), then the app's. hakit.App calls
// it at start; an app that routes its database without App calls it
// itself. The app's files may sit in a subdirectory, as they do in an
// embed.FS made with //go:embed migrations/*.sql.
func ExampleMigrate() {
	ctx := context.Background()
	pg, err := hatest.StartPostgres(ctx, hatest.PostgresOptions{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer pg.Close()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	db, err := dbrouter.New(ctx, dbrouter.Config{Nodes: pg.DSNs(), Logger: quiet})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer db.Close()

	appMigrations := fstest.MapFS{
		"migrations/001_notes.up.sql":   {Data: []byte(`CREATE TABLE notes (id bigserial PRIMARY KEY, body text NOT NULL)`)},
		"migrations/001_notes.down.sql": {Data: []byte(`DROP TABLE notes`)},
	}
	if err := hakit.Migrate(ctx, db, appMigrations, quiet); err != nil {
		fmt.Println(err)
		return
	}

	rows, err := db.Query(ctx, `SELECT package, version, name FROM hakit_schema_migrations ORDER BY package, version`)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer rows.Close()
	for rows.Next() {
		var pkg, name string
		var version int
		if err := rows.Scan(&pkg, &version, &name); err != nil {
			fmt.Println(err)
			return
		}
		fmt.Println("library:", pkg, version, name)
	}
	var version int
	if err := db.QueryRow(ctx, `SELECT version FROM schema_migrations`).Scan(&version); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("app: version", version)
	// Output:
	// library: jobs 1 001_outbox.up.sql
	// library: jobs 2 002_once.up.sql
	// library: session 1 001_sessions.up.sql
	// app: version 1
}

// Expand/contract: the expand migrations run at start (MigrateWith, as
// hakit.App does), the contract ones beside them in contract/ only when
// asked (MigrateContract, `hakit migrate contract`), once every instance
// runs the release that stopped using what they drop.
func ExampleMigrateContract() {
	ctx := context.Background()
	pg, err := hatest.StartPostgres(ctx, hatest.PostgresOptions{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer pg.Close()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	db, err := dbrouter.New(ctx, dbrouter.Config{Nodes: pg.DSNs(), Logger: quiet})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer db.Close()

	migrations := fstest.MapFS{
		"migrations/001_users.up.sql":              {Data: []byte(`CREATE TABLE users (id bigserial PRIMARY KEY, name text)`)},
		"migrations/002_full_name.up.sql":          {Data: []byte(`ALTER TABLE users ADD COLUMN full_name text`)},
		"migrations/contract/001_drop_name.up.sql": {Data: []byte(`ALTER TABLE users DROP COLUMN name`)},
	}
	columns := func() []string {
		rows, _ := db.Query(ctx, `SELECT column_name FROM information_schema.columns WHERE table_name = 'users' ORDER BY ordinal_position`)
		var cols []string
		for rows.Next() {
			var c string
			_ = rows.Scan(&c)
			cols = append(cols, c)
		}
		return cols
	}
	opts := hakit.MigrateOptions{LockTimeout: 2 * time.Second, Log: quiet}
	if err := hakit.MigrateWith(ctx, db, migrations, opts); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("after start-up:", columns())
	if err := hakit.MigrateContract(ctx, db, migrations, opts); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("after the contract:", columns())
	// Output:
	// after start-up: [id name full_name]
	// after the contract: [id full_name]
}
