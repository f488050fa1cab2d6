// Command hakit is hakit's command-line tool.
//
//	hakit lint [-contract] [-rules] PATH...
//
// lints migrations (see hakit.dev/lint): each PATH is a .sql file or a
// directory, whose NNN_name.up.sql files are linted (in any subdirectory;
// those under a directory named "contract" as contract migrations). It
// prints one line per finding, FILE:LINE: RULE: message — what to do
// instead, and exits 1 if it found any, 2 if a file does not parse (with
// its line and column) or cannot be read, 0 otherwise. -rules lists the
// rules and what each prevents.
//
//	hakit migrate contract [-dir DIR]
//
// applies the contract migrations in DIR (default migrations/contract) to
// the database of HAKIT_DATABASE_URL_1, _2, … (with the timeouts of
// HAKIT_MIGRATION_LOCK_TIMEOUT, HAKIT_MIGRATION_STATEMENT_TIMEOUT and
// HAKIT_MIGRATION_LOCK_RETRY), after every instance runs the release that
// stopped using what they drop (see docs/migrations.md). It exits 0 when
// they are applied, 1 when one fails, 2 on a usage error.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

const usage = `usage:
  hakit lint [-contract] [-rules] PATH...   lint migrations (files or directories)
  hakit migrate contract [-dir DIR]         apply the contract migrations (HAKIT_DATABASE_URL_n)
`

// run runs the command of args and returns the exit code.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "lint":
		return runLint(args[1:], stdout, stderr)
	case "migrate":
		return runMigrate(ctx, args[1:], getenv, stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "hakit: unknown command %q\n%s", args[0], usage)
	return 2
}
