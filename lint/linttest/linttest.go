// Package linttest lints an app's migrations in its own tests:
//
//	//go:embed migrations
//	var migrations embed.FS
//
//	func TestMigrationsLint(t *testing.T) {
//		linttest.Migrations(t, migrations)
//	}
//
// Each finding fails the test with its FILE:LINE: RULE: message line, so a
// migration that would stall the writers or break the release still
// running is caught before it is merged. See [hakit.dev/lint] for the
// rules and for ignoring a finding (with a reason).
package linttest

import (
	"errors"
	"io/fs"
	"testing"

	"hakit.dev/lint"
)

// Migrations lints every up migration of fsys ([lint.Dir]: files under a
// directory named "contract" as contract migrations) and reports each
// finding, each file that does not parse, and a file system without
// migrations as an error of t.
func Migrations(t testing.TB, fsys fs.FS) {
	t.Helper()
	findings, err := lint.Dir(fsys)
	for _, f := range findings {
		t.Errorf("%s", f)
	}
	if err != nil {
		var joined interface{ Unwrap() []error }
		if errors.As(err, &joined) {
			for _, e := range joined.Unwrap() {
				t.Errorf("%v", e)
			}
			return
		}
		t.Errorf("%v", err)
	}
}
