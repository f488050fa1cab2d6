package doccheck

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"go/ast"
	"go/format"
	"go/parser"
	"go/scanner"
	"go/token"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// Rules is what a doc author is told when a check fails.
const Rules = "Code blocks in README.md and docs/*.md are checked by internal/doccheck (see docs/testing.md, \"Code in the docs\"):\n" +
	"  - every fenced block names its language: ```go, ```sh, ```text, ```yaml, …;\n" +
	"  - a ```go block is a complete, gofmt-formatted Go file (package clause, imports, declarations):\n" +
	"    package main with a func main, or any other package; it must build and pass go vet against\n" +
	"    the module's current code, importing only the standard library, hakit.dev/... and go.mod's modules;\n" +
	"  - a fragment that cannot be a complete file goes into a func Example… in the package's _test.go\n" +
	"    files; the doc shows an excerpt of it, with <!-- excerpt: path/to/example_test.go --> on the line\n" +
	"    before the ```go fence (path from the module root);\n" +
	"  - pseudo-code, configuration and output are not Go: tag them ```text (or ```sh, ```yaml, …)."

// Block is one fenced code block of a Markdown file.
type Block struct {
	// File is the Markdown file's path, as given to [Blocks].
	File string
	// Line is the 1-based line of the opening fence; the block's first
	// line of code is Line+1.
	Line int
	// Lang is the first word of the fence's info string, in lower case;
	// "" when the fence has none.
	Lang string
	// Code is the block's content, without the indentation of the fence.
	Code string
	// Excerpt is PATH when the line before the fence (blank lines aside)
	// is <!-- excerpt: PATH -->; "" otherwise.
	Excerpt string
}

// IsGo reports whether the block is tagged as Go.
func (b Block) IsGo() bool { return b.Lang == "go" || b.Lang == "golang" }

// Problem is one thing wrong with a Markdown file's code.
type Problem struct {
	File string // the Markdown file, as given
	Line int    // 1-based line in File
	Msg  string
}

func (p Problem) String() string { return p.File + ":" + strconv.Itoa(p.Line) + ": " + p.Msg }

var excerptRE = regexp.MustCompile(`^<!--\s*excerpt:\s*(\S+)\s*-->$`)

// Blocks returns the fenced code blocks of a Markdown file (CommonMark
// fences: three or more backticks or tildes, indented by any amount, as
// inside a list item). A fence never closed is an *UnclosedError, returned
// with the blocks before it.
func Blocks(file string, md []byte) ([]Block, error) {
	lines := strings.Split(string(md), "\n")
	var blocks []Block
	for i := 0; i < len(lines); i++ {
		indent, fence, info, ok := openFence(lines[i])
		if !ok {
			continue
		}
		b := Block{File: file, Line: i + 1}
		if f := strings.Fields(info); len(f) > 0 {
			b.Lang = strings.ToLower(f[0])
		}
		for j := i - 1; j >= 0; j-- {
			prev := strings.TrimSpace(lines[j])
			if prev == "" {
				continue
			}
			if m := excerptRE.FindStringSubmatch(prev); m != nil {
				b.Excerpt = m[1]
			}
			break
		}
		var code []string
		closed := false
		for i++; i < len(lines); i++ {
			t := strings.TrimLeft(lines[i], " \t")
			if strings.HasPrefix(t, fence) && strings.Trim(t, fence[:1]+" \t") == "" {
				closed = true
				break
			}
			code = append(code, dedent(lines[i], indent))
		}
		if !closed {
			return blocks, &UnclosedError{File: file, Line: b.Line, Fence: fence}
		}
		b.Code = strings.Join(code, "\n")
		if len(code) > 0 {
			b.Code += "\n"
		}
		blocks = append(blocks, b)
	}
	return blocks, nil
}

// UnclosedError is Blocks' error for a fence that is never closed.
type UnclosedError struct {
	File  string
	Line  int    // of the opening fence
	Fence string // "```", "~~~~", …
}

