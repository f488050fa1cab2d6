// Package lint finds the statements of a migration that break a rolling
// deploy: those that hold a lock every writer waits behind for as long as
// they scan or rewrite a table, and those that break the release still
// running (a column dropped or renamed under it).
//
// SQL is read by PostgreSQL's own parser (libpg_query, through
// github.com/pganalyze/pg_query_go), never by regular expressions: what the
// linter sees is what PostgreSQL will run. The package needs cgo.
//
// # Use
//
// [File] lints one migration, [Dir] every golang-migrate up migration
// (NNN_name.up.sql) of a file system, in version order. Each [Finding]
// prints as
//
//	FILE:LINE: RULE: message — what to do instead
//
// and the command
//
//	go run hakit.dev/cmd/hakit lint migrations/
//
// prints them, exiting 1 when it found any, 0 when the files are clean and
// 2 when one does not parse ([ParseError], with its line and column). An
// app lints its own migrations in a test with [hakit.dev/lint/linttest].
//
// # Rules
//
// [Rules] lists them, each with what it prevents; docs/migrations.md tells
// the safe way to write each change. A statement on a table created in the
// same file is not reported: nobody else uses that table yet. The SQL
// statements in a DO block's PL/pgSQL body are linted too, reported on the
// DO statement.
//
// # Ignoring a finding
//
// A comment inside a statement, or between it and the statement before,
//
//	-- hakit:lint-ignore index-concurrently the table has 12 rows, always
//	CREATE INDEX ON countries (code);
//
// ignores the named rules (separated by commas) for that statement. The
// reason is required: an ignore without one is itself a finding
// ([RuleIgnore]) and ignores nothing.
//
// # Contract migrations
//
// Drops and renames are what contract migrations are for (they run after
// every instance runs the release that stopped using the column): files
// under a directory named "contract", or linted with Options.Contract, are
// not reported for them.
package lint
