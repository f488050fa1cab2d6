package lint

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"

	pg_query "github.com/pganalyze/pg_query_go/v6"
)

// Rule names a kind of finding.
type Rule string

// The rules. Each prevents a lock that stalls the writers of a table, or a
// change that breaks the release still running; [RuleInfo] says how.
const (
	RuleIndexConcurrently  Rule = "index-concurrently"
	RuleConstraintNotValid Rule = "constraint-not-valid"
	RuleConstraintIndex    Rule = "constraint-needs-index"
	RuleAddColumnNotNull   Rule = "add-column-not-null"
	RuleSetNotNull         Rule = "set-not-null"
	RuleAddColumnRewrite   Rule = "add-column-rewrite"
	RuleColumnType         Rule = "column-type-change"
	RuleDropColumn         Rule = "drop-column"
	RuleDropTable          Rule = "drop-table"
	RuleRename             Rule = "rename"
	RuleLockTable          Rule = "lock-table"
	RuleVacuumFull         Rule = "vacuum-full"
	RuleCluster            Rule = "cluster"
	RuleReindex            Rule = "reindex-concurrently"
	RuleUnbatchedDML       Rule = "unbatched-dml"
	RuleConcurrentlyInTx   Rule = "concurrently-in-transaction"
	RuleTimeoutOff         Rule = "timeout-off"
	// RuleIgnore reports a hakit:lint-ignore comment without a reason
	// or naming an unknown rule. It cannot itself be ignored.
	RuleIgnore Rule = "lint-ignore"
)

// RuleInfo says what a rule prevents and what to write instead.
type RuleInfo struct {
	Rule     Rule
	Prevents string
	Instead  string
}