func (e *UnclosedError) Error() string {
	return fmt.Sprintf("%s:%d: the code block is never closed (%s)", e.File, e.Line, e.Fence)
}

// openFence reports whether line opens a fenced block, with the fence's
// indentation, the fence itself and the info string.
func openFence(line string) (indent, fence, info string, ok bool) {
	t := strings.TrimLeft(line, " \t")
	indent = line[:len(line)-len(t)]
	if len(t) < 3 || (t[0] != '`' && t[0] != '~') {
		return "", "", "", false
	}
	n := 0
	for n < len(t) && t[n] == t[0] {
		n++
	}
	if n < 3 {
		return "", "", "", false
	}
	info = strings.TrimSpace(t[n:])
	if t[0] == '`' && strings.Contains(info, "`") {
		return "", "", "", false // inline code, not a fence
	}
	return indent, t[:n], info, true
}

// dedent removes indent (the fence's) from the start of line, as far as
// line has it.
func dedent(line, indent string) string {
	for _, c := range indent {
		if len(line) == 0 || rune(line[0]) != c {
			break
		}
		line = line[1:]
	}
	return line
}

// A goBlock is a complete-file Go block written out as a package.
type goBlock struct {
	Block
	dir string // base name of its directory under the temporary root
}

// Check checks the code blocks of the Markdown files (paths relative to
// root, or absolute) against the Go module whose root directory is root
// (excerpt paths are relative to root too), and returns every problem
// found, sorted by file and line. The error is for a failure to run the
// check itself (a missing go command, an unreadable file), not for
// problems in the docs.
//
// Complete-file Go blocks are written out under tmpParent, which must be
// a directory inside the module, and removed before Check returns.
func Check(ctx context.Context, root, tmpParent string, files []string) ([]Problem, error) {
	var problems []Problem
	var gos []*goBlock
	for _, f := range files {
		path := f
		if !filepath.IsAbs(path) {
			path = filepath.Join(root, f)
		}
		md, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		blocks, err := Blocks(f, md)
		if u := (*UnclosedError)(nil); errors.As(err, &u) {
			problems = append(problems, Problem{f, u.Line, "a code block is never closed: everything after it is taken as code"})
		} else if err != nil {
			return nil, err
		}
		for _, b := range blocks {
			switch {
			case b.Lang == "":
				problems = append(problems, Problem{f, b.Line, "a code block without a language: tag it ```text (or ```sh, ```yaml, …), or ```go if it is Go"})
			case !b.IsGo():
			case b.Excerpt != "":
				problems = append(problems, checkExcerpt(root, b)...)
			default:
				ps := checkSource(b)
				problems = append(problems, ps...)
				if len(ps) == 0 {
					gos = append(gos, &goBlock{Block: b})
				}
			}
		}
	}
	if len(gos) > 0 {
		ps, err := compile(ctx, root, tmpParent, gos)
		if err != nil {
			return nil, err
		}
		problems = append(problems, ps...)
	}
	sort.SliceStable(problems, func(i, j int) bool {
		if problems[i].File != problems[j].File {
			return problems[i].File < problems[j].File
		}
		return problems[i].Line < problems[j].Line
	})
	return problems, nil
}

