package lint

import (
	"errors"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	pg_query "github.com/pganalyze/pg_query_go/v6"
	pgparser "github.com/pganalyze/pg_query_go/v6/parser"
)

// Finding is one statement that breaks a rolling deploy.
type Finding struct {
	File    string // as given to File, or the path in the FS given to Dir
	Line    int    // 1-based line of the statement's first word
	Rule    Rule
	Message string // what goes wrong
	Instead string // what to do instead
}

// String formats f as FILE:LINE: RULE: message — what to do instead.
func (f Finding) String() string {
	return fmt.Sprintf("%s:%d: %s: %s — %s", f.File, f.Line, f.Rule, f.Message, f.Instead)
}

// ParseError is a migration PostgreSQL's parser rejects.
type ParseError struct {
	File   string
	Line   int // 1-based
	Column int // 1-based, in characters
	Msg    string
}

func (e *ParseError) Error() string {
	return fmt.Sprintf("%s:%d:%d: does not parse: %s", e.File, e.Line, e.Column, e.Msg)
}

// Options change what is reported. The zero value lints an expand
// migration, one that runs at start-up while the previous release serves.
type Options struct {
	// Contract lints a contract migration, one run by `hakit migrate
	// contract` after every instance runs the new release: dropping and
	// renaming columns and tables is its purpose and is not reported.
	Contract bool
}

// File lints one migration with the zero Options. name is used in the
// findings only. A migration that does not parse returns a *ParseError.
func File(name string, src []byte) ([]Finding, error) {
	return Options{}.File(name, src)
}

// File lints one migration. name is used in the findings only. A
// migration that does not parse returns a *ParseError.
func (o Options) File(name string, src []byte) ([]Finding, error) {
	return o.file(name, string(src), newState())
}

// Dir lints every golang-migrate up migration (NNN_name.up.sql) in fsys,
// in any directory, each directory's in version order, a directory before
// its subdirectories; a CHECK (col IS NOT NULL) validated in one file makes
// a later SET NOT NULL safe. Files under a
// directory named "contract" are linted as contract migrations. A file
// that does not parse does not stop the others: its *ParseError is
// returned, joined with those of the other files, next to every finding.
// A directory with no migration is an error.
func Dir(fsys fs.FS) ([]Finding, error) {
	byDir := map[string][]string{}
	var dirs []string
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || !strings.HasSuffix(d.Name(), ".up.sql") {
			return nil
		}
		dir := path.Dir(p)
		if _, ok := byDir[dir]; !ok {
			dirs = append(dirs, dir)
		}
		byDir[dir] = append(byDir[dir], p)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("lint: %w", err)
	}
	if len(dirs) == 0 {
		return nil, errors.New("lint: no migration (NNN_name.up.sql) found")
	}
	// A directory before its subdirectories: migrations/ then
	// migrations/contract/, whose steps finish what the expand ones began.
	slices.Sort(dirs)
	var findings []Finding
	var errs []error
	st := newState() // what earlier files validated carries over
	for _, dir := range dirs {
		files := byDir[dir]
		slices.SortFunc(files, func(a, b string) int {
			va, vb := version(path.Base(a)), version(path.Base(b))
			if va != vb {
				if va < vb {
					return -1
				}
				return 1
			}
			return strings.Compare(a, b)
		})
		o := Options{Contract: slices.Contains(strings.Split(dir, "/"), "contract")}
		for _, p := range files {
			src, err := fs.ReadFile(fsys, p)
			if err != nil {
				errs = append(errs, fmt.Errorf("lint: %w", err))
				continue
			}
			f, err := o.file(p, string(src), st)
			findings = append(findings, f...)
			if err != nil {
				errs = append(errs, err)
			}
		}
	}
	return findings, errors.Join(errs...)
}

// version is the NNN of NNN_name.up.sql; files without one sort last.
func version(name string) uint64 {
	digits, _, _ := strings.Cut(name, "_")
	v, err := strconv.ParseUint(digits, 10, 64)
	if err != nil {
		return ^uint64(0)
	}
	return v
}

// state is what the statements linted so far tell about the tables.
type state struct {
	created map[string]bool // tables created in this file
	indexes map[string]bool // indexes created in this file
	// notNull holds "table.column" for each column a validated CHECK
	// (column IS NOT NULL) covers; checks holds the NOT VALID ones by
	// "table.constraint", with their column.
	notNull map[string]bool
	checks  map[string]string
}

func newState() *state {
	return &state{notNull: map[string]bool{}, checks: map[string]string{}}
}

// stmt is one statement of a file, with what it needs to be reported.
type stmt struct {
	node    *pg_query.Node
	line    int
	ignores map[Rule]bool
}

