package lint_test

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"testing/fstest"

	"hakit.dev/lint"
)

// rulesOf lints src and returns the rules it found, in order.
func rulesOf(t *testing.T, o lint.Options, src string) []lint.Rule {
	t.Helper()
	f, err := o.File("m.up.sql", []byte(src))
	if err != nil {
		t.Fatalf("lint %q: %v", src, err)
	}
	var rules []lint.Rule
	for _, x := range f {
		rules = append(rules, x.Rule)
	}
	return rules
}

func TestRules(t *testing.T) {
	t.Parallel()
	tests := []struct {
		rule      lint.Rule
		dangerous []string
		safe      []string
	}{
		{lint.RuleIndexConcurrently,
			[]string{
				`CREATE INDEX orders_user ON orders (user_id)`,
				`CREATE UNIQUE INDEX orders_ref ON shop.orders (ref)`,
				`DROP INDEX orders_user`,
			},
			[]string{
				`CREATE INDEX CONCURRENTLY orders_user ON orders (user_id)`,
				`DROP INDEX CONCURRENTLY IF EXISTS orders_user`,
				"CREATE TABLE t (a int);\nCREATE INDEX t_a ON t (a)",
				"CREATE TABLE t (a int);\nCREATE INDEX t_a ON t (a);\nDROP INDEX t_a",
			}},
		{lint.RuleConstraintNotValid,
			[]string{
				`ALTER TABLE orders ADD CONSTRAINT orders_user_fk FOREIGN KEY (user_id) REFERENCES users (id)`,
				`ALTER TABLE orders ADD CONSTRAINT positive CHECK (total > 0)`,
				`ALTER TABLE orders ADD COLUMN user_id bigint REFERENCES users (id)`,
			},
			[]string{
				`ALTER TABLE orders ADD CONSTRAINT orders_user_fk FOREIGN KEY (user_id) REFERENCES users (id) NOT VALID`,
				`ALTER TABLE orders VALIDATE CONSTRAINT orders_user_fk`,
				`ALTER TABLE orders ADD CONSTRAINT positive CHECK (total > 0) NOT VALID`,
				"CREATE TABLE t (a int);\nALTER TABLE t ADD CONSTRAINT positive CHECK (a > 0)",
			}},
		{lint.RuleConstraintIndex,
			[]string{
				`ALTER TABLE orders ADD CONSTRAINT orders_ref UNIQUE (ref)`,
				`ALTER TABLE orders ADD PRIMARY KEY (id)`,
				`ALTER TABLE orders ADD COLUMN ref text UNIQUE`,
				`ALTER TABLE rooms ADD CONSTRAINT no_overlap EXCLUDE USING gist (during WITH &&)`,
			},
			[]string{
				`ALTER TABLE orders ADD CONSTRAINT orders_ref UNIQUE USING INDEX orders_ref_idx`,
				`ALTER TABLE orders ADD CONSTRAINT orders_pkey PRIMARY KEY USING INDEX orders_id_idx`,
			}},
		{lint.RuleAddColumnNotNull,
			[]string{
				`ALTER TABLE orders ADD COLUMN note text NOT NULL`,
			},
			[]string{
				`ALTER TABLE orders ADD COLUMN note text NOT NULL DEFAULT ''`,
				`ALTER TABLE orders ADD COLUMN note text`,
			}},
		{lint.RuleSetNotNull,
			[]string{
				`ALTER TABLE orders ALTER COLUMN note SET NOT NULL`,
				"ALTER TABLE orders ADD CONSTRAINT note_nn CHECK (note IS NOT NULL) NOT VALID;\nALTER TABLE orders ALTER COLUMN note SET NOT NULL",
			},
			[]string{
				"ALTER TABLE orders ADD CONSTRAINT note_nn CHECK (note IS NOT NULL) NOT VALID;\n" +
					"ALTER TABLE orders VALIDATE CONSTRAINT note_nn;\n" +
					"ALTER TABLE orders ALTER COLUMN note SET NOT NULL;\n" +
					"ALTER TABLE orders DROP CONSTRAINT note_nn",
				"CREATE TABLE t (a int);\nALTER TABLE t ALTER COLUMN a SET NOT NULL",
			}},
		{lint.RuleAddColumnRewrite,
			[]string{
				`ALTER TABLE orders ADD COLUMN uid uuid DEFAULT gen_random_uuid()`,
				`ALTER TABLE orders ADD COLUMN r float8 DEFAULT random()`,
				`ALTER TABLE orders ADD COLUMN t timestamptz DEFAULT clock_timestamp()`,
				`ALTER TABLE orders ADD COLUMN n bigserial`,
				`ALTER TABLE orders ADD COLUMN n bigint GENERATED ALWAYS AS IDENTITY`,
				`ALTER TABLE orders ADD COLUMN double_total numeric GENERATED ALWAYS AS (total * 2) STORED`,
				`ALTER TABLE orders ADD COLUMN x int DEFAULT my_function()`,
			},
			[]string{
				`ALTER TABLE orders ADD COLUMN created timestamptz DEFAULT now()`,
				`ALTER TABLE orders ADD COLUMN created timestamptz NOT NULL DEFAULT CURRENT_TIMESTAMP`,
				`ALTER TABLE orders ADD COLUMN state text NOT NULL DEFAULT 'new'`,
				`ALTER TABLE orders ADD COLUMN opts jsonb NOT NULL DEFAULT '{}'::jsonb`,
				`ALTER TABLE orders ADD COLUMN n int DEFAULT -1`,
			}},
		{lint.RuleColumnType,
			[]string{
				`ALTER TABLE orders ALTER COLUMN total TYPE numeric(12,2)`,
				`ALTER TABLE orders ALTER COLUMN id SET DATA TYPE bigint`,
			},
			[]string{
				`ALTER TABLE orders ALTER COLUMN total SET DEFAULT 0`,
			}},
		{lint.RuleDropColumn,
			[]string{`ALTER TABLE orders DROP COLUMN note`},
			[]string{"CREATE TABLE t (a int, b int);\nALTER TABLE t DROP COLUMN b"}},
		{lint.RuleDropTable,
			[]string{`DROP TABLE orders`, `DROP TABLE IF EXISTS old_orders CASCADE`},
			[]string{"CREATE TABLE tmp (a int);\nDROP TABLE tmp"}},
		{lint.RuleRename,
			[]string{
				`ALTER TABLE orders RENAME COLUMN note TO comment`,
				`ALTER TABLE orders RENAME TO purchases`,
			},
			[]string{`ALTER INDEX orders_user RENAME TO orders_user_id`}},
		{lint.RuleLockTable,
			[]string{`LOCK TABLE orders IN ACCESS EXCLUSIVE MODE`},
			[]string{"CREATE TABLE t (a int);\nLOCK TABLE t"}},
		{lint.RuleVacuumFull,
			[]string{`VACUUM FULL orders`, `VACUUM (FULL, ANALYZE) orders`},
			[]string{`VACUUM orders`, `VACUUM (FULL false) orders`, `ANALYZE orders`}},
		{lint.RuleCluster,
			[]string{`CLUSTER orders USING orders_pkey`},
			nil},
		{lint.RuleReindex,
			[]string{`REINDEX INDEX orders_user`, `REINDEX TABLE orders`},
			[]string{`REINDEX INDEX CONCURRENTLY orders_user`, `REINDEX (CONCURRENTLY) TABLE orders`}},
		{lint.RuleUnbatchedDML,
			[]string{`UPDATE orders SET note = ''`, `DELETE FROM orders`,
				`UPDATE orders SET note = '' WHERE note IS NULL`, `DELETE FROM orders WHERE archived AND note IS NOT NULL`},
			[]string{
				`UPDATE orders SET note = '' WHERE id BETWEEN 1 AND 5000 AND note IS NULL`,
				`DELETE FROM orders WHERE created < now() - interval '1 year'`,
				`UPDATE orders SET note = '' WHERE note IS NULL AND id IN (SELECT id FROM orders WHERE note IS NULL LIMIT 1000)`,
				"CREATE TABLE t (a int);\nUPDATE t SET a = 1",
			}},
		{lint.RuleConcurrentlyInTx,
			[]string{
				"SET lock_timeout = '1s';\nCREATE INDEX CONCURRENTLY orders_user ON orders (user_id)",
				"BEGIN;\nDROP INDEX CONCURRENTLY orders_user;\nCOMMIT",
			},
			[]string{`CREATE INDEX CONCURRENTLY orders_user ON orders (user_id);`}},
		{lint.RuleTimeoutOff,
			[]string{
				`SET lock_timeout = 0`,
				`SET statement_timeout = '0'`,
				`SET LOCAL statement_timeout TO '0ms'`,
				`SET lock_timeout = '0s'`,
			},
			[]string{
				`SET statement_timeout = '30min'`,
				`SET lock_timeout = '2s'`,
				`RESET statement_timeout`,
			}},
	}
	for _, tt := range tests {
		t.Run(string(tt.rule), func(t *testing.T) {
			for _, src := range tt.dangerous {
				if got := rulesOf(t, lint.Options{}, src); !slices.Contains(got, tt.rule) {
					t.Errorf("%q: found %v, want %s", src, got, tt.rule)
				}
			}
			for _, src := range tt.safe {
				if got := rulesOf(t, lint.Options{}, src); len(got) != 0 {
					t.Errorf("%q: found %v, want nothing", src, got)
				}
			}
		})
	}
	// Every rule has a case.
	for _, r := range lint.Rules() {
		if r.Rule == lint.RuleIgnore {
			continue
		}
		if !slices.ContainsFunc(tests, func(tt struct {
			rule      lint.Rule
			dangerous []string
			safe      []string
		}) bool {
			return tt.rule == r.Rule
		}) {
			t.Errorf("rule %s has no test case", r.Rule)
		}
	}
}