var ruleInfo = map[Rule]struct{ prevents, instead string }{
	RuleIndexConcurrently: {
		"CREATE INDEX holds a SHARE lock, DROP INDEX an ACCESS EXCLUSIVE lock, on the table: every write waits until the index is built or dropped",
		"CREATE INDEX CONCURRENTLY / DROP INDEX CONCURRENTLY, alone in its migration file"},
	RuleConstraintNotValid: {
		"adding a FOREIGN KEY or CHECK constraint scans the whole table under a lock that blocks writes (a foreign key locks the referenced table too)",
		"ADD CONSTRAINT ... NOT VALID, then ALTER TABLE ... VALIDATE CONSTRAINT in a later migration (it lets writes through)"},
	RuleConstraintIndex: {
		"adding a UNIQUE, PRIMARY KEY or EXCLUDE constraint builds its index under an ACCESS EXCLUSIVE lock: no read or write for the whole build",
		"CREATE UNIQUE INDEX CONCURRENTLY first (its own migration), then ADD CONSTRAINT ... UNIQUE USING INDEX / PRIMARY KEY USING INDEX"},
	RuleAddColumnNotNull: {
		"a NOT NULL column without a default fails on a table with rows, and the release still running does not write it",
		"add the column nullable or with a constant DEFAULT; backfill in batches; then set NOT NULL the safe way (see set-not-null)"},
	RuleSetNotNull: {
		"SET NOT NULL scans the whole table under an ACCESS EXCLUSIVE lock, unless a validated CHECK (column IS NOT NULL) already proves it",
		"ADD CONSTRAINT c CHECK (col IS NOT NULL) NOT VALID; VALIDATE CONSTRAINT c (a later migration); then SET NOT NULL, which skips the scan; then DROP CONSTRAINT c"},
	RuleAddColumnRewrite: {
		"a column with a volatile default, a stored generated column, a serial or identity column makes PostgreSQL rewrite the table under an ACCESS EXCLUSIVE lock",
		"add the column without a default (or with a constant one), set the default for new rows with ALTER COLUMN ... SET DEFAULT, and backfill old rows in batches"},
	RuleColumnType: {
		"changing a column's type rewrites the table (and its indexes) under an ACCESS EXCLUSIVE lock, except a few binary-compatible changes (varchar(n) to text or to a larger n)",
		"expand/contract: add a column of the new type, write both, backfill in batches, switch reads, drop the old column in a contract migration; or ignore with the reason if the change is binary-compatible"},
	RuleDropColumn: {
		"the release still running reads or writes the column: its queries fail from the moment the migration commits",
		"stop using the column in a release first, then drop it in a contract migration (hakit migrate contract) once every instance runs that release"},
	RuleDropTable: {
		"the release still running uses the table: its queries fail from the moment the migration commits",
		"stop using the table in a release first, then drop it in a contract migration (hakit migrate contract)"},
	RuleRename: {
		"renaming a table or column breaks every query of the release still running that names it",
		"expand/contract: add the new column (or a view for a table), write both, backfill, switch reads, and drop the old one in a contract migration"},
	RuleLockTable: {
		"LOCK TABLE holds a lock that stalls every query on the table for the rest of the migration",
		"use statements that take weaker locks, briefly; a migration's lock_timeout bounds the wait, not the holding"},
	RuleVacuumFull: {
		"VACUUM FULL rewrites the table under an ACCESS EXCLUSIVE lock: no read or write until it ends",
		"plain VACUUM (no lock on writes), or pg_repack outside the migrations"},
	RuleCluster: {
		"CLUSTER rewrites the table under an ACCESS EXCLUSIVE lock: no read or write until it ends",
		"pg_repack outside the migrations, or leave the physical order alone"},
	RuleReindex: {
		"REINDEX without CONCURRENTLY blocks writes on the table (and reads that use the index) while it rebuilds",
		"REINDEX ... CONCURRENTLY, alone in its migration file"},
	RuleUnbatchedDML: {
		"an UPDATE or DELETE of a whole table locks every row it touches until it commits, stalling the writers of those rows, and bloats the table at once",
		"backfill in batches of a few thousand rows (WHERE id BETWEEN ...), each its own transaction, outside the start-up migration (a job or a command)"},
	RuleConcurrentlyInTx: {
		"CONCURRENTLY cannot run in a transaction, and a migration file with several statements runs as one: the migration fails",
		"one migration file per CONCURRENTLY statement, with nothing else in it"},
	RuleTimeoutOff: {
		"with lock_timeout or statement_timeout off, a migration waits for ever behind a long transaction while every query queued behind its lock waits too",
		"keep the runner's timeouts; raise statement_timeout for a long step with SET statement_timeout = '30min', never 0"},
	RuleIgnore: {
		"an ignore without a reason hides a finding nobody can judge later",
		"-- hakit:lint-ignore RULE why this statement is safe here"},
}

// Rules lists every rule, in the order of the docs.
func Rules() []RuleInfo {
	order := []Rule{RuleIndexConcurrently, RuleConstraintNotValid, RuleConstraintIndex, RuleAddColumnNotNull,
		RuleSetNotNull, RuleAddColumnRewrite, RuleColumnType, RuleDropColumn, RuleDropTable, RuleRename,
		RuleLockTable, RuleVacuumFull, RuleCluster, RuleReindex, RuleUnbatchedDML, RuleConcurrentlyInTx,
		RuleTimeoutOff, RuleIgnore}
	out := make([]RuleInfo, 0, len(order))
	for _, r := range order {
		out = append(out, RuleInfo{Rule: r, Prevents: ruleInfo[r].prevents, Instead: ruleInfo[r].instead})
	}
	return out
}

// relName names a table as the state keys it: schema.table or table.
func relName(rv *pg_query.RangeVar) string {
	if rv == nil {
		return ""
	}
	if rv.GetSchemaname() != "" {
		return rv.GetSchemaname() + "." + rv.GetRelname()
	}
	return rv.GetRelname()
}

// names joins a list of String nodes (a qualified name) with dots.
func names(list []*pg_query.Node) string {
	var parts []string
	for _, n := range list {
		parts = append(parts, n.GetString_().GetSval())
	}
	return strings.Join(parts, ".")
}