func (o Options) file(name, src string, st *state) ([]Finding, error) {
	st.created, st.indexes = map[string]bool{}, map[string]bool{}
	tree, err := pg_query.Parse(src)
	if err != nil {
		return nil, parseError(name, src, err)
	}
	scan, err := pg_query.Scan(src)
	if err != nil {
		return nil, parseError(name, src, err)
	}
	l := &linter{opts: o, st: st, file: name}
	stmts := tree.GetStmts()
	for i, raw := range stmts {
		begin := int(raw.GetStmtLocation())
		end := len(src)
		if raw.GetStmtLen() > 0 {
			end = begin + int(raw.GetStmtLen())
		}
		if i+1 < len(stmts) {
			end = max(end, int(stmts[i+1].GetStmtLocation()))
		}
		first, found := begin, false
		var comments []string
		for _, tok := range scan.GetTokens() {
			s, e := int(tok.GetStart()), int(tok.GetEnd())
			if s < begin || s >= end {
				continue
			}
			switch tok.GetToken() {
			case pg_query.Token_SQL_COMMENT, pg_query.Token_C_COMMENT:
				comments = append(comments, src[s:e])
			default:
				if !found {
					first, found = s, true
				}
			}
		}
		for !found && first < len(src) && unicode.IsSpace(rune(src[first])) {
			first++
		}
		s := stmt{node: raw.GetStmt(), line: 1 + strings.Count(src[:first], "\n")}
		s.ignores = l.ignores(s.line, comments)
		l.stmts = append(l.stmts, s)
	}
	for i := range l.stmts {
		l.cur = &l.stmts[i]
		l.check(l.cur.node)
	}
	l.checkConcurrently()
	return l.findings, nil
}

// parseError turns the parser's error into a *ParseError with a line and
// a column.
func parseError(name, src string, err error) error {
	pe := &ParseError{File: name, Line: 1, Column: 1, Msg: err.Error()}
	var perr *pgparser.Error
	if errors.As(err, &perr) {
		pe.Msg = perr.Message
		// Cursorpos counts characters from 1.
		pos := perr.Cursorpos - 1
		for i := 0; i < len(src) && pos > 0; pos-- {
			r, size := utf8.DecodeRuneInString(src[i:])
			if r == '\n' {
				pe.Line++
				pe.Column = 1
			} else {
				pe.Column++
			}
			i += size
		}
	}
	return pe
}

// linter lints the statements of one file.
type linter struct {
	opts     Options
	st       *state
	file     string
	stmts    []stmt
	cur      *stmt
	findings []Finding
}

const ignorePrefix = "hakit:lint-ignore"

// ignores reads the hakit:lint-ignore comments of a statement. One without
// a reason, or naming an unknown rule, is reported and ignores nothing.
func (l *linter) ignores(line int, comments []string) map[Rule]bool {
	ign := map[Rule]bool{}
	for _, c := range comments {
		text := strings.TrimPrefix(c, "--")
		text = strings.TrimSuffix(strings.TrimPrefix(text, "/*"), "*/")
		text = strings.TrimSpace(text)
		rest, ok := strings.CutPrefix(text, ignorePrefix)
		if !ok {
			continue
		}
		fields := strings.Fields(rest)
		if len(fields) < 2 {
			l.findings = append(l.findings, Finding{File: l.file, Line: line, Rule: RuleIgnore,
				Message: fmt.Sprintf("%q names no rule or gives no reason, so it ignores nothing", c),
				Instead: "write -- hakit:lint-ignore RULE why this statement is safe here"})
			continue
		}
		var rules []Rule
		bad := ""
		for _, r := range strings.Split(fields[0], ",") {
			if _, known := ruleInfo[Rule(r)]; !known || Rule(r) == RuleIgnore {
				bad = r
				break
			}
			rules = append(rules, Rule(r))
		}
		if bad != "" {
			l.findings = append(l.findings, Finding{File: l.file, Line: line, Rule: RuleIgnore,
				Message: fmt.Sprintf("%q is not a rule, so the comment ignores nothing", bad),
				Instead: "name one of the rules of `hakit lint -rules`"})
			continue
		}
		for _, r := range rules {
			ign[r] = true
		}
	}
	return ign
}

// report adds a finding on the current statement unless ignored there.
func (l *linter) report(r Rule, format string, args ...any) {
	if l.cur.ignores[r] {
		return
	}
	l.findings = append(l.findings, Finding{File: l.file, Line: l.cur.line, Rule: r,
		Message: fmt.Sprintf(format, args...), Instead: ruleInfo[r].instead})
}
