// Package doccheck compiles the Go code shown in the module's Markdown
// docs, so that a doc can never show code that uses an undeclared name,
// a renamed field or a function that is gone.
//
// Its test, TestDocs, reads README.md and every docs/*.md and checks each
// fenced code block. The rules for doc authors:
//
//   - Every fenced block names its language: ```go, ```sh, ```text,
//     ```yaml, … A block without one is an error, so that Go code cannot
//     slip past the check untagged.
//   - A ```go block is a complete Go file: a package clause, its imports,
//     then declarations. Either package main with a func main (a program
//     the reader can run), or any other package name (package myapp_test
//     with a func TestX, for instance). It is formatted as gofmt formats
//     it, and it must build and pass go vet against the module's current
//     code and go.mod: it may import the standard library, any hakit.dev
//     package and the modules go.mod requires. Files it embeds
//     (//go:embed migrations/*.sql) are stood in for by placeholders.
//   - A fragment that cannot stand as a complete file is written as an
//     Example function in the package's _test.go files (so it compiles
//     and, with an // Output: comment, runs), and the doc shows an excerpt
//     of it, marked as shown below.
//   - Pseudo-code, configuration, output and shell sessions are not Go:
//     tag them ```text, ```sh, ```yaml and so on.
//
// An excerpt is marked by an HTML comment, invisible on the rendered page,
// on the line before the fence (blank lines between them allowed). The
// path is relative to the module root:
//
//	<!-- excerpt: hakit/example_handlers_test.go -->
//	```go
//	…lines copied from one func Example… of that file…
//	```
//
// The lines of the block must appear, in the same order and contiguous,
// in one Example function of the named file; indentation and blank lines
// do not count.
//
// Each problem is reported as FILE.md:LINE: message, at the line of the
// Markdown file, followed once by these rules ([Rules]).
//
// Each complete-file ```go block is written as a package of its own in a
// temporary directory inside the module (internal/doccheck/_blocks-*, which
// the go command's ./... patterns ignore), so that it resolves imports
// with the module's go.mod and go.sum. All of them are then compiled by one
// go list -export (which links nothing) and checked by one go vet, and the
// directory is removed.
package doccheck
