package linttest_test

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"testing/fstest"

	"hakit.dev/jobs"
	"hakit.dev/lint/linttest"
	"hakit.dev/session"
)

// recorder is a testing.TB that keeps the errors instead of failing.
type recorder struct {
	testing.TB
	errs []string
}

func (r *recorder) Errorf(format string, args ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}
func (r *recorder) Helper() {}

func TestMigrationsReports(t *testing.T) {
	fsys := fstest.MapFS{
		"migrations/001_a.up.sql": {Data: []byte("CREATE TABLE a (id int);\n")},
		"migrations/002_b.up.sql": {Data: []byte("CREATE INDEX a_id ON a (id);\n")},
		"migrations/003_c.up.sql": {Data: []byte("ALTER TABLE a ADD;\n")},
	}
	r := &recorder{TB: t}
	linttest.Migrations(r, fsys)
	if len(r.errs) != 2 ||
		!strings.HasPrefix(r.errs[0], "migrations/002_b.up.sql:1: index-concurrently: ") ||
		!strings.HasPrefix(r.errs[1], "migrations/003_c.up.sql:1:") {
		t.Errorf("errors %q, want the finding of 002 and the parse error of 003", r.errs)
	}
	r = &recorder{TB: t}
	linttest.Migrations(r, fstest.MapFS{"migrations/001_a.up.sql": {Data: []byte("CREATE TABLE a (id int);\n")}})
	if len(r.errs) != 0 {
		t.Errorf("clean migrations: errors %q", r.errs)
	}
}

// The library's own migrations pass the linter.
func TestLibraryMigrations(t *testing.T) {
	linttest.Migrations(t, jobs.Migrations())
	linttest.Migrations(t, session.Migrations())
	linttest.Migrations(t, os.DirFS("../../hakit/internal/fullapp/migrations"))
}
