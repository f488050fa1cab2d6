package doccheck

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// The module root, from this package's directory.
const root = "../.."

// TestDocs checks every code block of README.md and docs/*.md: see the
// package doc for the rules.
func TestDocs(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	for i, f := range files {
		files[i] = "docs/" + filepath.Base(f)
	}
	files = append([]string{"README.md"}, files...)
	if len(files) < 10 {
		t.Fatalf("only %d Markdown files found from %s: %v", len(files), root, files)
	}
	problems, err := Check(t.Context(), root, ".", files)
	if err != nil {
		t.Fatal(err)
	}
	byFile := map[string][]Problem{}
	for _, p := range problems {
		byFile[p.File] = append(byFile[p.File], p)
	}
	failed := false
	for _, f := range files {
		ps := byFile[f]
		delete(byFile, f)
		t.Run(filepath.Base(f), func(t *testing.T) {
			for _, p := range ps {
				failed = true
				t.Error(p)
			}
		})
	}
	for f, ps := range byFile { // problems outside any listed file
		for _, p := range ps {
			failed = true
			t.Errorf("%s: %s", f, p)
		}
	}
	if failed {
		t.Log(Rules)
	}
	assertNoTempDirs(t)
}

func assertNoTempDirs(t *testing.T) {
	t.Helper()
	left, _ := filepath.Glob("_blocks-*")
	if len(left) > 0 {
		t.Errorf("temporary directories left behind: %v", left)
	}
}