// The SQL statements of a DO block are linted, reported on the DO.
func TestDoBlock(t *testing.T) {
	t.Parallel()
	src := "CREATE TABLE t (a int);\nDO $$\nBEGIN\n  IF true THEN\n    CREATE INDEX o_a ON orders (a);\n    CREATE INDEX t_a ON t (a);\n  END IF;\nEND\n$$;\n"
	f, err := lint.File("do.up.sql", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	if len(f) != 1 || f[0].Rule != lint.RuleIndexConcurrently || f[0].Line != 2 {
		t.Errorf("findings %v, want one index-concurrently on line 2", f)
	}
	ignored := "-- hakit:lint-ignore index-concurrently orders is tiny\n" + src[strings.Index(src, "DO"):]
	if got := rulesOf(t, lint.Options{}, ignored); len(got) != 0 {
		t.Errorf("ignored DO: found %v", got)
	}
	if got := rulesOf(t, lint.Options{}, "DO LANGUAGE plpgsql $$ BEGIN PERFORM 1; END $$"); len(got) != 0 {
		t.Errorf("harmless DO: found %v", got)
	}
}

func TestFindingFormat(t *testing.T) {
	t.Parallel()
	src := "-- adds an index\n\nCREATE TABLE t (a int);\n\n  CREATE INDEX o ON orders (a);\n"
	f, err := lint.File("db/002_x.up.sql", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	if len(f) != 1 {
		t.Fatalf("findings %v, want 1", f)
	}
	got := f[0].String()
	want := "db/002_x.up.sql:5: index-concurrently: CREATE INDEX on orders without CONCURRENTLY blocks its writes while the index builds — CREATE INDEX CONCURRENTLY"
	if !strings.HasPrefix(got, want) {
		t.Errorf("finding\n%s\nwant it to start with\n%s", got, want)
	}
}

func TestIgnore(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		src  string
		want []lint.Rule
	}{
		{"with a reason", "-- hakit:lint-ignore index-concurrently the table has 10 rows\nCREATE INDEX o ON countries (a)", nil},
		{"in a C comment", "/* hakit:lint-ignore index-concurrently tiny table */ CREATE INDEX o ON countries (a)", nil},
		{"several rules", "-- hakit:lint-ignore drop-column,rename both unused since v3\nALTER TABLE t DROP COLUMN a, ADD COLUMN b int;\nALTER TABLE t RENAME c TO d", []lint.Rule{lint.RuleRename}},
		{"inside the statement", "ALTER TABLE t\n  -- hakit:lint-ignore drop-column unused since v3\n  DROP COLUMN a", nil},
		{"no reason", "-- hakit:lint-ignore index-concurrently\nCREATE INDEX o ON countries (a)", []lint.Rule{lint.RuleIgnore, lint.RuleIndexConcurrently}},
		{"unknown rule", "-- hakit:lint-ignore index-concurently small\nCREATE INDEX o ON countries (a)", []lint.Rule{lint.RuleIgnore, lint.RuleIndexConcurrently}},
		{"only its own statement", "-- hakit:lint-ignore index-concurrently small\nCREATE INDEX o ON countries (a);\nCREATE INDEX p ON orders (a)", []lint.Rule{lint.RuleIndexConcurrently}},
		{"another rule", "-- hakit:lint-ignore drop-table unused\nCREATE INDEX o ON countries (a)", []lint.Rule{lint.RuleIndexConcurrently}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := rulesOf(t, lint.Options{}, tt.src); !slices.Equal(got, tt.want) {
				t.Errorf("found %v, want %v", got, tt.want)
			}
		})
	}
}