// check lints one statement.
func (l *linter) check(n *pg_query.Node) {
	st := l.st
	switch {
	case n.GetCreateStmt() != nil:
		st.created[relName(n.GetCreateStmt().GetRelation())] = true
	case n.GetDoStmt() != nil:
		l.doBlock(n.GetDoStmt())
	case n.GetIndexStmt() != nil:
		idx := n.GetIndexStmt()
		rel := relName(idx.GetRelation())
		if idx.GetIdxname() != "" {
			name := idx.GetIdxname()
			if s := idx.GetRelation().GetSchemaname(); s != "" {
				name = s + "." + name
			}
			st.indexes[name] = true
		}
		if !idx.GetConcurrent() && !st.created[rel] {
			l.report(RuleIndexConcurrently, "CREATE INDEX on %s without CONCURRENTLY blocks its writes while the index builds", rel)
		}
	case n.GetDropStmt() != nil:
		l.drop(n.GetDropStmt())
	case n.GetAlterTableStmt() != nil:
		at := n.GetAlterTableStmt()
		if at.GetObjtype() != pg_query.ObjectType_OBJECT_TABLE {
			return
		}
		rel := relName(at.GetRelation())
		for _, c := range at.GetCmds() {
			l.alterTable(rel, c.GetAlterTableCmd())
		}
	case n.GetRenameStmt() != nil:
		r := n.GetRenameStmt()
		rel := relName(r.GetRelation())
		if l.opts.Contract || st.created[rel] {
			return
		}
		switch r.GetRenameType() {
		case pg_query.ObjectType_OBJECT_TABLE:
			l.report(RuleRename, "renaming table %s to %s breaks the release still running", rel, r.GetNewname())
		case pg_query.ObjectType_OBJECT_COLUMN:
			l.report(RuleRename, "renaming column %s.%s to %s breaks the release still running", rel, r.GetSubname(), r.GetNewname())
		}
	case n.GetLockStmt() != nil:
		for _, r := range n.GetLockStmt().GetRelations() {
			if rel := relName(r.GetRangeVar()); !st.created[rel] {
				l.report(RuleLockTable, "LOCK TABLE %s stalls every query on it for the rest of the migration", rel)
				return
			}
		}
	case n.GetVacuumStmt() != nil:
		v := n.GetVacuumStmt()
		if v.GetIsVacuumcmd() && hasOption(v.GetOptions(), "full") {
			l.report(RuleVacuumFull, "VACUUM FULL rewrites the table under an ACCESS EXCLUSIVE lock")
		}
	case n.GetClusterStmt() != nil:
		l.report(RuleCluster, "CLUSTER rewrites the table under an ACCESS EXCLUSIVE lock")
	case n.GetReindexStmt() != nil:
		if !hasOption(n.GetReindexStmt().GetParams(), "concurrently") {
			l.report(RuleReindex, "REINDEX without CONCURRENTLY blocks the table's writes while it rebuilds")
		}
	case n.GetUpdateStmt() != nil:
		u := n.GetUpdateStmt()
		if rel := relName(u.GetRelation()); !st.created[rel] {
			l.wholeTable("UPDATE", rel, u.GetWhereClause())
		}
	case n.GetDeleteStmt() != nil:
		d := n.GetDeleteStmt()
		if rel := relName(d.GetRelation()); !st.created[rel] {
			l.wholeTable("DELETE", rel, d.GetWhereClause())
		}
	case n.GetVariableSetStmt() != nil:
		v := n.GetVariableSetStmt()
		name := strings.ToLower(v.GetName())
		if (name == "lock_timeout" || name == "statement_timeout") &&
			v.GetKind() == pg_query.VariableSetKind_VAR_SET_VALUE && len(v.GetArgs()) == 1 && isZero(v.GetArgs()[0]) {
			l.report(RuleTimeoutOff, "SET %s = 0 turns the timeout off", name)
		}
	}
}