// checkSource checks that a Go block parses as a complete file, is
// gofmt-formatted and, in package main, declares main.
func checkSource(b Block) []Problem {
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "block.go", b.Code, parser.ParseComments)
	if err != nil {
		var list scanner.ErrorList
		if !errors.As(err, &list) || len(list) == 0 {
			return []Problem{{b.File, b.Line, err.Error()}}
		}
		first := list[0]
		if strings.HasPrefix(first.Msg, "expected 'package'") {
			return []Problem{{b.File, b.Line + first.Pos.Line, "not a complete Go file (it has no package clause): make it one, show it as an excerpt of an Example, or tag it ```text if it is not Go"}}
		}
		var ps []Problem
		for _, e := range list {
			ps = append(ps, Problem{b.File, b.Line + e.Pos.Line, e.Msg})
		}
		return ps
	}
	if f.Name.Name == "main" && !hasMain(f) {
		return []Problem{{b.File, b.Line + fset.Position(f.Name.Pos()).Line, "package main without a func main: add one, or give the package another name"}}
	}
	formatted, err := format.Source([]byte(b.Code))
	if err != nil {
		return []Problem{{b.File, b.Line, err.Error()}}
	}
	if got := string(formatted); got != b.Code {
		have, want := strings.Split(b.Code, "\n"), strings.Split(got, "\n")
		i := 0
		for i < len(have) && i < len(want) && have[i] == want[i] {
			i++
		}
		w := ""
		if i < len(want) {
			w = want[i]
		}
		return []Problem{{b.File, b.Line + 1 + i, fmt.Sprintf("not gofmt-formatted: gofmt writes this line as %q", w)}}
	}
	return nil
}

func hasMain(f *ast.File) bool {
	for _, d := range f.Decls {
		if fd, ok := d.(*ast.FuncDecl); ok && fd.Recv == nil && fd.Name.Name == "main" {
			return true
		}
	}
	return false
}

// checkExcerpt checks that an excerpt block's lines are in one Example
// function of the file it names.
func checkExcerpt(root string, b Block) []Problem {
	bad := func(msg string) []Problem { return []Problem{{b.File, b.Line, msg}} }
	path := filepath.Join(root, filepath.FromSlash(b.Excerpt))
	if !strings.HasSuffix(b.Excerpt, "_test.go") || filepath.IsAbs(b.Excerpt) || strings.HasPrefix(filepath.Clean(b.Excerpt), "..") {
		return bad(fmt.Sprintf("excerpt: %s: the excerpt must come from a _test.go file of the module (a path from the module root)", b.Excerpt))
	}
	src, err := os.ReadFile(path)
	if err != nil {
		return bad(fmt.Sprintf("excerpt: %v", err))
	}
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, path, src, 0)
	if err != nil {
		return bad(fmt.Sprintf("excerpt: %s does not parse: %v", b.Excerpt, err))
	}
	want := normalize(b.Code)
	if want == "\n" {
		return bad("excerpt: the block is empty")
	}
	examples := 0
	for _, d := range f.Decls {
		fd, ok := d.(*ast.FuncDecl)
		if !ok || fd.Recv != nil || !strings.HasPrefix(fd.Name.Name, "Example") {
			continue
		}
		examples++
		body := src[fset.Position(fd.Pos()).Offset:fset.Position(fd.End()).Offset]
		if strings.Contains(normalize(string(body)), want) {
			return nil
		}
	}
	if examples == 0 {
		return bad(fmt.Sprintf("excerpt: %s has no Example function", b.Excerpt))
	}
	return bad(fmt.Sprintf("excerpt: these lines are not in any Example function of %s: every line of the block must appear there, in order and contiguous (indentation and blank lines aside); copy them from the Example, or change the Example", b.Excerpt))
}

// normalize trims each line and drops blank ones, between newlines.
func normalize(s string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return "\n" + strings.Join(out, "\n") + "\n"
}

