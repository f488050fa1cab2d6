package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"hakit.dev/hatest"
)

// `hakit migrate contract` applies the contract migrations of -dir to the
// database of HAKIT_DATABASE_URL_n, once; usage errors exit 2.
func TestMigrateContract(t *testing.T) {
	pg := hatest.NewPostgres(t, hatest.PostgresOptions{})
	ctx := context.Background()
	if err := pg.Nodes[0].Exec(ctx, `CREATE TABLE items (a int, old text)`); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "contract")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "1_drop_old.up.sql"), []byte("ALTER TABLE items DROP COLUMN old;\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"HAKIT_DATABASE_URL_1": pg.Nodes[0].DSN()}
	getenv := func(k string) string { return env[k] }
	runIt := func(args ...string) (int, string, string) {
		var stdout, stderr bytes.Buffer
		code := run(ctx, args, getenv, &stdout, &stderr)
		return code, stdout.String(), stderr.String()
	}
	for range 2 { // the second run has nothing to do
		if code, out, errOut := runIt("migrate", "contract", "-dir", dir); code != 0 || !strings.Contains(out, "done") {
			t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
		}
	}
	conn, err := pgx.Connect(ctx, pg.Nodes[0].DSN())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM information_schema.columns WHERE table_name = 'items' AND column_name = 'old'`).Scan(&n); err != nil || n != 0 {
		t.Errorf("column old still there (%d, %v)", n, err)
	}
	for _, tt := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"migrate"}, env, "usage"},
		{[]string{"migrate", "contract", "-dir", filepath.Join(dir, "nope")}, env, "is not a directory"},
		{[]string{"migrate", "contract", "-dir", dir}, map[string]string{}, "no database"},
	} {
		env = tt.env
		if code, _, errOut := runIt(tt.args...); code != 2 || !strings.Contains(errOut, tt.want) {
			t.Errorf("%q: exit %d, stderr %q; want 2 and %q", tt.args, code, errOut, tt.want)
		}
	}
}
