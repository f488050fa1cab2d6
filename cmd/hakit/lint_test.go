package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLintExitCodes(t *testing.T) {
	dir := t.TempDir()
	write := func(name, src string) string {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	clean := write("clean/001_a.up.sql", "CREATE TABLE a (id bigint);\n")
	write("clean/002_b.up.sql", "CREATE INDEX CONCURRENTLY a_id ON a (id);\n")
	write("clean/contract/003_c.up.sql", "ALTER TABLE a DROP COLUMN x;\n")
	bad := write("bad/001_a.up.sql", "CREATE TABLE b (id bigint);\n\nALTER TABLE a ALTER COLUMN id SET NOT NULL;\n")
	broken := write("broken/001_a.up.sql", "CREATE TABLE a (id bigint);\nALTER TABLE a ADD;\n")

	tests := []struct {
		name   string
		args   []string
		code   int
		stdout string // a line it must hold
		stderr string
	}{
		{"clean directory", []string{"lint", filepath.Dir(clean)}, 0, "", ""},
		{"finding", []string{"lint", filepath.Join(dir, "bad")}, 1,
			bad + ":3: set-not-null: SET NOT NULL on a.id", ""},
		{"a contract file given alone", []string{"lint", filepath.Join(dir, "clean/contract/003_c.up.sql")}, 0, "", ""},
		{"a drop as an expand migration", []string{"lint", write("x/004_d.up.sql", "ALTER TABLE a DROP COLUMN x;\n")}, 1, "drop-column", ""},
		{"does not parse", []string{"lint", broken, bad}, 2, "set-not-null", broken + ":2:18: does not parse: syntax error"},
		{"missing file", []string{"lint", filepath.Join(dir, "nope.sql")}, 2, "", "no such file"},
		{"no path", []string{"lint"}, 2, "", "usage"},
		{"rules", []string{"lint", "-rules"}, 0, "index-concurrently\n  prevents:", ""},
		{"unknown command", []string{"lnt"}, 2, "", "unknown command"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), tt.args, func(string) string { return "" }, &stdout, &stderr)
			if code != tt.code || !strings.Contains(stdout.String(), tt.stdout) || !strings.Contains(stderr.String(), tt.stderr) {
				t.Errorf("exit %d, stdout %q, stderr %q; want exit %d, stdout with %q, stderr with %q",
					code, stdout.String(), stderr.String(), tt.code, tt.stdout, tt.stderr)
			}
			if tt.code == 0 && tt.stdout == "" && stdout.Len() > 0 {
				t.Errorf("stdout %q, want nothing", stdout.String())
			}
		})
	}
}