// compile writes each block as a package under a new directory in
// tmpParent and checks them with go list -export (which compiles) and go
// vet, one run each for all of them.
func compile(ctx context.Context, root, tmpParent string, gos []*goBlock) (_ []Problem, err error) {
	tmp, err := os.MkdirTemp(tmpParent, "_blocks-")
	if err != nil {
		return nil, err
	}
	defer func() {
		if rerr := os.RemoveAll(tmp); err == nil {
			err = rerr
		}
	}()
	byDir := map[string]*goBlock{}
	for i, b := range gos {
		name := strings.TrimSuffix(filepath.Base(b.File), filepath.Ext(b.File))
		name = strings.Map(func(r rune) rune {
			if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
				return r
			}
			return '_'
		}, name)
		b.dir = fmt.Sprintf("b%03d_%s_L%d", i+1, name, b.Line)
		if err := os.Mkdir(filepath.Join(tmp, b.dir), 0o755); err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(tmp, b.dir, "block.go"), []byte(b.Code), 0o644); err != nil {
			return nil, err
		}
		if err := embedPlaceholders(filepath.Join(tmp, b.dir), b.Code); err != nil {
			return nil, err
		}
		byDir[b.dir] = b
	}
	c := &collector{tmp: tmp, module: modulePath(root), byDir: byDir, failed: map[string]bool{}}

	// go list -e -export: load errors (an import that does not exist, a
	// module go.mod does not require) and every compile error (up to the
	// compiler's ten per package), for all packages at once. It compiles
	// but links nothing, unlike go build of several main packages.
	out, err := goCmd(ctx, tmp, "list", "-e", "-export", "-json=Dir,Error,DepsErrors", "./...")
	if err != nil {
		return nil, fmt.Errorf("go list: %v\n%s", err, out)
	}
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p struct {
			Dir        string
			Error      *listError
			DepsErrors []*listError
		}
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			return nil, fmt.Errorf("go list: %v\n%s", err, out)
		}
		dir := filepath.Base(p.Dir)
		for _, e := range append([]*listError{p.Error}, p.DepsErrors...) {
			if e != nil {
				c.listError(dir, e)
			}
		}
	}

	// go vet on what compiled: printf formats, copied locks, unreachable
	// code…
	var pkgs []string
	for _, b := range gos {
		if !c.failed[b.dir] {
			pkgs = append(pkgs, "./"+b.dir)
		}
	}
	if len(pkgs) == 0 {
		return c.problems, nil
	}
	out, err = goCmd(ctx, tmp, append([]string{"vet"}, pkgs...)...)
	if err != nil {
		if n := c.output(out); n == 0 {
			return nil, fmt.Errorf("go vet: %v\n%s", err, out)
		}
	}
	return c.problems, nil
}

var globMeta = regexp.MustCompile(`\[[^\]]*\]|[*?]`)

// embedPlaceholders creates, in a block's directory, a file for each
// //go:embed pattern of its code, so that a program in a doc can embed its
// migrations or templates ("migrations/*.sql" gets migrations/x.sql).
func embedPlaceholders(dir, code string) error {
	for _, line := range strings.Split(code, "\n") {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), "//go:embed ")
		if !ok {
			continue
		}
		for _, pat := range strings.Fields(rest) {
			if unq, err := strconv.Unquote(pat); err == nil {
				pat = unq
			}
			pat = globMeta.ReplaceAllString(strings.TrimPrefix(pat, "all:"), "x")
			if !filepath.IsLocal(pat) {
				continue // the compiler says what is wrong with it
			}
			path := filepath.Join(dir, filepath.FromSlash(pat))
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				return err
			}
			if err := os.WriteFile(path, []byte("doccheck placeholder\n"), 0o644); err != nil {
				return err
			}
		}
	}
	return nil
}

// modulePath returns the module path declared in root/go.mod, or "".
func modulePath(root string) string {
	data, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "module" {
			return strings.Trim(f[1], `"`)
		}
	}
	return ""
}

// goCmd runs the go command in dir, in the module's own mode (no
// workspace; go.mod and go.sum are read-only, the go command's default),
// and returns its
// combined output.
func goCmd(ctx context.Context, dir string, args ...string) ([]byte, error) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		return nil, fmt.Errorf("doccheck needs the go command in PATH: %w", err)
	}
	cmd := exec.CommandContext(ctx, gobin, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOWORK=off")
	return cmd.CombinedOutput()
}

type listError struct {
	Pos string
	Err string
}

// collector turns the go command's messages into problems at lines of
// the Markdown files.
type collector struct {
	tmp      string
	module   string // the module's path, from go.mod
	byDir    map[string]*goBlock
	failed   map[string]bool // dir → a problem was reported
	problems []Problem
}