// hasOption reports whether a DefElem list names opt and does not set it
// false (VACUUM (FULL false)).
func hasOption(opts []*pg_query.Node, opt string) bool {
	for _, o := range opts {
		d := o.GetDefElem()
		if d == nil || !strings.EqualFold(d.GetDefname(), opt) {
			continue
		}
		if a := d.GetArg(); a != nil {
			if b := a.GetBoolean(); b != nil && !b.GetBoolval() {
				return false
			}
			if c := a.GetAConst(); c != nil {
				if b := c.GetBoolval(); b != nil && !b.GetBoolval() {
					return false
				}
				if s := c.GetSval(); s != nil && (strings.EqualFold(s.GetSval(), "off") || strings.EqualFold(s.GetSval(), "false")) {
					return false
				}
			}
			if s := a.GetString_(); s != nil && (strings.EqualFold(s.GetSval(), "off") || strings.EqualFold(s.GetSval(), "false")) {
				return false
			}
		}
		return true
	}
	return false
}

// isZero reports whether a SET value is 0, as a number or a string with
// or without a unit ('0', '0s', '0ms').
func isZero(n *pg_query.Node) bool {
	c := n.GetAConst()
	if c == nil {
		return false
	}
	if c.GetIval() != nil {
		return c.GetIval().GetIval() == 0
	}
	s := ""
	switch {
	case c.GetFval() != nil:
		s = c.GetFval().GetFval()
	case c.GetSval() != nil:
		s = strings.TrimSpace(c.GetSval().GetSval())
		s = strings.TrimRight(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ ")
	default:
		return false
	}
	f, err := strconv.ParseFloat(s, 64)
	return err == nil && f == 0
}

func (l *linter) drop(d *pg_query.DropStmt) {
	st := l.st
	switch d.GetRemoveType() {
	case pg_query.ObjectType_OBJECT_INDEX:
		if d.GetConcurrent() {
			return
		}
		for _, o := range d.GetObjects() {
			if name := names(o.GetList().GetItems()); !st.indexes[name] {
				l.report(RuleIndexConcurrently, "DROP INDEX %s without CONCURRENTLY blocks the writes of its table", name)
				return
			}
		}
	case pg_query.ObjectType_OBJECT_TABLE:
		if l.opts.Contract {
			return
		}
		for _, o := range d.GetObjects() {
			if name := names(o.GetList().GetItems()); !st.created[name] {
				l.report(RuleDropTable, "DROP TABLE %s breaks the release still running", name)
				return
			}
		}
	}
}

func (l *linter) alterTable(rel string, c *pg_query.AlterTableCmd) {
	if c == nil {
		return
	}
	st := l.st
	created := st.created[rel]
	switch c.GetSubtype() {
	case pg_query.AlterTableType_AT_AddColumn:
		if !created {
			l.addColumn(rel, c.GetDef().GetColumnDef())
		}
	case pg_query.AlterTableType_AT_AddConstraint:
		l.addConstraint(rel, c.GetDef().GetConstraint(), created)
	case pg_query.AlterTableType_AT_ValidateConstraint:
		if col, ok := st.checks[rel+"."+c.GetName()]; ok {
			st.notNull[rel+"."+col] = true
		}
	case pg_query.AlterTableType_AT_SetNotNull:
		if !created && !st.notNull[rel+"."+c.GetName()] {
			l.report(RuleSetNotNull, "SET NOT NULL on %s.%s scans the table under an ACCESS EXCLUSIVE lock: no validated CHECK (%s IS NOT NULL) precedes it",
				rel, c.GetName(), c.GetName())
		}
	case pg_query.AlterTableType_AT_AlterColumnType:
		if !created {
			l.report(RuleColumnType, "changing the type of %s.%s rewrites the table under an ACCESS EXCLUSIVE lock (and the running release may not read the new type)",
				rel, c.GetName())
		}
	case pg_query.AlterTableType_AT_DropColumn:
		if !created && !l.opts.Contract {
			l.report(RuleDropColumn, "dropping %s.%s breaks the release still running", rel, c.GetName())
		}
	}
}

func (l *linter) addColumn(rel string, cd *pg_query.ColumnDef) {
	if cd == nil {
		return
	}
	col := rel + "." + cd.GetColname()
	notNull := cd.GetIsNotNull()
	def := cd.GetRawDefault()
	if t := cd.GetTypeName().GetNames(); len(t) > 0 {
		switch typ := t[len(t)-1].GetString_().GetSval(); typ {
		case "serial", "bigserial", "smallserial", "serial2", "serial4", "serial8":
			l.report(RuleAddColumnRewrite, "adding %s as %s fills every row from a sequence: a table rewrite", col, typ)
		}
	}
	for _, n := range cd.GetConstraints() {
		c := n.GetConstraint()
		switch c.GetContype() {
		case pg_query.ConstrType_CONSTR_NOTNULL:
			notNull = true
		case pg_query.ConstrType_CONSTR_DEFAULT:
			def = c.GetRawExpr()
		case pg_query.ConstrType_CONSTR_GENERATED:
			l.report(RuleAddColumnRewrite, "adding %s as a stored generated column rewrites the table", col)
		case pg_query.ConstrType_CONSTR_IDENTITY:
			l.report(RuleAddColumnRewrite, "adding %s as an identity column rewrites the table", col)
		case pg_query.ConstrType_CONSTR_FOREIGN:
			l.report(RuleConstraintNotValid, "adding %s with REFERENCES validates the foreign key under a lock on both tables", col)
		case pg_query.ConstrType_CONSTR_CHECK:
			l.report(RuleConstraintNotValid, "adding %s with a CHECK scans the table under a lock that blocks writes", col)
		case pg_query.ConstrType_CONSTR_UNIQUE, pg_query.ConstrType_CONSTR_PRIMARY:
			l.report(RuleConstraintIndex, "adding %s as UNIQUE or PRIMARY KEY builds an index under an ACCESS EXCLUSIVE lock", col)
		}
	}
	if notNull && def == nil {
		l.report(RuleAddColumnNotNull, "adding %s NOT NULL without a default fails on a table with rows", col)
	}
	if def != nil && !nonVolatile(def) {
		l.report(RuleAddColumnRewrite, "adding %s with a default PostgreSQL must compute for each row (volatile, or not known to be stable) rewrites the table", col)
	}
}

func (l *linter) addConstraint(rel string, c *pg_query.Constraint, created bool) {
	if c == nil {
		return
	}
	st := l.st
	name := c.GetConname()
	switch c.GetContype() {
	case pg_query.ConstrType_CONSTR_CHECK:
		if col := notNullColumn(c.GetRawExpr()); col != "" {
			if c.GetSkipValidation() {
				st.checks[rel+"."+name] = col
			} else {
				st.notNull[rel+"."+col] = true
			}
		}
		if !c.GetSkipValidation() && !created {
			l.report(RuleConstraintNotValid, "ADD CONSTRAINT %s CHECK without NOT VALID scans %s under a lock that blocks writes", name, rel)
		}
	case pg_query.ConstrType_CONSTR_FOREIGN:
		if !c.GetSkipValidation() && !created {
			l.report(RuleConstraintNotValid, "ADD CONSTRAINT %s FOREIGN KEY without NOT VALID scans %s under a lock on both tables", name, rel)
		}
	case pg_query.ConstrType_CONSTR_UNIQUE, pg_query.ConstrType_CONSTR_PRIMARY:
		if c.GetIndexname() == "" && !created {
			l.report(RuleConstraintIndex, "ADD CONSTRAINT %s builds its index on %s under an ACCESS EXCLUSIVE lock", name, rel)
		}
	case pg_query.ConstrType_CONSTR_EXCLUSION:
		if !created {
			l.report(RuleConstraintIndex, "ADD CONSTRAINT %s EXCLUDE builds its index on %s under an ACCESS EXCLUSIVE lock", name, rel)
		}
	case pg_query.ConstrType_CONSTR_NOTNULL:
		for _, k := range c.GetKeys() {
			col := k.GetString_().GetSval()
			if !created && !st.notNull[rel+"."+col] {
				l.report(RuleSetNotNull, "ADD CONSTRAINT %s NOT NULL on %s.%s scans the table under an ACCESS EXCLUSIVE lock", name, rel, col)
			}
		}
	}
}

// notNullColumn returns col when expr is "col IS NOT NULL", else "".
func notNullColumn(expr *pg_query.Node) string {
	nt := expr.GetNullTest()
	if nt == nil || nt.GetNulltesttype() != pg_query.NullTestType_IS_NOT_NULL {
		return ""
	}
	f := nt.GetArg().GetColumnRef().GetFields()
	if len(f) != 1 {
		return ""
	}
	return f[0].GetString_().GetSval()
}

// stableFuncs are functions known not to be volatile: a default calling
// only them is computed once when the column is added (no rewrite).
var stableFuncs = []string{
	"now", "transaction_timestamp", "statement_timestamp", "current_date", "current_timestamp",
	"localtimestamp", "timezone", "date_trunc", "make_interval", "make_date", "make_timestamptz",
	"to_timestamp", "to_date", "lower", "upper", "concat", "length", "coalesce", "greatest", "least",
	"jsonb_build_object", "json_build_object", "jsonb_build_array", "json_build_array",
	"array_fill", "abs", "round",
}

// nonVolatile reports whether a default expression is made of constants,
// casts, CURRENT_* values and functions known not to be volatile.
func nonVolatile(n *pg_query.Node) bool {
	if n == nil {
		return true
	}
	switch {
	case n.GetAConst() != nil, n.GetSqlvalueFunction() != nil:
		return true
	case n.GetTypeCast() != nil:
		return nonVolatile(n.GetTypeCast().GetArg())
	case n.GetFuncCall() != nil:
		f := n.GetFuncCall()
		fn := f.GetFuncname()
		if len(fn) == 0 || !slices.Contains(stableFuncs, strings.ToLower(fn[len(fn)-1].GetString_().GetSval())) {
			return false
		}
		return allNonVolatile(f.GetArgs())
	case n.GetAExpr() != nil:
		return nonVolatile(n.GetAExpr().GetLexpr()) && nonVolatile(n.GetAExpr().GetRexpr())
	case n.GetBoolExpr() != nil:
		return allNonVolatile(n.GetBoolExpr().GetArgs())
	case n.GetCoalesceExpr() != nil:
		return allNonVolatile(n.GetCoalesceExpr().GetArgs())
	case n.GetAArrayExpr() != nil:
		return allNonVolatile(n.GetAArrayExpr().GetElements())
	case n.GetList() != nil:
		return allNonVolatile(n.GetList().GetItems())
	}
	return false
}

func allNonVolatile(list []*pg_query.Node) bool {
	for _, n := range list {
		if !nonVolatile(n) {
			return false
		}
	}
	return true
}

// checkConcurrently reports CONCURRENTLY statements that share their file
// with other statements, or sit inside BEGIN ... COMMIT.
func (l *linter) checkConcurrently() {
	for i := range l.stmts {
		s := &l.stmts[i]
		if !concurrent(s.node) {
			continue
		}
		if len(l.stmts) > 1 {
			l.cur = s
			l.report(RuleConcurrentlyInTx, "CONCURRENTLY shares its migration file with %d other statement(s): the file runs as one transaction, where CONCURRENTLY fails",
				len(l.stmts)-1)
		}
	}
}

// concurrent reports whether n is a statement that must run outside a
// transaction because of CONCURRENTLY.
func concurrent(n *pg_query.Node) bool {
	switch {
	case n.GetIndexStmt() != nil:
		return n.GetIndexStmt().GetConcurrent()
	case n.GetDropStmt() != nil:
		return n.GetDropStmt().GetConcurrent()
	case n.GetReindexStmt() != nil:
		return hasOption(n.GetReindexStmt().GetParams(), "concurrently")
	}
	return false
}

// String formats a rule's info for `hakit lint -rules`.
func (r RuleInfo) String() string {
	return fmt.Sprintf("%s\n  prevents: %s\n  instead:  %s", r.Rule, r.Prevents, r.Instead)
}

// wholeTable reports an UPDATE or DELETE whose WHERE does not bound the
// rows it touches: none at all, or only IS NULL tests and the like
// (WHERE tag IS NULL is every row of a backfill). A comparison, a BETWEEN,
// an IN or a subquery counts as a bound: WHERE id BETWEEN 1 AND 5000.
func (l *linter) wholeTable(verb, rel string, where *pg_query.Node) {
	switch {
	case where == nil:
		l.report(RuleUnbatchedDML, "%s of every row of %s in one transaction", verb, rel)
	case !bounded(where):
		l.report(RuleUnbatchedDML, "%s of %s whose WHERE bounds no key (only IS NULL tests or the like): every row in one transaction", verb, rel)
	}
}

// bounded reports whether a WHERE expression holds a comparison, a range,
// a list or a subquery anywhere.
func bounded(n *pg_query.Node) bool {
	switch {
	case n == nil:
		return false
	case n.GetAExpr() != nil, n.GetSubLink() != nil:
		return true
	case n.GetBoolExpr() != nil:
		for _, a := range n.GetBoolExpr().GetArgs() {
			if bounded(a) {
				return true
			}
		}
	}
	return false
}

// doBlock lints the SQL statements of a DO block's PL/pgSQL body (those it
// runs as they are; not the strings it EXECUTEs), reported on the DO
// statement. A body the PL/pgSQL parser rejects, or another language, is
// left alone: PostgreSQL reports it when the migration runs.
func (l *linter) doBlock(do *pg_query.DoStmt) {
	body, lang := "", "plpgsql"
	for _, a := range do.GetArgs() {
		d := a.GetDefElem()
		switch d.GetDefname() {
		case "as":
			body = d.GetArg().GetString_().GetSval()
		case "language":
			lang = d.GetArg().GetString_().GetSval()
		}
	}
	if body == "" || lang != "plpgsql" {
		return
	}
	tag := "$hakit_lint$"
	fn := "CREATE FUNCTION hakit_lint_do() RETURNS void LANGUAGE plpgsql AS " + tag + body + tag
	out, err := pg_query.ParsePlPgSqlToJSON(fn)
	if err != nil {
		return
	}
	var tree any
	if json.Unmarshal([]byte(out), &tree) != nil {
		return
	}
	for _, q := range execSQL(tree, nil) {
		inner, err := pg_query.Parse(q)
		if err != nil {
			continue
		}
		for _, raw := range inner.GetStmts() {
			l.check(raw.GetStmt())
		}
	}
}

// execSQL collects the queries of the PLpgSQL_stmt_execsql statements of a
// PL/pgSQL parse tree, in order.
func execSQL(v any, acc []string) []string {
	switch x := v.(type) {
	case map[string]any:
		if e, ok := x["PLpgSQL_stmt_execsql"].(map[string]any); ok {
			if s, ok := e["sqlstmt"].(map[string]any); ok {
				if ex, ok := s["PLpgSQL_expr"].(map[string]any); ok {
					if q, ok := ex["query"].(string); ok {
						acc = append(acc, q)
					}
				}
			}
		}
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			acc = execSQL(x[k], acc)
		}
	case []any:
		for _, e := range x {
			acc = execSQL(e, acc)
		}
	}
	return acc
}
