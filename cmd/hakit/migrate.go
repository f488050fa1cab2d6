package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"

	"hakit.dev/dbrouter"
	"hakit.dev/hakit"
)

// runMigrate is `hakit migrate contract`: it applies the contract
// migrations of -dir to the database of the HAKIT_DATABASE_URL_n
// variables (read through getenv), with the HAKIT_MIGRATION_* timeouts.
func runMigrate(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "contract" {
		fmt.Fprintln(stderr, "usage: hakit migrate contract [-dir DIR]")
		return 2
	}
	fl := flag.NewFlagSet("hakit migrate contract", flag.ContinueOnError)
	fl.SetOutput(stderr)
	dir := fl.String("dir", "migrations/contract", "the directory of the contract migrations (NNN_name.up.sql)")
	if err := fl.Parse(args[1:]); err != nil {
		return 2
	}
	if fl.NArg() > 0 {
		fmt.Fprintf(stderr, "hakit migrate contract: unexpected arguments %q\n", fl.Args())
		return 2
	}
	env := hakit.NewEnv(getenv)
	cfg := env.Config()
	if err := env.Err(); err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	if len(cfg.DatabaseURLs) == 0 {
		fmt.Fprintln(stderr, "hakit migrate contract: no database: set HAKIT_DATABASE_URL_1 (and _2, … for the other nodes)")
		return 2
	}
	if st, err := os.Stat(*dir); err != nil || !st.IsDir() {
		fmt.Fprintf(stderr, "hakit migrate contract: %s is not a directory of contract migrations (-dir)\n", *dir)
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	db, err := dbrouter.New(ctx, dbrouter.Config{Nodes: cfg.DatabaseURLs, Logger: log})
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	defer db.Close()
	err = hakit.MigrateContract(ctx, db, os.DirFS(*dir), hakit.MigrateOptions{
		LockTimeout:      cfg.MigrationLockTimeout,
		StatementTimeout: cfg.MigrationStatementTimeout,
		LockRetry:        cfg.MigrationLockRetry,
		Log:              log,
	})
	if err != nil {
		if errors.Is(err, context.Canceled) {
			fmt.Fprintln(stderr, "hakit migrate contract: interrupted:", err)
		} else {
			fmt.Fprintln(stderr, err)
		}
		return 1
	}
	fmt.Fprintln(stdout, "hakit migrate contract: done")
	return 0
}