func TestBlocks(t *testing.T) {
	md := strings.Join([]string{
		"# Title",                             // 1
		"",                                    // 2
		"```go",                               // 3
		"package main",                        // 4
		"```",                                 // 5
		"Inline ```code``` here",              // 6
		"- a list item:",                      // 7
		"",                                    // 8
		"  ```Go title",                       // 9
		"  package x",                         // 10
		"",                                    // 11
		"    // indented",                     // 12
		"  ```",                               // 13
		"<!-- excerpt: a/example_test.go -->", // 14
		"",                                    // 15
		"~~~~golang",                          // 16
		"```",                                 // 17
		"~~~~",                                // 18
		"```",                                 // 19
		"plain",                               // 20
		"````",                                // 21
		"<!-- excerpt: x -->",                 // 22
		"text between",                        // 23
		"```sh",                               // 24
		"```",                                 // 25
	}, "\n")
	blocks, err := Blocks("x.md", []byte(md))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, b := range blocks {
		got = append(got, fmt.Sprintf("%d %q %q %q %v", b.Line, b.Lang, b.Code, b.Excerpt, b.IsGo()))
	}
	want := []string{
		`3 "go" "package main\n" "" true`,
		`9 "go" "package x\n\n  // indented\n" "" true`,
		`16 "golang" "` + "```" + `\n" "a/example_test.go" true`,
		`19 "" "plain\n" "" false`,
		`24 "sh" "" "" false`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("blocks:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	if _, err := Blocks("y.md", []byte("text\n\n```go\npackage main\n")); err == nil || !strings.Contains(err.Error(), "y.md:3:") {
		t.Errorf("unclosed fence: %v", err)
	}
}

// Every kind of problem is reported at the line of the Markdown file, and
// good blocks (complete files, excerpts) pass.
func TestCheckReportsMarkdownLines(t *testing.T) {
	dir := t.TempDir()
	var md []string
	var want []string // "line: substring"
	add := func(lines ...string) int {
		md = append(md, lines...)
		return len(md) - len(lines) + 1 // line of the first one
	}
	expect := func(line int, sub string) { want = append(want, fmt.Sprintf("%d: %s", line, sub)) }

	add("# Doc", "")
	l := add("```", "some output", "```")
	expect(l, "a code block without a language")
	add("```text", "router.Write(ctx, …)", "```", "```sh", "go test ./...", "```")

	l = add("```go", "router, err := dbrouter.New(ctx, cfg)", "```")
	expect(l+1, "not a complete Go file (it has no package clause)")

	// A good program using the module and one of its dependencies.
	add("```go",
		"package main",
		"",
		"import (",
		"\t\"context\"",
		"",
		"\t\"github.com/jackc/pgx/v5\"",
		"\t\"hakit.dev/dbrouter\"",
		")",
		"",
		"func main() {",
		"\tctx := context.Background()",
		"\trouter, err := dbrouter.New(ctx, dbrouter.Config{Nodes: []string{\"postgres://db1/app\"}})",
		"\tif err != nil {",
		"\t\tpanic(err)",
		"\t}",
		"\tdefer router.Close()",
		"\t_ = router.Write(ctx, func(tx pgx.Tx) error { return nil })",
		"}",
		"```")

	// Two compile errors in one block, both reported, at their lines.
	l = add("```go",
		"package main",
		"",
		"import \"hakit.dev/dbrouter\"",
		"",
		"func main() {",
		"\t_ = dbrouter.NoSuchThing",
		"\tundeclared()",
		"}",
		"```")
	expect(l+6, "undefined: dbrouter.NoSuchThing")
	expect(l+7, "undefined: undeclared")

	l = add("```go", "package x", "", "import \"github.com/not/required\"", "", "var _ = required.X", "```")
	expect(l+3, "package github.com/not/required is not in the module's dependencies: a doc may import only the standard library, hakit.dev packages and the modules in go.mod")

	l = add("```go", "package x", "", "import \"hakit.dev/nosuchpackage\"", "", "var _ = nosuchpackage.X", "```")
	expect(l+3, "package hakit.dev/nosuchpackage does not exist in module hakit.dev")

	l = add("```go", "package x", "", "import \"fmt\"", "", "func F() { fmt.Printf(\"%d\\n\", \"s\") }", "```")
	expect(l+5, "fmt.Printf format %d has arg \"s\" of wrong type string")

	l = add("```go", "package x", "", "func F()   {}", "```")
	expect(l+3, "not gofmt-formatted: gofmt writes this line as \"func F() {}\"")

	l = add("```go", "package main", "", "func helper() {}", "```")
	expect(l+1, "package main without a func main")

	l = add("```go", "package x", "", "func F() {", "```")
	expect(l+3, "expected '}', found 'EOF'")

	// A program that embeds its migrations and templates: placeholders
	// stand in for the files.
	add("```go",
		"package main",
		"",
		"import (",
		"\t\"embed\"",
		"\t\"fmt\"",
		")",
		"",
		"//go:embed migrations/*.sql",
		"var migrations embed.FS",
		"",
		"//go:embed \"templates/[a-z]*.html\" all:static",
		"var files embed.FS",
		"",
		"//go:embed VERSION",
		"var version string",
		"",
		"func main() { fmt.Println(migrations, files, version) }",
		"```")

	// A package of tests, as a doc on testing shows one.
	add("```go",
		"package myapp_test",
		"",
		"import \"testing\"",
		"",
		"func TestX(t *testing.T) { t.Log(\"ok\") }",
		"```")

	// Excerpts of an Example in this file: good (indentation and blank
	// lines aside), not in the Example, from a file that is no test.
	add("<!-- excerpt: internal/doccheck/doccheck_test.go -->",
		"```go",
		"blocks, err := Blocks(\"notes.md\", []byte(md))",
		"if err != nil {",
		"",
		"\tpanic(err)",
		"}",
		"```")
	l = add("<!-- excerpt: internal/doccheck/doccheck_test.go -->", "```go", "fmt.Println(\"not there\")", "```")
	expect(l+1, "not in any Example function of internal/doccheck/doccheck_test.go")
	l = add("<!-- excerpt: internal/doccheck/doccheck.go -->", "```go", "package doccheck", "```")
	expect(l+1, "must come from a _test.go file")
	l = add("<!-- excerpt: internal/doccheck/nosuch_test.go -->", "```go", "x", "```")
	expect(l+1, "no such file")

	l = add("```go", "package x")
	expect(l, "never closed")

	file := filepath.Join(dir, "doc.md")
	if err := os.WriteFile(file, []byte(strings.Join(md, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	problems, err := Check(t.Context(), root, ".", []string{file})
	if err != nil {
		t.Fatal(err)
	}
	assertNoTempDirs(t)

	var got []string
	for _, p := range problems {
		if p.File != file {
			t.Errorf("problem in %q, want %q: %s", p.File, file, p)
		}
		got = append(got, fmt.Sprintf("%d: %s", p.Line, p.Msg))
	}
	sort.Strings(got)
	sort.Strings(want)
	// Each expected problem once, at its line; nothing else.
	used := make([]bool, len(got))
	for _, w := range want {
		line, sub, _ := strings.Cut(w, ": ")
		found := false
		for i, g := range got {
			if !used[i] && strings.HasPrefix(g, line+": ") && strings.Contains(g, sub) {
				used[i], found = true, true
				break
			}
		}
		if !found {
			t.Errorf("missing: %s", w)
		}
	}
	for i, g := range got {
		if !used[i] {
			t.Errorf("unexpected: %s", g)
		}
	}
	if t.Failed() {
		t.Logf("got:\n%s", strings.Join(got, "\n"))
	}
}

// A doc with one complete program: checked, and nothing (no binary) left
// behind.
func TestCheckOneProgram(t *testing.T) {
	file := filepath.Join(t.TempDir(), "one.md")
	md := "```go\npackage main\n\nfunc main() { undeclared() }\n```\n"
	if err := os.WriteFile(file, []byte(md), 0o644); err != nil {
		t.Fatal(err)
	}
	problems, err := Check(t.Context(), root, ".", []string{file})
	if err != nil {
		t.Fatal(err)
	}
	if len(problems) != 1 || problems[0].String() != file+":4: undefined: undeclared" {
		t.Errorf("problems: %v", problems)
	}
	md = "```go\npackage main\n\nfunc main() {}\n```\n"
	if err := os.WriteFile(file, []byte(md), 0o644); err != nil {
		t.Fatal(err)
	}
	if problems, err = Check(t.Context(), root, ".", []string{file}); err != nil || len(problems) != 0 {
		t.Errorf("a good program: %v %v", problems, err)
	}
	assertNoTempDirs(t)
	if left, _ := filepath.Glob("b0*"); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
}

// Blocks finds the code of a Markdown file; a doc shows this excerpt
// (TestCheckReportsMarkdownLines).
func ExampleBlocks() {
	md := "# Notes\n\n```go\npackage main\n\nfunc main() {}\n```\n"
	blocks, err := Blocks("notes.md", []byte(md))
	if err != nil {

		panic(err)
	}
	for _, b := range blocks {
		fmt.Printf("%s:%d %s %q\n", b.File, b.Line, b.Lang, b.Code)
	}
	// Output:
	// notes.md:3 go "package main\n\nfunc main() {}\n"
}