func TestContract(t *testing.T) {
	t.Parallel()
	src := "ALTER TABLE orders DROP COLUMN note;\nDROP TABLE old_orders;\nALTER TABLE orders RENAME COLUMN a TO b;\nCREATE INDEX o ON orders (a)"
	if got := rulesOf(t, lint.Options{Contract: true}, src); !slices.Equal(got, []lint.Rule{lint.RuleIndexConcurrently}) {
		t.Errorf("contract: found %v, want only index-concurrently", got)
	}
	if got := rulesOf(t, lint.Options{}, src); len(got) != 4 {
		t.Errorf("expand: found %v, want 4 findings", got)
	}
}

func TestParseError(t *testing.T) {
	t.Parallel()
	src := "CREATE TABLE t (a int);\n-- é\nALTER TABLE t ADD COLUMN b int;\nALTER TABLE \"té\" ADD COLUMN c int int;\n"
	_, err := lint.File("bad.up.sql", []byte(src))
	var pe *lint.ParseError
	if !errors.As(err, &pe) {
		t.Fatalf("err %v, want a *lint.ParseError", err)
	}
	if pe.Line != 4 || pe.Column != 35 || !strings.Contains(pe.Msg, `"int"`) {
		t.Errorf("parse error at %d:%d %q, want 4:35 near the second int", pe.Line, pe.Column, pe.Msg)
	}
	if want := "bad.up.sql:4:35: does not parse: "; !strings.HasPrefix(err.Error(), want) {
		t.Errorf("error %q, want it to start with %q", err, want)
	}
}