var (
	posRE     = regexp.MustCompile(`^(?:vet: )?(\S+?\.go):(\d+)(?::\d+)?: (.*)$`)
	listPosRE = regexp.MustCompile(`^(\S+?\.go):(\d+)(?::\d+)?$`)
)

// locate maps a position in a generated file to its block and the line
// of the Markdown file.
func (c *collector) locate(file string, line int) (*goBlock, int) {
	if !filepath.IsAbs(file) {
		file = filepath.Join(c.tmp, file)
	}
	rel, err := filepath.Rel(c.tmp, file)
	if err != nil {
		return nil, 0
	}
	b := c.byDir[strings.SplitN(filepath.ToSlash(rel), "/", 2)[0]]
	if b == nil {
		return nil, 0
	}
	return b, b.Line + line
}

func (c *collector) add(b *goBlock, line int, msg string) {
	c.failed[b.dir] = true
	c.problems = append(c.problems, Problem{b.File, line, c.cleanMsg(msg)})
}

var missingRE = regexp.MustCompile(`^(?:no required module provides|cannot find module providing) package (\S+?)[;:]`)

// cleanMsg replaces the go command's advice on a missing package, which
// does not apply to a doc: a doc cannot add a module to go.mod.
func (c *collector) cleanMsg(msg string) string {
	msg = strings.TrimSpace(msg)
	m := missingRE.FindStringSubmatch(msg)
	switch {
	case m == nil:
		return msg
	case c.module != "" && (m[1] == c.module || strings.HasPrefix(m[1], c.module+"/")):
		return fmt.Sprintf("package %s does not exist in module %s", m[1], c.module)
	default:
		return fmt.Sprintf("package %s is not in the module's dependencies: a doc may import only the standard library, %s packages and the modules in go.mod", m[1], c.module)
	}
}

func (c *collector) listError(dir string, e *listError) {
	b := c.byDir[dir]
	if e.Pos == "" && strings.HasPrefix(e.Err, "# ") && b != nil {
		// The compiler's output: "# package", then file:line:col: lines.
		if c.output([]byte(e.Err)) > 0 {
			return
		}
	}
	if m := listPosRE.FindStringSubmatch(e.Pos); m != nil {
		line, _ := strconv.Atoi(m[2])
		if bb, l := c.locate(m[1], line); bb != nil {
			c.add(bb, l, e.Err)
			return
		}
	}
	if b != nil {
		c.add(b, b.Line, e.Err)
		return
	}
	c.problems = append(c.problems, Problem{"(go list)", 0, e.Err})
}

// output reads the go command's output: "# package" headers, then
// file:line:col: message lines, with tab-indented continuation lines. It
// returns how many problems it found.
func (c *collector) output(out []byte) int {
	n := 0
	var cur *goBlock // the package of the last "# pkg" header
	last := -1       // index of the last problem, for continuation lines
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.TrimSpace(line) == "", strings.HasSuffix(line, "too many errors"):
		case strings.HasPrefix(line, "# "):
			cur = c.byDir[filepath.Base(strings.Trim(strings.TrimPrefix(line, "# "), "[]"))]
			last = -1
		case strings.HasPrefix(line, "\t") || strings.HasPrefix(line, " "):
			if last >= 0 && !strings.HasPrefix(strings.TrimSpace(line), "go get ") {
				c.problems[last].Msg += "\n\t" + strings.TrimSpace(line)
			}
		default:
			if m := posRE.FindStringSubmatch(line); m != nil {
				l, _ := strconv.Atoi(m[2])
				if b, ml := c.locate(m[1], l); b != nil {
					c.add(b, ml, m[3])
					last, n = len(c.problems)-1, n+1
					continue
				}
			}
			if cur != nil {
				c.add(cur, cur.Line, line)
				last, n = len(c.problems)-1, n+1
			}
		}
	}
	return n
}