func TestDir(t *testing.T) {
	t.Parallel()
	fsys := fstest.MapFS{
		// A check validated in an earlier file makes a later SET NOT NULL safe.
		"migrations/001_check.up.sql":         {Data: []byte("ALTER TABLE orders ADD CONSTRAINT n CHECK (note IS NOT NULL) NOT VALID;")},
		"migrations/002_validate.up.sql":      {Data: []byte("ALTER TABLE orders VALIDATE CONSTRAINT n;")},
		"migrations/010_nn.up.sql":            {Data: []byte("ALTER TABLE orders ALTER COLUMN note SET NOT NULL;")},
		"migrations/003_drop.up.sql":          {Data: []byte("ALTER TABLE orders DROP COLUMN x;")},
		"migrations/003_drop.down.sql":        {Data: []byte("DROP TABLE everything;")},
		"migrations/004_bad.up.sql":           {Data: []byte("ALTER TABLE;")},
		"migrations/contract/005_drop.up.sql": {Data: []byte("ALTER TABLE orders DROP COLUMN y;")},
		"README.md":                           {Data: []byte("# not a migration")},
	}
	f, err := lint.Dir(fsys)
	var pe *lint.ParseError
	if !errors.As(err, &pe) || pe.File != "migrations/004_bad.up.sql" {
		t.Errorf("err %v, want the parse error of 004_bad.up.sql", err)
	}
	if len(f) != 1 || f[0].File != "migrations/003_drop.up.sql" || f[0].Rule != lint.RuleDropColumn {
		t.Errorf("findings %v, want only the drop-column of 003_drop.up.sql", f)
	}
	if _, err := lint.Dir(fstest.MapFS{"a.sql": {Data: []byte("SELECT 1")}}); err == nil {
		t.Error("a directory without migrations: no error")
	}
}
